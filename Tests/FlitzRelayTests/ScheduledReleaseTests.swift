@testable import FlitzRelay
import FlitzStore
import FlitzWire
import Foundation
import Testing

/// Release of scheduled envelopes under load (`conversations.md` 8, security review of issue 6): batches, the
/// per-device queue limit at release, the one-minute wait cap; a real relay on loopback with a real SQLite file, an
/// injected clock and a manual sleeper.
@Suite struct ScheduledReleaseTests {
    @Test func aMassReleaseAppliesTheQueueLimitAndExpiresTheRest() async throws {
        let sleeper = ManualSleeper()
        try await RelayHarness.run(
            configure: { $0.maxQueuedEnvelopes = 250 }, prepare: { app, _ in app.relay.scheduler.sleeper = sleeper.function }
        ) { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [alice, bob])
            let start = relay.clock.nowMs()
            let notBefore = start + 3_600_000
            let count = 450
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                var sent = 0
                while sent < count {
                    let envelopes = (sent..<min(count, sent + WireConstants.maxEnvelopesPerSubmit)).map { index in
                        var envelope = scheduled(0, to: "bob", at: notBefore, cancelToken: Data(repeating: 3, count: 32))
                        envelope.envelopeID = Data([0xA0, UInt8(index >> 8), UInt8(index & 0xFF)] + [UInt8](repeating: 0, count: 13))
                        return envelope
                    }
                    #expect(try await connection.submitSelected(envelopes).allSatisfy { !$0.hasError && $0.scheduled })
                    sent += envelopes.count
                    relay.clock.advance(seconds: 60)  // past the pair rate limit (relay clock)
                }
            }
            // A wall-clock step to past the release time: the capped wait ends, the releaser reads the clock again.
            let wait = try await sleeper.next()
            #expect(wait.duration <= .milliseconds(60_000))
            relay.clock.advance(seconds: 3_600)
            wait.resume()
            await relay.app.relay.scheduler.monitor.wait { $0.released + $0.expired >= count }
            let snapshot = relay.app.relay.scheduler.monitor.snapshot
            #expect(snapshot.released == 250 && snapshot.expired == 200, "\(snapshot)")
            #expect(try await relay.app.relay.store.nextScheduledRelease() == nil)
            let receipts = try await relay.connect { connection in try await connection.authenticate(alice) }.flatMap(\.receipts)
            #expect(receipts.count == 200 && receipts.allSatisfy { $0.kind == .expired })
            // The first 250 in release order (not_before, then submission order) are the ones queued.
            #expect(Set(receipts.map { Int($0.envelopeID[1]) << 8 | Int($0.envelopeID[2]) }) == Set(250..<450))
        }
    }
}
