import FlitzRelay
import Foundation
import Testing

/// Configuration from flags, environment and a JSON file (`README.md`, "Configuration").
@Suite struct ConfigurationTests {
    /// Writes `json` to a temporary file and returns its path.
    func configFile(_ json: String) throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-config-\(UUID().uuidString).json")
        try Data(json.utf8).write(to: url)
        return url.path
    }

    @Test func flagsOverrideEnvironmentWhichOverridesTheFileWhichOverridesDefaults() throws {
        let file = try configFile("""
            {"http.port": 1111, "http": {"host": "0.0.0.0"}, "limits.device.burst": 5, "limits.pair.perMinute": 90,
             "metrics.enabled": false, "relay.retention": 3600}
            """)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let environment = ["FLITZ_RELAY_HTTP_PORT": "2222", "FLITZ_RELAY_LIMITS_DEVICE_BURST": "7", "PATH": "/usr/bin"]
        let configuration = try RelayConfiguration.resolve(
            arguments: ["--config", file, "--port", "3333", "--limit-pair-per-minute=120.5"], environment: environment)
        #expect(configuration.port == 3333)  // flag over environment over file
        #expect(configuration.rateLimits.device.burst == 7)  // environment over file
        #expect(configuration.rateLimits.pair.perMinute == 120.5)  // flag over file
        #expect(configuration.host == "0.0.0.0")  // file (nested) over default
        #expect(configuration.metricsEnabled == false)
        #expect(configuration.retention == .seconds(3_600))
        #expect(configuration.databasePath == "./flitz-relay.sqlite")  // default
        #expect(configuration.rateLimits.registerAddress == RateLimits().registerAddress)
    }

    @Test func blobKeysHaveTheirDefaultsAndCanBeSet() throws {
        let defaults = try RelayConfiguration.resolve(arguments: ["--database", "/srv/flitz/relay.sqlite"], environment: [:])
        #expect(defaults.blobDirectory == nil)
        #expect(defaults.resolvedBlobDirectory == "/srv/flitz/flitz-blobs")  // beside the database (attachments.md 4.5)
        #expect(defaults.maxBlobBytes == 104_857_600)
        #expect(defaults.blobQuotaBytes == 1_073_741_824)
        #expect(defaults.uploadExpiry == .seconds(86_400))
        #expect(defaults.blobBodyTimeout == .seconds(60))
        #expect(defaults.rateLimits.uploadCapability == RateLimit(perMinute: 60, burst: 60))
        let set = try RelayConfiguration.resolve(
            arguments: ["--blob-dir", "/var/blobs", "--blob-max-bytes", "4096", "--blob-upload-expiry=60", "--blob-body-timeout", "5", "--limit-upload-capability-burst", "2"],
            environment: ["FLITZ_RELAY_BLOB_QUOTA_BYTES": "8192"])
        #expect(set.resolvedBlobDirectory == "/var/blobs")
        #expect(set.maxBlobBytes == 4_096)
        #expect(set.blobQuotaBytes == 8_192)
        #expect(set.uploadExpiry == .seconds(60))
        #expect(set.blobBodyTimeout == .seconds(5))
        #expect(set.rateLimits.uploadCapability.burst == 2)
        #expect(throws: ConfigurationError.self) { try RelayConfiguration.resolve(arguments: ["--blob-max-bytes", "0"], environment: [:]) }
    }

    @Test func theConfigFileCanComeFromTheEnvironment() throws {
        let file = try configFile(#"{"storage": {"sqlite": {"path": "/tmp/x.sqlite"}}}"#)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let configuration = try RelayConfiguration.resolve(arguments: [], environment: ["FLITZ_RELAY_CONFIG": file])
        #expect(configuration.databasePath == "/tmp/x.sqlite")
    }

    @Test func rateLimitsCanBeSwitchedOffForLoadTests() throws {
        #expect(try RelayConfiguration.resolve(arguments: ["--rate-limits", "off"], environment: [:]).rateLimits.enabled == false)
        #expect(try RelayConfiguration.resolve(arguments: [], environment: ["FLITZ_RELAY_LIMITS_ENABLED": "false"]).rateLimits.enabled == false)
        #expect(try RelayConfiguration.resolve(arguments: [], environment: [:]).rateLimits.enabled == true)
    }

    @Test func unknownKeysFlagsAndVariablesAreRejectedByName() throws {
        let file = try configFile(#"{"http": {"prot": 80}}"#)
        defer { try? FileManager.default.removeItem(atPath: file) }
        #expect(throws: ConfigurationError("\(file): unknown key \"http.prot\"")) {
            try RelayConfiguration.resolve(arguments: ["--config", file], environment: [:])
        }
        #expect(throws: ConfigurationError.self) { try RelayConfiguration.resolve(arguments: ["--prot", "80"], environment: [:]) }
        // Last on the line, with no value after it, an unknown flag is still named as unknown.
        #expect(throws: ConfigurationError("unknown option --verbose (see flitz-relay serve --help and README.md, \"Configuration\")")) {
            try RelayConfiguration.resolve(arguments: ["--port", "0", "--verbose"], environment: [:])
        }
        #expect(throws: ConfigurationError("--port needs a value")) { try RelayConfiguration.resolve(arguments: ["--port"], environment: [:]) }
        #expect(throws: ConfigurationError("unknown environment variable FLITZ_RELAY_HTTP_PROT")) {
            try RelayConfiguration.resolve(arguments: [], environment: ["FLITZ_RELAY_HTTP_PROT": "80"])
        }
    }

    @Test func badValuesAndFilesAreClearErrors() throws {
        #expect(throws: ConfigurationError("--port must be an integer from 0 to 65535, not '70000'")) {
            try RelayConfiguration.resolve(arguments: ["--port", "70000"], environment: [:])
        }
        #expect(throws: ConfigurationError("FLITZ_RELAY_METRICS_ENABLED must be on or off, not 'maybe'")) {
            try RelayConfiguration.resolve(arguments: [], environment: ["FLITZ_RELAY_METRICS_ENABLED": "maybe"])
        }
        #expect(throws: ConfigurationError("tls.certificate (--tls-cert) and tls.key (--tls-key) must be given together")) {
            try RelayConfiguration.resolve(arguments: ["--tls-cert", "/x.pem"], environment: [:])
        }
        #expect(throws: ConfigurationError("cannot read the config file /nonexistent/flitz.json")) {
            try RelayConfiguration.resolve(arguments: ["--config", "/nonexistent/flitz.json"], environment: [:])
        }
        let array = try configFile("[1, 2]")
        defer { try? FileManager.default.removeItem(atPath: array) }
        #expect(throws: ConfigurationError.self) { try RelayConfiguration.resolve(arguments: ["--config", array], environment: [:]) }
    }

    @Test func pushKeysComeFromFlagsEnvironmentAndFile() throws {
        let file = try configFile(#"""
            {"push": {"coalesceWindow": 30, "vapidSubject": "mailto:ops@example.org", "apns": {"url": "https://apns.test:4443/"},
             "fcm": {"serviceAccount": "/etc/fcm.json"}, "maxAttempts": 2}}
            """#)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let environment = ["FLITZ_RELAY_PUSH_COALESCE_WINDOW": "45", "FLITZ_RELAY_PUSH_CA_FILE": "/etc/ca.pem", "FLITZ_RELAY_PUSH_MAX_ATTEMPTS": "3"]
        let configuration = try RelayConfiguration.resolve(
            arguments: ["--config", file, "--push-coalesce-window", "90", "--push-retry-base=2", "--push-timeout", "5", "--vapid-key", "/etc/vapid.pem",
                "--apns-key-file", "/k.p8", "--apns-key-id", "KID", "--apns-team-id", "TEAM", "--apns-topic", "org.example.app"],
            environment: environment)
        let push = configuration.push
        #expect(push.coalesceWindow == .seconds(90))  // flag over environment over file
        #expect(push.maxAttempts == 3)  // environment over file
        #expect(push.vapidSubject == "mailto:ops@example.org")  // file
        #expect(push.apnsURL == "https://apns.test:4443")  // file, trailing slash dropped
        #expect(push.fcmServiceAccount == "/etc/fcm.json" && push.fcmEnabled)
        #expect(push.caFile == "/etc/ca.pem")
        #expect(push.retryBase == .seconds(2) && push.timeout == .seconds(5) && push.vapidKey == "/etc/vapid.pem")
        #expect(push.apnsEnabled && push.apnsTopic == "org.example.app")
        let defaults = try RelayConfiguration.resolve(arguments: [], environment: [:]).push
        #expect(defaults == PushConfiguration())
        #expect(defaults.coalesceWindow == .seconds(60) && defaults.retryBase == .seconds(1) && defaults.maxAttempts == 4)
        #expect(defaults.timeout == .seconds(10) && defaults.vapidSubject == "mailto:flitz-relay@localhost")
        #expect(defaults.apnsURL == "https://api.push.apple.com" && defaults.fcmURL == "https://fcm.googleapis.com")
        #expect(!defaults.apnsEnabled && !defaults.fcmEnabled && defaults.vapidKey == nil && defaults.caFile == nil)
        // push.allowPrivateEndpoints: off unless set, by flag, environment or file.
        #expect(!defaults.allowPrivateEndpoints)
        #expect(try RelayConfiguration.resolve(arguments: ["--push-allow-private-endpoints", "on"], environment: [:]).push.allowPrivateEndpoints)
        #expect(try RelayConfiguration.resolve(arguments: [], environment: ["FLITZ_RELAY_PUSH_ALLOW_PRIVATE_ENDPOINTS": "true"]).push.allowPrivateEndpoints)
        let allowFile = try configFile(#"{"push": {"allowPrivateEndpoints": true}}"#)
        defer { try? FileManager.default.removeItem(atPath: allowFile) }
        #expect(try RelayConfiguration.resolve(arguments: ["--config", allowFile], environment: [:]).push.allowPrivateEndpoints)
        #expect(try !RelayConfiguration.resolve(arguments: ["--config", allowFile, "--push-allow-private-endpoints=off"], environment: [:]).push.allowPrivateEndpoints)
        #expect(throws: ConfigurationError.self) { try RelayConfiguration.resolve(arguments: ["--push-allow-private-endpoints", "maybe"], environment: [:]) }
        // APNs needs its four keys together; URLs must be http(s).
        #expect(throws: ConfigurationError.self) { try RelayConfiguration.resolve(arguments: ["--apns-key-id", "KID"], environment: [:]) }
        #expect(throws: ConfigurationError.self) { try RelayConfiguration.resolve(arguments: ["--fcm-url", "ftp://x"], environment: [:]) }
        #expect(throws: ConfigurationError.self) { try RelayConfiguration.resolve(arguments: ["--push-max-attempts", "0"], environment: [:]) }
    }

    @Test func pushBackoffDoublesHonoursRetryAfterAndIsCapped() {
        var push = PushConfiguration()
        #expect(push.backoff(afterAttempt: 1, retryAfter: nil) == .seconds(1))
        #expect(push.backoff(afterAttempt: 2, retryAfter: nil) == .seconds(2))
        #expect(push.backoff(afterAttempt: 3, retryAfter: .seconds(3)) == .seconds(4))
        #expect(push.backoff(afterAttempt: 2, retryAfter: .seconds(30)) == .seconds(30))
        #expect(push.backoff(afterAttempt: 1, retryAfter: .seconds(3_600)) == .seconds(60))
        push.retryBase = .seconds(10)
        #expect(push.backoff(afterAttempt: 4, retryAfter: nil) == .seconds(60))
        #expect(push.backoff(afterAttempt: 40, retryAfter: nil) == .seconds(60))
    }

    @Test func everyKeyIsDocumentedInTheReadme() throws {
        let readme = try String(
            contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../README.md").standardized,
            encoding: .utf8)
        for key in RelayConfiguration.keys {
            #expect(readme.contains("| `\(key.name)` | `--\(key.flag)` | `\(key.environmentVariable)` |"), "\(key.name)")
        }
    }
}
