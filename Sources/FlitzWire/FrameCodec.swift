import Foundation
import SwiftProtobuf

/// Why a received WebSocket message is not a usable frame. Each case maps to the `WireErrorCode`
/// the relay answers with (`protocol/relay.md`, "Errors").
public enum FrameDecodingError: Error, Equatable, Sendable, CustomStringConvertible {
    /// More than `WireConstants.maxFrameBytes` bytes.
    case tooLarge(size: Int)
    /// Not a decodable `Frame`.
    case malformed
    /// A `Frame` whose version this build does not speak; carries the request id to answer.
    case unsupportedVersion(UInt32, requestID: UInt64)
    /// A `Frame` without a body, or with a body kind this build does not know.
    case unknownKind(requestID: UInt64)

    /// The code to send back in an `Error` frame.
    public var code: WireErrorCode {
        switch self {
        case .tooLarge: .frameTooLarge
        case .malformed: .malformedFrame
        case .unsupportedVersion: .unsupportedVersion
        case .unknownKind: .unknownFrame
        }
    }

    public var description: String {
        switch self {
        case .tooLarge(let size): "frame of \(size) bytes exceeds the limit of \(WireConstants.maxFrameBytes) bytes"
        case .malformed: "frame is not a valid flitz.wire.v1.Frame"
        case .unsupportedVersion(let version, _): "frame version \(version) is not supported; this peer speaks version \(WireConstants.protocolVersion)"
        case .unknownKind: "frame has no body or a body kind this peer does not know"
        }
    }
}

/// Encodes and decodes `Frame`s, one per WebSocket binary message (`protocol/relay.md`, "Framing").
public enum FrameCodec {
    /// Decodes one frame and checks its size, version and body.
    /// - Throws: `FrameDecodingError`.
    public static func decode(_ bytes: Data) throws(FrameDecodingError) -> WireFrame {
        guard bytes.count <= WireConstants.maxFrameBytes else { throw .tooLarge(size: bytes.count) }
        let frame: WireFrame
        do {
            frame = try WireFrame(serializedBytes: bytes)
        } catch {
            throw .malformed
        }
        guard frame.version == WireConstants.protocolVersion else {
            throw .unsupportedVersion(frame.version, requestID: frame.requestID)
        }
        // Unknown fields mean a body kind from a newer version (or garbage that parsed as such).
        guard frame.body != nil else { throw .unknownKind(requestID: frame.requestID) }
        return frame
    }

    /// Encodes a frame, setting its version to `WireConstants.protocolVersion`.
    public static func encode(_ frame: WireFrame) -> Data {
        var frame = frame
        frame.version = WireConstants.protocolVersion
        // Serializing a generated message with no required fields cannot fail.
        return (try? frame.serializedData()) ?? Data()
    }
}

extension WireFrame {
    /// A version-1 frame with the given request id and body.
    public init(requestID: UInt64, body: WireFrame.OneOf_Body) {
        self.init()
        self.version = WireConstants.protocolVersion
        self.requestID = requestID
        self.body = body
    }

    /// An `Error` frame answering `requestID` (0 when unsolicited).
    public static func error(_ code: WireErrorCode, _ message: String, requestID: UInt64 = 0, envelopeID: Data? = nil) -> WireFrame {
        var error = WireError()
        error.code = code
        error.message = message
        if let envelopeID { error.envelopeID = envelopeID }
        return WireFrame(requestID: requestID, body: .error(error))
    }
}
