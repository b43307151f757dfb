import FlitzWire
import HummingbirdWebSocket
import NIOCore
import NIOWebSocket

/// Writes one connection's frames with a bound on what a peer that stops reading can cost the relay
/// (`protocol/relay.md`, "Slow readers").
///
/// The socket's outbound buffer is bounded by `relay.outboundBufferBytes` (NIO's high water mark): above
/// it, a write waits until the peer has read enough. A write that is still waiting after
/// `relay.writeTimeout` closes the socket at once (no close handshake: it could not be written either) and
/// throws `Stalled`. So a connection holds at most the water mark plus one frame for at most the timeout.
/// The writes themselves never race: a connection writes from its one handling task.
struct ConnectionWriter: Sendable {
    /// The peer did not read for `relay.writeTimeout`; the socket is closed.
    struct Stalled: Error, CustomStringConvertible {
        /// Bytes waiting in the socket's outbound buffer when it was closed (-1 if unknown).
        let bufferedBytes: Int
        var description: String { "slow reader: a write waited for the write timeout (\(bufferedBytes) bytes buffered)" }
    }

    let outbound: WebSocketOutboundWriter
    let channel: any Channel
    /// `relay.writeTimeout`.
    let timeout: Duration
    let registry: ConnectionRegistry
    /// Counts what each sent frame says (errors by code, envelopes accepted and delivered).
    let metrics: RelayMetrics

    /// Bounds the socket's outbound buffer to `highWaterMark` bytes (writes wait above it, resume below half).
    func limitBuffer(highWaterMark: Int) async {
        let high = max(2, highWaterMark)
        try? await channel.setOption(ChannelOptions.writeBufferWaterMark, value: .init(low: high / 2, high: high)).get()
    }

    /// Sends one frame as a binary message.
    /// - Throws: `Stalled`, or the WebSocket layer's error when the connection is gone.
    func send(_ frame: WireFrame) async throws {
        metrics.sent(frame)
        let buffer = ByteBuffer(bytes: FrameCodec.encode(frame))
        let outbound = self.outbound
        try await perform { try await outbound.write(.binary(buffer)) }
    }

    /// Sends a WebSocket close frame (subject to the same timeout).
    func close(_ code: WebSocketErrorCode, reason: String?) async throws {
        let outbound = self.outbound
        try await perform { try await outbound.close(code, reason: reason) }
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

    private func perform(_ write: @escaping @Sendable () async throws -> Void) async throws {
        // Fast path: the buffer is below the water mark, so the write does not wait for the peer.
        if channel.isWritable {
            try await write()
            return
        }
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
