import FlitzCrypto
import FlitzMedia
import Foundation
import Testing

/// SRTP through our libsrtp2 wrapper (protocol/calls.md 6): both profiles round-trip, tampered, replayed and too-old
/// packets are dropped and counted without disturbing the session, and the rollover counter follows a sequence
/// number wrap.
@Suite struct SRTPSessionTests {
    /// A deterministic key of the profile's sizes.
    static func key(_ profile: SRTPProfile, label: String = "srtp test key") -> SRTPMasterKey {
        let random = SeededRandom(label: label)
        return SRTPMasterKey(key: SecretBytes(random.bytes(profile.keyLength)), salt: SecretBytes(random.bytes(profile.saltLength)))
    }

    static func payload(_ index: Int) -> [UInt8] { (0..<160).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ index) } }

    /// A sender and a receiver sharing one key, numbering from `sequence`.
    static func pair(_ profile: SRTPProfile, sequence: UInt16 = 1000) throws -> (SRTPSender, SRTPReceiver) {
        let key = key(profile)
        let sequencer = RTPSequencer(ssrc: 0x1234_5678, initialSequenceNumber: sequence, initialTimestamp: 0xFFFF_FF00)
        return (try SRTPSender(profile: profile, key: key, sequencer: sequencer), try SRTPReceiver(profile: profile, key: key))
    }

    static func arrival(_ index: Int) -> Duration { .milliseconds(20 * index) }

    @Test(arguments: SRTPProfile.allCases)
    func bothProfilesRoundTrip(profile: SRTPProfile) throws {
        var (sender, receiver) = try Self.pair(profile)
        for index in 0..<50 {
            let packet = try sender.packet(payload: Self.payload(index))
            let tagLength = profile == .aeadAES256GCM ? 16 : 10
            #expect(packet.count == RTPHeader.length + 160 + tagLength)
            // The payload is encrypted: it does not appear in the protected packet.
            #expect(Array(packet[12..<172]) != Self.payload(index))
            let rtp = try receiver.receive(packet, arrival: Self.arrival(index)).get()
            #expect(rtp.payload == Self.payload(index))
            #expect(rtp.header.ssrc == 0x1234_5678)
            #expect(rtp.header.sequenceNumber == 1000 &+ UInt16(index))
            #expect(rtp.header.timestamp == 0xFFFF_FF00 &+ UInt32(160 * index))
            #expect(rtp.header.marker == (index == 0))
            #expect(rtp.header.payloadType == 0)
        }
        #expect(sender.packetsSent == 50)
        #expect(receiver.statistics.received == 50)
        #expect(receiver.statistics.dropped == 0)
        #expect(receiver.statistics.lost == 0)
    }

    @Test(arguments: SRTPProfile.allCases)
    func tamperedPacketsAreDroppedAndCountedWithoutHarm(profile: SRTPProfile) throws {
        var (sender, receiver) = try Self.pair(profile)
        let packet = try sender.packet(payload: Self.payload(0))
        // A flipped bit in the header, the payload and the tag each fail authentication.
        for offset in [3, 12, 100, packet.count - 1] {
            var tampered = packet
            tampered[offset] ^= 0x01
            #expect(receiver.receive(tampered, arrival: .zero) == .failure(.authenticationFailed))
        }
        // Truncated and garbage datagrams.
        #expect(receiver.receive(Array(packet.prefix(8)), arrival: .zero) == .failure(.malformed))
        #expect(receiver.receive(Array(packet.dropLast(4)), arrival: .zero) == .failure(.authenticationFailed))
        #expect(receiver.statistics.dropped == 6)
        #expect(receiver.statistics.received == 0)
        // The real packet still authenticates afterwards: failures did not advance the replay window.
        #expect(try receiver.receive(packet, arrival: .zero).get().payload == Self.payload(0))
        #expect(receiver.statistics.received == 1)
    }

    @Test(arguments: SRTPProfile.allCases)
    func aWrongKeyAuthenticatesNothing(profile: SRTPProfile) throws {
        var (sender, _) = try Self.pair(profile)
        var stranger = try SRTPReceiver(profile: profile, key: Self.key(profile, label: "another key"))
        let packet = try sender.packet(payload: Self.payload(0))
        #expect(stranger.receive(packet, arrival: .zero) == .failure(.authenticationFailed))
        #expect(stranger.statistics.dropped == 1)
    }

    @Test(arguments: SRTPProfile.allCases)
    func replayedAndTooOldPacketsAreDroppedAndCounted(profile: SRTPProfile) throws {
        var (sender, receiver) = try Self.pair(profile)
        var packets: [[UInt8]] = []
        for index in 0..<200 { packets.append(try sender.packet(payload: Self.payload(index))) }
        _ = try receiver.receive(packets[0], arrival: Self.arrival(0)).get()
        #expect(receiver.receive(packets[0], arrival: Self.arrival(1)) == .failure(.replayed))
        _ = try receiver.receive(packets[199], arrival: Self.arrival(199)).get()
        // 199 - 100 = 99 behind the newest: inside the 128-packet window, not yet received, accepted once.
        _ = try receiver.receive(packets[100], arrival: Self.arrival(200)).get()
        #expect(receiver.receive(packets[100], arrival: Self.arrival(201)) == .failure(.replayed))
        // 199 - 50 = 149 behind the newest: older than the 128-packet window.
        #expect(receiver.receive(packets[50], arrival: Self.arrival(202)) == .failure(.tooOld))
        #expect(receiver.statistics.dropped == 3)
        #expect(receiver.statistics.received == 3)
        // 200 expected (sequence 1000 to 1199), 3 received.
        #expect(receiver.statistics.expected == 200)
        #expect(receiver.statistics.lost == 197)
    }

    /// Starting just below 65 535, the sequence number wraps to 0: libsrtp raises the rollover counter on both
    /// sides, so packets after the wrap (and a late one from before it) still authenticate.
    @Test(arguments: SRTPProfile.allCases)
    func theRolloverCounterFollowsTheWrap(profile: SRTPProfile) throws {
        var (sender, receiver) = try Self.pair(profile, sequence: 65_530)
        var packets: [[UInt8]] = []
        for index in 0..<20 { packets.append(try sender.packet(payload: Self.payload(index))) }
        // Deliver 65530...65534, then 0...13 (indices 6...19), then the late 65535 (index 5).
        for index in Array(0..<5) + Array(6..<20) + [5] {
            let rtp = try receiver.receive(packets[index], arrival: Self.arrival(index)).get()
            #expect(rtp.payload == Self.payload(index))
            #expect(rtp.header.sequenceNumber == 65_530 &+ UInt16(index))
        }
        #expect(receiver.statistics.received == 20)
        #expect(receiver.statistics.lost == 0)
        #expect(receiver.statistics.highestExtendedSequence == 65_536 + 13)
        // After the wrap, a replay of sequence 2 (rollover counter 1) is still a replay.
        #expect(receiver.receive(packets[8], arrival: .seconds(1)) == .failure(.replayed))
    }

    /// The same RTP packet protected with rollover counter 0 and with rollover counter 1 differs: the wrap is in
    /// the keystream, not just the header (a receiver that missed it would fail to authenticate).
    @Test(arguments: SRTPProfile.allCases)
    func packetsAfterTheWrapUseTheRaisedRolloverCounter(profile: SRTPProfile) throws {
        let key = Self.key(profile)
        let afterWrap = try SRTPSession(profile: profile, key: key, direction: .send(ssrc: 7))
        _ = try afterWrap.protect(RTPHeader(sequenceNumber: 65_535, timestamp: 0, ssrc: 7).packet(payload: Self.payload(0)))
        let rtp = RTPHeader(sequenceNumber: 0, timestamp: 160, ssrc: 7).packet(payload: Self.payload(1))
        let withROC1 = try afterWrap.protect(rtp)
        let fresh = try SRTPSession(profile: profile, key: key, direction: .send(ssrc: 7))
        let withROC0 = try fresh.protect(rtp)
        #expect(withROC1 != withROC0)
        #expect(withROC1.prefix(12) == withROC0.prefix(12))
        // A receiver that starts at sequence 0 (rollover counter 0) cannot read the packet of rollover counter 1.
        let receiver = try SRTPSession(profile: profile, key: key, direction: .receive)
        #expect(throws: SRTPDropReason.authenticationFailed) { try receiver.unprotect(withROC1) }
        #expect(try receiver.unprotect(withROC0) == rtp)
    }

    @Test func sessionsRefuseMisuse() throws {
        let profile = SRTPProfile.aeadAES256GCM
        let short = SRTPMasterKey(key: SecretBytes(Data(count: 16)), salt: SecretBytes(Data(count: 12)))
        #expect(throws: MediaError.self) { try SRTPSession(profile: profile, key: short, direction: .receive) }
        let sender = try SRTPSession(profile: profile, key: Self.key(profile), direction: .send(ssrc: 1))
        let receiver = try SRTPSession(profile: profile, key: Self.key(profile), direction: .receive)
        let rtp = RTPHeader(sequenceNumber: 5, timestamp: 0, ssrc: 1).packet(payload: Self.payload(0))
        #expect(throws: MediaError.self) { try receiver.protect(rtp) }
        #expect(throws: MediaError.self) { try sender.protect([0x80, 0]) }
        // Another SSRC than the session's.
        #expect(throws: MediaError.self) {
            try sender.protect(RTPHeader(sequenceNumber: 5, timestamp: 0, ssrc: 2).packet(payload: Self.payload(0)))
        }
        let protected = try sender.protect(rtp)
        // The same sequence number twice would reuse a keystream: libsrtp refuses.
        #expect(throws: MediaError.self) { try sender.protect(rtp) }
        #expect(throws: SRTPDropReason.authenticationFailed) { try sender.unprotect(protected) }
        #expect(SRTPSession.libraryVersion.contains("2."))
    }
}
