import FlitzCrypto
import Foundation

/// The Double Ratchet's key derivation functions (Signal Double Ratchet spec §5.2 with the
/// parameters of `protocol/crypto.md`, "Double Ratchet").
public enum RatchetKDF {
    /// KDF_RK: HKDF-SHA-256(salt = root key, ikm = DH output, info = "Flitz-Ratchet-v1"), 64 bytes →
    /// (32-byte new root key, 32-byte chain key).
    public static func rootStep(rootKey: SecretBytes, dhOutput: SecretBytes) -> (rootKey: SecretBytes, chainKey: SecretBytes) {
        // 64 bytes is far below HKDF's limit, so this cannot throw.
        let out = try! HKDF.deriveKey(
            inputKeyMaterial: dhOutput, salt: rootKey.unsafeData, info: ProtocolConstants.rootKDFInfo, length: 64)
        return (out.slice(0..<32), out.slice(32..<64))
    }

    /// KDF_CK: message key = HMAC-SHA-256(chain key, 0x01); next chain key = HMAC-SHA-256(chain key, 0x02).
    public static func chainStep(chainKey: SecretBytes) -> (chainKey: SecretBytes, messageKey: SecretBytes) {
        let messageKey = HMACSHA256.authenticate(Data([ProtocolConstants.messageKeyConstant]), key: chainKey)
        let next = HMACSHA256.authenticate(Data([ProtocolConstants.chainKeyConstant]), key: chainKey)
        return (next, messageKey)
    }

    /// The 32-byte XChaCha20-Poly1305 key for a message key:
    /// HKDF-SHA-256(salt = 32 zero bytes, ikm = message key, info = "Flitz-MessageKey-v1").
    public static func encryptionKey(messageKey: SecretBytes) -> SecretBytes {
        try! HKDF.deriveKey(
            inputKeyMaterial: messageKey, salt: ProtocolConstants.zeroSalt, info: ProtocolConstants.messageKeyInfo, length: 32)
    }
}

/// The ratchet header, 41 bytes: version (1) ‖ sender's ratchet public key (32) ‖ PN (u32 big-endian)
/// ‖ N (u32 big-endian) (`protocol/crypto.md`, "Ratchet header").
public struct RatchetHeader: Hashable, Sendable {
    /// Encoded length in bytes.
    public static let encodedLength = 41
    /// The sender's current 32-byte X25519 ratchet public key.
    public let ratchetKey: X25519PublicKey
    /// Number of messages in the sender's previous sending chain.
    public let previousChainLength: UInt32
    /// Index of this message in its sending chain.
    public let messageNumber: UInt32

    /// Creates a header.
    public init(ratchetKey: X25519PublicKey, previousChainLength: UInt32, messageNumber: UInt32) {
        self.ratchetKey = ratchetKey
        self.previousChainLength = previousChainLength
        self.messageNumber = messageNumber
    }

    /// The 41 encoded bytes.
    public var encoded: Data {
        var out = Data([ProtocolConstants.version])
        out.append(ratchetKey.rawRepresentation)
        withUnsafeBytes(of: previousChainLength.bigEndian) { out.append(contentsOf: $0) }
        withUnsafeBytes(of: messageNumber.bigEndian) { out.append(contentsOf: $0) }
        return out
    }

    /// Parses the first 41 bytes of `bytes`.
    /// - Throws: `FlitzProtocolError.malformedMessage` when shorter; `.unsupportedVersion` for a version byte other than 1.
    public init(decoding bytes: Data) throws(FlitzProtocolError) {
        let bytes = Data(bytes)
        guard let version = bytes.first else { throw FlitzProtocolError(.malformedMessage, "empty ratchet message") }
        guard version == ProtocolConstants.version else {
            throw FlitzProtocolError(.unsupportedVersion, "ratchet version \(version)")
        }
        guard bytes.count >= Self.encodedLength else {
            throw FlitzProtocolError(.malformedMessage, "ratchet header is \(bytes.count) bytes, needs \(Self.encodedLength)")
        }
        ratchetKey = try! X25519PublicKey(rawRepresentation: bytes[1..<33])
        previousChainLength = bytes[33..<37].reduce(0) { $0 << 8 | UInt32($1) }
        messageNumber = bytes[37..<41].reduce(0) { $0 << 8 | UInt32($1) }
    }
}
