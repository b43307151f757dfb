@testable import FlitzRelay
import FlitzStore
import FlitzWire
import Foundation
import Testing

/// Transcript of the connection state machine for the multi-device frames (`protocol/relay.md`,
/// "Connection state machine"): which are allowed before and after authentication.
@Suite struct MultiDeviceConnectionStateTests {
    let nonce = Data(repeating: 9, count: 32)
    let alice = DeviceAddress(handle: "alice", deviceID: 2)

    func frame(_ id: UInt64, _ body: WireFrame.OneOf_Body) -> WireFrame { WireFrame(requestID: id, body: body) }

    @Test func multiDeviceFramesFollowTheConnectionState() {
        var machine = ConnectionStateMachine(nonce: nonce)
        let beforeOnly: [WireFrame.OneOf_Body] = [.registerDevice(WireRegisterDevice())]
        let either: [WireFrame.OneOf_Body] = [.linkPut(WireLinkPut()), .linkTake(WireLinkTake())]
        let afterOnly: [WireFrame.OneOf_Body] = [
            .publishDeviceList(WirePublishDeviceList()), .fetchDeviceList(WireFetchDeviceList()), .deleteAccount(WireDeleteAccount()),
            .updateAccountSettings(WireUpdateAccountSettings()),
        ]
        for body in beforeOnly + either {
            #expect(machine.receivedFrame(frame(1, body)) == .handleUnauthenticated(requestID: 1, body: body, nonce: nonce))
        }
        for body in afterOnly {
            #expect(machine.receivedFrame(frame(2, body)) == .reply(.error(.notAuthenticated, "authenticate first", requestID: 2)))
        }
        #expect(machine.authenticationSucceeded(as: alice) == .sendResultAndDrain(device: alice))
        for body in beforeOnly {
            #expect(machine.receivedFrame(frame(3, body))
                == .reply(.error(.alreadyAuthenticated, "this connection is already authenticated", requestID: 3)))
        }
        for body in either + afterOnly {
            #expect(machine.receivedFrame(frame(4, body)) == .handleAuthenticated(requestID: 4, body: body, device: alice))
        }
        // Relay-only kinds stay refused.
        #expect(machine.receivedFrame(frame(5, .deviceListResult(WireDeviceListResult())))
            == .reply(.error(.unknownFrame, "this frame kind is sent by the relay only", requestID: 5)))
        #expect(machine.receivedFrame(frame(6, .linkMessage(WireLinkMessage())))
            == .reply(.error(.unknownFrame, "this frame kind is sent by the relay only", requestID: 6)))
    }
}
