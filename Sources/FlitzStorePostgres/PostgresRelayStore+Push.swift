import FlitzStore
import Foundation
import PostgresNIO

// `PushEndpointStore` in PostgreSQL (`protocol/push.md` 4, 5 and 7), translated from `SQLiteRelayStore`: the same
// rules, the same answers. The urgent-wake decision takes the endpoint's row lock (`SELECT ... FOR UPDATE`), so two
// nodes deciding at once serialize and only the first opens the window (`cluster.md` 4, "Push").
extension PostgresRelayStore {
    /// Implements `PushEndpointStore.setPushEndpoint` in one transaction (the row is locked while it is compared).
    /// - Throws: `StoreError.unknownDevice` when `device` is not a current device; `.corrupt` when `endpoint.endpoint`
    ///   is nil; `.backend` when the database fails.
    public func setPushEndpoint(device: DeviceAddress, _ endpoint: StoredPushEndpoint) async throws -> StoredPushEndpoint {
        guard let address = endpoint.endpoint else { throw StoreError(.corrupt, "a push endpoint to set needs an endpoint") }
        let handle = device.handle, deviceID = Int64(device.deviceID)
        return try await transaction { connection in
            // Locks the device row against its removal meanwhile (FOR KEY SHARE lets other readers through).
            let exists = try await connection.query(
                "SELECT 1 FROM devices WHERE handle = \(handle) AND device_id = \(deviceID) FOR KEY SHARE", logger: self.logger)
            guard try await exists.collect().count == 1 else { throw StoreError(.unknownDevice) }
            if let current = try await Self.pushEndpoint(connection, device, lock: true, logger: self.logger), current.isLive,
                current.provider == endpoint.provider, current.endpoint == address
            {
                // The same endpoint again: only the registration time (and the keys) change (push.md 4).
                _ = try await connection.query(
                    """
                    UPDATE push_endpoints SET registered_at = \(endpoint.registeredAtMs), p256dh = \(endpoint.p256dh),
                        auth_secret = \(endpoint.authSecret), apns_background = \(endpoint.apnsBackground)
                    WHERE handle = \(handle) AND device_id = \(deviceID)
                    """, logger: self.logger)
            } else {
                _ = try await connection.query(
                    """
                    INSERT INTO push_endpoints (handle, device_id, provider, endpoint, p256dh, auth_secret, apns_background, registered_at)
                    VALUES (\(handle), \(deviceID), \(endpoint.provider), \(address), \(endpoint.p256dh), \(endpoint.authSecret),
                        \(endpoint.apnsBackground), \(endpoint.registeredAtMs))
                    ON CONFLICT (handle, device_id) DO UPDATE SET provider = EXCLUDED.provider, endpoint = EXCLUDED.endpoint,
                        p256dh = EXCLUDED.p256dh, auth_secret = EXCLUDED.auth_secret, apns_background = EXCLUDED.apns_background,
                        registered_at = EXCLUDED.registered_at, last_wake_at = 0, wakes_sent = 0, last_failure = '', dropped_at = 0,
                        urgent_window_until = 0
                    """, logger: self.logger)
            }
            guard let stored = try await Self.pushEndpoint(connection, device, lock: false, logger: self.logger) else {
                throw StoreError(.corrupt, "push endpoint vanished")
            }
            return stored
        }
    }

    /// Implements `PushEndpointStore.removePushEndpoint`.
    /// - Throws: `StoreError.backend`.
    public func removePushEndpoint(device: DeviceAddress) async throws {
        try await run {
            _ = try await self.client.query(
                "DELETE FROM push_endpoints WHERE handle = \(device.handle) AND device_id = \(Int64(device.deviceID))", logger: self.logger)
        }
    }

    /// Implements `PushEndpointStore.pushEndpoint`.
    /// - Throws: `StoreError.backend`.
    public func pushEndpoint(device: DeviceAddress) async throws -> StoredPushEndpoint? {
        try await run {
            try await self.client.withConnection { connection in
                try await Self.pushEndpoint(connection, device, lock: false, logger: self.logger)
            }
        }
    }

    /// Implements `PushEndpointStore.decideUrgentWake` in one transaction holding the endpoint's row lock: a second
    /// node deciding for the same device waits for the first to commit, then finds the window open (`.coalesced`).
    /// - Throws: `StoreError.backend`.
    public func decideUrgentWake(device: DeviceAddress, nowMs: Int64, windowUntilMs: Int64) async throws -> UrgentWakeDecision {
        try await transaction { connection in
            guard var current = try await Self.pushEndpoint(connection, device, lock: true, logger: self.logger), current.isLive else {
                return .noEndpoint
            }
            guard current.urgentWindowUntilMs <= nowMs else { return .coalesced(provider: current.provider) }
            _ = try await connection.query(
                """
                UPDATE push_endpoints SET urgent_window_until = \(windowUntilMs)
                WHERE handle = \(device.handle) AND device_id = \(Int64(device.deviceID))
                """, logger: self.logger)
            current.urgentWindowUntilMs = windowUntilMs
            return .wake(current)
        }
    }

    /// Implements `PushEndpointStore.closeUrgentWindow`.
    /// - Throws: `StoreError.backend`.
    public func closeUrgentWindow(device: DeviceAddress, onlyIfUntilMs: Int64?) async throws {
        let handle = device.handle, deviceID = Int64(device.deviceID)
        try await run {
            if let until = onlyIfUntilMs {
                _ = try await self.client.query(
                    """
                    UPDATE push_endpoints SET urgent_window_until = 0
                    WHERE handle = \(handle) AND device_id = \(deviceID) AND urgent_window_until = \(until)
                    """, logger: self.logger)
            } else {
                _ = try await self.client.query(
                    """
                    UPDATE push_endpoints SET urgent_window_until = 0
                    WHERE handle = \(handle) AND device_id = \(deviceID) AND urgent_window_until <> 0
                    """, logger: self.logger)
            }
        }
    }

    /// Implements `PushEndpointStore.recordPushAccepted`.
    /// - Throws: `StoreError.backend`.
    public func recordPushAccepted(device: DeviceAddress, endpoint: String, atMs: Int64) async throws {
        try await run {
            _ = try await self.client.query(
                """
                UPDATE push_endpoints SET last_wake_at = \(atMs), wakes_sent = wakes_sent + 1, last_failure = ''
                WHERE handle = \(device.handle) AND device_id = \(Int64(device.deviceID)) AND endpoint = \(endpoint)
                """, logger: self.logger)
        }
    }

    /// Implements `PushEndpointStore.recordPushFailed`.
    /// - Throws: `StoreError.backend`.
    public func recordPushFailed(device: DeviceAddress, endpoint: String, reason: String) async throws {
        try await run {
            _ = try await self.client.query(
                """
                UPDATE push_endpoints SET last_failure = \(reason)
                WHERE handle = \(device.handle) AND device_id = \(Int64(device.deviceID)) AND endpoint = \(endpoint)
                """, logger: self.logger)
        }
    }

    /// Implements `PushEndpointStore.dropPushEndpoint`.
    /// - Throws: `StoreError.backend`.
    public func dropPushEndpoint(device: DeviceAddress, endpoint: String, reason: String, atMs: Int64) async throws -> Bool {
        try await run {
            let rows = try await self.client.query(
                """
                UPDATE push_endpoints SET endpoint = NULL, p256dh = NULL, auth_secret = NULL, dropped_at = \(atMs),
                    last_failure = \(reason), urgent_window_until = 0
                WHERE handle = \(device.handle) AND device_id = \(Int64(device.deviceID)) AND endpoint = \(endpoint)
                RETURNING 1
                """, logger: self.logger)
            return try await rows.collect().count == 1
        }
    }

    /// Implements `PushEndpointStore.isEnvelopeQueued` over pg-core's queue (`queue_items`: an envelope item, kind 1,
    /// for the device, unexpired).
    /// - Throws: `StoreError.backend`.
    public func isEnvelopeQueued(envelopeID: Data, device: DeviceAddress, nowMs: Int64) async throws -> Bool {
        try await run {
            let rows = try await self.client.query(
                """
                SELECT 1 FROM queue_items
                WHERE handle = \(device.handle) AND device_id = \(Int64(device.deviceID)) AND envelope_id = \(envelopeID)
                    AND kind = 1 AND expires_at_ms > \(nowMs)
                LIMIT 1
                """, logger: self.logger)
            return try await rows.collect().count == 1
        }
    }

    /// Implements `PushEndpointStore.relaySecret`: `INSERT ... ON CONFLICT DO NOTHING` then a read, in one
    /// transaction; a racing node's insert that committed first wins, and this one reads it.
    /// - Throws: `StoreError.backend`; `.corrupt` if the row vanished.
    public func relaySecret(named name: String, orStore candidate: Data, atMs: Int64) async throws -> Data {
        try await transaction { connection in
            _ = try await connection.query(
                """
                INSERT INTO relay_secrets (name, value, created_at) VALUES (\(name), \(candidate), \(atMs))
                ON CONFLICT (name) DO NOTHING
                """, logger: self.logger)
            for try await value in try await connection.query("SELECT value FROM relay_secrets WHERE name = \(name)", logger: self.logger)
                .decode(Data.self)
            {
                return value
            }
            throw StoreError(.corrupt, "relay secret \(name) vanished")
        }
    }

    /// The endpoint row of `device`, optionally locked `FOR UPDATE` (inside a transaction).
    static func pushEndpoint(_ connection: PostgresConnection, _ device: DeviceAddress, lock: Bool, logger: Logger) async throws
        -> StoredPushEndpoint?
    {
        let handle = device.handle, deviceID = Int64(device.deviceID)
        let query: PostgresQuery = """
            SELECT provider, endpoint, p256dh, auth_secret, apns_background, registered_at, last_wake_at, wakes_sent, last_failure,
                dropped_at, urgent_window_until
            FROM push_endpoints WHERE handle = \(handle) AND device_id = \(deviceID)\(unescaped: lock ? " FOR UPDATE" : "")
            """
        let rows = try await connection.query(query, logger: logger)
        for try await (provider, endpoint, p256dh, authSecret, apnsBackground, registeredAt, lastWakeAt, wakesSent, lastFailure, droppedAt, until)
            in rows.decode((String, String?, Data?, Data?, Bool, Int64, Int64, Int64, String, Int64, Int64).self)
        {
            return StoredPushEndpoint(
                provider: provider, endpoint: endpoint, p256dh: p256dh ?? Data(), authSecret: authSecret ?? Data(),
                apnsBackground: apnsBackground, registeredAtMs: registeredAt, lastWakeAtMs: lastWakeAt, wakesSent: UInt64(max(0, wakesSent)),
                lastFailure: lastFailure, droppedAtMs: droppedAt, urgentWindowUntilMs: until)
        }
        return nil
    }
}
