@testable import FlitzRelay
import FlitzStore
import FlitzWire
import Foundation
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
        #expect(machine.wokenUp() == .none)
        #expect(machine.authenticationSucceeded(as: alice) == .sendResultAndDrain(device: alice))
        #expect(machine.wokenUp() == .deliver(device: alice, after: 0))
        machine.sentItems(through: 5)
        #expect(machine.wokenUp() == .deliver(device: alice, after: 5))
        machine.sentItems(through: 3)
        #expect(machine.wokenUp() == .deliver(device: alice, after: 5))
        #expect(machine.receivedFrame(frame(3, .authenticate(WireAuthenticate())))
            == .reply(.error(.alreadyAuthenticated, "this connection is already authenticated", requestID: 3)))
        #expect(machine.receivedFrame(frame(4, .acknowledge(WireAcknowledge()))) == .handleAuthenticated(requestID: 4, body: .acknowledge(WireAcknowledge()), device: alice))
        #expect(machine.closeRequested(reason: "replaced") == .close(reason: "replaced"))
        #expect(machine.closeRequested(reason: "again") == .none)
        #expect(machine.receivedFrame(frame(5, .acknowledge(WireAcknowledge()))) == .ignore)
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
