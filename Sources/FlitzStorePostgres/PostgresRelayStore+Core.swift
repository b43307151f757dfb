import FlitzStore
import Foundation
import PostgresNIO

/// One row of `envelope_routes` (ids and times, never ciphertext).
struct RouteRow: Sendable {
    var envelopeID: Data
    var sender: DeviceAddress
    var recipient: DeviceAddress
    var acceptedAt: Int64
    var expiresAt: Int64
    var routeExpiresAt: Int64
    var state: Int64
    var groupID: Data

    /// The columns `init(_:)` decodes, in order (prefix with a table alias through `columns(_:)`).
    static let columns = columns(nil)

    static func columns(_ alias: String?) -> String {
        let prefix = alias.map { "\($0)." } ?? ""
        return [
            "envelope_id", "sender_handle", "sender_device_id", "recipient_handle", "recipient_device_id", "accepted_at", "expires_at",
            "route_expires_at", "state", "group_id",
        ].map { prefix + $0 }.joined(separator: ", ")
    }

    init(
        envelopeID: Data, sender: DeviceAddress, recipient: DeviceAddress, acceptedAt: Int64, expiresAt: Int64, routeExpiresAt: Int64,
        state: Int64, groupID: Data
    ) {
        self.envelopeID = envelopeID
        self.sender = sender
        self.recipient = recipient
        self.acceptedAt = acceptedAt
        self.expiresAt = expiresAt
        self.routeExpiresAt = routeExpiresAt
        self.state = state
        self.groupID = groupID
    }

    init(_ row: PostgresRow) throws {
        let (id, senderHandle, senderDevice, recipientHandle, recipientDevice, acceptedAt, expiresAt, routeExpiresAt, state, groupID) =
            try row.decode((Data, String, Int64, String, Int64, Int64, Int64, Int64, Int64, Data).self)
        envelopeID = id
        sender = DeviceAddress(handle: senderHandle, deviceID: UInt32(senderDevice))
        recipient = DeviceAddress(handle: recipientHandle, deviceID: UInt32(recipientDevice))
        self.acceptedAt = acceptedAt
        self.expiresAt = expiresAt
        self.routeExpiresAt = routeExpiresAt
        self.state = state
        self.groupID = groupID
    }
}

// MARK: RelayStore (documented on the protocol; the same rules as `SQLiteRelayStore`)

extension PostgresRelayStore {
    /// Implements `RelayStore.register` in one transaction; two nodes registering one handle at once: one wins,
    /// the other gets `.handleTaken`.
    public func register(
        handle: String, accountIdentityKey: Data, recoveryCodeHash: Data, device: NewDevice, atMs: Int64
    ) async throws -> UInt32 {
        try await write { db in
            if try await db.exists("SELECT 1 FROM accounts WHERE handle = \(handle)") { throw StoreError(.handleTaken) }
            // A deleted account's handle stays taken until its tombstone is purged (devices.md section 8).
            if try await db.exists("SELECT 1 FROM account_tombstones WHERE handle = \(handle)") {
                throw StoreError(.handleTaken, "deleted account")
            }
            let inserted = try await db.count(
                """
                INSERT INTO accounts (handle, account_identity_key, recovery_code_hash, next_device_id, origin_device_id, created_at)
                VALUES (\(handle), \(accountIdentityKey), \(recoveryCodeHash), 2, 1, \(atMs))
                ON CONFLICT (handle) DO NOTHING RETURNING 1
                """)
            guard inserted == 1 else { throw StoreError(.handleTaken) }
            try await Self.insertDevice(db, address: DeviceAddress(handle: handle, deviceID: 1), device: device, atMs: atMs)
            return 1
        }
    }

    /// Implements `RelayStore.account`.
    public func account(handle: String) async throws -> AccountRecord? {
        try await read { db in
            guard let row = try await db.first(
                """
                SELECT handle, account_identity_key, recovery_code_hash, next_device_id, created_at, seen_receipts_off
                FROM accounts WHERE handle = \(handle)
                """)
            else { return nil }
            let (handle, key, hash, next, created, seenOff) = try row.decode((String, Data, Data, Int64, Int64, Bool).self)
            return AccountRecord(
                handle: handle, accountIdentityKey: key, recoveryCodeHash: hash, nextDeviceID: UInt32(next), createdAtMs: created,
                seenReceiptsOff: seenOff)
        }
    }

    /// Implements `RelayStore.device`.
    public func device(_ address: DeviceAddress) async throws -> DeviceRecord? {
        try await read { db in
            try await db.first(
                "SELECT \(unescaped: Self.deviceColumns) FROM devices WHERE handle = \(address.handle) AND device_id = \(Int64(address.deviceID))"
            ).map(Self.deviceRecord)
        }
    }

    /// Implements `RelayStore.reissueRegistration` in one transaction (the account row locked).
    public func reissueRegistration(
        handle: String, accountIdentityKey: Data, deviceIdentityKey: Data, recoveryCodeHash: Data
    ) async throws -> UInt32? {
        try await write { db -> UInt32? in
            try await db.rows("SELECT 1 FROM accounts WHERE handle = \(handle) FOR UPDATE")
            guard let row = try await db.first(
                """
                SELECT d.device_id FROM devices d JOIN accounts a ON a.handle = d.handle
                WHERE d.handle = \(handle) AND a.account_identity_key = \(accountIdentityKey) AND d.device_identity_key = \(deviceIdentityKey)
                    AND d.device_id = a.origin_device_id
                    AND (SELECT COUNT(*) FROM devices o WHERE o.handle = d.handle) = 1
                    AND NOT EXISTS (SELECT 1 FROM device_list_entries e WHERE e.handle = d.handle AND e.device_id != d.device_id)
                """)
            else { return nil }
            let deviceID = try row.decode(Int64.self)
            try await db.rows("UPDATE accounts SET recovery_code_hash = \(recoveryCodeHash) WHERE handle = \(handle)")
            return UInt32(deviceID)
        }
    }

    /// Implements `RelayStore.recover` in one transaction (the account row locked).
    public func recover(
        handle: String, expectedRecoveryCodeHash: Data, accountIdentityKey: Data, newRecoveryCodeHash: Data,
        device: NewDevice, atMs: Int64, receiptExpiresAtMs: Int64
    ) async throws -> RecoveryResult {
        try await write { db in
            guard let row = try await db.first(
                "SELECT recovery_code_hash, next_device_id FROM accounts WHERE handle = \(handle) FOR UPDATE")
            else { throw StoreError(.recoveryFailed) }
            let (storedHash, newDeviceID) = try row.decode((Data, Int64).self)
            guard storedHash == expectedRecoveryCodeHash else { throw StoreError(.recoveryFailed) }
            let removed = try await db.rows("SELECT device_id FROM devices WHERE handle = \(handle) ORDER BY device_id")
                .map { UInt32(try $0.decode(Int64.self)) }
            var notified = Set<DeviceAddress>()
            // conversations.md 8: what the removed devices scheduled can no longer be cancelled: deleted.
            try await Self.cancelScheduled(db, senderHandle: handle, senderDeviceID: nil)
            // Undelivered (queued or scheduled) envelopes addressed to the removed devices: expired, sender told.
            let routes = try await db.rows(
                """
                SELECT \(unescaped: RouteRow.columns) FROM envelope_routes
                WHERE recipient_handle = \(handle) AND state IN (\(Self.stateQueued), \(Self.stateScheduled)) ORDER BY envelope_id FOR UPDATE
                """
            ).map(RouteRow.init)
            for route in routes {
                try await db.rows("UPDATE envelope_routes SET state = \(Self.stateExpired) WHERE envelope_id = \(route.envelopeID)")
                try await db.rows("DELETE FROM scheduled_envelopes WHERE envelope_id = \(route.envelopeID)")
                if route.sender.handle != handle,
                    try await self.queueReceipt(
                        db, to: route.sender, envelopeID: route.envelopeID, kind: .expired, recipient: route.recipient, atMs: atMs,
                        expiresAtMs: receiptExpiresAtMs)
                {
                    notified.insert(route.sender)
                }
            }
            try await db.rows("DELETE FROM queue_items WHERE handle = \(handle)")
            try await db.rows("DELETE FROM devices WHERE handle = \(handle)")
            // Their connection claims too: the periodic check then closes their connections on every node.
            try await db.rows("DELETE FROM connection_claims WHERE handle = \(handle)")
            for id in removed { try await Self.dropClaimEpoch(db, handle: handle, deviceID: Int64(id)) }
            // Lists are per account identity key (devices.md section 7): the new key starts at version 1.
            try await Self.deleteDeviceList(db, handle)
            try await db.rows("DELETE FROM removed_device_keys WHERE handle = \(handle)")
            try await db.rows(
                """
                UPDATE accounts SET account_identity_key = \(accountIdentityKey), recovery_code_hash = \(newRecoveryCodeHash),
                    next_device_id = \(newDeviceID + 1), origin_device_id = \(newDeviceID)
                WHERE handle = \(handle)
                """)
            let address = DeviceAddress(handle: handle, deviceID: UInt32(newDeviceID))
            try await Self.insertDevice(db, address: address, device: device, atMs: atMs)
            return RecoveryResult(deviceID: address.deviceID, removedDeviceIDs: removed, notifiedSenders: notified)
        }
    }

    /// Implements `RelayStore.publishPreKeys` in one transaction (the device row locked, so two publishes of one
    /// device serialize and ids stay increasing).
    public func publishPreKeys(device: DeviceAddress, _ publication: PreKeyPublication, limits: PreKeyStockLimits) async throws -> PreKeyStock {
        try await write { db in
            guard let row = try await db.first(
                """
                SELECT signed_prekey_id, max_one_time_prekey_id, max_kem_prekey_id FROM devices
                WHERE handle = \(device.handle) AND device_id = \(Int64(device.deviceID)) FOR UPDATE
                """)
            else { throw StoreError(.unknownDevice) }
            let (signed, oneTime, kem) = try row.decode((Int64, Int64, Int64).self)
            try await Self.insertPreKeys(db, device, publication, maxIDs: (signed, oneTime, kem))
            // Counted after inserting, inside the transaction: throwing rolls the whole publish back.
            let stock = try await Self.preKeyStock(db, device)
            guard stock.oneTime <= limits.oneTime, stock.oneTimeKEM <= limits.oneTimeKEM else { throw StoreError(.preKeyStockFull) }
            return stock
        }
    }

    /// Implements `RelayStore.preKeyStock`.
    public func preKeyStock(device: DeviceAddress) async throws -> PreKeyStock {
        try await read { db in try await Self.preKeyStock(db, device) }
    }

    /// Implements `RelayStore.takePreKeyBundle(handle:)`: every current device (no list restriction).
    public func takePreKeyBundle(handle: String) async throws -> PreKeyBundleRecord? {
        try await takeBundle(handle: handle, deviceIDs: nil, listedOnly: false)
    }

    /// Implements `RelayStore.takePreKeyBundle(handle:deviceIDs:)` in one transaction.
    public func takePreKeyBundle(handle: String, deviceIDs: [UInt32]?) async throws -> PreKeyBundleRecord? {
        try await takeBundle(handle: handle, deviceIDs: deviceIDs, listedOnly: true)
    }

    /// Each one-time prekey is taken by one `DELETE … WHERE prekey_id = (SELECT … FOR UPDATE SKIP LOCKED) RETURNING`:
    /// concurrent fetches (also on other nodes) never hand out the same key; one that finds the lowest key locked
    /// by another fetch takes the next.
    private func takeBundle(handle: String, deviceIDs: [UInt32]?, listedOnly: Bool) async throws -> PreKeyBundleRecord? {
        try await write { db -> PreKeyBundleRecord? in
            guard let keyRow = try await db.first("SELECT account_identity_key FROM accounts WHERE handle = \(handle)") else { return nil }
            let key = try keyRow.decode(Data.self)
            let list = try await Self.deviceList(db, handle)
            var devices = try await db.rows("SELECT \(unescaped: Self.deviceColumns) FROM devices WHERE handle = \(handle) ORDER BY device_id")
                .map(Self.deviceRecord)
            if listedOnly, list != nil {
                let listed = try await Self.listedDeviceIDs(db, handle)
                devices = devices.filter { listed.contains($0.address.deviceID) }
            }
            if let deviceIDs {
                let wanted = Set(deviceIDs)
                devices = devices.filter { wanted.contains($0.address.deviceID) }
            }
            var entries: [PreKeyBundleRecord.Device] = []
            for device in devices {
                let h = device.address.handle, id = Int64(device.address.deviceID)
                var oneTime: OneTimePreKeyRecord?
                if let row = try await db.first(
                    """
                    DELETE FROM one_time_prekeys WHERE handle = \(h) AND device_id = \(id) AND prekey_id = (
                        SELECT prekey_id FROM one_time_prekeys WHERE handle = \(h) AND device_id = \(id)
                        ORDER BY prekey_id LIMIT 1 FOR UPDATE SKIP LOCKED)
                    RETURNING prekey_id, public_key
                    """)
                {
                    let (prekeyID, publicKey) = try row.decode((Int64, Data).self)
                    oneTime = OneTimePreKeyRecord(id: UInt32(prekeyID), publicKey: publicKey)
                }
                // A one-time KEM prekey while any remain (deleted now), else the last-resort one (kept).
                var kem: KEMPreKeyRecord?
                if let row = try await db.first(
                    """
                    DELETE FROM kem_prekeys WHERE handle = \(h) AND device_id = \(id) AND prekey_id = (
                        SELECT prekey_id FROM kem_prekeys WHERE handle = \(h) AND device_id = \(id) AND NOT last_resort
                        ORDER BY prekey_id LIMIT 1 FOR UPDATE SKIP LOCKED)
                    RETURNING prekey_id, public_key, signature
                    """)
                {
                    let (prekeyID, publicKey, signature) = try row.decode((Int64, Data, Data).self)
                    kem = KEMPreKeyRecord(id: UInt32(prekeyID), publicKey: publicKey, signature: signature, lastResort: false)
                } else if let row = try await db.first(
                    "SELECT prekey_id, public_key, signature FROM kem_prekeys WHERE handle = \(h) AND device_id = \(id) AND last_resort")
                {
                    let (prekeyID, publicKey, signature) = try row.decode((Int64, Data, Data).self)
                    kem = KEMPreKeyRecord(id: UInt32(prekeyID), publicKey: publicKey, signature: signature, lastResort: true)
                }
                entries.append(.init(device: device, oneTimePreKey: oneTime, kemPreKey: kem))
            }
            return PreKeyBundleRecord(handle: handle, accountIdentityKey: key, devices: entries, deviceList: list)
        }
    }

    /// Implements `RelayStore.submit` without a coverage check (see `submit(…checkCoverage:)`).
    public func submit(
        sender: DeviceAddress, envelopes: [EnvelopeSubmission], atMs: Int64, queueLimit: Int
    ) async throws -> [SubmissionOutcome] {
        switch try await submit(sender: sender, envelopes: envelopes, atMs: atMs, queueLimit: queueLimit, checkCoverage: false) {
        case .stored(let outcomes): return outcomes
        case .mismatched: throw StoreError(.corrupt, "coverage mismatch without a coverage check")
        }
    }

    /// Implements `RelayStore.submit(…checkCoverage:)` in one transaction.
    ///
    /// Concurrency across nodes: the transaction first takes the advisory lock of the sender's handle, so submits of
    /// one account serialize (exact scheduled and unsend-token limits; a repeated submission waits for the first and
    /// then finds its route: one row, the same answer). The recipients' queue counter rows are locked in a sorted
    /// order before their depth is read (exact queue limits), and each queued item takes its sequence from them.
    public func submit(
        sender: DeviceAddress, envelopes: [EnvelopeSubmission], atMs: Int64, queueLimit: Int, checkCoverage: Bool
    ) async throws -> SubmitBatchOutcome {
        try await write { db in
            try await self.submitInTransaction(
                db, sender: sender, envelopes: envelopes, atMs: atMs, queueLimit: queueLimit, checkCoverage: checkCoverage)
        }
    }

    private func submitInTransaction(
        _ db: PostgresTransaction, sender: DeviceAddress, envelopes: [EnvelopeSubmission], atMs: Int64, queueLimit: Int, checkCoverage: Bool
    ) async throws -> SubmitBatchOutcome {
        // The account's submit lock, then whether the sender is still a device (it may have been removed by a
        // recovery or a device list after it authenticated), in one round trip.
        let lockRow = try await db.first(
            """
            SELECT pg_advisory_xact_lock(hashtextextended(\("flitz.submit:" + sender.handle), 0))::text,
                EXISTS (SELECT 1 FROM devices WHERE handle = \(sender.handle) AND device_id = \(Int64(sender.deviceID)) FOR KEY SHARE)
            """)
        guard let lockRow, try lockRow.decode((String, Bool).self).1 else { throw StoreError(.unknownDevice) }
        // Groups of this submit: a non-zero `group` number, or each group-0 envelope on its own.
        let groupKeys: [Int64] = envelopes.enumerated().map { index, envelope in
            envelope.group == 0 ? -1 - Int64(index) : Int64(envelope.group)
        }
        var routesByID: [Data: RouteRow] = [:]
        let ids = Array(Set(envelopes.map(\.envelopeID))).map { ByteBuffer(bytes: $0) }
        if !ids.isEmpty {
            for row in try await db.rows("SELECT \(unescaped: RouteRow.columns) FROM envelope_routes WHERE envelope_id = ANY(\(ids))") {
                let route = try RouteRow(row)
                routesByID[route.envelopeID] = route
            }
        }
        var existing: [Int: RouteRow] = [:]
        for (index, envelope) in envelopes.enumerated() { existing[index] = routesByID[envelope.envelopeID] }
        func isSameRoute(_ route: RouteRow, _ envelope: EnvelopeSubmission) -> Bool {
            route.sender == sender && route.recipient == envelope.recipient
        }
        var currentByHandle: [String: Set<UInt32>?] = [:]
        func currentDevices(_ handle: String) async throws -> Set<UInt32>? {
            if let known = currentByHandle[handle] { return known }
            let found = try await Self.currentDeviceIDs(db, handle)
            currentByHandle[handle] = .some(found)
            return found
        }
        if checkCoverage {
            let mismatches = try await coverageMismatches(
                sender: sender, envelopes: envelopes, groupKeys: groupKeys, currentDevices: currentDevices
            ) { index in
                existing[index].map { isSameRoute($0, envelopes[index]) } ?? false
            }
            if !mismatches.isEmpty { return .mismatched(mismatches) }
        }
        // A group keeps the relay group id of any of its envelopes already stored (a partial resubmission).
        var groupIDs: [Int64: Data] = [:]
        for (index, envelope) in envelopes.enumerated() {
            if let route = existing[index], isSameRoute(route, envelope), groupIDs[groupKeys[index]] == nil {
                groupIDs[groupKeys[index]] = route.groupID
            }
        }
        // A non-zero group with a new envelope to a handle that does not exist (or was deleted) is refused whole.
        var refusedGroups = Set<Int64>()
        for (index, envelope) in envelopes.enumerated() where envelope.group != 0 && existing[index] == nil {
            if try await currentDevices(envelope.recipient.handle) == nil { refusedGroups.insert(groupKeys[index]) }
        }
        // Lock the queue counters of every device this submit may queue for, sorted, before reading their depths.
        var depths = try await Self.lockQueueDepths(
            db, Set(envelopes.enumerated().filter { existing[$0.offset] == nil && $0.element.notBeforeMs <= atMs }.map(\.element.recipient)))
        var outcomes: [SubmissionOutcome] = []
        outcomes.reserveCapacity(envelopes.count)
        var scheduledCount: Int?
        var unsendCounts: [Data: Int] = [:]
        var blocked: [String: Bool] = [:]
        for (index, envelope) in envelopes.enumerated() {
            // Stored before this submit, or earlier in this batch (the same id twice).
            if let route = existing[index] ?? routesByID[envelope.envelopeID] {
                outcomes.append(try await Self.repeatedOutcome(db, route: route, same: isSameRoute(route, envelope)))
                continue
            }
            if refusedGroups.contains(groupKeys[index]) {
                outcomes.append(.rejected(.unknownRecipient))
                continue
            }
            // Current, not merely stored: a device the account's list dropped is stale (relay.md "Submit").
            guard let currentIDs = try await currentDevices(envelope.recipient.handle) else {
                outcomes.append(.rejected(.unknownRecipient))
                continue
            }
            guard currentIDs.contains(envelope.recipient.deviceID) else {
                outcomes.append(.rejected(.staleDevice))
                continue
            }
            let scheduled = envelope.notBeforeMs > atMs
            if scheduled {
                let count: Int
                if let known = scheduledCount {
                    count = known
                } else {
                    count = Int(
                        try await db.first("SELECT COUNT(*) FROM scheduled_envelopes WHERE sender_handle = \(sender.handle)")?.decode(Int64.self) ?? 0)
                }
                guard count < ConversationStoreLimits.maxScheduledPerAccount else {
                    outcomes.append(.rejected(.queueFull))
                    continue
                }
                scheduledCount = count + 1
            }
            // Scheduled envelopes are not queued: they count against the account's scheduled limit only.
            let depth = scheduled ? 0 : (depths[envelope.recipient] ?? 0)
            guard depth < queueLimit else {
                outcomes.append(.rejected(.queueFull))
                continue
            }
            // conversations.md 5: one unsend token hash matches at most MAX envelopes, so an UnsendResult fits a frame.
            if !envelope.unsendTokenHash.isEmpty {
                let key = envelope.unsendTokenHash
                let count: Int
                if let known = unsendCounts[key] {
                    count = known
                } else {
                    count = Int(
                        try await db.first(
                            "SELECT COUNT(*) FROM envelope_routes WHERE sender_handle = \(sender.handle) AND unsend_token_hash = \(key)"
                        )?.decode(Int64.self) ?? 0)
                }
                guard count < ConversationStoreLimits.maxEnvelopesPerUnsendToken else {
                    outcomes.append(.rejected(.unsendTokenFull))
                    continue
                }
                unsendCounts[key] = count + 1
            }
            // conversations.md 9: to an account that blocks the sender, a route in the dropped state and no ciphertext.
            var dropped = false
            if envelope.recipient.handle != sender.handle {
                if let known = blocked[envelope.recipient.handle] {
                    dropped = known
                } else {
                    dropped = try await db.exists(
                        "SELECT 1 FROM block_lists WHERE handle = \(envelope.recipient.handle) AND blocked_handle = \(sender.handle)")
                    blocked[envelope.recipient.handle] = dropped
                }
            }
            let groupID: Data
            if let known = groupIDs[groupKeys[index]] {
                groupID = known
            } else {
                groupID = makeID()
                groupIDs[groupKeys[index]] = groupID
            }
            let state = dropped ? Self.stateDropped : scheduled ? Self.stateScheduled : Self.stateQueued
            let unsendHash: Data? = envelope.unsendTokenHash.isEmpty ? nil : envelope.unsendTokenHash
            let inserted = try await db.count(
                """
                INSERT INTO envelope_routes (envelope_id, sender_handle, sender_device_id, recipient_handle, recipient_device_id,
                    accepted_at, expires_at, route_expires_at, state, group_id, unsend_token_hash)
                VALUES (\(envelope.envelopeID), \(sender.handle), \(Int64(sender.deviceID)), \(envelope.recipient.handle),
                    \(Int64(envelope.recipient.deviceID)), \(atMs), \(envelope.expiresAtMs), \(envelope.routeExpiresAtMs), \(state), \(groupID),
                    \(unsendHash))
                ON CONFLICT (envelope_id) DO NOTHING RETURNING 1
                """)
            guard inserted == 1 else {
                // Another sender's transaction stored this id meanwhile (ours waited for its commit): answer as for it.
                guard let row = try await db.first(
                    "SELECT \(unescaped: RouteRow.columns) FROM envelope_routes WHERE envelope_id = \(envelope.envelopeID)")
                else { throw StoreError(.corrupt, "an envelope route vanished") }
                let route = try RouteRow(row)
                routesByID[envelope.envelopeID] = route
                outcomes.append(try await Self.repeatedOutcome(db, route: route, same: isSameRoute(route, envelope)))
                continue
            }
            routesByID[envelope.envelopeID] = RouteRow(
                envelopeID: envelope.envelopeID, sender: sender, recipient: envelope.recipient, acceptedAt: atMs, expiresAt: envelope.expiresAtMs,
                routeExpiresAt: envelope.routeExpiresAtMs, state: state, groupID: groupID)
            if scheduled {
                try await db.rows(
                    """
                    INSERT INTO scheduled_envelopes (envelope_id, sender_handle, not_before, ttl_ms, urgency, cancel_token_hash, ciphertext)
                    VALUES (\(envelope.envelopeID), \(sender.handle), \(envelope.notBeforeMs), \(envelope.ttlMs), \(Int64(envelope.urgency)),
                        \(envelope.cancelTokenHash), \(dropped ? Data() : envelope.ciphertext))
                    """)
                outcomes.append(.scheduled(acceptedAtMs: atMs, expiresAtMs: envelope.expiresAtMs, newlyScheduled: true))
                continue
            }
            if dropped {
                // Nothing queued, so nothing wakes, pushes or receipts.
                outcomes.append(.accepted(acceptedAtMs: atMs, expiresAtMs: envelope.expiresAtMs, newlyQueued: false))
                continue
            }
            try await Self.enqueue(
                db, device: envelope.recipient,
                items: [.envelope(envelopeID: envelope.envelopeID, ciphertext: envelope.ciphertext, expiresAtMs: envelope.expiresAtMs)])
            depths[envelope.recipient] = depth + 1
            outcomes.append(.accepted(acceptedAtMs: atMs, expiresAtMs: envelope.expiresAtMs, newlyQueued: true))
        }
        return .stored(outcomes)
    }

    /// The answer to an envelope id already stored: idempotent for the same sender and recipient devices, else a
    /// conflict.
    private static func repeatedOutcome(_ db: PostgresTransaction, route: RouteRow, same: Bool) async throws -> SubmissionOutcome {
        guard same else { return .rejected(.envelopeIDConflict) }
        var scheduled = route.state == stateScheduled
        if !scheduled, route.state == stateDropped {
            scheduled = try await db.exists("SELECT 1 FROM scheduled_envelopes WHERE envelope_id = \(route.envelopeID)")
        }
        return scheduled
            ? .scheduled(acceptedAtMs: route.acceptedAt, expiresAtMs: route.expiresAt, newlyScheduled: false)
            : .accepted(acceptedAtMs: route.acceptedAt, expiresAtMs: route.expiresAt, newlyQueued: false)
    }

    /// The coverage check of `relay.md` "Submit" (as `SQLiteRelayStore`'s).
    private func coverageMismatches(
        sender: DeviceAddress, envelopes: [EnvelopeSubmission], groupKeys: [Int64], currentDevices: (String) async throws -> Set<UInt32>?,
        alreadyStored: (Int) -> Bool
    ) async throws -> [DeviceMismatchRecord] {
        var indicesByGroup: [Int64: [Int]] = [:]
        var groupOrder: [Int64] = []
        for (index, key) in groupKeys.enumerated() {
            if indicesByGroup[key] == nil { groupOrder.append(key) }
            indicesByGroup[key, default: []].append(index)
        }
        let senderOthers = (try await currentDevices(sender.handle) ?? []).subtracting([sender.deviceID])
        var missing: [String: Set<UInt32>] = [:]
        var stale: [String: Set<UInt32>] = [:]
        for key in groupOrder {
            let indices = indicesByGroup[key] ?? []
            if indices.allSatisfy(alreadyStored) { continue }
            var addressed: [String: Set<UInt32>] = [:]
            for index in indices {
                let recipient = envelopes[index].recipient
                // Unknown handles keep their per-envelope UNKNOWN_RECIPIENT.
                guard try await currentDevices(recipient.handle) != nil else { continue }
                addressed[recipient.handle, default: []].insert(recipient.deviceID)
            }
            if !senderOthers.isEmpty { addressed[sender.handle, default: []].formUnion([]) }
            for (handle, devices) in addressed {
                var expected = try await currentDevices(handle) ?? []
                if handle == sender.handle { expected.remove(sender.deviceID) }
                let lacking = expected.subtracting(devices), extra = devices.subtracting(expected)
                if !lacking.isEmpty { missing[handle, default: []].formUnion(lacking) }
                if !extra.isEmpty { stale[handle, default: []].formUnion(extra) }
            }
        }
        return Set(missing.keys).union(stale.keys).sorted().map { handle in
            DeviceMismatchRecord(
                handle: handle, missingDeviceIDs: (missing[handle] ?? []).sorted(), staleDeviceIDs: (stale[handle] ?? []).sorted())
        }
    }

    /// Implements `RelayStore.pendingItems`: one index range of one queue partition (`cluster.md` 5).
    public func pendingItems(for device: DeviceAddress, afterSequence: Int64, nowMs: Int64, limit: Int) async throws -> [QueuedItem] {
        try await read { db in
            let rows = try await db.rows(
                """
                SELECT q.sequence, q.kind, q.envelope_id, q.ciphertext, q.receipt_id, q.receipt_kind, q.receipt_at,
                    q.receipt_recipient_handle, q.receipt_recipient_device_id,
                    r.sender_handle, r.sender_device_id, r.accepted_at, r.expires_at
                FROM queue_items q LEFT JOIN envelope_routes r ON q.kind = \(Self.kindEnvelope) AND r.envelope_id = q.envelope_id
                WHERE q.handle = \(device.handle) AND q.device_id = \(Int64(device.deviceID)) AND q.sequence > \(afterSequence)
                    AND q.expires_at_ms > \(nowMs)
                ORDER BY q.sequence LIMIT \(Int64(max(0, limit)))
                """)
            return try rows.map { row in
                let (
                    sequence, kind, envelopeID, ciphertext, receiptID, receiptKind, receiptAt, receiptHandle, receiptDevice, senderHandle,
                    senderDevice, acceptedAt, expiresAt
                ) = try row.decode(
                    (Int64, Int64, Data, Data?, Data?, Int64?, Int64?, String?, Int64?, String?, Int64?, Int64?, Int64?).self)
                if kind == Self.kindEnvelope {
                    guard let senderHandle, let senderDevice, let acceptedAt, let expiresAt else {
                        throw StoreError(.corrupt, "queued envelope without route")
                    }
                    return QueuedItem(sequence: sequence, content: .envelope(StoredEnvelope(
                        envelopeID: envelopeID, sender: DeviceAddress(handle: senderHandle, deviceID: UInt32(senderDevice)),
                        recipientDeviceID: device.deviceID, acceptedAtMs: acceptedAt, expiresAtMs: expiresAt, ciphertext: ciphertext ?? Data())))
                }
                guard let receiptKind, let kindValue = ReceiptKind(rawValue: Int(receiptKind)), let receiptID, let receiptAt, let receiptHandle,
                    let receiptDevice
                else { throw StoreError(.corrupt, "unknown receipt kind") }
                return QueuedItem(sequence: sequence, content: .receipt(StoredReceipt(
                    receiptID: receiptID, envelopeID: envelopeID, kind: kindValue, atMs: receiptAt,
                    recipient: DeviceAddress(handle: receiptHandle, deviceID: UInt32(receiptDevice)))))
            }
        }
    }

    /// Implements `RelayStore.acknowledge` in one transaction (the acknowledged routes locked).
    public func acknowledge(
        device: DeviceAddress, envelopeIDs: [Data], receiptIDs: [Data], atMs: Int64, receiptExpiresAtMs: Int64
    ) async throws -> Set<DeviceAddress> {
        try await write { db in
            var found: [Data: RouteRow] = [:]
            let ids = Array(Set(envelopeIDs)).map { ByteBuffer(bytes: $0) }
            if !ids.isEmpty {
                for row in try await db.rows(
                    """
                    SELECT \(unescaped: RouteRow.columns) FROM envelope_routes
                    WHERE envelope_id = ANY(\(ids)) AND recipient_handle = \(device.handle) AND recipient_device_id = \(Int64(device.deviceID))
                    ORDER BY envelope_id FOR UPDATE
                    """)
                {
                    let route = try RouteRow(row)
                    found[route.envelopeID] = route
                }
            }
            // The counters this acknowledgement may change (its own queue's, the receipts' senders'), in one order.
            _ = try await Self.lockQueueDepths(db, Set(found.values.filter { $0.state == Self.stateQueued }.map(\.sender)).union([device]))
            var routes: [RouteRow] = []
            for envelopeID in envelopeIDs {
                guard let route = found[envelopeID] else {
                    // Never queued for this device (or its route is past retention): refuse before applying anything.
                    var error = StoreError(.unknownEnvelope, "an acknowledged envelope was never queued for this device")
                    error.envelopeID = envelopeID
                    throw error
                }
                routes.append(route)
            }
            var notified = Set<DeviceAddress>()
            var done = Set<Data>()
            for route in routes where route.state == Self.stateQueued && done.insert(route.envelopeID).inserted {
                try await db.rows(
                    """
                    DELETE FROM queue_items WHERE handle = \(device.handle) AND device_id = \(Int64(device.deviceID))
                        AND envelope_id = \(route.envelopeID) AND kind = \(Self.kindEnvelope)
                    """)
                try await db.rows("UPDATE envelope_routes SET state = \(Self.stateDelivered) WHERE envelope_id = \(route.envelopeID)")
                try await notified.formUnion(
                    self.queueGroupReceipt(db, route: route, kind: .delivered, reader: device, atMs: atMs, expiresAtMs: receiptExpiresAtMs))
            }
            let receipts = receiptIDs.map { ByteBuffer(bytes: $0) }
            if !receipts.isEmpty {
                try await db.rows(
                    """
                    DELETE FROM queue_items WHERE handle = \(device.handle) AND device_id = \(Int64(device.deviceID))
                        AND receipt_id = ANY(\(receipts))
                    """)
            }
            return notified
        }
    }

    /// Implements `RelayStore.reportSeen` in one transaction: each route's `seen_reported` flips once (one
    /// conditional `UPDATE`), so two nodes reporting the same envelope queue one receipt.
    public func reportSeen(device: DeviceAddress, envelopeIDs: [Data], atMs: Int64, receiptExpiresAtMs: Int64) async throws -> Set<DeviceAddress> {
        try await write { db in
            // A reader who turned seen receipts off never emits one, from any device.
            let off = try await db.first("SELECT seen_receipts_off FROM accounts WHERE handle = \(device.handle)")?.decode(Bool.self) ?? true
            if off { return [] }
            var notified = Set<DeviceAddress>()
            for envelopeID in envelopeIDs {
                // Never for an envelope the device cannot have received (scheduled, purged, cancelled, dropped).
                guard let row = try await db.first(
                    """
                    UPDATE envelope_routes SET seen_reported = true
                    WHERE envelope_id = \(envelopeID) AND recipient_handle = \(device.handle) AND recipient_device_id = \(Int64(device.deviceID))
                        AND NOT seen_reported AND state IN (\(Self.stateQueued), \(Self.stateDelivered), \(Self.stateExpired))
                    RETURNING \(unescaped: RouteRow.columns)
                    """)
                else { continue }
                try await notified.formUnion(
                    self.queueGroupReceipt(db, route: RouteRow(row), kind: .seen, reader: device, atMs: atMs, expiresAtMs: receiptExpiresAtMs))
            }
            return notified
        }
    }

    /// Receipts across devices (`relay.md`), as `SQLiteRelayStore`'s: the first `kind` event of the reader's handle
    /// on the route's group (one `group_receipts` row, inserted once even by racing nodes) queues one receipt to the
    /// submitting device and one to every other device of the sender's handle holding a copy in the group.
    private func queueGroupReceipt(
        _ db: PostgresTransaction, route: RouteRow, kind: ReceiptKind, reader: DeviceAddress, atMs: Int64, expiresAtMs: Int64
    ) async throws -> Set<DeviceAddress> {
        let sender = route.sender
        guard reader.handle != sender.handle else { return [] }
        let first = try await db.count(
            """
            INSERT INTO group_receipts (group_id, recipient_handle, kind, route_expires_at)
            VALUES (\(route.groupID), \(reader.handle), \(Int64(kind.rawValue)), \(route.routeExpiresAt))
            ON CONFLICT DO NOTHING RETURNING 1
            """)
        guard first == 1 else { return [] }
        var notified = Set<DeviceAddress>()
        if try await queueReceipt(db, to: sender, envelopeID: route.envelopeID, kind: kind, recipient: reader, atMs: atMs, expiresAtMs: expiresAtMs) {
            notified.insert(sender)
        }
        let copies = try await db.rows(
            """
            SELECT envelope_id, recipient_device_id FROM envelope_routes
            WHERE group_id = \(route.groupID) AND recipient_handle = \(sender.handle) AND recipient_device_id != \(Int64(sender.deviceID))
                AND sender_handle = \(sender.handle) AND sender_device_id = \(Int64(sender.deviceID))
            ORDER BY recipient_device_id, envelope_id
            """)
        for copy in copies {
            let (envelopeID, deviceID) = try copy.decode((Data, Int64).self)
            let own = DeviceAddress(handle: sender.handle, deviceID: UInt32(deviceID))
            if try await queueReceipt(db, to: own, envelopeID: envelopeID, kind: kind, recipient: reader, atMs: atMs, expiresAtMs: expiresAtMs) {
                notified.insert(own)
            }
        }
        return notified
    }

    /// Most rows one transaction of the sweep changes (`sweep(nowMs:receiptExpiresAtMs:batchSize:)`).
    public static let sweepBatchSize = 1_000

    /// Implements `RelayStore.sweep` with batches of at most `sweepBatchSize` rows per transaction.
    public func sweep(nowMs: Int64, receiptExpiresAtMs: Int64) async throws -> SweepResult {
        try await sweep(nowMs: nowMs, receiptExpiresAtMs: receiptExpiresAtMs, batchSize: Self.sweepBatchSize)
    }

    /// `RelayStore.sweep` in bounded transactions: expired envelopes `batchSize` at a time (each batch marks its
    /// routes expired, deletes their queued copies and queues the `expired` receipts), then each queue partition's
    /// leftover expired items `batchSize` at a time, then expired routes `batchSize` at a time, then group receipt
    /// rows, tombstones and pairing slots. A batch locks only the queue counters it changes, so a large sweep never
    /// holds a device's counter row (and with it every submit to that device) for longer than one batch.
    ///
    /// Safe on every node at once: every batch takes only rows no other transaction holds (`FOR UPDATE SKIP
    /// LOCKED`; a skipped row is taken by a later sweep), so two sweeps never expire one envelope twice; each batch
    /// locks its counters, sorted, before any queue row, so sweeps, submits and acknowledgements never lock two
    /// counters in opposite orders. The sweep as a whole is not one transaction (each batch is, and a crash between
    /// batches leaves a consistent state the next sweep continues from). `batchSize` must be at least 1.
    public func sweep(nowMs: Int64, receiptExpiresAtMs: Int64, batchSize: Int) async throws -> SweepResult {
        let limit = Int64(max(1, batchSize))
        var expiredEnvelopes = 0
        var notified = Set<DeviceAddress>()
        while true {
            let (count, senders) = try await write { db -> (Int, Set<DeviceAddress>) in
                let expired = try await db.rows(
                    """
                    SELECT \(unescaped: RouteRow.columns) FROM envelope_routes WHERE state = \(Self.stateQueued) AND expires_at <= \(nowMs)
                    ORDER BY envelope_id LIMIT \(limit) FOR UPDATE SKIP LOCKED
                    """
                ).map(RouteRow.init)
                // The counters this batch changes (receipts to senders; the trigger on each deleted envelope row of a
                // recipient), locked up front in one sorted order.
                _ = try await Self.lockQueueDepths(db, Set(expired.map(\.sender) + expired.map(\.recipient)))
                var notified = Set<DeviceAddress>()
                for route in expired {
                    try await db.rows("UPDATE envelope_routes SET state = \(Self.stateExpired) WHERE envelope_id = \(route.envelopeID)")
                    try await db.rows(
                        """
                        DELETE FROM queue_items WHERE handle = \(route.recipient.handle) AND device_id = \(Int64(route.recipient.deviceID))
                            AND envelope_id = \(route.envelopeID) AND kind = \(Self.kindEnvelope)
                        """)
                    if try await self.queueReceipt(
                        db, to: route.sender, envelopeID: route.envelopeID, kind: .expired, recipient: route.recipient, atMs: nowMs,
                        expiresAtMs: receiptExpiresAtMs)
                    {
                        notified.insert(route.sender)
                    }
                }
                return (expired.count, notified)
            }
            expiredEnvelopes += count
            notified.formUnion(senders)
            if count < limit { break }
        }
        // Anything else past its expiry (receipts, and envelope rows whose route was already settled), partition by
        // partition, a batch per transaction.
        var purgedReceipts = 0
        for index in 0..<Self.queuePartitionCount {
            let table = Self.queuePartitionName(index)
            while true {
                let (candidates, deleted) = try await write { db -> (Int, Int) in
                    let keys = try await db.rows(
                        """
                        SELECT handle, device_id, sequence, kind FROM \(unescaped: table) WHERE expires_at_ms <= \(nowMs)
                        ORDER BY handle, device_id, sequence LIMIT \(limit)
                        """
                    ).map { try $0.decode((String, Int64, Int64, Int64).self) }
                    guard !keys.isEmpty else { return (0, 0) }
                    // Counters of the devices whose envelope rows go (the delete trigger), before any queue row.
                    _ = try await Self.lockQueueDepths(
                        db, Set(keys.filter { $0.3 == Self.kindEnvelope }.map { DeviceAddress(handle: $0.0, deviceID: UInt32($0.1)) }))
                    let deleted = try await db.count(
                        """
                        DELETE FROM \(unescaped: table) WHERE (handle, device_id, sequence) IN (
                            SELECT q.handle, q.device_id, q.sequence FROM \(unescaped: table) q
                            JOIN unnest(\(keys.map(\.0))::text[], \(keys.map(\.1))::bigint[], \(keys.map(\.2))::bigint[]) AS k(handle, device_id, sequence)
                                ON q.handle = k.handle AND q.device_id = k.device_id AND q.sequence = k.sequence
                            WHERE q.expires_at_ms <= \(nowMs) FOR UPDATE OF q SKIP LOCKED)
                        RETURNING 1
                        """)
                    return (keys.count, deleted)
                }
                purgedReceipts += deleted
                // Fewer than a batch left, or every candidate held by another transaction (a later sweep takes it).
                if candidates < limit || deleted == 0 { break }
            }
        }
        var purgedRoutes = 0
        while true {
            let deleted = try await write { db in
                try await db.count(
                    """
                    DELETE FROM envelope_routes WHERE envelope_id IN (
                        SELECT envelope_id FROM envelope_routes WHERE route_expires_at <= \(nowMs) LIMIT \(limit) FOR UPDATE SKIP LOCKED)
                    RETURNING 1
                    """)
            }
            purgedRoutes += deleted
            if deleted < limit { break }
        }
        let (purgedTombstones, purgedLinkMessages) = try await write { db -> (Int, Int) in
            try await db.rows(
                """
                DELETE FROM group_receipts WHERE (group_id, recipient_handle, kind) IN (
                    SELECT group_id, recipient_handle, kind FROM group_receipts WHERE route_expires_at <= \(nowMs) FOR UPDATE SKIP LOCKED)
                """)
            let tombstones = try await db.count(
                """
                DELETE FROM account_tombstones WHERE handle IN (
                    SELECT handle FROM account_tombstones WHERE purge_at <= \(nowMs) FOR UPDATE SKIP LOCKED)
                RETURNING 1
                """)
            let linkMessages = try await db.count(
                """
                DELETE FROM link_messages WHERE (rendezvous_id, slot) IN (
                    SELECT rendezvous_id, slot FROM link_messages WHERE expires_at <= \(nowMs) FOR UPDATE SKIP LOCKED)
                RETURNING 1
                """)
            return (tombstones, linkMessages)
        }
        return SweepResult(
            expiredEnvelopes: expiredEnvelopes, notifiedSenders: notified, purgedReceipts: purgedReceipts, purgedRoutes: purgedRoutes,
            purgedTombstones: purgedTombstones, purgedLinkMessages: purgedLinkMessages)
    }

    // MARK: Multi-device accounts

    /// Implements `RelayStore.registerDevice` in one transaction (the account row locked: device ids are handed out
    /// once even when two nodes register devices of one handle at once).
    public func registerDevice(handle: String, accountIdentityKey: Data, device: NewDevice, atMs: Int64, maxDevices: Int) async throws -> UInt32 {
        try await write { db in
            guard let account = try await db.first(
                "SELECT account_identity_key, next_device_id FROM accounts WHERE handle = \(handle) FOR UPDATE")
            else { throw StoreError(.unknownRecipient) }
            let (key, next) = try account.decode((Data, Int64).self)
            guard key == accountIdentityKey else { throw StoreError(.accountKeyChanged) }
            // The same device key again: a retry whose answer was lost.
            if let existing = try await db.first(
                "SELECT device_id FROM devices WHERE handle = \(handle) AND device_identity_key = \(device.deviceIdentityKey)")
            {
                return UInt32(try existing.decode(Int64.self))
            }
            if try await db.exists(
                "SELECT 1 FROM removed_device_keys WHERE handle = \(handle) AND device_identity_key = \(device.deviceIdentityKey)")
            {
                throw StoreError(.deviceRemoved)
            }
            let count = try await db.first("SELECT COUNT(*) FROM devices WHERE handle = \(handle)")?.decode(Int64.self) ?? 0
            guard count < maxDevices else { throw StoreError(.tooManyDevices) }
            try await db.rows("UPDATE accounts SET next_device_id = \(next + 1) WHERE handle = \(handle)")
            try await Self.insertDevice(db, address: DeviceAddress(handle: handle, deviceID: UInt32(next)), device: device, atMs: atMs)
            return UInt32(next)
        }
    }

    /// Implements `RelayStore.devices(handle:)`.
    public func devices(handle: String) async throws -> [DeviceRecord] {
        try await read { db in
            try await db.rows("SELECT \(unescaped: Self.deviceColumns) FROM devices WHERE handle = \(handle) ORDER BY device_id")
                .map(Self.deviceRecord)
        }
    }

    /// Implements `RelayStore.deviceList(handle:)`.
    public func deviceList(handle: String) async throws -> StoredDeviceList? {
        try await read { db in try await Self.deviceList(db, handle) }
    }

    /// Implements `RelayStore.publishDeviceList` in one transaction (the account row locked).
    public func publishDeviceList(
        handle: String, accountIdentityKey: Data, list: StoredDeviceList, entries: [DeviceListEntry], publisher: DeviceAddress,
        removeDeviceIDs: [UInt32], atMs: Int64, receiptExpiresAtMs: Int64
    ) async throws -> DeviceRemovalResult {
        try await write { db in
            func reject(_ why: String) -> StoreError { StoreError(.deviceListRejected, why) }
            guard let keyRow = try await db.first("SELECT account_identity_key FROM accounts WHERE handle = \(handle) FOR UPDATE")
            else { throw reject("no such handle") }
            guard try keyRow.decode(Data.self) == accountIdentityKey else {
                throw reject("the list is not signed by the handle's current account identity key")
            }
            if let stored = try await Self.deviceList(db, handle), list.version <= stored.version {
                throw reject("version \(list.version) is not greater than the stored list's \(stored.version)")
            }
            var current: [UInt32: Data] = [:]
            for row in try await db.rows("SELECT device_id, device_identity_key FROM devices WHERE handle = \(handle)") {
                let (id, key) = try row.decode((Int64, Data).self)
                current[UInt32(id)] = key
            }
            for entry in entries {
                guard let stored = current[entry.deviceID] else { throw reject("device \(entry.deviceID) is not a current device") }
                guard stored == entry.deviceIdentityKey else { throw reject("device \(entry.deviceID) is listed with another device identity key") }
            }
            let listed = Set(entries.map(\.deviceID))
            guard publisher.handle == handle, listed.contains(publisher.deviceID) else {
                throw reject("the publishing device must be in the list")
            }
            for id in removeDeviceIDs {
                guard current[id] != nil else { throw reject("device \(id) to remove is not a current device") }
                guard !listed.contains(id) else { throw reject("device \(id) to remove is in the list") }
            }
            try await Self.deleteDeviceList(db, handle)
            try await db.rows(
                """
                INSERT INTO device_lists (handle, payload, signature, version)
                VALUES (\(handle), \(list.payload), \(list.signature), \(Int64(bitPattern: list.version)))
                """)
            for entry in entries {
                try await db.rows(
                    """
                    INSERT INTO device_list_entries (handle, device_id, device_identity_key)
                    VALUES (\(handle), \(Int64(entry.deviceID)), \(entry.deviceIdentityKey))
                    """)
            }
            let removed = Array(Set(removeDeviceIDs)).sorted()
            for id in removed {
                try await db.rows(
                    """
                    INSERT INTO removed_device_keys (handle, device_identity_key) VALUES (\(handle), \(current[id] ?? Data()))
                    ON CONFLICT DO NOTHING
                    """)
            }
            let notified = try await self.removeDevices(
                db, handle: handle, deviceIDs: removed, notifyOwnHandle: true, atMs: atMs, receiptExpiresAtMs: receiptExpiresAtMs)
            return DeviceRemovalResult(removedDeviceIDs: removed, notifiedSenders: notified)
        }
    }

    /// Implements `RelayStore.deleteAccount` in one transaction (the account row locked).
    public func deleteAccount(handle: String, accountIdentityKey: Data, atMs: Int64, tombstoneUntilMs: Int64, receiptExpiresAtMs: Int64) async throws
        -> DeviceRemovalResult
    {
        try await write { db in
            guard let keyRow = try await db.first("SELECT account_identity_key FROM accounts WHERE handle = \(handle) FOR UPDATE")
            else { throw StoreError(.unknownRecipient) }
            guard try keyRow.decode(Data.self) == accountIdentityKey else { throw StoreError(.accountKeyChanged) }
            let ids = try await db.rows("SELECT device_id FROM devices WHERE handle = \(handle) ORDER BY device_id")
                .map { UInt32(try $0.decode(Int64.self)) }
            let notified = try await self.removeDevices(
                db, handle: handle, deviceIDs: ids, notifyOwnHandle: false, atMs: atMs, receiptExpiresAtMs: receiptExpiresAtMs)
            // Devices (and with them prekeys), the list, settings and the recovery code hash go with the account row.
            try await db.rows("DELETE FROM accounts WHERE handle = \(handle)")
            try await db.rows("DELETE FROM queue_items WHERE handle = \(handle)")
            // conversations.md: the account's block list and the envelopes it scheduled go with it.
            try await db.rows("DELETE FROM block_lists WHERE handle = \(handle)")
            try await Self.cancelScheduled(db, senderHandle: handle, senderDeviceID: nil)
            try await db.rows(
                """
                INSERT INTO account_tombstones (handle, deleted_at, purge_at) VALUES (\(handle), \(atMs), \(tombstoneUntilMs))
                ON CONFLICT (handle) DO UPDATE SET deleted_at = EXCLUDED.deleted_at, purge_at = EXCLUDED.purge_at
                """)
            return DeviceRemovalResult(removedDeviceIDs: ids, notifiedSenders: notified)
        }
    }

    /// Implements `RelayStore.setSeenReceiptsOff`.
    public func setSeenReceiptsOff(handle: String, _ off: Bool) async throws {
        try await write { db in
            guard try await db.count("UPDATE accounts SET seen_receipts_off = \(off) WHERE handle = \(handle) RETURNING 1") == 1 else {
                throw StoreError(.unknownRecipient)
            }
        }
    }

    /// Implements `RelayStore.putLinkMessage` in one transaction (a slot written by two nodes at once: one wins, the
    /// other gets `.linkSlotUsed`).
    public func putLinkMessage(rendezvousID: Data, slot: UInt32, message: Data, nowMs: Int64, expiresAtMs: Int64) async throws {
        try await write { db in
            let slot = Int64(slot)
            // An expired slot the sweeper has not purged yet counts as never written.
            try await db.rows(
                "DELETE FROM link_messages WHERE rendezvous_id = \(rendezvousID) AND slot = \(slot) AND expires_at <= \(nowMs)")
            let inserted = try await db.count(
                """
                INSERT INTO link_messages (rendezvous_id, slot, message, expires_at) VALUES (\(rendezvousID), \(slot), \(message), \(expiresAtMs))
                ON CONFLICT DO NOTHING RETURNING 1
                """)
            guard inserted == 1 else { throw StoreError(.linkSlotUsed) }
        }
    }

    /// Implements `RelayStore.takeLinkMessage` in one transaction (the slot row locked: read once).
    public func takeLinkMessage(rendezvousID: Data, slot: UInt32, nowMs: Int64) async throws -> Data? {
        try await write { db -> Data? in
            let slot = Int64(slot)
            guard let row = try await db.first(
                """
                SELECT message FROM link_messages
                WHERE rendezvous_id = \(rendezvousID) AND slot = \(slot) AND expires_at > \(nowMs) AND message IS NOT NULL FOR UPDATE
                """)
            else { return nil }
            let message = try row.decode(Data.self)
            // Read once: the row stays (without the message) so the slot cannot be written again.
            try await db.rows("UPDATE link_messages SET message = NULL WHERE rendezvous_id = \(rendezvousID) AND slot = \(slot)")
            return message
        }
    }

    /// Deletes `deviceIDs` of `handle` with their prekeys and queues; their queued envelopes become expired with an
    /// `expired` receipt to each sender device that is still current (and, unless `notifyOwnHandle`, not of `handle`).
    private func removeDevices(
        _ db: PostgresTransaction, handle: String, deviceIDs: [UInt32], notifyOwnHandle: Bool, atMs: Int64, receiptExpiresAtMs: Int64
    ) async throws -> Set<DeviceAddress> {
        var routes: [RouteRow] = []
        for id in deviceIDs {
            let deviceID = Int64(id)
            // conversations.md 8: what the device scheduled can no longer be cancelled (its tokens were on it).
            try await Self.cancelScheduled(db, senderHandle: handle, senderDeviceID: deviceID)
            routes += try await db.rows(
                """
                SELECT \(unescaped: RouteRow.columns) FROM envelope_routes WHERE recipient_handle = \(handle) AND recipient_device_id = \(deviceID)
                    AND state IN (\(Self.stateQueued), \(Self.stateScheduled))
                ORDER BY envelope_id FOR UPDATE
                """
            ).map(RouteRow.init)
            // The device row first: its exclusive lock waits for every transaction that share-locked it to queue
            // something (a receipt, a submit on another node) and makes later ones see it gone; the queue delete after
            // it (a new snapshot) then also takes what those transactions committed. The other way round, an item
            // committed between the two deletes stayed queued for a device that no longer exists.
            try await db.rows("DELETE FROM devices WHERE handle = \(handle) AND device_id = \(deviceID)")
            try await db.rows("DELETE FROM queue_items WHERE handle = \(handle) AND device_id = \(deviceID)")
            // Its connection claim (after the device row: a claim committed meanwhile is seen): the periodic check then
            // closes the connection on whichever node holds it, even if the `r` notice is lost (cluster.md 4).
            try await db.rows("DELETE FROM connection_claims WHERE handle = \(handle) AND device_id = \(deviceID)")
            try await Self.dropClaimEpoch(db, handle: handle, deviceID: deviceID)
            try await Self.dropQueueCounter(db, DeviceAddress(handle: handle, deviceID: id))
        }
        var notified = Set<DeviceAddress>()
        for route in routes {
            try await db.rows("UPDATE envelope_routes SET state = \(Self.stateExpired) WHERE envelope_id = \(route.envelopeID)")
            try await db.rows("DELETE FROM scheduled_envelopes WHERE envelope_id = \(route.envelopeID)")
            guard notifyOwnHandle || route.sender.handle != handle else { continue }
            if try await queueReceipt(
                db, to: route.sender, envelopeID: route.envelopeID, kind: .expired, recipient: route.recipient, atMs: atMs,
                expiresAtMs: receiptExpiresAtMs)
            {
                notified.insert(route.sender)
            }
        }
        return notified
    }

    // MARK: Helpers

    /// Deletes a removed device's `claim_epochs` row after raising `claim_epoch_floor` to its epoch (cluster-v2):
    /// a later device with the same address starts above it.
    static func dropClaimEpoch(_ db: PostgresTransaction, handle: String, deviceID: Int64) async throws {
        try await db.rows(
            """
            WITH gone AS (DELETE FROM claim_epochs WHERE handle = \(handle) AND device_id = \(deviceID) RETURNING epoch)
            UPDATE claim_epoch_floor SET epoch = gone.epoch FROM gone WHERE gone.epoch > claim_epoch_floor.epoch
            """)
    }

    /// Deletes the scheduled envelopes sent by `senderHandle` (by its device `senderDeviceID` when given), marking
    /// their routes cancelled, no receipt: their sender device is gone with its cancel tokens (`conversations.md` 8).
    static func cancelScheduled(_ db: PostgresTransaction, senderHandle: String, senderDeviceID: Int64?) async throws {
        let ids: [ByteBuffer]
        if let senderDeviceID {
            ids = try await db.rows(
                """
                DELETE FROM scheduled_envelopes s USING envelope_routes r
                WHERE r.envelope_id = s.envelope_id AND r.sender_handle = \(senderHandle) AND r.sender_device_id = \(senderDeviceID)
                RETURNING s.envelope_id
                """
            ).map { try $0.decode(ByteBuffer.self) }
        } else {
            // Also rows whose route is gone: every envelope the account scheduled.
            ids = try await db.rows("DELETE FROM scheduled_envelopes WHERE sender_handle = \(senderHandle) RETURNING envelope_id")
                .map { try $0.decode(ByteBuffer.self) }
        }
        guard !ids.isEmpty else { return }
        try await db.rows("UPDATE envelope_routes SET state = \(stateCancelled) WHERE envelope_id = ANY(\(ids))")
    }

    static let deviceColumns = """
        handle, device_id, device_identity_key, device_certificate_signature, signed_prekey_id, signed_prekey_public_key,
        signed_prekey_signature, created_at
        """

    static func deviceRecord(_ row: PostgresRow) throws -> DeviceRecord {
        let (handle, deviceID, identityKey, certificate, signedID, signedKey, signedSignature, created) =
            try row.decode((String, Int64, Data, Data, Int64, Data, Data, Int64).self)
        return DeviceRecord(
            address: DeviceAddress(handle: handle, deviceID: UInt32(deviceID)), deviceIdentityKey: identityKey,
            deviceCertificateSignature: certificate,
            signedPreKey: SignedPreKeyRecord(id: UInt32(signedID), publicKey: signedKey, signature: signedSignature), createdAtMs: created)
    }

    static func insertDevice(_ db: PostgresTransaction, address: DeviceAddress, device: NewDevice, atMs: Int64) async throws {
        try await db.rows(
            """
            INSERT INTO devices (handle, device_id, device_identity_key, device_certificate_signature,
                signed_prekey_id, signed_prekey_public_key, signed_prekey_signature, created_at)
            VALUES (\(address.handle), \(Int64(address.deviceID)), \(device.deviceIdentityKey), \(device.deviceCertificateSignature),
                \(Int64(device.signedPreKey.id)), \(device.signedPreKey.publicKey), \(device.signedPreKey.signature), \(atMs))
            """)
        // The registered signed prekey's id is the floor for later ones; one-time and KEM ids start above 0.
        try await insertPreKeys(
            db, address,
            PreKeyPublication(
                oneTimePreKeys: device.oneTimePreKeys, lastResortKEMPreKey: device.lastResortKEMPreKey, oneTimeKEMPreKeys: device.oneTimeKEMPreKeys),
            maxIDs: (Int64(device.signedPreKey.id), 0, 0))
    }

    /// Inserts a publication's keys, enforcing that every id exceeds every earlier id of its kind, and records the
    /// new highest ids. `maxIDs` are the device's highest (signed, one-time, KEM) ids so far.
    static func insertPreKeys(
        _ db: PostgresTransaction, _ address: DeviceAddress, _ publication: PreKeyPublication, maxIDs: (signed: Int64, oneTime: Int64, kem: Int64)
    ) async throws {
        var maxIDs = maxIDs
        func claim(_ id: UInt32, above max: inout Int64, _ kind: String) throws {
            guard Int64(id) > max else { throw StoreError(.preKeyIDReused, "\(kind) prekey id \(id) is not above \(max)") }
            max = Int64(id)
        }
        let handle = address.handle, deviceID = Int64(address.deviceID)
        if let signedPreKey = publication.signedPreKey {
            try claim(signedPreKey.id, above: &maxIDs.signed, "signed")
            try await db.rows(
                """
                UPDATE devices SET signed_prekey_id = \(Int64(signedPreKey.id)), signed_prekey_public_key = \(signedPreKey.publicKey),
                    signed_prekey_signature = \(signedPreKey.signature)
                WHERE handle = \(handle) AND device_id = \(deviceID)
                """)
        }
        for key in publication.oneTimePreKeys {
            try claim(key.id, above: &maxIDs.oneTime, "one-time")
            try await db.rows(
                "INSERT INTO one_time_prekeys (handle, device_id, prekey_id, public_key) VALUES (\(handle), \(deviceID), \(Int64(key.id)), \(key.publicKey))"
            )
        }
        if let key = publication.lastResortKEMPreKey {
            try claim(key.id, above: &maxIDs.kem, "KEM")
            try await db.rows("DELETE FROM kem_prekeys WHERE handle = \(handle) AND device_id = \(deviceID) AND last_resort")
            try await db.rows(
                """
                INSERT INTO kem_prekeys (handle, device_id, prekey_id, public_key, signature, last_resort)
                VALUES (\(handle), \(deviceID), \(Int64(key.id)), \(key.publicKey), \(key.signature), true)
                """)
        }
        for key in publication.oneTimeKEMPreKeys {
            try claim(key.id, above: &maxIDs.kem, "KEM")
            try await db.rows(
                """
                INSERT INTO kem_prekeys (handle, device_id, prekey_id, public_key, signature, last_resort)
                VALUES (\(handle), \(deviceID), \(Int64(key.id)), \(key.publicKey), \(key.signature), false)
                """)
        }
        try await db.rows(
            """
            UPDATE devices SET max_one_time_prekey_id = \(maxIDs.oneTime), max_kem_prekey_id = \(maxIDs.kem)
            WHERE handle = \(handle) AND device_id = \(deviceID)
            """)
    }

    static func preKeyStock(_ db: PostgresTransaction, _ address: DeviceAddress) async throws -> PreKeyStock {
        let h = address.handle, id = Int64(address.deviceID)
        guard let row = try await db.first(
            """
            SELECT (SELECT COUNT(*) FROM one_time_prekeys WHERE handle = \(h) AND device_id = \(id)),
                (SELECT COUNT(*) FROM kem_prekeys WHERE handle = \(h) AND device_id = \(id) AND NOT last_resort)
            """)
        else { return PreKeyStock(oneTime: 0, oneTimeKEM: 0) }
        let (oneTime, kem) = try row.decode((Int64, Int64).self)
        return PreKeyStock(oneTime: Int(oneTime), oneTimeKEM: Int(kem))
    }

    static func deviceList(_ db: PostgresTransaction, _ handle: String) async throws -> StoredDeviceList? {
        guard let row = try await db.first("SELECT payload, signature, version FROM device_lists WHERE handle = \(handle)") else { return nil }
        let (payload, signature, version) = try row.decode((Data, Data, Int64).self)
        return StoredDeviceList(payload: payload, signature: signature, version: UInt64(bitPattern: version))
    }

    static func deleteDeviceList(_ db: PostgresTransaction, _ handle: String) async throws {
        try await db.rows("DELETE FROM device_lists WHERE handle = \(handle)")
        try await db.rows("DELETE FROM device_list_entries WHERE handle = \(handle)")
    }

    static func listedDeviceIDs(_ db: PostgresTransaction, _ handle: String) async throws -> Set<UInt32> {
        Set(try await db.rows("SELECT device_id FROM device_list_entries WHERE handle = \(handle)").map { UInt32(try $0.decode(Int64.self)) })
    }

    /// The current devices of `handle` in the sense of `relay.md` "Submit": the listed ones when a list is stored,
    /// else every device; nil for an unknown handle.
    static func currentDeviceIDs(_ db: PostgresTransaction, _ handle: String) async throws -> Set<UInt32>? {
        // One round trip: whether the account exists, its devices, whether a list is stored, the listed ids. The
        // account and device rows are share-locked until the transaction ends, so a removal or deletion on another
        // node waits for it (or it for them, and then sees them gone): nothing is queued for a device being removed.
        guard let row = try await db.first(
            """
            SELECT EXISTS (SELECT 1 FROM accounts WHERE handle = \(handle) FOR KEY SHARE),
                ARRAY(SELECT device_id FROM devices WHERE handle = \(handle) ORDER BY device_id FOR KEY SHARE),
                EXISTS (SELECT 1 FROM device_lists WHERE handle = \(handle)),
                ARRAY(SELECT device_id FROM device_list_entries WHERE handle = \(handle))
            """)
        else { return nil }
        let (exists, devices, hasList, listed) = try row.decode((Bool, [Int64], Bool, [Int64]).self)
        guard exists else { return nil }
        let all = Set(devices.map { UInt32($0) })
        guard hasList else { return all }
        return all.intersection(listed.map { UInt32($0) })
    }
}
