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

    /// The realm change of a 438 or 401 challenge (RFC 8489 9.2.5) cannot be provoked from a real coturn (it answers
    /// a request naming another realm with 437), so the credential's update is tested on its own.
    @Test func theKeyFollowsTheRealmOfAChallenge() {
        var auth = TURNAuth(username: "1700000000:abc", password: "pw", realm: "a.example", nonce: "n1")
        let keyA = STUNMessage.longTermKey(username: "1700000000:abc", realm: "a.example", password: "pw")
        let keyB = STUNMessage.longTermKey(username: "1700000000:abc", realm: "b.example", password: "pw")
        #expect(keyA != keyB)
        #expect(auth.key == keyA)
        auth.rechallenge(realm: "a.example", nonce: "n2")
        #expect(auth.nonce == "n2" && auth.realm == "a.example" && auth.key == keyA)
        auth.rechallenge(realm: "b.example", nonce: "n3")
        #expect(auth.nonce == "n3" && auth.realm == "b.example" && auth.key == keyB)
    }

    /// A Binding response with the right transaction id from another address (sent first) is ignored; the one from
    /// the server the request went to is taken.
    @Test func aSTUNResponseCountsOnlyFromTheServerTheRequestWentTo() async throws {
        let server = try UDPTestSocket(), stranger = try UDPTestSocket()
        defer {
            server.close()
            stranger.close()
        }
        let transport = try await MediaTransport.open(options: GatherOptions())
        let serverPort = server.port
        let lookup = Task { await transport.reflexiveAddress(host: "127.0.0.1", port: serverPort) }
        let (request, fromPort) = try await server.receive()
        #expect(fromPort == transport.localPort)
        let parsed = try STUNMessage(parsing: request)
        #expect(parsed.method == .binding && parsed.messageClass == .request)
        func response(mapping address: TransportAddress) -> [UInt8] {
            STUNMessage(method: .binding, messageClass: .success, transactionID: parsed.transactionID, attributes: [
                STUNMessage.xorAddressAttribute(STUNMessage.AttributeType.xorMappedAddress, address, transactionID: parsed.transactionID),
            ]).encoded()
        }
        let forged = try #require(TransportAddress(literal: "192.0.2.66", port: 6666))
        let genuine = try #require(TransportAddress(literal: "198.51.100.7", port: 7777))
        try stranger.send(response(mapping: forged), toPort: fromPort)
        try server.send(response(mapping: genuine), toPort: fromPort)
        let mapped = await lookup.value
        #expect(mapped == genuine)
        await transport.close()
    }

    @Test func hostCandidatesIncludeLoopbackWithTheSocketPortAtTheLowestHostPriority() async throws {
        let transport = try await MediaTransport.open(options: GatherOptions())
        let candidates = await transport.candidates
        let loopback = try #require(candidates.first { $0.address == "127.0.0.1" })
        #expect(loopback.kind == .host && loopback.port == transport.localPort)
        #expect(candidates.allSatisfy { $0.kind == .host && $0.port == transport.localPort && $0.priority >= loopback.priority })
        await transport.close()
    }

    @Test func aRelayedCandidateFoundAfterOpenIsTrickledThenTheStreamEnds() async throws {
        let coturn = try Coturn()
        defer { coturn.stop() }
        let session = try await CallMediaSession.open(options: GatherOptions(turnServers: [coturn.server()], gatherTimeout: .zero))
        let trickled = session.trickledCandidates
        let later = try await within(10, "the trickled relayed candidate and the end of candidates") { () async -> [MediaCandidate] in
            var all: [MediaCandidate] = []
            for await batch in trickled { all += batch }
            return all
        }
        let known = await session.localCandidates
        if later.isEmpty {
            // The allocation won the race against a zero timeout: it is in the candidates open returned.
            #expect(known.contains { $0.kind == .relayed })
        } else {
            #expect(later.count == 1 && later[0].kind == .relayed)
            #expect(known.contains(later[0]), "a trickled candidate is also among the local candidates")
        }
        _ = await session.stop()
    }
}
