import FlitzProtocol
import Foundation
import GRDB
import Testing

@testable import FlitzClient

/// The call history of migration `v14-calls` (protocol/calls.md 8).
@Suite struct CallHistoryTests {
    static func id(_ byte: UInt8) -> CallID { CallID(Data(repeating: byte, count: 16))! }

    @Test func recordsAndListsNewestFirstOncePerCall() throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-calls-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: home) }
        let store = try ClientStore(home: home)
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let answered = CallRecord(
            callID: Self.id(1), peer: "bob", direction: .outgoing, startedAt: t0, answeredAt: t0.addingTimeInterval(4),
            endedAt: t0.addingTimeInterval(34.5), outcome: .answered)
        let missed = CallRecord(
            callID: Self.id(2), peer: "carol", direction: .incoming, startedAt: t0.addingTimeInterval(100), answeredAt: nil,
            endedAt: t0.addingTimeInterval(160), outcome: .missed)
        let elsewhere = CallRecord(
            callID: Self.id(3), peer: "bob", direction: .incoming, startedAt: t0.addingTimeInterval(200), answeredAt: nil,
            endedAt: t0.addingTimeInterval(203), outcome: .answeredElsewhere)
        try store.dbQueue.write { db in
            for record in [answered, missed, elsewhere] { try ClientStore.recordCall(record, db) }
            // A second end of the same call (a late duplicate) changes nothing.
            var again = answered
            again.outcome = .failed
            try ClientStore.recordCall(again, db)
        }
        let all = try store.dbQueue.read { db in try ClientStore.callHistory(peer: nil, limit: nil, db) }
        #expect(all == [elsewhere, missed, answered])
        #expect(all.map(\.duration) == [0, 0, 30.5])
        #expect(try store.dbQueue.read { db in try ClientStore.callHistory(peer: "bob", limit: 1, db) } == [elsewhere])
        let stored = try store.dbQueue.read { db in try String.fetchAll(db, sql: "SELECT outcome FROM calls ORDER BY started_at") }
        #expect(stored == ["answered", "missed", "answered_elsewhere"])
        // Reopening runs no migration twice and keeps the history.
        let reopened = try ClientStore(home: home)
        #expect(try reopened.dbQueue.read { db in try ClientStore.callHistory(peer: nil, limit: nil, db) }.count == 3)
    }

    @Test func outcomeLabels() {
        #expect(CallOutcome.allCases.map { $0.label(direction: .incoming) }
            == ["answered", "missed", "declined", "busy", "failed", "answered elsewhere"])
        #expect(CallOutcome.missed.label(direction: .outgoing) == "no answer")
    }
}
