import FlitzCrypto
import FlitzProtocol
import FlitzVectors
import Foundation

/// `vectors/hkdf.json`: HKDF-SHA-256 under every Flitz info label, and KDF_CK.
enum HKDFVectors {
    static let label = "flitz-vectors/hkdf"

    static func make() throws -> VectorFileBuilder {
        let random = SeededRandom(label: label)
        func hkdfCase(
            _ comment: String, use: String, salt: Data, ikm: Data, info: Data, length: Int, flags: [String] = []
        ) throws -> VectorTest {
            var fields: [String: JSONValue] = [
                "use": .string(use), "salt": .hex(salt), "ikm": .hex(ikm), "info": .hex(info),
                "infoText": .string(String(decoding: info, as: UTF8.self)), "length": .int(length),
            ]
            guard length <= HKDF.maxOutputLength else {
                return VectorTest(comment, flags: flags, result: .invalid(VectorErrorRef(FlitzCryptoError.Code.invalidLength)), fields)
            }
            fields["prk"] = .hex(HKDF.extract(salt: salt, inputKeyMaterial: SecretBytes(ikm)))
            fields["okm"] = .hex(try HKDF.deriveKey(inputKeyMaterial: SecretBytes(ikm), salt: salt, info: info, length: length))
            return VectorTest(comment, flags: flags, fields)
        }

        var hkdfTests: [VectorTest] = []
        for dhCount in [3, 4] {
            var ikm = ProtocolConstants.x3dhPrefix
            for _ in 0..<dhCount { ikm.append(random.bytes(32)) }
            hkdfTests.append(
                try hkdfCase(
                    "X3DH SK from F and \(dhCount) DH outputs", use: "x3dhSharedSecret", salt: ProtocolConstants.zeroSalt, ikm: ikm,
                    info: ProtocolConstants.x3dhInfo, length: 32))
        }
        for index in 0..<3 {
            let rootKey = random.bytes(32), dhOutput = random.bytes(32)
            hkdfTests.append(
                try hkdfCase(
                    "KDF_RK \(index + 1): salt = root key, ikm = DH output, 64 bytes = new root key || chain key", use: "rootKDF",
                    salt: rootKey, ikm: dhOutput, info: ProtocolConstants.rootKDFInfo, length: 64))
        }
        var messageKeys: [Data] = []
        for index in 0..<3 {
            let messageKey = random.bytes(32)
            messageKeys.append(messageKey)
            hkdfTests.append(
                try hkdfCase(
                    "message key \(index + 1) to its XChaCha20-Poly1305 key", use: "messageKey", salt: ProtocolConstants.zeroSalt,
                    ikm: messageKey, info: ProtocolConstants.messageKeyInfo, length: 32))
        }
        hkdfTests.append(
            try hkdfCase(
                "an empty salt means 32 zero bytes (same output as message key 1)", use: "generic", salt: Data(), ikm: messageKeys[0],
                info: ProtocolConstants.messageKeyInfo, length: 32, flags: ["EmptySalt"]))
        let longIKM = random.bytes(32)
        hkdfTests.append(
            try hkdfCase(
                "longest output, 255 blocks", use: "generic", salt: ProtocolConstants.zeroSalt, ikm: longIKM,
                info: ProtocolConstants.rootKDFInfo, length: HKDF.maxOutputLength, flags: ["MaxLength"]))
        hkdfTests.append(
            try hkdfCase(
                "one byte more than 255 blocks is refused", use: "generic", salt: ProtocolConstants.zeroSalt, ikm: longIKM,
                info: ProtocolConstants.rootKDFInfo, length: HKDF.maxOutputLength + 1, flags: ["MaxLength"]))

        var chainTests: [VectorTest] = []
        for index in 0..<3 {
            let chainKey = random.bytes(32)
            let (next, messageKey) = RatchetKDF.chainStep(chainKey: SecretBytes(chainKey))
            chainTests.append(
                VectorTest(
                    "KDF_CK \(index + 1)", ["chainKey": .hex(chainKey), "messageKey": .hex(messageKey), "nextChainKey": .hex(next)]))
        }
        // Three steps along one chain: each nextChainKey is the following chainKey.
        var chainKey = SecretBytes(random.bytes(32))
        for step in 0..<3 {
            let (next, messageKey) = RatchetKDF.chainStep(chainKey: chainKey)
            chainTests.append(
                VectorTest(
                    "one chain, step \(step + 1)", flags: ["Chain"],
                    ["chainKey": .hex(chainKey), "messageKey": .hex(messageKey), "nextChainKey": .hex(next)]))
            chainKey = next
        }

        return VectorFileBuilder(
            topic: "hkdf",
            description: "HKDF-SHA-256 (RFC 5869) with the Flitz info labels, and the Double Ratchet chain step KDF_CK. "
                + "Inputs are successive draws of SeededRandom(label: \"\(label)\"): the X3DH DH outputs (3, then 4, of 32 bytes), "
                + "then rootKey and dhOutput of each KDF_RK case, each message key, the ikm of the longest-output cases, each "
                + "kdfChain chainKey, and the first key of the three-step chain. RFC 5869's own vectors are in third_party/.",
            specification: "protocol/crypto.md sections 1, 3, 4 and 9",
            notes: [
                "EmptySalt": "An empty salt is replaced by 32 zero bytes (RFC 5869 section 2.2).",
                "MaxLength": "HKDF-Expand gives at most 255 * 32 = 8160 bytes; more is FlitzCryptoError.invalidLength.",
                "Chain": "Consecutive steps of one chain: nextChainKey of a step is chainKey of the next.",
            ],
            seeds: [label],
            groups: [VectorGroup(type: "hkdf", tests: hkdfTests), VectorGroup(type: "kdfChain", tests: chainTests)])
    }
}
