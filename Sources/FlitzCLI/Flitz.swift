import ArgumentParser
import FlitzClient
import FlitzCrypto
import Foundation
import Logging

/// `flitz`: the reference command-line client. Each subcommand parses its arguments and calls FlitzClient.
@main
struct Flitz: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "flitz",
        abstract: "End-to-end encrypted chat through a Flitz relay.",
        discussion: """
            State lives in --home DIR, else $FLITZ_HOME, else ~/.flitz. One home is one device: a command \
            on a home replaces that home's other connection to the relay (listen and chat reconnect).

            Exit codes: 0 success; 1 local error; 2 relay unreachable or timed out; 3 refused by the relay \
            (also: no such handle, deleted or never registered); 4 the contact's identity key or device list \
            changed and is not trusted yet; 64 invalid command line; 77 wrong or missing passphrase of the local \
            store (`flitz passphrase`).
            """,
        subcommands: [
            Init.self, Send.self, Receive.self, Sync.self, Listen.self, Chat.self, Status.self, Verify.self, Trust.self, Contacts.self,
            Settings.self, SafetyNumberCommand.self, Devices.self, Account.self, Push.self, Notifications.self, VectorsCommand.self,
            Reply.self, React.self, Unreact.self, EditCommand.self, Delete.self, Unsend.self, Forward.self, Disappearing.self, History.self,
            Conversations.self,
            Presence.self, Scheduled.self, Block.self, Unblock.self, Blocked.self, Requests.self, AcceptRequest.self, DeclineRequest.self,
            Report.self,
            PassphraseCommand.self,
            Search.self,
            Download.self, Media.self,
            CallCommand.self, Answer.self, Hangup.self, Calls.self,
        ]
    )
}

struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "State directory (default: $FLITZ_HOME or ~/.flitz).")
    var home: String?

    @Flag(name: .long, help: "Log diagnostics to stderr.")
    var verbose = false

    @Option(name: .customLong("ca-file"), help: "PEM CA certificates to trust for a wss:// relay besides the system's (default: $FLITZ_CA_FILE).")
    var caFile: String?

    /// The client for the chosen home; only `init` passes `create: true`.
    func client(create: Bool = false) throws -> FlitzClient {
        LoggingBootstrap.once(verbose: verbose)
        var logger = Logger(label: "flitz")
        logger.logLevel = verbose ? .debug : .warning
        let environment = ProcessInfo.processInfo.environment
        let userHome = environment["HOME"].map { URL(fileURLWithPath: $0) } ?? FileManager.default.homeDirectoryForCurrentUser
        let path = home ?? environment["FLITZ_HOME"] ?? userHome.appendingPathComponent(".flitz").path
        do {
            let client = try FlitzClient(
                home: URL(fileURLWithPath: path), logger: logger, create: create, now: FlitzClient.systemClock(environment: environment),
                caFile: caFile ?? environment["FLITZ_CA_FILE"], passphrase: PassphraseInput.current())
            OpenClients.add(client)
            return client
        } catch let error as ClientError {
            printError("flitz: \(error.message)")
            throw ExitCode(error.exitCode)
        }
    }
}

enum LoggingBootstrap {
    static let done: Void = LoggingSystem.bootstrap(StreamLogHandler.standardError)
    static func once(verbose: Bool) { _ = done }
}

/// Runs a client operation, turning `ClientError` into its message on stderr and its exit code.
func run<T>(_ body: () async throws -> T) async throws -> T {
    // Deleted messages leave the search index's storage before the command exits (SearchCommand.swift).
    defer { OpenClients.eraseSearchResidue() }
    do {
        return try await body()
    } catch let error as ClientError {
        printError("flitz: \(error.message)")
        throw ExitCode(error.exitCode)
    }
}

/// Writes a line to stderr; a closed stderr is ignored.
func printError(_ text: String) {
    try? FileHandle.standardError.write(contentsOf: Data((text + "\n").utf8))
}

/// Writes a line to stdout unbuffered (scripts read stdout line by line). When the reader has gone
/// (`flitz receive | head -1`), exit quietly with 141, as a process killed by SIGPIPE does, instead of
/// crashing; whatever the command did before printing (stored, acknowledged) stays done.
func printLine(_ text: String) {
    do {
        try FileHandle.standardOutput.write(contentsOf: Data((text + "\n").utf8))
    } catch {
        exit(141)
    }
}

struct Init: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create keys, register a handle with a relay, print the recovery code once; or, with --link, become a new device of an existing account.")
    @OptionGroup var options: CommonOptions
    @Option(help: "Relay address, ws://HOST:PORT or wss://HOST:PORT.") var relay: String
    @Option(help: "Handle: 3-32 characters of a-z, 0-9, _ and . (not with --link).") var handle: String?
    @Option(help: "Recovery code of an existing handle: take it over on this device with new keys.") var recover: String?
    @Option(help: "Pairing code (FLITZLINK1:...) shown by `flitz devices link` on the account's primary device.") var link: String?
    @Option(help: "With --link: seconds to wait for the primary device.") var timeout: Double = 600
    @Flag(help: "Seal the keys and secrets of this home under a passphrase (asked twice, or $FLITZ_PASSPHRASE).") var passphrase = false

    func validate() throws {
        if link != nil {
            guard handle == nil, recover == nil else { throw ValidationError("--link takes neither --handle nor --recover: the primary device names the account") }
            guard timeout > 0 else { throw ValidationError("--timeout must be a positive number of seconds") }
        } else if handle == nil {
            throw ValidationError("give --handle NAME (a new account) or --link CODE (a new device of an account)")
        }
    }

    func run() async throws {
        let client = try options.client(create: true)
        if passphrase, !client.hasPassphrase {
            // Before any key exists, so no secret ever reaches the file unsealed.
            try await FlitzCLI.run {
                try client.setPassphrase(try PassphraseInput.new(variable: PassphraseInput.variable), parameters: FlitzClient.keyParameters())
            }
        }
        if let link {
            let (handle, deviceID) = try await FlitzCLI.run {
                try await client.initializeByLinking(
                    code: link, relayURL: relay, timeout: .milliseconds(Int64(timeout * 1000)),
                    onFingerprint: { printLine("this device's fingerprint: \($0) (check that the primary device shows the same)") })
            }
            printLine("linked as device \(deviceID) of \(handle)")
            printError("flitz: this device starts with no message history; messages sent from now on reach it")
            return
        }
        guard let handle else { return }
        let code = try await FlitzCLI.run { try await client.initialize(relayURL: relay, handle: handle, recoveryCode: recover) }
        printLine("registered \(handle) on \(relay)")
        printLine("recovery code: \(code)")
        printLine("Write the recovery code down; it is shown only this once. With it, `flitz init --relay \(relay) --handle \(handle) --recover CODE` takes the handle over on a new device.")
    }
}

struct Send: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send a message; print its id once the relay has stored it durably.")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Recipient handle.") var handle: String
    @Argument(help: "Message text (not with --file or --location: use --caption).") var text: String?
    @OptionGroup var media: MediaSendOptions
    @Option(name: .customLong("expires-in"), help: "Seconds after which the relay deletes it undelivered (default: relay retention).")
    var expiresIn: UInt32?
    @Option(help: "Seconds to keep retrying an unreachable relay.") var timeout: Double = 30
    @Flag(name: .customLong("no-forward"), help: "Ask the recipient not to forward it.") var noForward = false
    @Option(help: "Disappear after this long (30s to 365d, or off), instead of the conversation's timer.") var disappear: String?
    @Option(help: "Schedule it: ISO 8601 time (e.g. 2026-12-24T18:00:00Z) within 30 days; `flitz scheduled` lists pending ones.")
    var at: String?

    func validate() throws {
        guard timeout > 0 else { throw ValidationError("--timeout must be a positive number of seconds") }
        try media.validate(text: text, scheduled: at != nil || expiresIn != nil || noForward || disappear != nil)
        if let expiresIn, expiresIn < 1 { throw ValidationError("--expires-in must be at least 1 second") }
        if let disappear {
            let seconds = try parseTimerDuration(disappear)
            guard seconds == 0 || (30...31_536_000).contains(seconds) else { throw ValidationError("--disappear takes off or 30s to 365d") }
        }
        if let at, parseISO8601(at) == nil { throw ValidationError("--at takes an ISO 8601 time with a time zone, e.g. 2026-12-24T18:00:00Z") }
        if at != nil, noForward || disappear != nil {
            throw ValidationError("--at cannot be combined with --no-forward or --disappear yet")
        }
    }

    func run() async throws {
        let client = try options.client()
        if media.isMedia { return try await media.send(client, to: handle, timeout: timeout) }
        guard let text else { throw ValidationError("give the message text") }
        if let at, let time = parseISO8601(at) {
            let scheduled = try await FlitzCLI.run { try await client.schedule(to: handle, text: text, at: time) }
            printLine(scheduled.messageID.hexString)
            printError("flitz: scheduled for \(rfc3339(scheduled.releaseAt))")
            if !scheduled.held { printError("flitz: this relay does not hold scheduled messages; it delivered the message at once") }
            return
        }
        let disappearAfter = try disappear.map(parseTimerDuration)
        let id = try await FlitzCLI.run {
            try await client.send(
                to: handle, text: text, expiresIn: expiresIn, noForward: noForward, disappearAfter: disappearAfter,
                timeout: .milliseconds(Int64(timeout * 1000)))
        }
        printLine(id.hexString)
    }
}

struct Receive: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Fetch queued messages, wait for more, print them, acknowledge them.")
    @OptionGroup var options: CommonOptions
    @Option(help: "Seconds to wait for further messages after the queue is drained.") var wait: Double = 0
    @Flag(
        help: "One JSON object per line: id, from, text, sentAt; to, for a message another of your devices sent; replyTo, forwarded, noForward, edited, deleted, disappearAfterSeconds when set."
    ) var json = false

    func run() async throws {
        let client = try options.client()
        let json = json
        try await FlitzCLI.run {
            try await client.receive(
                wait: .milliseconds(Int64(max(wait, 0) * 1000)),
                onMessage: { printMessage($0, json: json) },
                onWarning: { printError("flitz: \($0)") })
        }
    }
}

func printMessage(_ message: ReceivedMessage, json: Bool) {
    if json {
        var object = detailsObject(message.details)
        object["id"] = message.messageID.hexString
        object["from"] = message.from
        object["text"] = message.text
        object["sentAt"] = rfc3339(message.sentAt)
        if message.details.media != nil { object["caption"] = message.text }
        if message.untrustedSender { object["untrustedSender"] = true }
        if message.isRequest { object["request"] = true }
        if let to = message.to { object["to"] = to }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        printLine(String(decoding: data, as: UTF8.self))
    } else {
        // A sender whose identity key changed and is not trusted yet is flagged on every display.
        let from = message.untrustedSender ? "\(message.from) [new identity key, not verified]" : message.from
        let (quote, marks) = detailsLines(message.details)
        if let quote { printLine(quote) }
        let text = message.details.deleted ? "message deleted" : displayText(message.text, media: message.details.media)
        if let to = message.to {
            // Sent from another device of this account (a sent transcript).
            printLine("you → \(to): \(text)\(marks)")
        } else {
            printLine((message.isRequest ? "[request] " : "") + "\(from): \(text)\(marks)")
        }
    }
}

/// Text from other people made safe for a terminal: control characters (newlines, ANSI escapes) and
/// bidirectional overrides are shown as `\u{…}` escapes, so a message cannot fake lines or restyle the
/// terminal. `--json` output is escaped by JSON instead.
func terminalSafe(_ text: String) -> String {
    var out = ""
    for scalar in text.unicodeScalars {
        let value = scalar.value
        let isControl = value < 0x20 || (0x7f...0x9f).contains(value)
        let isBidiOverride = (0x202a...0x202e).contains(value) || (0x2066...0x2069).contains(value)
        if isControl || isBidiOverride {
            out += "\\u{" + String(value, radix: 16) + "}"
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    return out
}

func rfc3339(_ date: Date) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    formatter.timeZone = TimeZone(identifier: "UTC")
    return formatter.string(from: date)
}

func printEvent(_ event: ClientEvent, json: Bool) {
    switch event {
    case .message(let message):
        printMessage(message, json: json)
    case .receipt(let id, let peer, let status):
        if json {
            let object = ["receipt": status.rawValue, "id": id.hexString, "peer": peer]
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            printLine(String(decoding: data, as: UTF8.self))
        } else {
            printLine("[\(status.rawValue)] \(id.hexString) to \(peer)")
        }
    case .warning(let text):
        printError("flitz: \(text)")
    case .typing(let from, let active):
        printTyping(from, active: active, json: json)
    }
}

struct Sync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Fetch queued messages and receipts without showing them; print how many messages wait for `receive`.")
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let client = try options.client()
        let count = try await FlitzCLI.run { try await client.sync(onWarning: { printError("flitz: \($0)") }) }
        printLine("\(count) new")
    }
}

struct Listen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stay connected; print messages and receipts as they arrive (Ctrl-C to stop).",
        discussion: """
            With --notify, prints notifications as a desktop notifier would receive them instead: a `title: ...` \
            and a `body: ...` line each, after applying this device's mutes and keyword alerts and grouping \
            the messages that arrive together into one summary (`flitz notifications`; README, "Notification settings").

            Calls: an incoming call prints a `call from HANDLE (id CALL)` line and rings until `flitz answer` or \
            `flitz decline` in another terminal (through this home's control socket), the caller gives up, or the \
            offer expires; with --auto-answer every call is answered at once (--play, --record and --relay-only \
            apply to the calls this listen answers). A call's progress and end are printed like `flitz call`'s.
            """)
    @OptionGroup var options: CommonOptions
    @Flag(help: "One JSON object per line.") var json = false
    @Flag(help: "Print notifications (title and body) instead of messages and receipts.") var notify = false
    @OptionGroup var calls: ListenCallOptions

    func validate() throws {
        if notify, calls.autoAnswer { throw ValidationError("--auto-answer does not go with --notify") }
    }

    func run() async throws {
        let client = try options.client()
        let json = json
        if notify {
            try await FlitzCLI.run {
                try await client.listenForNotifications(
                    onNotifications: { $0.forEach { printNotification($0, json: json) } }, onWarning: { printError("flitz: \($0)") })
            }
            return
        }
        let display = TypingDisplay(json: json, now: { client.currentTime() })
        let ticker = Task { await display.tick() }
        defer { ticker.cancel() }
        // Calls (CallRunner.swift): incoming calls, the home's control socket, auto-answer.
        try await calls.listen(client: client, json: json) { controller in
            try await FlitzCLI.run {
                try await client.listen(calls: controller) { event in
                    if case .typing(let from, let active) = event { display.received(from: from, active: active) } else { printEvent(event, json: json) }
                }
            }
        }
    }
}

/// A notification: `title: ...` and `body: ...` lines (text made terminal-safe), or one JSON object with
/// `title`, `body`, `from` (senders), `count`, `ids` and, for a keyword alert, `keyword`.
func printNotification(_ notification: MessageNotification, json: Bool) {
    if json {
        var object: [String: Any] = [
            "title": notification.title, "body": notification.body, "from": notification.senders, "count": notification.messageIDs.count,
            "ids": notification.messageIDs.map(\.hexString),
        ]
        if let keyword = notification.keyword { object["keyword"] = keyword }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        printLine(String(decoding: data, as: UTF8.self))
    } else {
        printLine("title: \(terminalSafe(notification.title))")
        printLine("body: \(terminalSafe(notification.body))")
    }
}

struct Chat: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Interactive chat: each line you type is sent; incoming messages and receipts are printed.")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Handle to chat with.") var handle: String

    func run() async throws {
        let client = try options.client()
        let lines = LineQueue()
        // Reading blocks, so it runs on its own thread rather than in the cooperative pool; on a terminal it sees
        // keystrokes and sends typing (ChatInput).
        let typing: TypingInput? = ChatInput.isTerminal ? TypingInput() : nil
        let handle = handle
        ChatInput.start(lines: lines, typing: typing) { printError("chatting with \(handle); type a message and press Enter, Ctrl-D to quit") }
        let display = TypingDisplay(json: false, now: { client.currentTime() })
        let ticker = Task { await display.tick() }
        defer { ticker.cancel() }
        try await FlitzCLI.run {
            try await client.chat(
                with: handle, lines: lines, typing: typing, onSent: { printError("sent \($0.hexString)") },
                onEvent: { event in
                    if case .typing(let from, let active) = event { display.received(from: from, active: active) } else { printEvent(event, json: false) }
                })
        }
    }
}

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Sync receipts and print a sent message's status: sent, delivered, seen or expired.")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Message id (32 hex characters) as printed by send.") var id: String

    func run() async throws {
        let client = try options.client()
        guard let messageID = Data(hexString: id.lowercased()), messageID.count == 16 else {
            throw ValidationError("a message id is 32 hexadecimal characters")
        }
        let status = try await FlitzCLI.run { try await client.status(of: messageID) }
        printLine(status.rawValue)
    }
}

struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the safety number with a contact; mark the contact verified when the number you compared matches.",
        discussion: """
            Without options, prints the safety number (digits and scannable form) and whether the contact is verified. \
            Compare it with the contact in person or on a call; then --safety-number with the digits they read out \
            (spaces optional), or --scanned with the FLITZSN1: text of their code, marks the contact verified if it \
            matches (exit 1 and nothing marked if not). A changed identity key must be accepted with `flitz trust` \
            first (exit 4), and needs verifying again.
            """)
    @OptionGroup var options: CommonOptions
    @Argument(help: "Contact handle.") var handle: String
    @Option(name: .customLong("safety-number"), help: "The 30 digits you compared (spaces optional).") var safetyNumber: String?
    @Option(help: "The scanned code: FLITZSN1: followed by 64 hexadecimal digits.") var scanned: String?

    func validate() throws {
        guard safetyNumber == nil || scanned == nil else { throw ValidationError("give --safety-number or --scanned, not both") }
        if let safetyNumber {
            guard safetyNumber.allSatisfy({ $0 == " " || ("0"..."9").contains($0) }) else {
                throw ValidationError("--safety-number takes digits and spaces only")
            }
            guard safetyNumber.filter({ $0 != " " }).count == 30 else {
                throw ValidationError("--safety-number has 30 digits (six groups of five)")
            }
        }
        // A malformed code is a typo, not a mismatch: only a well-formed one can raise the interception warning.
        if let scanned {
            let trimmed = scanned.trimmingCharacters(in: .whitespacesAndNewlines)
            let prefix = "FLITZSN1:"  // crypto.md §12, "Safety numbers"
            let hex = trimmed.uppercased().hasPrefix(prefix) ? trimmed.dropFirst(prefix.count) : ""
            guard hex.count == 64, hex.allSatisfy(\.isHexDigit) else {
                throw ValidationError("--scanned takes \(prefix) followed by 64 hexadecimal digits")
            }
        }
    }

    func run() async throws {
        let client = try options.client()
        let result = try await FlitzCLI.run {
            if let safetyNumber { return try client.verify(handle, safetyNumber: safetyNumber) }
            if let scanned { return try client.verify(handle, scanned: scanned) }
            return try client.verification(of: handle)
        }
        printLine("safety number: \(result.safetyNumber)")
        printLine("scannable: \(result.scannable)")
        printLine("status: \(describe(result.state))")
        switch result.state {
        case .verified: break
        case .unverified:
            printError("flitz: compare the number with \(handle) in person or on a call, then run `flitz verify \(handle) --safety-number \"NUMBER\"`")
        case .identityChanged:
            printError("flitz: \(handle)'s identity key changed; this is the number of the new key. Compare it with \(handle), then run `flitz trust \(handle)`")
        }
    }
}

/// How a verification state reads in `verify` and `contacts`.
func describe(_ state: VerificationState) -> String {
    switch state {
    case .verified: "verified"
    case .unverified: "not verified"
    case .identityChanged: "identity key changed, not trusted yet"
    }
}

struct Contacts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List contacts and whether each is verified.")
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let client = try options.client()
        for contact in try await FlitzCLI.run({ try client.contacts() }) {
            // A session on a last-resort KEM prekey is weaker against a future quantum attacker; say so.
            let lastResort = try await FlitzCLI.run { try client.activeSessionUsesLastResortPreKey(with: contact.handle) }
            printLine("\(contact.handle): \(describe(contact.state))" + (lastResort ? " (session on a last-resort prekey)" : ""))
        }
    }
}

struct Trust: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Accept a contact's changed identity key (compare `flitz verify HANDLE` with them first).")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Contact handle.") var handle: String
    @Option(name: .customLong("safety-number"), help: "Trust only if the new key still has this safety number (as shown by `flitz safety-number`).")
    var safetyNumber: String?

    func run() async throws {
        let client = try options.client()
        let number = try await FlitzCLI.run { try await client.trust(handle, expectedSafetyNumber: safetyNumber) }
        printLine("trusted the current identity key and devices of \(handle); safety number: \(number)")
        printError("flitz: \(handle) is not verified; after comparing the number with them, run `flitz verify \(handle) --safety-number \"NUMBER\"`")
    }
}

struct SafetyNumberCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "safety-number", abstract: "Print only the safety number digits (for scripts; `flitz verify` shows both forms and the state).")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Contact handle.") var handle: String

    func run() async throws {
        let client = try options.client()
        let numbers = try await FlitzCLI.run { try client.safetyNumbers(with: handle) }
        if let untrusted = numbers.untrusted {
            printLine("new key, not trusted yet: \(untrusted)")
            printLine("previously trusted key:   \(numbers.trusted)")
            printError("flitz: \(handle)'s identity key changed. Compare the new number with \(handle) in person or on a call, then run `flitz trust \(handle)`.")
        } else {
            printLine(numbers.trusted)
        }
    }
}

struct Settings: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Change settings.", subcommands: [ReadReceipts.self, SeenReceipts.self, Relay.self])

    struct Relay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "The relay address this home connects to; with URL, connect to URL from now on.",
            discussion: """
                For another node of the same relay cluster (README, "Several relay nodes") or the relay's new address: \
                the account, keys and device id stay, so URL must reach the same relay database.
                """)
        @OptionGroup var options: CommonOptions
        @Argument(help: "ws://HOST:PORT or wss://HOST:PORT (omit to show the current address).") var url: String?

        func run() async throws {
            let client = try options.client()
            if let url {
                try await FlitzCLI.run { try client.setRelayURL(url) }
            } else {
                printLine(try await FlitzCLI.run { try client.relayURL() })
            }
        }
    }

    struct ReadReceipts: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "read-receipts", abstract: "Send seen receipts for messages you read: on or off, for every device of the account.")
        @OptionGroup var options: CommonOptions
        @Argument(help: "on or off (omit to show the current setting).") var value: String?

        func run() async throws {
            let client = try options.client()
            switch value {
            case nil: printLine(try await FlitzCLI.run { try client.readReceipts() } ? "on" : "off")
            case "on": try await FlitzCLI.run { try await client.setSeenReceipts(.relay) }
            case "off": try await FlitzCLI.run { try await client.setSeenReceipts(.off) }
            default: throw ValidationError("read-receipts takes on or off")
            }
        }
    }
}

/// Reads y or yes (any case) from stdin; anything else, or end of input, is no.
func confirmOnStdin(_ question: String) -> Bool {
    try? FileHandle.standardError.write(contentsOf: Data((question + " [y/N] ").utf8))
    guard let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() else { return false }
    return answer == "y" || answer == "yes"
}

struct Devices: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List this account's devices (id, fingerprint, this device, primary, registered); link or remove one.",
        subcommands: [List.self, Link.self, Remove.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List this account's devices from its signed device list.")
        @OptionGroup var options: CommonOptions

        func run() async throws {
            let client = try options.client()
            for device in try await FlitzCLI.run({ try await client.devices() }) {
                var notes: [String] = []
                if device.isThisDevice { notes.append("this device") }
                if device.isPrimary { notes.append("primary") }
                if let at = device.registeredAt { notes.append("registered \(rfc3339(at))") }
                printLine("\(device.deviceID)  \(device.fingerprint)  \(notes.joined(separator: ", "))")
            }
        }
    }

    struct Link: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "On the primary device: print a pairing code for `flitz init --link CODE` on the new device, confirm its fingerprint, add it.")
        @OptionGroup var options: CommonOptions
        @Option(help: "Seconds to wait for the new device.") var timeout: Double = 600
        @Flag(help: "Do not ask to confirm the new device's fingerprint (scripts).") var yes = false

        func validate() throws {
            guard timeout > 0 else { throw ValidationError("--timeout must be a positive number of seconds") }
        }

        func run() async throws {
            let client = try options.client()
            let yes = yes
            let (deviceID, fingerprint) = try await FlitzCLI.run {
                try await client.linkDevice(
                    timeout: .milliseconds(Int64(timeout * 1000)),
                    onCode: { code in
                        printLine("pairing code: \(code)")
                        printError("flitz: on the new device run `flitz init --link CODE --relay URL`; waiting for it (keep the code secret)")
                    },
                    confirm: { fingerprint in
                        printLine("new device's fingerprint: \(fingerprint)")
                        return yes || confirmOnStdin("Does the new device show this same fingerprint?")
                    })
            }
            printLine("linked device \(deviceID) (\(fingerprint))")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "On the primary device: remove a device from the account (its keys, queue and prekeys at the relay).")
        @OptionGroup var options: CommonOptions
        @Argument(help: "Device id, as listed by `flitz devices`.") var id: UInt32

        func run() async throws {
            let client = try options.client()
            try await FlitzCLI.run { try await client.removeDevice(id) }
            printLine("removed device \(id)")
        }
    }
}

struct Account: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Account lifecycle.", subcommands: [Delete.self])

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "On the primary device: delete the account at the relay (handle, every device, queue and prekey). Cannot be undone.")
        @OptionGroup var options: CommonOptions
        @Flag(help: "Do not ask for confirmation (scripts).") var yes = false

        func run() async throws {
            let client = try options.client()
            let handle = try await FlitzCLI.run { try client.handle() }
            guard yes || confirmOnStdin("Delete the account \(handle) and every device of it at the relay? This cannot be undone.") else {
                printError("flitz: not deleted")
                throw ExitCode(1)
            }
            try await FlitzCLI.run { try await client.deleteAccount() }
            printLine("deleted \(handle)")
        }
    }
}
