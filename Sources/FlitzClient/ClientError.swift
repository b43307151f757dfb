import FlitzProtocol
import FlitzWire

/// The one error type of FlitzClient. `description` is what the CLI shows; it never contains secrets,
/// plaintext or ciphertext. `exitCode` is the documented `flitz` exit status for it.
public struct ClientError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public enum Kind: Sendable, Equatable {
        /// The relay could not be reached, the connection dropped, or it did not answer in time.
        case relayUnreachable
        /// The relay refused a request with this wire error code.
        case refused(WireErrorCode)
        /// The contact's account identity key changed and is not trusted yet (`flitz trust HANDLE`).
        case identityChanged
        /// The home directory has no account yet (`flitz init`).
        case notInitialized
        /// The home directory already has an account.
        case alreadyInitialized
        /// A command-line argument is not acceptable.
        case invalidArgument
        /// No message with that id is known locally.
        case unknownMessage
        /// A protocol or crypto failure on this side.
        case protocolFailure
        /// The safety number (or scanned code) the user gave is not the one of the contact's trusted key.
        case safetyNumberMismatch
        /// The local store is locked with a passphrase and none, or a wrong one, was given (docs/storage-at-rest.md).
        case passphrase
    }

    /// What went wrong.
    public let kind: Kind
    /// Human-readable explanation.
    public let message: String
    /// The relay's `Error` frame when the relay refused (for `MISMATCHED_DEVICES`, its `device_mismatches`).
    public let relayError: WireError?

    /// Creates an error.
    public init(_ kind: Kind, _ message: String, relayError: WireError? = nil) {
        self.kind = kind
        self.message = message
        self.relayError = relayError
    }

    /// `flitz` exit status: 2 unreachable or timed out, 3 refused by the relay, 4 identity changed, 77 wrong or
    /// missing passphrase (sysexits `EX_NOPERM`), 1 otherwise.
    public var exitCode: Int32 {
        switch kind {
        case .relayUnreachable: 2
        case .refused: 3
        case .identityChanged: 4
        case .passphrase: 77
        default: 1
        }
    }

    public var description: String { message }
}
