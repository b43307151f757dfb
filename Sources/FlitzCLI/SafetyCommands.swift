import ArgumentParser
import FlitzClient
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// Presence, scheduled messages, blocking, message requests and abuse reports (`protocol/conversations.md`
// sections 6, 8, 9, 10), and chat's typing detection.

/// Parses an ISO 8601 time for `send --at`: `2026-12-01T09:30:00Z`, with an offset, or with fractional seconds.
func parseISO8601(_ text: String) -> Date? {
    for options: ISO8601DateFormatter.Options in [[.withInternetDateTime], [.withInternetDateTime, .withFractionalSeconds]] {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = options
        if let date = formatter.date(from: text) { return date }
    }
    return nil
}

/// Prints a typing event of `chat` or `listen`.
func printTyping(_ handle: String, active: Bool, json: Bool) {
    if json {
        let object: [String: Any] = ["typing": active, "from": handle]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        printLine(String(decoding: data, as: UTF8.self))
    } else {
        printError(active ? "\(handle) is typing…" : "\(handle) stopped typing")
    }
}

/// What `chat` and `listen` show of peers' typing: a `TypingIndicators` and a ticker that ends "typing" after
/// 15 s without a refresh (`protocol/conversations.md` section 6).
final class TypingDisplay: Sendable {
    private let indicators = Mutex(TypingIndicators())
    private let json: Bool
    private let now: @Sendable () -> Date

    init(json: Bool, now: @escaping @Sendable () -> Date) {
        self.json = json
        self.now = now
    }

    func received(from handle: String, active: Bool) {
        let at = now()
        if indicators.withLock({ $0.received(from: handle, typing: active, at: at) }) { printTyping(handle, active: active, json: json) }
    }

    /// Checks timeouts once a second until cancelled.
    func tick() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            let at = now()
            for handle in indicators.withLock({ $0.expire(at: at) }) { printTyping(handle, active: false, json: json) }
        }
    }
}

/// Reads `chat`'s input. On a terminal, stdin is switched to non-canonical mode without echo and this reader
/// echoes what is typed itself, so it sees every keystroke (typing starts at the first key that changes the line);
/// the terminal is restored at the end. Not a terminal (a pipe, a file): whole lines with `readLine`, and no
/// typing is sent (there are no keystrokes to see).
enum ChatInput {
    /// Whether stdin is a terminal (typing can be detected).
    static var isTerminal: Bool { isatty(STDIN_FILENO) == 1 }

    /// Starts the reader thread, pushing lines to `lines` and keystrokes to `typing` (terminal only); calls `ready`
    /// once input is read as it will be (after the terminal mode changed: what is typed earlier is cooked by the
    /// terminal, and an early Ctrl-D would be lost).
    static func start(lines: LineQueue, typing: TypingInput?, ready: @escaping @Sendable () -> Void) {
        let reader = Thread {
            if let typing, isTerminal {
                readTerminal(lines: lines, typing: typing, ready: ready)
            } else {
                ready()
                while let line = readLine() { lines.push(line) }
            }
            typing?.finish()
            lines.finish()
        }
        reader.start()
    }

    private static func readTerminal(lines: LineQueue, typing: TypingInput, ready: @Sendable () -> Void) {
        var original = termios()
        guard tcgetattr(STDIN_FILENO, &original) == 0 else {
            ready()
            while let line = readLine() { lines.push(line) }
            return
        }
        var raw = original
        raw.c_lflag &= ~tcflag_t(ICANON | ECHO)  // ISIG stays: Ctrl-C still interrupts
        withUnsafeMutablePointer(to: &raw.c_cc) { pointer in
            pointer.withMemoryRebound(to: cc_t.self, capacity: Int(NCCS)) { cc in
                cc[Int(VMIN)] = 1
                cc[Int(VTIME)] = 0
            }
        }
        tcsetattr(STDIN_FILENO, TCSANOW, &raw)
        TerminalRestore.save(original)
        defer { TerminalRestore.restore() }
        ready()
        var buffer: [UInt8] = []
        var byte: UInt8 = 0
        while read(STDIN_FILENO, &byte, 1) == 1 {
            switch byte {
            case 0x0a, 0x0d:  // Enter
                echo([0x0a])
                let line = String(decoding: buffer, as: UTF8.self)
                buffer.removeAll()
                typing.stopped()
                lines.push(line)
            case 0x04:  // Ctrl-D: end of input on an empty line
                if buffer.isEmpty { return }
            case 0x7f, 0x08:  // backspace: one UTF-8 scalar
                guard !buffer.isEmpty else { continue }
                while let last = buffer.popLast(), last & 0xc0 == 0x80 {}
                echo([0x08, 0x20, 0x08])
                if buffer.isEmpty { typing.stopped() } else { typing.keystroke() }
            default:
                guard byte >= 0x20 || byte == 0x09 else { continue }  // other control keys are ignored
                buffer.append(byte)
                echo([byte])
                typing.keystroke()
            }
        }
    }

    private static func echo(_ bytes: [UInt8]) {
        try? FileHandle.standardOutput.write(contentsOf: Data(bytes))
    }
}

/// Restores the terminal mode `chat` changed, at the end of input and on Ctrl-C.
enum TerminalRestore {
    private static let saved = Mutex<termios?>(nil)

    static func save(_ mode: termios) {
        saved.withLock { $0 = mode }
        signal(SIGINT) { _ in
            TerminalRestore.restore()
            exit(130)
        }
    }

    static func restore() {
        guard var mode = saved.withLock({ $0 }) else { return }
        tcsetattr(STDIN_FILENO, TCSANOW, &mode)
    }
}

struct Presence: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show contacts' presence (online, last seen); share, unshare or hide your own.",
        discussion: """
            Presence is opt-in and per contact: `chat` and `listen` send encrypted online-only heartbeats (at \
            connect, every 60 s, and "offline" on a clean exit) to the contacts you share with; the relay stores \
            nothing of them. Whoever shares with no one sees no one's presence.
            """,
        subcommands: [Show.self, Share.self, Unshare.self, Hide.self], defaultSubcommand: Show.self)

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "List contacts' presence as this device knows it.")
        @OptionGroup var options: CommonOptions

        func run() async throws {
            let client = try options.client()
            let entries = try await FlitzCLI.run { try client.presence() }
            if entries.isEmpty {
                printError("flitz: you share your presence with no one, so you see no one's (`flitz presence share HANDLE`)")
            }
            let now = client.currentTime()
            for entry in entries {
                let state = PresenceFormat.describe(online: entry.online, lastSeen: entry.lastSeen, now: now)
                let shown = entry.online || entry.lastSeen == nil ? state : "last seen \(state)"
                printLine("\(entry.handle): \(shown)" + (entry.sharedWith ? "" : " (you do not share yours)"))
            }
        }
    }

    struct Share: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Share your presence with these contacts.")
        @OptionGroup var options: CommonOptions
        @Argument(help: "Contact handles.") var handles: [String]

        func run() async throws {
            let client = try options.client()
            try await FlitzCLI.run { try client.sharePresence(with: handles) }
            printLine("sharing presence with \(handles.joined(separator: ", "))")
        }
    }

    struct Unshare: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop sharing your presence with a contact.")
        @OptionGroup var options: CommonOptions
        @Argument(help: "Contact handle.") var handle: String

        func run() async throws {
            let client = try options.client()
            let changed = try await FlitzCLI.run { try client.unsharePresence(with: handle) }
            printLine(changed ? "no longer sharing presence with \(handle)" : "presence was not shared with \(handle)")
        }
    }

    struct Hide: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Share your presence with no one (and so see no one's).")
        @OptionGroup var options: CommonOptions

        func run() async throws {
            let client = try options.client()
            try await FlitzCLI.run { try client.hidePresence() }
            printLine("presence hidden")
        }
    }
}

struct Scheduled: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List messages scheduled with `send --at` that are not released yet; cancel one.",
        subcommands: [List.self, Cancel.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List pending scheduled messages: id, release time, recipient, text.")
        @OptionGroup var options: CommonOptions

        func run() async throws {
            let client = try options.client()
            for message in try await FlitzCLI.run({ try client.scheduledMessages() }) {
                printLine("\(message.messageID.hexString)  \(rfc3339(message.releaseAt))  to \(message.to): \(terminalSafe(message.text))")
            }
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel a scheduled message before its release.")
        @OptionGroup var options: CommonOptions
        @Argument(help: "Message id (32 hex characters) as printed by `send --at`.") var id: String

        func run() async throws {
            let client = try options.client()
            guard let messageID = Data(hexString: id.lowercased()), messageID.count == 16 else {
                throw ValidationError("a message id is 32 hexadecimal characters")
            }
            let count = try await FlitzCLI.run { try await client.cancelScheduled(messageID) }
            printLine("cancelled (\(count) envelope\(count == 1 ? "" : "s") removed at the relay)")
        }
    }
}

/// Said by every command that changes the block list.
let blockListWarning = "flitz: the relay learns your block list (it must, to refuse those envelopes)"

struct Block: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Block handles: the relay drops their envelopes to you, silently to them.")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Handles to block.") var handles: [String]

    func run() async throws {
        let client = try options.client()
        _ = try await FlitzCLI.run { try await client.updateBlockList(block: handles) }
        printError(blockListWarning)
        printLine("blocked \(handles.joined(separator: ", "))")
    }
}

struct Unblock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Unblock handles.")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Handles to unblock.") var handles: [String]

    func run() async throws {
        let client = try options.client()
        _ = try await FlitzCLI.run { try await client.updateBlockList(unblock: handles) }
        printLine("unblocked \(handles.joined(separator: ", "))")
    }
}

struct Blocked: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List blocked handles (as the relay holds them).")
    @OptionGroup var options: CommonOptions
    @Flag(help: "Show this device's copy without asking the relay.") var offline = false

    func run() async throws {
        let client = try options.client()
        for handle in try await FlitzCLI.run({ try await client.blockList(offline: offline) }) { printLine(handle) }
    }
}

struct Requests: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List message requests: conversations started by handles you never wrote to.",
        discussion: "No seen receipt, typing or presence goes to them until you `flitz accept` (or write to them); `flitz decline` blocks.")
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let client = try options.client()
        for request in try await FlitzCLI.run({ try client.messageRequests() }) {
            printLine("\(request.handle): \(request.count) message\(request.count == 1 ? "" : "s"), last \(rfc3339(request.lastAt)): \(terminalSafe(request.lastText))")
        }
    }
}

struct AcceptRequest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "accept", abstract: "Accept a message request (or a handle before it writes): receipts, typing and presence then flow.")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Handle of the request.") var handle: String

    func run() async throws {
        let client = try options.client()
        try await FlitzCLI.run { try client.acceptRequest(handle) }
        printLine("accepted \(handle)")
    }
}

struct DeclineRequest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decline",
        abstract: "Decline a message request: block the handle and delete its messages. Without HANDLE (or with --call): decline a ringing call.",
        discussion: """
            `flitz decline HANDLE` while a call from HANDLE rings in the `flitz listen` running on this home declines \
            that call only; the message request is left alone (run it again after the call to decline the request).
            """)
    @OptionGroup var options: CommonOptions
    @Argument(help: "Handle of the request.") var handle: String?
    @OptionGroup var call: CallDeclineArguments

    func validate() throws {
        if handle != nil, call.call != nil { throw ValidationError("give a HANDLE (a message request) or --call (a ringing call), not both") }
    }

    func run() async throws {
        // Calls (CallCommands.swift): no handle means the ringing call.
        guard let handle else { return try await call.declineCall(options: options) }
        if try CallDeclineArguments.declineRingingCall(from: handle, options: options) { return }
        let client = try options.client()
        let count = try await FlitzCLI.run { try await client.declineRequest(handle) }
        printError(blockListWarning)
        printLine("declined \(handle): blocked, \(count) message\(count == 1 ? "" : "s") deleted")
    }
}

struct Report: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Report a message to the relay operator; print the report id.",
        discussion: """
            Sends the message and up to --context messages before and after it, DECRYPTED, with your reason, signed \
            by this device. This is the only way plaintext ever reaches the relay, and only because you choose it.
            """)
    @OptionGroup var options: CommonOptions
    @Argument(help: "Message id (32 hex characters) as `receive --json` shows it.") var id: String
    @Option(help: "Messages before and after it to include (0-20).") var context: Int = ReportLimits.defaultContext
    @Option(help: "Why you report it (at most 1000 bytes).") var reason: String = ""

    func validate() throws {
        guard (0...ReportLimits.maxContext).contains(context) else { throw ValidationError("--context takes 0 to \(ReportLimits.maxContext)") }
    }

    func run() async throws {
        let client = try options.client()
        guard let messageID = Data(hexString: id.lowercased()), messageID.count == 16 else {
            throw ValidationError("a message id is 32 hexadecimal characters")
        }
        let reportID = try await FlitzCLI.run { try await client.report(messageID: messageID, context: context, reason: reason) }
        printLine(reportID.hexString)
    }
}
