import FlitzStore
import FlitzWire
import Foundation
import HummingbirdWebSocket
import Logging
import NIOCore
import Synchronization

/// Runs one WebSocket connection (`protocol/relay.md`, "Connections"): sends the Challenge, then
/// handles frames and relay signals (wake, close) one at a time, in arrival order, driving a
/// `ConnectionStateMachine`. Delivery goes one `Deliver` page per event, interleaved with requests, and
/// stops while the delivery window is full ("Delivery window"); writes go through a `ConnectionWriter`,
/// which disconnects a peer that stops reading ("Slow readers").
struct RelayConnection {
    /// Largest WebSocket message read before the frame-size check; larger messages are closed by the
    /// WebSocket layer with close code 1009 (too big). Between `maxFrameBytes` and this, the relay
    /// answers `FRAME_TOO_LARGE` and closes.
    static let readLimit = 2 * WireConstants.maxFrameBytes
    /// Most received messages waiting to be handled; the reader stops reading (TCP backpressure) beyond it.
    static let maxPendingMessages = 16
    /// Most online-only envelopes one connection holds waiting to be written (`conversations.md` 6); more are dropped
    /// (they are best-effort), so a flood of them cannot grow the relay's memory.
    static let maxPendingOnlineOnly = 32
    /// Online-only envelopes waiting in this connection's event stream.
    let onlineOnlyPending = OnlineOnlyBudget(limit: RelayConnection.maxPendingOnlineOnly)

    private enum Event: Sendable {
        case message(WebSocketMessage)
        case inboundFinished
        case close(reason: String)
        case pump
        case authenticationDeadline
        /// An online-only envelope to hand over now, outside the queue (`conversations.md` 6).
        case onlineOnly(WireEnvelope)
        /// Call signals wait for this connection in the relay's `CallSignalBroker` (`calls.md` 3.2).
        case callSignals
    }

    let relay: Relay
    /// The connection's socket: its outbound buffer is bounded, and it is closed under a stalled write.
    let channel: any Channel
    /// The peer's IP address, the key of the per-address rate limits (`RateLimiter.swift`).
    var source = "unknown"

    func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, logger: Logger) async throws {
        // In a cluster the connection's claim is released once it ended (awaited, so a graceful shutdown releases it
        // before the database client stops).
        let progress = DeliveryProgress()
        do {
            try await run(inbound: inbound, outbound: outbound, progress: progress, logger: logger)
        } catch {
            await relay.releaseInCluster(progress)
            throw error
        }
        await relay.releaseInCluster(progress)
    }

    private func run(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, progress: DeliveryProgress, logger: Logger) async throws {
        let registry = relay.registry
        let configuration = relay.configuration
        let connectionID = registry.makeConnectionID()
        let logger = {
            var logger = logger
            logger[metadataKey: "relay.connection"] = "\(connectionID)"
            return logger
        }()
        let (events, continuation) = AsyncStream.makeStream(of: Event.self)
        let pump = PumpRequest(continuation: { continuation.yield(.pump) })
        // At most one `callSignals` event waits at a time, however many signals arrive meanwhile (like `pump`).
        let callSignalsWake = PumpRequest(continuation: { continuation.yield(.callSignals) })
        let gate = ReadGate(limit: Self.maxPendingMessages)
        let writer = ConnectionWriter(
            outbound: outbound, channel: channel, timeout: configuration.writeTimeout, registry: registry, metrics: relay.metrics)
        await writer.limitBuffer(highWaterMark: configuration.outboundBufferBytes)
        var machine = ConnectionStateMachine(nonce: relay.random.bytes(WireConstants.challengeNonceLength), window: configuration.deliveryWindow)
        var windowFull = false
        defer {
            if let device = machine.device {
                // Call signals not yet taken stay held for the device's next connection.
                relay.calls.detach(device, connectionID: connectionID)
                registry.release(device, connectionID: connectionID)
                progress.device = device
            }
            if windowFull { registry.monitor.record { $0.windowsFull -= 1 } }
            continuation.finish()
            gate.close()
        }

        do {
            try await writer.send(challenge(machine.nonce))
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
                let authenticationTimeout = configuration.authenticationTimeout
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
                            try await writer.closeQuietly(.policyViolation, reason: "not authenticated in time")
                            break loop
                        }
                    case .onlineOnly(let envelope):
                        // Never stored, so not in the machine's in-flight accounting: it is not acknowledged. Written
                        // only below the high-water mark, never waiting: best-effort, it can never make this
                        // connection a slow reader to disconnect (dropped instead).
                        onlineOnlyPending.release()
                        var deliver = WireDeliver()
                        deliver.envelopes = [envelope]
                        let sent = try await writer.sendIfRoom(WireFrame(requestID: 0, body: .deliver(deliver)))
                        registry.monitor.record {
                            $0.onlineOnlyHandled += 1
                            if !sent { $0.onlineOnlyDropped += 1 }
                        }
                    case .pump:
                        if pump.taken() { _ = machine.wokenUp() }
                        try await deliverPage(machine: &machine, writer: writer, pump: pump, progress: progress)
                    case .callSignals:
                        _ = callSignalsWake.taken()
                        if let device = machine.device { try await writeCallSignals(device, connectionID: connectionID, writer) }
                    case .close(let reason):
                        if case .close(let reason) = machine.closeRequested(reason: reason) {
                            logger.debug("closing", metadata: ["reason": "\(reason)"])
                            try await writer.closeQuietly(.normalClosure, reason: reason)
                            break loop
                        }
                    case .message(let message):
                        defer { gate.leave() }
                        let keepOpen = try await received(
                            message, machine: &machine, connectionID: connectionID, continuation: continuation, pump: pump,
                            callSignalsWake: callSignalsWake, progress: progress, writer, logger)
                        if !keepOpen { break loop }
                    }
                    let full = machine.device != nil && machine.inFlightCount >= machine.window
                    if full != windowFull {
                        windowFull = full
                        registry.monitor.record { $0.windowsFull += full ? 1 : -1 }
                    }
                }
            }
        } catch let stalled as ConnectionWriter.Stalled {
            // The socket is closed; the unacknowledged items stay queued for the next connection.
            logger.notice("closed a slow reader", metadata: ["relay.bufferedBytes": "\(stalled.bufferedBytes)"])
            registry.monitor.record {
                $0.slowReaderDisconnects += 1
                $0.maxBufferedBytesAtStall = max($0.maxBufferedBytesAtStall, stalled.bufferedBytes)
            }
        }
    }

    private func challenge(_ nonce: Data) -> WireFrame {
        var challenge = WireChallenge()
        challenge.nonce = nonce
        challenge.relayTimeMs = relay.clock.nowMs()
        challenge.supportedVersions = WireConstants.supportedVersions
        return WireFrame(requestID: 0, body: .challenge(challenge))
    }

    /// Handles one WebSocket message; returns false when the connection must close.
    private func received(
        _ message: WebSocketMessage, machine: inout ConnectionStateMachine, connectionID: UInt64,
        continuation: AsyncStream<Event>.Continuation, pump: PumpRequest, callSignalsWake: PumpRequest, progress: DeliveryProgress,
        _ writer: ConnectionWriter, _ logger: Logger
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
                try await writer.send(reply)
                return true
            case .replyAndClose(let reply):
                try await writer.send(reply)
                try await writer.closeQuietly(.messageTooLarge, reason: "frame too large")
                return false
            }
        }
        switch machine.receivedFrame(frame) {
        case .ignore:
            return true
        case .reply(let reply):
            try await writer.send(reply)
        case .handleUnauthenticated(let requestID, let body, let nonce):
            try await handleUnauthenticated(
                requestID: requestID, body: body, nonce: nonce, machine: &machine, connectionID: connectionID, continuation: continuation,
                pump: pump, callSignalsWake: callSignalsWake, progress: progress, writer, logger)
        case .handleAnonymous(let requestID, let body):
            // LinkPut / LinkTake: allowed in any state, they neither need nor consume the challenge.
            let reply: WireFrame
            do {
                try await relay.admitUnauthenticated(body, source: source)
                reply = try await relay.handleUnauthenticatedDeviceFrame(requestID: requestID, body: body, nonce: Data())
                    ?? .error(.unknownFrame, "unexpected frame", requestID: requestID)
            } catch {
                reply = error.frame(requestID: requestID)
            }
            try await writer.send(reply)
        case .handleAuthenticated(let requestID, let body, let device):
            let reply: WireFrame
            do {
                reply = try await handleAuthenticated(requestID: requestID, body: body, device: device, nonce: machine.nonce)
            } catch {
                reply = error.frame(requestID: requestID)
            }
            try await writer.send(reply)
            // Acknowledged items free their places in the window.
            if case .acknowledge(let request) = body, case .ok = reply.body {
                let keys = request.envelopeIds.compactMap(ConnectionStateMachine.ItemKey.envelope)
                    + request.receiptIds.compactMap(ConnectionStateMachine.ItemKey.receipt)
                if machine.acknowledged(keys) { pump.request() }
            }
        }
        return true
    }

    /// Register, Recover, RegisterDevice or Authenticate: each consumes the connection's nonce. Unless it
    /// authenticates the connection, the relay sends a fresh `Challenge` before the answer
    /// (`relay.md`, "Challenges").
    private func handleUnauthenticated(
        requestID: UInt64, body: WireFrame.OneOf_Body, nonce: Data, machine: inout ConnectionStateMachine, connectionID: UInt64,
        continuation: AsyncStream<Event>.Continuation, pump: PumpRequest, callSignalsWake: PumpRequest, progress: DeliveryProgress,
        _ writer: ConnectionWriter, _ logger: Logger
    ) async throws {
        let answer: WireFrame
        do {
            try await relay.admitUnauthenticated(body, source: source)
            switch body {
            case .register(let request):
                answer = WireFrame(requestID: requestID, body: .registerResult(try await relay.register(request, nonce: nonce)))
            case .recover(let request):
                answer = WireFrame(requestID: requestID, body: .registerResult(try await relay.recover(request, nonce: nonce)))
            case .authenticate(let request):
                let (device, result) = try await relay.authenticate(request, nonce: nonce)
                // In a cluster this connection becomes the device's live one everywhere (cluster.md 1.1).
                progress.epoch = try await relay.claimInCluster(device)
                switch machine.authenticationSucceeded(as: device) {
                case .sendResultAndDeliver(let device):
                    relay.registry.claim(device, connectionID: connectionID, epoch: progress.epoch, progress: progress) { signal in
                        switch signal {
                        case .wake: pump.wake()
                        case .close(let reason): continuation.yield(.close(reason: reason))
                        case .onlineOnly(let envelope):
                            if onlineOnlyPending.take() {
                                continuation.yield(.onlineOnly(envelope))
                            } else {
                                relay.registry.monitor.record {
                                    $0.onlineOnlyHandled += 1
                                    $0.onlineOnlyDropped += 1
                                }
                            }
                        }
                    }
                    // An authenticated connection closes the device's push coalescing window (push.md 5 step 3),
                    // durably before the answer, so no later wake-up decision can see the stale window.
                    await relay.push.deviceConnected(device)
                    logger.debug("authenticated", metadata: ["relay.handle": "\(device.handle)", "relay.device": "\(device.deviceID)"])
                    if request.callSignals {
                        // Call signals accepted from now on wake this connection; those held so far go out right after
                        // the result, before any queued envelope (calls.md 3.2).
                        relay.calls.attach(device, connectionID: connectionID) { callSignalsWake.request() }
                    } else {
                        // Without `call_signals` the device counts as not connected for calls (calls.md 3.2): its
                        // signals stay held (an offer rings it by push), even if the connection this one replaces
                        // handled them. `writeCallSignals` below then takes nothing.
                        relay.calls.detachAny(device)
                    }
                    try await writer.send(WireFrame(requestID: requestID, body: .authenticateResult(result)))
                    try await writeCallSignals(device, connectionID: connectionID, writer)
                    pump.request()
                    return
                }
            default:
                // RegisterDevice (Relay+Devices.swift).
                answer = try await relay.handleUnauthenticatedDeviceFrame(requestID: requestID, body: body, nonce: nonce)
                    ?? .error(.unknownFrame, "unexpected frame", requestID: requestID)
            }
        } catch let error as RelayError {
            answer = error.frame(requestID: requestID)
        }
        machine.attemptEnded(freshNonce: relay.random.bytes(WireConstants.challengeNonceLength))
        try await writer.send(challenge(machine.nonce))
        try await writer.send(answer)
    }

    private func handleAuthenticated(
        requestID: UInt64, body: WireFrame.OneOf_Body, device: DeviceAddress, nonce: Data
    ) async throws(RelayError) -> WireFrame {
        // RequestUploadCapability checks its arguments before the rate limit (attachments.md 4.1).
        if case .requestUploadCapability(let request) = body { try relay.checkUploadCapabilityRequest(request) }
        try await relay.admitAuthenticated(body, device: device, source: source)
        switch body {
        case .requestUploadCapability(let request):
            return WireFrame(requestID: requestID, body: .uploadCapability(try await relay.requestUploadCapability(request, device: device)))
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
        case .unsend, .cancelScheduled, .updateBlockList, .fetchBlockList, .submitReport:
            // Conversations (Relay+Conversations.swift).
            let reply = try await relay.handleConversationFrame(requestID: requestID, body: body, device: device)
            return reply ?? .error(.unknownFrame, "unexpected frame", requestID: requestID)
        case .sendCallSignal, .requestTurnCredentials:
            // Calls (Relay+Calls.swift).
            let reply = try await relay.handleCallFrame(requestID: requestID, body: body, device: device)
            return reply ?? .error(.unknownFrame, "unexpected frame", requestID: requestID)
        case .registerPushEndpoint, .removePushEndpoint, .fetchPushEndpoint:
            // Push endpoints (Relay+Push.swift).
            let reply = try await relay.handlePushFrame(requestID: requestID, body: body, device: device)
            return reply ?? .error(.unknownFrame, "unexpected frame", requestID: requestID)
        default:
            // Device lists, account deletion and settings, pairing (Relay+Devices.swift).
            let reply = try await relay.handleAuthenticatedDeviceFrame(requestID: requestID, body: body, device: device, nonce: nonce)
            return reply ?? .error(.unknownFrame, "unexpected frame", requestID: requestID)
        }
    }

    /// Writes the call signals waiting for `device` in the relay's broker (`calls.md` 3.2), in acceptance order, each in
    /// a `CallSignalDelivery` of request id 0. Taken means delivered: a signal is never kept after it was handed over.
    /// In a cluster the signals are taken from the database (`cluster.md` 4).
    private func writeCallSignals(_ device: DeviceAddress, connectionID: UInt64, _ writer: ConnectionWriter) async throws {
        let deliveries =
            relay.cluster == nil
            ? relay.calls.take(device, connectionID: connectionID, nowMs: relay.clock.nowMs())
            : await relay.takeCallSignalsInCluster(device, connectionID: connectionID)
        for delivery in deliveries {
            try await writer.send(WireFrame(requestID: 0, body: .callSignalDelivery(delivery)))
        }
    }

    /// Sends one `Deliver` page if the machine allows, then `QueueDrained` or another pump as it says.
    private func deliverPage(machine: inout ConnectionStateMachine, writer: ConnectionWriter, pump: PumpRequest, progress: DeliveryProgress) async throws {
        guard case .fetch(let device, let after, let limit) = machine.pump(nowMs: relay.clock.nowMs()) else { return }
        let next: ConnectionStateMachine.AfterPageAction
        do {
            relay.registry.monitor.record { $0.queueReads += 1 }
            if let (body, last, more) = try await relay.nextDelivery(for: device, after: after, limit: limit) {
                try await writer.send(WireFrame(requestID: 0, body: .deliver(body)))
                var items: [(key: ConnectionStateMachine.ItemKey, expiresAtMs: Int64)] = []
                items.reserveCapacity(body.envelopes.count + body.receipts.count)
                for envelope in body.envelopes {
                    if let key = ConnectionStateMachine.ItemKey.envelope(envelope.envelopeID) { items.append((key, envelope.expiresAtMs)) }
                }
                for receipt in body.receipts {
                    if let key = ConnectionStateMachine.ItemKey.receipt(receipt.receiptID) { items.append((key, .max)) }
                }
                next = machine.sent(items, through: last, more: more)
                progress.sent(through: last)
                let inFlight = machine.inFlightCount
                if inFlight > relay.registry.monitor.snapshot.maxInFlight {
                    relay.registry.monitor.record { $0.maxInFlight = max($0.maxInFlight, inFlight) }
                }
            } else {
                progress.foundNothing()
                next = machine.foundNothing()
            }
        } catch let error as RelayError {
            // The items stay queued and are tried again at the next wake or acknowledgement.
            try await writer.send(error.frame(requestID: 0))
            return
        }
        switch next {
        case .pumpAgain: pump.request()
        case .sendQueueDrained: try await writer.send(WireFrame(requestID: 0, body: .queueDrained(WireQueueDrained())))
        case .none: break
        }
    }
}

/// Coalesces requests to deliver: at most one `pump` event waits in a connection's event queue, however
/// many items are queued meanwhile, so a busy or blocked connection's queue stays bounded.
final class PumpRequest: Sendable {
    private let pending = Atomic<Bool>(false)
    private let woken = Atomic<Bool>(false)
    private let enqueue: @Sendable () -> Void

    init(continuation enqueue: @escaping @Sendable () -> Void) {
        self.enqueue = enqueue
    }

    /// Asks for a pump unless one is already waiting.
    func request() {
        if !pending.exchange(true, ordering: .acquiringAndReleasing) { enqueue() }
    }

    /// New items may be queued: asks for a pump that first tells the machine (`wokenUp`).
    func wake() {
        woken.store(true, ordering: .releasing)
        request()
    }

    /// The waiting pump is being handled; later requests enqueue a new one. Returns whether a wake came
    /// since the last pump was taken.
    func taken() -> Bool {
        pending.store(false, ordering: .releasing)
        return woken.exchange(false, ordering: .acquiringAndReleasing)
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

/// A count of online-only envelopes a connection holds, at most `limit` (`RelayConnection.maxPendingOnlineOnly`).
final class OnlineOnlyBudget: Sendable {
    private let pending = Atomic<Int>(0)
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// Takes one place; false (nothing taken) when `limit` are pending.
    func take() -> Bool {
        if pending.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue <= limit { return true }
        pending.wrappingSubtract(1, ordering: .acquiringAndReleasing)
        return false
    }

    /// Frees one place (the envelope was written or dropped).
    func release() { pending.wrappingSubtract(1, ordering: .acquiringAndReleasing) }
}
