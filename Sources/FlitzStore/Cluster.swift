import Foundation

/// What several relay nodes sharing one database tell and ask each other (`protocol/cluster.md`). A relay on
/// SQLite has no cluster (one node); a relay on PostgreSQL gets one from `PostgresRelayStore.cluster(nodeID:)`.
///
/// Nothing here carries ciphertext between nodes in a notification: notices carry ids only (`cluster.md` 3), and
/// the few things that must cross nodes with a body (online-only envelopes, call signals) sit in the database's
/// unlogged tables until the node holding the device takes them.
public protocol RelayCluster: Sendable {
    /// This node's id: 1-64 characters of `[A-Za-z0-9._-]`, unique among the nodes (`cluster.md` 2).
    var nodeID: String { get }

    /// Sends `notices` to every node, this one included (PostgreSQL `NOTIFY` on channel `flitz_relay`, after the
    /// commit of what they announce). Never throws: a lost notice is caught by the periodic queue check.
    func publish(_ notices: [ClusterNotice]) async

    /// Notices published by any node (this one's too), in the order the database delivered them, until the
    /// cluster's service stops. One stream per call; each call starts listening anew.
    func notices() -> AsyncStream<ClusterNotice>

    /// Records this node alive at `nowMs` (epoch milliseconds) and deletes the connection claims of nodes not seen
    /// for `staleAfterMs` (milliseconds), which died without releasing them (`cluster.md` 4); nothing is deleted
    /// when this node's own previous heartbeat is that old too (an outage, not dead nodes).
    /// - Throws: `StoreError.backend` when the database fails.
    func heartbeat(nowMs: Int64, staleAfterMs: Int64) async throws

    /// Makes this node's connection the live one of `device` (`cluster.md` 4): returns its epoch, larger than any
    /// earlier claim's, so every node closes a connection of `device` with a smaller epoch. Nothing is claimed
    /// for a device that no longer exists (removed meanwhile).
    /// - Throws: `StoreError.unknownDevice` when `device` does not exist; `StoreError.backend`.
    func claimConnection(_ device: DeviceAddress, nowMs: Int64) async throws -> Int64

    /// Forgets the claim of `device` if `epoch` is still its live one (a newer connection keeps its claim).
    /// - Throws: `StoreError.backend`.
    func releaseConnection(_ device: DeviceAddress, epoch: Int64) async throws

    /// Repairs this node's claims against the connections it holds (`held`: device and claim epoch of each, the
    /// periodic check's view, `cluster.md` 3.3): deletes this node's claims older than `graceMs` milliseconds
    /// (claimed before `nowMs - graceMs`) that no held connection has (a release that failed), and puts back the
    /// claim of a held connection whose claim was deleted (by a heartbeat that thought this node dead) while its
    /// epoch is still the device's latest and the device exists. A removed device's or a replaced connection's claim
    /// is never put back.
    /// - Throws: `StoreError.backend`.
    func reconcileClaims(_ held: [(device: DeviceAddress, epoch: Int64)], nowMs: Int64, graceMs: Int64) async throws

    /// The live claims (node id and epoch) of `devices` held by nodes seen within the stale limit; devices
    /// without one are absent. Used by push (a device connected to any node is not woken) and by the periodic
    /// check (a connection whose epoch is no longer the live one is closed).
    /// - Throws: `StoreError.backend`.
    func liveClaims(_ devices: [DeviceAddress], nowMs: Int64) async throws -> [DeviceAddress: ConnectionClaim]

    /// Keeps one online-only envelope (`conversations.md` 6) for `device` until `expiresAtMs` for the node
    /// holding its connection; returns its id, to publish in `ClusterNotice.onlineOnly`. `frame` is the
    /// serialized `Envelope` frame body the relay would have sent (ciphertext, never looked into).
    /// - Throws: `StoreError.backend`.
    func putOnlineOnly(device: DeviceAddress, frame: Data, expiresAtMs: Int64) async throws -> Int64

    /// Takes (deletes and returns) the online-only envelope `id` if it is still there and unexpired: exactly one
    /// node gets it.
    /// - Throws: `StoreError.backend`.
    func takeOnlineOnly(id: Int64, nowMs: Int64) async throws -> (device: DeviceAddress, frame: Data)?

    /// Token buckets shared by every node (`cluster.md` 6): takes `cost` tokens from each bucket of `takes`
    /// atomically, or none. Returns 0 when admitted, else the milliseconds until all of them would be (nothing
    /// taken). Each bucket holds up to `burst` tokens and refills at `perMinute` tokens per minute.
    /// - Throws: `StoreError.backend`.
    func takeTokens(_ takes: [TokenTake], nowMs: Int64) async throws -> Int64

    /// Leases the upload `blobID` (16 bytes) to this node's request `holder` until `untilMs`, unless another
    /// unexpired lease holds it: one PATCH at a time per upload across nodes (`attachments.md` 4.3).
    /// - Throws: `StoreError.backend`.
    func acquireUploadLease(blobID: Data, holder: String, nowMs: Int64, untilMs: Int64) async throws -> Bool

    /// Ends `holder`'s lease of `blobID`, if it still holds it.
    /// - Throws: `StoreError.backend`.
    func releaseUploadLease(blobID: Data, holder: String) async throws

    /// The call signals held for devices that have no connection (`calls.md` 3), shared by every node.
    var callSignals: any CallSignalStore { get }

    /// Runs whatever the cluster needs in the background (the LISTEN connection) until cancelled.
    func run() async throws
}

/// One notice between relay nodes (`cluster.md` 3). Ids only: handles, device ids, epochs and row ids.
public enum ClusterNotice: Hashable, Sendable {
    /// Something was queued for these devices (envelopes, receipts, released scheduled envelopes): the node
    /// holding a connection of one of them reads its queue.
    case queued([DeviceAddress])
    /// `device` connected to `node` with `epoch`: any other node closes its older connection of the device.
    case claimed(device: DeviceAddress, node: String, epoch: Int64)
    /// These devices were removed (revoked, recovery, account deleted): every node closes their connections.
    case removed([DeviceAddress])
    /// Online-only envelope `id` waits for `device` (`RelayCluster.takeOnlineOnly`).
    case onlineOnly(device: DeviceAddress, id: Int64)
    /// Call signals wait for `device` (`CallSignalStore.take`).
    case callSignal(DeviceAddress)
    /// Synthetic, never published: this node's listening connection (re)started, so notices sent while it was down
    /// are lost (`cluster.md` 3.2). The receiver runs its periodic check now (3.3). Emitted by `notices()` each time
    /// the LISTEN is established, the first time too; `publish` skips it.
    case resync
}

/// Who holds a device's live connection.
public struct ConnectionClaim: Hashable, Sendable {
    /// The holding node's id.
    public var node: String
    /// The claim's epoch (`RelayCluster.claimConnection`).
    public var epoch: Int64

    /// A claim of `node` with `epoch`.
    public init(node: String, epoch: Int64) {
        self.node = node
        self.epoch = epoch
    }
}

/// One bucket to take from in `RelayCluster.takeTokens`.
public struct TokenTake: Hashable, Sendable {
    /// The bucket: the limit's kind and its subject (a handle, a device, a source address), at most 200 bytes.
    public var key: String
    /// Tokens to take (at least 1).
    public var cost: Int
    /// Refill rate, tokens per minute.
    public var perMinute: Double
    /// Capacity, tokens.
    public var burst: Int

    /// A take of `cost` tokens from bucket `key` refilling at `perMinute` up to `burst`.
    public init(key: String, cost: Int, perMinute: Double, burst: Int) {
        self.key = key
        self.cost = cost
        self.perMinute = perMinute
        self.burst = burst
    }
}

/// One call signal held for a device (`calls.md` 3.2): the relay-visible fields and the serialized
/// `CallSignalDelivery` frame body, ciphertext included, never looked into.
public struct HeldCallSignal: Hashable, Sendable {
    /// The 16-byte call id.
    public var callID: Data
    /// The sending device.
    public var sender: DeviceAddress
    /// The recipient device.
    public var recipient: DeviceAddress
    /// The per-(call, sending device, recipient device) sequence number.
    public var sequence: UInt32
    /// Whether it is an offer (offers are never dropped to make room for other kinds).
    public var isOffer: Bool
    /// When it was accepted and when it expires, epoch milliseconds.
    public var receivedAtMs: Int64
    public var expiresAtMs: Int64
    /// The serialized `CallSignalDelivery` frame body.
    public var delivery: Data

    /// A held signal with every field given.
    public init(
        callID: Data, sender: DeviceAddress, recipient: DeviceAddress, sequence: UInt32, isOffer: Bool, receivedAtMs: Int64,
        expiresAtMs: Int64, delivery: Data
    ) {
        self.callID = callID
        self.sender = sender
        self.recipient = recipient
        self.sequence = sequence
        self.isOffer = isOffer
        self.receivedAtMs = receivedAtMs
        self.expiresAtMs = expiresAtMs
        self.delivery = delivery
    }
}

extension CallSignalStore {
    /// `admitSequence` then `hold`, not atomic: for stores without transactions. `PostgresCallSignalStore` overrides it
    /// with one transaction.
    public func admitAndHold(
        callID: Data, sender: DeviceAddress, recipient: DeviceAddress, sequence: UInt32, nowMs: Int64, rememberUntilMs: Int64,
        _ signals: [HeldCallSignal]
    ) async throws -> Int? {
        guard try await admitSequence(callID: callID, sender: sender, recipient: recipient, sequence: sequence, nowMs: nowMs, rememberUntilMs: rememberUntilMs)
        else { return nil }
        return try await hold(signals, nowMs: nowMs)
    }
}

/// Call signals and their sequence memory in a database shared by relay nodes, with the semantics of the relay's
/// in-memory broker (`calls.md` 3.2): at most 64 held per recipient device and 8 per (sending account, recipient
/// device), the oldest non-offer dropped first, an offer never dropped for another kind; each signal taken once,
/// in order per (call, sender); gone at its expiry.
public protocol CallSignalStore: Sendable {
    /// Whether `sequence` is larger than every sequence seen for (call, sender, recipient) whose memory has not
    /// expired, and if so records it until `rememberUntilMs`. A replay answers false and records nothing.
    /// - Throws: `StoreError.backend`.
    func admitSequence(callID: Data, sender: DeviceAddress, recipient: DeviceAddress, sequence: UInt32, nowMs: Int64, rememberUntilMs: Int64)
        async throws -> Bool

    /// Holds `signals`, applying the caps; returns how many held signals (these or older ones) were dropped.
    /// - Throws: `StoreError.backend`.
    func hold(_ signals: [HeldCallSignal], nowMs: Int64) async throws -> Int

    /// `admitSequence` and then `hold` of `signals` as one unit: a replay answers nil and holds nothing; when holding
    /// fails, the sequence is not recorded either (a client's retry is not a replay). Returns `hold`'s drop count.
    /// - Throws: `StoreError.backend`.
    func admitAndHold(
        callID: Data, sender: DeviceAddress, recipient: DeviceAddress, sequence: UInt32, nowMs: Int64, rememberUntilMs: Int64,
        _ signals: [HeldCallSignal]
    ) async throws -> Int?

    /// Takes (deletes and returns) the unexpired signals held for `device`, oldest first.
    /// - Throws: `StoreError.backend`.
    func take(_ device: DeviceAddress, nowMs: Int64) async throws -> [HeldCallSignal]

    /// Whether an unexpired offer is held for `device` (push rings only for a waiting offer).
    /// - Throws: `StoreError.backend`.
    func isOfferWaiting(_ device: DeviceAddress, nowMs: Int64) async throws -> Bool

    /// Deletes expired signals and sequence memory; returns how many signals.
    /// - Throws: `StoreError.backend`.
    func purge(nowMs: Int64) async throws -> Int
}
