import Foundation

/// The relay's storage for conversations (`protocol/conversations.md` 5, 8, 9 and 10): unsend, scheduled envelopes,
/// block lists and abuse reports. Every `RelayStore` conforms. Times are milliseconds since the Unix epoch; every
/// mutating method is one durable transaction.
public protocol ConversationStore: Sendable {
    /// Unsend (`conversations.md` 5), in one transaction: every envelope sent by `senderHandle` whose route carries
    /// `unsendTokenHash` (32 bytes) while the route is kept. Still-queued and still-scheduled ones are deleted (their
    /// ciphertext with them, no receipt) and reported `.purged`, also on a repeated unsend; delivered ones
    /// `.alreadyDelivered`, expired ones (or whose device was removed) `.alreadyExpired`. One dropped because its
    /// recipient blocks the sender (`conversations.md` 9) answers as a queued one would: `.purged` until its expiry,
    /// `.alreadyExpired` at or after it (`nowMs`, milliseconds since the Unix epoch). Empty when none is known.
    func unsend(senderHandle: String, unsendTokenHash: Data, nowMs: Int64) async throws -> [UnsendRecord]

    /// CancelScheduled (`conversations.md` 8): deletes every still-scheduled envelope of `senderHandle` whose cancel
    /// token hash is `cancelTokenHash` (32 bytes); returns how many (0: none left).
    func cancelScheduled(senderHandle: String, cancelTokenHash: Data) async throws -> Int

    /// The earliest `not_before` of a still-scheduled envelope, or nil when none is held.
    func nextScheduledRelease() async throws -> Int64?

    /// Releases up to `batchSize` (at least 1) scheduled envelopes whose `not_before` is at or before `nowMs`, oldest
    /// `not_before` first, in one transaction (the caller repeats while `more`): each gets its queue position now,
    /// `accepted_at` = `nowMs` and `expires_at` = `nowMs` + min(its ttl, `retentionMs`); one whose recipient device is
    /// no longer current, or whose queue already holds `queueLimit` envelopes, becomes expired with an `expired` receipt
    /// (expiring at
    /// `receiptExpiresAtMs`) to its sender device; one whose recipient now blocks its sender is dropped, no receipt.
    /// A scheduled row whose route is gone (swept) is deleted, so that every row `nextScheduledRelease` reports as due
    /// leaves the schedule.
    func releaseScheduled(nowMs: Int64, retentionMs: Int64, receiptExpiresAtMs: Int64, queueLimit: Int, batchSize: Int) async throws -> ScheduledRelease

    /// The block list of `handle` (`conversations.md` 9), ascending.
    func blockList(handle: String) async throws -> [String]

    /// Adds `block` and removes `unblock` (handles, already validated) on the block list of `handle`, in one
    /// transaction; returns the new list, ascending. In the same transaction, the still-queued and still-scheduled
    /// envelopes a newly blocked handle sent to `handle` are dropped (ciphertext deleted, route dropped, no receipt).
    /// - Throws: `.blockListFull` when the list would exceed `maxBlocked` handles (nothing changes).
    func updateBlockList(handle: String, block: [String], unblock: [String], maxBlocked: Int) async throws -> [String]

    /// Those of `recipientHandles` whose block list holds `senderHandle`.
    func blockers(of senderHandle: String, among recipientHandles: Set<String>) async throws -> Set<String>

    /// Stores an abuse report (`conversations.md` 10) unless its reporter's handle already has `limit` reports
    /// received after `report.receivedAtMs - windowMs`, in one transaction (counted from the stored reports, so the
    /// limit survives restarts). Returns nil when stored, else the milliseconds until the oldest of those leaves the
    /// window (at least 1).
    func storeReport(_ report: StoredReport, limit: Int, windowMs: Int64) async throws -> Int64?

    /// Every stored abuse report, oldest first.
    func reports() async throws -> [StoredReport]
}

/// What an unsend found for one envelope (`UnsendState` on the wire).
public enum UnsendEnvelopeState: Int, Hashable, Sendable {
    /// Deleted before delivery (now or by an earlier unsend or cancel); no receipt follows.
    case purged = 1
    /// The recipient device had acknowledged it.
    case alreadyDelivered = 2
    /// It had expired, or its recipient device was removed, first.
    case alreadyExpired = 3
}

/// One envelope an unsend matched.
public struct UnsendRecord: Hashable, Sendable {
    /// 16-byte envelope id.
    public var envelopeID: Data
    /// The envelope's recipient device.
    public var recipient: DeviceAddress
    /// What the unsend found (and did).
    public var state: UnsendEnvelopeState

    /// Creates a record.
    public init(envelopeID: Data, recipient: DeviceAddress, state: UnsendEnvelopeState) {
        self.envelopeID = envelopeID
        self.recipient = recipient
        self.state = state
    }
}

/// One scheduled envelope just released into its recipient's queue.
public struct ReleasedEnvelope: Hashable, Sendable {
    /// 16-byte envelope id.
    public var envelopeID: Data
    /// The recipient device.
    public var recipient: DeviceAddress
    /// The new expiry, milliseconds since the Unix epoch.
    public var expiresAtMs: Int64
    /// `OutgoingEnvelope.urgency` as submitted (its wire number), for the push wake-up.
    public var urgency: Int

    /// Creates a record.
    public init(envelopeID: Data, recipient: DeviceAddress, expiresAtMs: Int64, urgency: Int) {
        self.envelopeID = envelopeID
        self.recipient = recipient
        self.expiresAtMs = expiresAtMs
        self.urgency = urgency
    }
}

extension ConversationStore {
    /// `releaseScheduled` without a queue limit, everything due in one transaction (tests and tools).
    public func releaseScheduled(nowMs: Int64, retentionMs: Int64, receiptExpiresAtMs: Int64) async throws -> ScheduledRelease {
        try await releaseScheduled(nowMs: nowMs, retentionMs: retentionMs, receiptExpiresAtMs: receiptExpiresAtMs, queueLimit: .max, batchSize: .max)
    }
}

/// What `releaseScheduled` did.
public struct ScheduledRelease: Hashable, Sendable {
    /// Envelopes now queued, in release order.
    public var released: [ReleasedEnvelope]
    /// Envelopes whose recipient device was gone: expired.
    public var expired: Int
    /// Sender devices that got an `expired` receipt.
    public var notifiedSenders: Set<DeviceAddress>

    /// Whether the batch was full: more may be due (call again).
    public var more: Bool
    /// Envelopes dropped at release because the recipient blocks the sender (`conversations.md` 9), or already dropped.
    public var dropped: Int

    /// Creates a result.
    public init(released: [ReleasedEnvelope], expired: Int, notifiedSenders: Set<DeviceAddress>, more: Bool = false, dropped: Int = 0) {
        self.released = released
        self.expired = expired
        self.notifiedSenders = notifiedSenders
        self.more = more
        self.dropped = dropped
    }
}

/// An abuse report as stored (`conversations.md` 10). Its `report` bytes hold plaintext the reporter chose to send:
/// never logged.
public struct StoredReport: Hashable, Sendable {
    /// 16-byte relay-assigned id.
    public var reportID: Data
    /// The reporting device.
    public var reporter: DeviceAddress
    /// When the relay received it, milliseconds since the Unix epoch.
    public var receivedAtMs: Int64
    /// The encoded `AbuseReport`, 1 to 262 144 bytes.
    public var report: Data
    /// 64-byte Ed25519 signature of the reporter's device identity key over the report's signature payload.
    public var signature: Data

    /// Creates a record.
    public init(reportID: Data, reporter: DeviceAddress, receivedAtMs: Int64, report: Data, signature: Data) {
        self.reportID = reportID
        self.reporter = reporter
        self.receivedAtMs = receivedAtMs
        self.report = report
        self.signature = signature
    }
}

/// Fixed limits of conversations the store enforces (`conversations.md` 12).
public enum ConversationStoreLimits {
    /// Most scheduled envelopes one account may have waiting (`MAX_SCHEDULED`); beyond it `submit` answers `queueFull`.
    public static let maxScheduledPerAccount = 1_000
    /// Most envelopes of one account one unsend token hash may be carried by (routes kept), so that an `UnsendResult`
    /// always fits a frame; beyond it `submit` answers `.unsendTokenFull` (`conversations.md` 5).
    public static let maxEnvelopesPerUnsendToken = 1_000
}
