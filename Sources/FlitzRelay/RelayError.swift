import FlitzWire
import Foundation

/// The one error type of FlitzRelay: a refusal to report to the client as an `Error` frame
/// (`protocol/relay.md`, "Errors"). `description` never contains keys, ciphertext or recovery codes.
public struct RelayError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The wire code sent to the client.
    public var code: WireErrorCode
    /// A short English message, safe to send and to log.
    public var message: String
    /// The envelope the error is about (`UNKNOWN_ENVELOPE`), sent as `Error.envelope_id`.
    public var envelopeID: Data?
    /// `MISMATCHED_DEVICES`: per handle, the missing and stale device ids (`Error.device_mismatches`).
    public var deviceMismatches: [WireDeviceMismatch] = []
    /// `RATE_LIMITED` only: milliseconds after which the same request may succeed (`Error.retry_after_ms`).
    public var retryAfterMs: Int64?

    /// Creates an error.
    public init(_ code: WireErrorCode, _ message: String, envelopeID: Data? = nil, retryAfterMs: Int64? = nil) {
        self.code = code
        self.message = message
        self.envelopeID = envelopeID
        self.retryAfterMs = retryAfterMs
    }

    /// Code and message; never secret.
    public var description: String { "RelayError(\(code)): \(message)" }

    /// The `Error` frame answering `requestID`.
    func frame(requestID: UInt64) -> WireFrame {
        var frame = WireFrame.error(code, message, requestID: requestID, envelopeID: envelopeID)
        if !deviceMismatches.isEmpty || retryAfterMs != nil, case .error(var error) = frame.body {
            error.deviceMismatches = deviceMismatches
            if let retryAfterMs { error.retryAfterMs = retryAfterMs }
            frame.body = .error(error)
        }
        return frame
    }
}
