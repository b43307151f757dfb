import ArgumentParser
import FlitzClient
import FlitzCrypto
import Foundation

/// `flitz push ...`: this device's push endpoint at the relay (`protocol/push.md` 4) and opening Web Push
/// wake-ups (`push.md` 6).
struct Push: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Register this device for content-free push wake-ups, show or remove the registration, decrypt a Web Push wake-up.",
        subcommands: [Register.self, Status.self, Remove.self, Decrypt.self])

    struct Register: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Register one push endpoint for this device with the relay, replacing any earlier one.",
            discussion: """
                Give exactly one of --endpoint (Web Push / UnifiedPush: makes this device's RFC 8291 keys and \
                registers their public part), --apns-token or --fcm-token. Exit 3 when the relay refuses (no \
                credentials for that service, or a field it does not accept).
                """)
        @OptionGroup var options: CommonOptions
        @Option(help: "Web Push / UnifiedPush endpoint URL (https on a public host; loopback or http only if the relay allows private endpoints).") var endpoint: String?
        @Option(name: .customLong("apns-token"), help: "APNs device token, 64 to 200 hexadecimal characters.") var apnsToken: String?
        @Flag(help: "With --apns-token: background pushes (content-available) instead of alerts.") var background = false
        @Option(name: .customLong("fcm-token"), help: "FCM registration token.") var fcmToken: String?

        var target: PushTarget? {
            if let endpoint { return .webPush(endpoint: endpoint) }
            if let apnsToken { return .apns(token: apnsToken, background: background) }
            if let fcmToken { return .fcm(token: fcmToken) }
            return nil
        }

        func validate() throws {
            guard [endpoint, apnsToken, fcmToken].compactMap({ $0 }).count == 1, let target else {
                throw ValidationError("give exactly one of --endpoint URL, --apns-token HEX or --fcm-token TOKEN")
            }
            if background && apnsToken == nil { throw ValidationError("--background goes with --apns-token") }
            if let problem = target.problem() { throw ValidationError(problem) }
        }

        func run() async throws {
            let client = try options.client()
            guard let target else { return }
            let status = try await FlitzCLI.run { try await client.registerPush(target) }
            printLine("registered \(target.service.rawValue)" + (status.registeredAt.map { " at \(rfc3339($0))" } ?? ""))
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show this device's push endpoint as the relay holds it: registered, service, times, wake-ups sent, why it was dropped.")
        @OptionGroup var options: CommonOptions
        @Flag(help: "One JSON object: registered, provider, registeredAt, lastWakeAt, wakesSent, lastFailure, droppedAt.") var json = false

        func run() async throws {
            let client = try options.client()
            let status = try await FlitzCLI.run { try await client.pushStatus() }
            if json {
                let object: [String: Any] = [
                    "registered": status.registered, "wakesSent": Int(clamping: status.wakesSent),
                    "provider": jsonValue(status.service?.rawValue), "registeredAt": jsonValue(status.registeredAt.map(rfc3339)),
                    "lastWakeAt": jsonValue(status.lastWakeAt.map(rfc3339)), "lastFailure": jsonValue(status.lastFailure),
                    "droppedAt": jsonValue(status.droppedAt.map(rfc3339)),
                ]
                let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
                printLine(String(decoding: data, as: UTF8.self))
                return
            }
            printLine("registered: \(status.registered ? "yes" : "no")")
            if let service = status.service { printLine("provider: \(service.rawValue)") }
            if let at = status.registeredAt { printLine("registered at: \(rfc3339(at))") }
            if status.registered || status.wakesSent > 0 {
                printLine("last wake-up: \(status.lastWakeAt.map(rfc3339) ?? "none")")
                printLine("wake-ups sent: \(status.wakesSent)")
            }
            if let at = status.droppedAt { printLine("dropped at: \(rfc3339(at))") }
            if let failure = status.lastFailure { printLine("last failure: \(failure)") }
            if !status.registered && status.droppedAt != nil {
                printError("flitz: the relay dropped this device's endpoint; register a new one with `flitz push register`")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove this device's push endpoint at the relay and forget its Web Push keys (no error when there is none).")
        @OptionGroup var options: CommonOptions

        func run() async throws {
            let client = try options.client()
            let hadOne = try await FlitzCLI.run { try client.localPushRegistration() != nil }
            _ = try await FlitzCLI.run { try await client.removePush() }
            printLine(hadOne ? "removed" : "removed (this device had no push registration)")
        }
    }

    struct Decrypt: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Decrypt a Web Push message body with this device's keys and print the wake-up JSON.",
            discussion: """
                For UnifiedPush-style distributors: pipe the body of the push message (raw bytes, or base64 / \
                base64url text) into `flitz push decrypt`, or give the file. Prints e.g. {"v":1,"wake":"urgent"}; \
                then run `flitz receive` (or keep `flitz listen` running) to fetch what waits. Exit 1 when it does \
                not decrypt with this device's keys.
                """)
        @OptionGroup var options: CommonOptions
        @Argument(help: "File holding the push message body (default: stdin).") var file: String?

        func run() async throws {
            let client = try options.client()
            let body: Data
            if let file {
                guard let data = FileManager.default.contents(atPath: file) else {
                    printError("flitz: cannot read \(file)")
                    throw ExitCode(1)
                }
                body = data
            } else {
                body = FileHandle.standardInput.readDataToEndOfFile()
            }
            guard !body.isEmpty else {
                printError("flitz: no push message body (give a FILE or pipe it into stdin)")
                throw ExitCode(1)
            }
            let wake = try await FlitzCLI.run { try client.decryptPush(body) }
            printLine(String(decoding: wake, as: UTF8.self))
        }
    }
}

/// `flitz notifications ...`: client-only notification settings (`protocol/push.md` 8).
struct Notifications: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Mute conversations and set keyword alerts for `flitz listen --notify` (kept on this device; the relay never learns them).",
        subcommands: [Show.self, Mute.self, Unmute.self, Keywords.self], defaultSubcommand: Show.self)

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List active mutes and keyword alerts.")
        @OptionGroup var options: CommonOptions
        @Flag(help: "One JSON object: mutes (handle, until or null) and keywords.") var json = false

        func run() async throws {
            let client = try options.client()
            let settings = try await FlitzCLI.run { try client.notificationSettings() }
            if json {
                let object: [String: Any] = [
                    "mutes": settings.mutes.map { ["handle": $0.handle, "until": jsonValue($0.until.map(rfc3339))] as [String: Any] },
                    "keywords": settings.keywords,
                ]
                let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
                printLine(String(decoding: data, as: UTF8.self))
                return
            }
            for mute in settings.mutes {
                printLine("muted: \(mute.handle) " + (mute.until.map { "until \(rfc3339($0))" } ?? "until unmuted"))
            }
            for keyword in settings.keywords { printLine("keyword: \(keyword)") }
            if settings.mutes.isEmpty && settings.keywords.isEmpty { printError("flitz: no mutes and no keyword alerts") }
        }
    }

    struct Mute: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show no notifications for a conversation (except keyword alerts) for a while, until a time, or until unmuted.")
        @OptionGroup var options: CommonOptions
        @Argument(help: "The contact's handle.") var handle: String
        @Option(name: .customLong("for"), help: "How long: a number with s, m, h or d, combinable (30m, 8h, 2d, 1h30m).") var duration: String?
        @Option(help: "Until this time (RFC 3339, e.g. 2026-12-01T08:00:00Z).") var until: String?

        func validate() throws {
            guard duration == nil || until == nil else { throw ValidationError("give --for or --until, not both") }
            if let duration, parseDuration(duration) == nil {
                throw ValidationError("--for takes a duration like 30m, 8h, 2d or 1h30m")
            }
            if let until, parseRFC3339(until) == nil {
                throw ValidationError("--until takes an RFC 3339 time like 2026-12-01T08:00:00Z")
            }
        }

        func run() async throws {
            let client = try options.client()
            let end: Date? = try await FlitzCLI.run {
                if let duration, let seconds = parseDuration(duration) { return client.currentTime().addingTimeInterval(seconds) }
                if let until { return parseRFC3339(until) }
                return nil
            }
            try await FlitzCLI.run { try client.mute(handle, until: end) }
            printLine("muted \(handle) " + (end.map { "until \(rfc3339($0))" } ?? "until unmuted"))
        }
    }

    struct Unmute: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End a conversation's mute.")
        @OptionGroup var options: CommonOptions
        @Argument(help: "The contact's handle.") var handle: String

        func run() async throws {
            let client = try options.client()
            try await FlitzCLI.run { try client.unmute(handle) }
            printLine("unmuted \(handle)")
        }
    }

    struct Keywords: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Keyword alerts: a message containing the word (any case, as a whole word) always notifies, even when muted.",
            subcommands: [List.self, Add.self, Remove.self], defaultSubcommand: List.self)

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List the keyword alerts, one per line.")
            @OptionGroup var options: CommonOptions

            func run() async throws {
                let client = try options.client()
                let settings = try await FlitzCLI.run { try client.notificationSettings() }
                if settings.keywords.isEmpty { printError("flitz: no keyword alerts") }
                for keyword in settings.keywords { printLine(keyword) }
            }
        }

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Add a keyword alert.")
            @OptionGroup var options: CommonOptions
            @Argument(help: "One word.") var word: String

            func run() async throws {
                let client = try options.client()
                let stored = try await FlitzCLI.run { try client.addKeyword(word) }
                printLine("keyword: \(stored)")
            }
        }

        struct Remove: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Remove a keyword alert.")
            @OptionGroup var options: CommonOptions
            @Argument(help: "The word.") var word: String

            func run() async throws {
                let client = try options.client()
                try await FlitzCLI.run { try client.removeKeyword(word) }
                printLine("removed keyword \(word)")
            }
        }
    }
}

/// `value`, or JSON null.
func jsonValue(_ value: String?) -> Any { value.map { $0 as Any } ?? NSNull() }

/// Seconds in a duration like `30m`, `8h`, `2d`, `90s` or `1h30m` (units s, m, h, d; each number at least
/// 1); nil when malformed, zero, or over 10 years.
func parseDuration(_ text: String) -> TimeInterval? {
    let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
    var total = 0.0, number = ""
    for character in text.lowercased() {
        if character.isASCII && character.isNumber {
            number.append(character)
        } else if let unit = units[character], let value = Double(number), value > 0 {
            total += value * unit
            number = ""
        } else {
            return nil
        }
    }
    guard number.isEmpty, total > 0, total <= 10 * 365 * 86_400 else { return nil }
    return total
}

/// An RFC 3339 time, with or without fractional seconds; nil when malformed.
func parseRFC3339(_ text: String) -> Date? {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime]
    if let date = formatter.date(from: text) { return date }
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.date(from: text)
}
