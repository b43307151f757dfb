import Foundation
import Synchronization

/// Lines typed in `chat`, waiting to be sent. Unlike an `AsyncStream`, waiting can be cancelled (when the
/// connection drops) without ending the queue, and a line whose send failed goes back to the front.
public final class LineQueue: Sendable {
    /// One line and the envelope prepared for it, kept so a resend after a reconnect is byte-identical.
    struct Line: Sendable {
        let text: String
        let prepared: PreparedBox
    }

    private struct State {
        var lines: [Line] = []
        var finished = false
        var waiter: (id: UInt64, continuation: CheckedContinuation<Line?, Never>)?
        var nextWaiterID: UInt64 = 0
    }

    private let state = Mutex(State())

    /// An empty queue.
    public init() {}

    /// Adds a line to send; blank lines are ignored.
    public func push(_ text: String) {
        guard !text.trimmingCharacters(in: .whitespaces).isEmpty else { return }
        enqueue(Line(text: text, prepared: PreparedBox()), front: false)
    }

    /// No more lines will come (end of input).
    public func finish() {
        let waiter = state.withLock { state in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.continuation.resume(returning: nil)
    }

    func pushFront(_ line: Line) { enqueue(line, front: true) }

    private func enqueue(_ line: Line, front: Bool) {
        let waiter: CheckedContinuation<Line?, Never>? = state.withLock { state in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter.continuation
            }
            if front { state.lines.insert(line, at: 0) } else { state.lines.append(line) }
            return nil
        }
        waiter?.resume(returning: line)
    }

    /// The next line; nil when the queue is finished and empty, or when the calling task is cancelled.
    func next() async -> Line? {
        let id = state.withLock { state in
            defer { state.nextWaiterID += 1 }
            return state.nextWaiterID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready: Line?? = state.withLock { state in
                    if !state.lines.isEmpty { return .some(state.lines.removeFirst()) }
                    if state.finished || Task.isCancelled { return .some(nil) }
                    state.waiter = (id, continuation)
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Line?, Never>? in
                guard let waiter = state.waiter, waiter.id == id else { return nil }
                state.waiter = nil
                return waiter.continuation
            }
            waiter?.resume(returning: nil)
        }
    }
}
