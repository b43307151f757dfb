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
}
