import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import GRDB
import Logging
import Synchronization

extension FlitzClient {
    /// Decrypts, stores and acknowledges one `Deliver` frame; applies its receipts. Each envelope and
    /// receipt is acknowledged only after the local store committed it. Returns what happened.
    func process(_ deliver: WireDeliver, on connection: RelayConnection) async throws -> [ClientEvent] {
        let account = try requireAccount()
        var events: [ClientEvent] = []
        var ack = WireAcknowledge()
        var resets: [(handle: String, deviceID: UInt32, envelopeID: Data)] = []
        var resends: [(handle: String, deviceID: UInt32, envelopeID: Data)] = []
        // The relay's clock decides expiry (this device's clock may be off).
        let now = Self.relayNow(connection)
        for envelope in deliver.envelopes {
            // An online-only envelope is handed over live with expires_at_ms = its acceptance time (conversations.md 6).
            if envelope.expiresAtMs <= now && !envelope.onlineOnly {
                // Not acknowledged: the relay's sweeper then reports it to the sender as expired, which it is.
                logger.debug("discarding an expired envelope")
                continue
            }
            do {
                let outcome: AcceptOutcome
                do {
                    outcome = try await accept(envelope)
                } catch is SenderNotListed {
                    // An unknown device: fetch the sender's list once, then decide (devices.md 4.4, "Incoming messages").
                    do {
                        try await refreshDeviceList(envelope.senderHandle, on: connection, account: account, forSending: false) {
                            events.append(.warning($0))
                        }
                    } catch let error as ClientError where error.kind != .relayUnreachable && error.kind != .refused(.authenticationFailed) {
                        events.append(.warning(error.message))  // for example the sender's account was deleted meanwhile
                    }
                    outcome = try await accept(envelope, listChecked: true)
                }
                events += outcome.events
                if let failed = outcome.resetFor { resends.append((envelope.senderHandle, envelope.senderDeviceID, failed)) }
                Failpoint.hit("receive.afterCommit")
            } catch is SenderNotListed {
                // Acknowledged undecrypted: it can never be accepted from an unlisted device.
                events.append(.warning("ignored a message from a device of \(envelope.senderHandle) that is not in their signed device list"))
            } catch let error as FlitzProtocolError where error.code == .unsupportedVersion && !envelope.onlineOnly {
                // A newer peer's session message: kept for a newer version of Flitz, not lost.
                try await keepUnsupported(envelope, kind: "envelope", bytes: envelope.ciphertext)
                events.append(.warning("a message from \(envelope.senderHandle) needs a newer version of Flitz; it is kept and will be read after an update"))
            } catch let error as FlitzProtocolError {
                // An envelope that cannot be decrypted never will be: drop it rather than block the queue.
                // Other errors (the local database) propagate unacknowledged, so the relay redelivers.
                // A redelivery of one we already stored (its acknowledgement was lost) is no news, whatever
                // the error: a ratchet message's used key makes every session fail, not only as a duplicate.
                let known = try await store.dbQueue.read { db in
                    try Bool.fetchOne(db, sql: "SELECT 1 FROM messages WHERE envelope_id = ? AND outgoing = 0", arguments: [envelope.envelopeID]) ?? false
                }
                if !known {
                    events.append(.warning("could not decrypt a message from \(envelope.senderHandle): \(error)"))
                }
                // A redelivery of one already stored fails (its key is used) but needs no new session.
                // Never for an online-only envelope: a reset would tell its sender this device was online (section 6).
                if !known, !envelope.onlineOnly, Self.resetTriggers.contains(error.code), !resets.contains(where: { $0.handle == envelope.senderHandle && $0.deviceID == envelope.senderDeviceID }) {
                    resets.append((envelope.senderHandle, envelope.senderDeviceID, envelope.envelopeID))
                }
            }
            // Online-only envelopes are never acknowledged: the relay stored nothing (conversations.md 6).
            if !envelope.onlineOnly { ack.envelopeIds.append(envelope.envelopeID) }
        }
        for receipt in deliver.receipts {
            if let event = try await apply(receipt) { events.append(event) }
            ack.receiptIds.append(receipt.receiptID)
        }
        if !ack.envelopeIds.isEmpty || !ack.receiptIds.isEmpty {
            _ = try await connection.request(.acknowledge(ack))
            if !ack.envelopeIds.isEmpty { Failpoint.hit("receive.afterAcknowledge") }
        }
        for reset in resets {
            do {
                if try await startSessionReset(with: reset.handle, deviceID: reset.deviceID, failedEnvelopeID: reset.envelopeID, on: connection) {
                    events.append(.warning("started a new session with \(reset.handle) so they can send the message again"))
                }
            } catch {
                events.append(.warning("could not start a new session with \(reset.handle): \(error)"))
            }
        }
        for resend in resends {
            do {
                try await resendAfterReset(envelopeID: resend.envelopeID, to: resend.handle, deviceID: resend.deviceID, on: connection)
            } catch {
                events.append(.warning("could not resend a message to \(resend.handle) after they reset the session: \(error)"))
            }
        }
        return events
    }

    /// Failures that mean this device and the sender's no longer share a working session (for example one
    /// side restored an old copy of its state, or a signed prekey expired): answered by a session reset
    /// (`protocol/crypto.md`, "Session reset"). Duplicates and malformed input are not.
    static let resetTriggers: Set<FlitzProtocolError.Code> = [.authenticationFailed, .signedPreKeyExpired, .unknownPreKey, .invalidSessionRecord]

    /// Keeps what this version cannot read, for a later version (`protocol/relay.md`, "Versioning").
    func keepUnsupported(_ envelope: WireEnvelope, kind: String, bytes: Data) async throws {
        let at = now().timeIntervalSince1970
        try await store.dbQueue.write { db in
            try db.execute(
                sql: "INSERT OR IGNORE INTO unsupported_messages (peer, envelope_id, kind, content, received_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [envelope.senderHandle, envelope.envelopeID, kind, ClientStore.sealSecret(bytes, .unsupportedContent, db), at])
        }
    }

    /// Replaces a failing session with `handle`'s device by a fresh PQXDH session whose first message is a
    /// `SessionReset` naming the envelope that failed, at most once per `sessionResetInterval` per peer
    /// device. Returns whether it started one.
    /// - Throws: `ClientError` (relay refusals, identity changed), database errors.
    func startSessionReset(with handle: String, deviceID: UInt32, failedEnvelopeID: Data, on connection: RelayConnection) async throws -> Bool {
        let account = try requireAccount()
        let at = now().timeIntervalSince1970
        let last = try await store.dbQueue.read { db in
            try Double.fetchOne(db, sql: "SELECT at FROM session_resets WHERE handle = ? AND device_id = ?", arguments: [handle, Int64(deviceID)])
        }
        if let last, at - last < Self.sessionResetInterval {
            logger.debug("session reset rate-limited", metadata: ["peer": "\(handle)"])
            return false
        }
        // Only a session this device had can be reset, and only with a contact already trusted: a forged
        // envelope from a stranger must not make this device pin a key (trust on first use) or spend the
        // stranger's prekeys. The attempt counts before the bundle is fetched, so each costs one per interval.
        let known = try store.transaction { db -> Bool in
            guard try ClientStore.contact(handle, db) != nil,
                try ClientStore.sessions(with: handle, db).contains(where: { $0.deviceID == deviceID })
            else { return false }
            try db.execute(
                sql: "INSERT OR REPLACE INTO session_resets (handle, device_id, at) VALUES (?, ?, ?)", arguments: [handle, Int64(deviceID), at])
            return true
        }
        guard known else { return false }
        guard let bundle = try await fetchBundle(on: connection, handle: handle, deviceID: deviceID, account: account) else { return false }
        if handle != account.handle {
            try checkIdentity(handle, accountIdentityKey: bundle.certificate.accountIdentityKey.rawRepresentation)
        } else if bundle.certificate.accountIdentityKey != account.accountIdentityKey {
            return false
        }
        var session = try Session.initiate(identity: account.device, bundle: bundle, random: random)
        // Only to the key the accepted list holds for that device (section 4.4, "Only listed devices").
        let initiated = session
        guard try await store.dbQueue.read({ db in try ClientStore.mayEncrypt(initiated, to: handle, deviceID: deviceID, account: account, db) })
        else { return false }
        let content = MessageContent(
            messageID: random.bytes(WireConstants.idLength), sentAtMilliseconds: Int64(at * 1000), body: .sessionReset(envelopeID: failedEnvelopeID))
        let ciphertext = try session.encrypt(content.encoded(), random: random)
        let finalSession = session
        try store.transaction { db in try ClientStore.save(finalSession, handle: handle, deviceID: deviceID, makeActive: true, db) }
        var envelope = WireOutgoingEnvelope()
        envelope.envelopeID = random.bytes(WireConstants.idLength)
        envelope.recipientHandle = handle
        envelope.recipientDeviceID = deviceID
        envelope.ciphertext = ciphertext
        envelope.urgency = .silent  // a session reset is a signal, never a wake-up (`protocol/push.md` 2)
        var submit = WireSubmit()
        submit.envelopes = [envelope]
        submit.selectedDevices = true  // one device on purpose (`protocol/flitz_wire.proto`, Submit)
        guard case .submitResult(let result) = try await connection.request(.submit(submit)).body, let outcome = result.outcomes.first else {
            throw ClientError(.protocolFailure, "unexpected answer to submit")
        }
        if outcome.hasError { throw ClientError(.refused(outcome.error.code), outcome.error.message) }
        return true
    }

    /// Answers a peer device's `SessionReset`: sends the message that failed again, same message id (the peer
    /// drops duplicates by it), on the session the reset made active, to that device only (`selected_devices`).
    /// Nothing when the envelope is unknown. The new envelope is stored as pending with the session in one
    /// transaction before it is submitted, so a crash resubmits it (`resendPending`).
    func resendAfterReset(envelopeID: Data, to handle: String, deviceID: UInt32, on connection: RelayConnection) async throws {
        let account = try requireAccount()
        let random = self.random
        let sentAt = Int64(now().timeIntervalSince1970 * 1000)
        let newEnvelopeID = random.bytes(WireConstants.idLength)
        let prepared = try store.transaction { db -> WireOutgoingEnvelope? in
            guard !envelopeID.isEmpty,
                let row = try Row.fetchOne(
                    db,
                    sql: """
                        SELECT m.seq, m.message_id, m.peer, m.text, m.expires_in, m.urgent, m.unsend_token_hash, m.content, m.transcript_content
                        FROM envelopes e JOIN messages m ON m.seq = e.message_seq
                        WHERE e.envelope_id = ? AND e.recipient_handle = ? AND e.recipient_device_id = ?
                        """,
                    arguments: [envelopeID, handle, Int64(deviceID)]),
                let active = try ClientStore.sessions(with: handle, db).first(where: { $0.active && $0.deviceID == deviceID })
            else { return nil }
            // As when sending: only to the trusted identity, never past a pending key change.
            if handle == account.handle {
                guard active.session.remoteCertificate.accountIdentityKey == account.accountIdentityKey else { return nil }
            } else {
                guard let contact = try ClientStore.contact(handle, db), contact.untrustedIdentityKey == nil,
                    ConstantTime.equals(contact.trustedIdentityKey, active.session.remoteCertificate.accountIdentityKey.rawRepresentation)
                else { return nil }
            }
            // And only to the key the accepted list holds for that device (section 4.4, "Only listed devices").
            guard try ClientStore.mayEncrypt(active.session, to: handle, deviceID: deviceID, account: account, db) else { return nil }
            var session = active.session
            // The content as first sent (any kind, `Conversations.swift`); a message from before v7 is rebuilt from its text.
            let stored = handle == account.handle
                ? try ClientStore.openSecret(row["transcript_content"], .transcriptContent, db) : try ClientStore.openSecret(row["content"], .messageContent, db)
            let encoded: Data
            if let stored {
                encoded = stored
            } else {
                let peer: String = row["peer"], text: String = row["text"]
                let body: MessageContent.Body = handle == account.handle
                    ? .sentTranscript(SentTranscript(destinationHandle: peer, body: .text(TextMessage(text)))) : .text(TextMessage(text))
                encoded = MessageContent(messageID: row["message_id"], sentAtMilliseconds: sentAt, body: body).encoded()
            }
            let ciphertext = try session.encrypt(encoded, random: random)
            try ClientStore.save(session, handle: handle, deviceID: deviceID, makeActive: true, db)
            try db.execute(
                sql: """
                    INSERT INTO envelopes (envelope_id, message_seq, recipient_handle, recipient_device_id, ciphertext, status, selected_devices)
                    VALUES (?, ?, ?, ?, ?, 'pending', 1)
                    """,
                arguments: [newEnvelopeID, row["seq"] as Int64, handle, Int64(deviceID), ciphertext])
            // The failed envelope was acknowledged but never read: unless another of the recipient's devices
            // has it, the message's status starts again from pending.
            if handle != account.handle {
                try db.execute(
                    sql: """
                        UPDATE messages SET status = 'pending' WHERE seq = ? AND NOT EXISTS (SELECT 1 FROM envelopes
                            WHERE message_seq = ? AND recipient_handle = ? AND envelope_id != ? AND status IN ('delivered', 'seen'))
                        """,
                    arguments: [row["seq"] as Int64, row["seq"] as Int64, handle, envelopeID])
            }
            var envelope = WireOutgoingEnvelope()
            envelope.envelopeID = newEnvelopeID
            envelope.recipientHandle = handle
            envelope.recipientDeviceID = deviceID
            envelope.ttlSeconds = UInt32(row["expires_in"] as Int64)
            envelope.ciphertext = ciphertext
            envelope.urgency = Self.urgency(recipient: handle, account: account, urgent: row["urgent"])
            envelope.unsendTokenHash = row["unsend_token_hash"] ?? Data()
            return envelope
        }
        guard let prepared else { return }
        guard let outcome = try await submitStored([prepared], on: connection, keepRetryable: true, selectedDevices: true).first else {
            throw ClientError(.protocolFailure, "unexpected answer to submit")
        }
        if outcome.hasError { throw ClientError(.refused(outcome.error.code), outcome.error.message) }
    }

    /// What accepting one envelope did.
    struct AcceptOutcome {
        /// Events to report.
        var events: [ClientEvent]
        /// Set when the envelope was the sender's `SessionReset`: the id of this device's envelope it could not decrypt.
        var resetFor: Data?
    }

    /// Decrypts one envelope and stores the session and the message in one immediate transaction.
    /// The sender device is not in the sender's accepted device list (`protocol/devices.md` 4.4, "Incoming
    /// messages"); nothing was stored or changed.
    struct SenderNotListed: Error {}

    /// Whether `(deviceID, deviceIdentityKey)` of `handle` is in its accepted list under `accountKey` (the
    /// key of the session's certificate); nil when no list under that key has been seen (version 1's rule).
    static func senderListed(
        _ handle: String, deviceID: UInt32, deviceIdentityKey: Data, accountKey: Data, _ db: Database
    ) throws -> Bool? {
        guard let tracker = try ClientStore.tracker(handle, db), ConstantTime.equals(tracker.accountIdentityKey, accountKey),
            let accepted = tracker.accepted
        else { return nil }
        return accepted.contains(deviceID: deviceID, identityKey: deviceIdentityKey)
    }

    /// Decrypts one envelope and stores the session and the message in one immediate transaction. The sender
    /// device must be in the sender's accepted device list: when it is not, or no list is known and
    /// `listChecked` is false, throws `SenderNotListed` and changes nothing (the caller fetches the list once
    /// and tries again with `listChecked`). Sent transcripts are accepted only from this account's own devices.
    func accept(_ envelope: WireEnvelope, listChecked: Bool = false) async throws -> AcceptOutcome {
        let sender = envelope.senderHandle
        let incoming = try IncomingSessionMessage(parsing: envelope.ciphertext)
        let account = try requireAccount()
        let random = self.random
        let receivedAt = now().timeIntervalSince1970
        let (events, inserted, resetFor) = try store.transaction(failpoint: "receive.afterDecrypt") { db -> ([ClientEvent], Bool, Data?) in
            var decrypted = try Self.decryptIncoming(
                incoming, sender: sender, senderDeviceID: envelope.senderDeviceID, account: account, listChecked: listChecked, random: random, db)
            var events = decrypted.events
            let plaintext = decrypted.plaintext
            let session = decrypted.session
            let content = try MessageContent(decoding: plaintext)
            var resetFor: Data?
            if case .sessionReset(let failed) = content.body, !envelope.onlineOnly {
                // Only the trusted identity may redirect this device's sending (and its resend) to a new session:
                // a reset from a changed, untrusted key is ignored, or it could pull old messages to a new key.
                let contact = try ClientStore.contact(sender, db)
                if let contact, contact.untrustedIdentityKey == nil,
                    ConstantTime.equals(contact.trustedIdentityKey, session.remoteCertificate.accountIdentityKey.rawRepresentation)
                {
                    // The sender lost our session: theirs is the one to use now, whatever the tie-break said.
                    decrypted.makeActive = true
                    resetFor = failed
                } else {
                    events.append(.warning("ignored a session reset from \(sender): it does not come from their trusted identity key"))
                }
            }
            // A scheduled message's single-use session is never stored (conversations.md 8); its base key and
            // one-time prekeys are answered and deleted as for any first message.
            var singleUse = false
            if case .preKey = incoming { singleUse = content.singleUseSession }
            try Self.commitIncoming(decrypted, sender: sender, senderDeviceID: envelope.senderDeviceID, storeSession: !singleUse, db)
            // Only typing and presence travel online-only (section 6): anything else in one is dropped, never
            // stored, applied or answered (its session step is kept: the message key is used either way).
            if envelope.onlineOnly {
                switch content.body {
                case .typing, .presence: break
                default:
                    events.append(.warning("ignored an online-only message from \(sender) that was not typing or presence"))
                    return (events, false, nil)
                }
            }
            let text: String
            let textBody: TextMessage
            switch content.body {
            case .text(let body):
                guard sender != account.handle else {
                    events.append(.warning("ignored a message from another device of your account that was not a sent transcript"))
                    return (events, false, nil)
                }
                text = body.body
                textBody = body
            case .sentTranscript(let transcript):
                guard sender == account.handle else {
                    events.append(.warning("ignored a sent transcript from \(sender): only your own devices send those"))
                    return (events, false, nil)
                }
                guard case .text(let body) = transcript.body else {
                    // A reaction, edit, delete or timer another device of this account sent (Conversations.swift).
                    events += try Self.applyConversationContent(content, sender: sender, envelope: envelope, receivedAt: receivedAt, account: account, db)
                    return (events, false, nil)
                }
                // A message another device of this account sent: history, as an outgoing message (status from receipts).
                try db.execute(
                    sql: """
                        INSERT INTO messages (message_id, outgoing, peer, text, envelope_id, status, accepted_at_ms, transcript)
                        VALUES (?, 1, ?, ?, ?, 'sent', ?, 1) ON CONFLICT DO NOTHING
                        """,
                    arguments: [content.messageID, transcript.destinationHandle, body.body, envelope.envelopeID, envelope.acceptedAtMs])
                guard db.changesCount > 0 else { return (events, false, nil) }
                events += try Self.storedText(
                    body, content: content, conversation: transcript.destinationHandle, outgoing: true, unsendToken: transcript.unsendToken,
                    account: account, db)
                return (events, true, nil)
            case .reaction, .edit, .deleteForEveryone, .disappearingTimer, .seen:
                // Conversation mutations, sealed seen receipts and read syncs (Conversations.swift).
                events += try Self.applyConversationContent(content, sender: sender, envelope: envelope, receivedAt: receivedAt, account: account, db)
                return (events, false, nil)
            case .typing, .presence:
                // Online-only signals (Signals.swift).
                events += try Self.applySignal(content, sender: sender, envelope: envelope, account: account, receivedAt: receivedAt, db)
                return (events, false, nil)
            case .sessionReset: return (events, false, resetFor)
            case .call:
                // A call message travels only in a call signal (protocol/calls.md 3.4), never in an envelope.
                events.append(.warning("ignored a call message from \(sender) that arrived as an envelope"))
                return (events, false, nil)
            case .unsupported:
                try db.execute(
                    sql: "INSERT OR IGNORE INTO unsupported_messages (peer, envelope_id, kind, content, received_at) VALUES (?, ?, 'content', ?, ?)",
                    arguments: [sender, envelope.envelopeID, ClientStore.sealSecret(plaintext, .unsupportedContent, db), receivedAt])
                events.append(.warning("a message from \(sender) needs a newer version of Flitz; it is kept and will be shown after an update"))
                return (events, false, nil)
            }
            // Every message from a session whose account key is not the trusted one is marked, so it is
            // shown with a warning whenever it is shown, not only when it arrived.
            let trusted = try ClientStore.contact(sender, db)?.trustedIdentityKey ?? Data()
            let untrusted = !ConstantTime.equals(trusted, session.remoteCertificate.accountIdentityKey.rawRepresentation)
            // Duplicates (a sender's retry under a new envelope id) are dropped by (sender, message id).
            try db.execute(
                sql: """
                    INSERT INTO messages (message_id, outgoing, peer, text, envelope_id, status, accepted_at_ms, untrusted_sender)
                    VALUES (?, 0, ?, ?, ?, 'delivered', ?, ?) ON CONFLICT DO NOTHING
                    """,
                arguments: [content.messageID, sender, text, envelope.envelopeID, envelope.acceptedAtMs, untrusted])
            guard db.changesCount > 0 else { return (events, false, nil) }
            // Reply, forwarding and disappearing fields; mutations that arrived first (Conversations.swift).
            events += try Self.storedText(textBody, content: content, conversation: sender, outgoing: false, unsendToken: nil, account: account, db)
            return (events, true, nil)
        }
        if !inserted && resetFor == nil { logger.debug("dropped a duplicate message or a control message") }
        return AcceptOutcome(events: events, resetFor: resetFor)
    }

    /// A session message decrypted inside a transaction, not yet committed (`commitIncoming`).
    struct DecryptedIncoming {
        var session: Session
        var plaintext: Data
        /// Whether the session becomes the one this device sends on.
        var makeActive = false
        var usedOneTimePreKey: UInt32?
        var usedOneTimeKEMPreKey: UInt32?
        /// Warnings (an identity key change).
        var events: [ClientEvent] = []
    }

    /// Decrypts a session message from `senderDeviceID` of `sender` (an envelope's or a call signal's, protocol/calls.md
    /// 3.4) without storing anything but a first-seen identity (trust on first use) or a noticed identity change;
    /// the caller commits with `commitIncoming` in the same transaction, or throws to roll everything back.
    /// - Throws: `FlitzProtocolError` when it does not decrypt; `SenderNotListed` when the sender device is not in
    ///   the sender's accepted device list (or no list is known and `listChecked` is false).
    static func decryptIncoming(
        _ incoming: IncomingSessionMessage, sender: String, senderDeviceID: UInt32, account: AccountRecord, listChecked: Bool,
        random: any RandomSource, _ db: Database
    ) throws -> DecryptedIncoming {
        var events: [ClientEvent] = []
        let plaintext: Data
        let session: Session
        var makeActive = false
        var usedOneTimePreKey: UInt32?
        var usedOneTimeKEMPreKey: UInt32?
        switch incoming {
        case .preKey(let message):
            let accountKey = message.certificate.accountIdentityKey.rawRepresentation
            if sender == account.handle {
                // Another device of this account: only under this account's key, never trusted on first use.
                guard ConstantTime.equals(accountKey, account.accountIdentityKey.rawRepresentation),
                    senderDeviceID != account.deviceID
                else { throw FlitzProtocolError(.authenticationFailed, "a message from this account under another account key") }
            } else if let contact = try ClientStore.contact(sender, db) {
                if !ConstantTime.equals(contact.trustedIdentityKey, accountKey) {
                    try ClientStore.recordUntrustedIdentity(sender, key: accountKey, db)
                    events.append(.warning("the identity key of \(sender) has changed; verify it and run `flitz trust \(sender)` before replying"))
                }
            } else {
                try ClientStore.trustIdentity(sender, key: accountKey, db)
            }
            if var existing = try ClientStore.sessions(with: sender, db).first(where: {
                $0.session.baseKey == message.baseKey && $0.deviceID == senderDeviceID
            })?.session {
                // A later message of a session we already answered (the initiator has not seen a reply yet).
                // Its certificate must be the session's: the AD binds only the first one, so a relay could
                // otherwise relabel the sender (and make this device record a false identity change).
                guard existing.remoteCertificate == message.certificate else {
                    throw FlitzProtocolError(.authenticationFailed, "prekey message certificate differs from its session's")
                }
                plaintext = try existing.decrypt(message.ratchetMessage, random: random)
                session = existing
            } else if try Bool.fetchOne(
                db, sql: "SELECT 1 FROM accepted_base_keys WHERE base_key = ?", arguments: [message.baseKey.rawRepresentation]) ?? false
            {
                // A replay of a prekey message whose session is gone: never start a second session from it.
                throw FlitzProtocolError(.duplicateMessage, "prekey message already answered")
            } else {
                guard let signedPreKey = try ClientStore.signedPreKey(id: message.signedPreKeyID, db) else {
                    if try ClientStore.signedPreKeyExpired(id: message.signedPreKeyID, db) {
                        throw FlitzProtocolError(.signedPreKeyExpired, "signed prekey \(message.signedPreKeyID) was rotated out")
                    }
                    throw FlitzProtocolError(.unknownPreKey, "signed prekey \(message.signedPreKeyID)")
                }
                guard let kemPreKey = try ClientStore.kemPreKey(id: message.kemPreKeyID, db) else {
                    throw FlitzProtocolError(.unknownPreKey, "KEM prekey \(message.kemPreKeyID)")
                }
                if kemPreKey.kind == .oneTime { usedOneTimeKEMPreKey = kemPreKey.id }
                var oneTimePreKey: OneTimePreKeyPair?
                if let id = message.oneTimePreKeyID {
                    guard let key = try ClientStore.oneTimePreKey(id: id, db) else { throw FlitzProtocolError(.unknownPreKey, "one-time prekey \(id)") }
                    oneTimePreKey = key
                    usedOneTimePreKey = id
                }
                (session, plaintext) = try Session.respond(
                    to: message, identity: account.device, signedPreKey: signedPreKey, oneTimePreKey: oneTimePreKey,
                    kemPreKey: kemPreKey, random: random)
                // Simultaneous initiation: while our own session with that device still awaits its first
                // reply, both sides keep the session with the lower base key, so they converge on one.
                if let own = try ClientStore.sessions(with: sender, db).first(where: { $0.active && $0.deviceID == senderDeviceID }),
                    own.session.isAwaitingReply
                {
                    makeActive = message.baseKey.rawRepresentation.lexicographicallyPrecedes(own.session.baseKey.rawRepresentation)
                } else {
                    makeActive = true
                }
            }
        case .ratchet(let bytes):
            // Any of the device's sessions may decrypt (messages sent before a convergence); which one
            // sends stays as chosen (a session reset or a new inbound session changes it).
            var decrypted: (Session, Data)?
            var duplicate = false, unsupported = false
            for var candidate in try ClientStore.sessions(with: sender, db) where candidate.deviceID == senderDeviceID {
                do {
                    let plaintext = try candidate.session.decrypt(bytes, random: random)
                    decrypted = (candidate.session, plaintext)
                    break
                } catch let error where error.code == .duplicateMessage {
                    duplicate = true
                } catch let error where error.code == .unsupportedVersion {
                    unsupported = true
                } catch {}
            }
            guard let decrypted else {
                // A newer header version is kept for a newer Flitz, not answered with a session reset.
                if unsupported { throw FlitzProtocolError(.unsupportedVersion, "ratchet header version") }
                throw FlitzProtocolError(duplicate ? .duplicateMessage : .authenticationFailed, "no session decrypts it")
            }
            (session, plaintext) = decrypted
        }
        // Only listed devices (section 4.4); a session under a changed, untrusted key is shown with a warning
        // as before (its lists start over once the key is trusted).
        let sessionKey = session.remoteCertificate.accountIdentityKey.rawRepresentation
        let trustedKey = try ClientStore.trustedAccountKey(for: sender, account: account, db) ?? sessionKey
        if ConstantTime.equals(trustedKey, sessionKey) {
            let listed = try Self.senderListed(
                sender, deviceID: senderDeviceID, deviceIdentityKey: session.remoteCertificate.deviceIdentityKey.rawRepresentation,
                accountKey: sessionKey, db)
            if listed == false || (listed == nil && !listChecked) { throw SenderNotListed() }
        }
        return DecryptedIncoming(
            session: session, plaintext: plaintext, makeActive: makeActive, usedOneTimePreKey: usedOneTimePreKey,
            usedOneTimeKEMPreKey: usedOneTimeKEMPreKey, events: events)
    }

    /// Stores what `decryptIncoming` did: the session (unless `storeSession` is false: a scheduled message's
    /// single-use session), its base key as answered, and the one-time prekeys it used.
    static func commitIncoming(_ decrypted: DecryptedIncoming, sender: String, senderDeviceID: UInt32, storeSession: Bool, _ db: Database) throws {
        if storeSession {
            try ClientStore.save(decrypted.session, handle: sender, deviceID: senderDeviceID, makeActive: decrypted.makeActive, db)
        }
        try db.execute(
            sql: "INSERT OR IGNORE INTO accepted_base_keys (base_key, accepted_at) VALUES (?, ?)",
            arguments: [decrypted.session.baseKey.rawRepresentation, Date().timeIntervalSince1970])
        // One-time prekeys go only now that the first message authenticated (crypto.md, "Prekey lifecycle").
        if let id = decrypted.usedOneTimePreKey {
            try db.execute(sql: "DELETE FROM one_time_prekeys WHERE id = ?", arguments: [Int64(id)])
        }
        if let id = decrypted.usedOneTimeKEMPreKey {
            try db.execute(sql: "DELETE FROM kem_prekeys WHERE id = ? AND last_resort = 0", arguments: [Int64(id)])
        }
    }

    /// Applies a receipt to the message it concerns: one of this device's envelopes (`envelopes`), or this
    /// device's copy of a sent transcript (the relay tells each of the sender's devices about its own copy).
    /// The message becomes delivered at the first DELIVERED and seen at the first SEEN from the recipient
    /// (receipts for copies on this account's own devices change only that envelope); expired when every
    /// envelope to the recipient expired (`protocol/relay.md`, "Receipts across devices").
    private func apply(_ receipt: WireReceipt) async throws -> ClientEvent? {
        let status: MessageStatus
        switch receipt.kind {
        case .delivered: status = .delivered
        case .seen: status = .seen
        case .expired: status = .expired
        default: return nil
        }
        let own = try requireAccount().handle
        return try await store.dbQueue.write { db -> ClientEvent? in
            var messageRow: Row?
            if let envelope = try Row.fetchOne(
                db, sql: "SELECT message_seq, recipient_handle, status FROM envelopes WHERE envelope_id = ?", arguments: [receipt.envelopeID])
            {
                let current = MessageStatus(rawValue: envelope["status"]) ?? .pending
                if current.canAdvance(to: status) {
                    try db.execute(sql: "UPDATE envelopes SET status = ? WHERE envelope_id = ?", arguments: [status.rawValue, receipt.envelopeID])
                }
                if envelope["recipient_handle"] as String == own { return nil }
                if status == .expired {
                    let live = try Int.fetchOne(
                        db, sql: "SELECT COUNT(*) FROM envelopes WHERE message_seq = ? AND recipient_handle != ? AND status != 'expired'",
                        arguments: [envelope["message_seq"] as Int64, own]) ?? 0
                    if live > 0 { return nil }
                }
                messageRow = try Row.fetchOne(
                    db, sql: "SELECT seq, message_id, peer, status, kind FROM messages WHERE seq = ?", arguments: [envelope["message_seq"] as Int64])
            } else {
                messageRow = try Row.fetchOne(
                    db, sql: "SELECT seq, message_id, peer, status, kind FROM messages WHERE envelope_id = ? AND outgoing = 1 AND transcript = 1",
                    arguments: [receipt.envelopeID])
            }
            guard let row = messageRow else { return nil }
            let current = MessageStatus(rawValue: row["status"]) ?? .pending
            guard current.canAdvance(to: status) else { return nil }
            try db.execute(sql: "UPDATE messages SET status = ? WHERE seq = ?", arguments: [status.rawValue, row["seq"] as Int64])
            // A reaction, edit, delete, timer or seen is no message of its own: its receipts are not news.
            if row["kind"] as String != "text" { return nil }
            return .receipt(messageID: row["message_id"], peer: row["peer"], status: status)
        }
    }

    /// Reads unsolicited frames until the relay says the queue is drained, processing each.
    func drain(_ connection: RelayConnection) async throws -> [ClientEvent] {
        var events: [ClientEvent] = []
        while true {
            guard let frame = await connection.nextUnsolicited(timeout: .seconds(30)) else {
                throw ClientError(.relayUnreachable, "the relay did not finish sending the queue")
            }
            switch frame.body {
            case .deliver(let deliver): events += try await process(deliver, on: connection)
            case .queueDrained: return events
            default: continue
            }
        }
    }

    /// Incoming messages not shown yet, oldest first; marks them shown and reports them seen (when
    /// read receipts are on), waiting for the relay's confirmation.
    func showNewMessages(on connection: RelayConnection) async throws -> [ReceivedMessage] {
        let account = try requireAccount()
        // Claim and mark in one transaction, so two processes on one home never show a message twice
        // and none is marked shown without being returned.
        let rows = try store.transaction { db -> [Row] in
            let rows = try Row.fetchAll(
                db, sql: "SELECT * FROM messages WHERE (outgoing = 0 OR transcript = 1) AND displayed = 0 AND kind = 'text' AND deleted < 2 ORDER BY seq")
            for row in rows { try db.execute(sql: "UPDATE messages SET displayed = 1 WHERE seq = ?", arguments: [row["seq"] as Int64]) }
            return rows
        }
        let messages = try markingRequests(try receivedMessages(rows, account: account))
        // Read sync, then seen receipts as the account's setting says (relay, sealed, off; Conversations.swift).
        try await reportShown(rows, on: connection, account: account)
        return messages
    }

    /// A stored message row as shown.
    static func receivedMessage(_ row: Row, account: AccountRecord) -> ReceivedMessage {
        let transcript: Bool = row["transcript"]
        return ReceivedMessage(
            messageID: row["message_id"], from: transcript ? account.handle : row["peer"], text: row["text"],
            sentAt: Date(timeIntervalSince1970: Double(row["accepted_at_ms"] as Int64) / 1000),
            untrustedSender: row["untrusted_sender"], to: transcript ? row["peer"] : nil)
    }

    /// Incoming messages neither shown nor notified yet, oldest first; marks them notified in the same
    /// transaction (so two processes never notify one twice). Nothing is reported seen and they stay unshown: a
    /// notification is not a read, so `receive` later shows them and reports them seen then.
    func claimForNotification() throws -> [ReceivedMessage] {
        let account = try requireAccount()
        let rows = try store.transaction { db -> [Row] in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM messages WHERE (outgoing = 0 OR transcript = 1) AND displayed = 0 AND notified = 0 AND kind = 'text' AND deleted < 2
                    ORDER BY seq
                    """)
            for row in rows { try db.execute(sql: "UPDATE messages SET notified = 1 WHERE seq = ?", arguments: [row["seq"] as Int64]) }
            // Message requests are not notified (conversations.md 9); `receive` and `requests` show them.
            return try rows.filter { row in
                if row["transcript"] as Bool { return true }
                return try !ClientStore.isMessageRequest(row["peer"], db)
            }
        }
        return rows.map { Self.receivedMessage($0, account: account) }
    }

    /// Sends seen reports for shown messages not yet reported.
    func reportSeen(on connection: RelayConnection) async throws {
        let envelopeIDs = try await store.dbQueue.read { db in
            // Message requests get no seen receipt until accepted (conversations.md 9).
            try Row.fetchAll(db, sql: "SELECT envelope_id, peer FROM messages WHERE outgoing = 0 AND displayed = 1 AND seen_reported = 0 AND kind = 'text'")
                .filter { try !ClientStore.isMessageRequest($0["peer"], db) }.map { $0["envelope_id"] as Data }
        }
        for chunk in stride(from: 0, to: envelopeIDs.count, by: WireConstants.maxIDsPerFrame) {
            let ids = Array(envelopeIDs[chunk..<min(chunk + WireConstants.maxIDsPerFrame, envelopeIDs.count)])
            var seen = WireReportSeen()
            seen.envelopeIds = ids
            _ = try await connection.request(.reportSeen(seen))
            try await store.dbQueue.write { db in
                for id in ids { try db.execute(sql: "UPDATE messages SET seen_reported = 1 WHERE envelope_id = ?", arguments: [id]) }
            }
        }
    }

    // MARK: receive

    /// Resubmits what an interrupted `flitz` stored but did not submit, drains the queue, then waits up to
    /// `wait` for more; calls `onMessage` for each new message in order and `onWarning` for problems.
    /// Returns after the relay confirmed acknowledgements and seen reports.
    /// - Throws: `ClientError`.
    public func receive(
        wait: Duration, onMessage: @escaping @Sendable (ReceivedMessage) -> Void, onWarning: @escaping @Sendable (String) -> Void
    ) async throws {
        let account = try requireAccount()
        try await withAuthenticatedConnection(account) { connection in
            let clock = ContinuousClock()
            let deadline = clock.now.advanced(by: wait)
            for warning in try await self.resendPending(on: connection) { onWarning(warning) }
            for case .warning(let text) in try await self.drain(connection) { onWarning(text) }
            try await self.showNewMessages(on: connection).forEach(onMessage)
            while clock.now < deadline {
                guard let frame = await connection.nextUnsolicited(timeout: deadline - clock.now) else { break }
                guard case .deliver(let deliver) = frame.body else { continue }
                for case .warning(let text) in try await self.process(deliver, on: connection) { onWarning(text) }
                try await self.showNewMessages(on: connection).forEach(onMessage)
            }
        }
    }

    // MARK: sync

    /// Resubmits what an interrupted `flitz` stored but did not submit, fetches and acknowledges everything
    /// queued (so senders see "delivered") without showing it; returns how many messages wait for `receive`.
    /// - Throws: `ClientError`.
    public func sync(onWarning: @escaping @Sendable (String) -> Void) async throws -> Int {
        let account = try requireAccount()
        try await withAuthenticatedConnection(account) { connection in
            for warning in try await self.resendPending(on: connection) { onWarning(warning) }
            for case .warning(let text) in try await self.drain(connection) { onWarning(text) }
        }
        return try await store.dbQueue.read { db in
            try Int.fetchOne(
                db, sql: "SELECT COUNT(*) FROM messages WHERE (outgoing = 0 OR transcript = 1) AND displayed = 0 AND kind = 'text' AND deleted < 2") ?? 0
        }
    }

    // MARK: status

    /// Syncs receipts from the relay, then returns the status of one of this device's messages.
    /// - Throws: `ClientError(.unknownMessage)`, or `.relayUnreachable` when the sync failed.
    public func status(of messageID: Data) async throws -> MessageStatus {
        let account = try requireAccount()
        guard try localStatus(of: messageID) != nil else {
            throw ClientError(.unknownMessage, "no message with id \(messageID.hexString) was sent from this device")
        }
        try await withAuthenticatedConnection(account) { connection in
            _ = try await self.drain(connection)
        }
        return try localStatus(of: messageID) ?? .pending
    }

    /// The locally known status of a sent message, without contacting the relay.
    public func localStatus(of messageID: Data) throws -> MessageStatus? {
        try store.dbQueue.read { db in
            try String.fetchOne(db, sql: "SELECT status FROM messages WHERE message_id = ? AND outgoing = 1", arguments: [messageID])
                .flatMap(MessageStatus.init(rawValue:))
        }
    }

    // MARK: listen and chat

    /// Stays connected, reporting messages and receipts as they arrive, until cancelled. Reconnects
    /// after a dropped connection. With `calls`, that controller runs on each connection: incoming calls ring
    /// (its `events`) and calls can be placed and answered through it (CallController.swift).
    /// - Throws: `ClientError` for errors other than a lost connection; `CancellationError`.
    public func listen(calls: CallController? = nil, onEvent: @escaping @Sendable (ClientEvent) -> Void) async throws {
        try await runConnected(onEvent: onEvent, callSignals: calls != nil) { connection, account in
            try await self.withSignals(on: connection, account: account, peer: nil, typing: nil) {
                if let calls { try await calls.run(on: connection) } else { try await Task.sleep(for: .seconds(86_400 * 365)) }
            }
        }
    }

    /// Interactive chat with `handle`: sends each line pushed to `lines`, reports events, and returns when
    /// `lines` is finished and everything pushed has been sent. Lines typed while the relay is unreachable
    /// are sent after reconnecting, each exactly once (a resend reuses the same envelope).
    /// - Throws: `ClientError` (`.invalidArgument` for an invalid handle or your own).
    /// With `typing`, keystrokes become throttled typing signals to `handle`; presence heartbeats go out while connected.
    public func chat(
        with handle: String, lines: LineQueue, typing: TypingInput? = nil, onSent: @escaping @Sendable (Data) -> Void,
        onEvent: @escaping @Sendable (ClientEvent) -> Void
    ) async throws {
        let account = try requireAccount()
        guard Handle.isValid(handle) else { throw ClientError(.invalidArgument, "invalid handle \"\(handle)\"") }
        guard handle != account.handle else { throw ClientError(.invalidArgument, "you cannot chat with yourself") }
        try await runConnected(onEvent: onEvent) { connection, account in
            try await self.withSignals(on: connection, account: account, peer: handle, typing: typing) {
                while let line = await lines.next() {
                    do {
                        onSent(try await self.send(on: connection, account: account, to: handle, text: line.text, expiresIn: nil, prepared: line.prepared))
                    } catch let error as ClientError where error.kind == .relayUnreachable {
                        lines.pushFront(line)
                        throw error
                    } catch is CancellationError {
                        lines.pushFront(line)
                        throw CancellationError()
                    } catch let error as ClientError {
                        onEvent(.warning(error.message))
                    }
                }
            }
        }
    }

    /// Connects, drains, then runs `foreground` while a reader processes deliveries; reconnects with
    /// backoff when the connection drops, until `foreground` returns.
    /// `onMessages`, when given, receives the new messages of each processing step as one batch (the queue
    /// drained on connecting, then each `Deliver`), claimed for notification only (`claimForNotification`: not
    /// marked shown, not reported seen), instead of `onEvent(.message)` per shown message.
    /// `callSignals`: `foreground` runs a `CallController` (sets `Authenticate.call_signals`, protocol/calls.md 3.2).
    func runConnected(
        onEvent: @escaping @Sendable (ClientEvent) -> Void,
        onMessages: (@Sendable ([ReceivedMessage]) -> Void)? = nil,
        callSignals: Bool = false,
        foreground: @escaping @Sendable (RelayConnection, AccountRecord) async throws -> Void
    ) async throws {
        let account = try requireAccount()
        let emit: @Sendable ([ClientEvent]) -> Void = { $0.forEach(onEvent) }
        let show: @Sendable (RelayConnection) async throws -> Void = { connection in
            if let onMessages {
                onMessages(try self.claimForNotification())
            } else {
                try await self.showNewMessages(on: connection).forEach { onEvent(.message($0)) }
            }
        }
        let reported = Mutex(false)
        while true {
            do {
                try await withAuthenticatedConnection(account, callSignals: callSignals) { connection in
                    if reported.withLock({ $0 }) { onEvent(.warning("reconnected")) }
                    reported.withLock { $0 = false }
                    for warning in try await self.resendPending(on: connection) { onEvent(.warning(warning)) }
                    emit(try await self.drain(connection))
                    try await show(connection)
                    try await withThrowingTaskGroup(of: Bool.self) { group in
                        group.addTask {
                            while let frame = await connection.nextUnsolicited(timeout: .seconds(86_400)) {
                                guard case .deliver(let deliver) = frame.body else { continue }
                                emit(try await self.process(deliver, on: connection))
                                try await show(connection)
                            }
                            return false  // connection closed
                        }
                        group.addTask {
                            try await foreground(connection, account)
                            return true
                        }
                        // Deleted messages leave the search index's storage within 30 s (Search.swift); never returns.
                        group.addTask {
                            try await self.eraseSearchResiduePeriodically()
                            return true
                        }
                        let finished = try await group.next() ?? false
                        group.cancelAll()
                        if !finished { throw ClientError(.relayUnreachable, "connection to the relay lost") }
                    }
                }
                return
            } catch let error as ClientError where error.kind == .relayUnreachable {
                // Say it once per outage, not on every retry.
                if !reported.withLock({ $0 }) { onEvent(.warning("\(error.message); reconnecting")) }
                reported.withLock { $0 = true }
                try await Task.sleep(for: .seconds(2))
            }
        }
    }
}
