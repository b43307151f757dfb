import FlitzCrypto
import FlitzProtocol
import FlitzRelay
import FlitzWire
import Foundation
import GRDB
import Logging
import Synchronization
import Testing

@testable import FlitzClient

extension InProcessRelay {
    /// Links a new home `name` to `primary`'s account, both sides in this process, and checks that both showed
    /// the same fingerprint (`protocol/devices.md` section 5.3).
    func link(_ name: String, to primary: FlitzClient, now: @escaping @Sendable () -> Date = { Date() }) async throws -> FlitzClient {
        let device = try client(name, now: now)
        let (codes, continuation) = AsyncStream<String>.makeStream()
        let shown = Mutex<(primary: String?, device: String?)>((nil, nil))
        async let linked = primary.linkDevice(
            timeout: .seconds(60), pollInterval: .milliseconds(20),
            onCode: { code in
                continuation.yield(code)
                continuation.finish()
            },
            confirm: { fingerprint in
                shown.withLock { $0.primary = fingerprint }
                return true
            })
        var iterator = codes.makeAsyncIterator()
        let code = try #require(await iterator.next())
        #expect(code.hasPrefix("FLITZLINK1:") && code.count == 63)
        let (handle, deviceID) = try await device.initializeByLinking(
            code: code, relayURL: url, timeout: .seconds(60), pollInterval: .milliseconds(20), onFingerprint: { fingerprint in shown.withLock { $0.device = fingerprint } })
        let (primaryDeviceID, _) = try await linked
        #expect(handle == (try primary.handle()))
        #expect(primaryDeviceID == deviceID)
        let fingerprints = shown.withLock { $0 }
        #expect(fingerprints.primary != nil && fingerprints.primary == fingerprints.device)
        return device
    }

    /// `sender` writes to `handle` and every device in `devices` takes it in, so `handle`'s messages to `sender`
    /// are no message request (`protocol/conversations.md` section 9) and their receipts are not withheld.
    func introduce(_ sender: FlitzClient, to handle: String, devices: [FlitzClient]) async throws {
        _ = try await sender.send(to: handle, text: "hello \(handle)")
        for device in devices { _ = try await device.receiveAll() }
    }

    /// alice and bob with two devices each: (alice1, alice2, bob1, bob2), the first of each the primary.
    func twoDevicesEach() async throws -> (FlitzClient, FlitzClient, FlitzClient, FlitzClient) {
        let (alice1, bob1) = try await aliceAndBob()
        let alice2 = try await link("alice2", to: alice1)
        let bob2 = try await link("bob2", to: bob1)
        return (alice1, alice2, bob1, bob2)
    }
}

extension FlitzClient {
    /// Every receipt queued for this device, as the relay sent it; then applied and acknowledged as usual.
    func rawReceipts() async throws -> [WireReceipt] {
        let account = try requireAccount()
        return try await withAuthenticatedConnection(account) { connection in
            var receipts: [WireReceipt] = []
            while let frame = await connection.nextUnsolicited(timeout: .seconds(10)) {
                switch frame.body {
                case .deliver(let deliver):
                    receipts += deliver.receipts
                    _ = try await self.process(deliver, on: connection)  // applies and acknowledges them
                case .queueDrained: return receipts
                default: continue
                }
            }
            return receipts
        }
    }

    /// A `Submit` of one envelope per given device of `handle`, built by hand (not encrypted), for relay checks.
    func submitRaw(to handle: String, deviceIDs: [UInt32]) async throws -> ClientError? {
        let account = try requireAccount()
        return try await withAuthenticatedConnection(account) { connection in
            var submit = WireSubmit()
            submit.envelopes = deviceIDs.map { id in
                var envelope = WireOutgoingEnvelope()
                envelope.envelopeID = SystemRandom().bytes(16)
                envelope.recipientHandle = handle
                envelope.recipientDeviceID = id
                envelope.ciphertext = Data(repeating: 7, count: 64)
                envelope.group = 1
                return envelope
            }
            do {
                let answer = try await connection.request(.submit(submit))
                if case .submitResult(let result) = answer.body, let failed = result.outcomes.first(where: \.hasError) {
                    return ClientError(.refused(failed.error.code), failed.error.message, relayError: failed.error)
                }
                return nil
            } catch let error as ClientError {
                return error
            }
        }
    }
}

@Suite(.serialized)
struct MultiDeviceTests {
    /// A version 4 home upgrades: its account gets its public account key, its sent messages one envelope row each
    /// (with their status and, while pending, their ciphertext), and it is the primary.
    @Test func aVersion4DatabaseUpgrades() throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-v4-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: home) }
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        let account = AccountIdentity()
        let device = DeviceIdentity(account: account)
        do {
            let queue = try DatabaseQueue(path: home.appendingPathComponent(ClientStore.fileName).path)
            try ClientStore.migrator.migrate(queue, upTo: "v4-pqxdh")
            try queue.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO account (id, handle, relay_url, device_id, account_identity_seed, device_identity_seed,
                            device_certificate_signature, next_one_time_prekey_id) VALUES (1, 'alice', 'ws://x', 1, ?, ?, ?, 1)
                        """,
                    arguments: [account.privateKey.seed.unsafeData, device.privateKey.seed.unsafeData, device.certificate.signature])
                try db.execute(
                    sql: """
                        INSERT INTO messages (message_id, outgoing, peer, text, envelope_id, envelope, status, recipient_device_id)
                        VALUES (?, 1, 'bob', 'old', ?, ?, 'pending', 3)
                        """,
                    arguments: [Data(repeating: 1, count: 16), Data(repeating: 2, count: 16), Data([9, 9])])
            }
        }
        let store = try ClientStore(home: home)
        let loaded = try #require(try store.loadAccount())
        #expect(loaded.isPrimary && loaded.accountIdentityKey == account.publicKey)
        let row = try #require(try store.dbQueue.read { db in try Row.fetchOne(db, sql: "SELECT * FROM envelopes") })
        #expect(row["recipient_handle"] as String == "bob" && row["recipient_device_id"] as Int64 == 3)
        #expect(row["status"] as String == "pending" && row["ciphertext"] as Data == Data([9, 9]) && row["selected_devices"] as Bool)
    }

    @Test func registrationPublishesAListOfItself() async throws {
        let relay = try await InProcessRelay()
        let (alice, _) = try await relay.aliceAndBob()
        let devices = try await alice.devices()
        #expect(devices.count == 1)
        let only = try #require(devices.first)
        #expect(only.isThisDevice && only.isPrimary && only.deviceID == 1)
        #expect(only.registeredAt != nil)
        let account = try #require(try alice.store.loadAccount())
        #expect(only.fingerprint == DeviceFingerprint.of(identityKey: account.device.publicKey))
        let list = try #require(try await alice.store.dbQueue.read { db in try ClientStore.acceptedDeviceList("alice", account: account, db) })
        #expect(list.version == 1)
        await relay.stop()
    }

    /// The issue's scenario: a message from alice's first device reaches both of bob's devices and appears in
    /// the history of alice's second device; bob's reply likewise; nothing is shown twice.
    @Test func aMessageReachesEveryDeviceAndTheSendersOtherDevices() async throws {
        let relay = try await InProcessRelay()
        let (alice1, alice2, bob1, bob2) = try await relay.twoDevicesEach()
        #expect(try await alice2.devices().map(\.deviceID) == [1, 2])
        #expect(try await alice2.devices().first(where: \.isThisDevice)?.isPrimary == false)

        let id = try await alice1.send(to: "bob", text: "hello bob")
        let atBob1 = try await bob1.receiveAll()
        let atBob2 = try await bob2.receiveAll()
        #expect(atBob1.texts == ["hello bob"] && atBob2.texts == ["hello bob"])
        #expect(atBob1.messages.first?.messageID == id && atBob2.messages.first?.messageID == id)
        #expect(atBob1.messages.first?.from == "alice" && atBob1.messages.first?.to == nil)
        let atAlice2 = try await alice2.receiveAll()
        #expect(atAlice2.texts == ["hello bob"])
        #expect(atAlice2.messages.first?.to == "bob" && atAlice2.messages.first?.from == "alice")
        #expect(atAlice2.messages.first?.messageID == id)
        #expect(atBob1.warnings.isEmpty && atBob2.warnings.isEmpty && atAlice2.warnings.isEmpty, "\(atBob1.warnings + atBob2.warnings + atAlice2.warnings)")

        // The reply from bob's second device: both of alice's devices, and bob's first device's history.
        _ = try await bob2.send(to: "alice", text: "hi alice")
        #expect(try await alice1.receiveAll().texts == ["hi alice"])
        #expect(try await alice2.receiveAll().texts == ["hi alice"])
        let atBob1Again = try await bob1.receiveAll()
        #expect(atBob1Again.texts == ["hi alice"] && atBob1Again.messages.first?.to == "alice")
        // Nothing twice.
        for client in [alice1, alice2, bob1, bob2] { #expect(try await client.receiveAll().texts.isEmpty) }
        await relay.stop()
    }

    /// Delivered when the first of bob's devices acknowledges; seen once however many of bob's devices show it;
    /// the sender's other device learns both for its copy.
    @Test func receiptsAcrossDevices() async throws {
        let relay = try await InProcessRelay()
        let (alice1, alice2, bob1, bob2) = try await relay.twoDevicesEach()
        try await relay.introduce(bob1, to: "alice", devices: [alice1, alice2, bob2])
        let id = try await alice1.send(to: "bob", text: "one")
        #expect(try await alice1.status(of: id) == .sent)
        #expect(try await bob2.sync(onWarning: { _ in }) == 1)  // acknowledged, not shown
        #expect(try await alice1.status(of: id) == .delivered)
        #expect(try await alice2.receiveAll().texts == ["one"])
        #expect(try await alice2.status(of: id) == .delivered)
        #expect(try await bob1.receiveAll().texts == ["one"])  // shown: seen
        #expect(try await bob2.receiveAll().texts == ["one"])  // shown on the second device too
        let receipts = try await alice1.rawReceipts()
        #expect(receipts.filter { $0.kind == .seen }.count == 1, "\(receipts.map(\.kind))")
        #expect(receipts.filter { $0.kind == .delivered }.isEmpty, "delivered was reported once, already")
        #expect(try await alice1.status(of: id) == .seen)
        #expect(try await alice2.status(of: id) == .seen)
        await relay.stop()
    }

    /// A reader who turned seen receipts off emits none from any device, including one that was offline when
    /// the setting changed (it learns it at authentication).
    @Test func seenReceiptsOffOnOneDeviceSilencesEveryDevice() async throws {
        let relay = try await InProcessRelay()
        let (alice1, _, bob1, bob2) = try await relay.twoDevicesEach()
        try await bob1.setReadReceipts(false)
        let id = try await alice1.send(to: "bob", text: "quiet")
        #expect(try await bob2.receiveAll().texts == ["quiet"])
        #expect(try bob2.readReceipts() == false)
        #expect(try await bob1.receiveAll().texts == ["quiet"])
        let receipts = try await alice1.rawReceipts()
        #expect(receipts.contains { $0.kind == .delivered })
        #expect(!receipts.contains { $0.kind == .seen })
        #expect(try await alice1.status(of: id) == .delivered)
        await relay.stop()
    }

    /// The relay refuses a submission that misses a current device or names a stale one, storing nothing, and
    /// says which; the sender's own other devices count as well.
    @Test func missingAndStaleDevicesAreRejected() async throws {
        let relay = try await InProcessRelay()
        let (alice1, alice2, bob1, bob2) = try await relay.twoDevicesEach()
        let missing = try #require(try await alice1.submitRaw(to: "bob", deviceIDs: [1]))
        #expect(missing.kind == .refused(.mismatchedDevices))
        #expect(missing.relayError?.deviceMismatches.contains { $0.handle == "bob" && $0.missingDeviceIds == [2] } == true)
        let stale = try #require(try await alice1.submitRaw(to: "bob", deviceIDs: [1, 2, 9]))
        #expect(stale.kind == .refused(.mismatchedDevices))
        #expect(stale.relayError?.deviceMismatches.contains { $0.handle == "bob" && $0.staleDeviceIds == [9] } == true)
        let ownMissing = try #require(try await alice1.submitRaw(to: "bob", deviceIDs: [1, 2]))
        #expect(ownMissing.relayError?.deviceMismatches.contains { $0.handle == "alice" && $0.missingDeviceIds == [2] } == true)
        // Nothing was stored for any of them.
        for client in [alice2, bob1, bob2] { #expect(try await client.receiveAll().messages.isEmpty) }
        await relay.stop()
    }

    /// The client refreshes and retries by itself: a removed device (stale) is dropped at once; an added device
    /// (missing) is a pending list, refused with exit 4 until `trust`, then reached.
    @Test func theClientRefreshesAndRetriesAfterDeviceChanges() async throws {
        let relay = try await InProcessRelay()
        let (alice1, alice2, bob1, bob2) = try await relay.twoDevicesEach()
        try await relay.introduce(bob1, to: "alice", devices: [alice1, alice2, bob2])
        _ = try await alice1.send(to: "bob", text: "to both")
        #expect(try await bob2.receiveAll().texts == ["to both"])

        // Stale: bob removes his second device; alice still has its session and the old list.
        try await bob1.removeDevice(2)
        _ = try await alice1.send(to: "bob", text: "after the removal")
        #expect(try await bob1.receiveAll().texts == ["to both", "after the removal"])
        await #expect(throws: ClientError.self) { _ = try await bob2.receiveAll() }
        #expect(try alice1.store.sessions(with: "bob").allSatisfy { $0.deviceID == 1 })

        // Missing: bob links a third device; alice must accept it first.
        let bob3 = try await relay.link("bob3", to: bob1)
        do {
            _ = try await alice1.send(to: "bob", text: "not yet")
            Issue.record("sent to a device not accepted")
        } catch let error as ClientError {
            #expect(error.kind == .identityChanged && error.exitCode == 4, "\(error)")
        }
        _ = try await alice1.trust("bob")
        let id = try await alice1.send(to: "bob", text: "welcome")
        #expect(try await bob3.receiveAll().texts == ["welcome"])
        #expect(try await bob1.receiveAll().texts == ["welcome"])
        // alice's second device saw every sent message once, the refused one never.
        #expect(try await alice2.receiveAll().texts == ["to both", "after the removal", "welcome"])
        #expect(try await alice1.status(of: id) == .seen)
        await relay.stop()
    }

    @Test func onlyThePrimaryLinksRemovesAndDeletes() async throws {
        let relay = try await InProcessRelay()
        let (alice1, alice2, _, _) = try await relay.twoDevicesEach()
        await #expect(throws: ClientError.self) { try await alice2.removeDevice(1) }
        await #expect(throws: ClientError.self) { try await alice2.deleteAccount() }
        await #expect(throws: ClientError.self) { try await alice1.removeDevice(1) }
        await #expect(throws: ClientError.self) { try await alice1.removeDevice(7) }
        #expect(try await alice1.devices().count == 2)
        await relay.stop()
    }

    @Test func sendingToADeletedAccountFailsClearly() async throws {
        let relay = try await InProcessRelay()
        let (alice1, alice2, bob1, bob2) = try await relay.twoDevicesEach()
        _ = try await alice1.send(to: "bob", text: "before")
        try await bob1.deleteAccount()
        for attempt in ["with sessions", "again"] {
            do {
                _ = try await alice1.send(to: "bob", text: attempt)
                Issue.record("sent to a deleted account")
            } catch let error as ClientError {
                #expect(error.kind == .refused(.unknownRecipient) && error.exitCode == 3)
                #expect(error.message.contains("no such handle bob (deleted or never registered)"), "\(error)")
            }
        }
        // The refused sends were refused whole (relay.md, "Submit"): alice's other device never shows them as sent.
        #expect(try await alice2.receiveAll().texts == ["before"])
        let shownSent = try await alice1.store.dbQueue.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM messages WHERE text IN ('with sessions', 'again') AND status != 'pending'")
        }
        #expect(shownSent == 0)
        let stranger = try relay.client("carol")
        _ = try await stranger.initialize(relayURL: relay.url, handle: "carol")
        await #expect(throws: ClientError.self) { _ = try await stranger.send(to: "bob", text: "hi") }
        await #expect(throws: ClientError.self) { _ = try await bob1.receiveAll() }
        await #expect(throws: ClientError.self) { _ = try await bob2.receiveAll() }
        await relay.stop()
    }

    /// devices.md 4.4, "Incoming messages": a device with a valid certificate under bob's account key, registered
    /// at the relay but not in bob's signed list (as a relay replaying a certificate could do), is refused
    /// after one list fetch: its message is acknowledged undecrypted with a warning, and bob's real device works.
    @Test func aMessageFromADeviceNotInTheSendersListIsRefused() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        _ = try await bob.send(to: "alice", text: "hello")
        #expect(try await alice.receiveAll().texts == ["hello"])
        let bobAccount = try #require(try bob.store.loadAccount()?.accountIdentity)
        let rogue = DeviceIdentity(account: bobAccount)
        let preKeys = RegistrationPreKeys(
            signedPreKey: SignedPreKeyPair(id: 1, device: rogue), oneTimePreKeys: [OneTimePreKeyPair(id: 1)],
            lastResortKEMPreKey: KEMPreKeyPair(id: 1, kind: .lastResort, device: rogue), oneTimeKEMPreKeys: [])
        let logger = Logger(label: "rogue")
        let deviceID = try await RelayConnection.with(url: relay.url, logger: logger) { connection -> UInt32 in
            let challenge = try await FlitzClient.challenge(connection)
            var register = WireRegisterDevice()
            register.handle = "bob"
            register.device = FlitzClient.wireKeys(rogue, preKeys)
            register.challengeSignature = rogue.privateKey.signature(for: SignedPayload.authentication(nonce: challenge.nonce, handle: "bob"))
            guard case .registerResult(let result) = try await connection.request(.registerDevice(register)).body else { throw CancellationError() }
            return result.deviceID
        }
        try await RelayConnection.with(url: relay.url, logger: logger) { connection in
            let challenge = try await FlitzClient.challenge(connection)
            var authenticate = WireAuthenticate()
            authenticate.handle = "bob"
            authenticate.deviceID = deviceID
            authenticate.signature = rogue.privateKey.signature(for: SignedPayload.authentication(nonce: challenge.nonce, handle: "bob"))
            _ = try await connection.request(.authenticate(authenticate))
            var fetch = WireFetchPreKeyBundle()
            fetch.handle = "alice"
            guard case .prekeyBundle(let wire) = try await connection.request(.fetchPrekeyBundle(fetch)).body, let device = wire.devices.first
            else { throw CancellationError() }
            let bundle = try alice.verifiedBundle(device, accountIdentityKey: wire.accountIdentityKey, handle: "alice")
            var session = try Session.initiate(identity: rogue, bundle: bundle)
            var envelope = WireOutgoingEnvelope()
            envelope.envelopeID = SystemRandom().bytes(16)
            envelope.recipientHandle = "alice"
            envelope.recipientDeviceID = device.deviceID
            envelope.ciphertext = try session.encrypt(
                MessageContent(messageID: SystemRandom().bytes(16), sentAtMilliseconds: 1, body: .text("from a rogue device")).encoded())
            var submit = WireSubmit()
            submit.envelopes = [envelope]
            submit.selectedDevices = true
            _ = try await connection.request(.submit(submit))
        }
        let oneTimePreKeys = try await alice.store.dbQueue.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM one_time_prekeys") }
        let inbox = try await alice.receiveAll()
        #expect(inbox.texts.isEmpty)
        #expect(inbox.warnings.contains { $0.contains("not in their signed device list") }, "\(inbox.warnings)")
        #expect(try await alice.store.dbQueue.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM one_time_prekeys") } == oneTimePreKeys)
        #expect(try alice.store.sessions(with: "bob").allSatisfy { $0.deviceID == 1 })
        _ = try await bob.send(to: "alice", text: "still me")
        #expect(try await alice.receiveAll().texts == ["still me"])
        await relay.stop()
    }

    /// devices.md 4.4: a served list older than the accepted one (rollback) or another list of the same version
    /// (equivocation) is refused, and sending stops; the accepted list stays.
    @Test func rollbackAndEquivocationAreRefused() async throws {
        let relay = try await InProcessRelay()
        let (alice, _) = try await relay.aliceAndBob()
        let account = try #require(try alice.store.loadAccount())
        let bobAccount = AccountIdentity()
        let key = bobAccount.publicKey.rawRepresentation
        try alice.store.transaction { db in try ClientStore.trustIdentity("bob", key: key, db) }
        func list(_ version: UInt64, _ ids: [UInt32]) throws -> WireSignedDeviceList {
            let payload = DeviceListPayload(
                accountIdentityKey: key, version: version, issuedAtMs: 1,
                entries: ids.map { .init(deviceID: $0, deviceIdentityKey: Data(repeating: UInt8($0), count: 32)) })
            return try SignedDeviceList.signed(payload, with: bobAccount).wire
        }
        let v2 = try list(2, [1, 2])
        #expect(try alice.considerDeviceList(v2, handle: "bob", servedAccountKey: key, account: account, forSending: true) == .accepted(removedDeviceIDs: []))
        #expect(throws: ClientError.self) {
            try alice.considerDeviceList(try list(1, [1]), handle: "bob", servedAccountKey: key, account: account, forSending: true)
        }
        #expect(throws: ClientError.self) {
            try alice.considerDeviceList(try list(2, [1, 3]), handle: "bob", servedAccountKey: key, account: account, forSending: true)
        }
        #expect(try await alice.store.dbQueue.read { db in try ClientStore.acceptedDeviceList("bob", account: account, db) }?.wire == v2)
        // A removal only: accepted at once.
        #expect(try alice.considerDeviceList(try list(3, [1]), handle: "bob", servedAccountKey: key, account: account, forSending: true)
            == .accepted(removedDeviceIDs: [2]))
        await relay.stop()
    }
}

/// A message whose Submit to every device would exceed the relay's frame limit (`protocol/crypto.md`, "Limits").
@Suite struct OversizeSubmitTests {
    /// alice with 2 devices, bob with 16: a 63 000-byte message is 17 envelopes, over 1 MiB in one Submit. It is
    /// refused before submitting and nothing stays stored; the limit named fits; a stored oversize group (as a
    /// crash could leave) is given up with a warning instead of closing every later connection.
    @Test func aSubmitOverTheFrameLimitIsRefusedAndNeverWedges() async throws {
        // Linking 15 devices polls LinkTake often from one address.
        let relay = try await InProcessRelay(linkRateLimit: RateLimit(perMinute: 6_000, burst: 6_000))
        let (alice1, alice2, bob1, _) = try await relay.twoDevicesEach()
        for index in 3...16 { _ = try await relay.link("bob\(index)", to: bob1) }
        let long = String(repeating: "x", count: FlitzClient.maxTextBytes)
        var limit = 0
        do {
            _ = try await alice1.send(to: "bob", text: long)
            Issue.record("an oversize Submit was sent")
        } catch let error as ClientError {
            #expect(error.kind == .invalidArgument && error.exitCode == 1, "\(error)")
            #expect(error.message.contains("too long to send to 17 devices at once: at most "), "\(error)")
            let words = error.message.split(separator: " ")
            limit = words.count >= 2 ? Int(words[words.count - 2]) ?? 0 : 0
        }
        #expect(limit > 50_000 && limit < FlitzClient.maxTextBytes, "\(limit)")
        let stored = try await alice1.store.dbQueue.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM messages") }
        #expect(stored == 0)
        // The limit named is sendable to the same 17 devices.
        let fitting = String(repeating: "y", count: limit)
        _ = try await alice1.send(to: "bob", text: fitting)
        #expect(try await bob1.receiveAll().texts == [fitting])
        #expect(try await alice2.receiveAll().messages.count == 1)
        // An oversize group stored as pending (a process killed between storing and submitting).
        let account = try alice1.requireAccount()
        _ = try await alice1.withAuthenticatedConnection(account) { connection in
            try await alice1.prepare(on: connection, account: account, to: "bob", text: long, expiresIn: nil, messageID: Data(repeating: 7, count: 16))
        }
        _ = try await alice1.send(to: "bob", text: "after")
        #expect(try await bob1.receiveAll().texts == ["after"])
        let unsent = try await alice1.store.dbQueue.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM envelopes WHERE status = 'pending' AND ciphertext IS NOT NULL")
        }
        #expect(unsent == 0)
        await relay.stop()
    }
}

/// `trust --safety-number` and `verify --safety-number` while a contact's device list adding a device is pending
/// (`protocol/devices.md` section 4.4; README exit codes: 1 a wrong number, 4 not trusted yet).
@Suite struct PendingDeviceListTrustTests {
    @Test func aWrongNumberAcceptsNothingAndVerifyNamesThePendingList() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob1) = try await relay.aliceAndBob()
        _ = try await alice.send(to: "bob", text: "hello")
        _ = try await relay.link("bob2", to: bob1)
        await #expect(throws: ClientError.self) { _ = try await alice.send(to: "bob", text: "not yet") }
        let number = try alice.verification(of: "bob").safetyNumber
        let wrong = String(number.reversed())
        #expect(wrong.filter(\.isNumber) != number.filter(\.isNumber))
        do {
            _ = try await alice.trust("bob", expectedSafetyNumber: wrong)
            Issue.record("a wrong safety number accepted the device list")
        } catch let error as ClientError {
            #expect(error.kind == .safetyNumberMismatch && error.exitCode == 1, "\(error)")
        }
        do {
            _ = try await alice.send(to: "bob", text: "still not")
            Issue.record("sent to a device not accepted")
        } catch let error as ClientError {
            #expect(error.kind == .identityChanged && error.exitCode == 4, "\(error)")
        }
        do {
            _ = try alice.verify("bob", safetyNumber: number)
            Issue.record("verified while a device list is pending")
        } catch let error as ClientError {
            #expect(error.kind == .identityChanged && error.exitCode == 4 && error.message.contains("new device"), "\(error)")
        }
        #expect(try await alice.trust("bob", expectedSafetyNumber: number) == number)
        _ = try await alice.send(to: "bob", text: "welcome")
        #expect(try alice.verify("bob", safetyNumber: number).state == .verified)
        #expect(try await bob1.receiveAll().texts == ["hello", "welcome"])
        await relay.stop()
    }
}

/// `flitz init --link` waits up to `--timeout` even when the user confirms after the relay's
/// `relay.authenticationTimeout` closed the new device's unauthenticated connection (`protocol/devices.md` 5.3).
@Suite struct SlowLinkConfirmationTests {
    @Test func theNewDeviceReconnectsWhileTheUserConfirms() async throws {
        // 8 s, not less: every connection of this relay (registrations, the link offer) must get its first frames
        // through within it, and a loaded 2-core machine running the whole suite starved 1 s and 3 s ones into
        // "connection to the relay closed". The test waits about this long for the relay to close the probe.
        let relay = try await InProcessRelay(authenticationTimeout: .seconds(8), linkRateLimit: RateLimit(perMinute: 6_000, burst: 6_000))
        let alice = try relay.client("alice")
        _ = try await alice.initialize(relayURL: relay.url, handle: "alice")
        let bob = try relay.client("bob")
        _ = try await bob.initialize(relayURL: relay.url, handle: "bob")
        let device = try relay.client("alice2")
        let (codes, continuation) = AsyncStream<String>.makeStream()
        let url = relay.url
        let closedBeforeConfirming = Mutex(false)
        async let linked = alice.linkDevice(
            timeout: .seconds(60), pollInterval: .milliseconds(20),
            onCode: { code in
                continuation.yield(code)
                continuation.finish()
            },
            confirm: { _ in
                // The offer is stored, so the new device's connection is open since before this one: once the
                // relay closes this unauthenticated connection, its authentication timeout has passed too.
                let closed = try? await RelayConnection.with(url: url, logger: Logger(label: "probe")) { connection -> Bool in
                    _ = try await FlitzClient.challenge(connection)
                    while await connection.nextUnsolicited(timeout: .seconds(30)) != nil {}
                    do {
                        _ = try await connection.request(.linkTake(WireLinkTake()))
                        return false
                    } catch let error as ClientError {
                        return error.kind == .relayUnreachable && error.message.contains("closed")
                    }
                }
                closedBeforeConfirming.withLock { $0 = closed ?? false }
                return true
            })
        var iterator = codes.makeAsyncIterator()
        let code = try #require(await iterator.next())
        let (handle, deviceID) = try await device.initializeByLinking(
            code: code, relayURL: relay.url, timeout: .seconds(60), pollInterval: .milliseconds(20), onFingerprint: { _ in })
        let (primarySaw, _) = try await linked
        #expect(closedBeforeConfirming.withLock { $0 })
        #expect(handle == "alice" && deviceID == primarySaw)
        // The linked device works: a contact's message reaches it.
        _ = try await bob.send(to: "alice", text: "hi both")
        #expect(try await device.receiveAll().texts == ["hi both"])
        await relay.stop()
    }
}
