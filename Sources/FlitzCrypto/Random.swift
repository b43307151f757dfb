import CFlitzSodium
import Foundation
import Synchronization

/// A source of random bytes. Production code uses `SystemRandom`; tests and the vector generator
/// inject `SeededRandom` so that every key and nonce is reproducible.
public protocol RandomSource: Sendable {
    /// `count` random bytes.
    func bytes(_ count: Int) -> Data
}

/// Cryptographically secure randomness from the operating system (libsodium `randombytes_buf`).
public struct SystemRandom: RandomSource {
    /// Creates the system source; it has no state.
    public init() {}

    public func bytes(_ count: Int) -> Data {
        Sodium.ensureInitialized()
        var out = Data(count: count)
        if count > 0 {
            out.withUnsafeMutableBytes { randombytes_buf($0.baseAddress!, count) }
        }
        return out
    }
}

/// Deterministic bytes for tests and vectors only: call i (counting from 0) returns
/// `randombytes_buf_deterministic(count, seed: BLAKE2b-256(key: seed, message: "FlitzSeededRandom" ‖ u64be(i)))`.
/// Specified in `protocol/vectors.md` so other implementations can reproduce the vectors.
public final class SeededRandom: RandomSource {
    private let seed: Data
    private let counter = Mutex<UInt64>(0)

    /// A generator from a 32-byte seed.
    public init(seed: Data) {
        precondition(seed.count == 32, "SeededRandom needs a 32-byte seed")
        self.seed = seed
    }

    /// A generator seeded by BLAKE2b-256 of a human-readable label (as used in `vectors/`).
    public convenience init(label: String) {
        self.init(seed: BLAKE2b.hash(Data(label.utf8), outputLength: 32))
    }

    public func bytes(_ count: Int) -> Data {
        Sodium.ensureInitialized()
        let index = counter.withLock { value -> UInt64 in
            defer { value += 1 }
            return value
        }
        var message = Data("FlitzSeededRandom".utf8)
        withUnsafeBytes(of: index.bigEndian) { message.append(contentsOf: $0) }
        let callSeed = BLAKE2b.hash(message, outputLength: 32, key: seed)
        var out = Data(count: count)
        if count > 0 {
            out.withUnsafeMutableBytes { buf in
                callSeed.withUnsafeBytes { s in
                    randombytes_buf_deterministic(buf.baseAddress!, count, s.bindMemory(to: UInt8.self).baseAddress!)
                }
            }
        }
        return out
    }
}
