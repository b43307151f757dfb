import FlitzCrypto
import FlitzProtocol
import Foundation
import GRDB
import Logging
import Testing

@testable import FlitzClient

/// The local store sealed under a passphrase (docs/storage-at-rest.md): through a real relay in this process, with
/// libsodium's minimum Argon2id cost so the suite stays fast (the cost is a parameter; its value is tested in
/// Argon2idTests).
@Suite(.serialized)
struct PassphraseTests {
    static func open(_ relay: InProcessRelay, _ name: String, passphrase: String?) throws -> FlitzClient {
        var logger = Logger(label: name)
        logger.logLevel = .critical
        let source: PassphraseSource? = passphrase.map { text in { @Sendable in SecretBytes(Data(text.utf8)) } }
        return try FlitzClient(home: relay.directory.appendingPathComponent(name), logger: logger, passphrase: source)
    }

    static func secret(_ text: String) -> SecretBytes { SecretBytes(Data(text.utf8)) }

    /// Every byte the store's files hold (the database and any journal beside it).
    static func fileBytes(_ client: FlitzClient) throws -> Data {
        let names = try FileManager.default.contentsOfDirectory(atPath: client.home.path).filter { $0.hasPrefix(ClientStore.fileName) }
        return try names.sorted().reduce(into: Data()) { $0 += try Data(contentsOf: client.home.appendingPathComponent($1)) }
    }

    /// A media row as the media code writes it: the encoded pointer (with its 32-byte key) through the seal hook.
    static func storeAttachment(_ client: FlitzClient, key: Data) throws {
        var text = TextMessage("see attached")
        text.attachment = AttachmentPointer(
            blobID: Data(repeating: 0xb1, count: 16), key: SecretBytes(key), plaintextSize: 1000, contentType: "application/pdf",
            fileName: "report.pdf", ciphertextSHA256: Data(repeating: 0xcc, count: 32), kind: .document, blobExpiresAtMilliseconds: 0)
        let encoded = MessageContent(messageID: Data(repeating: 1, count: 16), sentAtMilliseconds: 0, body: .text(text)).encoded()
        try client.store.dbQueue.write { db in
            let seq = try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM messages")!
            try db.execute(
                sql: "INSERT INTO attachments (message_seq, kind, file_name, pointer) VALUES (?, 'document', 'report.pdf', ?)",
                arguments: [seq, ClientStore.sealSecret(encoded, .attachmentPointer, db)])
        }
    }

    /// The secrets this client holds in memory, each of which must not appear in the files when sealed.
    static func secrets(_ client: FlitzClient, peer: String) throws -> [String: Data] {
        let account = try client.requireAccount()
        var result = ["device seed": account.device.privateKey.seed.unsafeData]
        if let identity = account.accountIdentity { result["account seed"] = identity.privateKey.seed.unsafeData }
        for (index, session) in try client.store.sessions(with: peer).enumerated() { result["session \(index)"] = session.session.serialized() }
        try client.store.dbQueue.read { db in
            result["signed prekey"] = try ClientStore.signedPreKey(id: 1, db)?.privateKey.secret.unsafeData
            let oneTime = try Int64.fetchOne(db, sql: "SELECT MIN(id) FROM one_time_prekeys")!
            result["one-time prekey"] = try ClientStore.oneTimePreKey(id: UInt32(oneTime), db)?.privateKey.secret.unsafeData
            let kem = try Int64.fetchOne(db, sql: "SELECT MIN(id) FROM kem_prekeys")!
            result["KEM prekey"] = try ClientStore.kemPreKey(id: UInt32(kem), db)?.privateKey.seed.unsafeData
            for row in try Row.fetchAll(db, sql: "SELECT content, transcript_content, unsend_token FROM messages WHERE outgoing = 1") {
                result["content"] = try ClientStore.openSecret(row["content"], .messageContent, db)
                result["transcript"] = try ClientStore.openSecret(row["transcript_content"], .transcriptContent, db)
                result["unsend token"] = try ClientStore.openSecret(row["unsend_token"], .unsendToken, db)
            }
        }
        return result
    }

    @Test func sealedFilesHoldNoSecret() async throws {
        let relay = try await InProcessRelay()
        let alice = try Self.open(relay, "alice", passphrase: nil), bob = try relay.client("bob")
        try alice.setPassphrase(Self.secret("correct horse"), parameters: .minimum)
        #expect(alice.hasPassphrase)
        _ = try await alice.initialize(relayURL: relay.url, handle: "alice")
        _ = try await bob.initialize(relayURL: relay.url, handle: "bob")
        _ = try await alice.send(to: "bob", text: "the plan")
        #expect(try await bob.receiveAll().texts == ["the plan"])
        _ = try await bob.send(to: "alice", text: "agreed")
        #expect(try await alice.receiveAll().texts == ["agreed"])
        let attachmentKey = Data((0..<32).map { UInt8($0) ^ 0x5a })
        try Self.storeAttachment(alice, key: attachmentKey)

        var secrets = try Self.secrets(alice, peer: "bob")
        secrets["attachment key"] = attachmentKey
        #expect(secrets.count >= 10, "\(secrets.keys.sorted())")
        let bytes = try Self.fileBytes(alice)
        for (name, value) in secrets {
            #expect(value.count >= 16, "\(name)")
            #expect(bytes.range(of: value) == nil, "\(name) is in the file unsealed")
        }
        // Control: bob has no passphrase, so the same check finds his secrets in his file.
        let bobBytes = try Self.fileBytes(bob)
        for (name, value) in try Self.secrets(bob, peer: "alice") {
            #expect(bobBytes.range(of: value) != nil, "\(name) of an unsealed store")
        }
        // The history text stays plain on purpose (listing and search without unlocking every row).
        #expect(bytes.range(of: Data("agreed".utf8)) != nil)
        await relay.stop()
    }

    @Test func wrongPassphraseIsRefusedAndChangesNothing() async throws {
        let relay = try await InProcessRelay()
        do {
            let alice = try Self.open(relay, "alice", passphrase: nil)
            try alice.setPassphrase(Self.secret("right"), parameters: .minimum)
            _ = try await alice.initialize(relayURL: relay.url, handle: "alice")
        }
        let file = relay.directory.appendingPathComponent("alice").appendingPathComponent(ClientStore.fileName)
        let before = try Data(contentsOf: file)
        let wrong = #expect(throws: ClientError.self) { try Self.open(relay, "alice", passphrase: "wrong") }
        #expect(wrong?.kind == .passphrase)
        #expect(wrong?.message == "wrong passphrase")
        #expect(wrong?.exitCode == 77)
        let missing = #expect(throws: ClientError.self) { try Self.open(relay, "alice", passphrase: nil) }
        #expect(missing?.kind == .passphrase)
        #expect(try Data(contentsOf: file) == before)
        let alice = try Self.open(relay, "alice", passphrase: "right")
        #expect(try alice.requireAccount().handle == "alice")
        await relay.stop()
    }

    @Test func setChangeRemoveKeepAWorkingClient() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        _ = try await alice.send(to: "bob", text: "one")
        #expect(try await bob.receiveAll().texts == ["one"])

        try bob.setPassphrase(Self.secret("first"), parameters: .minimum)
        _ = try await alice.send(to: "bob", text: "two")
        var reopened = try Self.open(relay, "bob", passphrase: "first")
        #expect(try await reopened.receiveAll().texts == ["two"])

        try reopened.setPassphrase(Self.secret("second"), parameters: .minimum)
        #expect(throws: ClientError.self) { try Self.open(relay, "bob", passphrase: "first") }
        _ = try await alice.send(to: "bob", text: "three")
        reopened = try Self.open(relay, "bob", passphrase: "second")
        #expect(try await reopened.receiveAll().texts == ["three"])
        _ = try await reopened.send(to: "alice", text: "sealed reply")
        #expect(try await alice.receiveAll().texts == ["sealed reply"])

        try reopened.setPassphrase(nil)
        #expect(!reopened.hasPassphrase)
        _ = try await alice.send(to: "bob", text: "four")
        reopened = try Self.open(relay, "bob", passphrase: nil)
        #expect(!reopened.hasPassphrase)
        #expect(try await reopened.receiveAll().texts == ["four"])
        _ = try await reopened.send(to: "alice", text: "plain reply")
        #expect(try await alice.receiveAll().texts == ["plain reply"])
        // Unsealed again: the device seed is stored as is.
        let seed = try reopened.requireAccount().device.privateKey.seed.unsafeData
        #expect(try Self.fileBytes(reopened).range(of: seed) != nil)
        await relay.stop()
    }

    @Test func tamperedOrMovedSealedValueGivesAClearError() async throws {
        let relay = try await InProcessRelay()
        let alice = try Self.open(relay, "alice", passphrase: nil), bob = try relay.client("bob")
        try alice.setPassphrase(Self.secret("pw"), parameters: .minimum)
        _ = try await alice.initialize(relayURL: relay.url, handle: "alice")
        _ = try await bob.initialize(relayURL: relay.url, handle: "bob")
        _ = try await alice.send(to: "bob", text: "hi")

        // One flipped bit in the session state.
        try await alice.store.dbQueue.write { db in
            var record = try Data.fetchOne(db, sql: "SELECT record FROM sessions LIMIT 1")!
            record[record.count - 1] ^= 1
            try db.execute(sql: "UPDATE sessions SET record = ?", arguments: [record])
        }
        let tampered = await #expect(throws: ClientError.self) { _ = try await alice.send(to: "bob", text: "again") }
        #expect(tampered?.message == "a sealed secret in sessions.record does not open: the local store was altered or is corrupt")

        // A sealed value moved to another column does not open there (the column is bound in).
        try await alice.store.dbQueue.write { db in
            try db.execute(sql: "UPDATE account SET account_identity_seed = device_identity_seed")
        }
        let moved = #expect(throws: ClientError.self) { try alice.requireAccount() }
        #expect(moved?.message == "a sealed secret in account.account_identity_seed does not open: the local store was altered or is corrupt")
        // The passphrase itself is still right: the verifier tells tampering from a wrong passphrase.
        #expect(throws: Never.self) { _ = try Self.open(relay, "alice", passphrase: "pw") }
        await relay.stop()
    }

    @Test func noPassphraseBehavesAsBefore() async throws {
        let relay = try await InProcessRelay()
        let never: PassphraseSource = { Issue.record("asked for a passphrase the store does not have"); return SecretBytes(Data()) }
        var logger = Logger(label: "carol")
        logger.logLevel = .critical
        let carol = try FlitzClient(home: relay.directory.appendingPathComponent("carol"), logger: logger, passphrase: never)
        #expect(!carol.hasPassphrase)
        _ = try await carol.initialize(relayURL: relay.url, handle: "carol")
        let account = try carol.requireAccount()
        let stored = try carol.store.dbQueue.read { db in try Row.fetchOne(db, sql: "SELECT * FROM account")! }
        #expect(stored["device_identity_seed"] as Data == account.device.privateKey.seed.unsafeData)
        #expect(stored["account_identity_seed"] as Data == account.accountIdentity?.privateKey.seed.unsafeData)
        #expect(try await carol.store.dbQueue.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM store_key") } == 0)
        _ = try FlitzClient(home: relay.directory.appendingPathComponent("carol"), logger: logger, passphrase: never)
        await relay.stop()
    }

    /// A linked device has no account seed (an empty blob): sealed and opened like any other; both devices of a
    /// sealed account keep receiving.
    @Test func linkedDeviceAndPrimaryBothSealed() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let laptop = try await relay.link("alice-laptop", to: alice)
        try alice.setPassphrase(Self.secret("primary pw"), parameters: .minimum)
        try laptop.setPassphrase(Self.secret("laptop pw"), parameters: .minimum)
        #expect(try laptop.requireAccount().accountIdentity == nil)
        try await relay.introduce(bob, to: "alice", devices: [alice, laptop])
        _ = try await bob.send(to: "alice", text: "to both")
        let reopenedLaptop = try Self.open(relay, "alice-laptop", passphrase: "laptop pw")
        #expect(try reopenedLaptop.requireAccount().accountIdentity == nil)
        #expect(try await reopenedLaptop.receiveAll().texts.contains("to both"))
        let reopenedPrimary = try Self.open(relay, "alice", passphrase: "primary pw")
        #expect(try reopenedPrimary.requireAccount().accountIdentity != nil)
        #expect(try await reopenedPrimary.receiveAll().texts.contains("to both"))
        await relay.stop()
    }

    @Test func everySecretColumnExists() throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-columns-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: home) }
        let store = try ClientStore(home: home)
        try store.dbQueue.read { db in
            for column in SecretColumn.allCases {
                let found = try Int.fetchOne(
                    db, sql: "SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?", arguments: [column.table, column.column])
                #expect(found == 1, "\(column.rawValue)")
            }
        }
    }
}
