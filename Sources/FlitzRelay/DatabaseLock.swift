#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import FlitzStore
import Foundation

/// An exclusive `flock` on `<database>.lock`, held for the relay's lifetime. Two relays on one SQLite file
/// would each wake only their own connections, so a message accepted by one would wait for the other's
/// next sweep or reconnect; the second relay refuses to start instead (`protocol/relay.md`, "Storage").
final class DatabaseLock: Sendable {
    private let descriptor: Int32

    /// Takes the lock.
    /// - Throws: `StoreError(.backend)` when another process holds it or the lock file cannot be created.
    init(databasePath: String) throws {
        let path = databasePath + ".lock"
        let fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw StoreError(.backend, "cannot create the lock file \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw StoreError(.backend, "another flitz-relay is already using \(databasePath) (lock file \(path))")
        }
        descriptor = fd
    }

    deinit {
        flock(descriptor, LOCK_UN)
        close(descriptor)
    }
}
