import FlitzCrypto
import FlitzProtocol
import Foundation

/// `fingerprint.json`: safety numbers and their scannable form (`protocol/crypto.md` §12).
///
/// Group `safetyNumber`: `keyA`, `keyB` (32-byte account identity keys), `digest`, `safetyNumber`, `scannable`.
enum FingerprintTopic {
    static let topic = VectorTopic(name: "fingerprint", verify: verify)

    static func verify(_ vector: VectorCase) throws -> VectorOutcome {
        let test = vector.test
        guard try vector.groupType() == "safetyNumber" else { throw VectorCheckFailure.unknownGroup(try vector.groupType(), in: "fingerprint") }
        let a = try test.hex("keyA"), b = try test.hex("keyB")
        let digest = try test.hex("digest"), number = try test.string("safetyNumber"), scannable = try test.string("scannable")
        try require(a.count == 32 && b.count == 32, "keys must be 32 bytes")
        // Independently of SafetyNumber: the formula of crypto.md §12.
        let (low, high) = a.lexicographicallyPrecedes(b) ? (a, b) : (b, a)
        try check(SHA256.hash(Data("FlitzSafetyNumber-v1".utf8) + low + high), digest, "digest")
        let groups = (0..<6).map { i in
            let value = digest[digest.startIndex + 5 * i..<digest.startIndex + 5 * i + 5].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let digits = String(value % 100_000)
            return String(repeating: "0", count: 5 - digits.count) + digits
        }
        try check(groups.joined(separator: " "), number, "safety number from the digest")
        try check("FLITZSN1:" + digest.map { String(format: "%02X", $0) }.joined(), scannable, "scannable form from the digest")
        // Through the API, in both orders.
        try check(SafetyNumber.digest(a, b), digest, "SafetyNumber.digest")
        try check(SafetyNumber.compute(a, b), number, "SafetyNumber.compute(keyA, keyB)")
        try check(SafetyNumber.compute(b, a), number, "SafetyNumber.compute(keyB, keyA)")
        try check(SafetyNumber.scannable(a, b), scannable, "SafetyNumber.scannable(keyA, keyB)")
        try check(SafetyNumber.scannable(b, a), scannable, "SafetyNumber.scannable(keyB, keyA)")
        return .valid
    }
}
