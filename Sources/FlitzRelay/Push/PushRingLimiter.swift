import FlitzStore
import Synchronization

/// The per-device limit on `ring` wake-ups (`protocol/push.md` 5 step 1): a bucket of `push.ringBurst` wake-ups
/// that refills one per `push.ringInterval`, on the relay clock (milliseconds, whole-interval steps, so a test
/// that moves the clock by exactly one interval gets exactly one more). Rings skip the coalescing window; without
/// this one sender could ring a victim's phone thousands of times a minute.
///
/// In memory, per relay process (a restart refills every bucket); used on SQLite only: cluster nodes take rings from a
/// shared bucket in the database instead (`PushDispatcher.takeRing`, `protocol/cluster.md` 4). Memory is bounded: past `maxDevices` buckets, full ones
/// (which behave exactly like missing ones) are dropped, and if most are still in use, all are (the limit fails
/// open for a moment rather than letting many recipients grow the relay's memory).
final class PushRingLimiter: Sendable {
    private struct Bucket {
        /// Wake-ups left, 0...burst.
        var tokens: Int
        /// The time `tokens` was counted at, advanced by whole intervals only (the remainder keeps counting).
        var countedAtMs: Int64
    }

    private let burst: Int
    private let intervalMs: Int64
    private let maxDevices: Int
    private let buckets = Mutex<[DeviceAddress: Bucket]>([:])

    /// A limiter of `burst` ring wake-ups per device, one more each `interval` (at least 1 ms).
    init(burst: Int, interval: Duration, maxDevices: Int = 100_000) {
        self.burst = max(1, burst)
        self.intervalMs = max(1, interval.wholeMilliseconds)
        self.maxDevices = maxDevices
    }

    /// Takes one ring wake-up for `device` at `nowMs`; false (nothing taken) when its bucket is empty.
    func take(_ device: DeviceAddress, nowMs: Int64) -> Bool {
        buckets.withLock { buckets in
            var bucket = refilled(buckets[device], nowMs: nowMs)
            guard bucket.tokens > 0 else {
                buckets[device] = bucket
                return false
            }
            bucket.tokens -= 1
            if buckets[device] == nil, buckets.count >= maxDevices { prune(&buckets, nowMs: nowMs) }
            buckets[device] = bucket
            return true
        }
    }

    /// Buckets held (tests check the memory bound).
    var count: Int { buckets.withLock { $0.count } }

    private func refilled(_ bucket: Bucket?, nowMs: Int64) -> Bucket {
        guard var bucket else { return Bucket(tokens: burst, countedAtMs: nowMs) }
        // A clock that went back refills nothing and restarts the count there.
        guard nowMs >= bucket.countedAtMs else { return Bucket(tokens: bucket.tokens, countedAtMs: nowMs) }
        let intervals = (nowMs - bucket.countedAtMs) / intervalMs
        if intervals >= Int64(burst - bucket.tokens) {
            return Bucket(tokens: burst, countedAtMs: nowMs)
        }
        bucket.tokens += Int(intervals)
        bucket.countedAtMs += intervals * intervalMs
        return bucket
    }

    private func prune(_ buckets: inout [DeviceAddress: Bucket], nowMs: Int64) {
        buckets = buckets.filter { refilled($0.value, nowMs: nowMs).tokens < burst }
        if buckets.count > maxDevices / 2 { buckets.removeAll(keepingCapacity: true) }
    }
}
