import FlitzStore
import Foundation
import GRDB
import Synchronization

/// The embedded `RelayStore`: one SQLite database in WAL mode through a GRDB `DatabasePool`
/// (`protocol/relay.md`, "Storage and durability").
///
/// Durability: the writer connection runs with `PRAGMA synchronous = FULL` (GRDB's pool sets NORMAL
/// when it opens a WAL database; this type sets FULL afterwards, see `synchronousMode()`), so a
/// method that returned survives power loss. `PRAGMA secure_delete = ON` overwrites deleted
/// ciphertext in the database file instead of leaving it in free pages.
public final class SQLiteRelayStore: RelayStore {
    let pool: DatabasePool
    private let makeID: @Sendable () -> Data
    private let committer: GroupCommitter

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
        committer = GroupCommitter(pool: pool)
    }

    /// The writer connection's `PRAGMA synchronous` value (2 = FULL). Exposed for tests.
    public func synchronousMode() async throws -> Int {
        try await run { try await self.pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 } }
    }

    /// How many `submit` calls the group commit has handled, in how many write transactions (for tests
    /// and diagnostics: fewer transactions than callers means batches were shared).
    public func groupCommitStatistics() -> (callers: Int, transactions: Int) {
        committer.statistics()
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
        migrator.registerMigration("v3-devices") { db in
            // Multi-device accounts (devices.md): the newest signed device list per handle with its entries,
            // tombstones of deleted accounts, the seen-receipts setting, pairing messages, the group of
            // each route (receipts across devices) and which (group, recipient handle) receipts went out.
            try db.execute(sql: """
                CREATE TABLE device_lists (
                    handle TEXT PRIMARY KEY NOT NULL REFERENCES accounts(handle) ON DELETE CASCADE,
                    payload BLOB NOT NULL,
                    signature BLOB NOT NULL,
                    version INTEGER NOT NULL
                );
                CREATE TABLE device_list_entries (
                    handle TEXT NOT NULL REFERENCES accounts(handle) ON DELETE CASCADE,
                    device_id INTEGER NOT NULL,
                    device_identity_key BLOB NOT NULL,
                    PRIMARY KEY (handle, device_id)
                );
                -- Device identity keys removed by a device list: their certificates stay valid forever
                -- (devices.md section 6), so RegisterDevice refuses them until the account key changes.
                CREATE TABLE removed_device_keys (
                    handle TEXT NOT NULL REFERENCES accounts(handle) ON DELETE CASCADE,
                    device_identity_key BLOB NOT NULL,
                    PRIMARY KEY (handle, device_identity_key)
                );
                CREATE TABLE account_tombstones (
                    handle TEXT PRIMARY KEY NOT NULL,
                    deleted_at INTEGER NOT NULL,
                    purge_at INTEGER NOT NULL
                );
                ALTER TABLE accounts ADD COLUMN seen_receipts_off INTEGER NOT NULL DEFAULT 0;
                -- A taken slot keeps its row (message NULL) so that it cannot be written again.
                CREATE TABLE link_messages (
                    rendezvous_id BLOB NOT NULL,
                    slot INTEGER NOT NULL,
                    message BLOB,
                    expires_at INTEGER NOT NULL,
                    PRIMARY KEY (rendezvous_id, slot)
                );
                CREATE INDEX link_messages_by_expiry ON link_messages(expires_at);
                -- NULL for routes from before v3: each is a group of its own (COALESCE(group_id, envelope_id)).
                ALTER TABLE envelope_routes ADD COLUMN group_id BLOB;
                CREATE INDEX envelope_routes_by_group ON envelope_routes(group_id);
                CREATE TABLE group_receipts (
                    group_id BLOB NOT NULL,
                    recipient_handle TEXT NOT NULL,
                    kind INTEGER NOT NULL,
                    route_expires_at INTEGER NOT NULL,
                    PRIMARY KEY (group_id, recipient_handle, kind)
                );
                CREATE INDEX group_receipts_by_retention ON group_receipts(route_expires_at);
                -- Undelivered envelopes per device, kept by triggers on every insert and delete of an envelope
                -- row (any path: submit, acknowledge, sweep, removal, recovery, deletion), so that a submit reads
                -- one row instead of counting the queue (relay.maxQueuedEnvelopes).
                CREATE TABLE queue_depths (
                    handle TEXT NOT NULL,
                    device_id INTEGER NOT NULL,
                    envelopes INTEGER NOT NULL,
                    PRIMARY KEY (handle, device_id)
                );
                INSERT INTO queue_depths (handle, device_id, envelopes)
                    SELECT handle, device_id, COUNT(*) FROM queue WHERE kind = 1 GROUP BY handle, device_id;
                CREATE TRIGGER queue_depth_insert AFTER INSERT ON queue WHEN NEW.kind = 1 BEGIN
                    INSERT INTO queue_depths (handle, device_id, envelopes) VALUES (NEW.handle, NEW.device_id, 1)
                        ON CONFLICT (handle, device_id) DO UPDATE SET envelopes = envelopes + 1;
                END;
                CREATE TRIGGER queue_depth_delete AFTER DELETE ON queue WHEN OLD.kind = 1 BEGIN
                    UPDATE queue_depths SET envelopes = envelopes - 1 WHERE handle = OLD.handle AND device_id = OLD.device_id;
                    DELETE FROM queue_depths WHERE handle = OLD.handle AND device_id = OLD.device_id AND envelopes <= 0;
                END;
                """)
        }
        migrator.registerMigration("v4-origin-device") { db in
            // The device that Register or Recover created (the only one whose lost answer may be re-sent, relay.md
            // "Register"). NULL for accounts from before v4: their retry window has long passed, so none is re-sent.
            try db.execute(sql: "ALTER TABLE accounts ADD COLUMN origin_device_id INTEGER")
        }
        migrator.registerMigration("v5-push") { db in
            // Push endpoints (push.md 4), one per device, deleted with it (cascade, like its prekeys: device removal,
            // recovery and account deletion all delete device rows). A dropped endpoint keeps only provider, time and
            // reason (endpoint NULL, keys empty). urgent_window_until is the coalescing window's end (push.md 5).
            // relay_secrets holds the relay's generated VAPID key (PEM).
            try db.execute(sql: """
                CREATE TABLE push_endpoints (
                    handle TEXT NOT NULL,
                    device_id INTEGER NOT NULL,
                    provider TEXT NOT NULL,
                    endpoint TEXT,
                    p256dh BLOB,
                    auth_secret BLOB,
                    apns_background INTEGER NOT NULL,
                    registered_at INTEGER NOT NULL,
                    last_wake_at INTEGER NOT NULL DEFAULT 0,
                    wakes_sent INTEGER NOT NULL DEFAULT 0,
                    last_failure TEXT NOT NULL DEFAULT '',
                    dropped_at INTEGER NOT NULL DEFAULT 0,
                    urgent_window_until INTEGER NOT NULL DEFAULT 0,
                    PRIMARY KEY (handle, device_id),
                    FOREIGN KEY (handle, device_id) REFERENCES devices(handle, device_id) ON DELETE CASCADE
                );
                CREATE TABLE relay_secrets (
                    name TEXT PRIMARY KEY NOT NULL,
                    value BLOB NOT NULL,
                    created_at INTEGER NOT NULL
                );
                """)
        }
        migrator.registerMigration("v6-conversations") { db in
            // conversations.md 5, 8, 9, 10. A route keeps its unsend token hash for its retention (NULL: none). Route
            // states gain 3 scheduled (ciphertext in scheduled_envelopes, not in the queue), 4 purged by an unsend and
            // 5 cancelled. A scheduled envelope's row goes at release, cancel or unsend.
            try db.execute(sql: """
                ALTER TABLE envelope_routes ADD COLUMN unsend_token_hash BLOB;
                CREATE INDEX envelope_routes_by_unsend ON envelope_routes(sender_handle, unsend_token_hash)
                    WHERE unsend_token_hash IS NOT NULL;
                CREATE TABLE scheduled_envelopes (
                    envelope_id BLOB PRIMARY KEY NOT NULL,
                    sender_handle TEXT NOT NULL,
                    not_before INTEGER NOT NULL,
                    ttl_ms INTEGER NOT NULL,
                    urgency INTEGER NOT NULL,
                    cancel_token_hash BLOB NOT NULL,
                    ciphertext BLOB NOT NULL
                );
                CREATE INDEX scheduled_by_release ON scheduled_envelopes(not_before);
                CREATE INDEX scheduled_by_cancel ON scheduled_envelopes(sender_handle, cancel_token_hash);
                CREATE TABLE block_lists (
                    handle TEXT NOT NULL,
                    blocked_handle TEXT NOT NULL,
                    PRIMARY KEY (handle, blocked_handle)
                );
                CREATE INDEX block_lists_by_blocked ON block_lists(blocked_handle);
                CREATE TABLE reports (
                    report_id BLOB PRIMARY KEY NOT NULL,
                    reporter_handle TEXT NOT NULL,
                    reporter_device_id INTEGER NOT NULL,
                    received_at INTEGER NOT NULL,
                    report BLOB NOT NULL,
                    signature BLOB NOT NULL
                );
                """)
        }
        migrator.registerMigration("v7-blobs", migrate: SQLiteRelayStore.migrateBlobs)
        return migrator
    }()

    private static let kindEnvelope = 1
    private static let kindReceipt = 2
    private static let stateQueued = 0
    private static let stateDelivered = 1
    private static let stateExpired = 2
    private static let stateScheduled = 3
    private static let statePurged = 4
    private static let stateCancelled = 5
    /// To an account that blocks the sender (conversations.md 9): stored like any other route (checks, coverage,
    /// idempotency, unsend and cancel hashes) but without ciphertext; never delivered, pushed or receipted. A scheduled
    /// one keeps an empty `scheduled_envelopes` row until its release time, so that CancelScheduled and the scheduled
    /// limit count it.
    private static let stateDropped = 6

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
                // A deleted account's handle stays taken until its tombstone is purged (devices.md section 8).
                if try Bool.fetchOne(db, sql: "SELECT 1 FROM account_tombstones WHERE handle = ?", arguments: [handle]) == true {
                    throw StoreError(.handleTaken, "deleted account")
                }
                try db.execute(
                    sql: """
                        INSERT INTO accounts (handle, account_identity_key, recovery_code_hash, next_device_id, origin_device_id, created_at)
                        VALUES (?, ?, ?, 2, 1, ?)
                        """,
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
                        createdAtMs: row["created_at"], seenReceiptsOff: row["seen_receipts_off"])
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
                            AND d.device_id = a.origin_device_id
                            AND (SELECT COUNT(*) FROM devices o WHERE o.handle = d.handle) = 1
                            AND NOT EXISTS (SELECT 1 FROM device_list_entries e WHERE e.handle = d.handle AND e.device_id != d.device_id)
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
                // conversations.md 8: what the removed devices scheduled can no longer be cancelled: deleted.
                try Self.cancelScheduled(db, sentBy: "r.sender_handle = ?", [handle])
                // Undelivered (queued or scheduled) envelopes addressed to the removed devices: expired, sender told.
                let routes = try Row.fetchAll(
                    db, sql: "SELECT * FROM envelope_routes WHERE recipient_handle = ? AND state IN (?, ?)",
                    arguments: [handle, Self.stateQueued, Self.stateScheduled])
                for route in routes {
                    let sender = DeviceAddress(handle: route["sender_handle"], deviceID: UInt32(route["sender_device_id"] as Int64))
                    let recipient = DeviceAddress(handle: handle, deviceID: UInt32(route["recipient_device_id"] as Int64))
                    let envelopeID: Data = route["envelope_id"]
                    try db.execute(sql: "UPDATE envelope_routes SET state = ? WHERE envelope_id = ?", arguments: [Self.stateExpired, envelopeID])
                    try db.execute(sql: "DELETE FROM scheduled_envelopes WHERE envelope_id = ?", arguments: [envelopeID])
                    if sender.handle != handle,
                        try self.queueReceipt(db, to: sender, envelopeID: envelopeID, kind: .expired, recipient: recipient, atMs: atMs, expiresAtMs: receiptExpiresAtMs)
                    {
                        notified.insert(sender)
                    }
                }
                try db.execute(sql: "DELETE FROM queue WHERE handle = ?", arguments: [handle])
                try db.execute(sql: "DELETE FROM devices WHERE handle = ?", arguments: [handle])
                // Lists are per account identity key (devices.md section 7): the new key starts at version 1.
                try Self.deleteDeviceList(db, handle)
                try db.execute(sql: "DELETE FROM removed_device_keys WHERE handle = ?", arguments: [handle])
                try db.execute(
                    sql: """
                        UPDATE accounts SET account_identity_key = ?, recovery_code_hash = ?, next_device_id = ?, origin_device_id = ?
                        WHERE handle = ?
                        """,
                    arguments: [accountIdentityKey, newRecoveryCodeHash, newDeviceID + 1, newDeviceID, handle])
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

    /// Implements `RelayStore.takePreKeyBundle(handle:)`: every current device (no list restriction).
    public func takePreKeyBundle(handle: String) async throws -> PreKeyBundleRecord? {
        try await takeBundle(handle: handle, deviceIDs: nil, listedOnly: false)
    }

    /// Implements `RelayStore.takePreKeyBundle(handle:deviceIDs:)` in one SQLite write transaction.
    public func takePreKeyBundle(handle: String, deviceIDs: [UInt32]?) async throws -> PreKeyBundleRecord? {
        try await takeBundle(handle: handle, deviceIDs: deviceIDs, listedOnly: true)
    }

    private func takeBundle(handle: String, deviceIDs: [UInt32]?, listedOnly: Bool) async throws -> PreKeyBundleRecord? {
        try await run {
            try await self.pool.write { db in
                guard let key = try Data.fetchOne(db, sql: "SELECT account_identity_key FROM accounts WHERE handle = ?", arguments: [handle])
                else { return nil }
                let list = try Self.deviceList(db, handle)
                var devices = try Row.fetchAll(db, sql: "SELECT * FROM devices WHERE handle = ? ORDER BY device_id", arguments: [handle])
                    .map(Self.deviceRecord)
                if listedOnly, list != nil {
                    let listed = try Self.listedDeviceIDs(db, handle)
                    devices = devices.filter { listed.contains($0.address.deviceID) }
                }
                if let deviceIDs {
                    let wanted = Set(deviceIDs)
                    devices = devices.filter { wanted.contains($0.address.deviceID) }
                }
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
                return PreKeyBundleRecord(handle: handle, accountIdentityKey: key, devices: entries, deviceList: list)
            }
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

    /// Implements `RelayStore.submit(…checkCoverage:)` (see its documentation for shapes, units and errors).
    ///
    /// Group commit: concurrent calls are batched into one write transaction (each in its own savepoint,
    /// so one caller's failure rolls back only its own batch), and each caller returns after the shared
    /// commit. Queue sequences are assigned in commit order (one writer, `AUTOINCREMENT`).
    public func submit(
        sender: DeviceAddress, envelopes: [EnvelopeSubmission], atMs: Int64, queueLimit: Int, checkCoverage: Bool
    ) async throws -> SubmitBatchOutcome {
        try await run {
            try await self.committer.perform { db in
                try self.submitInTransaction(
                    db, sender: sender, envelopes: envelopes, atMs: atMs, queueLimit: queueLimit, checkCoverage: checkCoverage)
            }
        }
    }

    private func submitInTransaction(
        _ db: Database, sender: DeviceAddress, envelopes: [EnvelopeSubmission], atMs: Int64, queueLimit: Int, checkCoverage: Bool
    ) throws -> SubmitBatchOutcome {
        // The sender may have been removed (recovery, removal) after it authenticated.
        guard try Self.deviceExists(db, sender) else { throw StoreError(.unknownDevice) }
        // Groups of this submit: a non-zero `group` number, or each group-0 envelope on its own.
        let groupKeys: [Int64] = envelopes.enumerated().map { index, envelope in
            envelope.group == 0 ? -1 - Int64(index) : Int64(envelope.group)
        }
        var existing: [Int: Row] = [:]
        for (index, envelope) in envelopes.enumerated() {
            existing[index] = try Row.fetchOne(db, sql: "SELECT * FROM envelope_routes WHERE envelope_id = ?", arguments: [envelope.envelopeID])
        }
        func isSameRoute(_ route: Row, _ envelope: EnvelopeSubmission) -> Bool {
            (route["sender_handle"] as String) == sender.handle
                && (route["sender_device_id"] as Int64) == Int64(sender.deviceID)
                && (route["recipient_handle"] as String) == envelope.recipient.handle
                && (route["recipient_device_id"] as Int64) == Int64(envelope.recipient.deviceID)
        }
        if checkCoverage {
            let mismatches = try coverageMismatches(db, sender: sender, envelopes: envelopes, groupKeys: groupKeys) { index in
                existing[index].map { isSameRoute($0, envelopes[index]) } ?? false
            }
            if !mismatches.isEmpty { return .mismatched(mismatches) }
        }
        // A group keeps the relay group id of any of its envelopes already stored (a partial resubmission).
        var groupIDs: [Int64: Data] = [:]
        for (index, envelope) in envelopes.enumerated() {
            if let route = existing[index], isSameRoute(route, envelope), groupIDs[groupKeys[index]] == nil {
                groupIDs[groupKeys[index]] = (route["group_id"] as Data?) ?? envelope.envelopeID
            }
        }
        // A non-zero group with a new envelope to a handle that does not exist (or was deleted) is refused whole:
        // its copies for the sender's other devices must not show a message its recipient never got.
        var refusedGroups = Set<Int64>()
        for (index, envelope) in envelopes.enumerated() where envelope.group != 0 && existing[index] == nil {
            if try Bool.fetchOne(db, sql: "SELECT 1 FROM accounts WHERE handle = ?", arguments: [envelope.recipient.handle]) != true {
                refusedGroups.insert(groupKeys[index])
            }
        }
        var outcomes: [SubmissionOutcome] = []
        outcomes.reserveCapacity(envelopes.count)
        var queued: [DeviceAddress: Int] = [:]
        var scheduledCount: Int?
        var unsendCounts: [Data: Int] = [:]
        var currentByHandle: [String: Set<UInt32>] = [:]
        for (index, envelope) in envelopes.enumerated() {
            if let route = try existing[index] ?? Row.fetchOne(
                db, sql: "SELECT * FROM envelope_routes WHERE envelope_id = ?", arguments: [envelope.envelopeID])
            {
                if !isSameRoute(route, envelope) {
                    outcomes.append(.rejected(.envelopeIDConflict))
                } else if try (route["state"] as Int) == Self.stateScheduled
                    || ((route["state"] as Int) == Self.stateDropped
                        && Bool.fetchOne(db, sql: "SELECT 1 FROM scheduled_envelopes WHERE envelope_id = ?", arguments: [envelope.envelopeID]) == true)
                {
                    outcomes.append(.scheduled(acceptedAtMs: route["accepted_at"], expiresAtMs: route["expires_at"], newlyScheduled: false))
                } else {
                    outcomes.append(.accepted(acceptedAtMs: route["accepted_at"], expiresAtMs: route["expires_at"], newlyQueued: false))
                }
                continue
            }
            if refusedGroups.contains(groupKeys[index]) {
                outcomes.append(.rejected(.unknownRecipient))
                continue
            }
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM accounts WHERE handle = ?", arguments: [envelope.recipient.handle]) == true else {
                outcomes.append(.rejected(.unknownRecipient))
                continue
            }
            // Current, not merely stored: a device the account's list dropped is stale (relay.md "Submit"),
            // also under selected_devices where no coverage check ran.
            let currentIDs: Set<UInt32>
            if let known = currentByHandle[envelope.recipient.handle] {
                currentIDs = known
            } else {
                currentIDs = try Self.currentDeviceIDs(db, envelope.recipient.handle) ?? []
                currentByHandle[envelope.recipient.handle] = currentIDs
            }
            guard currentIDs.contains(envelope.recipient.deviceID) else {
                outcomes.append(.rejected(.staleDevice))
                continue
            }
            let scheduled = envelope.notBeforeMs > atMs
            if scheduled {
                let count = try scheduledCount ?? Int.fetchOne(
                    db, sql: "SELECT COUNT(*) FROM scheduled_envelopes WHERE sender_handle = ?", arguments: [sender.handle]) ?? 0
                guard count < ConversationStoreLimits.maxScheduledPerAccount else {
                    outcomes.append(.rejected(.queueFull))
                    continue
                }
                scheduledCount = count + 1
            }
            // Scheduled envelopes are not queued: they count against the account's scheduled limit only.
            let depth = try scheduled ? 0 : (queued[envelope.recipient] ?? Int.fetchOne(
                db, sql: "SELECT envelopes FROM queue_depths WHERE handle = ? AND device_id = ?",
                arguments: [envelope.recipient.handle, Int64(envelope.recipient.deviceID)]) ?? 0)
            guard depth < queueLimit else {
                outcomes.append(.rejected(.queueFull))
                continue
            }
            // conversations.md 5: one unsend token hash matches at most MAX envelopes, so an UnsendResult fits a frame.
            if !envelope.unsendTokenHash.isEmpty {
                let key = envelope.unsendTokenHash
                let count = try unsendCounts[key] ?? Int.fetchOne(
                    db, sql: "SELECT COUNT(*) FROM envelope_routes WHERE sender_handle = ? AND unsend_token_hash = ?",
                    arguments: [sender.handle, key]) ?? 0
                guard count < ConversationStoreLimits.maxEnvelopesPerUnsendToken else {
                    outcomes.append(.rejected(.unsendTokenFull))
                    continue
                }
                unsendCounts[key] = count + 1
            }
            // conversations.md 9: to an account that blocks the sender, a route in the dropped state and no ciphertext.
            let dropped = try envelope.recipient.handle != sender.handle && Bool.fetchOne(
                db, sql: "SELECT 1 FROM block_lists WHERE handle = ? AND blocked_handle = ?",
                arguments: [envelope.recipient.handle, sender.handle]) == true
            if !scheduled && !dropped { queued[envelope.recipient] = depth + 1 }
            let groupID: Data
            if let known = groupIDs[groupKeys[index]] {
                groupID = known
            } else {
                groupID = makeID()
                groupIDs[groupKeys[index]] = groupID
            }
            try db.execute(
                sql: """
                    INSERT INTO envelope_routes (envelope_id, sender_handle, sender_device_id, recipient_handle, recipient_device_id,
                        accepted_at, expires_at, route_expires_at, state, group_id, unsend_token_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    envelope.envelopeID, sender.handle, Int64(sender.deviceID), envelope.recipient.handle,
                    Int64(envelope.recipient.deviceID), atMs, envelope.expiresAtMs, envelope.routeExpiresAtMs,
                    dropped ? Self.stateDropped : scheduled ? Self.stateScheduled : Self.stateQueued, groupID,
                    envelope.unsendTokenHash.isEmpty ? nil : envelope.unsendTokenHash,
                ])
            if scheduled {
                try db.execute(
                    sql: """
                        INSERT INTO scheduled_envelopes (envelope_id, sender_handle, not_before, ttl_ms, urgency, cancel_token_hash, ciphertext)
                        VALUES (?, ?, ?, ?, ?, ?, CASE WHEN ? THEN zeroblob(0) ELSE ? END)
                        """,
                    arguments: [
                        envelope.envelopeID, sender.handle, envelope.notBeforeMs, envelope.ttlMs, envelope.urgency, envelope.cancelTokenHash,
                        dropped, dropped ? nil : envelope.ciphertext,
                    ])
                outcomes.append(.scheduled(acceptedAtMs: atMs, expiresAtMs: envelope.expiresAtMs, newlyScheduled: true))
                continue
            }
            if dropped {
                // Nothing queued, so nothing wakes, pushes or receipts.
                outcomes.append(.accepted(acceptedAtMs: atMs, expiresAtMs: envelope.expiresAtMs, newlyQueued: false))
                continue
            }
            try db.execute(
                sql: "INSERT INTO queue (handle, device_id, kind, envelope_id, ciphertext, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [
                    envelope.recipient.handle, Int64(envelope.recipient.deviceID), Self.kindEnvelope, envelope.envelopeID,
                    envelope.ciphertext, envelope.expiresAtMs,
                ])
            outcomes.append(.accepted(acceptedAtMs: atMs, expiresAtMs: envelope.expiresAtMs, newlyQueued: true))
        }
        return .stored(outcomes)
    }

    /// The coverage check of `relay.md` "Submit": per group not entirely resubmitted, the addressed devices
    /// of each known handle against its current devices, and the sender's own other current devices.
    private func coverageMismatches(
        _ db: Database, sender: DeviceAddress, envelopes: [EnvelopeSubmission], groupKeys: [Int64], alreadyStored: (Int) -> Bool
    ) throws -> [DeviceMismatchRecord] {
        var current: [String: Set<UInt32>?] = [:]
        func currentDevices(_ handle: String) throws -> Set<UInt32>? {
            if let known = current[handle] { return known }
            let found = try Self.currentDeviceIDs(db, handle)
            current[handle] = .some(found)
            return found
        }
        var indicesByGroup: [Int64: [Int]] = [:]
        var groupOrder: [Int64] = []
        for (index, key) in groupKeys.enumerated() {
            if indicesByGroup[key] == nil { groupOrder.append(key) }
            indicesByGroup[key, default: []].append(index)
        }
        let senderOthers = (try currentDevices(sender.handle) ?? []).subtracting([sender.deviceID])
        var missing: [String: Set<UInt32>] = [:]
        var stale: [String: Set<UInt32>] = [:]
        for key in groupOrder {
            let indices = indicesByGroup[key] ?? []
            if indices.allSatisfy(alreadyStored) { continue }
            var addressed: [String: Set<UInt32>] = [:]
            for index in indices {
                let recipient = envelopes[index].recipient
                // Unknown handles keep their per-envelope UNKNOWN_RECIPIENT.
                guard try currentDevices(recipient.handle) != nil else { continue }
                addressed[recipient.handle, default: []].insert(recipient.deviceID)
            }
            if !senderOthers.isEmpty { addressed[sender.handle, default: []].formUnion([]) }
            for (handle, devices) in addressed {
                var expected = try currentDevices(handle) ?? []
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
                var routes: [Row] = []
                for envelopeID in envelopeIDs {
                    guard let route = try Row.fetchOne(
                        db,
                        sql: "SELECT * FROM envelope_routes WHERE envelope_id = ? AND recipient_handle = ? AND recipient_device_id = ?",
                        arguments: [envelopeID, device.handle, Int64(device.deviceID)])
                    else {
                        // Never queued for this device (or its route is past retention): refuse before applying anything.
                        var error = StoreError(.unknownEnvelope, "an acknowledged envelope was never queued for this device")
                        error.envelopeID = envelopeID
                        throw error
                    }
                    routes.append(route)
                }
                var notified = Set<DeviceAddress>()
                for route in routes where (route["state"] as Int) == Self.stateQueued {
                    let envelopeID: Data = route["envelope_id"]
                    try db.execute(
                        sql: "DELETE FROM queue WHERE envelope_id = ? AND kind = ? AND handle = ? AND device_id = ?",
                        arguments: [envelopeID, Self.kindEnvelope, device.handle, Int64(device.deviceID)])
                    try db.execute(sql: "UPDATE envelope_routes SET state = ? WHERE envelope_id = ?", arguments: [Self.stateDelivered, envelopeID])
                    try notified.formUnion(self.queueGroupReceipt(db, route: route, kind: .delivered, reader: device, atMs: atMs, expiresAtMs: receiptExpiresAtMs))
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
                // A reader who turned seen receipts off never emits one, from any device.
                if try Bool.fetchOne(db, sql: "SELECT seen_receipts_off FROM accounts WHERE handle = ?", arguments: [device.handle]) ?? true {
                    return []
                }
                var notified = Set<DeviceAddress>()
                for envelopeID in envelopeIDs {
                    guard let route = try Row.fetchOne(
                        db,
                        // Never for an envelope the device cannot have received (scheduled, purged, cancelled, dropped).
                        sql: """
                            SELECT * FROM envelope_routes WHERE envelope_id = ? AND recipient_handle = ? AND recipient_device_id = ?
                            AND seen_reported = 0 AND state IN (?, ?, ?)
                            """,
                        arguments: [envelopeID, device.handle, Int64(device.deviceID), Self.stateQueued, Self.stateDelivered, Self.stateExpired])
                    else { continue }
                    try db.execute(sql: "UPDATE envelope_routes SET seen_reported = 1 WHERE envelope_id = ?", arguments: [envelopeID])
                    try notified.formUnion(self.queueGroupReceipt(db, route: route, kind: .seen, reader: device, atMs: atMs, expiresAtMs: receiptExpiresAtMs))
                }
                return notified
            }
        }
    }

    /// Receipts across devices (`relay.md`): the first `kind` event of the reader's handle on the route's
    /// group queues one receipt to the submitting device (about `route`'s envelope) and one to every other
    /// device of the sender's handle holding a copy in the group (about its own copy). Nothing when the reader
    /// belongs to the sender's handle, or when the (group, handle, kind) receipt went out before.
    private func queueGroupReceipt(
        _ db: Database, route: Row, kind: ReceiptKind, reader: DeviceAddress, atMs: Int64, expiresAtMs: Int64
    ) throws -> Set<DeviceAddress> {
        let sender = DeviceAddress(handle: route["sender_handle"], deviceID: UInt32(route["sender_device_id"] as Int64))
        guard reader.handle != sender.handle else { return [] }
        let envelopeID: Data = route["envelope_id"]
        let groupID: Data = (route["group_id"] as Data?) ?? envelopeID
        try db.execute(
            sql: "INSERT OR IGNORE INTO group_receipts (group_id, recipient_handle, kind, route_expires_at) VALUES (?, ?, ?, ?)",
            arguments: [groupID, reader.handle, kind.rawValue, route["route_expires_at"] as Int64])
        guard db.changesCount == 1 else { return [] }
        var notified = Set<DeviceAddress>()
        if try queueReceipt(db, to: sender, envelopeID: envelopeID, kind: kind, recipient: reader, atMs: atMs, expiresAtMs: expiresAtMs) {
            notified.insert(sender)
        }
        if route["group_id"] as Data? != nil {
            let copies = try Row.fetchAll(
                db,
                sql: """
                    SELECT envelope_id, recipient_device_id FROM envelope_routes
                    WHERE group_id = ? AND recipient_handle = ? AND recipient_device_id != ? AND sender_handle = ? AND sender_device_id = ?
                    """,
                arguments: [groupID, sender.handle, Int64(sender.deviceID), sender.handle, Int64(sender.deviceID)])
            for copy in copies {
                let own = DeviceAddress(handle: sender.handle, deviceID: UInt32(copy["recipient_device_id"] as Int64))
                if try queueReceipt(db, to: own, envelopeID: copy["envelope_id"], kind: kind, recipient: reader, atMs: atMs, expiresAtMs: expiresAtMs) {
                    notified.insert(own)
                }
            }
        }
        return notified
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
                try db.execute(sql: "DELETE FROM group_receipts WHERE route_expires_at <= ?", arguments: [nowMs])
                try db.execute(sql: "DELETE FROM account_tombstones WHERE purge_at <= ?", arguments: [nowMs])
                let purgedTombstones = db.changesCount
                try db.execute(sql: "DELETE FROM link_messages WHERE expires_at <= ?", arguments: [nowMs])
                let purgedLinkMessages = db.changesCount
                return SweepResult(
                    expiredEnvelopes: expired.count, notifiedSenders: notified, purgedReceipts: purgedReceipts, purgedRoutes: purgedRoutes,
                    purgedTombstones: purgedTombstones, purgedLinkMessages: purgedLinkMessages)
            }
        }
    }

    // MARK: Multi-device accounts (documented on the protocol)

    /// Implements `RelayStore.registerDevice` in one SQLite transaction.
    public func registerDevice(handle: String, accountIdentityKey: Data, device: NewDevice, atMs: Int64, maxDevices: Int) async throws -> UInt32 {
        try await run {
            try await self.pool.write { db in
                guard let account = try Row.fetchOne(
                    db, sql: "SELECT account_identity_key, next_device_id FROM accounts WHERE handle = ?", arguments: [handle])
                else { throw StoreError(.unknownRecipient) }
                guard (account["account_identity_key"] as Data) == accountIdentityKey else { throw StoreError(.accountKeyChanged) }
                // The same device key again: a retry whose answer was lost.
                if let existing = try Int64.fetchOne(
                    db, sql: "SELECT device_id FROM devices WHERE handle = ? AND device_identity_key = ?",
                    arguments: [handle, device.deviceIdentityKey])
                {
                    return UInt32(existing)
                }
                if try Bool.fetchOne(
                    db, sql: "SELECT 1 FROM removed_device_keys WHERE handle = ? AND device_identity_key = ?",
                    arguments: [handle, device.deviceIdentityKey]) == true
                {
                    throw StoreError(.deviceRemoved)
                }
                let count = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM devices WHERE handle = ?", arguments: [handle]) ?? 0
                guard count < maxDevices else { throw StoreError(.tooManyDevices) }
                let deviceID: Int64 = account["next_device_id"]
                try db.execute(sql: "UPDATE accounts SET next_device_id = ? WHERE handle = ?", arguments: [deviceID + 1, handle])
                try Self.insertDevice(db, address: DeviceAddress(handle: handle, deviceID: UInt32(deviceID)), device: device, atMs: atMs)
                return UInt32(deviceID)
            }
        }
    }

    /// Implements `RelayStore.devices(handle:)`.
    public func devices(handle: String) async throws -> [DeviceRecord] {
        try await run {
            try await self.pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM devices WHERE handle = ? ORDER BY device_id", arguments: [handle]).map(Self.deviceRecord)
            }
        }
    }

    /// Implements `RelayStore.deviceList(handle:)`.
    public func deviceList(handle: String) async throws -> StoredDeviceList? {
        try await run { try await self.pool.read { db in try Self.deviceList(db, handle) } }
    }

    /// Implements `RelayStore.publishDeviceList` in one SQLite transaction.
    public func publishDeviceList(
        handle: String, accountIdentityKey: Data, list: StoredDeviceList, entries: [DeviceListEntry], publisher: DeviceAddress,
        removeDeviceIDs: [UInt32], atMs: Int64, receiptExpiresAtMs: Int64
    ) async throws -> DeviceRemovalResult {
        try await run {
            try await self.pool.write { db in
                func reject(_ why: String) -> StoreError { StoreError(.deviceListRejected, why) }
                guard let key = try Data.fetchOne(db, sql: "SELECT account_identity_key FROM accounts WHERE handle = ?", arguments: [handle])
                else { throw reject("no such handle") }
                guard key == accountIdentityKey else { throw reject("the list is not signed by the handle's current account identity key") }
                if let stored = try Self.deviceList(db, handle), list.version <= stored.version {
                    throw reject("version \(list.version) is not greater than the stored list's \(stored.version)")
                }
                let devices = try Row.fetchAll(db, sql: "SELECT device_id, device_identity_key FROM devices WHERE handle = ?", arguments: [handle])
                var current: [UInt32: Data] = [:]
                for row in devices { current[UInt32(row["device_id"] as Int64)] = row["device_identity_key"] }
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
                try Self.deleteDeviceList(db, handle)
                try db.execute(
                    sql: "INSERT INTO device_lists (handle, payload, signature, version) VALUES (?, ?, ?, ?)",
                    arguments: [handle, list.payload, list.signature, Int64(bitPattern: list.version)])
                for entry in entries {
                    try db.execute(
                        sql: "INSERT INTO device_list_entries (handle, device_id, device_identity_key) VALUES (?, ?, ?)",
                        arguments: [handle, Int64(entry.deviceID), entry.deviceIdentityKey])
                }
                let removed = Array(Set(removeDeviceIDs)).sorted()
                for id in removed {
                    try db.execute(
                        sql: "INSERT OR IGNORE INTO removed_device_keys (handle, device_identity_key) VALUES (?, ?)",
                        arguments: [handle, current[id]])
                }
                let notified = try self.removeDevices(db, handle: handle, deviceIDs: removed, notifyOwnHandle: true, atMs: atMs, receiptExpiresAtMs: receiptExpiresAtMs)
                return DeviceRemovalResult(removedDeviceIDs: removed, notifiedSenders: notified)
            }
        }
    }

    /// Implements `RelayStore.deleteAccount` in one SQLite transaction.
    public func deleteAccount(handle: String, accountIdentityKey: Data, atMs: Int64, tombstoneUntilMs: Int64, receiptExpiresAtMs: Int64) async throws
        -> DeviceRemovalResult
    {
        try await run {
            try await self.pool.write { db in
                guard let key = try Data.fetchOne(db, sql: "SELECT account_identity_key FROM accounts WHERE handle = ?", arguments: [handle])
                else { throw StoreError(.unknownRecipient) }
                guard key == accountIdentityKey else { throw StoreError(.accountKeyChanged) }
                let ids = try Int64.fetchAll(db, sql: "SELECT device_id FROM devices WHERE handle = ? ORDER BY device_id", arguments: [handle])
                    .map { UInt32($0) }
                let notified = try self.removeDevices(
                    db, handle: handle, deviceIDs: ids, notifyOwnHandle: false, atMs: atMs, receiptExpiresAtMs: receiptExpiresAtMs)
                // Devices (and with them prekeys), the list, settings and the recovery code hash go with the account row.
                try db.execute(sql: "DELETE FROM accounts WHERE handle = ?", arguments: [handle])
                try db.execute(sql: "DELETE FROM queue WHERE handle = ?", arguments: [handle])
                // conversations.md: the account's block list and the envelopes it scheduled go with it.
                try db.execute(sql: "DELETE FROM block_lists WHERE handle = ?", arguments: [handle])
                try db.execute(
                    sql: """
                        UPDATE envelope_routes SET state = \(Self.stateCancelled)
                        WHERE envelope_id IN (SELECT envelope_id FROM scheduled_envelopes WHERE sender_handle = ?)
                        """,
                    arguments: [handle])
                try db.execute(sql: "DELETE FROM scheduled_envelopes WHERE sender_handle = ?", arguments: [handle])
                try db.execute(
                    sql: "INSERT OR REPLACE INTO account_tombstones (handle, deleted_at, purge_at) VALUES (?, ?, ?)",
                    arguments: [handle, atMs, tombstoneUntilMs])
                return DeviceRemovalResult(removedDeviceIDs: ids, notifiedSenders: notified)
            }
        }
    }

    /// Implements `RelayStore.setSeenReceiptsOff`.
    public func setSeenReceiptsOff(handle: String, _ off: Bool) async throws {
        try await run {
            try await self.pool.write { db in
                try db.execute(sql: "UPDATE accounts SET seen_receipts_off = ? WHERE handle = ?", arguments: [off, handle])
                guard db.changesCount == 1 else { throw StoreError(.unknownRecipient) }
            }
        }
    }

    /// Implements `RelayStore.putLinkMessage` in one SQLite transaction.
    public func putLinkMessage(rendezvousID: Data, slot: UInt32, message: Data, nowMs: Int64, expiresAtMs: Int64) async throws {
        try await run {
            try await self.pool.write { db in
                let arguments: StatementArguments = [rendezvousID, Int64(slot)]
                // An expired slot the sweeper has not purged yet counts as never written.
                try db.execute(sql: "DELETE FROM link_messages WHERE rendezvous_id = ? AND slot = ? AND expires_at <= ?", arguments: arguments + [nowMs])
                if try Bool.fetchOne(db, sql: "SELECT 1 FROM link_messages WHERE rendezvous_id = ? AND slot = ?", arguments: arguments) == true {
                    throw StoreError(.linkSlotUsed)
                }
                try db.execute(
                    sql: "INSERT INTO link_messages (rendezvous_id, slot, message, expires_at) VALUES (?, ?, ?, ?)",
                    arguments: arguments + [message, expiresAtMs])
            }
        }
    }

    /// Implements `RelayStore.takeLinkMessage` in one SQLite transaction.
    public func takeLinkMessage(rendezvousID: Data, slot: UInt32, nowMs: Int64) async throws -> Data? {
        try await run {
            try await self.pool.write { db -> Data? in
                let arguments: StatementArguments = [rendezvousID, Int64(slot), nowMs]
                guard let message = try Data.fetchOne(
                    db, sql: "SELECT message FROM link_messages WHERE rendezvous_id = ? AND slot = ? AND expires_at > ? AND message IS NOT NULL",
                    arguments: arguments)
                else { return nil }
                // Read once: the row stays (without the message) so the slot cannot be written again.
                try db.execute(sql: "UPDATE link_messages SET message = NULL WHERE rendezvous_id = ? AND slot = ? AND expires_at > ?", arguments: arguments)
                return message
            }
        }
    }

    /// Deletes `deviceIDs` of `handle` with their prekeys and queues; their queued envelopes become expired
    /// with an `expired` receipt to each sender device that is still current (and, unless `notifyOwnHandle`,
    /// not of `handle`). Returns the senders notified.
    private func removeDevices(
        _ db: Database, handle: String, deviceIDs: [UInt32], notifyOwnHandle: Bool, atMs: Int64, receiptExpiresAtMs: Int64
    ) throws -> Set<DeviceAddress> {
        var routes: [Row] = []
        for id in deviceIDs {
            let arguments: StatementArguments = [handle, Int64(id)]
            // conversations.md 8: what the device scheduled can no longer be cancelled (its tokens were on it).
            try Self.cancelScheduled(db, sentBy: "r.sender_handle = ? AND r.sender_device_id = ?", arguments)
            routes += try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM envelope_routes WHERE recipient_handle = ? AND recipient_device_id = ?
                    AND state IN (\(Self.stateQueued), \(Self.stateScheduled))
                    """,
                arguments: arguments)
            try db.execute(sql: "DELETE FROM queue WHERE handle = ? AND device_id = ?", arguments: arguments)
            try db.execute(sql: "DELETE FROM devices WHERE handle = ? AND device_id = ?", arguments: arguments)
        }
        var notified = Set<DeviceAddress>()
        for route in routes {
            let envelopeID: Data = route["envelope_id"]
            let sender = DeviceAddress(handle: route["sender_handle"], deviceID: UInt32(route["sender_device_id"] as Int64))
            let recipient = DeviceAddress(handle: handle, deviceID: UInt32(route["recipient_device_id"] as Int64))
            try db.execute(sql: "UPDATE envelope_routes SET state = ? WHERE envelope_id = ?", arguments: [Self.stateExpired, envelopeID])
            try db.execute(sql: "DELETE FROM scheduled_envelopes WHERE envelope_id = ?", arguments: [envelopeID])
            guard notifyOwnHandle || sender.handle != handle else { continue }
            if try queueReceipt(db, to: sender, envelopeID: envelopeID, kind: .expired, recipient: recipient, atMs: atMs, expiresAtMs: receiptExpiresAtMs) {
                notified.insert(sender)
            }
        }
        return notified
    }

    private static func deviceList(_ db: Database, _ handle: String) throws -> StoredDeviceList? {
        try Row.fetchOne(db, sql: "SELECT payload, signature, version FROM device_lists WHERE handle = ?", arguments: [handle]).map { row in
            StoredDeviceList(payload: row["payload"], signature: row["signature"], version: UInt64(bitPattern: row["version"] as Int64))
        }
    }

    private static func deleteDeviceList(_ db: Database, _ handle: String) throws {
        try db.execute(sql: "DELETE FROM device_lists WHERE handle = ?", arguments: [handle])
        try db.execute(sql: "DELETE FROM device_list_entries WHERE handle = ?", arguments: [handle])
    }

    private static func listedDeviceIDs(_ db: Database, _ handle: String) throws -> Set<UInt32> {
        Set(try Int64.fetchAll(db, sql: "SELECT device_id FROM device_list_entries WHERE handle = ?", arguments: [handle]).map { UInt32($0) })
    }

    /// The current devices of `handle` in the sense of `relay.md` "Submit": the listed ones when a list is
    /// stored, else every device; nil for an unknown handle.
    private static func currentDeviceIDs(_ db: Database, _ handle: String) throws -> Set<UInt32>? {
        guard try Bool.fetchOne(db, sql: "SELECT 1 FROM accounts WHERE handle = ?", arguments: [handle]) == true else { return nil }
        let all = Set(try Int64.fetchAll(db, sql: "SELECT device_id FROM devices WHERE handle = ?", arguments: [handle]).map { UInt32($0) })
        guard try deviceList(db, handle) != nil else { return all }
        return all.intersection(try listedDeviceIDs(db, handle))
    }

    // MARK: Push endpoints (documented on `PushEndpointStore`)

    /// Implements `PushEndpointStore.setPushEndpoint` in one SQLite transaction.
    public func setPushEndpoint(device: DeviceAddress, _ endpoint: StoredPushEndpoint) async throws -> StoredPushEndpoint {
        guard let address = endpoint.endpoint else { throw StoreError(.corrupt, "a push endpoint to set needs an endpoint") }
        return try await run {
            try await self.pool.write { db in
                guard try Self.deviceExists(db, device) else { throw StoreError(.unknownDevice) }
                let arguments: StatementArguments = [device.handle, Int64(device.deviceID)]
                if let current = try Self.pushEndpoint(db, device), current.isLive, current.provider == endpoint.provider,
                    current.endpoint == address
                {
                    // The same endpoint again: only the registration time (and the keys) change (push.md 4).
                    try db.execute(
                        sql: "UPDATE push_endpoints SET registered_at = ?, p256dh = ?, auth_secret = ?, apns_background = ? WHERE handle = ? AND device_id = ?",
                        arguments: [endpoint.registeredAtMs, endpoint.p256dh, endpoint.authSecret, endpoint.apnsBackground] + arguments)
                } else {
                    try db.execute(
                        sql: """
                            INSERT OR REPLACE INTO push_endpoints (handle, device_id, provider, endpoint, p256dh, auth_secret, apns_background, registered_at)
                            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                            """,
                        arguments: arguments + [
                            endpoint.provider, address, endpoint.p256dh, endpoint.authSecret, endpoint.apnsBackground, endpoint.registeredAtMs,
                        ])
                }
                guard let stored = try Self.pushEndpoint(db, device) else { throw StoreError(.corrupt, "push endpoint vanished") }
                return stored
            }
        }
    }

    /// Implements `PushEndpointStore.removePushEndpoint`.
    public func removePushEndpoint(device: DeviceAddress) async throws {
        try await run {
            try await self.pool.write { db in
                try db.execute(sql: "DELETE FROM push_endpoints WHERE handle = ? AND device_id = ?", arguments: [device.handle, Int64(device.deviceID)])
            }
        }
    }

    /// Implements `PushEndpointStore.pushEndpoint`.
    public func pushEndpoint(device: DeviceAddress) async throws -> StoredPushEndpoint? {
        try await run { try await self.pool.read { db in try Self.pushEndpoint(db, device) } }
    }

    /// Implements `PushEndpointStore.decideUrgentWake`: one conditional `UPDATE` opens the window, so the decision
    /// holds under concurrent writers (SQLite serialises them; the statement re-checks the window itself).
    public func decideUrgentWake(device: DeviceAddress, nowMs: Int64, windowUntilMs: Int64) async throws -> UrgentWakeDecision {
        try await run {
            try await self.pool.write { db in
                let arguments: StatementArguments = [device.handle, Int64(device.deviceID)]
                try db.execute(
                    sql: """
                        UPDATE push_endpoints SET urgent_window_until = ?
                        WHERE handle = ? AND device_id = ? AND endpoint IS NOT NULL AND dropped_at = 0 AND urgent_window_until <= ?
                        """,
                    arguments: [windowUntilMs] + arguments + [nowMs])
                let opened = db.changesCount == 1
                guard let current = try Self.pushEndpoint(db, device), current.isLive else { return .noEndpoint }
                return opened ? .wake(current) : .coalesced(provider: current.provider)
            }
        }
    }

    /// Implements `PushEndpointStore.closeUrgentWindow`.
    public func closeUrgentWindow(device: DeviceAddress, onlyIfUntilMs: Int64?) async throws {
        try await run {
            try await self.pool.write { db in
                let arguments: StatementArguments = [device.handle, Int64(device.deviceID)]
                if let until = onlyIfUntilMs {
                    try db.execute(
                        sql: "UPDATE push_endpoints SET urgent_window_until = 0 WHERE handle = ? AND device_id = ? AND urgent_window_until = ?",
                        arguments: arguments + [until])
                } else {
                    try db.execute(
                        sql: "UPDATE push_endpoints SET urgent_window_until = 0 WHERE handle = ? AND device_id = ? AND urgent_window_until != 0",
                        arguments: arguments)
                }
            }
        }
    }

    /// Implements `PushEndpointStore.recordPushAccepted`.
    public func recordPushAccepted(device: DeviceAddress, endpoint: String, atMs: Int64) async throws {
        try await run {
            try await self.pool.write { db in
                try db.execute(
                    sql: """
                        UPDATE push_endpoints SET last_wake_at = ?, wakes_sent = wakes_sent + 1, last_failure = ''
                        WHERE handle = ? AND device_id = ? AND endpoint = ?
                        """,
                    arguments: [atMs, device.handle, Int64(device.deviceID), endpoint])
            }
        }
    }

    /// Implements `PushEndpointStore.recordPushFailed`.
    public func recordPushFailed(device: DeviceAddress, endpoint: String, reason: String) async throws {
        try await run {
            try await self.pool.write { db in
                try db.execute(
                    sql: "UPDATE push_endpoints SET last_failure = ? WHERE handle = ? AND device_id = ? AND endpoint = ?",
                    arguments: [reason, device.handle, Int64(device.deviceID), endpoint])
            }
        }
    }

    /// Implements `PushEndpointStore.dropPushEndpoint`.
    public func dropPushEndpoint(device: DeviceAddress, endpoint: String, reason: String, atMs: Int64) async throws -> Bool {
        try await run {
            try await self.pool.write { db in
                try db.execute(
                    sql: """
                        UPDATE push_endpoints SET endpoint = NULL, p256dh = NULL, auth_secret = NULL, dropped_at = ?, last_failure = ?,
                            urgent_window_until = 0
                        WHERE handle = ? AND device_id = ? AND endpoint = ?
                        """,
                    arguments: [atMs, reason, device.handle, Int64(device.deviceID), endpoint])
                return db.changesCount == 1
            }
        }
    }

    /// Implements `PushEndpointStore.isEnvelopeQueued`.
    public func isEnvelopeQueued(envelopeID: Data, device: DeviceAddress, nowMs: Int64) async throws -> Bool {
        try await run {
            try await self.pool.read { db in
                try Bool.fetchOne(
                    db,
                    sql: "SELECT 1 FROM queue WHERE envelope_id = ? AND kind = ? AND handle = ? AND device_id = ? AND expires_at > ?",
                    arguments: [envelopeID, Self.kindEnvelope, device.handle, Int64(device.deviceID), nowMs]) == true
            }
        }
    }

    /// Implements `PushEndpointStore.relaySecret` with `INSERT OR IGNORE` then a read, in one transaction.
    public func relaySecret(named name: String, orStore candidate: Data, atMs: Int64) async throws -> Data {
        try await run {
            try await self.pool.write { db in
                try db.execute(
                    sql: "INSERT OR IGNORE INTO relay_secrets (name, value, created_at) VALUES (?, ?, ?)", arguments: [name, candidate, atMs])
                guard let value = try Data.fetchOne(db, sql: "SELECT value FROM relay_secrets WHERE name = ?", arguments: [name]) else {
                    throw StoreError(.corrupt, "relay secret \(name) vanished")
                }
                return value
            }
        }
    }

    private static func pushEndpoint(_ db: Database, _ device: DeviceAddress) throws -> StoredPushEndpoint? {
        try Row.fetchOne(
            db, sql: "SELECT * FROM push_endpoints WHERE handle = ? AND device_id = ?", arguments: [device.handle, Int64(device.deviceID)]
        ).map { row in
            StoredPushEndpoint(
                provider: row["provider"], endpoint: row["endpoint"], p256dh: (row["p256dh"] as Data?) ?? Data(),
                authSecret: (row["auth_secret"] as Data?) ?? Data(),
                apnsBackground: row["apns_background"], registeredAtMs: row["registered_at"], lastWakeAtMs: row["last_wake_at"],
                wakesSent: UInt64(max(0, row["wakes_sent"] as Int64)), lastFailure: row["last_failure"], droppedAtMs: row["dropped_at"],
                urgentWindowUntilMs: row["urgent_window_until"])
        }
    }

    // MARK: Conversations (documented on `ConversationStore`)

    /// Implements `ConversationStore.unsend` in one SQLite transaction.
    public func unsend(senderHandle: String, unsendTokenHash: Data, nowMs: Int64) async throws -> [UnsendRecord] {
        try await run {
            try await self.pool.write { db in
                let routes = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT envelope_id, recipient_handle, recipient_device_id, state, expires_at FROM envelope_routes
                        WHERE sender_handle = ? AND unsend_token_hash = ? ORDER BY recipient_handle, recipient_device_id, envelope_id
                        """,
                    arguments: [senderHandle, unsendTokenHash])
                return try routes.map { route in
                    let envelopeID: Data = route["envelope_id"]
                    let recipient = DeviceAddress(handle: route["recipient_handle"], deviceID: UInt32(route["recipient_device_id"] as Int64))
                    let state: UnsendEnvelopeState
                    switch route["state"] as Int {
                    case Self.stateQueued, Self.stateScheduled:
                        try db.execute(sql: "DELETE FROM queue WHERE envelope_id = ? AND kind = ?", arguments: [envelopeID, Self.kindEnvelope])
                        try db.execute(sql: "DELETE FROM scheduled_envelopes WHERE envelope_id = ?", arguments: [envelopeID])
                        try db.execute(sql: "UPDATE envelope_routes SET state = ? WHERE envelope_id = ?", arguments: [Self.statePurged, envelopeID])
                        state = .purged
                    case Self.statePurged, Self.stateCancelled: state = .purged
                    case Self.stateDropped:
                        // As a queued (or scheduled) one would answer: purged until its expiry, expired after it.
                        if (route["expires_at"] as Int64) <= nowMs {
                            state = .alreadyExpired
                        } else {
                            try db.execute(sql: "DELETE FROM scheduled_envelopes WHERE envelope_id = ?", arguments: [envelopeID])
                            try db.execute(sql: "UPDATE envelope_routes SET state = ? WHERE envelope_id = ?", arguments: [Self.statePurged, envelopeID])
                            state = .purged
                        }
                    case Self.stateDelivered: state = .alreadyDelivered
                    default: state = .alreadyExpired
                    }
                    return UnsendRecord(envelopeID: envelopeID, recipient: recipient, state: state)
                }
            }
        }
    }

    /// Implements `ConversationStore.cancelScheduled` in one SQLite transaction.
    public func cancelScheduled(senderHandle: String, cancelTokenHash: Data) async throws -> Int {
        try await run {
            try await self.pool.write { db in
                let ids = try Data.fetchAll(
                    db, sql: "SELECT envelope_id FROM scheduled_envelopes WHERE sender_handle = ? AND cancel_token_hash = ?",
                    arguments: [senderHandle, cancelTokenHash])
                for id in ids {
                    try db.execute(sql: "DELETE FROM scheduled_envelopes WHERE envelope_id = ?", arguments: [id])
                    try db.execute(sql: "UPDATE envelope_routes SET state = ? WHERE envelope_id = ?", arguments: [Self.stateCancelled, id])
                }
                return ids.count
            }
        }
    }

    /// Implements `ConversationStore.nextScheduledRelease`.
    public func nextScheduledRelease() async throws -> Int64? {
        try await run {
            try await self.pool.read { db in try Int64.fetchOne(db, sql: "SELECT MIN(not_before) FROM scheduled_envelopes") }
        }
    }

    /// Implements `ConversationStore.releaseScheduled` in one SQLite transaction of at most `batchSize` rows.
    public func releaseScheduled(
        nowMs: Int64, retentionMs: Int64, receiptExpiresAtMs: Int64, queueLimit: Int, batchSize: Int
    ) async throws -> ScheduledRelease {
        try await run {
            try await self.pool.write { db in
                // No ciphertext here: it is copied row by row with INSERT … SELECT, never all in memory. A LEFT JOIN
                // so that an orphan row (its route swept) is deleted too: what nextScheduledRelease sees always goes.
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT s.envelope_id, s.ttl_ms, s.urgency, r.sender_handle, r.sender_device_id,
                            r.recipient_handle, r.recipient_device_id, r.state
                        FROM scheduled_envelopes s LEFT JOIN envelope_routes r ON r.envelope_id = s.envelope_id
                        WHERE s.not_before <= ? ORDER BY s.not_before, s.rowid LIMIT ?
                        """,
                    arguments: [nowMs, max(1, batchSize)])
                var released: [ReleasedEnvelope] = []
                var expired = 0
                var dropped = 0
                var notified = Set<DeviceAddress>()
                var current: [String: Set<UInt32>] = [:]
                for row in rows {
                    let envelopeID: Data = row["envelope_id"]
                    let deleteScheduled = { try db.execute(sql: "DELETE FROM scheduled_envelopes WHERE envelope_id = ?", arguments: [envelopeID]) }
                    // An orphan, or a route no longer scheduled (dropped for a block): it only leaves the schedule.
                    guard let state = row["state"] as Int?, state == Self.stateScheduled else {
                        if (row["state"] as Int?) == Self.stateDropped { dropped += 1 }
                        try deleteScheduled()
                        continue
                    }
                    let recipient = DeviceAddress(handle: row["recipient_handle"], deviceID: UInt32(row["recipient_device_id"] as Int64))
                    let sender = DeviceAddress(handle: row["sender_handle"], deviceID: UInt32(row["sender_device_id"] as Int64))
                    // A block set since the submit drops it now, silently (conversations.md 9): no receipt.
                    if try Bool.fetchOne(
                        db, sql: "SELECT 1 FROM block_lists WHERE handle = ? AND blocked_handle = ?", arguments: [recipient.handle, sender.handle]) == true
                    {
                        try deleteScheduled()
                        try db.execute(sql: "UPDATE envelope_routes SET state = ? WHERE envelope_id = ?", arguments: [Self.stateDropped, envelopeID])
                        dropped += 1
                        continue
                    }
                    let devices: Set<UInt32>
                    if let known = current[recipient.handle] {
                        devices = known
                    } else {
                        devices = try Self.currentDeviceIDs(db, recipient.handle) ?? []
                        current[recipient.handle] = devices
                    }
                    // Gone, or its queue over the per-device limit (relay.maxQueuedEnvelopes): expired, as at submit.
                    let depth = try Int.fetchOne(
                        db, sql: "SELECT envelopes FROM queue_depths WHERE handle = ? AND device_id = ?",
                        arguments: [recipient.handle, Int64(recipient.deviceID)]) ?? 0
                    guard devices.contains(recipient.deviceID), depth < queueLimit else {
                        try deleteScheduled()
                        try db.execute(
                            sql: "UPDATE envelope_routes SET state = ?, accepted_at = ?, expires_at = ?, route_expires_at = ? WHERE envelope_id = ?",
                            arguments: [Self.stateExpired, nowMs, nowMs, nowMs + retentionMs, envelopeID])
                        expired += 1
                        if try self.queueReceipt(
                            db, to: sender, envelopeID: envelopeID, kind: .expired, recipient: recipient, atMs: nowMs, expiresAtMs: receiptExpiresAtMs)
                        {
                            notified.insert(sender)
                        }
                        continue
                    }
                    let ttl: Int64 = row["ttl_ms"]
                    let expiresAt = nowMs + min(ttl > 0 ? ttl : retentionMs, retentionMs)
                    try db.execute(
                        sql: "UPDATE envelope_routes SET state = ?, accepted_at = ?, expires_at = ?, route_expires_at = ? WHERE envelope_id = ?",
                        arguments: [Self.stateQueued, nowMs, expiresAt, nowMs + retentionMs, envelopeID])
                    try db.execute(
                        sql: """
                            INSERT INTO queue (handle, device_id, kind, envelope_id, ciphertext, expires_at)
                            SELECT ?, ?, ?, envelope_id, ciphertext, ? FROM scheduled_envelopes WHERE envelope_id = ?
                            """,
                        arguments: [recipient.handle, Int64(recipient.deviceID), Self.kindEnvelope, expiresAt, envelopeID])
                    try deleteScheduled()
                    released.append(ReleasedEnvelope(envelopeID: envelopeID, recipient: recipient, expiresAtMs: expiresAt, urgency: row["urgency"]))
                }
                return ScheduledRelease(released: released, expired: expired, notifiedSenders: notified, more: rows.count >= max(1, batchSize), dropped: dropped)
            }
        }
    }

    /// Implements `ConversationStore.blockList`.
    public func blockList(handle: String) async throws -> [String] {
        try await run {
            try await self.pool.read { db in
                try String.fetchAll(db, sql: "SELECT blocked_handle FROM block_lists WHERE handle = ? ORDER BY blocked_handle", arguments: [handle])
            }
        }
    }

    /// Implements `ConversationStore.updateBlockList` in one SQLite transaction.
    public func updateBlockList(handle: String, block: [String], unblock: [String], maxBlocked: Int) async throws -> [String] {
        try await run {
            try await self.pool.write { db in
                for blocked in unblock {
                    try db.execute(sql: "DELETE FROM block_lists WHERE handle = ? AND blocked_handle = ?", arguments: [handle, blocked])
                }
                for blocked in block {
                    try db.execute(sql: "INSERT OR IGNORE INTO block_lists (handle, blocked_handle) VALUES (?, ?)", arguments: [handle, blocked])
                    // conversations.md 9: what the newly blocked handle queued or scheduled for this account is
                    // dropped now, as if it had been blocked at submit: ciphertext gone, no receipt.
                    let routes = "SELECT envelope_id FROM envelope_routes WHERE sender_handle = ? AND recipient_handle = ? AND state = ?"
                    try db.execute(
                        sql: "UPDATE scheduled_envelopes SET ciphertext = zeroblob(0) WHERE envelope_id IN (\(routes))",
                        arguments: [blocked, handle, Self.stateScheduled])
                    try db.execute(
                        sql: "DELETE FROM queue WHERE kind = ? AND envelope_id IN (\(routes))",
                        arguments: [Self.kindEnvelope, blocked, handle, Self.stateQueued])
                    try db.execute(
                        sql: "UPDATE envelope_routes SET state = ? WHERE sender_handle = ? AND recipient_handle = ? AND state IN (?, ?)",
                        arguments: [Self.stateDropped, blocked, handle, Self.stateQueued, Self.stateScheduled])
                }
                let list = try String.fetchAll(
                    db, sql: "SELECT blocked_handle FROM block_lists WHERE handle = ? ORDER BY blocked_handle", arguments: [handle])
                // Throwing rolls the transaction back: nothing changes.
                guard list.count <= maxBlocked else { throw StoreError(.blockListFull, "at most \(maxBlocked) handles") }
                return list
            }
        }
    }

    /// Implements `ConversationStore.blockers`.
    public func blockers(of senderHandle: String, among recipientHandles: Set<String>) async throws -> Set<String> {
        guard !recipientHandles.isEmpty else { return [] }
        return try await run {
            try await self.pool.read { db in
                let handles = Array(recipientHandles)
                let marks = Array(repeating: "?", count: handles.count).joined(separator: ", ")
                return Set(try String.fetchAll(
                    db, sql: "SELECT handle FROM block_lists WHERE blocked_handle = ? AND handle IN (\(marks))",
                    arguments: StatementArguments([senderHandle] + handles)))
            }
        }
    }

    /// Implements `ConversationStore.storeReport` in one SQLite transaction.
    public func storeReport(_ report: StoredReport, limit: Int, windowMs: Int64) async throws -> Int64? {
        try await run {
            try await self.pool.write { db in
                let recent = try Int64.fetchAll(
                    db, sql: "SELECT received_at FROM reports WHERE reporter_handle = ? AND received_at > ? ORDER BY received_at",
                    arguments: [report.reporter.handle, report.receivedAtMs - windowMs])
                if recent.count >= limit { return max(1, (recent.first ?? report.receivedAtMs) + windowMs - report.receivedAtMs) }
                try db.execute(
                    sql: """
                        INSERT INTO reports (report_id, reporter_handle, reporter_device_id, received_at, report, signature)
                        VALUES (?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        report.reportID, report.reporter.handle, Int64(report.reporter.deviceID), report.receivedAtMs, report.report,
                        report.signature,
                    ])
                return nil
            }
        }
    }

    /// Implements `ConversationStore.reports`.
    public func reports() async throws -> [StoredReport] {
        try await run {
            try await self.pool.read { db in
                try Row.fetchAll(db, sql: "SELECT * FROM reports ORDER BY received_at, rowid").map { row in
                    StoredReport(
                        reportID: row["report_id"],
                        reporter: DeviceAddress(handle: row["reporter_handle"], deviceID: UInt32(row["reporter_device_id"] as Int64)),
                        receivedAtMs: row["received_at"], report: row["report"], signature: row["signature"])
                }
            }
        }
    }

    // MARK: Helpers

    /// Deletes the scheduled envelopes whose route matches `condition` (over `envelope_routes r`), marking their routes
    /// cancelled, no receipt: their sender device is gone with its cancel tokens (`conversations.md` 8).
    private static func cancelScheduled(_ db: Database, sentBy condition: String, _ arguments: StatementArguments) throws {
        let ids = try Data.fetchAll(
            db, sql: "SELECT s.envelope_id FROM scheduled_envelopes s JOIN envelope_routes r ON r.envelope_id = s.envelope_id WHERE \(condition)",
            arguments: arguments)
        for id in ids {
            try db.execute(sql: "DELETE FROM scheduled_envelopes WHERE envelope_id = ?", arguments: [id])
            try db.execute(sql: "UPDATE envelope_routes SET state = ? WHERE envelope_id = ?", arguments: [stateCancelled, id])
        }
    }

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
                signature: row["signed_prekey_signature"]),
            createdAtMs: row["created_at"])
    }

    /// Runs one GRDB access (GRDB's async APIs run it on GRDB's own queues, off the cooperative pool)
    /// and maps any error that is not already a `StoreError` to `StoreError.backend`.
    func run<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
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

/// Group commit for `submit` (`relay.md`, "Storage and durability"): callers that arrive while a write
/// transaction is running wait, and the next transaction runs all of them, each inside its own savepoint
/// (a failing caller rolls back only its own changes and gets its own error). Every caller returns after
/// the shared commit, so acknowledgements still follow a `synchronous=FULL` commit.
final class GroupCommitter: Sendable {
    private struct Job: Sendable {
        let body: @Sendable (Database) throws -> Void
        let done: CheckedContinuation<Void, any Error>
    }

    /// Holds one caller's result between its savepoint and its resumption.
    private final class ResultBox<T: Sendable>: Sendable {
        let value = Mutex<T?>(nil)
    }

    private let pool: DatabasePool
    private let state = Mutex<(pending: [Job], running: Bool)>(([], false))
    private let counts = Mutex<(callers: Int, transactions: Int)>((0, 0))

    /// Callers handled and write transactions run so far.
    func statistics() -> (callers: Int, transactions: Int) {
        counts.withLock { $0 }
    }

    init(pool: DatabasePool) {
        self.pool = pool
    }

    /// Runs `body` in the next shared write transaction and returns its result after the commit.
    /// - Throws: what `body` threw (its savepoint rolled back), or the transaction's error.
    func perform<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let box = ResultBox<T>()
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let job = Job(body: { db in
                let value = try body(db)
                box.value.withLock { $0 = value }
            }, done: continuation)
            let leads = state.withLock { state -> Bool in
                state.pending.append(job)
                if state.running { return false }
                state.running = true
                return true
            }
            // The first caller starts the drain loop; it ends when no caller is waiting.
            if leads { Task { await self.drain() } }
        }
        guard let value = box.value.withLock({ $0 }) else { throw StoreError(.backend, "group commit lost a result") }
        return value
    }

    private func drain() async {
        while true {
            let jobs = state.withLock { state -> [Job] in
                if state.pending.isEmpty {
                    state.running = false
                    return []
                }
                defer { state.pending = [] }
                return state.pending
            }
            if jobs.isEmpty { return }
            counts.withLock { counts in
                counts.callers += jobs.count
                counts.transactions += 1
            }
            let failures = ResultBox<[Int: any Error]>()
            do {
                try await pool.write { db in
                    for (index, job) in jobs.enumerated() {
                        do {
                            try db.inSavepoint {
                                try job.body(db)
                                return .commit
                            }
                        } catch {
                            failures.value.withLock { $0 = ($0 ?? [:]).merging([index: error]) { $1 } }
                        }
                    }
                }
                let failed = failures.value.withLock { $0 } ?? [:]
                for (index, job) in jobs.enumerated() {
                    if let error = failed[index] { job.done.resume(throwing: error) } else { job.done.resume() }
                }
            } catch {
                for job in jobs { job.done.resume(throwing: error) }
            }
        }
    }
}
