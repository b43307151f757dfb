import FlitzWire
import HummingbirdWebSocket
import NIOCore
import NIOWebSocket
import Synchronization

/// Writes one connection's frames with a bound on what a peer that stops reading can cost the relay
/// (`protocol/relay.md`, "Slow readers").
///
/// The socket's outbound buffer has NIO's high water mark at `relay.outboundBufferBytes`: above it, the
/// channel is not writable and a write waits until the peer has read it down to half the mark. A write that
/// is still waiting after `relay.writeTimeout` closes the socket at once (no close handshake: it could not be
/// written either) and throws `Stalled`.
///
/// `WebSocketOutboundWriter.write` returns once the frame is handed to the event loop, before the loop has
/// added it to the buffer, so the channel's writability read after a write can predate it. The writer
/// therefore keeps a credit: the bytes it may still hand over before it looks again. It looks on the event
/// loop, which runs tasks in order, so every earlier write is in the buffer by then; the credit is the mark
/// minus the bytes buffered. A frame is written without waiting while the credit is not negative, and
/// spends its size (payload plus `maxHeaderBytes`). Hence the buffer holds at most the mark plus one frame
/// of ours (`maxBufferedBeyondMark`), plus control frames the WebSocket layer writes by itself (ping,
/// pong, close: `maxControlFrameBytes` each); it does so for at most the timeout. Looking costs one event
/// loop hop per `relay.outboundBufferBytes` written or per frame larger than that; no task or timer is
/// started unless the channel is not writable. The writes themselves never race: a connection writes from
/// its one handling task.
struct ConnectionWriter: Sendable {
    /// The peer did not read for `relay.writeTimeout`; the socket is closed.
    struct Stalled: Error, CustomStringConvertible {
        /// Bytes waiting in the socket's outbound buffer when it was closed (-1 if unknown).
        let bufferedBytes: Int
        var description: String { "slow reader: a write waited for the write timeout (\(bufferedBytes) bytes buffered)" }
    }

    /// Largest WebSocket frame header the relay sends: 2 bytes and a 64-bit length, unmasked (RFC 6455
    /// section 5.2; a server does not mask).
    static let maxHeaderBytes = 10
    /// Largest WebSocket control frame (ping, pong, close): a 2-byte header and at most 125 payload bytes
    /// (RFC 6455 section 5.5).
    static let maxControlFrameBytes = 127
    /// Most bytes of the relay's own frames a connection's outbound buffer holds above the high water mark:
    /// one frame of `WireConstants.maxFrameBytes` and its header, 1 048 586 bytes.
    static let maxBufferedBeyondMark = WireConstants.maxFrameBytes + maxHeaderBytes

    /// Bytes the writer may still hand to the WebSocket layer before it looks at the socket's buffer again;
    /// negative: look before the next write. Only the connection's handling task uses it.
    private final class Credit: Sendable {
        let bytes = Atomic<Int>(-1)
    }

    let outbound: WebSocketOutboundWriter
    let channel: any Channel
    /// `relay.writeTimeout`.
    let timeout: Duration
    let registry: ConnectionRegistry
    /// Counts what each sent frame says (errors by code, envelopes accepted and delivered).
    let metrics: RelayMetrics
    private let credit = Credit()

    init(outbound: WebSocketOutboundWriter, channel: any Channel, timeout: Duration, registry: ConnectionRegistry, metrics: RelayMetrics) {
        self.outbound = outbound
        self.channel = channel
        self.timeout = timeout
        self.registry = registry
        self.metrics = metrics
    }

    /// Bounds the socket's outbound buffer to `highWaterMark` bytes (writes wait above it, resume below half),
    /// and takes the first credit in the same event loop hop, so the first frame goes out without another.
    func limitBuffer(highWaterMark: Int) async {
        let high = max(2, highWaterMark)
        let channel = self.channel
        let headroom = try? await channel.eventLoop.flatSubmit {
            channel.setOption(ChannelOptions.writeBufferWaterMark, value: .init(low: high / 2, high: high))
                .map { Self.headroomOnLoop(channel) }
        }.get()
        credit.bytes.store(headroom ?? -1, ordering: .relaxed)
    }

    /// Sends one frame as a binary message.
    /// - Throws: `Stalled`, or the WebSocket layer's error when the connection is gone.
    func send(_ frame: WireFrame) async throws {
        metrics.sent(frame)
        let buffer = ByteBuffer(bytes: FrameCodec.encode(frame))
        let outbound = self.outbound
        try await perform(bytes: buffer.readableBytes + Self.maxHeaderBytes) { try await outbound.write(.binary(buffer)) }
    }

    /// Sends `frame` only if it fits below the high-water mark now, never waiting (online-only envelopes,
    /// `conversations.md` 6: best-effort, they must never make a connection a slow reader). Returns whether it was sent.
    /// - Throws: the WebSocket layer's error when the connection is gone.
    func sendIfRoom(_ frame: WireFrame) async throws -> Bool {
        let buffer = ByteBuffer(bytes: FrameCodec.encode(frame))
        let bytes = buffer.readableBytes + Self.maxHeaderBytes
        var available = credit.bytes.load(ordering: .relaxed)
        if available < bytes { available = await headroom() }
        guard available >= bytes else { return false }
        metrics.sent(frame)
        credit.bytes.store(available - bytes, ordering: .relaxed)
        try await outbound.write(.binary(buffer))
        return true
    }

    /// Sends a WebSocket close frame (subject to the same timeout).
    func close(_ code: WebSocketErrorCode, reason: String?) async throws {
        let outbound = self.outbound
        try await perform(bytes: 2 + (reason?.utf8.count ?? 0) + Self.maxHeaderBytes) {
            try await outbound.close(code, reason: reason)
        }
    }

    /// Sends a WebSocket close frame; a connection already gone is not an error here, a stalled one is
    /// (it throws `Stalled`, so the caller counts it).
    func closeQuietly(_ code: WebSocketErrorCode, reason: String?) async throws {
        do {
            try await close(code, reason: reason)
        } catch let stalled as Stalled {
            throw stalled
        } catch {}
    }

    private enum Outcome: Sendable {
        case written
        case failed(any Error)
        case timedOut
        case timerCancelled
    }

    /// The high water mark minus the bytes in the socket's outbound buffer, read on the event loop after
    /// every earlier write has reached the buffer; -1 when the channel is not writable (or is gone).
    private func headroom() async -> Int {
        let channel = self.channel
        let headroom = try? await channel.eventLoop.submit { Self.headroomOnLoop(channel) }.get()
        return headroom ?? -1
    }

    /// `headroom()`, on the channel's event loop.
    private static func headroomOnLoop(_ channel: any Channel) -> Int {
        guard channel.isWritable else { return -1 }
        // Writable means at most the mark is buffered. A channel without synchronous options gets no
        // headroom: one frame, then look again.
        guard let options = channel.syncOptions,
            let mark = try? options.getOption(ChannelOptions.writeBufferWaterMark),
            let buffered = try? options.getOption(ChannelOptions.bufferedWritableBytes)
        else { return 0 }
        return max(0, mark.high - buffered)
    }

    /// Writes `bytes` bytes (at most, header included) through `write`.
    private func perform(bytes: Int, _ write: @escaping @Sendable () async throws -> Void) async throws {
        // Fast path: the bytes handed over since the last look fit below the mark, so this frame leaves the
        // buffer at most one frame above it and the WebSocket layer does not make it wait.
        var available = credit.bytes.load(ordering: .relaxed)
        if available < 0 { available = await headroom() }
        if available >= 0 {
            credit.bytes.store(available - bytes, ordering: .relaxed)
            try await write()
            return
        }
        credit.bytes.store(-1, ordering: .relaxed)
        let monitor = registry.monitor
        monitor.record { $0.writesWaiting += 1 }
        defer { monitor.record { $0.writesWaiting -= 1 } }
        let timer = registry.stallTimer
        let timeout = self.timeout
        let channel = self.channel
        let (outcome, buffered) = await withTaskGroup(of: Outcome.self) { group -> (Outcome, Int) in
            group.addTask {
                do {
                    try await write()
                    return .written
                } catch {
                    return .failed(error)
                }
            }
            group.addTask {
                do {
                    try await timer(timeout)
                    return .timedOut
                } catch {
                    return .timerCancelled
                }
            }
            let first = await group.next() ?? .timerCancelled
            var buffered = -1
            if case .timedOut = first {
                buffered = (try? await channel.getOption(ChannelOptions.bufferedWritableBytes).get()) ?? -1
                // Closing the socket fails the blocked write, which ends the other child.
                channel.close(promise: nil)
            }
            group.cancelAll()
            await group.waitForAll()
            return (first, buffered)
        }
        switch outcome {
        case .written: return
        case .failed(let error): throw error
        case .timedOut: throw Stalled(bufferedBytes: buffered)
        case .timerCancelled: throw CancellationError()
        }
    }
}
