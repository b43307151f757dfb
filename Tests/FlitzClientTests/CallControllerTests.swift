import FlitzCrypto
import FlitzMedia
import FlitzProtocol
import FlitzWire
import Foundation
import Synchronization
import Testing

@testable import FlitzClient

/// A controller's events, queued so a test can wait for one with a failure-guard timeout.
final class CallEventLog: Sendable {
    private let queue = WaitQueue<CallEvent>()
    private let task: Task<Void, Never>

    init(_ controller: CallController) {
        let queue = self.queue
        task = Task {
            for await event in controller.events { queue.push(event) }
            queue.finish()
        }
    }

    /// The first event `match` maps to a value, skipping others; nil after 60 s without one (a failure guard).
    func next<T>(_ match: (CallEvent) -> T?) async -> T? {
        while let event = await queue.next(timeout: .seconds(60)) {
            if let value = match(event) { return value }
        }
        return nil
    }

    func incoming() async -> CallID? { await next { if case .incoming(let id, _, _) = $0 { id } else { nil } } }
    func ended() async -> (CallRecord, CallStatistics?)? { await next { if case .ended(let record, let statistics) = $0 { (record, statistics) } else { nil } } }
    func connected() async -> (CallID, MediaPath)? { await next { if case .connected(let id, let path, _) = $0 { (id, path) } else { nil } } }
}

/// Whole calls between clients through the in-process relay, with real `CallMediaSession`s on loopback
/// (protocol/calls.md 8). No TURN: the relay has none configured, so media goes directly between host candidates.
@Suite(.serialized) struct CallControllerTests {
    static let options = CallOptions(ringTimeout: .seconds(30), gatherTimeout: .milliseconds(300))

    @Test func anAnsweredCallConnectsAndBothHistoriesAgree() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let aliceCalls = CallController(client: alice, options: Self.options), bobCalls = CallController(client: bob, options: Self.options)
        let aliceLog = CallEventLog(aliceCalls), bobLog = CallEventLog(bobCalls)
        let bobSide = Task {
            try await bob.withCalls(bobCalls) { controller in
                guard let id = await bobLog.incoming() else { return false }
                await controller.answer(id)
                guard await bobLog.connected() != nil else { return false }
                return await bobLog.ended()?.0.outcome == .answered
            }
        }
        let id = try await alice.withCalls(aliceCalls) { controller in
            let id = try await controller.placeCall(to: "bob")
            let connected = try #require(await aliceLog.connected())
            #expect(connected.0 == id && !connected.1.viaTURN)
            await controller.hangUp(id)
            let (record, statistics) = try #require(await aliceLog.ended())
            #expect(record.outcome == .answered && record.direction == .outgoing && record.peer == "bob")
            #expect((statistics?.packetsReceived ?? 0) > 0, "media flowed")
            return id
        }
        #expect(try await bobSide.value)
        let aliceRecord = try #require(try alice.callHistory().first)
        let bobRecord = try #require(try bob.callHistory().first)
        #expect(aliceRecord.callID == id && bobRecord.callID == id)
        #expect(bobRecord.outcome == .answered && bobRecord.direction == .incoming && bobRecord.peer == "alice")
        #expect(abs(aliceRecord.duration - bobRecord.duration) < 2, "both measured the same call")
        await relay.stop()
    }

    @Test func aDeclinedCallEndsDeclinedOnBothSides() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let aliceCalls = CallController(client: alice, options: Self.options), bobCalls = CallController(client: bob, options: Self.options)
        let aliceLog = CallEventLog(aliceCalls), bobLog = CallEventLog(bobCalls)
        let bobSide = Task {
            try await bob.withCalls(bobCalls) { controller -> CallOutcome? in
                guard let id = await bobLog.incoming() else { return nil }
                await controller.decline(id)
                return await bobLog.ended()?.0.outcome
            }
        }
        let outcome = try await alice.withCalls(aliceCalls) { controller in
            _ = try await controller.placeCall(to: "bob")
            return await aliceLog.ended()?.0.outcome
        }
        #expect(outcome == .declined)
        #expect(try await bobSide.value == .declined)
        #expect(try alice.callHistory().map(\.outcome) == [.declined] && bob.callHistory().map(\.outcome) == [.declined])
        await relay.stop()
    }

    @Test func anUnansweredCallIsNoAnswerForTheCallerAndMissedForTheCallee() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let quick = CallOptions(ringTimeout: .seconds(1), gatherTimeout: .milliseconds(300))
        let aliceCalls = CallController(client: alice, options: quick), bobCalls = CallController(client: bob, options: quick)
        let aliceLog = CallEventLog(aliceCalls), bobLog = CallEventLog(bobCalls)
        let bobSide = Task {
            try await bob.withCalls(bobCalls) { _ -> CallRecord? in
                guard await bobLog.incoming() != nil else { return nil }
                return await bobLog.ended()?.0
            }
        }
        let record = try await alice.withCalls(aliceCalls) { controller in
            _ = try await controller.placeCall(to: "bob")
            return await aliceLog.ended()?.0
        }
        #expect(record?.outcome == .missed && record?.outcome.label(direction: .outgoing) == "no answer")
        #expect(try await bobSide.value?.outcome == .missed)
        await relay.stop()
    }

    @Test func aDeviceInACallAnswersBusy() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let carol = try relay.client("carol")
        _ = try await carol.initialize(relayURL: relay.url, handle: "carol")
        let aliceCalls = CallController(client: alice, options: Self.options), bobCalls = CallController(client: bob, options: Self.options)
        let carolCalls = CallController(client: carol, options: Self.options)
        let aliceLog = CallEventLog(aliceCalls), bobLog = CallEventLog(bobCalls), carolLog = CallEventLog(carolCalls)
        // Carol's call rings at bob (unanswered) while alice calls him.
        let carolSide = Task {
            try await carol.withCalls(carolCalls) { controller -> CallOutcome? in
                let id = try await controller.placeCall(to: "bob")
                _ = await carolLog.next { if case .ringing(id, _, _) = $0 { true } else { nil } }
                return await carolLog.ended()?.0.outcome
            }
        }
        let (bobRings, ringing) = AsyncStream<Void>.makeStream()
        let bobSide = Task {
            try await bob.withCalls(bobCalls) { controller -> [CallRecord] in
                guard let carolCall = await bobLog.incoming() else { return [] }
                ringing.yield()
                // Alice's call arrives now: answered busy, recorded missed, never rings.
                guard let busy = await bobLog.ended() else { return [] }
                await controller.hangUp(carolCall)
                guard let declined = await bobLog.ended() else { return [] }
                return [busy.0, declined.0]
            }
        }
        // Alice calls once bob rings with carol's call.
        var rings = bobRings.makeAsyncIterator()
        _ = await rings.next()
        let outcome = try await alice.withCalls(aliceCalls) { controller in
            _ = try await controller.placeCall(to: "bob")
            return await aliceLog.ended()?.0.outcome
        }
        #expect(outcome == .busy)
        let bobRecords = try await bobSide.value
        #expect(bobRecords.map(\.peer) == ["alice", "carol"] && bobRecords.map(\.outcome) == [.missed, .declined])
        #expect(try await carolSide.value == .declined)
        await relay.stop()
    }
}
