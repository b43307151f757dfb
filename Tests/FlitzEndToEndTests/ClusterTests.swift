import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A database of its own for one cluster test on the test PostgreSQL server (`TestPostgres`, FlitzTestSupport: the
/// server `make test` started, or one started through `scripts/postgres.sh`), dropped by `drop()`.
final class ClusterDatabase {
    let url: String

    init() throws { url = try TestPostgres.createDatabase() }

    func drop() { try? TestPostgres.dropDatabase(url: url) }
}

extension RelayProcess {
    /// SIGKILL (no shutdown at all: open transactions roll back, nothing is flushed), then reap the process.
    func kill() {
        guard process.isRunning else { return }
        process.send(SIGKILL)
        process.waitUntilExit()
    }
}

/// Two `flitz-relay serve --postgres` processes ("nodes") on one PostgreSQL database, alice on node 1 and bob on
/// node 2 (protocol/cluster.md; README, "Several relay nodes").
@Suite(.serialized)
struct ClusterTests {
    /// Two nodes on `database`, sharing one blob directory.
    static func twoNodes(_ scratch: Scratch, _ database: ClusterDatabase) throws -> (RelayProcess, RelayProcess) {
        let url = database.url
        let blobs = scratch.path("blobs")
        let node1 = try RelayProcess(postgres: url, nodeID: "node-1", blobDirectory: blobs, log: scratch.path("relay-1.log"))
        let node2 = try RelayProcess(postgres: url, nodeID: "node-2", blobDirectory: blobs, log: scratch.path("relay-2.log"))
        return (node1, node2)
    }

    /// alice registered on `node1`, bob on `node2`, each has written to the other (no message requests).
    static func acquainted(_ scratch: Scratch, node1: RelayProcess, node2: RelayProcess) throws -> (User, User) {
        let alice = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
        let aliceInit = try alice.flitz("init", "--relay", node1.url, "--handle", "alice")
        #expect(aliceInit.status == 0, "\(aliceInit)")
        let bobInit = try bob.flitz("init", "--relay", node2.url, "--handle", "bob")
        #expect(bobInit.status == 0, "\(bobInit)")
        #expect(try alice.flitz("send", "bob", "hi bob").status == 0)
        #expect(try bob.flitz("receive").lines == ["[request] alice: hi bob"], "node 2 delivers what node 1 stored")
        #expect(try bob.flitz("send", "alice", "hi alice").status == 0)
        #expect(try alice.flitz("receive").lines == ["bob: hi alice"])
        return (alice, bob)
    }

    /// Messages both ways, delivered and seen receipts, typing and a call, each crossing from one node to the other
    /// while the recipient is connected there (notifications, cluster.md 3), and stored messages drained later.
    @Test func aliceOnNodeOneAndBobOnNodeTwo() throws {
        let scratch = try Scratch()
        let database = try ClusterDatabase()
        defer { database.drop() }
        let (node1, node2) = try Self.twoNodes(scratch, database)
        defer {
            node1.stop()
            node2.stop()
        }
        let (alice, bob) = try Self.acquainted(scratch, node1: node1, node2: node2)
        #expect(try alice.flitz("settings", "relay").lines == [node1.url])
        #expect(try bob.flitz("settings", "relay").lines == [node2.url])

        // A message stored on node 1 while bob is away, drained from node 2: "delivered" on sync, "seen" on receive,
        // the receipts travelling back through the shared queue.
        let stored = try #require(alice.flitz("send", "bob", "stored across nodes 5c1e").lines.first)
        #expect(try alice.flitz("status", stored).lines == ["sent"])
        #expect(try bob.flitz("sync").lines == ["1 new"])
        #expect(try alice.flitz("status", stored).lines == ["delivered"])
        #expect(try bob.flitz("receive").lines == ["alice: stored across nodes 5c1e"])
        #expect(try alice.flitz("status", stored).lines == ["seen"])

        // bob connected to node 2, alice sending through node 1: node 2 hears of it and delivers at once.
        let bobListen = try RunningCommand(["listen", "--json", "--home", bob.home.path], in: scratch)
        let live = try #require(alice.flitz("send", "bob", "live across nodes 5c1e").lines.first)
        let shown = bobListen.line(startingWith: "{\"from\":\"alice\",\"id\":\"\(live)\"")
        #expect(shown?.contains("live across nodes 5c1e") == true, "\(shown ?? "nothing")")

        // Typing from alice's chat on node 1 reaches bob's listen on node 2 (online-only, never stored).
        let chat = try ChatProcess(["chat", "bob", "--home", alice.home.path], in: scratch)
        chat.terminal.type("t")
        #expect(bobListen.line(startingWith: "{\"from\":\"alice\",\"typing\":true}") != nil, "typing crosses nodes")
        chat.terminal.type("yped in chat 5c1e\r")
        #expect(bobListen.line(startingWith: "{\"from\":\"alice\",\"typing\":false}") != nil, "sending stops typing")
        #expect(bobListen.event { $0["text"] as? String == "typed in chat 5c1e" } != nil, "the chat's message crosses nodes")
        chat.terminal.type("\u{4}")
        let chatLog = chat.wait()
        #expect(chat.process.terminationStatus == 0, "\(chatLog)")
        let bobOutput = bobListen.stop()
        #expect(bobOutput.stdout.contains("live across nodes 5c1e"), "\(bobOutput)")

        // Receipts to a connected sender: alice listens on node 1, bob reads on node 2.
        let aliceListen = try RunningCommand(["listen", "--json", "--home", alice.home.path], in: scratch)
        #expect(try bob.flitz("send", "alice", "are you listening 5c1e").status == 0)
        #expect(aliceListen.line(startingWith: "{\"from\":\"bob\",\"id\"")?.contains("are you listening 5c1e") == true)
        let toBob = try #require(try runProcess(Binaries.flitz, ["send", "bob", "receipt me 5c1e", "--home", alice.home.path], in: scratch).lines.first)
        // alice's send replaced her listen's connection (one connection per home); the listen reconnects by itself.
        let received = try bob.flitz("receive")
        #expect(received.lines == ["alice: receipt me 5c1e"], "\(received)")
        let delivered = aliceListen.line(startingWith: "{\"id\":\"\(toBob)\",\"peer\":\"bob\",\"receipt\":\"delivered\"")
        let seen = aliceListen.line(startingWith: "{\"id\":\"\(toBob)\",\"peer\":\"bob\",\"receipt\":\"seen\"")
        #expect(delivered != nil && seen != nil, "receipts from node 2 reach alice's listen on node 1: \(aliceListen.text)")
        _ = aliceListen.stop()

        // A call: alice on node 1 calls bob, whose listen on node 2 auto-answers (call signals cross nodes).
        let call = try CallCommandTests.tonesCall(alice: alice, bob: bob, scratch: scratch, relayOnly: false)
        call.report("across two nodes")

        // Neither node's log holds a message text.
        node1.stop()
        node2.stop()
        for text in ["stored across nodes", "live across nodes", "typed in chat", "receipt me"] {
            #expect(anyFile([node1.log, node2.log], contains: text) == nil, "a relay log holds \"\(text)\"")
        }
    }

    /// Node 1 is killed with SIGKILL while alice (connected to it) sends a burst to bob (connected to node 2). alice
    /// moves to node 2 (`flitz settings relay`) and keeps sending; every message whose id `flitz send` printed (the
    /// relay acknowledged it after its commit) is in bob's history exactly once, and nothing is there twice.
    @Test func nodeKilledDuringABurstLosesNothingAcknowledged() throws {
        let scratch = try Scratch()
        let database = try ClusterDatabase()
        defer { database.drop() }
        let (node1, node2) = try Self.twoNodes(scratch, database)
        defer {
            node1.kill()
            node2.stop()
        }
        let (alice, bob) = try Self.acquainted(scratch, node1: node1, node2: node2)
        let bobListen = try RunningCommand(["listen", "--json", "--home", bob.home.path], in: scratch)
        #expect(try alice.flitz("send", "bob", "burst begins").status == 0)
        #expect(bobListen.line(startingWith: "{\"from\":\"alice\"")?.contains("burst begins") == true)

        // The burst: one `flitz send` after another on a thread of its own, until told to stop.
        let burst = Burst()
        // The thread only reads these (Scratch and User are not Sendable; nothing mutates them meanwhile).
        nonisolated(unsafe) let sharedScratch = scratch, sharedAlice = alice
        let node2URL = node2.url
        let sender = Thread {
            var index = 0
            var moved = false
            while !burst.stopping {
                index += 1
                let text = "burst \(index)"
                let result = (try? runProcess(
                    Binaries.flitz, ["send", "bob", text, "--timeout", "3", "--home", sharedAlice.home.path], in: sharedScratch, timeout: 60))
                if let result, result.status == 0, let id = result.lines.first {
                    burst.acknowledged(id: id, text: text)
                } else {
                    burst.failed(text: text, result: result)
                    // Relay unreachable: alice's client moves to the other node (as behind a proxy it reconnects).
                    if !moved, result?.status == 2 {
                        moved = (try? sharedAlice.flitz("settings", "relay", node2URL))?.status == 0
                    }
                }
            }
            burst.finish()
        }
        sender.start()
        #expect(burst.wait(untilAcknowledged: 8), "the burst did not get going: \(burst.summary)")
        node1.kill()
        let atKill = burst.acknowledgedCount
        #expect(burst.wait(untilAcknowledged: atKill + 8), "no sends went through node 2 after the kill: \(burst.summary)")
        burst.stop()
        #expect(burst.waitFinished(), "the burst did not stop")
        #expect(try alice.flitz("settings", "relay").lines == [node2.url])
        #expect(burst.failures > 0, "some send must have failed at the kill, or the node was not killed during the burst")

        // A last message through node 2 as a sync point, then everything bob's listen showed.
        let last = try #require(alice.flitz("send", "bob", "burst over").lines.first)
        #expect(bobListen.line(startingWith: "{\"from\":\"alice\",\"id\":\"\(last)\"") != nil)
        let listenOutput = bobListen.stop()
        let remaining = try bob.flitz("receive", "--json")
        #expect(remaining.status == 0, "\(remaining)")
        let shown = (jsonObjects(listenOutput.stdout) + jsonObjects(remaining.stdout)).compactMap { object -> (String, String)? in
            guard object["from"] as? String == "alice", let id = object["id"] as? String, let text = object["text"] as? String else { return nil }
            return (id, text)
        }
        let shownIDs = shown.map(\.0)
        #expect(Set(shownIDs).count == shownIDs.count, "a message shown twice: \(shownIDs)")
        let texts = shown.map(\.1)
        #expect(Set(texts).count == texts.count, "a text shown twice: \(texts)")
        let acknowledged = burst.acknowledgedMessages
        for (id, text) in acknowledged {
            #expect(shownIDs.filter { $0 == id }.count == 1, "acknowledged \(text) (\(id)) shown \(shownIDs.filter { $0 == id }.count) times")
        }

        // bob's stored history agrees: each acknowledged message once.
        let history = try bob.flitz("history", "alice", "--limit", "1000", "--json")
        #expect(history.status == 0, "\(history)")
        let historyIDs = jsonObjects(history.stdout).compactMap { $0["id"] as? String }
        #expect(Set(historyIDs).count == historyIDs.count, "bob's history holds a message twice")
        for (id, text) in acknowledged { #expect(historyIDs.contains(id), "\(text) (\(id)) missing from bob's history") }
        print("burst: \(acknowledged.count) acknowledged (\(atKill) before the kill), \(burst.failures) failed sends, \(shown.count) shown to bob")

        // Every acknowledged message reaches "delivered" (or "seen") for alice through node 2.
        for (id, text) in acknowledged.prefix(5) + acknowledged.suffix(5) {
            let status = try alice.flitz("status", id).lines
            #expect(status == ["delivered"] || status == ["seen"], "\(text): \(status)")
        }
    }
}

/// The burst's shared state: the sender thread records, the test waits on it (a condition, no polling).
final class Burst: @unchecked Sendable {
    private let condition = NSCondition()
    private var messages: [(id: String, text: String)] = []
    private var failedSends: [String] = []
    private var stopRequested = false
    private var finished = false

    var stopping: Bool { condition.withLock { stopRequested } }
    var acknowledgedCount: Int { condition.withLock { messages.count } }
    var acknowledgedMessages: [(id: String, text: String)] { condition.withLock { messages } }
    var failures: Int { condition.withLock { failedSends.count } }
    var summary: String { condition.withLock { "\(messages.count) acknowledged, failed: \(failedSends)" } }

    func acknowledged(id: String, text: String) {
        condition.withLock {
            messages.append((id, text))
            condition.broadcast()
        }
    }

    func failed(text: String, result: CommandResult?) {
        condition.withLock { failedSends.append("\(text): \(result.map { "exit \($0.status) \($0.stderr)" } ?? "did not run")") }
    }

    func stop() { condition.withLock { stopRequested = true } }

    func finish() {
        condition.withLock {
            finished = true
            condition.broadcast()
        }
    }

    /// Waits until `count` sends were acknowledged (a 180 s guard); false if the guard ran out or the burst ended.
    func wait(untilAcknowledged count: Int) -> Bool {
        let deadline = Date().addingTimeInterval(180)
        return condition.withLock {
            while messages.count < count, !finished {
                if !condition.wait(until: deadline) { return false }
            }
            return messages.count >= count
        }
    }

    /// Waits until the sender thread ended (a 180 s guard).
    func waitFinished() -> Bool {
        let deadline = Date().addingTimeInterval(180)
        return condition.withLock {
            while !finished {
                if !condition.wait(until: deadline) { return false }
            }
            return true
        }
    }
}
