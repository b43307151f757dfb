import Foundation
import Testing

/// `flitz` killed at each named failpoint (`FLITZ_FAILPOINT`, debug builds; `protocol/crypto.md`,
/// "Persistence order"), then run again without it: every message arrives exactly once, none is lost, and
/// the receiver never sees a second ciphertext for a used message key (it would report it as undecryptable).
@Suite(.serialized)
struct CrashConsistencyTests {
    @Test func aKillAtAnyFailpointNeitherLosesNorRepeatsAMessage() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        let alice = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
        #expect(try alice.flitz("init", "--relay", relay.url, "--handle", "alice").status == 0)
        #expect(try bob.flitz("init", "--relay", relay.url, "--handle", "bob").status == 0)

        /// Alice sends; bob's `receive` is killed at `point`, then run again. Until bob has written to alice, her
        /// messages are a message request, which gets no seen receipt (`protocol/conversations.md` section 9).
        func receiveKilled(at point: String, text: String, status: String = "seen") throws {
            let sent = try alice.flitz("send", "bob", text)
            #expect(sent.status == 0, "\(sent)")
            let killed = try bob.flitz(failpoint: point, "receive", "--json")
            #expect(killed.status == 86, "\(point): \(killed)")
            #expect(killed.stdout.isEmpty, "\(point): killed before showing anything")
            let again = try bob.flitz("receive", "--json")
            #expect(again.status == 0, "\(point): \(again)")
            #expect(try texts(again) == [text], "\(point): shown exactly once")
            #expect(again.stderr.isEmpty, "\(point): no decryption failure or other warning: \(again.stderr)")
            #expect(try alice.flitz("status", try #require(sent.lines.first)).lines == [status], "\(point)")
        }

        // The first message is a prekey message (a session is created in the killed transaction).
        try receiveKilled(at: "receive.afterDecrypt", text: "prekey message across receive.afterDecrypt", status: "delivered")

        // Bob's `send` is killed at `point`; his next send goes out after whatever was stored.
        for point in ["send.afterEncrypt", "send.afterCommit", "send.afterSubmit"] {
            let text = "killed at \(point)"
            let killed = try bob.flitz(failpoint: point, "send", "alice", text)
            #expect(killed.status == 86, "\(point): \(killed)")
            #expect(killed.stdout.isEmpty, "\(point): no message id was promised")
            let next = try bob.flitz("send", "alice", "after \(point)")
            #expect(next.status == 0, "\(point): \(next)")
            let received = try alice.flitz("receive", "--json")
            #expect(received.status == 0, "\(point): \(received)")
            // Killed before the commit, the message was never stored: `send` failed and nothing went out.
            // From the commit on it is in the outbox and goes out, once, before the next one.
            let expected = point == "send.afterEncrypt" ? ["after \(point)"] : [text, "after \(point)"]
            #expect(try texts(received) == expected, "\(point)")
            #expect(received.stderr.isEmpty, "\(point): \(received.stderr)")
        }

        // Alice has decrypted bob's replies, so from now on she sends plain ratchet messages.
        for point in ["receive.afterDecrypt", "receive.afterCommit", "receive.afterAcknowledge"] {
            try receiveKilled(at: point, text: "ratchet message across \(point)")
        }

        // Both directions still work and nothing more arrives anywhere.
        #expect(try alice.flitz("send", "bob", "closing").status == 0)
        #expect(try bob.flitz("send", "alice", "closing too").status == 0)
        let bobLast = try bob.flitz("receive", "--json")
        let aliceLast = try alice.flitz("receive", "--json")
        #expect(try texts(bobLast) == ["closing"] && bobLast.stderr.isEmpty, "\(bobLast)")
        #expect(try texts(aliceLast) == ["closing too"] && aliceLast.stderr.isEmpty, "\(aliceLast)")
        #expect(try bob.flitz("receive").lines.isEmpty)
        #expect(try alice.flitz("receive").lines.isEmpty)
        relay.stop()
    }

    /// The `text` of each `--json` line.
    func texts(_ result: CommandResult) throws -> [String] {
        try result.lines.map { line in
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            return try #require(object["text"] as? String)
        }
    }
}

extension User {
    /// Runs `flitz` with `FLITZ_FAILPOINT` set to `point`.
    func flitz(failpoint point: String, _ arguments: String...) throws -> CommandResult {
        try runProcess(Binaries.flitz, Array(arguments) + ["--home", home.path], environment: ["FLITZ_FAILPOINT": point], in: scratch)
    }
}
