import FlitzCrypto
import Foundation
import Testing

@Suite struct SecretBytesTests {
    @Test func descriptionIsRedacted() {
        let secret = SecretBytes(Data([0xde, 0xad, 0xbe, 0xef]))
        #expect(secret.description == "SecretBytes(<redacted 4 bytes>)")
        #expect(secret.debugDescription == "SecretBytes(<redacted 4 bytes>)")
        #expect(String(describing: secret) == "SecretBytes(<redacted 4 bytes>)")
        #expect(String(reflecting: secret) == "SecretBytes(<redacted 4 bytes>)")
        #expect(!"\(secret)".contains("dead"))
    }

    @Test func contentsSliceAndEquality() {
        let secret = SecretBytes(Data([1, 2, 3, 4, 5]))
        #expect(secret.count == 5)
        #expect(secret.unsafeData == Data([1, 2, 3, 4, 5]))
        #expect(secret.slice(1..<3).unsafeData == Data([2, 3]))
        #expect(secret.constantTimeEquals(SecretBytes(Data([1, 2, 3, 4, 5]))))
        #expect(!secret.constantTimeEquals(SecretBytes(Data([1, 2, 3, 4, 6]))))
        #expect(!secret.constantTimeEquals(SecretBytes(Data([1, 2, 3, 4]))))
        #expect(SecretBytes(Data()).count == 0)
    }

    @Test func constantTimeEquals() {
        #expect(ConstantTime.equals(Data([1, 2]), Data([1, 2])))
        #expect(!ConstantTime.equals(Data([1, 2]), Data([1, 3])))
        #expect(!ConstantTime.equals(Data([1, 2]), Data([1])))
        #expect(ConstantTime.equals(Data(), Data()))
    }

    @Test func hex() {
        #expect(Data([0x00, 0xab, 0xff]).hexString == "00abff")
        #expect(Data(hexString: "00ABff") == Data([0x00, 0xab, 0xff]))
        #expect(Data(hexString: "abc") == nil)
        #expect(Data(hexString: "zz") == nil)
        #expect(Data(hexString: "") == Data())
    }
}

@Suite struct RandomTests {
    @Test func seededRandomIsDeterministic() {
        let a = SeededRandom(label: "determinism")
        let b = SeededRandom(label: "determinism")
        let first = a.bytes(32)
        #expect(first == b.bytes(32))
        let second = a.bytes(24)
        #expect(second == b.bytes(24))
        #expect(first.prefix(24) != second)
        #expect(SeededRandom(label: "other").bytes(32) != first)
    }

    @Test func seededRandomMatchesItsSpecification() {
        // seed = BLAKE2b-256(label); call i returns randombytes_buf_deterministic(count, BLAKE2b-256(key: seed,
        // "FlitzSeededRandom" ‖ u64be(i))), i.e. the ChaCha20-IETF keystream under nonce "LibsodiumDRG".
        // Values computed independently (Python hashlib + pyca ChaCha20) so the construction cannot drift.
        let random = SeededRandom(label: "flitz")
        #expect(random.bytes(16).hexString == "156b5d38df7faf44595ee9463e817b9c")
        #expect(random.bytes(32).hexString == "736529502747dccde6800f0e3408c3faef33a533f8935e5318b46cdbcb7acee3")
        let fromSeed = SeededRandom(seed: BLAKE2b.hash(Data("flitz".utf8), outputLength: 32))
        #expect(fromSeed.bytes(16).hexString == "156b5d38df7faf44595ee9463e817b9c")
        #expect(SeededRandom(label: "flitz").bytes(0) == Data())
    }

    @Test func systemRandomProducesDistinctBytes() {
        let random = SystemRandom()
        #expect(random.bytes(0).isEmpty)
        #expect(random.bytes(32) != random.bytes(32))
    }
}
