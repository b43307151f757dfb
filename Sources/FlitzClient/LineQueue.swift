import Foundation

/// Lines typed in `chat`, waiting to be sent. Waiting can be cancelled (when the connection drops) without
/// ending the queue, and a line whose send failed goes back to the front (`WaitQueue`).
public final class LineQueue: Sendable {
    /// One line and the envelope prepared for it, kept so a resend after a reconnect is byte-identical.
    struct Line: Sendable {
        let text: String
        let prepared: PreparedBox
    }

    private let queue = WaitQueue<Line>()

    /// An empty queue.
    public init() {}

    /// Adds a line to send; blank lines are ignored.
    public func push(_ text: String) {
        guard !text.trimmingCharacters(in: .whitespaces).isEmpty else { return }
        queue.push(Line(text: text, prepared: PreparedBox()))
    }

    /// No more lines will come (end of input).
    public func finish() { queue.finish() }

    func pushFront(_ line: Line) { queue.push(line, front: true) }

    /// The next line; nil when the queue is finished and empty, or when the calling task is cancelled.
    func next() async -> Line? { await queue.next() }
}
