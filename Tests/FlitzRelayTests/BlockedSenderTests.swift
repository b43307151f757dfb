import FlitzCrypto
@testable import FlitzRelay
import FlitzStore
import FlitzWire
import Foundation
import Testing

/// `conversations.md` 9 at the relay (security review of issue 6): a blocked sender must not be able to tell it is
/// blocked. Its stored envelopes go through every check, coverage, idempotency, unsend and cancel as any other, over a
/// real relay and a real SQLite file with an injected clock; nothing reaches the blocker and no receipt comes back.
@Suite struct BlockedSenderTests {
    @Test func aBlockedSenderGetsEveryAnswerAnUnblockedOneWould() async throws {
        let sleeper = ManualSleeper()
        try await RelayHarness.run(prepare: { app, _ in app.relay.scheduler.sleeper = sleeper.function }) { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [alice, bob])
            try await relay.connect { connection in
                try await connection.authenticate(bob)
                #expect(try await connection.updateBlockList(block: ["alice"]).errorCode == nil)
            }
            let start = relay.clock.nowMs()
            let unsendToken = Data(repeating: 0x61, count: 32), cancelToken = Data(repeating: 0x62, count: 32)
            let expiringToken = Data(repeating: 0x63, count: 32)
            let marker = Data("blocked-\(UUID().uuidString)".utf8)
            var first = outgoing(1, to: "bob", ttl: 600, ciphertext: marker)
            first.unsendTokenHash = ConversationTokens.unsendTokenHash(unsendToken)
            var short = outgoing(4, to: "bob", ttl: 60, ciphertext: marker)
            short.unsendTokenHash = ConversationTokens.unsendTokenHash(expiringToken)
            let (firstEnvelope, shortEnvelope) = (first, short)
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                // A made-up device: STALE_DEVICE, as for an unblocked sender.
                let stale = try await connection.submitSelected([outgoing(9, to: "bob", device: 77)])
                #expect(stale.first?.error.code == .staleDevice, "\(stale)")
                // Coverage is checked: bob has no device 2.
                let mismatch = try await connection.request(.submit({
                    var submit = WireSubmit()
                    submit.envelopes = [outgoing(10, to: "bob", device: 1), outgoing(11, to: "bob", device: 2)]
                    return submit
                }()))
                #expect(mismatch.errorCode == .mismatchedDevices, "\(mismatch)")
                let outcomes = try await connection.submitSelected([
                    firstEnvelope, shortEnvelope,
                    scheduled(2, to: "bob", at: start + 3_600_000, cancelToken: cancelToken),
                    scheduled(3, to: "bob", at: start + 7_200_000, cancelToken: cancelToken),
                ])
                #expect(outcomes.allSatisfy { !$0.hasError && $0.acceptedAtMs == start }, "\(outcomes)")
                #expect(outcomes.map(\.scheduled) == [false, false, true, true])
                // Idempotent: a resubmission later keeps its first accepted_at; another route under its id conflicts.
                relay.clock.advance(seconds: 5)
                let again = try await connection.submitSelected([firstEnvelope])
                #expect(again.first?.acceptedAtMs == start && again.first?.hasError == false, "\(again)")
                let conflict = try await connection.submitSelected([outgoing(1, to: "alice")])
                #expect(conflict.first?.error.code == .envelopeIDConflict, "\(conflict)")
                // Unsend answers PURGED; CancelScheduled counts both scheduled ones.
                let unsent = try await connection.unsend(unsendToken)
                guard case .unsendResult(let result) = unsent.body else { throw Failure("\(unsent)") }
                #expect(result.outcomes.map(\.state) == [.purged], "\(result)")
                let cancelled = try await connection.cancelScheduled(cancelToken)
                guard case .cancelScheduledResult(let count) = cancelled.body else { throw Failure("\(cancelled)") }
                #expect(count.cancelled == 2)
                // After its expiry, ALREADY_EXPIRED.
                relay.clock.advance(seconds: 60)
                let late = try await connection.unsend(expiringToken)
                guard case .unsendResult(let lateResult) = late.body else { throw Failure("\(late)") }
                #expect(lateResult.outcomes.map(\.state) == [.alreadyExpired], "\(lateResult)")
            }
            let bobItems = try await relay.connect { connection in try await connection.authenticate(bob) }
            #expect(bobItems.flatMap(\.envelopes).isEmpty)
            let aliceItems = try await relay.connect { connection in try await connection.authenticate(alice) }
            #expect(aliceItems.flatMap(\.receipts).isEmpty)
            try await relay.app.relay.store.checkpointIfSQLite()
            #expect(databaseBytes(relay.databasePath).range(of: marker) == nil)
        }
    }

    @Test func aBlockedSenderReachesTheScheduledLimitLikeAnyOther() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [alice, bob])
            try await relay.connect { connection in
                try await connection.authenticate(bob)
                #expect(try await connection.updateBlockList(block: ["alice"]).errorCode == nil)
            }
            let start = relay.clock.nowMs()
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                let limit = ConversationStoreLimits.maxScheduledPerAccount
                var sent = 0
                while sent < limit {
                    let envelopes = (sent..<min(limit, sent + Int(WireConstants.maxEnvelopesPerSubmit))).map { index in
                        var envelope = scheduled(0, to: "bob", at: start + 3_600_000, cancelToken: Data(repeating: 1, count: 32))
                        envelope.envelopeID = Data((0..<16).map { UInt8(truncatingIfNeeded: index >> ($0 % 4 * 8)) ^ UInt8($0) })
                        return envelope
                    }
                    let outcomes = try await connection.submitSelected(envelopes)
                    #expect(outcomes.allSatisfy { !$0.hasError }, "\(outcomes.first { $0.hasError }.map { "\($0)" } ?? "")")
                    sent += envelopes.count
                    relay.clock.advance(seconds: 60)  // past the pair rate limit (relay clock)
                }
                let over = try await connection.submitSelected([scheduled(0xEE, to: "bob", at: start + 3_600_000, cancelToken: Data(repeating: 1, count: 32))])
                #expect(over.first?.error.code == .queueFull, "\(over)")
            }
        }
    }

    @Test func blockingDropsWhatTheBlockedHandleQueuedOrScheduled() async throws {
        let sleeper = ManualSleeper()
        try await RelayHarness.run(prepare: { app, _ in app.relay.scheduler.sleeper = sleeper.function }) { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob"), carol = TestIdentity("carol")
            try await registerAll(relay, [alice, bob, carol])
            let start = relay.clock.nowMs()
            let marker = Data("blocked-later-\(UUID().uuidString)".utf8)
            let queuedEnvelope = outgoing(1, to: "bob", ciphertext: marker)
            var held = scheduled(2, to: "bob", at: start + 60_000, cancelToken: Data(repeating: 7, count: 32))
            held.ciphertext = marker
            let heldEnvelope = held
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                let outcomes = try await connection.submitSelected([queuedEnvelope, heldEnvelope])
                #expect(outcomes.allSatisfy { !$0.hasError }, "\(outcomes)")
            }
            // Carol's envelope is not affected by bob blocking alice.
            try await relay.connect { connection in
                try await connection.authenticate(carol)
                #expect(try await connection.submitSelected([outgoing(3, to: "bob")]).allSatisfy { !$0.hasError })
            }
            try await relay.connect { connection in
                try await connection.authenticate(bob)
                #expect(try await connection.updateBlockList(block: ["alice"]).errorCode == nil)
            }
            let wait = try await sleeper.next()
            #expect(wait.duration == .milliseconds(60_000))
            let checks = relay.app.relay.scheduler.monitor.snapshot.checks
            relay.clock.advance(seconds: 60)
            wait.resume()
            // The releaser found it due, released (dropped) it, and read the store again.
            await relay.app.relay.scheduler.monitor.wait { $0.checks >= checks + 2 }
            #expect(relay.app.relay.scheduler.monitor.snapshot.released == 0)
            #expect(try await relay.app.relay.store.nextScheduledRelease() == nil)
            let bobItems = try await relay.connect { connection in try await connection.authenticate(bob) }
            #expect(bobItems.flatMap(\.envelopes).map(\.envelopeID) == [envelopeID(3)])
            let aliceItems = try await relay.connect { connection in try await connection.authenticate(alice) }
            #expect(aliceItems.flatMap(\.receipts).isEmpty, "\(aliceItems)")
            try await relay.app.relay.store.checkpointIfSQLite()
            #expect(databaseBytes(relay.databasePath).range(of: marker) == nil)
        }
    }
}
