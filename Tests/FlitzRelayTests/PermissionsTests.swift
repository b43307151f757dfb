#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import FlitzRelay
import FlitzWire
import Foundation
import Testing

/// The permission bits of `path`, or nil when it does not exist.
func permissions(_ path: String) -> mode_t? {
    var status = stat()
    guard stat(path, &status) == 0 else { return nil }
    return status.st_mode & 0o777
}

/// The relay's files are readable by its user only (`protocol/relay.md`, "Storage").
@Suite struct PermissionsTests {
    @Test func databaseFilesAre0600AndANewDirectoryIs0700() async throws {
        // A lax umask must not widen them.
        let previous = umask(0o002)
        defer { umask(previous) }
        try await RelayHarness.run(
            configure: { _ in }, databasePath: { $0.appendingPathComponent("new/relay.sqlite").path }
        ) { relay in
            let alice = TestIdentity("alice")
            try await relay.connect { connection in _ = try await connection.register(TestIdentity("bob")) }
            try await relay.connect { connection in
                _ = try await connection.register(alice)
                try await connection.authenticate(alice)
                _ = try await connection.submit([outgoing(1, to: "bob")])
            }
            let path = relay.databasePath
            #expect(permissions(URL(fileURLWithPath: path).deletingLastPathComponent().path) == 0o700)
            for suffix in ["", "-wal", "-shm", ".lock"] {
                #expect(permissions(path + suffix) == 0o600, "\(path + suffix)")
            }
        }
    }

    @Test func wideFilesLeftByAnEarlierRelayAreTightened() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-perm-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("relay.sqlite").path
        #expect(FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o644]))
        try await RelayHarness.run(configure: { _ in }, databasePath: { _ in path }) { relay in
            #expect(permissions(relay.databasePath) == 0o600)
        }
    }
}
