import Foundation

/// Audio from or for a WAV file: 16-bit signed PCM, mono, 8 000 Hz, the only format calls play and record
/// (protocol/calls.md 6). Other formats are refused with the ffmpeg command that converts them.
public struct WAVAudio: Sendable, Hashable {
    /// The command that converts any audio file into the accepted format (shown in refusals).
    public static let conversionCommand = "ffmpeg -i IN -ac 1 -ar 8000 -c:a pcm_s16le OUT.wav"
    /// Bytes of the canonical header this module writes (RIFF, "fmt " of 16 bytes, "data").
    public static let headerLength = 44

    /// The samples, 8 000 per second.
    public var samples: [Int16]

    public init(samples: [Int16]) { self.samples = samples }

    /// Duration in seconds.
    public var duration: Double { Double(samples.count) / Double(MuLaw.sampleRate) }

    /// Reads a WAV file.
    /// - Throws: `MediaError` `.unreadableAudio` when the file cannot be read or is not a well-formed RIFF/WAVE file;
    ///   `.unsupportedAudio` when it is not 16-bit PCM mono 8 000 Hz (the message names the file and
    ///   `conversionCommand`).
    public init(contentsOf url: URL) throws(MediaError) {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw MediaError(.unreadableAudio, "cannot read \(url.path): \(error.localizedDescription)")
        }
        try self.init(parsing: data, name: url.path)
    }

    /// Parses the bytes of a WAV file; `name` appears in error messages. Chunks other than "fmt " and "data" are
    /// skipped; WAVE_FORMAT_EXTENSIBLE is accepted when its sub-format is PCM. A data chunk whose declared size runs
    /// past the end of the file (a recording cut short) is read up to the end of the file.
    /// - Throws: as `init(contentsOf:)`.
    public init(parsing data: Data, name: String = "the WAV file") throws(MediaError) {
        let bytes = [UInt8](data)
        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> Int { u16(at) | u16(at + 2) << 16 }
        func tag(_ at: Int) -> String { String(decoding: bytes[at..<at + 4], as: UTF8.self) }
        guard bytes.count >= 12, tag(0) == "RIFF", tag(8) == "WAVE" else {
            throw MediaError(.unreadableAudio, "\(name) is not a WAV file (no RIFF/WAVE header)")
        }
        var offset = 12
        var format: (code: Int, channels: Int, rate: Int, bits: Int)?
        var samples: [Int16]?
        while offset + 8 <= bytes.count, samples == nil {
            let id = tag(offset)
            let size = u32(offset + 4)
            let body = offset + 8
            switch id {
            case "fmt ":
                guard size >= 16, body + 16 <= bytes.count else {
                    throw MediaError(.unreadableAudio, "\(name) has a truncated fmt chunk")
                }
                var code = u16(body)
                if code == 0xFFFE, size >= 40, body + 26 <= bytes.count { code = u16(body + 24) }
                format = (code, u16(body + 2), u32(body + 4), u16(body + 14))
            case "data":
                guard let format else {
                    throw MediaError(.unreadableAudio, "\(name) has its data chunk before its fmt chunk")
                }
                guard format.code == 1, format.channels == 1, format.rate == MuLaw.sampleRate, format.bits == 16 else {
                    let kind = format.code == 1 ? "\(format.bits)-bit PCM" : "format \(format.code)"
                    throw MediaError(.unsupportedAudio, """
                        \(name) is \(kind), \(format.channels) channel(s), \(format.rate) Hz; calls need 16-bit PCM \
                        mono 8000 Hz. Convert it with: \(Self.conversionCommand)
                        """)
                }
                let end = min(body + size, bytes.count)
                let count = (end - body) / 2
                samples = (0..<count).map { Int16(bitPattern: UInt16(u16(body + 2 * $0))) }
            default:
                break
            }
            offset = body + size + (size & 1)
        }
        guard let samples else {
            throw MediaError(.unreadableAudio, "\(name) has no \(format == nil ? "fmt" : "data") chunk")
        }
        self.samples = samples
    }

    /// The canonical WAV encoding: a 44-byte header (PCM, mono, 8 000 Hz, 16 bits) and the samples little-endian.
    public var encoded: Data {
        var data = WAVAudio.header(sampleCount: samples.count)
        data.reserveCapacity(WAVAudio.headerLength + 2 * samples.count)
        for sample in samples {
            let value = UInt16(bitPattern: sample)
            data.append(UInt8(value & 0xFF))
            data.append(UInt8(value >> 8))
        }
        return data
    }

    /// Writes `encoded` to `url`, replacing the file.
    /// - Throws: `MediaError.unreadableAudio` when the file cannot be written.
    public func write(to url: URL) throws(MediaError) {
        do {
            try encoded.write(to: url)
        } catch {
            throw MediaError(.unreadableAudio, "cannot write \(url.path): \(error.localizedDescription)")
        }
    }

    /// The 44-byte header of a canonical file holding `sampleCount` samples.
    static func header(sampleCount: Int) -> Data {
        let dataBytes = UInt32(clamping: 2 * sampleCount)
        var data = Data()
        func append32(_ value: UInt32) { for shift in [0, 8, 16, 24] { data.append(UInt8((value >> UInt32(shift)) & 0xFF)) } }
        func append16(_ value: UInt16) { data.append(UInt8(value & 0xFF)); data.append(UInt8(value >> 8)) }
        data.append(contentsOf: Array("RIFF".utf8))
        append32(36 &+ dataBytes)
        data.append(contentsOf: Array("WAVEfmt ".utf8))
        append32(16)
        append16(1)  // PCM
        append16(1)  // mono
        append32(UInt32(MuLaw.sampleRate))
        append32(UInt32(MuLaw.sampleRate * 2))  // byte rate
        append16(2)  // block align
        append16(16)  // bits per sample
        data.append(contentsOf: Array("data".utf8))
        append32(dataBytes)
        return data
    }
}

/// What a call plays: 20 ms µ-law payloads cut from a WAV's samples, the last one padded with silence.
public struct PCMUPlayout: Sendable {
    private let samples: [Int16]
    private var position = 0

    /// Plays `audio` from its start.
    public init(audio: WAVAudio) { samples = audio.samples }

    /// Whether every sample has been handed out (what follows is silence).
    public var isFinished: Bool { position >= samples.count }

    /// The next 160-byte µ-law payload, or nil once the audio has ended (the caller sends `MuLaw.silencePayload`
    /// from then on and reports the end once).
    public mutating func nextPayload() -> [UInt8]? {
        guard position < samples.count else { return nil }
        let end = min(position + MuLaw.samplesPerPacket, samples.count)
        var payload = MuLaw.encode(samples[position..<end])
        payload.append(contentsOf: repeatElement(MuLaw.silence, count: MuLaw.samplesPerPacket - payload.count))
        position = end
        return payload
    }
}

extension MuLaw {
    /// 160 bytes of µ-law silence (0xFF): one 20 ms packet of nothing (protocol/calls.md 6).
    public static let silencePayload = [UInt8](repeating: MuLaw.silence, count: MuLaw.samplesPerPacket)
}

/// Records received PCMU to a WAV file (16-bit PCM mono 8 000 Hz), laid out by RTP timestamp: the first recorded
/// packet is sample 0, each packet goes at (its extended timestamp − the first's), gaps are silence (zero samples)
/// and a late packet overwrites the silence of its gap. The header's sizes are written by `finish()`; until then
/// they say 0 bytes, so a recording cut short by a crash is still readable by `WAVAudio` (which reads to the end).
///
/// A packet more than `maximumGap` samples past the end of the recording (a peer that jumped its timestamps) is
/// placed right at the end instead, so a misbehaving peer cannot make the file grow without audio. Packets before
/// the first are ignored. Thread-safe (a lock serialises calls).
public final class WAVRecorder: @unchecked Sendable {
    /// The largest gap filled with silence: 30 s of samples (beyond any media silence timeout of calls.md 7.3).
    public static let maximumGap: Int64 = 30 * Int64(MuLaw.sampleRate)

    /// The file being written.
    public let url: URL
    private let lock = NSLock()
    private var handle: FileHandle?
    /// Extended timestamp of the first packet (sample 0), and of the newest one (to extend the next timestamp).
    private var origin: Int64?
    private var newest: Int64 = 0
    /// Samples in the file so far.
    private var sampleCount: Int64 = 0
    private var firstError: MediaError?

    /// Creates (or truncates) the file at `url` and writes a header for an empty recording.
    /// - Throws: `MediaError.unreadableAudio` when the file cannot be created.
    public init(url: URL) throws(MediaError) {
        self.url = url
        do {
            try WAVAudio.header(sampleCount: 0).write(to: url)
            handle = try FileHandle(forWritingTo: url)
        } catch {
            throw MediaError(.unreadableAudio, "cannot create \(url.path): \(error.localizedDescription)")
        }
    }

    /// Seconds recorded so far (the file's length, gaps included).
    public var duration: Double { lock.withLock { Double(sampleCount) / Double(MuLaw.sampleRate) } }

    /// Writes one packet's µ-law `payload` at its RTP `timestamp`. Errors are kept and reported by `finish()`;
    /// after `finish()` packets are ignored.
    public func record(payload: [UInt8], timestamp: UInt32) {
        lock.withLock {
            guard let handle, firstError == nil, !payload.isEmpty else { return }
            let extended: Int64
            if origin == nil {
                extended = Int64(timestamp)
                origin = extended
            } else {
                extended = newest + Int64(Int32(bitPattern: timestamp &- UInt32(truncatingIfNeeded: newest)))
            }
            newest = max(newest, extended)
            var position = extended - origin!
            guard position >= 0 else { return }
            if position - sampleCount > Self.maximumGap {
                origin! += position - sampleCount
                position = sampleCount
            }
            var bytes = Data()
            if position > sampleCount {
                bytes.append(Data(count: Int(2 * (position - sampleCount))))
            }
            for sample in MuLaw.decode(payload) {
                let value = UInt16(bitPattern: sample)
                bytes.append(UInt8(value & 0xFF))
                bytes.append(UInt8(value >> 8))
            }
            let start = min(position, sampleCount)
            guard 2 * (start + Int64(bytes.count / 2)) < Int64(UInt32.max) - 36 else { return }
            do {
                try handle.seek(toOffset: UInt64(WAVAudio.headerLength) + UInt64(2 * start))
                try handle.write(contentsOf: bytes)
            } catch {
                firstError = MediaError(.unreadableAudio, "cannot write \(url.path): \(error.localizedDescription)")
                return
            }
            sampleCount = max(sampleCount, start + Int64(bytes.count / 2))
        }
    }

    /// Writes the header's sizes and closes the file. Idempotent.
    /// - Returns: the number of samples in the file.
    /// - Throws: `MediaError.unreadableAudio` for the first write error of the recording, or when the header cannot
    ///   be written.
    @discardableResult
    public func finish() throws(MediaError) -> Int {
        let result: Result<Int, MediaError> = lock.withLock {
            if let firstError { return .failure(firstError) }
            guard let handle else { return .success(Int(sampleCount)) }
            self.handle = nil
            do {
                try handle.seek(toOffset: 0)
                try handle.write(contentsOf: WAVAudio.header(sampleCount: Int(sampleCount)))
                try handle.close()
            } catch {
                let failure = MediaError(.unreadableAudio, "cannot finish \(url.path): \(error.localizedDescription)")
                firstError = failure
                return .failure(failure)
            }
            return .success(Int(sampleCount))
        }
        return try result.get()
    }

    deinit {
        try? handle?.close()
    }
}
