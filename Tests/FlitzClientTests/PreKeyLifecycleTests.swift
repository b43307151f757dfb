import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import GRDB
import Synchronization
import Testing

@testable import FlitzClient

/// A wall clock that moves only when told to.
final class ManualClock: Sendable {
    private let current = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
    var now: @Sendable () -> Date { { self.current.withLock { $0 } } }
    func advance(days: Double) { current.withLock { $0 += days * 86_400 } }
}

extension FlitzClient {
    /// The base keys of the active session with each of `handle`'s devices.
    func activeBaseKeys(with handle: String) throws -> [Data] {
        try store.sessions(with: handle).filter(\.active).map(\.session.baseKey.rawRepresentation)
    }

    func count(_ sql: String) throws -> Int {
        try store.dbQueue.read { db in try Int.fetchOne(db, sql: sql) ?? -1 }
    }

    /// Submits raw ciphertext to `handle`'s device as this device's envelope.
    func submitRaw(_ ciphertext: Data, to handle: String, deviceID: UInt32) async throws {
        let account = try requireAccount()
        try await withAuthenticatedConnection(account) { connection in
            var envelope = WireOutgoingEnvelope()
            envelope.envelopeID = SystemRandom().bytes(16)
            envelope.recipientHandle = handle
            envelope.recipientDeviceID = deviceID
            envelope.ciphertext = ciphertext
            var submit = WireSubmit()
            submit.envelopes = [envelope]
            _ = try await connection.request(.submit(submit))
        }
    }
}

/// The prekey lifecycle, simultaneous initiation and session reset (`protocol/crypto.md`, "Prekey
/// lifecycle", "Simultaneous initiation", "Session reset"), end to end through a real relay.
@Suite(.serialized)
struct PreKeyLifecycleTests {
    @Test func severalFirstMessagesBeforeAReplyAllDecryptAndAReplayStartsNoSecondSession() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        for text in ["one", "two", "three"] { _ = try await alice.send(to: "bob", text: text) }
        // All three are prekey messages of one session (alice has no reply yet).
        #expect(try alice.store.sessions(with: "bob").count == 1)
        #expect(try alice.store.sessions(with: "bob")[0].session.isAwaitingReply)
        #expect(try await bob.receiveAll().texts == ["one", "two", "three"])
        #expect(try bob.store.sessions(with: "alice").count == 1)
        // The one-time prekeys the session used are gone from bob's store only now.
        #expect(try bob.count("SELECT COUNT(*) FROM kem_prekeys WHERE last_resort = 0") == FlitzClient.kemPreKeyBatchSize - 1)
        #expect(try bob.count("SELECT COUNT(*) FROM one_time_prekeys") == FlitzClient.preKeyBatchSize - 1)
        await relay.stop()
    }

    @Test func aReplayedFirstMessageCreatesNoSecondSession() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        // Capture alice's first prekey message as sent, then deliver it twice.
        var session = try Session.initiate(
            identity: try alice.requireAccount().device, bundle: try await alice.fetchBundleForTest("bob"))
        let ciphertext = try session.encrypt(MessageContent(messageID: SystemRandom().bytes(16), sentAtMilliseconds: 0, body: .text("once")).encoded())
        try await alice.submitRaw(ciphertext, to: "bob", deviceID: 1)
        try await alice.submitRaw(ciphertext, to: "bob", deviceID: 1)
        let inbox = try await bob.receiveAll()
        #expect(inbox.texts == ["once"])
        #expect(try bob.store.sessions(with: "alice").count == 1)
        // Even with the session gone, the base key is remembered: a later replay starts nothing.
        try await bob.store.dbQueue.write { db in try db.execute(sql: "DELETE FROM sessions") }
        try await alice.submitRaw(ciphertext, to: "bob", deviceID: 1)
        let later = try await bob.receiveAll()
        #expect(later.texts.isEmpty)
        #expect(try bob.store.sessions(with: "alice").isEmpty)
        await relay.stop()
    }

    @Test func aLaterPrekeyMessageUnderAnotherAccountsCertificateIsRefused() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        _ = try await alice.send(to: "bob", text: "first")
        #expect(try await bob.receiveAll().texts == ["first"])
        // alice's next message is still a prekey message; a relay relabels it with mallory's account key and a
        // certificate mallory made over alice's device key (valid, but not the session's).
        var session = try #require(try alice.store.sessions(with: "bob").first(where: \.active)).session
        var message = try ProtoSessionMessage(
            serializedBytes: try session.encrypt(MessageContent(messageID: SystemRandom().bytes(16), sentAtMilliseconds: 0, body: .text("x")).encoded()))
        guard case .prekeyMessage(var preKey) = message.kind else { Issue.record("expected a prekey message"); return }
        let mallory = AccountIdentity()
        let aliceDevice = try Ed25519PublicKey(rawRepresentation: preKey.deviceIdentityKey)
        preKey.accountIdentityKey = mallory.publicKey.rawRepresentation
        preKey.deviceCertificateSignature = mallory.certify(aliceDevice).signature
        message.kind = .prekeyMessage(preKey)
        try await alice.submitRaw(try message.serializedData(), to: "bob", deviceID: 1)
        let inbox = try await bob.receiveAll()
        #expect(inbox.texts.isEmpty)
        #expect(!inbox.warnings.contains { $0.contains("identity key of alice has changed") }, "\(inbox.warnings)")
        #expect(try bob.store.contact("alice")?.untrustedIdentityKey == nil, "no false identity change recorded")
        await relay.stop()
    }

    @Test func aSessionResetFromAnUntrustedKeyMovesNothing() async throws {
        let relay = try await InProcessRelay()
        let alice = try relay.client("alice"), bob = try relay.client("bob")
        _ = try await alice.initialize(relayURL: relay.url, handle: "alice")
        let code = try await bob.initialize(relayURL: relay.url, handle: "bob")
        let secretID = try await alice.send(to: "bob", text: "for bob's eyes only")
        #expect(try await bob.receiveAll().texts == ["for bob's eyes only"])
        func envelopeID() throws -> Data? {
            try alice.store.dbQueue.read { db in
                try Data.fetchOne(db, sql: "SELECT envelope_id FROM messages WHERE message_id = ?", arguments: [secretID])
            }
        }
        let oldEnvelope = try #require(try envelopeID())
        // Someone takes over bob's handle (a new identity key) and sends alice a reset naming that envelope.
        let taker = try relay.client("taker")
        _ = try await taker.initialize(relayURL: relay.url, handle: "bob", recoveryCode: code)
        var session = try Session.initiate(identity: try taker.requireAccount().device, bundle: try await taker.fetchBundleForTest("alice"))
        let reset = MessageContent(messageID: SystemRandom().bytes(16), sentAtMilliseconds: 0, body: .sessionReset(envelopeID: oldEnvelope))
        try await taker.submitRaw(try session.encrypt(reset.encoded()), to: "alice", deviceID: 1)
        let inbox = try await alice.receiveAll()
        #expect(inbox.warnings.contains { $0.contains("ignored a session reset from bob") }, "\(inbox.warnings)")
        // Nothing was re-encrypted to the new key: the taker receives nothing and the message kept its envelope.
        #expect(try await taker.receiveAll().texts.isEmpty)
        #expect(try envelopeID() == oldEnvelope)
        await relay.stop()
    }

    @Test func aOneTimeKEMPreKeySurvivesAForgedFirstMessage() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let bundle = try await alice.fetchBundleForTest("bob")
        var session = try Session.initiate(identity: try alice.requireAccount().device, bundle: bundle)
        var forged = try ProtoSessionMessage(
            serializedBytes: try session.encrypt(MessageContent(messageID: Data(count: 16), sentAtMilliseconds: 0, body: .text("x")).encoded()))
        guard case .prekeyMessage(var preKey) = forged.kind else { Issue.record("expected a prekey message"); return }
        preKey.ratchetMessage[preKey.ratchetMessage.count - 1] ^= 1
        forged.kind = .prekeyMessage(preKey)
        try await alice.submitRaw(try forged.serializedData(), to: "bob", deviceID: 1)
        _ = try await bob.receiveAll()
        let kemID = Int64(bundle.kemPreKey.id)
        #expect(try bob.count("SELECT COUNT(*) FROM kem_prekeys WHERE id = \(kemID)") == 1, "not burnt by a message that did not authenticate")
        #expect(try bob.store.sessions(with: "alice").filter { $0.session.baseKey == session.baseKey }.isEmpty)
        await relay.stop()
    }

    @Test func whenOneTimeKEMPreKeysRunOutTheLastResortOneIsUsedAndMarked() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        // Someone fetches bob's bundle until the relay's one-time KEM prekeys are gone.
        var kinds: [KEMPreKeyKind] = []
        for _ in 0..<(FlitzClient.kemPreKeyBatchSize + 1) { kinds.append(try await alice.fetchBundleForTest("bob").kemPreKey.kind) }
        #expect(kinds.filter { $0 == .oneTime }.count == FlitzClient.kemPreKeyBatchSize)
        #expect(kinds.last == .lastResort)
        _ = try await alice.send(to: "bob", text: "on the last resort")
        #expect(try alice.store.sessions(with: "bob")[0].session.usedLastResortPreKey)
        #expect(try alice.activeSessionUsesLastResortPreKey(with: "bob"))
        #expect(try await bob.receiveAll().texts == ["on the last resort"])
        #expect(try bob.store.sessions(with: "alice")[0].session.usedLastResortPreKey)
        #expect(try bob.count("SELECT COUNT(*) FROM kem_prekeys WHERE last_resort = 1") == 1, "the last-resort key is kept")
        // Bob's next connection tops the relay's stock up again.
        #expect(try await alice.fetchBundleForTest("bob").kemPreKey.kind == .oneTime)
        await relay.stop()
    }

    @Test func simultaneousInitiationConvergesOnOneSession() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        _ = try await alice.send(to: "bob", text: "a1")
        _ = try await bob.send(to: "alice", text: "b1")
        #expect(try await bob.receiveAll().texts == ["a1"])
        #expect(try await alice.receiveAll().texts == ["b1"])
        // Both picked the session with the lower base key, before any further round trip.
        let aliceActive = try alice.activeBaseKeys(with: "bob")
        #expect(aliceActive.count == 1)
        #expect(aliceActive == (try bob.activeBaseKeys(with: "alice")))
        _ = try await alice.send(to: "bob", text: "a2")
        _ = try await bob.send(to: "alice", text: "b2")
        #expect(try await bob.receiveAll().texts == ["a2"])
        #expect(try await alice.receiveAll().texts == ["b2"])
        #expect(try alice.activeBaseKeys(with: "bob") == aliceActive)
        #expect(try bob.activeBaseKeys(with: "alice") == aliceActive)
        #expect(try !alice.store.sessions(with: "bob").first(where: \.active)!.session.isAwaitingReply)
        await relay.stop()
    }

    @Test func anExpiredSignedPreKeyTriggersAResetAndTheMessageArrives() async throws {
        let relay = try await InProcessRelay()
        let clock = ManualClock()
        let (alice, bob) = try await relay.aliceAndBob(now: clock.now)
        // Alice starts a session on bob's signed prekey 1 and keeps sending prekey messages on it.
        _ = try await alice.send(to: "bob", text: "before the rotation")
        #expect(try await bob.receiveAll().texts == ["before the rotation"])
        // Bundles fetched now name signed prekey 1; they are used only later, after bob rotated.
        let early = try await alice.fetchBundleForTest("bob"), late = try await alice.fetchBundleForTest("bob")
        #expect(early.signedPreKeyID == 1 && late.signedPreKeyID == 1)
        clock.advance(days: 8)
        _ = try await bob.receiveAll()  // connects: rotates to signed prekey 2; 1 stays within the grace period
        #expect(try bob.count("SELECT COUNT(*) FROM signed_prekeys") == 2)
        #expect(try await alice.fetchBundleForTest("bob").signedPreKeyID == 2)
        _ = try await alice.sendOnANewSession(to: "bob", text: "within the grace period", bundle: early)
        #expect(try await bob.receiveAll().texts == ["within the grace period"])
        clock.advance(days: FlitzClient.signedPreKeyGracePeriod / 86_400)
        _ = try await bob.receiveAll()  // connects: signed prekey 1 is past its grace period and deleted
        #expect(try bob.count("SELECT COUNT(*) FROM signed_prekeys WHERE id = 1") == 0)
        let messageID = try await alice.sendOnANewSession(to: "bob", text: "after the grace period", bundle: late)
        let failed = try await bob.receiveAll()
        #expect(failed.texts.isEmpty)
        #expect(failed.warnings.contains { $0.contains("signed prekey expired") }, "\(failed.warnings)")
        #expect(failed.warnings.contains { $0.contains("started a new session with alice") }, "\(failed.warnings)")
        // Alice gets the reset, resends the same message on bob's new session, and bob reads it once.
        _ = try await alice.receiveAll()
        // The resend restarted the status: the first envelope was acknowledged but never read.
        #expect(try alice.localStatus(of: messageID) == .sent)
        let recovered = try await bob.receiveAll()
        #expect(recovered.texts == ["after the grace period"], "\(recovered.warnings)")
        #expect(try bob.count("SELECT COUNT(*) FROM messages WHERE outgoing = 0 AND text = 'after the grace period'") == 1)
        #expect(try alice.localStatus(of: messageID) != nil)
        await relay.stop()
    }

    @Test func aSessionBrokenByARestoredBackupIsReplacedOncePerInterval() async throws {
        let relay = try await InProcessRelay()
        let clock = ManualClock()
        let (alice, bob) = try await relay.aliceAndBob(now: clock.now)
        _ = try await alice.send(to: "bob", text: "hi")
        #expect(try await bob.receiveAll().texts == ["hi"])
        // Bob's session state as a backup would have it, then a few ratchet steps later it is restored.
        let backup = try bob.store.sessions(with: "alice")[0].session.serialized()
        _ = try await bob.send(to: "alice", text: "reply")
        #expect(try await alice.receiveAll().texts == ["reply"])
        _ = try await alice.send(to: "bob", text: "ratchets")
        #expect(try await bob.receiveAll().texts == ["ratchets"])
        // Bob's next message carries a ratchet key the backup never had; alice's answer builds on it.
        _ = try await bob.send(to: "alice", text: "reply 2")
        #expect(try await alice.receiveAll().texts == ["reply 2"])
        try await bob.store.dbQueue.write { db in try db.execute(sql: "UPDATE sessions SET record = ?", arguments: [backup]) }
        _ = try await alice.send(to: "bob", text: "lost on the old state?")
        let failed = try await bob.receiveAll()
        #expect(failed.texts.isEmpty)
        #expect(failed.warnings.contains { $0.contains("started a new session with alice") }, "\(failed.warnings)")
        _ = try await alice.receiveAll()
        #expect(try await bob.receiveAll().texts == ["lost on the old state?"])
        // Conversation continues on the new session both ways.
        _ = try await bob.send(to: "alice", text: "back")
        #expect(try await alice.receiveAll().texts == ["back"])
        // A second failure within the hour does not start another reset.
        let newest = try bob.store.sessions(with: "alice").first(where: \.active)!.session.serialized()
        _ = try await alice.send(to: "bob", text: "advance")
        _ = try await bob.receiveAll()
        _ = try await bob.send(to: "alice", text: "advance 2")
        _ = try await alice.receiveAll()
        try await bob.store.dbQueue.write { db in try db.execute(sql: "UPDATE sessions SET record = ? WHERE active = 1", arguments: [newest]) }
        _ = try await alice.send(to: "bob", text: "fails again")
        let again = try await bob.receiveAll()
        #expect(again.warnings.contains { $0.contains("could not decrypt a message from alice") }, "\(again.warnings)")
        #expect(!again.warnings.contains { $0.contains("started a new session") }, "\(again.warnings)")
        // An hour later the next failure may reset again.
        clock.advance(days: FlitzClient.sessionResetInterval / 86_400)
        _ = try await alice.send(to: "bob", text: "an hour later")
        let later = try await bob.receiveAll()
        #expect(later.warnings.contains { $0.contains("started a new session with alice") }, "\(later.warnings)")
        await relay.stop()
    }
}

extension FlitzClient {
    /// Fetches and verifies `handle`'s bundle on a fresh connection (consumes one-time prekeys).
    func fetchBundleForTest(_ handle: String) async throws -> PreKeyBundle {
        let account = try requireAccount()
        let bundle = try await withAuthenticatedConnection(account) { connection in
            try await self.fetchBundle(on: connection, handle: handle, deviceID: 1, account: account)
        }
        return try #require(bundle)
    }

    /// Sends `text` as a regular message of a brand-new session started from `bundle` (as an initiator
    /// holding an old bundle would), replacing any session with `handle`. Returns the message id.
    func sendOnANewSession(to handle: String, text: String, bundle: PreKeyBundle) async throws -> Data {
        let account = try requireAccount()
        let session = try Session.initiate(identity: account.device, bundle: bundle, random: random)
        let fresh = bundle
        try store.transaction { db in
            try db.execute(sql: "DELETE FROM sessions WHERE handle = ?", arguments: [handle])
            try ClientStore.save(session, handle: handle, deviceID: fresh.deviceID, makeActive: true, db)
        }
        return try await send(to: handle, text: text)
    }
}

/// Versioning (`protocol/relay.md`, "Versioning"): what a newer peer sends is kept, not lost or fatal.
@Suite(.serialized)
struct NewerPeerTests {
    @Test func aNewerSessionVersionAndAnUnknownContentKindAreKeptWithAWarning() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        _ = try await alice.send(to: "bob", text: "hello")
        #expect(try await bob.receiveAll().texts == ["hello"])
        // A SessionMessage of version 2.
        var newer = ProtoSessionMessage()
        newer.version = 2
        newer.kind = .ratchetMessage(Data(repeating: 7, count: 80))
        try await alice.submitRaw(try newer.serializedData(), to: "bob", deviceID: 1)
        // A real message of this session whose Content has a body kind from the future (field 5).
        var session = try #require(try alice.store.sessions(with: "bob").first(where: \.active)).session
        var content = Data([0x0a, 0x10]) + SystemRandom().bytes(16) + Data([0x2a, 0x02, 0x0a, 0x00])
        content += Data([0x7a, UInt8(64 - (content.count + 2) % 64)]) + Data(count: 64 - (content.count + 2) % 64)
        let future = try session.encrypt(content, random: SystemRandom())
        try alice.store.transaction { db in try ClientStore.save(session, handle: "bob", deviceID: 1, makeActive: true, db) }
        try await alice.submitRaw(future, to: "bob", deviceID: 1)
        _ = try await alice.send(to: "bob", text: "after")
        let inbox = try await bob.receiveAll()
        #expect(inbox.texts == ["after"], "the session went on past the unknown kind")
        #expect(inbox.warnings.filter { $0.contains("needs a newer version of Flitz") }.count == 2, "\(inbox.warnings)")
        #expect(!inbox.warnings.contains { $0.contains("started a new session") }, "no reset for a newer version")
        #expect(try bob.count("SELECT COUNT(*) FROM unsupported_messages WHERE kind = 'envelope'") == 1)
        #expect(try bob.count("SELECT COUNT(*) FROM unsupported_messages WHERE kind = 'content'") == 1)
        #expect(try await bob.receiveAll().warnings.isEmpty, "acknowledged, not redelivered")
        await relay.stop()
    }
}
