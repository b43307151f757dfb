import FlitzCrypto
import FlitzStore
import FlitzStoreSQLite
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import HummingbirdWebSocket
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization

/// A relay ready to run: the Hummingbird application (HTTP `GET /healthz` (and `/health`), `GET /metrics`,
/// the blob store's `/v1/uploads` and `/v1/blobs` (`attachments.md` 4) and the WebSocket at `/v1/ws`, over TLS when configured), the expiry sweeper and the push dispatcher, as
/// services of one `ServiceGroup` (`protocol/relay.md`, `protocol/push.md`).
public final class RelayApplication: Sendable {
    /// The request logic and store; call `relay.sweep()` to sweep now.
    public let relay: Relay
    /// The services, in start order: the push dispatcher, the expiry sweeper, the HTTP/WebSocket server. A
    /// graceful shutdown stops them in reverse: the server first, so that no connection is accepted while the
    /// others stop (a connection accepted then could hold the shutdown open), then the sweeper, then the
    /// dispatcher.
    public let services: [any Service]
    private let logger: Logger
    private let listening: ListeningPort
    private let group = Mutex<(group: ServiceGroup?, shutdownRequested: Bool)>((nil, false))
    // Held until the application is released; nil when the caller supplied its own store.
    private let databaseLock: DatabaseLock?

    private let maximumGracefulShutdown: Duration

    init(
        relay: Relay, services: [any Service], logger: Logger, listening: ListeningPort, databaseLock: DatabaseLock?,
        maximumGracefulShutdown: Duration
    ) {
        self.maximumGracefulShutdown = maximumGracefulShutdown
        self.databaseLock = databaseLock
        self.relay = relay
        self.services = services
        self.logger = logger
        self.listening = listening
    }

    /// Runs every service until graceful shutdown: SIGTERM or SIGINT when `handleSignals` is true,
    /// `triggerGracefulShutdown()`, or cancellation of the calling task. Pass `handleSignals: false` in
    /// tests that run several relays in one process. Call at most once.
    /// - Throws: when the server cannot bind or a service fails.
    public func run(handleSignals: Bool = true) async throws {
        var configuration = ServiceGroupConfiguration(
            services: services, gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [], logger: logger)
        // A graceful shutdown that has not finished after twice ws.closeTimeout (a peer that never completes its
        // close handshake, say) is escalated to cancellation instead of waiting forever (relay.md, "Configuration").
        configuration.maximumGracefulShutdownDuration = maximumGracefulShutdown
        let group = ServiceGroup(configuration: configuration)
        let shutdownRequested = self.group.withLock { state in
            state.group = group
            return state.shutdownRequested
        }
        if shutdownRequested { await group.triggerGracefulShutdown() }
        try await group.run()
        logger.info("relay stopped")
    }

    /// Starts a graceful shutdown: the server stops accepting, open connections end, the sweeper stops,
    /// and `run` returns.
    public func triggerGracefulShutdown() async {
        let group = self.group.withLock { state in
            state.shutdownRequested = true
            return state.group
        }
        await group?.triggerGracefulShutdown()
    }

    /// The bound TCP port, once the server listens (waits until then).
    public func port() async -> Int {
        await listening.wait()
    }
}

/// Builds a relay from `configuration` (`protocol/relay.md`): opens (and migrates) the SQLite store at
/// `configuration.databasePath` unless `store` is given (the file, its `-wal`, `-shm` and `.lock` files are
/// made readable by this user only, and a missing directory is created 0700), opens the blob directory
/// (`blob.dir`, default `flitz-blobs` beside the database; created 0700), loads the TLS certificate and
/// key when configured, loads the push CA file, the VAPID key (made and stored on first start unless
/// `push.vapidKey` is set) and the APNs and FCM credentials when configured, and wires the WebSocket server, the health and metrics endpoints, the expiry
/// sweeper and the push dispatcher. Nothing listens until `RelayApplication.run` is called.
/// - Parameters:
///   - clock: wall-clock source for every expiry and receipt time (tests inject one).
///   - store: a `RelayStore` to use instead of SQLite.
///   - onListening: called once with the bound host and port (the CLI prints `listening on HOST:PORT`).
/// - Throws: `StoreError` when the database cannot be opened or migrated; `ConfigurationError` when the
///   configuration is inconsistent or the TLS files cannot be read.
public func buildRelay(
    configuration: RelayConfiguration,
    logger: Logger,
    clock: any RelayClock = SystemRelayClock(),
    store: (any RelayStore)? = nil,
    onListening: @escaping @Sendable (_ host: String, _ port: Int) async -> Void = { _, _ in }
) async throws -> RelayApplication {
    try configuration.validate()
    let tls = try configuration.tlsCertificatePath.map { certificate in
        try serverTLSConfiguration(certificatePath: certificate, keyPath: configuration.tlsKeyPath ?? "")
    }
    let random = SystemRandom()
    // Several nodes on PostgreSQL (protocol/cluster.md; BuildRelay+Postgres.swift) unless a store is given.
    let postgres = store == nil && configuration.postgresURL != nil
        ? try await PostgresNode.open(configuration, clock: clock, random: random, logger: logger) : nil
    let given = store ?? postgres?.relayStore
    let ownStore = given == nil
    if ownStore { try DatabaseFiles.prepare(configuration.databasePath) }
    let lock = ownStore ? try DatabaseLock(databasePath: configuration.databasePath) : nil
    let store = try given ?? SQLiteRelayStore(path: configuration.databasePath, makeID: { random.bytes(16) })
    if ownStore { DatabaseFiles.restrict(configuration.databasePath, logger: logger) }
    var countQueue: (@Sendable (Int) async throws -> Int)?
    if ownStore, let counter = try? SQLiteQueueDepth(path: configuration.databasePath) {
        countQueue = { limit in try await counter.count(limit: limit) }
    } else if let postgres {
        countQueue = { limit in try await postgres.store.queueDepth(limit: limit) }
    }
    let metrics = RelayMetrics(queueDepth: countQueue)
    metrics.countBlobBytes { try await store.storedBlobBytes() }
    let blobs: FileBlobStorage
    do {
        blobs = try FileBlobStorage(directory: configuration.resolvedBlobDirectory)
    } catch {
        throw ConfigurationError("\(error)")
    }
    let pushTrustRoots = try configuration.push.caFile.map(loadPushTrustRoots) ?? []
    let vapidKeyPEM: String
    if let postgres {
        vapidKeyPEM = postgres.vapidKeyPEM
    } else {
        vapidKeyPEM = try await loadVAPIDKey(configuration.push, store: store, clock: clock)
    }
    let credentials = try PushCredentials(configuration.push, vapidKeyPEM: vapidKeyPEM)
    let relay = Relay(
        store: store, blobs: blobs, configuration: configuration, clock: clock, random: random, logger: logger, metrics: metrics, pushTrustRoots: pushTrustRoots,
        vapidKeyPEM: credentials.vapidKeyPEM, apns: credentials.apns, fcm: credentials.fcm, cluster: postgres?.mode)
    let listening = ListeningPort()

    let router = Router()
    router.get("/health") { _, _ in "ok" }
    router.get("/healthz") { _, _ in "ok" }
    if configuration.metricsEnabled {
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: await metrics.exposition())))
        }
    }

    // The blob store (attachments.md 4): TUS uploads and downloads on this port, under TLS when configured.
    BlobRoutes(relay: relay).register(on: router)

    let webSocket = WebSocketServerConfiguration(
        maxFrameSize: RelayConnection.readLimit,
        autoPing: .enabled(timePeriod: configuration.pingInterval),
        closeTimeout: configuration.closeTimeout)
    let host = configuration.host
    let server = HTTPServerBuilder.http1WebSocketUpgrade(configuration: .init(ws: webSocket)) { request, channel, _ in
        guard request.path == "/v1/ws" else { return .dontUpgrade }
        let source = channel.remoteAddress?.ipAddress ?? "unknown"
        return .upgrade([:]) { inbound, outbound, context in
            metrics.connectionOpened()
            defer { metrics.connectionClosed() }
            try await RelayConnection(relay: relay, channel: channel, source: source).run(inbound: inbound, outbound: outbound, logger: context.logger)
        }
    }
    let application = Application(
        router: router,
        server: try tls.map { try .tls(server, tlsConfiguration: $0) } ?? server,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "flitz-relay"),
        onServerRunning: { channel in
            let port = channel.localAddress?.port ?? 0
            listening.set(port)
            await onListening(host, port)
        },
        logger: logger)
    // On PostgreSQL the pool and the cluster run first and stop last (services start in order, stop in reverse).
    let clusterServices: [any Service] = postgres.map { [$0.store, ClusterService(relay: relay, mode: $0.mode)] } ?? []
    return RelayApplication(
        relay: relay,
        services: clusterServices + [relay.push, ExpirySweeper(relay: relay), ScheduledReleaser(relay: relay), application], logger: logger,
        listening: listening, databaseLock: lock,
        maximumGracefulShutdown: configuration.closeTimeout * 2)
}

/// The name of the relay's generated VAPID key in the store's relay secrets.
let vapidKeySecretName = "push.vapidKey"

/// The relay's VAPID key as PEM (`protocol/push.md` 3.1 and 9): `push.vapidKey` (PEM text, or the path of a PEM
/// file), else the one kept in the store, made now (a fresh P-256 key) on the first start.
/// - Throws: `ConfigurationError` when `push.vapidKey` is not a readable P-256 PEM key; `StoreError` when the
///   store fails.
func loadVAPIDKey(_ configuration: PushConfiguration, store: any RelayStore, clock: any RelayClock) async throws -> String {
    if let given = configuration.vapidKey {
        let pem: String
        if given.contains("-----BEGIN") {
            pem = given
        } else {
            do {
                pem = try String(contentsOfFile: given, encoding: .utf8)
            } catch {
                // Never echo the value: it may be key material that merely lacks its PEM header.
                throw ConfigurationError("push.vapidKey (--vapid-key) is neither PEM text nor a readable file")
            }
        }
        do {
            _ = try VAPIDKey(pem: pem)
        } catch {
            throw ConfigurationError("push.vapidKey (--vapid-key): \(error.message)")
        }
        return pem
    }
    let candidate = Data(VAPIDKey.generate().pemRepresentation.utf8)
    let stored = try await store.relaySecret(named: vapidKeySecretName, orStore: candidate, atMs: clock.nowMs())
    return String(decoding: stored, as: UTF8.self)
}

/// The CA certificates of `push.caFile`, trusted for push services beside the system's.
/// - Throws: `ConfigurationError` when the file cannot be read or holds no PEM certificate.
func loadPushTrustRoots(_ path: String) throws(ConfigurationError) -> [NIOSSLCertificate] {
    let certificates: [NIOSSLCertificate]
    do {
        certificates = try NIOSSLCertificate.fromPEMFile(path)
    } catch {
        throw ConfigurationError("cannot read the push CA file \(path) (push.caFile): \(error)")
    }
    guard !certificates.isEmpty else { throw ConfigurationError("no PEM certificate in \(path) (push.caFile)") }
    return certificates
}

/// A port that becomes known once; waiters resume then.
final class ListeningPort: Sendable {
    private let state = Mutex<(port: Int?, waiters: [CheckedContinuation<Int, Never>])>((nil, []))

    func set(_ port: Int) {
        let waiters = state.withLock { state in
            state.port = port
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: port) }
    }

    func wait() async -> Int {
        await withCheckedContinuation { continuation in
            let port = state.withLock { state -> Int? in
                if let port = state.port { return port }
                state.waiters.append(continuation)
                return nil
            }
            if let port { continuation.resume(returning: port) }
        }
    }
}

/// A TLS server configuration from PEM files (`tls.certificate`, `tls.key`).
/// - Throws: `ConfigurationError` naming the file that cannot be read or parsed.
func serverTLSConfiguration(certificatePath: String, keyPath: String) throws(ConfigurationError) -> TLSConfiguration {
    let chain: [NIOSSLCertificate]
    do {
        chain = try NIOSSLCertificate.fromPEMFile(certificatePath)
    } catch {
        throw ConfigurationError("cannot read the TLS certificate \(certificatePath): \(error)")
    }
    guard !chain.isEmpty else { throw ConfigurationError("no PEM certificate in \(certificatePath)") }
    let key: NIOSSLPrivateKey
    do {
        key = try NIOSSLPrivateKey(file: keyPath, format: .pem)
    } catch {
        throw ConfigurationError("cannot read the TLS private key \(keyPath): \(error)")
    }
    return TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
}
