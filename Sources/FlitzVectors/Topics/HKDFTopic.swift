import FlitzCrypto
import FlitzProtocol
import Foundation

/// `hkdf.json`: HKDF-SHA-256 with every Flitz info label, and KDF_CK (`protocol/crypto.md` §1, §3, §4).
///
/// Group `hkdf`: `use` (`x3dhSharedSecret`, `rootKDF`, `messageKey` or `generic`), `salt`, `ikm`, `info`,
/// `infoText`, `length`, and for valid tests `prk` and `okm`. Group `kdfChain`: `chainKey`, `messageKey`,
/// `nextChainKey`.
enum HKDFTopic {
    static let topic = VectorTopic(name: "hkdf", verify: verify)

    static func verify(_ vector: VectorCase) throws -> VectorOutcome {
        let test = vector.test
        switch try vector.groupType() {
        case "hkdf":
            let salt = try test.hex("salt"), ikm = try test.hex("ikm"), info = try test.hex("info"), length = try test.int("length")
            try check(Data(try test.string("infoText").utf8), info, "infoText")
            let use = try test.string("use")
            switch use {
            case "x3dhSharedSecret":
                try check(info, ProtocolConstants.x3dhInfo, "info of the X3DH shared secret")
                try check(salt, ProtocolConstants.zeroSalt, "salt of the X3DH shared secret")
                try check(ikm.prefix(32), ProtocolConstants.x3dhPrefix, "X3DH key material prefix F")
            case "rootKDF": try check(info, ProtocolConstants.rootKDFInfo, "info of KDF_RK")
            case "messageKey":
                try check(info, ProtocolConstants.messageKeyInfo, "info of the message encryption key")
                try check(salt, ProtocolConstants.zeroSalt, "salt of the message encryption key")
            case "generic": break
            default: throw VectorCheckFailure("unknown use \"\(use)\"")
            }
            return try VectorOutcome.capture {
                let okm = try HKDF.deriveKey(inputKeyMaterial: SecretBytes(ikm), salt: salt, info: info, length: length)
                let prk = HKDF.extract(salt: salt, inputKeyMaterial: SecretBytes(ikm))
                try check(prk, try test.hex("prk"), "prk")
                try check(okm, try test.hex("okm"), "okm")
                try check(try HKDF.expand(pseudoRandomKey: prk, info: info, length: length), try test.hex("okm"), "expand(prk)")
                // Through the protocol's own functions, so a wrong constant there fails too.
                if use == "rootKDF" {
                    try require(length == 64, "KDF_RK outputs 64 bytes")
                    let (root, chain) = RatchetKDF.rootStep(rootKey: SecretBytes(salt), dhOutput: SecretBytes(ikm))
                    try check(root.unsafeData + chain.unsafeData, try test.hex("okm"), "RatchetKDF.rootStep")
                } else if use == "messageKey" {
                    try check(RatchetKDF.encryptionKey(messageKey: SecretBytes(ikm)), try test.hex("okm"), "RatchetKDF.encryptionKey")
                }
            }
        case "kdfChain":
            let chainKey = try test.hex("chainKey")
            try check(hmac(chainKey, 0x01), try test.hex("messageKey"), "messageKey = HMAC(chainKey, 0x01)")
            try check(hmac(chainKey, 0x02), try test.hex("nextChainKey"), "nextChainKey = HMAC(chainKey, 0x02)")
            let (next, messageKey) = RatchetKDF.chainStep(chainKey: SecretBytes(chainKey))
            try check(messageKey, try test.hex("messageKey"), "RatchetKDF.chainStep message key")
            try check(next, try test.hex("nextChainKey"), "RatchetKDF.chainStep chain key")
            return .valid
        case let type:
            throw VectorCheckFailure.unknownGroup(type, in: "hkdf")
        }
    }
}
