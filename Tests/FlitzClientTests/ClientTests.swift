import FlitzCrypto
import FlitzProtocol
import FlitzRelay
import FlitzStore
import FlitzWire
import Foundation
import GRDB
import Logging
import Testing

@testable import FlitzClient

/// A relay running in this process on a free loopback port with a temporary SQLite file.
final class InProcessRelay: Sendable {
    let application: RelayApplication
    let directory: URL
    let url: String
    private let task: Task<Void, any Error>

    /// - Parameter linkRateLimit: the per-address limit on RegisterDevice/LinkPut/LinkTake; tests that link many
    ///   devices from one address in a few seconds raise it (the limits themselves are tested in RateLimitTests).
    ///   `allowPrivatePushEndpoints`: `push.allowPrivateEndpoints`, for tests that register loopback Web Push URLs.
    init(
        maxQueuedEnvelopes: Int = 10_000, authenticationTimeout: Duration = .seconds(30), linkRateLimit: RateLimit? = nil,
        allowPrivatePushEndpoints: Bool = false, clock: any RelayClock = SystemRelayClock()
    ) async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-client-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var logger = Logger(label: "relay")
        logger.logLevel = .critical
        var configuration = RelayConfiguration(
            port: 0, databasePath: directory.appendingPathComponent("relay.sqlite").path, maxQueuedEnvelopes: maxQueuedEnvelopes)
        configuration.authenticationTimeout = authenticationTimeout
        if let linkRateLimit { configuration.rateLimits.linkAddress = linkRateLimit }
        configuration.push.allowPrivateEndpoints = allowPrivatePushEndpoints
        let application = try await buildRelay(configuration: configuration, logger: logger, clock: clock)
        self.application = application
        task = Task { try await application.run(handleSignals: false) }
        url = "ws://127.0.0.1:\(await application.port())"
    }

    func client(_ name: String, now: @escaping @Sendable () -> Date = { Date() }) throws -> FlitzClient {
        var logger = Logger(label: name)
        logger.logLevel = .critical
        return try FlitzClient(home: directory.appendingPathComponent(name), logger: logger, now: now)
    }

    /// Two registered users, alice and bob.
    func aliceAndBob(now: @escaping @Sendable () -> Date = { Date() }) async throws -> (FlitzClient, FlitzClient) {
        let alice = try client("alice", now: now), bob = try client("bob", now: now)
        _ = try await alice.initialize(relayURL: url, handle: "alice")
        _ = try await bob.initialize(relayURL: url, handle: "bob")
        return (alice, bob)
    }

    /// Shuts the relay down and waits until it has stopped (its port is closed), keeping the directory.
    func shutDown() async {
        await application.triggerGracefulShutdown()
        _ = await task.result
    }

    func stop() async {
        await shutDown()
        try? FileManager.default.removeItem(at: directory)
    }
}

/// Collects what a receive produced.
final class Inbox: Sendable {
    private let state = Mutex<(messages: [ReceivedMessage], warnings: [String])>(([], []))
    var messages: [ReceivedMessage] { state.withLock { $0.messages } }
    var texts: [String] { messages.map(\.text) }
    var warnings: [String] { state.withLock { $0.warnings } }
    func add(_ message: ReceivedMessage) { state.withLock { $0.messages.append(message) } }
    func warn(_ text: String) { state.withLock { $0.warnings.append(text) } }
}

import Synchronization

extension FlitzClient {
    func receiveAll(wait: Duration = .zero) async throws -> Inbox {
        let inbox = Inbox()
        try await receive(wait: wait, onMessage: { inbox.add($0) }, onWarning: { inbox.warn($0) })
        return inbox
    }
}

@Suite(.serialized)
struct ClientTests {
    @Test func statusNeverGoesBack() {
        #expect(MessageStatus.sent.canAdvance(to: .delivered))
        #expect(MessageStatus.sent.canAdvance(to: .seen))
        #expect(MessageStatus.delivered.canAdvance(to: .seen))
        #expect(MessageStatus.sent.canAdvance(to: .expired))
        #expect(!MessageStatus.seen.canAdvance(to: .delivered))
        #expect(!MessageStatus.delivered.canAdvance(to: .expired))
        #expect(!MessageStatus.seen.canAdvance(to: .expired))
        #expect(!MessageStatus.delivered.canAdvance(to: .sent))
    }

    @Test func readReceiptsOffNeverReportSeen() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        try await bob.setReadReceipts(false)
        let id = try await alice.send(to: "bob", text: "private")
        #expect(try await bob.receiveAll().texts == ["private"])
        #expect(try await alice.status(of: id) == .delivered)
        try await bob.setReadReceipts(true)
        #expect(try await bob.receiveAll().texts.isEmpty)
        #expect(try await alice.status(of: id) == .delivered, "read while off: never reported later")
        await relay.stop()
    }

    @Test func undecryptableEnvelopeWarnsAndDoesNotBlockTheQueue() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        _ = try await alice.send(to: "bob", text: "hello")
        // Alice's device submits garbage and a tampered copy of a real ciphertext to bob.
        let account = try #require(try alice.store.loadAccount())
        let bobDevice = try #require(try alice.store.sessions(with: "bob").first).deviceID
        var session = try #require(try alice.store.sessions(with: "bob").first).session
        // Flip the last byte of the ratchet message (its tag), wherever it sits in the SessionMessage.
        var message = try ProtoSessionMessage(
            serializedBytes: try session.encrypt(MessageContent(messageID: Data(count: 16), sentAtMilliseconds: 0, body: .text("x")).encoded()))
        switch message.kind {
        case .prekeyMessage(var preKey):
            preKey.ratchetMessage[preKey.ratchetMessage.count - 1] ^= 0x01
            message.kind = .prekeyMessage(preKey)
        case .ratchetMessage(var bytes):
            bytes[bytes.count - 1] ^= 0x01
            message.kind = .ratchetMessage(bytes)
        case nil:
            Issue.record("empty session message")
        }
        let tampered = try message.serializedData()
        let ciphertexts = [Data("not a session message".utf8), tampered]
        try await alice.withAuthenticatedConnection(account) { connection in
            var submit = WireSubmit()
            for ciphertext in ciphertexts {
                var envelope = WireOutgoingEnvelope()
                envelope.envelopeID = SystemRandom().bytes(16)
                envelope.recipientHandle = "bob"
                envelope.recipientDeviceID = bobDevice
                envelope.ciphertext = ciphertext
                submit.envelopes.append(envelope)
            }
            _ = try await connection.request(.submit(submit))
        }
        _ = try await alice.send(to: "bob", text: "after the garbage")
        let inbox = try await bob.receiveAll()
        #expect(inbox.texts == ["hello", "after the garbage"])
        #expect(inbox.warnings.filter { $0.contains("could not decrypt a message from alice") }.count == 2)
        // The tampered message failed authentication in alice's session, so bob replaced it (once).
        #expect(inbox.warnings.filter { $0.contains("started a new session with alice") }.count == 1)
        #expect(inbox.warnings.count == 3)
        #expect(try await bob.receiveAll().warnings.isEmpty, "the bad envelopes were acknowledged, not redelivered")
        await relay.stop()
    }

    @Test func retryUnderANewEnvelopeIDIsShownOnce() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let id = try await alice.send(to: "bob", text: "once")
        // A crashed sender re-encrypts the same content (same message id) under a new envelope id.
        let account = try #require(try alice.store.loadAccount())
        let stored = try #require(try alice.store.sessions(with: "bob").first)
        var session = stored.session
        let again = try session.encrypt(MessageContent(messageID: id, sentAtMilliseconds: 0, body: .text("once")).encoded())
        try await alice.withAuthenticatedConnection(account) { connection in
            var envelope = WireOutgoingEnvelope()
            envelope.envelopeID = SystemRandom().bytes(16)
            envelope.recipientHandle = "bob"
            envelope.recipientDeviceID = stored.deviceID
            envelope.ciphertext = again
            var submit = WireSubmit()
            submit.envelopes = [envelope]
            _ = try await connection.request(.submit(submit))
        }
        let inbox = try await bob.receiveAll()
        #expect(inbox.texts == ["once"])
        #expect(inbox.messages.first?.messageID == id)
        await relay.stop()
    }

    @Test func redeliveryAfterALostAcknowledgementIsQuiet() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        _ = try await alice.send(to: "bob", text: "stored once")
        // Bob stores the envelope, then the connection drops before his acknowledgement.
        let account = try #require(try bob.store.loadAccount())
        try await bob.withAuthenticatedConnection(account) { connection in
            while let frame = await connection.nextUnsolicited(timeout: .seconds(10)) {
                if case .deliver(let deliver) = frame.body {
                    for envelope in deliver.envelopes { _ = try await bob.accept(envelope, listChecked: true).events }
                    return
                }
            }
        }
        let inbox = try await bob.receiveAll()
        #expect(inbox.texts == ["stored once"])
        #expect(inbox.warnings.isEmpty, "\(inbox.warnings)")
        await relay.stop()
    }

    @Test func messagesFromAChangedKeyAreFlaggedUntilTrusted() async throws {
        let relay = try await InProcessRelay()
        let alice = try relay.client("alice"), bob = try relay.client("bob")
        let code = try await alice.initialize(relayURL: relay.url, handle: "alice")
        _ = try await bob.initialize(relayURL: relay.url, handle: "bob")
        _ = try await alice.send(to: "bob", text: "from the real alice")
        #expect(try await bob.receiveAll().messages.map(\.untrustedSender) == [false])
        // Someone takes over alice's handle with her recovery code and writes to bob.
        let impostor = try relay.client("alice-new-phone")
        _ = try await impostor.initialize(relayURL: relay.url, handle: "alice", recoveryCode: code)
        _ = try await impostor.send(to: "bob", text: "send me the code")
        // The warning comes when the queue is drained; the flag stays with the message.
        let warnings = Inbox()
        #expect(try await bob.sync(onWarning: { warnings.warn($0) }) == 1)
        #expect(warnings.warnings.count == 1)
        let shown = try await bob.receiveAll()
        #expect(shown.texts == ["send me the code"])
        #expect(shown.messages.map(\.untrustedSender) == [true])
        // Bob cannot reply until he trusts the new key, and only the key he was shown.
        await #expect(throws: ClientError.self) { _ = try await bob.send(to: "alice", text: "who is this?") }
        let numbers = try bob.safetyNumbers(with: "alice")
        let untrusted = try #require(numbers.untrusted)
        #expect(untrusted != numbers.trusted)
        #expect(try await bob.trust("alice", expectedSafetyNumber: untrusted) == untrusted)
        _ = try await impostor.send(to: "bob", text: "now trusted")
        let after = try await bob.receiveAll()
        #expect(after.messages.map(\.untrustedSender) == [false], "\(after.warnings)")
        _ = try await bob.send(to: "alice", text: "ok, hello")
        #expect(try await impostor.receiveAll().texts == ["ok, hello"])
        await relay.stop()
    }

    @Test func aMessageLeftUnsentByACrashIsSentFirstNextTime() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        // bob has written to alice, so he reports her messages seen (no message request).
        _ = try await bob.send(to: "alice", text: "hello alice")
        // Encrypted and stored, then the process "dies" before submitting.
        let account = try #require(try alice.store.loadAccount())
        let orphan = try await alice.withAuthenticatedConnection(account) { connection in
            try await alice.prepare(
                on: connection, account: account, to: "bob", text: "written before the crash", expiresIn: nil, messageID: Data(repeating: 1, count: 16))
        }
        #expect(try alice.localStatus(of: orphan.messageID) == .pending)
        let next = try await alice.send(to: "bob", text: "after restart")
        #expect(try alice.localStatus(of: orphan.messageID) == .sent)
        #expect(try await bob.receiveAll().texts == ["written before the crash", "after restart"])
        #expect(try await alice.status(of: next) == .seen)
        await relay.stop()
    }

    @Test func aDeviceRunningLowOnOneTimePreKeysReplenishes() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let bobDevice = DeviceAddress(handle: "bob", deviceID: try #require(try bob.store.loadAccount()).deviceID)
        #expect(try await relay.application.relay.store.oneTimePreKeyCount(device: bobDevice) == FlitzClient.preKeyBatchSize)
        // Someone fetches bob's bundle 85 times: 15 one-time prekeys are left, under the threshold of 20.
        let account = try #require(try alice.store.loadAccount())
        try await alice.withAuthenticatedConnection(account) { connection in
            var fetch = WireFetchPreKeyBundle()
            fetch.handle = "bob"
            for _ in 0..<85 { _ = try await connection.request(.fetchPrekeyBundle(fetch)) }
        }
        #expect(try await relay.application.relay.store.oneTimePreKeyCount(device: bobDevice) == 15)
        // Bob's next connection learns the stock is low and publishes a batch.
        _ = try await bob.sync(onWarning: { _ in })
        #expect(try await relay.application.relay.store.oneTimePreKeyCount(device: bobDevice) == 15 + FlitzClient.preKeyBatchSize)
        await relay.stop()
    }

    @Test func aRegistrationWhoseAnswerWasLostIsFinishedByInitAgain() async throws {
        let relay = try await InProcessRelay()
        let alice = try relay.client("alice")
        let firstCode = try await alice.initialize(relayURL: relay.url, handle: "alice")
        let deviceID = try #require(try alice.store.loadAccount()).deviceID
        // As if the relay committed but its answer never arrived: the keys are stored, not confirmed.
        try await alice.store.dbQueue.write { db in try db.execute(sql: "UPDATE account SET registered = 0, device_id = 0") }
        await #expect(throws: ClientError.self) { _ = try await alice.send(to: "bob", text: "too early") }
        let refusedOther = await #expect(throws: ClientError.self) { _ = try await alice.initialize(relayURL: relay.url, handle: "carol") }
        #expect(refusedOther?.kind == .invalidArgument)
        let secondCode = try await alice.initialize(relayURL: relay.url, handle: "alice")
        #expect(secondCode != firstCode)
        #expect(try alice.store.loadAccount()?.deviceID == deviceID)
        // The registration works: bob can reach alice.
        let bob = try relay.client("bob")
        _ = try await bob.initialize(relayURL: relay.url, handle: "bob")
        _ = try await bob.send(to: "alice", text: "hi")
        #expect(try await alice.receiveAll().texts == ["hi"])
        await relay.stop()
    }

    @Test func aRefusedOrUnreachableRegistrationCanBeRetried() async throws {
        let relay = try await InProcessRelay()
        _ = try await relay.client("taken").initialize(relayURL: relay.url, handle: "alice")
        let newcomer = try relay.client("newcomer")
        let taken = await #expect(throws: ClientError.self) { _ = try await newcomer.initialize(relayURL: relay.url, handle: "alice") }
        #expect(taken?.kind == .refused(.handleTaken))
        // Refused: nothing pending, another handle works.
        _ = try await newcomer.initialize(relayURL: relay.url, handle: "carol")
        #expect(try newcomer.handle() == "carol")
        // Unreachable: the keys wait for a retry.
        let offline = try relay.client("offline")
        let unreachable = await #expect(throws: ClientError.self) {
            _ = try await offline.initialize(relayURL: "ws://127.0.0.1:1", handle: "dave")
        }
        #expect(unreachable?.kind == .relayUnreachable)
        _ = try await offline.initialize(relayURL: relay.url, handle: "dave")
        #expect(try offline.handle() == "dave")
        await relay.stop()
    }

    @Test func aRefusedSendIsGivenUpNotResentLater() async throws {
        let relay = try await InProcessRelay(maxQueuedEnvelopes: 1)
        let (alice, bob) = try await relay.aliceAndBob()
        _ = try await alice.send(to: "bob", text: "m1")
        let refused = await #expect(throws: ClientError.self) { _ = try await alice.send(to: "bob", text: "m2") }
        #expect(refused?.kind == .refused(.queueFull))
        #expect(try await bob.receiveAll().texts == ["m1"])
        _ = try await alice.send(to: "bob", text: "m3")
        #expect(try await bob.receiveAll().texts == ["m3"], "the refused message is not delivered behind the user's back")
        let leftovers = try await alice.store.dbQueue.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM messages WHERE envelope IS NOT NULL") ?? -1
        }
        #expect(leftovers == 0)
        await relay.stop()
    }

    @Test func unreachableRelayTimesOut() async throws {
        let relay = try await InProcessRelay()
        let alice = try relay.client("alice")
        _ = try await alice.initialize(relayURL: relay.url, handle: "alice")
        // Waits for the port to close: right after the trigger the listener may still accept, and a connection the
        // relay then never upgrades hung the whole suite once (the WebSocket upgrade has no timeout of its own).
        await relay.shutDown()
        let error = await #expect(throws: ClientError.self) {
            _ = try await alice.send(to: "bob", text: "hi", timeout: .milliseconds(300))
        }
        #expect(error?.kind == .relayUnreachable)
        #expect(error?.exitCode == 2)
        await relay.stop()
    }

    @Test func storeOpensAgainAndMigrationsAreRecorded() async throws {
        let relay = try await InProcessRelay()
        let alice = try relay.client("alice")
        _ = try await alice.initialize(relayURL: relay.url, handle: "alice")
        let reopened = try relay.client("alice")
        #expect(try reopened.handle() == "alice")
        let applied = try await reopened.store.dbQueue.read { db in try ClientStore.migrator.appliedMigrations(db) }
        #expect(applied.starts(with: ["v1", "v2", "v3-verified", "v4-pqxdh", "v5-devices", "v6-push", "v7-conversations", "v8-safety"]))
        #expect(applied == ClientStore.migrator.migrations, "every later migration applies on top of v1 too")
        let mode = try FileManager.default.attributesOfItem(atPath: relay.directory.appendingPathComponent("alice/flitz.sqlite").path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        await relay.stop()
    }
}

@Suite(.serialized)
struct ChatTests {
    /// Collects events until one matches, then stops the listener.
    func listen(_ client: FlitzClient, until predicate: @escaping @Sendable (ClientEvent) -> Bool) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            let (found, continuation) = AsyncStream<Void>.makeStream()
            group.addTask {
                try await client.listen { event in
                    if predicate(event) { continuation.yield() }
                }
            }
            group.addTask {
                for await _ in found { return }
            }
            try await group.next()
            group.cancelAll()
        }
    }

    @Test func chatSurvivesAReplacedConnectionAndSendsEveryLineOnce() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let lines = LineQueue()
        let sent = Mutex<[Data]>([])
        let chat = Task {
            try await alice.chat(with: "bob", lines: lines, onSent: { id in sent.withLock { $0.append(id) } }, onEvent: { _ in })
        }
        lines.push("before")
        try await listen(bob) { if case .message(let m) = $0 { m.text == "before" } else { false } }
        // Another process on alice's home connects: the relay replaces chat's connection; chat reconnects.
        let aliceElsewhere = try relay.client("alice")
        _ = try await aliceElsewhere.sync(onWarning: { _ in })
        lines.push("after")
        try await listen(bob) { if case .message(let m) = $0 { m.text == "after" } else { false } }
        lines.finish()
        try await chat.value
        #expect(sent.withLock { $0.count } == 2)
        let received = try await bob.store.dbQueue.read { db in
            try String.fetchAll(db, sql: "SELECT text FROM messages WHERE outgoing = 0 ORDER BY seq")
        }
        #expect(received == ["before", "after"], "each line arrived exactly once")
        let ownChat = await #expect(throws: ClientError.self) {
            try await alice.chat(with: "alice", lines: LineQueue(), onSent: { _ in }, onEvent: { _ in })
        }
        #expect(ownChat?.kind == .invalidArgument)
        await relay.stop()
    }

    @Test func oversizeAndBlankMessagesAreRefusedLocally() async throws {
        let relay = try await InProcessRelay()
        let alice = try relay.client("alice")
        _ = try await alice.initialize(relayURL: relay.url, handle: "alice")
        for text in ["   ", String(repeating: "x", count: FlitzClient.maxTextBytes + 1)] {
            let error = await #expect(throws: ClientError.self) { _ = try await alice.send(to: "bob", text: text) }
            #expect(error?.kind == .invalidArgument)
        }
        await relay.stop()
    }

    /// The largest text fits the relay's ciphertext limit even as a first (PQXDH prekey) message, whose
    /// 1568-byte KEM ciphertext is the largest overhead, in multi-byte UTF-8 too.
    @Test func theLargestTextFitsAsAFirstMessage() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let ascii = String(repeating: "x", count: FlitzClient.maxTextBytes)
        let multiByte = String(repeating: "é", count: FlitzClient.maxTextBytes / 2)
        #expect(multiByte.utf8.count == FlitzClient.maxTextBytes)
        _ = try await alice.send(to: "bob", text: ascii)
        #expect(try alice.store.sessions(with: "bob")[0].session.isAwaitingReply, "still sending prekey messages")
        _ = try await alice.send(to: "bob", text: multiByte)
        #expect(try await bob.receiveAll().texts.map(\.utf8.count) == [FlitzClient.maxTextBytes, FlitzClient.maxTextBytes])
        await relay.stop()
    }
}

@Suite struct ClientStoreMigrationTests {
    /// A database written by the first schema opens in this build: v2 is applied and existing sessions'
    /// base keys are recorded as answered.
    @Test func aVersion1DatabaseUpgrades() throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-migration-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: home) }
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        let baseKey = Data(repeating: 7, count: 32)
        do {
            let queue = try DatabaseQueue(path: home.appendingPathComponent(ClientStore.fileName).path)
            try ClientStore.migrator.migrate(queue, upTo: "v1")
            try queue.write { db in
                try db.execute(
                    sql: "INSERT INTO sessions (handle, device_id, base_key, record, active, updated_at) VALUES ('bob', 1, ?, x'00', 1, 0)",
                    arguments: [baseKey])
            }
        }
        let store = try ClientStore(home: home)
        let (applied, baseKeys, columns) = try store.dbQueue.read { db in
            (
                try ClientStore.migrator.appliedMigrations(db),
                try Data.fetchAll(db, sql: "SELECT base_key FROM accepted_base_keys"),
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM pragma_table_info('messages') WHERE name = 'untrusted_sender'")
            )
        }
        #expect(applied.starts(with: ["v1", "v2", "v3-verified", "v4-pqxdh", "v5-devices", "v6-push", "v7-conversations", "v8-safety"]))
        #expect(applied == ClientStore.migrator.migrations, "every later migration applies on top of v1 too")
        #expect(baseKeys == [baseKey])
        #expect(columns == 1)
    }
}
