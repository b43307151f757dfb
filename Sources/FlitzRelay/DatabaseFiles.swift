#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import FlitzStore
import Foundation
import Logging

/// Keeps the relay's database readable by the relay's user only (`protocol/relay.md`, "Storage"): the
/// database holds handles, public keys and ciphertext, which other local users have no business reading.
enum DatabaseFiles {
    /// The files SQLite and the relay keep beside the database.
    static let suffixes = ["", "-wal", "-shm", ".lock"]

    /// Creates a missing directory (0700, with its missing parents) and a missing database file (0600), before
    /// SQLite opens it: SQLite then creates `-wal` and `-shm` with the database file's permissions.
    /// - Throws: `StoreError(.backend)` when the directory or file cannot be created.
    static func prepare(_ path: String) throws {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent()
        if !FileManager.default.fileExists(atPath: directory.path) {
            do {
                try FileManager.default.createDirectory(
                    at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw StoreError(.backend, "cannot create the database directory \(directory.path): \(error.localizedDescription)")
            }
        }
        let descriptor = open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw StoreError(.backend, "cannot create the database file \(path): \(String(cString: strerror(errno)))")
        }
        close(descriptor)
    }

    /// Sets 0600 on the database and its companion files that exist (files from an older relay, or copied in,
    /// may be wider); a file that cannot be changed is logged, not fatal.
    static func restrict(_ path: String, logger: Logger) {
        for suffix in suffixes {
            let file = path + suffix
            var status = stat()
            guard stat(file, &status) == 0, status.st_mode & 0o077 != 0 else { continue }
            if chmod(file, 0o600) != 0 {
                logger.warning("cannot make the database file readable by this user only", metadata: ["file": "\(file)"])
            }
        }
    }
}
