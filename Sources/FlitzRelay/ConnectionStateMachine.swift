import FlitzStore
import FlitzWire
import Foundation

/// The per-connection protocol state (`protocol/relay.md`, "Connections"), as a value that does no I/O:
/// each event returns an action the caller performs.
///
/// States: awaiting authentication (after the `Challenge`) → authenticated as one device → closed.
/// Register, Recover and RegisterDevice leave the connection unauthenticated; the client then sends
/// Authenticate, signing the fresh nonce the relay sent after the registration ("Challenges").
///
/// Delivery ("Delivery window"): the authenticated state remembers the highest queue sequence sent and
/// the items sent but not acknowledged on this connection (at most `window` of them). Items are read
/// from the store one page at a time, and only while the window has room.
struct ConnectionStateMachine {
    /// An item sent on this connection and not yet acknowledged: kind and 16-byte id, packed into two
    /// words so that a full window costs no allocation per item.
    struct ItemKey: Hashable, Sendable {
        let kind: UInt8  // 0 envelope, 1 receipt
        let high: UInt64
        let low: UInt64

        /// The key of an envelope id or receipt id; nil when the id is not 16 bytes (never in flight).
        init?(kind: UInt8, id: Data) {
            guard id.count == WireConstants.idLength else { return nil }
            var high: UInt64 = 0
            var low: UInt64 = 0
            for (index, byte) in id.enumerated() {
                if index < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
            }
            self.kind = kind
            self.high = high
            self.low = low
        }

        static func envelope(_ id: Data) -> ItemKey? { ItemKey(kind: 0, id: id) }
        static func receipt(_ id: Data) -> ItemKey? { ItemKey(kind: 1, id: id) }
    }

    private struct Delivery {
        /// Highest queue sequence sent on this connection.
        var sentThrough: Int64 = 0
        /// Items sent and not acknowledged on this connection, with their expiry (ms since the epoch).
        var inFlight: [ItemKey: Int64] = [:]
        /// Whether items above `sentThrough` may be waiting (set by a wake, cleared by a short page).
        var mayHaveMore = true
        /// Whether `QueueDrained` was sent.
        var drainReported = false
    }

    private enum State {
        /// `nonceUsable` is false while an attempt that consumed the nonce is being handled.
        case awaitingAuthentication(nonceUsable: Bool)
        case authenticated(device: DeviceAddress, delivery: Delivery)
        case closed
    }

    /// What to do with a decoded frame.
    enum FrameAction: Equatable {
        /// Answer with this frame (an error) and do nothing else.
        case reply(WireFrame)
        /// Handle a Register, Recover, RegisterDevice or Authenticate on an unauthenticated connection; the
        /// nonce is now consumed. Report the outcome with `authenticationSucceeded` or `attemptEnded`.
        case handleUnauthenticated(requestID: UInt64, body: WireFrame.OneOf_Body, nonce: Data)
        /// Handle a request that needs no authentication (LinkPut, LinkTake); the nonce is untouched.
        case handleAnonymous(requestID: UInt64, body: WireFrame.OneOf_Body)
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
        /// Claim the device's connection slot, send the result, then start delivering (`pump`).
        case sendResultAndDeliver(device: DeviceAddress)
    }

    /// What to do when the connection may deliver.
    enum PumpAction: Equatable {
        /// Read at most `limit` items of `device` queued after `sequence` and send them in one `Deliver`,
        /// then report with `sent` (or `foundNothing`).
        case fetch(device: DeviceAddress, after: Int64, limit: Int)
        /// Nothing to do: not authenticated, nothing waiting, or the window is full.
        case none
    }

    /// What to do after a page was sent (or found empty).
    enum AfterPageAction: Equatable {
        /// Pump again (after the events already waiting, so requests are not starved).
        case pumpAgain
        /// Send `QueueDrained`: everything queued has been sent at least once on this connection.
        case sendQueueDrained
        /// Wait for a wake or an acknowledgement.
        case none
    }

    /// What to do when the connection must end.
    enum CloseAction: Equatable {
        /// Send a WebSocket close and stop reading.
        case close(reason: String)
        /// Already closed.
        case none
    }

    /// The connection's current 32-byte challenge nonce: the last one sent in a `Challenge`. After
    /// authentication, the one Authenticate signed (DeleteAccount signs it under its own label).
    private(set) var nonce: Data
    /// Most items sent and not acknowledged on this connection (`relay.deliveryWindow`).
    let window: Int
    private var state: State = .awaitingAuthentication(nonceUsable: true)

    /// A machine for a connection that sent `Challenge{nonce}`; `window` ≥ 1.
    init(nonce: Data, window: Int = 1_000) {
        self.nonce = nonce
        self.window = max(1, window)
    }

    /// The authenticated device, if any.
    var device: DeviceAddress? {
        if case .authenticated(let device, _) = state { device } else { nil }
    }

    /// Items sent and not acknowledged on this connection (0 before authentication).
    var inFlightCount: Int {
        if case .authenticated(_, let delivery) = state { delivery.inFlight.count } else { 0 }
    }

    /// Highest queue sequence sent on this connection (0 before authentication).
    var sentThrough: Int64 {
        if case .authenticated(_, let delivery) = state { delivery.sentThrough } else { 0 }
    }

    /// A frame decoded.
    mutating func receivedFrame(_ frame: WireFrame) -> FrameAction {
        guard let body = frame.body else {
            return .reply(.error(.unknownFrame, "frame has no body", requestID: frame.requestID))
        }
        switch state {
        case .closed:
            return .ignore
        case .awaitingAuthentication(let nonceUsable):
            switch body {
            case .register, .recover, .authenticate, .registerDevice:
                // Cannot happen (frames are handled one at a time and every attempt ends with a fresh
                // nonce or authentication), but a consumed nonce is never accepted twice.
                guard nonceUsable else { return .reply(.error(.authenticationFailed, "challenge already used", requestID: frame.requestID)) }
                state = .awaitingAuthentication(nonceUsable: false)
                return .handleUnauthenticated(requestID: frame.requestID, body: body, nonce: nonce)
            case .linkPut, .linkTake:
                return .handleAnonymous(requestID: frame.requestID, body: body)
            case .publishPrekeys, .fetchPrekeyBundle, .submit, .acknowledge, .reportSeen, .publishDeviceList, .fetchDeviceList,
                .deleteAccount, .updateAccountSettings, .registerPushEndpoint, .removePushEndpoint, .fetchPushEndpoint, .unsend,
                .cancelScheduled, .updateBlockList, .fetchBlockList, .submitReport, .requestUploadCapability, .sendCallSignal,
                .requestTurnCredentials:
                return .reply(.error(.notAuthenticated, "authenticate first", requestID: frame.requestID))
            default:
                return .reply(Self.relayOnly(frame.requestID))
            }
        case .authenticated(let device, _):
            switch body {
            case .register, .recover, .authenticate, .registerDevice:
                return .reply(.error(.alreadyAuthenticated, "this connection is already authenticated", requestID: frame.requestID))
            case .linkPut, .linkTake:
                return .handleAnonymous(requestID: frame.requestID, body: body)
            case .publishPrekeys, .fetchPrekeyBundle, .submit, .acknowledge, .reportSeen, .publishDeviceList, .fetchDeviceList,
                .deleteAccount, .updateAccountSettings, .registerPushEndpoint, .removePushEndpoint, .fetchPushEndpoint, .unsend,
                .cancelScheduled, .updateBlockList, .fetchBlockList, .submitReport, .requestUploadCapability, .sendCallSignal,
                .requestTurnCredentials:
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

    /// An attempt (Register, Recover, RegisterDevice, or an Authenticate that failed) ended and left the
    /// connection unauthenticated. `freshNonce` (32 random bytes) replaces the consumed one: send it in a
    /// `Challenge` before the attempt's answer, so the next attempt can sign it.
    mutating func attemptEnded(freshNonce: Data) {
        if case .awaitingAuthentication = state {
            state = .awaitingAuthentication(nonceUsable: true)
        }
        nonce = freshNonce
    }

    /// Authenticate succeeded for `device`.
    mutating func authenticationSucceeded(as device: DeviceAddress) -> AuthenticatedAction {
        state = .authenticated(device: device, delivery: Delivery())
        return .sendResultAndDeliver(device: device)
    }

    /// New items may be queued for this connection's device. Returns whether to pump.
    mutating func wokenUp() -> Bool {
        guard case .authenticated(let device, var delivery) = state else { return false }
        delivery.mayHaveMore = true
        state = .authenticated(device: device, delivery: delivery)
        return delivery.inFlight.count < window
    }

    /// The connection may deliver now; `nowMs` is the relay's clock. In-flight items past their expiry are
    /// dropped from the window first: clients do not acknowledge expired envelopes, and they are never
    /// sent again.
    mutating func pump(nowMs: Int64) -> PumpAction {
        guard case .authenticated(let device, var delivery) = state, delivery.mayHaveMore else { return .none }
        if delivery.inFlight.count >= window {
            delivery.inFlight = delivery.inFlight.filter { $0.value > nowMs }
            state = .authenticated(device: device, delivery: delivery)
        }
        let room = window - delivery.inFlight.count
        guard room > 0 else { return .none }
        return .fetch(device: device, after: delivery.sentThrough, limit: min(room, WireConstants.maxItemsPerDeliver))
    }

    /// A `Deliver` with `items` (key and expiry, ms), the last of queue sequence `lastSequence`, was sent;
    /// `more` is true when further items may be waiting right away.
    mutating func sent(_ items: [(key: ItemKey, expiresAtMs: Int64)], through lastSequence: Int64, more: Bool) -> AfterPageAction {
        guard case .authenticated(let device, var delivery) = state else { return .none }
        for item in items { delivery.inFlight[item.key] = item.expiresAtMs }
        delivery.sentThrough = max(delivery.sentThrough, lastSequence)
        delivery.mayHaveMore = more
        defer { state = .authenticated(device: device, delivery: delivery) }
        if more { return delivery.inFlight.count < window ? .pumpAgain : .none }
        if !delivery.drainReported {
            delivery.drainReported = true
            return .sendQueueDrained
        }
        return .none
    }

    /// The store had nothing above the highest sequence sent.
    mutating func foundNothing() -> AfterPageAction {
        sent([], through: 0, more: false)
    }

    /// The device's `Acknowledge` on this connection succeeded for these items. Returns whether to pump
    /// (the window opened and items may be waiting). Items sent on an earlier connection, or never sent,
    /// change nothing here.
    mutating func acknowledged(_ keys: [ItemKey]) -> Bool {
        guard case .authenticated(let device, var delivery) = state else { return false }
        for key in keys { delivery.inFlight[key] = nil }
        state = .authenticated(device: device, delivery: delivery)
        return delivery.mayHaveMore && delivery.inFlight.count < window
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
