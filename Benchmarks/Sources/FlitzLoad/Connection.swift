import FlitzWire
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// Monotonic nanoseconds (CLOCK_MONOTONIC), the generator's one time base for latencies.
@inline(__always) public func monotonicNanoseconds() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
}

/// Nanoseconds from now until the monotonic time `deadline` (0 when it has passed).
func nanosecondsUntil(_ deadline: UInt64) -> Int64 {
    let now = monotonicNanoseconds()
    return deadline > now ? Int64(deadline - now) : 0
}

/// Something with buffered writes (and acknowledgements to send) that `LoopFlusher` flushes once per
/// event-loop turn.
protocol Flushable: AnyObject {
    var isMarkedDirty: Bool { get set }
    func flushPending()
}

/// Coalesces flushes: everything marked during one event-loop turn (all the reads of one wake-up) is
/// flushed by one task queued behind them, so a burst of frames costs one `writev` per connection instead
/// of one per frame. Confined to its event loop.
final class LoopFlusher: @unchecked Sendable {
    let eventLoop: any EventLoop
    private var dirty: [any Flushable] = []
    private var scheduled = false

    init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    func mark(_ item: any Flushable) {
        guard !item.isMarkedDirty else { return }
        item.isMarkedDirty = true
        dirty.append(item)
        if !scheduled {
            scheduled = true
            eventLoop.execute { self.run() }
        }
    }

    private func run() {
        scheduled = false
        var items: [any Flushable] = []
        swap(&items, &dirty)
        for item in items {
            item.isMarkedDirty = false
            item.flushPending()
        }
    }
}

/// What a mode learns from a `DeviceConnection`, on the connection's event loop.
protocol DeviceConnectionDelegate: AnyObject {
    /// QueueDrained arrived: the device is authenticated and its queue was sent.
    func connectionReady(_ connection: DeviceConnection)
    /// An envelope arrived (its acknowledgement is already queued); `timestamp` from its first ciphertext bytes.
    func connection(_ connection: DeviceConnection, delivered id: EnvelopeID, timestamp: UInt64, now: UInt64)
    /// The relay answered `Ok` to an acknowledgement that covered `id`.
    func connection(_ connection: DeviceConnection, acknowledged id: EnvelopeID, now: UInt64)
    /// The relay answered a Submit for `id`: accepted when `errorCode` is 0.
    func connection(_ connection: DeviceConnection, submitted id: EnvelopeID, errorCode: Int, now: UInt64)
    /// The connection failed or closed (`reason` says why).
    func connectionClosed(_ connection: DeviceConnection, reason: String)
}

/// One authenticated device's WebSocket connection to the relay, as a NIO channel handler: reads the
/// Challenge, optionally registers, authenticates, acknowledges every delivered envelope and receipt
/// (coalesced per event-loop turn), and sends Submits for its mode. Setup frames go through SwiftProtobuf
/// (`WireFrame`); per-envelope frames through `FastWire`. Confined to its channel's event loop.
final class DeviceConnection: ChannelInboundHandler, Flushable, InboundFrameVisitor, @unchecked Sendable {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    private enum Phase { case awaitingChallenge, registering, authenticating, ready, closed }
    private enum Request {
        case register, authenticate
        case submit([EnvelopeID])
        case acknowledge([EnvelopeID])
    }

    let identity: BenchIdentity
    private(set) var deviceID: UInt32
    private let registerFirst: Bool
    weak var delegate: (any DeviceConnectionDelegate)?
    let flusher: LoopFlusher
    /// Monotonic time at which Authenticate was written (the backlog mode's drain start).
    private(set) var authenticateSentAt: UInt64 = 0
    /// Error frames and refused outcomes by `ErrorCode` number (-1: an unexpected frame kind, -2: an
    /// answer out of order).
    private(set) var errors: [Int: Int] = [:]
    var isMarkedDirty = false
    /// Succeeds at QueueDrained (authenticated, queue sent); fails if the connection ends before.
    let ready: EventLoopPromise<Void>
    private var readyCompleted = false

    private var phase = Phase.awaitingChallenge
    private var context: ChannelHandlerContext?
    private var nonce = Data()
    private var nextRequestID: UInt64 = 1
    private var requests = FIFO<(UInt64, Request)>()
    private var pendingEnvelopeAcks: [EnvelopeID] = []
    private var pendingReceiptAcks: [EnvelopeID] = []
    private var masks = MaskingKeys()
    private var readNow: UInt64 = 0

    /// - Parameters:
    ///   - registerFirst: send Register before Authenticate (the device id then comes from RegisterResult).
    init(identity: BenchIdentity, deviceID: UInt32 = 1, registerFirst: Bool, flusher: LoopFlusher) {
        self.identity = identity
        self.deviceID = deviceID
        self.registerFirst = registerFirst
        self.flusher = flusher
        ready = flusher.eventLoop.makePromise()
    }

    /// Whether the channel is open.
    var isActive: Bool { context?.channel.isActive ?? false }

    // MARK: Sending

    /// Queues one Submit of `ids` (with `timestamps` in their first ciphertext bytes) to `recipient`'s device
    /// 1; flushed at the end of the event-loop turn.
    func submit(ids: [EnvelopeID], timestamps: some Collection<UInt64>, to recipient: BenchIdentity, ciphertext: ByteBuffer) {
        guard let context, phase == .ready || phase == .authenticating else { return }
        let requestID = takeRequestID()
        var buffer = context.channel.allocator.buffer(capacity: ids.count * (ciphertext.readableBytes + 64) + 16)
        FastWire.writeSubmit(
            into: &buffer, requestID: requestID, ids: ids, timestamps: timestamps, handle: recipient.handleBytes, deviceID: 1,
            ciphertext: ciphertext)
        requests.append((requestID, .submit(ids)))
        write(buffer, context: context)
        flusher.mark(self)
    }

    /// Closes the connection (WebSocket close, then TCP).
    func close() {
        guard let context, phase != .closed else { return }
        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: masks.next(), data: context.channel.allocator.buffer(capacity: 0))
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
    }

    func flushPending() {
        guard let context else { return }
        while !pendingEnvelopeAcks.isEmpty || !pendingReceiptAcks.isEmpty {
            let envelopes = Array(pendingEnvelopeAcks.prefix(WireConstants.maxIDsPerFrame))
            let receipts = Array(pendingReceiptAcks.prefix(WireConstants.maxIDsPerFrame))
            pendingEnvelopeAcks.removeFirst(envelopes.count)
            pendingReceiptAcks.removeFirst(receipts.count)
            let requestID = takeRequestID()
            var buffer = context.channel.allocator.buffer(capacity: 18 * (envelopes.count + receipts.count) + 24)
            FastWire.writeAcknowledge(into: &buffer, requestID: requestID, envelopeIDs: envelopes, receiptIDs: receipts)
            requests.append((requestID, .acknowledge(envelopes)))
            write(buffer, context: context)
        }
        context.flush()
    }

    private func takeRequestID() -> UInt64 {
        defer { nextRequestID += 1 }
        return nextRequestID
    }

    private func write(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, maskKey: masks.next(), data: buffer)), promise: nil)
    }

    private func send(_ body: WireFrame.OneOf_Body, as request: Request, context: ChannelHandlerContext) {
        let requestID = takeRequestID()
        requests.append((requestID, request))
        let bytes = FrameCodec.encode(WireFrame(requestID: requestID, body: body))
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        write(buffer, context: context)
        context.flush()
    }

    // MARK: ChannelInboundHandler

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish("connection closed")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish("\(error)")
        context.close(promise: nil)
    }

    private func finish(_ reason: String) {
        guard phase != .closed else { return }
        phase = .closed
        if !readyCompleted {
            readyCompleted = true
            ready.fail(SetupError(reason: reason))
        }
        delegate?.connectionClosed(self, reason: reason)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary:
            received(frame.data, context: context)
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: masks.next(), data: frame.data)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            finish("closed by the relay")
            close()
        default:
            break
        }
    }

    private func received(_ data: ByteBuffer, context: ChannelHandlerContext) {
        switch phase {
        case .awaitingChallenge, .registering:
            let frame: WireFrame
            do {
                frame = try FrameCodec.decode(Data(data.readableBytesView))
            } catch {
                return fail("undecodable frame: \(error)", context: context)
            }
            switch frame.body {
            case .challenge(let challenge) where phase == .awaitingChallenge:
                nonce = challenge.nonce
                if registerFirst {
                    phase = .registering
                    send(identity.register(nonce: nonce), as: .register, context: context)
                } else {
                    startAuthentication(context: context)
                }
            case .challenge(let challenge) where phase == .registering:
                // The relay sends a fresh Challenge before the RegisterResult: the registration consumed the
                // first nonce, and Authenticate signs this one (protocol/relay.md, "Challenges").
                nonce = challenge.nonce
            case .registerResult(let result) where phase == .registering:
                _ = requests.popFirst()
                deviceID = result.deviceID
                startAuthentication(context: context)
            case .error(let error):
                fail("\(identity.handle): \(error.code) \(error.message)", context: context)
            default:
                fail("unexpected frame during setup: \(frame.body.map { "\($0)" }?.prefix(80) ?? "empty")", context: context)
            }
        case .authenticating, .ready:
            readNow = monotonicNanoseconds()
            do {
                try FastWire.parse(data, visitor: self)
            } catch {
                fail("undecodable frame: \(error)", context: context)
            }
        case .closed:
            break
        }
    }

    private func startAuthentication(context: ChannelHandlerContext) {
        phase = .authenticating
        authenticateSentAt = monotonicNanoseconds()
        send(identity.authenticate(nonce: nonce, deviceID: deviceID), as: .authenticate, context: context)
    }

    private func fail(_ reason: String, context: ChannelHandlerContext) {
        finish(reason)
        context.close(promise: nil)
    }

    /// Pops the request `requestID` answers; the relay answers in order, so it is the oldest one.
    private func popRequest(_ requestID: UInt64) -> Request? {
        guard let entry = requests.first, entry.0 == requestID else {
            errors[-2, default: 0] += 1  // an answer out of order: counted, never expected
            return nil
        }
        _ = requests.popFirst()
        return entry.1
    }

    // MARK: InboundFrameVisitor

    func submitOutcome(requestID: UInt64, envelopeID: EnvelopeID, errorCode: Int) {
        if errorCode != 0 { errors[errorCode, default: 0] += 1 }
        delegate?.connection(self, submitted: envelopeID, errorCode: errorCode, now: readNow)
    }

    func submitResultEnd(requestID: UInt64) {
        _ = popRequest(requestID)
    }

    func deliveredEnvelope(id: EnvelopeID, timestamp: UInt64) {
        pendingEnvelopeAcks.append(id)
        delegate?.connection(self, delivered: id, timestamp: timestamp, now: readNow)
    }

    func deliveredReceipt(id: EnvelopeID) {
        pendingReceiptAcks.append(id)
    }

    func deliverEnd() {
        flusher.mark(self)
    }

    func ok(requestID: UInt64) {
        guard case .acknowledge(let ids) = popRequest(requestID) else { return }
        for id in ids { delegate?.connection(self, acknowledged: id, now: readNow) }
    }

    func queueDrained() {
        phase = .ready
        if !readyCompleted {
            readyCompleted = true
            ready.succeed()
        }
        delegate?.connectionReady(self)
    }

    func error(requestID: UInt64, code: Int) {
        errors[code, default: 0] += 1
        // A whole Submit refused (e.g. RATE_LIMITED): each of its envelopes is refused.
        if requestID != 0, case .submit(let ids) = popRequest(requestID) {
            for id in ids { delegate?.connection(self, submitted: id, errorCode: code, now: readNow) }
        }
        if phase == .authenticating, let context { fail("\(identity.handle): authentication refused, error code \(code)", context: context) }
    }

    func authenticateResult(requestID: UInt64) {
        _ = popRequest(requestID)
    }

    func otherFrame(requestID: UInt64, bodyField: Int) {
        errors[-1, default: 0] += 1  // a frame kind this generator never asks for
    }
}

/// A connection ended before it was authenticated and its queue drained.
public struct SetupError: Error, CustomStringConvertible {
    /// What ended the connection (an error code or a transport error).
    public let reason: String
    /// The reason, for printing.
    public var description: String { "connection setup failed: \(reason)" }
}

/// WebSocket masking keys for client frames (RFC 6455 §5.3) from xorshift64: masking only keeps
/// intermediaries from mistaking frames for HTTP, so a cheap generator seeded from the system one is
/// enough, and saves a `getrandom` call per frame.
struct MaskingKeys: RandomNumberGenerator {
    private var state = UInt64.random(in: 1...UInt64.max)

    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }

    mutating func next() -> WebSocketMaskingKey {
        WebSocketMaskingKey.random(using: &self)
    }
}

/// A first-in first-out queue on an array with a moving head (amortised O(1), no per-element allocation).
struct FIFO<Element> {
    private var storage: [Element] = []
    private var head = 0

    var isEmpty: Bool { head == storage.count }
    var count: Int { storage.count - head }
    var first: Element? { isEmpty ? nil : storage[head] }

    mutating func append(_ element: Element) { storage.append(element) }

    mutating func popFirst() -> Element? {
        guard head < storage.count else { return nil }
        let element = storage[head]
        head += 1
        if head > 1024, head * 2 > storage.count {
            storage.removeFirst(head)
            head = 0
        }
        return element
    }
}

/// Opens WebSocket connections from one event loop group: HTTP/1.1 upgrade on `path`, TCP_NODELAY, an
/// optional local (source) address, and NIO's frame aggregator (the relay may fragment large messages).
public struct WebSocketConnector: Sendable {
    /// Server address.
    public let host: String
    /// Server port.
    public let port: Int
    /// The WebSocket path (the relay serves `/v1/ws`).
    public let path: String
    /// Largest incoming message: the relay's frames are at most 1 MiB (`WireConstants.maxFrameBytes`).
    static let maxMessageBytes = 2 * WireConstants.maxFrameBytes

    /// A connector for `ws://host:port/path`.
    public init(host: String, port: Int, path: String = "/v1/ws") {
        self.host = host
        self.port = port
        self.path = path
    }

    /// Connects on `eventLoop` and adds `handler` once the upgrade succeeded. Completes when connected
    /// (the upgrade and the protocol then proceed in `handler`).
    func connect(on eventLoop: any EventLoop, source: SocketAddress?, handler: @escaping @Sendable () -> any ChannelHandler) -> EventLoopFuture<any Channel> {
        let host = host, port = port, path = path
        var bootstrap = ClientBootstrap(group: eventLoop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.socketOption(.so_reuseaddr), value: 1)
            .connectTimeout(.seconds(30))
        if let source { bootstrap = bootstrap.bind(to: source) }
        return bootstrap.channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: Self.maxMessageBytes, automaticErrorHandling: true) { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOWebSocketFrameAggregator(
                                minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1024, maxAccumulatedFrameSize: Self.maxMessageBytes))
                        try channel.pipeline.syncOperations.addHandler(handler())
                    }
                }
                // Keep bytes that arrive with the 101 response: the relay sends its Challenge right after it.
                try channel.pipeline.syncOperations.addHTTPClientHandlers(
                    leftOverBytesStrategy: .forwardBytes, withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
                try channel.pipeline.syncOperations.addHandler(UpgradeRequestWriter(host: host, port: port, path: path))
            }
        }.connect(host: host, port: port)
    }
}

/// Writes the HTTP upgrade request when the TCP connection is up, then leaves the pipeline.
private final class UpgradeRequestWriter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    let host: String, port: Int, path: String

    init(host: String, port: Int, path: String) {
        self.host = host
        self.port = port
        self.path = path
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: "\(host):\(port)")
        headers.add(name: "Content-Length", value: "0")
        context.write(wrapOutboundOut(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Runs `body` with a new event-loop group of `threads` threads and shuts the group down afterwards.
func withEventLoopGroup<T: Sendable>(threads: Int, _ body: (MultiThreadedEventLoopGroup) async throws -> T) async throws -> T {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
    do {
        let result = try await body(group)
        try? await group.shutdownGracefully()
        return result
    } catch {
        try? await group.shutdownGracefully()
        throw error
    }
}
