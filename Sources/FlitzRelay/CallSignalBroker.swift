import FlitzStore
import FlitzWire
import Foundation
import Synchronization

/// The relay's in-memory call signals (`protocol/calls.md` 3.1 and 3.2): per recipient device, the copies accepted
/// and not yet written to a connection, and per (call id, sending device) the last accepted sequence. Nothing here is
/// ever stored on disk or logged; a restart loses it all (the calls time out).
///
/// One list per device holds its copies in acceptance order (`serial`), at most `maxPerSender` (8) from one sending
/// account and `maxPerDevice` (64) in all; beyond that a copy is dropped as `add` says (never an offer to make room for
/// another kind), so one account cannot push out the offers others hold for the device. While the device has an
/// attached connection the list is that connection's outbox: the broker
/// wakes the connection, which takes the list and writes it (`take`). Without one the list is held until the device
/// authenticates (`attach`, then `take` right after `AuthenticateResult`) or its copies expire. Holding, waking,
/// attaching and taking all happen under one lock, so a copy accepted while a device authenticates is either taken with
/// the held ones or woken for afterwards, never stranded; a connection that ends leaves its untaken copies held for
/// the next one.
final class CallSignalBroker: Sendable {
    /// Most copies kept for one device (calls.md 3.2 and 10).
    static let maxPerDevice = CallSignalCaps.maxPerDevice
    /// Most copies kept for one device from one sending account (calls.md 3.2 and 10).
    static let maxPerSender = CallSignalCaps.maxPerSender
    /// Least time between two full purges from the request path, ms. A purge scans every list under the lock, so under
    /// load (some copy always just expired) it runs at most once a second; meanwhile an expired copy may stay in memory
    /// a little longer, but every read checks the expiry itself: it is never handed out, rung or counted as a sequence.
    static let purgeIntervalMs: Int64 = 1_000

    /// One copy for one device, as it will be delivered.
    struct Item: Sendable {
        /// Acceptance order across the relay (ascending).
        var serial: UInt64
        /// The frame body delivered, `request_id` 0.
        var delivery: WireCallSignalDelivery
        /// When it is dropped if still undelivered, relay clock, ms since the epoch.
        var expiresAtMs: Int64 { delivery.expiresAtMs }
    }

    /// The pair sequences are checked for (`calls.md` 3.1 check 5).
    struct SequenceKey: Hashable, Sendable {
        var callID: Data
        var sender: DeviceAddress
    }

    /// Which devices got a signal now and which hold it.
    struct Acceptance: Sendable {
        /// Devices with an attached connection, woken to write the copy now; ascending.
        var delivered: [UInt32] = []
        /// Devices without one, which hold the copy; ascending, each with the copy's serial.
        var held: [(deviceID: UInt32, serial: UInt64)] = []
    }

    /// What changed that the metrics should know (`calls.md` 3.6).
    struct Counts: Sendable, Equatable {
        /// Copies in memory now (held, or waiting for their connection to write them).
        var inMemory = 0
        /// Copies dropped at their expiry, undelivered (cumulative).
        var expired = 0
        /// Copies dropped because a device already had `maxPerSender` from their sender or `maxPerDevice` (cumulative).
        var overflowed = 0
    }

    private struct Attachment {
        var connectionID: UInt64
        var wake: @Sendable () -> Void
    }

    private struct State {
        var lists: [DeviceAddress: [Item]] = [:]
        var attached: [DeviceAddress: Attachment] = [:]
        /// Last accepted sequence per pair and until when it is remembered (its last signal's expiry).
        var sequences: [SequenceKey: (sequence: UInt32, untilMs: Int64)] = [:]
        var nextSerial: UInt64 = 1
        /// The earliest expiry of anything in `lists` or `sequences` (a full purge is due then).
        var nextExpiryMs: Int64 = .max
        /// When the last full purge ran (relay clock, ms), if ever: the request path purges at most once a
        /// `purgeIntervalMs`.
        var lastPurgeMs: Int64?
        var counts = Counts()
    }

    private let state = Mutex(State())
    /// Called with the counts after every change (the relay's metrics gauge and counters).
    private let onChange: @Sendable (Counts) -> Void

    /// A broker reporting its counts to `onChange` after each change.
    init(onChange: @escaping @Sendable (Counts) -> Void = { _ in }) {
        self.onChange = onChange
    }

    /// The counts now (tests).
    var counts: Counts { state.withLock { $0.counts } }

    /// Whether `sequence` is greater than the last accepted for `key`, as far as the broker remembers (check 5).
    func isFresh(_ key: SequenceKey, sequence: UInt32, nowMs: Int64) -> Bool {
        let (fresh, counts) = state.withLock { state -> (Bool, Counts?) in
            let purged = Self.purgeIfDue(&state, nowMs: nowMs)
            let fresh = state.sequences[key].map { $0.untilMs <= nowMs || sequence > $0.sequence } ?? true
            return (fresh, purged ? state.counts : nil)
        }
        if let counts { onChange(counts) }
        return fresh
    }

    /// Accepts one signal: records its sequence for `key`, and unless `drop` (a blocked sender, `calls.md` 3.1) hands
    /// each copy to its device's attached connection or holds it. Returns nil, accepting nothing, when the sequence is
    /// no longer fresh (check 5) or `admit` refuses. With `drop`, every device is reported as holding it and nothing is
    /// kept.
    /// - Parameter admit: called under the lock once the sequence is fresh, before anything is recorded: the rate limits
    ///   (check 6), which take their tokens only when it returns true. So of two concurrent signals with one sequence
    ///   (a device's older connection still finishing its request while a newer one sends), the refused one takes no
    ///   token.
    func accept(
        _ key: SequenceKey, sequence: UInt32, recipient handle: String, copies: [WireCallSignalDelivery], expiresAtMs: Int64, drop: Bool,
        nowMs: Int64, admit: () -> Bool = { true }
    ) -> Acceptance? {
        var wakes: [@Sendable () -> Void] = []
        let outcome = state.withLock { state -> (Acceptance, Counts)? in
            _ = Self.purgeIfDue(&state, nowMs: nowMs)
            if let last = state.sequences[key], last.untilMs > nowMs, sequence <= last.sequence { return nil }
            guard admit() else { return nil }
            let until = max(expiresAtMs, state.sequences[key].map { $0.untilMs > nowMs ? $0.untilMs : 0 } ?? 0)
            state.sequences[key] = (sequence, until)
            state.nextExpiryMs = min(state.nextExpiryMs, until)
            var acceptance = Acceptance()
            for copy in copies.sorted(by: { $0.recipientDeviceID < $1.recipientDeviceID }) {
                let device = DeviceAddress(handle: handle, deviceID: copy.recipientDeviceID)
                let serial = state.nextSerial
                state.nextSerial += 1
                if drop {
                    acceptance.held.append((copy.recipientDeviceID, serial))
                    continue
                }
                var list = state.lists[device] ?? []
                // Expired copies a purge has not yet dropped take no place.
                let unexpired = list.count
                list.removeAll { $0.expiresAtMs <= nowMs }
                state.counts.expired += unexpired - list.count
                state.counts.inMemory -= unexpired - list.count
                let (dropped, kept) = Self.add(Item(serial: serial, delivery: copy), to: &list)
                state.counts.inMemory += kept ? 1 - dropped : 0
                state.counts.overflowed += dropped
                state.lists[device] = list.isEmpty ? nil : list
                state.nextExpiryMs = min(state.nextExpiryMs, expiresAtMs)
                if !kept {
                    // Dropped at once (its sender's copies for the device are all offers): reported as held, nothing waits.
                    acceptance.held.append((copy.recipientDeviceID, serial))
                } else if let attachment = state.attached[device] {
                    acceptance.delivered.append(copy.recipientDeviceID)
                    wakes.append(attachment.wake)
                } else {
                    acceptance.held.append((copy.recipientDeviceID, serial))
                }
            }
            return (acceptance, state.counts)
        }
        guard let (acceptance, counts) = outcome else { return nil }
        onChange(counts)
        for wake in wakes { wake() }
        return acceptance
    }

    /// Makes `connectionID` the connection that writes `device`'s copies (replacing an older one), and calls `wake`
    /// whenever a copy for it is accepted from now on. The copies held so far stay in the list for `take`.
    func attach(_ device: DeviceAddress, connectionID: UInt64, wake: @escaping @Sendable () -> Void) {
        state.withLock { $0.attached[device] = Attachment(connectionID: connectionID, wake: wake) }
    }

    /// Wakes the connection attached for `device`, if any (in a cluster: signals wait for it in the database); returns
    /// whether there was one.
    @discardableResult
    func wakeAttached(_ device: DeviceAddress) -> Bool {
        guard let wake = state.withLock({ $0.attached[device]?.wake }) else { return false }
        wake()
        return true
    }

    /// Whether any connection is attached for `device`.
    func isAttached(_ device: DeviceAddress) -> Bool {
        state.withLock { $0.attached[device] != nil }
    }

    /// Whether `connectionID` is the connection attached for `device`.
    func isAttached(_ device: DeviceAddress, connectionID: UInt64) -> Bool {
        state.withLock { $0.attached[device]?.connectionID == connectionID }
    }

    /// Forgets `connectionID` as `device`'s connection, if it still is; copies it did not take stay held.
    func detach(_ device: DeviceAddress, connectionID: UInt64) {
        state.withLock { state in
            if state.attached[device]?.connectionID == connectionID { state.attached[device] = nil }
        }
    }

    /// Forgets whichever connection writes `device`'s copies: the device authenticated on a connection that did not set
    /// `Authenticate.call_signals`, so it counts as not connected for calls (`calls.md` 3.2) and its copies are held.
    func detachAny(_ device: DeviceAddress) {
        state.withLock { _ = $0.attached.removeValue(forKey: device) }
    }

    /// Takes `device`'s unexpired copies, in acceptance order, for its attached connection `connectionID` to write
    /// now (expired ones are dropped and counted). Empty when `connectionID` is not (any more) the attached one.
    func take(_ device: DeviceAddress, connectionID: UInt64, nowMs: Int64) -> [WireCallSignalDelivery] {
        let (items, counts) = state.withLock { state -> ([Item], Counts?) in
            let purged = Self.purgeIfDue(&state, nowMs: nowMs)
            guard state.attached[device]?.connectionID == connectionID, let list = state.lists.removeValue(forKey: device) else {
                return ([], purged ? state.counts : nil)
            }
            let live = list.filter { $0.expiresAtMs > nowMs }
            state.counts.inMemory -= list.count
            state.counts.expired += list.count - live.count
            return (live, state.counts)
        }
        if let counts { onChange(counts) }
        return items.map(\.delivery)
    }

    /// Whether the copy `serial` for `device` is still waiting (neither written nor expired): a ring wake-up is sent
    /// only then (`calls.md` 3.3, `push.md` 5).
    func isWaiting(_ device: DeviceAddress, serial: UInt64, nowMs: Int64) -> Bool {
        state.withLock { state in
            state.lists[device]?.contains { $0.serial == serial && $0.expiresAtMs > nowMs } ?? false
        }
    }

    /// Drops every expired copy and forgets sequences past their last signal's expiry; returns the copies dropped.
    @discardableResult
    func purge(nowMs: Int64) -> Int {
        let (dropped, counts) = state.withLock { state -> (Int, Counts) in
            let before = state.counts.expired
            Self.purge(&state, nowMs: nowMs)
            return (state.counts.expired - before, state.counts)
        }
        onChange(counts)
        return dropped
    }

    /// Appends `item` to a device's `list` within the caps (`calls.md` 3.2): when its sending account already has
    /// `maxPerSender` copies there, one of those is dropped; otherwise, when the list has `maxPerDevice`, one copy of
    /// the account holding the most (the new copy counted; ties: the one with the oldest copy) is dropped. The copy
    /// dropped is that account's oldest that is not an offer; an offer is dropped (its account's oldest) only to make
    /// room for another offer. When no copy may go, the new copy itself is dropped. Returns how many copies were
    /// dropped (0 or 1) and whether `item` was kept.
    static func add(_ item: Item, to list: inout [Item]) -> (dropped: Int, kept: Bool) {
        // The one rule every call-signal store applies (FlitzStore's CallSignalCaps, shared with PostgreSQL's).
        func entry(_ item: Item) -> CallSignalCaps.Entry {
            CallSignalCaps.Entry(sender: item.delivery.senderHandle, isOffer: item.delivery.kind == .callOffer)
        }
        switch CallSignalCaps.decide(adding: entry(item), to: list.map(entry)) {
        case .keep:
            list.append(item)
            return (0, true)
        case .keepDropping(let index):
            list.remove(at: index)
            list.append(item)
            return (1, true)
        case .dropNew:
            return (1, false)
        }
    }

    private static func purgeIfDue(_ state: inout State, nowMs: Int64) -> Bool {
        guard nowMs >= state.nextExpiryMs else { return false }
        if let last = state.lastPurgeMs, nowMs >= last, nowMs - last < purgeIntervalMs { return false }
        purge(&state, nowMs: nowMs)
        return true
    }

    private static func purge(_ state: inout State, nowMs: Int64) {
        var next = Int64.max
        for (device, list) in state.lists {
            let live = list.filter { $0.expiresAtMs > nowMs }
            if live.count != list.count {
                state.counts.expired += list.count - live.count
                state.counts.inMemory -= list.count - live.count
                state.lists[device] = live.isEmpty ? nil : live
            }
            for item in live { next = min(next, item.expiresAtMs) }
        }
        state.sequences = state.sequences.filter { $0.value.untilMs > nowMs }
        for entry in state.sequences.values { next = min(next, entry.untilMs) }
        state.nextExpiryMs = next
        state.lastPurgeMs = nowMs
    }
}
