import FlitzCrypto
import Foundation
import GRDB
import Synchronization

/// Gives the store's passphrase when the store has one; asked only then (a store without one never asks).
/// - Throws: whatever stops it from getting one (the CLI: `ClientError(.passphrase)` when there is no terminal and
///   no `FLITZ_PASSPHRASE`).
public typealias PassphraseSource = @Sendable () throws -> SecretBytes

/// Every column that holds a secret, as `table.column`, the label each sealed value is bound to
/// (docs/storage-at-rest.md lists them with the reasons). A new secret column gets a case here and goes
/// through `ClientStore.sealSecret` / `openSecret`; `ClientStore.changePassphrase` re-seals every case.
enum SecretColumn: String, CaseIterable, Sendable {
    /// The 32-byte Ed25519 seed of the account identity (primary device; an empty blob on a linked device).
    case accountIdentitySeed = "account.account_identity_seed"
    /// The 32-byte Ed25519 seed of this device's identity.
    case deviceIdentitySeed = "account.device_identity_seed"
    /// X25519 signed prekey private keys (32 bytes).
    case signedPreKey = "signed_prekeys.private_key"
    /// X25519 one-time prekey private keys (32 bytes).
    case oneTimePreKey = "one_time_prekeys.private_key"
    /// ML-KEM-1024 prekey seeds (64 bytes).
    case kemPreKey = "kem_prekeys.seed"
    /// Double Ratchet session state (root, chain and skipped message keys).
    case session = "sessions.record"
    /// RFC 8291 Web Push subscription private scalar (32 bytes).
    case webPushPrivateKey = "push_registrations.webpush_private_key"
    /// RFC 8291 Web Push auth secret (16 bytes).
    case webPushAuthSecret = "push_registrations.webpush_auth_secret"
    /// The encoded Content sent to the peer (resent as is): text, quote, attachment pointer with its key.
    case messageContent = "messages.content"
    /// The encoded sent transcript for the own devices (holds the unsend token and any attachment key).
    case transcriptContent = "messages.transcript_content"
    /// The 32-byte unsend token of a sent message (whoever holds it can purge the message at the relay).
    case unsendToken = "messages.unsend_token"
    /// Encoded Content of an edit, reaction or delete waiting for its target.
    case pendingMutation = "pending_mutations.content"
    /// Content (or session message) of a kind this version cannot show, kept for a newer version.
    case unsupportedContent = "unsupported_messages.content"
    /// The cancel token of a scheduled message.
    case scheduledCancelToken = "scheduled_messages.cancel_token"
    /// The unsend token of a scheduled message.
    case scheduledUnsendToken = "scheduled_messages.unsend_token"
    /// The encoded AttachmentPointer (blob id and the 32-byte attachment key; `protocol/attachments.md` 3).
    case attachmentPointer = "attachments.pointer"
    /// An unfinished upload (`protocol/attachments.md` 5): its capability token, blob id and temporary file.
    case mediaUploadState = "media_uploads.state"

    var table: String { String(rawValue.prefix { $0 != "." }) }
    var column: String { String(rawValue.drop { $0 != "." }.dropFirst()) }
}

/// Seals and opens secrets under the 32-byte store key, or passes them through when the store has no passphrase.
///
/// A sealed value is `0x01 ‖ nonce (24 bytes) ‖ XChaCha20-Poly1305 ciphertext ‖ tag (16 bytes)`: 41 bytes more than
/// the secret. The associated data is `"flitz-store-v1:" ‖ table.column`, so a value moved to another column does
/// not open (moving it between rows of one column is not detected: docs/storage-at-rest.md).
final class StoreSealer: Sendable {
    /// Format byte of a sealed value.
    static let formatVersion: UInt8 = 1
    /// Bytes a sealed value adds to its secret.
    static let overhead = 1 + XChaCha20Poly1305.nonceLength + XChaCha20Poly1305.tagLength

    private let key = Mutex<SecretBytes?>(nil)

    /// Whether a store key is in use (the store has a passphrase).
    var isSealing: Bool { key.withLock { $0 != nil } }

    func use(_ newKey: SecretBytes?) { key.withLock { $0 = newKey } }

    /// `secret` sealed under the store key; `secret` itself when the store has no passphrase.
    func seal(_ secret: Data, _ column: String) -> Data {
        guard let current = key.withLock({ $0 }) else { return secret }
        return Self.seal(secret, column, key: current)
    }

    /// Opens what `seal` returned.
    /// - Throws: `ClientError(.protocolFailure)` when the value does not open (altered, corrupt, or from another column).
    func open(_ stored: Data, _ column: String) throws(ClientError) -> Data {
        guard let current = key.withLock({ $0 }) else { return stored }
        return try Self.open(stored, column, key: current)
    }

    static func seal(_ secret: Data, _ column: String, key: SecretBytes) -> Data {
        let nonce = SystemRandom().bytes(XChaCha20Poly1305.nonceLength)
        // Key and nonce lengths are fixed here, so sealing cannot fail.
        let sealed = try! XChaCha20Poly1305.seal(secret, key: key, nonce: nonce, authenticating: associatedData(column))
        return Data([formatVersion]) + nonce + sealed
    }

    static func open(_ stored: Data, _ column: String, key: SecretBytes) throws(ClientError) -> Data {
        let bytes = Data(stored)
        guard bytes.count >= overhead, bytes.first == formatVersion else { throw tampered(column) }
        let nonce = bytes.subdata(in: 1..<(1 + XChaCha20Poly1305.nonceLength))
        do {
            return try XChaCha20Poly1305.open(
                bytes.subdata(in: (1 + XChaCha20Poly1305.nonceLength)..<bytes.count), key: key, nonce: nonce,
                authenticating: associatedData(column))
        } catch {
            throw tampered(column)
        }
    }

    static func tampered(_ column: String) -> ClientError {
        ClientError(.protocolFailure, "a sealed secret in \(column) does not open: the local store was altered or is corrupt")
    }

    private static func associatedData(_ column: String) -> Data { Data("flitz-store-v1:\(column)".utf8) }

    /// The SQL functions `flitz_seal(label, value)` and `flitz_open(label, value)` (NULL stays NULL) registered on
    /// the store's connection, so code that holds only a `Database` reaches the key of the store it belongs to.
    var functions: [DatabaseFunction] {
        [
            DatabaseFunction("flitz_seal", argumentCount: 2) { [self] values in
                guard let label = String.fromDatabaseValue(values[0]), let data = Data.fromDatabaseValue(values[1]) else { return nil }
                return seal(data, label)
            },
            DatabaseFunction("flitz_open", argumentCount: 2) { [self] values in
                guard let label = String.fromDatabaseValue(values[0]), let data = Data.fromDatabaseValue(values[1]) else { return nil }
                return try open(data, label)
            },
        ]
    }
}

/// The `store_key` row: how the store key is derived and a value that tells a wrong passphrase from tampering.
struct StoreKeyRecord: Sendable {
    /// The only algorithm: Argon2id 1.3 through `crypto_pwhash` (`Argon2id`).
    static let algorithm = "argon2id13"
    /// What the verifier seals (under the label `store_key.verifier`).
    static let verifierPlaintext = Data("flitz store key check v1".utf8)

    var salt: Data
    var parameters: Argon2id.Parameters
    var verifier: Data
}

extension ClientStore {
    /// Argon2id cost of a new passphrase: 3 passes over 128 MiB (docs/storage-at-rest.md has the measurements).
    static let defaultKeyParameters = Argon2id.Parameters(opsLimit: 3, memLimit: 128 << 20)

    /// `v12-passphrase`: the `store_key` row exists exactly when the store has a passphrase; every `SecretColumn`
    /// then holds sealed values. Nothing is re-encoded here: `changePassphrase` seals existing values.
    static func migratePassphrase(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE store_key (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                algorithm TEXT NOT NULL,        -- 'argon2id13' (crypto_pwhash_ALG_ARGON2ID13)
                salt BLOB NOT NULL,             -- 16 random bytes
                ops_limit INTEGER NOT NULL,     -- passes
                mem_limit INTEGER NOT NULL,     -- bytes
                verifier BLOB NOT NULL          -- StoreKeyRecord.verifierPlaintext sealed under label store_key.verifier
            );
            """)
    }

    static func storeKeyRecord(_ db: Database) throws -> StoreKeyRecord? {
        guard let row = try Row.fetchOne(db, sql: "SELECT * FROM store_key WHERE id = 1") else { return nil }
        guard row["algorithm"] as String == StoreKeyRecord.algorithm,
            let ops = UInt64(exactly: row["ops_limit"] as Int64), let mem = UInt64(exactly: row["mem_limit"] as Int64)
        else { throw ClientError(.protocolFailure, "the local store's key record is not one this version knows") }
        return StoreKeyRecord(salt: row["salt"], parameters: Argon2id.Parameters(opsLimit: ops, memLimit: mem), verifier: row["verifier"])
    }

    /// The store key `passphrase` gives for `record`, checked against its verifier.
    /// - Throws: `ClientError(.passphrase)` "wrong passphrase"; `.protocolFailure` when the derivation fails.
    static func unlock(_ record: StoreKeyRecord, passphrase: SecretBytes) throws -> SecretBytes {
        let key: SecretBytes
        do {
            key = try Argon2id.deriveKey(passphrase: passphrase, salt: record.salt, parameters: record.parameters)
        } catch {
            throw ClientError(.protocolFailure, "cannot derive the store key: \(error)")
        }
        guard let check = try? StoreSealer.open(record.verifier, "store_key.verifier", key: key),
            ConstantTime.equals(check, StoreKeyRecord.verifierPlaintext)
        else { throw ClientError(.passphrase, "wrong passphrase") }
        return key
    }

    /// Opens the store key when the store has a passphrase (asking `passphrase` for it) and uses it from now on.
    /// - Throws: `ClientError(.passphrase)` for a wrong passphrase or none given; what `passphrase` throws.
    func unlock(_ passphrase: PassphraseSource?) throws {
        guard let record = try dbQueue.read({ try Self.storeKeyRecord($0) }) else { return }
        guard let passphrase else {
            throw ClientError(.passphrase, "the local store is locked with a passphrase; give it on a terminal or in FLITZ_PASSPHRASE")
        }
        sealer.use(try Self.unlock(record, passphrase: try passphrase()))
    }

    /// Whether the store has a passphrase.
    var hasPassphrase: Bool { sealer.isSealing }

    /// Sets, changes (`newPassphrase` non-nil) or removes (nil) the passphrase: one IMMEDIATE transaction opens every
    /// sealed value under the current key and seals it under the new one (a fresh 16-byte salt), or stores it plain.
    /// Afterwards free pages are overwritten (secure_delete) and the file is vacuumed.
    /// - Throws: `ClientError(.protocolFailure)` when a stored value does not open (nothing changes then).
    func changePassphrase(to newPassphrase: SecretBytes?, parameters: Argon2id.Parameters) throws {
        let newKey: SecretBytes?
        var record: StoreKeyRecord?
        if let newPassphrase {
            let salt = SystemRandom().bytes(Argon2id.saltLength)
            do {
                newKey = try Argon2id.deriveKey(passphrase: newPassphrase, salt: salt, parameters: parameters)
            } catch {
                throw ClientError(.invalidArgument, "cannot derive a store key with \(parameters): \(error)")
            }
            record = StoreKeyRecord(
                salt: salt, parameters: parameters, verifier: StoreSealer.seal(StoreKeyRecord.verifierPlaintext, "store_key.verifier", key: newKey!))
        } else {
            newKey = nil
        }
        try transaction { db in
            for column in SecretColumn.allCases {
                let rows = try Row.fetchAll(
                    db, sql: "SELECT rowid AS row_key, \(column.column) AS value FROM \(column.table) WHERE \(column.column) IS NOT NULL")
                for row in rows {
                    let plain = try sealer.open(row["value"], column.rawValue)
                    let stored = newKey.map { StoreSealer.seal(plain, column.rawValue, key: $0) } ?? plain
                    try db.execute(
                        sql: "UPDATE \(column.table) SET \(column.column) = ? WHERE rowid = ?", arguments: [stored, row["row_key"] as Int64])
                }
            }
            try db.execute(sql: "DELETE FROM store_key")
            if let record {
                try db.execute(
                    sql: "INSERT INTO store_key (id, algorithm, salt, ops_limit, mem_limit, verifier) VALUES (1, ?, ?, ?, ?, ?)",
                    arguments: [
                        StoreKeyRecord.algorithm, record.salt, Int64(record.parameters.opsLimit), Int64(record.parameters.memLimit),
                        record.verifier,
                    ])
            }
        }
        sealer.use(newKey)
        // Old encodings live on only in free pages, zeroed by secure_delete; VACUUM also drops them from the file.
        try dbQueue.vacuum()
    }

    /// `secret` as stored in `column`: sealed under the store key when the store has a passphrase.
    func sealSecret(_ secret: Data, _ column: SecretColumn) -> Data { sealer.seal(secret, column.rawValue) }

    /// Opens what `sealSecret` stored in `column`.
    /// - Throws: `ClientError(.protocolFailure)` when it does not open (altered, corrupt, moved from another column).
    func openSecret(_ stored: Data, _ column: SecretColumn) throws -> Data { try sealer.open(stored, column.rawValue) }

    /// `sealSecret` for code that holds only the connection (nil stays nil).
    static func sealSecret(_ secret: Data?, _ column: SecretColumn, _ db: Database) throws -> Data? {
        guard let secret else { return nil }
        return try Data.fetchOne(db, sql: "SELECT flitz_seal(?, ?)", arguments: [column.rawValue, secret])
    }

    /// `openSecret` for code that holds only the connection (nil stays nil).
    /// - Throws: `ClientError(.protocolFailure)` when the value does not open.
    static func openSecret(_ stored: Data?, _ column: SecretColumn, _ db: Database) throws -> Data? {
        guard let stored else { return nil }
        do {
            return try Data.fetchOne(db, sql: "SELECT flitz_open(?, ?)", arguments: [column.rawValue, stored])
        } catch is DatabaseError {
            throw StoreSealer.tampered(column.rawValue)
        }
    }
}
