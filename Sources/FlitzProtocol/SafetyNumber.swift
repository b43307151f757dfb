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

    /// Prefix of the scannable form.
    public static let scannablePrefix = "FLITZSN1:"

    /// The 32-byte digest both forms are made from: SHA-256(label ‖ lower key ‖ higher key).
    public static func digest(_ a: Data, _ b: Data) -> Data {
        let (low, high) = a.lexicographicallyPrecedes(b) ? (a, b) : (b, a)
        return SHA256.hash(label + low + high)
    }

    /// The scannable (QR-friendly) form of two 32-byte account identity keys, in either order:
    /// `"FLITZSN1:"` ‖ the 64 uppercase hex digits of the whole digest, 73 characters, all in QR
    /// alphanumeric mode. It carries all 256 bits, where the digits carry about 100.
    public static func scannable(_ a: Data, _ b: Data) -> String {
        scannablePrefix + digest(a, b).map { String(format: "%02X", $0) }.joined()
    }

    /// The safety number of two 32-byte account identity keys, in either order.
    public static func compute(_ a: Data, _ b: Data) -> String {
        let digest = digest(a, b)
        return (0..<6).map { group in
            let value = digest[(group * 5)..<(group * 5 + 5)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let digits = String(value % 100_000)
            return String(repeating: "0", count: 5 - digits.count) + digits
        }.joined(separator: " ")
    }
}
