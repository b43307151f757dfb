import FlitzCrypto
import Foundation

/// A JSON value as vector files use it: integers only (no fractions), strings, booleans, arrays,
/// objects and null. Encoded with sorted keys so a file is stable byte for byte (`vectors/README.md`).
public indirect enum JSONValue: Codable, Hashable, Sendable {
    /// A string (also lowercase hex for bytes, and 64-bit wire integers in decimal).
    case string(String)
    /// An integer; vectors have no fractional numbers.
    case int(Int)
    /// A boolean.
    case bool(Bool)
    /// An array.
    case array([JSONValue])
    /// An object; encoded with its keys sorted.
    case object([String: JSONValue])
    /// `null`: an absent optional value.
    case null

    /// Decodes any JSON value except a fractional number.
    /// - Throws: `DecodingError.dataCorrupted` for a fractional number.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int.self) {
            self = .int(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else if let value = try? container.decode([String: JSONValue].self) {
            self = .object(value)
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a vector JSON value (fractional number?)")
        }
    }

    /// Encodes the value as the JSON it stands for.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }

    /// Lowercase hex of `data`.
    public static func hex(_ data: Data) -> JSONValue { .string(data.hexString) }
    /// Lowercase hex of secret bytes (vectors publish them on purpose).
    public static func hex(_ secret: SecretBytes) -> JSONValue { .string(secret.unsafeData.hexString) }
    /// An unsigned 32-bit counter or id.
    public static func uint(_ value: UInt32) -> JSONValue { .int(Int(value)) }
    /// An array of lowercase hex strings.
    public static func hexArray(_ items: [Data]) -> JSONValue { .array(items.map { .hex($0) }) }

    /// Pretty-printed, key-sorted UTF-8 with a trailing newline: the committed form of a vector file.
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        var data = try encoder.encode(self)
        data.append(0x0a)
        return data
    }

    /// Parses a vector file's bytes.
    /// - Throws: `DecodingError` when the bytes are not JSON of the vector subset.
    public static func decode(_ data: Data) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: data)
    }
}

// MARK: - Reading fields while verifying

/// Why a vector did not verify: a missing or malformed field, or a value the implementation computes
/// differently. `reason` is one line for the CLI table.
public struct VectorCheckFailure: Error, Sendable, CustomStringConvertible {
    /// One-line explanation.
    public let reason: String
    /// Creates a failure.
    public init(_ reason: String) { self.reason = reason }
    /// The reason.
    public var description: String { reason }
}

extension JSONValue {
    /// The member `key` of an object, or nil (also for non-objects).
    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { return members[key] }
        return nil
    }

    /// The member `key`.
    /// - Throws: `VectorCheckFailure` when it is missing.
    public func field(_ key: String) throws(VectorCheckFailure) -> JSONValue {
        guard let value = self[key] else { throw VectorCheckFailure("missing field \"\(key)\"") }
        return value
    }

    /// Whether `key` is present and not null.
    public func has(_ key: String) -> Bool {
        switch self[key] {
        case nil, .null?: false
        default: true
        }
    }

    /// The string member `key`.
    /// - Throws: `VectorCheckFailure` when missing or not a string.
    public func string(_ key: String) throws(VectorCheckFailure) -> String {
        guard case .string(let value) = try field(key) else { throw VectorCheckFailure("field \"\(key)\" is not a string") }
        return value
    }

    /// The bytes of the lowercase-hex member `key`.
    /// - Throws: `VectorCheckFailure` when missing or not lowercase hex of whole bytes.
    public func hex(_ key: String) throws(VectorCheckFailure) -> Data {
        try Self.parseHex(try string(key), key)
    }

    /// The integer member `key`.
    /// - Throws: `VectorCheckFailure` when missing or not an integer.
    public func int(_ key: String) throws(VectorCheckFailure) -> Int {
        guard case .int(let value) = try field(key) else { throw VectorCheckFailure("field \"\(key)\" is not an integer") }
        return value
    }

    /// The member `key` as a `UInt32`.
    /// - Throws: `VectorCheckFailure` when missing or out of range.
    public func uint32(_ key: String) throws(VectorCheckFailure) -> UInt32 {
        let value = try int(key)
        guard let out = UInt32(exactly: value) else { throw VectorCheckFailure("field \"\(key)\" is not a uint32") }
        return out
    }

    /// The boolean member `key`.
    /// - Throws: `VectorCheckFailure` when missing or not a boolean.
    public func bool(_ key: String) throws(VectorCheckFailure) -> Bool {
        guard case .bool(let value) = try field(key) else { throw VectorCheckFailure("field \"\(key)\" is not a boolean") }
        return value
    }

    /// The array member `key`.
    /// - Throws: `VectorCheckFailure` when missing or not an array.
    public func array(_ key: String) throws(VectorCheckFailure) -> [JSONValue] {
        guard case .array(let value) = try field(key) else { throw VectorCheckFailure("field \"\(key)\" is not an array") }
        return value
    }

    /// The array-of-hex member `key`.
    /// - Throws: `VectorCheckFailure` when missing or an element is not lowercase hex.
    public func hexArray(_ key: String) throws(VectorCheckFailure) -> [Data] {
        var out: [Data] = []
        for item in try array(key) {
            guard case .string(let text) = item else { throw VectorCheckFailure("field \"\(key)\" has a non-string element") }
            out.append(try Self.parseHex(text, key))
        }
        return out
    }

    /// The object member `key` (as a `JSONValue`).
    /// - Throws: `VectorCheckFailure` when missing or not an object.
    public func object(_ key: String) throws(VectorCheckFailure) -> JSONValue {
        let value = try field(key)
        guard case .object = value else { throw VectorCheckFailure("field \"\(key)\" is not an object") }
        return value
    }

    private static func parseHex(_ text: String, _ key: String) throws(VectorCheckFailure) -> Data {
        let lowercase = text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
        guard lowercase, let data = Data(hexString: text) else {
            throw VectorCheckFailure("field \"\(key)\" is not lowercase hex of whole bytes")
        }
        return data
    }
}

// MARK: - Comparisons

/// Throws unless `actual == expected`.
/// - Throws: `VectorCheckFailure` naming `what`.
public func check<T: Equatable>(_ actual: T, _ expected: T, _ what: String) throws(VectorCheckFailure) {
    guard actual == expected else { throw VectorCheckFailure("\(what): expected \(expected), computed \(actual)") }
}

/// Throws unless the bytes are equal; the message shows short hex of both.
/// - Throws: `VectorCheckFailure` naming `what`.
public func check(_ actual: Data, _ expected: Data, _ what: String) throws(VectorCheckFailure) {
    guard actual == expected else {
        throw VectorCheckFailure("\(what): expected \(abbreviated(expected)), computed \(abbreviated(actual))")
    }
}

/// Throws unless the secret bytes equal `expected`.
/// - Throws: `VectorCheckFailure` naming `what`.
public func check(_ actual: SecretBytes, _ expected: Data, _ what: String) throws(VectorCheckFailure) {
    try check(actual.unsafeData, expected, what)
}

/// Throws with `reason` unless `condition` holds.
/// - Throws: `VectorCheckFailure`.
public func require(_ condition: Bool, _ reason: @autoclosure () -> String) throws(VectorCheckFailure) {
    guard condition else { throw VectorCheckFailure(reason()) }
}

/// Hex of at most 24 bytes with the total length, for one-line reasons.
func abbreviated(_ data: Data) -> String {
    data.count <= 24 ? "\(data.hexString) (\(data.count) bytes)" : "\(data.prefix(24).hexString)... (\(data.count) bytes)"
}
