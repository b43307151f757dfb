import FlitzCrypto
import Foundation

/// Safety numbers: a 30-digit fingerprint over two account identity keys that both people see the
/// same, to compare out of band (`protocol/crypto.md`, "Safety numbers").
///
/// digest = SHA-256("FlitzSafetyNumber-v1" ‖ lower key ‖ higher key) (keys raw 32-byte Ed25519, ordered
/// bytewise); digits = six groups, group i = big-endian u40 of digest[5i..<5i+5] mod 100000, zero-padded
/// to 5 digits, joined by spaces.
public enum SafetyNumber {
    /// ASCII label hashed first.
    public static let label = Data("FlitzSafetyNumber-v1".utf8)

    /// The safety number of two 32-byte account identity keys, in either order.
    public static func compute(_ a: Data, _ b: Data) -> String {
        let (low, high) = a.lexicographicallyPrecedes(b) ? (a, b) : (b, a)
        let digest = SHA256.hash(label + low + high)
        return (0..<6).map { group in
            let value = digest[(group * 5)..<(group * 5 + 5)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let digits = String(value % 100_000)
            return String(repeating: "0", count: 5 - digits.count) + digits
        }.joined(separator: " ")
    }
}
