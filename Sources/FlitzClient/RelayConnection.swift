import FlitzWire
import Foundation
import HummingbirdWSClient
import Logging
import NIOCore
import NIOFoundationCompat
import NIOSSL
import Synchronization

/// One WebSocket connection to the relay, multiplexing requests (matched by request id) and
/// unsolicited frames (challenge, deliveries, queue-drained) (`protocol/relay.md`, "Framing").
/// Safe to use from several tasks: `chat` sends while it reads.
public final class RelayConnection: Sendable {
    private enum Slot {
        case expected
        case waiting(CheckedContinuation<WireFrame, any Error>)
        case arrived(Result<WireFrame, any Error>)
    }

    private struct State {
        var nextRequestID: UInt64 = 1
        var requests: [UInt64: Slot] = [:]
        var closed = false
    }

    private let outbound: WebSocketOutboundWriter
    private let state = Mutex(State())
    private let unsolicited = WaitQueue<WireFrame>()
    /// Call signals delivered to this device (protocol/calls.md 3.2), apart from the other unsolicited frames so
    /// that a `CallController` reads them while `drain` and `listen` read deliveries. Only connections that set
    /// `Authenticate.call_signals` get any; still at most `maxQueuedCallSignals`, the oldest dropped (like the
    /// relay's 64 held per device), so a controller that falls behind cannot make it grow without bound.
    private let callSignals = WaitQueue<WireCallSignalDelivery>(limit: RelayConnection.maxQueuedCallSignals)
    private let clockOffset = Mutex<Int64>(0)

    /// Most call signals waiting to be read on one connection (protocol/calls.md 3.2's 64 per device).
    public static let maxQueuedCallSignals = 64

    /// Call signals received and not read yet (tests).
    var queuedCallSignals: Int { callSignals.count }
    /// Sees every frame this connection writes, decoded back from the bytes written (tests read envelopes'
    /// urgency classes from it); nil in normal use.
    private let tap: (@Sendable (WireFrame) -> Void)?

    /// The relay's clock minus this device's, in milliseconds, as seen at authentication (0 before).
    public var relayClockOffsetMilliseconds: Int64 {
        get { clockOffset.withLock { $0 } }
        set { clockOffset.withLock { $0 = newValue } }
    }

    init(outbound: WebSocketOutboundWriter, tap: (@Sendable (WireFrame) -> Void)? = nil) {
        self.outbound = outbound
        self.tap = tap
    }

    /// Sends a request and waits for the frame with the same request id.
    /// - Throws: `ClientError(.refused)` when the relay answers with an `Error` frame;
    ///   `ClientError(.relayUnreachable)` on timeout or when the connection closes.
    public func request(_ body: WireFrame.OneOf_Body, timeout: Duration = .seconds(15)) async throws -> WireFrame {
        let id: UInt64? = state.withLock { state in
            guard !state.closed else { return nil }
            defer { state.nextRequestID += 1 }
            state.requests[state.nextRequestID] = .expected
            return state.nextRequestID
        }
        guard let id else { throw ClientError(.relayUnreachable, "connection to the relay closed") }
        let timer = Task { [weak self] in
            try await Task.sleep(for: timeout)
            self?.complete(id, .failure(ClientError(.relayUnreachable, "the relay did not answer within \(timeout)")))
        }
        defer { timer.cancel() }
        do {
            let bytes = FrameCodec.encode(WireFrame(requestID: id, body: body))
            if let tap, let written = try? FrameCodec.decode(bytes) { tap(written) }
            try await outbound.write(.binary(ByteBuffer(data: bytes)))
        } catch {
            complete(id, .failure(ClientError(.relayUnreachable, "connection to the relay lost")))
        }
        let frame = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let ready: Result<WireFrame, any Error>? = state.withLock { state in
                    if case .arrived(let result) = state.requests[id] {
                        state.requests[id] = nil
                        return result
                    }
                    state.requests[id] = .waiting(continuation)
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            self.complete(id, .failure(CancellationError()))
        }
        if case .error(let error) = frame.body {
            throw ClientError(.refused(error.code), "the relay refused the request: \(error.message)", relayError: error)
        }
        return frame
    }

    /// The next unsolicited frame, or nil when the connection closed or `timeout` passed first.
    public func nextUnsolicited(timeout: Duration) async -> WireFrame? {
        await unsolicited.next(timeout: timeout)
    }

    /// The next call signal delivered to this device, or nil when the connection closed or `timeout` passed first.
    public func nextCallSignal(timeout: Duration) async -> WireCallSignalDelivery? {
        await callSignals.next(timeout: timeout)
    }

    /// Called by the reader for every decoded frame.
    func received(_ frame: WireFrame) {
        if frame.requestID != 0 {
            complete(frame.requestID, .success(frame))
        } else if case .callSignalDelivery(let signal) = frame.body {
            callSignals.push(signal)
        } else {
            unsolicited.push(frame)
        }
    }

    /// Called by the reader when the connection ends: fails every pending request.
    func closed() {
        let requests = state.withLock { state in
            state.closed = true
            defer { state.requests = [:] }
            return state.requests
        }
        for case .waiting(let continuation) in requests.values {
            continuation.resume(throwing: ClientError(.relayUnreachable, "connection to the relay closed"))
        }
        unsolicited.finish()
        callSignals.finish()
    }

    /// A short, readable reason for a failed connection (the full error goes to the debug log).
    static func reason(_ error: any Error) -> String {
        let text = String(describing: error)
        if text.contains("Connection refused") { return "connection refused (is the relay running on that port?)" }
        if text.contains("cannotUseIPAddressInSNI") { return "wss:// needs a host name, not an IP address" }
        if text.contains("CERTIFICATE_VERIFY_FAILED") || text.contains("certificate verify failed") {
            return "the relay's TLS certificate is not trusted (for a self-hosted relay, pass its CA certificate with --ca-file)"
        }
        if text.contains("failedToValidateHostname") { return "the relay's TLS certificate is not valid for this host name" }
        if text.contains("Network is unreachable") || text.contains("No route to host") { return "network unreachable" }
        if text.contains("unresolvable") || text.contains("Name or service not known") { return "unknown host name" }
        if text.contains("timeout") || text.contains("timedOut") { return "timed out" }
        if text.contains("invalidURL") || text.contains("InvalidURL") { return "not a valid ws:// or wss:// address" }
        return "the connection failed (run with --verbose for details)"
    }

    /// Runs `body`, failing with `ClientError(.relayUnreachable)` if it has not finished after `timeout`
    /// (then `body` is cancelled, which ends its pending requests at once).
    static func withTimeout<T: Sendable>(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw ClientError(.relayUnreachable, "the relay did not answer in time")
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    private func complete(_ id: UInt64, _ result: Result<WireFrame, any Error>) {
        let continuation: CheckedContinuation<WireFrame, any Error>? = state.withLock { state in
            switch state.requests[id] {
            case .expected:
                state.requests[id] = .arrived(result)
                return nil
            case .waiting(let continuation):
                state.requests[id] = nil
                return continuation
            case .arrived, nil:
                return nil  // a late answer after a timeout, or an id we never sent
            }
        }
        continuation?.resume(with: result)
    }


    /// The TLS configuration for `wss://`: certificates verified (chain and host name) against the system trust
    /// store plus, when given, the CA certificates in the PEM file `caFile` (`--ca-file`, for a self-hosted relay).
    /// - Throws: `ClientError(.invalidArgument)` when `caFile` cannot be read or holds no certificate.
    static func tlsConfiguration(caFile: String?) throws -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .fullVerification
        if let caFile {
            let certificates: [NIOSSLCertificate]
            do {
                certificates = try NIOSSLCertificate.fromPEMFile(caFile)
            } catch {
                throw ClientError(.invalidArgument, "cannot read the CA certificate file \(caFile) (PEM expected)")
            }
            guard !certificates.isEmpty else { throw ClientError(.invalidArgument, "no PEM certificate in \(caFile)") }
            configuration.additionalTrustRoots = [.certificates(certificates)]
        }
        return configuration
    }

    /// Opens a connection to `url` (`ws://HOST:PORT` or `wss://HOST:PORT`; the path `/v1/ws` is added when
    /// absent), runs `body` with it and closes it. `wss://` verifies the relay's certificate against the system
    /// trust store and the CA certificates of `caFile` (PEM), if given. `tap`, when given, sees every frame written.
    /// - Throws: `ClientError(.relayUnreachable)` when the relay cannot be reached or its certificate is not
    ///   trusted; `ClientError(.invalidArgument)` when `caFile` cannot be read; whatever `body` throws.
    public static func with<T: Sendable>(
        url: String, caFile: String? = nil, logger: Logger, tap: (@Sendable (WireFrame) -> Void)? = nil, _ body: @escaping @Sendable (RelayConnection) async throws -> T
    ) async throws -> T {
        let endpoint = url.hasSuffix("/v1/ws") ? url : url.trimmingCharacters(in: CharacterSet(charactersIn: "/")) + "/v1/ws"
        let tls = url.lowercased().hasPrefix("wss://") ? try tlsConfiguration(caFile: caFile) : nil
        let result = Mutex<Result<T, any Error>?>(nil)
        do {
            try await WebSocketClient.connect(
                url: endpoint, configuration: .init(maxFrameSize: WireConstants.maxFrameBytes), tlsConfiguration: tls, logger: logger
            ) { inbound, outbound, _ in
                let connection = RelayConnection(outbound: outbound, tap: tap)
                await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        defer { connection.closed() }
                        for try await message in inbound.messages(maxSize: WireConstants.maxFrameBytes) {
                            guard case .binary(let buffer) = message else { continue }
                            do {
                                connection.received(try FrameCodec.decode(Data(buffer: buffer)))
                            } catch {
                                logger.warning("ignoring an undecodable frame from the relay", metadata: ["error": "\(error)"])
                            }
                        }
                    }
                    let outcome: Result<T, any Error>
                    do { outcome = .success(try await body(connection)) } catch { outcome = .failure(error) }
                    result.withLock { $0 = outcome }
                    try? await outbound.close(.normalClosure, reason: nil)
                    group.cancelAll()
                }
            }
        } catch {
            if let outcome = result.withLock({ $0 }) { return try outcome.get() }
            logger.debug("connection failed", metadata: ["error": "\(error)"])
            throw ClientError(.relayUnreachable, "cannot reach the relay at \(endpoint): \(Self.reason(error))")
        }
        guard let outcome = result.withLock({ $0 }) else {
            throw ClientError(.relayUnreachable, "connection to the relay at \(endpoint) ended early")
        }
        return try outcome.get()
    }
}
