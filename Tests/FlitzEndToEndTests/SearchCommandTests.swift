import Foundation
import Testing

/// `flitz search` with the real binaries: filters, JSON rows, context, usage errors, and deleted words gone from the
/// store's files when the deleting command has exited (docs/search.md).
@Suite(.serialized)
struct SearchCommandTests {
    @Test func searchThroughTheCLI() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let alice = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
        #expect(try alice.flitz("init", "--relay", relay.url, "--handle", "alice").status == 0)
        #expect(try bob.flitz("init", "--relay", relay.url, "--handle", "bob").status == 0)
        #expect(try alice.flitz("send", "bob", "before the match").status == 0)
        let sent = try alice.flitz("send", "bob", "the okapi grazes at dawn")
        #expect(sent.status == 0)
        let id = sent.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try alice.flitz("send", "bob", "after the match").status == 0)
        _ = try bob.receiveJSON()
        #expect(try bob.flitz("send", "alice", "okapis are shy").status == 0)

        let result = try bob.flitz("search", "oka", "--json", "--context", "1")
        #expect(result.status == 0, "\(result)")
        let rows = result.lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(rows.map { $0["text"] as? String } == ["okapis are shy", "the okapi grazes at dawn"], "newest first")
        let row = try #require(rows.last)
        #expect(row["id"] as? String == id && row["from"] as? String == "alice" && row["conversation"] as? String == "alice")
        #expect(row["snippet"] as? String == "the «okapi» grazes at dawn" && row["type"] as? String == "text")
        #expect((row["sentAt"] as? String)?.hasSuffix("Z") == true)
        #expect((row["before"] as? [[String: Any]])?.map { $0["text"] as? String } == ["before the match"])
        #expect((row["after"] as? [[String: Any]])?.map { $0["text"] as? String } == ["after the match"])
        #expect(rows.first?["from"] as? String == "bob")

        let filtered = try bob.flitz("search", "okapi", "--from", "alice", "--in", "alice", "--type", "text", "--since", "2000-01-01", "--limit", "5")
        #expect(filtered.status == 0 && filtered.lines.count == 2, "\(filtered)")
        #expect(filtered.lines.last == "    the «okapi» grazes at dawn", "not a terminal: the markers stay")
        #expect(try bob.flitz("search", "okapi", "--until", "2000-01-01").stdout.isEmpty)
        // Hostile words are searched for as written.
        for words in [["\"okapi"], ["NEAR(okapi"], ["--", "-okapi"], ["okapi*"], ["'", "OR", "1=1"]] {
            let hostile = try runProcess(Binaries.flitz, ["search", "--home", bob.home.path] + words, in: scratch)
            #expect(hostile.status == 0, "\(words): \(hostile)")
        }
        // Usage errors exit 64 with a clear message.
        for bad in [["search"], ["search", "x", "--type", "gif"], ["search", "x", "--since", "yesterday"], ["search", "x", "--limit", "0"],
            ["search", "x", "--context", "-1"], ["search", "x", "--since", "2026-02-01", "--until", "2026-01-01"]]
        {
            let refused = try runProcess(Binaries.flitz, bad + ["--home", bob.home.path], in: scratch)
            #expect(refused.status == 64, "\(bad): \(refused)")
            #expect(!refused.stderr.isEmpty)
        }

        // A delete for me: the words leave the store's files before `flitz delete` exits.
        #expect(bob.storeFiles.contains { (try? Data(contentsOf: $0))?.range(of: Data("grazes".utf8)) != nil })
        #expect(try bob.flitz("delete", id).status == 0)
        #expect(anyFile(bob.storeFiles, contains: "grazes") == nil)
        #expect(anyFile(bob.storeFiles, contains: "dawn") == nil)
        #expect(try bob.flitz("search", "grazes").stdout.isEmpty)
    }
}
