import FlitzCrypto
import FlitzRelay
import FlitzWire
import Foundation
import HummingbirdWSClient
import Logging
import NIOCore
import Synchronization
import Testing

/// A clock the test moves by hand.
final class TestClock: RelayClock {
    private let current = Mutex(Date(timeIntervalSince1970: 1_800_000_000))
    func now() -> Date { current.withLock { $0 } }
    func advance(seconds: Double) { current.withLock { $0.addTimeInterval(seconds) } }
}

struct TestTimeout: Error {}

/// A relay started through `buildRelay` on 127.0.0.1 port 0 with a temp-file SQLite database.
struct RelayHarness: Sendable {
    let app: RelayApplication
    let clock: TestClock
    let port: Int
    let databasePath: String

    var url: String { "ws://127.0.0.1:\(port)/v1/ws" }

    static func run(
        authenticationTimeout: Duration = .seconds(30), configure: (inout RelayConfiguration) -> Void = { _ in },
        databasePath: ((URL) -> String)? = nil, prepare: (RelayApplication, TestClock) -> Void = { _, _ in },
        logger customLogger: Logger? = nil, _ body: @Sendable (RelayHarness) async throws -> Void
    ) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-relay-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = databasePath?(directory) ?? directory.appendingPathComponent("relay.sqlite").path
        let clock = TestClock()
        var logger = customLogger ?? Logger(label: "flitz-relay-test")
        if customLogger == nil { logger.logLevel = .warning }
        var configuration = RelayConfiguration(
            host: "127.0.0.1", port: 0, databasePath: path, sweepInterval: .seconds(3_600), retention: .seconds(86_400),
            authenticationTimeout: authenticationTimeout)
        configure(&configuration)
        let app = try await buildRelay(configuration: configuration, logger: logger, clock: clock)
        // Before any service runs: tests replace sleepers and move the clock here.
        prepare(app, clock)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.run(handleSignals: false) }
            let port = await app.port()
            do {
                try await body(RelayHarness(app: app, clock: clock, port: port, databasePath: path))
            } catch {
                await app.triggerGracefulShutdown()
                throw error
            }
            await app.triggerGracefulShutdown()
            try await group.waitForAll()
        }
    }

    /// Opens a WebSocket, reads the Challenge, runs `body` with the connection, then closes it.
    @discardableResult
    func connect<T: Sendable>(_ body: @escaping @Sendable (TestConnection) async throws -> T) async throws -> T {
        let result = Mutex<Result<T, any Error>?>(nil)
        var logger = Logger(label: "flitz-test-client")
        logger.logLevel = .warning
        try await WebSocketClient.connect(
            url: url, configuration: .init(maxFrameSize: 4 * WireConstants.maxFrameBytes), logger: logger
        ) { inbound, outbound, _ in
            let inbox = FrameInbox()
            await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        for try await message in inbound.messages(maxSize: 4 * WireConstants.maxFrameBytes) {
                            if case .binary(let buffer) = message { inbox.push(Data(buffer.readableBytesView)) }
                        }
                    } catch {}
                    inbox.finish()
                }
                let connection = TestConnection(outbound: outbound, inbox: inbox)
                do {
                    let challenge = try await connection.next()
                    guard case .challenge(let hello) = challenge.body else { throw TestTimeout() }
                    connection.nonce = hello.nonce
                    connection.supportedVersions = hello.supportedVersions
                    let value = try await body(connection)
                    result.withLock { $0 = .success(value) }
                } catch {
                    result.withLock { $0 = .failure(error) }
                }
                try? await outbound.close(.normalClosure, reason: nil)
                group.cancelAll()
            }
        }
        guard let outcome = result.withLock({ $0 }) else { throw TestTimeout() }
        return try outcome.get()
    }
}

/// One client connection: send frames, read frames (with a timeout so a failing test never hangs).
final class TestConnection: @unchecked Sendable {
    // Used from one task only (the WebSocket handler's body).
    private let outbound: WebSocketOutboundWriter
    private let inbox: FrameInbox
    private var nextRequestID: UInt64 = 1
    private var stash: [WireFrame] = []
    var nonce = Data()
    /// `Challenge.supported_versions` of this connection.
    var supportedVersions: [UInt32] = []

    init(outbound: WebSocketOutboundWriter, inbox: FrameInbox) {
        self.outbound = outbound
        self.inbox = inbox
    }

    func sendRaw(_ bytes: Data) async throws {
        try await outbound.write(.binary(ByteBuffer(bytes: bytes)))
    }

    func send(_ frame: WireFrame) async throws {
        try await sendRaw(FrameCodec.encode(frame))
    }

    /// The next raw frame from the relay, or nil when the connection closed.
    /// - Throws: `TestTimeout` when nothing arrives within `timeout`: a failure guard only, long enough for a
    ///   machine running the whole suite in parallel (5 s was not, with blob fsyncs in the mix).
    func nextRaw(timeout: Duration = .seconds(20)) async throws -> Data? {
        let deadline = ContinuousClock.now + timeout
        while true {
            switch inbox.pop() {
            case .frame(let data): return data
            case .finished: return nil
            case .empty:
                guard ContinuousClock.now < deadline else { throw TestTimeout() }
                try await Task.sleep(for: .milliseconds(2))
            }
        }
    }

    /// Unsolicited frames read while waiting for a response and not yet taken by `next()`.
    var stashedFrames: [WireFrame] { stash }

    /// The next frame (stashed unsolicited frames first).
    func next() async throws -> WireFrame {
        if !stash.isEmpty { return stash.removeFirst() }
        guard let data = try await nextRaw() else { throw TestTimeout() }
        return try WireFrame(serializedBytes: data)
    }

    /// Sends a request and returns its response; unsolicited frames read meanwhile are kept for `next()`.
    func request(_ body: WireFrame.OneOf_Body) async throws -> WireFrame {
        let id = nextRequestID
        nextRequestID += 1
        try await send(WireFrame(requestID: id, body: body))
        while true {
            guard let data = try await nextRaw() else { throw TestTimeout() }
            let frame = try WireFrame(serializedBytes: data)
            if frame.requestID == id { return frame }
            // A fresh Challenge (sent before the answer to a registration or a failed attempt) replaces the
            // consumed nonce (`relay.md`, "Challenges").
            if case .challenge(let challenge) = frame.body {
                nonce = challenge.nonce
                continue
            }
            stash.append(frame)
        }
    }

    /// Whether the relay closed the connection (no more frames within the timeout).
    func isClosedByRelay() async throws -> Bool {
        do {
            return try await nextRaw(timeout: .seconds(5)) == nil
        } catch is TestTimeout {
            return false
        }
    }
}

/// A client identity: account and device keys, and a signed prekey.
struct TestIdentity: Sendable {
    let handle: String
    let account = Ed25519PrivateKey()
    let device = Ed25519PrivateKey()
    let signedPreKeyPublic = SystemRandom().bytes(32)
    /// The relay checks a KEM prekey's size and signature only, so random bytes stand in for an ML-KEM key.
    let lastResortKEMPreKeyPublic = SystemRandom().bytes(WireConstants.kemPublicKeyLength)

    init(_ handle: String) { self.handle = handle }

    func deviceKeys(oneTimePreKeys: Int = 5, startingAt first: UInt32 = 1) -> WireDeviceKeys {
        var keys = WireDeviceKeys()
        keys.deviceIdentityKey = device.publicKey.rawRepresentation
        keys.deviceCertificateSignature = account.signature(for: SignedPayload.deviceCertificate(
            accountIdentityKey: account.publicKey.rawRepresentation, deviceIdentityKey: device.publicKey.rawRepresentation))
        var signed = WireSignedPreKey()
        signed.id = 1
        signed.publicKey = signedPreKeyPublic
        signed.signature = device.signature(for: signedPreKeyPublic)
        keys.signedPrekey = signed
        keys.lastResortKemPrekey = kemPreKey(id: 1, lastResort: true, publicKey: lastResortKEMPreKeyPublic)
        keys.oneTimePrekeys = (0..<oneTimePreKeys).map { index in
            var key = WireOneTimePreKey()
            key.id = first + UInt32(index)
            key.publicKey = SystemRandom().bytes(32)
            return key
        }
        return keys
    }

    /// A KEM prekey signed by this device over `SignedPayload.kemPreKey`.
    func kemPreKey(id: UInt32, lastResort: Bool, publicKey: Data = SystemRandom().bytes(WireConstants.kemPublicKeyLength)) -> WireKEMPreKey {
        var key = WireKEMPreKey()
        key.id = id
        key.publicKey = publicKey
        key.lastResort = lastResort
        key.signature = device.signature(for: SignedPayload.kemPreKey(id: id, lastResort: lastResort, publicKey: publicKey))
        return key
    }

    func register(nonce: Data, oneTimePreKeys: Int = 5) -> WireFrame.OneOf_Body {
        var register = WireRegister()
        register.handle = handle
        register.accountIdentityKey = account.publicKey.rawRepresentation
        register.device = deviceKeys(oneTimePreKeys: oneTimePreKeys)
        register.challengeSignature = device.signature(for: SignedPayload.authentication(nonce: nonce, handle: handle))
        return .register(register)
    }

    /// An Authenticate for `deviceID`; `callSignals` sets `call_signals` (only such a connection gets call signals,
    /// calls.md 3.2).
    func authenticate(nonce: Data, deviceID: UInt32, callSignals: Bool = false) -> WireFrame.OneOf_Body {
        var authenticate = WireAuthenticate()
        authenticate.handle = handle
        authenticate.deviceID = deviceID
        authenticate.callSignals = callSignals
        authenticate.signature = device.signature(for: SignedPayload.authentication(nonce: nonce, handle: handle))
        return .authenticate(authenticate)
    }
}

extension WireFrame {
    var errorCode: WireErrorCode? {
        if case .error(let error) = body { error.code } else { nil }
    }
}

extension TestConnection {
    /// Registers `identity` and returns (device id, recovery code).
    func register(_ identity: TestIdentity, oneTimePreKeys: Int = 5) async throws -> (UInt32, String) {
        let reply = try await request(identity.register(nonce: nonce, oneTimePreKeys: oneTimePreKeys))
        guard case .registerResult(let result) = reply.body else {
            Issue.record("expected RegisterResult, got \(reply)")
            throw TestTimeout()
        }
        return (result.deviceID, result.recoveryCode)
    }

    /// Authenticates and reads everything up to QueueDrained; returns the delivered frames.
    @discardableResult
    func authenticate(_ identity: TestIdentity, deviceID: UInt32 = 1, callSignals: Bool = false) async throws -> [WireDeliver] {
        let reply = try await request(identity.authenticate(nonce: nonce, deviceID: deviceID, callSignals: callSignals))
        guard case .authenticateResult = reply.body else {
            Issue.record("expected AuthenticateResult, got \(reply)")
            throw TestTimeout()
        }
        var delivered: [WireDeliver] = []
        while true {
            let frame = try await next()
            switch frame.body {
            case .deliver(let deliver): delivered.append(deliver)
            case .queueDrained: return delivered
            default: Issue.record("unexpected \(frame)")
            }
        }
    }

    /// The next pushed Deliver frame.
    func nextDeliver() async throws -> WireDeliver {
        let frame = try await next()
        guard case .deliver(let deliver) = frame.body else {
            Issue.record("expected Deliver, got \(frame)")
            throw TestTimeout()
        }
        return deliver
    }

    func submit(_ envelopes: [WireOutgoingEnvelope]) async throws -> [WireSubmitOutcome] {
        var submit = WireSubmit()
        submit.envelopes = envelopes
        let reply = try await request(.submit(submit))
        guard case .submitResult(let result) = reply.body else {
            Issue.record("expected SubmitResult, got \(reply)")
            throw TestTimeout()
        }
        return result.outcomes
    }
}

func outgoing(_ id: UInt8, to handle: String, device: UInt32 = 1, ttl: UInt32 = 0, ciphertext: Data? = nil) -> WireOutgoingEnvelope {
    var envelope = WireOutgoingEnvelope()
    envelope.envelopeID = Data(repeating: id, count: 16)
    envelope.recipientHandle = handle
    envelope.recipientDeviceID = device
    envelope.ttlSeconds = ttl
    envelope.ciphertext = ciphertext ?? Data("ciphertext-\(id)".utf8)
    return envelope
}

/// Frames received by a test client, polled by `TestConnection.nextRaw`.
final class FrameInbox: Sendable {
    enum Pop { case frame(Data), empty, finished }
    private let state = Mutex<(frames: [Data], finished: Bool)>(([], false))
    func push(_ data: Data) { state.withLock { $0.frames.append(data) } }
    func finish() { state.withLock { $0.finished = true } }
    func pop() -> Pop {
        state.withLock { state in
            if !state.frames.isEmpty { return .frame(state.frames.removeFirst()) }
            return state.finished ? .finished : .empty
        }
    }
}
