import FlitzCrypto
@testable import FlitzRelay
import FlitzStore
import FlitzWire
import Foundation
import Synchronization
import Testing

/// The push dispatcher's hardening (`protocol/push.md` 3, 5, 7 and 10) through a real relay (`RelayHarness`) and
/// the local Web Push receiver of `PushGatewayTests` (`PushWorld`, `PushReceiver`).
@Suite struct PushHardeningTests {
    // MARK: The window closes with the authentication (push.md 5 step 3)

    @Test func authenticationClosesTheWindowBeforeItsAnswer() async throws {
        try await PushReceiver.run { receiver in
            receiver.script([201, 503])
            // One job at a time: a ring held in its backoff keeps the dispatcher busy, so a window close queued
            // behind it (the old background job) would still be pending when AuthenticateResult arrives.
            try await RelayHarness.run(configure: {
                allowPrivatePush(&$0)
                $0.push.maxConcurrentJobs = 1
            }) { harness in
                let gate = Gate()
                defer { gate.open() }
                harness.app.relay.push.sleeper = { _ in await gate.arriveAndWait() }
                let world = try await PushWorld.make(harness, receiver: receiver)
                let store = harness.app.relay.store
                let bobDevice = DeviceAddress(handle: "bob", deviceID: world.bobDeviceID)
                try await world.send([1], urgency: .urgent)
                try await world.idle()
                #expect(receiver.count == 1)
                #expect(try await store.pushEndpoint(device: bobDevice)?.urgentWindowUntilMs == harness.clock.nowMs() + 60_000)
                try await world.send([2], urgency: .ring)
                try await poll { gate.arrived == 1 }
                try await harness.connect { bob in
                    let reply = try await bob.request(world.bob.authenticate(nonce: bob.nonce, deviceID: world.bobDeviceID))
                    guard case .authenticateResult = reply.body else {
                        Issue.record("expected AuthenticateResult, got \(reply)")
                        return
                    }
                    // Read straight from the store: closed before the answer was written.
                    #expect(try await store.pushEndpoint(device: bobDevice)?.urgentWindowUntilMs == 0)
                    gate.open()
                    try await world.idle()
                }
                // The held ring found bob connected on its next attempt.
                #expect(receiver.count == 2)
                #expect(world.monitor.sent == 1 && world.monitor.skipped == 1)
            }
        }
    }

    // MARK: The ring limit (push.md 5 step 1)

    @Test func ringsAreLimitedPerDeviceAndRefillOnTheRelayClock() async throws {
        try await PushReceiver.run { receiver in
            try await RelayHarness.run(configure: allowPrivatePush) { harness in
                let world = try await PushWorld.make(harness, receiver: receiver)
                // Ten rings in ten Submits at one instant: the burst of 3 goes out, 7 are coalesced.
                try await world.send(Array(1...10), urgency: .ring)
                try await world.idle()
                #expect(receiver.count == 3)
                #expect(world.monitor.sent == 3 && world.monitor.coalesced == 7)
                for request in receiver.requests {
                    #expect(try WebPush.decrypt(request.body, keys: world.bobKeys) == WakeClass.ring.payload)
                }
                // 9 s later nothing has refilled; at 10 s exactly one more goes, and only one.
                harness.clock.advance(seconds: 9)
                try await world.send([11], urgency: .ring)
                try await world.idle()
                #expect(receiver.count == 3)
                harness.clock.advance(seconds: 1)
                try await world.send([12, 13], urgency: .ring)
                try await world.idle()
                #expect(receiver.count == 4)
                #expect(world.monitor.sent == 4 && world.monitor.coalesced == 9)
                let exposition = await harness.app.relay.metrics.exposition()
                #expect(exposition.contains(#"flitz_relay_push_coalesced_total{provider="webpush"} 9"#))
                // Urgent wake-ups have their own rule: the window, untouched by the ring limit.
                try await world.send([14], urgency: .urgent)
                try await receiver.waitFor(count: 5)
                try await world.idle()
                #expect(world.monitor.sent == 5)
            }
        }
    }

    @Test func ringLimitKeysAreRead() throws {
        let configuration = try RelayConfiguration.resolve(arguments: ["--push-ring-burst", "5", "--push-ring-interval", "30"], environment: [:])
        #expect(configuration.push.ringBurst == 5 && configuration.push.ringInterval == .seconds(30))
        #expect(PushConfiguration().ringBurst == 3 && PushConfiguration().ringInterval == .seconds(10))
        #expect(throws: ConfigurationError.self) { try RelayConfiguration.resolve(arguments: ["--push-ring-burst", "0"], environment: [:]) }
    }

    // MARK: Failures are coalesced too (push.md 7)

    @Test func refusedWakeUpKeepsTheWindowSoAFailingEndpointIsHitOncePerWindow() async throws {
        try await PushReceiver.run { receiver in
            receiver.script(Array(repeating: 400, count: 10))
            try await RelayHarness.run(configure: allowPrivatePush) { harness in
                let world = try await PushWorld.make(harness, receiver: receiver)
                try await world.send([1, 2, 3, 4, 5], urgency: .urgent)
                try await world.idle()
                #expect(receiver.count == 1)
                #expect(world.monitor.failed == 1 && world.monitor.coalesced == 4 && world.monitor.sent == 0)
                let status = try await world.bobStatus()
                #expect(status.registered && status.lastFailure.contains("400"))
            }
        }
    }

    // MARK: The job queue is bounded (push.md 10)

    @Test func jobsOverTheQueueLimitAreRefusedAndCounted() async throws {
        try await PushReceiver.run { receiver in
            receiver.script([503])
            // One job at a time and two waiting: the first ring is held in its backoff, the next two wait, the
            // last three are refused.
            try await RelayHarness.run(configure: {
                allowPrivatePush(&$0)
                $0.push.maxConcurrentJobs = 1
                $0.push.queueLimit = 2
            }) { harness in
                let gate = Gate()
                defer { gate.open() }
                harness.app.relay.push.sleeper = { _ in await gate.arriveAndWait() }
                let world = try await PushWorld.make(harness, receiver: receiver)
                try await world.send([1], urgency: .ring)
                try await poll { gate.arrived == 1 }
                try await world.send([2, 3, 4, 5, 6], urgency: .ring)
                #expect(world.monitor.droppedJobs == 3)
                #expect(world.monitor.pending == 3)
                let exposition = await harness.app.relay.metrics.exposition()
                #expect(exposition.contains("flitz_relay_push_dropped_jobs_total 3"))
                gate.open()
                try await world.idle()
                // The held ring and the two that waited go out (the ring limit allows three); nothing else.
                #expect(receiver.count == 4)
                #expect(world.monitor.sent == 3 && world.monitor.pending == 0 && world.monitor.droppedJobs == 3)
            }
        }
    }

    // MARK: Time to live in buckets (push.md 5, "Time to live")

    @Test func timeToLiveIsRoundedDownToABucket() async throws {
        try await PushReceiver.run { receiver in
            try await RelayHarness.run(configure: allowPrivatePush) { harness in
                let world = try await PushWorld.make(harness, receiver: receiver)
                // Rings (no window); three, within the ring limit. The sender's exact expiry never shows.
                for (ttl, expected) in [(59, "0"), (3_599, "60"), (86_399, "3600")] {
                    try await world.send([UInt8(ttl % 251)], urgency: .ring, ttl: UInt32(ttl))
                    try await world.idle()
                    #expect(receiver.requests.last?.headers["ttl"] == expected, "ttl \(ttl)")
                }
                #expect(receiver.count == 3)
            }
        }
    }

    @Test func timeToLiveBucketsNeverReachPastTheExpiry() {
        let nowMs: Int64 = 1_800_000_000_123
        for (remainingMs, bucket) in [
            (-5_000, 0), (0, 0), (59_999, 0), (60_000, 60), (3_599_999, 60), (3_600_000, 3_600), (86_399_999, 3_600),
            (86_400_000, 86_400), (604_800_000, 604_800), (2_419_199_999, 604_800), (2_419_200_000, 2_419_200),
            (2_592_000_000, 2_419_200),
        ] as [(Int64, Int64)] {
            #expect(PushDispatcher.timeToLive(remainingMs: remainingMs) == bucket, "\(remainingMs)")
            let (wake, now) = PushDispatcher.wakeUp(.urgent, expiresAtMs: nowMs + remainingMs, nowMs: nowMs)
            // Whole seconds on both sides, so every sender computes exactly the bucket.
            #expect(now.timeIntervalSince1970 == 1_800_000_000)
            #expect(wake.expiresAt.timeIntervalSince(now) == Double(bucket))
            #expect(WebPushSender.ttl(until: wake.expiresAt, now: now) == Int(bucket))
            #expect(APNsSender.unixSeconds(wake.expiresAt) == 1_800_000_000 + bucket)
            if remainingMs >= 0 { #expect(wake.expiresAt.timeIntervalSince1970 * 1_000 <= Double(nowMs + remainingMs)) }
        }
    }

    @Test func ringLimiterMemoryStaysBoundedUnderManyDevices() {
        let limiter = PushRingLimiter(burst: 3, interval: .seconds(10), maxDevices: 100)
        // 300 devices rung once each at one instant: buckets still in use are all dropped at the bound (the
        // limit fails open for them) rather than growing past it.
        for index in 0..<300 { #expect(limiter.take(DeviceAddress(handle: "h\(index)", deviceID: 1), nowMs: 0)) }
        #expect(limiter.count <= 100)
        // A device's spent bucket is kept while under the bound: its fourth ring at one instant is refused.
        let victim = DeviceAddress(handle: "victim", deviceID: 1)
        for _ in 0..<3 { #expect(limiter.take(victim, nowMs: 0)) }
        #expect(!limiter.take(victim, nowMs: 0))
        #expect(!limiter.take(victim, nowMs: 9_999))
        #expect(limiter.take(victim, nowMs: 10_000))
        // A clock that went back refills nothing.
        #expect(!limiter.take(victim, nowMs: 5_000))
    }
}
