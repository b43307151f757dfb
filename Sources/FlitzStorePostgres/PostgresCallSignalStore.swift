import FlitzStore
import Foundation
import PostgresNIO

/// Call signals held for devices and their sequence memory in PostgreSQL's unlogged tables `call_signals` and
/// `call_sequences` (`cluster.md` 4), with the in-memory broker's semantics (`calls.md` 3.2; the caps are
/// `CallSignalCaps`). Made by `PostgresCluster` (`callSignals`).
///
/// Holding for a device runs under a transaction-scoped advisory lock of that device
/// (`pg_advisory_xact_lock(lockClass, hashtext('handle/device'))`), so two nodes holding for one device at once apply
/// the caps one after the other. Taking is one `DELETE ... RETURNING` under the same lock: each signal is taken once.
public final class PostgresCallSignalStore: CallSignalStore {
    /// First key of the advisory locks of `hold` ("call" in ASCII): keeps them apart from other advisory locks.
    static let lockClass: Int32 = 0x6361_6C6C

    let store: PostgresRelayStore

    init(store: PostgresRelayStore) {
        self.store = store
    }

    /// Implements `CallSignalStore.admitSequence` with one upsert whose update applies only when the remembered
    /// sequence expired or is smaller: a replay (equal or smaller) changes nothing and returns no row.
    /// - Throws: `StoreError.backend`.
    public func admitSequence(
        callID: Data, sender: DeviceAddress, recipient: DeviceAddress, sequence: UInt32, nowMs: Int64, rememberUntilMs: Int64
    ) async throws -> Bool {
        try await store.run {
            let rows = try await self.store.client.query(
                """
                INSERT INTO call_sequences (call_id, sender_handle, sender_device_id, recipient_handle, recipient_device_id, sequence, until_ms)
                VALUES (\(callID), \(sender.handle), \(Int64(sender.deviceID)), \(recipient.handle), \(Int64(recipient.deviceID)),
                    \(Int64(sequence)), \(rememberUntilMs))
                ON CONFLICT (call_id, sender_handle, sender_device_id, recipient_handle, recipient_device_id) DO UPDATE
                    SET sequence = EXCLUDED.sequence,
                        until_ms = GREATEST(EXCLUDED.until_ms, CASE WHEN call_sequences.until_ms > \(nowMs) THEN call_sequences.until_ms ELSE 0 END)
                    WHERE call_sequences.until_ms <= \(nowMs) OR call_sequences.sequence < EXCLUDED.sequence
                RETURNING 1
                """, logger: self.store.logger)
            return try await rows.collect().count == 1
        }
    }

    /// Implements `CallSignalStore.hold` in one transaction: per recipient device (in address order, under its
    /// advisory lock), deletes its expired signals, applies `CallSignalCaps` to each new signal in order, deletes the
    /// dropped held ones and inserts the kept new ones.
    /// - Returns: how many signals were dropped by the caps (held ones pushed out and new ones refused).
    /// - Throws: `StoreError.backend`.
    public func hold(_ signals: [HeldCallSignal], nowMs: Int64) async throws -> Int {
        guard !signals.isEmpty else { return 0 }
        return try await store.transaction { connection in try await self.hold(signals, nowMs: nowMs, on: connection) }
    }

    /// Implements `CallSignalStore.admitAndHold` in one transaction: the sequence upsert of `admitSequence`, then
    /// `hold`'s work; a failure rolls both back.
    /// - Throws: `StoreError.backend`.
    public func admitAndHold(
        callID: Data, sender: DeviceAddress, recipient: DeviceAddress, sequence: UInt32, nowMs: Int64, rememberUntilMs: Int64,
        _ signals: [HeldCallSignal]
    ) async throws -> Int? {
        let logger = store.logger
        return try await store.transaction { connection -> Int? in
            let rows = try await connection.query(
                """
                INSERT INTO call_sequences (call_id, sender_handle, sender_device_id, recipient_handle, recipient_device_id, sequence, until_ms)
                VALUES (\(callID), \(sender.handle), \(Int64(sender.deviceID)), \(recipient.handle), \(Int64(recipient.deviceID)),
                    \(Int64(sequence)), \(rememberUntilMs))
                ON CONFLICT (call_id, sender_handle, sender_device_id, recipient_handle, recipient_device_id) DO UPDATE
                    SET sequence = EXCLUDED.sequence,
                        until_ms = GREATEST(EXCLUDED.until_ms, CASE WHEN call_sequences.until_ms > \(nowMs) THEN call_sequences.until_ms ELSE 0 END)
                    WHERE call_sequences.until_ms <= \(nowMs) OR call_sequences.sequence < EXCLUDED.sequence
                RETURNING 1
                """, logger: logger)
            guard try await rows.collect().count == 1 else { return nil }
            return try await self.hold(signals, nowMs: nowMs, on: connection)
        }
    }

    private func hold(_ signals: [HeldCallSignal], nowMs: Int64, on connection: PostgresConnection) async throws -> Int {
        guard !signals.isEmpty else { return 0 }
        var byDevice: [DeviceAddress: [HeldCallSignal]] = [:]
        for signal in signals { byDevice[signal.recipient, default: []].append(signal) }
        let grouped = byDevice
        let devices = byDevice.keys.sorted { ($0.handle, $0.deviceID) < ($1.handle, $1.deviceID) }
        let logger = store.logger
        do {
            var dropped = 0
            for device in devices {
                let handle = device.handle, deviceID = Int64(device.deviceID)
                _ = try await connection.query(
                    "SELECT pg_advisory_xact_lock(\(Self.lockClass), hashtext(\(device.description)))", logger: logger)
                _ = try await connection.query(
                    "DELETE FROM call_signals WHERE handle = \(handle) AND device_id = \(deviceID) AND expires_at_ms <= \(nowMs)", logger: logger)
                // The list as the caps see it: held rows (serial) then new ones (nil), oldest first.
                var list: [(serial: Int64?, entry: CallSignalCaps.Entry, new: HeldCallSignal?)] = []
                let rows = try await connection.query(
                    "SELECT serial, sender_handle, is_offer FROM call_signals WHERE handle = \(handle) AND device_id = \(deviceID) ORDER BY serial",
                    logger: logger)
                for try await (serial, sender, isOffer) in rows.decode((Int64, String, Bool).self) {
                    list.append((serial, CallSignalCaps.Entry(sender: sender, isOffer: isOffer), nil))
                }
                var victims: [Int64] = []
                for signal in grouped[device]! {
                    let entry = CallSignalCaps.Entry(sender: signal.sender.handle, isOffer: signal.isOffer)
                    switch CallSignalCaps.decide(adding: entry, to: list.map(\.entry)) {
                    case .keep:
                        list.append((nil, entry, signal))
                    case .keepDropping(let index):
                        if let serial = list[index].serial { victims.append(serial) }
                        list.remove(at: index)
                        list.append((nil, entry, signal))
                        dropped += 1
                    case .dropNew:
                        dropped += 1
                    }
                }
                if !victims.isEmpty {
                    _ = try await connection.query("DELETE FROM call_signals WHERE serial = ANY(\(victims)::BIGINT[])", logger: logger)
                }
                for signal in list.compactMap(\.new) {
                    _ = try await connection.query(
                        """
                        INSERT INTO call_signals (handle, device_id, call_id, sender_handle, sender_device_id, sequence, is_offer,
                            received_at_ms, expires_at_ms, delivery)
                        VALUES (\(handle), \(deviceID), \(signal.callID), \(signal.sender.handle), \(Int64(signal.sender.deviceID)),
                            \(Int64(signal.sequence)), \(signal.isOffer), \(signal.receivedAtMs), \(signal.expiresAtMs), \(signal.delivery))
                        """, logger: logger)
                }
            }
            return dropped
        }
    }

    /// Implements `CallSignalStore.take` with one `DELETE ... RETURNING` (expired ones are deleted too, not returned),
    /// in a transaction under the device's advisory lock, the one `hold` takes: a `hold` for the device never applies
    /// the caps to signals a concurrent `take` is removing.
    /// - Throws: `StoreError.backend`.
    public func take(_ device: DeviceAddress, nowMs: Int64) async throws -> [HeldCallSignal] {
        try await store.transaction { connection in
            _ = try await connection.query(
                "SELECT pg_advisory_xact_lock(\(Self.lockClass), hashtext(\(device.description)))", logger: self.store.logger)
            let rows = try await connection.query(
                """
                DELETE FROM call_signals WHERE handle = \(device.handle) AND device_id = \(Int64(device.deviceID))
                RETURNING serial, call_id, sender_handle, sender_device_id, sequence, is_offer, received_at_ms, expires_at_ms, delivery
                """, logger: self.store.logger)
            var taken: [(Int64, HeldCallSignal)] = []
            for try await (serial, callID, senderHandle, senderDevice, sequence, isOffer, receivedAt, expiresAt, delivery)
                in rows.decode((Int64, Data, String, Int64, Int64, Bool, Int64, Int64, Data).self) where expiresAt > nowMs
            {
                taken.append(
                    (
                        serial,
                        HeldCallSignal(
                            callID: callID, sender: DeviceAddress(handle: senderHandle, deviceID: UInt32(truncatingIfNeeded: senderDevice)),
                            recipient: device, sequence: UInt32(truncatingIfNeeded: sequence), isOffer: isOffer, receivedAtMs: receivedAt,
                            expiresAtMs: expiresAt, delivery: delivery)
                    ))
            }
            return taken.sorted { $0.0 < $1.0 }.map(\.1)
        }
    }

    /// Implements `CallSignalStore.isOfferWaiting`.
    /// - Throws: `StoreError.backend`.
    public func isOfferWaiting(_ device: DeviceAddress, nowMs: Int64) async throws -> Bool {
        try await store.run {
            let rows = try await self.store.client.query(
                """
                SELECT 1 FROM call_signals
                WHERE handle = \(device.handle) AND device_id = \(Int64(device.deviceID)) AND is_offer AND expires_at_ms > \(nowMs)
                LIMIT 1
                """, logger: self.store.logger)
            return try await rows.collect().count == 1
        }
    }

    /// Implements `CallSignalStore.purge`.
    /// - Throws: `StoreError.backend`.
    public func purge(nowMs: Int64) async throws -> Int {
        try await store.run {
            let count = try await self.store.client.query(
                "DELETE FROM call_signals WHERE expires_at_ms <= \(nowMs) RETURNING 1", logger: self.store.logger
            ).collect().count
            _ = try await self.store.client.query("DELETE FROM call_sequences WHERE until_ms <= \(nowMs)", logger: self.store.logger)
            return count
        }
    }
}
