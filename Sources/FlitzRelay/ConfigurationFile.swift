import Foundation

/// A configuration value that cannot be used: an unknown key or flag, a malformed value, an unreadable file
/// (`README.md`, "Configuration"). `description` names the key and where it came from.
public struct ConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What is wrong, in one sentence.
    public var description: String

    /// An error saying `description`.
    public init(_ description: String) { self.description = description }
}

/// One configuration key of the relay (`README.md`, "Configuration"): its scoped name (as in a config file),
/// its `flitz-relay serve` flag, its environment variable and its documented default.
public struct ConfigurationKey: Sendable {
    /// Scoped name, e.g. `http.port`; the key in a config file.
    public let name: String
    /// Long flag of `flitz-relay serve` without the dashes, e.g. `port`.
    public let flag: String
    /// Default, as text (empty when unset).
    public let defaultValue: String
    /// One-line meaning, with its unit.
    public let summary: String
    /// Whether the flag may be given more than once (its values together replace the file's and the environment's;
    /// in a file or a variable the values are a comma-separated list, or a JSON array in a file).
    public let repeatable: Bool
    /// The environment variable that sets it when it is not `FLITZ_RELAY_` and the name (`cluster.md` 2 names
    /// `FLITZ_POSTGRES_URL` and `FLITZ_NODE_ID`).
    let environmentOverride: String?
    /// Sets the key from `value` (text); the second string names where it came from, for errors.
    /// Throws `ConfigurationError` only (closures cannot declare typed throws where the table builds them).
    let apply: @Sendable (inout RelayConfiguration, String, String) throws -> Void

    /// Sets the key from `value`; `source` names where the value came from.
    /// - Throws: `ConfigurationError` when the value is not of the key's kind.
    func set(_ configuration: inout RelayConfiguration, _ value: String, from source: String) throws(ConfigurationError) {
        do {
            try apply(&configuration, value, source)
        } catch let error as ConfigurationError {
            throw error
        } catch {
            throw ConfigurationError("\(source): \(error)")
        }
    }

    /// `FLITZ_RELAY_` and the name in upper snake case: `relay.sweepInterval` is `FLITZ_RELAY_RELAY_SWEEP_INTERVAL`.
    public var environmentVariable: String {
        if let environmentOverride { return environmentOverride }
        var out = "FLITZ_RELAY_"
        for character in name {
            if character == "." {
                out.append("_")
            } else if character.isUppercase {
                out.append("_")
                out.append(character)
            } else {
                out.append(contentsOf: character.uppercased())
            }
        }
        return out
    }
}

extension RelayConfiguration {
    /// Environment variable naming a config file when `--config` is not given.
    public static let configFileVariable = "FLITZ_RELAY_CONFIG"

    /// Every key, in documentation order (`README.md`, "Configuration", lists the same table).
    public static let keys: [ConfigurationKey] = {
        var keys: [ConfigurationKey] = [
            key("http.host", "host", "127.0.0.1", "address to bind") { $0.host = try text($1, $2) },
            key("http.port", "port", "7878", "TCP port to bind; 0 picks a free port") { $0.port = try integer($1, $2, 0...65_535) },
            key("storage.sqlite.path", "database", "./flitz-relay.sqlite", "SQLite database file (created 0600, its directory 0700)") {
                $0.databasePath = try text($1, $2)
            },
            // Several nodes on one PostgreSQL database (protocol/cluster.md 2).
            key("storage.postgres.url", "postgres", "", "PostgreSQL URL postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require]; set: the relay is a cluster node on PostgreSQL instead of SQLite; never logged", environment: "FLITZ_POSTGRES_URL") {
                $0.postgresURL = try text($1, $2)
            },
            key("cluster.nodeID", "node-id", "", "this node's id, 1-64 characters of A-Z a-z 0-9 . _ -, unique per node; default the host name, a dash and http.port", environment: "FLITZ_NODE_ID") {
                let id = try text($1, $2)
                guard RelayConfiguration.isValidNodeID(id) else { throw ConfigurationError("\($2) must be 1-64 characters of A-Z a-z 0-9 . _ -") }
                $0.nodeID = id
            },
            key("cluster.checkSeconds", "cluster-check-seconds", "5", "seconds between a cluster node's periodic checks of its connections' queues and claims") {
                $0.clusterCheckInterval = try seconds($1, $2)
            },
            key("relay.sweepInterval", "sweep-interval", "60", "seconds between expiry sweeps") { $0.sweepInterval = try seconds($1, $2) },
            key("relay.retention", "retention", "2592000", "retention ceiling and default envelope expiry, seconds (30 days)") {
                $0.retention = try seconds($1, $2)
            },
            key("ws.pingInterval", "ping-interval", "30", "WebSocket ping period, seconds") { $0.pingInterval = try seconds($1, $2) },
            key("ws.closeTimeout", "close-timeout", "15", "seconds to wait for a peer's WebSocket close frame") { $0.closeTimeout = try seconds($1, $2) },
            key("relay.authenticationTimeout", "authentication-timeout", "30", "seconds a connection may stay unauthenticated") {
                $0.authenticationTimeout = try seconds($1, $2)
            },
            key("relay.maxQueuedEnvelopes", "max-queued-envelopes", "10000", "most undelivered envelopes queued for one device") {
                $0.maxQueuedEnvelopes = try integer($1, $2, 1...Int.max)
            },
            key("relay.deliveryWindow", "delivery-window", "1000", "most queue items sent to a connection and not yet acknowledged") {
                $0.deliveryWindow = try integer($1, $2, 1...Int.max)
            },
            key("relay.outboundBufferBytes", "outbound-buffer-bytes", "65536", "bytes buffered for a slow reader before writes wait") {
                $0.outboundBufferBytes = try integer($1, $2, 1...Int.max)
            },
            key("relay.writeTimeout", "write-timeout", "30", "seconds a write may wait for a peer that does not read (then closed)") {
                $0.writeTimeout = try seconds($1, $2)
            },
            key("relay.linkLifetime", "link-lifetime", "600", "seconds a pairing message (LinkPut) is kept unless taken") {
                $0.linkLifetime = try seconds($1, $2)
            },
            key("tls.certificate", "tls-cert", "", "PEM certificate chain; with tls.key the relay serves wss:// only") {
                $0.tlsCertificatePath = try text($1, $2)
            },
            key("tls.key", "tls-key", "", "PEM private key of tls.certificate") { $0.tlsKeyPath = try text($1, $2) },
            key("metrics.enabled", "metrics", "on", "serve Prometheus text at GET /metrics (on or off)") { $0.metricsEnabled = try boolean($1, $2) },
            key("limits.enabled", "rate-limits", "on", "off switches every rate limit off (load tests)") { $0.rateLimits.enabled = try boolean($1, $2) },
            // The blob store (protocol/attachments.md 4.5).
            key("blob.dir", "blob-dir", "", "directory of the blob files (created 0700, files 0600); default flitz-blobs beside the database") {
                $0.blobDirectory = try text($1, $2)
            },
            key("blob.maxBytes", "blob-max-bytes", "104857600", "the blob limit, bytes of ciphertext (100 MiB)") {
                $0.maxBlobBytes = Int64(try integer($1, $2, 1...Int.max))
            },
            key("blob.quotaBytes", "blob-quota-bytes", "1073741824", "per account, most bytes of unfinished uploads and stored blobs (1 GiB)") {
                $0.blobQuotaBytes = Int64(try integer($1, $2, 1...Int.max))
            },
            key("blob.uploadExpirySeconds", "blob-upload-expiry", "86400", "seconds after its creation an unfinished upload is deleted (24 hours)") {
                $0.uploadExpiry = try seconds($1, $2)
            },
            key("blob.bodyTimeoutSeconds", "blob-body-timeout", "60", "seconds without a byte after which an upload body is abandoned and its connection closed") {
                $0.blobBodyTimeout = try seconds($1, $2)
            },
            // Push wake-ups (protocol/push.md 9).
            key("push.coalesceWindow", "push-coalesce-window", "60", "seconds without a further urgent wake-up of a device after one, unless it connects") {
                $0.push.coalesceWindow = try seconds($1, $2)
            },
            key("push.ringBurst", "push-ring-burst", "3", "most ring wake-ups of one device at once; one more per push.ringInterval") {
                $0.push.ringBurst = try integer($1, $2, 1...1_000)
            },
            key("push.ringInterval", "push-ring-interval", "10", "seconds per further ring wake-up of a device, up to push.ringBurst") {
                $0.push.ringInterval = try seconds($1, $2)
            },
            key("push.vapidKey", "vapid-key", "", "VAPID P-256 private key, PEM text or a PEM file; none: made on first start and kept in the database") {
                $0.push.vapidKey = try text($1, $2)
            },
            key("push.vapidSubject", "vapid-subject", "mailto:flitz-relay@localhost", "VAPID sub claim (mailto: or https: URI)") {
                $0.push.vapidSubject = try text($1, $2)
            },
            key("push.apns.keyFile", "apns-key-file", "", "APNs .p8 PEM key file; with the three other push.apns keys APNs is on") {
                $0.push.apnsKeyFile = try text($1, $2)
            },
            key("push.apns.keyId", "apns-key-id", "", "APNs key id (JWT kid)") { $0.push.apnsKeyID = try text($1, $2) },
            key("push.apns.teamId", "apns-team-id", "", "Apple team id (JWT iss)") { $0.push.apnsTeamID = try text($1, $2) },
            key("push.apns.topic", "apns-topic", "", "the app's bundle id (apns-topic)") { $0.push.apnsTopic = try text($1, $2) },
            key("push.apns.url", "apns-url", "https://api.push.apple.com", "APNs base URL") { $0.push.apnsURL = try url($1, $2) },
            key("push.fcm.serviceAccount", "fcm-service-account", "", "FCM service account JSON file; set: FCM is on") {
                $0.push.fcmServiceAccount = try text($1, $2)
            },
            key("push.fcm.url", "fcm-url", "https://fcm.googleapis.com", "FCM base URL") { $0.push.fcmURL = try url($1, $2) },
            key("push.caFile", "push-ca-file", "", "extra PEM CA certificates trusted for push services (tests)") { $0.push.caFile = try text($1, $2) },
            key("push.allowPrivateEndpoints", "push-allow-private-endpoints", "off", "on: devices may register Web Push URLs on loopback or private addresses (http on loopback); for local tests only") {
                $0.push.allowPrivateEndpoints = try boolean($1, $2)
            },
            key("push.retryBase", "push-retry-base", "1", "seconds before the second attempt of a wake-up; doubles per attempt, at most 60") {
                $0.push.retryBase = try seconds($1, $2)
            },
            key("push.maxAttempts", "push-max-attempts", "4", "attempts per wake-up in all") { $0.push.maxAttempts = try integer($1, $2, 1...100) },
            key("push.timeout", "push-timeout", "10", "seconds one push attempt may take before it is retried") { $0.push.timeout = try seconds($1, $2) },
            // Calls (protocol/calls.md 3.5).
            key("turn.uris", "turn-uri", "", "TURN URI handed out with credentials (turn: or turns:); repeatable; needs turn.secret", repeatable: true) {
                $0.turnURIs = try uriList($1, $2, schemes: ["turn", "turns"])
            },
            key("turn.secret", "turn-secret", "", "secret shared with the TURN server (coturn static-auth-secret); never logged") {
                $0.turnSecret = try text($1, $2)
            },
            key("turn.ttlSeconds", "turn-ttl-seconds", "86400", "lifetime of issued TURN credentials, seconds (1 day)") { $0.turnTTL = try seconds($1, $2) },
            key("stun.uris", "stun-uri", "", "STUN URI returned to clients (stun: or stuns:); repeatable; default the TURN URIs' host:port", repeatable: true) {
                $0.stunURIs = try uriList($1, $2, schemes: ["stun", "stuns"])
            },
        ]
        let defaults = RateLimits()
        let meanings: [(RateLimiter.Kind, String, String)] = [
            (.device, "device", "requests of one authenticated device"),
            (.pair, "pair", "envelopes from one sender handle to one recipient handle"),
            (.registerAddress, "register-address", "Register requests from one source address"),
            (.registerHandle, "register-handle", "Register requests for one handle"),
            (.recoverAddress, "recover-address", "Recover requests from one source address"),
            (.recoverHandle, "recover-handle", "Recover requests for one handle"),
            (.linkAddress, "link-address", "RegisterDevice, LinkPut and LinkTake requests from one source address"),
            (.prekeyDevice, "prekey-device", "prekey bundle fetches by one device"),
            (.prekeyHandle, "prekey-handle", "prekey bundle fetches of one target handle"),
            (.uploadCapability, "upload-capability", "RequestUploadCapability requests of one device"),
            (.callOffer, "call-offer", "call offers (SendCallSignal CALL_OFFER) of one device"),
            (.callSignal, "call-signal", "call signals of any kind (SendCallSignal) of one device"),
            (.turnCredentials, "turn-credentials", "RequestTurnCredentials requests of one device"),
        ]
        for (kind, flag, meaning) in meanings {
            let limit = defaults[kind]
            keys.append(key("limits.\(kind).perMinute", "limit-\(flag)-per-minute", format(limit.perMinute), "\(meaning) per minute; 0 = unlimited") {
                $0.rateLimits[kind].perMinute = try number($1, $2)
            })
            keys.append(key("limits.\(kind).burst", "limit-\(flag)-burst", "\(limit.burst)", "bucket size for \(meaning); 0 = unlimited") {
                $0.rateLimits[kind].burst = try integer($1, $2, 0...Int.max)
            })
        }
        return keys
    }()

    /// Resolves the configuration from defaults, a config file, the environment and flags, each overriding the
    /// one before (`README.md`, "Configuration"). The file is `--config FILE` or `$FLITZ_RELAY_CONFIG`: a JSON
    /// object whose keys are the scoped names, flat (`"http.port": 7878`) or nested (`"http": {"port": 7878}`).
    /// - Parameters:
    ///   - arguments: `flitz-relay serve` flags, `--flag VALUE` or `--flag=VALUE`.
    ///   - environment: process environment; unknown `FLITZ_RELAY_*` variables are errors.
    /// - Throws: `ConfigurationError` for an unknown flag, variable or file key, a bad value, or a file that
    ///   cannot be read or is not a JSON object.
    public static func resolve(arguments: [String], environment: [String: String]) throws(ConfigurationError) -> RelayConfiguration {
        let byName = Dictionary(uniqueKeysWithValues: keys.map { ($0.name, $0) })
        let byFlag = Dictionary(uniqueKeysWithValues: keys.map { ($0.flag, $0) })
        let byVariable = Dictionary(uniqueKeysWithValues: keys.map { ($0.environmentVariable, $0) })

        var flags: [(ConfigurationKey, String)] = []
        var configFile = environment[configFileVariable]
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            guard argument.hasPrefix("--"), argument.count > 2 else { throw ConfigurationError("unexpected argument '\(argument)'") }
            var flag = String(argument.dropFirst(2))
            var value: String?
            if let equals = flag.firstIndex(of: "=") {
                value = String(flag[flag.index(after: equals)...])
                flag = String(flag[..<equals])
            }
            // An unknown flag is named as unknown even when it comes last (not as a flag missing its value).
            guard flag == "config" || byFlag[flag] != nil else {
                throw ConfigurationError("unknown option --\(flag) (see flitz-relay serve --help and README.md, \"Configuration\")")
            }
            if value == nil {
                guard index + 1 < arguments.count else { throw ConfigurationError("--\(flag) needs a value") }
                index += 1
                value = arguments[index]
            }
            if flag == "config" {
                configFile = value
            } else if let key = byFlag[flag] {
                flags.append((key, value!))
            } else {
                throw ConfigurationError("unknown option --\(flag) (see flitz-relay serve --help and README.md, \"Configuration\")")
            }
            index += 1
        }

        var configuration = RelayConfiguration()
        if let configFile {
            for (name, value) in try readFile(configFile) {
                guard let key = byName[name] else { throw ConfigurationError("\(configFile): unknown key \"\(name)\"") }
                try key.set(&configuration, value, from: "\"\(name)\" in \(configFile)")
            }
        }
        for (variable, value) in environment.sorted(by: { $0.key < $1.key })
        where (variable.hasPrefix("FLITZ_RELAY_") && variable != configFileVariable) || (byVariable[variable]?.environmentOverride != nil) {
            guard let key = byVariable[variable] else { throw ConfigurationError("unknown environment variable \(variable)") }
            // `FLITZ_POSTGRES_URL=` / `FLITZ_NODE_ID=` (empty, as shells and unit files often leave them) are unset: a
            // SQLite relay reads them too and must still start.
            if key.environmentOverride != nil && value.isEmpty { continue }
            try key.set(&configuration, value, from: variable)
        }
        var repeated: [String: [String]] = [:]
        for (key, value) in flags {
            if key.repeatable {
                repeated[key.name, default: []].append(value)
            } else {
                try key.set(&configuration, value, from: "--\(key.flag)")
            }
        }
        // A repeatable flag's values together replace the key's value from the file or the environment.
        for (name, values) in repeated.sorted(by: { $0.key < $1.key }) {
            guard let key = byName[name] else { continue }
            try key.set(&configuration, values.joined(separator: ","), from: "--\(key.flag)")
        }
        try configuration.validate()
        return configuration
    }

    /// Checks what no single key can: TLS needs both files; APNs needs all four of its keys or none; TURN needs its
    /// URIs and its secret together.
    /// - Throws: `ConfigurationError` naming the keys.
    public func validate() throws(ConfigurationError) {
        if turnURIs.isEmpty != (turnSecret == nil) {
            throw ConfigurationError("turn.uris (--turn-uri) and turn.secret (--turn-secret) must be given together")
        }
        if (tlsCertificatePath == nil) != (tlsKeyPath == nil) {
            throw ConfigurationError("tls.certificate (--tls-cert) and tls.key (--tls-key) must be given together")
        }
        let apns = [push.apnsKeyFile, push.apnsKeyID, push.apnsTeamID, push.apnsTopic]
        if apns.contains(where: { $0 != nil }), apns.contains(where: { $0 == nil }) {
            throw ConfigurationError(
                "push.apns.keyFile (--apns-key-file), push.apns.keyId (--apns-key-id), push.apns.teamId (--apns-team-id) and push.apns.topic (--apns-topic) must be given together")
        }
    }

    // MARK: Parsing

    private static func key(
        _ name: String, _ flag: String, _ defaultValue: String, _ summary: String, repeatable: Bool = false, environment: String? = nil,
        _ apply: @escaping @Sendable (inout RelayConfiguration, String, String) throws -> Void
    ) -> ConfigurationKey {
        ConfigurationKey(
            name: name, flag: flag, defaultValue: defaultValue, summary: summary, repeatable: repeatable, environmentOverride: environment, apply: apply)
    }

    /// A comma-separated list of URIs, each `SCHEME:` (one of `schemes`) followed by a host and no spaces.
    private static func uriList(_ value: String, _ source: String, schemes: [String]) throws(ConfigurationError) -> [String] {
        let items = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !items.isEmpty else { throw ConfigurationError("\(source) must not be empty") }
        for item in items {
            let parts = item.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, schemes.contains(parts[0].lowercased()), !parts[1].isEmpty, !item.contains(where: \.isWhitespace) else {
                throw ConfigurationError("\(source) must be \(schemes.map { "\($0):" }.joined(separator: " or ")) URIs, not '\(item)'")
            }
        }
        return items
    }

    private static func text(_ value: String, _ source: String) throws(ConfigurationError) -> String {
        guard !value.isEmpty else { throw ConfigurationError("\(source) must not be empty") }
        return value
    }

    private static func integer(_ value: String, _ source: String, _ range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
        guard let number = Int(value.trimmingCharacters(in: .whitespaces)), range.contains(number) else {
            throw ConfigurationError("\(source) must be an integer from \(range.lowerBound) to \(range.upperBound), not '\(value)'")
        }
        return number
    }

    private static func seconds(_ value: String, _ source: String) throws(ConfigurationError) -> Duration {
        .seconds(try integer(value, source, 1...Int(Int32.max)))
    }

    private static func url(_ value: String, _ source: String) throws(ConfigurationError) -> String {
        guard let components = URLComponents(string: value), let scheme = components.scheme?.lowercased(), scheme == "https" || scheme == "http",
            components.host?.isEmpty == false
        else { throw ConfigurationError("\(source) must be an http or https URL, not '\(value)'") }
        return value.hasSuffix("/") ? String(value.dropLast()) : value
    }

    private static func number(_ value: String, _ source: String) throws(ConfigurationError) -> Double {
        guard let number = Double(value.trimmingCharacters(in: .whitespaces)), number.isFinite, number >= 0 else {
            throw ConfigurationError("\(source) must be a number of at least 0, not '\(value)'")
        }
        return number
    }

    private static func boolean(_ value: String, _ source: String) throws(ConfigurationError) -> Bool {
        switch value.lowercased() {
        case "on", "true", "yes", "1": return true
        case "off", "false", "no", "0": return false
        default: throw ConfigurationError("\(source) must be on or off, not '\(value)'")
        }
    }

    private static func format(_ number: Double) -> String {
        number == number.rounded() ? String(Int(number)) : String(number)
    }

    /// The file's keys with their values as text, nested objects flattened with dots.
    private static func readFile(_ path: String) throws(ConfigurationError) -> [(String, String)] {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ConfigurationError("cannot read the config file \(path)")
        }
        let root: JSONValue
        do {
            root = try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw ConfigurationError("\(path) is not valid JSON")
        }
        guard case .object = root else { throw ConfigurationError("\(path) must hold a JSON object of configuration keys") }
        var entries: [(String, String)] = []
        func flatten(_ value: JSONValue, _ prefix: String) {
            switch value {
            case .object(let members):
                for (name, member) in members.sorted(by: { $0.key < $1.key }) { flatten(member, prefix.isEmpty ? name : prefix + "." + name) }
            case .string(let text): entries.append((prefix, text))
            case .bool(let flag): entries.append((prefix, flag ? "on" : "off"))
            case .number(let number): entries.append((prefix, format(number)))
            case .array(let items):
                // A list key (turn.uris, stun.uris): its items as a comma-separated list.
                entries.append((prefix, items.compactMap { item -> String? in
                    switch item {
                    case .string(let text): text
                    case .number(let number): format(number)
                    case .bool(let flag): flag ? "on" : "off"
                    case .object, .array: nil
                    }
                }.joined(separator: ",")))
            }
        }
        flatten(root, "")
        return entries
    }
}

/// The JSON a config file may hold: objects of strings, booleans, numbers and arrays of them (list keys).
private enum JSONValue: Decodable {
    case object([String: JSONValue])
    case string(String)
    case bool(Bool)
    case number(Double)
    case array([JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let flag = try? container.decode(Bool.self) {
            self = .bool(flag)
        } else if let number = try? container.decode(Double.self) {
            self = .number(number)
        } else if let text = try? container.decode(String.self) {
            self = .string(text)
        } else if let items = try? container.decode([JSONValue].self) {
            self = .array(items)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }
}
