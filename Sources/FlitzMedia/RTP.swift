import FlitzCrypto
import Foundation

/// The fixed RTP header of protocol/calls.md 6 (RFC 3550 5.1): version 2, no padding, no extension, no CSRC.
///
/// Layout (12 bytes, big-endian): `V=2 P=0 X=0 CC=0` (0x80), `M | PT` (marker bit and 7-bit payload type), sequence
/// number (u16), timestamp (u32), SSRC (u32).
public struct RTPHeader: Sendable, Hashable {
    /// Bytes in the fixed header.
    public static let length = 12
    /// RTP payload type of PCMU (RFC 3551).
    public static let pcmuPayloadType: UInt8 = 0

    /// Set on the first packet of a call (protocol/calls.md 6).
    public var marker: Bool
    /// 0 to 127; 0 for PCMU.
    public var payloadType: UInt8
    /// Increments by one per packet, wrapping from 65 535 to 0.
    public var sequenceNumber: UInt16
    /// In units of the codec's clock (8 000 Hz for PCMU).
    public var timestamp: UInt32
    /// The sender's synchronisation source (random per call).
    public var ssrc: UInt32

    /// A header with the given fields.
    /// - Parameter payloadType: 0 to 127 (masked to 7 bits when encoded).
    public init(marker: Bool = false, payloadType: UInt8 = RTPHeader.pcmuPayloadType, sequenceNumber: UInt16,
                timestamp: UInt32, ssrc: UInt32) {
        self.marker = marker
        self.payloadType = payloadType
        self.sequenceNumber = sequenceNumber
        self.timestamp = timestamp
        self.ssrc = ssrc
    }

    /// The 12 header bytes followed by `payload`: a complete RTP packet ready for `SRTPSession.protect`.
    public func packet(payload: some Collection<UInt8>) -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(Self.length + payload.count)
        bytes.append(0x80)
        bytes.append((marker ? 0x80 : 0) | (payloadType & 0x7F))
        bytes.append(UInt8(sequenceNumber >> 8))
        bytes.append(UInt8(sequenceNumber & 0xFF))
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8((timestamp >> UInt32(shift)) & 0xFF)) }
        for shift in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8((ssrc >> UInt32(shift)) & 0xFF)) }
        bytes.append(contentsOf: payload)
        return bytes
    }
}

/// A parsed RTP packet (RFC 3550 5.1): its header and payload.
public struct RTPPacket: Sendable, Hashable {
    /// The fixed header's fields.
    public var header: RTPHeader
    /// The payload, without CSRCs, header extension or padding.
    public var payload: [UInt8]

    /// A packet of `header` and `payload`.
    public init(header: RTPHeader, payload: [UInt8]) {
        self.header = header
        self.payload = payload
    }

    /// The encoded packet (always the fixed 12-byte header; see `RTPHeader.packet(payload:)`).
    public var bytes: [UInt8] { header.packet(payload: payload) }

    /// Parses an RTP packet, e.g. the output of `SRTPSession.unprotect`. CSRCs, a header extension and padding are
    /// accepted from peers and skipped (version 1 of the protocol never sends them).
    /// - Throws: `MediaError` `.srtp` when the packet is shorter than its header says, the version is not 2, or the
    ///   padding length is impossible.
    public init(parsing bytes: [UInt8]) throws(MediaError) {
        guard bytes.count >= RTPHeader.length else {
            throw MediaError(.srtp, "RTP packet of \(bytes.count) bytes is shorter than its 12-byte header")
        }
        guard bytes[0] >> 6 == 2 else { throw MediaError(.srtp, "RTP version \(bytes[0] >> 6) is not 2") }
        let hasPadding = bytes[0] & 0x20 != 0
        let hasExtension = bytes[0] & 0x10 != 0
        let csrcCount = Int(bytes[0] & 0x0F)
        var offset = RTPHeader.length + 4 * csrcCount
        if hasExtension {
            guard bytes.count >= offset + 4 else { throw MediaError(.srtp, "RTP header extension is truncated") }
            let words = Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            offset += 4 + 4 * words
        }
        var end = bytes.count
        if hasPadding {
            let padding = Int(bytes[bytes.count - 1])
            guard padding >= 1 else { throw MediaError(.srtp, "RTP padding length is 0") }
            end -= padding
        }
        guard offset <= end else { throw MediaError(.srtp, "RTP packet is shorter than its header says") }
        func u32(_ at: Int) -> UInt32 {
            UInt32(bytes[at]) << 24 | UInt32(bytes[at + 1]) << 16 | UInt32(bytes[at + 2]) << 8 | UInt32(bytes[at + 3])
        }
        header = RTPHeader(
            marker: bytes[1] & 0x80 != 0, payloadType: bytes[1] & 0x7F,
            sequenceNumber: UInt16(bytes[2]) << 8 | UInt16(bytes[3]), timestamp: u32(4), ssrc: u32(8))
        payload = Array(bytes[offset..<end])
    }
}

/// The sending side's RTP numbering for one call (protocol/calls.md 6): a random SSRC, random initial sequence number
/// and timestamp, the marker bit on the first packet, sequence +1 and timestamp +`samplesPerPacket` per packet
/// (wrapping modulo 2^16 and 2^32).
public struct RTPSequencer: Sendable {
    /// This side's SSRC (the send `SRTPSession` is created for it).
    public let ssrc: UInt32
    /// The payload type of every packet (0, PCMU).
    public let payloadType: UInt8
    /// Timestamp increment per packet (160 for 20 ms of 8 kHz audio).
    public let samplesPerPacket: UInt32
    /// The header the next packet gets.
    public private(set) var next: RTPHeader

    /// Starts a stream with the given numbers (for vectors and tests).
    public init(ssrc: UInt32, initialSequenceNumber: UInt16, initialTimestamp: UInt32,
                payloadType: UInt8 = RTPHeader.pcmuPayloadType, samplesPerPacket: UInt32 = UInt32(MuLaw.samplesPerPacket)) {
        self.ssrc = ssrc
        self.payloadType = payloadType
        self.samplesPerPacket = samplesPerPacket
        next = RTPHeader(marker: true, payloadType: payloadType, sequenceNumber: initialSequenceNumber,
                         timestamp: initialTimestamp, ssrc: ssrc)
    }

    /// Starts a stream with a random SSRC, sequence number and timestamp drawn from `random` (10 bytes).
    public init(random: some RandomSource, payloadType: UInt8 = RTPHeader.pcmuPayloadType,
                samplesPerPacket: UInt32 = UInt32(MuLaw.samplesPerPacket)) {
        let bytes = [UInt8](random.bytes(10))
        func u32(_ at: Int) -> UInt32 {
            UInt32(bytes[at]) << 24 | UInt32(bytes[at + 1]) << 16 | UInt32(bytes[at + 2]) << 8 | UInt32(bytes[at + 3])
        }
        self.init(ssrc: u32(0), initialSequenceNumber: UInt16(bytes[4]) << 8 | UInt16(bytes[5]),
                  initialTimestamp: u32(6), payloadType: payloadType, samplesPerPacket: samplesPerPacket)
    }

    /// The next RTP packet carrying `payload`, advancing the numbering.
    public mutating func packet(payload: some Collection<UInt8>) -> [UInt8] {
        let bytes = next.packet(payload: payload)
        next.marker = false
        next.sequenceNumber &+= 1
        next.timestamp &+= samplesPerPacket
        return bytes
    }

    /// Advances the timestamp by one packet's samples without a packet (nothing sent for that time); the sequence
    /// number and the marker bit stay for the next packet.
    public mutating func skipPacket() {
        next.timestamp &+= samplesPerPacket
    }
}
