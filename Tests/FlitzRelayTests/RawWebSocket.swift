import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A bare RFC 6455 client over a POSIX socket, for tests that need a peer misbehaving below the
/// WebSocket library: one that stops reading (its TCP receive window fills) or never answers pings.
/// Blocking socket calls run on a Dispatch queue, never on the Swift concurrency pool the relay uses.
final class RawWebSocket: @unchecked Sendable {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// One received WebSocket frame (unfragmented: the relay sends whole messages).
    struct Frame: Sendable {
        let opcode: UInt8
        let payload: [UInt8]

        static let binary: UInt8 = 0x2, close: UInt8 = 0x8, ping: UInt8 = 0x9, pong: UInt8 = 0xA

        /// The close code of a close frame.
        var closeCode: UInt16? {
            guard opcode == Self.close, payload.count >= 2 else { return nil }
            return UInt16(payload[0]) << 8 | UInt16(payload[1])
        }

        var closeReason: String { String(decoding: payload.dropFirst(2), as: UTF8.self) }
    }

    private let fd: Int32
    // Touched only from one blocking call at a time (the queue is serial).
    private var received: [UInt8] = []
    private let queue = DispatchQueue(label: "raw-websocket")

    /// Connects to `127.0.0.1:port` and upgrades at `/v1/ws`. `receiveBufferBytes` shrinks the socket's
    /// receive buffer (set before connecting, so the advertised window is small too).
    init(port: Int, receiveBufferBytes: Int? = nil) async throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket failed") }
        if let size = receiveBufferBytes {
            var value = Int32(size)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &value, socklen_t(MemoryLayout<Int32>.size))
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw Failure(description: "connect failed")
        }
        let request = "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        try await writeAll(Array(request.utf8))
        let head = try await onQueue { () throws -> String in
            let end: [UInt8] = Array("\r\n\r\n".utf8)
            while true {
                if let range = self.firstRange(of: end) {
                    let head = String(decoding: self.received[..<range], as: UTF8.self)
                    self.received.removeFirst(range + end.count)
                    return head
                }
                guard try self.receiveSome(timeoutMs: 10_000) else { throw Failure(description: "closed during the handshake") }
            }
        }
        guard head.hasPrefix("HTTP/1.1 101") else { throw Failure(description: "upgrade refused: \(head)") }
    }

    deinit { close(fd) }

    /// Sends a masked binary message.
    func sendBinary(_ bytes: Data) async throws { try await sendFrame(opcode: Frame.binary, payload: Array(bytes)) }

    /// Sends a masked frame.
    func sendFrame(opcode: UInt8, payload: [UInt8]) async throws {
        var frame: [UInt8] = [0x80 | opcode]
        switch payload.count {
        case ..<126: frame.append(0x80 | UInt8(payload.count))
        case ..<65_536: frame += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        default:
            frame.append(0x80 | 127)
            frame += (0..<8).reversed().map { UInt8((UInt64(payload.count) >> (8 * UInt64($0))) & 0xFF) }
        }
        let mask: [UInt8] = (0..<4).map { _ in UInt8.random(in: 0...255) }
        frame += mask
        frame += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        try await writeAll(frame)
    }

    /// The next frame, or nil when the relay closed the TCP connection (or reset it).
    /// - Throws: `Failure` when nothing arrives within `timeoutMs` (a failing test never hangs).
    func readFrame(timeoutMs: Int32 = 10_000) async throws -> Frame? {
        try await onQueue { () throws -> Frame? in
            while true {
                if let frame = self.parseFrame() { return frame }
                guard try self.receiveSome(timeoutMs: timeoutMs) else { return nil }
            }
        }
    }

    // MARK: blocking parts, on `queue`

    private func onQueue<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try body() }) }
        }
    }

    private func writeAll(_ bytes: [UInt8]) async throws {
        try await onQueue {
            var offset = 0
            while offset < bytes.count {
                let written = bytes[offset...].withUnsafeBytes { send(self.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                guard written > 0 else { throw Failure(description: "send failed") }
                offset += written
            }
        }
    }

    /// Reads what is available; false on end of stream or reset.
    private func receiveSome(timeoutMs: Int32) throws -> Bool {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&poller, 1, timeoutMs)
        guard ready > 0 else { throw Failure(description: "nothing received within \(timeoutMs) ms") }
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return false }
        received += chunk[0..<count]
        return true
    }

    private func firstRange(of needle: [UInt8]) -> Int? {
        guard received.count >= needle.count else { return nil }
        for start in 0...(received.count - needle.count) where Array(received[start..<start + needle.count]) == needle {
            return start
        }
        return nil
    }

    private func parseFrame() -> Frame? {
        guard received.count >= 2 else { return nil }
        let opcode = received[0] & 0x0F
        var length = Int(received[1] & 0x7F)
        var offset = 2
        if length == 126 {
            guard received.count >= 4 else { return nil }
            length = Int(received[2]) << 8 | Int(received[3])
            offset = 4
        } else if length == 127 {
            guard received.count >= 10 else { return nil }
            length = (2..<10).reduce(0) { $0 << 8 | Int(received[$1]) }
            offset = 10
        }
        guard received.count >= offset + length else { return nil }
        let payload = Array(received[offset..<offset + length])
        received.removeFirst(offset + length)
        return Frame(opcode: opcode, payload: payload)
    }
}

/// A gate a test opens when it decides: `wait()` returns once `open()` was called (at once after), and
/// throws `CancellationError` if its task is cancelled first. Used as the relay's stall timer.
final class TestGate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [UInt64: CheckedContinuation<Void, any Error>], next: UInt64)>((false, [:], 0))

    func open() {
        let waiters = state.withLock { state in
            state.open = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    func wait() async throws {
        let id = state.withLock { state in
            defer { state.next += 1 }
            return state.next
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let resumeNow: Result<Void, any Error>? = state.withLock { state in
                    if state.open { return .success(()) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    state.waiters[id] = continuation
                    return nil
                }
                if let resumeNow { continuation.resume(with: resumeNow) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume(throwing: CancellationError())
        }
    }
}

/// Runs `body`, failing with `TestTimeout` if it takes longer than `limit` (a guard against hanging, not
/// a measurement).
func within<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let value = first else { throw TestTimeout() }
        return value
    }
}
