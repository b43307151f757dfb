import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

// Helpers of the call tests (CallCommandTests.swift): a WAV of known tones, an independent G.711 µ-law reference,
// the frame comparison of what one side sent with what the other recorded, the search of the relay's files for
// what it must never see, and a coturn started by scripts/coturn.sh.

/// 16-bit PCM mono 8000 Hz audio: what calls send and record (protocol/calls.md 6).
enum TestAudio {
    static let sampleRate = 8000
    /// 20 ms.
    static let frameSamples = 160

    /// `seconds` of tones that change every 100 ms, each segment a different frequency (300 Hz + 53 Hz × its
    /// index, up to 40 segments, then again from 300 Hz at half the level), phase-continuous, with the amplitude
    /// rising from 6 000 to 12 000 across each segment (well inside µ-law's range; the ramp keeps a frequency whose
    /// period divides 20 ms from repeating a frame). No 20 ms frame repeats another, so only one alignment matches.
    static func tones(seconds: Double) -> [Int16] {
        let count = Int(seconds * Double(sampleRate))
        var samples: [Int16] = []
        samples.reserveCapacity(count)
        var phase = 0.0
        for index in 0..<count {
            let segment = index / (sampleRate / 10)
            let frequency = 300.0 + 53.0 * Double(segment % 40)
            let ramp = 0.5 + 0.5 * Double(index % (sampleRate / 10)) / Double(sampleRate / 10)
            let amplitude = (segment / 40 % 2 == 0 ? 12_000.0 : 6_000.0) * ramp
            samples.append(Int16((amplitude * sin(phase)).rounded()))
            phase += 2 * Double.pi * frequency / Double(sampleRate)
            if phase > 2 * Double.pi { phase -= 2 * Double.pi }
        }
        return samples
    }

    /// A canonical 44-byte-header WAV of `samples`.
    static func wav(_ samples: [Int16], sampleRate: Int = 8000, channels: Int = 1) -> Data {
        var data = Data()
        func u32(_ value: Int) { withUnsafeBytes(of: UInt32(value).littleEndian) { data.append(contentsOf: $0) } }
        func u16(_ value: Int) { withUnsafeBytes(of: UInt16(value).littleEndian) { data.append(contentsOf: $0) } }
        let bytes = samples.count * 2
        data.append(contentsOf: Array("RIFF".utf8))
        u32(36 + bytes)
        data.append(contentsOf: Array("WAVEfmt ".utf8))
        u32(16)
        u16(1)  // PCM
        u16(channels)
        u32(sampleRate)
        u32(sampleRate * channels * 2)
        u16(channels * 2)
        u16(16)
        data.append(contentsOf: Array("data".utf8))
        u32(bytes)
        for sample in samples { withUnsafeBytes(of: sample.littleEndian) { data.append(contentsOf: $0) } }
        return data
    }

    struct WAVError: Error, CustomStringConvertible {
        let description: String
    }

    /// The samples of a 16-bit PCM mono 8000 Hz WAV (any chunk order; the data chunk's declared size must fit).
    static func samples(ofWAV url: URL) throws -> [Int16] {
        let bytes = [UInt8](try Data(contentsOf: url))
        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> Int { u16(at) | u16(at + 2) << 16 }
        guard bytes.count >= 12, bytes[0..<4].elementsEqual("RIFF".utf8), bytes[8..<12].elementsEqual("WAVE".utf8) else {
            throw WAVError(description: "\(url.lastPathComponent) is not a RIFF/WAVE file")
        }
        var offset = 12
        var format: (tag: Int, channels: Int, rate: Int, bits: Int)?
        while offset + 8 <= bytes.count {
            let size = u32(offset + 4)
            let body = offset + 8
            if bytes[offset..<offset + 4].elementsEqual("fmt ".utf8), body + 16 <= bytes.count {
                format = (u16(body), u16(body + 2), u32(body + 4), u16(body + 14))
            } else if bytes[offset..<offset + 4].elementsEqual("data".utf8) {
                guard let format, format.tag == 1, format.channels == 1, format.rate == 8000, format.bits == 16 else {
                    throw WAVError(description: "\(url.lastPathComponent): not 16-bit PCM mono 8000 Hz: \(String(describing: format))")
                }
                guard body + size <= bytes.count, size % 2 == 0 else {
                    throw WAVError(description: "\(url.lastPathComponent): data chunk of \(size) bytes, file has \(bytes.count - body) after its header")
                }
                return stride(from: body, to: body + size, by: 2).map { Int16(bitPattern: UInt16(bytes[$0]) | UInt16(bytes[$0 + 1]) << 8) }
            }
            offset = body + size + (size & 1)
        }
        throw WAVError(description: "\(url.lastPathComponent) has no data chunk")
    }
}

/// G.711 µ-law, written here from the ITU-T G.711 segment rule (bias 0x84, clip 32 635) independently of
/// FlitzMedia's codec, so a fault there cannot cancel itself out in the comparison.
enum MuLawReference {
    static func encode(_ sample: Int16) -> UInt8 {
        let bias = 0x84, clip = 32_635
        var value = Int(sample)
        let sign = value < 0 ? 0x80 : 0
        if value < 0 { value = -value }
        value = min(value, clip) + bias
        var exponent = 7
        var mask = 0x4000
        while exponent > 0, value & mask == 0 {
            exponent -= 1
            mask >>= 1
        }
        let mantissa = (value >> (exponent + 3)) & 0x0F
        return ~UInt8(sign | exponent << 4 | mantissa)
    }

    static func decode(_ code: UInt8) -> Int16 {
        let inverted = Int(~code)
        let exponent = (inverted >> 4) & 0x07
        let mantissa = inverted & 0x0F
        let magnitude = ((mantissa << 3) + 0x84) << exponent - 0x84
        return Int16(inverted & 0x80 != 0 ? -magnitude : magnitude)
    }

    /// A position on µ-law's monotonic scale: −127 ... 127 (both zeros are 0). Neighbouring codes differ by 1.
    static func level(_ code: UInt8) -> Int {
        let inverted = Int(~code)
        let magnitude = inverted & 0x7F
        return inverted & 0x80 != 0 ? -magnitude : magnitude
    }

    /// `samples` after a µ-law round trip: what a perfect call delivers.
    static func roundTrip(_ samples: [Int16]) -> [Int16] { samples.map { decode(encode($0)) } }
}

/// How much of what one side sent arrived in the other side's recording.
struct FrameComparison: CustomStringConvertible {
    /// 20 ms frames of the sent audio.
    let frames: Int
    /// Frames found in the recording at `offset`, every sample within one µ-law step of the round-tripped original.
    let matched: Int
    /// Samples the recording is shifted by relative to the sent audio (recording index = sent index + offset).
    let offset: Int

    var fraction: Double { frames == 0 ? 0 : Double(matched) / Double(frames) }
    var description: String { "\(matched) of \(frames) frames matched (\(String(format: "%.1f", fraction * 100)) %) at offset \(offset) samples" }

    /// Aligns `recorded` with `sent` (both 8000 Hz) at the offset where the most frames match: every whole-frame
    /// offset (RTP timestamps advance by 160 per frame, so a recording laid out by timestamp is shifted by whole
    /// frames) and the offset between the first non-silent samples of each. A frame matches when each of its 160
    /// samples is within one µ-law level of the round-tripped sent sample (encoders may round a boundary value
    /// either way).
    static func align(sent: [Int16], recorded: [Int16]) -> FrameComparison {
        let expected = MuLawReference.roundTrip(sent).map { MuLawReference.level(MuLawReference.encode($0)) }
        let got = recorded.map { MuLawReference.level(MuLawReference.encode($0)) }
        let frames = sent.count / TestAudio.frameSamples
        var offsets = Set(stride(from: -sent.count, through: recorded.count, by: TestAudio.frameSamples))
        if let first = expected.firstIndex(where: { $0 != 0 }), let firstGot = got.firstIndex(where: { abs($0) > 1 }) {
            offsets.insert(firstGot - first)
        }
        var best = FrameComparison(frames: frames, matched: 0, offset: 0)
        for offset in offsets.sorted() {
            var matched = 0
            for frame in 0..<frames {
                let start = frame * TestAudio.frameSamples
                let recordedStart = start + offset
                guard recordedStart >= 0, recordedStart + TestAudio.frameSamples <= got.count else { continue }
                var same = true
                for index in 0..<TestAudio.frameSamples where abs(expected[start + index] - got[recordedStart + index]) > 1 {
                    same = false
                    break
                }
                if same { matched += 1 }
            }
            if matched > best.matched { best = FrameComparison(frames: frames, matched: matched, offset: offset) }
        }
        return best
    }
}

/// Searches files for what the relay must never hold (protocol/calls.md 1): SDP-like text, candidate addresses,
/// key material. Returns one line per finding: which needle, in which file.
enum LeakSearch {
    struct Needle {
        let label: String
        let bytes: Data
        init(_ label: String, _ bytes: Data) {
            self.label = label
            self.bytes = bytes
        }
        init(_ label: String, text: String) { self.init(label, Data(text.utf8)) }
    }

    /// SDP lines and attributes a session description would carry, and the codec and profile names.
    static let sdpNeedles: [Needle] = ["v=0\r\n", "m=audio", "a=candidate", "a=rtpmap", "a=crypto", "a=fingerprint", "RTP/SAVP", "PCMU/8000", "typ host", "typ relay", "typ srflx", "AEAD_AES_256_GCM", "AES_CM_128_HMAC_SHA1_80"]
        .map { Needle("SDP-like \($0.debugDescription)", text: $0) }

    /// An address as text ("A.B.C.D:PORT" and "A.B.C.D PORT") and as the 6 raw bytes of a sockaddr's address and
    /// port (network order).
    static func addressNeedles(_ address: String, port: UInt16) -> [Needle] {
        var needles = [Needle("address \(address):\(port)", text: "\(address):\(port)"), Needle("address \(address) \(port)", text: "\(address) \(port)")]
        var raw = in_addr()
        if inet_pton(AF_INET, address, &raw) == 1 {
            var bytes = withUnsafeBytes(of: raw) { Data($0) }
            bytes.append(UInt8(port >> 8))
            bytes.append(UInt8(port & 0xFF))
            needles.append(Needle("address \(address):\(port) as raw bytes", bytes))
        }
        return needles
    }

    /// Key material as raw bytes, lowercase and uppercase hex, and standard base64.
    static func keyNeedles(_ label: String, _ key: Data) -> [Needle] {
        let hex = key.map { String(format: "%02x", $0) }.joined()
        return [Needle("\(label) (raw)", key), Needle("\(label) (hex)", text: hex), Needle("\(label) (HEX)", text: hex.uppercased()),
            Needle("\(label) (base64)", text: key.base64EncodedString())]
    }

    static func findings(in files: [URL], _ needles: [Needle]) -> [String] {
        let contents = files.compactMap { url in (try? Data(contentsOf: url)).map { (url, $0) } }
        return needles.flatMap { needle in
            contents.compactMap { url, data in data.range(of: needle.bytes) == nil ? nil : "\(needle.label) in \(url.lastPathComponent)" }
        }
    }
}

/// The IPv4 addresses of this machine's up interfaces other than loopback: host candidates the relay must not learn.
func nonLoopbackIPv4Addresses() -> [String] {
    var list: UnsafeMutablePointer<ifaddrs>?
    guard getifaddrs(&list) == 0, let first = list else { return [] }
    defer { freeifaddrs(list) }
    var addresses: [String] = []
    for entry in sequence(first: first, next: { $0.pointee.ifa_next }) {
        guard let address = entry.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET),
            entry.pointee.ifa_flags & UInt32(IFF_UP) != 0, entry.pointee.ifa_flags & UInt32(IFF_LOOPBACK) == 0
        else { continue }
        var buffer = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
            var raw = sin.pointee.sin_addr
            _ = inet_ntop(AF_INET, &raw, &buffer, socklen_t(buffer.count))
        }
        addresses.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
    return addresses
}

/// A real coturn on loopback for one test, started and stopped by scripts/coturn.sh with its state in the scratch
/// directory; the relay provisions credentials for it from the same shared secret.
final class Coturn {
    let state: URL
    let port: Int
    let secret: String
    let scratch: Scratch

    init(in scratch: Scratch) throws {
        self.scratch = scratch
        state = scratch.path("coturn")
        secret = (0..<24).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        let script = Binaries.packageRoot.appendingPathComponent("scripts/coturn.sh").path
        let started = try runProcess(URL(fileURLWithPath: "/bin/bash"), [script, "start", state.path, secret], in: scratch, timeout: 30)
        guard started.status == 0, let port = Int(started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw CoturnStartError(output: "\(started)")
        }
        self.port = port
    }

    /// The relay flags that make it hand out credentials for this coturn (protocol/calls.md 3.5).
    var relayArguments: [String] { ["--turn-uri", "turn:127.0.0.1:\(port)", "--turn-secret", secret] }

    /// coturn's own log: it sees only SRTP, never keys (checked by the tests too).
    var log: URL { state.appendingPathComponent("turnserver.log") }

    func stop() {
        let script = Binaries.packageRoot.appendingPathComponent("scripts/coturn.sh").path
        _ = try? runProcess(URL(fileURLWithPath: "/bin/bash"), [script, "stop", state.path], in: scratch, timeout: 30)
    }

    deinit { stop() }
}

struct CoturnStartError: Error, CustomStringConvertible {
    let output: String
    var description: String { "scripts/coturn.sh start failed:\n\(output)" }
}

/// One JSON object per stdout line (`--json` output), the non-JSON lines skipped.
func jsonObjects(_ stdout: String) -> [[String: Any]] {
    stdout.split(separator: "\n").compactMap { line in
        (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
    }
}
