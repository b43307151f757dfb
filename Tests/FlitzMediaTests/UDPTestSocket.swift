@testable import FlitzMedia
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A plain UDP socket bound to 127.0.0.1 on a free port, for tests that play a peer or a server by hand. Receiving
/// blocks a thread of its own (never a task's), with a receive timeout as the failure guard.
final class UDPTestSocket: @unchecked Sendable {
    private let fd: Int32
    let port: UInt16

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw MediaError(.socket, "socket() failed") }
        var address = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard bound == 0, named == 0 else {
            _ = Glibc.close(fd)
            throw MediaError(.socket, "bind() failed")
        }
        self.fd = fd
        port = UInt16(bigEndian: address.sin_port)
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    /// This socket's address as a host candidate.
    var candidate: MediaCandidate { MediaCandidate(kind: .host, address: "127.0.0.1", port: port, priority: 1) }

    func send(_ bytes: [UInt8], toPort port: UInt16) throws {
        var address = Self.loopback(port: port)
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, bytes, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard sent == bytes.count else { throw MediaError(.socket, "sendto failed") }
    }

    /// The next datagram and the port it came from; throws after 20 s without one.
    func receive() async throws -> (bytes: [UInt8], fromPort: UInt16) {
        let fd = fd
        return try await withCheckedThrowingContinuation { continuation in
            Thread {
                var buffer = [UInt8](repeating: 0, count: 2048)
                var address = sockaddr_in()
                var length = socklen_t(MemoryLayout<sockaddr_in>.size)
                let count = withUnsafeMutablePointer(to: &address) { pointer in
                    pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, &buffer, buffer.count, 0, $0, &length) }
                }
                if count < 0 {
                    continuation.resume(throwing: TimedOut(what: "a datagram on port \(self.port)"))
                } else {
                    continuation.resume(returning: (Array(buffer[0..<count]), UInt16(bigEndian: address.sin_port)))
                }
            }.start()
        }
    }

    func close() { _ = Glibc.close(fd) }
}
