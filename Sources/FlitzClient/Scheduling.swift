import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import GRDB

/// A message scheduled with `flitz send --at` (`protocol/conversations.md` section 8).
public struct ScheduledMessage: Sendable {
    /// 16-byte message id (the id `flitz scheduled cancel` takes, in hex).
    public let messageID: Data
    /// Recipient handle.
    public let to: String
    /// Message text.
    public let text: String
    /// When the relay releases it (`not_before_ms`).
    public let releaseAt: Date
    /// Whether the relay said it holds the envelopes (`SubmitOutcome.scheduled`); false when a relay without
    /// scheduling delivered them at once.
    public let held: Bool
}

extension FlitzClient {
    /// Encrypts `text` for `handle` now and hands the relay envelopes it releases at `releaseAt`
    /// (`protocol/conversations.md` section 8): one single-use PQXDH session per recipient device and per own
    /// other device (fresh bundles; `Content.single_use_session`; the sessions are discarded, the conversation's
    /// sessions are untouched), with `not_before_ms`, the cancel token's hash and the unsend token's hash. The
    /// tokens are stored before submitting, so a scheduled message can be cancelled even if the answer was lost.
    /// - Throws: `ClientError(.invalidArgument)` for a time in the past or more than 30 days ahead (this device's
    ///   clock), an empty or too long text; `.identityChanged`; `.refused` (the relay's refusal, including
    ///   `QUEUE_FULL` for 1 000 scheduled envelopes); `.relayUnreachable`.
    public func schedule(to handle: String, text: String, at releaseAt: Date) async throws -> ScheduledMessage {
        let account = try requireAccount()
        try checkOutgoing(text, to: handle, account: account)
        try Self.checkScheduleTime(releaseAt, now: now())
        let messageID = random.bytes(WireConstants.idLength)
        let cancelToken = random.bytes(ConversationTokens.length), unsendToken = random.bytes(ConversationTokens.length)
        let notBefore = Int64((releaseAt.timeIntervalSince1970 * 1000).rounded(.down))
        return try await withAuthenticatedConnection(account) { connection in
            for attempt in 0...Self.maxDeviceRetries {
                let envelopes = try await self.scheduledEnvelopes(
                    on: connection, account: account, to: handle, text: text, messageID: messageID, notBefore: notBefore,
                    cancelToken: cancelToken, unsendToken: unsendToken)
                var submit = WireSubmit()
                submit.envelopes = envelopes
                let answer: WireFrame
                do {
                    answer = try await connection.request(.submit(submit))
                } catch let error as ClientError
                    where (error.kind == .refused(.mismatchedDevices) || error.kind == .refused(.staleDevice)) && attempt < Self.maxDeviceRetries
                {
                    try await self.forgetScheduled(messageID)
                    for mismatch in error.relayError?.deviceMismatches ?? [] {
                        try await self.refreshDeviceList(mismatch.handle, on: connection, account: account, forSending: true) { self.logger.warning("\($0)") }
                    }
                    continue
                } catch {
                    try await self.forgetScheduled(messageID)
                    throw error
                }
                guard case .submitResult(let result) = answer.body, result.outcomes.count == envelopes.count else {
                    throw ClientError(.protocolFailure, "unexpected answer to submit")
                }
                if let failed = result.outcomes.first(where: \.hasError) {
                    try await self.forgetScheduled(messageID)
                    throw ClientError(.refused(failed.error.code), "the relay refused the scheduled message: \(failed.error.message)", relayError: failed.error)
                }
                let held = result.outcomes.allSatisfy(\.scheduled)
                try await self.store.dbQueue.write { db in
                    try db.execute(sql: "UPDATE scheduled_messages SET state = 'scheduled' WHERE message_id = ?", arguments: [messageID])
                    // In this device's history like any sent message (status from receipts after the release; edit,
                    // delete and unsend work on it), at its release time: found missing by a newcomer review.
                    guard let first = envelopes.first(where: { $0.recipientHandle == handle }) else { return }
                    try db.execute(
                        sql: """
                            INSERT OR IGNORE INTO messages (message_id, outgoing, peer, text, envelope_id, status, accepted_at_ms, recipient_device_id,
                                displayed, group_id, kind, unsend_token, unsend_token_hash, original_text, sent_at_ms)
                            VALUES (?, 1, ?, ?, ?, 'sent', ?, ?, 1, 1, 'text', ?, ?, ?, ?)
                            """,
                        arguments: [
                            messageID, handle, text, first.envelopeID, notBefore, Int64(first.recipientDeviceID),
                            ClientStore.sealSecret(unsendToken, .unsendToken, db),
                            ConversationTokens.unsendTokenHash(unsendToken), text, notBefore,
                        ])
                    let seq = db.lastInsertedRowID
                    guard db.changesCount > 0 else { return }
                    for envelope in envelopes {
                        try db.execute(
                            sql: """
                                INSERT OR IGNORE INTO envelopes (envelope_id, message_seq, recipient_handle, recipient_device_id, status)
                                VALUES (?, ?, ?, ?, 'sent')
                                """,
                            arguments: [envelope.envelopeID, seq, envelope.recipientHandle, Int64(envelope.recipientDeviceID)])
                    }
                }
                return ScheduledMessage(messageID: messageID, to: handle, text: text, releaseAt: releaseAt, held: held)
            }
            throw ClientError(.refused(.mismatchedDevices), "the devices of \(handle) (or of your account) kept changing; try again later")
        }
    }

    /// Refuses a release time in the past or beyond `SCHEDULE_HORIZON` (30 days) from `now`.
    /// - Throws: `ClientError(.invalidArgument)` saying which.
    static func checkScheduleTime(_ releaseAt: Date, now: Date) throws {
        guard releaseAt > now else {
            throw ClientError(.invalidArgument, "the time \(Self.iso8601(releaseAt)) is in the past; give a time in the next 30 days")
        }
        guard releaseAt.timeIntervalSince(now) * 1000 <= Double(ConversationTokens.scheduleHorizonMilliseconds) else {
            throw ClientError(.invalidArgument, "the time \(Self.iso8601(releaseAt)) is more than 30 days ahead; messages can be scheduled up to 30 days ahead")
        }
    }

    /// Encrypts the scheduled message on fresh single-use sessions and stores its row (state 'submitting').
    func scheduledEnvelopes(
        on connection: RelayConnection, account: AccountRecord, to handle: String, text: String, messageID: Data, notBefore: Int64,
        cancelToken: Data, unsendToken: Data
    ) async throws -> [WireOutgoingEnvelope] {
        if let contact = try store.contact(handle), contact.untrustedIdentityKey != nil { throw identityChangedError(handle) }
        let fresh = try await newSessions(with: handle, on: connection, account: account, everyDevice: true)
        let ownFresh = try await newSessions(with: account.handle, on: connection, account: account, everyDevice: true)
        let sentAt = Int64(now().timeIntervalSince1970 * 1000)
        let content = MessageContent(messageID: messageID, sentAtMilliseconds: sentAt, body: .text(TextMessage(text)), singleUseSession: true)
        let transcript = MessageContent(
            messageID: messageID, sentAtMilliseconds: sentAt,
            body: .sentTranscript(SentTranscript(destinationHandle: handle, body: .text(TextMessage(text)), unsendToken: unsendToken)),
            singleUseSession: true)
        let random = self.random
        let createdAt = now().timeIntervalSince1970
        return try store.transaction { db in
            guard let contact = try ClientStore.contact(handle, db), contact.untrustedIdentityKey == nil else { throw identityChangedError(handle) }
            var envelopes: [WireOutgoingEnvelope] = []
            for (target, body, sessions) in [(handle, content, fresh), (account.handle, transcript, ownFresh)] {
                for (deviceID, session) in sessions.sorted(by: { $0.key < $1.key }) {
                    guard try ClientStore.mayEncrypt(session, to: target, deviceID: deviceID, account: account, db) else { continue }
                    let trusted = target == account.handle ? account.accountIdentityKey.rawRepresentation : contact.trustedIdentityKey
                    guard ConstantTime.equals(trusted, session.remoteCertificate.accountIdentityKey.rawRepresentation) else {
                        throw identityChangedError(target)
                    }
                    var single = session  // discarded after this one message
                    var envelope = WireOutgoingEnvelope()
                    envelope.envelopeID = random.bytes(WireConstants.idLength)
                    envelope.recipientHandle = target
                    envelope.recipientDeviceID = deviceID
                    envelope.ciphertext = try single.encrypt(body.encoded(), random: random)
                    envelope.group = 1
                    envelope.urgency = Self.urgency(recipient: target, account: account)
                    envelope.notBeforeMs = notBefore
                    envelope.cancelTokenHash = ConversationTokens.cancelTokenHash(cancelToken)
                    envelope.unsendTokenHash = ConversationTokens.unsendTokenHash(unsendToken)
                    envelopes.append(envelope)
                }
            }
            guard envelopes.contains(where: { $0.recipientHandle == handle }) else {
                throw ClientError(.refused(.noPrekeys), "\(handle) has no device this device can send to")
            }
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO scheduled_messages
                        (message_id, peer, text, not_before_ms, cancel_token, unsend_token, envelopes, state, created_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, 'submitting', ?)
                    """,
                arguments: [
                    messageID, handle, text, notBefore, ClientStore.sealSecret(cancelToken, .scheduledCancelToken, db),
                    ClientStore.sealSecret(unsendToken, .scheduledUnsendToken, db), envelopes.count, createdAt,
                ])
            return envelopes
        }
    }

    private static func iso8601(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date)
    }

    private func forgetScheduled(_ messageID: Data) async throws {
        try await store.dbQueue.write { db in
            try db.execute(sql: "DELETE FROM scheduled_messages WHERE message_id = ? AND state = 'submitting'", arguments: [messageID])
        }
    }

    /// Scheduled messages not yet released by this device's clock and not cancelled, soonest first (including
    /// ones whose Submit answer was lost: they may be held by the relay).
    public func scheduledMessages() throws -> [ScheduledMessage] {
        _ = try requireAccount()
        let at = Int64(now().timeIntervalSince1970 * 1000)
        return try store.dbQueue.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT message_id, peer, text, not_before_ms, state FROM scheduled_messages
                    WHERE state IN ('submitting', 'scheduled') AND not_before_ms > ? ORDER BY not_before_ms, created_at
                    """,
                arguments: [at]
            ).map { row in
                ScheduledMessage(
                    messageID: row["message_id"], to: row["peer"], text: row["text"],
                    releaseAt: Date(timeIntervalSince1970: Double(row["not_before_ms"] as Int64) / 1000), held: row["state"] as String == "scheduled")
            }
        }
    }

    /// Cancels a scheduled message before its release (`CancelScheduled`); returns how many envelopes the relay
    /// removed.
    /// - Throws: `ClientError(.unknownMessage)` when this device scheduled no such message or cancelled it already;
    ///   `.refused(.unknownToken)` when the relay holds none of its envelopes any more (released already);
    ///   `.relayUnreachable`.
    public func cancelScheduled(_ messageID: Data) async throws -> Int {
        let account = try requireAccount()
        guard let token = try await store.dbQueue.read({ db in
            try ClientStore.openSecret(
                Data.fetchOne(
                    db, sql: "SELECT cancel_token FROM scheduled_messages WHERE message_id = ? AND state IN ('submitting', 'scheduled')",
                    arguments: [messageID]), .scheduledCancelToken, db)
        })
        else { throw ClientError(.unknownMessage, "no scheduled message with id \(messageID.hexString) (see `flitz scheduled`)") }
        var cancel = WireCancelScheduled()
        cancel.cancelToken = token
        let frame = cancel
        let count: Int
        do {
            count = try await withAuthenticatedConnection(account) { connection in
                guard case .cancelScheduledResult(let result) = try await connection.request(.cancelScheduled(frame)).body else {
                    throw ClientError(.protocolFailure, "unexpected answer to a cancel")
                }
                return Int(result.cancelled)
            }
        } catch let error as ClientError where error.kind == .refused(.unknownToken) {
            throw ClientError(error.kind, "the relay holds no envelope of that message any more: it was released already", relayError: error.relayError)
        }
        try await store.dbQueue.write { db in
            try db.execute(sql: "UPDATE scheduled_messages SET state = 'cancelled' WHERE message_id = ?", arguments: [messageID])
        }
        return count
    }
}
