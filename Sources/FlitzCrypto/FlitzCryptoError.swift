/// The one error type of FlitzCrypto. Failures that an attacker could provoke are deliberately
/// coarse (one `authenticationFailed` for a bad tag or a bad signature) so they are no oracle, and
/// `description` never contains key material.
public struct FlitzCryptoError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong. Integer-backed so codes stay stable across versions.
    public struct Code: RawRepresentable, Hashable, Sendable {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }

        /// An AEAD tag or a signature did not verify.
        public static let authenticationFailed = Code(rawValue: 1)
        /// A key, nonce or output length is not the size the primitive requires.
        public static let invalidLength = Code(rawValue: 2)
        /// A public key is not usable (for example, an Ed25519 key with no X25519 form).
        public static let invalidKey = Code(rawValue: 3)
        /// An X25519 shared secret was all zero: the peer's key is of low order.
        public static let nonContributory = Code(rawValue: 4)
        /// libsodium could not be initialised or reported an internal failure.
        public static let libraryFailure = Code(rawValue: 5)
    }

    /// What went wrong.
    public let code: Code
    /// A short, non-secret explanation (for example the expected and actual length).
    public let detail: String

    /// Creates an error with a code and a non-secret detail.
    public init(_ code: Code, _ detail: String = "") {
        self.code = code
        self.detail = detail
    }

    public var description: String {
        let name: String = switch code {
        case .authenticationFailed: "authentication failed"
        case .invalidLength: "invalid length"
        case .invalidKey: "invalid key"
        case .nonContributory: "non-contributory key agreement"
        case .libraryFailure: "libsodium failure"
        default: "crypto error \(code.rawValue)"
        }
        return detail.isEmpty ? "FlitzCryptoError: \(name)" : "FlitzCryptoError: \(name) (\(detail))"
    }
}
