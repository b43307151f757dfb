import Crypto
import FlitzCrypto
import FlitzStore
import FlitzWire
import Foundation

/// The relay's side of `protocol/calls.md`: `SendCallSignal` (section 3.1: the checks in order, then delivery, holding
/// and the ring push of 3.2 and 3.3) and `RequestTurnCredentials` (3.5). The relay sees only the fields the wire shows
/// (call id, kind, sequence, sizes, times); it never stores a call signal, and never logs one, its ciphertext, its call
/// id or the handles it concerns.
extension Relay {
    /// Longest ciphertext of one copy, bytes (calls.md 10).
    static let maxCallCiphertextBytes = 16_384
    /// Most copies of a signal other than an offer (calls.md 10).
    static let maxCallCopies = 10
    /// An offer's ttl bounds and default, seconds (calls.md 10).
    static let offerTTLRange: ClosedRange<UInt32> = 60...90
    static let defaultOfferTTL: UInt32 = 75
    /// Other signals' ttl bounds and default, seconds.
    static let signalTTLRange: ClosedRange<UInt32> = 1...90
    static let defaultSignalTTL: UInt32 = 90

    /// SendCallSignal and RequestTurnCredentials; nil for any other frame.
    func handleCallFrame(requestID: UInt64, body: WireFrame.OneOf_Body, device: DeviceAddress) async throws(RelayError) -> WireFrame? {
        switch body {
        case .sendCallSignal(let request):
            return WireFrame(requestID: requestID, body: .callSignalResult(try await sendCallSignal(request, sender: device)))
        case .requestTurnCredentials:
            return WireFrame(requestID: requestID, body: .turnCredentials(turnCredentials()))
        default:
            return nil
        }
    }

    /// The checks of `calls.md` 3.1 that need neither the store nor the relay's memory (checks 1 and 2), in order;
    /// returns the effective ttl in seconds.
    /// - Throws: `RelayError(.invalidArgument)` naming the field.
    static func checkCallSignal(_ request: WireSendCallSignal) throws(RelayError) -> UInt32 {
        // 1. Sizes and forms.
        guard request.callID.count == WireConstants.idLength else {
            throw RelayError(.invalidArgument, "call_id must be \(WireConstants.idLength) bytes")
        }
        switch request.kind {
        case .callOffer, .callAnswer, .callIce, .callHangup, .callBusy: break
        case .unspecified, .UNRECOGNIZED: throw RelayError(.invalidArgument, "kind must be CALL_OFFER, CALL_ANSWER, CALL_ICE, CALL_HANGUP or CALL_BUSY")
        }
        guard request.sequence >= 1 else { throw RelayError(.invalidArgument, "sequence must be at least 1") }
        guard request.copies.allSatisfy({ (1...maxCallCiphertextBytes).contains($0.ciphertext.count) }) else {
            throw RelayError(.invalidArgument, "each ciphertext must be 1 to \(maxCallCiphertextBytes) bytes")
        }
        guard Set(request.copies.map(\.recipientDeviceID)).count == request.copies.count else {
            throw RelayError(.invalidArgument, "each copy must address a different device")
        }
        // 2. Urgency, ttl and copies by kind.
        if request.kind == .callOffer {
            guard request.urgency == .ring else { throw RelayError(.invalidArgument, "a CALL_OFFER must have urgency URGENCY_RING") }
            guard request.ttlSeconds == 0 || offerTTLRange.contains(request.ttlSeconds) else {
                throw RelayError(.invalidArgument, "a CALL_OFFER's ttl_seconds must be 0 (75) or 60 to 90")
            }
            return request.ttlSeconds == 0 ? defaultOfferTTL : request.ttlSeconds
        }
        guard request.urgency == .silent || request.urgency == .unspecified else {
            throw RelayError(.invalidArgument, "only a CALL_OFFER may ring; other signals have urgency URGENCY_SILENT or none")
        }
        guard request.ttlSeconds == 0 || signalTTLRange.contains(request.ttlSeconds) else {
            throw RelayError(.invalidArgument, "ttl_seconds must be 0 (90) or 1 to 90")
        }
        guard (1...maxCallCopies).contains(request.copies.count) else {
            throw RelayError(.invalidArgument, "a signal other than an offer carries 1 to \(maxCallCopies) copies")
        }
        return request.ttlSeconds == 0 ? defaultSignalTTL : request.ttlSeconds
    }

    /// SendCallSignal (`calls.md` 3.1 to 3.3): the checks in order (nothing is held or delivered unless all pass), then
    /// each copy is handed to its device's connection or held, an offer rings held devices with a push endpoint, and a
    /// signal to an account that blocks the sender is dropped behind the same answer (every device held, none woken).
    func sendCallSignal(_ request: WireSendCallSignal, sender: DeviceAddress) async throws(RelayError) -> WireCallSignalResult {
        let ttl = try Self.checkCallSignal(request)
        // 3. The recipient handle exists.
        let unknown = RelayError(.unknownRecipient, "no such handle")
        guard Handle.isValid(request.recipientHandle) else { throw unknown }
        let current: Set<UInt32>
        do {
            guard try await store.account(handle: request.recipientHandle) != nil else { throw unknown }
            current = Set(try await store.devices(handle: request.recipientHandle).map(\.address.deviceID))
        } catch let error as RelayError {
            throw error
        } catch {
            throw internalError(error)
        }
        // 4. The devices addressed.
        let addressed = Set(request.copies.map(\.recipientDeviceID))
        if request.kind == .callOffer {
            guard addressed == current else {
                var error = RelayError(
                    .mismatchedDevices, "a CALL_OFFER must address exactly the current devices of \(request.recipientHandle); nothing was sent")
                var mismatch = WireDeviceMismatch()
                mismatch.handle = request.recipientHandle
                mismatch.missingDeviceIds = current.subtracting(addressed).sorted()
                mismatch.staleDeviceIds = addressed.subtracting(current).sorted()
                error.deviceMismatches = [mismatch]
                throw error
            }
        } else {
            guard addressed.isSubset(of: current) else { throw RelayError(.staleDevice, "not a current device of this handle") }
        }
        // conversations.md 9: a signal to an account that blocks the sender is accepted (after every check) and dropped.
        // Read before checks 5 and 6, which `calls.accept` runs with the acceptance under one lock, so no await
        // separates a token taken from the sequence recorded.
        var blocked = false
        if request.recipientHandle != sender.handle {
            do {
                blocked = !(try await store.blockers(of: sender.handle, among: [request.recipientHandle])).isEmpty
            } catch {
                throw internalError(error)
            }
        }
        let now = clock.nowMs()
        let key = CallSignalBroker.SequenceKey(callID: request.callID, sender: sender)
        let replayed = RelayError(.invalidArgument, "sequence must be greater than the last one accepted for this call from this device")
        let expiresAt = now + Int64(ttl) * 1_000
        let copies = request.copies.map { copy in
            var delivery = WireCallSignalDelivery()
            delivery.callID = request.callID
            delivery.kind = request.kind
            delivery.senderHandle = sender.handle
            delivery.senderDeviceID = sender.deviceID
            delivery.recipientDeviceID = copy.recipientDeviceID
            delivery.sequence = request.sequence
            delivery.sentAtMs = request.sentAtMs
            delivery.receivedAtMs = now
            delivery.expiresAtMs = expiresAt
            delivery.urgency = request.urgency
            delivery.ciphertext = copy.ciphertext
            return delivery
        }
        // 5. A replayed frame, then 6. the rate limits (a refused signal takes no token and records no sequence).
        var limited: RelayError?
        let accepted: CallSignalBroker.Acceptance?
        if cluster != nil {
            accepted = try await acceptCallSignalInCluster(request, sender: sender, copies: copies, expiresAtMs: expiresAt, drop: blocked, nowMs: now)
        } else {
            accepted = calls.accept(
            key, sequence: request.sequence, recipient: request.recipientHandle, copies: copies, expiresAtMs: expiresAt, drop: blocked, nowMs: now
        ) { () -> Bool in
            do throws(RelayError) {
                try limiter.admitCallSignal(offer: request.kind == .callOffer, device: sender, nowMs: now)
                return true
            } catch {
                limited = error
                return false
            }
        }
        }
        guard let acceptance = accepted else { throw limited ?? replayed }
        metrics.callSignalAccepted(request.kind)

        var result = WireCallSignalResult()
        result.acceptedAtMs = now
        result.expiresAtMs = expiresAt
        result.deliveredDeviceIds = acceptance.delivered
        result.heldDeviceIds = acceptance.held.map(\.deviceID)
        // 3.3: ring each held device of an offer that has a live push endpoint (never for a blocked sender).
        if request.kind == .callOffer, !blocked {
            var rings: [PushCandidate] = []
            for (deviceID, serial) in acceptance.held {
                let device = DeviceAddress(handle: request.recipientHandle, deviceID: deviceID)
                do {
                    guard try await store.pushEndpoint(device: device)?.isLive == true else { continue }
                } catch {
                    // A failing read only loses the wake-up, never the signal (push.md 7).
                    logger.error("push endpoint read failed", metadata: ["error": "\(error)"])
                    continue
                }
                rings.append(PushCandidate(device: device, wakeClass: .ring, envelopeID: Data(), expiresAtMs: expiresAt, callSignalSerial: serial))
                result.wokenDeviceIds.append(deviceID)
            }
            metrics.callRingPushes(rings.count)
            push.submitted(rings)
        }
        return result
    }

    /// RequestTurnCredentials (`calls.md` 3.5): coturn REST-API credentials for the configured TURN URIs, or only the
    /// STUN URIs when the relay has no TURN server.
    func turnCredentials() -> WireTurnCredentials {
        var reply = WireTurnCredentials()
        reply.stunUris = configuration.stunURIs.isEmpty ? TURNCredentials.stunURIs(from: configuration.turnURIs) : configuration.stunURIs
        guard let secret = configuration.turnSecret, !configuration.turnURIs.isEmpty else { return reply }
        let nowSeconds = clock.nowMs() / 1_000
        let expiry = nowSeconds + max(1, configuration.turnTTL.components.seconds)
        let username = TURNCredentials.username(expiry: expiry, id: random.bytes(TURNCredentials.idLength))
        reply.turnUris = configuration.turnURIs
        reply.username = username
        reply.password = TURNCredentials.password(secret: secret, username: username)
        reply.expiresAtMs = expiry * 1_000
        metrics.turnCredentialsIssued()
        return reply
    }
}

/// coturn's REST-API credentials (draft-uberti-behave-turn-rest-00; coturn `use-auth-secret`), `calls.md` 3.5.
enum TURNCredentials {
    /// Random bytes of the username's id part.
    static let idLength = 16

    /// `decimal(expiry) ":" base64url-no-padding(id)`: the expiry in Unix seconds, then an id that is random and never
    /// the handle (the TURN server cannot link allocations to accounts).
    static func username(expiry: Int64, id: Data) -> String {
        "\(expiry):\(base64URLNoPadding(id))"
    }

    /// `base64(HMAC-SHA-1(key = UTF-8 secret, message = UTF-8 username))` (RFC 2104), 28 characters.
    static func password(secret: String, username: String) -> String {
        let mac = Crypto.HMAC<Crypto.Insecure.SHA1>.authenticationCode(for: Data(username.utf8), using: Crypto.SymmetricKey(data: Data(secret.utf8)))
        return Data(mac).base64EncodedString()
    }

    /// RFC 4648 section 5 without padding.
    static func base64URLNoPadding(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// `stun:HOST:PORT` for each TURN URI's host and port (query dropped, duplicates once, in order).
    static func stunURIs(from turnURIs: [String]) -> [String] {
        var seen = Set<String>()
        var out: [String] = []
        for uri in turnURIs {
            guard let colon = uri.firstIndex(of: ":") else { continue }
            var rest = uri[uri.index(after: colon)...]
            if let query = rest.firstIndex(of: "?") { rest = rest[..<query] }
            guard !rest.isEmpty else { continue }
            let stun = "stun:" + rest
            if seen.insert(stun).inserted { out.append(stun) }
        }
        return out
    }
}
