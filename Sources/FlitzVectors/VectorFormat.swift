import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import SwiftProtobuf

/// The exact error an invalid vector expects (`vectors/README.md`, "Errors"): the error type, the code's
/// name and its stable integer.
public struct VectorErrorRef: Hashable, Sendable, CustomStringConvertible {
    /// `FlitzProtocolError`, `FlitzCryptoError` or `WireErrorCode`.
    public let type: String
    /// The code's name: the Swift static name for the Flitz error types (`authenticationFailed`), the
    /// protobuf enum name for wire codes (`MALFORMED_FRAME`).
    public let name: String
    /// The code's integer (`FlitzProtocolError.Code.rawValue`, `FlitzCryptoError.Code.rawValue`, `WireErrorCode.rawValue`).
    public let code: Int

    /// Creates a reference from its three parts.
    public init(type: String, name: String, code: Int) {
        self.type = type
        self.name = name
        self.code = code
    }

    /// The reference for a `FlitzProtocolError` code (names as in `protocol/crypto.md` §6).
    public init(_ code: FlitzProtocolError.Code) {
        let names: [Int: String] = [
            1: "malformedMessage", 2: "unsupportedVersion", 3: "authenticationFailed", 4: "duplicateMessage",
            5: "tooManySkippedMessages", 6: "noSendingChain", 7: "unknownPreKey", 8: "invalidSessionRecord", 9: "counterOverflow",
            10: "missingKEMPreKey", 11: "invalidKey", 12: "signedPreKeyExpired", 13: "invalidPairingCode",
        ]
        self.init(type: "FlitzProtocolError", name: names[code.rawValue] ?? "code\(code.rawValue)", code: code.rawValue)
    }

    /// The reference for a `FlitzCryptoError` code.
    public init(_ code: FlitzCryptoError.Code) {
        let names: [Int: String] = [1: "authenticationFailed", 2: "invalidLength", 3: "invalidKey", 4: "nonContributory", 5: "libraryFailure"]
        self.init(type: "FlitzCryptoError", name: names[code.rawValue] ?? "code\(code.rawValue)", code: code.rawValue)
    }

    /// The reference for a device list that is not valid: type `DeviceListError`, the case name, and as code
    /// the number of the failing check of `protocol/devices.md` section 4.2 (1 to 5).
    public init(_ error: DeviceListError) {
        let name: String = switch error {
        case .signature: "signature"
        case .accountKeyMismatch: "accountKeyMismatch"
        case .malformed: "malformed"
        case .deviceCount: "deviceCount"
        case .zeroField: "zeroField"
        case .unsortedOrDuplicate: "unsortedOrDuplicate"
        }
        self.init(type: "DeviceListError", name: name, code: error.check)
    }

    /// The reference for a wire `ErrorCode`, named as in `flitz_wire.proto`.
    public init(_ code: WireErrorCode) {
        // The protobuf JSON mapping spells enum values with their .proto names; a default value is omitted.
        var error = WireError()
        error.code = code
        let name = (try? error.jsonString()).flatMap { json in
            (try? JSONValue.decode(Data(json.utf8)))?["code"].flatMap { if case .string(let s) = $0 { s } else { nil } }
        } ?? "ERROR_CODE_UNSPECIFIED"
        self.init(type: "WireErrorCode", name: name, code: code.rawValue)
    }

    /// `{"type", "name", "code"}`.
    public var json: JSONValue { .object(["type": .string(type), "name": .string(name), "code": .int(code)]) }

    /// Reads `{"type", "name", "code"}`.
    /// - Throws: `VectorCheckFailure` when a part is missing.
    public init(json: JSONValue) throws(VectorCheckFailure) {
        self.init(type: try json.string("type"), name: try json.string("name"), code: try json.int("code"))
    }

    /// `type.name (code)`, for failure reasons.
    public var description: String { "\(type).\(name) (\(code))" }
}

/// What a topic's verifier found for one test: the operation succeeded (and every output matched, or
/// it would have thrown), or it failed with an error.
public enum VectorOutcome: Sendable {
    /// Accepted, outputs as in the vector.
    case valid
    /// Refused with `error`; `stateUnchanged` is whether the serialized state was byte-identical
    /// afterwards (nil for stateless operations).
    case invalid(VectorErrorRef, stateUnchanged: Bool?)

    /// Runs `body`; a `FlitzProtocolError`, `FlitzCryptoError`, `FrameDecodingError` or `DeviceListError` becomes `.invalid`.
    /// - Throws: any other error, and `VectorCheckFailure` from inside `body`.
    public static func capture(stateUnchanged: (() -> Bool)? = nil, _ body: () throws -> Void) throws -> VectorOutcome {
        do {
            try body()
            return .valid
        } catch let error as FlitzProtocolError {
            return .invalid(VectorErrorRef(error.code), stateUnchanged: stateUnchanged?())
        } catch let error as FlitzCryptoError {
            return .invalid(VectorErrorRef(error.code), stateUnchanged: stateUnchanged?())
        } catch let error as FrameDecodingError {
            return .invalid(VectorErrorRef(error.code), stateUnchanged: stateUnchanged?())
        } catch let error as DeviceListError {
            return .invalid(VectorErrorRef(error), stateUnchanged: stateUnchanged?())
        }
    }
}

/// One topic: its name (the file is `vectors/<name>.json`) and the function that checks one test case.
/// Adding a topic is one generator function in `flitz-vectors` and one of these (`vectors/README.md`).
public struct VectorTopic: Sendable {
    /// The topic name, as in the file's `topic` field.
    public let name: String
    /// Checks one test. Throws `VectorCheckFailure` (or any error) when an output does not match;
    /// returns `.invalid` when the implementation refused the input.
    public let verify: @Sendable (VectorCase) throws -> VectorOutcome

    /// Creates a topic.
    public init(name: String, verify: @escaping @Sendable (VectorCase) throws -> VectorOutcome) {
        self.name = name
        self.verify = verify
    }
}

/// One test case with its group and file, as handed to a topic's verifier.
public struct VectorCase: Sendable {
    /// The test object (`tcId`, `result`, inputs and outputs).
    public let test: JSONValue
    /// The enclosing test group (`type` and shared inputs).
    public let group: JSONValue
    /// The whole file.
    public let file: JSONValue

    /// The group's `type`.
    /// - Throws: `VectorCheckFailure` when missing.
    public func groupType() throws(VectorCheckFailure) -> String { try group.string("type") }
}

// MARK: - Building files (used by flitz-vectors)

/// A test case being generated; `tcId` and `result` are added by `VectorFileBuilder`.
public struct VectorTest: Sendable {
    /// Expected outcome.
    public enum Result: Sendable {
        /// Accepted, with the outputs in `fields`.
        case valid
        /// Refused with this error; `stateUnchanged` adds `"state": "unchanged"` (stateful operations).
        case invalid(VectorErrorRef, stateUnchanged: Bool = false)
    }
    /// One line saying what the case exercises.
    public var comment: String
    /// Flag names, each defined in the file's `notes`.
    public var flags: [String]
    /// Expected outcome.
    public var result: Result
    /// Inputs and expected outputs.
    public var fields: [String: JSONValue]

    /// Creates a test case.
    public init(_ comment: String, flags: [String] = [], result: Result = .valid, _ fields: [String: JSONValue]) {
        self.comment = comment
        self.flags = flags
        self.result = result
        self.fields = fields
    }
}

/// A group of tests of one `type` sharing the inputs in `fields`.
public struct VectorGroup: Sendable {
    /// What the tests do (the verifier dispatches on it).
    public var type: String
    /// Shared inputs.
    public var fields: [String: JSONValue]
    /// The tests, in order.
    public var tests: [VectorTest]

    /// Creates a group.
    public init(type: String, fields: [String: JSONValue] = [:], tests: [VectorTest]) {
        self.type = type
        self.fields = fields
        self.tests = tests
    }
}

/// Assembles one vector file in the format of `vectors/README.md`: numbers the tests 1, 2, ... across the
/// file (`tcId`), counts them, and adds the profile.
public struct VectorFileBuilder: Sendable {
    /// Topic name (`vectors/<topic>.json`).
    public var topic: String
    /// What the file exercises.
    public var description: String
    /// The sections of `protocol/` it follows.
    public var specification: String
    /// Flag name → meaning.
    public var notes: [String: String]
    /// Every `SeededRandom` label the generator drew from, in first-use order.
    public var seeds: [String]
    /// The groups.
    public var groups: [VectorGroup]

    /// Creates a builder.
    public init(topic: String, description: String, specification: String, notes: [String: String] = [:], seeds: [String], groups: [VectorGroup]) {
        self.topic = topic
        self.description = description
        self.specification = specification
        self.notes = notes
        self.seeds = seeds
        self.groups = groups
    }

    /// The file as JSON.
    public func json() -> JSONValue {
        var tcId = 0
        let groupValues: [JSONValue] = groups.map { group in
            var object = group.fields
            object["type"] = .string(group.type)
            object["tests"] = .array(
                group.tests.map { test in
                    tcId += 1
                    var fields = test.fields
                    fields["tcId"] = .int(tcId)
                    fields["comment"] = .string(test.comment)
                    fields["flags"] = .array(test.flags.map { .string($0) })
                    switch test.result {
                    case .valid:
                        fields["result"] = .string("valid")
                    case .invalid(let error, let stateUnchanged):
                        fields["result"] = .string("invalid")
                        fields["error"] = error.json
                        if stateUnchanged { fields["state"] = .string("unchanged") }
                    }
                    return .object(fields)
                })
            return .object(object)
        }
        return .object([
            "formatVersion": .int(VectorVerifier.formatVersion),
            "topic": .string(topic),
            "description": .string(description),
            "specification": .string(specification),
            "profile": VectorProfile.json(seeds: seeds),
            "notes": .object(notes.mapValues { .string($0) }),
            "numberOfTests": .int(tcId),
            "testGroups": .array(groupValues),
        ])
    }
}

// MARK: - Profile

/// The profile block every file carries: algorithms, labels, limits, the generator and its randomness
/// (`vectors/README.md`, "Profile"). The verifier checks labels and limits against this build.
public enum VectorProfile {
    /// Labels and constants as ASCII text or hex, from the implementation's constants.
    static var labels: JSONValue {
        .object([
            "x3dhInfo": .string(String(decoding: ProtocolConstants.x3dhInfo, as: UTF8.self)),
            "rootKDFInfo": .string(String(decoding: ProtocolConstants.rootKDFInfo, as: UTF8.self)),
            "messageKeyInfo": .string(String(decoding: ProtocolConstants.messageKeyInfo, as: UTF8.self)),
            "deviceCertificateLabel": .string(String(decoding: SignedPayload.deviceCertificateLabel, as: UTF8.self)),
            "authenticationLabel": .string(String(decoding: SignedPayload.authenticationLabel, as: UTF8.self)),
            "safetyNumberLabel": .string(String(decoding: SafetyNumber.label, as: UTF8.self)),
            "safetyNumberScannablePrefix": .string(SafetyNumber.scannablePrefix),
            "x3dhPrefix": .hex(ProtocolConstants.x3dhPrefix),
            "zeroSalt": .hex(ProtocolConstants.zeroSalt),
            "messageKeyConstant": .hex(Data([ProtocolConstants.messageKeyConstant])),
            "chainKeyConstant": .hex(Data([ProtocolConstants.chainKeyConstant])),
        ])
    }

    /// Limits and sizes from the implementation's constants.
    static var limits: JSONValue {
        .object([
            "protocolVersion": .int(Int(ProtocolConstants.version)),
            "wireVersion": .uint(WireConstants.protocolVersion),
            "maxSkip": .uint(RatchetLimits.maxSkip),
            "maxStoredSkippedKeys": .int(RatchetLimits.maxStoredSkippedKeys),
            "maxPreviousReceivingKeys": .int(RatchetLimits.maxPreviousReceivingKeys),
            "contentPaddingBlock": .int(ProtocolConstants.contentPaddingBlock),
            "ratchetHeaderLength": .int(RatchetHeader.encodedLength),
            "minimumRatchetMessageLength": .int(DoubleRatchet.minimumMessageLength),
            "associatedDataLength": .int(X3DH.associatedDataLength),
            "nonceLength": .int(XChaCha20Poly1305.nonceLength),
            "tagLength": .int(XChaCha20Poly1305.tagLength),
            "hkdfMaxOutputLength": .int(HKDF.maxOutputLength),
            "maxFrameBytes": .int(WireConstants.maxFrameBytes),
            "maxCiphertextBytes": .int(WireConstants.maxCiphertextBytes),
            "idLength": .int(WireConstants.idLength),
        ])
    }

    /// The profile of a file whose generator drew from `seeds`.
    public static func json(seeds: [String]) -> JSONValue {
        .object([
            "algorithms": .object([
                "dh": .string("X25519 (RFC 7748), libsodium crypto_scalarmult; an all-zero output is an error"),
                "signature": .string("Ed25519 (RFC 8032, pure), libsodium crypto_sign_detached / crypto_sign_verify_detached"),
                "identityKeyToX25519": .string("crypto_sign_ed25519_pk_to_curve25519 / crypto_sign_ed25519_sk_to_curve25519"),
                "kdf": .string("HKDF-SHA-256 (RFC 5869)"),
                "mac": .string("HMAC-SHA-256 (RFC 2104)"),
                "aead": .string("XChaCha20-Poly1305-IETF, 24-byte nonce, 16-byte tag"),
                "fingerprintHash": .string("SHA-256"),
                "encoding": .string("protobuf proto3, canonical swift-protobuf serialization (flitz_session.proto, flitz_wire.proto)"),
            ]),
            "labels": labels,
            "limits": limits,
            "generator": .object([
                "program": .string("flitz-vectors (Sources/FlitzVectorGen)"),
                "command": .string("make vectors"),
                "check": .string("make vectors-check"),
            ]),
            "randomness": .object([
                "algorithm": .string("SeededRandom (vectors/README.md, \"Randomness\"; protocol/crypto.md section 10)"),
                "seeds": .array(seeds.map { .string($0) }),
            ]),
        ])
    }

    /// Checks a file's profile labels and limits against this build.
    /// - Throws: `VectorCheckFailure` naming the first difference.
    public static func verify(_ profile: JSONValue) throws(VectorCheckFailure) {
        for (section, expected) in [("labels", labels), ("limits", limits)] {
            let actual = try profile.object(section)
            guard case .object(let members) = expected else { continue }
            for (key, value) in members.sorted(by: { $0.key < $1.key }) {
                guard actual[key] == value else {
                    throw VectorCheckFailure("profile \(section).\(key) is \(actual[key].map { "\($0)" } ?? "missing"), this build has \(value)")
                }
            }
        }
    }
}
