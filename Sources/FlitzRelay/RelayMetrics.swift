import FlitzWire
import Foundation
import Metrics
import Prometheus
import Synchronization

/// The relay's operational metrics (`protocol/relay.md`, "Metrics"), recorded through swift-metrics into a
/// Prometheus registry owned by this relay (not the process-wide bootstrap: tests run several relays in one
/// process). Served as Prometheus text at `GET /metrics`. Counts only: no handle, key or content is a label.
public final class RelayMetrics: Sendable {
    /// This relay's Prometheus registry.
    public let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    /// `flitz_relay_connections`: open WebSocket connections (gauge).
    private let connections: Metrics.Meter
    /// `flitz_relay_envelopes_in_total`: envelopes accepted (durable) from senders.
    private let envelopesIn: Metrics.Counter
    /// `flitz_relay_envelopes_delivered_total`: envelopes sent to recipient devices in Deliver frames
    /// (a redelivery after a lost acknowledgement counts again).
    private let envelopesDelivered: Metrics.Counter
    /// `flitz_relay_envelopes_expired_total`: undelivered envelopes deleted by the expiry sweep.
    private let envelopesExpired: Metrics.Counter
    /// `flitz_relay_commit_seconds`: time of the store write that makes a Submit durable (histogram).
    private let commitLatency: Metrics.Timer
    /// `flitz_relay_queued_items`: envelopes and receipts waiting in device queues, counted at most once per
    /// `queueDepthInterval` and at most `queueDepthLimit` (gauge; -1 before the first count).
    private let queuedItems: Metrics.Meter
    private let errors = Mutex<[WireErrorCode: Metrics.Counter]>([:])
    /// `flitz_relay_push_*_total{provider}` (`protocol/push.md` 10), one counter per event and provider.
    private let pushCounters: [PushMetric: [PushProviderKind: Metrics.Counter]]
    /// `flitz_relay_push_dropped_jobs_total`: wake-up jobs refused because the push dispatcher's queue was full.
    private let pushDroppedJobs: Metrics.Counter
    private let queueDepth: (@Sendable (_ limit: Int) async throws -> Int)?
    /// `flitz_relay_blob_bytes_stored`: bytes of completed blobs, counted at each scrape (gauge; -1 before).
    private let blobBytesStored: Metrics.Meter
    private let blobBytes = Mutex<(@Sendable () async throws -> Int64)?>(nil)
    /// In a cluster, the database's count of held call signals, read for each exposition (`countHeldCallSignals`).
    private let heldCallSignals = Mutex<(@Sendable () async throws -> Int64)?>(nil)
    private let lastQueueCount = Mutex<ContinuousClock.Instant?>(nil)
    /// `flitz_call_signals_held` (gauge) and `flitz_call_signals_expired_total` (`protocol/calls.md` 3.6).
    private let callSignalsHeld: Metrics.Meter
    private let callSignalsExpired: Metrics.Counter
    /// The broker's cumulative expired count already added to `callSignalsExpired`.
    private let callSignalsExpiredSeen = Mutex(0)

    /// Queue depth is counted at most this often (a scrape in between reports the last count).
    static let queueDepthInterval: Duration = .seconds(10)
    /// The queue depth gauge counts at most this many items, so a scrape never scans an unbounded table.
    static let queueDepthLimit = 1_000_000

    /// Metrics of one relay.
    /// - Parameter queueDepth: counts queued items up to a limit (the SQLite store's read-only counter); nil
    ///   leaves `flitz_relay_queued_items` at -1.
    public init(queueDepth: (@Sendable (_ limit: Int) async throws -> Int)? = nil) {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["flitz_relay_commit_seconds"] = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1),
        ]
        self.factory = factory
        self.queueDepth = queueDepth
        connections = Metrics.Meter(label: "flitz_relay_connections", factory: factory)
        connections.set(0)
        envelopesIn = Metrics.Counter(label: "flitz_relay_envelopes_in_total", factory: factory)
        envelopesDelivered = Metrics.Counter(label: "flitz_relay_envelopes_delivered_total", factory: factory)
        envelopesExpired = Metrics.Counter(label: "flitz_relay_envelopes_expired_total", factory: factory)
        commitLatency = Metrics.Timer(label: "flitz_relay_commit_seconds", factory: factory)
        queuedItems = Metrics.Meter(label: "flitz_relay_queued_items", factory: factory)
        queuedItems.set(-1)
        var push: [PushMetric: [PushProviderKind: Metrics.Counter]] = [:]
        for metric in PushMetric.allCases {
            for provider in PushProviderKind.allCases {
                push[metric, default: [:]][provider] = Metrics.Counter(
                    label: metric.rawValue, dimensions: [("provider", provider.rawValue)], factory: factory)
            }
        }
        pushCounters = push
        pushDroppedJobs = Metrics.Counter(label: "flitz_relay_push_dropped_jobs_total", factory: factory)
        blobBytesStored = Metrics.Meter(label: "flitz_relay_blob_bytes_stored", factory: factory)
        blobBytesStored.set(-1)
        callSignalsHeld = Metrics.Meter(label: "flitz_call_signals_held", factory: factory)
        callSignalsHeld.set(0)
        callSignalsExpired = Metrics.Counter(label: "flitz_call_signals_expired_total", factory: factory)
        // Exported from the start, at 0, like the gauge.
        Metrics.Counter(label: "flitz_call_ring_pushes_total", factory: factory).increment(by: 0)
        Metrics.Counter(label: "flitz_turn_credentials_issued_total", factory: factory).increment(by: 0)
    }

    /// Push events counted per provider (`protocol/push.md` 10); raw values are the metric names.
    enum PushMetric: String, CaseIterable {
        /// Wake-ups a push service accepted.
        case sent = "flitz_relay_push_sent_total"
        /// `urgent` envelopes that caused no wake-up because the window was open, and `ring` envelopes over the ring limit.
        case coalesced = "flitz_relay_push_coalesced_total"
        /// Wake-ups not sent because the device connected or the envelope was gone first.
        case skipped = "flitz_relay_push_skipped_total"
        /// Wake-ups given up after their last attempt, or refused without retry.
        case failed = "flitz_relay_push_failed_total"
        /// Endpoints dropped as dead.
        case dropped = "flitz_relay_push_endpoints_dropped_total"
    }

    /// Counts `count` push events of `metric` for `provider`.
    func push(_ metric: PushMetric, _ provider: PushProviderKind, count: Int = 1) {
        if count > 0 { pushCounters[metric]?[provider]?.increment(by: count) }
    }

    /// A wake-up job was refused: the push dispatcher's queue was full (`protocol/push.md` 10).
    func pushJobDropped() { pushDroppedJobs.increment() }

    // MARK: Conversations (`protocol/conversations.md` 11); counts only, never a handle or token.

    /// Counts `count` events of the counter `label` with the given labels (the registry keeps one counter per set).
    private func count(_ label: String, _ dimensions: [(String, String)] = [], by count: Int = 1) {
        guard count > 0 else { return }
        Metrics.Counter(label: label, dimensions: dimensions, factory: factory).increment(by: count)
    }

    /// `flitz_relay_online_only_total`: online-only envelopes accepted, one counter without labels. Deliberately not
    /// split by handed / no connection / blocked: /metrics is public, and a split would let a sender probe one
    /// recipient's presence or block list (`conversations.md` 11).
    func onlineOnly(_ number: Int) { count("flitz_relay_online_only_total", by: number) }

    /// `flitz_relay_unsend_total{state}`: envelopes an unsend found, by `purged`, `already_delivered`, `already_expired`.
    func unsent(_ state: String, count number: Int) { count("flitz_relay_unsend_total", [("state", state)], by: number) }

    /// `flitz_relay_scheduled_released_total`: scheduled envelopes whose release time came and that were released into
    /// a queue or dropped for a block (counted together, so that the metric does not show a block).
    func scheduledReleased(_ number: Int) { count("flitz_relay_scheduled_released_total", by: number) }

    /// `flitz_relay_scheduled_cancelled_total`: scheduled envelopes removed by CancelScheduled.
    func scheduledCancelled(_ number: Int) { count("flitz_relay_scheduled_cancelled_total", by: number) }

    /// `flitz_relay_reports_total`: abuse reports stored.
    func reportStored() { count("flitz_relay_reports_total") }

    // MARK: Calls (`protocol/calls.md` 3.6); aggregate only, never a call id, handle or device.

    /// `flitz_call_signals_total{kind}`: call signals accepted, by `offer`, `answer`, `ice`, `hangup`, `busy` (one per
    /// `SendCallSignal`, however many copies).
    func callSignalAccepted(_ kind: WireCallSignalKind) {
        let name = switch kind {
        case .callOffer: "offer"
        case .callAnswer: "answer"
        case .callIce: "ice"
        case .callHangup: "hangup"
        case .callBusy: "busy"
        case .unspecified, .UNRECOGNIZED: "unknown"
        }
        count("flitz_call_signals_total", [("kind", name)])
    }

    /// `flitz_call_signals_held`: call signal copies in the relay's memory now (held for a device, or about to be
    /// written to its connection); `flitz_call_signals_expired_total`: copies dropped undelivered at their expiry.
    func callSignals(_ counts: CallSignalBroker.Counts) {
        if heldCallSignals.withLock({ $0 == nil }) { callSignalsHeld.set(counts.inMemory) }
        let newlyExpired = callSignalsExpiredSeen.withLock { seen -> Int in
            defer { seen = max(seen, counts.expired) }
            return max(0, counts.expired - seen)
        }
        if newlyExpired > 0 { callSignalsExpired.increment(by: newlyExpired) }
    }

    /// `flitz_call_ring_pushes_total`: ring wake-ups asked for held devices of `CALL_OFFER`s (`calls.md` 3.3).
    func callRingPushes(_ number: Int) { count("flitz_call_ring_pushes_total", by: number) }

    /// `flitz_turn_credentials_issued_total`: TURN credentials issued (`calls.md` 3.5).
    func turnCredentialsIssued() { count("flitz_turn_credentials_issued_total") }

    // MARK: Blob store (`protocol/attachments.md` 4); aggregate counts only, never a handle, blob id or per-user size.

    /// Sets the source of `flitz_relay_blob_bytes_stored` (the store's sum of completed blob sizes).
    func countBlobBytes(with source: @escaping @Sendable () async throws -> Int64) { blobBytes.withLock { $0 = source } }

    /// Makes `flitz_call_signals_held` read `source` (every node's held copies, one aggregate count) at each exposition
    /// instead of following this node's broker (cluster mode, `cluster.md` 4). A failing read keeps the last value.
    func countHeldCallSignals(with source: @escaping @Sendable () async throws -> Int64) { heldCallSignals.withLock { $0 = source } }

    /// `flitz_relay_upload_capabilities_total`: capabilities issued.
    func uploadCapabilityIssued() { count("flitz_relay_upload_capabilities_total") }

    /// `flitz_relay_uploads_created_total`: uploads created (POST 201).
    func uploadCreated() { count("flitz_relay_uploads_created_total") }

    /// `flitz_relay_uploads_completed_total`: uploads that reached their length (blobs now downloadable).
    func uploadCompleted() { count("flitz_relay_uploads_completed_total") }

    /// `flitz_relay_uploads_refused_total{reason}`: upload requests refused, by `token`, `bad_request`, `too_large`,
    /// `quota`, `offset`, `content_type`, `checksum`, `excess`, `version`, `not_found`, `interrupted`.
    func uploadRefused(_ reason: String) { count("flitz_relay_uploads_refused_total", [("reason", reason)]) }

    /// `flitz_relay_upload_bytes_total`: bytes committed by PATCH (and creation-with-upload).
    func uploadBytes(_ number: Int64) { count("flitz_relay_upload_bytes_total", by: Int(clamping: number)) }

    /// `flitz_relay_blob_download_bytes_total`: bytes served by GET /v1/blobs.
    func downloadBytes(_ number: Int) { count("flitz_relay_blob_download_bytes_total", by: number) }

    /// `flitz_relay_blobs_deleted_total{reason}`: uploads and blobs deleted, by `expired`, `terminated`, `unsend`,
    /// `account`.
    func blobsDeleted(_ reason: String, count number: Int) { count("flitz_relay_blobs_deleted_total", [("reason", reason)], by: number) }

    /// A WebSocket connection opened.
    func connectionOpened() { connections.increment() }

    /// A WebSocket connection ended.
    func connectionClosed() { connections.decrement() }

    /// Counts what a frame sent to a client says: errors by code (also per-envelope errors of a SubmitResult),
    /// accepted envelopes, delivered envelopes.
    func sent(_ frame: WireFrame) {
        switch frame.body {
        case .error(let error):
            countError(error.code)
        case .submitResult(let result):
            var accepted = 0
            for outcome in result.outcomes {
                if outcome.hasError { countError(outcome.error.code) } else { accepted += 1 }
            }
            if accepted > 0 { envelopesIn.increment(by: accepted) }
        case .deliver(let deliver):
            // Online-only envelopes were never queued; they count in flitz_relay_online_only_total.
            let queued = deliver.envelopes.count { !$0.onlineOnly }
            if queued > 0 { envelopesDelivered.increment(by: queued) }
        default:
            break
        }
    }

    /// `count` undelivered envelopes expired.
    func expired(_ count: Int) {
        if count > 0 { envelopesExpired.increment(by: count) }
    }

    /// Records the duration of a durable store write that started at `start`.
    func committed(since start: ContinuousClock.Instant) {
        commitLatency.recordNanoseconds(Self.nanoseconds(ContinuousClock.now - start))
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric, after refreshing the queue depth when due.
    public func exposition() async -> String {
        await refreshQueueDepth()
        if let source = blobBytes.withLock({ $0 }), let bytes = try? await source() { blobBytesStored.set(bytes) }
        if let source = heldCallSignals.withLock({ $0 }), let held = try? await source() { callSignalsHeld.set(held) }
        return registry.emitToString()
    }

    private func countError(_ code: WireErrorCode) {
        let counter = errors.withLock { counters in
            if let counter = counters[code] { return counter }
            let counter = Metrics.Counter(label: "flitz_relay_errors_total", dimensions: [("code", Self.name(code))], factory: factory)
            counters[code] = counter
            return counter
        }
        counter.increment()
    }

    private func refreshQueueDepth() async {
        guard let queueDepth else { return }
        let now = ContinuousClock.now
        let due = lastQueueCount.withLock { last -> Bool in
            if let last, now - last < Self.queueDepthInterval { return false }
            last = now
            return true
        }
        guard due else { return }
        if let count = try? await queueDepth(Self.queueDepthLimit) { queuedItems.set(count) }
    }

    /// The proto enum name, e.g. `RATE_LIMITED` (label values stay stable across releases).
    static func name(_ code: WireErrorCode) -> String {
        switch code {
        case .unspecified: "ERROR_CODE_UNSPECIFIED"
        case .malformedFrame: "MALFORMED_FRAME"
        case .unsupportedVersion: "UNSUPPORTED_VERSION"
        case .unknownFrame: "UNKNOWN_FRAME"
        case .frameTooLarge: "FRAME_TOO_LARGE"
        case .notAuthenticated: "NOT_AUTHENTICATED"
        case .authenticationFailed: "AUTHENTICATION_FAILED"
        case .handleTaken: "HANDLE_TAKEN"
        case .invalidHandle: "INVALID_HANDLE"
        case .unknownRecipient: "UNKNOWN_RECIPIENT"
        case .staleDevice: "STALE_DEVICE"
        case .invalidArgument: "INVALID_ARGUMENT"
        case .recoveryFailed: "RECOVERY_FAILED"
        case .alreadyAuthenticated: "ALREADY_AUTHENTICATED"
        case .invalidSignature: "INVALID_SIGNATURE"
        case .envelopeIDConflict: "ENVELOPE_ID_CONFLICT"
        case .noPrekeys: "NO_PREKEYS"
        case .internal: "INTERNAL"
        case .queueFull: "QUEUE_FULL"
        case .prekeyIDReused: "PREKEY_ID_REUSED"
        case .rateLimited: "RATE_LIMITED"
        case .unknownEnvelope: "UNKNOWN_ENVELOPE"
        case .mismatchedDevices: "MISMATCHED_DEVICES"
        case .deviceListRejected: "DEVICE_LIST_REJECTED"
        case .tooManyDevices: "TOO_MANY_DEVICES"
        case .pushProviderUnavailable: "PUSH_PROVIDER_UNAVAILABLE"
        case .unknownToken: "UNKNOWN_TOKEN"
        case .UNRECOGNIZED(let value): "UNRECOGNIZED_\(value)"
        }
    }

    private static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
