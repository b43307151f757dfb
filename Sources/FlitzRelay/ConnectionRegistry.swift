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

/// Live authenticated connections, at most one per device (`protocol/relay.md`, "Connections").
final class ConnectionRegistry: Sendable {
    private struct Entry {
        var connectionID: UInt64
        var signal: @Sendable (ConnectionSignal) -> Void
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

    /// Makes `connectionID` the live connection of `device`; an older one is told to close.
    func claim(_ device: DeviceAddress, connectionID: UInt64, signal: @escaping @Sendable (ConnectionSignal) -> Void) {
        let previous = state.withLock { state in
            state.entries.updateValue(Entry(connectionID: connectionID, signal: signal), forKey: device)
        }
        if let previous, previous.connectionID != connectionID {
            previous.signal(.close(reason: "replaced by a newer connection of this device"))
        }
    }

    /// Forgets `device` if `connectionID` is still its live connection.
    func release(_ device: DeviceAddress, connectionID: UInt64) {
        state.withLock { state in
            if state.entries[device]?.connectionID == connectionID { state.entries[device] = nil }
        }
    }

    /// Wakes the live connection of each device, if any.
    func wake<S: Sequence<DeviceAddress>>(_ devices: S) {
        let signals = state.withLock { state in devices.compactMap { state.entries[$0]?.signal } }
        for signal in signals { signal(.wake) }
    }

    /// Closes and forgets the live connection of each device, if any.
    func close<S: Sequence<DeviceAddress>>(_ devices: S, reason: String) {
        let signals = state.withLock { state in devices.compactMap { state.entries.removeValue(forKey: $0)?.signal } }
        for signal in signals { signal(.close(reason: reason)) }
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
}

/// `CountMonitor` of `ConnectionCounts`.
typealias ConnectionMonitor = CountMonitor<ConnectionCounts>
