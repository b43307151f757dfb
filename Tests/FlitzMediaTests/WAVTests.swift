import FlitzMedia
import Foundation
import Testing

/// WAV reading (16-bit PCM mono 8 kHz only), playout in 20 ms µ-law packets, and the recorder's layout by RTP
/// timestamp (protocol/calls.md 6).
@Suite struct WAVTests {
    static func temporaryURL(_ name: String) -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("flitz-wav-\(UUID().uuidString)-\(name)")
    }

    /// A WAV header with the given format fields, and `dataBytes` of data.
    static func wav(format: UInt16 = 1, channels: UInt16 = 1, rate: UInt32 = 8000, bits: UInt16 = 16,
                    dataBytes: [UInt8] = [1, 0, 2, 0], extraChunk: Bool = false) -> Data {
        var d = Data("RIFF".utf8)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        u32(0)
        d.append(contentsOf: Array("WAVEfmt ".utf8))
        u32(16); u16(format); u16(channels); u32(rate); u32(rate * UInt32(channels) * UInt32(bits) / 8)
        u16(channels * bits / 8); u16(bits)
        if extraChunk {
            d.append(contentsOf: Array("LIST".utf8)); u32(3); d.append(contentsOf: [1, 2, 3, 0])
        }
        d.append(contentsOf: Array("data".utf8)); u32(UInt32(dataBytes.count)); d.append(contentsOf: dataBytes)
        return d
    }

    @Test func readsTheSupportedFormatAndSkipsOtherChunks() throws {
        #expect(try WAVAudio(parsing: Self.wav()).samples == [1, 2])
        #expect(try WAVAudio(parsing: Self.wav(dataBytes: [0xFF, 0x7F, 0x00, 0x80], extraChunk: true)).samples == [32767, -32768])
        let audio = WAVAudio(samples: [0, -1, 300, Int16.min, Int16.max])
        #expect(try WAVAudio(parsing: audio.encoded) == audio)
        #expect(audio.encoded.count == WAVAudio.headerLength + 10)
    }

    @Test(arguments: [
        (UInt16(1), UInt16(2), UInt32(8000), UInt16(16)),
        (1, 1, 44_100, 16),
        (1, 1, 8000, 8),
        (3, 1, 8000, 32),
    ])
    func otherFormatsAreRefusedNamingTheConversion(format: UInt16, channels: UInt16, rate: UInt32, bits: UInt16) {
        do {
            _ = try WAVAudio(parsing: Self.wav(format: format, channels: channels, rate: rate, bits: bits), name: "song.wav")
            Issue.record("accepted an unsupported format")
        } catch {
            #expect(error.code == .unsupportedAudio)
            #expect(error.message.contains("song.wav"))
            #expect(error.message.contains("ffmpeg -i IN -ac 1 -ar 8000 -c:a pcm_s16le OUT.wav"))
        }
    }

    @Test func brokenFilesAreUnreadable() {
        for bytes in [Data("not a wav".utf8), Data("RIFF\0\0\0\0WAVE".utf8), Data("RIFF\0\0\0\0WAVEdata\u{4}\0\0\0abcd".utf8)] {
            let error = #expect(throws: MediaError.self) { try WAVAudio(parsing: bytes) }
            #expect(error?.code == .unreadableAudio)
        }
        let missing = #expect(throws: MediaError.self) { try WAVAudio(contentsOf: Self.temporaryURL("missing.wav")) }
        #expect(missing?.code == .unreadableAudio)
    }

    @Test func playoutCutsPacketsOf160AndPadsTheLast() {
        let samples = (0..<400).map { Int16($0 * 10) }
        var playout = PCMUPlayout(audio: WAVAudio(samples: samples))
        let first = playout.nextPayload()
        #expect(first == MuLaw.encode(samples[0..<160]))
        #expect(playout.nextPayload() == MuLaw.encode(samples[160..<320]))
        #expect(!playout.isFinished)
        let last = playout.nextPayload()
        #expect(last == MuLaw.encode(samples[320..<400]) + [UInt8](repeating: 0xFF, count: 80))
        #expect(playout.isFinished)
        #expect(playout.nextPayload() == nil)
    }

    /// Packets out of order, a lost one (silence), a timestamp wrap and a duplicate: the file holds each packet at
    /// its timestamp's place; the header is complete after `finish`.
    @Test func theRecorderLaysOutByTimestamp() throws {
        let url = Self.temporaryURL("record.wav")
        defer { try? FileManager.default.removeItem(at: url) }
        let recorder = try WAVRecorder(url: url)
        let start = UInt32.max - 159 - 160  // packet 2 is at 0 after the wrap
        func payload(_ n: Int) -> [UInt8] { [UInt8](repeating: UInt8(0x80 + n), count: 160) }
        // Packets 0, 2, 1, 4 (3 lost), 2 again.
        for n in [0, 2, 1, 4, 2] { recorder.record(payload: payload(n), timestamp: start &+ UInt32(160 * n)) }
        #expect(try recorder.finish() == 5 * 160)
        #expect(try recorder.finish() == 5 * 160)
        recorder.record(payload: payload(5), timestamp: start &+ 800)
        let audio = try WAVAudio(contentsOf: url)
        #expect(audio.samples.count == 800)
        for n in [0, 1, 2, 4] {
            #expect(Array(audio.samples[160 * n..<160 * (n + 1)]) == MuLaw.decode(payload(n)), "packet \(n)")
        }
        #expect(audio.samples[480..<640].allSatisfy { $0 == 0 })
        // The header's sizes are exact.
        let bytes = try Data(contentsOf: url)
        #expect(bytes.count == 44 + 1600)
        #expect(bytes[4..<8].elementsEqual([0x64, 0x06, 0, 0]))  // 36 + 1600
        #expect(bytes[40..<44].elementsEqual([0x40, 0x06, 0, 0]))  // 1600
    }

    @Test func theRecorderIgnoresEarlyPacketsAndBoundsGaps() throws {
        let url = Self.temporaryURL("gaps.wav")
        defer { try? FileManager.default.removeItem(at: url) }
        let recorder = try WAVRecorder(url: url)
        let loud = [UInt8](repeating: 0x80, count: 160)
        recorder.record(payload: loud, timestamp: 10_000)
        recorder.record(payload: loud, timestamp: 9_840)  // before the first: ignored
        recorder.record(payload: loud, timestamp: 10_000 + 1_000_000)  // a jump of 125 s: placed at the end
        #expect(try recorder.finish() == 320)
        #expect(try WAVAudio(contentsOf: url).samples == MuLaw.decode(loud + loud))
    }

    @Test func anEmptyRecordingIsAValidFile() throws {
        let url = Self.temporaryURL("empty.wav")
        defer { try? FileManager.default.removeItem(at: url) }
        let recorder = try WAVRecorder(url: url)
        #expect(try WAVAudio(contentsOf: url).samples.isEmpty)
        #expect(try recorder.finish() == 0)
        #expect(try WAVAudio(contentsOf: url).samples.isEmpty)
        #expect(throws: MediaError.self) { try WAVRecorder(url: URL(fileURLWithPath: "/nonexistent-dir/x.wav")) }
    }
}
