import FlitzStore
import FlitzWire
import Foundation

/// The per-connection protocol state (`protocol/relay.md`, "Connections"), as a value that does no I/O:
/// each event returns an action the caller performs.
///
/// States: awaiting authentication (after the `Challenge`) → authenticated as one device → closed.
/// Register and Recover leave the connection unauthenticated; the client then sends Authenticate.
struct ConnectionStateMachine {
    private enum State {
        case awaitingAuthentication
        case authenticated(device: DeviceAddress, sentThrough: Int64)
        case closed
    }

    /// What to do with a decoded frame.
    enum FrameAction: Equatable {
        /// Answer with this frame (an error) and do nothing else.
        case reply(WireFrame)
        /// Handle a Register, Recover or Authenticate on an unauthenticated connection.
        case handleUnauthenticated(requestID: UInt64, body: WireFrame.OneOf_Body, nonce: Data)
        /// Handle a request of the authenticated `device`.
        case handleAuthenticated(requestID: UInt64, body: WireFrame.OneOf_Body, device: DeviceAddress)
        /// The connection is closing: drop the frame.
        case ignore
    }

    /// What to do with bytes that did not decode.
    enum DecodingFailureAction: Equatable {
        /// Answer with this error frame; the connection stays open.
        case reply(WireFrame)
        /// Answer with this error frame, then close the connection.
        case replyAndClose(WireFrame)
    }

    /// What to do after a successful Authenticate.
    enum AuthenticatedAction: Equatable {
        /// Claim the device's connection slot, send the result, then everything queued and `QueueDrained`.
        case sendResultAndDrain(device: DeviceAddress)
    }

    /// What to do when items may be waiting.
    enum WakeAction: Equatable {
        /// Send items of `device` queued after `sequence`.
        case deliver(device: DeviceAddress, after: Int64)
        /// Not authenticated (or closed): nothing to deliver.
        case none
    }

    /// What to do when the connection must end.
    enum CloseAction: Equatable {
        /// Send a WebSocket close and stop reading.
        case close(reason: String)
        /// Already closed.
        case none
    }

    /// The 32-byte challenge nonce of this connection.
    let nonce: Data
    private var state: State = .awaitingAuthentication

    /// A machine for a connection that sent `Challenge{nonce}`.
    init(nonce: Data) {
        self.nonce = nonce
    }

    /// The authenticated device, if any.
    var device: DeviceAddress? {
        if case .authenticated(let device, _) = state { device } else { nil }
    }

    /// A frame decoded.
    mutating func receivedFrame(_ frame: WireFrame) -> FrameAction {
        guard let body = frame.body else {
            return .reply(.error(.unknownFrame, "frame has no body", requestID: frame.requestID))
        }
        switch state {
        case .closed:
            return .ignore
        case .awaitingAuthentication:
            switch body {
            case .register, .recover, .authenticate, .registerDevice, .linkPut, .linkTake:
                return .handleUnauthenticated(requestID: frame.requestID, body: body, nonce: nonce)
            case .publishPrekeys, .fetchPrekeyBundle, .submit, .acknowledge, .reportSeen, .publishDeviceList, .fetchDeviceList, .deleteAccount,
                .updateAccountSettings:
                return .reply(.error(.notAuthenticated, "authenticate first", requestID: frame.requestID))
            default:
                return .reply(Self.relayOnly(frame.requestID))
            }
        case .authenticated(let device, _):
            switch body {
            case .register, .recover, .authenticate, .registerDevice:
                return .reply(.error(.alreadyAuthenticated, "this connection is already authenticated", requestID: frame.requestID))
            case .publishPrekeys, .fetchPrekeyBundle, .submit, .acknowledge, .reportSeen, .publishDeviceList, .fetchDeviceList, .deleteAccount,
                .updateAccountSettings, .linkPut, .linkTake:
                return .handleAuthenticated(requestID: frame.requestID, body: body, device: device)
            default:
                return .reply(Self.relayOnly(frame.requestID))
            }
        }
    }

    /// Bytes arrived that are not a usable frame.
    mutating func receivedUndecodable(_ error: FrameDecodingError) -> DecodingFailureAction {
        switch error {
        case .tooLarge:
            state = .closed
            return .replyAndClose(.error(.frameTooLarge, error.description))
        case .malformed:
            return .reply(.error(.malformedFrame, error.description))
        case .unsupportedVersion(_, let requestID):
            return .reply(.error(.unsupportedVersion, error.description, requestID: requestID))
        case .unknownKind(let requestID):
            return .reply(.error(.unknownFrame, error.description, requestID: requestID))
        }
    }

    /// Authenticate succeeded for `device`.
    mutating func authenticationSucceeded(as device: DeviceAddress) -> AuthenticatedAction {
        state = .authenticated(device: device, sentThrough: 0)
        return .sendResultAndDrain(device: device)
    }

    /// Queue items up to and including `sequence` were sent on this connection.
    mutating func sentItems(through sequence: Int64) {
        if case .authenticated(let device, let sent) = state, sequence > sent {
            state = .authenticated(device: device, sentThrough: sequence)
        }
    }

    /// New items may be queued for this connection's device.
    func wokenUp() -> WakeAction {
        if case .authenticated(let device, let sent) = state { .deliver(device: device, after: sent) } else { .none }
    }

    /// The relay asked this connection to close (replaced, or device removed).
    mutating func closeRequested(reason: String) -> CloseAction {
        if case .closed = state { return .none }
        state = .closed
        return .close(reason: reason)
    }

    private static func relayOnly(_ requestID: UInt64) -> WireFrame {
        .error(.unknownFrame, "this frame kind is sent by the relay only", requestID: requestID)
    }
}
