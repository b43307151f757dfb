/// The one error type of FlitzProtocol. Cryptographic failures are coarse on purpose: a bad tag, a bad
/// signature and a wrong key all read "authentication failed", so errors are no oracle. `description`
/// never contains key material or plaintext.
public struct FlitzProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong; integer-backed and stable (`protocol/crypto.md`, "Errors").
    public struct Code: RawRepresentable, Hashable, Sendable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }

        /// Bytes do not parse as the expected structure (too short, wrong lengths, bad protobuf).
        public static let malformedMessage = Code(rawValue: 1)
        /// A version byte or field this implementation does not speak.
        public static let unsupportedVersion = Code(rawValue: 2)
        /// An AEAD tag, a signature or a certificate did not verify.
        public static let authenticationFailed = Code(rawValue: 3)
        /// The message key was already used: a duplicate or replayed message.
        public static let duplicateMessage = Code(rawValue: 4)
        /// The message would require skipping more than `RatchetLimits.maxSkip` message keys.
        public static let tooManySkippedMessages = Code(rawValue: 5)
        /// No sending chain yet (a responder session that has not decrypted anything).
        public static let noSendingChain = Code(rawValue: 6)
        /// A prekey bundle or prekey message names a key the receiver does not have.
        public static let unknownPreKey = Code(rawValue: 7)
        /// A stored session record could not be restored.
        public static let invalidSessionRecord = Code(rawValue: 8)
        /// A counter would overflow 32 bits.
        public static let counterOverflow = Code(rawValue: 9)
        /// A prekey bundle has no ML-KEM prekey, or a prekey message no KEM ciphertext: PQXDH is required.
        public static let missingKEMPreKey = Code(rawValue: 10)
        /// A public key is malformed or unusable: an ML-KEM key failing FIPS 203's modulus check, or an
        /// X25519 key of low order (all-zero shared secret).
        public static let invalidKey = Code(rawValue: 11)
        /// A prekey message names a signed prekey that was rotated out and whose grace period ended; the
        /// receiver answers with a session reset (`protocol/crypto.md`, "Session reset").
        public static let signedPreKeyExpired = Code(rawValue: 12)
        /// A pairing code (`protocol/devices.md`, section 5.2) is not `"FLITZLINK1:"` and 52 base32 characters.
        public static let invalidPairingCode = Code(rawValue: 13)
    }

    /// What went wrong.
    public let code: Code
    /// A short non-secret explanation.
    public let detail: String

    /// Creates an error.
    public init(_ code: Code, _ detail: String = "") {
        self.code = code
        self.detail = detail
    }

    public var description: String {
        let name: String = switch code {
        case .malformedMessage: "malformed message"
        case .unsupportedVersion: "unsupported version"
        case .authenticationFailed: "authentication failed"
        case .duplicateMessage: "duplicate message"
        case .tooManySkippedMessages: "too many skipped messages"
        case .noSendingChain: "no sending chain"
        case .unknownPreKey: "unknown prekey"
        case .invalidSessionRecord: "invalid session record"
        case .counterOverflow: "counter overflow"
        case .missingKEMPreKey: "missing KEM prekey"
        case .invalidKey: "invalid key"
        case .signedPreKeyExpired: "signed prekey expired"
        case .invalidPairingCode: "invalid pairing code"
        default: "protocol error \(code.rawValue)"
        }
        return detail.isEmpty ? "FlitzProtocolError: \(name)" : "FlitzProtocolError: \(name) (\(detail))"
    }
}
