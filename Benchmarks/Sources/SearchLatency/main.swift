// History search latency (issue 7): a client home with 100 000 stored messages, `FlitzClient.search` timed over
// repeated rounds, next to the bare FTS5 query on the same database file measured in the same run (the floor the
// client's work sits on). Prints medians. Usage: SearchLatency [MESSAGES] [ROUNDS]
import FlitzClient
import FlitzRelay
import Foundation
import GRDB
import Logging

let arguments = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let count = arguments.first ?? 100_000
let rounds = arguments.dropFirst().first ?? 21

func median(_ values: [Duration]) -> Double {
    let sorted = values.sorted()
    let middle = sorted[sorted.count / 2]
    return Double(middle.components.seconds) * 1000 + Double(middle.components.attoseconds) / 1e15
}

func time(_ body: () throws -> Void) rethrows -> Duration {
    let clock = ContinuousClock()
    let start = clock.now
    try body()
    return clock.now - start
}

let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-search-latency-\(UUID().uuidString)")
try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(at: directory) }
var logger = Logger(label: "search-latency")
logger.logLevel = .critical
let application = try await buildRelay(
    configuration: RelayConfiguration(port: 0, databasePath: directory.appendingPathComponent("relay.sqlite").path), logger: logger)
let relay = Task { try await application.run(handleSignals: false) }
let client = try FlitzClient(home: directory.appendingPathComponent("reader"), logger: logger)
_ = try await client.initialize(relayURL: "ws://127.0.0.1:\(await application.port())", handle: "reader")
let filled = try time { try client.insertSyntheticHistory(count: count, peers: ["alice", "carol", "dave"]) }
print("stored \(count) synthetic messages in \(String(format: "%.1f", median([filled]) / 1000)) s")

let word = FlitzClient.searchBenchmarkWord(5)
let prefix = String(word.prefix(2))
let cases: [(String, SearchQuery)] = [
    ("one word, 20 newest", SearchQuery(word)),
    ("two-letter prefix, 20 newest", SearchQuery(prefix)),
    ("two words", SearchQuery("\(word) \(FlitzClient.searchBenchmarkWord(6))")),
    ("one word, --context 5", { var q = SearchQuery(word); q.context = 5; return q }()),
    ("no match", SearchQuery("zzzzqqq")),
]
// The bare index query the one-word search is built on, on its own connection to the same file.
let raw = try DatabaseQueue(path: directory.appendingPathComponent("reader/flitz.sqlite").path)
let rawSQL = "SELECT rowid FROM search_index WHERE search_index MATCH ? ORDER BY rowid DESC LIMIT 20"
var floor: [Duration] = []
var measured = Array(repeating: [Duration](), count: cases.count)
for _ in 0..<rounds {
    floor.append(try time { _ = try raw.read { db in try Int64.fetchAll(db, sql: rawSQL, arguments: ["\"\(word)\"*"]) } })
    for (index, (_, query)) in cases.enumerated() {
        measured[index].append(try time { _ = try client.search(query) })
    }
}
print(String(format: "%-42@ median %7.2f ms   (%d rounds, %d messages)", "bare FTS5 query (floor)" as NSString, median(floor), rounds, count))
for (index, (name, _)) in cases.enumerated() {
    print(String(format: "%-42@ median %7.2f ms", "search: \(name)" as NSString, median(measured[index])))
}
await application.triggerGracefulShutdown()
_ = await relay.result
