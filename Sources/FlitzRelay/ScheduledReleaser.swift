import Logging
import ServiceLifecycle
import Synchronization

/// What the scheduled-envelope releaser did (`ScheduleTimer.monitor`), for tests: they await a count instead of sleeping.
struct ScheduleCounts: Sendable {
    /// New scheduled envelopes announced by Submits (each makes the releaser read the store again).
    var pokes = 0
    /// Times the releaser read the earliest release time from the store.
    var checks = 0
    /// Envelopes released into queues.
    var released = 0
    /// Scheduled envelopes found expired at release (recipient device gone).
    var expired = 0
}

/// The releaser's timer and wake-up (`protocol/conversations.md` 8): `Relay.submit` pokes it when it stores a scheduled
/// envelope; tests replace `sleeper` (as `PushDispatcher.sleeper`) to decide when a wait ends.
final class ScheduleTimer: Sendable {
    /// What the releaser did.
    let monitor = CountMonitor(ScheduleCounts())
    private let sleeperState = Mutex<PushSleeper>({ duration in try await Task.sleep(for: duration) })

    /// Waits until the next release time; throws `CancellationError` when cancelled (a poke or shutdown).
    var sleeper: PushSleeper {
        get { sleeperState.withLock { $0 } }
        set { sleeperState.withLock { $0 = newValue } }
    }

    /// A scheduled envelope was stored: the releaser reads the earliest release time again.
    func poke() { monitor.record { $0.pokes += 1 } }

    /// Counts one release pass.
    func record(released: Int, expired: Int) {
        monitor.record {
            $0.released += released
            $0.expired += expired
        }
    }
}

/// Releases scheduled envelopes at their `not_before_ms` (`protocol/conversations.md` 8), never earlier and within a
/// second after: it reads the earliest release time from the store (at start too, so a restart loses nothing), waits
/// on the relay's clock until then (at most 60 s at a time) or until a Submit stores an earlier one, and calls
/// `Relay.releaseScheduled()`.
public struct ScheduledReleaser: Service, CustomStringConvertible {
    let relay: Relay

    /// A releaser for `relay`.
    public init(relay: Relay) {
        self.relay = relay
    }

    /// The longest single wait, milliseconds: the releaser reads the clock and the store again at least this often.
    static let maxWaitMs: Int64 = 60_000

    /// "ScheduledReleaser", for lifecycle logs.
    public var description: String { "ScheduledReleaser" }

    /// Runs until graceful shutdown or cancellation; a store failure is logged and retried a second later.
    public func run() async throws {
        let timer = relay.scheduler
        let logger = relay.logger
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                // Pokes up to here are covered by the read below; a later one ends the wait.
                let pokes = timer.monitor.snapshot.pokes
                var wait: Duration?
                do {
                    let next = try await relay.store.nextScheduledRelease()
                    timer.monitor.record { $0.checks += 1 }
                    let now = relay.clock.nowMs()
                    if let next, next <= now {
                        try await relay.releaseScheduled()
                        continue
                    }
                    // At most a minute: a wall-clock step forward cannot hold a release back longer than that.
                    wait = next.map { .milliseconds(min($0 - now, Self.maxWaitMs)) }
                } catch {
                    logger.error("scheduled release failed", metadata: ["error": "\(error)"])
                    wait = .seconds(1)
                }
                let sleeper = timer.sleeper
                let until = wait
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await timer.monitor.wait { $0.pokes > pokes } }
                    if let until { group.addTask { try? await sleeper(until) } }
                    await group.next()
                    group.cancelAll()
                }
            }
        }
    }
}
