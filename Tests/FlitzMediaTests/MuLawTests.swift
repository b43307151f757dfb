import FlitzMedia
import Testing

/// G.711 µ-law known values (ITU-T G.711 table 2a; the reference implementation's encoder).
@Suite struct MuLawTests {
    /// Linear samples and their codes, as the G.711 reference encoder (and CPython's audioop.lin2ulaw, which
    /// implements it) gives them.
    static let encodings: [(Int16, UInt8)] = [
        (0, 0xFF), (1, 0xFF), (-1, 0x7E), (-5, 0x7E), (8, 0xFE), (-8, 0x7E), (31, 0xFB), (100, 0xF2), (-100, 0x72),
        (1000, 0xCE), (-1000, 0x4E), (4000, 0xAF), (8000, 0xA0), (-8000, 0x20), (12345, 0x97), (-12345, 0x17),
        (30000, 0x82), (32124, 0x80), (32767, 0x80), (-32124, 0x00), (-32768, 0x00),
    ]

    /// Codes and their linear values (the middle of each step; audioop.ulaw2lin agrees).
    static let decodings: [(UInt8, Int16)] = [
        (0x00, -32124), (0x0F, -16764), (0x10, -15996), (0x40, -1884), (0x4E, -988), (0x7E, -8), (0x7F, 0),
        (0x80, 32124), (0x90, 15996), (0xAF, 4092), (0xCE, 988), (0xF0, 120), (0xFE, 8), (0xFF, 0),
    ]

    @Test func knownEncodings() {
        for (sample, code) in Self.encodings {
            #expect(MuLaw.encode(sample) == code, "sample \(sample)")
        }
        #expect(MuLaw.encode(Self.encodings.map(\.0)) == Self.encodings.map(\.1))
    }

    @Test func knownDecodings() {
        for (code, sample) in Self.decodings {
            #expect(MuLaw.decode(code) == sample, "code \(code)")
        }
        #expect(MuLaw.decode(Self.decodings.map(\.0)) == Self.decodings.map(\.1))
    }

    /// Decoding then encoding any byte gives it back (except the negative zero 0x7F, which reads as 0 = 0xFF).
    @Test func everyCodeRoundTrips() {
        for byte in UInt8.min...UInt8.max where byte != 0x7F {
            #expect(MuLaw.encode(MuLaw.decode(byte)) == byte, "code \(byte)")
        }
        #expect(MuLaw.encode(MuLaw.decode(0x7F)) == 0xFF)
    }

    /// Encoding is monotonic, and the round trip's error stays within a step of its segment (at most 1/16 of
    /// the magnitude, at least 16).
    @Test func quantisationErrorIsBounded() {
        var previous = MuLaw.encode(Int16.min)
        for sample in stride(from: Int(Int16.min), through: Int(Int16.max), by: 7) {
            let code = MuLaw.encode(Int16(sample))
            // Codes rise 0x00...0x7F for negatives (inverted), then 0xFF...0x80 for positives.
            let rank = { (c: UInt8) -> Int in c < 0x80 ? Int(c) : 0x80 + (0xFF - Int(c)) }
            #expect(rank(code) >= rank(previous))
            previous = code
            let error = abs(Int(MuLaw.decode(code)) - sample)
            #expect(error <= max(abs(sample) / 16, 16) || abs(sample) > 32_124, "sample \(sample)")
        }
    }

    @Test func silenceIsAPacketOf0xFF() {
        #expect(MuLaw.silencePayload.count == 160)
        #expect(MuLaw.silencePayload.allSatisfy { $0 == 0xFF })
        #expect(MuLaw.decode(MuLaw.silencePayload).allSatisfy { $0 == 0 })
    }
}
