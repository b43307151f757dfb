import Foundation
import Testing

/// A `flitz` process left running (`devices link`, `listen`, a `call` waiting for an answer); its stdout is
/// a pipe read as it writes (blocking reads, no polling), stderr a file.
final class RunningCommand {
    let process = ChildProcess()
    let stdout = Pipe()
    let stderr: URL
    var text = ""  // what stdout gave so far (extensions in other files read on)

    init(_ arguments: [String], in scratch: Scratch) throws {
        stderr = scratch.path("err-\(UUID().uuidString)")
        _ = FileManager.default.createFile(atPath: stderr.path, contents: nil)
        process.executableURL = Binaries.flitz
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "FLITZ_HOME")
        process.environment = env
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = stdout
        process.standardError = try FileHandle(forWritingTo: stderr)
        try process.run()
        // A guard only: a hung process fails its test instead of hanging CI.
        DispatchQueue.global().asyncAfter(deadline: .now() + 180) { [process] in if process.isRunning { process.terminate() } }
    }

    /// The first stdout line starting with `prefix`, waiting for the process to write it; nil if stdout ends first.
    func line(startingWith prefix: String) -> String? {
        while true {
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }) { return String(line) }
            let chunk = stdout.fileHandleForReading.availableData  // blocks until data or end of file
            if chunk.isEmpty { return nil }
            text += String(decoding: chunk, as: UTF8.self)
        }
    }

    func wait() -> CommandResult {
        text += String(decoding: stdout.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return CommandResult(
            status: process.terminationStatus, stdout: text, stderr: (try? String(contentsOf: stderr, encoding: .utf8)) ?? "")
    }

    deinit { if process.isRunning { process.terminate() } }
}

/// Linking, revoking and deleting from the command line, two terminals and two homes per account, as a user would.
@Suite(.serialized)
struct LinkingTests {
    @Test func linkRevokeAndDeleteThroughTheCLI() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let alice = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
        let laptop = User(name: "alice2", home: scratch.path("alice2"), scratch: scratch)
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
        #expect(try alice.flitz("init", "--relay", relay.url, "--handle", "alice").status == 0)
        #expect(try bob.flitz("init", "--relay", relay.url, "--handle", "bob").status == 0)

        // Terminal 1: the primary waits with a pairing code. Terminal 2: the new device uses it.
        let link = try RunningCommand(["devices", "link", "--yes", "--timeout", "60", "--home", alice.home.path], in: scratch)
        let codeLine = try #require(link.line(startingWith: "pairing code: "), "\(link.wait())")
        let code = String(codeLine.dropFirst("pairing code: ".count))
        #expect(code.hasPrefix("FLITZLINK1:"))
        let joined = try laptop.flitz("init", "--link", code, "--relay", relay.url, "--timeout", "60")
        #expect(joined.status == 0, "\(joined)")
        #expect(joined.lines.last == "linked as device 2 of alice", "\(joined)")
        let primary = link.wait()
        #expect(primary.status == 0, "\(primary)")
        // Both terminals showed the same fingerprint.
        let shownByLaptop = try #require(joined.lines.first { $0.hasPrefix("this device's fingerprint: ") })
        let shownByPrimary = try #require(primary.lines.first { $0.hasPrefix("new device's fingerprint: ") })
        #expect(shownByLaptop.split(separator: ":")[1].prefix(20) == shownByPrimary.split(separator: ":")[1].prefix(20))

        let devices = try laptop.flitz("devices")
        #expect(devices.status == 0, "\(devices)")
        #expect(devices.lines.count == 2)
        #expect(devices.lines[0].hasPrefix("1  ") && devices.lines[0].contains("primary") && !devices.lines[0].contains("this device"))
        #expect(devices.lines[1].hasPrefix("2  ") && devices.lines[1].contains("this device"))

        // A message from bob reaches both; one from the laptop shows on the phone as sent by "you".
        #expect(try bob.flitz("send", "alice", "hi both").status == 0)
        #expect(try alice.flitz("receive").lines == ["[request] bob: hi both"])
        #expect(try laptop.flitz("receive").lines == ["[request] bob: hi both"])
        #expect(try laptop.flitz("send", "bob", "from the laptop").status == 0)
        #expect(try bob.flitz("receive").lines == ["alice: from the laptop"])
        #expect(try alice.flitz("receive").lines == ["you → bob: from the laptop"])
        #expect(try alice.flitz("receive", "--json").lines.isEmpty, "nothing twice")
        #expect(try laptop.flitz("send", "bob", "second from the laptop").status == 0)
        let json = try alice.flitz("receive", "--json")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], "\(json)")
        #expect(object["to"] as? String == "bob" && object["from"] as? String == "alice" && object["text"] as? String == "second from the laptop")

        // Revoking: only the primary, never itself; the removed laptop stops.
        #expect(try laptop.flitz("devices", "remove", "1").status == 1)
        #expect(try alice.flitz("devices", "remove", "1").status == 1)
        let removed = try alice.flitz("devices", "remove", "2")
        #expect(removed.status == 0, "\(removed)")
        #expect(try alice.flitz("devices").lines.count == 1)
        #expect(try bob.flitz("send", "alice", "only the phone").status == 0)
        #expect(try alice.flitz("receive").lines == ["bob: only the phone"])
        #expect(try laptop.flitz("receive").status != 0)

        // Deleting the account: bob then gets a clear error, exit 3.
        #expect(try alice.flitz("account", "delete").status == 1, "asks, and stdin is empty: not deleted")
        #expect(try alice.flitz("account", "delete", "--yes").status == 0)
        let refused = try bob.flitz("send", "alice", "anyone there?")
        #expect(refused.status == 3, "\(refused)")
        #expect(refused.stderr.contains("no such handle alice (deleted or never registered)"), "\(refused)")
    }

    @Test func aWrongPairingCodeIsRefusedLocally() throws {
        let scratch = try Scratch()
        let home = User(name: "new", home: scratch.path("new"), scratch: scratch)
        let result = try home.flitz("init", "--link", "FLITZLINK1:TOOSHORT", "--relay", "ws://127.0.0.1:1")
        #expect(result.status == 1, "\(result)")
        #expect(result.stderr.contains("pairing code"), "\(result)")
    }
}
