import FlitzCrypto
import Foundation

extension FlitzClient {
    /// Argon2id cost of a new passphrase: 3 passes over 128 MiB, under 1 s per command on the project's loaded
    /// 2-core machine (docs/storage-at-rest.md). A store keeps the parameters it was sealed under.
    public static let defaultKeyParameters = ClientStore.defaultKeyParameters

    /// The Argon2id cost the CLI uses for a new passphrase: `defaultKeyParameters`; in debug builds only,
    /// `FLITZ_TEST_PWHASH=minimum` in `environment` gives libsodium's minimum (1 pass, 8 KiB) so end-to-end tests stay
    /// fast (DESIGN.md, "Time" has the same pattern for the clock). Release builds ignore it.
    public static func keyParameters(environment: [String: String] = ProcessInfo.processInfo.environment) -> Argon2id.Parameters {
        #if DEBUG
        if environment["FLITZ_TEST_PWHASH"] == "minimum" { return .minimum }
        #endif
        return defaultKeyParameters
    }

    /// Whether this device's local store keeps its secrets sealed under a passphrase.
    public var hasPassphrase: Bool { store.hasPassphrase }

    /// Sets or changes (`passphrase` non-nil) or removes (nil) the local store's passphrase, re-sealing every secret
    /// column in one transaction (docs/storage-at-rest.md). The store must be open (unlocked with the current one).
    /// - Parameter parameters: the Argon2id cost of the new key (tests pass `.minimum`).
    /// - Throws: `ClientError(.invalidArgument)` for an empty passphrase or parameters libsodium refuses;
    ///   `.protocolFailure` when a stored secret does not open (nothing changed then).
    public func setPassphrase(_ passphrase: SecretBytes?, parameters: Argon2id.Parameters = FlitzClient.defaultKeyParameters) throws {
        if let passphrase, passphrase.count == 0 { throw ClientError(.invalidArgument, "the passphrase must not be empty") }
        try store.changePassphrase(to: passphrase, parameters: parameters)
    }
}
