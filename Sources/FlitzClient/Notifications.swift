import FlitzWire
import Foundation
import GRDB

/// One muted conversation (`protocol/push.md` 8): nothing from `handle` is shown as a notification until
/// `until` (nil: until unmuted), except messages that match a keyword alert.
public struct ConversationMute: Sendable, Equatable {
    /// The contact's handle (a conversation is one contact, 1:1).
    public var handle: String
    /// End of the mute; nil for no end.
    public var until: Date?

    /// Whether the mute applies at `now`: it has no end, or ends after `now`.
    public func isActive(at now: Date) -> Bool { until.map { $0 > now } ?? true }
}

/// The client's notification settings. They live only in the local store and are never sent to the relay
/// (`protocol/push.md` 8).
public struct NotificationSettings: Sendable, Equatable {
    /// Mutes that still apply, by handle.
    public var mutes: [ConversationMute]
    /// Keyword alerts, sorted case-insensitively.
    public var keywords: [String]

    /// Settings with these mutes and keywords.
    public init(mutes: [ConversationMute] = [], keywords: [String] = []) {
        self.mutes = mutes
        self.keywords = keywords
    }
}

/// A notification as a desktop notifier receives it (`flitz listen --notify`): a title and a body.
public struct MessageNotification: Sendable, Equatable {
    /// The title: the sender's handle, `HANDLE (keyword: WORD)` for a keyword alert, or `Flitz` for a summary.
    public var title: String
    /// The body: the message text (at most `NotificationRules.maxBodyCharacters` characters, then `…`), or
    /// the summary `N new messages from A, B`.
    public var body: String
    /// Senders, in the order of their first message.
    public var senders: [String]
    /// The 16-byte ids of the messages it stands for, in arrival order.
    public var messageIDs: [Data]
    /// The keyword that matched (as the user added it) for a keyword alert; nil otherwise.
    public var keyword: String?

    /// Whether this notification stands for several messages.
    public var isSummary: Bool { messageIDs.count > 1 }
}

/// The client's notification rules (`protocol/push.md` 8), applied after decryption to the messages one
/// processing step made visible (a batch: the queue drained on connecting, or one `Deliver` frame). Pure.
///
/// 1. Messages this account sent from another device (sent transcripts) never notify.
/// 2. A message whose text contains a keyword (case-insensitive, as a whole word: the characters before and
///    after the match are not letters, digits or `_`) is a **keyword alert** of its own, titled
///    `HANDLE (keyword: WORD)`, even from a muted conversation; with several matching keywords, the first in
///    case-insensitive alphabetical order is named.
/// 3. Any other message from a conversation with an active mute (no end, or an end after now) is not shown.
/// 4. The remaining messages of the batch: one of them is shown as itself (title the sender, body its text);
///    two or more become **one summary**, title `Flitz`, body `N new messages from A, B`, senders in the order
///    of their first message.
/// Keyword alerts come first, in arrival order, then the single message or the summary.
public enum NotificationRules {
    /// Longest body shown for one message, in characters; longer text is cut and ends with `…`.
    public static let maxBodyCharacters = 200

    /// The notifications for one batch of messages, in arrival order, under `settings` at `now`.
    public static func notifications(for batch: [ReceivedMessage], settings: NotificationSettings, now: Date) -> [MessageNotification] {
        let muted = Set(settings.mutes.filter { $0.isActive(at: now) }.map(\.handle))
        let keywords = settings.keywords.sorted { $0.lowercased() < $1.lowercased() }
        var alerts: [MessageNotification] = []
        var rest: [ReceivedMessage] = []
        for message in batch where message.to == nil {
            if let keyword = keywords.first(where: { matches(message.text, keyword: $0) }) {
                alerts.append(
                    MessageNotification(
                        title: "\(senderTitle(message)) (keyword: \(keyword))", body: preview(message.text), senders: [message.from],
                        messageIDs: [message.messageID], keyword: keyword))
            } else if !muted.contains(message.from) {
                rest.append(message)
            }
        }
        if rest.count == 1, let message = rest.first {
            alerts.append(
                MessageNotification(
                    title: senderTitle(message), body: preview(message.text), senders: [message.from], messageIDs: [message.messageID], keyword: nil))
        } else if rest.count > 1 {
            var senders: [String] = []
            for message in rest where !senders.contains(message.from) { senders.append(message.from) }
            alerts.append(
                MessageNotification(
                    title: "Flitz", body: "\(rest.count) new messages from \(senders.joined(separator: ", "))", senders: senders,
                    messageIDs: rest.map(\.messageID), keyword: nil))
        }
        return alerts
    }

    /// Whether `keyword` occurs in `text` case-insensitively with no word character (letter, digit, `_`)
    /// directly before or after it.
    public static func matches(_ text: String, keyword: String) -> Bool {
        guard !keyword.isEmpty else { return false }
        var searchRange = text.startIndex..<text.endIndex
        while let found = text.range(of: keyword, options: [.caseInsensitive], range: searchRange) {
            let before = found.lowerBound == text.startIndex ? nil : text[text.index(before: found.lowerBound)]
            let after = found.upperBound == text.endIndex ? nil : text[found.upperBound]
            if !(before.map(isWordCharacter) ?? false) && !(after.map(isWordCharacter) ?? false) { return true }
            guard found.lowerBound < text.endIndex else { return false }
            searchRange = text.index(after: found.lowerBound)..<text.endIndex
        }
        return false
    }

    static func isWordCharacter(_ character: Character) -> Bool { character.isLetter || character.isNumber || character == "_" }

    static func senderTitle(_ message: ReceivedMessage) -> String {
        message.untrustedSender ? "\(message.from) [new identity key, not verified]" : message.from
    }

    static func preview(_ text: String) -> String {
        text.count <= maxBodyCharacters ? text : String(text.prefix(maxBodyCharacters)) + "…"
    }
}

extension FlitzClient {
    /// Longest keyword, in characters.
    public static let maxKeywordCharacters = 64

    // MARK: notification settings (local only)

    /// Mutes notifications from `handle` until `until` (nil: until `unmute`), replacing an earlier mute.
    /// Local only: the relay keeps waking this device and delivering the conversation (`protocol/push.md` 8).
    /// - Throws: `ClientError(.invalidArgument)` for an invalid handle, your own handle, or an end not after
    ///   now; `.notInitialized`.
    public func mute(_ handle: String, until: Date?) throws {
        let account = try requireAccount()
        guard Handle.isValid(handle) else { throw ClientError(.invalidArgument, "invalid handle \"\(handle)\"") }
        guard handle != account.handle else { throw ClientError(.invalidArgument, "your own messages never notify; nothing to mute") }
        let at = now()
        if let until, until <= at { throw ClientError(.invalidArgument, "the end of the mute must be in the future") }
        try store.dbQueue.write { db in
            try db.execute(sql: "DELETE FROM notification_mutes WHERE until IS NOT NULL AND until <= ?", arguments: [at.timeIntervalSince1970])
            try db.execute(
                sql: "INSERT OR REPLACE INTO notification_mutes (handle, until) VALUES (?, ?)",
                arguments: [handle, until?.timeIntervalSince1970])
        }
    }

    /// Ends a mute of `handle`.
    /// - Throws: `ClientError(.invalidArgument)` when `handle` is not muted (an expired mute counts as not muted).
    public func unmute(_ handle: String) throws {
        _ = try requireAccount()
        let at = now().timeIntervalSince1970
        let removed = try store.dbQueue.write { db -> Bool in
            try db.execute(sql: "DELETE FROM notification_mutes WHERE handle = ? AND (until IS NULL OR until > ?)", arguments: [handle, at])
            let changed = db.changesCount > 0
            try db.execute(sql: "DELETE FROM notification_mutes WHERE handle = ? OR (until IS NOT NULL AND until <= ?)", arguments: [handle, at])
            return changed
        }
        guard removed else { throw ClientError(.invalidArgument, "\(handle) is not muted") }
    }

    /// Adds a keyword alert (kept as given; matched case-insensitively as a whole word). Adding one already
    /// there, in any case, changes nothing. Returns the keyword as stored.
    /// - Throws: `ClientError(.invalidArgument)` for an empty keyword, one with white space, or one longer than
    ///   `maxKeywordCharacters`.
    @discardableResult
    public func addKeyword(_ word: String) throws -> String {
        _ = try requireAccount()
        let word = word.trimmingCharacters(in: .whitespaces)
        guard !word.isEmpty, !word.contains(where: { $0.isWhitespace || $0.isNewline }) else {
            throw ClientError(.invalidArgument, "a keyword is one word, without spaces")
        }
        guard word.count <= Self.maxKeywordCharacters else {
            throw ClientError(.invalidArgument, "a keyword is at most \(Self.maxKeywordCharacters) characters")
        }
        let at = now().timeIntervalSince1970
        return try store.dbQueue.write { db in
            try db.execute(sql: "INSERT OR IGNORE INTO notification_keywords (word, added_at) VALUES (?, ?)", arguments: [word, at])
            return try String.fetchOne(db, sql: "SELECT word FROM notification_keywords WHERE word = ?", arguments: [word]) ?? word
        }
    }

    /// Removes a keyword alert (case-insensitively).
    /// - Throws: `ClientError(.invalidArgument)` when there is no such keyword.
    public func removeKeyword(_ word: String) throws {
        _ = try requireAccount()
        let removed = try store.dbQueue.write { db -> Bool in
            try db.execute(sql: "DELETE FROM notification_keywords WHERE word = ?", arguments: [word.trimmingCharacters(in: .whitespaces)])
            return db.changesCount > 0
        }
        guard removed else { throw ClientError(.invalidArgument, "no keyword alert \"\(word)\"") }
    }

    /// The notification settings that apply now (expired mutes left out).
    /// - Throws: `ClientError(.notInitialized)`, database errors.
    public func notificationSettings() throws -> NotificationSettings {
        _ = try requireAccount()
        let at = now()
        return try store.dbQueue.read { db in
            let mutes = try Row.fetchAll(db, sql: "SELECT handle, until FROM notification_mutes ORDER BY handle").map { row in
                ConversationMute(handle: row["handle"], until: (row["until"] as Double?).map(Date.init(timeIntervalSince1970:)))
            }.filter { $0.isActive(at: at) }
            let keywords = try String.fetchAll(db, sql: "SELECT word FROM notification_keywords ORDER BY word COLLATE NOCASE")
            return NotificationSettings(mutes: mutes, keywords: keywords)
        }
    }

    /// The notifications for one batch of received messages under the settings stored now (read per batch,
    /// so a `flitz notifications ...` run beside `listen --notify` applies at once).
    func notifications(for batch: [ReceivedMessage]) throws -> [MessageNotification] {
        guard !batch.isEmpty else { return [] }
        return NotificationRules.notifications(for: batch, settings: try notificationSettings(), now: now())
    }

    /// Like `listen`, but reports notifications instead of messages: each batch of messages (the queue drained
    /// on connecting, then each delivery) goes through `NotificationRules` under the current settings;
    /// `onNotifications` is called with each non-empty result. Receipts are not reported; warnings go to
    /// `onWarning`. Messages are stored and acknowledged (their senders see "delivered") but neither marked shown
    /// nor reported seen: a notification is not a read, so `receive` shows them later and reports them seen then.
    /// - Throws: `ClientError` for errors other than a lost connection; `CancellationError`.
    public func listenForNotifications(
        onNotifications: @escaping @Sendable ([MessageNotification]) -> Void, onWarning: @escaping @Sendable (String) -> Void
    ) async throws {
        try await runConnected(
            onEvent: { event in
                if case .warning(let text) = event { onWarning(text) }
            },
            onMessages: { batch in
                do {
                    let notifications = try self.notifications(for: batch)
                    if !notifications.isEmpty { onNotifications(notifications) }
                } catch {
                    onWarning("could not read the notification settings: \(error)")
                }
            },
            foreground: { _, _ in try await Task.sleep(for: .seconds(86_400 * 365)) })
    }
}
