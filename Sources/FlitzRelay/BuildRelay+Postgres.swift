import FlitzCrypto
import FlitzStore
import FlitzStorePostgres
import Foundation
import Logging
import ServiceLifecycle

/// A relay node's PostgreSQL side (`protocol/cluster.md` 2), opened by `buildRelay` when `storage.postgres.url` is set:
/// the store (its client is a service of the relay's group), the cluster, and what was read at start.
struct PostgresNode {
    /// The store; its `run()` runs the connection pool.
    let store: PostgresRelayStore
    /// The same store as the relay's `RelayStore`.
    let relayStore: any RelayStore
    /// This node's cluster (its LISTEN connection runs inside `ClusterService`).
    let mode: RelayClusterMode
    /// The VAPID key read (or made and kept) at start.
    let vapidKeyPEM: String

    /// How long the start (connecting, migrating, reading the VAPID key) may take before the relay gives up.
    static let startTimeout: Duration = .seconds(60)

    /// Opens the database of `configuration.postgresURL`: checks the URL and the node id, then on a short-lived client
    /// of its own migrates the schema (under the advisory lock, `cluster.md` 2), reads or stores the VAPID key and
    /// records this node's first heartbeat, so its claims count from its first connection. The long-lived client and
    /// the cluster are returned unstarted (they run as services).
    /// - Throws: `ConfigurationError` for a bad URL or node id (never echoing the URL: it may hold a password);
    ///   `StoreError` naming the server (host, port, database) when it cannot be reached or migrated within
    ///   `startTimeout`.
    static func open(_ configuration: RelayConfiguration, clock: any RelayClock, random: any RandomSource, logger: Logger) async throws -> PostgresNode {
        let url = configuration.postgresURL ?? ""
        let makeID: @Sendable () -> Data = { random.bytes(16) }
        let bootstrap: PostgresRelayStore
        let store: PostgresRelayStore
        do {
            bootstrap = try PostgresRelayStore(url: url, makeID: makeID, logger: logger)
            store = try PostgresRelayStore(url: url, makeID: makeID, logger: logger)
        } catch let error as StoreError {
            throw ConfigurationError("storage.postgres.url (--postgres): \(error.detail)")
        }
        let nodeID = configuration.resolvedNodeID
        guard RelayConfiguration.isValidNodeID(nodeID) else {
            throw ConfigurationError("cluster.nodeID (--node-id) must be 1-64 characters of A-Z a-z 0-9 . _ -")
        }
        let checkMs = configuration.clusterCheckInterval.wholeMilliseconds
        let server = describeServer(url)
        let vapidKeyPEM: String
        do {
            // One plain connection first: a wrong password, role, database or TLS mode, or a server that is down, ends
            // the start at once with PostgreSQL's reason instead of the pool retrying until startTimeout.
            try await PostgresRelayStore.probe(url: url, logger: logger)
            vapidKeyPEM = try await withThrowingTaskGroup(of: String?.self) { group in
                group.addTask {
                    await bootstrap.client.run()
                    return nil
                }
                group.addTask {
                    try await Task.sleep(for: startTimeout)
                    throw StoreError(.backend, "no answer within \(startTimeout.components.seconds) s (is the server running, and the URL right?)")
                }
                group.addTask {
                    let applied = try await bootstrap.migrate()
                    if !applied.isEmpty { logger.info("migrated the PostgreSQL schema", metadata: ["relay.migrations": "\(applied.count)"]) }
                    guard let relayStore = asRelayStore(bootstrap) else { throw StoreError(.backend, "this build's PostgreSQL store is incomplete") }
                    let pem = try await loadVAPIDKey(configuration.push, store: relayStore, clock: clock)
                    try await bootstrap.cluster(nodeID: nodeID, staleAfterMs: 3 * checkMs).heartbeat(nowMs: clock.nowMs(), staleAfterMs: 3 * checkMs)
                    return pem
                }
                defer { group.cancelAll() }
                while let next = try await group.next() {
                    if let pem = next { return pem }
                }
                throw StoreError(.backend, "the PostgreSQL client stopped")
            }
        } catch let error as StoreError {
            throw StoreError(error.code, "PostgreSQL \(server): \(error.detail)")
        }
        guard let relayStore = asRelayStore(store) else { throw StoreError(.backend, "this build's PostgreSQL store is incomplete") }
        // The LISTEN runs on a dedicated connection outside the pool (cluster.md 3.2).
        let cluster = try store.cluster(nodeID: nodeID, staleAfterMs: 3 * checkMs, listenURL: url)
        let mode = RelayClusterMode(
            cluster: cluster, checkInterval: configuration.clusterCheckInterval,
            heldCallSignals: { devices, nowMs in try await store.devicesWithHeldCallSignals(devices, nowMs: nowMs) },
            heldCallSignalCount: { nowMs in try await store.heldCallSignalCount(nowMs: nowMs) }
        ) { devices in
            try await store.queueHeads(devices)
        }
        logger.info("cluster node on PostgreSQL", metadata: ["relay.node": "\(nodeID)", "relay.database": "\(server)"])
        return PostgresNode(store: store, relayStore: relayStore, mode: mode, vapidKeyPEM: vapidKeyPEM)
    }

    /// `HOST:PORT/DATABASE` of a PostgreSQL URL, for messages: never the user's password.
    static func describeServer(_ url: String) -> String {
        guard let components = URLComponents(string: url) else { return "(unparsable URL)" }
        let host = components.percentEncodedHost.flatMap { $0.removingPercentEncoding } ?? ""
        return "\(host):\(components.port ?? 5432)\(components.path)"
    }

    /// The store as a `RelayStore` (`PostgresRelayStore+RelayStore.swift`).
    static func asRelayStore(_ store: PostgresRelayStore) -> (any RelayStore)? { store }
}
