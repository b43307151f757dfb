import FlitzWire
import Foundation
import GRDB

// Local history search (issue 7, docs/search.md): an FTS5 index in the client store over the visible text of
// messages (a media message's caption is its `messages.text`), attachment file names and location labels. SQL
// triggers keep it in step with every way a message changes or leaves history, in the same transaction; a flag
// row then asks for the FTS5 `optimize` that removes deleted tokens from the index's segments (`eraseSearchResidue`).

// MARK: - public values

/// What `flitz search --type` filters by: a plain text (no attachment) or an attachment's kind
/// (`attachments.kind`, `protocol/attachments.md` section 3).
public enum SearchMessageType: String, Sendable, CaseIterable {
    case text, image, video, audio, document, location
}

/// A search of the local history (`FlitzClient.search`). Every filter is optional; they combine with AND.
public struct SearchQuery: Sendable {
    /// The user's words, separated by white space; each matches as a prefix (`zeb` finds "zebra"), all must match
    /// (in the text, the file name or the location label). Quotes and FTS5 operators are taken literally.
    public var text: String
    /// Only messages written by this handle (this account's own handle: the messages it sent, from any device).
    public var from: String?
    /// Only the conversation with this handle.
    public var conversation: String?
    /// Only messages sent at or after this time (relay acceptance time; the sender's time while pending).
    public var since: Date?
    /// Only messages sent at or before this time.
    public var until: Date?
    /// Only plain texts, or only attachments of this kind.
    public var type: SearchMessageType?
    /// At most this many matches (1...1000).
    public var limit: Int
    /// Messages of the same conversation to return before and after each match (0...100).
    public var context: Int

    /// A query for `text` with no filters, 20 matches, no context.
    public init(
        _ text: String, from: String? = nil, conversation: String? = nil, since: Date? = nil, until: Date? = nil,
        type: SearchMessageType? = nil, limit: Int = 20, context: Int = 0
    ) {
        self.text = text
        self.from = from
        self.conversation = conversation
        self.since = since
        self.until = until
        self.type = type
        self.limit = limit
        self.context = context
    }
}

/// A message shown around a match (`SearchQuery.context`), as `flitz history` shows it.
public struct SearchContextMessage: Sendable, Hashable {
    /// 16-byte message id.
    public var messageID: Data
    /// Its author's handle.
    public var from: String
    /// The current text (empty for a tombstone or a media message without caption).
    public var text: String
    /// Relay acceptance time (the sender's time while pending).
    public var sentAt: Date
    /// Deleted for everyone: a tombstone.
    public var deleted: Bool
}

/// One match of `FlitzClient.search`.
public struct SearchHit: Sendable {
    /// 16-byte message id.
    public var messageID: Data
    /// Its author's handle (this account's own for messages it sent).
    public var from: String
    /// The other party of the conversation.
    public var conversation: String
    /// Whether this account wrote it.
    public var outgoing: Bool
    /// The current text, unmarked (a media message's caption; may be empty when the file name matched).
    public var text: String
    /// FTS5 `snippet()` of the best-matching column (text, file name or label): at most 16 tokens, each matched
    /// token between `FlitzClient.snippetOpen` and `snippetClose`, `snippetEllipsis` where the text was cut.
    public var snippet: String
    /// Relay acceptance time (the sender's time while pending).
    public var sentAt: Date
    /// `text` for a plain message, else the attachment's kind.
    public var type: SearchMessageType
    /// The attachment's file name (nil for a plain text or a location).
    public var fileName: String?
    /// With `SearchQuery.context`: up to that many messages of the conversation just before it, oldest first.
    public var before: [SearchContextMessage]
    /// With `SearchQuery.context`: up to that many just after it, oldest first.
    public var after: [SearchContextMessage]
}

extension FlitzClient {
    /// Marks the start of a matched token in `SearchHit.snippet`: U+00AB «.
    public static let snippetOpen = "\u{AB}"
    /// Marks the end of a matched token in `SearchHit.snippet`: U+00BB ».
    public static let snippetClose = "\u{BB}"
    /// Stands where `SearchHit.snippet` cuts the text: U+2026 ….
    public static let snippetEllipsis = "\u{2026}"
    /// Most words of a query that are searched for; further words are ignored.
    public static let maxSearchWords = 32

    /// The FTS5 query for the user's words: each one a quoted string (quotes inside doubled), so no input can be an
    /// FTS5 operator (`AND`, `NEAR`, `-`, `^`, `:` column filters, parentheses) or a syntax error, followed by `*`
    /// (a prefix match of its last token); the terms combine with AND. A word of punctuation only becomes an empty
    /// string, which FTS5 ignores. nil when there is no word. NUL characters are dropped.
    static func ftsQuery(_ text: String) -> String? {
        let cleaned = String(String.UnicodeScalarView(text.unicodeScalars.filter { $0.value != 0 }))
        let words = cleaned.split(whereSeparator: { $0.isWhitespace }).prefix(maxSearchWords)
        guard !words.isEmpty else { return nil }
        return words.map { "\"" + $0.replacingOccurrences(of: "\"", with: "\"\"") + "\"*" }.joined(separator: " ")
    }

    /// Searches this device's history (local only; the relay has nothing it could search): matches newest first
    /// (in the order they reached this device, as `history` pages), each with a highlighted snippet and, when
    /// asked, its neighbours in the conversation. Expired disappearing messages are removed first. Deleted,
    /// unsent and disappeared messages never match; an edited message matches by its current text only.
    /// - Throws: `ClientError(.invalidArgument)` for no words, a limit outside 1...1000, a context outside
    ///   0...100, an invalid handle, or `since` after `until`; `.notInitialized`; database errors.
    public func search(_ query: SearchQuery) throws -> [SearchHit] {
        let account = try requireAccount()
        guard let match = Self.ftsQuery(query.text) else { throw ClientError(.invalidArgument, "give at least one word to search for") }
        guard (1...1000).contains(query.limit) else { throw ClientError(.invalidArgument, "the limit must be 1 to 1000") }
        guard (0...100).contains(query.context) else { throw ClientError(.invalidArgument, "the context must be 0 to 100 messages") }
        for handle in [query.from, query.conversation].compactMap({ $0 }) where !Handle.isValid(handle) {
            throw ClientError(.invalidArgument, "invalid handle \"\(handle)\"")
        }
        if let since = query.since, let until = query.until, since > until {
            throw ClientError(.invalidArgument, "the start of the period is after its end")
        }
        try sweepExpired()
        return try store.dbQueue.read { db in try Self.search(query, match: match, account: account, db) }
    }

    /// A message's time for search: the relay's acceptance, or the sender's own time while still pending.
    private static let timeSQL = "(CASE WHEN m.accepted_at_ms > 0 THEN m.accepted_at_ms ELSE m.sent_at_ms END)"

    private static func search(_ query: SearchQuery, match: String, account: AccountRecord, _ db: Database) throws -> [SearchHit] {
        var conditions = ["search_index MATCH ?", "m.kind = 'text'", "m.deleted = 0"]
        var arguments: [(any DatabaseValueConvertible)?] = [match]
        if let from = query.from {
            if from == account.handle {
                conditions.append("m.outgoing = 1")
            } else {
                conditions.append("m.outgoing = 0 AND m.peer = ?")
                arguments.append(from)
            }
        }
        if let conversation = query.conversation {
            conditions.append("m.peer = ?")
            arguments.append(conversation)
        }
        if let since = query.since {
            conditions.append("\(timeSQL) >= ?")
            arguments.append(milliseconds(since))
        }
        if let until = query.until {
            conditions.append("\(timeSQL) <= ?")
            arguments.append(milliseconds(until))
        }
        switch query.type {
        case nil: break
        case .text: conditions.append("a.message_seq IS NULL")
        case let type?:
            conditions.append("a.kind = ?")
            arguments.append(type.rawValue)
        }
        arguments.append(query.limit)
        // FTS5 yields rowids (= messages.seq) in descending order itself, so the LIMIT stops the scan early.
        let rows = try Row.fetchAll(
            db,
            sql: """
                SELECT m.seq, m.message_id, m.outgoing, m.peer, m.text, \(timeSQL) AS at_ms, a.kind AS attachment_kind, a.file_name
                FROM search_index JOIN messages m ON m.seq = search_index.rowid LEFT JOIN attachments a ON a.message_seq = m.seq
                WHERE \(conditions.joined(separator: " AND ")) ORDER BY search_index.rowid DESC LIMIT ?
                """,
            arguments: StatementArguments(arguments))
        return try rows.map { row in
            let seq: Int64 = row["seq"]
            let outgoing: Bool = row["outgoing"]
            let peer: String = row["peer"]
            // snippet() only for the rows returned, not for every match.
            let snippet = try String.fetchOne(
                db, sql: "SELECT snippet(search_index, -1, ?, ?, ?, 16) FROM search_index WHERE search_index MATCH ? AND rowid = ?",
                arguments: [snippetOpen, snippetClose, snippetEllipsis, match, seq]) ?? ""
            let kind: String? = row["attachment_kind"]
            var hit = SearchHit(
                messageID: row["message_id"], from: outgoing ? account.handle : peer, conversation: peer, outgoing: outgoing, text: row["text"],
                snippet: snippet, sentAt: date(row["at_ms"]), type: kind.flatMap(SearchMessageType.init(rawValue:)) ?? .text,
                fileName: kind == nil || kind == "location" ? nil : (row["file_name"] as String?), before: [], after: [])
            if query.context > 0 {
                // `+m.peer`: walk the rowids from the match outwards; the (peer, ...) index would sort the whole conversation.
                let neighbours = "SELECT * FROM messages m WHERE +m.peer = ? AND m.kind = 'text' AND m.deleted < 2"
                hit.before = try Row.fetchAll(
                    db, sql: "\(neighbours) AND m.seq < ? ORDER BY m.seq DESC LIMIT ?", arguments: [peer, seq, query.context]
                ).reversed().map { contextMessage($0, account: account) }
                hit.after = try Row.fetchAll(
                    db, sql: "\(neighbours) AND m.seq > ? ORDER BY m.seq LIMIT ?", arguments: [peer, seq, query.context]
                ).map { contextMessage($0, account: account) }
            }
            return hit
        }
    }

    private static func contextMessage(_ row: Row, account: AccountRecord) -> SearchContextMessage {
        let outgoing: Bool = row["outgoing"]
        let accepted: Int64 = row["accepted_at_ms"]
        return SearchContextMessage(
            messageID: row["message_id"], from: outgoing ? account.handle : row["peer"], text: row["text"],
            sentAt: date(accepted > 0 ? accepted : row["sent_at_ms"]), deleted: (row["deleted"] as Int64) == 1)
    }

    private static func milliseconds(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1000).rounded(.down)) }
    private static func date(_ milliseconds: Int64) -> Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }

    /// Removes what deleted, unsent, edited-away and disappeared messages left in the search index's storage: when
    /// a message left the index since the last run, runs the FTS5 `optimize` (which rewrites the index into one
    /// segment without the deleted tokens; `secure_delete` zeroes the freed pages) and, in WAL mode, a
    /// `wal_checkpoint(TRUNCATE)`. Cheap when nothing left the index (one read of a flag row). The CLI runs it
    /// before each command exits; `listen` and `chat` every 30 seconds; every open of the store runs it too.
    /// Returns whether anything was erased. See docs/search.md for what remains until then.
    /// - Throws: database errors.
    @discardableResult
    public func eraseSearchResidue() throws -> Bool {
        try store.eraseSearchResidue()
    }

    /// Runs `eraseSearchResidue` every `interval` until cancelled (`listen`, `chat`); a failure is logged, not fatal.
    func eraseSearchResiduePeriodically(every interval: Duration = .seconds(30)) async throws {
        while true {
            try await Task.sleep(for: interval)
            do { try eraseSearchResidue() } catch { logger.warning("could not erase the search index's residue", metadata: ["error": "\(error)"]) }
        }
    }

    /// Writes `count` synthetic incoming texts (for benchmarks and tests only: no session, no relay; they show in
    /// history like received ones) from `peers` in turn, one second apart from `start`, in one transaction. Each
    /// text is `words` words drawn from a fixed 2 000-word vocabulary (`searchBenchmarkWord(_:)`) by a seeded
    /// generator, so runs are reproducible; message ids are the counter, big-endian, in 16 bytes.
    /// - Throws: `ClientError(.invalidArgument)` for an empty `peers` or a negative count; database errors.
    public func insertSyntheticHistory(count: Int, peers: [String], words: Int = 12, seed: UInt64 = 1, start: Date = Date(timeIntervalSince1970: 1_700_000_000)) throws {
        guard !peers.isEmpty, count >= 0, words > 0 else { throw ClientError(.invalidArgument, "synthetic history needs peers, a count and words") }
        var state = seed | 1
        func next() -> UInt64 {  // xorshift64: reproducible filler, not a secret
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return state
        }
        try store.dbQueue.write { db in
            let base = try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(seq), 0) FROM messages") ?? 0
            let statement = try db.makeStatement(
                sql: """
                    INSERT INTO messages (message_id, outgoing, peer, text, envelope_id, status, accepted_at_ms, displayed, seen_reported)
                    VALUES (?, 0, ?, ?, ?, 'delivered', ?, 1, 1)
                    """)
            for index in 0..<count {
                var id = Data(count: 8)
                id.append(contentsOf: withUnsafeBytes(of: (base + Int64(index) + 1).bigEndian) { Array($0) })
                let text = (0..<words).map { _ in Self.searchBenchmarkWord(Int(next() % 2_000)) }.joined(separator: " ")
                let at = Self.milliseconds(start) + Int64(index) * 1000
                try statement.execute(arguments: [id, peers[index % peers.count], text, id, at])
            }
        }
    }

    /// Word `index` (0..<2000) of the synthetic vocabulary: a consonant-vowel pattern, e.g. "bake", "tomiru".
    public static func searchBenchmarkWord(_ index: Int) -> String {
        let consonants = Array("bdfgklmnprstvz"), vowels = Array("aeiou")
        var word = "", value = index, syllables = 2 + index % 3
        while syllables > 0 {
            word.append(consonants[value % consonants.count])
            value /= consonants.count
            word.append(vowels[value % vowels.count])
            value = value / vowels.count + index
            syllables -= 1
        }
        return word
    }
}

extension ClientStore {
    /// Migration `v11-search` (docs/search.md): the FTS5 table `search_index` (rowid = `messages.seq`; columns text,
    /// file_name, label; unicode61 without diacritics, prefix indexes of 2 and 3 characters), the triggers that keep
    /// it equal to the visible history in the same transaction as any change, and `search_erasure`, the flag row
    /// the triggers set when something left the index (so `eraseSearchResidue` runs the FTS5 optimize). A message is
    /// indexed while `kind = 'text' AND deleted = 0` and it has a text, file name or label; existing rows are
    /// indexed here. When a message is deleted (for everyone, for me, unsent, disappeared) its attachment's file
    /// name and label are cleared too, so they do not stay on disk either.
    static func migrateSearch(_ db: Database) throws {
        // Re-indexes one message (`KEY`: a trigger's NEW.seq or OLD.message_seq): out, then in when visible.
        func reindex(_ key: String) -> String {
            """
            DELETE FROM search_index WHERE rowid = \(key);
            INSERT INTO search_index (rowid, text, file_name, label)
                SELECT m.seq, m.text, COALESCE(a.file_name, ''), COALESCE(a.label, '')
                FROM messages m LEFT JOIN attachments a ON a.message_seq = m.seq
                WHERE m.seq = \(key) AND m.kind = 'text' AND m.deleted = 0
                    AND (m.text != '' OR COALESCE(a.file_name, '') != '' OR COALESCE(a.label, '') != '');
            """
        }
        try db.execute(sql: """
            CREATE VIRTUAL TABLE search_index USING fts5(text, file_name, label, tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3');
            CREATE TABLE search_erasure (id INTEGER PRIMARY KEY CHECK (id = 1));
            INSERT INTO search_index (rowid, text, file_name, label)
                SELECT m.seq, m.text, COALESCE(a.file_name, ''), COALESCE(a.label, '')
                FROM messages m LEFT JOIN attachments a ON a.message_seq = m.seq
                WHERE m.kind = 'text' AND m.deleted = 0
                    AND (m.text != '' OR COALESCE(a.file_name, '') != '' OR COALESCE(a.label, '') != '');
            CREATE TRIGGER search_messages_insert AFTER INSERT ON messages BEGIN
                \(reindex("NEW.seq"))
            END;
            CREATE TRIGGER search_messages_update AFTER UPDATE OF text, kind, deleted ON messages BEGIN
                UPDATE attachments SET file_name = '', label = ''
                    WHERE message_seq = NEW.seq AND NEW.deleted != 0 AND (file_name != '' OR label != '');
                \(reindex("NEW.seq"))
                INSERT OR IGNORE INTO search_erasure (id) SELECT 1
                    WHERE OLD.kind = 'text' AND OLD.deleted = 0 AND OLD.text != ''
                        AND (NEW.kind != 'text' OR NEW.deleted != 0 OR NEW.text != OLD.text);
            END;
            CREATE TRIGGER search_messages_delete AFTER DELETE ON messages BEGIN
                DELETE FROM search_index WHERE rowid = OLD.seq;
                INSERT OR IGNORE INTO search_erasure (id) SELECT 1 WHERE OLD.kind = 'text' AND OLD.deleted = 0 AND OLD.text != '';
            END;
            CREATE TRIGGER search_attachments_insert AFTER INSERT ON attachments BEGIN
                \(reindex("NEW.message_seq"))
            END;
            CREATE TRIGGER search_attachments_update AFTER UPDATE OF file_name, label, message_seq ON attachments BEGIN
                \(reindex("OLD.message_seq"))
                \(reindex("NEW.message_seq"))
                INSERT OR IGNORE INTO search_erasure (id) SELECT 1
                    WHERE (OLD.file_name != '' AND NEW.file_name IS NOT OLD.file_name) OR (OLD.label != '' AND NEW.label IS NOT OLD.label);
            END;
            CREATE TRIGGER search_attachments_delete AFTER DELETE ON attachments BEGIN
                \(reindex("OLD.message_seq"))
                INSERT OR IGNORE INTO search_erasure (id) SELECT 1 WHERE OLD.file_name != '' OR OLD.label != '';
            END;
            """)
    }

    /// See `FlitzClient.eraseSearchResidue`.
    @discardableResult
    func eraseSearchResidue() throws -> Bool {
        let erased = try dbQueue.write { db -> Bool in
            guard try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM search_erasure)") == true else { return false }
            try db.execute(sql: "INSERT INTO search_index (search_index) VALUES ('optimize')")
            try db.execute(sql: "DELETE FROM search_erasure")
            return true
        }
        guard erased else { return false }
        // The store uses a rollback journal today (deleted at each commit); in WAL mode the WAL would keep the old pages.
        try dbQueue.writeWithoutTransaction { db in
            if try String.fetchOne(db, sql: "PRAGMA journal_mode")?.lowercased() == "wal" {
                try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)")
            }
        }
        return true
    }
}
