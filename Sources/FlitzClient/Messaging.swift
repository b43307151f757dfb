import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import GRDB
import Logging
import Synchronization

/// An encrypted message ready to submit, kept across retries so a resubmission is byte-identical.
struct PreparedEnvelope: Sendable {
    var messageID: Data
    var envelope: WireOutgoingEnvelope
}

extension FlitzClient {
    /// Longest message text in UTF-8 bytes: the relay's 65 536-byte ciphertext limit minus the largest
    /// session overhead (a PQXDH prekey message with its 1568-byte KEM ciphertext: about 1 900 bytes; header,
    /// nonce, tag, content fields and up to 64 bytes of padding), rounded down.
    public static let maxTextBytes = 63_000

    // MARK: send

    /// Encrypts `text` for `handle` and submits it; returns the 16-byte message id once the relay has
    /// acknowledged the envelope as durably stored. Retries unreachable relays until `timeout`.
    /// - Parameter expiresIn: seconds until the relay deletes it undelivered (nil: the relay's retention).
    /// - Throws: `ClientError`: `.relayUnreachable` (timed out), `.refused`, `.identityChanged`, `.invalidArgument`.
    public func send(to handle: String, text: String, expiresIn: UInt32? = nil, timeout: Duration = .seconds(30)) async throws -> Data {
        let account = try requireAccount()
        try checkOutgoing(text, to: handle, account: account)
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
                        return try await self.send(on: connection, account: account, to: handle, text: text, expiresIn: expiresIn, prepared: prepared)
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

    /// Sends one message on an authenticated connection (used by `send` and `chat`).
    func send(
        on connection: RelayConnection, account: AccountRecord, to handle: String, text: String, expiresIn: UInt32?,
        prepared: PreparedBox = PreparedBox()
    ) async throws -> Data {
        try checkOutgoing(text, to: handle, account: account)
        for attempt in 0..<2 {
            let envelope: PreparedEnvelope
            if let existing = prepared.value {
                // `resendPending` may have submitted it already on this connection.
                if try localStatus(of: existing.messageID) != .pending { return existing.messageID }
                envelope = existing
            } else {
                envelope = try await prepare(on: connection, account: account, to: handle, text: text, expiresIn: expiresIn)
                prepared.value = envelope
                Failpoint.hit("send.afterCommit")
            }
            guard let outcome = try await submitStored([envelope.envelope], on: connection, keepRetryable: false).first else {
                throw ClientError(.protocolFailure, "unexpected answer to submit")
            }
            if outcome.hasError {
                if outcome.error.code == .staleDevice, attempt == 0 {
                    // The recipient's devices changed (for example after a recovery): refetch and re-encrypt.
                    try await store.dbQueue.write { db in
                        try db.execute(sql: "DELETE FROM sessions WHERE handle = ?", arguments: [handle])
                        try db.execute(sql: "DELETE FROM messages WHERE envelope_id = ?", arguments: [envelope.envelope.envelopeID])
                    }
                    prepared.value = nil
                    continue
                }
                throw ClientError(.refused(outcome.error.code), "the relay refused the message: \(outcome.error.message)")
            }
            return envelope.messageID
        }
        throw ClientError(.refused(.staleDevice), "the recipient's devices keep changing; try again")
    }

    /// Resubmits, byte for byte, outgoing envelopes that were encrypted and stored but never acknowledged
    /// (a `flitz` process ended between storing and the relay's answer). Resubmission is idempotent at
    /// the relay. Returns a warning for each the relay now refuses for good (those are given up).
    func resendPending(on connection: RelayConnection) async throws -> [String] {
        let rows = try await store.dbQueue.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT envelope_id, peer, recipient_device_id, expires_in, envelope FROM messages
                    WHERE outgoing = 1 AND status = 'pending' AND envelope IS NOT NULL ORDER BY seq
                    """
            ).map { row -> WireOutgoingEnvelope in
                var envelope = WireOutgoingEnvelope()
                envelope.envelopeID = row["envelope_id"]
                envelope.recipientHandle = row["peer"]
                envelope.recipientDeviceID = UInt32(row["recipient_device_id"] as Int64)
                envelope.ttlSeconds = UInt32(row["expires_in"] as Int64)
                envelope.ciphertext = row["envelope"]
                return envelope
            }
        }
        var warnings: [String] = []
        for start in stride(from: 0, to: rows.count, by: WireConstants.maxEnvelopesPerSubmit) {
            let batch = Array(rows[start..<min(start + WireConstants.maxEnvelopesPerSubmit, rows.count)])
            for (envelope, outcome) in zip(batch, try await submitStored(batch, on: connection, keepRetryable: true))
            where outcome.hasError && !Self.isRetryable(outcome.error.code) {
                warnings.append("an unsent message to \(envelope.recipientHandle) was refused by the relay (\(outcome.error.message)); send it again")
            }
        }
        return warnings
    }

    /// Refusals that may pass by themselves: a full recipient queue, a relay failure.
    private static func isRetryable(_ code: WireErrorCode) -> Bool { code == .queueFull || code == .internal }

    /// Submits envelopes already stored as pending, and records the outcome of each: accepted → `sent`
    /// with the relay's time; refused → the stored envelope is forgotten (given up), except a refusal
    /// that may pass when `keepRetryable` (it stays pending for the next connection).
    func submitStored(
        _ envelopes: [WireOutgoingEnvelope], on connection: RelayConnection, keepRetryable: Bool
    ) async throws -> [WireSubmitOutcome] {
        var submit = WireSubmit()
        submit.envelopes = envelopes
        guard case .submitResult(let result) = try await connection.request(.submit(submit)).body,
            result.outcomes.count == envelopes.count
        else { throw ClientError(.protocolFailure, "unexpected answer to submit") }
        Failpoint.hit("send.afterSubmit")
        try await store.dbQueue.write { db in
            for (envelope, outcome) in zip(envelopes, result.outcomes) {
                if !outcome.hasError {
                    try db.execute(
                        sql: "UPDATE messages SET status = 'sent', accepted_at_ms = ?, envelope = NULL WHERE envelope_id = ? AND status = 'pending'",
                        arguments: [outcome.acceptedAtMs, envelope.envelopeID])
                } else if !(keepRetryable && Self.isRetryable(outcome.error.code)) {
                    try db.execute(sql: "UPDATE messages SET envelope = NULL WHERE envelope_id = ?", arguments: [envelope.envelopeID])
                }
            }
        }
        return result.outcomes
    }

    /// Refuses what the relay would refuse or what makes no sense, before anything is encrypted.
    private func checkOutgoing(_ text: String, to handle: String, account: AccountRecord) throws {
        guard Handle.isValid(handle) else { throw ClientError(.invalidArgument, "invalid handle \"\(handle)\"") }
        guard handle != account.handle else { throw ClientError(.invalidArgument, "you cannot send a message to yourself") }
        guard !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { throw ClientError(.invalidArgument, "the message is empty") }
        guard text.utf8.count <= Self.maxTextBytes else {
            throw ClientError(.invalidArgument, "the message is \(text.utf8.count) bytes; the limit is \(Self.maxTextBytes) bytes of UTF-8 text")
        }
    }

    /// Finds or starts the session with `handle`, encrypts the message, and stores session and message
    /// (status pending) in one transaction before anything is submitted.
    func prepare(
        on connection: RelayConnection, account: AccountRecord, to handle: String, text: String, expiresIn: UInt32?
    ) async throws -> PreparedEnvelope {
        if let contact = try store.contact(handle), contact.untrustedIdentityKey != nil {
            throw identityChangedError(handle)
        }
        // A new session needs the network (the bundle); everything after happens in one transaction.
        var fresh: (deviceID: UInt32, session: Session)?
        if try store.sessions(with: handle).first(where: \.active) == nil {
            let bundle = try await fetchBundle(on: connection, handle: handle)
            try checkIdentity(handle, accountIdentityKey: bundle.certificate.accountIdentityKey.rawRepresentation)
            fresh = (bundle.deviceID, try Session.initiate(identity: account.device, bundle: bundle, random: random))
        }
        let messageID = random.bytes(WireConstants.idLength)
        let content = MessageContent(
            messageID: messageID, sentAtMilliseconds: Int64(Date().timeIntervalSince1970 * 1000), body: .text(text))
        let envelopeID = random.bytes(WireConstants.idLength)
        let random = self.random
        let newSession = fresh
        let envelope = try store.transaction(failpoint: "send.afterEncrypt") { db -> WireOutgoingEnvelope in
            // Re-read inside the transaction: another process may have advanced the session meanwhile.
            guard let found = try ClientStore.sessions(with: handle, db).first(where: \.active).map({ ($0.deviceID, $0.session) })
                ?? newSession
            else { throw ClientError(.protocolFailure, "no session with \(handle)") }
            let deviceID = found.0
            var session = found.1
            // Re-check trust inside the transaction: another process may have seen a key change meanwhile.
            let contact = try ClientStore.contact(handle, db)
            guard let contact, contact.untrustedIdentityKey == nil,
                ConstantTime.equals(contact.trustedIdentityKey, session.remoteCertificate.accountIdentityKey.rawRepresentation)
            else { throw identityChangedError(handle) }
            let ciphertext = try session.encrypt(content.encoded(), random: random)
            try ClientStore.save(session, handle: handle, deviceID: deviceID, makeActive: true, db)
            try db.execute(
                sql: """
                    INSERT INTO messages (message_id, outgoing, peer, text, envelope_id, envelope, expires_in, status, recipient_device_id)
                    VALUES (?, 1, ?, ?, ?, ?, ?, 'pending', ?)
                    """,
                arguments: [messageID, handle, text, envelopeID, ciphertext, Int64(expiresIn ?? 0), Int64(deviceID)])
            var outgoing = WireOutgoingEnvelope()
            outgoing.envelopeID = envelopeID
            outgoing.recipientHandle = handle
            outgoing.recipientDeviceID = deviceID
            outgoing.ttlSeconds = expiresIn ?? 0
            outgoing.ciphertext = ciphertext
            return outgoing
        }
        return PreparedEnvelope(messageID: messageID, envelope: envelope)
    }

    func fetchBundle(on connection: RelayConnection, handle: String) async throws -> PreKeyBundle {
        var fetch = WireFetchPreKeyBundle()
        fetch.handle = handle
        guard case .prekeyBundle(let wire) = try await connection.request(.fetchPrekeyBundle(fetch)).body,
            let device = wire.devices.first
        else { throw ClientError(.refused(.noPrekeys), "\(handle) has no devices to send to") }
        let unverified = UnverifiedPreKeyBundle(
            deviceID: device.deviceID, accountIdentityKey: wire.accountIdentityKey, deviceIdentityKey: device.deviceIdentityKey,
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

    private func identityChangedError(_ handle: String) -> ClientError {
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
    /// - Throws: `ClientError(.invalidArgument)` when nothing changed, or the number does not match.
    public func trust(_ handle: String, expectedSafetyNumber: String? = nil) async throws -> String {
        let account = try requireAccount()
        guard let contact = try store.contact(handle) else {
            throw ClientError(.invalidArgument, "no contact \(handle) yet: their key is trusted when you first exchange a message")
        }
        guard let pending = contact.untrustedIdentityKey else {
            throw ClientError(.invalidArgument, "the identity key of \(handle) has not changed; nothing to trust")
        }
        let number = SafetyNumber.compute(account.account.publicKey.rawRepresentation, pending)
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
        let own = account.account.publicKey.rawRepresentation
        return (SafetyNumber.compute(own, contact.trustedIdentityKey), contact.untrustedIdentityKey.map { SafetyNumber.compute(own, $0) })
    }
}

/// Holds a prepared envelope across retries of one send.
final class PreparedBox: Sendable {
    private let storage = Mutex<PreparedEnvelope?>(nil)
    init() {}
    var value: PreparedEnvelope? {
        get { storage.withLock { $0 } }
        set { storage.withLock { $0 = newValue } }
    }
}
