import FlitzCrypto
import Foundation
import Histogram
import NIOCore
import NIOPosix
import Synchronization

/// Options of the throughput mode (README.md, "Relay load").
public struct ThroughputOptions: Sendable {
    /// Relay address.
    public var host = "127.0.0.1"
    /// Relay port.
    public var port = 7878
    /// The port the recipients connect to; nil: `port`. With another node of a relay cluster here (protocol/cluster.md),
    /// half the connections are on each node and every envelope crosses from the senders' node to the recipients'.
    public var recipientPort: Int?
    /// Sender→recipient pairs; each device has its own connection (2 × pairs connections).
    public var pairs = 100
    /// Ciphertext bytes per envelope (at least 8: the first 8 carry the submit time).
    public var size = 256
    /// Closed loop: envelopes per pair not yet acknowledged end to end. Open loop: the cap on them
    /// (beyond it the pair falls behind its schedule, which the latencies then show).
    public var window = 16
    /// Open loop: envelopes per second offered in total; nil = closed loop (saturation).
    public var rate: Double?
    /// Envelopes per Submit frame (1 to 100).
    public var batch = 1
    /// Sending before the measured interval.
    public var warmup: Duration = .seconds(2)
    /// The measured interval.
    public var duration: Duration = .seconds(10)
    /// Event-loop threads of the generator.
    public var threads = 1
    /// The relay's process id, for its CPU use.
    public var serverPID: Int32?
    /// After sending stops, how long to wait for what is in flight.
    public var drainTimeout: Duration = .seconds(30)

    /// The defaults above (issue 4: 100 pairs, 256 bytes).
    public init() {}
}

/// What a throughput run measured. Latencies in microseconds.
public struct ThroughputResult: Sendable {
    /// Envelopes completed end to end during the measured interval (SubmitResult received and the
    /// recipient's Acknowledge answered Ok).
    public var completed: Int
    /// The measured interval's length.
    public var seconds: Double
    /// completed ÷ seconds.
    public var envelopesPerSecond: Double { Double(completed) / seconds }
    /// The open-loop rate, nil for closed loop.
    public var offeredRate: Double?
    /// Submit written (open loop: its scheduled time) → the recipient read the Deliver.
    public var delivery: LatencySummary
    /// Submit written → SubmitResult read (the "sent" receipt, after the relay's commit).
    public var submit: LatencySummary
    /// Submit written → both SubmitResult and the recipient's acknowledgement done.
    public var endToEnd: LatencySummary
    /// Generator CPU over the measured interval, % of one core.
    public var generatorCPU: Double
    /// Relay CPU over the measured interval, % of one core (nil without `serverPID`).
    public var serverCPU: Double?
    /// Refused envelopes and error frames by `ErrorCode` number.
    public var errors: [Int: Int]
    /// Envelopes still in flight when the drain timed out.
    public var unfinished: Int
}

/// p50 / p99 / p99.9 / max of one latency histogram, in microseconds.
public struct LatencySummary: Sendable, CustomStringConvertible {
    /// Values recorded.
    public var count: UInt64
    /// Percentiles 50, 99, 99.9 and the largest value, in µs.
    public var p50: Double, p99: Double, p999: Double, max: Double

    init(_ histogram: Histogram<UInt64>) {
        count = histogram.totalCount
        p50 = Double(histogram.valueAtPercentile(50)) / 1_000
        p99 = Double(histogram.valueAtPercentile(99)) / 1_000
        p999 = Double(histogram.valueAtPercentile(99.9)) / 1_000
        max = Double(histogram.max) / 1_000
    }

    /// The summary as one line.
    public var description: String {
        String(format: "p50 %.0f µs, p99 %.0f µs, p99.9 %.0f µs, max %.0f µs (n=%llu)", p50, p99, p999, max, count)
    }
}

/// A latency histogram in nanoseconds, 1 ns to 60 s, 3 significant digits.
func makeHistogram() -> Histogram<UInt64> {
    Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
}

/// The measured interval and what one event loop counted in it. Confined to its event loop.
final class LoopMeasurements: @unchecked Sendable {
    let flusher: LoopFlusher
    var start: UInt64 = 0, measureFrom: UInt64 = .max, measureUntil: UInt64 = .max
    var sending = false
    var delivery = makeHistogram(), submit = makeHistogram(), endToEnd = makeHistogram()
    var completed = 0
    var failure: String?

    init(eventLoop: any EventLoop) { flusher = LoopFlusher(eventLoop: eventLoop) }

    @inline(__always) func inWindow(_ time: UInt64) -> Bool { time >= measureFrom && time < measureUntil }
}

/// Something an open-loop schedule sends through: a relay pair or an echo connection.
protocol LoadSource: AnyObject {
    /// Messages sent and not yet complete.
    var outstanding: Int { get }
    /// Sends one message per entry of `times`, stamped with it.
    func send(times: [UInt64])
}

/// One sender→recipient pair and its envelopes in flight. Confined to its event loop (both connections
/// and the pair run there).
final class Pair: DeviceConnectionDelegate, Flushable, LoadSource, @unchecked Sendable {
    let index: UInt32
    let sender: DeviceConnection
    let recipient: DeviceConnection
    let measurements: LoopMeasurements
    let ciphertext: ByteBuffer
    let idTag: UInt64
    let batch: Int
    let closedLoopWindow: Int?
    var isMarkedDirty = false
    /// Sequence number → (submit time, 1 = SubmitResult accepted | 2 = recipient's ack answered).
    private(set) var inFlight: [UInt64: (time: UInt64, flags: UInt8)] = [:]
    private var nextSequence: UInt64 = 0
    /// Closed loop: envelopes to send at the end of this event-loop turn.
    private var deficit = 0

    init(index: UInt32, sender: DeviceConnection, recipient: DeviceConnection, measurements: LoopMeasurements, ciphertext: ByteBuffer, runTag: UInt32, batch: Int, closedLoopWindow: Int?) {
        self.index = index
        self.sender = sender
        self.recipient = recipient
        self.measurements = measurements
        self.ciphertext = ciphertext
        idTag = UInt64(runTag) << 32 | UInt64(index)
        self.batch = batch
        self.closedLoopWindow = closedLoopWindow
        sender.delegate = self
        recipient.delegate = self
    }

    var outstanding: Int { inFlight.count }

    /// Closed loop: fills the window.
    func startClosedLoop() {
        deficit = closedLoopWindow ?? 0
        measurements.flusher.mark(self)
    }

    /// Sends envelopes stamped with `times` now (open loop), in Submits of `batch`.
    func send(times: [UInt64]) {
        var start = 0
        while start < times.count {
            let slice = times[start..<min(start + batch, times.count)]
            var ids: [EnvelopeID] = []
            ids.reserveCapacity(slice.count)
            for time in slice {
                let sequence = nextSequence
                nextSequence += 1
                inFlight[sequence] = (time, 0)
                ids.append(EnvelopeID(hi: sequence, lo: idTag))
            }
            sender.submit(ids: ids, timestamps: slice, to: recipient.identity, ciphertext: ciphertext)
            start += batch
        }
    }

    func flushPending() {
        guard deficit > 0, measurements.sending else { return }
        let now = monotonicNanoseconds()
        let count = deficit
        deficit = 0
        send(times: [UInt64](repeating: now, count: count))
    }

    private func update(_ sequence: UInt64, flag: UInt8, now: UInt64) {
        guard var entry = inFlight[sequence] else { return }
        entry.flags |= flag
        guard entry.flags == 3 else {
            inFlight[sequence] = entry
            return
        }
        inFlight[sequence] = nil
        if measurements.inWindow(now) { measurements.completed += 1 }
        if measurements.inWindow(entry.time) { measurements.endToEnd.record(now - entry.time) }
        if closedLoopWindow != nil, measurements.sending {
            deficit += 1
            measurements.flusher.mark(self)
        }
    }

    // MARK: DeviceConnectionDelegate

    func connectionReady(_ connection: DeviceConnection) {}

    func connection(_ connection: DeviceConnection, delivered id: EnvelopeID, timestamp: UInt64, now: UInt64) {
        if measurements.inWindow(timestamp), now >= timestamp { measurements.delivery.record(now - timestamp) }
    }

    func connection(_ connection: DeviceConnection, acknowledged id: EnvelopeID, now: UInt64) {
        update(id.hi, flag: 2, now: now)
    }

    func connection(_ connection: DeviceConnection, submitted id: EnvelopeID, errorCode: Int, now: UInt64) {
        guard errorCode == 0 else {
            // Refused (e.g. RATE_LIMITED): nothing was stored, so nothing will be delivered.
            inFlight[id.hi] = nil
            if closedLoopWindow != nil, measurements.sending {
                deficit += 1
                measurements.flusher.mark(self)
            }
            return
        }
        if let entry = inFlight[id.hi], measurements.inWindow(entry.time) { measurements.submit.record(now - entry.time) }
        update(id.hi, flag: 1, now: now)
    }

    func connectionClosed(_ connection: DeviceConnection, reason: String) {
        if measurements.failure == nil, measurements.sending || inFlight.count > 0 {
            measurements.failure = "pair \(index): \(reason)"
        }
    }
}

/// Random bytes standing in for ciphertext (the relay is blind to it).
func fillerCiphertext(size: Int) -> ByteBuffer {
    ByteBuffer(bytes: SystemRandom().bytes(max(size, 8)))
}

/// A short random tag that keeps one run's handles apart from every earlier run's on the same database.
func makeRunTag() -> UInt32 { UInt32.random(in: 0...UInt32.max) }

/// `prefix` ‖ 8 hex digits of `tag` ‖ `kind` ‖ decimal index: a valid handle of at most 32 characters.
func benchHandle(_ prefix: String, tag: UInt32, kind: String, index: Int) -> String {
    "\(prefix)\(String(tag, radix: 16))\(kind)\(index)"
}

/// Runs `body(i)` for i in 0..<count with at most `concurrency` of them outstanding.
func forEachConcurrently(_ count: Int, concurrency: Int, _ body: @escaping @Sendable (Int) -> EventLoopFuture<Void>) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        var next = 0
        while next < min(count, concurrency) {
            let index = next
            group.addTask { try await body(index).get() }
            next += 1
        }
        while try await group.next() != nil {
            if next < count {
                let index = next
                group.addTask { try await body(index).get() }
                next += 1
            }
        }
    }
}

/// Throughput mode: registers `pairs` sender and recipient devices, connects each, then sends for
/// `warmup + duration` (closed loop with `window` per pair, or open loop at `rate`), measures over
/// `duration`, and waits for everything in flight.
public func runThroughput(_ options: ThroughputOptions, log: @Sendable (String) -> Void) async throws -> ThroughputResult {
    try await withEventLoopGroup(threads: options.threads) { group in try await runThroughput(options, log: log, group: group) }
}

private func runThroughput(_ options: ThroughputOptions, log: @Sendable (String) -> Void, group: MultiThreadedEventLoopGroup) async throws -> ThroughputResult {
    precondition(options.pairs > 0 && options.size >= 8 && (1...100).contains(options.batch))
    let loops = Array(group.makeIterator())
    let measurements = loops.map { LoopMeasurements(eventLoop: $0) }
    let connector = WebSocketConnector(host: options.host, port: options.port)
    let recipientConnector = WebSocketConnector(host: options.host, port: options.recipientPort ?? options.port)
    let tag = makeRunTag()
    let ciphertext = fillerCiphertext(size: options.size)
    let closedLoop = options.rate == nil ? options.window : nil

    log("registering and connecting \(2 * options.pairs) devices")
    let pairs = PairList()
    try await forEachConcurrently(options.pairs, concurrency: 64) { index in
        let loop = index % loops.count
        let flusher = measurements[loop].flusher
        let sender = DeviceConnection(identity: BenchIdentity(handle: benchHandle("t", tag: tag, kind: "s", index: index)), registerFirst: true, flusher: flusher)
        let recipient = DeviceConnection(identity: BenchIdentity(handle: benchHandle("t", tag: tag, kind: "r", index: index)), registerFirst: true, flusher: flusher)
        let pair = Pair(
            index: UInt32(index), sender: sender, recipient: recipient, measurements: measurements[loop], ciphertext: ciphertext, runTag: tag,
            batch: options.batch, closedLoopWindow: closedLoop)
        pairs.append(pair, loop: loop)
        let eventLoop = loops[loop]
        return connector.connect(on: eventLoop, source: nil) { sender }.flatMap { _ in sender.ready.futureResult }
            .flatMap { recipientConnector.connect(on: eventLoop, source: nil) { recipient } }.flatMap { _ in recipient.ready.futureResult }
    }

    // Schedule: every loop starts now; the measured interval follows the warm-up.
    let start = monotonicNanoseconds() + 50_000_000
    let measureFrom = start + UInt64(options.warmup.nanoseconds)
    let measureUntil = measureFrom + UInt64(options.duration.nanoseconds)
    for (loopIndex, loop) in loops.enumerated() {
        let state = measurements[loopIndex]
        let loopPairs = pairs.pairs(onLoop: loopIndex)
        try await loop.submit {
            state.start = start
            state.measureFrom = measureFrom
            state.measureUntil = measureUntil
        }.get()
        if let rate = options.rate {
            let perLoop = rate * Double(loopPairs.count) / Double(options.pairs)
            let schedule = OpenLoopSchedule(pairs: loopPairs, ratePerSecond: perLoop, start: start, until: measureUntil, cap: options.window)
            schedule.run(on: loop, measurements: state)
        } else {
            loop.scheduleTask(in: .nanoseconds(nanosecondsUntil(start))) {
                state.sending = true
                for pair in loopPairs { pair.startClosedLoop() }
            }
        }
        loop.scheduleTask(in: .nanoseconds(nanosecondsUntil(measureUntil))) { state.sending = false }
    }
    log(options.rate.map { "open loop at \(Int($0)) envelopes/s" } ?? "closed loop, window \(options.window) per pair")
    try await Task.sleep(for: .nanoseconds(nanosecondsUntil(measureFrom)))
    let cpu = CPUSampler(serverPID: options.serverPID)
    try await Task.sleep(for: .nanoseconds(nanosecondsUntil(measureUntil)))
    let (generatorCPU, serverCPU) = cpu.percent()

    // Drain what is in flight, so every counted envelope really completed.
    let drainDeadline = ContinuousClock.now + options.drainTimeout
    var unfinished = 0
    repeat {
        try await Task.sleep(for: .milliseconds(50))
        unfinished = 0
        for (loopIndex, loop) in loops.enumerated() {
            let loopPairs = pairs.pairs(onLoop: loopIndex)
            unfinished += try await loop.submit { loopPairs.reduce(0) { $0 + $1.outstanding } }.get()
        }
    } while unfinished > 0 && ContinuousClock.now < drainDeadline

    var delivery = makeHistogram(), submit = makeHistogram(), endToEnd = makeHistogram()
    var completed = 0
    var errors: [Int: Int] = [:]
    var failure: String?
    for (loopIndex, loop) in loops.enumerated() {
        let state = measurements[loopIndex]
        let loopPairs = pairs.pairs(onLoop: loopIndex)
        let (d, s, e, c, f, errs) = try await loop.submit {
            var errors: [Int: Int] = [:]
            for pair in loopPairs {
                for (code, count) in pair.sender.errors { errors[code, default: 0] += count }
                for (code, count) in pair.recipient.errors { errors[code, default: 0] += count }
                pair.sender.close()
                pair.recipient.close()
            }
            return (state.delivery, state.submit, state.endToEnd, state.completed, state.failure, errors)
        }.get()
        delivery.add(d)
        submit.add(s)
        endToEnd.add(e)
        completed += c
        failure = failure ?? f
        errors.merge(errs, uniquingKeysWith: +)
    }
    if let failure { throw SetupError(reason: failure) }
    return ThroughputResult(
        completed: completed, seconds: Double(options.duration.nanoseconds) / 1e9, offeredRate: options.rate,
        delivery: LatencySummary(delivery), submit: LatencySummary(submit), endToEnd: LatencySummary(endToEnd),
        generatorCPU: generatorCPU, serverCPU: serverCPU, errors: errors, unfinished: unfinished)
}

/// Sends at a fixed rate from one event loop's timer: envelope k of this loop is due at
/// `start + k / rate` and is stamped with that time (not the time it went out), so a relay that falls
/// behind shows in the latencies instead of slowing the schedule (no coordinated omission).
/// Pairs take turns; a pair with `cap` envelopes in flight delays its turn. Confined to its event loop.
final class OpenLoopSchedule: @unchecked Sendable {
    let pairs: [any LoadSource]
    let nanosecondsPerEnvelope: Double
    let start: UInt64, until: UInt64, cap: Int
    private var sent: UInt64 = 0

    init(pairs: [any LoadSource], ratePerSecond: Double, start: UInt64, until: UInt64, cap: Int) {
        self.pairs = pairs
        nanosecondsPerEnvelope = 1e9 / ratePerSecond
        self.start = start
        self.until = until
        self.cap = cap
    }

    /// The time the next envelope is due.
    var nextDue: UInt64 { start + UInt64(Double(sent) * nanosecondsPerEnvelope) }

    /// Wakes at each due time (at most every 100 µs: several envelopes per wake-up at high rates), sends
    /// what is due and sets `measurements.sending` until the schedule ends.
    func run(on loop: any EventLoop, measurements: LoopMeasurements) {
        loop.scheduleTask(in: .nanoseconds(nanosecondsUntil(nextDue))) {
            let now = monotonicNanoseconds()
            measurements.sending = self.tick(now: now)
            if measurements.sending { self.run(on: loop, measurements: measurements, after: now) }
        }
    }

    private func run(on loop: any EventLoop, measurements: LoopMeasurements, after now: UInt64) {
        loop.scheduleTask(in: .nanoseconds(nanosecondsUntil(max(nextDue, now + 100_000)))) {
            let now = monotonicNanoseconds()
            measurements.sending = self.tick(now: now)
            if measurements.sending { self.run(on: loop, measurements: measurements, after: now) }
        }
    }

    /// Sends whatever is due by `now`; returns whether the schedule is still running.
    func tick(now: UInt64) -> Bool {
        guard !pairs.isEmpty, now < until else { return false }
        var due = [[UInt64]](repeating: [], count: pairs.count)
        while true {
            let time = start + UInt64(Double(sent) * nanosecondsPerEnvelope)
            guard time <= now, time < until else { break }
            let slot = Int(sent % UInt64(pairs.count))
            guard pairs[slot].outstanding + due[slot].count < cap else { break }  // behind: resume next tick
            due[slot].append(time)
            sent += 1
        }
        for (slot, times) in due.enumerated() where !times.isEmpty { pairs[slot].send(times: times) }
        return true
    }
}

/// Pairs by event loop, filled while connecting.
final class PairList: Sendable {
    private let byLoop = Mutex<[Int: [Pair]]>([:])

    func append(_ pair: Pair, loop: Int) { byLoop.withLock { $0[loop, default: []].append(pair) } }
    func pairs(onLoop loop: Int) -> [Pair] { byLoop.withLock { $0[loop] ?? [] } }
}

extension Duration {
    /// The whole duration in nanoseconds.
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
