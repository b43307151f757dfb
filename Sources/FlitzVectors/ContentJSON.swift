import FlitzProtocol
import Foundation
import SwiftProtobuf

/// `Content` (`flitz_session.proto`) in the protobuf JSON mapping with `bytes` fields as lowercase hex, as the
/// `conversations` and `attachment` vectors give it (`vectors/README.md`, "conversations", "attachment").
///
/// A `Location`'s `double` coordinates are JSON strings (the protobuf JSON mapping accepts a double as a string):
/// the shortest decimal that reads back as the same binary64, or `NaN`, `Infinity`, `-Infinity`. Vector files have
/// no fractional JSON numbers.
public enum ContentJSON {
    /// The JSON names of every `bytes` field reachable from `Content` in `flitz_session.proto`.
    public static let bytesFieldNames: Set<String> = [
        "messageId", "contentHash", "unsendToken", "envelopeId", "padding", "blobId", "key", "ciphertextSha256", "thumbnail",
        // CallMessage (calls.md 4).
        "callId", "signalBinding", "ephemeralKey",
    ]

    /// The fields of `content` as JSON.
    /// - Throws: when SwiftProtobuf cannot map it.
    public static func fields(of content: ProtoContent) throws -> JSONValue {
        // SwiftProtobuf writes doubles as JSON numbers, which JSONValue refuses: take each Location out, map the
        // rest, and put the Location back with string coordinates.
        var stripped = content
        var location: ProtoLocation?
        var transcriptLocation: ProtoLocation?
        switch stripped.body {
        case .text(var text)? where text.hasLocation:
            location = text.location
            text.clearLocation()
            stripped.body = .text(text)
        case .sentTranscript(var transcript)?:
            if case .text(var text)? = transcript.body, text.hasLocation {
                transcriptLocation = text.location
                text.clearLocation()
                transcript.body = .text(text)
                stripped.body = .sentTranscript(transcript)
            }
        default:
            break
        }
        var json = try ProtoJSON.fields(of: stripped, bytesFields: bytesFieldNames)
        if let location { json = inserting(location, into: json, path: ["text"]) }
        if let transcriptLocation { json = inserting(transcriptLocation, into: json, path: ["sentTranscript", "text"]) }
        return json
    }

    /// The `Content` that `fields` describes.
    /// - Throws: `VectorCheckFailure` or a SwiftProtobuf decoding error for fields that do not map.
    public static func content(from fields: JSONValue) throws -> ProtoContent {
        try ProtoJSON.message(ProtoContent.self, from: fields, bytesFields: bytesFieldNames)
    }

    /// A `double` as the vectors write it: the shortest round-trip decimal, `NaN`, `Infinity` or `-Infinity`.
    public static func doubleString(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value < 0 ? "-Infinity" : "Infinity" }
        return value.description
    }

    /// A `Location` in the JSON mapping: fields at their default (0, empty) are omitted, as proto3 does.
    static func json(of location: ProtoLocation) -> JSONValue {
        var object: [String: JSONValue] = [:]
        if location.latitude.bitPattern != 0 { object["latitude"] = .string(doubleString(location.latitude)) }
        if location.longitude.bitPattern != 0 { object["longitude"] = .string(doubleString(location.longitude)) }
        if !location.label.isEmpty { object["label"] = .string(location.label) }
        return .object(object)
    }

    private static func inserting(_ location: ProtoLocation, into json: JSONValue, path: [String]) -> JSONValue {
        guard case .object(var members) = json else { return json }
        if let key = path.first, path.count > 1 {
            members[key] = inserting(location, into: members[key] ?? .object([:]), path: Array(path.dropFirst()))
        } else if let key = path.first {
            guard case .object(var text)? = members[key] ?? .object([:]) else { return json }
            text["location"] = self.json(of: location)
            members[key] = .object(text)
        }
        return .object(members)
    }
}
