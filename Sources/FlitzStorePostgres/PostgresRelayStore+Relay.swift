import FlitzStore
import Foundation
import Logging
import PostgresNIO

/// Queries the relay needs beside the `RelayStore` contract when it runs on PostgreSQL (`protocol/cluster.md` 3.3 and
/// the relay's queue-depth metric). Owned by the relay (helper "relay"); they read the core schema's tables.
extension PostgresRelayStore {
    /// For each of `devices`, the highest queue sequence ever assigned to it (`queue_counters`, `cluster.md` 5), in one
    /// query; devices that never had an item queued are absent. The periodic check (3.3) wakes a connection whose
    /// device's head is past what it sent.
    /// - Throws: `StoreError.backend`.
    public func queueHeads(_ devices: [DeviceAddress]) async throws -> [DeviceAddress: Int64] {
        guard !devices.isEmpty else { return [:] }
        let handles = devices.map(\.handle)
        let ids = devices.map { Int64($0.deviceID) }
        return try await run {
            let rows = try await self.client.query(
                """
                SELECT c.handle, c.device_id::BIGINT, c.next_sequence::BIGINT - 1
                FROM queue_counters c
                JOIN unnest(\(handles)::TEXT[], \(ids)::BIGINT[]) AS d(handle, device_id)
                  ON c.handle = d.handle AND c.device_id = d.device_id
                """, logger: self.logger)
            var heads: [DeviceAddress: Int64] = [:]
            for try await (handle, deviceID, head) in rows.decode((String, Int64, Int64).self) {
                heads[DeviceAddress(handle: handle, deviceID: UInt32(truncatingIfNeeded: deviceID))] = head
            }
            return heads
        }
    }

    /// How many items are queued (envelopes and receipts, delivered or not), counting at most `limit` (the
    /// `flitz_relay_queue_depth` gauge: a count capped so a huge table costs a bounded scan).
    /// - Throws: `StoreError.backend`.
    public func queueDepth(limit: Int) async throws -> Int {
        try await run {
            let rows = try await self.client.query(
                "SELECT count(*)::BIGINT FROM (SELECT 1 FROM queue_items LIMIT \(Int64(limit))) AS q", logger: self.logger)
            for try await count in rows.decode(Int64.self) { return Int(count) }
            return 0
        }
    }
}

extension PostgresRelayStore {
    /// A store over the database of `url` (`PostgresRelayStore.configuration(url:)`, `cluster.md` 2).
    /// - Throws: `StoreError.backend` naming what is wrong with the URL (never its password).
    public convenience init(url: String, makeID: @escaping @Sendable () -> Data, logger: Logger) throws {
        self.init(configuration: try Self.configuration(url: url), makeID: makeID, logger: logger)
    }
}

extension PostgresRelayStore {
    /// How many unexpired call signal copies are held in `call_signals` for all nodes at `nowMs` (one aggregate count,
    /// nothing about whom): the cluster's `flitz_call_signals_held` gauge.
    /// - Throws: `StoreError.backend`.
    public func heldCallSignalCount(nowMs: Int64) async throws -> Int64 {
        try await run {
            let rows = try await self.client.query("SELECT count(*)::BIGINT FROM call_signals WHERE expires_at_ms > \(nowMs)", logger: self.logger)
            for try await count in rows.decode(Int64.self) { return count }
            return 0
        }
    }

    /// Which of `devices` have an unexpired call signal held in `call_signals` (`cluster.md` 4), in one query: the
    /// periodic check (3.3) wakes only their connections to take them.
    /// - Throws: `StoreError.backend`.
    public func devicesWithHeldCallSignals(_ devices: [DeviceAddress], nowMs: Int64) async throws -> Set<DeviceAddress> {
        guard !devices.isEmpty else { return [] }
        let handles = devices.map(\.handle)
        let ids = devices.map { Int64($0.deviceID) }
        return try await run {
            let rows = try await self.client.query(
                """
                SELECT DISTINCT s.handle, s.device_id::BIGINT
                FROM call_signals s
                JOIN unnest(\(handles)::TEXT[], \(ids)::BIGINT[]) AS d(handle, device_id)
                  ON s.handle = d.handle AND s.device_id = d.device_id
                WHERE s.expires_at_ms > \(nowMs)
                """, logger: self.logger)
            var found = Set<DeviceAddress>()
            for try await (handle, deviceID) in rows.decode((String, Int64).self) {
                found.insert(DeviceAddress(handle: handle, deviceID: UInt32(truncatingIfNeeded: deviceID)))
            }
            return found
        }
    }
}
