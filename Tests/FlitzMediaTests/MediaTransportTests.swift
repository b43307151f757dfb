@testable import FlitzMedia
import Foundation
import Testing

/// The network side of a call without SRTP: the TURN allocation, permission and channel binding against a real
/// coturn on loopback (RFC 8656), and data relayed both ways.
@Suite(.serialized) struct MediaTransportTests {
    @Test func dataGoesThroughTheAllocationToAPeerAndBack() async throws {
        let coturn = try Coturn()
        defer { coturn.stop() }
        let a = try await MediaTransport.open(options: GatherOptions(turnServers: [coturn.server()], hostCandidates: false))
        let b = try await MediaTransport.open(options: GatherOptions())
        let relayed = try #require(await a.candidates.first)
        #expect(await a.candidates.count == 1 && relayed.kind == .relayed)
        let peer = try #require(TransportAddress(literal: "127.0.0.1", port: b.localPort))

        try await a.preparePath(to: peer)
        let toB: [UInt8] = [0x80, 0x00, 1, 2, 3, 4, 5]
        await a.send(toB, to: peer, viaTURN: true)
        let bMedia = b.media
        let atB = try await within(10, "b to receive through TURN") { () async throws -> InboundMedia in
            for await media in bMedia { return media }
            throw TimedOut(what: "b's stream ended")
        }
        #expect(atB.bytes == toB && !atB.viaTURN)
        #expect(atB.source == TransportAddress(literal: relayed.address, port: relayed.port), "b sees a's relayed address")

        let toA: [UInt8] = [0x80, 0x00, 9, 8, 7]
        await b.send(toA, to: atB.source, viaTURN: false)
        let aMedia = a.media
        let atA = try await within(10, "a to receive through TURN") { () async throws -> InboundMedia in
            for await media in aMedia { return media }
            throw TimedOut(what: "a's stream ended")
        }
        #expect(atA.bytes == toA && atA.viaTURN && atA.source == peer)
        await a.close()
        await b.close()
    }

    @Test func wrongCredentialsGiveNoAllocation() async throws {
        let coturn = try Coturn()
        defer { coturn.stop() }
        let good = coturn.server()
        let bad = TURNServer(host: good.host, port: good.port, username: good.username, password: "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        await #expect(throws: MediaError.self) {
            _ = try await MediaTransport.open(options: GatherOptions(turnServers: [bad], hostCandidates: false))
        }
    }

    @Test func hostCandidatesIncludeLoopbackWithTheSocketPortAtTheLowestHostPriority() async throws {
        let transport = try await MediaTransport.open(options: GatherOptions())
        let candidates = await transport.candidates
        let loopback = try #require(candidates.first { $0.address == "127.0.0.1" })
        #expect(loopback.kind == .host && loopback.port == transport.localPort)
        #expect(candidates.allSatisfy { $0.kind == .host && $0.port == transport.localPort && $0.priority >= loopback.priority })
        await transport.close()
    }
}
