import FlitzWire

/// The one error type of FlitzRelay: a refusal to report to the client as an `Error` frame
/// (`protocol/relay.md`, "Errors"). `description` never contains keys, ciphertext or recovery codes.
public struct RelayError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The wire code sent to the client.
    public var code: WireErrorCode
    /// A short English message, safe to send and to log.
    public var message: String

    /// Creates an error.
    public init(_ code: WireErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }

    /// Code and message; never secret.
    public var description: String { "RelayError(\(code)): \(message)" }

    /// The `Error` frame answering `requestID`.
    func frame(requestID: UInt64) -> WireFrame { .error(code, message, requestID: requestID) }
}
