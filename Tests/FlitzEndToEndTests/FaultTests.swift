import FlitzCrypto
import FlitzWire
import Foundation
import HummingbirdWSClient
import Logging
import NIOCore
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The relay killed with SIGKILL several times while a sender submits a few thousand envelopes and a
/// recipient receives them (`protocol/relay.md`, "Storage and durability", "Delivery window"). The built
/// `flitz-relay` runs as a child process and restarts on the same database and port. The clients speak raw
/// protocol frames with opaque ciphertext: what matters to the relay is ids and bytes.
///
/// The kill schedule is seeded: `FLITZ_FAULT_SEED` (a decimal number) repeats a run; the seed is printed.
/// A kill comes after a seeded number of envelopes acknowledged to the sender, never after a sleep.
@Suite(.serialized)
struct FaultTests {
    static let envelopeCount = 3_000
    static let batchSize = 10
    static let killCount = 4

    @Test func killingTheRelayNeitherLosesAnAcknowledgedEnvelopeNorDeliversOneTwice() async throws {
        let seed = ProcessInfo.processInfo.environment["FLITZ_FAULT_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...UInt64.max)
        print("fault test: seed \(seed) (FLITZ_FAULT_SEED=\(seed) repeats this schedule)")
        var random = SplitMix64(seed: seed)
        let killAfter = (0..<Self.killCount).map { _ in 200 + Int(random.next() % UInt64(Self.envelopeCount - 600)) }.sorted()
        let envelopes: [(id: Data, ciphertext: Data)] = (0..<Self.envelopeCount).map { _ in
            (random.bytes(16), random.bytes(32 + Int(random.next() % 480)))
        }
        print("fault test: kills after \(killAfter) envelopes acknowledged to the sender")

        let scratch = try Scratch()
        let relay = try await KillableRelay(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        let alice = WireIdentity("alice"), bob = WireIdentity("bob")
        try await alice.register(relay.url)
        try await bob.register(relay.url)

        let state = FaultState()
        try await within(.seconds(240)) {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await Self.send(envelopes, as: alice, to: "bob", relay: relay, killAfter: killAfter, state: state) }
                group.addTask { try await Self.receive(as: bob, expecting: envelopes.count, relay: relay, state: state) }
                try await group.waitForAll()
            }
        }

        // A last connection: anything still queued is a redelivery whose acknowledgement a kill lost (the
        // recipient drops it by id); after it, the queue is empty.
        let leftOver = try await bob.connect(relay.url) { session in try await session.drain() }
        var leftOverDeliver = WireDeliver()
        leftOverDeliver.envelopes = leftOver
        state.record(leftOverDeliver)
        let empty = try await bob.connect(relay.url) { session in try await session.drain() }
        #expect(empty.isEmpty, "nothing is left queued")

        let result = state.snapshot
        print(
            "fault test: submitted \(envelopes.count), acknowledged to sender \(result.acknowledgedToSender.count), "
                + "delivered \(result.history.count), duplicates dropped \(result.duplicatesDropped), kills \(relay.kills), "
                + "sender reconnects \(result.senderConnections - 1), batches resubmitted after a lost result \(result.batchesResubmitted), "
                + "recipient reconnects \(result.recipientConnections - 1)")
        #expect(relay.kills == Self.killCount)
        #expect(result.acknowledgedToSender.count == envelopes.count, "the sender retried until every envelope was acknowledged")
        // Every envelope the sender saw acknowledged is in the recipient's history, exactly once, with its bytes.
        let byID = Dictionary(uniqueKeysWithValues: envelopes.map { ($0.id, $0.ciphertext) })
        #expect(Set(result.history) == result.acknowledgedToSender)
        #expect(result.history.count == Set(result.history).count, "the history holds each envelope once")
        #expect(result.history.allSatisfy { result.stored[$0] == byID[$0] }, "the same bytes as submitted")
        #expect(result.mismatchedRedeliveries == 0, "a redelivery carries the same bytes")
        // One sender submitting in order: first deliveries come in submission order.
        #expect(result.history == envelopes.map(\.id))
        // An acknowledgement the relay confirmed is never undone by a kill.
        #expect(result.deliveredAfterConfirmedAcknowledgement == 0)
        #expect(leftOver.allSatisfy { byID[$0.envelopeID] != nil }, "only redeliveries were left")
        relay.stop()
    }

    /// Submits in batches; a batch whose `SubmitResult` did not arrive is submitted again, byte for byte.
    static func send(
        _ envelopes: [(id: Data, ciphertext: Data)], as sender: WireIdentity, to recipient: String, relay: KillableRelay, killAfter: [Int],
        state: FaultState
    ) async throws {
        let progress = SenderProgress(kills: killAfter)
        while progress.next < envelopes.count {
            state.update { $0.senderConnections += 1 }
            do {
                try await sender.connect(relay.url) { session in
                    while progress.next < envelopes.count {
                        let batch = envelopes[progress.next..<min(progress.next + batchSize, envelopes.count)]
                        var submit = WireSubmit()
                        submit.envelopes = batch.map { envelope in
                            var outgoing = WireOutgoingEnvelope()
                            outgoing.envelopeID = envelope.id
                            outgoing.recipientHandle = recipient
                            outgoing.recipientDeviceID = 1
                            outgoing.ciphertext = envelope.ciphertext
                            return outgoing
                        }
                        progress.awaitingResult = true
                        let reply = try await session.request(.submit(submit))
                        progress.awaitingResult = false
                        guard case .submitResult(let result) = reply.body, result.outcomes.count == batch.count,
                            result.outcomes.allSatisfy({ !$0.hasError })
                        else { throw WireIdentity.Failure("submit refused: \(reply)") }
                        state.update { $0.acknowledgedToSender.formUnion(batch.map(\.id)) }
                        progress.next += batch.count
                        while let threshold = progress.kills.first, progress.next >= threshold {
                            progress.kills = progress.kills.dropFirst()
                            relay.killAndRestartSoon()
                        }
                    }
                }
            } catch let failure as WireIdentity.Failure {
                throw failure
            } catch {
                // The relay went away mid-batch: reconnect (below) and submit the batch again.
                if progress.awaitingResult { state.update { $0.batchesResubmitted += 1 } }
                progress.awaitingResult = false
            }
            if progress.next < envelopes.count { try await relay.waitUntilServing() }
        }
    }

    /// The sender's position; used by one task at a time (the sender's).
    final class SenderProgress: @unchecked Sendable {
        var next = 0
        var awaitingResult = false
        var kills: ArraySlice<Int>
        init(kills: [Int]) { self.kills = kills[...] }
    }

    /// Receives, "persists" (the history), then acknowledges each Deliver; drops redeliveries by id.
    static func receive(as recipient: WireIdentity, expecting count: Int, relay: KillableRelay, state: FaultState) async throws {
        while state.snapshot.history.count < count {
            state.update { $0.recipientConnections += 1 }
            do {
                try await recipient.connect(relay.url) { session in
                    for await frame in session.unsolicited {
                        guard case .deliver(let deliver) = frame.body else { continue }
                        state.record(deliver)
                        var ack = WireAcknowledge()
                        ack.envelopeIds = deliver.envelopes.map(\.envelopeID)
                        ack.receiptIds = deliver.receipts.map(\.receiptID)
                        let reply = try await session.request(.acknowledge(ack))
                        guard case .ok = reply.body else { throw WireIdentity.Failure("acknowledge refused: \(reply)") }
                        state.update { $0.confirmedAcknowledged.formUnion(ack.envelopeIds) }
                        if state.snapshot.history.count >= count { return }
                    }
                }
            } catch let failure as WireIdentity.Failure {
                throw failure
            } catch {
                // The relay went away: reconnect; what was not acknowledged comes again.
            }
            if state.snapshot.history.count < count { try await relay.waitUntilServing() }
        }
    }
}

extension FaultState {
    /// The recipient "persists" a Deliver: new envelopes join the history, redeliveries are dropped by id.
    func record(_ deliver: WireDeliver) {
                        update { state in
                            for envelope in deliver.envelopes {
                                if state.confirmedAcknowledged.contains(envelope.envelopeID) { state.deliveredAfterConfirmedAcknowledgement += 1 }
                                if let stored = state.stored[envelope.envelopeID] {
                                    state.duplicatesDropped += 1
                                    if stored != envelope.ciphertext { state.mismatchedRedeliveries += 1 }
                                } else {
                                    state.stored[envelope.envelopeID] = envelope.ciphertext
                                    state.history.append(envelope.envelopeID)
                                }
                            }
                        }
    }
}

/// What the sender and the recipient saw, shared between their tasks.
final class FaultState: Sendable {
    struct Snapshot: Sendable {
        var acknowledgedToSender = Set<Data>()
        /// The recipient's history: envelope ids in the order first received ("persisted").
        var history: [Data] = []
        var stored: [Data: Data] = [:]
        var confirmedAcknowledged = Set<Data>()
        var duplicatesDropped = 0
        var mismatchedRedeliveries = 0
        var deliveredAfterConfirmedAcknowledgement = 0
        /// Submits whose result a kill swallowed, sent again byte for byte.
        var batchesResubmitted = 0
        var senderConnections = 0
        var recipientConnections = 0
    }

    private let state = Mutex(Snapshot())
    var snapshot: Snapshot { state.withLock { $0 } }
    func update(_ change: (inout Snapshot) -> Void) { state.withLock { change(&$0) } }
}

/// `flitz-relay serve` that can be killed with SIGKILL and restarted on the same database and port.
final class KillableRelay: Sendable {
    private let database: URL
    private let log: URL
    let port: Int
    private let current: Mutex<(process: ProcessBox?, kills: Int, restarting: Task<Void, any Error>?)>

    /// Owns one child process; its methods are safe from any thread.
    final class ProcessBox: @unchecked Sendable {
        let relay: RelayProcess
        init(_ relay: RelayProcess) { self.relay = relay }
    }

    var url: String { "ws://127.0.0.1:\(port)/v1/ws" }
    var kills: Int { current.withLock { $0.kills } }

    init(database: URL, log: URL) async throws {
        self.database = database
        self.log = log
        let first = try await Self.start(database: database, log: log, port: 0)
        port = first.relay.port
        current = Mutex((first, 0, nil))
    }

    /// Starts `flitz-relay` off the concurrency pool (it blocks reading the child's stdout).
    private static func start(database: URL, log: URL, port: Int) async throws -> ProcessBox {
        try await withCheckedThrowingContinuation { continuation in
            // One sender pushes thousands of envelopes to one recipient: the per-pair rate limit is not under test here.
            DispatchQueue.global().async {
                continuation.resume(with: Result { ProcessBox(try RelayProcess(database: database, log: log, port: port, arguments: ["--rate-limits", "off"])) })
            }
        }
    }

    /// Kills the relay with SIGKILL now and restarts it in the background on the same database and port.
    func killAndRestartSoon() {
        let previous = current.withLock { $0.restarting }
        let task = Task { [database, log, port] in
            _ = try await previous?.value
            // Taken only after an earlier restart finished: two kills scheduled close together must kill the
            // relay that restart started, not start a second relay beside it (which would find the database locked).
            let process = current.withLock { state in
                defer { state.process = nil }
                return state.process
            }
            if let process {
                kill(process.relay.process.processIdentifier, SIGKILL)
                process.relay.process.waitUntilExit()
            }
            // The port is free once the process is gone; a start that still finds it taken is retried.
            var attempt = 0
            while true {
                do {
                    let restarted = try await Self.start(database: database, log: log, port: port)
                    current.withLock { state in
                        state.process = restarted
                        state.kills += 1
                    }
                    return
                } catch {
                    attempt += 1
                    if attempt >= 50 { throw error }
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
        }
        current.withLock { $0.restarting = task }
    }

    /// Returns once no restart is in progress (at once if none is).
    func waitUntilServing() async throws {
        let restarting = current.withLock { $0.restarting }
        _ = try await restarting?.value
    }

    func stop() {
        current.withLock { $0.process }?.relay.stop()
    }
}

/// An account with one device, speaking raw frames: registers, authenticates, requests.
struct WireIdentity: Sendable {
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    let handle: String
    let account = Ed25519PrivateKey()
    let device = Ed25519PrivateKey()

    init(_ handle: String) { self.handle = handle }

    func register(_ url: String) async throws {
        var keys = WireDeviceKeys()
        keys.deviceIdentityKey = device.publicKey.rawRepresentation
        keys.deviceCertificateSignature = account.signature(for: SignedPayload.deviceCertificate(
            accountIdentityKey: account.publicKey.rawRepresentation, deviceIdentityKey: device.publicKey.rawRepresentation))
        var signed = WireSignedPreKey()
        signed.id = 1
        signed.publicKey = SystemRandom().bytes(32)
        signed.signature = device.signature(for: signed.publicKey)
        keys.signedPrekey = signed
        // The relay checks a KEM prekey's size and signature only: random bytes stand in for an ML-KEM key.
        var kem = WireKEMPreKey()
        kem.id = 1
        kem.lastResort = true
        kem.publicKey = SystemRandom().bytes(WireConstants.kemPublicKeyLength)
        kem.signature = device.signature(for: SignedPayload.kemPreKey(id: 1, lastResort: true, publicKey: kem.publicKey))
        keys.lastResortKemPrekey = kem
        let deviceKeys = keys
        try await WireSession.with(url) { session in
            let nonce = try await session.challenge()
            var register = WireRegister()
            register.handle = handle
            register.accountIdentityKey = account.publicKey.rawRepresentation
            register.device = deviceKeys
            register.challengeSignature = device.signature(for: SignedPayload.authentication(nonce: nonce, handle: handle))
            guard case .registerResult(let result) = try await session.request(.register(register)).body, result.deviceID == 1 else {
                throw Failure("registration of \(handle) failed")
            }
        }
    }

    /// Connects, authenticates as device 1, and runs `body`.
    func connect<T: Sendable>(_ url: String, _ body: @escaping @Sendable (WireSession) async throws -> T) async throws -> T {
        try await WireSession.with(url) { session in
            let nonce = try await session.challenge()
            var authenticate = WireAuthenticate()
            authenticate.handle = handle
            authenticate.deviceID = 1
            authenticate.signature = device.signature(for: SignedPayload.authentication(nonce: nonce, handle: handle))
            guard case .authenticateResult = try await session.request(.authenticate(authenticate)).body else {
                throw Failure("authentication of \(handle) failed")
            }
            return try await body(session)
        }
    }
}

/// One WebSocket connection: requests matched to responses by request id; unsolicited frames in order.
final class WireSession: Sendable {
    private let outbound: WebSocketOutboundWriter
    let unsolicited: AsyncStream<WireFrame>
    private let unsolicitedContinuation: AsyncStream<WireFrame>.Continuation
    private let state = Mutex<(nextID: UInt64, waiting: [UInt64: CheckedContinuation<WireFrame, any Error>], early: [UInt64: WireFrame], closed: Bool)>(
        (1, [:], [:], false))

    private init(outbound: WebSocketOutboundWriter) {
        self.outbound = outbound
        (unsolicited, unsolicitedContinuation) = AsyncStream.makeStream(of: WireFrame.self)
    }

    struct Closed: Error {}

    /// Opens a connection to `url`, runs `body`, closes. Throws when the relay cannot be reached or goes away.
    static func with<T: Sendable>(_ url: String, _ body: @escaping @Sendable (WireSession) async throws -> T) async throws -> T {
        let result = Mutex<Result<T, any Error>?>(nil)
        var logger = Logger(label: "flitz-fault-client")
        logger.logLevel = .critical
        try await WebSocketClient.connect(url: url, configuration: .init(maxFrameSize: 4 * WireConstants.maxFrameBytes), logger: logger) {
            inbound, outbound, _ in
            let session = WireSession(outbound: outbound)
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        for try await message in inbound.messages(maxSize: 4 * WireConstants.maxFrameBytes) {
                            if case .binary(let buffer) = message, let frame = try? WireFrame(serializedBytes: Data(buffer.readableBytesView)) {
                                session.received(frame)
                            }
                        }
                    } catch {}
                    session.ended()
                }
                do {
                    let value = try await body(session)
                    result.withLock { $0 = .success(value) }
                } catch {
                    result.withLock { $0 = .failure(error) }
                }
                try? await outbound.close(.normalClosure, reason: nil)
                group.cancelAll()
            }
        }
        guard let outcome = result.withLock({ $0 }) else { throw Closed() }
        return try outcome.get()
    }

    private func received(_ frame: WireFrame) {
        guard frame.requestID != 0 else {
            unsolicitedContinuation.yield(frame)
            return
        }
        let waiter = state.withLock { state -> CheckedContinuation<WireFrame, any Error>? in
            if let waiter = state.waiting.removeValue(forKey: frame.requestID) { return waiter }
            state.early[frame.requestID] = frame
            return nil
        }
        waiter?.resume(returning: frame)
    }

    private func ended() {
        unsolicitedContinuation.finish()
        let waiters = state.withLock { state in
            state.closed = true
            defer { state.waiting = [:] }
            return Array(state.waiting.values)
        }
        for waiter in waiters { waiter.resume(throwing: Closed()) }
    }

    /// The nonce of the connection's `Challenge` (its first frame).
    func challenge() async throws -> Data {
        for await frame in unsolicited {
            if case .challenge(let challenge) = frame.body { return challenge.nonce }
        }
        throw Closed()
    }

    /// Sends a request and waits for its answer.
    func request(_ body: WireFrame.OneOf_Body) async throws -> WireFrame {
        let id = state.withLock { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
        try await outbound.write(.binary(ByteBuffer(bytes: FrameCodec.encode(WireFrame(requestID: id, body: body)))))
        return try await withCheckedThrowingContinuation { continuation in
            let outcome: Result<WireFrame, any Error>? = state.withLock { state in
                if let frame = state.early.removeValue(forKey: id) { return .success(frame) }
                if state.closed { return .failure(Closed()) }
                state.waiting[id] = continuation
                return nil
            }
            if let outcome { continuation.resume(with: outcome) }
        }
    }

    /// Reads and acknowledges everything up to `QueueDrained`; returns the envelopes.
    func drain() async throws -> [WireEnvelope] {
        var envelopes: [WireEnvelope] = []
        for await frame in unsolicited {
            switch frame.body {
            case .deliver(let deliver):
                envelopes += deliver.envelopes
                var ack = WireAcknowledge()
                ack.envelopeIds = deliver.envelopes.map(\.envelopeID)
                ack.receiptIds = deliver.receipts.map(\.receiptID)
                _ = try await request(.acknowledge(ack))
            case .queueDrained: return envelopes
            default: continue
            }
        }
        throw Closed()
    }
}

/// SplitMix64: a small seeded generator, so a failing schedule can be repeated from its seed.
struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func bytes(_ count: Int) -> Data {
        var data = Data(capacity: count + 8)
        while data.count < count { withUnsafeBytes(of: next()) { data.append(contentsOf: $0) } }
        return data.prefix(count)
    }
}

/// Runs `body`, failing with `Failure` after `limit` (a guard against hanging, not a measurement).
func within<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw WireIdentity.Failure("timed out after \(limit)") }
        return value
    }
}
