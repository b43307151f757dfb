import NIOCore

/// A 16-byte envelope or receipt id as two big-endian 64-bit halves, so the hot path never allocates
/// a `Data` per id. The generator's own envelope ids are `hi` = sequence number, `lo` = run tag ‖ pair index.
public struct EnvelopeID: Hashable, Sendable {
    /// Bytes 0–7, big-endian.
    public var hi: UInt64
    /// Bytes 8–15, big-endian.
    public var lo: UInt64

    /// An id from its two halves.
    public init(hi: UInt64, lo: UInt64) {
        self.hi = hi
        self.lo = lo
    }
}

/// Why `FastWire.parse` gave up on a received message.
public struct FastWireError: Error, CustomStringConvertible {
    /// What is wrong with the bytes.
    public let description: String
    init(_ description: String) { self.description = description }
}

/// What the hot-path parser found in one received frame (`protocol/flitz_wire.proto`), delivered item by
/// item so that nothing is allocated per envelope. Called on the connection's event loop.
public protocol InboundFrameVisitor: AnyObject {
    /// One `SubmitOutcome` of a `SubmitResult` answering `requestID`; `errorCode` 0 means accepted.
    func submitOutcome(requestID: UInt64, envelopeID: EnvelopeID, errorCode: Int)
    /// The end of a `SubmitResult` (after its outcomes).
    func submitResultEnd(requestID: UInt64)
    /// One `Envelope` of a `Deliver`; `timestamp` is the first 8 ciphertext bytes, little-endian (0 if shorter).
    func deliveredEnvelope(id: EnvelopeID, timestamp: UInt64)
    /// One `Receipt` of a `Deliver`.
    func deliveredReceipt(id: EnvelopeID)
    /// The end of a `Deliver` frame.
    func deliverEnd()
    /// `Ok` answering `requestID`.
    func ok(requestID: UInt64)
    /// `QueueDrained`.
    func queueDrained()
    /// `Error` (answering `requestID`, 0 when unsolicited) with its `ErrorCode` number.
    func error(requestID: UInt64, code: Int)
    /// `AuthenticateResult` answering `requestID`.
    func authenticateResult(requestID: UInt64)
    /// Any other body kind (its `Frame` field number); the caller decodes it with SwiftProtobuf if it cares.
    func otherFrame(requestID: UInt64, bodyField: Int)
}

/// Hand-written protobuf for the frames a load generator sends and reads per envelope: `Submit` and
/// `Acknowledge` out, `SubmitResult`, `Deliver`, `Ok`, `Error`, `QueueDrained` in. Byte-identical to
/// `FrameCodec.encode` for the fields it writes (field-number order, proto3 defaults omitted; checked by
/// `FastWireTests`), and several times cheaper than building `WireFrame` values, so that at tens of
/// thousands of envelopes per second the relay, not the generator, runs out of CPU first.
public enum FastWire {
    // Frame field numbers (flitz_wire.proto).
    static let fieldError = 11, fieldAuthenticateResult = 13, fieldSubmitResult = 15, fieldDeliver = 16
    static let fieldQueueDrained = 17, fieldOk = 19, fieldSubmit = 35, fieldAcknowledge = 36

    /// Appends one `Frame{version 1, request_id, submit: Submit{envelopes}}` for envelopes to one device.
    /// `ciphertext` is copied per envelope with its first 8 bytes replaced by `timestamps[i]` (little-endian).
    /// - Parameters:
    ///   - ids: envelope ids, 1 to 100.
    ///   - handle: the recipient handle (3–32 bytes of UTF-8).
    ///   - ciphertext: the opaque body, at least 8 bytes.
    public static func writeSubmit(
        into buffer: inout ByteBuffer, requestID: UInt64, ids: some Collection<EnvelopeID>, timestamps: some Collection<UInt64>,
        handle: [UInt8], deviceID: UInt32, ciphertext: ByteBuffer
    ) {
        precondition(ciphertext.readableBytes >= 8 && ids.count == timestamps.count)
        let envelopeLength = envelopeBodyLength(handle: handle.count, deviceID: deviceID, ciphertext: ciphertext.readableBytes)
        let submitLength = ids.count * (1 + varintSize(UInt64(envelopeLength)) + envelopeLength)
        writeFrameHeader(into: &buffer, requestID: requestID, bodyField: fieldSubmit, bodyLength: submitLength)
        for (id, timestamp) in zip(ids, timestamps) {
            buffer.writeInteger(UInt8(0x0A))  // Submit.envelopes
            writeVarint(into: &buffer, UInt64(envelopeLength))
            buffer.writeInteger(UInt8(0x0A))  // OutgoingEnvelope.envelope_id
            buffer.writeInteger(UInt8(16))
            buffer.writeInteger(id.hi)
            buffer.writeInteger(id.lo)
            buffer.writeInteger(UInt8(0x12))  // recipient_handle
            writeVarint(into: &buffer, UInt64(handle.count))
            buffer.writeBytes(handle)
            if deviceID != 0 {
                buffer.writeInteger(UInt8(0x18))  // recipient_device_id
                writeVarint(into: &buffer, UInt64(deviceID))
            }
            buffer.writeInteger(UInt8(0x2A))  // ciphertext
            writeVarint(into: &buffer, UInt64(ciphertext.readableBytes))
            buffer.writeInteger(timestamp, endianness: .little)
            buffer.writeImmutableBuffer(ciphertext.getSlice(at: ciphertext.readerIndex + 8, length: ciphertext.readableBytes - 8)!)
        }
    }

    /// Appends one `Frame{version 1, request_id, acknowledge: Acknowledge{envelope_ids, receipt_ids}}`
    /// (at most 1000 ids of each kind, the relay's limit).
    public static func writeAcknowledge(
        into buffer: inout ByteBuffer, requestID: UInt64, envelopeIDs: some Collection<EnvelopeID>, receiptIDs: some Collection<EnvelopeID>
    ) {
        let length = (envelopeIDs.count + receiptIDs.count) * 18
        writeFrameHeader(into: &buffer, requestID: requestID, bodyField: fieldAcknowledge, bodyLength: length)
        for id in envelopeIDs {
            buffer.writeInteger(UInt8(0x0A))
            buffer.writeInteger(UInt8(16))
            buffer.writeInteger(id.hi)
            buffer.writeInteger(id.lo)
        }
        for id in receiptIDs {
            buffer.writeInteger(UInt8(0x12))
            buffer.writeInteger(UInt8(16))
            buffer.writeInteger(id.hi)
            buffer.writeInteger(id.lo)
        }
    }

    /// Parses one received frame and reports its parts to `visitor`. Relies on SwiftProtobuf's field order
    /// (request_id before the body), as the relay encodes.
    /// - Throws: `FastWireError` when the bytes are not a well-formed frame.
    public static func parse(_ buffer: ByteBuffer, visitor: some InboundFrameVisitor) throws(FastWireError) {
        try buffer.withUnsafeReadableBytes { bytes throws(FastWireError) in
            var reader = ProtoReader(bytes: bytes, range: 0..<bytes.count)
            var requestID: UInt64 = 0
            while let (field, wire) = try reader.nextTag() {
                switch (field, wire) {
                case (2, 0):
                    requestID = try reader.varint()
                case (_, 2) where field >= 10:
                    let body = try reader.lengthDelimited()
                    try parseBody(field: field, ProtoReader(bytes: bytes, range: body), requestID: requestID, visitor: visitor)
                default:
                    try reader.skip(wire: wire)
                }
            }
        }
    }

    private static func parseBody(field: Int, _ body: ProtoReader, requestID: UInt64, visitor: some InboundFrameVisitor) throws(FastWireError) {
        var body = body
        switch field {
        case fieldSubmitResult:
            while let (f, wire) = try body.nextTag() {
                guard f == 1, wire == 2 else { try body.skip(wire: wire); continue }
                var outcome = ProtoReader(bytes: body.bytes, range: try body.lengthDelimited())
                var id = EnvelopeID(hi: 0, lo: 0)
                var code = 0
                while let (g, w) = try outcome.nextTag() {
                    if g == 1, w == 2 {
                        id = try outcome.id()
                    } else if g == 4, w == 2 {
                        var error = ProtoReader(bytes: body.bytes, range: try outcome.lengthDelimited())
                        code = -1  // an Error without a code is still a refusal
                        while let (h, x) = try error.nextTag() {
                            if h == 1, x == 0 { code = Int(try error.varint()) } else { try error.skip(wire: x) }
                        }
                    } else {
                        try outcome.skip(wire: w)
                    }
                }
                visitor.submitOutcome(requestID: requestID, envelopeID: id, errorCode: code)
            }
            visitor.submitResultEnd(requestID: requestID)
        case fieldDeliver:
            while let (f, wire) = try body.nextTag() {
                guard wire == 2, f == 1 || f == 2 else { try body.skip(wire: wire); continue }
                var item = ProtoReader(bytes: body.bytes, range: try body.lengthDelimited())
                var id = EnvelopeID(hi: 0, lo: 0)
                var timestamp: UInt64 = 0
                while let (g, w) = try item.nextTag() {
                    if g == 1, w == 2 {
                        id = try item.id()  // Envelope.envelope_id or Receipt.receipt_id
                    } else if f == 1, g == 7, w == 2 {
                        let ciphertext = try item.lengthDelimited()
                        if ciphertext.count >= 8 { timestamp = item.littleEndian64(at: ciphertext.lowerBound) }
                    } else {
                        try item.skip(wire: w)
                    }
                }
                if f == 1 { visitor.deliveredEnvelope(id: id, timestamp: timestamp) } else { visitor.deliveredReceipt(id: id) }
            }
            visitor.deliverEnd()
        case fieldOk:
            visitor.ok(requestID: requestID)
        case fieldQueueDrained:
            visitor.queueDrained()
        case fieldAuthenticateResult:
            visitor.authenticateResult(requestID: requestID)
        case fieldError:
            var code = 0
            while let (f, wire) = try body.nextTag() {
                if f == 1, wire == 0 { code = Int(try body.varint()) } else { try body.skip(wire: wire) }
            }
            visitor.error(requestID: requestID, code: code)
        default:
            visitor.otherFrame(requestID: requestID, bodyField: field)
        }
    }

    /// The body field number of a frame (0 if none), for the cold path that decodes with SwiftProtobuf.
    public static func bodyField(of buffer: ByteBuffer) -> Int {
        (try? buffer.withUnsafeReadableBytes { bytes throws(FastWireError) -> Int in
            var reader = ProtoReader(bytes: bytes, range: 0..<bytes.count)
            while let (field, wire) = try reader.nextTag() {
                if field >= 10, wire == 2 { return field }
                try reader.skip(wire: wire)
            }
            return 0
        }) ?? 0
    }

    private static func envelopeBodyLength(handle: Int, deviceID: UInt32, ciphertext: Int) -> Int {
        18 + 1 + varintSize(UInt64(handle)) + handle + (deviceID != 0 ? 1 + varintSize(UInt64(deviceID)) : 0)
            + 1 + varintSize(UInt64(ciphertext)) + ciphertext
    }

    private static func writeFrameHeader(into buffer: inout ByteBuffer, requestID: UInt64, bodyField: Int, bodyLength: Int) {
        buffer.writeInteger(UInt8(0x08))  // version = 1
        buffer.writeInteger(UInt8(0x01))
        if requestID != 0 {
            buffer.writeInteger(UInt8(0x10))
            writeVarint(into: &buffer, requestID)
        }
        writeVarint(into: &buffer, UInt64(bodyField << 3 | 2))
        writeVarint(into: &buffer, UInt64(bodyLength))
    }

    static func varintSize(_ value: UInt64) -> Int {
        var value = value
        var size = 1
        while value >= 0x80 {
            value >>= 7
            size += 1
        }
        return size
    }

    static func writeVarint(into buffer: inout ByteBuffer, _ value: UInt64) {
        var value = value
        while value >= 0x80 {
            buffer.writeInteger(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        buffer.writeInteger(UInt8(value))
    }
}

/// A bounds-checked protobuf reader over borrowed bytes.
struct ProtoReader {
    let bytes: UnsafeRawBufferPointer
    var offset: Int
    let end: Int

    init(bytes: UnsafeRawBufferPointer, range: Range<Int>) {
        self.bytes = bytes
        offset = range.lowerBound
        end = range.upperBound
    }

    /// The next (field number, wire type), or nil at the end.
    mutating func nextTag() throws(FastWireError) -> (Int, Int)? {
        guard offset < end else { return nil }
        let tag = try varint()
        return (Int(tag >> 3), Int(tag & 7))
    }

    mutating func varint() throws(FastWireError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while offset < end, shift < 64 {
            let byte = bytes[offset]
            offset += 1
            result |= UInt64(byte & 0x7F) << shift
            if byte < 0x80 { return result }
            shift += 7
        }
        throw FastWireError("truncated varint")
    }

    mutating func lengthDelimited() throws(FastWireError) -> Range<Int> {
        let length = try varint()
        guard length <= UInt64(end - offset) else { throw FastWireError("length beyond the message") }
        let range = offset..<(offset + Int(length))
        offset = range.upperBound
        return range
    }

    /// A 16-byte id field's value.
    mutating func id() throws(FastWireError) -> EnvelopeID {
        let range = try lengthDelimited()
        guard range.count == 16 else { throw FastWireError("id of \(range.count) bytes, expected 16") }
        return EnvelopeID(hi: bigEndian64(at: range.lowerBound), lo: bigEndian64(at: range.lowerBound + 8))
    }

    func bigEndian64(at index: Int) -> UInt64 {
        UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self))
    }

    func littleEndian64(at index: Int) -> UInt64 {
        UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self))
    }

    mutating func skip(wire: Int) throws(FastWireError) {
        switch wire {
        case 0: _ = try varint()
        case 1: try advance(8)
        case 2: _ = try lengthDelimited()
        case 5: try advance(4)
        default: throw FastWireError("unsupported wire type \(wire)")
        }
    }

    private mutating func advance(_ count: Int) throws(FastWireError) {
        guard end - offset >= count else { throw FastWireError("truncated fixed-width field") }
        offset += count
    }
}
