import FlitzTestSupport
import Foundation
import Logging
import Testing

@testable import FlitzRelay

/// The cluster keys of `protocol/cluster.md` 2: flags, environment variables and file keys, and the errors of a bad
/// URL or node id (never echoing the URL's password).
struct ClusterConfigurationTests {
    @Test func keysFromFlagsEnvironmentAndFile() throws {
        let flags = try RelayConfiguration.resolve(
            arguments: ["--postgres", "postgres://relay:pw@db.example/flitz", "--node-id", "node-a.1", "--cluster-check-seconds", "7"], environment: [:])
        #expect(flags.postgresURL == "postgres://relay:pw@db.example/flitz")
        #expect(flags.nodeID == "node-a.1" && flags.resolvedNodeID == "node-a.1")
        #expect(flags.clusterCheckInterval == .seconds(7))

        let environment = try RelayConfiguration.resolve(
            arguments: [], environment: ["FLITZ_POSTGRES_URL": "postgres://relay@db/flitz", "FLITZ_NODE_ID": "n2", "FLITZ_RELAY_CLUSTER_CHECK_SECONDS": "3"])
        #expect(environment.postgresURL == "postgres://relay@db/flitz" && environment.nodeID == "n2")
        #expect(environment.clusterCheckInterval == .seconds(3))

        let file = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-cluster-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: file) }
        try Data(#"{"storage": {"postgres": {"url": "postgres://relay@db/f"}}, "cluster": {"nodeID": "n3", "checkSeconds": 9}}"#.utf8).write(to: file)
        let fromFile = try RelayConfiguration.resolve(arguments: ["--config", file.path], environment: [:])
        #expect(fromFile.postgresURL == "postgres://relay@db/f" && fromFile.nodeID == "n3" && fromFile.clusterCheckInterval == .seconds(9))

        // Defaults: SQLite, a node id of the host name and the port, a check every 5 s.
        let defaults = try RelayConfiguration.resolve(arguments: ["--port", "7001"], environment: [:])
        #expect(defaults.postgresURL == nil && defaults.clusterCheckInterval == .seconds(5))
        #expect(defaults.resolvedNodeID.hasSuffix("-7001") && RelayConfiguration.isValidNodeID(defaults.resolvedNodeID))
    }

    @Test func emptyClusterVariablesAreUnset() throws {
        let configuration = try RelayConfiguration.resolve(arguments: ["--port", "7001"], environment: ["FLITZ_POSTGRES_URL": "", "FLITZ_NODE_ID": ""])
        #expect(configuration.postgresURL == nil && configuration.nodeID == nil)
        #expect(configuration.resolvedNodeID.hasSuffix("-7001"))
    }

    @Test func badNodeIDIsRefused() {
        for bad in ["", "has space", String(repeating: "a", count: 65), "node/1"] {
            #expect(throws: ConfigurationError.self) { try RelayConfiguration.resolve(arguments: ["--node-id", bad], environment: [:]) }
        }
    }

    @Test func badURLIsRefusedWithoutItsPassword() async throws {
        for url in ["mysql://relay:hunter2@db/flitz", "postgres://relay:hunter2@db/flitz?sslmode=sometimes", "postgres://relay:hunter2@db"] {
            var configuration = RelayConfiguration(port: 0)
            configuration.postgresURL = url
            do {
                _ = try await buildRelay(configuration: configuration, logger: Logger(label: "test"))
                Issue.record("\(url) was accepted")
            } catch {
                let text = "\(error)"
                #expect(error is ConfigurationError, "\(text)")
                #expect(text.contains("storage.postgres.url") && !text.contains("hunter2"), "\(text)")
            }
        }
    }

    /// A wrong role or database, or a server that is down, ends the start at once with PostgreSQL's reason (the
    /// pool alone would retry until the 60 s start timeout); never the password.
    @Test func anUnusableDatabaseFailsTheStartWithItsReason() async throws {
        let maintenance = try await TestPostgres.maintenanceURL()
        let cases = [
            (try TestPostgres.url(maintenance, database: "flitz_no_such_database"), "3D000"),
            (maintenance.replacingOccurrences(of: "://flitz@", with: "://nobody:hunter2@"), "28"),
            ("postgres://flitz:hunter2@127.0.0.1:1/flitz?sslmode=disable", "cannot connect"),
        ]
        for (url, reason) in cases {
            var configuration = RelayConfiguration(port: 0)
            configuration.postgresURL = url
            do {
                _ = try await buildRelay(configuration: configuration, logger: Logger(label: "test"))
                Issue.record("a relay started on \(reason)")
            } catch {
                let text = "\(error)"
                // The reason comes from the connection itself, not the start timeout's "no answer within 60 s".
                #expect(text.contains(reason) && !text.contains("no answer within") && !text.contains("hunter2"), "\(text)")
            }
        }
    }
}
