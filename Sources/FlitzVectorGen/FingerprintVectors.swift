import FlitzCrypto
import FlitzProtocol
import FlitzVectors
import Foundation

/// `vectors/fingerprint.json`: safety numbers and scannable forms of several key pairs.
enum FingerprintVectors {
    static let label = "flitz-vectors/fingerprint"

    static func make() throws -> VectorFileBuilder {
        let random = SeededRandom(label: label)
        func key() -> Data { AccountIdentity(random: random).publicKey.rawRepresentation }
        func test(_ comment: String, _ a: Data, _ b: Data, flags: [String] = []) -> VectorTest {
            VectorTest(
                comment, flags: flags,
                [
                    "keyA": .hex(a), "keyB": .hex(b), "digest": .hex(SafetyNumber.digest(a, b)),
                    "safetyNumber": .string(SafetyNumber.compute(a, b)), "scannable": .string(SafetyNumber.scannable(a, b)),
                ])
        }
        var tests: [VectorTest] = []
        for index in 0..<3 {
            let a = key(), b = key()
            tests.append(test("pair \(index + 1)", a, b))
        }
        let same = key()
        tests.append(test("both keys equal", same, same, flags: ["SameKey"]))
        var near = same
        near[near.count - 1] ^= 0x01
        tests.append(test("keys differing only in their last byte (ordering decided there)", near, same, flags: ["Ordering"]))
        // The first pair, continuing the draws, with a group below 10000, to show the zero padding.
        while true {
            let a = key(), b = key()
            if SafetyNumber.compute(a, b).split(separator: " ").contains(where: { $0.hasPrefix("0") }) {
                tests.append(test("a group with leading zeros", a, b, flags: ["LeadingZeros"]))
                break
            }
        }
        return VectorFileBuilder(
            topic: "fingerprint",
            description: "Safety numbers over two account identity keys: digest = SHA-256(\"FlitzSafetyNumber-v1\" || lower key || "
                + "higher key) (bytewise order), six groups of (big-endian 40-bit integer of digest[5i..5i+4]) mod 100000 "
                + "zero-padded to 5 digits, and the scannable form \"FLITZSN1:\" || 64 uppercase hex digits of the digest. "
                + "The result is the same for keyA, keyB in either order. Keys are the Ed25519 public keys of successive 32-byte "
                + "seeds drawn from SeededRandom(label: \"\(label)\"); the last pair is the first further pair with a group below 10000. "
                + "There are no invalid vectors: the functions take any two 32-byte strings and nothing is parsed.",
            specification: "protocol/crypto.md section 12",
            notes: [
                "SameKey": "Both keys are the same (a person comparing with themselves).",
                "Ordering": "The keys share all bytes but the last, so the lexicographic order is decided by it.",
                "LeadingZeros": "A group is below 10000 and must keep its leading zeros.",
            ],
            seeds: [label],
            groups: [VectorGroup(type: "safetyNumber", tests: tests)])
    }
}
