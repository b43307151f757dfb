import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A pseudo-terminal whose slave side is a child's stdin, so `flitz chat` sees a terminal and sends typing.
final class PseudoTerminal {
    let master: Int32
    let slave: FileHandle

    init() throws {
        // /dev/ptmx, unlocked (TIOCSPTLCK) and numbered (TIOCGPTN): posix_openpt is not visible to Swift here.
        master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        var unlock: CInt = 0, number: CInt = 0
        guard master >= 0, ioctl(master, 0x4004_5431, &unlock) == 0, ioctl(master, 0x8004_5430, &number) == 0 else {
            throw PseudoTerminalError()
        }
        let fd = open("/dev/pts/\(number)", O_RDWR | O_NOCTTY)
        guard fd >= 0 else { throw PseudoTerminalError() }
        slave = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
    }

    /// Types `text` (bytes as a keyboard sends them: `\r` for Enter, `\u{4}` for Ctrl-D).
    func type(_ text: String) {
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { write(master, $0.baseAddress, $0.count) }
    }

    deinit { close(master) }
}

struct PseudoTerminalError: Error {}

/// `flitz chat` reading from a pseudo-terminal, stdout discarded, stderr read through a pipe. Construction returns
/// once chat says it is ready for input (its terminal mode set), so what the test types is read keystroke by keystroke.
final class ChatProcess {
    let process = ChildProcess()
    let terminal: PseudoTerminal
    let stderr = Pipe()
    private var text = ""

    init(_ arguments: [String], in scratch: Scratch) throws {
        terminal = try PseudoTerminal()
        process.executableURL = Binaries.flitz
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "FLITZ_HOME")
        process.environment = env
        process.standardInput = terminal.slave
        process.standardOutput = FileHandle.nullDevice
        process.standardError = stderr
        try process.run()
        while !text.contains("chatting with") {
            let chunk = stderr.fileHandleForReading.availableData  // blocks until data or end of file
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
    }

    /// Waits for the process to end (ended by typing Ctrl-D); a generous guard terminates a hung one. Returns stderr.
    func wait() -> String {
        DispatchQueue.global().asyncAfter(deadline: .now() + 60) { [process] in if process.isRunning { process.terminate() } }
        text += String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return text
    }

    deinit { if process.isRunning { process.terminate() } }
}

/// Whether any of `files` contains `needle` as raw bytes.
func anyFile(_ files: [URL], containsBytes needle: Data) -> URL? {
    files.first { url in (try? Data(contentsOf: url))?.range(of: needle) != nil }
}

/// The relay's database and its SQLite side files.
func databaseFiles(_ database: URL) -> [URL] {
    [database, URL(fileURLWithPath: database.path + "-wal"), URL(fileURLWithPath: database.path + "-shm")]
}

/// Presence and message requests through the real binaries (`protocol/conversations.md` sections 6, 9).
@Suite(.serialized)
struct SignalsCommandTests {
    /// A relay and two users who have written to each other (so neither is a message request).
    static func acquainted(_ scratch: Scratch, relay: RelayProcess) throws -> (User, User) {
        let alice = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
        #expect(try alice.flitz("init", "--relay", relay.url, "--handle", "alice").status == 0)
        #expect(try bob.flitz("init", "--relay", relay.url, "--handle", "bob").status == 0)
        #expect(try alice.flitz("send", "bob", "hi bob").status == 0)
        #expect(try bob.flitz("receive").lines == ["[request] alice: hi bob"], "a first message from a stranger")
        #expect(try bob.flitz("send", "alice", "hi alice").status == 0)
        #expect(try alice.flitz("receive").lines == ["bob: hi alice"])
        return (alice, bob)
    }

    @Test func presenceSharingReciprocityAndRelativeTimes() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let (alice, bob) = try Self.acquainted(scratch, relay: relay)
        #expect(try alice.flitz("presence", "share", "bob").lines == ["sharing presence with bob"])
        #expect(try bob.flitz("presence", "share", "alice").status == 0)
        let listen = try RunningCommand(["listen", "--home", alice.home.path], in: scratch)
        #expect(try bob.flitz("send", "alice", "sync point").status == 0)
        #expect(listen.line(startingWith: "bob: sync point") != nil)
        // bob's chat: a heartbeat at connect, its line, "offline" at its clean end.
        let input = Pipe()
        let chat = ChildProcess()
        chat.executableURL = Binaries.flitz
        chat.arguments = ["chat", "alice", "--home", bob.home.path]
        chat.standardInput = input
        chat.standardError = FileHandle.nullDevice
        chat.standardOutput = FileHandle.nullDevice
        try chat.run()
        input.fileHandleForWriting.write(Data("from chat\n".utf8))
        #expect(listen.line(startingWith: "bob: from chat") != nil)
        #expect(try alice.flitz("presence").lines == ["bob: online"], "the heartbeat came before the line")
        try input.fileHandleForWriting.close()  // end of input: a clean exit
        chat.waitUntilExit()
        #expect(try bob.flitz("send", "alice", "after chat").status == 0)
        #expect(listen.line(startingWith: "bob: after chat") != nil)
        // Last seen is rounded down to 5 minutes, so right after the exit it reads "just now" (or, across a
        // 5-minute boundary, "5 minutes ago").
        let offline = try alice.flitz("presence").lines
        #expect(offline == ["bob: last seen just now"] || offline == ["bob: last seen 5 minutes ago"], "offline on a clean exit: \(offline)")
        let later = try runProcess(
            Binaries.flitz, ["presence", "--home", alice.home.path], environment: ["FLITZ_TEST_CLOCK_OFFSET": "3700"], in: scratch)
        #expect(later.lines == ["bob: last seen 1 hour ago"], "\(later)")
        let days = try runProcess(
            Binaries.flitz, ["presence", "--home", alice.home.path], environment: ["FLITZ_TEST_CLOCK_OFFSET": "\(3 * 86_400)"], in: scratch)
        #expect(days.lines.first?.hasPrefix("bob: last seen on ") == true, "\(days)")
        // Reciprocity: who shares with no one sees no one.
        #expect(try alice.flitz("presence", "hide").lines == ["presence hidden"])
        let hidden = try alice.flitz("presence")
        #expect(hidden.lines.isEmpty && hidden.stderr.contains("you see no one's"), "\(hidden)")
        listen.process.terminate()
        _ = listen.wait()
    }

    @Test func requestsWithholdReceiptsUntilAccepted() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let alice = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
        for (user, handle) in [(alice, "alice"), (bob, "bob")] {
            #expect(try user.flitz("init", "--relay", relay.url, "--handle", handle).status == 0)
        }
        let id = try #require(try alice.flitz("send", "bob", "hello stranger").lines.first)
        #expect(try bob.flitz("receive").lines == ["[request] alice: hello stranger"])
        #expect(try alice.flitz("status", id).lines == ["delivered"], "no seen receipt for a request")
        #expect(try bob.flitz("requests").lines.first?.hasPrefix("alice: 1 message") == true)
        #expect(try bob.flitz("accept", "alice").lines == ["accepted alice"])
        #expect(try bob.flitz("receive").lines.isEmpty)
        #expect(try alice.flitz("status", id).lines == ["seen"])
    }
}

/// Typing, scheduled send, block, decline and reports through the real binaries (`protocol/conversations.md`
/// sections 6, 8, 9, 10): they need the relay's side of conversations.md (online-only forwarding, scheduled
/// release and cancel, block lists, reports).
@Suite(.serialized)
struct SignalsRelayCommandTests {
    @Test func typingReachesAConnectedDeviceOnlyAndIsNeverStored() throws {
        let scratch = try Scratch()
        let database = scratch.path("relay.sqlite")
        let relay = try RelayProcess(database: database, log: scratch.path("relay.log"))
        defer { relay.stop() }
        let (alice, bob) = try SignalsCommandTests.acquainted(scratch, relay: relay)

        let listen = try RunningCommand(["listen", "--json", "--home", bob.home.path], in: scratch)
        // The listener is connected once its heartbeat-free start has drained: wait for a message through it.
        #expect(try alice.flitz("send", "bob", "are you there").status == 0)
        #expect(listen.line(startingWith: "{\"from\":\"alice\",\"id\"") != nil)

        let chat = try ChatProcess(["chat", "bob", "--verbose", "--home", alice.home.path], in: scratch)
        chat.terminal.type("h")
        #expect(listen.line(startingWith: "{\"from\":\"alice\",\"typing\":true}") != nil, "typing reaches the connected device")
        chat.terminal.type("ello\r")
        #expect(listen.line(startingWith: "{\"from\":\"alice\",\"typing\":false}") != nil, "sending stops typing")
        chat.terminal.type("\u{4}")
        let chatLog = chat.wait()
        #expect(chat.process.terminationStatus == 0, "\(chatLog)")
        listen.process.terminate()
        _ = listen.wait()

        // The envelope ids of the typing signals, from alice's debug log, are nowhere in the relay's files.
        let ids = chatLog.split(separator: "\n").filter { $0.contains("sent online-only envelopes") }.flatMap { line in
            line.split(separator: "\"").filter { $0.count == 32 && $0.allSatisfy(\.isHexDigit) }.map(String.init)
        }
        #expect(ids.count >= 2, "\(chatLog)")
        relay.stop()
        for id in ids {
            let bytes = Data(stride(from: 0, to: id.count, by: 2).map { UInt8(id.dropFirst($0).prefix(2), radix: 16)! })
            #expect(anyFile(databaseFiles(database), containsBytes: bytes) == nil, "typing envelope \(id) stored at the relay")
        }
    }

    @Test func typingIsNotDeliveredToAnOfflineDevice() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let (alice, bob) = try SignalsCommandTests.acquainted(scratch, relay: relay)
        // bob is offline while alice types and sends.
        let chat = try ChatProcess(["chat", "bob", "--verbose", "--home", alice.home.path], in: scratch)
        chat.terminal.type("typing while bob is away\r\u{4}")
        let chatLog = chat.wait()
        #expect(chat.process.terminationStatus == 0, "\(chatLog)")
        let listen = try RunningCommand(["listen", "--json", "--home", bob.home.path], in: scratch)
        let first = listen.line(startingWith: "{\"from\"")  // receipts of bob's own message aside
        #expect(first?.contains("typing while bob is away") == true, "the first thing bob sees is the message, no typing: \(first ?? "")")
        listen.process.terminate()
        let rest = listen.wait()
        #expect(!rest.stdout.contains("\"typing\""), "\(rest)")
    }

    @Test func scheduledMessageIsHeldReleasedAfterARestartAndCancellable() throws {
        let scratch = try Scratch()
        let database = scratch.path("relay.sqlite"), log = scratch.path("relay.log")
        var relay = try RelayProcess(database: database, log: log)
        let port = relay.port
        let (alice, bob) = try SignalsCommandTests.acquainted(scratch, relay: relay)
        let formatter = ISO8601DateFormatter()
        let soon = formatter.string(from: Date().addingTimeInterval(3_600))
        let scheduled = try alice.flitz("send", "bob", "happy new hour", "--at", soon)
        #expect(scheduled.status == 0, "\(scheduled)")
        let id = try #require(scheduled.lines.first)
        #expect(try alice.flitz("scheduled").lines.first?.hasPrefix(id) == true)
        #expect(try bob.flitz("receive").lines.isEmpty, "not released early")
        let past = try alice.flitz("send", "bob", "too late", "--at", formatter.string(from: Date().addingTimeInterval(-60)))
        #expect(past.status == 1 && past.stderr.contains("in the past"), "\(past)")
        let far = try alice.flitz("send", "bob", "too far", "--at", formatter.string(from: Date().addingTimeInterval(31 * 86_400)))
        #expect(far.status == 1 && far.stderr.contains("30 days"), "\(far)")
        let cancelled = try alice.flitz("send", "bob", "never mind", "--at", formatter.string(from: Date().addingTimeInterval(7_200)))
        let cancelID = try #require(cancelled.lines.first)
        let cancel = try alice.flitz("scheduled", "cancel", cancelID)
        #expect(cancel.status == 0 && cancel.lines.first?.hasPrefix("cancelled") == true, "\(cancel)")
        #expect(try alice.flitz("scheduled").lines.count == 1)

        // Two hours later by the relay's clock, after a restart: released, the cancelled one not.
        relay.stop()
        relay = try RelayProcess(database: database, log: log, port: port, environment: ["FLITZ_TEST_CLOCK_OFFSET": "7300"])
        defer { relay.stop() }
        let received = try runProcess(
            Binaries.flitz, ["receive", "--home", bob.home.path], environment: ["FLITZ_TEST_CLOCK_OFFSET": "7300"], in: scratch)
        #expect(received.lines == ["alice: happy new hour"], "\(received)")
        // The conversation's sessions were untouched: ordinary messages still flow both ways.
        #expect(try bob.flitz("send", "alice", "thanks").status == 0)
        #expect(try alice.flitz("receive").lines == ["bob: thanks"])
    }

    @Test func blockedSenderIsRefusedSilently() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let (alice, bob) = try SignalsCommandTests.acquainted(scratch, relay: relay)
        let block = try bob.flitz("block", "alice")
        #expect(block.status == 0 && block.stderr.contains("relay learns your block list"), "\(block)")
        #expect(try bob.flitz("blocked").lines == ["alice"])
        let sent = try alice.flitz("send", "bob", "can you hear me")
        #expect(sent.status == 0, "silently: the sender sees an accepted message")
        let id = try #require(sent.lines.first)
        #expect(try bob.flitz("receive").lines.isEmpty)
        #expect(try alice.flitz("status", id).lines == ["sent"])
        #expect(try bob.flitz("unblock", "alice").status == 0)
        #expect(try bob.flitz("blocked").lines.isEmpty)
        #expect(try alice.flitz("send", "bob", "now?").status == 0)
        #expect(try bob.flitz("receive").lines == ["alice: now?"])
    }

    @Test func declineBlocksAndDeletesTheRequest() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
        let carol = User(name: "carol", home: scratch.path("carol"), scratch: scratch)
        #expect(try bob.flitz("init", "--relay", relay.url, "--handle", "bob").status == 0)
        #expect(try carol.flitz("init", "--relay", relay.url, "--handle", "carol").status == 0)
        #expect(try carol.flitz("send", "bob", "buy now").status == 0)
        #expect(try bob.flitz("receive", "--json").lines.first?.contains("\"request\":true") == true)
        let decline = try bob.flitz("decline", "carol")
        #expect(decline.status == 0 && decline.lines == ["declined carol: blocked, 1 message deleted"], "\(decline)")
        #expect(try bob.flitz("requests").lines.isEmpty)
        #expect(try bob.flitz("blocked").lines == ["carol"])
    }

    @Test func reportReachesTheOperator() throws {
        let scratch = try Scratch()
        let database = scratch.path("relay.sqlite")
        let relay = try RelayProcess(database: database, log: scratch.path("relay.log"))
        defer { relay.stop() }
        let (alice, bob) = try SignalsCommandTests.acquainted(scratch, relay: relay)
        #expect(try alice.flitz("send", "bob", "an abusive message 5c1e").status == 0)
        let json = try #require(try bob.flitz("receive", "--json").lines.first)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        let id = try #require(object["id"] as? String)
        let report = try bob.flitz("report", id, "--context", "2", "--reason", "harassment")
        #expect(report.status == 0, "\(report)")
        let reportID = try #require(report.lines.first)
        #expect(reportID.count == 32)
        let listed = try runProcess(Binaries.relay, ["reports", "--database", database.path, "--json"], in: scratch)
        #expect(listed.status == 0, "\(listed)")
        #expect(listed.stdout.contains(reportID) && listed.stdout.contains("an abusive message 5c1e") && listed.stdout.contains("harassment"), "\(listed)")
        let unknown = try bob.flitz("report", String(repeating: "0", count: 32))
        #expect(unknown.status == 1, "\(unknown)")
    }
}
