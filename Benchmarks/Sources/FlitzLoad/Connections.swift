import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// Options of the connections mode.
public struct ConnectionsOptions: Sendable {
    /// Relay address.
    public var host = "127.0.0.1"
    /// Relay port.
    public var port = 7878
    /// Idle authenticated connections to hold, one step per count, in order (e.g. [10 000, 19 900]).
    public var counts = [10_000]
    /// Source addresses 127.0.0.2, 127.0.0.3, … used in turn (each gives ~28 000 ephemeral ports).
    public var sourceAddresses = 4
    /// The relay's process id (required: its VmRSS is the measurement).
    public var serverPID: Int32
    /// Wait after the last connection is ready (or closed) before reading VmRSS.
    public var settle: Duration = .seconds(3)
    /// Connections being set up at once.
    public var concurrency = 128
    /// Generator event-loop threads.
    public var threads = 1

    /// Defaults for everything but the relay process id.
    public init(serverPID: Int32) { self.serverPID = serverPID }
}

/// One step of the connections mode.
public struct ConnectionsStep: Sendable {
    /// Idle authenticated connections held.
    public var count: Int
    /// Relay VmRSS with no benchmark connection open, right before the step.
    public var rssBefore: Int
    /// Relay VmRSS with `count` idle authenticated connections.
    public var rssHeld: Int
    /// Relay VmRSS after closing them again.
    public var rssAfterClose: Int
    /// (rssHeld − rssBefore) ÷ count.
    public var bytesPerConnection: Double { Double(rssHeld - rssBefore) / Double(count) }
    /// Time to connect and authenticate all of them.
    public var setupSeconds: Double
    /// The generator's own VmRSS while holding them, in bytes.
    public var generatorRSS: Int
}

/// What a connections run measured (memory in bytes).
public struct ConnectionsResult: Sendable {
    /// The open-files limits (`ulimit -Sn` before raising it, `ulimit -Hn`).
    public var softLimitBefore: UInt64, hardLimit: UInt64
    /// Relay VmRSS before anything was registered.
    public var rssAtStart: Int
    /// Devices registered (max of the counts).
    public var registered: Int
    /// Time to register them, one short connection each.
    public var registrationSeconds: Double
    /// Relay VmRSS after registering, with their connections closed.
    public var rssAfterRegistration: Int
    /// One per count, in order.
    public var steps: [ConnectionsStep]
}

/// Holds one connection and reports its end. Confined to its event loop.
final class IdleDevice: DeviceConnectionDelegate, @unchecked Sendable {
    func connectionReady(_ connection: DeviceConnection) {}
    func connection(_ connection: DeviceConnection, delivered id: EnvelopeID, timestamp: UInt64, now: UInt64) {}
    func connection(_ connection: DeviceConnection, acknowledged id: EnvelopeID, now: UInt64) {}
    func connection(_ connection: DeviceConnection, submitted id: EnvelopeID, errorCode: Int, now: UInt64) {}
    func connectionClosed(_ connection: DeviceConnection, reason: String) {}
}

/// Connections mode: raises the open-files soft limit to the hard one, registers max(counts) devices
/// (one short connection each), then per count opens that many idle authenticated connections from
/// rotating 127.0.0.x source addresses, reads the relay's VmRSS, and closes them.
public func runConnections(_ options: ConnectionsOptions, log: @Sendable (String) -> Void) async throws -> ConnectionsResult {
    try await withEventLoopGroup(threads: options.threads) { group in try await runConnections(options, log: log, group: group) }
}

private func runConnections(_ options: ConnectionsOptions, log: @Sendable (String) -> Void, group: MultiThreadedEventLoopGroup) async throws -> ConnectionsResult {
    let (soft, hard) = ProcessStats.raiseOpenFilesLimit()
    let loops = Array(group.makeIterator())
    let flushers = loops.map { LoopFlusher(eventLoop: $0) }
    let connector = WebSocketConnector(host: options.host, port: options.port)
    let tag = makeRunTag()
    let total = options.counts.max() ?? 0
    let sources = try (0..<max(options.sourceAddresses, 1)).map { try SocketAddress(ipAddress: "127.0.0.\(2 + $0)", port: 0) }
    let rss = { ProcessStats.statusBytes(pid: options.serverPID) ?? 0 }
    let rssAtStart = rss()

    log("registering \(total) devices")
    let identities = (0..<total).map { BenchIdentity(handle: benchHandle("c", tag: tag, kind: "d", index: $0)) }
    let deviceIDs = DeviceIDs(count: total)
    let registrationStart = monotonicNanoseconds()
    try await forEachConcurrently(total, concurrency: options.concurrency) { index in
        let loop = loops[index % loops.count]
        let connection = DeviceConnection(identity: identities[index], registerFirst: true, flusher: flushers[index % loops.count])
        return connector.connect(on: loop, source: sources[index % sources.count]) { connection }.flatMap { channel in
            connection.ready.futureResult.flatMap { _ in
                deviceIDs.set(index, connection.deviceID)
                connection.close()
                return channel.closeFuture
            }
        }
    }
    let registrationSeconds = Double(monotonicNanoseconds() - registrationStart) / 1e9
    try await Task.sleep(for: options.settle)
    let rssAfterRegistration = rss()

    var steps: [ConnectionsStep] = []
    for count in options.counts {
        try await Task.sleep(for: options.settle)
        let before = rss()
        log("opening \(count) idle connections")
        let held = HeldConnections()
        let idle = IdleDevice()
        let start = monotonicNanoseconds()
        try await forEachConcurrently(count, concurrency: options.concurrency) { index in
            let loop = loops[index % loops.count]
            let connection = DeviceConnection(
                identity: identities[index], deviceID: deviceIDs.get(index), registerFirst: false, flusher: flushers[index % loops.count])
            connection.delegate = idle
            return connector.connect(on: loop, source: sources[index % sources.count]) { connection }.flatMap { channel in
                held.append(channel, connection)
                return connection.ready.futureResult
            }
        }
        let setupSeconds = Double(monotonicNanoseconds() - start) / 1e9
        try await Task.sleep(for: options.settle)
        let during = rss()
        let generatorRSS = ProcessStats.statusBytes(pid: ProcessStats.selfPID) ?? 0
        let stillOpen = held.all.filter { $0.0.isActive }.count
        guard stillOpen == count else { throw SetupError(reason: "only \(stillOpen) of \(count) connections stayed open") }
        log("closing them")
        for (channel, connection) in held.all {
            channel.eventLoop.execute { connection.close() }
        }
        for (channel, _) in held.all { try? await channel.closeFuture.get() }
        try await Task.sleep(for: options.settle)
        steps.append(ConnectionsStep(
            count: count, rssBefore: before, rssHeld: during, rssAfterClose: rss(), setupSeconds: setupSeconds, generatorRSS: generatorRSS))
    }
    return ConnectionsResult(
        softLimitBefore: soft, hardLimit: hard, rssAtStart: rssAtStart, registered: total, registrationSeconds: registrationSeconds,
        rssAfterRegistration: rssAfterRegistration, steps: steps)
}

/// Device ids from registration, by index.
final class DeviceIDs: Sendable {
    private let ids: Mutex<[UInt32]>
    init(count: Int) { ids = Mutex([UInt32](repeating: 1, count: count)) }
    func set(_ index: Int, _ id: UInt32) { ids.withLock { $0[index] = id } }
    func get(_ index: Int) -> UInt32 { ids.withLock { $0[index] } }
}

/// The open connections of one step.
final class HeldConnections: Sendable {
    private let items = Mutex<[(any Channel, DeviceConnection)]>([])
    func append(_ channel: any Channel, _ connection: DeviceConnection) { items.withLock { $0.append((channel, connection)) } }
    var all: [(any Channel, DeviceConnection)] { items.withLock { $0 } }
}
