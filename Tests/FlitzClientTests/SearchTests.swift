import Foundation
import GRDB
import Testing

@testable import FlitzClient

extension FlitzClient {
    /// The texts of the matches of `query`, newest first.
    func found(_ query: SearchQuery) throws -> [String] { try search(query).map(\.text) }
    func found(_ text: String) throws -> [String] { try found(SearchQuery(text)) }

    /// Stores an attachment row for the message `id`, as the media code does for a media message.
    func attach(_ id: Data, kind: String, fileName: String = "", label: String = "") throws {
        try store.dbQueue.write { db in
            let seq = try #require(try Int64.fetchOne(db, sql: "SELECT seq FROM messages WHERE message_id = ? AND kind = 'text'", arguments: [id]))
            try db.execute(
                sql: "INSERT INTO attachments (message_seq, kind, file_name, label) VALUES (?, ?, ?, ?)", arguments: [seq, kind, fileName, label])
        }
    }

    /// The raw bytes of the store's files: the database and any journal or WAL beside it.
    func storeFileBytes() throws -> [(name: String, bytes: Data)] {
        try FileManager.default.contentsOfDirectory(atPath: home.path).filter { $0.hasPrefix(ClientStore.fileName) }.map {
            ($0, try Data(contentsOf: home.appendingPathComponent($0)))
        }
    }

    /// Whether any of the store's files holds `word` (UTF-8) anywhere.
    func storeFilesContain(_ word: String) throws -> Bool {
        try storeFileBytes().contains { $0.bytes.range(of: Data(word.utf8)) != nil }
    }

    /// Whether a deletion is waiting for `eraseSearchResidue`.
    var searchErasurePending: Bool {
        get throws { try store.dbQueue.read { db in try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM search_erasure)") ?? false } }
    }
}

@Suite(.serialized)
struct SearchTests {
    @Test func userWordsBecomeQuotedPrefixTerms() {
        #expect(FlitzClient.ftsQuery("zeb") == "\"zeb\"*")
        #expect(FlitzClient.ftsQuery("  a\"b  NEAR(x  -y ") == "\"a\"\"b\"* \"NEAR(x\"* \"-y\"*")
        #expect(FlitzClient.ftsQuery(" \n\t ") == nil)
        #expect(FlitzClient.ftsQuery("a\u{0}b") == "\"ab\"*")
    }

    @Test func filtersSnippetsLimitContextAndOrder() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, bob) = try await relay.acquainted(clock: clock)
        let carol = try relay.client("carol", now: clock.client)
        _ = try await carol.initialize(relayURL: relay.url, handle: "carol")
        let start = clock.now()
        let first = try await alice.send(to: "bob", text: "the zebra crossed the road")
        _ = try await bob.receiveAll()
        clock.advance(seconds: 2 * 86_400)
        let middle = clock.now()
        let reply = try await bob.send(to: "alice", text: "a Zébra at the zoo, really")
        _ = try await alice.send(to: "bob", text: "unrelated words here")
        _ = try await carol.send(to: "bob", text: "zebras everywhere")
        _ = try await bob.receiveAll()
        let photo = try await alice.send(to: "bob", text: "look at this")
        _ = try await bob.receiveAll()
        try bob.attach(photo, kind: "image", fileName: "zebra_stripes.jpg")

        // Newest first (arrival order on this device); prefixes, case and accents ignored.
        #expect(try bob.found("zeb") == ["look at this", "zebras everywhere", "a Zébra at the zoo, really", "the zebra crossed the road"])
        #expect(try bob.found("zebra cross") == ["the zebra crossed the road"], "all words must match")
        #expect(try bob.found("giraffe").isEmpty)
        // Snippets mark the matched tokens; the text stays unmarked.
        let hit = try #require(try bob.search(SearchQuery("crossed")).first)
        #expect(hit.snippet == "the zebra «crossed» the road" && hit.text == "the zebra crossed the road")
        #expect(hit.messageID == first && hit.from == "alice" && hit.conversation == "alice" && !hit.outgoing && hit.type == .text)
        #expect(abs(hit.sentAt.timeIntervalSince(start)) < 5)
        #expect(try bob.search(SearchQuery("zoo")).first?.snippet == "a Zébra at the «zoo», really")
        // File names match too, with their own snippet and type.
        let file = try #require(try bob.search(SearchQuery("stripes")).first)
        #expect(file.messageID == photo && file.type == .image && file.fileName == "zebra_stripes.jpg" && file.snippet == "zebra_«stripes».jpg")
        // Each filter.
        #expect(try bob.found(SearchQuery("zeb", from: "alice")) == ["look at this", "the zebra crossed the road"])
        #expect(try bob.found(SearchQuery("zeb", from: "bob")) == ["a Zébra at the zoo, really"], "your own handle: what you sent")
        #expect(try bob.search(SearchQuery("zeb", from: "bob")).first?.messageID == reply)
        #expect(try bob.found(SearchQuery("zeb", conversation: "carol")) == ["zebras everywhere"])
        #expect(try bob.found(SearchQuery("zeb", conversation: "alice")).count == 3)
        #expect(try bob.found(SearchQuery("zeb", since: middle)).count == 3)
        #expect(try bob.found(SearchQuery("zeb", until: middle)) == ["the zebra crossed the road"])
        #expect(try bob.found(SearchQuery("zeb", since: middle, until: middle.addingTimeInterval(3_600), type: .text)).count == 2)
        #expect(try bob.found(SearchQuery("zeb", type: .image)) == ["look at this"])
        #expect(try bob.found(SearchQuery("zeb", type: .video)).isEmpty)
        #expect(try bob.found(SearchQuery("zeb", type: .text)).count == 3)
        #expect(try bob.found(SearchQuery("zeb", limit: 2)) == ["look at this", "zebras everywhere"])
        // Context: the neighbours in that conversation, oldest first.
        let around = try #require(try bob.search(SearchQuery("zoo", context: 1)).first)
        #expect(around.before.map(\.text) == ["the zebra crossed the road"])
        #expect(around.after.map(\.text) == ["unrelated words here"])
        #expect(around.after.first?.from == "alice" && around.before.first?.deleted == false)
        let wide = try #require(try bob.search(SearchQuery("zoo", context: 10)).first)
        #expect(wide.before.map(\.text) == ["hi bob", "hi alice", "the zebra crossed the road"])
        #expect(wide.after.map(\.text) == ["unrelated words here", "look at this"])
        // Bad arguments are clear errors.
        for bad in [SearchQuery(" "), SearchQuery("x", limit: 0), SearchQuery("x", context: 101), SearchQuery("x", from: "No Such"),
            SearchQuery("x", since: middle, until: start)]
        {
            let error = #expect(throws: ClientError.self) { _ = try bob.search(bad) }
            #expect(error?.kind == .invalidArgument)
        }
        await relay.stop()
    }

    @Test func hostileQueriesNeverFail() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        _ = try await alice.send(to: "bob", text: "NEAR zebra \"quoted\" crossing - stripes*")
        _ = try await bob.receiveAll()
        let hostile = [
            "\"", "\"\"", "zebra\"", "\"zebra", "NEAR(zebra crossing)", "NEAR", "zebra NEAR crossing", "*", "zeb*", "-zebra", "zebra -crossing",
            "-", "zebra OR", "OR", "AND", "NOT zebra", "^zebra", "text:zebra", "{text file_name}:zebra", "(", ")", "zebra)", "'", "';",
            "'; DROP TABLE messages; --", "zebra\u{0}", "+", ":", "\\", "%", "_", "zebra AND (",
        ]
        for query in hostile {
            #expect(throws: Never.self, "\(query)") { _ = try bob.search(SearchQuery(query)) }
        }
        #expect(try bob.found("zebra\"") == ["NEAR zebra \"quoted\" crossing - stripes*"], "a quote in a word is not syntax")
        #expect(try bob.found("\"quoted\"").count == 1)
        #expect(try bob.found("NEAR(zebra").count == 1, "NEAR is a word like any other")
        #expect(try bob.found("zebra -crossing").count == 1, "- is no NOT")
        #expect(try bob.found("text:zebra").isEmpty, "no column filter: the word text:zebra is text then zebra, as a phrase")
        #expect(try bob.found("zebra").count == 1, "the history is intact")
        let nothing = #expect(throws: ClientError.self, "NUL alone is no word") { _ = try bob.search(SearchQuery("\u{0} ")) }
        #expect(nothing?.kind == .invalidArgument)
        await relay.stop()
    }

    @Test func theIndexFollowsDeletesUnsendsEditsExpiryAndDeclines() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, bob) = try await relay.acquainted(clock: clock)
        // Delete for me.
        let mine = try await alice.send(to: "bob", text: "forgetme alpha")
        _ = try await bob.receiveAll()
        #expect(try bob.found("forgetme") == ["forgetme alpha"])
        try await bob.deleteMessage(mine, forEveryone: false)
        #expect(try bob.found("forgetme").isEmpty)
        #expect(try alice.found("forgetme") == ["forgetme alpha"], "only for bob")
        // Delete for everyone: gone on both sides.
        let everyone = try await alice.send(to: "bob", text: "retracted bravo")
        _ = try await bob.receiveAll()
        try await alice.deleteMessage(everyone, forEveryone: true)
        #expect(try alice.found("retracted").isEmpty)
        _ = try await bob.receiveAll()
        #expect(try bob.found("retracted").isEmpty)
        // Unsend while bob's copy is queued (purged), and after delivery (a delete for everyone follows).
        let queued = try await alice.send(to: "bob", text: "unsent charlie")
        _ = try await alice.unsend(queued)
        #expect(try alice.found("unsent").isEmpty)
        #expect(try await bob.receiveAll().messages.isEmpty)
        let delivered = try await alice.send(to: "bob", text: "withdrawn delta")
        _ = try await bob.receiveAll()
        #expect(try bob.found("withdrawn").count == 1)
        #expect(try await alice.unsend(delivered).deletedForEveryone)
        _ = try await bob.receiveAll()
        #expect(try alice.found("withdrawn").isEmpty && bob.found("withdrawn").isEmpty)
        // Edit: the old version no longer matches, the new one does, on both sides.
        let edited = try await alice.send(to: "bob", text: "original echo wording")
        _ = try await bob.receiveAll()
        try await alice.edit(edited, text: "replacement echo wording")
        _ = try await bob.receiveAll()
        for client in [alice, bob] {
            #expect(try client.found("original").isEmpty)
            #expect(try client.found("replacement") == ["replacement echo wording"])
            #expect(try client.found("echo") == ["replacement echo wording"])
        }
        // A media message's caption and file name go with it.
        let media = try await alice.send(to: "bob", text: "caption foxtrot")
        _ = try await bob.receiveAll()
        try bob.attach(media, kind: "document", fileName: "foxtrot_plan.pdf")
        #expect(try bob.found("plan") == ["caption foxtrot"])
        try await bob.deleteMessage(media, forEveryone: false)
        #expect(try bob.found("plan").isEmpty && bob.found("foxtrot").isEmpty)
        // Disappearing: gone from search as soon as the timer ran out (search sweeps first).
        try await alice.setDisappearing("bob", seconds: 60)
        _ = try await bob.receiveAll()
        _ = try await alice.send(to: "bob", text: "vanishing golf")
        _ = try await bob.receiveAll()
        #expect(try bob.found("vanishing").count == 1 && alice.found("vanishing").count == 1)
        clock.advance(seconds: 61)
        #expect(try bob.found("vanishing").isEmpty && alice.found("vanishing").isEmpty)
        // Declining a message request deletes its messages, and their index entries.
        let carol = try relay.client("carol", now: clock.client)
        _ = try await carol.initialize(relayURL: relay.url, handle: "carol")
        _ = try await carol.send(to: "bob", text: "stranger hotel")
        _ = try await bob.receiveAll()
        #expect(try bob.found("stranger").count == 1)
        #expect(try await bob.declineRequest("carol") == 1)
        #expect(try bob.found("stranger").isEmpty)
        // Every one of those asked for the index to be optimized; sending and receiving alone do not.
        #expect(try bob.searchErasurePending && alice.searchErasurePending)
        #expect(try bob.eraseSearchResidue() && !bob.eraseSearchResidue())
        _ = try await alice.send(to: "bob", text: "just a new message")
        _ = try await bob.receiveAll()
        #expect(try !bob.searchErasurePending)
        await relay.stop()
    }

    @Test func deletedWordsLeaveTheDatabaseFilesAfterTheWindow() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, bob) = try await relay.acquainted(clock: clock)
        // Enough other history that the index has several segments and the deleted words are not alone.
        for index in 0..<20 { _ = try await alice.send(to: "bob", text: "ordinary message number \(index) about tropical birds") }
        let deleted = try await alice.send(to: "bob", text: "quetzalcoatlus xylophonist")
        let unsent = try await alice.send(to: "bob", text: "pterodactylic vexillology")
        let disappearing = try await alice.send(to: "bob", text: "brachiosaurian sauropodal", disappearAfter: 60)
        _ = try await bob.receiveAll()
        let media = try await alice.send(to: "bob", text: "see the attachment")
        _ = try await bob.receiveAll()
        try bob.attach(media, kind: "document", fileName: "ankylosaurid_itinerary.pdf")
        let words = ["quetzalcoatlus", "xylophonist", "pterodactylic", "vexillology", "brachiosaurian", "sauropodal", "ankylosaurid", "itinerary"]
        for word in words { #expect(try bob.storeFilesContain(word), "\(word) is stored before the deletion") }

        try await bob.deleteMessage(deleted, forEveryone: false)
        _ = try await alice.unsend(unsent)
        _ = try await bob.receiveAll()
        try await bob.deleteMessage(media, forEveryone: false)
        clock.advance(seconds: 61)
        // At once: no match (search sweeps the disappeared one first).
        for word in words { #expect(try bob.found(word).isEmpty, "\(word)") }
        #expect(try bob.message(disappearing, with: "alice") == nil)
        // The window: the erasure the CLI runs before the command exits (and every open runs).
        #expect(try bob.eraseSearchResidue())
        for word in words { #expect(try !bob.storeFilesContain(word), "\(word) left no trace in the store's files") }
        #expect(try bob.storeFilesContain("tropical"), "the rest of the history is still there")
        #expect(try bob.found("tropical").count == 20)
        await relay.stop()
    }

    @Test func theNextOpenErasesWhatAnEndedProcessLeft() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let id = try await alice.send(to: "bob", text: "leftover zygomorphic")
        _ = try await bob.receiveAll()
        try await bob.deleteMessage(id, forEveryone: false)
        #expect(try bob.searchErasurePending)
        // A second open of the same home (a process that did not erase has ended) erases at once.
        let reopened = try relay.client("bob")
        #expect(try !reopened.searchErasurePending)
        #expect(try !reopened.storeFilesContain("zygomorphic"))
        await relay.stop()
    }

    @Test func theMigrationIndexesExistingHistory() throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-search-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: home) }
        do {
            let queue = try DatabaseQueue(path: home.appendingPathComponent(ClientStore.fileName).path)
            try ClientStore.migrator.migrate(queue, upTo: "v9-attachments")
            try queue.write { db in
                for (seq, text, kind, deleted) in [(1, "kept walrus", "text", 0), (2, "gone walrus", "text", 2), (3, "", "mutation", 0), (4, "", "text", 0)] {
                    try db.execute(
                        sql: """
                            INSERT INTO messages (seq, message_id, outgoing, peer, text, envelope_id, status, kind, deleted)
                            VALUES (?, ?, 0, 'alice', ?, ?, 'delivered', ?, ?)
                            """,
                        arguments: [seq, Data(repeating: UInt8(seq), count: 16), text, Data(repeating: UInt8(seq), count: 16), kind, deleted])
                }
                try db.execute(sql: "INSERT INTO attachments (message_seq, kind, file_name) VALUES (4, 'audio', 'walrus_song.ogg')")
            }
        }
        let store = try ClientStore(home: home)
        let indexed = try store.dbQueue.read { db in
            try Int64.fetchAll(db, sql: "SELECT rowid FROM search_index WHERE search_index MATCH '\"walrus\"*' ORDER BY rowid")
        }
        #expect(indexed == [1, 4])
    }
}
