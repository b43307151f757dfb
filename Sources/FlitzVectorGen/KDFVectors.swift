import FlitzCrypto
import FlitzProtocol
import Foundation

/// `vectors/kdf.json`: the Double Ratchet KDFs on seeded inputs.
enum KDFVectors {
    static func make() throws -> JSONValue {
        let random = SeededRandom(label: "flitz-vectors/kdf")
        var rootSteps: [JSONValue] = []
        for _ in 0..<3 {
            let rootKey = SecretBytes(random.bytes(32))
            let dhOutput = SecretBytes(random.bytes(32))
            let (newRoot, chainKey) = RatchetKDF.rootStep(rootKey: rootKey, dhOutput: dhOutput)
            rootSteps.append(
                .object(["rootKey": .hex(rootKey), "dhOutput": .hex(dhOutput), "newRootKey": .hex(newRoot), "chainKey": .hex(chainKey)]))
        }
        var chainSteps: [JSONValue] = []
        for _ in 0..<3 {
            let chainKey = SecretBytes(random.bytes(32))
            let (next, messageKey) = RatchetKDF.chainStep(chainKey: chainKey)
            chainSteps.append(.object(["chainKey": .hex(chainKey), "messageKey": .hex(messageKey), "nextChainKey": .hex(next)]))
        }
        var encryptionKeys: [JSONValue] = []
        for _ in 0..<3 {
            let messageKey = SecretBytes(random.bytes(32))
            encryptionKeys.append(
                .object(["messageKey": .hex(messageKey), "encryptionKey": .hex(RatchetKDF.encryptionKey(messageKey: messageKey))]))
        }
        return .object([
            "description": .string(
                "Double Ratchet KDFs (protocol/crypto.md, \"Double Ratchet\"). Inputs are successive 32-byte outputs of "
                    + "SeededRandom(label: randomLabel): for each rootStep case rootKey then dhOutput, then each chainStep chainKey, "
                    + "then each encryptionKey messageKey. rootStep: HKDF-SHA-256(salt = rootKey, ikm = dhOutput, "
                    + "info = \"Flitz-Ratchet-v1\", 64) = newRootKey || chainKey. chainStep: messageKey = HMAC-SHA-256(chainKey, 0x01), "
                    + "nextChainKey = HMAC-SHA-256(chainKey, 0x02). encryptionKey: HKDF-SHA-256(salt = 32 zero bytes, "
                    + "ikm = messageKey, info = \"Flitz-MessageKey-v1\", 32)."),
            "generator": .string(Generator.name),
            "randomLabel": .string("flitz-vectors/kdf"),
            "rootStep": .array(rootSteps),
            "chainStep": .array(chainSteps),
            "encryptionKey": .array(encryptionKeys),
        ])
    }
}
