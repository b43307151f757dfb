import FlitzStore
import FlitzWire
import Synchronization

/// What the relay tells a live connection from outside its own frames.
enum ConnectionSignal: Sendable {
    /// New items may be queued for the connection's device.
    case wake
    /// The device authenticated on a newer connection, or was removed by recovery: close this one.
    case close(reason: String)
    /// Send this online-only envelope now in a `Deliver` of its own (`conversations.md` 6).
    case onlineOnly(WireEnvelope)
}

/// Live authenticated connections, at most one per device (`protocol/relay.md`, "Connections"). In a cluster
/// (`protocol/cluster.md`) these are this node's connections; `wake` and `close` also tell the other nodes (`publish`),
/// and each entry carries its claim's epoch and how far its connection has delivered (the periodic check, 3.3).
final class ConnectionRegistry: Sendable {
    private struct Entry {
        var connectionID: UInt64
        var signal: @Sendable (ConnectionSignal) -> Void
        /// The connection claim's epoch (`RelayCluster.claimConnection`); 0 on a single relay.
        var epoch: Int64 = 0
        var progress: DeliveryProgress?
    }

    /// One of this node's connections as the periodic cluster check sees it.
    struct LocalConnection: Sendable {
        var device: DeviceAddress
        var connectionID: UInt64
        var epoch: Int64
        /// The last queue sequence the connection sent (0 before its first Deliver).
        var sentThrough: Int64
        /// The queue head up to which the connection found nothing after a check woke it (0 before): the check wakes
        /// it again only when the head grew past both this and `sentThrough` (`cluster.md` 3.3).
        var idleThrough: Int64
        /// Where the connection records what the check woke it at; nil on a single relay.
        var progress: DeliveryProgress?
    }

    /// Tells the other nodes (cluster mode); nil on a single relay.
    private let publish: (@Sendable ([ClusterNotice]) -> Void)?

    /// A registry; `publish`, when given, is called with the notices for the other nodes after each `wake` and `close`.
    init(publish: (@Sendable ([ClusterNotice]) -> Void)? = nil) {
        self.publish = publish
    }

    private let state = Mutex<(nextID: UInt64, entries: [DeviceAddress: Entry])>((1, [:]))
    /// What happened to connections, for tests and metrics.
    let monitor = ConnectionMonitor(ConnectionCounts())
    private let timer = Mutex<StallTimer>({ duration in try await Task.sleep(for: duration) })

    /// Waits out a write timeout (`relay.writeTimeout`); throws `CancellationError` when cancelled.
    typealias StallTimer = @Sendable (Duration) async throws -> Void

    /// The timer every connection's blocked write races against. Tests replace it to decide, by an event
    /// of their own, when a blocked write times out; the default sleeps for the given duration.
    var stallTimer: StallTimer {
        get { timer.withLock { $0 } }
        set { timer.withLock { $0 = newValue } }
    }

    /// A fresh id for a new connection.
    func makeConnectionID() -> UInt64 {
        state.withLock { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
    }

    /// Makes `connectionID` the live connection of `device`; an older one is told to close. In a cluster, a
    /// connection whose `epoch` is smaller than the registered one's is told to close instead (and not registered).
    /// In a cluster, `epoch` is the connection's claim (`RelayCluster.claimConnection`) and `progress` is where it
    /// records what it delivered.
    func claim(
        _ device: DeviceAddress, connectionID: UInt64, epoch: Int64 = 0, progress: DeliveryProgress? = nil,
        signal: @escaping @Sendable (ConnectionSignal) -> Void
    ) {
        // The connection to close: the one already here, unless its epoch is larger (two logins of one device on
        // this node whose claims committed in one order and reached here in the other: the larger epoch is the
        // live claim, so the newcomer goes; sec-claims).
        let loser: (@Sendable (ConnectionSignal) -> Void)? = state.withLock { state in
            if let existing = state.entries[device], existing.connectionID != connectionID, existing.epoch > epoch { return signal }
            let previous = state.entries.updateValue(
                Entry(connectionID: connectionID, signal: signal, epoch: epoch, progress: progress), forKey: device)
            guard let previous, previous.connectionID != connectionID else { return nil }
            return previous.signal
        }
        loser?(.close(reason: "replaced by a newer connection of this device"))
    }

    /// Forgets `device` if `connectionID` is still its live connection.
    func release(_ device: DeviceAddress, connectionID: UInt64) {
        state.withLock { state in
            if state.entries[device]?.connectionID == connectionID { state.entries[device] = nil }
        }
    }

    /// Wakes the live connection of each device, if any; in a cluster, tells the other nodes too (`queued`, after
    /// the commit of what was queued: callers call this after it).
    func wake<S: Sequence<DeviceAddress>>(_ devices: S) {
        let devices = Array(devices)
        wakeLocally(devices)
        if let publish, !devices.isEmpty { publish([.queued(devices)]) }
    }

    /// Wakes this node's connection of each device, if any (a `queued` notice from another node).
    func wakeLocally<S: Sequence<DeviceAddress>>(_ devices: S) {
        let signals = state.withLock { state in devices.compactMap { state.entries[$0]?.signal } }
        for signal in signals { signal(.wake) }
    }

    /// Closes and forgets the live connection of each device, if any; in a cluster, tells the other nodes to close
    /// theirs (`removed`).
    func close<S: Sequence<DeviceAddress>>(_ devices: S, reason: String) {
        let devices = Array(devices)
        closeLocally(devices, reason: reason)
        if let publish, !devices.isEmpty { publish([.removed(devices)]) }
    }

    /// Closes and forgets this node's connection of each device, if any.
    func closeLocally<S: Sequence<DeviceAddress>>(_ devices: S, reason: String) {
        let signals = state.withLock { state in devices.compactMap { state.entries.removeValue(forKey: $0)?.signal } }
        for signal in signals { signal(.close(reason: reason)) }
    }

    /// Closes and forgets this node's connection of `device` if its claim's epoch is smaller than `epoch` (a newer
    /// claim on another node, `cluster.md` 3.1) or, when `connectionID` is given, if it is still that connection.
    func closeOlder(_ device: DeviceAddress, than epoch: Int64, connectionID: UInt64? = nil, reason: String) {
        let signal = state.withLock { state -> (@Sendable (ConnectionSignal) -> Void)? in
            guard let entry = state.entries[device], entry.epoch < epoch || entry.connectionID == connectionID else { return nil }
            state.entries[device] = nil
            return entry.signal
        }
        signal?(.close(reason: reason))
    }

    /// This node's connections now (the periodic cluster check).
    func localConnections() -> [LocalConnection] {
        state.withLock { state in
            state.entries.map { device, entry in
                LocalConnection(
                    device: device, connectionID: entry.connectionID, epoch: entry.epoch, sentThrough: entry.progress?.sentThrough ?? 0,
                    idleThrough: entry.progress?.idleThrough ?? 0, progress: entry.progress)
            }
        }
    }

    /// Hands `envelope` to the live connection of `device`; false when it has none (nothing is kept).
    func handOnlineOnly(_ envelope: WireEnvelope, to device: DeviceAddress) -> Bool {
        guard let signal = state.withLock({ $0.entries[device]?.signal }) else { return false }
        signal(.onlineOnly(envelope))
        return true
    }

    /// Whether `device` has a live connection.
    func isConnected(_ device: DeviceAddress) -> Bool {
        state.withLock { $0.entries[device] != nil }
    }
}

/// The last queue sequence a connection sent, read by the periodic cluster check (`cluster.md` 3.3), and its claim's
/// epoch in a cluster (0 on a single relay, or before it authenticated).
final class DeliveryProgress: Sendable {
    private let value = Atomic<Int64>(0)
    private let claim = Atomic<Int64>(0)
    private let ended = Mutex<DeviceAddress?>(nil)

    /// The device whose connection ended, set when it ends (its claim is then released).
    var device: DeviceAddress? {
        get { ended.withLock { $0 } }
        set { ended.withLock { $0 = newValue } }
    }

    /// The connection's claim epoch (`RelayCluster.claimConnection`), 0 when none.
    var epoch: Int64 {
        get { claim.load(ordering: .acquiring) }
        set { claim.store(newValue, ordering: .releasing) }
    }

    /// The last sequence sent, 0 before the first.
    var sentThrough: Int64 { value.load(ordering: .acquiring) }

    /// Records that the connection sent items through `sequence`.
    func sent(through sequence: Int64) { value.store(sequence, ordering: .releasing) }

    private let wokenHead = Atomic<Int64>(0)
    private let idleHead = Atomic<Int64>(0)

    /// The queue head the periodic check last woke the connection for (`cluster.md` 3.3); set before the wake.
    func checkWoke(atHead head: Int64) { wokenHead.store(head, ordering: .releasing) }

    /// The queue head up to which a fetch found nothing after the check's last wake (0 before).
    var idleThrough: Int64 { idleHead.load(ordering: .acquiring) }

    /// Records that a fetch found nothing: everything up to the head the check last woke the connection for is gone
    /// (acknowledged or expired), so the check need not wake it again until the head grows. A fetch that began before
    /// the check's wake may record that head too early; the wake's own fetch follows it and corrects nothing it needs
    /// to: it finds the items (moving `sentThrough`) or nothing (the record was right).
    func foundNothing() { idleHead.store(wokenHead.load(ordering: .acquiring), ordering: .releasing) }
}

/// Counts of connection events (`protocol/relay.md`, "Slow readers") at one instant, kept by `ConnectionMonitor`.
struct ConnectionCounts: Sendable {
    /// Connections closed because a write stayed blocked for `relay.writeTimeout`.
    var slowReaderDisconnects = 0
    /// Largest number of bytes the relay held in a connection's outbound buffer when it closed it as a
    /// slow reader (bounded as `protocol/relay.md`, "Slow readers", states: the water mark plus one frame and control frames).
    var maxBufferedBytesAtStall = 0
    /// Connections whose current write is waiting for the peer to read (socket buffer full).
    var writesWaiting = 0
    /// Largest number of items sent and not acknowledged on one connection (bounded by `relay.deliveryWindow`).
    var maxInFlight = 0
    /// Connections whose window is full right now (waiting for acknowledgements).
    var windowsFull = 0
    /// Online-only envelopes a connection took from the registry: written or dropped (`conversations.md` 6).
    var onlineOnlyHandled = 0
    /// Of those, dropped: over `RelayConnection.maxPendingOnlineOnly`, or the writer over its high-water mark.
    var onlineOnlyDropped = 0
    /// Queue reads connections made to deliver (one per `Relay.nextDelivery`, whatever it found).
    var queueReads = 0
}

/// `CountMonitor` of `ConnectionCounts`.
typealias ConnectionMonitor = CountMonitor<ConnectionCounts>
