import FlitzCrypto
import FlitzProtocol
import Foundation
import GRDB

/// Delivery status of an outgoing message, in the order it can only advance
/// (`protocol/relay.md`, "Receipts"): sent → delivered → seen; expired only from sent.
public enum MessageStatus: String, Sendable, CaseIterable {
    /// Encrypted and stored locally, not yet acknowledged by the relay.
    case pending
    /// Durable at the relay.
    case sent
    /// The recipient device acknowledged it.
    case delivered
    /// The recipient reported it as seen.
    case seen
    /// It expired at the relay before delivery.
    case expired

    /// Whether moving from `self` to `next` is an advance (statuses never go back).
    func canAdvance(to next: MessageStatus) -> Bool {
        switch (self, next) {
        case (.pending, _): next != .pending
        case (.sent, .delivered), (.sent, .seen), (.sent, .expired), (.delivered, .seen): true
        default: false
        }
    }
}

/// This device's account as stored locally.
struct AccountRecord: Sendable {
    var handle: String
    var relayURL: String
    var deviceID: UInt32
    /// The account identity key pair: only on the primary device (`protocol/devices.md` section 5.1).
    var accountIdentity: AccountIdentity?
    /// The 32-byte account identity public key (every device knows it; a linked device from the grant).
    var accountIdentityKey: Ed25519PublicKey
    var device: DeviceIdentity
    var readReceipts: Bool
    /// `flitz account delete` ran: the relay no longer knows the handle.
    var deleted = false
    /// This device found itself missing from its account's newest device list (devices.md 4.4, "Own account").
    var removed = false

    /// Whether this is the primary device, the one that holds the account identity key.
    var isPrimary: Bool { accountIdentity != nil }
}

/// The prekeys a new device registers with (`protocol/relay.md`, "Register").
struct RegistrationPreKeys: Sendable {
    var signedPreKey: SignedPreKeyPair
    var oneTimePreKeys: [OneTimePreKeyPair]
    var lastResortKEMPreKey: KEMPreKeyPair
    var oneTimeKEMPreKeys: [KEMPreKeyPair]
}

extension RegistrationPreKeys {
    /// A new device's first prekeys. Ids start at 1 in each space: signed, one-time, KEM (last-resort first, then
    /// `oneTimeKEMCount` one-time ones); `oneTimeCount` one-time X25519 prekeys.
    init(device: DeviceIdentity, oneTimeCount: Int, oneTimeKEMCount: Int, random: any RandomSource) {
        self.init(
            signedPreKey: SignedPreKeyPair(id: 1, device: device, random: random),
            oneTimePreKeys: (1...UInt32(oneTimeCount)).map { OneTimePreKeyPair(id: $0, random: random) },
            lastResortKEMPreKey: KEMPreKeyPair(id: 1, kind: .lastResort, device: device, random: random),
            oneTimeKEMPreKeys: (2...UInt32(oneTimeKEMCount + 1)).map { KEMPreKeyPair(id: $0, kind: .oneTime, device: device, random: random) })
    }
}

/// A contact: the account identity key this user trusts for a handle, a newer one seen but not trusted,
/// and the key whose safety number the user confirmed (`flitz verify`).
struct ContactRecord: Sendable {
    var handle: String
    var trustedIdentityKey: Data
    var untrustedIdentityKey: Data?
    var verifiedIdentityKey: Data?

    /// Verified: the trusted key is the one confirmed, and no other key has been seen since.
    var isVerified: Bool {
        guard untrustedIdentityKey == nil, let verifiedIdentityKey else { return false }
        return ConstantTime.equals(verifiedIdentityKey, trustedIdentityKey)
    }
}

/// A message in the local history.
public struct HistoryMessage: Sendable {
    /// 16-byte message id.
    public var messageID: Data
    /// Whether this device sent it.
    public var outgoing: Bool
    /// The other party's handle.
    public var peer: String
    /// Message text.
    public var text: String
    /// Relay acceptance time, milliseconds since the Unix epoch.
    public var acceptedAtMilliseconds: Int64
    /// Status (outgoing messages).
    public var status: MessageStatus
}

/// The client's local database (GRDB, SQLite file `flitz.sqlite` in the home directory, mode 0600):
/// keys, prekeys, sessions, contacts, history and statuses. Versioned with `DatabaseMigrator`.
final class ClientStore: Sendable {
    /// File name of the store inside the home directory.
    static let fileName = "flitz.sqlite"
    let dbQueue: DatabaseQueue

    /// Seals and opens the secret columns (StoreSealing.swift).
    let sealer: StoreSealer

    /// Opens (creating if needed) the store in `home`, which is created with mode 0700; when the store has a
    /// passphrase, asks `passphrase` for it and unlocks the store key (StoreSealing.swift).
    /// - Throws: `ClientError(.passphrase)` for a wrong or missing passphrase; GRDB or file system errors.
    init(home: URL, passphrase: PassphraseSource? = nil) throws {
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let path = home.appendingPathComponent(Self.fileName).path
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        let sealer = StoreSealer()
        self.sealer = sealer
        // Deleted and disappeared messages must not linger in free pages (`protocol/conversations.md` 4, 8).
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA secure_delete = ON")
            for function in sealer.functions { db.add(function: function) }
        }
        dbQueue = try DatabaseQueue(path: path, configuration: configuration)
        try? FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        try Self.migrator.migrate(dbQueue)
        try unlock(passphrase)
        // What a process that ended before erasing left of deleted messages in the search index (docs/search.md).
        try eraseSearchResidue()
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE account (
                    id INTEGER PRIMARY KEY CHECK (id = 1),
                    handle TEXT NOT NULL,
                    relay_url TEXT NOT NULL,
                    device_id INTEGER NOT NULL,
                    account_identity_seed BLOB NOT NULL,
                    device_identity_seed BLOB NOT NULL,
                    device_certificate_signature BLOB NOT NULL,
                    read_receipts INTEGER NOT NULL DEFAULT 1,
                    next_one_time_prekey_id INTEGER NOT NULL
                );
                CREATE TABLE signed_prekeys (
                    id INTEGER PRIMARY KEY,
                    private_key BLOB NOT NULL,
                    signature BLOB NOT NULL
                );
                CREATE TABLE one_time_prekeys (
                    id INTEGER PRIMARY KEY,
                    private_key BLOB NOT NULL
                );
                CREATE TABLE contacts (
                    handle TEXT PRIMARY KEY,
                    trusted_identity_key BLOB NOT NULL,
                    untrusted_identity_key BLOB
                );
                CREATE TABLE sessions (
                    handle TEXT NOT NULL,
                    device_id INTEGER NOT NULL,
                    base_key BLOB NOT NULL,
                    record BLOB NOT NULL,
                    active INTEGER NOT NULL,
                    updated_at REAL NOT NULL,
                    PRIMARY KEY (handle, device_id, base_key)
                );
                CREATE TABLE messages (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    message_id BLOB NOT NULL,
                    outgoing INTEGER NOT NULL,
                    peer TEXT NOT NULL,
                    text TEXT NOT NULL,
                    envelope_id BLOB NOT NULL,
                    envelope BLOB,
                    expires_in INTEGER NOT NULL DEFAULT 0,
                    status TEXT NOT NULL,
                    accepted_at_ms INTEGER NOT NULL DEFAULT 0,
                    displayed INTEGER NOT NULL DEFAULT 0,
                    seen_reported INTEGER NOT NULL DEFAULT 0,
                    UNIQUE (peer, outgoing, message_id)
                );
                CREATE INDEX messages_envelope ON messages(envelope_id);
                """)
        }
        migrator.registerMigration("v2") { db in
            // - account.registered: keys are stored before registering, so an interrupted `init` can retry them;
            // - messages.untrusted_sender: the sender's account key was not the trusted one on arrival;
            // - messages.recipient_device_id: where an unsent envelope goes when it is resubmitted;
            // - accepted_base_keys: X3DH base keys already answered, so a replay cannot start a session.
            try db.execute(sql: """
                ALTER TABLE messages ADD COLUMN untrusted_sender INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE messages ADD COLUMN recipient_device_id INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE account ADD COLUMN registered INTEGER NOT NULL DEFAULT 1;
                CREATE TABLE accepted_base_keys (
                    base_key BLOB PRIMARY KEY,
                    accepted_at REAL NOT NULL
                );
                INSERT OR IGNORE INTO accepted_base_keys (base_key, accepted_at) SELECT base_key, updated_at FROM sessions;
                """)
        }
        migrator.registerMigration("v3-verified") { db in
            // contacts.verified_identity_key: the account key whose safety number the user confirmed; cleared
            // whenever another key is seen, so a key change always needs a new verification.
            try db.execute(sql: "ALTER TABLE contacts ADD COLUMN verified_identity_key BLOB")
        }
        migrator.registerMigration("v4-pqxdh") { db in
            // - kem_prekeys: ML-KEM-1024 prekeys (64-byte seeds); one-time ones deleted after first use,
            //   last-resort ones kept until rotated out and past the grace period (replaced_at);
            // - signed_prekeys.created_at / replaced_at: rotation and its grace period;
            // - next_*_prekey_id: ids are never reused (crypto.md, "Prekey lifecycle");
            // - session_resets: when this device last replaced a failing session with each peer device;
            // - unsupported_messages: content of a kind this version does not know, kept for a newer version.
            try db.execute(sql: """
                CREATE TABLE kem_prekeys (
                    id INTEGER PRIMARY KEY,
                    seed BLOB NOT NULL,
                    signature BLOB NOT NULL,
                    last_resort INTEGER NOT NULL,
                    created_at REAL NOT NULL,
                    replaced_at REAL
                );
                ALTER TABLE signed_prekeys ADD COLUMN created_at REAL NOT NULL DEFAULT 0;
                ALTER TABLE signed_prekeys ADD COLUMN replaced_at REAL;
                ALTER TABLE account ADD COLUMN next_signed_prekey_id INTEGER NOT NULL DEFAULT 2;
                ALTER TABLE account ADD COLUMN next_kem_prekey_id INTEGER NOT NULL DEFAULT 1;
                CREATE TABLE session_resets (
                    handle TEXT NOT NULL,
                    device_id INTEGER NOT NULL,
                    at REAL NOT NULL,
                    PRIMARY KEY (handle, device_id)
                );
                CREATE TABLE unsupported_messages (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    peer TEXT NOT NULL,
                    envelope_id BLOB NOT NULL UNIQUE,
                    kind TEXT NOT NULL,  -- 'envelope': undecrypted SessionMessage bytes; 'content': decrypted Content bytes
                    content BLOB NOT NULL,
                    received_at REAL NOT NULL
                );
                """)
        }
        migrator.registerMigration("v5-devices") { db in
            // Several devices per account (`protocol/devices.md`):
            // - account.account_identity_key: the account's public key; a linked device has no seed (empty blob);
            // - account.deleted / removed: the account was deleted, or this device was removed from it;
            // - device_lists: per handle (own included) the newest accepted and at most one pending signed list,
            //   under the account identity key they are for (section 4.4), as a DeviceListTracker;
            // - envelopes: the envelopes of each outgoing message, one per recipient device and per own other
            //   device, with their own status; receipts name an envelope, the message status follows them;
            // - messages.transcript: a message another device of this account sent (a sent transcript);
            // - messages.group_id: the Submit group of an outgoing message's envelopes.
            try db.execute(sql: """
                ALTER TABLE account ADD COLUMN account_identity_key BLOB;
                ALTER TABLE account ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE account ADD COLUMN removed INTEGER NOT NULL DEFAULT 0;
                CREATE TABLE device_lists (
                    handle TEXT PRIMARY KEY,
                    tracker BLOB NOT NULL  -- DeviceListTracker as JSON: trusted key, accepted and pending list bytes
                );
                CREATE TABLE envelopes (
                    envelope_id BLOB PRIMARY KEY,
                    message_seq INTEGER NOT NULL,
                    recipient_handle TEXT NOT NULL,
                    recipient_device_id INTEGER NOT NULL,
                    ciphertext BLOB,  -- kept while pending, so a resubmission is byte-identical
                    status TEXT NOT NULL,
                    selected_devices INTEGER NOT NULL DEFAULT 0  -- submitted with Submit.selected_devices (resets)
                );
                CREATE INDEX envelopes_message ON envelopes(message_seq);
                INSERT OR IGNORE INTO envelopes (envelope_id, message_seq, recipient_handle, recipient_device_id, ciphertext, status, selected_devices)
                    SELECT envelope_id, seq, peer, recipient_device_id, envelope, status, 1 FROM messages WHERE outgoing = 1;
                ALTER TABLE messages ADD COLUMN transcript INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE messages ADD COLUMN group_id INTEGER NOT NULL DEFAULT 0;
                """)
            for row in try Row.fetchAll(db, sql: "SELECT account_identity_seed FROM account") {
                let seed: Data = row["account_identity_seed"]
                guard !seed.isEmpty else { continue }
                let key = try AccountIdentity(seed: SecretBytes(seed)).publicKey.rawRepresentation
                try db.execute(sql: "UPDATE account SET account_identity_key = ?", arguments: [key])
            }
        }
        migrator.registerMigration("v6-push") { db in
            // Push wake-ups and notification settings (`protocol/push.md` 4 and 8):
            // - push_registrations: this device's endpoint as last sent to the relay: 'current' (the relay
            //   confirmed it) and at most one 'pending' (sent, not confirmed: the answer may have been lost), both
            //   kept so a wake-up encrypted to either still opens; Web Push keys are the RFC 8291 P-256 private
            //   scalar (32 bytes) and auth secret (16 bytes), NULL for APNs and FCM;
            // - notification_mutes: muted conversations (by peer handle) until `until` (seconds since the Unix
            //   epoch; NULL: until unmuted);
            // - notification_keywords: keyword alerts, unique regardless of case;
            // - messages.notified: shown as a notification (`listen --notify`), which is not a read: the message
            //   stays unshown (`displayed = 0`) and unreported as seen until `receive` shows it.
            // None of this is ever sent to the relay except the endpoint, the public key and the auth secret.
            try db.execute(sql: """
                CREATE TABLE push_registrations (
                    state TEXT PRIMARY KEY CHECK (state IN ('current', 'pending')),
                    provider TEXT NOT NULL,  -- 'webpush', 'apns' or 'fcm'
                    endpoint TEXT NOT NULL,
                    webpush_private_key BLOB,
                    webpush_auth_secret BLOB,
                    apns_background INTEGER NOT NULL DEFAULT 0,
                    registered_at REAL NOT NULL
                );
                CREATE TABLE notification_mutes (
                    handle TEXT PRIMARY KEY,
                    until REAL
                );
                CREATE TABLE notification_keywords (
                    word TEXT PRIMARY KEY COLLATE NOCASE,
                    added_at REAL NOT NULL
                );
                ALTER TABLE messages ADD COLUMN notified INTEGER NOT NULL DEFAULT 0;
                """)
        }
        // Conversations (protocol/conversations.md): Conversations.swift and Signals.swift own these.
        migrator.registerMigration("v7-conversations", migrate: Self.migrateConversations)
        migrator.registerMigration("v8-safety", migrate: Self.migrateSafety)
        // Media (protocol/attachments.md): MediaSchema.swift.
        migrator.registerMigration("v9-attachments", migrate: Self.migrateAttachments)
        // Media transfers (protocol/attachments.md 5): MediaStore.swift.
        migrator.registerMigration("v10-media", migrate: Self.migrateMedia)
        // History search (docs/search.md): Search.swift.
        migrator.registerMigration("v11-search", migrate: Self.migrateSearch)
        // Secrets sealed under a passphrase's key (docs/storage-at-rest.md): StoreSealing.swift.
        migrator.registerMigration("v12-passphrase", migrate: Self.migratePassphrase)
        // The disappearing sweep runs before every listing and search; without this index it scanned the whole
        // history (about 30 ms of every search over 100 000 messages, Benchmarks/README.md).
        migrator.registerMigration("v13-sweep-index") { db in
            try db.execute(sql: """
                CREATE INDEX messages_disappearing ON messages(seq)
                    WHERE kind = 'text' AND deleted = 0 AND COALESCE(expire_after, 0) > 0
                """)
        }
        // Call history (protocol/calls.md 8): CallHistory.swift.
        migrator.registerMigration("v14-calls", migrate: Self.migrateCalls)
        return migrator
    }

    // MARK: account

    /// The account, once its registration has finished.
    func loadAccount() throws -> AccountRecord? {
        try loadAccount(registered: true)
    }

    /// The account whose registration was started but not confirmed by the relay, with its prekeys.
    func pendingRegistration() throws -> (account: AccountRecord, preKeys: RegistrationPreKeys)? {
        guard let account = try loadAccount(registered: false) else { return nil }
        return try dbQueue.read { db in
            guard let signedPreKey = try Self.signedPreKey(id: 1, db) else { return nil }
            let oneTimePreKeys = try Int64.fetchAll(db, sql: "SELECT id FROM one_time_prekeys ORDER BY id").compactMap {
                try Self.oneTimePreKey(id: UInt32($0), db)
            }
            let kem = try Int64.fetchAll(db, sql: "SELECT id FROM kem_prekeys ORDER BY id").compactMap { try Self.kemPreKey(id: UInt32($0), db) }
            guard let lastResort = kem.first(where: { $0.kind == .lastResort }) else { return nil }
            return (
                account,
                RegistrationPreKeys(
                    signedPreKey: signedPreKey, oneTimePreKeys: oneTimePreKeys, lastResortKEMPreKey: lastResort,
                    oneTimeKEMPreKeys: kem.filter { $0.kind == .oneTime })
            )
        }
    }

    /// Records the relay's answer to the registration.
    func markRegistered(deviceID: UInt32, relayURL: String) throws {
        try dbQueue.write { db in
            try db.execute(sql: "UPDATE account SET registered = 1, device_id = ?, relay_url = ?", arguments: [Int64(deviceID), relayURL])
        }
    }

    /// Forgets a registration the relay refused (so the home can be initialised with another handle).
    func discardPendingRegistration() throws {
        try dbQueue.write { db in
            try db.execute(sql: "DELETE FROM account WHERE registered = 0")
            try db.execute(sql: "DELETE FROM signed_prekeys")
            try db.execute(sql: "DELETE FROM one_time_prekeys")
            try db.execute(sql: "DELETE FROM kem_prekeys")
        }
    }

    private func loadAccount(registered: Bool) throws -> AccountRecord? {
        try dbQueue.read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM account WHERE id = 1 AND registered = ?", arguments: [registered])
            else { return nil }
            // A linked (secondary) device stores no account seed: an empty blob.
            let seed = try openSecret(row["account_identity_seed"], .accountIdentitySeed)
            let account = seed.isEmpty ? nil : try AccountIdentity(seed: SecretBytes(seed))
            let accountKey = try Ed25519PublicKey(rawRepresentation: row["account_identity_key"] ?? account?.publicKey.rawRepresentation ?? Data())
            let deviceKey = try Ed25519PrivateKey(seed: SecretBytes(openSecret(row["device_identity_seed"], .deviceIdentitySeed)))
            let certificate = DeviceCertificate(
                accountIdentityKey: accountKey, deviceIdentityKey: deviceKey.publicKey,
                signature: row["device_certificate_signature"])
            return AccountRecord(
                handle: row["handle"], relayURL: row["relay_url"], deviceID: UInt32(row["device_id"] as Int64),
                accountIdentity: account, accountIdentityKey: accountKey,
                device: try DeviceIdentity(privateKey: deviceKey, certificate: certificate),
                readReceipts: row["read_receipts"], deleted: row["deleted"], removed: row["removed"])
        }
    }

    func saveNewAccount(_ record: AccountRecord, preKeys: RegistrationPreKeys, now: Date) throws {
        try dbQueue.write { db in
            let kemIDs = [preKeys.lastResortKEMPreKey.id] + preKeys.oneTimeKEMPreKeys.map(\.id)
            try db.execute(
                sql: """
                    INSERT INTO account (id, handle, relay_url, device_id, account_identity_seed, account_identity_key, device_identity_seed,
                        device_certificate_signature, read_receipts, next_one_time_prekey_id, next_signed_prekey_id, next_kem_prekey_id, registered)
                    VALUES (1, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, 0)
                    """,
                arguments: [
                    record.handle, record.relayURL, Int64(record.deviceID),
                    sealSecret(record.accountIdentity?.privateKey.seed.unsafeData ?? Data(), .accountIdentitySeed),
                    record.accountIdentityKey.rawRepresentation,
                    sealSecret(record.device.privateKey.seed.unsafeData, .deviceIdentitySeed), record.device.certificate.signature,
                    Int64((preKeys.oneTimePreKeys.map(\.id).max() ?? 0) + 1), Int64(preKeys.signedPreKey.id) + 1,
                    Int64((kemIDs.max() ?? 0) + 1),
                ])
            try Self.insert(preKeys.signedPreKey, now: now, db)
            try Self.insert(preKeys.oneTimePreKeys, db)
            try Self.insert([preKeys.lastResortKEMPreKey] + preKeys.oneTimeKEMPreKeys, now: now, db)
        }
    }

    private static func insert(_ key: SignedPreKeyPair, now: Date, _ db: Database) throws {
        try db.execute(
            sql: "INSERT OR REPLACE INTO signed_prekeys (id, private_key, signature, created_at) VALUES (?, ?, ?, ?)",
            arguments: [Int64(key.id), sealSecret(key.privateKey.secret.unsafeData, .signedPreKey, db), key.signature, now.timeIntervalSince1970])
    }

    private static func insert(_ keys: [KEMPreKeyPair], now: Date, _ db: Database) throws {
        for key in keys {
            try db.execute(
                sql: "INSERT INTO kem_prekeys (id, seed, signature, last_resort, created_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [
                    Int64(key.id), sealSecret(key.privateKey.seed.unsafeData, .kemPreKey, db), key.signature, key.kind == .lastResort,
                    now.timeIntervalSince1970,
                ])
        }
    }

    /// Reserves `count` fresh KEM prekey ids, generates and signs one-time KEM prekeys and stores them.
    func generateOneTimeKEMPreKeys(count: Int, device: DeviceIdentity, random: any RandomSource, now: Date) throws -> [KEMPreKeyPair] {
        try dbQueue.write { db in
            let first = try UInt32(Int64.fetchOne(db, sql: "SELECT next_kem_prekey_id FROM account") ?? 1)
            let keys = (0..<UInt32(count)).map { KEMPreKeyPair(id: first + $0, kind: .oneTime, device: device, random: random) }
            try db.execute(sql: "UPDATE account SET next_kem_prekey_id = ?", arguments: [Int64(first) + Int64(count)])
            try Self.insert(keys, now: now, db)
            return keys
        }
    }

    /// When the current signed prekey (or the last-resort KEM prekey) is older than `rotationInterval`
    /// seconds, or there is no last-resort KEM prekey (a home from before PQXDH), makes new ones under
    /// fresh ids, marks the old ones replaced now, and returns the new ones to publish. Also deletes
    /// replaced keys whose `grace` seconds have passed (`protocol/crypto.md`, "Prekey lifecycle").
    func rotatePreKeysIfDue(
        device: DeviceIdentity, random: any RandomSource, now: Date, rotationInterval: TimeInterval, grace: TimeInterval
    ) throws -> (signed: SignedPreKeyPair?, lastResort: KEMPreKeyPair?) {
        try dbQueue.write { db in
            let t = now.timeIntervalSince1970
            try db.execute(sql: "DELETE FROM signed_prekeys WHERE replaced_at IS NOT NULL AND replaced_at + ? <= ?", arguments: [grace, t])
            try db.execute(sql: "DELETE FROM kem_prekeys WHERE replaced_at IS NOT NULL AND replaced_at + ? <= ?", arguments: [grace, t])
            var result: (signed: SignedPreKeyPair?, lastResort: KEMPreKeyPair?) = (nil, nil)
            let signedCreated = try Double.fetchOne(db, sql: "SELECT MAX(created_at) FROM signed_prekeys WHERE replaced_at IS NULL") ?? -.infinity
            if signedCreated + rotationInterval <= t {
                let id = try UInt32(Int64.fetchOne(db, sql: "SELECT next_signed_prekey_id FROM account") ?? 2)
                let key = SignedPreKeyPair(id: id, device: device, random: random)
                try db.execute(sql: "UPDATE signed_prekeys SET replaced_at = ? WHERE replaced_at IS NULL", arguments: [t])
                try Self.insert(key, now: now, db)
                try db.execute(sql: "UPDATE account SET next_signed_prekey_id = ?", arguments: [Int64(id) + 1])
                result.signed = key
            }
            let kemCreated = try Double.fetchOne(
                db, sql: "SELECT MAX(created_at) FROM kem_prekeys WHERE last_resort = 1 AND replaced_at IS NULL") ?? -.infinity
            if kemCreated + rotationInterval <= t {
                let id = try UInt32(Int64.fetchOne(db, sql: "SELECT next_kem_prekey_id FROM account") ?? 1)
                let key = KEMPreKeyPair(id: id, kind: .lastResort, device: device, random: random)
                try db.execute(sql: "UPDATE kem_prekeys SET replaced_at = ? WHERE last_resort = 1 AND replaced_at IS NULL", arguments: [t])
                try Self.insert([key], now: now, db)
                try db.execute(sql: "UPDATE account SET next_kem_prekey_id = ?", arguments: [Int64(id) + 1])
                result.lastResort = key
            }
            return result
        }
    }

    static func kemPreKey(id: UInt32, _ db: Database) throws -> KEMPreKeyPair? {
        do {
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM kem_prekeys WHERE id = ?", arguments: [Int64(id)]) else { return nil }
            let lastResort: Bool = row["last_resort"]
            return KEMPreKeyPair(
                id: id, kind: lastResort ? .lastResort : .oneTime, privateKey: try KEMPrivateKey(seed: SecretBytes(openSecret(row["seed"], .kemPreKey, db)!)),
                signature: row["signature"])
        } catch {
            throw ClientError(.protocolFailure, "a stored KEM prekey is corrupt")
        }
    }

    /// Whether a signed prekey with this id existed and was deleted after its grace period: ids only grow,
    /// so an id below the next one that is no longer stored was rotated out.
    static func signedPreKeyExpired(id: UInt32, _ db: Database) throws -> Bool {
        let next = try Int64.fetchOne(db, sql: "SELECT next_signed_prekey_id FROM account") ?? 2
        let stored = try signedPreKey(id: id, db)
        return Int64(id) < next && stored == nil
    }

    private static func insert(_ keys: [OneTimePreKeyPair], _ db: Database) throws {
        for key in keys {
            try db.execute(
                sql: "INSERT INTO one_time_prekeys (id, private_key) VALUES (?, ?)",
                arguments: [Int64(key.id), sealSecret(key.privateKey.secret.unsafeData, .oneTimePreKey, db)])
        }
    }

    /// Marks the account deleted (`flitz account delete`) or this device removed from it.
    func markAccount(deleted: Bool? = nil, removed: Bool? = nil) throws {
        try dbQueue.write { db in
            if let deleted { try db.execute(sql: "UPDATE account SET deleted = ?", arguments: [deleted]) }
            if let removed { try db.execute(sql: "UPDATE account SET removed = ?", arguments: [removed]) }
        }
    }

    /// Points the registered account at another relay address (`flitz settings relay`).
    func setRelayURL(_ relayURL: String) throws {
        try dbQueue.write { db in try db.execute(sql: "UPDATE account SET relay_url = ?", arguments: [relayURL]) }
    }

    func setReadReceipts(_ on: Bool) throws {
        try dbQueue.write { db in try db.execute(sql: "UPDATE account SET read_receipts = ?", arguments: [on]) }
    }

    /// Reserves `count` fresh one-time prekey ids, generates the keys and stores them.
    func generateOneTimePreKeys(count: Int) throws -> [OneTimePreKeyPair] {
        try dbQueue.write { db in
            let first = try UInt32(Int64.fetchOne(db, sql: "SELECT next_one_time_prekey_id FROM account") ?? 1)
            let keys = (0..<UInt32(count)).map { OneTimePreKeyPair(id: first + $0) }
            try db.execute(sql: "UPDATE account SET next_one_time_prekey_id = ?", arguments: [Int64(first) + Int64(count)])
            try Self.insert(keys, db)
            return keys
        }
    }

    static func signedPreKey(id: UInt32, _ db: Database) throws -> SignedPreKeyPair? {
        do {
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM signed_prekeys WHERE id = ?", arguments: [Int64(id)]) else { return nil }
            return SignedPreKeyPair(
                id: id, privateKey: try X25519PrivateKey(rawRepresentation: SecretBytes(openSecret(row["private_key"], .signedPreKey, db)!)),
                signature: row["signature"])
        }
    }

    static func oneTimePreKey(id: UInt32, _ db: Database) throws -> OneTimePreKeyPair? {
        do {
            guard let data = try Data.fetchOne(db, sql: "SELECT private_key FROM one_time_prekeys WHERE id = ?", arguments: [Int64(id)])
            else { return nil }
            return OneTimePreKeyPair(id: id, privateKey: try X25519PrivateKey(rawRepresentation: SecretBytes(openSecret(data, .oneTimePreKey, db)!)))
        }
    }

    // MARK: contacts

    func contact(_ handle: String) throws -> ContactRecord? {
        try dbQueue.read { db in try Self.contact(handle, db) }
    }

    static func contact(_ handle: String, _ db: Database) throws -> ContactRecord? {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM contacts WHERE handle = ?", arguments: [handle]) else { return nil }
        return ContactRecord(
            handle: handle, trustedIdentityKey: row["trusted_identity_key"], untrustedIdentityKey: row["untrusted_identity_key"],
            verifiedIdentityKey: row["verified_identity_key"])
    }

    /// Every contact, by handle.
    static func contacts(_ db: Database) throws -> [ContactRecord] {
        try String.fetchAll(db, sql: "SELECT handle FROM contacts ORDER BY handle").compactMap { try contact($0, db) }
    }

    static func trustIdentity(_ handle: String, key: Data, _ db: Database) throws {
        try db.execute(
            sql: """
                INSERT INTO contacts (handle, trusted_identity_key, untrusted_identity_key) VALUES (?, ?, NULL)
                ON CONFLICT(handle) DO UPDATE SET trusted_identity_key = excluded.trusted_identity_key, untrusted_identity_key = NULL,
                    verified_identity_key = CASE WHEN verified_identity_key = excluded.trusted_identity_key THEN verified_identity_key END
                """,
            arguments: [handle, key])
    }

    /// Records a key other than the trusted one; the contact is no longer verified, even if this key later goes away.
    static func recordUntrustedIdentity(_ handle: String, key: Data, _ db: Database) throws {
        try db.execute(
            sql: "UPDATE contacts SET untrusted_identity_key = ?, verified_identity_key = NULL WHERE handle = ?", arguments: [key, handle])
    }

    /// Marks `key` (the trusted key, compared by the caller) as verified by the user.
    static func markVerified(_ handle: String, key: Data, _ db: Database) throws {
        try db.execute(sql: "UPDATE contacts SET verified_identity_key = ? WHERE handle = ?", arguments: [key, handle])
    }

    /// Runs `body` in one IMMEDIATE transaction: it takes SQLite's write lock at once, so a session's
    /// load → encrypt/decrypt → save cannot interleave with another task or another `flitz` process on
    /// the same home (which would fork the ratchet state). `failpoint` is hit after `body`, before commit.
    func transaction<T>(failpoint: String? = nil, _ body: (Database) throws -> T) throws -> T {
        try dbQueue.writeWithoutTransaction { db in
            var result: T?
            try db.inTransaction(.immediate) {
                result = try body(db)
                if let failpoint { Failpoint.hit(failpoint) }
                return .commit
            }
            return result!
        }
    }

    // MARK: sessions

    /// Sessions with a handle's devices, the active one first, then newest first.
    func sessions(with handle: String) throws -> [(deviceID: UInt32, session: Session, active: Bool)] {
        try dbQueue.read { db in try Self.sessions(with: handle, db) }
    }

    static func sessions(with handle: String, _ db: Database) throws -> [(deviceID: UInt32, session: Session, active: Bool)] {
        try Row.fetchAll(
            db, sql: "SELECT device_id, record, active FROM sessions WHERE handle = ? ORDER BY active DESC, updated_at DESC, rowid DESC",
            arguments: [handle]
        ).map { row in
            (UInt32(row["device_id"] as Int64), try Session(serialized: openSecret(row["record"], .session, db)!), row["active"] as Bool)
        }
    }

    /// Stores a session; `makeActive` makes it the one used to send to that device (one active session per device).
    static func save(_ session: Session, handle: String, deviceID: UInt32, makeActive: Bool, _ db: Database) throws {
        if makeActive {
            try db.execute(sql: "UPDATE sessions SET active = 0 WHERE handle = ? AND device_id = ?", arguments: [handle, Int64(deviceID)])
        }
        try db.execute(
            sql: """
                INSERT INTO sessions (handle, device_id, base_key, record, active, updated_at) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(handle, device_id, base_key) DO UPDATE SET record = excluded.record,
                    active = MAX(active, excluded.active), updated_at = excluded.updated_at
                """,
            arguments: [
                handle, Int64(deviceID), session.baseKey.rawRepresentation, sealSecret(session.serialized(), .session, db), makeActive,
                Date().timeIntervalSince1970,
            ])
        // Keep at most five sessions per device (older ones are from superseded initiations).
        try db.execute(
            sql: """
                DELETE FROM sessions WHERE handle = ? AND device_id = ? AND base_key NOT IN
                    (SELECT base_key FROM sessions WHERE handle = ? AND device_id = ? ORDER BY active DESC, updated_at DESC LIMIT 5)
                """,
            arguments: [handle, Int64(deviceID), handle, Int64(deviceID)])
    }
}
