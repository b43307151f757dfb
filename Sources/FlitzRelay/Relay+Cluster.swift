import FlitzStore
import FlitzWire
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// What a relay needs to be one node of several sharing one PostgreSQL database (`protocol/cluster.md`), beside its
/// store: the cluster itself (notices, claims, shared rows), a query of the devices' queue heads for the periodic
/// check (3.3), and the check's interval.
public struct RelayClusterMode: Sendable {
    /// The nodes' shared state and notices (`PostgresRelayStore.cluster(nodeID:)`).
    public let cluster: any RelayCluster
    /// For each device given, the highest queue sequence ever assigned to it (devices without one are absent), in one
    /// query for all (`cluster.md` 3.3 and 5).
    public let queueHeads: @Sendable ([DeviceAddress]) async throws -> [DeviceAddress: Int64]
    /// Which of the devices given (at `nowMs`) have call signals held, in one query for all (`cluster.md` 3.3); nil:
    /// every connection that takes call signals looks for itself (one query each).
    public let heldCallSignals: (@Sendable ([DeviceAddress], Int64) async throws -> Set<DeviceAddress>)?
    /// The periodic check's interval (`cluster.checkSeconds`); a node unseen for 3 of them is dead (`cluster.md` 4).
    public let checkInterval: Duration
    /// How many call signal copies all nodes hold (unexpired at the given ms), for `flitz_call_signals_held`; nil: the
    /// gauge shows this node's in-memory broker.
    public let heldCallSignalCount: (@Sendable (Int64) async throws -> Int64)?

    /// A cluster mode of `cluster`, checking every `checkInterval` with `queueHeads` and `heldCallSignals`.
    public init(
        cluster: any RelayCluster, checkInterval: Duration,
        heldCallSignals: (@Sendable ([DeviceAddress], Int64) async throws -> Set<DeviceAddress>)? = nil,
        heldCallSignalCount: (@Sendable (Int64) async throws -> Int64)? = nil,
        queueHeads: @escaping @Sendable ([DeviceAddress]) async throws -> [DeviceAddress: Int64]
    ) {
        self.cluster = cluster
        self.checkInterval = checkInterval
        self.heldCallSignals = heldCallSignals
        self.heldCallSignalCount = heldCallSignalCount
        self.queueHeads = queueHeads
    }
}

/// Notices posted (after their commits) for the other nodes, published in posting order by `ClusterService`.
final class NoticeOutbox: Sendable {
    let stream: AsyncStream<[ClusterNotice]>
    private let continuation: AsyncStream<[ClusterNotice]>.Continuation

    init() {
        (stream, continuation) = AsyncStream.makeStream(of: [ClusterNotice].self)
    }

    /// Queues `notices` for publishing; never waits.
    func post(_ notices: [ClusterNotice]) {
        if !notices.isEmpty { continuation.yield(notices) }
    }
}

/// A cluster node's background work (`cluster.md` 3), one service of the relay's group, started before the server:
/// runs the cluster's LISTEN connection, publishes the relay's notices in order, acts on every notice received, and runs
/// the periodic check (3.3) at start and then every `cluster.checkSeconds` (`checkTimer` replaces the wait in tests).
public final class ClusterService: Service, CustomStringConvertible {
    let relay: Relay
    let mode: RelayClusterMode
    private let timer: Mutex<@Sendable (Duration) async throws -> Void>

    /// The service of `relay`, which must have been built with a cluster mode.
    public init(relay: Relay, mode: RelayClusterMode) {
        self.relay = relay
        self.mode = mode
        timer = Mutex({ duration in try await Task.sleep(for: duration) })
    }

    /// "ClusterService", for lifecycle logs.
    public var description: String { "ClusterService" }

    /// What the periodic check waits on between two runs; tests replace it (before `run`) to run checks on their own
    /// events instead of on time. Default: sleeps for the given interval.
    public var checkTimer: @Sendable (Duration) async throws -> Void {
        get { timer.withLock { $0 } }
        set { timer.withLock { $0 = newValue } }
    }

    /// Runs until graceful shutdown or cancellation. Failures of a check are logged and retried at the next one.
    public func run() async throws {
        let relay = self.relay
        let mode = self.mode
        let wait = checkTimer
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    do {
                        try await mode.cluster.run()
                    } catch {
                        if !Task.isCancelled { relay.logger.error("cluster listener failed", metadata: ["error": "\(error)"]) }
                    }
                }
                group.addTask {
                    for await notices in relay.outbox.stream {
                        if Task.isCancelled { break }
                        await mode.cluster.publish(notices)
                    }
                }
                group.addTask {
                    for await notice in mode.cluster.notices() {
                        if Task.isCancelled { break }
                        await relay.clusterNoticeReceived(notice)
                    }
                }
                group.addTask {
                    while !Task.isCancelled {
                        await relay.clusterCheck()
                        do {
                            try await wait(mode.checkInterval)
                        } catch {
                            break
                        }
                    }
                }
            }
        }
    }
}

extension Relay {
    /// Acts on one notice of another node (or of this one), `cluster.md` 3.1.
    func clusterNoticeReceived(_ notice: ClusterNotice) async {
        guard let cluster else { return }
        switch notice {
        case .queued(let devices):
            registry.wakeLocally(devices)
        case .claimed(let device, _, let epoch):
            registry.closeOlder(device, than: epoch, reason: "replaced by a newer connection of this device")
        case .removed(let devices):
            registry.closeLocally(devices, reason: "device removed")
        case .onlineOnly(let device, let id):
            guard registry.isConnected(device) else { return }
            do {
                guard let (_, frame) = try await cluster.cluster.takeOnlineOnly(id: id, nowMs: clock.nowMs()) else { return }
                let envelope = try WireEnvelope(serializedBytes: frame)
                _ = registry.handOnlineOnly(envelope, to: device)
            } catch {
                logger.error("online-only hand-over failed", metadata: ["error": "\(error)"])
            }
        case .callSignal(let device):
            calls.wakeAttached(device)
        case .resync:
            // The listening connection was (re)established: notices may have been lost meanwhile (`cluster.md` 3.2).
            await clusterCheck()
        }
    }

    /// The periodic check (`cluster.md` 3.3), one query per kind for all of this node's connections: records this node
    /// alive, wakes connections whose device has queue items past what they sent, closes connections whose claim is
    /// gone or newer elsewhere, and has connections that take call signals take the held ones. Failures are logged.
    public func clusterCheck() async {
        guard let cluster else { return }
        let now = clock.nowMs()
        do {
            try await cluster.cluster.heartbeat(nowMs: now, staleAfterMs: 3 * cluster.checkInterval.wholeMilliseconds)
            try await reconcileClaimsInCluster(cluster, nowMs: now)
            let local = registry.localConnections()
            guard !local.isEmpty else { return }
            let devices = local.map(\.device)
            let heads = try await cluster.queueHeads(devices)
            // Only connections whose device's head grew past what they sent and past where they last found nothing:
            // an idle connection is not made to read its (empty) queue at every check (cluster.md 3.3).
            var woken: [DeviceAddress] = []
            for connection in local {
                let head = heads[connection.device] ?? 0
                guard head > max(connection.sentThrough, connection.idleThrough) else { continue }
                connection.progress?.checkWoke(atHead: head)
                woken.append(connection.device)
            }
            registry.wakeLocally(woken)
            let claims = try await cluster.cluster.liveClaims(devices, nowMs: now)
            for connection in local {
                let claim = claims[connection.device]
                let current = claim.map { $0.epoch == connection.epoch && $0.node == cluster.cluster.nodeID } ?? false
                if !current {
                    // No live claim at all (reaped, or the device removed) is not a takeover: say which it is.
                    registry.closeOlder(
                        connection.device, than: .min, connectionID: connection.connectionID,
                        reason: claim == nil ? "connection claim gone; reconnect" : "replaced by a newer connection of this device")
                }
            }
            // Held call signals whose notice was lost: the connections that take call signals and have some held
            // take them (cluster.md 3.3).
            let attached = devices.filter { calls.isAttached($0) }
            if !attached.isEmpty {
                let waiting = try await cluster.heldCallSignals?(attached, now) ?? Set(attached)
                for device in attached where waiting.contains(device) { calls.wakeAttached(device) }
            }
        } catch {
            logger.error("cluster check failed", metadata: ["error": "\(error)"])
        }
    }

    /// Push's two questions in a cluster (`cluster.md` 4, "Push"): whether a device is connected to any node (a live
    /// claim; this node's own registry first), and whether a call offer is still held for it. A failing query answers
    /// "connected" and "not waiting": a lost wake-up, never a wrong one.
    static func clusterPushChecks(_ cluster: RelayClusterMode, registry: ConnectionRegistry, clock: any RelayClock, logger: Logger) -> (
        @Sendable (DeviceAddress) async -> Bool, @Sendable (DeviceAddress, UInt64, Int64) async -> Bool
    ) {
        let isConnected: @Sendable (DeviceAddress) async -> Bool = { device in
            if registry.isConnected(device) { return true }
            do {
                return try await cluster.cluster.liveClaims([device], nowMs: clock.nowMs())[device] != nil
            } catch {
                logger.error("claim read failed", metadata: ["error": "\(error)"])
                return true
            }
        }
        let isWaiting: @Sendable (DeviceAddress, UInt64, Int64) async -> Bool = { device, _, nowMs in
            do {
                return try await cluster.cluster.callSignals.isOfferWaiting(device, nowMs: nowMs)
            } catch {
                logger.error("call signal read failed", metadata: ["error": "\(error)"])
                return false
            }
        }
        return (isConnected, isWaiting)
    }

    /// Makes a new authenticated connection of `device` the live one in the cluster (`cluster.md` 1.1): claims it
    /// (a larger epoch than any before) and tells every node, so the one holding an older connection closes it.
    /// Returns the epoch (0 on a single relay).
    /// - Throws: `RelayError(.authenticationFailed)` when the device was removed meanwhile (nothing claimed);
    ///   `RelayError(.internal)` when the database fails.
    func claimInCluster(_ device: DeviceAddress) async throws(RelayError) -> Int64 {
        guard let cluster else { return 0 }
        let epoch: Int64
        do {
            epoch = try await cluster.cluster.claimConnection(device, nowMs: clock.nowMs())
        } catch let error as StoreError where error.code == .unknownDevice {
            // Removed between the authentication's device read and the claim (cluster.md 4).
            throw RelayError(.authenticationFailed, "unknown device or bad signature")
        } catch {
            throw internalError(error)
        }
        outbox.post([.claimed(device: device, node: cluster.cluster.nodeID, epoch: epoch)])
        return epoch
    }

    /// Part of the periodic check (sec-claims): deletes this node's claims no local connection holds (a release that
    /// failed; older than one check interval, so a claim whose connection is just registering stays) and puts back
    /// the claims of local connections that a heartbeat deleted while their epoch is still the latest
    /// (`RelayCluster.reconcileClaims`, `cluster.md` 3.3).
    /// - Throws: what the database throws.
    func reconcileClaimsInCluster(_ cluster: RelayClusterMode, nowMs: Int64) async throws {
        let held = registry.localConnections().filter { $0.epoch > 0 }.map { (device: $0.device, epoch: $0.epoch) }
        try await cluster.cluster.reconcileClaims(held, nowMs: nowMs, graceMs: cluster.checkInterval.wholeMilliseconds)
    }

    /// Forgets an ended connection's claim, if it had one (a newer claim is kept). A failure is logged: the claim
    /// then stays until a newer connection's or until this node is seen dead.
    func releaseInCluster(_ progress: DeliveryProgress) async {
        guard let cluster, let device = progress.device, progress.epoch > 0 else { return }
        do {
            try await cluster.cluster.releaseConnection(device, epoch: progress.epoch)
        } catch {
            logger.warning("claim release failed", metadata: ["error": "\(error)"])
        }
    }

    /// Online-only envelopes for devices this node has no connection of (`cluster.md` 3.1, "online-only"): kept in the
    /// database for 30 s and announced to the node holding the device. Devices without a live claim anywhere are
    /// skipped (an online-only envelope is never kept for an offline device). Failures lose the envelopes (best-effort).
    func handOnlineOnlyInCluster(_ envelopes: [(WireEnvelope, DeviceAddress)]) async {
        guard let cluster, !envelopes.isEmpty else { return }
        let now = clock.nowMs()
        do {
            let claims = try await cluster.cluster.liveClaims(Array(Set(envelopes.map(\.1))), nowMs: now)
            var notices: [ClusterNotice] = []
            for (envelope, device) in envelopes where claims[device].map({ $0.node != cluster.cluster.nodeID }) ?? false {
                let id = try await cluster.cluster.putOnlineOnly(
                    device: device, frame: try envelope.serializedData(), expiresAtMs: now + Self.onlineOnlyTransitMs)
                notices.append(.onlineOnly(device: device, id: id))
            }
            outbox.post(notices)
        } catch {
            logger.error("online-only hand-over failed", metadata: ["error": "\(error)"])
        }
    }

    /// How long an online-only envelope waits in the database for the node holding its device (`cluster.md` 4).
    static let onlineOnlyTransitMs: Int64 = 30_000

    /// How long a call's sequence memory lasts after its last signal (`cluster.md` 4, "Call sequence memory").
    static let callSequenceMemoryMs: Int64 = 180_000

    /// Checks 5 and 6 of `calls.md` 3.1 and the acceptance of 3.2 in a cluster: the shared rate limits first, then the
    /// sequence in the shared memory (so a signal refused for its rate takes a token but records no sequence, and a
    /// client's retry is not taken for a replay); then each copy is held in the database (caps of 3.2) and the
    /// connection holding its device is woken: this node's directly, another node's by a notice. Devices with a
    /// connection on this node that takes call signals are "delivered", all others "held". Nil for a replay.
    func acceptCallSignalInCluster(
        _ request: WireSendCallSignal, sender: DeviceAddress, copies: [WireCallSignalDelivery], expiresAtMs: Int64, drop: Bool, nowMs: Int64
    ) async throws(RelayError) -> CallSignalBroker.Acceptance? {
        guard let cluster else { return nil }
        try await limiter.takeShared(RateLimiter.takes(callSignalOffer: request.kind == .callOffer, device: sender), nowMs: nowMs, cluster: cluster.cluster)
        let store = cluster.cluster.callSignals
        var acceptance = CallSignalBroker.Acceptance()
        do {
            let sorted = copies.sorted { $0.recipientDeviceID < $1.recipientDeviceID }
            let held = drop ? [] : try sorted.map { copy in
                HeldCallSignal(
                    callID: request.callID, sender: sender, recipient: DeviceAddress(handle: request.recipientHandle, deviceID: copy.recipientDeviceID),
                    sequence: request.sequence, isOffer: request.kind == .callOffer, receivedAtMs: nowMs, expiresAtMs: expiresAtMs,
                    delivery: try copy.serializedData())
            }
            // The memory is per (call, sending device, recipient account): device 0 stands for the whole account. The
            // sequence is recorded in the hold's transaction: a hold that fails records nothing, so the client's retry
            // is not refused as a replay. Copies dropped by the caps (3.2) are not counted in the metrics in a cluster.
            guard try await store.admitAndHold(
                callID: request.callID, sender: sender, recipient: DeviceAddress(handle: request.recipientHandle, deviceID: 0),
                sequence: request.sequence, nowMs: nowMs, rememberUntilMs: max(expiresAtMs, nowMs + Self.callSequenceMemoryMs), held) != nil
            else { return nil }
            if drop {
                acceptance.held = sorted.map { ($0.recipientDeviceID, 0) }
                return acceptance
            }
            var remote: [ClusterNotice] = []
            for signal in held {
                if calls.wakeAttached(signal.recipient) {
                    acceptance.delivered.append(signal.recipient.deviceID)
                } else {
                    acceptance.held.append((signal.recipient.deviceID, 0))
                    remote.append(.callSignal(signal.recipient))
                }
            }
            outbox.post(remote)
            return acceptance
        } catch {
            throw internalError(error)
        }
    }

    /// Takes the call signals held in the database for `device` (`CallSignalStore.take`), as delivery frames, for its
    /// connection `connectionID` if that connection takes call signals; empty otherwise or when the database fails.
    func takeCallSignalsInCluster(_ device: DeviceAddress, connectionID: UInt64) async -> [WireCallSignalDelivery] {
        guard let cluster, calls.isAttached(device, connectionID: connectionID) else { return [] }
        do {
            return try await cluster.cluster.callSignals.take(device, nowMs: clock.nowMs()).map { try WireCallSignalDelivery(serializedBytes: $0.delivery) }
        } catch {
            logger.error("call signal take failed", metadata: ["error": "\(error)"])
            return []
        }
    }
}

extension Relay {
    /// How long one upload lease lasts before it must be renewed, ms (`cluster.md` 4, "Upload leases").
    static let uploadLeaseMs: Int64 = 60_000

    /// How many times (100 ms apart) a PATCH tries to take an upload's lease before it gives up: about 2 minutes, twice
    /// `uploadLeaseMs`, long enough for a dead holder's lease to end (`cluster.md` 4, "Upload leases").
    static let uploadLeaseAttempts = 1_200

    /// Runs `body` holding upload `id`: this node's lock, and in a cluster also the upload's lease in the database (one
    /// PATCH at a time per upload across nodes, `attachments.md` 4.3), waited for (polled every 100 ms, at most
    /// `uploadLeaseAttempts` times, failures included) and renewed every 20 s while `body` runs. Returns nil without
    /// running `body` when the lease could not be had in time or the calling task was cancelled while waiting; a dead
    /// node's lease ends by itself after `uploadLeaseMs`.
    func withUploadLock<T: Sendable>(_ id: Data, _ body: () async -> T) async -> T? {
        await uploadLocks.acquire(id)
        let result = cluster == nil ? await body() : await withUploadLease(id, body)
        await uploadLocks.release(id)
        return result
    }

    private func withUploadLease<T: Sendable>(_ id: Data, _ body: () async -> T) async -> T? {
        guard let cluster else { return await body() }
        let holder = UUID().uuidString
        let leases = cluster.cluster
        var waited = false
        var failures = 0
        var attempt = 0
        while true {
            // Cancelled (the client went away) or out of time: give up without the lease (no hot loop: a cancelled
            // task's sleep returns at once).
            if Task.isCancelled || attempt >= Self.uploadLeaseAttempts {
                logger.warning("upload lease not acquired", metadata: ["cancelled": "\(Task.isCancelled)", "failures": "\(failures)"])
                return nil
            }
            attempt += 1
            let now = clock.nowMs()
            do {
                if try await leases.acquireUploadLease(blobID: id, holder: holder, nowMs: now, untilMs: now + Self.uploadLeaseMs) { break }
                if !waited { uploadLeaseEvents.withLock { $0.waited += 1 } }
                waited = true
            } catch {
                // Logged once per wait, not at every poll.
                if failures == 0 { logger.error("upload lease failed", metadata: ["error": "\(error)"]) }
                failures += 1
            }
            do { try await Task.sleep(for: .milliseconds(100)) } catch { continue }
        }
        uploadLeaseEvents.withLock { $0.acquired += 1 }
        let clock = self.clock
        let renewal = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(20))
                if Task.isCancelled { break }
                let now = clock.nowMs()
                let renewed = (try? await leases.acquireUploadLease(blobID: id, holder: holder, nowMs: now, untilMs: now + Self.uploadLeaseMs)) ?? false
                if !renewed { logger.error("upload lease renewal failed: another node may take the upload over") }
            }
        }
        let result = await body()
        renewal.cancel()
        do {
            try await leases.releaseUploadLease(blobID: id, holder: holder)
        } catch {
            logger.error("upload lease release failed", metadata: ["error": "\(error)"])
        }
        return result
    }
}
