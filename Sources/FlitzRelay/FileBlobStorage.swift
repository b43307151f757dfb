import FlitzStore
import Foundation
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The reference `BlobByteStore` (`protocol/attachments.md` 4.5): one file per blob in `--blob-dir` (`blob.dir`),
/// named by the blob id in lowercase hex. The directory is created 0700, files 0600. Every system call runs on
/// NIO's blocking-I/O thread pool, never on the cooperative pool. Writes never create a file (only `create` does),
/// so a PATCH still writing when its blob is deleted cannot bring the file back.
public final class FileBlobStorage: BlobByteStore {
    /// The directory holding the files.
    public let directory: String
    private let pool: NIOThreadPool

    /// Opens (creating with mode 0700 if needed) `directory`; an existing directory is narrowed to 0700.
    /// - Throws: `BlobStorageError` when the directory cannot be created.
    public init(directory: String, pool: NIOThreadPool = .singleton) throws {
        self.directory = directory
        self.pool = pool
        var isDirectory: ObjCBool = false
        if !FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
            do {
                try FileManager.default.createDirectory(
                    atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw BlobStorageError("cannot create the blob directory \(directory) (blob.dir)")
            }
        } else if !isDirectory.boolValue {
            throw BlobStorageError("the blob directory \(directory) (blob.dir) is not a directory")
        }
        chmod(directory, 0o700)
    }

    /// The file of blob `id`.
    public func path(_ id: Data) -> String { directory + "/" + id.map { String(format: "%02x", $0) }.joined() }

    private func io<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }

    static func failure(_ operation: String) -> BlobStorageError {
        BlobStorageError("blob \(operation) failed: \(String(cString: strerror(errno)))")
    }

    /// Implements `BlobByteStore.create`: a new empty file, mode 0600.
    public func create(_ id: Data) async throws {
        let path = path(id)
        try await io {
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw Self.failure("create") }
            close(fd)
        }
    }

    /// Implements `BlobByteStore.openWriter`.
    public func openWriter(_ id: Data, at offset: Int64) async throws -> any BlobWriter {
        let path = path(id)
        let fd = try await io { () throws -> Int32 in
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { throw Self.failure("open") }
            guard lseek(fd, off_t(offset), SEEK_SET) == off_t(offset) else {
                close(fd)
                throw Self.failure("seek")
            }
            return fd
        }
        return FileBlobWriter(fd: fd, pool: pool)
    }

    /// Implements `BlobByteStore.truncate`, then syncs the file.
    public func truncate(_ id: Data, to length: Int64) async throws {
        let path = path(id)
        try await io {
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { throw Self.failure("open") }
            defer { close(fd) }
            guard ftruncate(fd, off_t(length)) == 0 else { throw Self.failure("truncate") }
            guard fsync(fd) == 0 else { throw Self.failure("fsync") }
        }
    }

    /// Implements `BlobByteStore.length`.
    public func length(_ id: Data) async throws -> Int64? {
        let path = path(id)
        return try await io { () throws -> Int64? in
            var info = stat()
            guard stat(path, &info) == 0 else {
                if errno == ENOENT { return nil }
                throw Self.failure("stat")
            }
            return Int64(info.st_size)
        }
    }

    /// Implements `BlobByteStore.read`.
    public func read(_ id: Data, at offset: Int64, count: Int) async throws -> [UInt8] {
        let path = path(id)
        return try await io {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw Self.failure("open") }
            defer { close(fd) }
            var bytes = [UInt8](repeating: 0, count: count)
            var filled = 0
            while filled < count {
                let n = bytes.withUnsafeMutableBytes { buffer in
                    pread(fd, buffer.baseAddress! + filled, count - filled, off_t(offset) + off_t(filled))
                }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw Self.failure("read")
                }
                if n == 0 { break }
                filled += n
            }
            bytes.removeLast(count - filled)
            return bytes
        }
    }

    /// Implements `BlobByteStore.ids(modifiedBefore:)`: files named as a blob id (32 lowercase hex characters) whose
    /// mtime is before `cutoff`; other files in the directory are not the relay's and are left alone.
    public func ids(modifiedBefore cutoff: Date) async throws -> [Data] {
        let directory = directory
        return try await io { () throws -> [Data] in
            let names: [String]
            do {
                names = try FileManager.default.contentsOfDirectory(atPath: directory)
            } catch {
                throw BlobStorageError("cannot list the blob directory (blob.dir)")
            }
            var ids: [Data] = []
            for name in names {
                guard let id = BlobRoutes.blobID(name) else { continue }
                var info = stat()
                guard stat(directory + "/" + name, &info) == 0 else { continue }  // deleted meanwhile
                if Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9 < cutoff.timeIntervalSince1970 { ids.append(id) }
            }
            return ids
        }
    }

    /// Implements `BlobByteStore.delete`.
    public func delete(_ id: Data) async throws {
        let path = path(id)
        try await io {
            guard unlink(path) == 0 || errno == ENOENT else { throw Self.failure("delete") }
        }
    }
}

/// A sequential writer on one open file descriptor.
final class FileBlobWriter: BlobWriter {
    private let fd: Mutex<Int32>
    private let pool: NIOThreadPool

    init(fd: Int32, pool: NIOThreadPool) {
        self.fd = Mutex(fd)
        self.pool = pool
    }

    private func descriptor() throws -> Int32 {
        let fd = fd.withLock { $0 }
        guard fd >= 0 else { throw BlobStorageError("blob writer is closed") }
        return fd
    }

    func write(_ bytes: [UInt8]) async throws {
        let fd = try descriptor()
        try await pool.runIfActive {
            var written = 0
            while written < bytes.count {
                let n = bytes.withUnsafeBytes { buffer in
                    Glibc.write(fd, buffer.baseAddress! + written, bytes.count - written)
                }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw FileBlobStorage.failure("write")
                }
                written += n
            }
        }
    }

    func sync() async throws {
        let fd = try descriptor()
        try await pool.runIfActive {
            guard fsync(fd) == 0 else { throw FileBlobStorage.failure("fsync") }
        }
    }

    func close() async throws {
        let fd = fd.withLock { fd in
            defer { fd = -1 }
            return fd
        }
        if fd >= 0 { _ = Glibc.close(fd) }
    }

    deinit {
        let fd = fd.withLock { $0 }
        if fd >= 0 { _ = Glibc.close(fd) }
    }
}
