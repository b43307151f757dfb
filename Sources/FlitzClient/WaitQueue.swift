import Foundation
import Synchronization

/// A FIFO that one consumer awaits. Unlike an `AsyncStream`, a wait can end (cancellation, timeout)
/// without ending the queue, and an item can go back to the front. Used for the relay's unsolicited
/// frames and for `chat`'s typed lines. With a `limit`, pushing onto a full queue drops its oldest item.
final class WaitQueue<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        var finished = false
        var waiter: (id: UInt64, continuation: CheckedContinuation<Element?, Never>)?
        var nextWaiterID: UInt64 = 0
    }

    private let state = Mutex(State())
    /// Most items held at once (nil: unbounded); the oldest is dropped to make room.
    private let limit: Int?

    /// An empty queue holding at most `limit` items (nil: unbounded; otherwise at least 1).
    init(limit: Int? = nil) {
        self.limit = limit.map { max(1, $0) }
    }

    /// Items waiting (not yet taken).
    var count: Int { state.withLock { $0.items.count } }

    /// Adds an item at the back (or the front), handing it straight to a waiting consumer.
    func push(_ item: Element, front: Bool = false) {
        let waiter: CheckedContinuation<Element?, Never>? = state.withLock { state in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter.continuation
            }
            if front { state.items.insert(item, at: 0) } else { state.items.append(item) }
            if let limit, state.items.count > limit { state.items.removeFirst(state.items.count - limit) }
            return nil
        }
        waiter?.resume(returning: item)
    }

    /// No more items will come; a waiting consumer gets nil once the queue is empty.
    func finish() {
        let waiter = state.withLock { state in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.continuation.resume(returning: nil)
    }

    /// The next item; nil when finished and empty, when `timeout` passes first, or on cancellation.
    func next(timeout: Duration? = nil) async -> Element? {
        let id = state.withLock { state in
            defer { state.nextWaiterID += 1 }
            return state.nextWaiterID
        }
        let timer = timeout.map { timeout in
            Task { [weak self] in
                try await Task.sleep(for: timeout)
                self?.wake(id)
            }
        }
        defer { timer?.cancel() }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready: Element?? = state.withLock { state in
                    if !state.items.isEmpty { return .some(state.items.removeFirst()) }
                    if state.finished || Task.isCancelled { return .some(nil) }
                    state.waiter = (id, continuation)
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            self.wake(id)
        }
    }

    /// Ends wait `id` with nil, if it is still waiting.
    private func wake(_ id: UInt64) {
        let continuation: CheckedContinuation<Element?, Never>? = state.withLock { state in
            guard let waiter = state.waiter, waiter.id == id else { return nil }
            state.waiter = nil
            return waiter.continuation
        }
        continuation?.resume(returning: nil)
    }
}
