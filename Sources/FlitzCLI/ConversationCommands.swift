import ArgumentParser
import FlitzClient
import Foundation

// Replies, reactions, edits, deletes, unsend, forwarding, disappearing messages, history and the conversation list
// (`protocol/conversations.md` sections 4, 5, 7, 8).

/// A message id argument: 32 hexadecimal characters.
func parseMessageID(_ text: String) throws -> Data {
    guard let id = Data(hexString: text.lowercased()), id.count == 16 else { throw ValidationError("a message id is 32 hexadecimal characters") }
    return id
}

/// A duration: `off`, or a number with an optional unit s, m, h, d or w (seconds without one).
/// - Throws: `ValidationError` for anything else.
func parseTimerDuration(_ text: String) throws -> UInt32 {
    let lower = text.lowercased()
    if lower == "off" || lower == "0" { return 0 }
    let units: [Character: Double] = ["s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800]
    var number = Substring(lower)
    var factor = 1.0
    if let last = lower.last, let unit = units[last] {
        number = lower.dropLast()
        factor = unit
    }
    guard let value = Double(number), value > 0, value * factor <= Double(UInt32.max) else {
        throw ValidationError("a duration is off or a number with s, m, h, d or w (for example 30s, 5m, 1d)")
    }
    return UInt32(value * factor)
}

/// A duration as the CLI prints it.
func describeDuration(_ seconds: UInt32) -> String {
    if seconds == 0 { return "off" }
    for (unit, size) in [("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)] where Int(seconds) % size == 0 {
        return "\(Int(seconds) / size)\(unit)"
    }
    return "\(seconds)s"
}

struct Reply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Reply to a message, quoting it; print the reply's id.")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Id of the message to reply to.") var id: String
    @Argument(help: "Reply text.") var text: String

    func run() async throws {
        let client = try options.client()
        let target = try parseMessageID(id)
        printLine(try await FlitzCLI.run { try await client.reply(to: target, text: text) }.hexString)
    }
}

struct React: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "React to a message with an emoji (replaces your earlier reaction).")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Message id.") var id: String
    @Argument(help: "One emoji.") var emoji: String

    func run() async throws {
        let client = try options.client()
        let target = try parseMessageID(id)
        _ = try await FlitzCLI.run { try await client.react(to: target, emoji: emoji) }
    }
}

struct Unreact: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Remove your reaction from a message.")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Message id.") var id: String

    func run() async throws {
        let client = try options.client()
        let target = try parseMessageID(id)
        _ = try await FlitzCLI.run { try await client.react(to: target, emoji: "") }
    }
}

struct EditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "edit", abstract: "Edit a message you sent (within 24 hours, at most 10 versions); print the new version number.")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Message id.") var id: String
    @Argument(help: "New text.") var text: String

    func run() async throws {
        let client = try options.client()
        let target = try parseMessageID(id)
        printLine("version \(try await FlitzCLI.run { try await client.edit(target, text: text) })")
    }
}

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete a message on this device, or with --for-everyone (your own, within 24 hours) on every device of both sides.")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Message id.") var id: String
    @Flag(name: .customLong("for-everyone"), help: "Delete it for everyone (leaves \"message deleted\").") var forEveryone = false

    func run() async throws {
        let client = try options.client()
        let target = try parseMessageID(id)
        try await FlitzCLI.run { try await client.deleteMessage(target, forEveryone: forEveryone) }
    }
}

struct Unsend: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Unsend a message: the relay purges its undelivered copies; prints per recipient device purged, already delivered or already expired.",
        discussion: "When a copy was already delivered and the message is under 24 hours old, a delete for everyone follows.")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Message id.") var id: String

    func run() async throws {
        let client = try options.client()
        let target = try parseMessageID(id)
        let result = try await FlitzCLI.run { try await client.unsend(target) }
        for outcome in result.outcomes.sorted(by: { ($0.handle, $0.deviceID) < ($1.handle, $1.deviceID) }) {
            printLine("\(outcome.handle) device \(outcome.deviceID): \(outcome.state.rawValue)")
        }
        if result.deletedForEveryone { printLine("deleted for everyone") }
        if result.blobsDeleted > 0 { printLine("blobs_deleted: \(result.blobsDeleted)") }
    }
}

struct Forward: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Forward a message's text to someone; print the new message's id.")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Message id.") var id: String
    @Argument(help: "Recipient handle.") var handle: String

    func run() async throws {
        let client = try options.client()
        let target = try parseMessageID(id)
        printLine(try await FlitzCLI.run { try await client.forward(target, to: handle) }.hexString)
    }
}

struct Disappearing: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show or set a conversation's disappearing timer: off, or 30s to 365d (units s, m, h, d, w).")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Contact handle.") var handle: String
    @Argument(help: "Duration or off (omit to show).") var duration: String?

    func run() async throws {
        let client = try options.client()
        guard let duration else {
            printLine(describeDuration(try await FlitzCLI.run { try client.disappearing(handle) }))
            return
        }
        let seconds = try parseTimerDuration(duration)
        try await FlitzCLI.run { try await client.setDisappearing(handle, seconds: seconds) }
    }
}

struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Page through a conversation, oldest first within the page: statuses, replies, reactions, edits, tombstones.")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Contact handle.") var handle: String
    @Option(help: "Show the messages before this message id.") var before: String?
    @Option(help: "Most messages to show.") var limit: Int = 50
    @Flag(help: "One JSON object per line.") var json = false

    func validate() throws {
        guard limit > 0 else { throw ValidationError("--limit must be at least 1") }
    }

    func run() async throws {
        let client = try options.client()
        let before = try before.map(parseMessageID)
        for message in try await FlitzCLI.run({ try client.history(with: handle, before: before, limit: limit) }) {
            printConversationMessage(message, json: json)
        }
    }
}

struct Conversations: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List conversations, newest first: unread count and last message.")
    @OptionGroup var options: CommonOptions
    @Flag(help: "One JSON object per line.") var json = false

    func run() async throws {
        let client = try options.client()
        for conversation in try await FlitzCLI.run({ try client.conversations() }) {
            if json {
                var object: [String: Any] = [
                    "peer": conversation.peer, "unread": conversation.unread, "last": messageObject(conversation.lastMessage),
                ]
                if conversation.disappearingSeconds > 0 { object["disappearingSeconds"] = conversation.disappearingSeconds }
                printJSON(object)
            } else {
                let last = conversation.lastMessage
                let who = last.outgoing ? "you" : last.author
                let text = last.details.deleted ? "message deleted" : displayText(last.text, media: last.details.media)
                printLine("\(conversation.peer) (\(conversation.unread) unread): \(who): \(text)")
            }
        }
    }
}

extension Settings {
    struct SeenReceipts: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "seen-receipts",
            abstract: "Seen receipts: relay (the relay learns what was seen), sealed (an encrypted receipt the relay cannot tell apart) or off.")
        @OptionGroup var options: CommonOptions
        @Argument(help: "relay, sealed or off (omit to show the current setting).") var value: String?

        func run() async throws {
            let client = try options.client()
            guard let value else {
                printLine(try await FlitzCLI.run { try client.seenReceipts() }.rawValue)
                return
            }
            guard let mode = SeenReceiptsMode(rawValue: value) else { throw ValidationError("seen-receipts takes relay, sealed or off") }
            try await FlitzCLI.run { try await client.setSeenReceipts(mode) }
        }
    }
}

func printJSON(_ object: [String: Any]) {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
    printLine(String(decoding: data, as: UTF8.self))
}

/// The JSON fields of a message's details (added to `receive --json` and `history --json` rows).
func detailsObject(_ details: MessageDetails) -> [String: Any] {
    var object: [String: Any] = [:]
    if let reply = details.reply {
        var quote: [String: Any] = ["id": reply.messageID.hexString, "author": reply.author]
        if let text = reply.text { quote["text"] = text } else { quote["available"] = false }
        if reply.fromPreview { quote["preview"] = true }
        object["replyTo"] = quote
    }
    if details.forwardCount > 0 { object["forwarded"] = details.forwardCount }
    if details.noForward { object["noForward"] = true }
    if details.edited { object["edited"] = true; object["version"] = details.version }
    if details.deleted { object["deleted"] = true }
    if let seconds = details.disappearAfterSeconds { object["disappearAfterSeconds"] = seconds }
    if let media = details.media { object.merge(mediaObject(media)) { _, new in new } }
    if !details.reactions.isEmpty {
        object["reactions"] = details.reactions.map { ["emoji": $0.emoji, "count": $0.count, "from": $0.reactors] as [String: Any] }
    }
    return object
}

func messageObject(_ message: ConversationMessage) -> [String: Any] {
    var object = detailsObject(message.details)
    object["id"] = message.messageID.hexString
    object["from"] = message.author
    object["peer"] = message.peer
    object["text"] = message.text
    if message.details.media != nil { object["caption"] = message.text }
    object["sentAt"] = rfc3339(message.sentAt)
    object["outgoing"] = message.outgoing
    if message.outgoing { object["status"] = message.status.rawValue }
    if !message.previousVersions.isEmpty { object["previousVersions"] = message.previousVersions }
    return object
}

/// The suffix lines of a message's details for terminals: the quote above, reactions and marks after.
func detailsLines(_ details: MessageDetails) -> (quote: String?, marks: String) {
    var quote: String?
    if let reply = details.reply {
        quote = "  ↳ replying to \(reply.author): " + (reply.text.map { terminalSafe($0) } ?? "original not available")
    }
    var marks: [String] = []
    if details.edited { marks.append("(edited)") }
    if details.forwardCount > 0 { marks.append("(forwarded)") }
    if let seconds = details.disappearAfterSeconds { marks.append("(disappears after \(describeDuration(seconds)))") }
    if !details.reactions.isEmpty { marks.append(details.reactions.map { "\($0.emoji) \($0.count)" }.joined(separator: " ")) }
    return (quote, marks.isEmpty ? "" : " " + marks.joined(separator: " "))
}

func printConversationMessage(_ message: ConversationMessage, json: Bool) {
    if json { return printJSON(messageObject(message)) }
    let (quote, marks) = detailsLines(message.details)
    if let quote { printLine(quote) }
    let who = message.outgoing ? "you" : message.author
    let status = message.outgoing ? " [\(message.status.rawValue)]" : ""
    let text = message.details.deleted ? "message deleted" : displayText(message.text, media: message.details.media)
    printLine("\(message.messageID.hexString) \(rfc3339(message.sentAt)) \(who): \(text)\(status)\(marks)")
}
