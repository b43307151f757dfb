import FlitzCrypto
@testable import FlitzRelay
import FlitzStore
import FlitzStoreSQLite
import FlitzWire
import Foundation
import Synchronization
import Testing

/// A sleeper the test ends by hand (`ScheduleTimer.sleeper`): each wait is a request the test takes with `next()` and
/// ends with `resume()`; a wait cancelled by the releaser (a poke) ends by itself and is skipped by `next()`.
final class ManualSleeper: Sendable {
    struct Request: Sendable {
        let duration: Duration
        let id: Int
        let sleeper: ManualSleeper
        func resume() { sleeper.finish(id) }
    }

    private struct State {
        var nextID = 0
        var requests: [Request] = []
        var waiting: [Int: CheckedContinuation<Void, any Error>] = [:]
        var finished = Set<Int>()
        var cancelled = Set<Int>()
    }

    private let state = Mutex(State())

    var function: PushSleeper { { duration in try await self.sleep(duration) } }

    private func sleep(_ duration: Duration) async throws {
        let id = state.withLock { state in
            defer { state.nextID += 1 }
            state.requests.append(Request(duration: duration, id: state.nextID, sleeper: self))
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome: Bool? = state.withLock { state in
                    if state.finished.contains(id) { return true }
                    if state.cancelled.contains(id) { return false }
                    state.waiting[id] = continuation
                    return nil
                }
                switch outcome {
                case true?: continuation.resume()
                case false?: continuation.resume(throwing: CancellationError())
                case nil: break
                }
            }
        } onCancel: {
            let continuation = state.withLock { state in
                state.cancelled.insert(id)
                return state.waiting.removeValue(forKey: id)
            }
            continuation?.resume(throwing: CancellationError())
        }
    }

    fileprivate func finish(_ id: Int) {
        let continuation = state.withLock { state in
            state.finished.insert(id)
            return state.waiting.removeValue(forKey: id)
        }
        continuation?.resume()
    }

    /// The oldest wait neither cancelled nor taken yet. Polls (a failure guard only, never a timing assertion).
    func next(timeout: Duration = .seconds(10)) async throws -> Request {
        let deadline = ContinuousClock.now + timeout
        while true {
            let found: Request? = state.withLock { state in
                state.requests.removeAll { state.cancelled.contains($0.id) }
                return state.requests.isEmpty ? nil : state.requests.removeFirst()
            }
            if let found { return found }
            guard ContinuousClock.now < deadline else { throw TestTimeout() }
            try await Task.sleep(for: .milliseconds(2))
        }
    }
}

/// Bytes of the relay's database files (database, WAL), to search for what must never be stored.
func databaseBytes(_ path: String) -> Data {
    var bytes = Data()
    for suffix in ["", "-wal", "-shm", "-journal"] {
        if let data = FileManager.default.contents(atPath: path + suffix) { bytes.append(data) }
    }
    return bytes
}

func onlineOnly(_ id: UInt8, to handle: String, device: UInt32, ciphertext: Data) -> WireOutgoingEnvelope {
    var envelope = outgoing(id, to: handle, device: device, ciphertext: ciphertext)
    envelope.onlineOnly = true
    envelope.urgency = .silent
    return envelope
}

func scheduled(_ id: UInt8, to handle: String, device: UInt32 = 1, at notBeforeMs: Int64, cancelToken: Data, ttl: UInt32 = 0) -> WireOutgoingEnvelope {
    var envelope = outgoing(id, to: handle, device: device, ttl: ttl)
    envelope.notBeforeMs = notBeforeMs
    envelope.cancelTokenHash = ConversationTokens.cancelTokenHash(cancelToken)
    return envelope
}

extension TestConnection {
    func submitSelected(_ envelopes: [WireOutgoingEnvelope]) async throws -> [WireSubmitOutcome] {
        var submit = WireSubmit()
        submit.envelopes = envelopes
        submit.selectedDevices = true
        let reply = try await request(.submit(submit))
        guard case .submitResult(let result) = reply.body else { throw Failure("expected SubmitResult, got \(reply)") }
        return result.outcomes
    }

    func unsend(_ token: Data) async throws -> WireFrame {
        var unsend = WireUnsend()
        unsend.unsendToken = token
        return try await request(.unsend(unsend))
    }

    func cancelScheduled(_ token: Data) async throws -> WireFrame {
        var cancel = WireCancelScheduled()
        cancel.cancelToken = token
        return try await request(.cancelScheduled(cancel))
    }

    func updateBlockList(block: [String] = [], unblock: [String] = []) async throws -> WireFrame {
        var update = WireUpdateBlockList()
        update.block = block
        update.unblock = unblock
        return try await request(.updateBlockList(update))
    }
}

/// Registers single-device identities, one connection each.
func registerAll(_ relay: RelayHarness, _ identities: [TestIdentity]) async throws {
    for identity in identities {
        try await relay.connect { connection in _ = try await connection.register(identity) }
    }
}

/// `protocol/conversations.md` at the relay, over real WebSockets and a real SQLite file: online-only envelopes, the
/// conversation fields' checks, unsend, block lists, scheduled envelopes and abuse reports.
@Suite struct ConversationRelayTests {
    @Test func onlineOnlyIsHandedToConnectedDevicesOnlyAndNeverStored() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [alice, bob])
            let secret = Data("typing-secret-\(UUID().uuidString)".utf8)
            let now = relay.clock.nowMs()
            try await relay.connect { bobConnection in
                try await bobConnection.authenticate(bob)
                try await relay.connect { aliceConnection in
                    try await aliceConnection.authenticate(alice)
                    let outcomes = try await aliceConnection.submitSelected([onlineOnly(1, to: "bob", device: 1, ciphertext: secret)])
                    #expect(outcomes.count == 1 && !outcomes[0].hasError, "\(outcomes)")
                    #expect(outcomes[0].acceptedAtMs == now && outcomes[0].expiresAtMs == now && !outcomes[0].scheduled)
                }
                let deliver = try await bobConnection.nextDeliver()
                #expect(deliver.envelopes.count == 1)
                #expect(deliver.envelopes[0].onlineOnly && deliver.envelopes[0].ciphertext == secret)
                #expect(deliver.envelopes[0].senderHandle == "alice" && deliver.envelopes[0].envelopeID == envelopeID(1))
                // Never queued, so an acknowledgement of it is refused (the client must not send one).
                let ack = try await bobConnection.acknowledge(envelopes: [envelopeID(1)])
                #expect(ack.errorCode == .unknownEnvelope)
            }
            // Bob is offline now: the same answer, nothing kept for later.
            try await relay.connect { aliceConnection in
                try await aliceConnection.authenticate(alice)
                let outcomes = try await aliceConnection.submitSelected([onlineOnly(2, to: "bob", device: 1, ciphertext: secret)])
                #expect(outcomes.count == 1 && !outcomes[0].hasError && outcomes[0].acceptedAtMs == now && outcomes[0].expiresAtMs == now)
            }
            let delivered = try await relay.connect { connection in try await connection.authenticate(bob) }
            #expect(delivered.flatMap(\.envelopes).isEmpty)
            // No receipt to the sender either.
            let aliceItems = try await relay.connect { connection in try await connection.authenticate(alice) }
            #expect(aliceItems.flatMap(\.receipts).isEmpty)
            #expect(databaseBytes(relay.databasePath).range(of: secret) == nil)
            let metrics = await relay.app.relay.metrics.exposition()
            // One counter, never split by handed / no connection / blocked (a public side channel otherwise).
            #expect(metrics.contains("flitz_relay_online_only_total 2"), "\(metrics)")
            #expect(!metrics.contains("outcome="))
        }
    }

    @Test func conversationFieldsAreChecked() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [alice, bob])
            let now = relay.clock.nowMs()
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                var badUnsend = outgoing(1, to: "bob")
                badUnsend.unsendTokenHash = Data(repeating: 1, count: 31)
                var badCancel = outgoing(2, to: "bob")
                badCancel.cancelTokenHash = Data(repeating: 1, count: 5)
                var onlineScheduled = scheduled(3, to: "bob", at: now + 60_000, cancelToken: Data(repeating: 3, count: 32))
                onlineScheduled.onlineOnly = true
                let tooFar = scheduled(4, to: "bob", at: now + ConversationTokens.scheduleHorizonMilliseconds + 1, cancelToken: Data(repeating: 4, count: 32))
                var noCancel = outgoing(5, to: "bob")
                noCancel.notBeforeMs = now + 60_000
                let outcomes = try await connection.submitSelected([badUnsend, badCancel, onlineScheduled, tooFar, noCancel])
                #expect(outcomes.map(\.error.code) == Array(repeating: .invalidArgument, count: 5), "\(outcomes)")
                // online_only without selected_devices.
                var submit = WireSubmit()
                submit.envelopes = [onlineOnly(6, to: "bob", device: 1, ciphertext: Data("x".utf8))]
                let reply = try await connection.request(.submit(submit))
                guard case .submitResult(let result) = reply.body else { throw Failure("\(reply)") }
                #expect(result.outcomes.first?.error.code == .invalidArgument)
                // Exactly 30 days ahead is allowed.
                let edge = try await connection.submitSelected([
                    scheduled(7, to: "bob", at: now + ConversationTokens.scheduleHorizonMilliseconds, cancelToken: Data(repeating: 7, count: 32))
                ])
                #expect(!edge[0].hasError && edge[0].scheduled)
            }
            // The store's limit is the spec's (conversations.md 12).
            #expect(ConversationStoreLimits.maxScheduledPerAccount == ConversationTokens.maxScheduledPerAccount)
            // Every new frame needs an authenticated connection.
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                let frames: [WireFrame.OneOf_Body] = [
                    .unsend(WireUnsend()), .cancelScheduled(WireCancelScheduled()), .updateBlockList(WireUpdateBlockList()),
                    .fetchBlockList(WireFetchBlockList()), .submitReport(WireSubmitReport()),
                ]
                for body in frames {
                    #expect(try await connection.request(body).errorCode == .notAuthenticated)
                }
            }
        }
    }

    @Test func unsendPurgesQueuedCopiesAndAnswersTruthfullyPerDevice() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            let bob = TestAccount("bob")
            try await registerAll(relay, [alice])
            try await MultiDeviceRelayTests.setUp(relay, bob, extra: 1)
            let token = Data(repeating: 0xAB, count: 32)
            let marker = Data("unsend-me-\(UUID().uuidString)".utf8)
            var first = outgoing(1, to: "bob", device: bob.ids[0]!, ciphertext: marker)
            var second = outgoing(2, to: "bob", device: bob.ids[1]!, ciphertext: marker)
            first.unsendTokenHash = ConversationTokens.unsendTokenHash(token)
            second.unsendTokenHash = ConversationTokens.unsendTokenHash(token)
            first.group = 7
            second.group = 7
            let envelopes = [first, second]
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                let outcomes = try await connection.submitSelected(envelopes)
                #expect(outcomes.allSatisfy { !$0.hasError }, "\(outcomes)")
            }
            // Bob's first device fetches and acknowledges its copy; the second stays offline.
            try await relay.connect { connection in
                let (_, delivered) = try await connection.authenticate(bob, 0)
                #expect(delivered.flatMap(\.envelopes).map(\.envelopeID) == [envelopeID(1)])
                #expect(try await connection.acknowledge(envelopes: [envelopeID(1)]).isOk)
            }
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                #expect(try await connection.unsend(Data(repeating: 1, count: 31)).errorCode == .invalidArgument)
                #expect(try await connection.unsend(Data(repeating: 0xCD, count: 32)).errorCode == .unknownToken)
                for _ in 0..<2 {  // a second unsend says the same
                    let reply = try await connection.unsend(token)
                    guard case .unsendResult(let result) = reply.body else { throw Failure("\(reply)") }
                    let states = Dictionary(uniqueKeysWithValues: result.outcomes.map { ($0.recipientDeviceID, $0.state) })
                    #expect(states == [bob.ids[0]!: .alreadyDelivered, bob.ids[1]!: .purged], "\(result)")
                    #expect(result.outcomes.allSatisfy { $0.recipientHandle == "bob" })
                }
            }
            // Bob's other handle cannot use alice's token.
            try await relay.connect { connection in
                _ = try await connection.authenticate(bob, 0)
                #expect(try await connection.unsend(token).errorCode == .unknownToken)
            }
            let (_, later) = try await relay.connect { connection in try await connection.authenticate(bob, 1) }
            #expect(later.flatMap(\.envelopes).isEmpty)
            // Only the DELIVERED receipt of the first copy reaches alice; the purged copy gets none.
            let receipts = try await relay.connect { connection in try await connection.authenticate(alice) }.flatMap(\.receipts)
            #expect(receipts.map(\.kind) == [.delivered] && receipts.map(\.envelopeID) == [envelopeID(1)])
            try await relay.app.relay.store.checkpointIfSQLite()
            #expect(databaseBytes(relay.databasePath).range(of: marker) == nil)
        }
    }

    @Test func blockedSenderSeesAcceptedOutcomesWhileNothingReachesTheBlocker() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [alice, bob])
            let now = relay.clock.nowMs()
            try await relay.connect { connection in
                try await connection.authenticate(bob)
                #expect(try await connection.updateBlockList(block: ["bob"]).errorCode == .invalidArgument)
                #expect(try await connection.updateBlockList(block: ["NOT A HANDLE"]).errorCode == .invalidArgument)
                #expect(try await connection.updateBlockList(block: (0..<101).map { "h\($0)xx" }).errorCode == .invalidArgument)
                let reply = try await connection.updateBlockList(block: ["alice", "zed"])
                guard case .blockList(let list) = reply.body else { throw Failure("\(reply)") }
                #expect(list.handles == ["alice", "zed"])
                let fetched = try await connection.request(.fetchBlockList(WireFetchBlockList()))
                guard case .blockList(let again) = fetched.body else { throw Failure("\(fetched)") }
                #expect(again.handles == ["alice", "zed"])
            }
            let stored = Data("blocked-stored-\(UUID().uuidString)".utf8)
            let typing = Data("blocked-typing-\(UUID().uuidString)".utf8)
            try await relay.connect { bobConnection in
                try await bobConnection.authenticate(bob)
                try await relay.connect { connection in
                    try await connection.authenticate(alice)
                    let outcomes = try await connection.submitSelected([
                        outgoing(1, to: "bob", ttl: 60, ciphertext: stored), onlineOnly(2, to: "bob", device: 1, ciphertext: typing),
                    ])
                    #expect(outcomes.allSatisfy { !$0.hasError && !$0.scheduled && $0.acceptedAtMs == now }, "\(outcomes)")
                    #expect(outcomes[0].expiresAtMs == now + 60_000 && outcomes[1].expiresAtMs == now)
                }
                // Unblocked, alice's next envelope arrives: the first thing bob's connection gets.
                let reply = try await bobConnection.updateBlockList(unblock: ["alice"])
                guard case .blockList(let list) = reply.body else { throw Failure("\(reply)") }
                #expect(list.handles == ["zed"])
                try await relay.connect { connection in
                    try await connection.authenticate(alice)
                    #expect(try await connection.submitSelected([outgoing(3, to: "bob")]).allSatisfy { !$0.hasError })
                }
                let deliver = try await bobConnection.nextDeliver()
                #expect(deliver.envelopes.map(\.envelopeID) == [envelopeID(3)])
            }
            let aliceItems = try await relay.connect { connection in try await connection.authenticate(alice) }
            #expect(aliceItems.flatMap(\.receipts).isEmpty)
            let bytes = databaseBytes(relay.databasePath)
            #expect(bytes.range(of: stored) == nil && bytes.range(of: typing) == nil)
            let metrics = await relay.app.relay.metrics.exposition()
            // Nothing in the public metrics tells a block: no blocked counter, no outcome label.
            #expect(!metrics.contains("blocked") && !metrics.contains("outcome="), "\(metrics)")
            #expect(metrics.contains("flitz_relay_online_only_total 1"))
        }
    }

    @Test func scheduledEnvelopeIsHeldReleasedAtItsTimeAndCancellable() async throws {
        let sleeper = ManualSleeper()
        try await RelayHarness.run(prepare: { app, _ in app.relay.scheduler.sleeper = sleeper.function }) { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [alice, bob])
            let start = relay.clock.nowMs()
            let notBefore = start + 60_000
            let token = Data(repeating: 0x51, count: 32)
            let marker = Data("scheduled-\(UUID().uuidString)".utf8)
            var held = scheduled(1, to: "bob", at: notBefore, cancelToken: token, ttl: 120)
            held.ciphertext = marker
            let envelope = held
            let store = relay.app.relay.store
            try await relay.connect { bobConnection in
                try await bobConnection.authenticate(bob)
                try await relay.connect { connection in
                    try await connection.authenticate(alice)
                    let outcomes = try await connection.submitSelected([envelope])
                    #expect(outcomes.count == 1 && !outcomes[0].hasError && outcomes[0].scheduled, "\(outcomes)")
                    #expect(outcomes[0].acceptedAtMs == start && outcomes[0].expiresAtMs == notBefore + 120_000)
                    // A resubmission is idempotent: the same answer, still one scheduled envelope.
                    let again = try await connection.submitSelected([envelope])
                    #expect(again == outcomes)
                }
                let wait = try await sleeper.next()
                #expect(wait.duration == .milliseconds(60_000))
                #expect(try await store.nextScheduledRelease() == notBefore)
                #expect(try await !store.isEnvelopeQueued(envelopeID: envelopeID(1), device: DeviceAddress(handle: "bob", deviceID: 1), nowMs: start))
                // One second early: the releaser looks again and waits the rest.
                relay.clock.advance(seconds: 59)
                wait.resume()
                let rest = try await sleeper.next()
                #expect(rest.duration == .milliseconds(1_000))
                #expect(relay.app.relay.scheduler.monitor.snapshot.released == 0)
                #expect(try await store.nextScheduledRelease() == notBefore)
                relay.clock.advance(seconds: 1)
                rest.resume()
                let deliver = try await bobConnection.nextDeliver()
                #expect(deliver.envelopes.count == 1)
                #expect(deliver.envelopes.first?.ciphertext == marker && deliver.envelopes.first?.onlineOnly == false)
                #expect(deliver.envelopes.first?.acceptedAtMs == notBefore && deliver.envelopes.first?.expiresAtMs == notBefore + 120_000)
                #expect(try await store.nextScheduledRelease() == nil)
            }
            // Cancel before release; then the token is unknown.
            let other = Data(repeating: 0x52, count: 32)
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                let now = relay.clock.nowMs()
                let outcomes = try await connection.submitSelected([
                    scheduled(2, to: "bob", at: now + 3_600_000, cancelToken: other), scheduled(3, to: "bob", at: now + 7_200_000, cancelToken: other),
                ])
                #expect(outcomes.allSatisfy { $0.scheduled && !$0.hasError })
                #expect(try await connection.cancelScheduled(Data(repeating: 0x52, count: 31)).errorCode == .invalidArgument)
                let reply = try await connection.cancelScheduled(other)
                guard case .cancelScheduledResult(let result) = reply.body else { throw Failure("\(reply)") }
                #expect(result.cancelled == 2)
                #expect(try await connection.cancelScheduled(other).errorCode == .unknownToken)
                // The first one is released: its token cancels nothing any more.
                #expect(try await connection.cancelScheduled(token).errorCode == .unknownToken)
            }
            #expect(try await store.nextScheduledRelease() == nil)
            let metrics = await relay.app.relay.metrics.exposition()
            #expect(metrics.contains("flitz_relay_scheduled_released_total 1"), "\(metrics)")
            #expect(metrics.contains("flitz_relay_scheduled_cancelled_total 2"))
        }
    }

    @Test func anEarlierScheduledEnvelopeWakesTheReleaser() async throws {
        let sleeper = ManualSleeper()
        try await RelayHarness.run(prepare: { app, _ in app.relay.scheduler.sleeper = sleeper.function }) { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [alice, bob])
            let start = relay.clock.nowMs()
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                _ = try await connection.submitSelected([scheduled(1, to: "bob", at: start + 3_600_000, cancelToken: Data(repeating: 1, count: 32))])
                // Capped at a minute (a wall-clock step cannot hold a release back longer).
                #expect(try await sleeper.next().duration == .milliseconds(60_000))
                // The earlier one cancels that wait: the releaser now waits for it, and releases only it.
                _ = try await connection.submitSelected([scheduled(2, to: "bob", at: start + 30_000, cancelToken: Data(repeating: 2, count: 32))])
                let wait = try await sleeper.next()
                #expect(wait.duration == .milliseconds(30_000))
                relay.clock.advance(seconds: 30)
                wait.resume()
                #expect(try await sleeper.next().duration == .milliseconds(60_000))
                #expect(relay.app.relay.scheduler.monitor.snapshot.released == 1)
            }
            let delivered = try await relay.connect { connection in try await connection.authenticate(bob) }
            #expect(delivered.flatMap(\.envelopes).map(\.envelopeID) == [envelopeID(2)])
        }
    }

    @Test func scheduledEnvelopeIsReleasedAfterARestart() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-restart-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("relay.sqlite").path
        let alice = TestIdentity("alice"), bob = TestIdentity("bob")
        let start = Int64(1_800_000_000_000)
        try await RelayHarness.run(databasePath: { _ in path }) { relay in
            try await registerAll(relay, [alice, bob])
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                let outcomes = try await connection.submitSelected([scheduled(1, to: "bob", at: start + 60_000, cancelToken: Data(repeating: 9, count: 32))])
                #expect(outcomes.first?.scheduled == true)
            }
        }
        // The second relay starts 61 s later on the same database: it reads the release time and releases at once.
        try await RelayHarness.run(databasePath: { _ in path }, prepare: { _, clock in clock.advance(seconds: 61) }) { relay in
            await relay.app.relay.scheduler.monitor.wait { $0.released >= 1 }
            let delivered = try await relay.connect { connection in try await connection.authenticate(bob) }
            let envelopes = delivered.flatMap(\.envelopes)
            #expect(envelopes.map(\.envelopeID) == [envelopeID(1)])
            #expect(envelopes.first?.acceptedAtMs == start + 61_000)
        }
    }

    @Test func scheduledEnvelopesOfARemovedDeviceExpireOrAreDeleted() async throws {
        let sleeper = ManualSleeper()
        try await RelayHarness.run(prepare: { app, _ in app.relay.scheduler.sleeper = sleeper.function }) { relay in
            let alice = TestIdentity("alice")
            let bob = TestAccount("bob")
            try await registerAll(relay, [alice])
            try await MultiDeviceRelayTests.setUp(relay, bob, extra: 1)
            let start = relay.clock.nowMs()
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                let outcomes = try await connection.submitSelected([
                    scheduled(1, to: "bob", device: bob.ids[1]!, at: start + 10_000, cancelToken: Data(repeating: 1, count: 32))
                ])
                #expect(outcomes.first?.scheduled == true)
            }
            // Bob's device 1 schedules one for alice (it holds the cancel token).
            try await relay.connect { connection in
                try await connection.authenticate(bob, 1)
                let outcomes = try await connection.submitSelected([
                    scheduled(2, to: "alice", at: start + 10_000, cancelToken: Data(repeating: 2, count: 32))
                ])
                #expect(outcomes.first?.scheduled == true, "\(outcomes)")
            }
            // Bob's list drops device 1 before the release: what it was sent expires now (EXPIRED to alice), what it
            // scheduled is deleted (nobody can cancel it any more).
            try await relay.connect { connection in
                try await connection.authenticate(bob, 0)
                #expect(try await connection.request(bob.publish(bob.list(version: 2, [0]), removing: [bob.ids[1]!])).isOk)
            }
            #expect(try await relay.app.relay.store.nextScheduledRelease() == nil)
            let wait = try await sleeper.next()
            relay.clock.advance(seconds: 10)
            wait.resume()
            let delivered = try await relay.connect { connection in try await connection.authenticate(alice) }
            #expect(delivered.flatMap(\.envelopes).isEmpty, "\(delivered)")
            let receipts = delivered.flatMap(\.receipts)
            #expect(receipts.map(\.kind) == [.expired] && receipts.first?.envelopeID == envelopeID(1))
        }
    }

    @Test func recoveryDeletesWhatTheOldDevicesScheduledAndExpiresWhatWasScheduledForThem() async throws {
        try await RelayHarness.run { relay in
            let alice = TestAccount("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [bob])
            let code = try await relay.connect { connection -> String in
                guard case .registerResult(let result) = try await connection.request(alice.register(nonce: connection.nonce)).body else {
                    throw Failure("register")
                }
                alice.ids[0] = result.deviceID
                return result.recoveryCode
            }
            let start = relay.clock.nowMs()
            try await relay.connect { connection in
                try await connection.authenticate(alice, 0)
                let outcomes = try await connection.submitSelected([scheduled(1, to: "bob", at: start + 60_000, cancelToken: Data(repeating: 1, count: 32))])
                #expect(outcomes.first?.scheduled == true)
            }
            try await relay.connect { connection in
                try await connection.authenticate(bob)
                let outcomes = try await connection.submitSelected([
                    scheduled(2, to: "alice", device: alice.ids[0]!, at: start + 60_000, cancelToken: Data(repeating: 2, count: 32))
                ])
                #expect(outcomes.first?.scheduled == true)
            }
            let recovered = TestIdentity("alice")
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                var recover = WireRecover()
                recover.handle = "alice"
                recover.recoveryCode = code
                recover.accountIdentityKey = recovered.account.publicKey.rawRepresentation
                recover.device = recovered.deviceKeys()
                recover.challengeSignature = recovered.device.signature(for: SignedPayload.authentication(nonce: connection.nonce, handle: "alice"))
                guard case .registerResult = try await connection.request(.recover(recover)).body else { throw Failure("recover") }
            }
            // Both gone from the schedule at once: alice's old device's (no one can cancel it) and the one to it.
            #expect(try await relay.app.relay.store.nextScheduledRelease() == nil)
            let receipts = try await relay.connect { connection in try await connection.authenticate(bob) }.flatMap(\.receipts)
            #expect(receipts.map(\.kind) == [.expired] && receipts.first?.envelopeID == envelopeID(2), "\(receipts)")
        }
    }

    static func report(_ messages: [(String, String, Bool)], reason: String = "spam") -> Data {
        var report = WireAbuseReport()
        report.reportedHandle = "alice"
        report.reason = reason
        report.createdAtMs = 1
        report.messages = messages.enumerated().map { index, message in
            var reported = WireReportedMessage()
            reported.messageID = Data(repeating: UInt8(index + 1), count: 16)
            reported.authorHandle = message.0
            reported.text = message.1
            reported.reported = message.2
            reported.acceptedAtMs = Int64(index)
            return reported
        }
        return try! report.serializedData()
    }

    @Test func abuseReportsAreCheckedSignedStoredAndRateLimited() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [alice, bob])
            let good = Self.report([("alice", "hello", false), ("alice", "the bad one", true)])
            @Sendable func submit(_ report: Data, signer: Ed25519PrivateKey) -> WireFrame.OneOf_Body {
                var request = WireSubmitReport()
                request.report = report
                request.signature = signer.signature(for: ConversationTokens.reportSignaturePayload(report))
                return .submitReport(request)
            }
            try await relay.connect { connection in
                try await connection.authenticate(bob)
                let reply = try await connection.request(submit(good, signer: bob.device))
                guard case .reportResult(let result) = reply.body else { throw Failure("\(reply)") }
                #expect(result.reportID.count == 16)
                // Signed by another key; signed over other bytes.
                #expect(try await connection.request(submit(good, signer: alice.device)).errorCode == .invalidSignature)
                var tampered = WireSubmitReport()
                tampered.report = Self.report([("alice", "edited", true)])
                tampered.signature = bob.device.signature(for: ConversationTokens.reportSignaturePayload(good))
                #expect(try await connection.request(.submitReport(tampered)).errorCode == .invalidSignature)
                // Refused shapes.
                let invalid: [Data] = [
                    Data(), Data([0xFF, 0xFF]), Self.report([("alice", "a", false)]), Self.report([("alice", "a", true), ("alice", "b", true)]),
                    Self.report(Array(repeating: ("alice", "a", false), count: 41) + [("alice", "b", true)]),
                    Self.report([("alice", "a", true)], reason: String(repeating: "r", count: 1_001)),
                    Data(repeating: 0, count: ConversationTokens.maxReportBytes + 1),
                ]
                for report in invalid {
                    #expect(try await connection.request(submit(report, signer: bob.device)).errorCode == .invalidArgument)
                }
                // 10 per hour per account: 9 more pass, the 11th is refused, an hour later one passes again.
                for _ in 0..<9 {
                    guard case .reportResult = try await connection.request(submit(good, signer: bob.device)).body else { throw Failure("refused") }
                }
                let limited = try await connection.request(submit(good, signer: bob.device))
                #expect(limited.errorCode == .rateLimited && (limited.error?.retryAfterMs ?? 0) > 0)
                relay.clock.advance(seconds: 3_601)
                guard case .reportResult = try await connection.request(submit(good, signer: bob.device)).body else { throw Failure("still limited") }
            }
            let stored = try await relay.app.relay.store.reports()
            #expect(stored.count == 11)
            #expect(stored.first?.reporter == DeviceAddress(handle: "bob", deviceID: 1) && stored.first?.report == good)
            let listing = try ReportListing.text(stored)
            #expect(listing.contains("the bad one") && listing.contains("reported") && listing.contains("bob/1") && listing.contains("spam"))
            let json = try JSONSerialization.jsonObject(with: Data(try ReportListing.json(stored).utf8)) as? [[String: Any]]
            #expect(json?.count == 11 && json?.first?["reporterHandle"] as? String == "bob" && json?.first?["reportedHandle"] as? String == "alice")
            #expect(try ReportListing.json([]) == "[]\n" && ReportListing.text([]) == "no reports\n")
            let metrics = await relay.app.relay.metrics.exposition()
            #expect(metrics.contains("flitz_relay_reports_total 11"))
        }
    }
}

extension RelayStore {
    /// Copies the WAL into the database file, so a search of the files sees what SQLite keeps.
    func checkpointIfSQLite() async throws {
        if let store = self as? SQLiteRelayStore { try await store.checkpoint() }
    }
}
