import Foundation

/// Everything a relay needs to start (`protocol/relay.md`, "Configuration"). Each property lists its
/// scoped key (as used by `flitz-relay serve` flags) and its default.
public struct RelayConfiguration: Sendable {
    /// `http.host`: address to bind. Default `127.0.0.1`.
    public var host: String
    /// `http.port`: TCP port to bind; 0 picks a free port. Default 7878.
    public var port: Int
    /// `storage.sqlite.path`: SQLite database file (WAL files beside it). Default `./flitz-relay.sqlite`.
    public var databasePath: String
    /// `relay.sweepInterval`: time between expiry sweeps. Default 60 seconds.
    public var sweepInterval: Duration
    /// `relay.retention`: the retention ceiling. Envelopes with `ttl_seconds` 0 expire after it, longer
    /// TTLs are capped to it, and receipts and envelope routes are deleted after it. Default 30 days
    /// (2 592 000 seconds).
    public var retention: Duration
    /// `ws.pingInterval`: WebSocket ping period; a peer that does not answer is disconnected. Default 30 seconds.
    public var pingInterval: Duration
    /// `ws.closeTimeout`: how long to wait for the peer's close frame. Default 15 seconds.
    public var closeTimeout: Duration
    /// `relay.authenticationTimeout`: a connection that has not authenticated by then is closed. Default 30 seconds.
    public var authenticationTimeout: Duration
    /// `relay.maxQueuedEnvelopes`: most undelivered envelopes queued for one device; more get `QUEUE_FULL`.
    /// Default 10 000.
    public var maxQueuedEnvelopes: Int
    /// `relay.deliveryWindow`: most queue items (envelopes and receipts) a connection has sent and not yet
    /// had acknowledged; delivery pauses at this many until acknowledgements arrive (`relay.md`,
    /// "Delivery window"). Default 1 000.
    public var deliveryWindow: Int = 1_000
    /// `relay.outboundBufferBytes`: the relay buffers at most this many bytes (plus the frame being
    /// written) for a connection whose peer reads slowly; writes wait above it (`relay.md`, "Slow
    /// readers"). Default 65 536.
    public var outboundBufferBytes: Int = 65_536
    /// `relay.writeTimeout`: a write that has waited this long for a peer that does not read closes the
    /// connection; nothing queued is lost (`relay.md`, "Slow readers"). Default 30 seconds.
    public var writeTimeout: Duration = .seconds(30)
    /// `relay.linkLifetime`: how long a pairing message (`LinkPut`) is kept unless taken. Default 10 minutes
    /// (`protocol/devices.md` 5.2).
    public var linkLifetime: Duration
    /// `limits.*`: token-bucket rate limits (`protocol/relay.md`, "Rate limits"). Default `RateLimits()`;
    /// `RateLimits.off` for load tests.
    public var rateLimits = RateLimits()
    /// `tls.certificate`: PEM certificate chain; with `tls.key`, the relay serves `wss://` only. Default none.
    public var tlsCertificatePath: String?
    /// `tls.key`: PEM private key of `tls.certificate`. Default none.
    public var tlsKeyPath: String?
    /// `metrics.enabled`: serve Prometheus text at `GET /metrics`. Default true.
    public var metricsEnabled = true
    /// `blob.dir`: directory of the blob files (`attachments.md` 4.5), created 0700. Default nil: `flitz-blobs`
    /// beside the database file.
    public var blobDirectory: String?
    /// `blob.maxBytes`: the blob limit in bytes of ciphertext (`Tus-Max-Size`). Default 104 857 600 (100 MiB).
    public var maxBlobBytes: Int64 = 104_857_600
    /// `blob.quotaBytes`: per account, the most bytes of unfinished uploads and stored blobs. Default 1 GiB.
    public var blobQuotaBytes: Int64 = 1_073_741_824
    /// `blob.uploadExpirySeconds`: an unfinished upload is deleted this long after its creation. Default 24 hours.
    public var uploadExpiry: Duration = .seconds(86_400)
    /// `blob.bodyTimeoutSeconds`: a PATCH (or creation-with-upload) body that sends no byte for this long is
    /// abandoned like a cut one: its bytes are truncated away, the upload's lock is released and the connection is
    /// closed (`attachments.md` 4.3). Default 60 seconds.
    public var blobBodyTimeout: Duration = .seconds(60)
    /// `push.*`: push wake-ups (`protocol/push.md` 9). Default `PushConfiguration()`.
    public var push = PushConfiguration()
    /// `turn.uris` (`--turn-uri`, repeatable): TURN server URIs handed out with credentials (`calls.md` 3.5), e.g.
    /// `turn:turn.example.org:3478?transport=udp`. Default none: `RequestTurnCredentials` answers without TURN.
    public var turnURIs: [String] = []
    /// `turn.secret` (`--turn-secret`): the secret shared with the TURN server (coturn `static-auth-secret`), the
    /// HMAC-SHA-1 key of the passwords. Required with `turn.uris`. Never logged. Default none.
    public var turnSecret: String?
    /// `turn.ttlSeconds` (`--turn-ttl-seconds`): lifetime of issued TURN credentials. Default 86 400 seconds.
    public var turnTTL: Duration = .seconds(86_400)
    /// `storage.postgres.url` (`--postgres`, `FLITZ_POSTGRES_URL`): a PostgreSQL URL
    /// (`postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=...]`, `protocol/cluster.md` 2); set, the relay stores
    /// everything there and runs as one node of a cluster instead of on SQLite. Never logged. Default none (SQLite).
    public var postgresURL: String?
    /// `cluster.nodeID` (`--node-id`, `FLITZ_NODE_ID`): this node's id, 1-64 characters of `[A-Za-z0-9._-]`, unique among
    /// the nodes (`cluster.md` 2). Default none: the host name, a dash and `http.port`.
    public var nodeID: String?
    /// `cluster.checkSeconds` (`--cluster-check-seconds`): the periodic cluster check's interval (`cluster.md` 3.3).
    /// Default 5 seconds.
    public var clusterCheckInterval: Duration = .seconds(5)
    /// `stun.uris` (`--stun-uri`, repeatable): STUN URIs returned in `stun_uris`, e.g. `stun:stun.example.org:3478`.
    /// Default none: the TURN URIs' host:port as `stun:` URIs.
    public var stunURIs: [String] = []

    /// A configuration with the documented defaults, overridable per argument.
    public init(
        host: String = "127.0.0.1",
        port: Int = 7878,
        databasePath: String = "./flitz-relay.sqlite",
        sweepInterval: Duration = .seconds(60),
        retention: Duration = .seconds(2_592_000),
        pingInterval: Duration = .seconds(30),
        closeTimeout: Duration = .seconds(15),
        authenticationTimeout: Duration = .seconds(30),
        maxQueuedEnvelopes: Int = 10_000,
        linkLifetime: Duration = .seconds(600)
    ) {
        self.host = host
        self.port = port
        self.databasePath = databasePath
        self.sweepInterval = sweepInterval
        self.retention = retention
        self.pingInterval = pingInterval
        self.closeTimeout = closeTimeout
        self.authenticationTimeout = authenticationTimeout
        self.maxQueuedEnvelopes = maxQueuedEnvelopes
        self.linkLifetime = linkLifetime
    }
}

extension RelayConfiguration {
    /// The blob directory in effect: `blobDirectory`, else `flitz-blobs` beside the database file.
    public var resolvedBlobDirectory: String {
        if let blobDirectory, !blobDirectory.isEmpty { return blobDirectory }
        return URL(fileURLWithPath: databasePath).deletingLastPathComponent().appendingPathComponent("flitz-blobs").path
    }
}

extension RelayConfiguration {
    /// The node id in effect (`cluster.md` 2): `nodeID`, else the host name (characters outside `[A-Za-z0-9._-]`
    /// replaced by `-`, at most 50 of them), a dash and `port`.
    public var resolvedNodeID: String {
        if let nodeID { return nodeID }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        let host = String(ProcessInfo.processInfo.hostName.map { allowed.contains($0) ? $0 : "-" }.prefix(50))
        return "\(host.isEmpty ? "relay" : host)-\(port)"
    }

    /// Whether `text` is a valid node id: 1-64 characters of `[A-Za-z0-9._-]` (`cluster.md` 2).
    public static func isValidNodeID(_ text: String) -> Bool {
        (1...64).contains(text.utf8.count)
            && text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x41...0x5A).contains($0) || (0x61...0x7A).contains($0) || $0 == 0x2E || $0 == 0x5F || $0 == 0x2D }
    }
}

extension Duration {
    /// Whole milliseconds (rounded down), for arithmetic with wire times.
    var wholeMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000 + attoseconds / 1_000_000_000_000_000
    }
}
