import Foundation
import NIOCore
import NIOPosix

/// Options of the backlog mode.
public struct BacklogOptions: Sendable {
    /// Relay address.
    public var host = "127.0.0.1"
    /// Relay port.
    public var port = 7878
    /// Envelopes queued for the offline device. The relay must accept that many
    /// (`flitz-relay serve --max-queued-envelopes`, default 10 000).
    public var envelopes = 20_000
    /// Ciphertext bytes per envelope (at least 8).
    public var size = 256
    /// Envelopes per Submit while queueing (1 to 100) and Submits in flight.
    public var batch = 100
    /// Submit frames in flight while queueing.
    public var submitWindow = 8
    /// The relay's process id, for its CPU use during the drain.
    public var serverPID: Int32?
    /// The drain fails if it is not finished by then.
    public var timeout: Duration = .seconds(300)

    /// The defaults above (issue 4: 20 000 envelopes of 256 bytes).
    public init() {}
}

/// What a backlog run measured. Times in milliseconds.
public struct BacklogResult: Sendable {
    /// Envelopes submitted for the offline device.
    public var envelopes: Int
    /// Envelopes the relay accepted while queueing (refusals are in `errors`).
    public var queued: Int
    /// First Submit written → last SubmitResult read.
    public var queueMilliseconds: Double
    /// Authenticate written → QueueDrained read.
    public var untilQueueDrained: Double
    /// Authenticate written → the Ok for the acknowledgement of the last envelope read.
    public var untilAllAcknowledged: Double
    /// Distinct queued envelopes delivered before QueueDrained.
    public var deliveredBeforeDrained: Int
    /// Generator CPU during the drain, % of one core (10 ms resolution).
    public var generatorCPU: Double
    /// Relay CPU during the drain, % of one core (nil without `serverPID`).
    public var serverCPU: Double?
    /// Refused envelopes and Error frames by `ErrorCode` number.
    public var errors: [Int: Int]
}

/// The sender of the backlog: pipelined Submits of `batch` envelopes until `total` are answered.
/// Confined to its event loop.
final class BacklogSender: DeviceConnectionDelegate, @unchecked Sendable {
    let connection: DeviceConnection
    let recipient: BenchIdentity
    let total: Int, batch: Int, window: Int
    let ciphertext: ByteBuffer
    let done: EventLoopPromise<Void>
    private(set) var accepted = 0
    private var sent = 0, answered = 0

    init(connection: DeviceConnection, recipient: BenchIdentity, total: Int, batch: Int, window: Int, ciphertext: ByteBuffer) {
        self.connection = connection
        self.recipient = recipient
        self.total = total
        self.batch = batch
        self.window = window
        self.ciphertext = ciphertext
        done = connection.flusher.eventLoop.makePromise()
        connection.delegate = self
    }

    func start() { refill() }

    private func refill() {
        while sent < total, sent - answered < window * batch {
            let count = min(batch, total - sent)
            let ids = (sent..<(sent + count)).map { EnvelopeID(hi: UInt64($0), lo: 0x6261_636B_6C6F_6721) }
            connection.submit(ids: ids, timestamps: [UInt64](repeating: 0, count: count), to: recipient, ciphertext: ciphertext)
            sent += count
        }
    }

    func connectionReady(_ connection: DeviceConnection) {}
    func connection(_ connection: DeviceConnection, delivered id: EnvelopeID, timestamp: UInt64, now: UInt64) {}
    func connection(_ connection: DeviceConnection, acknowledged id: EnvelopeID, now: UInt64) {}

    func connection(_ connection: DeviceConnection, submitted id: EnvelopeID, errorCode: Int, now: UInt64) {
        answered += 1
        if errorCode == 0 { accepted += 1 }
        if answered == total { done.succeed() } else { refill() }
    }

    func connectionClosed(_ connection: DeviceConnection, reason: String) {
        if answered < total { done.fail(SetupError(reason: "sender: \(reason)")) }
    }
}

/// The device coming back online: counts what it is delivered and when its acknowledgements are answered.
/// Confined to its event loop.
final class BacklogRecipient: DeviceConnectionDelegate, @unchecked Sendable {
    let expected: Int
    let done: EventLoopPromise<Void>
    private var seen: [Bool]
    private(set) var distinct = 0, acknowledged = 0
    private(set) var drainedAt: UInt64 = 0, deliveredBeforeDrained = 0, allAcknowledgedAt: UInt64 = 0
    private var finished = false

    init(expected: Int, eventLoop: any EventLoop) {
        self.expected = expected
        seen = [Bool](repeating: false, count: expected)
        done = eventLoop.makePromise()
    }

    func connectionReady(_ connection: DeviceConnection) {
        drainedAt = monotonicNanoseconds()
        deliveredBeforeDrained = distinct
        if expected == 0 { finish(nil) }
    }

    /// Completes `done` once.
    func finish(_ error: (any Error)?) {
        guard !finished else { return }
        finished = true
        if let error { done.fail(error) } else { done.succeed() }
    }

    func connection(_ connection: DeviceConnection, delivered id: EnvelopeID, timestamp: UInt64, now: UInt64) {
        let index = Int(id.hi)
        if index < expected, !seen[index] {
            seen[index] = true
            distinct += 1
        }
    }

    func connection(_ connection: DeviceConnection, acknowledged id: EnvelopeID, now: UInt64) {
        acknowledged += 1
        if acknowledged == expected {
            allAcknowledgedAt = now
            finish(nil)
        }
    }

    func connection(_ connection: DeviceConnection, submitted id: EnvelopeID, errorCode: Int, now: UInt64) {}

    func connectionClosed(_ connection: DeviceConnection, reason: String) {
        if acknowledged < expected { finish(SetupError(reason: "recipient: \(reason)")) }
    }
}

/// Backlog mode: registers a recipient device and disconnects it, queues `envelopes` for it from a
/// sender, disconnects the sender, then reconnects the recipient and times Authenticate → QueueDrained
/// and → the acknowledgement of the last envelope answered (the recipient acknowledges each Deliver as it
/// arrives, coalesced per event-loop turn, up to 1000 ids per Acknowledge).
public func runBacklog(_ options: BacklogOptions, log: @Sendable (String) -> Void) async throws -> BacklogResult {
    try await withEventLoopGroup(threads: 1) { group in try await runBacklog(options, log: log, group: group) }
}

private func runBacklog(_ options: BacklogOptions, log: @Sendable (String) -> Void, group: MultiThreadedEventLoopGroup) async throws -> BacklogResult {
    let loop = group.next()
    let flusher = LoopFlusher(eventLoop: loop)
    let connector = WebSocketConnector(host: options.host, port: options.port)
    let tag = makeRunTag()
    let recipientIdentity = BenchIdentity(handle: benchHandle("b", tag: tag, kind: "r", index: 0))
    let senderIdentity = BenchIdentity(handle: benchHandle("b", tag: tag, kind: "s", index: 0))

    // Register the recipient, then take it offline.
    let first = DeviceConnection(identity: recipientIdentity, registerFirst: true, flusher: flusher)
    let firstChannel = try await connector.connect(on: loop, source: nil) { first }.get()
    try await first.ready.futureResult.get()
    let deviceID = try await loop.submit { first.deviceID }.get()
    try await loop.submit { first.close() }.get()
    try await firstChannel.closeFuture.get()

    // Queue the backlog.
    log("queueing \(options.envelopes) envelopes of \(options.size) bytes")
    let senderConnection = DeviceConnection(identity: senderIdentity, registerFirst: true, flusher: flusher)
    let senderChannel = try await connector.connect(on: loop, source: nil) { senderConnection }.get()
    try await senderConnection.ready.futureResult.get()
    let sender = try await loop.submit {
        BacklogSender(
            connection: senderConnection, recipient: recipientIdentity, total: options.envelopes, batch: options.batch, window: options.submitWindow,
            ciphertext: fillerCiphertext(size: options.size))
    }.get()
    let queueStart = monotonicNanoseconds()
    try await loop.submit { sender.start() }.get()
    try await sender.done.futureResult.get()
    let queueMilliseconds = Double(monotonicNanoseconds() - queueStart) / 1e6
    let (queued, senderErrors) = try await loop.submit { (sender.accepted, senderConnection.errors) }.get()
    try await loop.submit { senderConnection.close() }.get()
    try await senderChannel.closeFuture.get()

    // Reconnect the recipient and time the drain.
    log("draining \(queued) envelopes")
    let recipient = BacklogRecipient(expected: queued, eventLoop: loop)
    let again = DeviceConnection(identity: recipientIdentity, deviceID: deviceID, registerFirst: false, flusher: flusher)
    again.delegate = recipient
    let cpu = CPUSampler(serverPID: options.serverPID)
    let channel = try await connector.connect(on: loop, source: nil) { again }.get()
    let timeout = loop.scheduleTask(in: .nanoseconds(options.timeout.nanoseconds)) {
        recipient.finish(SetupError(reason: "drain not finished within \(options.timeout)"))
    }
    try await recipient.done.futureResult.get()
    timeout.cancel()
    let (generatorCPU, serverCPU) = cpu.percent()
    let result = try await loop.submit {
        let start = again.authenticateSentAt
        return BacklogResult(
            envelopes: options.envelopes, queued: queued, queueMilliseconds: queueMilliseconds,
            untilQueueDrained: Double(recipient.drainedAt - start) / 1e6, untilAllAcknowledged: Double(recipient.allAcknowledgedAt - start) / 1e6,
            deliveredBeforeDrained: recipient.deliveredBeforeDrained, generatorCPU: generatorCPU, serverCPU: serverCPU,
            errors: senderErrors.merging(again.errors, uniquingKeysWith: +))
    }.get()
    try await loop.submit { again.close() }.get()
    try await channel.closeFuture.get()
    return result
}
