import Foundation
import Testing

/// The walking skeleton end to end: the built `flitz-relay` on a loopback port with a temporary SQLite
/// database, and two `flitz` homes, driven as separate processes.
@Suite(.serialized)
struct TwoPeopleChatTests {
    @Test func offlineDeliveryReceiptsExpiryAndRecovery() throws {
        let scratch = try Scratch()
        let database = scratch.path("relay.sqlite")
        let log = scratch.path("relay.log")
        var relay = try RelayProcess(database: database, log: log, arguments: ["--sweep-interval", "1"])
        let alice = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)

        let aliceInit = try alice.flitz("init", "--relay", relay.url, "--handle", "alice")
        #expect(aliceInit.status == 0, "\(aliceInit)")
        let bobInit = try bob.flitz("init", "--relay", relay.url, "--handle", "bob")
        #expect(bobInit.status == 0, "\(bobInit)")
        let recoveryLine = try #require(bobInit.lines.first { $0.hasPrefix("recovery code: ") })
        let recoveryCode = String(recoveryLine.dropFirst("recovery code: ".count))
        #expect(recoveryCode.count >= 16)

        // Bob is offline: alice sends three messages; each is acknowledged as durably stored.
        let texts = ["first secret rendezvous 7f3a", "second secret rendezvous 7f3a", "third secret rendezvous 7f3a"]
        var ids: [String] = []
        for text in texts {
            let sent = try alice.flitz("send", "bob", text)
            #expect(sent.status == 0, "\(sent)")
            #expect(sent.lines.count == 1)
            let id = try #require(sent.lines.first)
            #expect(id.count == 32 && id.allSatisfy { "0123456789abcdef".contains($0) })
            ids.append(id)
        }
        #expect(Set(ids).count == 3)
        for id in ids { #expect(try alice.flitz("status", id).lines == ["sent"]) }

        // Bob's device fetches and acknowledges without showing: "delivered".
        let synced = try bob.flitz("sync")
        #expect(synced.status == 0, "\(synced)")
        #expect(synced.lines == ["3 new"])
        for id in ids { #expect(try alice.flitz("status", id).lines == ["delivered"]) }

        // Bob reads: all three, in order, exactly once. Bob has never written to alice, so this is a message request
        // and no seen receipt goes back (`protocol/conversations.md` section 9): "delivered" stays.
        let received = try bob.flitz("receive", "--json")
        #expect(received.status == 0, "\(received)")
        let messages = try received.lines.map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]).compactMapValues { $0 as? String }
        }
        #expect(messages.map { $0["text"] } == texts)
        #expect(messages.map { $0["id"] } == ids)
        #expect(messages.allSatisfy { $0["from"] == "alice" })
        #expect(messages.allSatisfy { ($0["sentAt"] ?? "").hasSuffix("Z") && ($0["sentAt"] ?? "").count >= 20 })
        #expect(try bob.flitz("receive").lines.isEmpty, "nothing is shown twice")
        for id in ids { #expect(try alice.flitz("status", id).lines == ["delivered"]) }

        // Bob replies; alice's plain receive shows "HANDLE: text".
        #expect(try bob.flitz("send", "alice", "reply from bob 7f3a").status == 0)
        #expect(try alice.flitz("receive").lines == ["bob: reply from bob 7f3a"])

        // A message with a 2-second expiry to offline bob never arrives. The relay restarts with its
        // clock 10 s ahead (debug builds honour FLITZ_TEST_CLOCK_OFFSET), so no test waits for real time.
        let expiring = try alice.flitz("send", "bob", "expiring secret 7f3a", "--expires-in", "2")
        #expect(expiring.status == 0, "\(expiring)")
        let expiringID = try #require(expiring.lines.first)
        relay.stop()
        // Same port, so the homes' stored relay address stays right.
        relay = try RelayProcess(
            database: database, log: log, port: relay.port, arguments: ["--sweep-interval", "1"],
            environment: ["FLITZ_TEST_CLOCK_OFFSET": "10"])
        #expect(try bob.flitz("receive").lines.isEmpty, "an expired envelope is never delivered")
        #expect(try eventually { try alice.flitz("status", expiringID).lines == ["expired"] })

        // Bob loses his phone and recovers his handle with new keys on a new home.
        let bob2 = User(name: "bob2", home: scratch.path("bob2"), scratch: scratch)
        let recovered = try bob2.flitz("init", "--relay", relay.url, "--handle", "bob", "--recover", recoveryCode)
        #expect(recovered.status == 0, "\(recovered)")
        let blocked = try alice.flitz("send", "bob", "after recovery 7f3a")
        #expect(blocked.status == 4, "\(blocked)")
        #expect(blocked.stdout.isEmpty)
        #expect(blocked.stderr.contains("flitz trust bob"))
        #expect(try alice.flitz("send", "bob", "still blocked 7f3a").status == 4)
        let numbers = try alice.flitz("safety-number", "bob")
        #expect(numbers.status == 0 && numbers.lines.count == 2, "\(numbers)")
        let newNumber = try #require(numbers.lines.first { $0.hasPrefix("new key, not trusted yet: ") }?.split(separator: ":").last)
            .trimmingCharacters(in: .whitespaces)
        #expect(try alice.flitz("trust", "bob", "--safety-number", "00000 00000 00000 00000 00000 00000").status == 1)
        let trusted = try alice.flitz("trust", "bob", "--safety-number", newNumber)
        #expect(trusted.status == 0, "\(trusted)")
        #expect(try alice.flitz("trust", "bob").status == 1, "nothing left to trust")
        #expect(trusted.stdout.contains(newNumber), "trust accepts the key whose number was shown")
        let afterTrust = try alice.flitz("send", "bob", "after trust 7f3a")
        #expect(afterTrust.status == 0, "\(afterTrust)")
        #expect(try bob2.flitz("receive").lines == ["[request] alice: after trust 7f3a"])
        // Both sides now compute the same safety number.
        #expect(try alice.flitz("safety-number", "bob").lines == [newNumber])
        #expect(try bob2.flitz("safety-number", "alice").lines == [newNumber])
        #expect(newNumber.count == 35)

        // Text from others cannot forge lines or send terminal escapes.
        #expect(try bob2.flitz("send", "alice", "ok\nbob: forged\u{1b}[31m").status == 0)
        #expect(try alice.flitz("receive").lines == ["bob: ok\\u{a}bob: forged\\u{1b}[31m"])
        let oldDevice = try bob.flitz("receive")
        #expect(oldDevice.status == 3, "the old device can no longer authenticate")
        #expect(oldDevice.stderr.contains("no longer knows this device as bob"), "\(oldDevice)")

        // The relay's database files and log never contain a plaintext.
        relay.stop()
        let relayFiles = try FileManager.default.contentsOfDirectory(at: scratch.url, includingPropertiesForKeys: nil)
            .filter { $0.lastPathComponent.hasPrefix("relay.") }
        #expect(relayFiles.count >= 2)
        for text in texts + ["reply from bob 7f3a", "expiring secret 7f3a", "after trust 7f3a", "secret rendezvous"] {
            #expect(anyFile(relayFiles, contains: text) == nil, "relay files contain \"\(text)\"")
        }
        for text in texts {
            #expect(anyFile([alice.home.appendingPathComponent("flitz.sqlite")], contains: text) != nil, "alice keeps her history")
        }
    }

    @Test func unhappyPathsExitWithDocumentedCodes() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        let alice = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
        let nobody = User(name: "nobody", home: scratch.path("nobody"), scratch: scratch)

        #expect(try nobody.flitz("send", "bob", "hi").status == 1, "no account yet")
        #expect(try alice.flitz("init", "--relay", relay.url, "--handle", "Alice!").status == 1, "invalid handle")
        #expect(try alice.flitz("init", "--relay", relay.url, "--handle", "alice").status == 0)
        #expect(try alice.flitz("init", "--relay", relay.url, "--handle", "alice").status == 1, "already initialised")
        let taken = try nobody.flitz("init", "--relay", relay.url, "--handle", "alice")
        #expect(taken.status == 3, "\(taken)")
        let unknown = try alice.flitz("send", "nosuchuser", "hello")
        #expect(unknown.status == 3, "\(unknown)")
        #expect(unknown.stderr.contains("no such handle nosuchuser (deleted or never registered)"), "\(unknown)")
        #expect(try alice.flitz("status", "00112233445566778899aabbccddeeff").status == 1, "unknown message id")
        #expect(try alice.flitz("status", "xyz").status != 0)
        let wrongCode = try nobody.flitz("init", "--relay", relay.url, "--handle", "alice", "--recover", "WRONG-CODE")
        #expect(wrongCode.status == 3, "\(wrongCode)")

        // A second relay on the same database refuses to start; trace logging (frame bytes) is refused.
        let second = try runProcess(
            Binaries.relay, ["serve", "--port", "0", "--database", scratch.path("relay.sqlite").path], in: scratch, timeout: 20)
        #expect(second.status == 1, "\(second)")
        #expect(second.stderr.contains("another flitz-relay is already using"), "\(second)")
        let trace = try runProcess(Binaries.relay, ["serve", "--port", "0", "--log-level", "trace"], in: scratch, timeout: 20)
        #expect(trace.status == 64, "\(trace)")
        #expect(try alice.flitz("send", "bob", "hello", "--expires-in", "0").status == 64)

        // stdout already closed by its reader (`flitz ... | head -1`): a quiet exit 141, never a crash.
        let closedPipe = Pipe()
        try closedPipe.fileHandleForReading.close()
        let initCarol = ChildProcess()
        initCarol.executableURL = Binaries.flitz
        initCarol.arguments = ["init", "--home", scratch.path("carol").path, "--relay", relay.url, "--handle", "carol"]
        initCarol.standardOutput = closedPipe.fileHandleForWriting
        let carolErrors = Pipe()
        initCarol.standardError = carolErrors
        try initCarol.run()
        initCarol.waitUntilExit()
        let carolStderr = String(decoding: carolErrors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(initCarol.terminationStatus == 141, "\(carolStderr)")
        #expect(!carolStderr.contains("Fatal error") && !carolStderr.contains("crashed"), "\(carolStderr)")
        #expect(try User(name: "carol", home: scratch.path("carol"), scratch: scratch).flitz("settings", "read-receipts").lines == ["on"],
            "the registration itself finished")

        relay.stop()
        let unreachable = try alice.flitz("send", "bob", "hello", "--timeout", "1")
        #expect(unreachable.status == 2, "\(unreachable)")
        #expect(unreachable.stdout.isEmpty)
        #expect(unreachable.stderr.contains("connection refused"), "\(unreachable)")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("never-created").path))
        #expect(try User(name: "x", home: scratch.path("never-created"), scratch: scratch).flitz("receive").status == 1)
        #expect(!FileManager.default.fileExists(atPath: scratch.path("never-created").path), "only init creates a home")
    }
}

/// Re-checks a condition a bounded number of times (the relay's sweeper runs on its own schedule).
func eventually(attempts: Int = 40, _ condition: () throws -> Bool) throws -> Bool {
    for _ in 0..<attempts {
        if try condition() { return true }
        Thread.sleep(forTimeInterval: 0.25)
    }
    return false
}
