import FlitzFuzzSupport
import FlitzProtocol
import FlitzWire
import Foundation
import SwiftProtobuf

/// libFuzzer entry point: bytes as an `Envelope`, an `OutgoingEnvelope`, and as an envelope's ciphertext.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEnvelope(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    EnvelopeFuzzer.run(fuzzData(start, count))
    return 0
}

/// libFuzzer calls this once before the first input.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    prepareFixtures()
    EnvelopeFuzzer.run(Data())
    return 0
}

/// Envelopes and what the client makes of their ciphertext. The same input is tried three ways so that
/// seeds of either envelope kind and bare `SessionMessage` bytes all reach `IncomingSessionMessage(parsing:)`.
enum EnvelopeFuzzer {
    static func run(_ bytes: Data) {
        if let envelope = try? WireEnvelope(serializedBytes: bytes) {
            checkProtobufRoundTrip(envelope, "Envelope")
            ciphertext(envelope.ciphertext)
        }
        if let outgoing = try? WireOutgoingEnvelope(serializedBytes: bytes) {
            checkProtobufRoundTrip(outgoing, "OutgoingEnvelope")
        }
        ciphertext(bytes)
    }

    /// `IncomingSessionMessage(parsing:)` and the client's next step for each kind.
    static func ciphertext(_ bytes: Data) {
        let incoming: IncomingSessionMessage
        do {
            incoming = try IncomingSessionMessage(parsing: bytes)
        } catch {
            fuzzCheck(!error.description.isEmpty, "empty error description")
            return
        }
        switch try? IncomingSessionMessage(parsing: bytes.offsetSlice) {
        case .preKey(let message)?:
            guard case .preKey(let first) = incoming, first.baseKey == message.baseKey, first.ratchetMessage == message.ratchetMessage else {
                fatalError("fuzz invariant violated: a slice of the session message parses differently")
            }
        case .ratchet(let message)?:
            guard case .ratchet(let first) = incoming, first == message else {
                fatalError("fuzz invariant violated: a slice of the session message parses differently")
            }
        case nil:
            fatalError("fuzz invariant violated: a slice of a valid session message does not parse")
        }
        switch incoming {
        case .preKey(let message): ClientReceive.preKeyMessage(message)
        case .ratchet(let message): ClientReceive.ratchetMessage(message)
        }
    }
}
