@testable import FlitzRelay
import FlitzStore
import FlitzWire
import Foundation
import Synchronization
import Testing

/// Transcript tests of the per-connection state machine: event, expected action, event, ...
@Suite struct ConnectionStateMachineTests {
    let nonce = Data(repeating: 7, count: 32)
    let alice = DeviceAddress(handle: "alice", deviceID: 1)

    func frame(_ id: UInt64, _ body: WireFrame.OneOf_Body) -> WireFrame { WireFrame(requestID: id, body: body) }

    @Test func unauthenticatedThenAuthenticatedTranscript() {
        var machine = ConnectionStateMachine(nonce: nonce)
        #expect(machine.receivedFrame(frame(1, .submit(WireSubmit()))) == .reply(.error(.notAuthenticated, "authenticate first", requestID: 1)))
        #expect(machine.receivedFrame(frame(2, .register(WireRegister()))) == .handleUnauthenticated(requestID: 2, body: .register(WireRegister()), nonce: nonce))
        #expect(machine.wokenUp() == false)
        #expect(machine.pump(nowMs: 0) == .none)
        #expect(machine.authenticationSucceeded(as: alice) == .sendResultAndDeliver(device: alice))
        #expect(machine.pump(nowMs: 0) == .fetch(device: alice, after: 0, limit: 100))
        #expect(machine.sent(items(1...5), through: 5, more: false) == .sendQueueDrained)
        #expect(machine.pump(nowMs: 0) == .none, "nothing more until a wake")
        #expect(machine.wokenUp() == true)
        #expect(machine.pump(nowMs: 0) == .fetch(device: alice, after: 5, limit: 100))
        #expect(machine.foundNothing() == .none, "QueueDrained is sent once")
        #expect(machine.receivedFrame(frame(3, .authenticate(WireAuthenticate())))
            == .reply(.error(.alreadyAuthenticated, "this connection is already authenticated", requestID: 3)))
        #expect(machine.receivedFrame(frame(4, .acknowledge(WireAcknowledge()))) == .handleAuthenticated(requestID: 4, body: .acknowledge(WireAcknowledge()), device: alice))
        #expect(machine.closeRequested(reason: "replaced") == .close(reason: "replaced"))
        #expect(machine.closeRequested(reason: "again") == .none)
        #expect(machine.receivedFrame(frame(5, .acknowledge(WireAcknowledge()))) == .ignore)
    }

    /// 16-byte envelope keys for `range`, expiring at `expiresAtMs`.
    func items(_ range: ClosedRange<Int>, expiresAtMs: Int64 = .max) -> [(key: ConnectionStateMachine.ItemKey, expiresAtMs: Int64)] {
        range.map { (key(UInt8($0)), expiresAtMs) }
    }

    func key(_ byte: UInt8) -> ConnectionStateMachine.ItemKey { ConnectionStateMachine.ItemKey.envelope(Data(repeating: byte, count: 16))! }

    @Test func windowTranscript() {
        var machine = ConnectionStateMachine(nonce: nonce, window: 8)
        _ = machine.authenticationSucceeded(as: alice)
        #expect(machine.pump(nowMs: 0) == .fetch(device: alice, after: 0, limit: 8), "a page never passes the window")
        #expect(machine.sent(items(1...5), through: 50, more: true) == .pumpAgain, "a short page below the window: go on")
        #expect(machine.pump(nowMs: 0) == .fetch(device: alice, after: 50, limit: 3))
        #expect(machine.sent(items(6...8), through: 80, more: true) == .none, "the window is full")
        #expect(machine.inFlightCount == 8)
        #expect(machine.pump(nowMs: 0) == .none)
        #expect(machine.wokenUp() == false, "a wake does not open the window")
        #expect(machine.acknowledged([ConnectionStateMachine.ItemKey.receipt(Data(repeating: 1, count: 16))!]) == false, "a receipt key is not an envelope key")
        #expect(machine.acknowledged([key(99)]) == false, "an item not sent here opens nothing")
        #expect(machine.acknowledged([key(1), key(2)]) == true)
        #expect(machine.pump(nowMs: 0) == .fetch(device: alice, after: 80, limit: 2))
        #expect(machine.sent(items(9...10), through: 100, more: false) == .sendQueueDrained)
        #expect(machine.acknowledged([key(3)]) == false, "nothing may be waiting")
        #expect(machine.wokenUp() == true)
        #expect(machine.acknowledged([key(3)]) == true, "acknowledging twice changes nothing more")
        #expect(machine.sentThrough == 100)
    }

    @Test func expiredItemsLeaveAFullWindow() {
        var machine = ConnectionStateMachine(nonce: nonce, window: 4)
        _ = machine.authenticationSucceeded(as: alice)
        _ = machine.pump(nowMs: 0)
        #expect(machine.sent(items(1...2, expiresAtMs: 1_000) + items(3...4), through: 4, more: true) == .none)
        #expect(machine.pump(nowMs: 999) == .none, "not expired yet")
        #expect(machine.pump(nowMs: 1_000) == .fetch(device: alice, after: 4, limit: 2), "expired items are never acknowledged")
    }

    @Test func everyAttemptConsumesTheNonce() {
        var machine = ConnectionStateMachine(nonce: nonce)
        let fresh = Data(repeating: 8, count: 32)
        #expect(machine.receivedFrame(frame(1, .authenticate(WireAuthenticate())))
            == .handleUnauthenticated(requestID: 1, body: .authenticate(WireAuthenticate()), nonce: nonce))
        // Before the attempt's outcome, the consumed nonce is not offered again.
        #expect(machine.receivedFrame(frame(2, .registerDevice(WireRegisterDevice()))).isReply(code: .authenticationFailed))
        machine.attemptEnded(freshNonce: fresh)
        #expect(machine.nonce == fresh)
        #expect(machine.receivedFrame(frame(3, .registerDevice(WireRegisterDevice())))
            == .handleUnauthenticated(requestID: 3, body: .registerDevice(WireRegisterDevice()), nonce: fresh))
        machine.attemptEnded(freshNonce: nonce)
        #expect(machine.receivedFrame(frame(4, .linkTake(WireLinkTake()))) == .handleAnonymous(requestID: 4, body: .linkTake(WireLinkTake())))
        #expect(machine.receivedFrame(frame(5, .fetchDeviceList(WireFetchDeviceList()))).isReply(code: .notAuthenticated))
    }

    /// However many items are queued while a connection is busy, at most one pump event waits for it.
    @Test func wakesAreCoalescedIntoOnePendingPump() {
        let enqueued = Mutex(0)
        let pump = PumpRequest(continuation: { enqueued.withLock { $0 += 1 } })
        for _ in 0..<1_000 { pump.wake() }
        pump.request()
        #expect(enqueued.withLock { $0 } == 1)
        #expect(pump.taken() == true, "the pump being handled reports the wakes")
        pump.request()
        #expect(enqueued.withLock { $0 } == 2)
        #expect(pump.taken() == false, "a pump asked for after a page is not a wake")
    }

    @Test func undecodableInputTranscript() {
        var machine = ConnectionStateMachine(nonce: nonce)
        #expect(machine.receivedFrame(frame(9, .deliver(WireDeliver()))).isReply(code: .unknownFrame))
        guard case .reply(let malformed) = machine.receivedUndecodable(.malformed) else { Issue.record("expected reply"); return }
        #expect(malformed.errorCode == .malformedFrame)
        guard case .reply(let version) = machine.receivedUndecodable(.unsupportedVersion(2, requestID: 8)) else { Issue.record("expected reply"); return }
        #expect(version.errorCode == .unsupportedVersion && version.requestID == 8)
        guard case .replyAndClose(let tooLarge) = machine.receivedUndecodable(.tooLarge(size: 2_000_000)) else { Issue.record("expected close"); return }
        #expect(tooLarge.errorCode == .frameTooLarge)
        #expect(machine.receivedFrame(frame(10, .register(WireRegister()))) == .ignore)
    }

    @Test func debugClockHonoursTestOffset() {
        let clock = SystemRelayClock(environment: ["FLITZ_TEST_CLOCK_OFFSET": "3600"])
        #if DEBUG
        #expect(clock.offsetSeconds == 3600)
        #expect(abs(clock.now().timeIntervalSinceNow - 3600) < 60)
        #else
        #expect(clock.offsetSeconds == 0)
        #endif
    }
}

extension ConnectionStateMachine.FrameAction {
    func isReply(code: WireErrorCode) -> Bool {
        if case .reply(let frame) = self { frame.errorCode == code } else { false }
    }
}
