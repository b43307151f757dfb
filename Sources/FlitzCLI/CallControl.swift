import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The Unix control socket of a home: the `flitz` process that owns the relay connection for calls (`listen`, or a
/// running `call`) serves it, and `flitz answer` / `flitz decline` / `flitz hangup` in another terminal ask that
/// process to act on its call (README, "Calls").
///
/// Protocol: the client connects to `HOME/call.sock`, writes one request as a JSON object on one line (at most
/// `CallControl.maximumLineBytes`), and reads one reply line; then both close. The socket file is mode 0600 inside
/// the home, and the server also checks the peer's user id (`SO_PEERCRED`): only the home's owner controls its calls.
enum CallControl {
    /// The socket file's name inside the home.
    static let socketName = "call.sock"
    /// Longest request or reply line, bytes (a request carries at most two file paths).
    static let maximumLineBytes = 65_536
    /// How long the server waits for a connected client's request line, and the client for the reply (seconds).
    static let readTimeoutSeconds = 10

    /// `HOME/call.sock`.
    static func socketPath(home: URL) -> String { home.appendingPathComponent(socketName).path }

    /// What `answer`, `decline` or `hangup` asks of the process owning the call.
    struct Request: Codable, Sendable, Equatable {
        enum Command: String, Codable, Sendable { case answer, decline, hangup }
        var command: Command
        /// Which call: a call id (32 hex digits, or a unique prefix of at least 4) or the peer's handle; nil when
        /// exactly one call qualifies.
        var call: String?
        /// `answer` only: absolute paths of the WAV to play and the WAV to record, and relay-only mode.
        var play: String?
        var record: String?
        var relayOnly: Bool?
    }

    /// The owning process's answer: `ok`, a line for the user, and, when not ok, the exit status `flitz` ends with.
    struct Reply: Codable, Sendable, Equatable {
        var ok: Bool
        var message: String
        var exitCode: Int32?

        static func success(_ message: String) -> Reply { Reply(ok: true, message: message, exitCode: nil) }
        static func failure(_ message: String, exitCode: Int32 = 1) -> Reply { Reply(ok: false, message: message, exitCode: exitCode) }
    }

    /// Errors of the control socket; `message` names the path but nothing of a call.
    struct Failure: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }

    // MARK: client

    /// Sends `request` to the process serving `path` and returns its reply; nil when no process serves it (no
    /// socket file, or a stale one nobody listens on).
    /// - Throws: `Failure` when the socket exists and is served but the exchange fails (timeout, bad reply).
    static func send(_ request: Request, to path: String) throws(Failure) -> Reply? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(message: "cannot create a Unix socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = try unixAddress(path)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if connected != 0 {
            if errno == ENOENT || errno == ECONNREFUSED { return nil }
            throw Failure(message: "cannot connect to \(path): \(String(cString: strerror(errno)))")
        }
        setTimeout(fd, seconds: readTimeoutSeconds)
        let line: Data
        do { line = try JSONEncoder().encode(request) + Data([0x0a]) } catch { throw Failure(message: "cannot encode the request") }
        guard writeAll(fd, line) else { throw Failure(message: "the process serving \(path) closed the connection") }
        guard let reply = readLine(fd), let decoded = try? JSONDecoder().decode(Reply.self, from: reply) else {
            throw Failure(message: "no reply from the process serving \(path) within \(readTimeoutSeconds) s")
        }
        return decoded
    }

    /// True when a live process serves `path` (a connection is accepted); false for no file or a stale one. Sends
    /// nothing: the server sees an empty connection and closes it.
    static func isServed(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0, var address = try? unixAddress(path) else { return false }
        defer { close(fd) }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        } == 0
    }

    // MARK: server

    /// A request read from a client, to be answered exactly once with `reply(_:)` (later calls are ignored).
    final class Pending: @unchecked Sendable {
        let request: Request
        private let lock = NSLock()
        private var fd: Int32

        fileprivate init(request: Request, fd: Int32) {
            self.request = request
            self.fd = fd
        }

        /// Writes the reply line and closes the connection.
        func reply(_ reply: Reply) {
            lock.withLock {
                guard fd >= 0 else { return }
                if let data = try? JSONEncoder().encode(reply) { _ = CallControl.writeAll(fd, data + Data([0x0a])) }
                close(fd)
                fd = -1
            }
        }

        deinit { if fd >= 0 { close(fd) } }
    }

    /// The serving side: binds `HOME/call.sock` (replacing a file left there: the newest process owning the
    /// relay connection owns the socket), accepts on its own thread and yields each well-formed request on
    /// `requests`. A malformed request is answered with an error at once. `stop()` closes the socket and removes
    /// the file if it is still this server's.
    final class Server: @unchecked Sendable {
        let path: String
        /// Requests in arrival order; finishes after `stop()`.
        let requests: AsyncStream<Pending>
        private let continuation: AsyncStream<Pending>.Continuation
        private let lock = NSLock()
        private var listener: Int32
        private let inode: ino_t

        /// - Throws: `Failure` when the path is too long for a Unix socket (107 bytes) or cannot be bound.
        init(path: String) throws(Failure) {
            self.path = path
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw Failure(message: "cannot create a Unix socket: \(String(cString: strerror(errno)))") }
            var address: sockaddr_un
            do { address = try unixAddress(path) } catch {
                close(fd)
                throw error
            }
            unlink(path)
            // Created 0600 from the start (umask), not chmod-ed after: no moment where others could connect.
            let previousMask = umask(0o177)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            umask(previousMask)
            guard bound == 0, listen(fd, 8) == 0 else {
                let reason = String(cString: strerror(errno))
                close(fd)
                throw Failure(message: "cannot listen on \(path): \(reason)")
            }
            var info = stat()
            stat(path, &info)
            inode = info.st_ino
            listener = fd
            (requests, continuation) = AsyncStream.makeStream(of: Pending.self)
            let thread = Thread { [self] in acceptLoop(fd) }
            thread.name = "flitz call control"
            thread.start()
        }

        private func acceptLoop(_ fd: Int32) {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 {
                    if errno == EINTR { continue }
                    break  // closed by stop()
                }
                guard Self.peerIsOwner(client) else {
                    close(client)
                    continue
                }
                CallControl.setTimeout(client, seconds: CallControl.readTimeoutSeconds)
                guard let line = CallControl.readLine(client) else {
                    close(client)
                    continue
                }
                guard let request = try? JSONDecoder().decode(Request.self, from: line) else {
                    Pending(request: Request(command: .hangup), fd: client)
                        .reply(.failure("malformed request on the call control socket", exitCode: 64))
                    continue
                }
                continuation.yield(Pending(request: request, fd: client))
            }
            continuation.finish()
        }

        /// Only the user running this process may control its calls.
        private static func peerIsOwner(_ fd: Int32) -> Bool {
            // `struct ucred` (pid, uid, gid) of <sys/socket.h>; Swift's Glibc module hides it behind _GNU_SOURCE.
            var credentials = (pid: pid_t(0), uid: uid_t(0), gid: gid_t(0))
            var length = socklen_t(MemoryLayout.size(ofValue: credentials))
            guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0, length == 12 else { return false }
            return credentials.uid == getuid()
        }

        /// Closes the socket; removes the file unless another process has bound a new one there since.
        func stop() {
            lock.withLock {
                guard listener >= 0 else { return }
                var info = stat()
                if stat(path, &info) == 0, info.st_ino == inode { unlink(path) }
                shutdown(listener, Int32(SHUT_RDWR))
                close(listener)
                listener = -1
            }
        }

        deinit { stop() }
    }

    // MARK: plumbing

    private static func unixAddress(_ path: String) throws(Failure) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else {
            throw Failure(message: "the home's path is too long for its call control socket (\(path) is \(bytes.count) bytes, at most \(capacity - 1))")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        return address
    }

    fileprivate static func setTimeout(_ fd: Int32, seconds: Int) {
        var value = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    fileprivate static func writeAll(_ fd: Int32, _ data: Data) -> Bool {
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if written < 0, errno == EINTR { continue }
                guard written > 0 else { return false }
                offset += written
            }
            return true
        }
    }

    /// One line without its newline; nil on end of file, timeout, error or a line over `maximumLineBytes`.
    fileprivate static func readLine(_ fd: Int32) -> Data? {
        var line = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while line.count <= maximumLineBytes {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { return nil }
            if let newline = buffer[0..<count].firstIndex(of: 0x0a) {
                line.append(contentsOf: buffer[0..<newline])
                return line.count <= maximumLineBytes ? line : nil
            }
            line.append(contentsOf: buffer[0..<count])
        }
        return nil
    }
}
