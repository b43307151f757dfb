import FlitzProtocol
import Foundation
import SwiftProtobuf

/// `Content` (`flitz_session.proto`) in the protobuf JSON mapping with `bytes` fields as lowercase hex, as the
/// `conversations` vectors give it (`vectors/README.md`, "conversations").
public enum ContentJSON {
    /// The JSON names of every `bytes` field reachable from `Content` in `flitz_session.proto`.
    public static let bytesFieldNames: Set<String> = ["messageId", "contentHash", "unsendToken", "envelopeId", "padding"]

    /// The fields of `content` as JSON.
    /// - Throws: when SwiftProtobuf cannot map it.
    public static func fields(of content: ProtoContent) throws -> JSONValue {
        try ProtoJSON.fields(of: content, bytesFields: bytesFieldNames)
    }

    /// The `Content` that `fields` describes.
    /// - Throws: `VectorCheckFailure` or a SwiftProtobuf decoding error for fields that do not map.
    public static func content(from fields: JSONValue) throws -> ProtoContent {
        try ProtoJSON.message(ProtoContent.self, from: fields, bytesFields: bytesFieldNames)
    }
}
