import Foundation
import Testing

/// Locates the built `flitz` and `flitz-relay` executables (built with the tests, since this target
/// depends on them) and runs them as separate processes, as a user would.
enum Binaries {
    static let directory: URL = {
        let candidates = [
            Bundle.main.executableURL?.deletingLastPathComponent(),
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),
            packageRoot.appendingPathComponent(".build/debug"),
        ].compactMap { $0 }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.appendingPathComponent("flitz-relay").path) }
            ?? candidates.last!
    }()

    static let packageRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        fatalError("no Package.swift above \(#filePath)")
    }()

    static var flitz: URL { directory.appendingPathComponent("flitz") }
    static var relay: URL { directory.appendingPathComponent("flitz-relay") }
}

/// A scratch directory deleted when the test ends.
final class Scratch {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-e2e-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
    func path(_ name: String) -> URL { url.appendingPathComponent(name) }
}

struct CommandResult: CustomStringConvertible {
    let status: Int32
    let stdout: String
    let stderr: String
    var lines: [String] { stdout.split(separator: "\n").map(String.init) }
    var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
}

/// Runs an executable to completion with stdout and stderr captured in files (no pipe deadlocks).
/// A process still running after `timeout` seconds is terminated (a hung command fails its test, not CI).
func runProcess(
    _ executable: URL, _ arguments: [String], environment: [String: String] = [:], in scratch: Scratch, timeout: Double = 120
) throws -> CommandResult {
    let id = UUID().uuidString
    let out = scratch.path("out-\(id)"), err = scratch.path("err-\(id)")
    _ = FileManager.default.createFile(atPath: out.path, contents: nil)
    _ = FileManager.default.createFile(atPath: err.path, contents: nil)
    let process = ChildProcess()
    process.executableURL = executable
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    env.removeValue(forKey: "FLITZ_HOME")
    for (key, value) in environment { env[key] = value }
    process.environment = env
    process.standardInput = FileHandle.nullDevice
    process.standardOutput = try FileHandle(forWritingTo: out)
    process.standardError = try FileHandle(forWritingTo: err)
    try process.run()
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { [process] in
        if process.isRunning { process.terminate() }
    }
    process.waitUntilExit()
    return CommandResult(
        status: process.terminationStatus,
        stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
}

/// One person: a `flitz` home directory.
struct User {
    let name: String
    let home: URL
    let scratch: Scratch

    @discardableResult
    func flitz(_ arguments: String...) throws -> CommandResult {
        try runProcess(Binaries.flitz, Array(arguments) + ["--home", home.path], in: scratch)
    }
}

/// A running `flitz-relay serve` on a free loopback port with its own database and log file.
final class RelayProcess {
    let process = ChildProcess()
    let port: Int
    let log: URL
    var url: String { "ws://127.0.0.1:\(port)" }

    init(database: URL, log: URL, port requestedPort: Int = 0, arguments: [String] = [], environment: [String: String] = [:]) throws {
        self.log = log
        port = try Self.launch(
            process, log: log, arguments: ["serve", "--port", String(requestedPort), "--database", database.path, "--log-level", "debug"] + arguments,
            environment: environment)
    }

    /// A cluster node (protocol/cluster.md): `serve --postgres URL --node-id ID`, blobs in `blobDirectory` (every node
    /// of a cluster shares one), a 1-second periodic check unless `arguments` sets another.
    init(
        postgres url: String, nodeID: String, blobDirectory: URL, log: URL, port requestedPort: Int = 0, arguments: [String] = [],
        environment: [String: String] = [:]
    ) throws {
        self.log = log
        let check = arguments.contains("--cluster-check-seconds") ? [] : ["--cluster-check-seconds", "1"]
        port = try Self.launch(
            process, log: log,
            arguments: ["serve", "--port", String(requestedPort), "--postgres", url, "--node-id", nodeID, "--blob-dir", blobDirectory.path, "--log-level", "debug"]
                + check + arguments,
            environment: environment)
    }

    /// Starts `process` as `flitz-relay ARGUMENTS` (stderr appended to `log`) and returns the port it printed.
    private static func launch(_ process: ChildProcess, log: URL, arguments: [String], environment: [String: String]) throws -> Int {
        if !FileManager.default.fileExists(atPath: log.path) { _ = FileManager.default.createFile(atPath: log.path, contents: nil) }
        let logHandle = try FileHandle(forWritingTo: log)
        logHandle.seekToEndOfFile()
        let stdout = Pipe()
        process.executableURL = Binaries.relay
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        process.standardOutput = stdout
        process.standardError = logHandle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // The relay prints "listening on HOST:PORT" once bound; read until then (bounded by EOF).
        var buffer = Data()
        var found: Int?
        while found == nil {
            let chunk = stdout.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            buffer.append(chunk)
            let text = String(decoding: buffer, as: UTF8.self)
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("listening on ") }),
                let portText = line.split(separator: ":").last
            {
                found = Int(portText)
            }
        }
        guard let found else {
            process.terminate()
            throw RelayStartError(log: (try? String(contentsOf: log, encoding: .utf8)) ?? "")
        }
        return found
    }

    /// SIGTERM, then wait for the graceful shutdown.
    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    deinit { stop() }
}

struct RelayStartError: Error, CustomStringConvertible {
    let log: String
    var description: String { "flitz-relay did not start:\n\(log)" }
}

/// Whether any file under `files` contains `needle` as raw bytes.
func anyFile(_ files: [URL], contains needle: String) -> URL? {
    let bytes = Data(needle.utf8)
    return files.first { url in
        guard let data = try? Data(contentsOf: url) else { return false }
        return data.range(of: bytes) != nil
    }
}
