import Foundation
import Testing

extension User {
    /// `flitz` with `FLITZ_TEST_CLOCK_OFFSET` set (debug builds only).
    @discardableResult
    func flitz(clockOffset seconds: Double, _ arguments: String...) throws -> CommandResult {
        try runProcess(
            Binaries.flitz, Array(arguments) + ["--home", home.path], environment: ["FLITZ_TEST_CLOCK_OFFSET": String(seconds)], in: scratch)
    }

    /// `receive --json` rows as objects.
    func receiveJSON() throws -> [[String: Any]] {
        let result = try flitz("receive", "--json")
        #expect(result.status == 0, "\(result)")
        return result.lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// `history HANDLE --json` rows as objects.
    func historyJSON(_ handle: String, clockOffset: Double = 0) throws -> [[String: Any]] {
        let result = try flitz(clockOffset: clockOffset, "history", handle, "--json")
        #expect(result.status == 0, "\(result)")
        return result.lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// The files of this home (the store and any journal beside it).
    var storeFiles: [URL] {
        ((try? FileManager.default.contentsOfDirectory(at: home, includingPropertiesForKeys: nil)) ?? []).filter {
            $0.lastPathComponent.hasPrefix("flitz.sqlite")
        }
    }
}

/// Links a second device `name` to `primary`'s account through the CLI (two terminals).
func linkDevice(_ name: String, to primary: User, relay: RelayProcess, scratch: Scratch) throws -> User {
    let device = User(name: name, home: scratch.path(name), scratch: scratch)
    let link = try RunningCommand(["devices", "link", "--yes", "--timeout", "60", "--home", primary.home.path], in: scratch)
    let codeLine = try #require(link.line(startingWith: "pairing code: "), "\(link.wait())")
    let joined = try device.flitz("init", "--link", String(codeLine.dropFirst("pairing code: ".count)), "--relay", relay.url, "--timeout", "60")
    #expect(joined.status == 0, "\(joined)")
    #expect(link.wait().status == 0)
    return device
}

/// Replies, reactions, edits, deletes, forwarding and disappearing messages with the real binaries: alice on two
/// devices, bob on one (`protocol/conversations.md`).
@Suite(.serialized)
struct ConversationCommandTests {
    @Test func conversationFeaturesThroughTheCLI() throws {
        let scratch = try Scratch()
        let database = scratch.path("relay.sqlite"), log = scratch.path("relay.log")
        var relay = try RelayProcess(database: database, log: log)
        defer { relay.stop() }
        let alice = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
        #expect(try alice.flitz("init", "--relay", relay.url, "--handle", "alice").status == 0)
        #expect(try bob.flitz("init", "--relay", relay.url, "--handle", "bob").status == 0)
        let alice2 = try linkDevice("alice2", to: alice, relay: relay, scratch: scratch)
        #expect(try bob.flitz("send", "alice", "hi alice").status == 0)
        #expect(try alice.flitz("send", "bob", "hi bob").status == 0)
        _ = try alice.receiveJSON()
        _ = try alice2.receiveJSON()
        _ = try bob.receiveJSON()

        // Reply: the quote shows the target's text.
        let question = try #require(try alice.flitz("send", "bob", "dinner at 8?").lines.first)
        #expect(try bob.receiveJSON().map { $0["id"] as? String } == [question])
        let reply = try bob.flitz("reply", question, "yes")
        #expect(reply.status == 0, "\(reply)")
        let replyID = try #require(reply.lines.first)
        let replyRow = try #require(try alice.receiveJSON().first { $0["id"] as? String == replyID })
        let quote = try #require(replyRow["replyTo"] as? [String: Any])
        #expect(quote["id"] as? String == question && quote["text"] as? String == "dinner at 8?" && quote["author"] as? String == "alice")
        #expect(try alice.flitz("history", "bob").lines.contains("  ↳ replying to alice: dinner at 8?"))

        // Reactions, aggregated; seen on alice's second device through the transcript and bob's reaction.
        #expect(try bob.flitz("react", question, "👍").status == 0)
        #expect(try alice.flitz("react", question, "👍").status == 0)
        #expect(try bob.flitz("react", question, "ok").status != 0)
        _ = try alice2.receiveJSON()
        let reacted = try #require(try alice2.historyJSON("bob").first { $0["id"] as? String == question })
        let reactions = try #require(reacted["reactions"] as? [[String: Any]])
        #expect(reactions.count == 1 && reactions[0]["emoji"] as? String == "👍" && reactions[0]["count"] as? Int == 2)
        #expect(try bob.flitz("unreact", question).status == 0)

        // Edit: bob sees the new text and the history; bob may not edit or delete alice's message.
        #expect(try alice.flitz("edit", question, "dinner at 9?").lines == ["version 2"])
        _ = try bob.receiveJSON()
        let edited = try #require(try bob.historyJSON("alice").first { $0["id"] as? String == question })
        #expect(edited["text"] as? String == "dinner at 9?" && edited["edited"] as? Bool == true)
        #expect(edited["previousVersions"] as? [String] == ["dinner at 8?"])
        #expect((edited["reactions"] as? [[String: Any]])?.first?["count"] as? Int == 1, "bob's reaction removed, alice's kept")
        let notAuthor = try bob.flitz("edit", question, "bob's words")
        #expect(notAuthor.status != 0 && notAuthor.stderr.contains("not the author"), "\(notAuthor)")
        let notAuthorDelete = try bob.flitz("delete", question, "--for-everyone")
        #expect(notAuthorDelete.status != 0 && notAuthorDelete.stderr.contains("not the author"), "\(notAuthorDelete)")

        // Forwarding: counted; refused with the reason for a no-forward message.
        let secret = try #require(try alice.flitz("send", "bob", "just for you", "--no-forward").lines.first)
        _ = try bob.receiveJSON()
        let refused = try bob.flitz("forward", secret, "alice")
        #expect(refused.status != 0 && refused.stderr.contains("the sender asked that this message not be forwarded"), "\(refused)")
        let forwarded = try #require(try bob.flitz("forward", question, "alice").lines.first)
        let forwardedRow = try #require(try alice.receiveJSON().first { $0["id"] as? String == forwarded })
        #expect(forwardedRow["forwarded"] as? Int == 1 && forwardedRow["text"] as? String == "dinner at 9?")

        // Delete for everyone: a tombstone on every device, and the reply's quote says the original is gone.
        #expect(try alice.flitz("delete", question, "--for-everyone").status == 0)
        _ = try bob.receiveJSON()
        _ = try alice2.receiveJSON()
        for (user, peer) in [(bob, "alice"), (alice2, "bob"), (alice, "bob")] {
            let rows = try user.historyJSON(peer)
            let tombstone = try #require(rows.first { $0["id"] as? String == question }, "\(user.name)")
            #expect(tombstone["deleted"] as? Bool == true && tombstone["text"] as? String == "", "\(user.name)")
            let replyQuote = try #require(rows.first { $0["id"] as? String == replyID }?["replyTo"] as? [String: Any], "\(user.name)")
            #expect(replyQuote["available"] as? Bool == false, "\(user.name)")
            #expect(anyFile(user.storeFiles, contains: "dinner at 8?") == nil, "\(user.name)")
        }
        #expect(try bob.flitz("history", "alice").lines.contains { $0.contains("alice: message deleted") })

        // Disappearing: the timer reaches every device; the message leaves every device's store.
        #expect(try alice.flitz("disappearing", "bob", "30s").status == 0)
        _ = try bob.receiveJSON()
        _ = try alice2.receiveJSON()
        #expect(try bob.flitz("disappearing", "alice").lines == ["30s"])
        #expect(try alice2.flitz("disappearing", "bob").lines == ["30s"])
        let vanishing = try #require(try alice.flitz("send", "bob", "this will vanish").lines.first)
        let shown = try bob.receiveJSON()
        #expect(shown.first { $0["id"] as? String == vanishing }?["disappearAfterSeconds"] as? Int == 30)
        _ = try alice2.receiveJSON()
        for (user, peer) in [(alice, "bob"), (alice2, "bob"), (bob, "alice")] {
            #expect(anyFile(user.storeFiles, contains: "this will vanish") != nil, "\(user.name)")
            #expect(try user.historyJSON(peer, clockOffset: 45).contains { $0["id"] as? String == vanishing } == false, "\(user.name)")
            #expect(anyFile(user.storeFiles, contains: "this will vanish") == nil, "\(user.name)")
        }
        #expect(try alice.flitz("disappearing", "bob", "off").status == 0)
        _ = try bob.receiveJSON()
        _ = try alice2.receiveJSON()

        // Conversations: unread counts and the last message.
        _ = try alice.flitz("send", "bob", "unread one")
        _ = try alice.flitz("send", "bob", "unread two")
        #expect(try bob.flitz("sync").lines == ["2 new"])
        #expect(try bob.flitz("conversations").lines == ["alice (2 unread): alice: unread two"])

        // Edit after 24 hours, by the relay's clock: refused.
        let late = try #require(try alice.flitz("send", "bob", "yesterday's news").lines.first)
        relay.stop()
        relay = try RelayProcess(database: database, log: log, port: relay.port, environment: ["FLITZ_TEST_CLOCK_OFFSET": "90000"])
        let tooLate = try alice.flitz("edit", late, "today's news")
        #expect(tooLate.status != 0 && tooLate.stderr.contains("too late"), "\(tooLate)")
        let tooLateDelete = try alice.flitz("delete", late, "--for-everyone")
        #expect(tooLateDelete.status != 0 && tooLateDelete.stderr.contains("too late"), "\(tooLateDelete)")
    }

    /// Sealed seen receipts: the author's message becomes `seen` through an ordinary encrypted envelope (that no
    /// `ReportSeen` goes out is checked frame by frame in ConversationTests); `settings read-receipts` still reads
    /// and sets relay/off.
    @Test func sealedSeenReceiptsThroughTheCLI() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let alice = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
        #expect(try alice.flitz("init", "--relay", relay.url, "--handle", "alice").status == 0)
        #expect(try bob.flitz("init", "--relay", relay.url, "--handle", "bob").status == 0)
        #expect(try bob.flitz("send", "alice", "hi alice").status == 0)  // no message request
        _ = try alice.receiveJSON()
        #expect(try bob.flitz("settings", "seen-receipts", "sealed").status == 0)
        #expect(try bob.flitz("settings", "seen-receipts").lines == ["sealed"])
        #expect(try bob.flitz("settings", "read-receipts").lines == ["off"])
        let id = try #require(try alice.flitz("send", "bob", "read me quietly").lines.first)
        #expect(try bob.receiveJSON().map { $0["text"] as? String } == ["read me quietly"])
        #expect(try alice.flitz("status", id).lines == ["seen"])
        #expect(try bob.flitz("settings", "seen-receipts", "bogus").status == 64)
        #expect(try bob.flitz("settings", "read-receipts", "on").status == 0)
        #expect(try bob.flitz("settings", "seen-receipts").lines == ["relay"])
    }

    /// Unsend purges what bob's device has not fetched yet, and says so per device; a delivered copy is answered
    /// as such and followed by a delete for everyone.
    @Test func unsendPurgesAnUndeliveredEnvelope() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let alice = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
        #expect(try alice.flitz("init", "--relay", relay.url, "--handle", "alice").status == 0)
        #expect(try bob.flitz("init", "--relay", relay.url, "--handle", "bob").status == 0)
        let alice2 = try linkDevice("alice2", to: alice, relay: relay, scratch: scratch)
        let oops = try #require(try alice.flitz("send", "bob", "oops, wrong person").lines.first)
        let unsent = try alice.flitz("unsend", oops)
        #expect(unsent.status == 0, "\(unsent)")
        #expect(unsent.lines == ["alice device 2: purged", "bob device 1: purged"], "\(unsent)")
        #expect(try bob.receiveJSON().isEmpty)
        #expect(try alice2.receiveJSON().isEmpty)
        #expect(anyFile([scratch.path("relay.sqlite")], contains: "oops") == nil)

        let delivered = try #require(try alice.flitz("send", "bob", "too late to take back").lines.first)
        #expect(try bob.receiveJSON().count == 1)
        let answer = try alice.flitz("unsend", delivered)
        #expect(answer.lines == ["alice device 2: purged", "bob device 1: already delivered", "deleted for everyone"], "\(answer)")
        _ = try bob.receiveJSON()
        let row = try #require(try bob.historyJSON("alice").first { $0["id"] as? String == delivered })
        #expect(row["deleted"] as? Bool == true)
    }
}
