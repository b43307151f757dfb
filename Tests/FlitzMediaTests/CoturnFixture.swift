import Crypto
import FlitzCrypto
@testable import FlitzMedia
import Foundation
import Testing

/// A real coturn on loopback, started and stopped by scripts/coturn.sh, with the relay's REST-API credentials
/// (protocol/calls.md 3.5) computed here exactly as the relay computes them.
final class Coturn: @unchecked Sendable {
    static let realm = "flitz.test"
    let port: UInt16
    let secret: String
    private let state: URL

    static var repositoryRoot: URL {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        fatalError("no Package.swift above \(#filePath)")
    }

    init() throws {
        secret = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        state = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-coturn-\(UUID().uuidString)")
        let output = try Self.run(["start", state.path, secret, Self.realm])
        port = try #require(UInt16(output.trimmingCharacters(in: .whitespacesAndNewlines)), "coturn.sh printed \(output)")
    }

    func stop() {
        _ = try? Self.run(["stop", state.path])
        try? FileManager.default.removeItem(at: state)
    }

    /// username = expiry ":" base64url(16 random bytes), password = base64(HMAC-SHA-1(secret, username)).
    func server(ttl: Int = 86_400) -> TURNServer {
        let id = Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        let username = "\(Int(Date().timeIntervalSince1970) + ttl):\(id)"
        let mac = HMAC<Insecure.SHA1>.authenticationCode(for: Data(username.utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return TURNServer(host: "127.0.0.1", port: port, username: username, password: Data(mac).base64EncodedString())
    }

    private static func run(_ arguments: [String]) throws -> String {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [repositoryRoot.appendingPathComponent("scripts/coturn.sh").path] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw MediaError(.turn, "scripts/coturn.sh \(arguments.first ?? "") exited \(process.terminationStatus)")
        }
        return String(decoding: output, as: UTF8.self)
    }
}

struct TimedOut: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Runs `body`, failing after `seconds` (a guard against hangs, never a measurement).
func within<T: Sendable>(_ seconds: Int, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            throw TimedOut(what: what)
        }
        let result = try await group.next()!
        group.cancelAll()
        return result
    }
}

