import FlitzRelay
import FlitzStore
import FlitzWire
import Foundation
import Logging
import Testing

@testable import FlitzRelay

extension WireFrame {
    /// `Error.retry_after_ms` of a RATE_LIMITED answer, else nil.
    var retryAfterMs: Int64? {
        if case .error(let error) = body, error.code == .rateLimited { error.retryAfterMs } else { nil }
    }
}

/// Token-bucket rate limits (`protocol/relay.md`, "Rate limits"), on a real relay with the test clock.
@Suite struct RateLimitTests {
    /// An authenticated request that changes nothing: acknowledge no ids.
    static let harmless = WireFrame.OneOf_Body.acknowledge(WireAcknowledge())

    @Test func perDeviceLimitAnswersRetryAfterAndRecoversWhenTheClockMovesOn() async throws {
        try await RelayHarness.run(configure: { $0.rateLimits.device = RateLimit(perMinute: 60, burst: 2) }) { relay in
            let alice = TestIdentity("alice")
            try await relay.connect { connection in
                _ = try await connection.register(alice)
                try await connection.authenticate(alice)
                #expect(try await connection.request(Self.harmless).body == .ok(WireOk()))
                #expect(try await connection.request(Self.harmless).body == .ok(WireOk()))
                let limited = try await connection.request(Self.harmless)
                #expect(limited.errorCode == .rateLimited)
                #expect(limited.retryAfterMs == 1_000)  // one token at 60 a minute
                relay.clock.advance(seconds: 0.5)
                #expect(try await connection.request(Self.harmless).retryAfterMs == 500)
                relay.clock.advance(seconds: 0.5)
                // Same connection: it stayed open, and the bucket refilled one token.
                #expect(try await connection.request(Self.harmless).body == .ok(WireOk()))
                #expect(try await connection.request(Self.harmless).retryAfterMs == 1_000)
            }
        }
    }

    @Test func senderRecipientPairLimitCountsEnvelopesAndLeavesOtherRecipientsAlone() async throws {
        try await RelayHarness.run(configure: { $0.rateLimits.pair = RateLimit(perMinute: 120, burst: 3) }) { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob"), carol = TestIdentity("carol")
            try await relay.connect { connection in _ = try await connection.register(bob) }
            try await relay.connect { connection in _ = try await connection.register(carol) }
            try await relay.connect { connection in
                _ = try await connection.register(alice)
                try await connection.authenticate(alice)
                let first = try await connection.submit([outgoing(1, to: "bob"), outgoing(2, to: "bob")])
                #expect(first.allSatisfy { !$0.hasError })
                // Two more envelopes to bob need two tokens; one is left: refused whole, nothing stored.
                var submit = WireSubmit()
                submit.envelopes = [outgoing(3, to: "bob"), outgoing(4, to: "bob")]
                let limited = try await connection.request(.submit(submit))
                #expect(limited.errorCode == .rateLimited)
                #expect(limited.retryAfterMs == 500)  // one more token at 2 a second
                #expect(try await connection.submit([outgoing(5, to: "carol")]).allSatisfy { !$0.hasError })
                relay.clock.advance(seconds: 0.5)
                #expect(try await connection.submit([outgoing(3, to: "bob"), outgoing(4, to: "bob")]).allSatisfy { !$0.hasError })
            }
            let delivered = try await relay.connect { connection in try await connection.authenticate(bob) }
            #expect(delivered.flatMap(\.envelopes).map { $0.envelopeID.first! } == [1, 2, 3, 4])
        }
    }

    @Test func registrationIsLimitedPerSourceAddress() async throws {
        try await RelayHarness.run(configure: { $0.rateLimits.registerAddress = RateLimit(perMinute: 1, burst: 1) }) { relay in
            try await relay.connect { connection in _ = try await connection.register(TestIdentity("alice")) }
            let bob = TestIdentity("bob")
            try await relay.connect { connection in
                let limited = try await connection.request(bob.register(nonce: connection.nonce))
                #expect(limited.errorCode == .rateLimited)
                #expect(limited.retryAfterMs == 60_000)
                relay.clock.advance(seconds: 60)
                // The connection stays open: the same connection registers once the bucket refilled.
                _ = try await connection.register(bob)
            }
        }
    }

    @Test func recoveryIsLimitedPerHandle() async throws {
        try await RelayHarness.run(configure: { $0.rateLimits.recoverHandle = RateLimit(perMinute: 2, burst: 1) }) { relay in
            let alice = TestIdentity("alice")
            try await relay.connect { connection in _ = try await connection.register(alice) }
            let thief = TestIdentity("alice")
            @Sendable func guess(_ connection: TestConnection) async throws -> WireFrame {
                var recover = WireRecover()
                recover.handle = "alice"
                recover.recoveryCode = "AAAAAAAAAAAAAAAAAAAA"
                recover.accountIdentityKey = thief.account.publicKey.rawRepresentation
                recover.device = thief.deviceKeys()
                recover.challengeSignature = thief.device.signature(for: SignedPayload.authentication(nonce: connection.nonce, handle: "alice"))
                return try await connection.request(.recover(recover))
            }
            try await relay.connect { connection in
                #expect(try await guess(connection).errorCode == .recoveryFailed)
                let limited = try await guess(connection)
                #expect(limited.errorCode == .rateLimited)
                #expect(limited.retryAfterMs == 30_000)
            }
            // Per handle, whatever the connection.
            try await relay.connect { connection in
                #expect(try await guess(connection).retryAfterMs == 30_000)
                relay.clock.advance(seconds: 30)
                let again = try await guess(connection)
                #expect(again.errorCode == .recoveryFailed)
            }
        }
    }

    @Test func prekeyBundleFetchesAreLimitedPerTargetHandleAcrossDevices() async throws {
        try await RelayHarness.run(configure: { $0.rateLimits.prekeyHandle = RateLimit(perMinute: 6, burst: 2) }) { relay in
            let bob = TestIdentity("bob"), alice = TestIdentity("alice"), mallory = TestIdentity("mallory")
            try await relay.connect { connection in _ = try await connection.register(bob, oneTimePreKeys: 10) }
            let fetch = prekeyFetch("bob")
            try await relay.connect { connection in
                _ = try await connection.register(alice)
                try await connection.authenticate(alice)
                #expect(try await connection.request(.fetchPrekeyBundle(fetch)).errorCode == nil)
            }
            try await relay.connect { connection in
                _ = try await connection.register(mallory)
                try await connection.authenticate(mallory)
                #expect(try await connection.request(.fetchPrekeyBundle(fetch)).errorCode == nil)
                let limited = try await connection.request(.fetchPrekeyBundle(fetch))
                #expect(limited.errorCode == .rateLimited)
                #expect(limited.retryAfterMs == 10_000)
                relay.clock.advance(seconds: 10)
                guard case .prekeyBundle(let bundle) = try await connection.request(.fetchPrekeyBundle(fetch)).body else {
                    Issue.record("expected a bundle after the bucket refilled")
                    return
                }
                #expect(bundle.handle == "bob")
            }
        }
    }

    @Test func prekeyBundleFetchesAreLimitedPerFetchingDevice() async throws {
        try await RelayHarness.run(configure: { $0.rateLimits.prekeyDevice = RateLimit(perMinute: 1, burst: 1) }) { relay in
            let alice = TestIdentity("alice")
            for name in ["bob", "carol"] {
                try await relay.connect { connection in _ = try await connection.register(TestIdentity(name)) }
            }
            try await relay.connect { connection in
                _ = try await connection.register(alice)
                try await connection.authenticate(alice)
                #expect(try await connection.request(.fetchPrekeyBundle(prekeyFetch("bob"))).errorCode == nil)
                #expect(try await connection.request(.fetchPrekeyBundle(prekeyFetch("carol"))).retryAfterMs == 60_000)
                // Other requests of the device are not prekey fetches.
                #expect(try await connection.request(Self.harmless).body == .ok(WireOk()))
            }
        }
    }

    @Test func limitsOffLetEverythingThrough() async throws {
        try await RelayHarness.run(configure: {
            $0.rateLimits.device = RateLimit(perMinute: 1, burst: 1)
            $0.rateLimits.registerAddress = RateLimit(perMinute: 1, burst: 1)
            $0.rateLimits.enabled = false
        }) { relay in
            for name in ["alice", "bob", "carol"] {
                try await relay.connect { connection in
                    let identity = TestIdentity(name)
                    _ = try await connection.register(identity)
                    try await connection.authenticate(identity)
                    for _ in 0..<5 { #expect(try await connection.request(Self.harmless).body == .ok(WireOk())) }
                }
            }
        }
    }

    @Test func aLimitOfZeroIsUnlimited() {
        let limiter = RateLimiter({
            var limits = RateLimits()
            limits.device = RateLimit(perMinute: 0, burst: 5)
            return limits
        }())
        let device = DeviceAddress(handle: "alice", deviceID: 1)
        for _ in 0..<100 {
            #expect(throws: Never.self) { try limiter.admitAuthenticated(Self.harmless, device: device, source: "127.0.0.1", nowMs: 0) }
        }
    }

    @Test func bucketMemoryStaysBoundedUnderManyAddresses() throws {
        var limits = RateLimits()
        limits.linkAddress = RateLimit(perMinute: 60, burst: 1)
        let limiter = RateLimiter(limits, maxKeys: 100)
        for index in 0..<1_000 {
            try limiter.admitUnauthenticated(.linkTake(WireLinkTake()), source: "10.0.\(index / 256).\(index % 256)", nowMs: Int64(index))
            #expect(limiter.bucketCount(.linkAddress) <= 100)
        }
        // A refused request takes nothing and stores nothing new.
        #expect(throws: RelayError.self) { try limiter.admitUnauthenticated(.linkTake(WireLinkTake()), source: "10.0.3.231", nowMs: 1_000) }
    }
}

/// A FetchPreKeyBundle of every device of `handle`.
func prekeyFetch(_ handle: String) -> WireFetchPreKeyBundle {
    var fetch = WireFetchPreKeyBundle()
    fetch.handle = handle
    return fetch
}
