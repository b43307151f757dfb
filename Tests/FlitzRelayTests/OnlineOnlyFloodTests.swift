@testable import FlitzRelay
import FlitzWire
import Foundation
import Testing

/// Online-only envelopes never make a connection a slow reader (`conversations.md` 6, security review of issue 6): a
/// connection holds at most `RelayConnection.maxPendingOnlineOnly` of them and writes one only below its high-water
/// mark; the rest are dropped. Real relay on loopback, a raw socket that stops reading, the stall timer held by the
/// test (a blocked write would time out only when the test opens the gate), no sleeping.
@Suite struct OnlineOnlyFloodTests {
    @Test func aFloodOfOnlineOnlyEnvelopesToAReaderThatStopsIsDroppedNotDisconnected() async throws {
        let gate = TestGate()
        try await RelayHarness.run { relay in
            let registry = relay.app.relay.registry
            registry.stallTimer = { _ in try await gate.wait() }
            let monitor = registry.monitor
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [alice, bob])
            // Bob authenticates on a socket with a 4 KiB receive buffer, then never reads again.
            let stalled = try await RawWebSocket(port: relay.port, receiveBufferBytes: 4_096)
            let nonceFrame = try #require(try await stalled.readFrame())
            guard case .challenge(let challenge) = try WireFrame(serializedBytes: Data(nonceFrame.payload)).body else {
                throw Failure("expected a Challenge")
            }
            try await stalled.sendBinary(FrameCodec.encode(WireFrame(requestID: 1, body: bob.authenticate(nonce: challenge.nonce, deviceID: 1))))
            try await within(.seconds(60)) { while !relay.app.relay.isConnected(handle: "bob", deviceID: 1) { await Task.yield() } }
            // 9.6 MB of online-only envelopes: far more than the socket buffers and the high-water mark.
            let total = 160
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                for batch in 0..<(total / 16) {
                    let envelopes = (0..<16).map { index in
                        var envelope = onlineOnly(0, to: "bob", device: 1, ciphertext: Data(repeating: UInt8(index), count: 60_000))
                        envelope.envelopeID = Data([0xF0, UInt8(batch), UInt8(index)] + [UInt8](repeating: 0, count: 13))
                        return envelope
                    }
                    #expect(try await connection.submitSelected(envelopes).allSatisfy { !$0.hasError })
                    relay.clock.advance(seconds: 60)  // past the pair rate limit (relay clock)
                }
            }
            // Every one was written or dropped by bob's connection, none left waiting on a write.
            try await within(.seconds(60)) { await monitor.wait { $0.onlineOnlyHandled >= total } }
            let snapshot = monitor.snapshot
            print("online-only flood: \(snapshot.onlineOnlyDropped) of \(total) dropped")
            #expect(snapshot.onlineOnlyDropped > 0 && snapshot.onlineOnlyDropped < total, "\(snapshot)")
            #expect(snapshot.writesWaiting == 0 && snapshot.slowReaderDisconnects == 0, "\(snapshot)")
            // Even with the write timeout passed, the connection stays: no write of it was blocked.
            gate.open()
            #expect(relay.app.relay.isConnected(handle: "bob", deviceID: 1))
            #expect(monitor.snapshot.slowReaderDisconnects == 0)
        }
    }
}
