import FlitzCrypto
import FlitzWire
import Foundation
import SwiftProtobuf

/// `frames.json`: relay wire frames (`protocol/flitz_wire.proto`, `protocol/relay.md`) and the
/// authentication payload.
///
/// Group `encode`: `fields` (the frame in the protobuf JSON mapping, bytes as lowercase hex) → `frame`.
/// Group `decode`: `frame` → valid with `fields`, or invalid with the wire `ErrorCode` and, when the
/// relay can echo it, `errorRequestId`. Group `authenticationPayload`: `nonce`, `handle`, `payload`,
/// `deviceIdentityKey`, `signature` (valid: `deviceIdentitySeed` signed it over `payload`).
enum FramesTopic {
    static let topic = VectorTopic(name: "frames", verify: verify)

    static func verify(_ vector: VectorCase) throws -> VectorOutcome {
        let test = vector.test
        switch try vector.groupType() {
        case "encode":
            let fields = try test.object("fields"), bytes = try test.hex("frame")
            let frame = try WireJSON.frame(from: fields)
            try check(FrameCodec.encode(frame), bytes, "FrameCodec.encode")
            let decoded = try FrameCodec.decode(bytes)
            try require(decoded == frame, "FrameCodec.decode(frame) differs from fields")
            try check(try WireJSON.fields(of: decoded), fields, "fields of the decoded frame")
            try require(fields.has(try test.string("bodyKind")), "bodyKind names no field of fields")
            return .valid
        case "decode":
            let bytes = try test.hex("frame")
            switch Result(catching: { () throws(FrameDecodingError) -> WireFrame in try FrameCodec.decode(bytes) }) {
            case .success(let frame):
                try check(try WireJSON.fields(of: frame), try test.object("fields"), "fields of the decoded frame")
                return .valid
            case .failure(let error):
                switch error {
                case .unsupportedVersion(_, let requestID), .unknownKind(let requestID):
                    if test.has("errorRequestId") {
                        try check(String(requestID), try test.string("errorRequestId"), "request id to echo in the Error frame")
                    }
                case .malformed, .tooLarge:
                    try require(!test.has("errorRequestId"), "no request id is known for \(error)")
                }
                return .invalid(VectorErrorRef(error.code), stateUnchanged: nil)
            }
        case "authenticationPayload":
            let payload = try test.hex("payload"), signature = try test.hex("signature")
            try check(SignedPayload.authentication(nonce: try test.hex("nonce"), handle: try test.string("handle")), payload, "payload")
            try check(
                Data(SignedPayload.authenticationLabel) + Data([0]) + (try test.hex("nonce")) + Data(try test.string("handle").utf8), payload,
                "payload layout label || 0x00 || nonce || handle")
            let key = try Ed25519PublicKey(rawRepresentation: try test.hex("deviceIdentityKey"))
            if test.has("deviceIdentitySeed") {
                let seed = try Ed25519PrivateKey(seed: SecretBytes(try test.hex("deviceIdentitySeed")))
                try check(seed.publicKey, key, "deviceIdentityKey from deviceIdentitySeed")
                try check(seed.signature(for: payload), signature, "signature (RFC 8032 signatures are deterministic)")
            }
            return try VectorOutcome.capture { try key.verify(signature, for: payload) }
        case let type:
            throw VectorCheckFailure.unknownGroup(type, in: "frames")
        }
    }
}

/// Frames as JSON: the protobuf JSON mapping (lowerCamelCase field names, enum value names, 64-bit
/// integers as decimal strings, default values omitted) except that bytes fields are lowercase hex
/// instead of base64 (`vectors/README.md`, "frames").
public enum WireJSON {
    /// The JSON names of every `bytes` field in `flitz_wire.proto`; only these are converted.
    public static let bytesFieldNames: Set<String> = [
        "nonce", "envelopeId", "envelopeIds", "receiptId", "receiptIds", "publicKey", "signature", "deviceIdentityKey",
        "deviceCertificateSignature", "accountIdentityKey", "challengeSignature", "ciphertext", "rendezvousId", "pairingMessage", "payload",
        "p256dh", "authSecret", "unsendTokenHash", "cancelTokenHash", "unsendToken", "cancelToken", "report", "reportId", "messageId", "callId",
    ]

    /// The fields of `frame` as JSON.
    /// - Throws: when SwiftProtobuf cannot map it (not for frames this build made).
    public static func fields(of frame: WireFrame) throws -> JSONValue { try fields(ofMessage: frame) }

    /// The frame that `fields` describes.
    /// - Throws: `VectorCheckFailure` or a SwiftProtobuf decoding error for fields that do not map.
    public static func frame(from fields: JSONValue) throws -> WireFrame { try message(WireFrame.self, from: fields) }

    /// Any message of `flitz_wire.proto` (an `AbuseReport`, say) as JSON, bytes as hex.
    /// - Throws: when SwiftProtobuf cannot map it.
    public static func fields(ofMessage message: some SwiftProtobuf.Message) throws -> JSONValue {
        try ProtoJSON.fields(of: message, bytesFields: bytesFieldNames)
    }

    /// The `flitz_wire.proto` message that `fields` describes.
    /// - Throws: `VectorCheckFailure` or a SwiftProtobuf decoding error for fields that do not map.
    public static func message<M: SwiftProtobuf.Message>(_ type: M.Type, from fields: JSONValue) throws -> M {
        try ProtoJSON.message(type, from: fields, bytesFields: bytesFieldNames)
    }
}

/// The protobuf JSON mapping with `bytes` fields as lowercase hex instead of base64 (`vectors/README.md`,
/// "frames" and "conversations"): the fields named in `bytesFields` are converted, wherever they occur.
public enum ProtoJSON {
    /// `message` as JSON (lowerCamelCase names, enum names, 64-bit integers as decimal strings, defaults omitted).
    /// - Throws: when SwiftProtobuf cannot map it.
    public static func fields(of message: some SwiftProtobuf.Message, bytesFields: Set<String>) throws -> JSONValue {
        convert(try JSONValue.decode(try message.jsonUTF8Data()), bytesFields, bytes: { Data(base64Encoded: $0).map { .hex($0) } })
    }

    /// The message that `fields` describes.
    /// - Throws: `VectorCheckFailure` or a SwiftProtobuf decoding error for fields that do not map.
    public static func message<M: SwiftProtobuf.Message>(_ type: M.Type, from fields: JSONValue, bytesFields: Set<String>) throws -> M {
        let converted = convert(fields, bytesFields, bytes: { hex in Data(hexString: hex).map { .string($0.base64EncodedString()) } })
        return try M(jsonUTF8Data: try converted.encoded())
    }

    private static func convert(_ value: JSONValue, _ bytesFieldNames: Set<String>, bytes: (String) -> JSONValue?) -> JSONValue {
        switch value {
        case .object(let members):
            var out: [String: JSONValue] = [:]
            for (key, member) in members {
                if bytesFieldNames.contains(key) {
                    out[key] = convertBytes(member, bytes)
                } else {
                    out[key] = convert(member, bytesFieldNames, bytes: bytes)
                }
            }
            return .object(out)
        case .array(let items):
            return .array(items.map { convert($0, bytesFieldNames, bytes: bytes) })
        default:
            return value
        }
    }

    private static func convertBytes(_ value: JSONValue, _ bytes: (String) -> JSONValue?) -> JSONValue {
        switch value {
        case .string(let text): bytes(text) ?? value
        case .array(let items): .array(items.map { convertBytes($0, bytes) })
        default: value
        }
    }
}
