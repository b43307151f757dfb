@testable import FlitzRelay
import FlitzStore
import FlitzWire
import Foundation
import Synchronization
import Testing

/// `CallSignalBroker` as a value-level transcript (no I/O): what a connection that attaches, ends or is replaced
/// gets, in which order, and what stays held (`protocol/calls.md` 3.2).
@Suite struct CallSignalBrokerTests {
    let phone = DeviceAddress(handle: "bob", deviceID: 1)

    func copy(_ sequence: UInt32, device: UInt32 = 1, expiresAtMs: Int64 = 10_000) -> WireCallSignalDelivery {
        var delivery = WireCallSignalDelivery()
        delivery.callID = callID(0x42)
        delivery.kind = .callIce
        delivery.recipientDeviceID = device
        delivery.sequence = sequence
        delivery.expiresAtMs = expiresAtMs
        return delivery
    }

    func key(_ sender: UInt32 = 7) -> CallSignalBroker.SequenceKey {
        CallSignalBroker.SequenceKey(callID: callID(0x42), sender: DeviceAddress(handle: "alice", deviceID: sender))
    }

    @Test func aConnectionGetsHeldCopiesThenWokenOnesAndAnEndedOneLeavesItsCopiesHeld() {
        let broker = CallSignalBroker()
        let wakes = Mutex(0)
        // Offline: held.
        let first = broker.accept(key(), sequence: 1, recipient: "bob", copies: [copy(1)], expiresAtMs: 10_000, drop: false, nowMs: 0)
        #expect(first?.held.map(\.deviceID) == [1] && first?.delivered == [])
        // Connection 1 attaches: nothing is woken for what was held; it takes the held copy itself.
        broker.attach(phone, connectionID: 1) { wakes.withLock { $0 += 1 } }
        #expect(broker.take(phone, connectionID: 1, nowMs: 1).map(\.sequence) == [1])
        // Accepted while attached: delivered, the connection woken once per copy.
        let second = broker.accept(key(), sequence: 2, recipient: "bob", copies: [copy(2)], expiresAtMs: 10_000, drop: false, nowMs: 2)
        #expect(second?.delivered == [1] && second?.held.isEmpty == true)
        #expect(wakes.withLock { $0 } == 1)
        // The connection ends before taking it: it stays held for the next one, which a stale id cannot take.
        broker.detach(phone, connectionID: 1)
        let third = broker.accept(key(), sequence: 3, recipient: "bob", copies: [copy(3)], expiresAtMs: 10_000, drop: false, nowMs: 3)
        #expect(third?.held.map(\.deviceID) == [1])
        broker.attach(phone, connectionID: 2) {}
        #expect(broker.take(phone, connectionID: 1, nowMs: 4).isEmpty)
        #expect(broker.take(phone, connectionID: 2, nowMs: 4).map(\.sequence) == [2, 3])
        #expect(broker.take(phone, connectionID: 2, nowMs: 5).isEmpty)
        #expect(broker.counts == CallSignalBroker.Counts(inMemory: 0, expired: 0, overflowed: 0))
    }

    @Test func aNewerConnectionReplacesAnOlderOneWhoseDetachChangesNothing() {
        let broker = CallSignalBroker()
        broker.attach(phone, connectionID: 1) {}
        broker.attach(phone, connectionID: 2) {}
        broker.detach(phone, connectionID: 1)
        let accepted = broker.accept(key(), sequence: 1, recipient: "bob", copies: [copy(1)], expiresAtMs: 10_000, drop: false, nowMs: 0)
        #expect(accepted?.delivered == [1])
        #expect(broker.take(phone, connectionID: 2, nowMs: 1).map(\.sequence) == [1])
    }

    @Test func sequencesAreCheckedPerPairUntilTheLastSignalExpires() {
        let broker = CallSignalBroker()
        #expect(broker.isFresh(key(), sequence: 1, nowMs: 0))
        #expect(broker.accept(key(), sequence: 5, recipient: "bob", copies: [copy(5, expiresAtMs: 1_000)], expiresAtMs: 1_000, drop: false, nowMs: 0) != nil)
        #expect(!broker.isFresh(key(), sequence: 5, nowMs: 10) && !broker.isFresh(key(), sequence: 4, nowMs: 10))
        #expect(broker.isFresh(key(), sequence: 6, nowMs: 10))
        // Another sending device of the same call has its own sequences.
        #expect(broker.isFresh(key(8), sequence: 1, nowMs: 10))
        // Accepting re-checks under the lock: a stale sequence accepts nothing.
        #expect(broker.accept(key(), sequence: 5, recipient: "bob", copies: [copy(5)], expiresAtMs: 2_000, drop: false, nowMs: 10) == nil)
        #expect(broker.counts.inMemory == 1)
        // At the expiry the copy is dropped (counted) and the pair forgotten.
        #expect(broker.purge(nowMs: 1_000) == 1)
        #expect(broker.isFresh(key(), sequence: 1, nowMs: 1_000))
        #expect(broker.counts == CallSignalBroker.Counts(inMemory: 0, expired: 1, overflowed: 0))
    }

    @Test func aDroppedSignalRecordsItsSequenceButKeepsNothing() {
        let broker = CallSignalBroker()
        broker.attach(phone, connectionID: 1) { Issue.record("a dropped signal woke the connection") }
        let accepted = broker.accept(key(), sequence: 1, recipient: "bob", copies: [copy(1), copy(1, device: 2)], expiresAtMs: 1_000, drop: true, nowMs: 0)
        #expect(accepted?.held.map(\.deviceID) == [1, 2] && accepted?.delivered == [])
        #expect(!broker.isFresh(key(), sequence: 1, nowMs: 1))
        #expect(broker.take(phone, connectionID: 1, nowMs: 1).isEmpty)
        #expect(broker.counts.inMemory == 0)
    }

    /// A copy of `kind` from `sender`'s device 1 for the phone, in call `call`.
    func copy(_ kind: WireCallSignalKind, from sender: String, _ sequence: UInt32, call: UInt8 = 0x42) -> WireCallSignalDelivery {
        var delivery = copy(sequence)
        delivery.kind = kind
        delivery.senderHandle = sender
        delivery.callID = callID(call)
        return delivery
    }

    func accept(_ broker: CallSignalBroker, _ delivery: WireCallSignalDelivery) -> CallSignalBroker.Acceptance? {
        let key = CallSignalBroker.SequenceKey(callID: delivery.callID, sender: DeviceAddress(handle: delivery.senderHandle, deviceID: 1))
        return broker.accept(
            key, sequence: delivery.sequence, recipient: "bob", copies: [delivery], expiresAtMs: delivery.expiresAtMs, drop: false, nowMs: 0)
    }

    @Test func oneAccountKeepsAtMostEightCopiesForADeviceAndNeverPushesOutAnOfferForAnotherKind() throws {
        let broker = CallSignalBroker()
        #expect(accept(broker, copy(.callOffer, from: "mallory", 1))?.held.map(\.deviceID) == [1])
        for sequence in UInt32(2)...11 { #expect(accept(broker, copy(.callIce, from: "mallory", sequence))?.held.map(\.deviceID) == [1]) }
        // Eight kept: the offer, then the newest seven ICE signals (the three oldest were dropped).
        #expect(broker.counts == CallSignalBroker.Counts(inMemory: 8, expired: 0, overflowed: 3))
        broker.attach(phone, connectionID: 1) {}
        #expect(broker.take(phone, connectionID: 1, nowMs: 1).map(\.sequence) == [1] + Array(5...11))
        broker.detach(phone, connectionID: 1)
        // Eight offers (fresh call ids) fill the account's share; an ICE signal then finds only offers and is itself
        // dropped (reported as held), while a ninth offer replaces the account's oldest offer.
        for call in UInt8(1)...8 { _ = accept(broker, copy(.callOffer, from: "mallory", 1, call: call)) }
        let ice = accept(broker, copy(.callIce, from: "mallory", 2, call: 1))
        #expect(ice?.held.map(\.deviceID) == [1] && ice?.delivered == [])
        let serial = try #require(ice?.held.first?.serial)
        #expect(!broker.isWaiting(phone, serial: serial, nowMs: 1))
        _ = accept(broker, copy(.callOffer, from: "mallory", 1, call: 9))
        broker.attach(phone, connectionID: 2) {}
        let taken = broker.take(phone, connectionID: 2, nowMs: 1)
        #expect(taken.map(\.callID) == (UInt8(2)...9).map { callID($0) } && taken.allSatisfy { $0.kind == .callOffer })
        #expect(broker.counts == CallSignalBroker.Counts(inMemory: 0, expired: 0, overflowed: 5))
    }

    @Test func aFullDeviceDropsACopyOfTheAccountHoldingTheMostButNotAnotherAccountsOffers() {
        let broker = CallSignalBroker()
        // Eight accounts hold eight copies each (64): carol's are all offers and the oldest.
        for call in UInt8(1)...8 { _ = accept(broker, copy(.callOffer, from: "carol", 1, call: call)) }
        for account in 1...7 {
            for sequence in UInt32(1)...8 { _ = accept(broker, copy(.callIce, from: "m\(account)", sequence)) }
        }
        #expect(broker.counts == CallSignalBroker.Counts(inMemory: 64, expired: 0, overflowed: 0))
        // A ninth account's ICE signal: every account holds eight; carol's oldest copies are offers, which no ICE signal
        // may push out, so m1's oldest goes.
        #expect(accept(broker, copy(.callIce, from: "eve", 1))?.held.map(\.deviceID) == [1])
        broker.attach(phone, connectionID: 1) {}
        let taken = broker.take(phone, connectionID: 1, nowMs: 1)
        #expect(taken.count == 64)
        #expect(taken.filter { $0.senderHandle == "carol" }.map(\.kind) == Array(repeating: .callOffer, count: 8))
        #expect(taken.filter { $0.senderHandle == "m1" }.map(\.sequence) == Array(2...8))
        #expect(taken.last?.senderHandle == "eve")
        #expect(broker.counts.overflowed == 1)
    }

    @Test func requestsPurgeAtMostOnceASecondAndAnExpiredCopyIsNeverHandedOutMeanwhile() throws {
        let broker = CallSignalBroker()
        let laptop = DeviceAddress(handle: "bob", deviceID: 2)
        _ = broker.accept(key(7), sequence: 1, recipient: "bob", copies: [copy(1, expiresAtMs: 1_000)], expiresAtMs: 1_000, drop: false, nowMs: 0)
        let later = broker.accept(
            key(8), sequence: 1, recipient: "bob", copies: [copy(1, device: 2, expiresAtMs: 1_500)], expiresAtMs: 1_500, drop: false, nowMs: 0)
        let serial = try #require(later?.held.first?.serial)
        // At the first expiry a request purges: one copy dropped.
        #expect(broker.isFresh(key(9), sequence: 1, nowMs: 1_000))
        #expect(broker.counts == CallSignalBroker.Counts(inMemory: 1, expired: 1, overflowed: 0))
        // The second copy expired at 1 500, but the last purge was under a second ago: no scan yet...
        #expect(broker.isFresh(key(9), sequence: 1, nowMs: 1_600))
        #expect(broker.counts == CallSignalBroker.Counts(inMemory: 1, expired: 1, overflowed: 0))
        // ...and still the expired copy is not waiting (never rung) and its pair's sequence is free again.
        #expect(!broker.isWaiting(laptop, serial: serial, nowMs: 1_600))
        #expect(broker.isFresh(key(8), sequence: 1, nowMs: 1_600))
        // A second after the last purge, the next request purges it.
        #expect(broker.isFresh(key(9), sequence: 1, nowMs: 2_000))
        #expect(broker.counts == CallSignalBroker.Counts(inMemory: 0, expired: 2, overflowed: 0))
    }

    @Test func theRateLimitIsAskedOnlyForAFreshSequenceAndItsRefusalRecordsNothing() {
        let broker = CallSignalBroker()
        var asked = 0
        func accept(_ nowMs: Int64, admitting: Bool) -> CallSignalBroker.Acceptance? {
            broker.accept(key(), sequence: 1, recipient: "bob", copies: [copy(1)], expiresAtMs: 10_000, drop: false, nowMs: nowMs) {
                asked += 1
                return admitting
            }
        }
        // Refused by the rate limit: nothing held, the sequence stays free.
        let refused = accept(0, admitting: false)
        #expect(refused == nil && asked == 1 && broker.counts.inMemory == 0 && broker.isFresh(key(), sequence: 1, nowMs: 1))
        let admitted = accept(1, admitting: true)
        #expect(admitted != nil && asked == 2)
        // A duplicate of that sequence (say from the device's other connection, concurrently) is refused before the rate
        // limit is asked: it takes no token.
        let duplicate = accept(2, admitting: true)
        #expect(duplicate == nil && asked == 2 && broker.counts.inMemory == 1)
    }
}
