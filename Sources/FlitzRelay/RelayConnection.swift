import FlitzStore
import FlitzWire
import Foundation
import HummingbirdWebSocket
import Logging
import NIOCore
import Synchronization

/// Runs one WebSocket connection (`protocol/relay.md`, "Connections"): sends the Challenge, then
/// handles frames and relay signals (wake, close) one at a time, in arrival order, driving a
/// `ConnectionStateMachine`.
struct RelayConnection {
    /// Largest WebSocket message read before the frame-size check; larger messages are closed by the
    /// WebSocket layer with close code 1009 (too big). Between `maxFrameBytes` and this, the relay
    /// answers `FRAME_TOO_LARGE` and closes.
    static let readLimit = 2 * WireConstants.maxFrameBytes
    /// Most received messages waiting to be handled; the reader stops reading (TCP backpressure) beyond it.
    static let maxPendingMessages = 16

    private enum Event: Sendable {
        case message(WebSocketMessage)
        case inboundFinished
        case signal(ConnectionSignal)
        case authenticationDeadline
    }

    let relay: Relay
    /// The peer's IP address, the key of the per-address rate limits (`RateLimiter.swift`).
    var source = "unknown"

    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, logger: Logger) async throws {
        let registry = relay.registry
        let connectionID = registry.makeConnectionID()
        let logger = {
            var logger = logger
            logger[metadataKey: "relay.connection"] = "\(connectionID)"
            return logger
        }()
        let (events, continuation) = AsyncStream.makeStream(of: Event.self)
        let gate = ReadGate(limit: Self.maxPendingMessages)
        var machine = ConnectionStateMachine(nonce: relay.random.bytes(WireConstants.challengeNonceLength))
        defer {
            if let device = machine.device { registry.release(device, connectionID: connectionID) }
            continuation.finish()
            gate.close()
        }

        var challenge = WireChallenge()
        challenge.nonce = machine.nonce
        challenge.relayTimeMs = relay.clock.nowMs()
        challenge.supportedVersions = WireConstants.supportedVersions
        try await send(WireFrame(requestID: 0, body: .challenge(challenge)), outbound)

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await message in inbound.messages(maxSize: Self.readLimit) {
                        guard await gate.enter() else { break }
                        continuation.yield(.message(message))
                    }
                } catch {
                    logger.debug("inbound ended", metadata: ["error": "\(error)"])
                }
                continuation.yield(.inboundFinished)
            }
            // Unauthenticated connections hold resources and may not linger (`relay.authenticationTimeout`).
            let authenticationTimeout = relay.configuration.authenticationTimeout
            group.addTask {
                try? await Task.sleep(for: authenticationTimeout)
                continuation.yield(.authenticationDeadline)
            }
            // Whatever ends the loop (close, error), release a reader waiting in the gate before the
            // group waits for it.
            defer {
                gate.close()
                group.cancelAll()
            }
            loop: for await event in events {
                switch event {
                case .inboundFinished:
                    break loop
                case .authenticationDeadline:
                    if machine.device == nil {
                        logger.debug("closing", metadata: ["reason": "not authenticated in time"])
                        try? await outbound.close(.policyViolation, reason: "not authenticated in time")
                        break loop
                    }
                case .signal(.wake):
                    if case .deliver(let device, let after) = machine.wokenUp() {
                        try await deliver(device: device, after: after, drained: false, machine: &machine, outbound)
                    }
                case .signal(.close(let reason)):
                    if case .close(let reason) = machine.closeRequested(reason: reason) {
                        logger.debug("closing", metadata: ["reason": "\(reason)"])
                        try? await outbound.close(.normalClosure, reason: reason)
                        break loop
                    }
                case .message(let message):
                    defer { gate.leave() }
                    let keepOpen = try await received(message, machine: &machine, connectionID: connectionID, continuation: continuation, outbound, logger)
                    if !keepOpen { break loop }
                }
            }
        }
    }

    /// Handles one WebSocket message; returns false when the connection must close.
    private func received(
        _ message: WebSocketMessage, machine: inout ConnectionStateMachine, connectionID: UInt64,
        continuation: AsyncStream<Event>.Continuation, _ outbound: WebSocketOutboundWriter, _ logger: Logger
    ) async throws -> Bool {
        let frame: WireFrame
        do throws(FrameDecodingError) {
            switch message {
            case .binary(let buffer): frame = try FrameCodec.decode(Data(buffer.readableBytesView))
            case .text: throw .malformed  // Text messages are never frames.
            }
        } catch {
            switch machine.receivedUndecodable(error) {
            case .reply(let reply):
                try await send(reply, outbound)
                return true
            case .replyAndClose(let reply):
                try await send(reply, outbound)
                try? await outbound.close(.messageTooLarge, reason: "frame too large")
                return false
            }
        }
        switch machine.receivedFrame(frame) {
        case .ignore:
            return true
        case .reply(let reply):
            try await send(reply, outbound)
        case .handleUnauthenticated(let requestID, let body, let nonce):
            try await handleUnauthenticated(
                requestID: requestID, body: body, nonce: nonce, machine: &machine, connectionID: connectionID, continuation: continuation, outbound, logger)
        case .handleAuthenticated(let requestID, let body, let device):
            let reply: WireFrame
            do {
                reply = try await handleAuthenticated(requestID: requestID, body: body, device: device)
            } catch {
                reply = error.frame(requestID: requestID)
            }
            try await send(reply, outbound)
        }
        return true
    }

    private func handleUnauthenticated(
        requestID: UInt64, body: WireFrame.OneOf_Body, nonce: Data, machine: inout ConnectionStateMachine, connectionID: UInt64,
        continuation: AsyncStream<Event>.Continuation, _ outbound: WebSocketOutboundWriter, _ logger: Logger
    ) async throws {
        do {
            try relay.admitUnauthenticated(body, source: source)
            switch body {
            case .register(let request):
                let result = try await relay.register(request, nonce: nonce)
                try await send(WireFrame(requestID: requestID, body: .registerResult(result)), outbound)
            case .recover(let request):
                let result = try await relay.recover(request, nonce: nonce)
                try await send(WireFrame(requestID: requestID, body: .registerResult(result)), outbound)
            case .authenticate(let request):
                let (device, result) = try await relay.authenticate(request, nonce: nonce)
                switch machine.authenticationSucceeded(as: device) {
                case .sendResultAndDrain(let device):
                    relay.registry.claim(device, connectionID: connectionID) { signal in continuation.yield(.signal(signal)) }
                    logger.debug("authenticated", metadata: ["relay.handle": "\(device.handle)", "relay.device": "\(device.deviceID)"])
                    try await send(WireFrame(requestID: requestID, body: .authenticateResult(result)), outbound)
                    try await deliver(device: device, after: 0, drained: true, machine: &machine, outbound)
                }
            default:
                try await send(.error(.unknownFrame, "unexpected frame", requestID: requestID), outbound)
            }
        } catch let error as RelayError {
            try await send(error.frame(requestID: requestID), outbound)
        }
    }

    private func handleAuthenticated(requestID: UInt64, body: WireFrame.OneOf_Body, device: DeviceAddress) async throws(RelayError) -> WireFrame {
        try relay.admitAuthenticated(body, device: device, source: source)
        switch body {
        case .publishPrekeys(let request):
            return WireFrame(requestID: requestID, body: .prekeyStatus(try await relay.publishPreKeys(request, device: device)))
        case .fetchPrekeyBundle(let request):
            return WireFrame(requestID: requestID, body: .prekeyBundle(try await relay.fetchPreKeyBundle(request)))
        case .submit(let request):
            return WireFrame(requestID: requestID, body: .submitResult(try await relay.submit(request, sender: device)))
        case .acknowledge(let request):
            try await relay.acknowledge(request, device: device)
            return WireFrame(requestID: requestID, body: .ok(WireOk()))
        case .reportSeen(let request):
            try await relay.reportSeen(request, device: device)
            return WireFrame(requestID: requestID, body: .ok(WireOk()))
        default:
            return .error(.unknownFrame, "unexpected frame", requestID: requestID)
        }
    }

    /// Sends every item queued after `after` in Deliver frames, then `QueueDrained` when `drained`.
    private func deliver(
        device: DeviceAddress, after: Int64, drained: Bool, machine: inout ConnectionStateMachine, _ outbound: WebSocketOutboundWriter
    ) async throws {
        var cursor = after
        do {
            while let (body, last, more) = try await relay.nextDelivery(for: device, after: cursor) {
                try await send(WireFrame(requestID: 0, body: .deliver(body)), outbound)
                machine.sentItems(through: last)
                cursor = last
                if !more { break }
            }
        } catch let error as RelayError {
            try await send(error.frame(requestID: 0), outbound)
            return
        }
        if drained {
            try await send(WireFrame(requestID: 0, body: .queueDrained(WireQueueDrained())), outbound)
        }
    }

    private func send(_ frame: WireFrame, _ outbound: WebSocketOutboundWriter) async throws {
        relay.metrics.sent(frame)
        try await outbound.write(.binary(ByteBuffer(bytes: FrameCodec.encode(frame))))
    }
}

/// Bounds the messages a connection has read but not yet handled: `enter` waits while `limit` are
/// pending; `close` releases every waiter (returning false) when the connection ends.
final class ReadGate: Sendable {
    private let state: Mutex<(pending: Int, closed: Bool, waiter: CheckedContinuation<Bool, Never>?)>
    private let limit: Int

    init(limit: Int) {
        self.limit = limit
        state = Mutex((0, false, nil))
    }

    /// Reserves a slot; false when the gate is closed.
    func enter() async -> Bool {
        await withCheckedContinuation { continuation in
            let ready: Bool? = state.withLock { state in
                if state.closed { return false }
                if state.pending < limit {
                    state.pending += 1
                    return true
                }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// Frees a slot, handing it to a waiting reader if any.
    func leave() {
        let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter  // the slot passes to the waiter; pending is unchanged
            }
            state.pending -= 1
            return nil
        }
        waiter?.resume(returning: true)
    }

    /// Releases a waiting reader with false; later `enter` calls return false at once.
    func close() {
        let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            state.closed = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: false)
    }
}
