import FlitzStore
import Foundation
import GRDB

/// The embedded `RelayStore`: one SQLite database in WAL mode through a GRDB `DatabasePool`
/// (`protocol/relay.md`, "Storage and durability").
///
/// Durability: the writer connection runs with `PRAGMA synchronous = FULL` (GRDB's pool sets NORMAL
/// when it opens a WAL database; this type sets FULL afterwards, see `synchronousMode()`), so a
/// method that returned survives power loss. `PRAGMA secure_delete = ON` overwrites deleted
/// ciphertext in the database file instead of leaving it in free pages.
public final class SQLiteRelayStore: RelayStore {
    private let pool: DatabasePool
    private let makeID: @Sendable () -> Data

    /// Opens (creating if needed) the database at `path` and migrates it to the newest schema.
    /// - Parameters:
    ///   - path: database file; `-wal` and `-shm` files live beside it.
    ///   - makeID: returns 16 fresh random bytes for each receipt id (the relay passes `SystemRandom`).
    /// - Throws: `StoreError.backend` when the file cannot be opened or migrated.
    public init(path: String, makeID: @escaping @Sendable () -> Data) throws {
        var configuration = Configuration()
        configuration.foreignKeysEnabled = true
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA secure_delete = ON")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            // DatabasePool sets synchronous=NORMAL on the writer after prepareDatabase; restore FULL.
            try pool.writeWithoutTransaction { db in
                try db.execute(sql: "PRAGMA synchronous = FULL")
            }
            try Self.migrator.migrate(pool)
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(.backend, "cannot open database: \(Self.describe(error))")
        }
        self.makeID = makeID
    }

    /// The writer connection's `PRAGMA synchronous` value (2 = FULL). Exposed for tests.
    public func synchronousMode() async throws -> Int {
        try await run { try await self.pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 } }
    }

    /// Names of the applied migrations, oldest first (for tests and diagnostics).
    public func appliedMigrations() async throws -> [String] {
        try await run { try await self.pool.read { db in try Self.migrator.appliedMigrations(db) } }
    }

    /// Copies the WAL into the database file and truncates the WAL (`PRAGMA wal_checkpoint(TRUNCATE)`).
    public func checkpoint() async throws {
        try await run { try await self.pool.writeWithoutTransaction { db in _ = try db.checkpoint(.truncate) } }
    }

    // MARK: Schema

    static let migrator: DatabaseMigrator = {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE accounts (
                    handle TEXT PRIMARY KEY NOT NULL,
                    account_identity_key BLOB NOT NULL,
                    recovery_code_hash BLOB NOT NULL,
                    next_device_id INTEGER NOT NULL,
                    created_at INTEGER NOT NULL
                );
                CREATE TABLE devices (
                    handle TEXT NOT NULL REFERENCES accounts(handle) ON DELETE CASCADE,
                    device_id INTEGER NOT NULL,
                    device_identity_key BLOB NOT NULL,
                    device_certificate_signature BLOB NOT NULL,
                    signed_prekey_id INTEGER NOT NULL,
                    signed_prekey_public_key BLOB NOT NULL,
                    signed_prekey_signature BLOB NOT NULL,
                    created_at INTEGER NOT NULL,
                    PRIMARY KEY (handle, device_id)
                );
                CREATE TABLE one_time_prekeys (
                    handle TEXT NOT NULL,
                    device_id INTEGER NOT NULL,
                    prekey_id INTEGER NOT NULL,
                    public_key BLOB NOT NULL,
                    PRIMARY KEY (handle, device_id, prekey_id),
                    FOREIGN KEY (handle, device_id) REFERENCES devices(handle, device_id) ON DELETE CASCADE
                );
                -- One row per accepted envelope, kept (without ciphertext) until route_expires_at.
                -- state: 0 queued, 1 delivered (acknowledged), 2 expired (or recipient device removed).
                CREATE TABLE envelope_routes (
                    envelope_id BLOB PRIMARY KEY NOT NULL,
                    sender_handle TEXT NOT NULL,
                    sender_device_id INTEGER NOT NULL,
                    recipient_handle TEXT NOT NULL,
                    recipient_device_id INTEGER NOT NULL,
                    accepted_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    route_expires_at INTEGER NOT NULL,
                    state INTEGER NOT NULL,
                    seen_reported INTEGER NOT NULL DEFAULT 0
                );
                CREATE INDEX envelope_routes_by_expiry ON envelope_routes(state, expires_at);
                CREATE INDEX envelope_routes_by_retention ON envelope_routes(route_expires_at);
                -- Per-device queue: envelopes (kind 1, with ciphertext) and receipts (kind 2).
                -- AUTOINCREMENT: sequences are never reused, so "sent through sequence N" stays valid.
                CREATE TABLE queue (
                    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
                    handle TEXT NOT NULL,
                    device_id INTEGER NOT NULL,
                    kind INTEGER NOT NULL,
                    envelope_id BLOB NOT NULL,
                    ciphertext BLOB,
                    receipt_id BLOB UNIQUE,
                    receipt_kind INTEGER,
                    receipt_at INTEGER,
                    receipt_recipient_handle TEXT,
                    receipt_recipient_device_id INTEGER,
                    expires_at INTEGER NOT NULL
                );
                CREATE INDEX queue_by_device ON queue(handle, device_id, sequence);
                CREATE INDEX queue_by_envelope ON queue(envelope_id);
                CREATE INDEX queue_by_expiry ON queue(expires_at);
                """)
        }
        migrator.registerMigration("v2-pqxdh") { db in
            // KEM prekeys (PQXDH), and the highest prekey id each device ever published per kind, so that a
            // prekey id is never reused (crypto.md, "Prekey lifecycle").
            try db.execute(sql: """
                CREATE TABLE kem_prekeys (
                    handle TEXT NOT NULL,
                    device_id INTEGER NOT NULL,
                    prekey_id INTEGER NOT NULL,
                    public_key BLOB NOT NULL,
                    signature BLOB NOT NULL,
                    last_resort INTEGER NOT NULL,
                    PRIMARY KEY (handle, device_id, prekey_id),
                    FOREIGN KEY (handle, device_id) REFERENCES devices(handle, device_id) ON DELETE CASCADE
                );
                CREATE UNIQUE INDEX kem_prekeys_one_last_resort ON kem_prekeys(handle, device_id) WHERE last_resort = 1;
                ALTER TABLE devices ADD COLUMN max_one_time_prekey_id INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE devices ADD COLUMN max_kem_prekey_id INTEGER NOT NULL DEFAULT 0;
                UPDATE devices SET max_one_time_prekey_id = COALESCE((SELECT MAX(prekey_id) FROM one_time_prekeys o
                    WHERE o.handle = devices.handle AND o.device_id = devices.device_id), 0);
                """)
        }
        return migrator
    }()

    private static let kindEnvelope = 1
    private static let kindReceipt = 2
    private static let stateQueued = 0
    private static let stateDelivered = 1
    private static let stateExpired = 2

    // MARK: RelayStore (documented on the protocol)

    /// Implements `RelayStore.register` (see its documentation for shapes, units and errors) in one SQLite transaction.
    public func register(
        handle: String, accountIdentityKey: Data, recoveryCodeHash: Data, device: NewDevice, atMs: Int64
    ) async throws -> UInt32 {
        try await run {
            try await self.pool.write { db in
                if try Bool.fetchOne(db, sql: "SELECT 1 FROM accounts WHERE handle = ?", arguments: [handle]) == true {
                    throw StoreError(.handleTaken)
                }
                try db.execute(
                    sql: "INSERT INTO accounts (handle, account_identity_key, recovery_code_hash, next_device_id, created_at) VALUES (?, ?, ?, 2, ?)",
                    arguments: [handle, accountIdentityKey, recoveryCodeHash, atMs])
                try Self.insertDevice(db, address: DeviceAddress(handle: handle, deviceID: 1), device: device, atMs: atMs)
                return 1
            }
        }
    }

    /// Implements `RelayStore.account` (see its documentation for shapes, units and errors) in one SQLite transaction.
    public func account(handle: String) async throws -> AccountRecord? {
        try await run {
            try await self.pool.read { db in
                try Row.fetchOne(db, sql: "SELECT * FROM accounts WHERE handle = ?", arguments: [handle]).map { row in
                    AccountRecord(
                        handle: row["handle"], accountIdentityKey: row["account_identity_key"],
                        recoveryCodeHash: row["recovery_code_hash"], nextDeviceID: UInt32(row["next_device_id"] as Int64),
                        createdAtMs: row["created_at"])
                }
            }
        }
    }

    /// Implements `RelayStore.device` (see its documentation for shapes, units and errors) in one SQLite transaction.
    public func device(_ address: DeviceAddress) async throws -> DeviceRecord? {
        try await run {
            try await self.pool.read { db in
                try Row.fetchOne(
                    db, sql: "SELECT * FROM devices WHERE handle = ? AND device_id = ?",
                    arguments: [address.handle, Int64(address.deviceID)]
                ).map(Self.deviceRecord)
            }
        }
    }

    /// Implements `RelayStore.reissueRegistration` in one SQLite transaction.
    public func reissueRegistration(
        handle: String, accountIdentityKey: Data, deviceIdentityKey: Data, recoveryCodeHash: Data
    ) async throws -> UInt32? {
        try await run {
            try await self.pool.write { db -> UInt32? in
                guard let deviceID = try Int64.fetchOne(
                    db,
                    sql: """
                        SELECT d.device_id FROM devices d JOIN accounts a ON a.handle = d.handle
                        WHERE d.handle = ? AND a.account_identity_key = ? AND d.device_identity_key = ?
                        """,
                    arguments: [handle, accountIdentityKey, deviceIdentityKey])
                else { return nil }
                try db.execute(sql: "UPDATE accounts SET recovery_code_hash = ? WHERE handle = ?", arguments: [recoveryCodeHash, handle])
                return UInt32(deviceID)
            }
        }
    }

    /// Implements `RelayStore.recover` (see its documentation for shapes, units and errors) in one SQLite transaction.
    public func recover(
        handle: String, expectedRecoveryCodeHash: Data, accountIdentityKey: Data, newRecoveryCodeHash: Data,
        device: NewDevice, atMs: Int64, receiptExpiresAtMs: Int64
    ) async throws -> RecoveryResult {
        try await run {
            try await self.pool.write { db in
                guard let row = try Row.fetchOne(
                    db, sql: "SELECT recovery_code_hash, next_device_id FROM accounts WHERE handle = ?", arguments: [handle])
                else { throw StoreError(.recoveryFailed) }
                let storedHash: Data = row["recovery_code_hash"]
                guard storedHash == expectedRecoveryCodeHash else { throw StoreError(.recoveryFailed) }
                let newDeviceID: Int64 = row["next_device_id"]
                let removed = try Int64.fetchAll(
                    db, sql: "SELECT device_id FROM devices WHERE handle = ? ORDER BY device_id", arguments: [handle])
                var notified = Set<DeviceAddress>()
                // Undelivered envelopes addressed to the removed devices: expired, sender told.
                let routes = try Row.fetchAll(
                    db, sql: "SELECT * FROM envelope_routes WHERE recipient_handle = ? AND state = ?",
                    arguments: [handle, Self.stateQueued])
                for route in routes {
                    let sender = DeviceAddress(handle: route["sender_handle"], deviceID: UInt32(route["sender_device_id"] as Int64))
                    let recipient = DeviceAddress(handle: handle, deviceID: UInt32(route["recipient_device_id"] as Int64))
                    let envelopeID: Data = route["envelope_id"]
                    try db.execute(sql: "UPDATE envelope_routes SET state = ? WHERE envelope_id = ?", arguments: [Self.stateExpired, envelopeID])
                    if sender.handle != handle,
                        try self.queueReceipt(db, to: sender, envelopeID: envelopeID, kind: .expired, recipient: recipient, atMs: atMs, expiresAtMs: receiptExpiresAtMs)
                    {
                        notified.insert(sender)
                    }
                }
                try db.execute(sql: "DELETE FROM queue WHERE handle = ?", arguments: [handle])
                try db.execute(sql: "DELETE FROM devices WHERE handle = ?", arguments: [handle])
                try db.execute(
                    sql: "UPDATE accounts SET account_identity_key = ?, recovery_code_hash = ?, next_device_id = ? WHERE handle = ?",
                    arguments: [accountIdentityKey, newRecoveryCodeHash, newDeviceID + 1, handle])
                let address = DeviceAddress(handle: handle, deviceID: UInt32(newDeviceID))
                try Self.insertDevice(db, address: address, device: device, atMs: atMs)
                return RecoveryResult(deviceID: address.deviceID, removedDeviceIDs: removed.map { UInt32($0) }, notifiedSenders: notified)
            }
        }
    }

    /// Implements `RelayStore.publishPreKeys` (see its documentation for shapes, units and errors) in one SQLite transaction.
    public func publishPreKeys(device: DeviceAddress, _ publication: PreKeyPublication, limits: PreKeyStockLimits) async throws -> PreKeyStock {
        try await run {
            try await self.pool.write { db in
                guard let row = try Row.fetchOne(
                    db, sql: "SELECT signed_prekey_id, max_one_time_prekey_id, max_kem_prekey_id FROM devices WHERE handle = ? AND device_id = ?",
                    arguments: [device.handle, Int64(device.deviceID)])
                else { throw StoreError(.unknownDevice) }
                try Self.insertPreKeys(
                    db, device, publication,
                    maxIDs: (row["signed_prekey_id"] as Int64, row["max_one_time_prekey_id"] as Int64, row["max_kem_prekey_id"] as Int64))
                // Counted after inserting, inside the transaction: throwing rolls the whole publish back.
                let stock = try Self.preKeyStock(db, device)
                guard stock.oneTime <= limits.oneTime, stock.oneTimeKEM <= limits.oneTimeKEM else { throw StoreError(.preKeyStockFull) }
                return stock
            }
        }
    }

    /// Implements `RelayStore.preKeyStock` (see its documentation for shapes, units and errors) in one SQLite transaction.
    public func preKeyStock(device: DeviceAddress) async throws -> PreKeyStock {
        try await run { try await self.pool.read { db in try Self.preKeyStock(db, device) } }
    }

    /// Implements `RelayStore.takePreKeyBundle` (see its documentation for shapes, units and errors) in one SQLite transaction.
    public func takePreKeyBundle(handle: String) async throws -> PreKeyBundleRecord? {
        try await run {
            try await self.pool.write { db in
                guard let key = try Data.fetchOne(db, sql: "SELECT account_identity_key FROM accounts WHERE handle = ?", arguments: [handle])
                else { return nil }
                let devices = try Row.fetchAll(db, sql: "SELECT * FROM devices WHERE handle = ? ORDER BY device_id", arguments: [handle])
                    .map(Self.deviceRecord)
                var entries: [PreKeyBundleRecord.Device] = []
                for device in devices {
                    let address = device.address
                    var oneTime: OneTimePreKeyRecord?
                    if let row = try Row.fetchOne(
                        db, sql: "SELECT prekey_id, public_key FROM one_time_prekeys WHERE handle = ? AND device_id = ? ORDER BY prekey_id LIMIT 1",
                        arguments: [address.handle, Int64(address.deviceID)])
                    {
                        let id: Int64 = row["prekey_id"]
                        oneTime = OneTimePreKeyRecord(id: UInt32(id), publicKey: row["public_key"])
                        try db.execute(
                            sql: "DELETE FROM one_time_prekeys WHERE handle = ? AND device_id = ? AND prekey_id = ?",
                            arguments: [address.handle, Int64(address.deviceID), id])
                    }
                    // A one-time KEM prekey while any remain (deleted now), else the last-resort one (kept).
                    var kem: KEMPreKeyRecord?
                    if let row = try Row.fetchOne(
                        db,
                        sql: """
                            SELECT prekey_id, public_key, signature, last_resort FROM kem_prekeys WHERE handle = ? AND device_id = ?
                            ORDER BY last_resort, prekey_id LIMIT 1
                            """,
                        arguments: [address.handle, Int64(address.deviceID)])
                    {
                        let id: Int64 = row["prekey_id"]
                        let lastResort: Bool = row["last_resort"]
                        kem = KEMPreKeyRecord(id: UInt32(id), publicKey: row["public_key"], signature: row["signature"], lastResort: lastResort)
                        if !lastResort {
                            try db.execute(
                                sql: "DELETE FROM kem_prekeys WHERE handle = ? AND device_id = ? AND prekey_id = ?",
                                arguments: [address.handle, Int64(address.deviceID), id])
                        }
                    }
                    entries.append(.init(device: device, oneTimePreKey: oneTime, kemPreKey: kem))
                }
                return PreKeyBundleRecord(handle: handle, accountIdentityKey: key, devices: entries)
            }
        }
    }

    /// Implements `RelayStore.submit` (see its documentation for shapes, units and errors) in one SQLite transaction.
    public func submit(
        sender: DeviceAddress, envelopes: [EnvelopeSubmission], atMs: Int64, queueLimit: Int
    ) async throws -> [SubmissionOutcome] {
        try await run {
            try await self.pool.write { db in
                // The sender may have been removed (recovery) after it authenticated.
                guard try Self.deviceExists(db, sender) else { throw StoreError(.unknownDevice) }
                var outcomes: [SubmissionOutcome] = []
                outcomes.reserveCapacity(envelopes.count)
                var queued: [DeviceAddress: Int] = [:]
                for envelope in envelopes {
                    if let route = try Row.fetchOne(db, sql: "SELECT * FROM envelope_routes WHERE envelope_id = ?", arguments: [envelope.envelopeID]) {
                        let same = (route["sender_handle"] as String) == sender.handle
                            && (route["sender_device_id"] as Int64) == Int64(sender.deviceID)
                            && (route["recipient_handle"] as String) == envelope.recipient.handle
                            && (route["recipient_device_id"] as Int64) == Int64(envelope.recipient.deviceID)
                        outcomes.append(same
                            ? .accepted(acceptedAtMs: route["accepted_at"], expiresAtMs: route["expires_at"], newlyQueued: false)
                            : .rejected(.envelopeIDConflict))
                        continue
                    }
                    guard try Bool.fetchOne(db, sql: "SELECT 1 FROM accounts WHERE handle = ?", arguments: [envelope.recipient.handle]) == true else {
                        outcomes.append(.rejected(.unknownRecipient))
                        continue
                    }
                    guard try Self.deviceExists(db, envelope.recipient) else {
                        outcomes.append(.rejected(.staleDevice))
                        continue
                    }
                    let depth = try queued[envelope.recipient] ?? Int.fetchOne(
                        db, sql: "SELECT COUNT(*) FROM queue WHERE handle = ? AND device_id = ? AND kind = ?",
                        arguments: [envelope.recipient.handle, Int64(envelope.recipient.deviceID), Self.kindEnvelope]) ?? 0
                    guard depth < queueLimit else {
                        outcomes.append(.rejected(.queueFull))
                        continue
                    }
                    queued[envelope.recipient] = depth + 1
                    try db.execute(
                        sql: """
                            INSERT INTO envelope_routes (envelope_id, sender_handle, sender_device_id, recipient_handle, recipient_device_id,
                                accepted_at, expires_at, route_expires_at, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                            """,
                        arguments: [
                            envelope.envelopeID, sender.handle, Int64(sender.deviceID), envelope.recipient.handle,
                            Int64(envelope.recipient.deviceID), atMs, envelope.expiresAtMs, envelope.routeExpiresAtMs, Self.stateQueued,
                        ])
                    try db.execute(
                        sql: "INSERT INTO queue (handle, device_id, kind, envelope_id, ciphertext, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                        arguments: [
                            envelope.recipient.handle, Int64(envelope.recipient.deviceID), Self.kindEnvelope, envelope.envelopeID,
                            envelope.ciphertext, envelope.expiresAtMs,
                        ])
                    outcomes.append(.accepted(acceptedAtMs: atMs, expiresAtMs: envelope.expiresAtMs, newlyQueued: true))
                }
                return outcomes
            }
        }
    }

    /// Implements `RelayStore.pendingItems` (see its documentation for shapes, units and errors) in one SQLite transaction.
    public func pendingItems(for device: DeviceAddress, afterSequence: Int64, nowMs: Int64, limit: Int) async throws -> [QueuedItem] {
        try await run {
            try await self.pool.read { db in
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT q.*, r.sender_handle, r.sender_device_id, r.accepted_at, r.expires_at AS envelope_expires_at
                        FROM queue q LEFT JOIN envelope_routes r ON q.kind = \(Self.kindEnvelope) AND r.envelope_id = q.envelope_id
                        WHERE q.handle = ? AND q.device_id = ? AND q.sequence > ? AND q.expires_at > ?
                        ORDER BY q.sequence LIMIT ?
                        """,
                    arguments: [device.handle, Int64(device.deviceID), afterSequence, nowMs, limit])
                return try rows.map { row in
                    let sequence: Int64 = row["sequence"]
                    let kind: Int = row["kind"]
                    if kind == Self.kindEnvelope {
                        guard let senderHandle = row["sender_handle"] as String? else { throw StoreError(.corrupt, "queued envelope without route") }
                        return QueuedItem(sequence: sequence, content: .envelope(StoredEnvelope(
                            envelopeID: row["envelope_id"], sender: DeviceAddress(handle: senderHandle, deviceID: UInt32(row["sender_device_id"] as Int64)),
                            recipientDeviceID: device.deviceID, acceptedAtMs: row["accepted_at"], expiresAtMs: row["envelope_expires_at"],
                            ciphertext: row["ciphertext"])))
                    }
                    guard let receiptKind = ReceiptKind(rawValue: row["receipt_kind"]) else { throw StoreError(.corrupt, "unknown receipt kind") }
                    return QueuedItem(sequence: sequence, content: .receipt(StoredReceipt(
                        receiptID: row["receipt_id"], envelopeID: row["envelope_id"], kind: receiptKind, atMs: row["receipt_at"],
                        recipient: DeviceAddress(handle: row["receipt_recipient_handle"], deviceID: UInt32(row["receipt_recipient_device_id"] as Int64)))))
                }
            }
        }
    }

    /// Implements `RelayStore.acknowledge` (see its documentation for shapes, units and errors) in one SQLite transaction.
    public func acknowledge(
        device: DeviceAddress, envelopeIDs: [Data], receiptIDs: [Data], atMs: Int64, receiptExpiresAtMs: Int64
    ) async throws -> Set<DeviceAddress> {
        try await run {
            try await self.pool.write { db in
                var notified = Set<DeviceAddress>()
                for envelopeID in envelopeIDs {
                    guard let route = try Row.fetchOne(
                        db,
                        sql: "SELECT sender_handle, sender_device_id FROM envelope_routes WHERE envelope_id = ? AND recipient_handle = ? AND recipient_device_id = ? AND state = ?",
                        arguments: [envelopeID, device.handle, Int64(device.deviceID), Self.stateQueued])
                    else { continue }
                    try db.execute(
                        sql: "DELETE FROM queue WHERE envelope_id = ? AND kind = ? AND handle = ? AND device_id = ?",
                        arguments: [envelopeID, Self.kindEnvelope, device.handle, Int64(device.deviceID)])
                    try db.execute(sql: "UPDATE envelope_routes SET state = ? WHERE envelope_id = ?", arguments: [Self.stateDelivered, envelopeID])
                    let sender = DeviceAddress(handle: route["sender_handle"], deviceID: UInt32(route["sender_device_id"] as Int64))
                    if try self.queueReceipt(db, to: sender, envelopeID: envelopeID, kind: .delivered, recipient: device, atMs: atMs, expiresAtMs: receiptExpiresAtMs) {
                        notified.insert(sender)
                    }
                }
                for receiptID in receiptIDs {
                    try db.execute(
                        sql: "DELETE FROM queue WHERE receipt_id = ? AND handle = ? AND device_id = ?",
                        arguments: [receiptID, device.handle, Int64(device.deviceID)])
                }
                return notified
            }
        }
    }

    /// Implements `RelayStore.reportSeen` (see its documentation for shapes, units and errors) in one SQLite transaction.
    public func reportSeen(device: DeviceAddress, envelopeIDs: [Data], atMs: Int64, receiptExpiresAtMs: Int64) async throws -> Set<DeviceAddress> {
        try await run {
            try await self.pool.write { db in
                var notified = Set<DeviceAddress>()
                for envelopeID in envelopeIDs {
                    guard let route = try Row.fetchOne(
                        db,
                        sql: "SELECT sender_handle, sender_device_id FROM envelope_routes WHERE envelope_id = ? AND recipient_handle = ? AND recipient_device_id = ? AND seen_reported = 0",
                        arguments: [envelopeID, device.handle, Int64(device.deviceID)])
                    else { continue }
                    try db.execute(sql: "UPDATE envelope_routes SET seen_reported = 1 WHERE envelope_id = ?", arguments: [envelopeID])
                    let sender = DeviceAddress(handle: route["sender_handle"], deviceID: UInt32(route["sender_device_id"] as Int64))
                    if try self.queueReceipt(db, to: sender, envelopeID: envelopeID, kind: .seen, recipient: device, atMs: atMs, expiresAtMs: receiptExpiresAtMs) {
                        notified.insert(sender)
                    }
                }
                return notified
            }
        }
    }

    /// Implements `RelayStore.sweep` (see its documentation for shapes, units and errors) in one SQLite transaction.
    public func sweep(nowMs: Int64, receiptExpiresAtMs: Int64) async throws -> SweepResult {
        try await run {
            try await self.pool.write { db in
                let expired = try Row.fetchAll(
                    db, sql: "SELECT * FROM envelope_routes WHERE state = ? AND expires_at <= ?", arguments: [Self.stateQueued, nowMs])
                var notified = Set<DeviceAddress>()
                for route in expired {
                    let envelopeID: Data = route["envelope_id"]
                    let sender = DeviceAddress(handle: route["sender_handle"], deviceID: UInt32(route["sender_device_id"] as Int64))
                    let recipient = DeviceAddress(handle: route["recipient_handle"], deviceID: UInt32(route["recipient_device_id"] as Int64))
                    try db.execute(sql: "UPDATE envelope_routes SET state = ? WHERE envelope_id = ?", arguments: [Self.stateExpired, envelopeID])
                    try db.execute(sql: "DELETE FROM queue WHERE envelope_id = ? AND kind = ?", arguments: [envelopeID, Self.kindEnvelope])
                    if try self.queueReceipt(db, to: sender, envelopeID: envelopeID, kind: .expired, recipient: recipient, atMs: nowMs, expiresAtMs: receiptExpiresAtMs) {
                        notified.insert(sender)
                    }
                }
                // Anything else past its expiry: receipts, and envelope rows whose route was already settled.
                try db.execute(sql: "DELETE FROM queue WHERE expires_at <= ?", arguments: [nowMs])
                let purgedReceipts = db.changesCount
                try db.execute(sql: "DELETE FROM envelope_routes WHERE route_expires_at <= ?", arguments: [nowMs])
                let purgedRoutes = db.changesCount
                return SweepResult(expiredEnvelopes: expired.count, notifiedSenders: notified, purgedReceipts: purgedReceipts, purgedRoutes: purgedRoutes)
            }
        }
    }

    // MARK: Helpers

    /// Queues a receipt for `sender` when it is still a current device; returns whether it did.
    private func queueReceipt(
        _ db: Database, to sender: DeviceAddress, envelopeID: Data, kind: ReceiptKind, recipient: DeviceAddress, atMs: Int64, expiresAtMs: Int64
    ) throws -> Bool {
        guard try Self.deviceExists(db, sender) else { return false }
        try db.execute(
            sql: """
                INSERT INTO queue (handle, device_id, kind, envelope_id, receipt_id, receipt_kind, receipt_at,
                    receipt_recipient_handle, receipt_recipient_device_id, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                sender.handle, Int64(sender.deviceID), Self.kindReceipt, envelopeID, makeID(), kind.rawValue, atMs,
                recipient.handle, Int64(recipient.deviceID), expiresAtMs,
            ])
        return true
    }

    private static func insertDevice(_ db: Database, address: DeviceAddress, device: NewDevice, atMs: Int64) throws {
        try db.execute(
            sql: """
                INSERT INTO devices (handle, device_id, device_identity_key, device_certificate_signature,
                    signed_prekey_id, signed_prekey_public_key, signed_prekey_signature, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                address.handle, Int64(address.deviceID), device.deviceIdentityKey, device.deviceCertificateSignature,
                Int64(device.signedPreKey.id), device.signedPreKey.publicKey, device.signedPreKey.signature, atMs,
            ])
        // The registered signed prekey's id is the floor for later ones; one-time and KEM ids start above 0.
        try insertPreKeys(
            db, address,
            PreKeyPublication(
                oneTimePreKeys: device.oneTimePreKeys, lastResortKEMPreKey: device.lastResortKEMPreKey, oneTimeKEMPreKeys: device.oneTimeKEMPreKeys),
            maxIDs: (Int64(device.signedPreKey.id), 0, 0))
    }

    /// Inserts a publication's keys, enforcing that every id exceeds every earlier id of its kind, and
    /// records the new highest ids. `maxIDs` are the device's highest (signed, one-time, KEM) ids so far.
    private static func insertPreKeys(
        _ db: Database, _ address: DeviceAddress, _ publication: PreKeyPublication, maxIDs: (signed: Int64, oneTime: Int64, kem: Int64)
    ) throws {
        var maxIDs = maxIDs
        func claim(_ id: UInt32, above max: inout Int64, _ kind: String) throws {
            guard Int64(id) > max else { throw StoreError(.preKeyIDReused, "\(kind) prekey id \(id) is not above \(max)") }
            max = Int64(id)
        }
        let handle = address.handle, deviceID = Int64(address.deviceID)
        if let signedPreKey = publication.signedPreKey {
            try claim(signedPreKey.id, above: &maxIDs.signed, "signed")
            try db.execute(
                sql: "UPDATE devices SET signed_prekey_id = ?, signed_prekey_public_key = ?, signed_prekey_signature = ? WHERE handle = ? AND device_id = ?",
                arguments: [Int64(signedPreKey.id), signedPreKey.publicKey, signedPreKey.signature, handle, deviceID])
        }
        for key in publication.oneTimePreKeys {
            try claim(key.id, above: &maxIDs.oneTime, "one-time")
            try db.execute(
                sql: "INSERT INTO one_time_prekeys (handle, device_id, prekey_id, public_key) VALUES (?, ?, ?, ?)",
                arguments: [handle, deviceID, Int64(key.id), key.publicKey])
        }
        if let key = publication.lastResortKEMPreKey {
            try claim(key.id, above: &maxIDs.kem, "KEM")
            try db.execute(sql: "DELETE FROM kem_prekeys WHERE handle = ? AND device_id = ? AND last_resort = 1", arguments: [handle, deviceID])
            try db.execute(
                sql: "INSERT INTO kem_prekeys (handle, device_id, prekey_id, public_key, signature, last_resort) VALUES (?, ?, ?, ?, ?, 1)",
                arguments: [handle, deviceID, Int64(key.id), key.publicKey, key.signature])
        }
        for key in publication.oneTimeKEMPreKeys {
            try claim(key.id, above: &maxIDs.kem, "KEM")
            try db.execute(
                sql: "INSERT INTO kem_prekeys (handle, device_id, prekey_id, public_key, signature, last_resort) VALUES (?, ?, ?, ?, ?, 0)",
                arguments: [handle, deviceID, Int64(key.id), key.publicKey, key.signature])
        }
        try db.execute(
            sql: "UPDATE devices SET max_one_time_prekey_id = ?, max_kem_prekey_id = ? WHERE handle = ? AND device_id = ?",
            arguments: [maxIDs.oneTime, maxIDs.kem, handle, deviceID])
    }

    private static func deviceExists(_ db: Database, _ address: DeviceAddress) throws -> Bool {
        try Bool.fetchOne(
            db, sql: "SELECT 1 FROM devices WHERE handle = ? AND device_id = ?", arguments: [address.handle, Int64(address.deviceID)]) == true
    }

    private static func preKeyStock(_ db: Database, _ address: DeviceAddress) throws -> PreKeyStock {
        let arguments: StatementArguments = [address.handle, Int64(address.deviceID)]
        let oneTime = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM one_time_prekeys WHERE handle = ? AND device_id = ?", arguments: arguments) ?? 0
        let kem = try Int.fetchOne(
            db, sql: "SELECT COUNT(*) FROM kem_prekeys WHERE handle = ? AND device_id = ? AND last_resort = 0", arguments: arguments) ?? 0
        return PreKeyStock(oneTime: oneTime, oneTimeKEM: kem)
    }

    private static func deviceRecord(_ row: Row) -> DeviceRecord {
        DeviceRecord(
            address: DeviceAddress(handle: row["handle"], deviceID: UInt32(row["device_id"] as Int64)),
            deviceIdentityKey: row["device_identity_key"], deviceCertificateSignature: row["device_certificate_signature"],
            signedPreKey: SignedPreKeyRecord(
                id: UInt32(row["signed_prekey_id"] as Int64), publicKey: row["signed_prekey_public_key"],
                signature: row["signed_prekey_signature"]))
    }

    /// Runs one GRDB access (GRDB's async APIs run it on GRDB's own queues, off the cooperative pool)
    /// and maps any error that is not already a `StoreError` to `StoreError.backend`.
    private func run<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(.backend, Self.describe(error))
        }
    }

    private static func describe(_ error: any Error) -> String {
        if let error = error as? DatabaseError {
            // Message and code only: never the SQL arguments (they may hold ciphertext or keys).
            return "SQLite error \(error.resultCode.rawValue): \(error.message ?? "")"
        }
        return String(describing: type(of: error))
    }
}
