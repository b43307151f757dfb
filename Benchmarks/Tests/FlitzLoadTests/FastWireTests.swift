import FlitzWire
import Foundation
import NIOCore
import Testing

import FlitzLoad

/// The hand-written encoder and parser against SwiftProtobuf's (`FrameCodec`), which the relay uses.
@Suite struct FastWireTests {
    static func data(_ id: EnvelopeID) -> Data {
        var bytes = Data()
        withUnsafeBytes(of: id.hi.bigEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: id.lo.bigEndian) { bytes.append(contentsOf: $0) }
        return bytes
    }

    // Request ids and device ids across varint lengths; ciphertexts across length-prefix sizes.
    @Test(arguments: [(UInt64(1), UInt32(1), 8), (300, 0, 127), (70_000, 200, 128), (UInt64.max, UInt32.max, 20_000)])
    func submitIsByteIdenticalToFrameCodec(requestID: UInt64, deviceID: UInt32, size: Int) {
        let ciphertext = Data((0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) })
        let ids = [EnvelopeID(hi: 1, lo: 2), EnvelopeID(hi: .max, lo: 0x0102_0304_0506_0708), EnvelopeID(hi: 0, lo: 0)]
        let timestamps: [UInt64] = [0, 42, .max]
        var buffer = ByteBuffer()
        FastWire.writeSubmit(
            into: &buffer, requestID: requestID, ids: ids, timestamps: timestamps, handle: Array("bob.example_1".utf8), deviceID: deviceID,
            ciphertext: ByteBuffer(bytes: ciphertext))

        var submit = WireSubmit()
        submit.envelopes = zip(ids, timestamps).map { id, timestamp in
            var envelope = WireOutgoingEnvelope()
            envelope.envelopeID = Self.data(id)
            envelope.recipientHandle = "bob.example_1"
            envelope.recipientDeviceID = deviceID
            var body = ciphertext
            withUnsafeBytes(of: timestamp.littleEndian) { body.replaceSubrange(0..<8, with: $0) }
            envelope.ciphertext = body
            return envelope
        }
        #expect(Data(buffer.readableBytesView) == FrameCodec.encode(WireFrame(requestID: requestID, body: .submit(submit))))
    }

    @Test(arguments: [0, 1, 7, 1_000])
    func acknowledgeIsByteIdenticalToFrameCodec(count: Int) {
        let envelopes = (0..<count).map { EnvelopeID(hi: UInt64($0), lo: ~UInt64($0)) }
        let receipts = (0..<(count / 2)).map { EnvelopeID(hi: ~UInt64($0), lo: UInt64($0) << 7) }
        var buffer = ByteBuffer()
        FastWire.writeAcknowledge(into: &buffer, requestID: 99, envelopeIDs: envelopes, receiptIDs: receipts)
        var acknowledge = WireAcknowledge()
        acknowledge.envelopeIds = envelopes.map(Self.data)
        acknowledge.receiptIds = receipts.map(Self.data)
        #expect(Data(buffer.readableBytesView) == FrameCodec.encode(WireFrame(requestID: 99, body: .acknowledge(acknowledge))))
    }

    /// Records what the parser reports, as text lines.
    final class Transcript: InboundFrameVisitor {
        var lines: [String] = []
        func submitOutcome(requestID: UInt64, envelopeID: EnvelopeID, errorCode: Int) { lines.append("outcome \(requestID) \(envelopeID.hi) \(envelopeID.lo) \(errorCode)") }
        func submitResultEnd(requestID: UInt64) { lines.append("submitResult \(requestID)") }
        func deliveredEnvelope(id: EnvelopeID, timestamp: UInt64) { lines.append("envelope \(id.hi) \(id.lo) \(timestamp)") }
        func deliveredReceipt(id: EnvelopeID) { lines.append("receipt \(id.hi) \(id.lo)") }
        func deliverEnd() { lines.append("deliver") }
        func ok(requestID: UInt64) { lines.append("ok \(requestID)") }
        func queueDrained() { lines.append("drained") }
        func error(requestID: UInt64, code: Int) { lines.append("error \(requestID) \(code)") }
        func authenticateResult(requestID: UInt64) { lines.append("authenticated \(requestID)") }
        func otherFrame(requestID: UInt64, bodyField: Int) { lines.append("other \(requestID) \(bodyField)") }
    }

    func parse(_ frame: WireFrame) throws -> [String] {
        let transcript = Transcript()
        try FastWire.parse(ByteBuffer(bytes: FrameCodec.encode(frame)), visitor: transcript)
        return transcript.lines
    }

    @Test func parsesWhatTheRelaySends() throws {
        var accepted = WireSubmitOutcome()
        accepted.envelopeID = Self.data(EnvelopeID(hi: 5, lo: 6))
        accepted.acceptedAtMs = 1_800_000_000_000
        accepted.expiresAtMs = 1_800_086_400_000
        var refused = WireSubmitOutcome()
        refused.envelopeID = Self.data(EnvelopeID(hi: 7, lo: 8))
        refused.error.code = .rateLimited
        refused.error.retryAfterMs = 250
        var result = WireSubmitResult()
        result.outcomes = [accepted, refused]
        #expect(try parse(WireFrame(requestID: 300, body: .submitResult(result))) == ["outcome 300 5 6 0", "outcome 300 7 8 20", "submitResult 300"])

        var envelope = WireEnvelope()
        envelope.envelopeID = Self.data(EnvelopeID(hi: 9, lo: 10))
        envelope.senderHandle = "alice"
        envelope.senderDeviceID = 1
        envelope.recipientDeviceID = 1
        envelope.acceptedAtMs = 1
        envelope.expiresAtMs = 2
        envelope.ciphertext = Data([0x2A, 0, 0, 0, 0, 0, 0, 1, 0xFF])
        var short = envelope
        short.ciphertext = Data([1, 2, 3])
        var receipt = WireReceipt()
        receipt.receiptID = Self.data(EnvelopeID(hi: 11, lo: 12))
        receipt.envelopeID = Self.data(EnvelopeID(hi: 9, lo: 10))
        receipt.kind = .delivered
        receipt.recipientHandle = "bob"
        var deliver = WireDeliver()
        deliver.envelopes = [envelope, short]
        deliver.receipts = [receipt]
        #expect(try parse(WireFrame(requestID: 0, body: .deliver(deliver))) == [
            "envelope 9 10 \(UInt64(0x0100_0000_0000_002A))", "envelope 9 10 0", "receipt 11 12", "deliver",
        ])

        #expect(try parse(WireFrame(requestID: 4, body: .ok(WireOk()))) == ["ok 4"])
        #expect(try parse(WireFrame(requestID: 0, body: .queueDrained(WireQueueDrained()))) == ["drained"])
        #expect(try parse(WireFrame.error(.queueFull, "full", requestID: 8)) == ["error 8 18"])
        #expect(try parse(WireFrame(requestID: 2, body: .authenticateResult(WireAuthenticateResult()))) == ["authenticated 2"])
        #expect(try parse(WireFrame(requestID: 0, body: .challenge(WireChallenge()))) == ["other 0 10"])
    }

    @Test func refusesTruncatedFrames() throws {
        var deliver = WireDeliver()
        var envelope = WireEnvelope()
        envelope.envelopeID = Data(repeating: 1, count: 16)
        envelope.ciphertext = Data(repeating: 2, count: 100)
        deliver.envelopes = [envelope]
        let bytes = FrameCodec.encode(WireFrame(requestID: 0, body: .deliver(deliver)))
        #expect(throws: FastWireError.self) { try FastWire.parse(ByteBuffer(bytes: bytes.prefix(bytes.count - 10)), visitor: Transcript()) }
        // A 15-byte id is not an id.
        envelope.envelopeID = Data(repeating: 1, count: 15)
        deliver.envelopes = [envelope]
        #expect(throws: FastWireError.self) {
            try FastWire.parse(ByteBuffer(bytes: FrameCodec.encode(WireFrame(requestID: 0, body: .deliver(deliver)))), visitor: Transcript())
        }
    }
}
