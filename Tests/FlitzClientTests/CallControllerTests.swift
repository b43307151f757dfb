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
        // The two histories measure the same call from different events: bob from his answer to alice's hangup
        // arriving, alice from bob's answer arriving to her hangup. They differ by exactly the answer's and the
        // hangup's trip through the relay, which we bound from outside: bob's answer() call to alice's `connected`
        // (after her answeredAt), alice's hangUp() call to bob's `ended` (after his endedAt). No fixed bound: under
        // the full suite's load these trips took seconds.
        let clock = ContinuousClock()
        let answerCalled = Mutex<ContinuousClock.Instant?>(nil), endedAtBob = Mutex<ContinuousClock.Instant?>(nil)
        let bobSide = Task {
            try await bob.withCalls(bobCalls) { controller in
                guard let id = await bobLog.incoming() else { return false }
                answerCalled.withLock { $0 = clock.now }
                await controller.answer(id)
                guard await bobLog.connected() != nil else { return false }
                let outcome = await bobLog.ended()?.0.outcome
                endedAtBob.withLock { $0 = clock.now }
                return outcome == .answered
            }
        }
        let (id, answerTrip, hangupCalled) = try await alice.withCalls(aliceCalls) { controller in
            let id = try await controller.placeCall(to: "bob")
            let connected = try #require(await aliceLog.connected())
            let connectedAt = clock.now
            #expect(connected.0 == id && !connected.1.viaTURN)
            let hangupCalled = clock.now
            await controller.hangUp(id)
            let (record, statistics) = try #require(await aliceLog.ended())
            #expect(record.outcome == .answered && record.direction == .outgoing && record.peer == "bob")
            #expect((statistics?.packetsReceived ?? 0) > 0, "media flowed")
            return (id, connectedAt - (try #require(answerCalled.withLock { $0 })), hangupCalled)
        }
        #expect(try await bobSide.value)
        let hangupTrip = try #require(endedAtBob.withLock { $0 }) - hangupCalled
        let aliceRecord = try #require(try alice.callHistory().first)
        let bobRecord = try #require(try bob.callHistory().first)
        #expect(aliceRecord.callID == id && bobRecord.callID == id)
        #expect(bobRecord.outcome == .answered && bobRecord.direction == .incoming && bobRecord.peer == "alice")
        // Both trips only shorten alice's measure: bob's ≥ alice's, by at most the two trips (0.5 s for the wall
        // clock the records use against the monotonic clock measured here, and rounding).
        let bound = Self.seconds(answerTrip) + Self.seconds(hangupTrip) + 0.5
        let difference = bobRecord.duration - aliceRecord.duration
        #expect(difference > -0.5 && difference <= bound, "both measured the same call: bob \(bobRecord.duration) s, alice \(aliceRecord.duration) s, bound \(bound) s")
        #expect(aliceRecord.duration > 0)
        await relay.stop()
    }

    static func seconds(_ duration: Duration) -> TimeInterval {
        TimeInterval(duration.components.seconds) + TimeInterval(duration.components.attoseconds) / 1e18
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

extension CallControllerTests {
    @Test func theFirstAnswerWinsAndTheOtherDeviceEndsAnsweredElsewhere() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let laptop = try await relay.link("bob-laptop", to: bob)
        let aliceCalls = CallController(client: alice, options: Self.options)
        let phoneCalls = CallController(client: bob, options: Self.options), laptopCalls = CallController(client: laptop, options: Self.options)
        let aliceLog = CallEventLog(aliceCalls), phoneLog = CallEventLog(phoneCalls), laptopLog = CallEventLog(laptopCalls)
        let (laptopRings, ringing) = AsyncStream<Void>.makeStream()
        let laptopSide = Task {
            try await laptop.withCalls(laptopCalls) { _ -> CallRecord? in
                guard await laptopLog.incoming() != nil else { return nil }
                ringing.yield()
                return await laptopLog.ended()?.0
            }
        }
        let phoneSide = Task {
            try await bob.withCalls(phoneCalls) { controller -> CallRecord? in
                guard let id = await phoneLog.incoming() else { return nil }
                // Answer only once the laptop rings too, so both were offered and ringing.
                var rings = laptopRings.makeAsyncIterator()
                _ = await rings.next()
                await controller.answer(id)
                guard await phoneLog.connected() != nil else { return nil }
                await controller.hangUp(id)
                return await phoneLog.ended()?.0
            }
        }
        let record = try await alice.withCalls(aliceCalls) { controller -> CallRecord? in
            let id = try await controller.placeCall(to: "bob")
            let devices = await aliceLog.next { if case .ringing(id, _, let devices) = $0 { devices } else { nil } }
            #expect(devices?.count == 2, "offered to both of bob's devices")
            return await aliceLog.ended()?.0
        }
        #expect(record?.outcome == .answered)
        #expect(try await phoneSide.value?.outcome == .answered)
        #expect(try await laptopSide.value?.outcome == .answeredElsewhere)
        #expect(try laptop.callHistory().map(\.outcome) == [.answeredElsewhere])
        await relay.stop()
    }

    @Test func glareEndsInOneCallOnBothSides() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        // Sessions first, so both offers are ratchet messages and both sides are connected when they cross.
        _ = try await alice.send(to: "bob", text: "call me")
        #expect(try await bob.receiveAll().texts == ["call me"])
        let aliceCalls = CallController(client: alice, options: Self.options), bobCalls = CallController(client: bob, options: Self.options)
        let aliceLog = CallEventLog(aliceCalls), bobLog = CallEventLog(bobCalls)
        let (ready, readyContinuation) = AsyncStream<Void>.makeStream()
        let (go, goContinuation) = AsyncStream<Void>.makeStream()
        let bobSide = Task {
            try await bob.withCalls(bobCalls) { controller -> CallID? in
                readyContinuation.yield()
                var gos = go.makeAsyncIterator()
                _ = await gos.next()
                _ = try await controller.placeCall(to: "alice")
                return await bobLog.connected()?.0
            }
        }
        let aliceID = try await alice.withCalls(aliceCalls) { controller -> CallID? in
            var readies = ready.makeAsyncIterator()
            _ = await readies.next()
            goContinuation.yield()
            _ = try await controller.placeCall(to: "bob")
            let connected = await aliceLog.connected()?.0
            if let connected { await controller.hangUp(connected) }
            return connected
        }
        let bobID = try await bobSide.value
        #expect(aliceID != nil && aliceID == bobID, "both ended up in the same call")
        // Bob's `withCalls` hung up what was still going as it ended: each side has the one call, answered; the
        // call that gave way left no history.
        #expect(try alice.callHistory().map(\.callID) == [aliceID] && bob.callHistory().map(\.callID) == [aliceID])
        #expect(try (alice.callHistory() + bob.callHistory()).allSatisfy { $0.outcome == .answered })
        await relay.stop()
    }
}
