import Crypto
import FlitzCrypto
@testable import FlitzMedia
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The next `.connected` path of `events` (skipping playback events); fails on `.failed`.
func connectedPath(_ events: AsyncStream<MediaEvent>) async throws -> MediaPath {
    for await event in events {
        switch event {
        case .connected(let path): return path
        case .failed(let reason): throw MediaError(.socket, "media failed: \(reason)")
        case .playbackFinished: continue
        }
    }
    throw MediaError(.socket, "events finished before connecting")
}

/// Two sessions' keys: what one sends with, the other receives with.
func keyPair(_ profile: SRTPProfile) -> (CallSRTPKeys, CallSRTPKeys) {
    func key() -> SRTPMasterKey {
        SRTPMasterKey(key: SecretBytes(SystemRandom().bytes(profile.keyLength)), salt: SecretBytes(SystemRandom().bytes(profile.saltLength)))
    }
    let aToB = key(), bToA = key()
    return (CallSRTPKeys(profile: profile, send: aToB, receive: bToA), CallSRTPKeys(profile: profile, send: bToA, receive: aToB))
}

/// 1.2 s of audio whose every 20 ms frame differs (a tone whose frequency steps each frame), so a received payload
/// names the frame it came from.
func steppedTones(frames: Int = 60) -> WAVAudio {
    var samples: [Int16] = []
    for frame in 0..<frames {
        let frequency = 300.0 + 37.0 * Double(frame)
        for n in 0..<MuLaw.samplesPerPacket {
            let t = Double(frame * MuLaw.samplesPerPacket + n) / Double(MuLaw.sampleRate)
            samples.append(Int16(9000 * sin(2 * Double.pi * frequency * t)))
        }
    }
    return WAVAudio(samples: samples)
}

/// What a receiving side got, checked against what the sender played: each received payload that is one of the
/// played frames sits at the RTP timestamp offset its frame index gives.
struct AudioCheck {
    let expected: [[UInt8]]
    let index: [[UInt8]: Int]

    init(_ audio: WAVAudio) {
        var playout = PCMUPlayout(audio: audio)
        var frames: [[UInt8]] = []
        while let payload = playout.nextPayload() { frames.append(payload) }
        expected = frames
        index = Dictionary(frames.enumerated().map { ($0.element, $0.offset) }, uniquingKeysWith: { first, _ in first })
    }

    /// Collects packets until the sender's audio has ended (silence after played frames).
    func collect(_ packets: AsyncStream<RTPPacket>) async -> [RTPPacket] {
        var received: [RTPPacket] = []
        var matched = 0
        for await packet in packets {
            received.append(packet)
            if index[packet.payload] != nil {
                matched += 1
            } else if matched > 0 && packet.payload == MuLaw.silencePayload {
                break
            }
        }
        return received
    }
}

/// Two `CallMediaSession`s on loopback exchanging SRTP audio over real UDP: directly, and relay-only through a
/// real coturn (protocol/calls.md 6 and 7).
@Suite(.serialized) struct CallMediaSessionTests {
    /// Starts `b` (receiver, recording) then `a` (playing), checks the audio `b` got and its recording, and
    /// returns both connected paths.
    private func exchangeAudio(a: CallMediaSession, b: CallMediaSession, profile: SRTPProfile,
                               label: String) async throws -> (MediaPath, MediaPath) {
        await a.addPeerCandidates(await b.localCandidates)
        await b.addPeerCandidates(await a.localCandidates)
        let (aKeys, bKeys) = keyPair(profile)
        let audio = steppedTones()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-media-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let playFile = directory.appendingPathComponent("play.wav"), recordFile = directory.appendingPathComponent("record.wav")
        try audio.write(to: playFile)
        let check = AudioCheck(audio)
        #expect(check.index.count == check.expected.count, "every played frame is distinct")

        let packets = await b.authenticatedPackets
        try await b.start(keys: bKeys, audio: AudioOptions(recordFile: recordFile))
        try await a.start(keys: aKeys, audio: AudioOptions(playFile: playFile))
        let aEvents = a.events, bEvents = b.events
        let pathAtB = try await within(20, "b to connect") { try await connectedPath(bEvents) }
        let pathAtA = try await within(20, "a to connect") { try await connectedPath(aEvents) }
        let received = try await within(30, "a's audio at b") { await check.collect(packets) }

        // Every played frame arrived, at the timestamp offset of its index.
        let matched = received.compactMap { packet in check.index[packet.payload].map { (packet, $0) } }
        let first = try #require(matched.first)
        #expect(matched.count >= check.expected.count * 95 / 100, "\(matched.count) of \(check.expected.count) frames")
        for (packet, frame) in matched {
            #expect(packet.header.timestamp &- first.0.header.timestamp == UInt32((frame - first.1) * MuLaw.samplesPerPacket))
        }
        print("\(label): setup time a \(await a.setupTime.map { "\($0)" } ?? "-"), b \(await b.setupTime.map { "\($0)" } ?? "-")")

        let bStatistics = await b.stop()
        let aStatistics = await a.stop()
        #expect(bStatistics.packetsReceived >= UInt64(received.count))
        #expect(aStatistics.packetsSent >= UInt64(matched.count))
        #expect(aStatistics.packetsReceived > 0)

        // The recording starts at b's first authenticated packet and holds each frame at its timestamp offset.
        let recording = try WAVAudio(contentsOf: recordFile)
        let origin = try #require(received.first).header.timestamp
        for (packet, frame) in matched {
            let position = Int(packet.header.timestamp &- origin)
            #expect(Array(recording.samples[position..<position + MuLaw.samplesPerPacket]) == MuLaw.decode(check.expected[frame]))
        }
        return (pathAtA, pathAtB)
    }

    @Test(arguments: SRTPProfile.allCases)
    func twoSessionsExchangeAudioDirectly(profile: SRTPProfile) async throws {
        let a = try await CallMediaSession.open(options: GatherOptions())
        let b = try await CallMediaSession.open(options: GatherOptions())
        let aCandidates = await a.localCandidates
        #expect(aCandidates.contains { $0.kind == .host && $0.address == "127.0.0.1" && $0.port == a.localPort })
        #expect(aCandidates.allSatisfy { $0.kind == .host })
        let (pathAtA, pathAtB) = try await exchangeAudio(a: a, b: b, profile: profile, label: "direct \(profile)")
        #expect(!pathAtA.viaTURN && pathAtA.peerPort == b.localPort)
        #expect(!pathAtB.viaTURN && pathAtB.peerPort == a.localPort)
    }

    @Test func twoRelayOnlySessionsExchangeAudioThroughCoturn() async throws {
        let coturn = try Coturn()
        defer { coturn.stop() }
        let options = GatherOptions(turnServers: [coturn.server()], hostCandidates: false)
        let a = try await CallMediaSession.open(options: options)
        let b = try await CallMediaSession.open(options: options)
        let aCandidates = await a.localCandidates, bCandidates = await b.localCandidates
        #expect(aCandidates.count == 1 && aCandidates[0].kind == .relayed && aCandidates[0].address == "127.0.0.1")
        #expect(bCandidates.count == 1 && bCandidates[0].kind == .relayed)
        #expect(aCandidates[0].port != a.localPort && aCandidates[0].port != coturn.port)
        let (pathAtA, pathAtB) = try await exchangeAudio(a: a, b: b, profile: .aeadAES256GCM, label: "relay-only")
        #expect(pathAtA.viaTURN && pathAtA.peerPort == bCandidates[0].port)
        #expect(pathAtB.viaTURN && pathAtB.peerPort == aCandidates[0].port)
    }

    @Test func stunReportsTheMappedAddressAndCandidatesComeHighestPriorityFirst() async throws {
        let coturn = try Coturn()
        defer { coturn.stop() }
        let session = try await CallMediaSession.open(options: GatherOptions(
            stunServers: [(host: "127.0.0.1", port: coturn.port)], turnServers: [coturn.server()]))
        let mapped = await session.transport.reflexiveAddress(host: "127.0.0.1", port: coturn.port)
        #expect(mapped == TransportAddress(literal: "127.0.0.1", port: session.localPort))
        let candidates = await session.localCandidates
        // On loopback the server-reflexive address is the loopback host candidate: redundant, not repeated.
        #expect(!candidates.contains { $0.kind == .serverReflexive })
        #expect(candidates.contains { $0.kind == .host && $0.address == "127.0.0.1" })
        #expect(candidates.last?.kind == .relayed)
        #expect(candidates.map(\.priority) == candidates.map(\.priority).sorted(by: >))
        _ = await session.stop()
    }

    @Test func unauthenticatedPacketsFromAStrangerNeverMoveThePath() async throws {
        let a = try await CallMediaSession.open(options: GatherOptions())
        let b = try await CallMediaSession.open(options: GatherOptions())
        await a.addPeerCandidates(await b.localCandidates)
        await b.addPeerCandidates(await a.localCandidates)
        let (aKeys, bKeys) = keyPair(.aeadAES256GCM)
        let stranger = try StrangerSocket()
        defer { stranger.close() }

        let packets = await b.authenticatedPackets
        try await b.start(keys: bKeys, audio: AudioOptions())
        // Before any real packet: forged SRTP to b's socket.
        for _ in 0..<5 { try stranger.sendForgedPacket(toPort: b.localPort) }
        #expect(await b.currentPath == nil)
        try await a.start(keys: aKeys, audio: AudioOptions())
        let bEvents = b.events
        let path = try await within(20, "b to connect") { try await connectedPath(bEvents) }
        #expect(path.peerPort == a.localPort && !path.viaTURN)
        #expect(await b.statistics().packetsDropped >= 5, "the forged packets were processed (before a's) and dropped")

        // After locking: more forged packets, then ten more of a's packets (sent after them, so processed after).
        let droppedBefore = await b.statistics().packetsDropped
        for _ in 0..<5 { try stranger.sendForgedPacket(toPort: b.localPort) }
        _ = try await within(20, "ten more packets from a") {
            var count = 0
            for await _ in packets {
                count += 1
                if count == 10 { break }
            }
        }
        #expect(await b.statistics().packetsDropped >= droppedBefore + 5)
        #expect(await b.currentPath == path)
        _ = await a.stop()
        let statistics = await b.stop()
        #expect(statistics.packetsReceived >= 10)
    }
}

/// A plain UDP socket that sends RTP-shaped datagrams with random payload and tag: what an attacker who does not
/// have the keys can send.
final class StrangerSocket: @unchecked Sendable {
    private let fd: Int32

    init() throws {
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw MediaError(.socket, "socket() failed") }
    }

    func sendForgedPacket(toPort port: UInt16) throws {
        var packet: [UInt8] = [0x80, 0x00]
        packet += (0..<10).map { _ in UInt8.random(in: 0...255) }
        packet += (0..<(160 + 16)).map { _ in UInt8.random(in: 0...255) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let sent = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, packet, packet.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard sent == packet.count else { throw MediaError(.socket, "sendto failed") }
    }

    func close() { _ = Glibc.close(fd) }
}
