import FlitzCrypto
import FlitzStore
import FlitzWire
import Foundation
import Logging
import NIOSSL
import Synchronization

/// The relay's request logic over a `RelayStore` (`protocol/relay.md`, "Requests"). It sees only
/// what the wire protocol exposes: handles, device ids, public keys, envelope ids, sizes and times,
/// never message content. One instance serves every connection; it is safe to share.
public final class Relay: Sendable {
    /// The storage behind this relay.
    public let store: any RelayStore
    /// The configuration it was built with.
    public let configuration: RelayConfiguration
    let clock: any RelayClock
    let random: any RandomSource
    let registry: ConnectionRegistry
    let logger: Logger
    /// Token buckets checked before each request (`RateLimiter.swift`).
    let limiter: RateLimiter
    /// This relay's metrics, served at `GET /metrics`.
    public let metrics: RelayMetrics
    /// Sends push wake-ups in the background (`protocol/push.md` 5); one of the relay's services.
    let push: PushDispatcher
    /// The scheduled-envelope releaser's timer and wake-up (`ScheduledReleaser`, `conversations.md` 8).
    let scheduler = ScheduleTimer()
    /// Where blob bytes live (`attachments.md` 4.5); metadata is in `store`.
    public let blobs: any BlobByteStore
    /// One PATCH (or creation-with-upload) at a time per upload.
    let uploadLocks = UploadLocks()
    /// Cluster mode: upload leases this node took, and PATCHes that found their upload's lease held by another node
    /// and waited (each counted once), for tests and diagnostics (`Relay+Cluster.swift`).
    let uploadLeaseEvents = Mutex<(acquired: Int, waited: Int)>((0, 0))
    /// Call signals held in memory until delivered or expired (`calls.md` 3); in a cluster only which of this node's
    /// connections take call signals (the signals themselves are in `cluster.callSignals`).
    let calls: CallSignalBroker
    /// The cluster this relay is a node of (`protocol/cluster.md`; `Relay+Cluster.swift`); nil on SQLite.
    let cluster: RelayClusterMode?
    /// Notices for the other nodes, published in order by the cluster service.
    let outbox: NoticeOutbox

    /// A relay over `store`. Nothing runs until its services run (see `buildRelay`).
    /// - Parameters:
    ///   - pushTrustRoots: `push.caFile`'s CA certificates, trusted for push services beside the system's.
    ///   - vapidKeyPEM: the relay's VAPID P-256 private key, PEM (`push.vapidKey`, or the one kept in the store);
    ///     empty: no wake-up is sent.
    ///   - apns: APNs credentials (`push.apns.*`); nil: APNs is unavailable.
    ///   - fcm: FCM credentials (`push.fcm.*`); nil: FCM is unavailable.
    ///   - blobs: where blob bytes live (`FileBlobStorage` in `blob.dir`).
    ///   - cluster: set when this relay is one node of several on PostgreSQL (`protocol/cluster.md`).
    public init(
        store: any RelayStore, blobs: any BlobByteStore, configuration: RelayConfiguration, clock: any RelayClock, random: any RandomSource = SystemRandom(), logger: Logger,
        metrics: RelayMetrics = RelayMetrics(), pushTrustRoots: [NIOSSLCertificate] = [], vapidKeyPEM: String = "", apns: APNsConfiguration? = nil,
        fcm: FCMConfiguration? = nil, cluster: RelayClusterMode? = nil
    ) {
        self.cluster = cluster
        self.limiter = RateLimiter(configuration.rateLimits)
        self.blobs = blobs
        self.metrics = metrics
        self.store = store
        self.configuration = configuration
        self.clock = clock
        self.random = random
        self.logger = logger
        let outbox = NoticeOutbox()
        self.outbox = outbox
        var publish: (@Sendable ([ClusterNotice]) -> Void)?
        if cluster != nil { publish = { notices in outbox.post(notices) } }
        let registry = ConnectionRegistry(publish: publish)
        self.registry = registry
        let calls = CallSignalBroker(onChange: { metrics.callSignals($0) })
        self.calls = calls
        let isConnected: @Sendable (DeviceAddress) async -> Bool
        let isCallSignalWaiting: @Sendable (DeviceAddress, UInt64, Int64) async -> Bool
        if let cluster {
            // cluster.md 4, "Push": connected to any node, or a call offer still held in the database.
            let checks = Self.clusterPushChecks(cluster, registry: registry, clock: clock, logger: logger)
            isConnected = checks.0
            isCallSignalWaiting = checks.1
        } else {
            isConnected = { registry.isConnected($0) }
            isCallSignalWaiting = { calls.isWaiting($0, serial: $1, nowMs: $2) }
        }
        push = PushDispatcher(
            store: store, configuration: configuration.push, clock: clock, metrics: metrics, logger: logger, extraTrustRoots: pushTrustRoots,
            credentials: PushCredentials(vapidKeyPEM: vapidKeyPEM, apns: apns, fcm: fcm), isConnected: isConnected,
            isCallSignalWaiting: isCallSignalWaiting, cluster: cluster?.cluster)
        if let count = cluster?.heldCallSignalCount { metrics.countHeldCallSignals { try await count(clock.nowMs()) } }
    }

    /// Runs one expiry sweep now (`relay.md`, "Expiry"): deletes expired envelopes, queues `EXPIRED`
    /// receipts for the undelivered ones and wakes their senders, purges receipts and routes past
    /// retention. The `ExpirySweeper` service calls this every `sweepInterval`; tests call it directly.
    /// - Throws: `StoreError` when the store fails.
    @discardableResult
    public func sweep() async throws -> SweepResult {
        let now = clock.nowMs()
        let result = try await store.sweep(nowMs: now, receiptExpiresAtMs: now + retentionMs)
        try await sweepBlobs(nowMs: now)
        // Call signals live in memory only (calls.md 3.2); expired ones are dropped here at the latest.
        calls.purge(nowMs: now)
        if let cluster { _ = try await cluster.cluster.callSignals.purge(nowMs: now) }
        registry.wake(result.notifiedSenders)
        metrics.expired(result.expiredEnvelopes)
        if result.expiredEnvelopes + result.purgedReceipts + result.purgedRoutes + result.purgedTombstones + result.purgedLinkMessages > 0 {
            logger.debug("sweep", metadata: [
                "relay.expired": "\(result.expiredEnvelopes)", "relay.purgedReceipts": "\(result.purgedReceipts)",
                "relay.purgedRoutes": "\(result.purgedRoutes)", "relay.purgedTombstones": "\(result.purgedTombstones)",
                "relay.purgedLinkMessages": "\(result.purgedLinkMessages)",
            ])
        }
        return result
    }

    /// Whether `handle`/`deviceID` has a live authenticated connection (for tests and metrics).
    public func isConnected(handle: String, deviceID: UInt32) -> Bool {
        registry.isConnected(DeviceAddress(handle: handle, deviceID: deviceID))
    }

    var retentionMs: Int64 { configuration.retention.wholeMilliseconds }

    // MARK: Unauthenticated requests

    /// Register (`relay.md`, "Register").
    func register(_ request: WireRegister, nonce: Data) async throws(RelayError) -> WireRegisterResult {
        guard Handle.isValid(request.handle) else { throw RelayError(.invalidHandle, "handles are 3-32 characters of a-z 0-9 _ .") }
        let device = try validatedDevice(request.device, accountIdentityKey: request.accountIdentityKey)
        try verifyChallenge(request.challengeSignature, handle: request.handle, deviceIdentityKey: device.deviceIdentityKey, nonce: nonce)
        let code = RecoveryCode.generate(random)
        let now = clock.nowMs()
        let deviceID: UInt32
        do {
            deviceID = try await store.register(
                handle: request.handle, accountIdentityKey: request.accountIdentityKey, recoveryCodeHash: RecoveryCode.hash(code),
                device: device, atMs: now)
        } catch let error as StoreError where error.code == .handleTaken {
            // The same keys again: a retry whose answer was lost. Answer it (with a fresh recovery code).
            if let reissued = try await reissue(request.handle, request.accountIdentityKey, device.deviceIdentityKey) {
                return reissued
            }
            throw RelayError(.handleTaken, "this handle is taken")
        } catch let error as StoreError where error.code == .preKeyIDReused {
            throw RelayError(.prekeyIDReused, error.detail)
        } catch {
            throw internalError(error)
        }
        logger.debug("registered", metadata: ["relay.handle": "\(request.handle)", "relay.device": "\(deviceID)"])
        var result = WireRegisterResult()
        result.deviceID = deviceID
        result.recoveryCode = code
        return result
    }

    /// Recover (`relay.md`, "Recover").
    func recover(_ request: WireRecover, nonce: Data) async throws(RelayError) -> WireRegisterResult {
        let failed = RelayError(.recoveryFailed, "unknown handle or wrong recovery code")
        guard request.recoveryCode.utf8.count <= 64 else { throw failed }  // relay.md, "Limits"
        let device = try validatedDevice(request.device, accountIdentityKey: request.accountIdentityKey)
        try verifyChallenge(request.challengeSignature, handle: request.handle, deviceIdentityKey: device.deviceIdentityKey, nonce: nonce)
        guard Handle.isValid(request.handle) else { throw failed }
        let account: AccountRecord
        do {
            guard let found = try await store.account(handle: request.handle) else { throw failed }
            account = found
        } catch let error as RelayError {
            throw error
        } catch {
            throw internalError(error)
        }
        let presentedHash = RecoveryCode.hash(request.recoveryCode)
        guard ConstantTime.equals(presentedHash, account.recoveryCodeHash) else {
            // A retry of a recovery that already happened (its answer was lost) presents the old code.
            if let reissued = try await reissue(request.handle, request.accountIdentityKey, device.deviceIdentityKey) {
                return reissued
            }
            throw failed
        }
        let code = RecoveryCode.generate(random)
        let now = clock.nowMs()
        let result: RecoveryResult
        do {
            result = try await store.recover(
                handle: request.handle, expectedRecoveryCodeHash: account.recoveryCodeHash, accountIdentityKey: request.accountIdentityKey,
                newRecoveryCodeHash: RecoveryCode.hash(code), device: device, atMs: now, receiptExpiresAtMs: now + retentionMs)
        } catch let error as StoreError where error.code == .recoveryFailed {
            throw failed
        } catch let error as StoreError where error.code == .preKeyIDReused {
            throw RelayError(.prekeyIDReused, error.detail)
        } catch {
            throw internalError(error)
        }
        registry.close(result.removedDeviceIDs.map { DeviceAddress(handle: request.handle, deviceID: $0) }, reason: "device removed by account recovery")
        // Recovery deletes the account's blobs and upload capabilities (attachments.md 4.5).
        await purgeBlobs(handle: request.handle)
        registry.wake(result.notifiedSenders)
        logger.debug("recovered", metadata: ["relay.handle": "\(request.handle)", "relay.device": "\(result.deviceID)"])
        var reply = WireRegisterResult()
        reply.deviceID = result.deviceID
        reply.recoveryCode = code
        return reply
    }

    /// Authenticate (`relay.md`, "Authenticate"): returns the device on success.
    func authenticate(_ request: WireAuthenticate, nonce: Data) async throws(RelayError) -> (DeviceAddress, WireAuthenticateResult) {
        let failed = RelayError(.authenticationFailed, "unknown device or bad signature")
        let address = DeviceAddress(handle: request.handle, deviceID: request.deviceID)
        let record: DeviceRecord
        let remaining: PreKeyStock
        let seenReceiptsOff: Bool
        do {
            guard Handle.isValid(request.handle), let found = try await store.device(address) else { throw failed }
            record = found
            remaining = try await store.preKeyStock(device: address)
            seenReceiptsOff = try await store.account(handle: request.handle)?.seenReceiptsOff ?? false
        } catch let error as RelayError {
            throw error
        } catch {
            throw internalError(error)
        }
        guard request.signature.count == WireConstants.signatureLength,
            let key = try? Ed25519PublicKey(rawRepresentation: record.deviceIdentityKey),
            key.isValidSignature(request.signature, for: SignedPayload.authentication(nonce: nonce, handle: request.handle))
        else { throw failed }
        var result = WireAuthenticateResult()
        result.oneTimePrekeysRemaining = UInt32(clamping: remaining.oneTime)
        result.oneTimeKemPrekeysRemaining = UInt32(clamping: remaining.oneTimeKEM)
        result.relayTimeMs = clock.nowMs()
        result.seenReceiptsOff = seenReceiptsOff
        return (address, result)
    }

    // MARK: Authenticated requests

    /// PublishPreKeys (`relay.md`, "Prekeys").
    func publishPreKeys(_ request: WirePublishPreKeys, device: DeviceAddress) async throws(RelayError) -> WirePreKeyStatus {
        guard request.oneTimePrekeys.count <= WireConstants.maxOneTimePreKeysPerFrame else {
            throw RelayError(.invalidArgument, "at most \(WireConstants.maxOneTimePreKeysPerFrame) one-time prekeys per frame")
        }
        guard request.oneTimeKemPrekeys.count <= WireConstants.maxOneTimeKEMPreKeysPerFrame else {
            throw RelayError(.invalidArgument, "at most \(WireConstants.maxOneTimeKEMPreKeysPerFrame) one-time KEM prekeys per frame")
        }
        let oneTime = try request.oneTimePrekeys.map(validatedOneTimePreKey)
        do {
            guard let record = try await store.device(device) else { throw RelayError(.authenticationFailed, "this device was removed") }
            var publication = PreKeyPublication(oneTimePreKeys: oneTime)
            if request.hasSignedPrekey {
                publication.signedPreKey = try validatedSignedPreKey(request.signedPrekey, deviceIdentityKey: record.deviceIdentityKey)
            }
            if request.hasLastResortKemPrekey {
                publication.lastResortKEMPreKey = try validatedKEMPreKey(
                    request.lastResortKemPrekey, lastResort: true, deviceIdentityKey: record.deviceIdentityKey)
            }
            publication.oneTimeKEMPreKeys = try request.oneTimeKemPrekeys.map { key throws(RelayError) in
                try validatedKEMPreKey(key, lastResort: false, deviceIdentityKey: record.deviceIdentityKey)
            }
            let remaining = try await store.publishPreKeys(
                device: device, publication,
                limits: PreKeyStockLimits(oneTime: WireConstants.maxOneTimePreKeysStored, oneTimeKEM: WireConstants.maxOneTimeKEMPreKeysStored))
            var status = WirePreKeyStatus()
            status.oneTimePrekeysRemaining = UInt32(clamping: remaining.oneTime)
            status.oneTimeKemPrekeysRemaining = UInt32(clamping: remaining.oneTimeKEM)
            return status
        } catch let error as RelayError {
            throw error
        } catch let error as StoreError where error.code == .preKeyStockFull {
            throw RelayError(
                .invalidArgument,
                "a device keeps at most \(WireConstants.maxOneTimePreKeysStored) one-time prekeys and \(WireConstants.maxOneTimeKEMPreKeysStored) one-time KEM prekeys")
        } catch let error as StoreError where error.code == .preKeyIDReused {
            throw RelayError(.prekeyIDReused, error.detail)
        } catch {
            throw internalError(error)
        }
    }

    /// FetchPreKeyBundle (`relay.md`, "FetchPreKeyBundle"): the listed devices when a device list is stored
    /// (restricted to `device_ids` when given), each consuming one one-time prekey of each kind.
    func fetchPreKeyBundle(_ request: WireFetchPreKeyBundle) async throws(RelayError) -> WirePreKeyBundle {
        let unknown = RelayError(.unknownRecipient, "no such handle")
        guard Handle.isValid(request.handle) else { throw unknown }
        let bundle: PreKeyBundleRecord
        do {
            let deviceIDs = request.deviceIds.isEmpty ? nil : request.deviceIds
            guard let found = try await store.takePreKeyBundle(handle: request.handle, deviceIDs: deviceIDs) else { throw unknown }
            bundle = found
        } catch let error as RelayError {
            throw error
        } catch {
            throw internalError(error)
        }
        guard !bundle.devices.isEmpty || !request.deviceIds.isEmpty else {
            throw RelayError(.noPrekeys, "this handle has no device with a signed prekey")
        }
        var reply = WirePreKeyBundle()
        reply.handle = bundle.handle
        reply.accountIdentityKey = bundle.accountIdentityKey
        if let list = bundle.deviceList { reply.deviceList = Self.wireDeviceList(list) }
        reply.devices = bundle.devices.map { entry in
            var device = WireDeviceBundle()
            device.deviceID = entry.device.address.deviceID
            device.deviceIdentityKey = entry.device.deviceIdentityKey
            device.deviceCertificateSignature = entry.device.deviceCertificateSignature
            var signed = WireSignedPreKey()
            signed.id = entry.device.signedPreKey.id
            signed.publicKey = entry.device.signedPreKey.publicKey
            signed.signature = entry.device.signedPreKey.signature
            device.signedPrekey = signed
            if let oneTime = entry.oneTimePreKey {
                var key = WireOneTimePreKey()
                key.id = oneTime.id
                key.publicKey = oneTime.publicKey
                device.oneTimePrekey = key
            }
            if let kem = entry.kemPreKey {
                var key = WireKEMPreKey()
                key.id = kem.id
                key.publicKey = kem.publicKey
                key.signature = kem.signature
                key.lastResort = kem.lastResort
                device.kemPrekey = key
            }
            return device
        }
        return reply
    }

    /// Submit (`relay.md`, "Submit"): answers only after every accepted envelope is durable.
    func submit(_ request: WireSubmit, sender: DeviceAddress) async throws(RelayError) -> WireSubmitResult {
        guard (1...WireConstants.maxEnvelopesPerSubmit).contains(request.envelopes.count) else {
            throw RelayError(.invalidArgument, "a Submit carries 1 to \(WireConstants.maxEnvelopesPerSubmit) envelopes")
        }
        let now = clock.nowMs()
        let retention = retentionMs
        var outcomes = [WireSubmitOutcome](repeating: WireSubmitOutcome(), count: request.envelopes.count)
        var submissions: [EnvelopeSubmission] = []
        var positions: [Int] = []
        var onlineOnly: [WireOutgoingEnvelope] = []
        let blockedBy = try await blockers(of: sender.handle, in: request.envelopes.filter(\.onlineOnly))
        for (index, envelope) in request.envelopes.enumerated() {
            outcomes[index].envelopeID = envelope.envelopeID
            let refusal: RelayError? =
                if envelope.envelopeID.count != WireConstants.idLength {
                    RelayError(.invalidArgument, "envelope id must be \(WireConstants.idLength) bytes")
                } else if envelope.ciphertext.isEmpty || envelope.ciphertext.count > WireConstants.maxCiphertextBytes {
                    RelayError(.invalidArgument, "ciphertext must be 1 to \(WireConstants.maxCiphertextBytes) bytes")
                } else if !Handle.isValid(envelope.recipientHandle) {
                    RelayError(.unknownRecipient, "no such handle")
                } else {
                    Self.conversationRefusal(envelope, selectedDevices: request.selectedDevices, nowMs: now)
                }
            if let refusal {
                outcomes[index].error = Self.wireError(refusal, envelopeID: envelope.envelopeID)
                continue
            }
            let ttlMs = envelope.ttlSeconds == 0 ? retention : min(Int64(envelope.ttlSeconds) * 1_000, retention)
            if envelope.onlineOnly {
                // conversations.md 6: never stored; handed to the device if connected now; the same answer either way.
                // conversations.md 9: one to an account that blocks the sender is dropped behind that same answer.
                outcomes[index].acceptedAtMs = now
                outcomes[index].expiresAtMs = now
                metrics.onlineOnly(1)
                if !blockedBy.contains(envelope.recipientHandle) { onlineOnly.append(envelope) }
                continue
            }
            // Stored envelopes to an account that blocks the sender go through the store like any other (every
            // check, coverage, idempotency, unsend and cancel); the store keeps a dropped route without ciphertext.
            let scheduled = envelope.notBeforeMs > now
            let start = scheduled ? envelope.notBeforeMs : now
            submissions.append(EnvelopeSubmission(
                envelopeID: envelope.envelopeID,
                recipient: DeviceAddress(handle: envelope.recipientHandle, deviceID: envelope.recipientDeviceID),
                ciphertext: envelope.ciphertext, expiresAtMs: start + ttlMs, routeExpiresAtMs: start + retention, group: envelope.group,
                unsendTokenHash: envelope.unsendTokenHash, notBeforeMs: scheduled ? envelope.notBeforeMs : 0,
                cancelTokenHash: scheduled ? envelope.cancelTokenHash : Data(), ttlMs: ttlMs, urgency: envelope.urgency.rawValue))
            positions.append(index)
        }
        await handOnlineOnly(onlineOnly, sender: sender, nowMs: now)
        var wake = Set<DeviceAddress>()
        var wakeUps: [PushCandidate] = []
        var anyScheduled = false
        if !submissions.isEmpty {
            let results: [SubmissionOutcome]
            let batch: SubmitBatchOutcome
            do {
                let started = ContinuousClock.now
                batch = try await store.submit(
                    sender: sender, envelopes: submissions, atMs: now, queueLimit: configuration.maxQueuedEnvelopes,
                    checkCoverage: !request.selectedDevices)
                metrics.committed(since: started)
            } catch {
                throw internalError(error)
            }
            switch batch {
            case .stored(let stored):
                results = stored
            case .mismatched(let mismatches):
                var error = RelayError(
                    .mismatchedDevices, "the submit does not address exactly the current devices of \(mismatches.map(\.handle).joined(separator: ", ")); nothing was stored")
                error.deviceMismatches = mismatches.map { mismatch in
                    var wire = WireDeviceMismatch()
                    wire.handle = mismatch.handle
                    wire.missingDeviceIds = mismatch.missingDeviceIDs
                    wire.staleDeviceIds = mismatch.staleDeviceIDs
                    return wire
                }
                throw error
            }
            for (submission, (position, result)) in zip(submissions, zip(positions, results)) {
                switch result {
                case .accepted(let acceptedAt, let expiresAt, let newlyQueued):
                    outcomes[position].acceptedAtMs = acceptedAt
                    outcomes[position].expiresAtMs = expiresAt
                    if newlyQueued {
                        wake.insert(submission.recipient)
                        // push.md 5: urgent (or unspecified) and ring envelopes to a device without a connection.
                        if let wakeClass = Self.wakeClass(request.envelopes[position].urgency), !registry.isConnected(submission.recipient) {
                            wakeUps.append(PushCandidate(
                                device: submission.recipient, wakeClass: wakeClass, envelopeID: submission.envelopeID, expiresAtMs: expiresAt))
                        }
                    }
                case .scheduled(let acceptedAt, let expiresAt, let newlyScheduled):
                    outcomes[position].acceptedAtMs = acceptedAt
                    outcomes[position].expiresAtMs = expiresAt
                    outcomes[position].scheduled = true
                    if newlyScheduled { anyScheduled = true }
                case .rejected(let code):
                    let error = switch code {
                    case .unknownRecipient: RelayError(.unknownRecipient, "no such handle")
                    case .staleDevice: RelayError(.staleDevice, "not a current device of this handle")
                    case .envelopeIDConflict: RelayError(.envelopeIDConflict, "envelope id already used by a different submission")
                    case .queueFull: RelayError(.queueFull, "the recipient device has too many undelivered envelopes; try again later")
                    case .unsendTokenFull:
                        RelayError(.invalidArgument, "an unsend token hash may be carried by at most \(ConversationStoreLimits.maxEnvelopesPerUnsendToken) envelopes")
                    default: RelayError(.internal, "the relay failed")
                    }
                    outcomes[position].error = Self.wireError(error, envelopeID: submission.envelopeID)
                }
            }
        }
        registry.wake(wake)
        // After the commit and never awaited: push never delays or fails a Submit (push.md 7).
        push.submitted(wakeUps)
        // A new scheduled envelope may be due before the releaser's current target.
        if anyScheduled { scheduler.poke() }
        var reply = WireSubmitResult()
        reply.outcomes = outcomes
        return reply
    }

    /// The wake-up an envelope of `urgency` asks for (`push.md` 2): none for `silent`; unspecified counts as urgent.
    static func wakeClass(_ urgency: WireUrgency) -> WakeClass? {
        switch urgency {
        case .urgent, .unspecified: .urgent
        case .ring: .ring
        case .silent: nil
        case .UNRECOGNIZED: .urgent
        }
    }

    /// Acknowledge (`relay.md`, "Acknowledge").
    func acknowledge(_ request: WireAcknowledge, device: DeviceAddress) async throws(RelayError) {
        guard request.envelopeIds.count <= WireConstants.maxIDsPerFrame, request.receiptIds.count <= WireConstants.maxIDsPerFrame else {
            throw RelayError(.invalidArgument, "at most \(WireConstants.maxIDsPerFrame) ids of each kind per frame")
        }
        let now = clock.nowMs()
        do {
            // Every envelope id must have been queued for this device (else UNKNOWN_ENVELOPE, nothing applied).
            let senders = try await store.acknowledge(
                device: device, envelopeIDs: request.envelopeIds,
                receiptIDs: request.receiptIds.filter { $0.count == WireConstants.idLength }, atMs: now,
                receiptExpiresAtMs: now + retentionMs)
            registry.wake(senders)
        } catch let error as StoreError where error.code == .unknownEnvelope {
            throw RelayError(
                .unknownEnvelope, "an acknowledged envelope was never queued for this device; nothing was acknowledged",
                envelopeID: error.envelopeID)
        } catch {
            throw internalError(error)
        }
    }

    /// ReportSeen (`relay.md`, "Receipts").
    func reportSeen(_ request: WireReportSeen, device: DeviceAddress) async throws(RelayError) {
        guard request.envelopeIds.count <= WireConstants.maxIDsPerFrame else {
            throw RelayError(.invalidArgument, "at most \(WireConstants.maxIDsPerFrame) ids per frame")
        }
        let now = clock.nowMs()
        do {
            let senders = try await store.reportSeen(
                device: device, envelopeIDs: request.envelopeIds.filter { $0.count == WireConstants.idLength }, atMs: now,
                receiptExpiresAtMs: now + retentionMs)
            registry.wake(senders)
        } catch {
            throw internalError(error)
        }
    }

    /// Budget for one Deliver frame's items, leaving room for the frame's own fields.
    static let deliverByteBudget = WireConstants.maxFrameBytes - 4_096

    /// The next Deliver body for `device`: queue items after `sequence`, at most `limit` (1 to
    /// `WireConstants.maxItemsPerDeliver`; the connection's free delivery window) and at most
    /// `deliverByteBudget` bytes (a 64 KiB ciphertext limit times 100 items would otherwise exceed the
    /// 1 MiB frame limit). Nil when nothing is waiting. `more` is true when further items may be waiting
    /// right away.
    func nextDelivery(
        for device: DeviceAddress, after sequence: Int64, limit: Int = WireConstants.maxItemsPerDeliver
    ) async throws(RelayError) -> (body: WireDeliver, lastSequence: Int64, more: Bool)? {
        let limit = min(max(1, limit), WireConstants.maxItemsPerDeliver)
        let items: [QueuedItem]
        do {
            items = try await store.pendingItems(for: device, afterSequence: sequence, nowMs: clock.nowMs(), limit: limit)
        } catch {
            throw internalError(error)
        }
        guard !items.isEmpty else { return nil }
        var deliver = WireDeliver()
        var bytes = 0
        var lastSequence = sequence
        var included = 0
        for item in items {
            switch item.content {
            case .envelope(let stored):
                // Protobuf overhead per envelope is well under 64 bytes beyond its variable fields.
                let size = stored.ciphertext.count + stored.envelopeID.count + stored.sender.handle.utf8.count + 64
                if included > 0, bytes + size > Self.deliverByteBudget { return (deliver, lastSequence, true) }
                bytes += size
                var envelope = WireEnvelope()
                envelope.envelopeID = stored.envelopeID
                envelope.senderHandle = stored.sender.handle
                envelope.senderDeviceID = stored.sender.deviceID
                envelope.recipientDeviceID = stored.recipientDeviceID
                envelope.acceptedAtMs = stored.acceptedAtMs
                envelope.expiresAtMs = stored.expiresAtMs
                envelope.ciphertext = stored.ciphertext
                deliver.envelopes.append(envelope)
            case .receipt(let stored):
                let size = stored.receiptID.count + stored.envelopeID.count + stored.recipient.handle.utf8.count + 64
                if included > 0, bytes + size > Self.deliverByteBudget { return (deliver, lastSequence, true) }
                bytes += size
                var receipt = WireReceipt()
                receipt.receiptID = stored.receiptID
                receipt.envelopeID = stored.envelopeID
                receipt.kind = WireReceiptKind(rawValue: stored.kind.rawValue) ?? .unspecified
                receipt.atMs = stored.atMs
                receipt.recipientHandle = stored.recipient.handle
                receipt.recipientDeviceID = stored.recipient.deviceID
                deliver.receipts.append(receipt)
            }
            included += 1
            lastSequence = item.sequence
        }
        return (deliver, lastSequence, items.count == limit)
    }

    // MARK: Validation

    func validatedDevice(_ keys: WireDeviceKeys, accountIdentityKey: Data) throws(RelayError) -> NewDevice {
        guard accountIdentityKey.count == WireConstants.publicKeyLength,
            keys.deviceIdentityKey.count == WireConstants.publicKeyLength,
            keys.deviceCertificateSignature.count == WireConstants.signatureLength,
            keys.hasSignedPrekey
        else { throw RelayError(.malformedFrame, "keys must be 32 bytes and signatures 64 bytes; a signed prekey is required") }
        guard keys.oneTimePrekeys.count <= WireConstants.maxOneTimePreKeysPerFrame else {
            throw RelayError(.invalidArgument, "at most \(WireConstants.maxOneTimePreKeysPerFrame) one-time prekeys per frame")
        }
        guard keys.oneTimeKemPrekeys.count <= WireConstants.maxOneTimeKEMPreKeysPerFrame else {
            throw RelayError(.invalidArgument, "at most \(WireConstants.maxOneTimeKEMPreKeysPerFrame) one-time KEM prekeys per frame")
        }
        guard keys.hasLastResortKemPrekey else { throw RelayError(.malformedFrame, "a last-resort KEM prekey is required") }
        let oneTime = try keys.oneTimePrekeys.map(validatedOneTimePreKey)
        guard let accountKey = try? Ed25519PublicKey(rawRepresentation: accountIdentityKey),
            accountKey.isValidSignature(
                keys.deviceCertificateSignature,
                for: SignedPayload.deviceCertificate(accountIdentityKey: accountIdentityKey, deviceIdentityKey: keys.deviceIdentityKey))
        else { throw RelayError(.invalidSignature, "the device certificate signature does not verify") }
        let signed = try validatedSignedPreKey(keys.signedPrekey, deviceIdentityKey: keys.deviceIdentityKey)
        let lastResort = try validatedKEMPreKey(keys.lastResortKemPrekey, lastResort: true, deviceIdentityKey: keys.deviceIdentityKey)
        let oneTimeKEM = try keys.oneTimeKemPrekeys.map { key throws(RelayError) in
            try validatedKEMPreKey(key, lastResort: false, deviceIdentityKey: keys.deviceIdentityKey)
        }
        return NewDevice(
            deviceIdentityKey: keys.deviceIdentityKey, deviceCertificateSignature: keys.deviceCertificateSignature,
            signedPreKey: signed, oneTimePreKeys: oneTime, lastResortKEMPreKey: lastResort, oneTimeKEMPreKeys: oneTimeKEM)
    }

    /// Checks a KEM prekey's sizes, kind and signature; the relay never uses the key itself.
    private func validatedKEMPreKey(_ key: WireKEMPreKey, lastResort: Bool, deviceIdentityKey: Data) throws(RelayError) -> KEMPreKeyRecord {
        guard key.publicKey.count == WireConstants.kemPublicKeyLength, key.signature.count == WireConstants.signatureLength else {
            throw RelayError(.malformedFrame, "a KEM prekey is \(WireConstants.kemPublicKeyLength) bytes with a 64-byte signature")
        }
        guard key.lastResort == lastResort else {
            throw RelayError(.invalidArgument, lastResort ? "the last-resort KEM prekey must be marked last_resort" : "a one-time KEM prekey must not be marked last_resort")
        }
        guard let deviceKey = try? Ed25519PublicKey(rawRepresentation: deviceIdentityKey),
            deviceKey.isValidSignature(key.signature, for: SignedPayload.kemPreKey(id: key.id, lastResort: lastResort, publicKey: key.publicKey))
        else { throw RelayError(.invalidSignature, "the KEM prekey signature does not verify") }
        return KEMPreKeyRecord(id: key.id, publicKey: key.publicKey, signature: key.signature, lastResort: lastResort)
    }

    private func validatedSignedPreKey(_ key: WireSignedPreKey, deviceIdentityKey: Data) throws(RelayError) -> SignedPreKeyRecord {
        guard key.publicKey.count == WireConstants.publicKeyLength, key.signature.count == WireConstants.signatureLength else {
            throw RelayError(.malformedFrame, "a signed prekey is 32 bytes with a 64-byte signature")
        }
        guard let deviceKey = try? Ed25519PublicKey(rawRepresentation: deviceIdentityKey),
            deviceKey.isValidSignature(key.signature, for: key.publicKey)
        else { throw RelayError(.invalidSignature, "the signed prekey signature does not verify") }
        return SignedPreKeyRecord(id: key.id, publicKey: key.publicKey, signature: key.signature)
    }

    private func validatedOneTimePreKey(_ key: WireOneTimePreKey) throws(RelayError) -> OneTimePreKeyRecord {
        guard key.publicKey.count == WireConstants.publicKeyLength else {
            throw RelayError(.malformedFrame, "a one-time prekey is 32 bytes")
        }
        return OneTimePreKeyRecord(id: key.id, publicKey: key.publicKey)
    }

    func verifyChallenge(_ signature: Data, handle: String, deviceIdentityKey: Data, nonce: Data) throws(RelayError) {
        guard signature.count == WireConstants.signatureLength else {
            throw RelayError(.malformedFrame, "the challenge signature must be 64 bytes")
        }
        guard let key = try? Ed25519PublicKey(rawRepresentation: deviceIdentityKey),
            key.isValidSignature(signature, for: SignedPayload.authentication(nonce: nonce, handle: handle))
        else { throw RelayError(.invalidSignature, "the challenge signature does not verify") }
    }

    /// Answers a repeated `Register` or `Recover` by the device that call created, while it is still the
    /// handle's only device: same account identity key and the same device identity key (both proven by the
    /// request's signatures). Issues a new recovery code; nil otherwise, in particular for a linked device,
    /// which must never learn the recovery code (it would let it take the handle over).
    private func reissue(_ handle: String, _ accountIdentityKey: Data, _ deviceIdentityKey: Data) async throws(RelayError) -> WireRegisterResult? {
        let code = RecoveryCode.generate(random)
        do {
            guard let deviceID = try await store.reissueRegistration(
                handle: handle, accountIdentityKey: accountIdentityKey, deviceIdentityKey: deviceIdentityKey,
                recoveryCodeHash: RecoveryCode.hash(code))
            else { return nil }
            var result = WireRegisterResult()
            result.deviceID = deviceID
            result.recoveryCode = code
            return result
        } catch {
            throw internalError(error)
        }
    }

    func internalError(_ error: any Error) -> RelayError {
        if let error = error as? RelayError { return error }
        // The device was removed (recovery) while this connection was authenticated.
        if let error = error as? StoreError, error.code == .unknownDevice {
            return RelayError(.authenticationFailed, "this device was removed")
        }
        logger.error("store failure", metadata: ["error": "\(error)"])
        return RelayError(.internal, "the relay failed; retry later")
    }

    static func wireError(_ error: RelayError, envelopeID: Data) -> WireError {
        var wire = WireError()
        wire.code = error.code
        wire.message = error.message
        wire.envelopeID = envelopeID
        return wire
    }
}

/// Recovery codes (`relay.md`, "Recovery codes"): 20 characters of the RFC 4648 base32 alphabet
/// (100 bits) from the system CSPRNG. The relay stores only SHA-256 of the normalised code.
enum RecoveryCode {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)
    static let length = 20

    /// A fresh code. 256 is a multiple of 32, so `byte & 31` is uniform.
    static func generate(_ random: any RandomSource) -> String {
        String(decoding: random.bytes(length).map { alphabet[Int($0 & 31)] }, as: UTF8.self)
    }

    /// SHA-256 of the code upper-cased with spaces and dashes removed, as UTF-8.
    static func hash(_ code: String) -> Data {
        let normalised = code.uppercased().filter { $0 != " " && $0 != "-" }
        return SHA256.hash(Data(normalised.utf8))
    }
}
