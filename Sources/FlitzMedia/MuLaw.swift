/// G.711 µ-law (PCMU) as ITU-T G.711 specifies it, in the segment/table form of its reference implementation:
/// a 16-bit linear sample is reduced to 14 bits, clipped to 8 159, biased by 33, and coded as a sign bit, a 3-bit
/// segment and a 4-bit step, all inverted. Decoding uses a 256-entry table. This is an audio codec, not a
/// cryptographic primitive (protocol/calls.md 6).
public enum MuLaw {
    /// Samples per second (8 000 Hz).
    public static let sampleRate = 8000
    /// Samples (and µ-law bytes) per 20 ms packet.
    public static let samplesPerPacket = 160
    /// The µ-law byte of a zero sample; what a side with nothing to play sends (protocol/calls.md 6).
    public static let silence: UInt8 = 0xFF

    private static let segmentEnds: [Int32] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]

    /// Decoded value of every µ-law byte: the linear sample at the middle of its step (±32 124 at the extremes).
    public static let decodeTable: [Int16] = (0...255).map { (byte: Int) -> Int16 in
        let value = ~UInt8(byte)
        var magnitude = (Int32(value & 0x0F) << 3) + 0x84
        magnitude <<= Int32((value & 0x70) >> 4)
        return Int16(value & 0x80 != 0 ? 0x84 - magnitude : magnitude - 0x84)
    }

    /// Encodes one 16-bit linear sample.
    public static func encode(_ sample: Int16) -> UInt8 {
        var value = Int32(sample) >> 2
        let mask: UInt8
        if value < 0 {
            value = -value
            mask = 0x7F
        } else {
            mask = 0xFF
        }
        value = min(value, 8159) + (0x84 >> 2)
        guard let segment = segmentEnds.firstIndex(where: { value <= $0 }) else { return 0x7F ^ mask }
        let code = UInt8(segment << 4) | UInt8((value >> Int32(segment + 1)) & 0x0F)
        return code ^ mask
    }

    /// Decodes one µ-law byte.
    public static func decode(_ byte: UInt8) -> Int16 { decodeTable[Int(byte)] }

    /// Encodes samples one by one.
    public static func encode(_ samples: some Collection<Int16>) -> [UInt8] { samples.map { encode($0) } }

    /// Decodes bytes one by one.
    public static func decode(_ bytes: some Collection<UInt8>) -> [Int16] { bytes.map { decodeTable[Int($0)] } }
}
