import CFlitzSodium
import Foundation

/// Secret key material: bytes in memory this object owns alone, zeroed with `sodium_memzero` when the
/// last reference goes away. Prints as `SecretBytes(<redacted N bytes>)`, never its contents.
public final class SecretBytes: @unchecked Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    // Immutable after init, so sharing across threads is safe.
    private let pointer: UnsafeMutableRawBufferPointer

    /// Copies `bytes` into fresh storage. The caller should not keep its own copy longer than needed.
    public init(_ bytes: some DataProtocol) {
        pointer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
        count = bytes.count
        pointer.copyBytes(from: bytes)
    }

    /// Allocates `count` bytes and lets `fill` write them (for libsodium outputs).
    public init(count: Int, fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        pointer = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 16)
        self.count = count
        do {
            try fill(UnsafeMutableRawBufferPointer(rebasing: pointer[0..<count]))
        } catch {
            sodium_memzero(pointer.baseAddress!, pointer.count)
            pointer.deallocate()
            throw error
        }
    }

    /// Number of secret bytes.
    public let count: Int

    deinit {
        sodium_memzero(pointer.baseAddress!, pointer.count)
        pointer.deallocate()
    }

    /// Gives temporary read access to the bytes.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(rebasing: pointer[0..<count]))
    }

    /// A copy as `Data`, for serialising state to storage or vectors. Handle with care.
    public var unsafeData: Data { withUnsafeBytes { Data($0) } }

    /// The bytes `range` as new secret storage.
    public func slice(_ range: Range<Int>) -> SecretBytes {
        withUnsafeBytes { SecretBytes($0[range]) }
    }

    /// Constant-time equality of contents.
    public func constantTimeEquals(_ other: SecretBytes) -> Bool {
        guard count == other.count else { return false }
        return withUnsafeBytes { a in other.withUnsafeBytes { b in sodium_memcmp(a.baseAddress!, b.baseAddress!, count) == 0 } }
    }

    public var description: String { "SecretBytes(<redacted \(count) bytes>)" }
    public var debugDescription: String { description }
}
