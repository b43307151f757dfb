import CFlitzSodium
import Foundation

/// libsodium initialisation. `sodium_init` is thread-safe and idempotent; every entry point of this
/// module calls `Sodium.ensureInitialized()` through `Sodium.ready` so callers never have to.
enum Sodium {
    /// Runs `sodium_init` once per process.
    static let ready: Bool = sodium_init() >= 0

    static func ensureInitialized() {
        precondition(ready, "libsodium failed to initialise")
    }
}

/// Constant-time comparisons (libsodium `sodium_memcmp`).
public enum ConstantTime {
    /// Whether `a` and `b` are equal, in time independent of their contents (lengths may leak).
    public static func equals(_ a: Data, _ b: Data) -> Bool {
        guard a.count == b.count else { return false }
        if a.isEmpty { return true }
        return a.withUnsafeBytes { pa in
            b.withUnsafeBytes { pb in sodium_memcmp(pa.baseAddress!, pb.baseAddress!, a.count) == 0 }
        }
    }
}

extension Data {
    /// Lowercase hexadecimal, two characters per byte.
    public var hexString: String {
        map { String(format: "%02x", $0) }.joined()
    }

    /// Parses lowercase or uppercase hexadecimal; nil if the string has odd length or a non-hex character.
    public init?(hexString: String) {
        let chars = Array(hexString.utf8)
        guard chars.count % 2 == 0 else { return nil }
        var out = Data(capacity: chars.count / 2)
        var i = 0
        while i < chars.count {
            guard let hi = Self.nibble(chars[i]), let lo = Self.nibble(chars[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        self = out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
