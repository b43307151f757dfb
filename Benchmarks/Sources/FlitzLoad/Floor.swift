import Foundation
import Histogram
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOPosix
import Synchronization
import NIOWebSocket

/// Runs a bare hummingbird-websocket echo server at `ws://host:port/v1/ws` until SIGINT or SIGTERM: the
/// relay's HTTP and WebSocket stack (same library, same server configuration as `buildRelay`) with no
/// protocol, storage or fsync behind it, as the floor for the relay's figures. Each binary message is
/// written back as it is.
/// - Throws: when the port cannot be bound.
public func runEchoServer(host: String, port: Int, onListening: @escaping @Sendable (Int) -> Void) async throws {
    let router = Router()
    router.get("/health") { _, _ in "ok" }
    let limit = 2 * 1_048_576
    let application = Application(
        router: router,
        server: .http1WebSocketUpgrade(
            configuration: .init(ws: WebSocketServerConfiguration(maxFrameSize: limit, autoPing: .enabled(timePeriod: .seconds(30)), closeTimeout: .seconds(15)))
        ) { request, _, _ in
            guard request.path == "/v1/ws" else { return .dontUpgrade }
            return .upgrade([:]) { inbound, outbound, _ in
                for try await message in inbound.messages(maxSize: limit) {
                    if case .binary(let buffer) = message { try await outbound.write(.binary(buffer)) }
                }
            }
        },
        configuration: .init(address: .hostname(host, port: port), serverName: "flitz-bench-echo"),
        onServerRunning: { channel in onListening(channel.localAddress?.port ?? 0) },
        logger: {
            var logger = Logger(label: "flitz-bench-echo")
            logger.logLevel = .warning
            return logger
        }())
    try await application.runService()
}

/// Options of the floor mode: the throughput mode's load shape against the echo server.
public struct FloorOptions: Sendable {
    /// Echo server address.
    public var host = "127.0.0.1"
    /// Echo server port.
    public var port = 7879
    /// WebSocket connections, each doing round trips.
    public var connections = 100
    /// Message bytes: an encoded Submit frame with a ciphertext of this many bytes, as in throughput mode.
    public var size = 256
    /// Round trips in flight per connection (closed loop), or the cap in open loop.
    public var window = 16
    /// Open loop: round trips per second in total; nil = closed loop.
    public var rate: Double?
    /// Sending before the measured interval.
    public var warmup: Duration = .seconds(2)
    /// The measured interval.
    public var duration: Duration = .seconds(10)
    /// Generator event-loop threads.
    public var threads = 1
    /// The echo server's process id, for its CPU use.
    public var serverPID: Int32?

    /// The defaults above (the throughput mode's shape).
    public init() {}
}

/// What a floor run measured.
public struct FloorResult: Sendable {
    /// Round trips completed inside the measured interval.
    public var completed: Int
    /// The measured interval's length.
    public var seconds: Double
    /// completed ÷ seconds.
    public var roundTripsPerSecond: Double { Double(completed) / seconds }
    /// The open-loop rate, nil for closed loop.
    public var offeredRate: Double?
    /// Bytes per message (a Submit frame of one envelope).
    public var messageBytes: Int
    /// Send (open loop: its scheduled time) → echo read.
    public var roundTrip: LatencySummary
    /// Generator CPU over the measured interval, % of one core.
    public var generatorCPU: Double
    /// The echo server's CPU, % of one core (nil without `serverPID`).
    public var serverCPU: Double?
}

/// One echo connection: sends messages stamped with their send time, completes each on its echo.
/// Confined to its event loop.
final class EchoConnection: ChannelInboundHandler, Flushable, LoadSource, @unchecked Sendable {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    let measurements: LoopMeasurements
    let template: ByteBuffer
    let timestampOffset: Int
    let closedLoopWindow: Int?
    var isMarkedDirty = false
    private(set) var outstanding = 0
    private var deficit = 0
    private var context: ChannelHandlerContext?
    private var masks = MaskingKeys()
    let connected: EventLoopPromise<Void>

    init(measurements: LoopMeasurements, template: ByteBuffer, timestampOffset: Int, closedLoopWindow: Int?) {
        self.measurements = measurements
        self.template = template
        self.timestampOffset = timestampOffset
        self.closedLoopWindow = closedLoopWindow
        connected = measurements.flusher.eventLoop.makePromise()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        connected.succeed()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if measurements.sending || outstanding > 0, measurements.failure == nil { measurements.failure = "echo connection closed" }
        context.fireChannelInactive()
    }

    func startClosedLoop() {
        deficit = closedLoopWindow ?? 0
        measurements.flusher.mark(self)
    }

    func send(times: [UInt64]) {
        guard let context else { return }
        for time in times {
            var buffer = context.channel.allocator.buffer(capacity: template.readableBytes)
            buffer.writeImmutableBuffer(template)
            buffer.setInteger(time, at: timestampOffset, endianness: .little)
            context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .binary, maskKey: masks.next(), data: buffer)), promise: nil)
            outstanding += 1
        }
        measurements.flusher.mark(self)
    }

    func flushPending() {
        if deficit > 0, measurements.sending {
            let count = deficit
            deficit = 0
            send(times: [UInt64](repeating: monotonicNanoseconds(), count: count))
        }
        context?.flush()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary:
            let now = monotonicNanoseconds()
            guard let time = frame.data.getInteger(at: frame.data.readerIndex + timestampOffset, endianness: .little, as: UInt64.self) else { return }
            outstanding -= 1
            if measurements.inWindow(now) { measurements.completed += 1 }
            if measurements.inWindow(time), now >= time { measurements.delivery.record(now - time) }
            if closedLoopWindow != nil, measurements.sending {
                deficit += 1
                measurements.flusher.mark(self)
            }
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, maskKey: masks.next(), data: frame.data)), promise: nil)
        default:
            break
        }
    }

    func close() {
        guard let context, context.channel.isActive else { return }
        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: masks.next(), data: context.channel.allocator.buffer(capacity: 0))
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Floor mode: `connections` WebSocket connections to the echo server doing round trips of a message as
/// large as the throughput mode's Submit frame, closed loop or at `rate`, with the same event loops,
/// flushing and timing as the throughput mode.
public func runFloor(_ options: FloorOptions, log: @Sendable (String) -> Void) async throws -> FloorResult {
    try await withEventLoopGroup(threads: options.threads) { group in try await runFloor(options, log: log, group: group) }
}

private func runFloor(_ options: FloorOptions, log: @Sendable (String) -> Void, group: MultiThreadedEventLoopGroup) async throws -> FloorResult {
    let loops = Array(group.makeIterator())
    let measurements = loops.map { LoopMeasurements(eventLoop: $0) }
    let connector = WebSocketConnector(host: options.host, port: options.port)
    // As many bytes as a throughput-mode Submit of one envelope (a handle as long as that mode's, device 1).
    var template = ByteBuffer()
    FastWire.writeSubmit(
        into: &template, requestID: 1_000_000, ids: [EnvelopeID(hi: 1, lo: 1)], timestamps: [UInt64(0)], handle: Array("t0123abcdr99".utf8), deviceID: 1,
        ciphertext: fillerCiphertext(size: options.size))
    let templateCopy = template
    let timestampOffset = template.readableBytes - max(options.size, 8)
    let closedLoop = options.rate == nil ? options.window : nil
    let list = EchoList()
    log("connecting \(options.connections) echo connections")
    try await forEachConcurrently(options.connections, concurrency: 64) { index in
        let loop = index % loops.count
        let connection = EchoConnection(measurements: measurements[loop], template: templateCopy, timestampOffset: timestampOffset, closedLoopWindow: closedLoop)
        list.append(connection, loop: loop)
        return connector.connect(on: loops[loop], source: nil) { connection }.flatMap { _ in connection.connected.futureResult }
    }
    let start = monotonicNanoseconds() + 50_000_000
    let measureFrom = start + UInt64(options.warmup.nanoseconds)
    let measureUntil = measureFrom + UInt64(options.duration.nanoseconds)
    for (loopIndex, loop) in loops.enumerated() {
        let state = measurements[loopIndex]
        let connections = list.connections(onLoop: loopIndex)
        try await loop.submit {
            state.start = start
            state.measureFrom = measureFrom
            state.measureUntil = measureUntil
        }.get()
        if let rate = options.rate {
            let schedule = OpenLoopSchedule(
                pairs: connections, ratePerSecond: rate * Double(connections.count) / Double(options.connections), start: start, until: measureUntil,
                cap: options.window)
            schedule.run(on: loop, measurements: state)
        } else {
            loop.scheduleTask(in: .nanoseconds(nanosecondsUntil(start))) {
                state.sending = true
                for connection in connections { connection.startClosedLoop() }
            }
        }
        loop.scheduleTask(in: .nanoseconds(nanosecondsUntil(measureUntil))) { state.sending = false }
    }
    try await Task.sleep(for: .nanoseconds(nanosecondsUntil(measureFrom)))
    let cpu = CPUSampler(serverPID: options.serverPID)
    try await Task.sleep(for: .nanoseconds(nanosecondsUntil(measureUntil)))
    let (generatorCPU, serverCPU) = cpu.percent()
    try await Task.sleep(for: .milliseconds(500))

    var roundTrip = makeHistogram()
    var completed = 0
    var failure: String?
    for (loopIndex, loop) in loops.enumerated() {
        let state = measurements[loopIndex]
        let connections = list.connections(onLoop: loopIndex)
        let (histogram, count, f) = try await loop.submit {
            for connection in connections { connection.close() }
            return (state.delivery, state.completed, state.failure)
        }.get()
        roundTrip.add(histogram)
        completed += count
        failure = failure ?? f
    }
    if let failure { throw SetupError(reason: failure) }
    return FloorResult(
        completed: completed, seconds: Double(options.duration.nanoseconds) / 1e9, offeredRate: options.rate, messageBytes: templateCopy.readableBytes,
        roundTrip: LatencySummary(roundTrip), generatorCPU: generatorCPU, serverCPU: serverCPU)
}

/// Echo connections by event loop, filled while connecting.
final class EchoList: Sendable {
    private let byLoop = Mutex<[Int: [EchoConnection]]>([:])

    func append(_ connection: EchoConnection, loop: Int) { byLoop.withLock { $0[loop, default: []].append(connection) } }
    func connections(onLoop loop: Int) -> [EchoConnection] { byLoop.withLock { $0[loop] ?? [] } }
}
