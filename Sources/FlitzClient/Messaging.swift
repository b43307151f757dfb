import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import GRDB
import Logging
import Synchronization

/// One message encrypted for every device that must get it, ready to submit as one group; kept across
/// retries so a resubmission is byte-identical.
struct PreparedMessage: Sendable {
    var messageID: Data
    /// The message's row in `messages`.
    var seq: Int64
    /// One envelope per recipient device and per own other device, all with `group` 1.
    var envelopes: [WireOutgoingEnvelope]
    /// Submitted with `selected_devices`: content for a peer only, with no copy for the own devices (a sealed seen
    /// receipt), which the relay's coverage check would otherwise refuse for an account with several devices.
    var selectedDevices = false
}

extension FlitzClient {
    /// Longest message text in UTF-8 bytes: the relay's 65 536-byte ciphertext limit minus the largest
    /// session overhead (a PQXDH prekey message with its 1568-byte KEM ciphertext: about 1 900 bytes; header,
    /// nonce, tag, content fields and up to 64 bytes of padding), rounded down.
    public static let maxTextBytes = 63_000

    // MARK: send

    /// Encrypts `text` for `handle` and submits it; returns the 16-byte message id once the relay has
    /// acknowledged the envelope as durably stored. Retries unreachable relays until `timeout`.
    /// - Parameters:
    ///   - expiresIn: seconds until the relay deletes it undelivered (nil: the relay's retention, or the
    ///     disappearing timer when one applies).
    ///   - noForward: ask recipients not to forward it (`protocol/conversations.md` section 7).
    ///   - disappearAfter: per-message disappearing override in seconds (0: never; nil: the conversation's timer;
    ///     section 8).
    /// - Throws: `ClientError`: `.relayUnreachable` (timed out), `.refused`, `.identityChanged`, `.invalidArgument`.
    public func send(
        to handle: String, text: String, expiresIn: UInt32? = nil, noForward: Bool = false, disappearAfter: UInt32? = nil,
        timeout: Duration = .seconds(30)
    ) async throws -> Data {
        let account = try requireAccount()
        try checkOutgoing(text, to: handle, account: account)
        let message = TextMessage(text, noForward: noForward, expireAfterSeconds: disappearAfter)
        return try await withSendRetries(timeout: timeout) { connection, prepared in
            try await self.send(on: connection, account: account, to: handle, message: message, expiresIn: expiresIn, prepared: prepared)
        }
    }

    /// Runs `body` on an authenticated connection (after resubmitting what a crashed `flitz` left unsent),
    /// reconnecting while the relay is unreachable until `timeout`; one `PreparedBox` across the attempts, so a
    /// retry resubmits the same envelopes.
    /// - Throws: `ClientError(.relayUnreachable)` after `timeout`; whatever `body` throws otherwise.
    func withSendRetries<T: Sendable>(
        timeout: Duration, _ body: @escaping @Sendable (RelayConnection, PreparedBox) async throws -> T
    ) async throws -> T {
        let account = try requireAccount()
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        let prepared = PreparedBox()
        var lastError = ClientError(.relayUnreachable, "the relay did not acknowledge the message within \(timeout)")
        while clock.now < deadline {
            do {
                return try await RelayConnection.withTimeout(deadline - clock.now) {
                    try await self.withAuthenticatedConnection(account) { connection in
                        // Earlier messages a crashed `flitz` left unsent go first, keeping per-recipient order.
                        for warning in try await self.resendPending(on: connection) { self.logger.warning("\(warning)") }
                        return try await body(connection, prepared)
                    }
                }
            } catch let error as ClientError where error.kind == .relayUnreachable {
                lastError = error
                logger.debug("relay unreachable, retrying", metadata: ["error": "\(error)"])
                try await Task.sleep(for: min(.seconds(1), deadline - clock.now))
            }
        }
        throw ClientError(.relayUnreachable, "\(lastError.message) (gave up after \(timeout))")
    }

    /// How many times a send re-fetches device lists and re-encrypts after `MISMATCHED_DEVICES` before giving up.
    static let maxDeviceRetries = 3

    /// Sends one text on an authenticated connection (used by `send` and `chat`).
    func send(
        on connection: RelayConnection, account: AccountRecord, to handle: String, text: String, expiresIn: UInt32?,
        prepared: PreparedBox = PreparedBox()
    ) async throws -> Data {
        try await send(on: connection, account: account, to: handle, message: TextMessage(text), expiresIn: expiresIn, prepared: prepared)
    }

    /// Sends one text (a plain one, a reply or a forward) on an authenticated connection: with a fresh unsend
    /// token and the conversation's disappearing timer stamped in (`protocol/conversations.md` sections 5, 8).
    func send(
        on connection: RelayConnection, account: AccountRecord, to handle: String, message: TextMessage, expiresIn: UInt32?,
        prepared: PreparedBox = PreparedBox()
    ) async throws -> Data {
        try checkOutgoing(message.body, to: handle, account: account)
        let token = random.bytes(ConversationLimits.tokenLength)
        let timer = try await store.dbQueue.read { db in try Self.disappearingSeconds(handle, db) }
        return try await submitContent(on: connection, account: account, to: handle, prepared: prepared, textBytes: message.body.utf8.count) {
            messageID, sentAt in
            Self.textOutgoing(message, to: handle, messageID: messageID, sentAt: sentAt, unsendToken: token, timer: timer, expiresIn: expiresIn)
        }
    }

    /// Sends one piece of content on an authenticated connection: encrypted once per device
    /// of `handle`'s accepted list and once per other device of this account, in one `Submit` and one group.
    /// When the relay answers `MISMATCHED_DEVICES`, refreshes the lists named, re-encrypts under the same
    /// message id and tries again, at most `maxDeviceRetries` times (`protocol/devices.md` section 4.4).
    /// `build` makes the content from the message id and the sender's time; `textBytes` sizes the refusal of an
    /// oversize text. Content with nothing to send (a read sync on an account with one device) returns its id
    /// unsent. `messageID`: an id chosen earlier (a media message's, fixed before its upload); nil draws one.
    func submitContent(
        on connection: RelayConnection, account: AccountRecord, to handle: String, prepared: PreparedBox = PreparedBox(), textBytes: Int,
        messageID chosenID: Data? = nil, build: @escaping @Sendable (Data, Int64) throws -> OutgoingContent
    ) async throws -> Data {
        let messageID = prepared.value?.messageID ?? chosenID ?? random.bytes(WireConstants.idLength)
        for _ in 0...Self.maxDeviceRetries {
            let message: PreparedMessage
            if let existing = prepared.value {
                // `resendPending` may have submitted it already on this connection.
                if try localStatus(of: existing.messageID) != .pending { return existing.messageID }
                message = existing
            } else {
                let sentAt = Int64(now().timeIntervalSince1970 * 1000)
                guard
                    let made = try await prepare(on: connection, account: account, to: handle, outgoing: try build(messageID, sentAt))
                else { return messageID }
                message = made
                prepared.value = message
                Failpoint.hit("send.afterCommit")
            }
            // A Submit over the relay's frame limit would close the connection; refuse it before submitting.
            if let limit = Self.oversizeLimit(message.envelopes, textBytes: textBytes) {
                try discard(message)
                prepared.value = nil
                throw ClientError(
                    .invalidArgument,
                    "this message is too long to send to \(message.envelopes.count) devices at once: at most \(limit) bytes")
            }
            var mismatches: [WireDeviceMismatch]
            do {
                let outcomes = try await submitStored(
                    message.envelopes, on: connection, keepRetryable: false, selectedDevices: message.selectedDevices)
                guard let failed = outcomes.first(where: \.hasError) else { return message.messageID }
                switch failed.error.code {
                case .unknownRecipient: throw noSuchHandleError(handle)
                case .mismatchedDevices, .staleDevice: mismatches = failed.error.deviceMismatches
                default: throw ClientError(.refused(failed.error.code), "the relay refused the message: \(failed.error.message)")
                }
            } catch let error as ClientError where error.kind == .refused(.mismatchedDevices) || error.kind == .refused(.staleDevice) {
                mismatches = error.relayError?.deviceMismatches ?? []
            } catch let error as ClientError where error.kind == .refused(.unknownRecipient) {
                throw noSuchHandleError(handle)
            }
            // The relay stored nothing: forget this encryption, learn the devices, encrypt again.
            logger.debug("devices changed, re-encrypting", metadata: ["handles": "\(mismatches.map(\.handle))"])
            try discard(message)
            prepared.value = nil
            if mismatches.isEmpty {
                var own = WireDeviceMismatch(), peer = WireDeviceMismatch()
                own.handle = account.handle
                peer.handle = handle
                mismatches = [peer, own]
            }
            for mismatch in mismatches {
                try store.transaction { db in try ClientStore.deleteSessions(mismatch.handle, deviceIDs: mismatch.staleDeviceIds, db) }
                try await refreshDeviceList(mismatch.handle, on: connection, account: account, forSending: true) { self.logger.warning("\($0)") }
            }
        }
        throw ClientError(
            .refused(.mismatchedDevices),
            "the devices of \(handle) (or of your account) kept changing while sending (tried \(Self.maxDeviceRetries + 1) times); "
                + "try again later")
    }

    /// Forgets a prepared message the relay refused as a whole (the sessions stay advanced: harmless gaps).
    private func discard(_ message: PreparedMessage) throws {
        try store.dbQueue.write { db in
            try db.execute(sql: "DELETE FROM envelopes WHERE message_seq = ?", arguments: [message.seq])
            try db.execute(sql: "DELETE FROM messages WHERE seq = ?", arguments: [message.seq])
        }
    }

    /// Resubmits, byte for byte, outgoing envelopes that were encrypted and stored but never acknowledged
    /// (a `flitz` process ended between storing and the relay's answer), one message's group per `Submit`.
    /// Resubmission is idempotent at the relay. Returns a warning for each message the relay now refuses for
    /// good (those are given up, for example when the recipient's devices changed meanwhile).
    func resendPending(on connection: RelayConnection) async throws -> [String] {
        let account = try requireAccount()
        let groups = try await store.dbQueue.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT e.envelope_id, e.message_seq, e.recipient_handle, e.recipient_device_id, e.ciphertext, e.selected_devices,
                        m.expires_in, m.peer, m.urgent, m.unsend_token_hash FROM envelopes e JOIN messages m ON m.seq = e.message_seq
                    WHERE e.status = 'pending' AND e.ciphertext IS NOT NULL ORDER BY e.message_seq, e.rowid
                    """
            ).reduce(into: [(seq: Int64, peer: String, selected: Bool, envelopes: [WireOutgoingEnvelope])]()) { groups, row in
                var envelope = WireOutgoingEnvelope()
                envelope.envelopeID = row["envelope_id"]
                envelope.recipientHandle = row["recipient_handle"]
                envelope.recipientDeviceID = UInt32(row["recipient_device_id"] as Int64)
                envelope.ttlSeconds = UInt32(row["expires_in"] as Int64)
                envelope.ciphertext = row["ciphertext"]
                // Exactly the relay-visible options of the first submission (`protocol/conversations.md` 1, 5).
                envelope.urgency = Self.urgency(recipient: envelope.recipientHandle, account: account, urgent: row["urgent"])
                envelope.unsendTokenHash = row["unsend_token_hash"] ?? Data()
                let selected: Bool = row["selected_devices"]
                envelope.group = selected ? 0 : 1
                let seq: Int64 = row["message_seq"]
                if let last = groups.last, last.seq == seq, last.selected == selected {
                    groups[groups.count - 1].envelopes.append(envelope)
                } else {
                    groups.append((seq, row["peer"], selected, [envelope]))
                }
            }
        }
        var warnings: [String] = []
        for group in groups {
            // A group that cannot fit in one frame would close every connection it is resent on: give it up.
            guard Self.submitFrameBytes(group.envelopes, selectedDevices: group.selected) <= WireConstants.maxFrameBytes else {
                try await store.dbQueue.write { db in
                    try db.execute(sql: "UPDATE envelopes SET ciphertext = NULL WHERE message_seq = ? AND status = 'pending'", arguments: [group.seq])
                }
                warnings.append(
                    "an unsent message to \(group.peer) is too long to send to \(group.envelopes.count) devices at once and was given up; "
                        + "send it again, shorter")
                continue
            }
            do {
                let outcomes = try await submitStored(group.envelopes, on: connection, keepRetryable: true, selectedDevices: group.selected)
                if let failed = outcomes.first(where: { $0.hasError && !Self.isRetryable($0.error.code) }) {
                    warnings.append("an unsent message to \(group.peer) was refused by the relay (\(failed.error.message)); send it again")
                }
            } catch let error as ClientError where error.relayError != nil {
                try await store.dbQueue.write { db in
                    try db.execute(sql: "UPDATE envelopes SET ciphertext = NULL WHERE message_seq = ? AND status = 'pending'", arguments: [group.seq])
                }
                warnings.append("an unsent message to \(group.peer) was refused by the relay (\(error.relayError?.message ?? "")); send it again")
            }
        }
        return warnings
    }

    /// Size in bytes of the `Frame` carrying a `Submit` of `envelopes`, with the longest request id (10 bytes):
    /// an upper bound of what `submitStored` sends. The relay closes a connection whose frame exceeds
    /// `WireConstants.maxFrameBytes` (`protocol/relay.md`, "Limits").
    static func submitFrameBytes(_ envelopes: [WireOutgoingEnvelope], selectedDevices: Bool) -> Int {
        var submit = WireSubmit()
        submit.envelopes = envelopes
        submit.selectedDevices = selectedDevices
        return FrameCodec.encode(WireFrame(requestID: .max, body: .submit(submit))).count
    }

    /// nil when a `Submit` of `envelopes` fits in one frame; otherwise the longest text in UTF-8 bytes that
    /// would fit for as many devices (each ciphertext holds the text once, padded by at most 64 bytes; 8 more
    /// per envelope for length prefixes that may grow), given the envelopes of a `textBytes`-byte text.
    static func oversizeLimit(_ envelopes: [WireOutgoingEnvelope], textBytes: Int) -> Int? {
        let size = submitFrameBytes(envelopes, selectedDevices: false)
        guard size > WireConstants.maxFrameBytes, !envelopes.isEmpty else { return nil }
        let count = envelopes.count
        let overhead = size - count * textBytes + count * (64 + 8)
        return min(maxTextBytes, max(0, (WireConstants.maxFrameBytes - overhead) / count))
    }

    /// The urgency class of an envelope (`protocol/push.md` 2, `protocol/conversations.md` 1): `URGENCY_URGENT` to
    /// a contact for content a person should see (`urgent`: texts, replies, forwards), `URGENCY_SILENT` for the
    /// rest (reactions, edits, deletes, timers, seen) and for everything to this account's own devices.
    static func urgency(recipient: String, account: AccountRecord, urgent: Bool = true) -> WireUrgency {
        recipient == account.handle || !urgent ? .silent : .urgent
    }

    /// Refusals that may pass by themselves: a full recipient queue, a relay failure.
    private static func isRetryable(_ code: WireErrorCode) -> Bool { code == .queueFull || code == .internal }

    /// Submits envelopes already stored as pending (one `Submit`), and records the outcome of each: accepted →
    /// the envelope and its message `sent` with the relay's time; refused → the stored envelope is forgotten
    /// (given up), except a refusal that may pass when `keepRetryable` (it stays pending for the next connection).
    /// - Throws: `ClientError(.refused)` when the relay refuses the whole `Submit` (nothing is recorded then).
    func submitStored(
        _ envelopes: [WireOutgoingEnvelope], on connection: RelayConnection, keepRetryable: Bool, selectedDevices: Bool
    ) async throws -> [WireSubmitOutcome] {
        var submit = WireSubmit()
        submit.envelopes = envelopes
        submit.selectedDevices = selectedDevices
        guard case .submitResult(let result) = try await connection.request(.submit(submit)).body,
            result.outcomes.count == envelopes.count
        else { throw ClientError(.protocolFailure, "unexpected answer to submit") }
        Failpoint.hit("send.afterSubmit")
        try await store.dbQueue.write { db in
            for (envelope, outcome) in zip(envelopes, result.outcomes) {
                if !outcome.hasError {
                    try db.execute(
                        sql: "UPDATE envelopes SET status = 'sent', ciphertext = NULL WHERE envelope_id = ? AND status = 'pending'",
                        arguments: [envelope.envelopeID])
                    try db.execute(
                        sql: """
                            UPDATE messages SET status = 'sent', accepted_at_ms = ?
                            WHERE seq = (SELECT message_seq FROM envelopes WHERE envelope_id = ?) AND status = 'pending'
                            """,
                        arguments: [outcome.acceptedAtMs, envelope.envelopeID])
                } else if !(keepRetryable && Self.isRetryable(outcome.error.code)) {
                    try db.execute(sql: "UPDATE envelopes SET ciphertext = NULL WHERE envelope_id = ?", arguments: [envelope.envelopeID])
                }
            }
        }
        return result.outcomes
    }

    /// Refuses what the relay would refuse or what makes no sense, before anything is encrypted.
    func checkOutgoing(_ text: String, to handle: String, account: AccountRecord) throws {
        guard Handle.isValid(handle) else { throw ClientError(.invalidArgument, "invalid handle \"\(handle)\"") }
        guard handle != account.handle else { throw ClientError(.invalidArgument, "you cannot send a message to yourself") }
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw ClientError(.invalidArgument, "the message is empty") }
        guard text.utf8.count <= Self.maxTextBytes else {
            throw ClientError(.invalidArgument, "the message is \(text.utf8.count) bytes; the limit is \(Self.maxTextBytes) bytes of UTF-8 text")
        }
    }

    /// Encrypts `outgoing.peerContent` once per device of `handle`'s accepted list and `outgoing.ownContent` (a sent
    /// transcript or a read sync) once per other device of this account, starting sessions where needed; stores
    /// the sessions, the message (status pending, with what a resend needs) and its envelopes in one transaction
    /// before anything is submitted. nil when there is no envelope to send (own content only, no other device).
    /// - Throws: `ClientError` (`.identityChanged` for a changed key or a pending device list, `.refused`,
    ///   `.protocolFailure` for a refused list or bundle).
    func prepare(
        on connection: RelayConnection, account: AccountRecord, to handle: String, outgoing: OutgoingContent
    ) async throws -> PreparedMessage? {
        let toPeer = outgoing.peerContent != nil
        if toPeer {
            if let contact = try store.contact(handle), contact.untrustedIdentityKey != nil {
                throw identityChangedError(handle)
            }
            if try await store.dbQueue.read({ db in try ClientStore.hasPendingDeviceList(handle, account: account, db) }) {
                throw pendingListError(handle)
            }
        }
        // New sessions need the network (bundles); everything after happens in one transaction.
        let fresh = toPeer ? try await newSessions(with: handle, on: connection, account: account) : [:]
        let ownFresh = outgoing.ownContent != nil ? try await newSessions(with: account.handle, on: connection, account: account) : [:]
        let random = self.random
        let messageID = outgoing.messageID
        let tokenHash = outgoing.unsendToken.map(ConversationTokens.unsendTokenHash)
        return try store.transaction(failpoint: "send.afterEncrypt") { db -> PreparedMessage? in
            // Re-check trust inside the transaction: another process may have seen a key change meanwhile.
            var trustedPeerKey = Data()
            if toPeer {
                guard let contact = try ClientStore.contact(handle, db), contact.untrustedIdentityKey == nil else { throw identityChangedError(handle) }
                guard try !ClientStore.hasPendingDeviceList(handle, account: account, db) else { throw pendingListError(handle) }
                trustedPeerKey = contact.trustedIdentityKey
            }
            var envelopes: [WireOutgoingEnvelope] = []
            var rows: [(handle: String, deviceID: UInt32, envelopeID: Data, ciphertext: Data)] = []
            var targets: [(String, MessageContent, [UInt32: Session])] = []
            if let content = outgoing.peerContent { targets.append((handle, content, fresh)) }
            if let content = outgoing.ownContent { targets.append((account.handle, content, ownFresh)) }
            for (target, body, newOnes) in targets {
                for deviceID in try Self.targetDevices(of: target, account: account, fresh: Array(newOnes.keys), db) {
                    // Re-read inside the transaction: another process may have advanced the session meanwhile.
                    // Only a session with the listed device identity key (section 4.4, "Only listed devices").
                    let stored = try ClientStore.sessions(with: target, db).first(where: { $0.deviceID == deviceID && $0.active })?.session
                    guard var session = try [stored, newOnes[deviceID]].compactMap({ $0 }).first(where: {
                        try ClientStore.mayEncrypt($0, to: target, deviceID: deviceID, account: account, db)
                    })
                    else { continue }  // a listed device the relay did not serve: skipped (section 4.4)
                    let trusted = target == account.handle ? account.accountIdentityKey.rawRepresentation : trustedPeerKey
                    guard ConstantTime.equals(trusted, session.remoteCertificate.accountIdentityKey.rawRepresentation) else {
                        throw identityChangedError(target)
                    }
                    let ciphertext = try session.encrypt(body.encoded(), random: random)
                    try ClientStore.save(session, handle: target, deviceID: deviceID, makeActive: true, db)
                    try ClientStore.storedEnvelopeEncrypted(on: session, handle: target, deviceID: deviceID, db)  // MAX_EPHEMERAL_RUN
                    var envelope = WireOutgoingEnvelope()
                    envelope.envelopeID = random.bytes(WireConstants.idLength)
                    envelope.recipientHandle = target
                    envelope.recipientDeviceID = deviceID
                    envelope.ttlSeconds = outgoing.ttlSeconds ?? 0
                    envelope.ciphertext = ciphertext
                    envelope.group = 1
                    envelope.urgency = Self.urgency(recipient: target, account: account, urgent: outgoing.urgent)
                    if let tokenHash { envelope.unsendTokenHash = tokenHash }
                    envelopes.append(envelope)
                    rows.append((target, deviceID, envelope.envelopeID, ciphertext))
                }
            }
            guard let first = rows.first else {
                if toPeer { throw ClientError(.refused(.noPrekeys), "\(handle) has no device this device can send to") }
                return nil
            }
            if toPeer, first.handle != handle { throw ClientError(.refused(.noPrekeys), "\(handle) has no device this device can send to") }
            try db.execute(
                sql: """
                    INSERT INTO messages (message_id, outgoing, peer, text, envelope_id, expires_in, status, recipient_device_id, displayed, group_id)
                    VALUES (?, 1, ?, ?, ?, ?, 'pending', ?, 1, 1)
                    """,
                arguments: [messageID, handle, outgoing.text, first.envelopeID, Int64(outgoing.ttlSeconds ?? 0), Int64(first.deviceID)])
            let seq = db.lastInsertedRowID
            for case .warning(let text) in try Self.storeOutgoing(outgoing, seq: seq, account: account, db) { logger.warning("\(text)") }
            let selected = toPeer && outgoing.ownContent == nil
            for row in rows {
                try db.execute(
                    sql: """
                        INSERT INTO envelopes (envelope_id, message_seq, recipient_handle, recipient_device_id, ciphertext, status, selected_devices)
                        VALUES (?, ?, ?, ?, ?, 'pending', ?)
                        """,
                    arguments: [row.envelopeID, seq, row.handle, Int64(row.deviceID), row.ciphertext, selected])
            }
            if selected { envelopes = envelopes.map { var e = $0; e.group = 0; return e } }
            return PreparedMessage(messageID: messageID, seq: seq, envelopes: envelopes, selectedDevices: selected)
        }
    }

    /// The devices a message to `handle` goes to: its accepted list (without this device, for the own
    /// handle); before any list was seen, the one device this device has (or just started) a session with
    /// (version 1's rule).
    static func targetDevices(of handle: String, account: AccountRecord, fresh: [UInt32], _ db: Database) throws -> [UInt32] {
        if let list = try ClientStore.acceptedDeviceList(handle, account: account, db) {
            return list.entries.map(\.deviceID).filter { !(handle == account.handle && $0 == account.deviceID) }
        }
        if handle == account.handle { return [] }
        let known = Set(try ClientStore.sessions(with: handle, db).filter(\.active).map(\.deviceID)).union(fresh)
        return Array(known.sorted().prefix(1))
    }

    /// Starts a session with every device `handle`'s accepted list holds and this device has none with:
    /// fetches their bundles (`FetchPreKeyBundle.device_ids`; every device when nothing is known yet), feeds
    /// the bundle's list to the tracker first, and uses only bundle devices the accepted list holds with the
    /// same device identity key (section 4.4, "Only listed devices"; version 1's rule before any list).
    /// Returns the new sessions by device id, not yet stored.
    /// With `everyDevice` (single-use sessions of scheduled messages, `protocol/conversations.md` section 8),
    /// a fresh session for every listed device whether or not one exists; nothing is stored either way.
    func newSessions(
        with handle: String, on connection: RelayConnection, account: AccountRecord, everyDevice: Bool = false
    ) async throws -> [UInt32: Session] {
        let own = handle == account.handle
        let missing: [UInt32]? = try await store.dbQueue.read { db in
            let sessions = try ClientStore.sessions(with: handle, db).filter(\.active)
            guard let list = try ClientStore.acceptedDeviceList(handle, account: account, db) else {
                if everyDevice { return own ? [] : nil }
                return own || !sessions.isEmpty ? [] : nil  // nil: nothing known, fetch every device
            }
            if everyDevice { return list.entries.map(\.deviceID).filter { !(own && $0 == account.deviceID) } }
            // A session under another key than the listed one does not count (it is never encrypted on).
            let active = Set(sessions.filter { ClientStore.isListed($0.session, deviceID: $0.deviceID, in: list) }.map(\.deviceID))
            return list.entries.map(\.deviceID).filter { !active.contains($0) && !(own && $0 == account.deviceID) }
        }
        if missing?.isEmpty == true { return [:] }
        var fetch = WireFetchPreKeyBundle()
        fetch.handle = handle
        fetch.deviceIds = missing ?? []
        let wire: WirePreKeyBundle
        do {
            guard case .prekeyBundle(let bundle) = try await connection.request(.fetchPrekeyBundle(fetch)).body else {
                throw ClientError(.protocolFailure, "unexpected answer to a prekey bundle request")
            }
            wire = bundle
        } catch let error as ClientError where error.kind == .refused(.unknownRecipient) {
            throw noSuchHandleError(handle)
        }
        if own {
            guard ConstantTime.equals(wire.accountIdentityKey, account.accountIdentityKey.rawRepresentation) else { throw removedError(account) }
        } else {
            try checkIdentity(handle, accountIdentityKey: wire.accountIdentityKey)
        }
        try considerDeviceList(
            wire.hasDeviceList ? wire.deviceList : nil, handle: handle, servedAccountKey: wire.accountIdentityKey, account: account,
            forSending: true) { self.logger.warning("\($0)") }
        let tracker = try await store.dbQueue.read { db in try ClientStore.tracker(handle, db) }
            ?? DeviceListTracker(accountIdentityKey: wire.accountIdentityKey)
        let served = wire.devices.map { DeviceListPayload.Entry(deviceID: $0.deviceID, deviceIdentityKey: $0.deviceIdentityKey) }
        let targets: [DeviceListPayload.Entry]
        switch tracker.sendTargets(bundleDevices: served, bundleCarriedList: wire.hasDeviceList) {
        case .success(let entries): targets = entries
        case .failure(.pendingChange): throw pendingListError(handle)
        case .failure(.noListedDevice): return [:]
        case .failure(let refusal):
            throw ClientError(.protocolFailure, "the relay served \(handle)'s devices without a valid signed device list (\(refusal)); not sending")
        }
        var sessions: [UInt32: Session] = [:]
        for device in wire.devices where targets.contains(where: { $0.deviceID == device.deviceID }) {
            if own && device.deviceID == account.deviceID { continue }
            let bundle = try verifiedBundle(device, accountIdentityKey: wire.accountIdentityKey, handle: handle)
            sessions[device.deviceID] = try Session.initiate(identity: account.device, bundle: bundle, random: random)
        }
        return sessions
    }

    /// Checks one device's bundle: its certificate under the account key, its signed and KEM prekeys.
    func verifiedBundle(_ device: WireDeviceBundle, accountIdentityKey: Data, handle: String) throws -> PreKeyBundle {
        let unverified = UnverifiedPreKeyBundle(
            deviceID: device.deviceID, accountIdentityKey: accountIdentityKey, deviceIdentityKey: device.deviceIdentityKey,
            deviceCertificateSignature: device.deviceCertificateSignature, signedPreKeyID: device.signedPrekey.id,
            signedPreKey: device.signedPrekey.publicKey, signedPreKeySignature: device.signedPrekey.signature,
            oneTimePreKey: device.hasOneTimePrekey ? (device.oneTimePrekey.id, device.oneTimePrekey.publicKey) : nil,
            kemPreKey: device.hasKemPrekey
                ? (device.kemPrekey.id, device.kemPrekey.publicKey, device.kemPrekey.signature, device.kemPrekey.lastResort) : nil)
        do {
            return try unverified.verified()
        } catch {
            throw ClientError(.protocolFailure, "the prekey bundle of \(handle) does not verify (\(error)); not sending")
        }
    }

    /// The bundle of one device of `handle` (for a session reset), checked against the accepted list.
    func fetchBundle(on connection: RelayConnection, handle: String, deviceID: UInt32, account: AccountRecord) async throws -> PreKeyBundle? {
        var fetch = WireFetchPreKeyBundle()
        fetch.handle = handle
        fetch.deviceIds = [deviceID]
        guard case .prekeyBundle(let wire) = try await connection.request(.fetchPrekeyBundle(fetch)).body,
            let device = wire.devices.first(where: { $0.deviceID == deviceID })
        else { return nil }
        let listed = try await store.dbQueue.read { db -> Bool in
            guard let list = try ClientStore.acceptedDeviceList(handle, account: account, db) else { return true }
            return list.contains(deviceID: deviceID, identityKey: device.deviceIdentityKey)
        }
        guard listed else { return nil }
        return try verifiedBundle(device, accountIdentityKey: wire.accountIdentityKey, handle: handle)
    }

    /// Trust on first use; afterwards a different account identity key is recorded and refused until `trust`.
    func checkIdentity(_ handle: String, accountIdentityKey: Data) throws {
        let changed = try store.transaction { db -> Bool in
            guard let contact = try ClientStore.contact(handle, db) else {
                try ClientStore.trustIdentity(handle, key: accountIdentityKey, db)
                return false
            }
            guard ConstantTime.equals(contact.trustedIdentityKey, accountIdentityKey) else {
                try ClientStore.recordUntrustedIdentity(handle, key: accountIdentityKey, db)
                return true
            }
            return false
        }
        if changed { throw identityChangedError(handle) }
    }

    func identityChangedError(_ handle: String) -> ClientError {
        ClientError(
            .identityChanged,
            "the identity key of \(handle) has changed (for example, they reinstalled or recovered their account). "
                + "Compare `flitz verify \(handle)` with them, then run `flitz trust \(handle)` to send again")
    }

    // MARK: trust

    /// Accepts `handle`'s changed account identity key: the one recorded when the change was noticed, the
    /// key `safetyNumbers(with:)` showed. With `expectedSafetyNumber`, only if that key still has that number
    /// (another change may have arrived since it was displayed). Drops the sessions with the old key.
    /// Returns the safety number of the newly trusted key.
    /// - Throws: `ClientError(.invalidArgument)` when nothing changed, or the number does not match the new key;
    ///   `.safetyNumberMismatch` when a pending device list is to be accepted and the number is not the trusted
    ///   key's (nothing accepted).
    public func trust(_ handle: String, expectedSafetyNumber: String? = nil) async throws -> String {
        let account = try requireAccount()
        guard let contact = try store.contact(handle) else {
            throw ClientError(.invalidArgument, "no contact \(handle) yet: their key is trusted when you first exchange a message")
        }
        guard let pending = contact.untrustedIdentityKey else {
            // Same key, a newer device list adding a device: accept it (`protocol/devices.md` section 4.4), with
            // `expectedSafetyNumber` only if it is the trusted key's number (compared in constant time).
            let number = SafetyNumber.compute(account.accountIdentityKey.rawRepresentation, contact.trustedIdentityKey)
            let accepted = try store.transaction { db -> Bool in
                guard try ClientStore.hasPendingDeviceList(handle, account: account, db) else { return false }
                if let expectedSafetyNumber {
                    let given = Data(expectedSafetyNumber.filter(\.isNumber).utf8)
                    guard ConstantTime.equals(given, Data(number.filter(\.isNumber).utf8)) else {
                        throw ClientError(
                            .safetyNumberMismatch,
                            "that is not the safety number of \(handle)'s identity key; \(handle)'s new device is NOT trusted. "
                                + "Run `flitz verify \(handle)` and compare again")
                    }
                }
                return try ClientStore.acceptPendingDeviceList(handle, account: account, db)
            }
            if accepted { return number }
            throw ClientError(.invalidArgument, "neither the identity key nor the devices of \(handle) have changed; nothing to trust")
        }
        let number = SafetyNumber.compute(account.accountIdentityKey.rawRepresentation, pending)
        if let expectedSafetyNumber {
            let normalized = { (text: String) in text.filter(\.isNumber) }
            guard normalized(expectedSafetyNumber) == normalized(number) else {
                throw ClientError(
                    .invalidArgument,
                    "the safety number you gave is not the one of \(handle)'s current new key; run `flitz safety-number \(handle)` again")
            }
        }
        try store.transaction { db in
            try ClientStore.trustIdentity(handle, key: pending, db)
            // Drop the sessions with the old key; keep any the new key already started (its owner keeps
            // using it, and its prekey message cannot be answered twice).
            for entry in try ClientStore.sessions(with: handle, db)
            where !ConstantTime.equals(entry.session.remoteCertificate.accountIdentityKey.rawRepresentation, pending) {
                try db.execute(
                    sql: "DELETE FROM sessions WHERE handle = ? AND base_key = ?",
                    arguments: [handle, entry.session.baseKey.rawRepresentation])
            }
        }
        return number
    }

    /// Whether the session this device sends to `handle` on was made with a last-resort KEM prekey (the
    /// relay had no one-time KEM prekey left), so its post-quantum part rests on a reusable key
    /// (`protocol/crypto.md`, "PQXDH"). False without a session.
    /// - Throws: `ClientError(.notInitialized)`, database errors.
    public func activeSessionUsesLastResortPreKey(with handle: String) throws -> Bool {
        _ = try requireAccount()
        return try store.sessions(with: handle).first(where: \.active)?.session.usedLastResortPreKey ?? false
    }

    /// The safety number with `handle`'s trusted key and, when their key changed, with the new untrusted key.
    /// - Throws: `ClientError(.invalidArgument)` when no message has been exchanged with `handle` yet.
    public func safetyNumbers(with handle: String) throws -> (trusted: String, untrusted: String?) {
        let account = try requireAccount()
        guard let contact = try store.contact(handle) else {
            throw ClientError(.invalidArgument, "no contact \(handle) yet: safety numbers exist once you have exchanged a message")
        }
        let own = account.accountIdentityKey.rawRepresentation
        return (SafetyNumber.compute(own, contact.trustedIdentityKey), contact.untrustedIdentityKey.map { SafetyNumber.compute(own, $0) })
    }
}

/// Holds a prepared envelope across retries of one send.
final class PreparedBox: Sendable {
    private let storage = Mutex<PreparedMessage?>(nil)
    init() {}
    var value: PreparedMessage? {
        get { storage.withLock { $0 } }
        set { storage.withLock { $0 = newValue } }
    }
}
