import FlitzCrypto
import Foundation

/// A JSON value written with sorted keys, so output is stable byte for byte.
indirect enum JSONValue: Encodable {
    case string(String)
    case int(Int)
    case bool(Bool)
    case array([JSONValue])
    case object([String: JSONValue])
    case null

    func encode(to encoder: any Encoder) throws {
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
    static func hex(_ data: Data) -> JSONValue { .string(data.hexString) }
    /// Lowercase hex of secret bytes (vectors publish them on purpose).
    static func hex(_ secret: SecretBytes) -> JSONValue { .string(secret.unsafeData.hexString) }
    /// An unsigned counter.
    static func uint(_ value: UInt32) -> JSONValue { .int(Int(value)) }

    /// Pretty-printed, key-sorted UTF-8 with a trailing newline.
    func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        var data = try encoder.encode(self)
        data.append(0x0a)
        return data
    }
}
