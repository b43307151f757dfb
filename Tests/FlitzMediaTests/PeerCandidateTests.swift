@testable import FlitzMedia
import Foundation
import Testing

/// What a call does with the peer's candidates before its path locks (protocol/calls.md 7.2): which addresses it
/// keeps, how many, and how often it sends to them.
@Suite struct PeerCandidateTests {
    private func host(_ address: String, _ port: UInt16 = 4000) -> MediaCandidate {
        MediaCandidate(kind: .host, address: address, port: port, priority: 1)
    }

    @Test func addressesNoPeerCanHaveAreIgnoredAndLoopbackIsKept() async throws {
        let session = try await CallMediaSession.open(options: GatherOptions())
        await session.addPeerCandidates([
            host("0.0.0.0"), host("0.1.2.3"), host("224.0.0.1"), host("239.255.255.250"), host("255.255.255.255"),
            host("240.0.0.1"), host("169.254.1.1"), host("::1"), host("2001:db8::1"), host("10.0.0.1", 0),
            host("not an address"),
            host("127.0.0.1"), host("10.0.0.1"), host("192.0.2.7", 5000), host("169.253.1.1"), host("223.255.255.254"),
        ])
        let kept = await session.peerAddresses.map(\.description)
        #expect(kept == ["127.0.0.1:4000", "10.0.0.1:4000", "192.0.2.7:5000", "169.253.1.1:4000", "223.255.255.254:4000"])
        _ = await session.stop()
    }

    @Test func aCallKeepsAtMost32PeerAddresses() async throws {
        let session = try await CallMediaSession.open(options: GatherOptions())
        let first = (0..<20).map { host("10.0.0.\($0 + 1)") }
        await session.addPeerCandidates(first)
        await session.addPeerCandidates(first + (0..<20).map { host("10.0.1.\($0 + 1)") })  // 20 repeated, 20 new
        await session.addPeerCandidates([host("127.0.0.1")])
        let kept = await session.peerAddresses.map(\.description)
        #expect(CallMediaSession.maximumPeers == 32)
        #expect(kept.count == 32)
        #expect(kept == (0..<20).map { "10.0.0.\($0 + 1):4000" } + (0..<12).map { "10.0.1.\($0 + 1):4000" },
                "the first 32 distinct addresses, in order; repeats do not count and later ones are ignored")
        _ = await session.stop()
    }

    /// A peer that never answers (so the path never locks) gets one packet every 5th tick: consecutive packets it
    /// receives have consecutive sequence numbers and timestamps 5 × 160 samples apart, whatever the timing.
    @Test func beforeLockingEachPeerAddressGetsOnePacketEvery5thTick() async throws {
        let session = try await CallMediaSession.open(options: GatherOptions())
        let peers = [try UDPTestSocket(), try UDPTestSocket()]
        defer { for peer in peers { peer.close() } }
        await session.addPeerCandidates(peers.map(\.candidate))
        let (keys, _) = keyPair(.aeadAES256GCM)
        try await session.start(keys: keys, audio: AudioOptions())
        for peer in peers {
            var headers: [RTPHeader] = []
            for _ in 0..<5 {
                let (bytes, fromPort) = try await peer.receive()
                #expect(fromPort == session.localPort)
                // The RTP header of an SRTP packet is in the clear.
                headers.append(try RTPPacket(parsing: Array(bytes.prefix(RTPHeader.length))).header)
            }
            #expect(headers.first?.marker == true, "the first packet of the call")
            for (previous, next) in zip(headers, headers.dropFirst()) {
                #expect(next.sequenceNumber == previous.sequenceNumber &+ 1)
                #expect(next.timestamp &- previous.timestamp == 5 * UInt32(MuLaw.samplesPerPacket))
            }
        }
        #expect(await session.currentPath == nil)
        let statistics = await session.stop()
        #expect(statistics.packetsSent >= 5)
    }
}
