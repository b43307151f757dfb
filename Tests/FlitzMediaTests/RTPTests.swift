import FlitzCrypto
import FlitzMedia
import Foundation
import Testing

/// RTP header layout and numbering (protocol/calls.md 6; RFC 3550 5.1).
@Suite struct RTPTests {
    @Test func theHeaderIsLaidOutAsRFC3550Says() throws {
        let header = RTPHeader(marker: true, payloadType: 0, sequenceNumber: 0xABCD, timestamp: 0x0102_0304, ssrc: 0xDEAD_BEEF)
        let bytes = header.packet(payload: [9, 8, 7])
        #expect(bytes == [0x80, 0x80, 0xAB, 0xCD, 0x01, 0x02, 0x03, 0x04, 0xDE, 0xAD, 0xBE, 0xEF, 9, 8, 7])
        let unmarked = RTPHeader(payloadType: 8, sequenceNumber: 1, timestamp: 2, ssrc: 3).packet(payload: [])
        #expect(unmarked == [0x80, 0x08, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3])
        #expect(try RTPPacket(parsing: bytes) == RTPPacket(header: header, payload: [9, 8, 7]))
    }

    @Test func parsingSkipsCSRCsExtensionAndPadding() throws {
        // V=2 P=1 X=1 CC=1, PT 0, seq 2, ts 3, ssrc 4, one CSRC, a one-word extension, payload [1, 2], 2 bytes padding.
        let bytes: [UInt8] = [0xB1, 0x00, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5,
                              0xBE, 0xDE, 0, 1, 0xAA, 0xBB, 0xCC, 0xDD, 1, 2, 0, 2]
        let packet = try RTPPacket(parsing: bytes)
        #expect(packet.payload == [1, 2])
        #expect(packet.header == RTPHeader(sequenceNumber: 2, timestamp: 3, ssrc: 4))
    }

    @Test func malformedPacketsAreRefused() {
        #expect(throws: MediaError.self) { try RTPPacket(parsing: [0x80, 0, 0]) }
        // Version 1.
        #expect(throws: MediaError.self) { try RTPPacket(parsing: [0x40] + [UInt8](repeating: 0, count: 11)) }
        // Four CSRCs announced, none present.
        #expect(throws: MediaError.self) { try RTPPacket(parsing: [0x84] + [UInt8](repeating: 0, count: 13)) }
        // Padding longer than the packet.
        #expect(throws: MediaError.self) { try RTPPacket(parsing: [0xA0] + [UInt8](repeating: 0, count: 11) + [200]) }
        // Padding length 0.
        #expect(throws: MediaError.self) { try RTPPacket(parsing: [0xA0] + [UInt8](repeating: 0, count: 12)) }
    }

    @Test func theSequencerMarksTheFirstPacketAndWraps() throws {
        var sequencer = RTPSequencer(ssrc: 42, initialSequenceNumber: 65_535, initialTimestamp: UInt32.max - 100)
        let first = try RTPPacket(parsing: sequencer.packet(payload: MuLaw.silencePayload))
        let second = try RTPPacket(parsing: sequencer.packet(payload: MuLaw.silencePayload))
        #expect(first.header == RTPHeader(marker: true, sequenceNumber: 65_535, timestamp: UInt32.max - 100, ssrc: 42))
        #expect(second.header == RTPHeader(marker: false, sequenceNumber: 0, timestamp: 59, ssrc: 42))
        #expect(second.payload == MuLaw.silencePayload)
    }

    @Test func randomSequencersDrawFromTheirSource() {
        let a = RTPSequencer(random: SeededRandom(label: "rtp a"))
        let b = RTPSequencer(random: SeededRandom(label: "rtp a"))
        let c = RTPSequencer(random: SeededRandom(label: "rtp c"))
        #expect(a.next == b.next)
        #expect(a.next != c.next)
        #expect(a.next.marker && a.next.payloadType == 0)
    }
}

/// Receive statistics: loss from the extended sequence range (RFC 3550 A.3) and jitter (RFC 3550 A.8).
@Suite struct RTPReceiveStatisticsTests {
    @Test func evenArrivalsHaveNoJitterAndLossCountsGaps() {
        var statistics = RTPReceiveStatistics()
        for index in 0..<100 where index % 10 != 5 {
            // Sequence numbers 65 500 ... 65 535, 0 ... 63: the range wraps.
            statistics.record(sequenceNumber: UInt16(truncatingIfNeeded: 65_500 + index),
                              timestamp: UInt32(160 * index), arrival: .milliseconds(20 * index))
        }
        #expect(statistics.received == 90)
        #expect(statistics.expected == 100)
        #expect(statistics.lost == 10)
        #expect(statistics.jitterMilliseconds == 0)
        let call = statistics.callStatistics(packetsSent: 7)
        #expect(call.packetsSent == 7 && call.packetsReceived == 90 && call.packetsLost == 10 && call.jitterMs == 0)
    }

    /// Every second packet arrives 10 ms late: each |D| is 80 timestamp units (10 ms, once late, once early), so J
    /// converges to 80 units = 10 ms by J += (|D| - J) / 16.
    @Test func jitterFollowsRFC3550A8() {
        var statistics = RTPReceiveStatistics()
        var expected = 0.0
        for index in 0..<400 {
            let late = index % 2 == 1 ? 10 : 0
            statistics.record(sequenceNumber: UInt16(index), timestamp: UInt32(160 * index),
                              arrival: .milliseconds(20 * index + late))
            if index > 0 { expected += (80 - expected) / 16 }
        }
        #expect(abs(statistics.jitterMilliseconds - expected * 1000 / 8000) < 1e-9)
        #expect(abs(statistics.jitterMilliseconds - 10) < 0.001)
    }

    @Test func reorderedAndDroppedPackets() {
        var statistics = RTPReceiveStatistics()
        for sequence: UInt16 in [10, 12, 11, 13] {
            statistics.record(sequenceNumber: sequence, timestamp: UInt32(sequence) * 160, arrival: .milliseconds(20 * Int(sequence)))
        }
        statistics.recordDropped()
        #expect(statistics.expected == 4 && statistics.lost == 0 && statistics.dropped == 1)
        #expect(statistics.highestExtendedSequence == 13)
        #expect(RTPReceiveStatistics().expected == 0)
    }
}
