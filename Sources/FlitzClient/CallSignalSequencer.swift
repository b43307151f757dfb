import Foundation

/// Puts authenticated call signals in sequence order per (call id, sending device) (protocol/calls.md 3.4): a
/// sequence not greater than the last processed one is a replay and is ignored; a later one than the next
/// expected waits at most `gapWait` (2 s) for the missing ones, then is processed and the missing ones count as
/// processed (arriving after, they are replays). A value: no clock, no I/O; `tick(at:)` is called at
/// `nextDeadline`.
///
/// Feed it only signals that decrypted and whose binding checked: the sequence is then the sender's, not the
/// relay's, so a relay cannot block a call with a forged high sequence.
public struct CallSignalSequencer<Signal: Sendable>: Sendable {
    /// Names one sender's signals of one call.
    public struct Key: Sendable, Hashable {
        /// 16 bytes.
        public var callID: Data
        public var senderHandle: String
        public var senderDeviceID: UInt32

        public init(callID: Data, senderHandle: String, senderDeviceID: UInt32) {
            self.callID = callID
            self.senderHandle = senderHandle
            self.senderDeviceID = senderDeviceID
        }
    }

    private struct Waiting: Sendable {
        var sequence: UInt32
        var signal: Signal
        var arrivedAt: Date
    }

    /// How long a signal waits for a missing earlier one (protocol/calls.md 10: 2 s).
    public let gapWait: TimeInterval
    private var last: [Key: UInt32] = [:]
    private var waiting: [Key: [Waiting]] = [:]
    /// When a signal of each call id last arrived (for `forgetInactive`).
    private var activity: [Data: Date] = [:]

    /// Nothing processed yet; `gapWait` in seconds.
    public init(gapWait: TimeInterval = 2) {
        self.gapWait = gapWait
    }

    /// A signal with `sequence` (≥ 1) from `key`'s sender arrived at `now`. Returns the signals to process now, in
    /// order: none (a replay, or it waits for a gap), it, or it followed by waiting ones it unblocked.
    public mutating func received(_ signal: Signal, key: Key, sequence: UInt32, at now: Date) -> [Signal] {
        activity[key.callID] = max(activity[key.callID] ?? now, now)
        let processed = last[key] ?? 0
        guard sequence > processed else { return [] }  // a replay
        var queue = waiting[key] ?? []
        guard !queue.contains(where: { $0.sequence == sequence }) else { return [] }  // a replay of one waiting
        queue.append(Waiting(sequence: sequence, signal: signal, arrivedAt: now))
        queue.sort { $0.sequence < $1.sequence }
        waiting[key] = queue
        return release(key, at: now)
    }

    /// Time passed: releases signals that waited `gapWait` for a missing one, with those they unblock.
    public mutating func tick(at now: Date) -> [Signal] {
        var ready: [Signal] = []
        for key in waiting.keys.sorted(by: { ($0.callID.hexKey, $0.senderHandle, $0.senderDeviceID) < ($1.callID.hexKey, $1.senderHandle, $1.senderDeviceID) }) {
            ready += release(key, at: now)
        }
        return ready
    }

    /// When `tick` next has something to release; nil when nothing waits.
    public var nextDeadline: Date? {
        waiting.values.compactMap { $0.first?.arrivedAt.addingTimeInterval(gapWait) }.min()
    }

    /// Forgets everything about `callID` (the call ended; the state machine ignores its later signals anyway).
    public mutating func forget(callID: Data) {
        last = last.filter { $0.key.callID != callID }
        waiting = waiting.filter { $0.key.callID != callID }
        activity[callID] = nil
    }

    /// Forgets every call id whose last signal arrived `idle` seconds or more before `now` (protocol/calls.md 10:
    /// 180 s, twice the longest ttl, so the relay can no longer deliver a copy of its signals), except those in
    /// `keeping` (calls still going). Bounds what a long-running client keeps (review finding 7).
    public mutating func forgetInactive(at now: Date, after idle: TimeInterval, keeping: Set<Data> = []) {
        for (callID, last) in activity where now.timeIntervalSince(last) >= idle && !keeping.contains(callID) { forget(callID: callID) }
    }

    /// Call ids this sequencer holds anything for (tests).
    var knownCallIDs: Set<Data> { Set(last.keys.map(\.callID)).union(waiting.keys.map(\.callID)).union(activity.keys) }

    private mutating func release(_ key: Key, at now: Date) -> [Signal] {
        var queue = waiting[key] ?? []
        var processed = last[key] ?? 0
        var ready: [Signal] = []
        while let first = queue.first {
            let next = first.sequence == processed + 1
            let waitedEnough = now.timeIntervalSince(first.arrivedAt) >= gapWait
            guard next || waitedEnough else { break }
            ready.append(first.signal)
            processed = first.sequence
            queue.removeFirst()
        }
        last[key] = processed
        waiting[key] = queue.isEmpty ? nil : queue
        return ready
    }
}

extension Data {
    /// Lowercase hex, for ordering keys deterministically.
    fileprivate var hexKey: String { map { String(format: "%02x", $0) }.joined() }
}
