import FlitzCrypto
import FlitzProtocol
import Foundation

/// Session state in vectors (`vectors/README.md`, "Session state"): the `SessionRecord` bytes of
/// `protocol/crypto.md` §8, which the verifier restores and compares byte for byte, and the ratchet
/// part spelled out for reading.
public enum SessionStateJSON {
    /// `{"sessionRecord": hex, "ratchet": {...}}` for serialized `SessionRecord` bytes.
    /// - Throws: when `record` is not a `SessionRecord`.
    public static func state(record: Data) throws -> JSONValue {
        let proto = try ProtoSessionRecord(serializedBytes: record)
        return .object(["sessionRecord": .hex(record), "ratchet": ratchet(proto.ratchet)])
    }

    /// The `RatchetState` fields as JSON, plus `sendingRatchetKey` (the public key of
    /// `sendingRatchetPrivateKey`); absent keys are `""`.
    public static func ratchet(_ state: ProtoRatchetState) -> JSONValue {
        let sendingPublic = (try? X25519PrivateKey(rawRepresentation: SecretBytes(state.sendingRatchetPrivateKey)))?.publicKey.rawRepresentation
        return .object([
            "sendingRatchetPrivateKey": .hex(state.sendingRatchetPrivateKey),
            "sendingRatchetKey": .hex(sendingPublic ?? Data()),
            "receivingRatchetKey": .hex(state.receivingRatchetKey),
            "rootKey": .hex(state.rootKey),
            "sendingChainKey": .hex(state.sendingChainKey),
            "receivingChainKey": .hex(state.receivingChainKey),
            "sendingCounter": .uint(state.sendingCounter),
            "receivingCounter": .uint(state.receivingCounter),
            "previousSendingCounter": .uint(state.previousSendingCounter),
            "skippedMessageKeys": .array(
                state.skippedMessageKeys.map {
                    .object(["ratchetKey": .hex($0.ratchetKey), "counter": .uint($0.counter), "messageKey": .hex($0.messageKey)])
                }),
            "previousReceivingRatchetKeys": .hexArray(state.previousReceivingRatchetKeys),
        ])
    }

    /// Reads a state object: its record bytes and parsed record, after checking that `ratchet` spells
    /// out the record's ratchet state.
    /// - Throws: `VectorCheckFailure` when they disagree or the record does not parse.
    static func read(_ json: JSONValue, _ what: String) throws -> (record: Data, proto: ProtoSessionRecord) {
        let record = try json.hex("sessionRecord")
        guard let proto = try? ProtoSessionRecord(serializedBytes: record) else { throw VectorCheckFailure("\(what).sessionRecord does not parse") }
        try checkJSON(ratchet(proto.ratchet), try json.object("ratchet"), "\(what).ratchet")
        return (record, proto)
    }
}

/// Throws at the first path where two JSON values differ.
/// - Throws: `VectorCheckFailure` naming the path.
func checkJSON(_ actual: JSONValue, _ expected: JSONValue, _ path: String) throws(VectorCheckFailure) {
    switch (actual, expected) {
    case (.object(let a), .object(let e)):
        for key in Set(a.keys).union(e.keys).sorted() {
            guard let av = a[key] else { throw VectorCheckFailure("\(path).\(key): in the vector, not computed") }
            guard let ev = e[key] else { throw VectorCheckFailure("\(path).\(key): computed, not in the vector") }
            try checkJSON(av, ev, "\(path).\(key)")
        }
    case (.array(let a), .array(let e)):
        try require(a.count == e.count, "\(path): \(e.count) elements expected, \(a.count) computed")
        for (index, (av, ev)) in zip(a, e).enumerated() { try checkJSON(av, ev, "\(path)[\(index)]") }
    default:
        try require(actual == expected, "\(path): expected \(expected), computed \(actual)")
    }
}
