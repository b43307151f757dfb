import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import GRDB

// Call signals on the client (protocol/calls.md 3 and 4): each copy of a signal is an ordinary session message to
// one device (a prekey message for a first contact), whose `Content` is a `CallMessage` bound to the signal's
// relay-visible fields (4.2). Sending: `sendCallSignal`; receiving: `acceptCallSignal`.

/// A call signal that decrypted and passed every check of protocol/calls.md 3.4 and 4.1.
public struct ReceivedCallSignal: Sendable {
    public let callID: CallID
    public let senderHandle: String
    /// Authenticated by the relay and by the session.
    public let senderDeviceID: UInt32
    /// Per (call id, sending device), from 1.
    public let sequence: UInt32
    /// When the relay drops it, on this device's clock (the relay's `expires_at_ms` less the measured clock offset).
    public let expiresAt: Date
    /// The effective ttl in seconds the binding covered.
    public let ttlSeconds: UInt32
    /// The decrypted call message (its binding checked).
    public let message: CallMessage
    /// The account identity key of the session the signal came on (the peer's, for `CallKeys.derive`).
    public let senderAccountIdentityKey: Ed25519PublicKey
    /// The sender's account identity key is not the one this user trusts for the handle.
    public let untrustedSender: Bool
}

/// Why a received call signal was dropped (protocol/calls.md 3.4). Nothing of the session changed.
public struct CallSignalRefusal: Error, Sendable, CustomStringConvertible {
    /// English, never containing key material or candidates.
    public let reason: String
    public var description: String { reason }
}

/// What the relay did with a sent call signal (`CallSignalResult`).
public struct CallSignalSent: Sendable {
    /// The devices that got a copy, ascending.
    public let devices: [UInt32]
    /// Handed to a connected device now.
    public let delivered: [UInt32]
    /// Held until the device connects or the signal expires.
    public let held: [UInt32]
    /// Rung by push (offers).
    public let woken: [UInt32]
}

extension FlitzClient {
    /// The effective ttl of a signal this client sends: 75 s for an offer, 90 s otherwise (protocol/calls.md 10).
    static func callSignalTTL(_ kind: CallSignalKind) -> UInt32 { kind == .offer ? 75 : 90 }

    /// Encrypts `body` for devices of `handle` and sends it as one `SendCallSignal` with `sequence`: an offer to every
    /// current device of `handle` (sessions started where needed; after `MISMATCHED_DEVICES` the device list is
    /// fetched again and the offer re-encrypted, at most `maxDeviceRetries` times), any other kind to `devices`.
    /// Each copy carries the binding of its own fields (protocol/calls.md 4.2).
    /// - Throws: `ClientError`: `.identityChanged` (changed key or pending device list), `.refused` (the relay's
    ///   refusal, `UNKNOWN_RECIPIENT` as "no such handle"), `.invalidArgument` (own handle), connection errors.
    func sendCallSignal(
        _ body: CallMessage.Body, callID: CallID, to handle: String, devices chosen: [UInt32]?, sequence: UInt32, on connection: RelayConnection,
        account: AccountRecord
    ) async throws -> CallSignalSent {
        guard handle != account.handle else { throw ClientError(.invalidArgument, "you cannot call yourself") }
        let kind = CallMessage(callID: callID.bytes, signalBinding: Data(), body: body).kind
        let ttl = Self.callSignalTTL(kind)
        let random = self.random
        for _ in 0...Self.maxDeviceRetries {
            if let contact = try store.contact(handle), contact.untrustedIdentityKey != nil { throw identityChangedError(handle) }
            if try await store.dbQueue.read({ db in try ClientStore.hasPendingDeviceList(handle, account: account, db) }) {
                throw pendingListError(handle)
            }
            let fresh = kind == .offer ? try await newSessions(with: handle, on: connection, account: account) : [:]
            let sentAt = Int64(now().timeIntervalSince1970 * 1000)
            let copies = try store.transaction { db -> [WireCallSignalCopy] in
                guard let contact = try ClientStore.contact(handle, db), contact.untrustedIdentityKey == nil else { throw identityChangedError(handle) }
                let targets = try chosen ?? Self.targetDevices(of: handle, account: account, fresh: Array(fresh.keys), db)
                var copies: [WireCallSignalCopy] = []
                for deviceID in targets.sorted() {
                    let stored = try ClientStore.sessions(with: handle, db).first(where: { $0.deviceID == deviceID && $0.active })?.session
                    guard var session = try [stored, fresh[deviceID]].compactMap({ $0 }).first(where: {
                        try ClientStore.mayEncrypt($0, to: handle, deviceID: deviceID, account: account, db)
                    })
                    else { continue }
                    guard ConstantTime.equals(contact.trustedIdentityKey, session.remoteCertificate.accountIdentityKey.rawRepresentation) else {
                        throw identityChangedError(handle)
                    }
                    let fields = CallSignalFields(
                        callID: callID.bytes, kind: kind, senderHandle: account.handle, senderDeviceID: account.deviceID, recipientHandle: handle,
                        recipientDeviceID: deviceID, sequence: sequence, sentAtMilliseconds: sentAt, ttlSeconds: ttl)
                    let message = CallMessage(callID: callID.bytes, signalBinding: fields.binding, body: body)
                    let content = MessageContent(messageID: random.bytes(WireConstants.idLength), sentAtMilliseconds: sentAt, body: .call(message))
                    var copy = WireCallSignalCopy()
                    copy.recipientDeviceID = deviceID
                    copy.ciphertext = try session.encrypt(content.encoded(), random: random)
                    try ClientStore.save(session, handle: handle, deviceID: deviceID, makeActive: true, db)
                    copies.append(copy)
                }
                return copies
            }
            guard !copies.isEmpty else { throw ClientError(.refused(.noPrekeys), "\(handle) has no device this device can call") }
            var signal = WireSendCallSignal()
            signal.callID = callID.bytes
            signal.kind = WireCallSignalKind(rawValue: Int(kind.rawValue)) ?? .unspecified
            signal.recipientHandle = handle
            signal.copies = copies
            signal.sequence = sequence
            signal.sentAtMs = sentAt
            signal.ttlSeconds = ttl
            signal.urgency = kind == .offer ? .ring : .silent
            do {
                guard case .callSignalResult(let result) = try await connection.request(.sendCallSignal(signal)).body else {
                    throw ClientError(.protocolFailure, "unexpected answer to a call signal")
                }
                return CallSignalSent(
                    devices: copies.map(\.recipientDeviceID), delivered: result.deliveredDeviceIds, held: result.heldDeviceIds,
                    woken: result.wokenDeviceIds)
            } catch let error as ClientError where error.kind == .refused(.unknownRecipient) {
                throw noSuchHandleError(handle)
            } catch let error as ClientError where kind == .offer && (error.kind == .refused(.mismatchedDevices) || error.kind == .refused(.staleDevice)) {
                // The relay held nothing: learn the devices and encrypt again (the sessions stay advanced: harmless gaps).
                let mismatches = error.relayError?.deviceMismatches.filter { $0.handle == handle } ?? []
                try store.transaction { db in
                    for mismatch in mismatches { try ClientStore.deleteSessions(handle, deviceIDs: mismatch.staleDeviceIds, db) }
                }
                try await refreshDeviceList(handle, on: connection, account: account, forSending: true) { self.logger.warning("\($0)") }
            }
        }
        throw ClientError(
            .refused(.mismatchedDevices),
            "the devices of \(handle) kept changing while calling (tried \(Self.maxDeviceRetries + 1) times); try again later")
    }

    /// Decrypts one `CallSignalDelivery` and checks it (protocol/calls.md 3.4 and 4.1): a `Content` whose body is a
    /// `CallMessage` of the signal's kind, the signal's call id and the binding of the delivery's fields. Only
    /// then is the session state stored; any failure leaves it as it was. A sender device missing from the
    /// sender's device list is looked up once, as for envelopes.
    /// - Throws: `CallSignalRefusal` when the signal must be dropped (undecryptable, not a call message, wrong
    ///   binding, call id or kind, or a body breaking 4.1's rules); `ClientError` for connection failures;
    ///   database errors.
    func acceptCallSignal(_ delivery: WireCallSignalDelivery, on connection: RelayConnection) async throws -> ReceivedCallSignal {
        let account = try requireAccount()
        do {
            return try acceptCallSignal(delivery, account: account, clockOffsetMilliseconds: connection.relayClockOffsetMilliseconds, listChecked: false)
        } catch is SenderNotListed {
            do {
                try await refreshDeviceList(delivery.senderHandle, on: connection, account: account, forSending: false)
            } catch let error as ClientError where error.kind != .relayUnreachable {
                throw CallSignalRefusal(reason: "the device list of the caller could not be checked: \(error.message)")
            }
            do {
                return try acceptCallSignal(delivery, account: account, clockOffsetMilliseconds: connection.relayClockOffsetMilliseconds, listChecked: true)
            } catch is SenderNotListed {
                throw CallSignalRefusal(reason: "a call signal from a device of \(delivery.senderHandle) that is not in their signed device list")
            }
        }
    }

    /// The synchronous part of `acceptCallSignal`: one immediate transaction that stores the session only when
    /// every check passed. `clockOffsetMilliseconds` is the relay's clock minus this device's.
    func acceptCallSignal(
        _ delivery: WireCallSignalDelivery, account: AccountRecord, clockOffsetMilliseconds: Int64, listChecked: Bool
    ) throws -> ReceivedCallSignal {
        guard let callID = CallID(delivery.callID), let kind = CallSignalKind(rawValue: UInt8(clamping: delivery.kind.rawValue)), delivery.sequence >= 1,
            delivery.recipientDeviceID == account.deviceID, delivery.senderHandle != account.handle || delivery.senderDeviceID != account.deviceID
        else { throw CallSignalRefusal(reason: "a malformed call signal") }
        let ttlMilliseconds = delivery.expiresAtMs - delivery.receivedAtMs
        guard ttlMilliseconds > 0, ttlMilliseconds % 1000 == 0, ttlMilliseconds / 1000 <= 90 else {
            throw CallSignalRefusal(reason: "a call signal with an invalid expiry")
        }
        let fields = CallSignalFields(
            callID: callID.bytes, kind: kind, senderHandle: delivery.senderHandle, senderDeviceID: delivery.senderDeviceID,
            recipientHandle: account.handle, recipientDeviceID: account.deviceID, sequence: delivery.sequence, sentAtMilliseconds: delivery.sentAtMs,
            ttlSeconds: UInt32(ttlMilliseconds / 1000))
        let incoming: IncomingSessionMessage
        do {
            incoming = try IncomingSessionMessage(parsing: delivery.ciphertext)
        } catch {
            throw CallSignalRefusal(reason: "an undecryptable call signal from \(delivery.senderHandle)")
        }
        let random = self.random
        let sender = delivery.senderHandle
        return try store.transaction { db -> ReceivedCallSignal in
            let decrypted: DecryptedIncoming
            let message: CallMessage
            do {
                decrypted = try Self.decryptIncoming(
                    incoming, sender: sender, senderDeviceID: delivery.senderDeviceID, account: account, listChecked: listChecked, random: random, db)
                let content = try MessageContent(decoding: decrypted.plaintext)
                guard case .call(let call) = content.body else { throw CallSignalRefusal(reason: "a call signal from \(sender) that is not a call message") }
                message = call
            } catch let error as FlitzProtocolError {
                throw CallSignalRefusal(reason: "an undecryptable call signal from \(sender) (\(error.code))")
            }
            guard message.callID == callID.bytes, message.kind == kind, ConstantTime.equals(message.signalBinding, fields.binding) else {
                throw CallSignalRefusal(reason: "a call signal from \(sender) whose binding does not match its delivery")
            }
            try Self.commitIncoming(decrypted, sender: sender, senderDeviceID: delivery.senderDeviceID, storeSession: true, db)
            let trusted = try ClientStore.trustedAccountKey(for: sender, account: account, db)
            let key = decrypted.session.remoteCertificate.accountIdentityKey
            return ReceivedCallSignal(
                callID: callID, senderHandle: sender, senderDeviceID: delivery.senderDeviceID, sequence: delivery.sequence,
                expiresAt: Date(timeIntervalSince1970: Double(delivery.expiresAtMs - clockOffsetMilliseconds) / 1000),
                ttlSeconds: fields.ttlSeconds, message: message, senderAccountIdentityKey: key,
                untrustedSender: !ConstantTime.equals(trusted ?? Data(), key.rawRepresentation))
        }
    }
}
