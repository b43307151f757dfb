import Synchronization

/// Counts of what a part of the relay did, observable while it runs (`ConnectionRegistry.monitor`,
/// `PushDispatcher.monitor`): tests await a condition on them instead of sleeping; metrics can read them.
final class CountMonitor<Counts: Sendable>: Sendable {
    private struct Waiter {
        let predicate: @Sendable (Counts) -> Bool
        let continuation: CheckedContinuation<Void, Never>
    }

    private let state: Mutex<(snapshot: Counts, waiters: [UInt64: Waiter], nextID: UInt64)>

    /// A monitor starting at `initial`.
    init(_ initial: Counts) {
        state = Mutex((initial, [:], 0))
    }

    /// The counts at this instant.
    var snapshot: Counts { state.withLock { $0.snapshot } }

    /// Applies `change` and resumes the waiters whose condition now holds.
    func record(_ change: (inout Counts) -> Void) {
        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            change(&state.snapshot)
            let snapshot = state.snapshot
            let satisfied = state.waiters.filter { $0.value.predicate(snapshot) }
            for id in satisfied.keys { state.waiters[id] = nil }
            return satisfied.values.map(\.continuation)
        }
        for continuation in ready { continuation.resume() }
    }

    /// Returns once `predicate` holds for the counts (at once if it already does), or when the calling task is
    /// cancelled.
    func wait(until predicate: @escaping @Sendable (Counts) -> Bool) async {
        let id = state.withLock { state in
            defer { state.nextID += 1 }
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let holds = state.withLock { state -> Bool in
                    if predicate(state.snapshot) || Task.isCancelled { return true }
                    state.waiters[id] = Waiter(predicate: predicate, continuation: continuation)
                    return false
                }
                if holds { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.continuation.resume()
        }
    }
}
