import Foundation
import Testing

/// The call tests' own helpers: a helper that cannot fail would make the call tests pass for nothing.
@Suite struct CallTestSupportTests {
    /// ITU-T G.711 µ-law values every implementation agrees on.
    @Test func muLawReferenceKnownValues() {
        #expect(MuLawReference.encode(0) == 0xFF)
        #expect(MuLawReference.encode(32_767) == 0x80)
        #expect(MuLawReference.encode(-32_768) == 0x00)
        #expect(MuLawReference.encode(-1) == 0x7F)
        #expect(MuLawReference.decode(0xFF) == 0)
        #expect(MuLawReference.decode(0x7F) == 0)
        #expect(MuLawReference.decode(0x80) == 32_124)
        #expect(MuLawReference.decode(0x00) == -32_124)
        #expect(MuLawReference.decode(0xF0) == 120)  // segment 0, mantissa 15: (15 << 3) + 0x84 - 0x84
        // Every code decodes to a value that encodes back to the same code (0x7F, negative zero, becomes 0xFF).
        for code in UInt8.min...UInt8.max where code != 0x7F {
            #expect(MuLawReference.encode(MuLawReference.decode(code)) == code, "code \(code)")
        }
        // Levels are monotonic in the decoded value.
        let sorted = (UInt8.min...UInt8.max).sorted { MuLawReference.decode($0) < MuLawReference.decode($1) }
        #expect(zip(sorted, sorted.dropFirst()).allSatisfy { MuLawReference.level($0) <= MuLawReference.level($1) })
    }

    @Test func tonesWAVRoundTripsAndEveryFrameDiffers() throws {
        let scratch = try Scratch()
        let samples = TestAudio.tones(seconds: 4)
        #expect(samples.count == 32_000)
        let file = scratch.path("tones.wav")
        try TestAudio.wav(samples).write(to: file)
        #expect(try TestAudio.samples(ofWAV: file) == samples)
        let frames = stride(from: 0, to: samples.count, by: 160).map { Array(samples[$0..<$0 + 160]) }
        #expect(Set(frames.map { $0.map(String.init).joined(separator: ",") }).count == frames.count)
        // A stereo or 44.1 kHz file is refused by the reader, as the CLI refuses it.
        try TestAudio.wav(samples, sampleRate: 44_100).write(to: file)
        #expect(throws: TestAudio.WAVError.self) { try TestAudio.samples(ofWAV: file) }
    }

    @Test func frameComparisonFindsTheOffsetAndCountsOnlyMatchingFrames() {
        let sent = TestAudio.tones(seconds: 2)  // 100 frames
        let roundTripped = MuLawReference.roundTrip(sent)
        // Laid out by RTP timestamp: 3 frames of silence before, the first 2 frames missing (sent before the path locked).
        var recorded = [Int16](repeating: 0, count: 3 * 160) + roundTripped.dropFirst(2 * 160)
        // 4 frames lost in the middle (silence in their place), 1 frame damaged by one sample.
        for index in (50 * 160 + 480)..<(54 * 160 + 480) { recorded[index] = 0 }
        recorded[70 * 160 + 480 + 7] = recorded[70 * 160 + 480 + 7] &+ 2000
        let comparison = FrameComparison.align(sent: sent, recorded: recorded)
        #expect(comparison.offset == 160)
        #expect(comparison.matched == 100 - 2 - 4 - 1, "\(comparison)")
        // Unrelated audio matches nothing.
        #expect(FrameComparison.align(sent: sent, recorded: TestAudio.tones(seconds: 2).map { $0 / 3 }).matched == 0)
        // Silence matches nothing.
        #expect(FrameComparison.align(sent: sent, recorded: [Int16](repeating: 0, count: 16_000)).matched == 0)
    }

    @Test func leakSearchFindsTextHexAndRawBytes() throws {
        let scratch = try Scratch()
        let file = scratch.path("relay.log")
        let key = Data((0..<32).map { UInt8($0 * 7 & 0xFF) })
        try (Data("connected 10.1.2.3:4567 ".utf8) + key + Data(" a=candidate".utf8)).write(to: file)
        let findings = LeakSearch.findings(
            in: [file], LeakSearch.sdpNeedles + LeakSearch.addressNeedles("10.1.2.3", port: 4567) + LeakSearch.keyNeedles("srtp key", key))
        #expect(findings.contains("SDP-like \"a=candidate\" in relay.log"))
        #expect(findings.contains("address 10.1.2.3:4567 in relay.log"))
        #expect(findings.contains("srtp key (raw) in relay.log"))
        #expect(!findings.contains { $0.hasPrefix("srtp key (hex)") })
        #expect(LeakSearch.findings(in: [file], LeakSearch.addressNeedles("10.1.2.3", port: 4568)).isEmpty)
    }
}
