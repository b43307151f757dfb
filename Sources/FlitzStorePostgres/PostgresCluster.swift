import FlitzStore
import Foundation
import Logging
import NIOCore
import PostgresNIO
import ServiceLifecycle
import Synchronization

extension PostgresRelayStore {
    /// The cluster of relay nodes sharing this store's database, as node `nodeID` (`cluster.md` 2: 1-64 characters
    /// of `[A-Za-z0-9._-]`). Run it (`run()`, a `Service`) beside the store's client for `notices()` to deliver.
    /// - Parameters:
    ///   - staleAfterMs: how long a node may go without a heartbeat before `liveClaims` ignores its claims, until the
    ///     first `heartbeat` says otherwise (then the heartbeat's `staleAfterMs` counts). Default 15 000 (3 checks of
    ///     5 s, `cluster.md` 4).
    ///   - listenURL: the store's PostgreSQL URL: the LISTEN then runs on a dedicated connection of its own, outside
    ///     the pool (what the relay does). Nil: the listener leases one of the pool's connections for as long as it
    ///     listens.
    /// - Throws: `StoreError.backend` when `nodeID` is not a valid node id or `listenURL` is not a valid URL.
    public func cluster(nodeID: String, staleAfterMs: Int64 = 15_000, listenURL: String? = nil) throws -> PostgresCluster {
        try PostgresCluster(
            store: self, nodeID: nodeID, staleAfterMs: staleAfterMs, listenConfiguration: try listenURL.map(Self.listenConfiguration(url:)))
    }

    /// A configuration for one dedicated connection (the cluster's LISTEN) from the same URL as
    /// `configuration(url:)`, which checks it.
    /// - Throws: `StoreError.backend` naming what is wrong with the URL (never its password), or when TLS cannot be set up.
    public static func listenConfiguration(url: String) throws -> PostgresConnection.Configuration {
        let client = try configuration(url: url)
        let mode = URLComponents(string: url)?.queryItems?.first { $0.name == "sslmode" }?.value ?? "prefer"
        if let path = client.unixSocketPath {
            return PostgresConnection.Configuration(unixSocketPath: path, username: client.username, password: client.password, database: client.database)
        }
        guard let host = client.host, let port = client.port else { throw StoreError(.backend, "the PostgreSQL URL names no host") }
        let tls: PostgresConnection.Configuration.TLS
        do {
            switch mode {
            case "disable": tls = .disable
            case "require": tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
            default: tls = .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
            }
        } catch {
            throw StoreError(.backend, "cannot set up TLS for PostgreSQL")
        }
        return PostgresConnection.Configuration(
            host: host, port: port, username: client.username, password: client.password, database: client.database, tls: tls)
    }
}

/// The `RelayCluster` of nodes sharing one PostgreSQL database (`protocol/cluster.md`): notices by `NOTIFY` /
/// `LISTEN` on channel `flitz_relay` (3), node heartbeats, connection claims, online-only envelopes, shared token
/// buckets, upload leases and held call signals in the tables of `cluster.md` 4 (`PostgresCluster+Schema.swift`).
///
/// `run()` listens on a dedicated connection of its own (made with `listenURL`, see `PostgresRelayStore.cluster`) or
/// else on one leased from the store's pool for as long as it listens, and when that connection drops it waits
/// `reconnectDelay` and listens again on a fresh one, emitting `ClusterNotice.resync` each time the LISTEN is
/// (re)established. Every other method runs on the
/// pool and needs the store's client running.
public final class PostgresCluster: RelayCluster, Service {
    /// The channel every node listens on (`cluster.md` 3.1).
    public static let channel = "flitz_relay"
    /// Most bytes of one payload (`cluster.md` 3.1; PostgreSQL's limit is 8 000).
    public static let maxPayloadBytes = 7_900
    /// Notices buffered per `notices()` stream before the oldest are dropped (a lost notice is caught by the
    /// periodic check, `cluster.md` 3.3).
    public static let streamBuffer = 10_000

    /// This node's id.
    public let nodeID: String
    /// The held call signals and their sequence memory (`PostgresCallSignalStore`).
    public let callSignals: any CallSignalStore
    /// Pause before listening again after the listening connection failed. Default 1 s.
    public let reconnectDelay: Duration
    /// How often the listening connection is pinged (`SELECT 1`), so a connection that died silently (no RST) is
    /// noticed and replaced. Default 10 s.
    public let pingInterval: Duration

    let store: PostgresRelayStore
    /// The dedicated listening connection's configuration; nil: a pooled connection is leased instead.
    let listenConfiguration: PostgresConnection.Configuration?

    private struct State {
        var subscribers: [UInt64: AsyncStream<ClusterNotice>.Continuation] = [:]
        var nextSubscriber: UInt64 = 0
        var staleAfterMs: Int64
        var stopped = false
        /// How many times a LISTEN was established (tests and diagnostics).
        var listens = 0
        /// The start (`ensureStarted`): running or done; nil before it, or after it failed (tried again next time).
        var start: Task<Void, any Error>?
    }

    private let state: Mutex<State>

    init(
        store: PostgresRelayStore, nodeID: String, staleAfterMs: Int64, listenConfiguration: PostgresConnection.Configuration? = nil,
        reconnectDelay: Duration = .seconds(1), pingInterval: Duration = .seconds(10)
    ) throws {
        guard Self.isValidNodeID(nodeID) else {
            throw StoreError(.backend, "a node id is 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-'")
        }
        self.store = store
        self.listenConfiguration = listenConfiguration
        self.nodeID = nodeID
        self.reconnectDelay = reconnectDelay
        self.pingInterval = pingInterval
        self.callSignals = PostgresCallSignalStore(store: store)
        self.state = Mutex(State(staleAfterMs: staleAfterMs))
    }

    /// Whether `id` is a valid node id (`cluster.md` 2): 1-64 characters of `[A-Za-z0-9._-]`.
    public static func isValidNodeID(_ id: String) -> Bool {
        (1...64).contains(id.utf8.count)
            && id.utf8.allSatisfy { byte in
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || byte == 0x2E || byte == 0x5F
                    || byte == 0x2D
            }
    }

    private var logger: Logger { store.logger }

    // MARK: Notices

    /// Implements `RelayCluster.publish`: one `pg_notify` per payload (`payloads(for:)`), in one statement, in order.
    /// A failure is logged (without payloads) and swallowed: the periodic check catches what it lost.
    public func publish(_ notices: [ClusterNotice]) async {
        let payloads = Self.payloads(for: notices)
        guard !payloads.isEmpty else { return }
        do {
            _ = try await store.client.query(
                """
                SELECT pg_notify(\(Self.channel), payload)
                FROM unnest(\(payloads)::TEXT[]) WITH ORDINALITY AS p(payload, position) ORDER BY position
                """, logger: logger)
        } catch {
            logger.warning("cluster: publishing notices failed", metadata: ["error": "\(PostgresRelayStore.describe(error))"])
        }
    }

    /// Implements `RelayCluster.notices`: a new stream of what the listening connection receives from now on (and
    /// `.resync` whenever the LISTEN is established). It finishes when `run()` ends; a stream asked for after that
    /// is finished at once.
    public func notices() -> AsyncStream<ClusterNotice> {
        let (stream, continuation) = AsyncStream.makeStream(of: ClusterNotice.self, bufferingPolicy: .bufferingNewest(Self.streamBuffer))
        let id: UInt64? = state.withLock { state in
            guard !state.stopped else { return nil }
            state.nextSubscriber += 1
            state.subscribers[state.nextSubscriber] = continuation
            return state.nextSubscriber
        }
        if let id {
            continuation.onTermination = { [weak self] _ in _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) } }
        } else {
            continuation.finish()
        }
        return stream
    }

    /// How many times the LISTEN was established so far (1 after the first, 2 after one reconnection, ...).
    public var listenCount: Int { state.withLock { $0.listens } }

    private func emit(_ notices: [ClusterNotice]) {
        let subscribers = state.withLock { Array($0.subscribers.values) }
        for notice in notices {
            for subscriber in subscribers { subscriber.yield(notice) }
        }
    }

    /// Implements `RelayCluster.run`: listens on `flitz_relay` until cancelled or the service group shuts down,
    /// reconnecting after `reconnectDelay` when the connection fails; then finishes every `notices()` stream.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            do {
                try await self.ensureStarted()
            } catch {
                self.logger.warning("cluster: forgetting this node's earlier claims failed", metadata: ["error": "\(error)"])
            }
            while !Task.isCancelled {
                do {
                    try await self.listenOnce()
                } catch {
                    if Task.isCancelled { break }
                    self.logger.warning(
                        "cluster: the listening connection failed; listening again", metadata: ["error": "\(PostgresRelayStore.describe(error))"])
                }
                do { try await Task.sleep(for: self.reconnectDelay) } catch { break }
            }
        }
        let subscribers = state.withLock { state in
            state.stopped = true
            defer { state.subscribers.removeAll() }
            return Array(state.subscribers.values)
        }
        for subscriber in subscribers { subscriber.finish() }
    }

    /// Runs `body` on the dedicated connection (opened now, closed after) or on a connection leased from the pool.
    private func withListeningConnection(_ body: (PostgresConnection) async throws -> Void) async throws {
        guard let configuration = listenConfiguration else {
            try await store.client.withConnection(body)
            return
        }
        let id = state.withLock { $0.listens + 1 }
        let connection = try await PostgresConnection.connect(configuration: configuration, id: id, logger: logger)
        do {
            try await body(connection)
        } catch {
            try? await connection.close()
            throw error
        }
        try? await connection.close()
    }

    /// One LISTEN on one connection, until it fails or the task is cancelled.
    private func listenOnce() async throws {
        try await withListeningConnection { connection in
            try await connection.listen(on: Self.channel) { notifications in
                self.state.withLock { $0.listens += 1 }
                self.emit([.resync])
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for try await notification in notifications {
                            self.emit(Self.notices(fromPayload: notification.payload))
                        }
                        throw StoreError(.backend, "the notification stream ended")
                    }
                    group.addTask {
                        while true {
                            try await Task.sleep(for: self.pingInterval)
                            _ = try await connection.query("SELECT 1", logger: self.logger).collect()
                        }
                    }
                    try await group.next()
                    group.cancelAll()
                }
            }
        }
    }

    /// The `NOTIFY` payloads of `notices` (`cluster.md` 3.1), each at most `maxPayloadBytes`: a `queued` or `removed`
    /// list too long for one is split across several. `.resync` has none.
    public static func payloads(for notices: [ClusterNotice]) -> [String] {
        var payloads: [String] = []
        func list(_ prefix: String, _ devices: [DeviceAddress]) {
            var current = prefix
            for device in devices {
                let item = " \(device.handle)/\(device.deviceID)"
                if current.utf8.count + item.utf8.count > maxPayloadBytes, current != prefix {
                    payloads.append(current)
                    current = prefix
                }
                current += item
            }
            if current != prefix { payloads.append(current) }
        }
        for notice in notices {
            switch notice {
            case .queued(let devices): list("q", devices)
            case .removed(let devices): list("r", devices)
            case .claimed(let device, let node, let epoch): payloads.append("c \(device.handle)/\(device.deviceID) \(node) \(epoch)")
            case .onlineOnly(let device, let id): payloads.append("o \(device.handle)/\(device.deviceID) \(id)")
            case .callSignal(let device): payloads.append("s \(device.handle)/\(device.deviceID)")
            case .resync: break
            }
        }
        return payloads
    }

    /// The notice of one payload (`cluster.md` 3.1); empty for a payload it does not understand (a newer node's
    /// notice kind: ignored, the periodic check covers it).
    public static func notices(fromPayload payload: String) -> [ClusterNotice] {
        let fields = payload.split(separator: " ", omittingEmptySubsequences: true)
        guard let kind = fields.first else { return [] }
        func device(_ field: Substring) -> DeviceAddress? {
            guard let slash = field.lastIndex(of: "/"), slash != field.startIndex, let id = UInt32(field[field.index(after: slash)...]) else {
                return nil
            }
            return DeviceAddress(handle: String(field[..<slash]), deviceID: id)
        }
        let rest = fields.dropFirst()
        switch kind {
        case "q", "r":
            let devices = rest.compactMap(device)
            guard !devices.isEmpty, devices.count == rest.count else { return [] }
            return [kind == "q" ? .queued(devices) : .removed(devices)]
        case "c":
            guard rest.count == 3, let address = device(rest[rest.startIndex]), let epoch = Int64(rest[rest.startIndex + 2]) else { return [] }
            return [.claimed(device: address, node: String(rest[rest.startIndex + 1]), epoch: epoch)]
        case "o":
            guard rest.count == 2, let address = device(rest[rest.startIndex]), let id = Int64(rest[rest.startIndex + 1]) else { return [] }
            return [.onlineOnly(device: address, id: id)]
        case "s":
            guard rest.count == 1, let address = device(rest[rest.startIndex]) else { return [] }
            return [.callSignal(address)]
        default:
            return []
        }
    }

    // MARK: Heartbeat and claims

    /// The database clock in epoch milliseconds, as SQL (`clock_timestamp()`, not the transaction's start). Node
    /// liveness (`relay_nodes.heartbeat_at_ms` and every cutoff compared with it) is measured on it, so nodes whose
    /// clocks disagree never declare each other dead; everything else keeps the callers' (injectable) clocks.
    static let databaseNowMs = "(extract(epoch FROM clock_timestamp()) * 1000)::BIGINT"

    /// Runs once per `PostgresCluster` before its first heartbeat, claim or claim read (and when `run()` starts):
    /// deletes every claim recorded under this node id. They were made by an earlier process with this id (one
    /// killed and restarted, `cluster.md` 4): this process has not claimed anything yet, and its heartbeat would
    /// otherwise keep them live, so push would think the devices connected and never wake them. A failed start is
    /// tried again by the next call.
    /// - Throws: `StoreError.backend`.
    func ensureStarted() async throws {
        let task: Task<Void, any Error> = state.withLock { state in
            if let task = state.start { return task }
            let nodeID = self.nodeID
            let task = Task {
                try await self.store.transaction { connection in
                    _ = try await connection.query("DELETE FROM connection_claims WHERE node_id = \(nodeID)", logger: self.logger)
                }
            }
            state.start = task
            return task
        }
        do {
            try await task.value
        } catch {
            state.withLock { state in
                if state.start == task { state.start = nil }
            }
            throw error
        }
    }

    /// Implements `RelayCluster.heartbeat` in one transaction: records this node alive on the database clock
    /// (`databaseNowMs`), and deletes the claims of other nodes whose heartbeat is more than `staleAfterMs` older on
    /// that clock, or which have no `relay_nodes` row, and those nodes' rows; it deletes nothing when this node's
    /// own previous heartbeat is missing or itself older than `staleAfterMs` (an outage or an overloaded node makes
    /// every node look stale; the next heartbeat reaps). The claims are found per node through
    /// the `connection_claims_by_node` index (one probe per distinct node id, never a scan of every claim). Then, each
    /// in its own transaction, deletes what expired at `nowMs` in the shared tables: online-only envelopes past their
    /// expiry, token buckets full again, upload leases past their end. (Call signals are purged by
    /// `callSignals.purge`.) A transaction PostgreSQL aborts for a deadlock is run again.
    /// - Throws: `StoreError.backend`.
    public func heartbeat(nowMs: Int64, staleAfterMs: Int64) async throws {
        try await ensureStarted()
        state.withLock { $0.staleAfterMs = staleAfterMs }
        let nodeID = self.nodeID
        try await store.transaction { connection in
            // This node's previous heartbeat: when it is itself older than the stale limit (the database was
            // unreachable or this node too slow), the others' look stale for the same reason: no reaping this time
            // (a reconnect storm on every node after an outage; sec-claims).
            let previous = try await connection.query(
                """
                SELECT heartbeat_at_ms > \(unescaped: Self.databaseNowMs) - \(staleAfterMs) FROM relay_nodes WHERE node_id = \(nodeID)
                """, logger: self.logger)
            var wasFresh = false
            for try await fresh in previous.decode(Bool.self) { wasFresh = fresh }
            _ = try await connection.query(
                """
                INSERT INTO relay_nodes (node_id, heartbeat_at_ms) VALUES (\(nodeID), \(unescaped: Self.databaseNowMs))
                ON CONFLICT (node_id) DO UPDATE SET heartbeat_at_ms = GREATEST(relay_nodes.heartbeat_at_ms, EXCLUDED.heartbeat_at_ms)
                """, logger: self.logger)
            guard wasFresh else { return }
            // The distinct node ids of the claims by a loose index scan, then the claims of those not fresh.
            _ = try await connection.query(
                """
                WITH RECURSIVE ids(node_id) AS (
                    (SELECT node_id FROM connection_claims ORDER BY node_id LIMIT 1)
                    UNION ALL
                    SELECT (SELECT c.node_id FROM connection_claims c WHERE c.node_id > ids.node_id ORDER BY c.node_id LIMIT 1)
                    FROM ids WHERE ids.node_id IS NOT NULL
                )
                DELETE FROM connection_claims WHERE node_id IN (
                    SELECT i.node_id FROM ids i
                    WHERE i.node_id IS NOT NULL AND i.node_id <> \(nodeID) AND NOT EXISTS (
                        SELECT 1 FROM relay_nodes n
                        WHERE n.node_id = i.node_id AND n.heartbeat_at_ms > \(unescaped: Self.databaseNowMs) - \(staleAfterMs)))
                """, logger: self.logger)
            _ = try await connection.query(
                """
                DELETE FROM relay_nodes WHERE node_id <> \(nodeID) AND heartbeat_at_ms <= \(unescaped: Self.databaseNowMs) - \(staleAfterMs)
                """, logger: self.logger)
        }
        let expiries: [PostgresQuery] = [
            "DELETE FROM online_only WHERE expires_at_ms <= \(nowMs)",
            "DELETE FROM rate_buckets WHERE full_at_ms <= \(nowMs)",
            "DELETE FROM upload_leases WHERE until_ms <= \(nowMs)",
        ]
        for statement in expiries {
            try await store.transaction { connection in _ = try await connection.query(statement, logger: self.logger) }
        }
    }

    /// Implements `RelayCluster.claimConnection` in one transaction: the device's epoch counter row
    /// (`claim_epochs`, kept across releases) goes up by one and the claim row names this node and that epoch. Also
    /// records this node in `relay_nodes` (database clock) if it has no row yet (its claims count as live from its
    /// first claim). The first claim of this `PostgresCluster` waits for `ensureStarted`.
    /// - Throws: `StoreError.unknownDevice` when `device` has no `devices` row (removed meanwhile: nothing is
    ///   claimed); `StoreError.backend`.
    public func claimConnection(_ device: DeviceAddress, nowMs: Int64) async throws -> Int64 {
        try await ensureStarted()
        let handle = device.handle, deviceID = Int64(device.deviceID), nodeID = self.nodeID
        return try await store.transaction { connection in
            _ = try await connection.query(
                """
                INSERT INTO relay_nodes (node_id, heartbeat_at_ms) VALUES (\(nodeID), \(unescaped: Self.databaseNowMs))
                ON CONFLICT (node_id) DO NOTHING
                """,
                logger: self.logger)
            let rows = try await connection.query(
                """
                INSERT INTO claim_epochs (handle, device_id, epoch)
                SELECT \(handle), \(deviceID), epoch + 1 FROM claim_epoch_floor
                ON CONFLICT (handle, device_id) DO UPDATE SET epoch = claim_epochs.epoch + 1
                RETURNING epoch
                """, logger: self.logger)
            var epoch: Int64?
            for try await value in rows.decode(Int64.self) { epoch = value }
            guard let epoch else { throw StoreError(.corrupt, "no claim epoch") }
            // Only while the device exists (its row share-locked until commit): a removal committed first makes this
            // insert nothing (the device is refused); one committing later waits for this lock, then deletes the
            // claim in its own transaction (`cluster.md` 4, sec-claims).
            let inserted = try await connection.query(
                """
                INSERT INTO connection_claims (handle, device_id, node_id, epoch, claimed_at_ms)
                SELECT \(handle), \(deviceID), \(nodeID), \(epoch), \(nowMs)
                WHERE EXISTS (SELECT 1 FROM devices WHERE handle = \(handle) AND device_id = \(deviceID) FOR KEY SHARE)
                ON CONFLICT (handle, device_id) DO UPDATE SET node_id = EXCLUDED.node_id, epoch = EXCLUDED.epoch,
                    claimed_at_ms = EXCLUDED.claimed_at_ms
                RETURNING 1
                """, logger: self.logger)
            guard try await inserted.collect().count == 1 else { throw StoreError(.unknownDevice, "no such device") }
            return epoch
        }
    }

    /// Implements `RelayCluster.releaseConnection`.
    /// - Throws: `StoreError.backend`.
    public func releaseConnection(_ device: DeviceAddress, epoch: Int64) async throws {
        try await store.run {
            _ = try await self.store.client.query(
                """
                DELETE FROM connection_claims WHERE handle = \(device.handle) AND device_id = \(Int64(device.deviceID)) AND epoch = \(epoch)
                """, logger: self.logger)
        }
    }

    /// Implements `RelayCluster.reconcileClaims` in one transaction: deletes this node's claims older than
    /// `graceMs` (by `claimed_at_ms`, this node's clock) that no entry of `held` names with the same epoch, then
    /// inserts the claim of each held connection that has none while its epoch is still the device's latest
    /// (`claim_epochs`) and its device row exists (share-locked, as `claimConnection`).
    /// - Throws: `StoreError.backend`.
    public func reconcileClaims(_ held: [(device: DeviceAddress, epoch: Int64)], nowMs: Int64, graceMs: Int64) async throws {
        try await ensureStarted()
        let nodeID = self.nodeID
        let handles = held.map(\.device.handle), ids = held.map { Int64($0.device.deviceID) }, epochs = held.map(\.epoch)
        try await store.transaction { connection in
            _ = try await connection.query(
                """
                DELETE FROM connection_claims c WHERE c.node_id = \(nodeID) AND c.claimed_at_ms < \(nowMs - graceMs) AND NOT EXISTS (
                    SELECT 1 FROM unnest(\(handles)::TEXT[], \(ids)::BIGINT[], \(epochs)::BIGINT[]) AS l(handle, device_id, epoch)
                    WHERE l.handle = c.handle AND l.device_id = c.device_id AND l.epoch = c.epoch)
                """, logger: self.logger)
            guard !held.isEmpty else { return }
            _ = try await connection.query(
                """
                INSERT INTO connection_claims (handle, device_id, node_id, epoch, claimed_at_ms)
                SELECT l.handle, l.device_id, \(nodeID), l.epoch, \(nowMs)
                FROM unnest(\(handles)::TEXT[], \(ids)::BIGINT[], \(epochs)::BIGINT[]) AS l(handle, device_id, epoch)
                JOIN claim_epochs e ON e.handle = l.handle AND e.device_id = l.device_id AND e.epoch = l.epoch
                WHERE NOT EXISTS (SELECT 1 FROM connection_claims c WHERE c.handle = l.handle AND c.device_id = l.device_id)
                    AND EXISTS (SELECT 1 FROM devices d WHERE d.handle = l.handle AND d.device_id = l.device_id FOR KEY SHARE)
                ORDER BY l.handle, l.device_id
                ON CONFLICT (handle, device_id) DO NOTHING
                """, logger: self.logger)
        }
    }

    /// Implements `RelayCluster.liveClaims` in one query for all `devices`: claims whose node's heartbeat is newer
    /// than the stale limit (the last `heartbeat`'s `staleAfterMs`, else the one this cluster was made with), both on
    /// the database clock (`databaseNowMs`; `nowMs` is not used). The first call waits for `ensureStarted`.
    /// - Throws: `StoreError.backend`.
    public func liveClaims(_ devices: [DeviceAddress], nowMs: Int64) async throws -> [DeviceAddress: ConnectionClaim] {
        guard !devices.isEmpty else { return [:] }
        try await ensureStarted()
        let handles = devices.map(\.handle), ids = devices.map { Int64($0.deviceID) }
        let staleAfterMs = state.withLock { $0.staleAfterMs }
        return try await store.run {
            let rows = try await self.store.client.query(
                """
                SELECT c.handle, c.device_id, c.node_id, c.epoch
                FROM unnest(\(handles)::TEXT[], \(ids)::BIGINT[]) AS d(handle, device_id)
                JOIN connection_claims c ON c.handle = d.handle AND c.device_id = d.device_id
                JOIN relay_nodes n ON n.node_id = c.node_id AND n.heartbeat_at_ms > \(unescaped: Self.databaseNowMs) - \(staleAfterMs)
                """, logger: self.logger)
            var claims: [DeviceAddress: ConnectionClaim] = [:]
            for try await (handle, deviceID, node, epoch) in rows.decode((String, Int64, String, Int64).self) {
                claims[DeviceAddress(handle: handle, deviceID: UInt32(truncatingIfNeeded: deviceID))] = ConnectionClaim(node: node, epoch: epoch)
            }
            return claims
        }
    }

    // MARK: Online-only envelopes

    /// Implements `RelayCluster.putOnlineOnly`: a row of the unlogged `online_only` table; its id comes from a
    /// sequence. Rows nobody takes are deleted by `heartbeat` after `expiresAtMs`.
    /// - Throws: `StoreError.backend`.
    public func putOnlineOnly(device: DeviceAddress, frame: Data, expiresAtMs: Int64) async throws -> Int64 {
        try await store.run {
            let rows = try await self.store.client.query(
                """
                INSERT INTO online_only (handle, device_id, frame, expires_at_ms)
                VALUES (\(device.handle), \(Int64(device.deviceID)), \(frame), \(expiresAtMs))
                RETURNING id
                """, logger: self.logger)
            for try await id in rows.decode(Int64.self) { return id }
            throw StoreError(.corrupt, "no online-only id")
        }
    }

    /// Implements `RelayCluster.takeOnlineOnly` with one `DELETE ... RETURNING`: of two nodes taking one id, one
    /// gets the row. An expired row is deleted and not returned.
    /// - Throws: `StoreError.backend`.
    public func takeOnlineOnly(id: Int64, nowMs: Int64) async throws -> (device: DeviceAddress, frame: Data)? {
        try await store.run {
            let rows = try await self.store.client.query(
                "DELETE FROM online_only WHERE id = \(id) RETURNING handle, device_id, frame, expires_at_ms", logger: self.logger)
            var taken: (device: DeviceAddress, frame: Data)?
            for try await (handle, deviceID, frame, expiresAt) in rows.decode((String, Int64, Data, Int64).self) where expiresAt > nowMs {
                taken = (DeviceAddress(handle: handle, deviceID: UInt32(truncatingIfNeeded: deviceID)), frame)
            }
            return taken
        }
    }

    // MARK: Token buckets

    /// Implements `RelayCluster.takeTokens` with the in-memory limiter's arithmetic (`RateLimiter.swift`): a take
    /// whose `perMinute` or `burst` is 0 or less is off (always admitted); a cost above `burst` counts as `burst`; a
    /// clock earlier than a bucket's last update refills nothing. Takes of one key are added up.
    ///
    /// One transaction: one `INSERT ... ON CONFLICT DO UPDATE` inserts missing buckets full and locks existing ones
    /// (in key order, so two requests never deadlock; nothing can delete a bucket between its insert and its lock),
    /// then every bucket is checked and either all are debited or none. A deadlock abort is retried.
    /// Buckets live in the unlogged `rate_buckets` table; `heartbeat` deletes those full again.
    /// - Returns: 0 when admitted, else the milliseconds until all would be (at least 1).
    /// - Throws: `StoreError.backend`.
    public func takeTokens(_ takes: [TokenTake], nowMs: Int64) async throws -> Int64 {
        struct Bucket {
            var cost: Int
            var perMinute: Double
            var burst: Int
        }
        var buckets: [Data: Bucket] = [:]
        for take in takes where take.perMinute > 0 && take.burst > 0 && take.cost > 0 {
            let key = Data(take.key.utf8)
            buckets[key, default: Bucket(cost: 0, perMinute: take.perMinute, burst: take.burst)].cost += take.cost
        }
        guard !buckets.isEmpty else { return 0 }
        let requested = buckets
        let keys = buckets.keys.sorted { $0.lexicographicallyPrecedes($1) }
        let keyBuffers = keys.map { ByteBuffer(bytes: $0) }
        let bursts = keys.map { Double(buckets[$0]!.burst) }
        return try await store.transaction { connection in
            // Insert-or-lock in one statement (no gap in which the heartbeat could prune a bucket between its insert
            // and its lock): a missing bucket is inserted full, an existing one locked by a no-op update; in key order.
            let rows = try await connection.query(
                """
                INSERT INTO rate_buckets (key, tokens, updated_at_ms, full_at_ms)
                SELECT k, b, \(nowMs), \(nowMs) FROM unnest(\(keyBuffers)::BYTEA[], \(bursts)::FLOAT8[]) AS n(k, b) ORDER BY k
                ON CONFLICT (key) DO UPDATE SET tokens = rate_buckets.tokens
                RETURNING key, tokens, updated_at_ms
                """, logger: self.logger)
            var stored: [Data: (tokens: Double, updatedAtMs: Int64)] = [:]
            for try await (key, tokens, updated) in rows.decode((Data, Double, Int64).self) { stored[key] = (tokens, updated) }
            var wait: Int64 = 0
            var remaining: [Double] = [], updatedAt: [Int64] = [], fullAt: [Int64] = []
            for key in keys {
                let bucket = requested[key]!
                let perMs = bucket.perMinute / 60_000
                let burst = Double(bucket.burst)
                let row = stored[key] ?? (burst, nowMs)
                let available = min(burst, row.tokens + Double(max(0, nowMs - row.updatedAtMs)) * perMs)
                let needed = Double(min(bucket.cost, bucket.burst))
                if available < needed {
                    wait = max(wait, max(1, Self.milliseconds((needed - available) / perMs)))
                }
                let left = available - needed
                let updated = max(nowMs, row.updatedAtMs)
                remaining.append(left)
                updatedAt.append(updated)
                fullAt.append(updated &+ Self.milliseconds((burst - left) / perMs))
            }
            guard wait == 0 else { return wait }
            _ = try await connection.query(
                """
                UPDATE rate_buckets r SET tokens = u.tokens, updated_at_ms = u.updated_at, full_at_ms = u.full_at
                FROM unnest(\(keyBuffers)::BYTEA[], \(remaining)::FLOAT8[], \(updatedAt)::BIGINT[], \(fullAt)::BIGINT[])
                    AS u(key, tokens, updated_at, full_at)
                WHERE r.key = u.key
                """, logger: self.logger)
            return 0
        }
    }

    /// `value` milliseconds rounded up, at most 2^52 (about 142 000 years: a rate so slow it never refills).
    private static func milliseconds(_ value: Double) -> Int64 {
        Int64(min(value.rounded(.up), 4_503_599_627_370_496))
    }

    // MARK: Upload leases

    /// The lease holder as stored: this node's id and the request's `holder`, so holders of two nodes never match.
    private func leaseHolder(_ holder: String) -> String { "\(nodeID) \(holder)" }

    /// Implements `RelayCluster.acquireUploadLease` with one `INSERT ... ON CONFLICT DO UPDATE ... WHERE` (the
    /// existing row is taken over only when its lease ended or it is this holder's own): exactly one holder wins.
    /// - Throws: `StoreError.backend`.
    public func acquireUploadLease(blobID: Data, holder: String, nowMs: Int64, untilMs: Int64) async throws -> Bool {
        let holder = leaseHolder(holder)
        return try await store.run {
            let rows = try await self.store.client.query(
                """
                INSERT INTO upload_leases (blob_id, holder, until_ms) VALUES (\(blobID), \(holder), \(untilMs))
                ON CONFLICT (blob_id) DO UPDATE SET holder = EXCLUDED.holder, until_ms = EXCLUDED.until_ms
                WHERE upload_leases.until_ms <= \(nowMs) OR upload_leases.holder = EXCLUDED.holder
                RETURNING 1
                """, logger: self.logger)
            return try await rows.collect().count == 1
        }
    }

    /// Implements `RelayCluster.releaseUploadLease`.
    /// - Throws: `StoreError.backend`.
    public func releaseUploadLease(blobID: Data, holder: String) async throws {
        let holder = leaseHolder(holder)
        try await store.run {
            _ = try await self.store.client.query(
                "DELETE FROM upload_leases WHERE blob_id = \(blobID) AND holder = \(holder)", logger: self.logger)
        }
    }
}

extension PostgresRelayStore {
    /// Opens and closes one connection to the server of `url` (`cluster.md` 2): a relay starting with a wrong
    /// password, an unknown role or database, a server without TLS under `sslmode=require`, or a server that is down
    /// fails at once with the reason, instead of the pool retrying for as long as the start is allowed to take.
    /// - Throws: `StoreError.backend` with PostgreSQL's SQLSTATE and message, or the connection failure; never the
    ///   URL's password.
    public static func probe(url: String, logger: Logger) async throws {
        let configuration = try listenConfiguration(url: url)
        do {
            let connection = try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
            try await connection.close()
        } catch let error as PSQLError {
            if error.serverInfo != nil { throw StoreError(.backend, describe(error)) }
            if error.code == .sslUnsupported { throw StoreError(.backend, "the server does not offer TLS, which sslmode=require needs") }
            let cause = error.underlying.map { "\($0)" } ?? "\(error.code)"
            throw StoreError(.backend, "cannot connect: \(cause)")
        }
    }
}
