@testable import FlitzRelay
import FlitzCrypto
import FlitzWire
import Foundation
import Testing

/// Misbehaving peers (`protocol/relay.md`, "Slow readers", "Dead connections", "Challenges"): one that
/// stops reading, one that never answers pings, and replayed, forged or repeated authentication attempts.
/// Each is asserted by events (relay counters, frames), never by elapsed time.
@Suite struct ConnectionFaultTests {
    /// The relay's challenge nonce in the first frame of `socket`.
    func challenge(_ socket: RawWebSocket) async throws -> Data {
        let frame = try #require(try await socket.readFrame())
        #expect(frame.opcode == RawWebSocket.Frame.binary)
        guard case .challenge(let challenge) = try WireFrame(serializedBytes: Data(frame.payload)).body else {
            throw RawWebSocket.Failure(description: "expected a Challenge")
        }
        return challenge.nonce
    }

    @Test func aReaderThatStopsIsDisconnectedWithinTheBoundWhileOthersAreServedAndLosesNothing() async throws {
        let gate = TestGate()
        try await RelayHarness.run { relay in
            let registry = relay.app.relay.registry
            // A blocked write times out when the test opens the gate, not after a wall-clock time.
            registry.stallTimer = { _ in try await gate.wait() }
            let monitor = registry.monitor
            let alice = TestIdentity("alice"), bob = TestIdentity("bob"), carol = TestIdentity("carol")
            for identity in [alice, bob, carol] { try await relay.connect { _ = try await $0.register(identity) } }

            // 9.6 MB queued for bob: more than both ends' socket buffers hold (4 MiB send buffer at most here).
            let backlog = DeliveryTests().envelopes(0..<160, to: "bob", size: 60_000)
            try await DeliveryTests().submit(backlog, as: alice, relay, batch: 16)

            // Bob authenticates on a socket with a 4 KiB receive buffer, then never reads again.
            let stalled = try await RawWebSocket(port: relay.port, receiveBufferBytes: 4_096)
            let nonce = try await challenge(stalled)
            try await stalled.sendBinary(FrameCodec.encode(WireFrame(requestID: 1, body: bob.authenticate(nonce: nonce, deviceID: 1))))
            // Bob's is the only open connection now (the registrations and alice's submissions are closed).
            try await within(.seconds(60)) { await monitor.wait { $0.writesWaiting >= 1 } }

            // While bob's connection is blocked, carol sends to alice and alice receives and acknowledges.
            try await relay.connect { aliceConnection in
                try await aliceConnection.authenticate(alice)
                try await relay.connect { carolConnection in
                    try await carolConnection.authenticate(carol)
                    let outcomes = try await carolConnection.submit([outgoing(7, to: "alice", ciphertext: Data("while bob stalls".utf8))])
                    #expect(outcomes.count == 1 && !outcomes[0].hasError)
                }
                let deliver = try await aliceConnection.nextDeliver()
                #expect(deliver.envelopes.map(\.ciphertext) == [Data("while bob stalls".utf8)])
                var ack = WireAcknowledge()
                ack.envelopeIds = deliver.envelopes.map(\.envelopeID)
                #expect(try await aliceConnection.request(.acknowledge(ack)).body == .ok(WireOk()))
            }
            #expect(monitor.snapshot.slowReaderDisconnects == 0, "bob was still connected while the others were served")
            #expect(relay.app.relay.isConnected(handle: "bob", deviceID: 1))

            // The write timeout passes: bob's connection is closed, with its buffer within the bound.
            gate.open()
            try await within(.seconds(60)) { await monitor.wait { $0.slowReaderDisconnects == 1 } }
            // From now on blocked writes wait the real timeout again (30 s), so the drain below, which a
            // loaded machine reads slowly, is not cut short.
            registry.stallTimer = { duration in try await Task.sleep(for: duration) }
            let buffered = monitor.snapshot.maxBufferedBytesAtStall
            // relay.md, "Slow readers": the mark, one frame of ours with its header, and the control frames the
            // WebSocket layer wrote by itself; here at most its ping and its close (bob sends no pings to answer).
            let bound = relay.app.relay.configuration.outboundBufferBytes + ConnectionWriter.maxBufferedBeyondMark
                + 2 * ConnectionWriter.maxControlFrameBytes
            print("slow reader: closed with \(buffered) bytes in its outbound buffer (bound \(bound))")
            #expect(buffered >= 0 && buffered <= bound, "\(buffered)")
            // Reading the stalled socket now ends after what the kernel had buffered.
            var ended = false
            for _ in 0..<1_000 {
                guard try await stalled.readFrame() != nil else {
                    ended = true
                    break
                }
            }
            #expect(ended)

            // Bob's next connection gets everything, once, in queue order, with the same bytes.
            let drained = try await relay.connect { connection in
                let delivered = try await connection.authenticate(bob).flatMap(\.envelopes)
                var ack = WireAcknowledge()
                ack.envelopeIds = delivered.map(\.envelopeID)
                #expect(try await connection.request(.acknowledge(ack)).body == .ok(WireOk()))
                return delivered
            }
            #expect(drained.count == backlog.count)
            #expect(drained.map(\.envelopeID) == backlog.map(\.envelopeID))
            #expect(drained.map(\.ciphertext) == backlog.map(\.ciphertext))
            #expect(try await relay.connect { try await $0.authenticate(bob) }.isEmpty)
            #expect(monitor.snapshot.slowReaderDisconnects == 1, "only the stalled connection was closed")
        }
    }

    @Test func aPeerThatNeverAnswersPingsIsDisconnected() async throws {
        try await RelayHarness.run(configure: { $0.pingInterval = .milliseconds(200) }) { relay in
            let peer = try await RawWebSocket(port: relay.port)
            // On a loaded machine the first ping may come before the Challenge: count frames from the start.
            var pings = 0
            var challenges = 0
            var close: RawWebSocket.Frame?
            while let frame = try await peer.readFrame() {
                if frame.opcode == RawWebSocket.Frame.ping { pings += 1 }
                if frame.opcode == RawWebSocket.Frame.binary,
                    case .challenge = try WireFrame(serializedBytes: Data(frame.payload)).body
                {
                    challenges += 1
                }
                if frame.opcode == RawWebSocket.Frame.close {
                    close = frame
                    break
                }
            }
            #expect(challenges == 1)
            #expect(pings == 1, "closed when the next ping was due")
            #expect(close?.closeCode == 1001)
            #expect(close?.closeReason == "Ping timeout")
        }
    }

    @Test func aPeerThatAnswersPingsStaysConnected() async throws {
        // Hummingbird's auto-ping runs on the wall clock, which cannot be injected; the interval is long
        // enough that a machine starved by the whole suite in parallel (CI saw >700 ms) still answers in time.
        try await RelayHarness.run(configure: { $0.pingInterval = .milliseconds(2500) }) { relay in
            let peer = try await RawWebSocket(port: relay.port)
            _ = try await challenge(peer)
            var pings = 0
            while pings < 3 {
                let frame = try #require(try await peer.readFrame())
                #expect(frame.opcode != RawWebSocket.Frame.close, "closed: \(frame.closeReason)")
                if frame.opcode == RawWebSocket.Frame.ping {
                    pings += 1
                    try await peer.sendFrame(opcode: RawWebSocket.Frame.pong, payload: frame.payload)
                }
            }
            // Still served: a request is answered.
            try await peer.sendBinary(Data([0xFF, 0xFF]))
            var answered = false
            while let frame = try await peer.readFrame(), frame.opcode != RawWebSocket.Frame.close {
                if frame.opcode == RawWebSocket.Frame.ping {
                    try await peer.sendFrame(opcode: RawWebSocket.Frame.pong, payload: frame.payload)
                    continue
                }
                answered = try WireFrame(serializedBytes: Data(frame.payload)).errorCode == .malformedFrame
                break
            }
            #expect(answered)
        }
    }
}

/// Challenges are single-use (`relay.md`, "Challenges"): every authentication attempt consumes the
/// connection's nonce, and a fresh `Challenge` precedes the answer of each attempt that leaves the
/// connection unauthenticated.
@Suite struct ChallengeTests {
    @Test func aReplayedAuthenticateFromAnotherConnectionIsRefused() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            try await relay.connect { _ = try await $0.register(alice) }
            // Captured from one connection...
            let captured = try await relay.connect { connection in
                let frame = WireFrame(requestID: 1, body: alice.authenticate(nonce: connection.nonce, deviceID: 1))
                let reply = try await connection.request(frame.body!)
                guard case .authenticateResult = reply.body else { Issue.record("\(reply)"); throw TestTimeout() }
                return FrameCodec.encode(frame)
            }
            // ...and sent on another: its signature is over the other connection's nonce.
            try await relay.connect { connection in
                try await connection.sendRaw(captured)
                guard case .challenge = try await connection.next().body else { Issue.record("expected a fresh Challenge first"); return }
                let reply = try await connection.next()
                #expect(reply.errorCode == .authenticationFailed, "\(reply)")
                #expect(!relay.app.relay.isConnected(handle: "alice", deviceID: 1))
            }
        }
    }

    @Test func forgedSignaturesAreRefused() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            try await relay.connect { _ = try await $0.register(alice) }
            try await relay.connect { connection in
                var forged = WireAuthenticate()
                forged.handle = "alice"
                forged.deviceID = 1
                forged.signature = SystemRandom().bytes(64)
                #expect(try await connection.request(.authenticate(forged)).errorCode == .authenticationFailed, "random bytes")
                forged.signature = Ed25519PrivateKey().signature(for: SignedPayload.authentication(nonce: connection.nonce, handle: "alice"))
                #expect(try await connection.request(.authenticate(forged)).errorCode == .authenticationFailed, "another key")
                forged.signature = alice.device.signature(for: SignedPayload.authentication(nonce: connection.nonce, handle: "alicf"))
                #expect(try await connection.request(.authenticate(forged)).errorCode == .authenticationFailed, "another handle's payload")
                var flipped = alice.device.signature(for: SignedPayload.authentication(nonce: connection.nonce, handle: "alice"))
                flipped[0] ^= 1
                forged.signature = flipped
                #expect(try await connection.request(.authenticate(forged)).errorCode == .authenticationFailed, "one bit changed")
                // The right signature over the current (fresh) nonce is accepted.
                try await connection.authenticate(alice)
            }
        }
    }

    @Test func aNonceIsGoodForOneAttemptOnly() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            try await relay.connect { connection in
                let first = connection.nonce
                // A registration consumes the nonce: a fresh Challenge comes before its answer.
                try await connection.send(WireFrame(requestID: 1, body: alice.register(nonce: first)))
                guard case .challenge(let fresh) = try await connection.next().body else { Issue.record("expected a Challenge first"); return }
                guard case .registerResult = try await connection.next().body else { Issue.record("expected RegisterResult"); return }
                #expect(fresh.nonce.count == 32 && fresh.nonce != first)
                connection.nonce = fresh.nonce
                // Authenticate signed over the registration's nonce: refused (and a third nonce is issued).
                let stale = try await connection.request(alice.authenticate(nonce: first, deviceID: 1))
                #expect(stale.errorCode == .authenticationFailed)
                #expect(connection.nonce != fresh.nonce, "a failed attempt is followed by a fresh Challenge")
                // Authenticate signed over the nonce the failed attempt consumed: refused too.
                #expect(try await connection.request(alice.authenticate(nonce: fresh.nonce, deviceID: 1)).errorCode == .authenticationFailed)
                // Over the current one: accepted.
                try await connection.authenticate(alice)
                #expect(relay.app.relay.isConnected(handle: "alice", deviceID: 1))
            }
        }
    }

    @Test func anIdleUnauthenticatedConnectionIsClosed() async throws {
        try await RelayHarness.run(authenticationTimeout: .milliseconds(300)) { relay in
            let peer = try await RawWebSocket(port: relay.port)
            let frame = try #require(try await peer.readFrame())
            #expect(frame.opcode == RawWebSocket.Frame.binary)
            var close: RawWebSocket.Frame?
            while let frame = try await peer.readFrame() {
                if frame.opcode == RawWebSocket.Frame.close {
                    close = frame
                    break
                }
            }
            #expect(close?.closeCode == 1008)
            #expect(close?.closeReason == "not authenticated in time")
        }
    }
}
