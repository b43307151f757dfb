import Foundation
import Testing

/// `flitz-relay serve` configuration and TLS, and `flitz --ca-file`, as an operator and a user run them.
@Suite(.serialized)
struct RelayOperationsCommandTests {
    static let tls = Binaries.packageRoot.appendingPathComponent("Tests/Fixtures/tls")

    @Test func wssWithTheCAFileWorksAndWithoutItFailsWithACertificateError() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(
            database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"),
            arguments: ["--tls-cert", Self.tls.appendingPathComponent("server.pem").path],
            environment: ["FLITZ_RELAY_TLS_KEY": Self.tls.appendingPathComponent("server-key.pem").path])
        defer { relay.stop() }
        let url = "wss://localhost:\(relay.port)"
        let alice = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
        let ca = Self.tls.appendingPathComponent("ca.pem").path

        let refused = try alice.flitz("init", "--relay", url, "--handle", "alice")
        #expect(refused.status == 2, "\(refused)")
        #expect(refused.stderr.contains("TLS certificate is not trusted"), "\(refused)")

        #expect(try alice.flitz("init", "--relay", url, "--handle", "alice", "--ca-file", ca).status == 0)
        #expect(try bob.flitz("init", "--relay", url, "--handle", "bob", "--ca-file", ca).status == 0)
        let sent = try alice.flitz("send", "bob", "over tls", "--ca-file", ca)
        #expect(sent.status == 0, "\(sent)")
        let received = try runProcess(
            Binaries.flitz, ["receive", "--home", bob.home.path], environment: ["FLITZ_CA_FILE": ca], in: scratch)
        #expect(received.lines == ["[request] alice: over tls"], "\(received)")
    }

    @Test func unknownConfigKeysStopTheRelayWithTheirName() throws {
        let scratch = try Scratch()
        let config = scratch.path("relay.json")
        try Data(#"{"http": {"port": 0}, "limits": {"device": {"brust": 5}}}"#.utf8).write(to: config)
        let result = try runProcess(
            Binaries.relay, ["serve", "--config", config.path, "--database", scratch.path("relay.sqlite").path], in: scratch, timeout: 30)
        #expect(result.status == 64, "\(result)")
        #expect(result.stderr.contains("unknown key \"limits.device.brust\""), "\(result)")

        let flag = try runProcess(Binaries.relay, ["serve", "--prot", "7878"], in: scratch, timeout: 30)
        #expect(flag.status == 64, "\(flag)")
        #expect(flag.stderr.contains("unknown option --prot"), "\(flag)")
    }

    @Test func aConfigFileSetsThePortAndFlagsOverrideIt() throws {
        let scratch = try Scratch()
        let config = scratch.path("relay.json")
        try Data(#"{"http.port": 1, "limits.enabled": false}"#.utf8).write(to: config)
        // RelayProcess passes --port 0 after the file: the flag wins, so the relay binds a free port.
        let relay = try RelayProcess(
            database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"), arguments: ["--config", config.path])
        defer { relay.stop() }
        #expect(relay.port > 1)
        relay.stop()
        let log = try String(contentsOf: relay.log, encoding: .utf8)
        #expect(log.contains("rate limits are off"), "\(log)")
    }
}
