import ArgumentParser
import FlitzClient
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The clients this `flitz` process opened, so `run` can erase the search index's residue before the command
/// exits (docs/search.md: deleted messages leave the files before the command that deleted them ends).
enum OpenClients {
    private static let clients = Mutex<[FlitzClient]>([])

    static func add(_ client: FlitzClient) { clients.withLock { $0.append(client) } }

    /// Runs `eraseSearchResidue` on each open client; a failure is reported, never fatal (the next open retries).
    static func eraseSearchResidue() {
        for client in clients.withLock({ $0 }) {
            do { try client.eraseSearchResidue() } catch { printError("flitz: could not erase deleted messages from the search index yet: \(error)") }
        }
    }
}

struct Search: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Search this device's message history: texts, captions, file names and location labels, newest first.",
        discussion: """
            Each word matches as a prefix (zeb finds zebra), all words must match, case and accents are ignored; \
            quotes and operators are searched for as written (put -- before a word that starts with -). \
            Matched words are shown in bold on a terminal, else between « and ». DATE is an ISO 8601 date \
            (2026-11-30, a whole UTC day) or time with a zone (2026-11-30T18:00:00Z). \
            --json prints one object per match: id, from, conversation, sentAt, type, text (unmarked), snippet \
            (matches between « and », … where cut), fileName for a file, and with --context, before and after \
            (each a list of {id, from, text, sentAt, deleted}, oldest first). Local only: nothing is sent.
            """)
    @OptionGroup var options: CommonOptions
    @Argument(help: "Words to search for.") var words: [String]
    @Option(help: "Only messages written by this handle (your own: the ones you sent).") var from: String?
    @Option(name: .customLong("in"), help: "Only the conversation with this handle.") var conversation: String?
    @Option(help: "Only messages sent on or after DATE.") var since: String?
    @Option(help: "Only messages sent on or before DATE.") var until: String?
    @Option(help: "text, image, video, audio, document or location.") var type: String?
    @Option(help: "Most matches to show (1 to 1000).") var limit: Int = 20
    @Option(help: "Also show N messages before and after each match (0 to 100).") var context: Int = 0
    @Flag(help: "One JSON object per match.") var json = false

    func validate() throws {
        guard words.contains(where: { !$0.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }) else {
            throw ValidationError("give at least one word to search for")
        }
        guard (1...1000).contains(limit) else { throw ValidationError("--limit must be 1 to 1000") }
        guard (0...100).contains(context) else { throw ValidationError("--context must be 0 to 100") }
        if let type, SearchMessageType(rawValue: type) == nil {
            throw ValidationError("--type takes \(SearchMessageType.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let start = try since.map { try parseSearchDate($0, option: "--since").start }
        let end = try until.map { try parseSearchDate($0, option: "--until").end }
        if let start, let end, start > end { throw ValidationError("--since is after --until") }
    }

    func run() async throws {
        let client = try options.client()
        let query = SearchQuery(
            words.joined(separator: " "), from: from, conversation: conversation,
            since: try since.map { try parseSearchDate($0, option: "--since").start },
            until: try until.map { try parseSearchDate($0, option: "--until").end },
            type: type.flatMap(SearchMessageType.init(rawValue:)), limit: limit, context: context)
        let hits = try await FlitzCLI.run { try client.search(query) }
        let own = try await FlitzCLI.run { try client.handle() }
        let bold = !json && isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil
        for (index, hit) in hits.enumerated() {
            if json {
                printJSON(searchObject(hit))
                continue
            }
            if context > 0 && index > 0 { printLine("--") }
            for message in hit.before { printLine("  " + contextLine(message, own: own)) }
            let who = hit.outgoing ? "you → \(hit.conversation)" : "\(hit.from) → you"
            let what = hit.type == .text ? "" : "[\(hit.type.rawValue)\(hit.fileName.map { " " + terminalSafe($0) } ?? "")] "
            printLine("\(rfc3339(hit.sentAt))  \(who)  \(hit.messageID.hexString)")
            printLine("    \(what)\(highlighted(hit.snippet, bold: bold))")
            for message in hit.after { printLine("  " + contextLine(message, own: own)) }
        }
        if hits.isEmpty && !json { printError("flitz: no matches") }
    }
}

/// A search match as a JSON object (`flitz search --json`).
func searchObject(_ hit: SearchHit) -> [String: Any] {
    var object: [String: Any] = [
        "id": hit.messageID.hexString, "from": hit.from, "conversation": hit.conversation, "sentAt": rfc3339(hit.sentAt),
        "text": hit.text, "snippet": hit.snippet, "type": hit.type.rawValue,
    ]
    if let fileName = hit.fileName { object["fileName"] = fileName }
    if !hit.before.isEmpty || !hit.after.isEmpty {
        object["before"] = hit.before.map(contextObject)
        object["after"] = hit.after.map(contextObject)
    }
    return object
}

private func contextObject(_ message: SearchContextMessage) -> [String: Any] {
    ["id": message.messageID.hexString, "from": message.from, "text": message.text, "sentAt": rfc3339(message.sentAt), "deleted": message.deleted]
}

private func contextLine(_ message: SearchContextMessage, own: String) -> String {
    let text = message.deleted ? "message deleted" : terminalSafe(message.text)
    return "\(rfc3339(message.sentAt))  \(message.from == own ? "you" : message.from): \(text)"
}

/// A snippet for the terminal: each piece made terminal-safe, matches in bold (or between « and » when `bold` is
/// false: not a terminal, or NO_COLOR set).
func highlighted(_ snippet: String, bold: Bool) -> String {
    guard bold else { return terminalSafe(snippet) }
    var out = ""
    for (index, piece) in snippet.components(separatedBy: FlitzClient.snippetOpen).enumerated() {
        let parts = piece.components(separatedBy: FlitzClient.snippetClose)
        if index > 0, parts.count > 1 {
            out += "\u{1B}[1m" + terminalSafe(parts[0]) + "\u{1B}[22m" + terminalSafe(parts.dropFirst().joined(separator: FlitzClient.snippetClose))
        } else {
            out += terminalSafe(piece)
        }
    }
    return out
}

/// `--since` / `--until`: an ISO 8601 date (the whole UTC day: its first and last millisecond) or a time with a
/// zone (that instant for both).
/// - Throws: `ValidationError` naming the option.
func parseSearchDate(_ text: String, option: String) throws -> (start: Date, end: Date) {
    if let time = parseISO8601(text) { return (time, time) }
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withFullDate]
    formatter.timeZone = TimeZone(identifier: "UTC")
    if text.count == 10, let day = formatter.date(from: text) {
        return (day, day.addingTimeInterval(86_400 - 0.001))
    }
    throw ValidationError("\(option) takes an ISO 8601 date (2026-11-30) or a time with a zone (2026-11-30T18:00:00Z)")
}
