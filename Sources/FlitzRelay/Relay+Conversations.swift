import FlitzCrypto
import FlitzStore
import FlitzWire
import Foundation

/// The relay's side of `protocol/conversations.md`: the new `Submit` fields (online-only, unsend token hash,
/// scheduled), Unsend, CancelScheduled, the block list and abuse reports (section 11). The relay never logs a token,
/// a block list or a report's contents.
extension Relay {
    /// The `INVALID_ARGUMENT` refusal of one envelope's conversation fields (`conversations.md` 11), or nil.
    static func conversationRefusal(_ envelope: WireOutgoingEnvelope, selectedDevices: Bool, nowMs: Int64) -> RelayError? {
        let length = ConversationTokens.length
        if !envelope.unsendTokenHash.isEmpty, envelope.unsendTokenHash.count != length {
            return RelayError(.invalidArgument, "unsend_token_hash must be empty or \(length) bytes")
        }
        if !envelope.cancelTokenHash.isEmpty, envelope.cancelTokenHash.count != length {
            return RelayError(.invalidArgument, "cancel_token_hash must be empty or \(length) bytes")
        }
        if envelope.onlineOnly {
            if envelope.notBeforeMs != 0 { return RelayError(.invalidArgument, "an online_only envelope cannot be scheduled (not_before_ms)") }
            if !selectedDevices { return RelayError(.invalidArgument, "online_only envelopes need Submit.selected_devices") }
        }
        if envelope.notBeforeMs != 0 {
            if envelope.notBeforeMs > nowMs + ConversationTokens.scheduleHorizonMilliseconds {
                return RelayError(.invalidArgument, "not_before_ms may be at most 30 days ahead")
            }
            if envelope.cancelTokenHash.count != length {
                return RelayError(.invalidArgument, "a scheduled envelope needs a \(length)-byte cancel_token_hash")
            }
        }
        return nil
    }

    /// The recipient handles of `envelopes` (other than the sender's own) whose block list holds `senderHandle`. Used
    /// for online-only envelopes only: stored envelopes are checked in the store's transaction (`conversations.md` 9).
    func blockers(of senderHandle: String, in envelopes: [WireOutgoingEnvelope]) async throws(RelayError) -> Set<String> {
        let handles = Set(envelopes.map(\.recipientHandle).filter { $0 != senderHandle && Handle.isValid($0) })
        do {
            return try await store.blockers(of: senderHandle, among: handles)
        } catch {
            throw internalError(error)
        }
    }

    /// Hands each online-only envelope to its recipient device's live connection, if any (`conversations.md` 6):
    /// a `Deliver` of that one envelope with `online_only` set, outside the queue, the delivery window and the
    /// acknowledgements; nothing is stored, pushed or receipted.
    /// In a cluster, envelopes for devices connected to another node go there through the database (`cluster.md` 3.1).
    func handOnlineOnly(_ envelopes: [WireOutgoingEnvelope], sender: DeviceAddress, nowMs: Int64) async {
        var elsewhere: [(WireEnvelope, DeviceAddress)] = []
        for outgoing in envelopes {
            var envelope = WireEnvelope()
            envelope.envelopeID = outgoing.envelopeID
            envelope.senderHandle = sender.handle
            envelope.senderDeviceID = sender.deviceID
            envelope.recipientDeviceID = outgoing.recipientDeviceID
            envelope.acceptedAtMs = nowMs
            envelope.expiresAtMs = nowMs
            envelope.ciphertext = outgoing.ciphertext
            envelope.onlineOnly = true
            let recipient = DeviceAddress(handle: outgoing.recipientHandle, deviceID: outgoing.recipientDeviceID)
            if !registry.handOnlineOnly(envelope, to: recipient), cluster != nil { elsewhere.append((envelope, recipient)) }
        }
        await handOnlineOnlyInCluster(elsewhere)
    }

    /// Unsend, CancelScheduled, UpdateBlockList, FetchBlockList and SubmitReport; nil for any other frame.
    func handleConversationFrame(requestID: UInt64, body: WireFrame.OneOf_Body, device: DeviceAddress) async throws(RelayError) -> WireFrame? {
        switch body {
        case .unsend(let request):
            return WireFrame(requestID: requestID, body: .unsendResult(try await unsend(request, device: device)))
        case .cancelScheduled(let request):
            return WireFrame(requestID: requestID, body: .cancelScheduledResult(try await cancelScheduled(request, device: device)))
        case .updateBlockList(let request):
            return WireFrame(requestID: requestID, body: .blockList(try await updateBlockList(request, device: device)))
        case .fetchBlockList:
            return WireFrame(requestID: requestID, body: .blockList(try await fetchBlockList(device: device)))
        case .submitReport(let request):
            return WireFrame(requestID: requestID, body: .reportResult(try await submitReport(request, device: device)))
        default:
            return nil
        }
    }

    /// Unsend (`conversations.md` 5).
    func unsend(_ request: WireUnsend, device: DeviceAddress) async throws(RelayError) -> WireUnsendResult {
        guard request.unsendToken.count == ConversationTokens.length else {
            throw RelayError(.invalidArgument, "an unsend token is \(ConversationTokens.length) bytes")
        }
        let records: [UnsendRecord]
        let blobsDeleted: Int
        do {
            let hash = ConversationTokens.unsendTokenHash(request.unsendToken)
            records = try await store.unsend(senderHandle: device.handle, unsendTokenHash: hash, nowMs: clock.nowMs())
            // The account's blobs whose capability carried the hash go too, finished or not (attachments.md 4.5).
            let ids = try await store.blobs(handle: device.handle, unsendTokenHash: hash)
            blobsDeleted = try await deleteBlobs(ids)
            metrics.blobsDeleted("unsend", count: blobsDeleted)
        } catch {
            throw internalError(error)
        }
        guard !records.isEmpty || blobsDeleted > 0 else {
            throw RelayError(.unknownToken, "no envelope or blob of this account carries that unsend token")
        }
        var result = WireUnsendResult()
        result.blobsDeleted = UInt32(clamping: blobsDeleted)
        result.outcomes = records.map { record in
            var outcome = WireUnsendOutcome()
            outcome.envelopeID = record.envelopeID
            outcome.recipientHandle = record.recipient.handle
            outcome.recipientDeviceID = record.recipient.deviceID
            outcome.state = switch record.state {
            case .purged: .purged
            case .alreadyDelivered: .alreadyDelivered
            case .alreadyExpired: .alreadyExpired
            }
            return outcome
        }
        for (state, name) in [(UnsendEnvelopeState.purged, "purged"), (.alreadyDelivered, "already_delivered"), (.alreadyExpired, "already_expired")] {
            metrics.unsent(name, count: records.count { $0.state == state })
        }
        return result
    }

    /// CancelScheduled (`conversations.md` 8).
    func cancelScheduled(_ request: WireCancelScheduled, device: DeviceAddress) async throws(RelayError) -> WireCancelScheduledResult {
        guard request.cancelToken.count == ConversationTokens.length else {
            throw RelayError(.invalidArgument, "a cancel token is \(ConversationTokens.length) bytes")
        }
        let cancelled: Int
        do {
            cancelled = try await store.cancelScheduled(
                senderHandle: device.handle, cancelTokenHash: ConversationTokens.cancelTokenHash(request.cancelToken))
        } catch {
            throw internalError(error)
        }
        guard cancelled > 0 else { throw RelayError(.unknownToken, "no scheduled envelope of this account carries that cancel token") }
        metrics.scheduledCancelled(cancelled)
        var result = WireCancelScheduledResult()
        result.cancelled = UInt32(clamping: cancelled)
        return result
    }

    /// UpdateBlockList (`conversations.md` 9): valid handles, at most 100 of each, never the own handle, at most
    /// 10 000 on the list.
    func updateBlockList(_ request: WireUpdateBlockList, device: DeviceAddress) async throws(RelayError) -> WireBlockList {
        let most = ConversationTokens.maxBlockChangesPerFrame
        guard request.block.count <= most, request.unblock.count <= most else {
            throw RelayError(.invalidArgument, "at most \(most) handles to block and \(most) to unblock per frame")
        }
        guard (request.block + request.unblock).allSatisfy(Handle.isValid) else {
            throw RelayError(.invalidArgument, "handles are 3-32 characters of a-z 0-9 _ .")
        }
        guard !request.block.contains(device.handle) else { throw RelayError(.invalidArgument, "an account cannot block itself") }
        var list = WireBlockList()
        do {
            list.handles = try await store.updateBlockList(
                handle: device.handle, block: request.block, unblock: request.unblock, maxBlocked: ConversationTokens.maxBlocked)
        } catch let error as StoreError where error.code == .blockListFull {
            throw RelayError(.invalidArgument, "a block list holds at most \(ConversationTokens.maxBlocked) handles")
        } catch {
            throw internalError(error)
        }
        return list
    }

    /// FetchBlockList (`conversations.md` 9).
    func fetchBlockList(device: DeviceAddress) async throws(RelayError) -> WireBlockList {
        var list = WireBlockList()
        do {
            list.handles = try await store.blockList(handle: device.handle)
        } catch {
            throw internalError(error)
        }
        return list
    }

    /// SubmitReport (`conversations.md` 10): decodes and checks the report, verifies the signature under the
    /// authenticated device's identity key, applies 10 per hour per account, stores it. Its contents are never logged.
    func submitReport(_ request: WireSubmitReport, device: DeviceAddress) async throws(RelayError) -> WireReportResult {
        guard (1...ConversationTokens.maxReportBytes).contains(request.report.count) else {
            throw RelayError(.invalidArgument, "a report is 1 to \(ConversationTokens.maxReportBytes) bytes")
        }
        guard let report = try? WireAbuseReport(serializedBytes: request.report) else {
            throw RelayError(.invalidArgument, "the report does not decode as an AbuseReport")
        }
        guard (1...ConversationTokens.maxReportedMessages).contains(report.messages.count) else {
            throw RelayError(.invalidArgument, "a report carries 1 to \(ConversationTokens.maxReportedMessages) messages")
        }
        guard report.messages.count(where: \.reported) == 1 else {
            throw RelayError(.invalidArgument, "exactly one message of a report is the reported one")
        }
        guard report.reason.utf8.count <= ConversationTokens.maxReportReasonBytes else {
            throw RelayError(.invalidArgument, "a report's reason is at most \(ConversationTokens.maxReportReasonBytes) bytes")
        }
        guard Handle.isValid(report.reportedHandle),
            report.messages.allSatisfy({ $0.messageID.count == WireConstants.idLength && Handle.isValid($0.authorHandle) })
        else { throw RelayError(.invalidArgument, "a report names a valid handle and 16-byte message ids with valid authors") }
        guard request.signature.count == WireConstants.signatureLength else {
            throw RelayError(.invalidArgument, "the report signature is \(WireConstants.signatureLength) bytes")
        }
        let record: DeviceRecord
        do {
            guard let found = try await store.device(device) else { throw RelayError(.authenticationFailed, "this device was removed") }
            record = found
        } catch {
            throw internalError(error)
        }
        guard let key = try? Ed25519PublicKey(rawRepresentation: record.deviceIdentityKey),
            key.isValidSignature(request.signature, for: ConversationTokens.reportSignaturePayload(request.report))
        else { throw RelayError(.invalidSignature, "the report signature does not verify under this device's identity key") }
        let now = clock.nowMs()
        let stored = StoredReport(reportID: random.bytes(WireConstants.idLength), reporter: device, receivedAtMs: now, report: request.report, signature: request.signature)
        let retry: Int64?
        do {
            // Counted from the stored reports, in the storing transaction: the limit survives restarts.
            retry = try await store.storeReport(stored, limit: Self.reportLimit, windowMs: Self.reportWindowMs)
        } catch {
            throw internalError(error)
        }
        if let retry { throw RelayError(.rateLimited, "at most \(Self.reportLimit) reports per hour", retryAfterMs: retry) }
        metrics.reportStored()
        logger.debug("abuse report stored", metadata: ["relay.report": "\(stored.reportID.map { String(format: "%02x", $0) }.joined())"])
        var result = WireReportResult()
        result.reportID = stored.reportID
        return result
    }

    /// Rows released per store transaction, so that a mass release never holds the writer long.
    static let releaseBatchSize = 200

    /// Releases every scheduled envelope due now (`conversations.md` 8), in transactions of `releaseBatchSize` rows,
    /// applying `relay.maxQueuedEnvelopes` per device (over it: expired, `EXPIRED` receipt): wakes the recipients'
    /// connections and hands wake-ups to the push dispatcher as a fresh Submit does, and wakes senders of expired
    /// ones. Returns the number released. The `ScheduledReleaser` calls it; it is safe to call at any time.
    /// - Throws: `StoreError` when the store fails.
    @discardableResult
    public func releaseScheduled() async throws -> Int {
        var total = 0
        while true {
            let now = clock.nowMs()
            let result = try await store.releaseScheduled(
                nowMs: now, retentionMs: retentionMs, receiptExpiresAtMs: now + retentionMs, queueLimit: configuration.maxQueuedEnvelopes,
                batchSize: Self.releaseBatchSize)
            var wakeUps: [PushCandidate] = []
            for envelope in result.released {
                guard let wakeClass = Self.wakeClass(WireUrgency(rawValue: envelope.urgency) ?? .unspecified), !registry.isConnected(envelope.recipient)
                else { continue }
                wakeUps.append(PushCandidate(device: envelope.recipient, wakeClass: wakeClass, envelopeID: envelope.envelopeID, expiresAtMs: envelope.expiresAtMs))
            }
            registry.wake(Set(result.released.map(\.recipient)).union(result.notifiedSenders))
            push.submitted(wakeUps)
            metrics.scheduledReleased(result.released.count + result.dropped)
            scheduler.record(released: result.released.count, expired: result.expired)
            total += result.released.count
            if !result.more { return total }
        }
    }
}

extension Relay {
    /// Most abuse reports per account per `reportWindowMs` (`conversations.md` 10).
    static let reportLimit = 10
    /// The report limit's window: an hour, milliseconds on the relay's clock.
    static let reportWindowMs: Int64 = 3_600_000
}
