import FlitzWire

/// The one error type of FlitzRelay: a refusal to report to the client as an `Error` frame
/// (`protocol/relay.md`, "Errors"). `description` never contains keys, ciphertext or recovery codes.
public struct RelayError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The wire code sent to the client.
    public var code: WireErrorCode
    /// A short English message, safe to send and to log.
    public var message: String
    /// `RATE_LIMITED` only: milliseconds after which the same request may succeed (`Error.retry_after_ms`).
    public var retryAfterMs: Int64?

    /// Creates an error.
    public init(_ code: WireErrorCode, _ message: String, retryAfterMs: Int64? = nil) {
        self.code = code
        self.message = message
        self.retryAfterMs = retryAfterMs
    }

    /// Code and message; never secret.
    public var description: String { "RelayError(\(code)): \(message)" }

    /// The `Error` frame answering `requestID`.
    func frame(requestID: UInt64) -> WireFrame {
        var frame = WireFrame.error(code, message, requestID: requestID)
        if let retryAfterMs, case .error(var error) = frame.body {
            error.retryAfterMs = retryAfterMs
            frame.body = .error(error)
        }
        return frame
    }
}
