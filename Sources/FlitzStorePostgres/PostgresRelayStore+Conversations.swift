import FlitzStore
import Foundation
import PostgresNIO

// MARK: ConversationStore (documented on the protocol; the same rules as `SQLiteRelayStore`)

extension PostgresRelayStore {
    /// Implements `ConversationStore.unsend` in one transaction (the matched routes locked).
    public func unsend(senderHandle: String, unsendTokenHash: Data, nowMs: Int64) async throws -> [UnsendRecord] {
        try await write { db in
            let routes = try await db.rows(
                """
                SELECT \(unescaped: RouteRow.columns) FROM envelope_routes
                WHERE sender_handle = \(senderHandle) AND unsend_token_hash = \(unsendTokenHash)
                ORDER BY recipient_handle COLLATE "C", recipient_device_id, envelope_id FOR UPDATE
                """
            ).map(RouteRow.init)
            var records: [UnsendRecord] = []
            for route in routes {
                let state: UnsendEnvelopeState
                switch route.state {
                case Self.stateQueued, Self.stateScheduled:
                    try await Self.purge(db, route)
                    state = .purged
                case Self.statePurged, Self.stateCancelled: state = .purged
                case Self.stateDropped:
                    // As a queued (or scheduled) one would answer: purged until its expiry, expired after it.
                    if route.expiresAt <= nowMs {
                        state = .alreadyExpired
                    } else {
                        try await db.rows("DELETE FROM scheduled_envelopes WHERE envelope_id = \(route.envelopeID)")
                        try await db.rows("UPDATE envelope_routes SET state = \(Self.statePurged) WHERE envelope_id = \(route.envelopeID)")
                        state = .purged
                    }
                case Self.stateDelivered: state = .alreadyDelivered
                default: state = .alreadyExpired
                }
                records.append(UnsendRecord(envelopeID: route.envelopeID, recipient: route.recipient, state: state))
            }
            return records
        }
    }

    /// Deletes a queued or scheduled envelope's ciphertext and marks its route purged.
    private static func purge(_ db: PostgresTransaction, _ route: RouteRow) async throws {
        try await db.rows(
            """
            DELETE FROM queue_items WHERE handle = \(route.recipient.handle) AND device_id = \(Int64(route.recipient.deviceID))
                AND envelope_id = \(route.envelopeID) AND kind = \(kindEnvelope)
            """)
        try await db.rows("DELETE FROM scheduled_envelopes WHERE envelope_id = \(route.envelopeID)")
        try await db.rows("UPDATE envelope_routes SET state = \(statePurged) WHERE envelope_id = \(route.envelopeID)")
    }

    /// Implements `ConversationStore.cancelScheduled` in one transaction.
    public func cancelScheduled(senderHandle: String, cancelTokenHash: Data) async throws -> Int {
        try await write { db in
            let ids = try await db.rows(
                """
                DELETE FROM scheduled_envelopes WHERE sender_handle = \(senderHandle) AND cancel_token_hash = \(cancelTokenHash)
                RETURNING envelope_id
                """
            ).map { try $0.decode(ByteBuffer.self) }
            if !ids.isEmpty {
                try await db.rows("UPDATE envelope_routes SET state = \(Self.stateCancelled) WHERE envelope_id = ANY(\(ids))")
            }
            return ids.count
        }
    }

    /// Implements `ConversationStore.nextScheduledRelease`.
    public func nextScheduledRelease() async throws -> Int64? {
        try await read { db in
            try await db.first("SELECT MIN(not_before) FROM scheduled_envelopes")?.decode(Int64?.self) ?? nil
        }
    }

    /// Implements `ConversationStore.releaseScheduled` in one transaction of at most `batchSize` rows. Safe on every
    /// node at once: each takes only scheduled rows no other transaction holds (`FOR UPDATE SKIP LOCKED`), so one
    /// envelope is released once (`cluster.md` 4); each release queues through the recipient's counter row.
    public func releaseScheduled(
        nowMs: Int64, retentionMs: Int64, receiptExpiresAtMs: Int64, queueLimit: Int, batchSize: Int
    ) async throws -> ScheduledRelease {
        try await write { db in
            // No ciphertext here: it is copied row by row with INSERT … SELECT, never all in memory. A LEFT JOIN so that
            // an orphan row (its route swept) is deleted too: what nextScheduledRelease sees always goes.
            let batch = Int64(max(1, batchSize))
            let rows = try await db.rows(
                """
                SELECT s.envelope_id, s.ttl_ms, s.urgency, r.sender_handle, r.sender_device_id, r.recipient_handle, r.recipient_device_id, r.state
                FROM scheduled_envelopes s LEFT JOIN envelope_routes r ON r.envelope_id = s.envelope_id
                WHERE s.not_before <= \(nowMs) ORDER BY s.not_before, s.seq LIMIT \(batch) FOR UPDATE OF s SKIP LOCKED
                """)
            var released: [ReleasedEnvelope] = []
            var expired = 0
            var dropped = 0
            var notified = Set<DeviceAddress>()
            var current: [String: Set<UInt32>] = [:]
            for row in rows {
                let (envelopeID, ttl, urgency, senderHandle, senderDevice, recipientHandle, recipientDevice, state) =
                    try row.decode((Data, Int64, Int64, String?, Int64?, String?, Int64?, Int64?).self)
                // An orphan, or a route no longer scheduled (dropped for a block): it only leaves the schedule.
                guard let state, state == Self.stateScheduled, let senderHandle, let senderDevice, let recipientHandle, let recipientDevice else {
                    if state == Self.stateDropped { dropped += 1 }
                    try await db.rows("DELETE FROM scheduled_envelopes WHERE envelope_id = \(envelopeID)")
                    continue
                }
                let recipient = DeviceAddress(handle: recipientHandle, deviceID: UInt32(recipientDevice))
                let sender = DeviceAddress(handle: senderHandle, deviceID: UInt32(senderDevice))
                // A block set since the submit drops it now, silently (conversations.md 9): no receipt.
                if try await db.exists("SELECT 1 FROM block_lists WHERE handle = \(recipient.handle) AND blocked_handle = \(sender.handle)") {
                    try await db.rows("DELETE FROM scheduled_envelopes WHERE envelope_id = \(envelopeID)")
                    try await db.rows("UPDATE envelope_routes SET state = \(Self.stateDropped) WHERE envelope_id = \(envelopeID)")
                    dropped += 1
                    continue
                }
                let devices: Set<UInt32>
                if let known = current[recipient.handle] {
                    devices = known
                } else {
                    devices = try await Self.currentDeviceIDs(db, recipient.handle) ?? []
                    current[recipient.handle] = devices
                }
                // Gone, or its queue over the per-device limit (relay.maxQueuedEnvelopes): expired, as at submit.
                let depth = devices.contains(recipient.deviceID) ? try await Self.lockQueueDepth(db, recipient) : 0
                guard devices.contains(recipient.deviceID), depth < queueLimit else {
                    try await db.rows("DELETE FROM scheduled_envelopes WHERE envelope_id = \(envelopeID)")
                    try await db.rows(
                        """
                        UPDATE envelope_routes SET state = \(Self.stateExpired), accepted_at = \(nowMs), expires_at = \(nowMs),
                            route_expires_at = \(nowMs + retentionMs)
                        WHERE envelope_id = \(envelopeID)
                        """)
                    expired += 1
                    if try await self.queueReceipt(
                        db, to: sender, envelopeID: envelopeID, kind: .expired, recipient: recipient, atMs: nowMs, expiresAtMs: receiptExpiresAtMs)
                    {
                        notified.insert(sender)
                    }
                    continue
                }
                let expiresAt = nowMs + min(ttl > 0 ? ttl : retentionMs, retentionMs)
                try await db.rows(
                    """
                    UPDATE envelope_routes SET state = \(Self.stateQueued), accepted_at = \(nowMs), expires_at = \(expiresAt),
                        route_expires_at = \(nowMs + retentionMs)
                    WHERE envelope_id = \(envelopeID)
                    """)
                try await Self.enqueue(db, device: recipient, items: [.scheduledEnvelope(envelopeID: envelopeID, expiresAtMs: expiresAt)])
                try await db.rows("DELETE FROM scheduled_envelopes WHERE envelope_id = \(envelopeID)")
                released.append(ReleasedEnvelope(envelopeID: envelopeID, recipient: recipient, expiresAtMs: expiresAt, urgency: Int(urgency)))
            }
            return ScheduledRelease(
                released: released, expired: expired, notifiedSenders: notified, more: Int64(rows.count) >= batch, dropped: dropped)
        }
    }

    /// Implements `ConversationStore.blockList`.
    public func blockList(handle: String) async throws -> [String] {
        try await read { db in
            try await db.rows("SELECT blocked_handle FROM block_lists WHERE handle = \(handle) ORDER BY blocked_handle COLLATE \"C\"")
                .map { try $0.decode(String.self) }
        }
    }

    /// Implements `ConversationStore.updateBlockList` in one transaction. It takes the submit lock of each newly
    /// blocked handle (see `submit`), so a submit of that handle on another node either commits before (and its
    /// envelopes are dropped here) or sees the block.
    public func updateBlockList(handle: String, block: [String], unblock: [String], maxBlocked: Int) async throws -> [String] {
        try await write { db in
            for blocked in Set(block).sorted() { try await Self.lockName(db, "flitz.submit:" + blocked) }
            for blocked in unblock {
                try await db.rows("DELETE FROM block_lists WHERE handle = \(handle) AND blocked_handle = \(blocked)")
            }
            for blocked in block {
                try await db.rows("INSERT INTO block_lists (handle, blocked_handle) VALUES (\(handle), \(blocked)) ON CONFLICT DO NOTHING")
                // conversations.md 9: what the newly blocked handle queued or scheduled for this account is dropped now,
                // as if it had been blocked at submit: ciphertext gone, no receipt.
                try await db.rows(
                    """
                    UPDATE scheduled_envelopes SET ciphertext = \(Data()) WHERE envelope_id IN (
                        SELECT envelope_id FROM envelope_routes
                        WHERE sender_handle = \(blocked) AND recipient_handle = \(handle) AND state = \(Self.stateScheduled))
                    """)
                try await db.rows(
                    """
                    DELETE FROM queue_items WHERE handle = \(handle) AND kind = \(Self.kindEnvelope) AND envelope_id IN (
                        SELECT envelope_id FROM envelope_routes
                        WHERE sender_handle = \(blocked) AND recipient_handle = \(handle) AND state = \(Self.stateQueued))
                    """)
                try await db.rows(
                    """
                    UPDATE envelope_routes SET state = \(Self.stateDropped)
                    WHERE sender_handle = \(blocked) AND recipient_handle = \(handle) AND state IN (\(Self.stateQueued), \(Self.stateScheduled))
                    """)
            }
            let list = try await db.rows(
                "SELECT blocked_handle FROM block_lists WHERE handle = \(handle) ORDER BY blocked_handle COLLATE \"C\""
            ).map { try $0.decode(String.self) }
            // Throwing rolls the transaction back: nothing changes.
            guard list.count <= maxBlocked else { throw StoreError(.blockListFull, "at most \(maxBlocked) handles") }
            return list
        }
    }

    /// Implements `ConversationStore.blockers`.
    public func blockers(of senderHandle: String, among recipientHandles: Set<String>) async throws -> Set<String> {
        guard !recipientHandles.isEmpty else { return [] }
        return try await read { db in
            Set(
                try await db.rows(
                    "SELECT handle FROM block_lists WHERE blocked_handle = \(senderHandle) AND handle = ANY(\(Array(recipientHandles)))"
                ).map { try $0.decode(String.self) })
        }
    }

    /// Implements `ConversationStore.storeReport` in one transaction; reports of one reporter handle serialize on an
    /// advisory lock, so the limit holds across nodes.
    public func storeReport(_ report: StoredReport, limit: Int, windowMs: Int64) async throws -> Int64? {
        try await write { db -> Int64? in
            try await Self.lockName(db, "flitz.report:" + report.reporter.handle)
            let recent = try await db.rows(
                """
                SELECT received_at FROM reports WHERE reporter_handle = \(report.reporter.handle) AND received_at > \(report.receivedAtMs - windowMs)
                ORDER BY received_at
                """
            ).map { try $0.decode(Int64.self) }
            if recent.count >= limit { return max(1, (recent.first ?? report.receivedAtMs) + windowMs - report.receivedAtMs) }
            try await db.rows(
                """
                INSERT INTO reports (report_id, reporter_handle, reporter_device_id, received_at, report, signature)
                VALUES (\(report.reportID), \(report.reporter.handle), \(Int64(report.reporter.deviceID)), \(report.receivedAtMs), \(report.report),
                    \(report.signature))
                """)
            return nil
        }
    }

    /// Implements `ConversationStore.reports`.
    public func reports() async throws -> [StoredReport] {
        try await read { db in
            try await db.rows(
                "SELECT report_id, reporter_handle, reporter_device_id, received_at, report, signature FROM reports ORDER BY received_at, seq"
            ).map { row in
                let (id, handle, deviceID, receivedAt, report, signature) = try row.decode((Data, String, Int64, Int64, Data, Data).self)
                return StoredReport(
                    reportID: id, reporter: DeviceAddress(handle: handle, deviceID: UInt32(deviceID)), receivedAtMs: receivedAt, report: report,
                    signature: signature)
            }
        }
    }
}
