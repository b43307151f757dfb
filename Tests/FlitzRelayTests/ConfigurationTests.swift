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

    @Test func everyKeyIsDocumentedInTheReadme() throws {
        let readme = try String(
            contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../README.md").standardized,
            encoding: .utf8)
        for key in RelayConfiguration.keys {
            #expect(readme.contains("| `\(key.name)` | `--\(key.flag)` | `\(key.environmentVariable)` |"), "\(key.name)")
        }
    }
}
