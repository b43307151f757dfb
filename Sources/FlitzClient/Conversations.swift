import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import GRDB

// Replies, reactions, edits, deletes, unsend, forwarding, sealed seen receipts, read sync and disappearing
// messages on the client (`protocol/conversations.md` sections 2-5, 7, 8).

// MARK: - public values

/// How a reply shows the message it quotes (`protocol/conversations.md` section 4, "Reply").
public struct QuotedMessage: Sendable, Hashable {
    /// The quoted message's author handle.
    public var author: String
    /// The quoted message's 16-byte id.
    public var messageID: Data
    /// The text to show: the target's current text when held with a matching hash, else the reply's preview
    /// (at most 100 Unicode scalars); nil means "original not available" (deleted, or never arrived).
    public var text: String?
    /// Whether `text` is the reply's preview rather than this device's copy of the target.
    public var fromPreview: Bool
}

/// One emoji's reactions on a message (section 4, "Reaction"): the aggregate clients show.
public struct ReactionSummary: Sendable, Hashable {
    /// The emoji.
    public var emoji: String
    /// How many people reacted with it.
    public var count: Int
    /// Who (handles, sorted).
    public var reactors: [String]
}

/// What a message carries besides its text (`protocol/conversations.md` sections 4, 7, 8).
public struct MessageDetails: Sendable, Hashable {
    /// Set on a reply.
    public var reply: QuotedMessage?
    /// 0 for an original; n for a message forwarded n times.
    public var forwardCount: UInt32 = 0
    /// The sender asked that it not be forwarded.
    public var noForward = false
    /// The version shown (1 = never edited, up to 10).
    public var version: UInt32 = 1
    /// Deleted for everyone: a tombstone ("message deleted"), with no text.
    public var deleted = false
    /// Disappearing timer of this message in seconds (nil: none).
    public var disappearAfterSeconds: UInt32?
    /// Reactions, by emoji (most reactors first, then emoji order).
    public var reactions: [ReactionSummary] = []
    /// A media message's file or location (`protocol/attachments.md` 3); nil for a plain text.
    public var media: MediaSummary?

    /// Whether the text shown is an edit.
    public var edited: Bool { version > 1 }

    /// No details.
    public init() {}
}

/// One message of a conversation's history (`flitz history`).
public struct ConversationMessage: Sendable {
    /// 16-byte message id.
    public var messageID: Data
    /// Its author's handle (this account's own for messages it sent, on any of its devices).
    public var author: String
    /// The other party.
    public var peer: String
    /// Whether this account wrote it.
    public var outgoing: Bool
    /// The current text (empty for a tombstone).
    public var text: String
    /// Earlier versions' texts, oldest first (empty when never edited).
    public var previousVersions: [String]
    /// The relay's acceptance time (zero while pending).
    public var sentAt: Date
    /// Delivery status (outgoing), `delivered` for incoming.
    public var status: MessageStatus
    /// Reply, reactions, edit, tombstone, forwarding and disappearing details.
    public var details: MessageDetails
}

/// A conversation in `flitz conversations`.
public struct ConversationSummary: Sendable {
    /// The other party's handle.
    public var peer: String
    /// Incoming messages shown on no device of this account yet.
    public var unread: Int
    /// The newest message.
    public var lastMessage: ConversationMessage
    /// The conversation's disappearing timer in seconds (0: off).
    public var disappearingSeconds: UInt32
}

/// One recipient device's answer to `flitz unsend` (`protocol/conversations.md` section 5).
public struct UnsendOutcome: Sendable, Hashable {
    /// What became of the envelope to that device.
    public enum State: String, Sendable {
        /// It was still queued: deleted at the relay, never delivered.
        case purged
        /// The device already had it.
        case alreadyDelivered = "already delivered"
        /// It had expired (or the device was removed) before.
        case alreadyExpired = "already expired"
    }

    /// The recipient handle (this account's own for its other devices' copies).
    public var handle: String
    /// The recipient device id.
    public var deviceID: UInt32
    /// What became of it.
    public var state: State
}

/// The seen-receipts setting (`protocol/conversations.md` section 5).
public enum SeenReceiptsMode: String, Sendable, CaseIterable {
    /// `ReportSeen` through the relay (the default).
    case relay
    /// A `Seen` content to the author's devices in an ordinary silent envelope.
    case sealed
    /// Neither.
    case off
}

// MARK: - outgoing content

/// Something to send, of any content kind: what goes to the peer's devices, what goes to this account's other
/// devices (a sent transcript or a read sync), and the relay-visible options. Stored with the message before
/// anything is submitted, so `resendPending` and `resendAfterReset` send exactly this again.
struct OutgoingContent: Sendable {
    /// 16-byte message id (also the mutation's own id).
    var messageID: Data
    /// Content for the peer's devices; nil for a read sync.
    var peerContent: MessageContent?
    /// Content for this account's other devices; nil for a sealed seen (not wrapped, section 2).
    var ownContent: MessageContent?
    /// Set for a text (shown in history); nil for a mutation, which never shows as a message.
    var textMessage: TextMessage?
    /// `urgent` to the peer (texts, replies, forwards) or `silent` (everything else).
    var urgent: Bool
    /// The 32-byte unsend token of a text (its hash goes on every envelope).
    var unsendToken: Data?
    /// Envelope TTL in seconds (nil: the relay's retention).
    var ttlSeconds: UInt32?

    /// The text stored in `messages.text`.
    var text: String { textMessage?.body ?? "" }
}

/// Why a mutation was not applied (`protocol/conversations.md` section 3).
enum MutationRejection: String, Error {
    case unknownTarget = "unknown target"
    case contentMismatch = "content mismatch"
    case notTheAuthor = "not the author"
    case tooLate = "too late"
    case tooManyVersions = "too many versions"
    case deleted = "deleted"
}

/// A stored message a mutation may name.
struct StoredTarget {
    var seq: Int64
    var messageID: Data
    var outgoing: Bool
    var author: String
    var peer: String
    var text: String
    var originalText: String
    var acceptedAt: Int64
    var version: UInt32
    var versionSentAt: Int64
    var versionID: Data
    /// 0 none, 1 deleted for everyone (tombstone), 2 deleted for me, 3 disappeared.
    var deleted: Int
    var noForward: Bool
    var forwardCount: UInt32
    /// As stored: sealed (`ClientStore.openSecret(_, .unsendToken)` opens it).
    var unsendToken: Data?

    var reference: MessageRef { MessageRef(authorHandle: author, messageID: messageID, originalText: originalText) }

    init(_ row: Row, account: AccountRecord) {
        seq = row["seq"]
        messageID = row["message_id"]
        outgoing = row["outgoing"]
        peer = row["peer"]
        author = outgoing ? account.handle : peer
        text = row["text"]
        originalText = row["original_text"] ?? text
        acceptedAt = row["accepted_at_ms"]
        version = UInt32(row["version"] as Int64)
        versionSentAt = row["version_sent_at_ms"]
        versionID = row["version_id"] ?? Data()
        deleted = row["deleted"]
        noForward = row["no_forward"]
        forwardCount = UInt32(row["forward_count"] as Int64)
        unsendToken = row["unsend_token"]
    }
}

extension FlitzClient {
    /// A recipient's copy is kept at most this long unshown before it disappears (section 8: 30 days).
    static let unshownDisappearMilliseconds: Int64 = 30 * 86_400_000
    /// Mutations for a target not yet arrived are kept this long (`PENDING_MUTATION_AGE`, 7 days).
    static let pendingMutationMilliseconds: Int64 = 7 * 86_400_000

    // MARK: building content

    /// A text for `handle` and its transcript: the conversation's timer `timer` (seconds, 0 off) stamped in when
    /// the text sets none, the envelope TTL at most the timer (section 8), the unsend token in the transcript.
    static func textOutgoing(
        _ message: TextMessage, to handle: String, messageID: Data, sentAt: Int64, unsendToken: Data, timer: UInt32, expiresIn: UInt32?
    ) -> OutgoingContent {
        var message = message
        if message.expireAfterSeconds == nil, timer > 0 { message.expireAfterSeconds = timer }
        let seconds = message.expireAfterSeconds ?? 0
        let ttl = seconds > 0 ? min(expiresIn ?? seconds, seconds) : expiresIn
        return OutgoingContent(
            messageID: messageID, peerContent: MessageContent(messageID: messageID, sentAtMilliseconds: sentAt, body: .text(message)),
            ownContent: MessageContent(
                messageID: messageID, sentAtMilliseconds: sentAt,
                body: .sentTranscript(SentTranscript(destinationHandle: handle, body: .text(message), unsendToken: unsendToken))),
            textMessage: message, urgent: true, unsendToken: unsendToken, ttlSeconds: ttl)
    }

    /// A reaction, edit, delete for everyone or timer for `handle` and its transcript, `silent`.
    static func mutationOutgoing(_ body: MessageContent.Body, to handle: String, messageID: Data, sentAt: Int64) -> OutgoingContent {
        OutgoingContent(
            messageID: messageID, peerContent: MessageContent(messageID: messageID, sentAtMilliseconds: sentAt, body: body),
            ownContent: MessageContent(
                messageID: messageID, sentAtMilliseconds: sentAt, body: .sentTranscript(SentTranscript(destinationHandle: handle, body: body))),
            textMessage: nil, urgent: false)
    }

    /// Records what a resend needs and what history shows on the message row `seq` that `prepare` inserted; a
    /// reaction, edit, delete or timer applies here at once, in the same transaction (so a crash before submitting
    /// loses neither). Returns warnings of that application (none when the caller checked the rules).
    @discardableResult
    static func storeOutgoing(_ outgoing: OutgoingContent, seq: Int64, account: AccountRecord, _ db: Database) throws -> [ClientEvent] {
        try db.execute(
            sql: """
                UPDATE messages SET kind = ?, content = ?, transcript_content = ?, urgent = ?, unsend_token = ?, unsend_token_hash = ?,
                    sent_at_ms = ? WHERE seq = ?
                """,
            arguments: [
                outgoing.textMessage == nil ? "mutation" : "text", ClientStore.sealSecret(outgoing.peerContent?.encoded(), .messageContent, db),
                ClientStore.sealSecret(outgoing.ownContent?.encoded(), .transcriptContent, db),
                outgoing.urgent, ClientStore.sealSecret(outgoing.unsendToken, .unsendToken, db), outgoing.unsendToken.map(ConversationTokens.unsendTokenHash),
                (outgoing.peerContent ?? outgoing.ownContent)?.sentAtMilliseconds ?? 0, seq,
            ])
        if let text = outgoing.textMessage {
            try storeTextFields(text, seq: seq, db)
            return []
        }
        guard let transcript = outgoing.ownContent, case .sentTranscript = transcript.body else { return [] }
        // Relay time is not known yet; the caller checked the 24-hour window against the relay's clock.
        return try applyContent(transcript, sender: account.handle, acceptedAt: 0, receivedAt: 0, account: account, keepPending: false, db)
    }

    private static func storeTextFields(_ text: TextMessage, seq: Int64, _ db: Database) throws {
        try db.execute(
            sql: """
                UPDATE messages SET original_text = ?, quote_author = ?, quote_id = ?, quote_hash = ?, quote_preview = ?, forward_count = ?,
                    no_forward = ?, expire_after = ? WHERE seq = ?
                """,
            arguments: [
                text.body, text.quote?.target.authorHandle, text.quote?.target.messageID, text.quote?.target.contentHash, text.quote?.preview,
                Int64(text.forwardCount), text.noForward, text.expireAfterSeconds.flatMap { $0 > 0 ? Int64($0) : nil }, seq,
            ])
        try storeAttachmentRow(text, seq: seq, db)  // a media message's `attachments` row (MediaStore.swift)
    }

    /// The conversation's disappearing timer in seconds (0: off).
    static func disappearingSeconds(_ handle: String, _ db: Database) throws -> UInt32 {
        UInt32(try Int64.fetchOne(db, sql: "SELECT seconds FROM disappearing_timers WHERE peer = ?", arguments: [handle]) ?? 0)
    }

    // MARK: incoming

    /// Called once a text (or a transcript of one) was stored: records its reply, forwarding and disappearing
    /// fields and unsend token, then applies mutations that arrived before it (section 3, `unknown target`).
    static func storedText(
        _ text: TextMessage, content: MessageContent, conversation: String, outgoing: Bool, unsendToken: Data?, account: AccountRecord,
        _ db: Database
    ) throws -> [ClientEvent] {
        guard let seq = try Int64.fetchOne(
            db, sql: "SELECT seq FROM messages WHERE peer = ? AND outgoing = ? AND message_id = ?",
            arguments: [conversation, outgoing, content.messageID])
        else { return [] }
        try storeTextFields(text, seq: seq, db)
        let token = unsendToken.flatMap { $0.isEmpty ? nil : $0 }
        try db.execute(
            sql: "UPDATE messages SET sent_at_ms = ?, unsend_token = ?, unsend_token_hash = ? WHERE seq = ?",
            arguments: [content.sentAtMilliseconds, ClientStore.sealSecret(token, .unsendToken, db), token.map(ConversationTokens.unsendTokenHash), seq])
        let author = outgoing ? account.handle : conversation
        var events: [ClientEvent] = []
        for row in try Row.fetchAll(
            db, sql: "SELECT * FROM pending_mutations WHERE author = ? AND target_id = ? ORDER BY seq", arguments: [author, content.messageID])
        {
            try db.execute(sql: "DELETE FROM pending_mutations WHERE seq = ?", arguments: [row["seq"] as Int64])
            guard let stored = try ClientStore.openSecret(row["content"], .pendingMutation, db), let mutation = try? MessageContent(decoding: stored)
            else { continue }
            events += try applyContent(
                mutation, sender: row["sender"], acceptedAt: row["accepted_at_ms"], receivedAt: row["received_at_ms"], account: account,
                keepPending: false, db)
        }
        return events
    }

    /// Applies a reaction, edit, delete for everyone, disappearing timer or seen (or a sent transcript of one) from
    /// `sender`, inside the transaction that stored the session. Returns warnings for rejected mutations
    /// (`protocol/conversations.md` section 3).
    /// `receivedAt`: this device's (injected) clock, seconds since the Unix epoch, as the disappearing sweep reads it.
    static func applyConversationContent(
        _ content: MessageContent, sender: String, envelope: WireEnvelope, receivedAt: TimeInterval, account: AccountRecord, _ db: Database
    ) throws -> [ClientEvent] {
        try applyContent(
            content, sender: sender, acceptedAt: envelope.acceptedAtMs, receivedAt: Int64(receivedAt * 1000), account: account,
            keepPending: true, db)
    }

    /// Applies `content` (see `applyConversationContent`); `keepPending`: keep a mutation whose target has not
    /// arrived (7 days) instead of dropping it.
    static func applyContent(
        _ content: MessageContent, sender: String, acceptedAt: Int64, receivedAt: Int64, account: AccountRecord, keepPending: Bool,
        _ db: Database
    ) throws -> [ClientEvent] {
        var body = content.body
        var conversation = sender
        if case .sentTranscript(let transcript) = body {
            guard sender == account.handle else { return [.warning("ignored a sent transcript from \(sender): only your own devices send those")] }
            conversation = transcript.destinationHandle
            body = transcript.body
        }
        let who = sender == account.handle ? "your other device" : sender
        do {
            switch body {
            case .seen(let targets):
                if sender == account.handle {
                    return try applyReadSync(targets, content: content, sender: sender, acceptedAt: acceptedAt, receivedAt: receivedAt, account: account, keepPending: keepPending, db)
                }
                return try applySealedSeen(targets, from: sender, account: account, db)
            case .reaction(let reaction):
                let target = try resolve(reaction.target, conversation: conversation, account: account, db)
                if target.deleted == 1 {
                    if reaction.emoji.isEmpty { return [] }  // removing one's own reaction: nothing left to remove
                    throw MutationRejection.deleted
                }
                try checkHash(reaction.target, target)
                let existing = try Row.fetchOne(
                    db, sql: "SELECT sent_at_ms, reaction_id FROM reactions WHERE message_seq = ? AND reactor = ?", arguments: [target.seq, sender])
                if let existing, !isNewer(content.sentAtMilliseconds, content.messageID, than: existing["sent_at_ms"], existing["reaction_id"]) {
                    return []  // an older reaction by the same person: the newer one stays (convergent)
                }
                try db.execute(
                    sql: "INSERT OR REPLACE INTO reactions (message_seq, reactor, emoji, sent_at_ms, reaction_id) VALUES (?, ?, ?, ?, ?)",
                    arguments: [target.seq, sender, reaction.emoji, content.sentAtMilliseconds, content.messageID])
                return []
            case .edit(let edit):
                let target = try resolve(edit.target, conversation: conversation, account: account, db)
                guard sender == target.author, edit.target.authorHandle == sender else { throw MutationRejection.notTheAuthor }
                if target.deleted == 1 { throw MutationRejection.deleted }
                try checkHash(edit.target, target)
                if target.acceptedAt > 0, acceptedAt - target.acceptedAt > ConversationLimits.mutationWindowMilliseconds { throw MutationRejection.tooLate }
                // Any version 2...10 goes into the history, also one that arrives after a higher one (an author with two
                // devices); only the winner is shown (section 4).
                guard (2...ConversationLimits.maxVersions).contains(edit.version) else { throw MutationRejection.tooManyVersions }
                try db.execute(
                    sql: """
                        INSERT OR IGNORE INTO message_versions (message_seq, version, text, sent_at_ms, version_id, accepted_at_ms)
                        VALUES (?, 1, ?, ?, ?, ?)
                        """,
                    arguments: [target.seq, target.originalText, 0, target.messageID, target.acceptedAt])
                try db.execute(
                    sql: """
                        INSERT OR IGNORE INTO message_versions (message_seq, version, text, sent_at_ms, version_id, accepted_at_ms)
                        VALUES (?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [target.seq, Int64(edit.version), edit.body, content.sentAtMilliseconds, content.messageID, acceptedAt])
                // The highest version wins; a tie goes to the greater (sent_at_ms, message_id) (section 4).
                if edit.version > target.version
                    || (edit.version == target.version
                        && isNewer(content.sentAtMilliseconds, content.messageID, than: target.versionSentAt, target.versionID))
                {
                    try db.execute(
                        sql: "UPDATE messages SET text = ?, version = ?, version_sent_at_ms = ?, version_id = ? WHERE seq = ?",
                        arguments: [edit.body, Int64(edit.version), content.sentAtMilliseconds, content.messageID, target.seq])
                }
                return []
            case .deleteForEveryone(let reference):
                let target = try resolve(reference, conversation: conversation, account: account, db)
                guard sender == target.author, reference.authorHandle == sender else { throw MutationRejection.notTheAuthor }
                if target.deleted == 1 { return [] }  // already a tombstone (a second copy)
                try checkHash(reference, target)
                if target.acceptedAt > 0, acceptedAt - target.acceptedAt > ConversationLimits.mutationWindowMilliseconds { throw MutationRejection.tooLate }
                try erase(target, as: 1, db)
                return []
            case .disappearingTimer(let timer):
                try applyTimer(timer, conversation: conversation, content: content, db)
                return []
            default:
                return [.warning("ignored a message from \(who) of a kind this version does not apply")]
            }
        } catch MutationRejection.unknownTarget {
            if keepPending, let target = pendingTarget(body) {
                try db.execute(
                    sql: """
                        INSERT INTO pending_mutations (conversation, sender, author, target_id, content, accepted_at_ms, received_at_ms)
                        VALUES (?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        conversation, sender, target.authorHandle, target.messageID, ClientStore.sealSecret(content.encoded(), .pendingMutation, db),
                        acceptedAt, receivedAt,
                    ])
                return [.warning("\(kindName(body)) from \(who): \(MutationRejection.unknownTarget.rawValue); kept for 7 days in case the message arrives")]
            }
            return [.warning("rejected \(kindName(body)) from \(who): \(MutationRejection.unknownTarget.rawValue)")]
        } catch let rejection as MutationRejection {
            return [.warning("rejected \(kindName(body)) from \(who): \(rejection.rawValue)")]
        }
    }

    private static func pendingTarget(_ body: MessageContent.Body) -> MessageRef? {
        switch body {
        case .reaction(let reaction): reaction.target
        case .edit(let edit): edit.target
        case .deleteForEveryone(let target): target
        default: nil
        }
    }

    private static func kindName(_ body: MessageContent.Body) -> String {
        switch body {
        case .reaction: "a reaction"
        case .edit: "an edit"
        case .deleteForEveryone: "a delete for everyone"
        case .seen: "a seen receipt"
        case .disappearingTimer: "a disappearing timer"
        default: "a message"
        }
    }

    /// Whether (sentAt, id) is greater than (otherSentAt, otherID), ids compared as bytes.
    static func isNewer(_ sentAt: Int64, _ id: Data, than otherSentAt: Int64, _ otherID: Data) -> Bool {
        if sentAt != otherSentAt { return sentAt > otherSentAt }
        return otherID.lexicographicallyPrecedes(id)
    }

    /// The message `reference` names in the conversation with `conversation` (author and id; the hash is checked
    /// by the caller). Deleted for me or disappeared counts as unknown (section 4).
    /// - Throws: `MutationRejection.unknownTarget`.
    static func resolve(_ reference: MessageRef, conversation: String, account: AccountRecord, _ db: Database) throws -> StoredTarget {
        let outgoing = reference.authorHandle == account.handle
        guard outgoing || reference.authorHandle == conversation,
            let row = try Row.fetchOne(
                db, sql: "SELECT * FROM messages WHERE peer = ? AND outgoing = ? AND message_id = ? AND kind = 'text'",
                arguments: [conversation, outgoing, reference.messageID])
        else { throw MutationRejection.unknownTarget }
        let target = StoredTarget(row, account: account)
        if target.deleted >= 2 { throw MutationRejection.unknownTarget }
        return target
    }

    private static func checkHash(_ reference: MessageRef, _ target: StoredTarget) throws {
        guard reference.matches(authorHandle: target.author, messageID: target.messageID, originalText: target.originalText) else {
            throw MutationRejection.contentMismatch
        }
    }

    /// Removes a message's text, versions, reactions and the quoted previews of it in replies (section 4): a
    /// tombstone (`deleted` 1), deleted for me (2) or disappeared (3).
    static func erase(_ target: StoredTarget, as deleted: Int, _ db: Database) throws {
        try eraseAttachment(seq: target.seq, db)  // its attachments row and decrypted file (MediaStore.swift)
        try db.execute(
            sql: """
                UPDATE messages SET deleted = ?, text = '', original_text = NULL, content = NULL, transcript_content = NULL, quote_preview = NULL
                WHERE seq = ?
                """,
            arguments: [deleted, target.seq])
        try db.execute(sql: "DELETE FROM message_versions WHERE message_seq = ?", arguments: [target.seq])
        try db.execute(sql: "DELETE FROM reactions WHERE message_seq = ?", arguments: [target.seq])
        // Replies keep no copy of it either: their stored contents (which carry the preview) go too, so a resend
        // after a session reset rebuilds such a reply from its text alone.
        try db.execute(
            sql: """
                UPDATE messages SET quote_preview = NULL, content = NULL, transcript_content = NULL
                WHERE peer = ? AND quote_author = ? AND quote_id = ?
                """,
            arguments: [target.peer, target.author, target.messageID])
    }

    private static func applyTimer(_ timer: DisappearingTimer, conversation: String, content: MessageContent, _ db: Database) throws {
        if let current = try Row.fetchOne(db, sql: "SELECT * FROM disappearing_timers WHERE peer = ?", arguments: [conversation]) {
            let version = UInt64(current["version"] as Int64)
            // The highest version wins; a tie goes to the greater (sent_at_ms, message_id) (section 8).
            guard timer.version > version
                || (timer.version == version
                    && isNewer(content.sentAtMilliseconds, content.messageID, than: current["sent_at_ms"], current["message_id"]))
            else { return }
        }
        try db.execute(
            sql: "INSERT OR REPLACE INTO disappearing_timers (peer, seconds, version, sent_at_ms, message_id) VALUES (?, ?, ?, ?, ?)",
            arguments: [conversation, Int64(timer.seconds), Int64(timer.version), content.sentAtMilliseconds, content.messageID])
    }

    /// A read sync from another device of this account: the messages count as read here and their disappearing
    /// timers start at the earliest show (section 5); never changes the status of a message this account sent.
    /// It does not count as reported: that device may have withheld its receipt (a request there), and the relay
    /// counts one seen however many devices report it.
    private static func applyReadSync(
        _ targets: [MessageRef], content: MessageContent, sender: String, acceptedAt: Int64, receivedAt: Int64, account: AccountRecord,
        keepPending: Bool, _ db: Database
    ) throws -> [ClientEvent] {
        var events: [ClientEvent] = []
        for reference in targets where reference.authorHandle != account.handle {
            do {
                let target = try resolve(reference, conversation: reference.authorHandle, account: account, db)
                try checkHash(reference, target)
                try db.execute(
                    sql: """
                        UPDATE messages SET read_elsewhere = 1,
                            first_shown_ms = MIN(COALESCE(first_shown_ms, ?), ?) WHERE seq = ?
                        """,
                    arguments: [content.sentAtMilliseconds, content.sentAtMilliseconds, target.seq])
            } catch MutationRejection.unknownTarget {
                // The message may still be on its way to this device: apply the read when it arrives.
                if keepPending {
                    try db.execute(
                        sql: """
                            INSERT INTO pending_mutations (conversation, sender, author, target_id, content, accepted_at_ms, received_at_ms)
                            VALUES (?, ?, ?, ?, ?, ?, ?)
                            """,
                        arguments: [
                            reference.authorHandle, sender, reference.authorHandle, reference.messageID,
                            ClientStore.sealSecret(content.encoded(), .pendingMutation, db), acceptedAt, receivedAt,
                        ])
                }
            } catch let rejection as MutationRejection {
                events.append(.warning("rejected a read sync from your other device: \(rejection.rawValue)"))
            }
        }
        return events
    }

    /// A sealed seen receipt from `sender`: advances this account's messages to it to `seen`, like a relay receipt.
    private static func applySealedSeen(_ targets: [MessageRef], from sender: String, account: AccountRecord, _ db: Database) throws -> [ClientEvent] {
        var events: [ClientEvent] = []
        for reference in targets {
            guard reference.authorHandle == account.handle else {
                events.append(.warning("rejected a seen receipt from \(sender): \(MutationRejection.notTheAuthor.rawValue)"))
                continue
            }
            do {
                let target = try resolve(reference, conversation: sender, account: account, db)
                try checkHash(reference, target)
                let status = MessageStatus(rawValue: try String.fetchOne(db, sql: "SELECT status FROM messages WHERE seq = ?", arguments: [target.seq]) ?? "") ?? .pending
                if status.canAdvance(to: .seen) {
                    try db.execute(sql: "UPDATE messages SET status = 'seen' WHERE seq = ?", arguments: [target.seq])
                    events.append(.receipt(messageID: target.messageID, peer: sender, status: .seen))
                }
            } catch MutationRejection.unknownTarget {
                continue  // deleted here meanwhile: nothing to mark
            } catch let rejection as MutationRejection {
                events.append(.warning("rejected a seen receipt from \(sender): \(rejection.rawValue)"))
            }
        }
        return events
    }

    // MARK: shown messages: read sync and seen receipts

    /// Shown message rows with their details.
    func receivedMessages(_ rows: [Row], account: AccountRecord) throws -> [ReceivedMessage] {
        try store.dbQueue.read { db in try rows.map { try Self.receivedMessage($0, account: account, db) } }
    }

    /// A shown message row with its details.
    static func receivedMessage(_ row: Row, account: AccountRecord, _ db: Database) throws -> ReceivedMessage {
        var message = receivedMessage(row, account: account)
        message.details = try details(of: row, account: account, db)
        return message
    }

    /// After `rows` were shown on this device: starts their disappearing timers, sends the read sync to this
    /// account's other devices, then seen receipts as the setting says, never for a message request (sections 5, 9).
    func reportShown(_ rows: [Row], on connection: RelayConnection, account: AccountRecord) async throws {
        let shownAt = Int64(now().timeIntervalSince1970 * 1000)
        let (references, byPeer, mode) = try store.transaction { db -> ([MessageRef], [String: [MessageRef]], SeenReceiptsMode) in
            var references: [MessageRef] = []
            var byPeer: [String: [MessageRef]] = [:]
            var requests: [String: Bool] = [:]
            for row in rows where !(row["outgoing"] as Bool) {
                let target = StoredTarget(row, account: account)
                try db.execute(sql: "UPDATE messages SET first_shown_ms = COALESCE(first_shown_ms, ?) WHERE seq = ?", arguments: [shownAt, target.seq])
                guard target.deleted == 0 else { continue }
                references.append(target.reference)
                let request = try requests[target.peer] ?? ClientStore.isMessageRequest(target.peer, db)
                requests[target.peer] = request
                // No receipt of either kind for a message request (section 9); left unreported, so once the user
                // accepts (or writes), the relay-tracked seen receipts of what they read go out at the next report.
                if !request, !(row["seen_reported"] as Bool) {
                    byPeer[target.peer, default: []].append(target.reference)
                }
            }
            return (references, byPeer, try Self.seenReceiptsMode(account: account, db))
        }
        for chunk in stride(from: 0, to: references.count, by: ConversationLimits.maxSeenTargets) {
            let targets = Array(references[chunk..<min(chunk + ConversationLimits.maxSeenTargets, references.count)])
            _ = try await submitContent(on: connection, account: account, to: account.handle, textBytes: 0) { id, sentAt in
                OutgoingContent(
                    messageID: id, peerContent: nil, ownContent: MessageContent(messageID: id, sentAtMilliseconds: sentAt, body: .seen(targets: targets)),
                    textMessage: nil, urgent: false)
            }
        }
        switch mode {
        case .relay:
            try await reportSeen(on: connection)
        case .sealed:
            for (peer, all) in byPeer.sorted(by: { $0.key < $1.key }) {
                for chunk in stride(from: 0, to: all.count, by: ConversationLimits.maxSeenTargets) {
                    let targets = Array(all[chunk..<min(chunk + ConversationLimits.maxSeenTargets, all.count)])
                    do {
                        _ = try await submitContent(on: connection, account: account, to: peer, textBytes: 0) { id, sentAt in
                            OutgoingContent(
                                messageID: id, peerContent: MessageContent(messageID: id, sentAtMilliseconds: sentAt, body: .seen(targets: targets)),
                                ownContent: nil, textMessage: nil, urgent: false)
                        }
                    } catch let error as ClientError where error.kind != .relayUnreachable {
                        logger.warning("could not send a sealed seen receipt", metadata: ["peer": "\(peer)", "error": "\(error.message)"])
                    }
                }
            }
            fallthrough
        case .off:
            // Read while receipts were off or sealed: never reported through the relay, even if turned on later.
            try await store.dbQueue.write { db in
                try db.execute(sql: "UPDATE messages SET seen_reported = 1 WHERE outgoing = 0 AND displayed = 1 AND seen_reported = 0")
            }
        }
    }

    // MARK: disappearing

    /// Removes messages whose disappearing timer ran out on this device (section 8), and mutations kept more
    /// than 7 days for a target that never arrived. Runs on the client clock (`now`).
    func sweepExpired() throws {
        let at = Int64(now().timeIntervalSince1970 * 1000)
        guard let account = try store.loadAccount() else { return }
        try store.dbQueue.write { db in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM messages WHERE kind = 'text' AND deleted = 0 AND COALESCE(expire_after, 0) > 0 AND (
                        (outgoing = 1 AND accepted_at_ms > 0 AND accepted_at_ms + expire_after * 1000 <= ?)
                        OR (outgoing = 0 AND first_shown_ms IS NOT NULL AND first_shown_ms + expire_after * 1000 <= ?)
                        OR (outgoing = 0 AND accepted_at_ms + ? <= ?))
                    """,
                arguments: [at, at, Self.unshownDisappearMilliseconds, at])
            for row in rows { try Self.erase(StoredTarget(row, account: account), as: 3, db) }
            try db.execute(sql: "DELETE FROM pending_mutations WHERE received_at_ms + ? <= ?", arguments: [Self.pendingMutationMilliseconds, at])
        }
    }

    // MARK: commands

    /// The text message with this id in any conversation (not deleted for me, not disappeared).
    /// - Throws: `ClientError(.unknownMessage)`.
    func storedMessage(_ messageID: Data, account: AccountRecord) throws -> StoredTarget {
        try sweepExpired()
        let row = try store.dbQueue.read { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM messages WHERE message_id = ? AND kind = 'text' AND deleted < 2 ORDER BY seq DESC LIMIT 1",
                arguments: [messageID])
        }
        guard let row else { throw ClientError(.unknownMessage, "no message with id \(messageID.hexString) on this device") }
        return StoredTarget(row, account: account)
    }

    /// Sends a reaction, edit, delete for everyone or timer to `peer` (and its transcript to the own devices); it
    /// applies here when stored (`storeOutgoing`). `check` runs on the connection before anything is sent.
    func sendMutation(
        _ body: MessageContent.Body, to peer: String, textBytes: Int = 0, timeout: Duration,
        check: (@Sendable (RelayConnection) throws -> Void)? = nil
    ) async throws -> Data {
        let account = try requireAccount()
        let id = try await withSendRetries(timeout: timeout) { connection, prepared in
            try check?(connection)
            return try await self.submitContent(on: connection, account: account, to: peer, prepared: prepared, textBytes: textBytes) { id, sentAt in
                Self.mutationOutgoing(body, to: peer, messageID: id, sentAt: sentAt)
            }
        }
        return id
    }

    /// The relay's clock now, in milliseconds, as this connection measured it.
    static func relayNow(_ connection: RelayConnection) -> Int64 {
        Int64(Date().timeIntervalSince1970 * 1000) + connection.relayClockOffsetMilliseconds
    }

    /// Replies to the message `messageID` with `text`, quoting it (section 4); returns the reply's id.
    /// - Throws: `ClientError`: `.unknownMessage`, `.invalidArgument` (deleted, empty, too long), and as `send`.
    public func reply(to messageID: Data, text: String, timeout: Duration = .seconds(30)) async throws -> Data {
        let account = try requireAccount()
        let target = try storedMessage(messageID, account: account)
        guard target.deleted == 0 else { throw ClientError(.invalidArgument, "that message was deleted; there is nothing to reply to") }
        try checkOutgoing(text, to: target.peer, account: account)
        let message = TextMessage(text, quote: Quote(target: target.reference, preview: target.text))
        return try await withSendRetries(timeout: timeout) { connection, prepared in
            try await self.send(on: connection, account: account, to: target.peer, message: message, expiresIn: nil, prepared: prepared)
        }
    }

    /// Adds or replaces (non-empty `emoji`) or removes (empty) this account's reaction to `messageID` (section 4).
    /// - Throws: `ClientError(.invalidArgument)` for a non-emoji or a deleted message, `.unknownMessage`, and as `send`.
    @discardableResult
    public func react(to messageID: Data, emoji: String, timeout: Duration = .seconds(30)) async throws -> Data {
        let account = try requireAccount()
        guard emoji.isEmpty || Reaction.isValidEmoji(emoji) else {
            throw ClientError(.invalidArgument, "\"\(emoji)\" is not an emoji (at most \(ConversationLimits.maxEmojiBytes) bytes, no spaces)")
        }
        let target = try storedMessage(messageID, account: account)
        guard target.deleted == 0 else { throw ClientError(.invalidArgument, "that message was deleted") }
        return try await sendMutation(.reaction(Reaction(target: target.reference, emoji: emoji)), to: target.peer, timeout: timeout)
    }

    /// Edits a message this account wrote (section 4): only within 24 hours of its acceptance (relay time), up to
    /// version 10. Returns the new version number.
    /// - Throws: `ClientError(.invalidArgument)` naming the rule (not the author, deleted, too late, too many
    ///   versions, empty or too long), `.unknownMessage`, and as `send`.
    @discardableResult
    public func edit(_ messageID: Data, text: String, timeout: Duration = .seconds(30)) async throws -> UInt32 {
        let account = try requireAccount()
        let target = try storedMessage(messageID, account: account)
        guard target.outgoing else { throw ClientError(.invalidArgument, "only its author can edit a message (not the author)") }
        guard target.deleted == 0 else { throw ClientError(.invalidArgument, "that message was deleted") }
        try checkOutgoing(text, to: target.peer, account: account)
        let version = target.version + 1
        guard version <= ConversationLimits.maxVersions else {
            throw ClientError(.invalidArgument, "a message has at most \(ConversationLimits.maxVersions) versions (too many versions)")
        }
        guard target.acceptedAt > 0 else { throw ClientError(.invalidArgument, "that message is not sent yet; edit it once the relay has it") }
        let accepted = target.acceptedAt
        _ = try await sendMutation(
            .edit(Edit(target: target.reference, body: text, version: version)), to: target.peer, textBytes: text.utf8.count, timeout: timeout
        ) { connection in
            guard Self.relayNow(connection) - accepted <= ConversationLimits.mutationWindowMilliseconds else {
                throw ClientError(.invalidArgument, "a message can be edited only within 24 hours of sending it (too late)")
            }
        }
        return version
    }

    /// Deletes a message: for everyone (its author, within 24 hours: a tombstone on every device of both sides,
    /// section 4) or only on this device.
    /// - Throws: `ClientError(.invalidArgument)` naming the rule, `.unknownMessage`, and as `send`.
    public func deleteMessage(_ messageID: Data, forEveryone: Bool, timeout: Duration = .seconds(30)) async throws {
        let account = try requireAccount()
        let target = try storedMessage(messageID, account: account)
        guard forEveryone else {
            try store.transaction { db in try Self.erase(target, as: 2, db) }
            return
        }
        guard target.outgoing else {
            throw ClientError(.invalidArgument, "only its author can delete a message for everyone (not the author); `flitz delete ID` deletes it for you")
        }
        guard target.deleted == 0 else { throw ClientError(.invalidArgument, "that message is already deleted") }
        let accepted = target.acceptedAt
        _ = try await sendMutation(.deleteForEveryone(target: target.reference), to: target.peer, timeout: timeout) { connection in
            guard accepted == 0 || Self.relayNow(connection) - accepted <= ConversationLimits.mutationWindowMilliseconds else {
                throw ClientError(.invalidArgument, "a message can be deleted for everyone only within 24 hours of sending it (too late)")
            }
        }
    }

    /// Unsends a message this account sent (section 5): the relay purges its still-queued envelopes and answers
    /// per recipient device; then, when any copy was delivered and the message is under 24 hours old, a delete for
    /// everyone follows. Returns the outcomes, whether that delete was sent, and how many blobs (a media message's
    /// file, `protocol/attachments.md` 4.5) the relay deleted with the token.
    /// - Throws: `ClientError`: `.unknownMessage`, `.invalidArgument` (not this account's, no unsend token),
    ///   `.refused(.unknownToken)` (past the relay's retention), `.relayUnreachable`.
    public func unsend(
        _ messageID: Data, timeout: Duration = .seconds(30)
    ) async throws -> (outcomes: [UnsendOutcome], deletedForEveryone: Bool, blobsDeleted: Int) {
        let account = try requireAccount()
        let target = try storedMessage(messageID, account: account)
        guard target.outgoing else { throw ClientError(.invalidArgument, "only its sender can unsend a message") }
        guard let token = try target.unsendToken.map({ try store.openSecret($0, .unsendToken) }), token.count == ConversationLimits.tokenLength else {
            throw ClientError(.invalidArgument, "that message was sent without an unsend token (by an older version); use `flitz delete ID --for-everyone`")
        }
        let (outcomes, relayNow, blobsDeleted) = try await withSendRetries(timeout: timeout) { connection, _ -> ([UnsendOutcome], Int64, Int) in
            var unsend = WireUnsend()
            unsend.unsendToken = token
            guard case .unsendResult(let result) = try await connection.request(.unsend(unsend)).body else {
                throw ClientError(.protocolFailure, "unexpected answer to unsend")
            }
            let outcomes = result.outcomes.map { outcome -> UnsendOutcome in
                let state: UnsendOutcome.State =
                    switch outcome.state {
                    case .purged: .purged
                    case .alreadyDelivered: .alreadyDelivered
                    default: .alreadyExpired
                    }
                return UnsendOutcome(handle: outcome.recipientHandle, deviceID: outcome.recipientDeviceID, state: state)
            }
            return (outcomes, Self.relayNow(connection), Int(result.blobsDeleted))
        }
        let delivered = outcomes.contains { $0.state == .alreadyDelivered }
        if delivered, target.deleted == 0, target.acceptedAt > 0, relayNow - target.acceptedAt <= ConversationLimits.mutationWindowMilliseconds {
            try await deleteMessage(messageID, forEveryone: true, timeout: timeout)
            return (outcomes, true, blobsDeleted)
        }
        if !delivered, target.deleted == 0 {
            // No one has it: it is gone here too (a tombstone, as the other devices would show after a delete).
            try store.transaction { db in try Self.erase(target, as: 1, db) }
        }
        return (outcomes, false, blobsDeleted)
    }

    /// Forwards a message's current text to `handle` as a new message (section 7); returns the new id.
    /// - Throws: `ClientError(.invalidArgument)` with the reason when the sender asked that it not be forwarded,
    ///   or it was deleted; `.unknownMessage`; and as `send`.
    public func forward(_ messageID: Data, to handle: String, timeout: Duration = .seconds(30)) async throws -> Data {
        let account = try requireAccount()
        let target = try storedMessage(messageID, account: account)
        guard target.deleted == 0 else { throw ClientError(.invalidArgument, "that message was deleted; there is nothing to forward") }
        if target.noForward && !target.outgoing {
            throw ClientError(.invalidArgument, "not forwarded: the sender asked that this message not be forwarded")
        }
        // A media message is forwarded with the same pointer (same blob, same key) or location (attachments.md 3).
        let (attachment, location) = try await store.dbQueue.read { db in try Self.forwardedMedia(seq: target.seq, db) }
        if attachment == nil && location == nil {
            try checkOutgoing(target.text, to: handle, account: account)
        } else {
            try checkMediaOutgoing(target.text, to: handle, account: account)
        }
        let message = TextMessage(target.text, forwardCount: target.forwardCount + 1, attachment: attachment, location: location)
        return try await withSendRetries(timeout: timeout) { connection, prepared in
            try await self.send(on: connection, account: account, to: handle, message: message, expiresIn: nil, prepared: prepared)
        }
    }

    /// Sets the conversation's disappearing timer (0: off; else 30 s to 365 days), versioned so concurrent changes
    /// converge (section 8); sent silently to `handle` and to this account's other devices.
    /// - Throws: `ClientError(.invalidArgument)` for a duration out of range or an invalid handle; as `send`.
    public func setDisappearing(_ handle: String, seconds: UInt32, timeout: Duration = .seconds(30)) async throws {
        let account = try requireAccount()
        guard Handle.isValid(handle), handle != account.handle else { throw ClientError(.invalidArgument, "invalid handle \"\(handle)\"") }
        guard seconds == 0 || ConversationLimits.disappearingRange.contains(seconds) else {
            throw ClientError(.invalidArgument, "a disappearing timer is off or 30 seconds to 365 days")
        }
        let version = try await store.dbQueue.read { db in
            try Int64.fetchOne(db, sql: "SELECT version FROM disappearing_timers WHERE peer = ?", arguments: [handle]) ?? 0
        }
        _ = try await sendMutation(.disappearingTimer(DisappearingTimer(seconds: seconds, version: UInt64(version) + 1)), to: handle, timeout: timeout)
    }

    /// The conversation's disappearing timer in seconds (0: off).
    public func disappearing(_ handle: String) throws -> UInt32 {
        _ = try requireAccount()
        return try store.dbQueue.read { db in try Self.disappearingSeconds(handle, db) }
    }

    // MARK: seen-receipts setting

    /// The seen-receipts setting: relay when the account's read receipts are on, else sealed or off as set here.
    static func seenReceiptsMode(account: AccountRecord, _ db: Database) throws -> SeenReceiptsMode {
        if account.readReceipts { return .relay }
        return try String.fetchOne(db, sql: "SELECT seen_mode FROM account") == "sealed" ? .sealed : .off
    }

    /// The seen-receipts setting (section 5).
    public func seenReceipts() throws -> SeenReceiptsMode {
        let account = try requireAccount()
        return try store.dbQueue.read { db in try Self.seenReceiptsMode(account: account, db) }
    }

    /// Sets seen receipts to relay, sealed or off (section 5): sealed and off both set the account's
    /// `seen_receipts_off` at the relay, so no device emits `ReportSeen`; sealed is then this device's choice.
    /// - Throws: as `setReadReceipts` (the local setting is changed already when the relay is unreachable).
    public func setSeenReceipts(_ mode: SeenReceiptsMode) async throws {
        _ = try requireAccount()
        try await store.dbQueue.write { db in try db.execute(sql: "UPDATE account SET seen_mode = ?", arguments: [mode.rawValue]) }
        try await setReadReceipts(mode == .relay)
    }

    // MARK: history

    /// Details of a stored message row: its quote as shown now, reactions, version, tombstone.
    static func details(of row: Row, account: AccountRecord, _ db: Database) throws -> MessageDetails {
        var details = MessageDetails()
        details.forwardCount = UInt32(row["forward_count"] as Int64)
        details.noForward = row["no_forward"]
        details.version = UInt32(row["version"] as Int64)
        details.deleted = (row["deleted"] as Int64) == 1
        details.disappearAfterSeconds = (row["expire_after"] as Int64?).map { UInt32($0) }
        if let seq = row["seq"] as Int64? { details.media = try mediaSummary(seq: seq, db) }
        let peer: String = row["peer"]
        if let author = row["quote_author"] as String?, let quoteID = row["quote_id"] as Data? {
            let hash: Data = row["quote_hash"] ?? Data()
            let preview: String? = row["quote_preview"]
            let outgoing = author == account.handle
            var quote = QuotedMessage(author: author, messageID: quoteID, text: nil, fromPreview: false)
            if let target = try Row.fetchOne(
                db, sql: "SELECT * FROM messages WHERE peer = ? AND outgoing = ? AND message_id = ? AND kind = 'text'",
                arguments: [peer, outgoing, quoteID])
            {
                let stored = StoredTarget(target, account: account)
                if stored.deleted != 0 {
                    quote.text = nil  // deleted (for everyone or for me) or disappeared
                } else if MessageRef(authorHandle: author, messageID: quoteID, contentHash: hash)
                    .matches(authorHandle: stored.author, messageID: quoteID, originalText: stored.originalText)
                {
                    quote.text = stored.text
                } else {
                    quote.text = preview
                    quote.fromPreview = preview != nil
                }
            } else {
                quote.text = preview
                quote.fromPreview = preview != nil
            }
            details.reply = quote
        }
        let seq: Int64 = row["seq"]
        var byEmoji: [String: [String]] = [:]
        for reaction in try Row.fetchAll(db, sql: "SELECT reactor, emoji FROM reactions WHERE message_seq = ? AND emoji != ''", arguments: [seq]) {
            byEmoji[reaction["emoji"], default: []].append(reaction["reactor"])
        }
        details.reactions = byEmoji.map { ReactionSummary(emoji: $0.key, count: $0.value.count, reactors: $0.value.sorted()) }
            .sorted { $0.count != $1.count ? $0.count > $1.count : $0.emoji < $1.emoji }
        return details
    }

    static func conversationMessage(_ row: Row, account: AccountRecord, _ db: Database) throws -> ConversationMessage {
        let target = StoredTarget(row, account: account)
        let versions = try String.fetchAll(
            db, sql: "SELECT text FROM message_versions WHERE message_seq = ? ORDER BY version, sent_at_ms", arguments: [target.seq])
        return ConversationMessage(
            messageID: target.messageID, author: target.author, peer: target.peer, outgoing: target.outgoing, text: target.text,
            previousVersions: Array(versions.dropLast()), sentAt: Date(timeIntervalSince1970: Double(target.acceptedAt) / 1000),
            status: MessageStatus(rawValue: row["status"]) ?? .pending, details: try details(of: row, account: account, db))
    }

    /// A page of the conversation with `handle`: the `limit` messages before `before` (newest page when nil),
    /// oldest first, with statuses, replies, reactions, edits and tombstones. Local only.
    /// - Throws: `ClientError(.unknownMessage)` when `before` is not in that conversation; `.invalidArgument`.
    public func history(with handle: String, before: Data? = nil, limit: Int = 50) throws -> [ConversationMessage] {
        let account = try requireAccount()
        guard limit > 0 else { throw ClientError(.invalidArgument, "the limit must be at least 1") }
        try sweepExpired()
        return try store.dbQueue.read { db in
            var bound = Int64.max
            if let before {
                guard let seq = try Int64.fetchOne(
                    db, sql: "SELECT seq FROM messages WHERE peer = ? AND message_id = ? AND kind = 'text'", arguments: [handle, before])
                else { throw ClientError(.unknownMessage, "no message with id \(before.hexString) in the conversation with \(handle)") }
                bound = seq
            }
            let rows = try Row.fetchAll(
                db, sql: "SELECT * FROM messages WHERE peer = ? AND kind = 'text' AND deleted < 2 AND seq < ? ORDER BY seq DESC LIMIT ?",
                arguments: [handle, bound, limit])
            return try rows.reversed().map { try Self.conversationMessage($0, account: account, db) }
        }
    }

    /// Every conversation (message requests excluded), newest first, with its unread count and last message.
    public func conversations() throws -> [ConversationSummary] {
        let account = try requireAccount()
        try sweepExpired()
        return try store.dbQueue.read { db in
            let peers = try String.fetchAll(
                db,
                sql: """
                    SELECT peer FROM messages WHERE kind = 'text' AND deleted < 2 AND peer != ? GROUP BY peer ORDER BY MAX(seq) DESC
                    """,
                arguments: [account.handle])
            return try peers.compactMap { peer -> ConversationSummary? in
                guard try !ClientStore.isMessageRequest(peer, db),
                    let last = try Row.fetchOne(
                        db, sql: "SELECT * FROM messages WHERE peer = ? AND kind = 'text' AND deleted < 2 ORDER BY seq DESC LIMIT 1",
                        arguments: [peer])
                else { return nil }
                let unread = try Int.fetchOne(
                    db,
                    sql: """
                        SELECT COUNT(*) FROM messages WHERE peer = ? AND outgoing = 0 AND kind = 'text' AND deleted = 0 AND displayed = 0
                            AND read_elsewhere = 0
                        """,
                    arguments: [peer]) ?? 0
                return ConversationSummary(
                    peer: peer, unread: unread, lastMessage: try Self.conversationMessage(last, account: account, db),
                    disappearingSeconds: try Self.disappearingSeconds(peer, db))
            }
        }
    }
}

extension ClientStore {
    /// Migration `v7-conversations`: the tables and columns of replies, reactions, edits, deletes, unsend tokens
    /// and disappearing timers.
    static func migrateConversations(_ db: Database) throws {
        // messages:
        // - kind: 'text' (history) or 'mutation' (a reaction, edit, delete, timer or seen this device sent: never shown);
        // - content / transcript_content: the encoded Content sent to the peer / to the own devices, resent as is;
        // - urgent, unsend_token(_hash): the relay-visible options of the first submission;
        // - original_text (version 1, what the reference hash covers), version and its (sent_at, id) for ties;
        // - deleted: 0, 1 for everyone (tombstone), 2 for me, 3 disappeared (2 and 3 are never shown);
        // - quote_*, forward_count, no_forward, expire_after: the Text fields;
        // - first_shown_ms: first shown on any own device (starts a recipient's timer); read_elsewhere: a read sync.
        try db.execute(sql: """
            ALTER TABLE messages ADD COLUMN kind TEXT NOT NULL DEFAULT 'text';
            ALTER TABLE messages ADD COLUMN content BLOB;
            ALTER TABLE messages ADD COLUMN transcript_content BLOB;
            ALTER TABLE messages ADD COLUMN urgent INTEGER NOT NULL DEFAULT 1;
            ALTER TABLE messages ADD COLUMN unsend_token BLOB;
            ALTER TABLE messages ADD COLUMN unsend_token_hash BLOB;
            ALTER TABLE messages ADD COLUMN original_text TEXT;
            ALTER TABLE messages ADD COLUMN sent_at_ms INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE messages ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
            ALTER TABLE messages ADD COLUMN version_sent_at_ms INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE messages ADD COLUMN version_id BLOB;
            ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE messages ADD COLUMN quote_author TEXT;
            ALTER TABLE messages ADD COLUMN quote_id BLOB;
            ALTER TABLE messages ADD COLUMN quote_hash BLOB;
            ALTER TABLE messages ADD COLUMN quote_preview TEXT;
            ALTER TABLE messages ADD COLUMN forward_count INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE messages ADD COLUMN no_forward INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE messages ADD COLUMN expire_after INTEGER;
            ALTER TABLE messages ADD COLUMN first_shown_ms INTEGER;
            ALTER TABLE messages ADD COLUMN read_elsewhere INTEGER NOT NULL DEFAULT 0;
            CREATE INDEX messages_message_id ON messages(message_id);
            ALTER TABLE account ADD COLUMN seen_mode TEXT NOT NULL DEFAULT 'relay';  -- 'relay', 'sealed' or 'off'
            CREATE TABLE message_versions (
                message_seq INTEGER NOT NULL,
                version INTEGER NOT NULL,
                text TEXT NOT NULL,
                sent_at_ms INTEGER NOT NULL,
                version_id BLOB NOT NULL,  -- the edit's message id (the original's own id for version 1)
                accepted_at_ms INTEGER NOT NULL,
                PRIMARY KEY (message_seq, version_id)
            );
            CREATE TABLE reactions (
                message_seq INTEGER NOT NULL,
                reactor TEXT NOT NULL,
                emoji TEXT NOT NULL,  -- '' once removed (kept so an older reaction cannot come back)
                sent_at_ms INTEGER NOT NULL,
                reaction_id BLOB NOT NULL,
                PRIMARY KEY (message_seq, reactor)
            );
            CREATE TABLE pending_mutations (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                conversation TEXT NOT NULL,
                sender TEXT NOT NULL,
                author TEXT NOT NULL,
                target_id BLOB NOT NULL,
                content BLOB NOT NULL,
                accepted_at_ms INTEGER NOT NULL,
                received_at_ms INTEGER NOT NULL
            );
            CREATE INDEX pending_mutations_target ON pending_mutations(author, target_id);
            CREATE TABLE disappearing_timers (
                peer TEXT PRIMARY KEY,
                seconds INTEGER NOT NULL,
                version INTEGER NOT NULL,
                sent_at_ms INTEGER NOT NULL,
                message_id BLOB NOT NULL
            );
            """)
    }
}
