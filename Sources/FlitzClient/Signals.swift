import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import GRDB
import Synchronization

// Typing and presence (online-only), blocking and message requests on the client (`protocol/conversations.md`
// sections 6 and 9). Scheduled send is in Scheduling.swift, abuse reports in Reports.swift.

/// The client-side constants of `protocol/conversations.md` section 12 for online-only signals.
public enum SignalLimits {
    /// `TYPING_REFRESH`: at most one `typing = true` per conversation in this many seconds; also the idle time
    /// after which a typist is taken to have stopped.
    public static let typingRefresh: TimeInterval = 5
    /// `TYPING_TIMEOUT`: a receiver shows "typing" at most this many seconds after the last `true`.
    public static let typingTimeout: TimeInterval = 15
    /// `PRESENCE_HEARTBEAT`: seconds between two `Presence { online: true }` while connected.
    public static let presenceHeartbeat: TimeInterval = 60
    /// `PRESENCE_ONLINE`: a contact is "online" for this many seconds after its last `online: true`.
    public static let presenceOnline: TimeInterval = 90
    /// `LAST_SEEN_GRANULARITY`: last-seen times are rounded down to this many seconds (5 minutes).
    public static let lastSeenGranularity: TimeInterval = 300
    /// `MAX_EPHEMERAL_RUN`: online-only envelopes per session in a row; keeps a gap under `MAX_SKIP` (1 000).
    public static let maxEphemeralRun = 500
}

/// Whether the peer was last told `typing = true` (so a clean exit sends `false`).
final class TypingShown: Sendable {
    private let state = Mutex(false)
    var value: Bool {
        get { state.withLock { $0 } }
        set { state.withLock { $0 = newValue } }
    }
}

/// One event a client reports to the typing pump of `chat` (see `TypingInput`).
public enum TypingActivity: Sendable {
    /// The user pressed a key that changed the line being typed.
    case keystroke
    /// The user sent the line or cleared it (an empty line): typing stopped.
    case stopped
}

/// The keystrokes of `chat`, as the terminal reader sees them. The CLI pushes events; `chat` turns them into
/// throttled `Typing` signals (`TypingThrottle`). A reader that cannot see keystrokes (stdin not a terminal)
/// passes no `TypingInput` at all.
public final class TypingInput: Sendable {
    private let queue = WaitQueue<TypingActivity>()
    private let finishedFlag = Mutex(false)

    /// An empty input.
    public init() {}

    /// A key changed the line being typed.
    public func keystroke() { queue.push(.keystroke) }

    /// The line was sent or cleared.
    public func stopped() { queue.push(.stopped) }

    /// No more input (end of the chat).
    public func finish() {
        finishedFlag.withLock { $0 = true }
        queue.finish()
    }

    var isFinished: Bool { finishedFlag.withLock { $0 } }

    func next(timeout: Duration?) async -> TypingActivity? { await queue.next(timeout: timeout) }
}

/// The sender's typing throttle for one conversation (`protocol/conversations.md` section 6): a `true` when the
/// user starts typing and again at most every `TYPING_REFRESH` while typing continues; a `false` when they send,
/// clear the line, or are idle for `TYPING_REFRESH`. A value: each event returns what to send (nil: nothing).
public struct TypingThrottle: Sendable {
    private var typing = false
    private var lastTrueSent: Date = .distantPast
    private var lastKeystroke: Date = .distantPast

    /// Not typing.
    public init() {}

    /// A keystroke at `now`: `true` to send when typing starts or the last `true` is `TYPING_REFRESH` old.
    public mutating func keystroke(at now: Date) -> Bool? {
        lastKeystroke = now
        guard !typing || now.timeIntervalSince(lastTrueSent) >= SignalLimits.typingRefresh else { return nil }
        typing = true
        lastTrueSent = now
        return true
    }

    /// The line was sent or cleared: `false` when typing was shown.
    public mutating func stopped(at now: Date) -> Bool? {
        guard typing else { return nil }
        typing = false
        return false
    }

    /// Time passed without a keystroke: `false` once the user has been idle for `TYPING_REFRESH`.
    public mutating func tick(at now: Date) -> Bool? {
        guard typing, now.timeIntervalSince(lastKeystroke) >= SignalLimits.typingRefresh else { return nil }
        typing = false
        return false
    }

    /// When `tick` would next stop typing (nil when not typing).
    public var idleDeadline: Date? { typing ? lastKeystroke.addingTimeInterval(SignalLimits.typingRefresh) : nil }
}

/// What a receiver shows of its peers' typing (`protocol/conversations.md` section 6): "typing" from a `true`
/// until a `false` or `TYPING_TIMEOUT` (15 s) without a `true`. A value; `expire` is called by a ticker.
public struct TypingIndicators: Sendable {
    private var since: [String: Date] = [:]

    /// Nobody typing.
    public init() {}

    /// A `Typing` from `handle` arrived at `now`. Returns whether what is shown changed.
    public mutating func received(from handle: String, typing: Bool, at now: Date) -> Bool {
        if typing {
            let changed = since[handle] == nil
            since[handle] = now
            return changed
        }
        return since.removeValue(forKey: handle) != nil
    }

    /// Drops every typist whose last `true` is `TYPING_TIMEOUT` old at `now`; returns their handles, sorted.
    public mutating func expire(at now: Date) -> [String] {
        let gone = since.filter { now.timeIntervalSince($0.value) >= SignalLimits.typingTimeout }.keys.sorted()
        for handle in gone { since.removeValue(forKey: handle) }
        return gone
    }

    /// The handles shown as typing, sorted.
    public var typists: [String] { since.keys.sorted() }
}

/// A contact's presence as this device knows it (`protocol/conversations.md` section 6).
public struct PresenceEntry: Sendable, Equatable {
    /// The contact's handle.
    public let handle: String
    /// Whether an `online: true` arrived within `PRESENCE_ONLINE` (90 s) and no `online: false` after it.
    public let online: Bool
    /// Receive time of the last heartbeat, rounded down to 5 minutes; nil when none arrived.
    public let lastSeen: Date?
    /// Whether this account shares its own presence with the contact.
    public let sharedWith: Bool
}

/// Relative times of `flitz presence` (`protocol/conversations.md` section 6): pure, so tests fix the dates.
public enum PresenceFormat {
    /// "online"; else, for a last-seen time: "just now" (under 5 minutes), "N minutes ago", "N hours ago" (under
    /// 24 hours), "yesterday" (the previous calendar day in `timeZone`), then "on YYYY-MM-DD"; "never seen" without one.
    public static func describe(online: Bool, lastSeen: Date?, now: Date, timeZone: TimeZone = .current) -> String {
        if online { return "online" }
        guard let lastSeen else { return "never seen" }
        let age = max(0, now.timeIntervalSince(lastSeen))
        if age < SignalLimits.lastSeenGranularity { return "just now" }
        if age < 3_600 {
            let minutes = Int(age / 60)
            return "\(minutes) minutes ago"
        }
        if age < 86_400 {
            let hours = Int(age / 3_600)
            return hours == 1 ? "1 hour ago" : "\(hours) hours ago"
        }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        if let yesterday = calendar.date(byAdding: .day, value: -1, to: now), calendar.isDate(lastSeen, inSameDayAs: yesterday) {
            return "yesterday"
        }
        let parts = calendar.dateComponents([.year, .month, .day], from: lastSeen)
        return String(format: "on %04d-%02d-%02d", parts.year ?? 0, parts.month ?? 0, parts.day ?? 0)
    }

    /// `time` rounded down to `LAST_SEEN_GRANULARITY` (5 minutes) since the Unix epoch.
    public static func coarsen(_ time: Date) -> Date {
        let step = SignalLimits.lastSeenGranularity
        return Date(timeIntervalSince1970: (time.timeIntervalSince1970 / step).rounded(.down) * step)
    }
}

/// A conversation waiting in `flitz requests` (`protocol/conversations.md` section 9).
public struct MessageRequest: Sendable {
    /// The stranger's handle.
    public let handle: String
    /// How many messages they sent.
    public let count: Int
    /// Their latest message's text.
    public let lastText: String
    /// The relay's acceptance time of their latest message.
    public let lastAt: Date
}

extension FlitzClient {
    /// Applies a typing or presence signal from `sender` (`protocol/conversations.md` section 6), received at
    /// `receivedAt` (seconds since the Unix epoch, this device's clock). Signals from the own account, from
    /// blocked handles and from message requests are ignored. A presence heartbeat is kept only while this
    /// account shares its own presence with someone (reciprocity); otherwise every kept heartbeat is deleted.
    static func applySignal(
        _ content: MessageContent, sender: String, envelope: WireEnvelope, account: AccountRecord, receivedAt: Double, _ db: Database
    ) throws -> [ClientEvent] {
        guard sender != account.handle, try !ClientStore.isBlocked(sender, db), try !ClientStore.isMessageRequest(sender, db) else { return [] }
        switch content.body {
        case .typing(let typing):
            return [.typing(from: sender, active: typing)]
        case .presence(let online):
            let sharing = try Bool.fetchOne(db, sql: "SELECT 1 FROM presence_shares LIMIT 1") ?? false
            guard sharing else {
                try db.execute(sql: "DELETE FROM presence_seen")
                return []
            }
            let lastSeen = PresenceFormat.coarsen(Date(timeIntervalSince1970: receivedAt)).timeIntervalSince1970
            try db.execute(
                sql: """
                    INSERT INTO presence_seen (handle, last_seen, online_at) VALUES (?, ?, ?)
                    ON CONFLICT (handle) DO UPDATE SET last_seen = excluded.last_seen, online_at = excluded.online_at
                    """,
                arguments: [sender, lastSeen, online ? receivedAt : nil])
            return []
        default:
            return []
        }
    }

    // MARK: sending signals

    /// Encrypts `body` (a `typing` or `presence`) for every device of each of `handles` this device has an active,
    /// trusted session with, and submits the envelopes as one `online_only`, `silent`, `selected_devices` Submit
    /// (`protocol/conversations.md` section 6). Skips blocked handles, message requests, handles whose key changed,
    /// and sessions that reached `MAX_EPHEMERAL_RUN` online-only envelopes since their last stored one. No new
    /// session is started for a signal. Returns how many envelopes were submitted.
    /// - Throws: `ClientError(.refused)` when the relay refuses the Submit; connection errors.
    @discardableResult
    func sendSignal(_ body: MessageContent.Body, to handles: [String], on connection: RelayConnection, account: AccountRecord) async throws -> Int {
        let random = self.random
        let content = MessageContent(
            messageID: random.bytes(WireConstants.idLength), sentAtMilliseconds: Int64(now().timeIntervalSince1970 * 1000), body: body)
        let plaintext = content.encoded()
        let envelopes = try store.transaction { db -> [WireOutgoingEnvelope] in
            var envelopes: [WireOutgoingEnvelope] = []
            for handle in handles where handle != account.handle {
                guard try !ClientStore.isBlocked(handle, db), try !ClientStore.isMessageRequest(handle, db),
                    let contact = try ClientStore.contact(handle, db), contact.untrustedIdentityKey == nil,
                    try !ClientStore.hasPendingDeviceList(handle, account: account, db)
                else { continue }
                for deviceID in try Self.targetDevices(of: handle, account: account, fresh: [], db) {
                    guard var session = try ClientStore.sessions(with: handle, db).first(where: { $0.deviceID == deviceID && $0.active })?.session,
                        try ClientStore.mayEncrypt(session, to: handle, deviceID: deviceID, account: account, db),
                        ConstantTime.equals(contact.trustedIdentityKey, session.remoteCertificate.accountIdentityKey.rawRepresentation)
                    else { continue }
                    let key = session.baseKey.rawRepresentation
                    let run = try Int.fetchOne(
                        db, sql: "SELECT count FROM ephemeral_runs WHERE handle = ? AND device_id = ? AND base_key = ?",
                        arguments: [handle, Int64(deviceID), key]) ?? 0
                    guard run < SignalLimits.maxEphemeralRun else { continue }
                    let ciphertext = try session.encrypt(plaintext, random: random)
                    try ClientStore.save(session, handle: handle, deviceID: deviceID, makeActive: true, db)
                    try db.execute(
                        sql: """
                            INSERT INTO ephemeral_runs (handle, device_id, base_key, count) VALUES (?, ?, ?, 1)
                            ON CONFLICT (handle, device_id, base_key) DO UPDATE SET count = count + 1
                            """,
                        arguments: [handle, Int64(deviceID), key])
                    var envelope = WireOutgoingEnvelope()
                    envelope.envelopeID = random.bytes(WireConstants.idLength)
                    envelope.recipientHandle = handle
                    envelope.recipientDeviceID = deviceID
                    envelope.ciphertext = ciphertext
                    envelope.urgency = .silent
                    envelope.onlineOnly = true
                    envelopes.append(envelope)
                }
            }
            return envelopes
        }
        guard !envelopes.isEmpty else { return 0 }
        var submit = WireSubmit()
        submit.envelopes = envelopes
        submit.selectedDevices = true
        guard case .submitResult = try await connection.request(.submit(submit)).body else {
            throw ClientError(.protocolFailure, "unexpected answer to submit")
        }
        // Envelope ids are no secret (the relay assigns routes by them); tests look for them in the relay's files.
        logger.debug("sent online-only envelopes", metadata: ["envelopes": "\(envelopes.map(\.envelopeID.hexString))"])
        return envelopes.count
    }

    /// Runs `body` on a connection together with this device's online-only senders (`protocol/conversations.md`
    /// section 6): presence heartbeats to the contacts it shares with (at once, then every `PRESENCE_HEARTBEAT`
    /// seconds) and, with `typing` and `peer`, the typing pump of `chat`. When `body` returns, sends a last
    /// `typing = false` if typing was shown and `Presence { online: false }` (a clean exit).
    /// - Parameter sleep: waits between heartbeats (tests pass one that waits on an event).
    func withSignals(
        on connection: RelayConnection, account: AccountRecord, peer: String?, typing: TypingInput?,
        sleep: @escaping @Sendable (Duration) async throws -> Void = { try await Task.sleep(for: $0) },
        _ body: @escaping @Sendable () async throws -> Void
    ) async throws {
        let shown = TypingShown()
        // The first heartbeat goes before anything `body` sends, so a contact sees it first.
        try await sendPresence(online: true, on: connection, account: account)
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                while true {
                    try await sleep(.seconds(SignalLimits.presenceHeartbeat))
                    try await self.sendPresence(online: true, on: connection, account: account)
                }
            }
            if let typing, let peer {
                group.addTask {
                    try await self.pumpTyping(typing, to: peer, on: connection, account: account, shown: shown)
                    return false
                }
            }
            group.addTask {
                try await body()
                return true
            }
            while let finished = try await group.next() {
                if finished { break }
            }
            group.cancelAll()
        }
        if let peer, shown.value { try await sendSignal(.typing(false), to: [peer], on: connection, account: account) }
        try await sendPresence(online: false, on: connection, account: account)
    }

    /// Sends `Presence { online }` to every contact this account shares its presence with.
    func sendPresence(online: Bool, on connection: RelayConnection, account: AccountRecord) async throws {
        let shares = try await store.dbQueue.read { db in try String.fetchAll(db, sql: "SELECT handle FROM presence_shares ORDER BY handle") }
        guard !shares.isEmpty else { return }
        try await sendSignal(.presence(online: online), to: shares, on: connection, account: account)
    }

    /// Turns `typing`'s keystrokes into throttled `Typing` signals to `peer` until the input finishes or the task
    /// is cancelled; `shown` tracks whether the peer was last told `true`.
    private func pumpTyping(
        _ input: TypingInput, to peer: String, on connection: RelayConnection, account: AccountRecord, shown: TypingShown
    ) async throws {
        var throttle = TypingThrottle()
        while !Task.isCancelled {
            let wait = throttle.idleDeadline.map { deadline -> Duration in
                .milliseconds(Int64(max(0, deadline.timeIntervalSince(now())) * 1000) + 1)
            }
            let event = await input.next(timeout: wait)
            if Task.isCancelled { return }
            let at = now()
            let decision: Bool?
            switch event {
            case .keystroke: decision = throttle.keystroke(at: at)
            case .stopped: decision = throttle.stopped(at: at)
            case nil:
                if input.isFinished { return }
                decision = throttle.tick(at: at)
            }
            if let decision {
                shown.value = decision
                try await sendSignal(.typing(decision), to: [peer], on: connection, account: account)
            }
        }
    }

    // MARK: presence settings

    /// Shares this account's presence with `handles` (`flitz presence share`): connected `chat` and `listen`
    /// send them heartbeats from now on. Stored on this device only.
    /// - Throws: `ClientError(.invalidArgument)` for an invalid or the own handle.
    public func sharePresence(with handles: [String]) throws {
        let account = try requireAccount()
        for handle in handles {
            guard Handle.isValid(handle) else { throw ClientError(.invalidArgument, "invalid handle \"\(handle)\"") }
            guard handle != account.handle else { throw ClientError(.invalidArgument, "you cannot share your presence with yourself") }
        }
        try store.transaction { db in
            for handle in handles { try db.execute(sql: "INSERT OR IGNORE INTO presence_shares (handle) VALUES (?)", arguments: [handle]) }
        }
    }

    /// Stops sharing presence with `handle`. Returns whether it was shared.
    public func unsharePresence(with handle: String) throws -> Bool {
        _ = try requireAccount()
        return try store.transaction { db in
            try db.execute(sql: "DELETE FROM presence_shares WHERE handle = ?", arguments: [handle])
            let changed = db.changesCount > 0
            if try !(Bool.fetchOne(db, sql: "SELECT 1 FROM presence_shares LIMIT 1") ?? false) { try db.execute(sql: "DELETE FROM presence_seen") }
            return changed
        }
    }

    /// Shares presence with no one (`flitz presence hide`); by reciprocity, deletes every contact's kept presence.
    public func hidePresence() throws {
        _ = try requireAccount()
        try store.transaction { db in
            try db.execute(sql: "DELETE FROM presence_shares")
            try db.execute(sql: "DELETE FROM presence_seen")
        }
    }

    /// Contacts' presence as known on this device, and the contacts this account shares with, sorted by handle.
    /// Empty of received presence when this account shares with no one (reciprocity).
    public func presence() throws -> [PresenceEntry] {
        _ = try requireAccount()
        let at = now().timeIntervalSince1970
        return try store.dbQueue.read { db in
            let shares = Set(try String.fetchAll(db, sql: "SELECT handle FROM presence_shares"))
            var entries: [String: PresenceEntry] = [:]
            if !shares.isEmpty {
                for row in try Row.fetchAll(db, sql: "SELECT handle, last_seen, online_at FROM presence_seen") {
                    let handle: String = row["handle"]
                    let onlineAt: Double? = row["online_at"]
                    entries[handle] = PresenceEntry(
                        handle: handle, online: onlineAt.map { at - $0 < SignalLimits.presenceOnline } ?? false,
                        lastSeen: Date(timeIntervalSince1970: row["last_seen"]), sharedWith: shares.contains(handle))
                }
            }
            for handle in shares where entries[handle] == nil {
                entries[handle] = PresenceEntry(handle: handle, online: false, lastSeen: nil, sharedWith: true)
            }
            return entries.values.sorted { $0.handle < $1.handle }
        }
    }

    // MARK: block

    /// Adds `block` to and removes `unblock` from this account's block list at the relay (`UpdateBlockList`,
    /// `protocol/conversations.md` section 9) and keeps the relay's answer as the local copy. The relay learns
    /// the list. Returns the whole list, ascending.
    /// - Throws: `ClientError(.invalidArgument)` for an invalid or the own handle, more than 100 of each;
    ///   `.refused(.invalidArgument)` from the relay; `.relayUnreachable`.
    public func updateBlockList(block: [String] = [], unblock: [String] = []) async throws -> [String] {
        let account = try requireAccount()
        for handle in block + unblock {
            guard Handle.isValid(handle) else { throw ClientError(.invalidArgument, "invalid handle \"\(handle)\"") }
            guard handle != account.handle else { throw ClientError(.invalidArgument, "you cannot block yourself") }
        }
        guard block.count <= ConversationTokens.maxBlockChangesPerFrame, unblock.count <= ConversationTokens.maxBlockChangesPerFrame else {
            throw ClientError(.invalidArgument, "at most \(ConversationTokens.maxBlockChangesPerFrame) handles at once")
        }
        var update = WireUpdateBlockList()
        update.block = block
        update.unblock = unblock
        let frame = update
        let list = try await withAuthenticatedConnection(account) { connection in
            guard case .blockList(let list) = try await connection.request(.updateBlockList(frame)).body else {
                throw ClientError(.protocolFailure, "unexpected answer to a block list update")
            }
            return list.handles
        }
        try keepBlockList(list)
        return list
    }

    /// This account's block list as the relay holds it (`FetchBlockList`), also kept as the local copy; the local
    /// copy when `offline`.
    /// - Throws: `ClientError(.relayUnreachable)` (unless `offline`).
    public func blockList(offline: Bool = false) async throws -> [String] {
        let account = try requireAccount()
        if offline { return try await store.dbQueue.read { db in try String.fetchAll(db, sql: "SELECT handle FROM blocked_handles ORDER BY handle") } }
        let list = try await withAuthenticatedConnection(account) { connection in
            guard case .blockList(let list) = try await connection.request(.fetchBlockList(WireFetchBlockList())).body else {
                throw ClientError(.protocolFailure, "unexpected answer to a block list request")
            }
            return list.handles
        }
        try keepBlockList(list)
        return list
    }

    private func keepBlockList(_ handles: [String]) throws {
        try store.transaction { db in
            try db.execute(sql: "DELETE FROM blocked_handles")
            for handle in handles { try db.execute(sql: "INSERT OR IGNORE INTO blocked_handles (handle) VALUES (?)", arguments: [handle]) }
        }
    }

    // MARK: message requests

    /// Conversations that are message requests (`protocol/conversations.md` section 9), oldest first, blocked
    /// handles excluded.
    public func messageRequests() throws -> [MessageRequest] {
        _ = try requireAccount()
        return try store.dbQueue.read { db in
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT peer, COUNT(*) AS count, MAX(seq) AS last FROM messages WHERE outgoing = 0 AND transcript = 0
                    GROUP BY peer ORDER BY MIN(seq)
                    """)
            return try rows.compactMap { row -> MessageRequest? in
                let handle: String = row["peer"]
                guard try ClientStore.isMessageRequest(handle, db), try !ClientStore.isBlocked(handle, db),
                    let last = try Row.fetchOne(db, sql: "SELECT text, accepted_at_ms FROM messages WHERE seq = ?", arguments: [row["last"] as Int64])
                else { return nil }
                return MessageRequest(
                    handle: handle, count: row["count"], lastText: last["text"],
                    lastAt: Date(timeIntervalSince1970: Double(last["accepted_at_ms"] as Int64) / 1000))
            }
        }
    }

    /// Accepts `handle`'s message request: its conversation is an ordinary one from now on (seen receipts, typing
    /// and presence flow; earlier shown messages are reported seen by the next `receive`).
    /// Also before `handle` wrote at all: their first message is then no request.
    /// - Throws: `ClientError(.invalidArgument)` for an invalid or the own handle, or a conversation that is no
    ///   request (already accepted, or this account wrote to `handle`).
    public func acceptRequest(_ handle: String) throws {
        let account = try requireAccount()
        guard Handle.isValid(handle) else { throw ClientError(.invalidArgument, "invalid handle \"\(handle)\"") }
        guard handle != account.handle else { throw ClientError(.invalidArgument, "that is your own handle: there is no request to accept") }
        try store.transaction { db in
            guard try !ClientStore.requestSettled(handle, db) else {
                throw ClientError(.invalidArgument, "\(handle) is not a message request: you already accepted it or wrote to them")
            }
            try db.execute(
                sql: "INSERT OR REPLACE INTO accepted_requests (handle, accepted_at) VALUES (?, ?)", arguments: [handle, now().timeIntervalSince1970])
        }
    }

    /// Declines `handle`'s message request: blocks the handle at the relay, then deletes its messages here.
    /// Returns how many messages were deleted.
    /// - Throws: `ClientError(.invalidArgument)` when `handle` has no request; the block's errors (nothing deleted).
    public func declineRequest(_ handle: String) async throws -> Int {
        guard try await store.dbQueue.read({ db in try ClientStore.isMessageRequest(handle, db) }) else {
            throw ClientError(.invalidArgument, "\(handle) has no message request (see `flitz requests`)")
        }
        _ = try await updateBlockList(block: [handle])
        return try store.transaction { db in
            try db.execute(sql: "DELETE FROM messages WHERE peer = ? AND outgoing = 0 AND transcript = 0", arguments: [handle])
            return db.changesCount
        }
    }

    /// Marks which of `messages` (from `receive`) belong to message requests.
    func markingRequests(_ messages: [ReceivedMessage]) throws -> [ReceivedMessage] {
        try store.dbQueue.read { db in
            try messages.map { message in
                var marked = message
                if message.to == nil { marked.isRequest = try ClientStore.isMessageRequest(message.from, db) }
                return marked
            }
        }
    }
}

extension ClientStore {
    /// Migration `v8-safety` (`protocol/conversations.md` sections 6, 8, 9):
    /// - blocked_handles: the local copy of the relay's block list (for display);
    /// - accepted_requests: message requests the user accepted;
    /// - presence_shares: contacts this account sends presence heartbeats to;
    /// - presence_seen: per contact, the last heartbeat's receive time rounded down to 5 minutes (`last_seen`) and,
    ///   while it said online, its exact receive time (`online_at`, for the 90-second "online");
    /// - ephemeral_runs: online-only envelopes sent on a session since its last stored one (`MAX_EPHEMERAL_RUN`);
    /// - scheduled_messages: scheduled sends and their cancel and unsend tokens (32 bytes each), in state
    ///   'submitting' (the answer may have been lost), 'scheduled' or 'cancelled'.
    static func migrateSafety(_ db: Database) throws {
        try db.execute(sql: """
            CREATE TABLE blocked_handles (
                handle TEXT PRIMARY KEY
            );
            CREATE TABLE accepted_requests (
                handle TEXT PRIMARY KEY,
                accepted_at REAL NOT NULL
            );
            CREATE TABLE presence_shares (
                handle TEXT PRIMARY KEY
            );
            CREATE TABLE presence_seen (
                handle TEXT PRIMARY KEY,
                last_seen REAL NOT NULL,
                online_at REAL
            );
            CREATE TABLE ephemeral_runs (
                handle TEXT NOT NULL,
                device_id INTEGER NOT NULL,
                base_key BLOB NOT NULL,
                count INTEGER NOT NULL,
                PRIMARY KEY (handle, device_id, base_key)
            );
            CREATE TABLE scheduled_messages (
                message_id BLOB PRIMARY KEY,
                peer TEXT NOT NULL,
                text TEXT NOT NULL,
                not_before_ms INTEGER NOT NULL,
                cancel_token BLOB NOT NULL,
                unsend_token BLOB NOT NULL,
                envelopes INTEGER NOT NULL,
                state TEXT NOT NULL CHECK (state IN ('submitting', 'scheduled', 'cancelled')),
                created_at REAL NOT NULL
            );
            """)
    }

    /// Whether the conversation with `handle` is a message request (`protocol/conversations.md` section 9): it
    /// has messages from `handle` and this account never wrote to it (transcripts count) nor accepted it.
    static func isMessageRequest(_ handle: String, _ db: Database) throws -> Bool {
        if try requestSettled(handle, db) { return false }
        return try Bool.fetchOne(db, sql: "SELECT 1 FROM messages WHERE peer = ? AND outgoing = 0 LIMIT 1", arguments: [handle]) ?? false
    }

    /// Whether a conversation with `handle` can no longer be a request: accepted, or this account wrote to it (a
    /// text, its own or a transcript; a reaction or edit is not writing, so every own device agrees, section 9).
    static func requestSettled(_ handle: String, _ db: Database) throws -> Bool {
        if try Bool.fetchOne(db, sql: "SELECT 1 FROM accepted_requests WHERE handle = ?", arguments: [handle]) ?? false { return true }
        return try Bool.fetchOne(db, sql: "SELECT 1 FROM messages WHERE peer = ? AND outgoing = 1 AND kind = 'text' LIMIT 1", arguments: [handle]) ?? false
    }

    /// Whether `handle` is on the local copy of the block list.
    static func isBlocked(_ handle: String, _ db: Database) throws -> Bool {
        try Bool.fetchOne(db, sql: "SELECT 1 FROM blocked_handles WHERE handle = ?", arguments: [handle]) ?? false
    }

    /// A stored envelope was encrypted on `session`: its run of online-only envelopes starts over
    /// (`MAX_EPHEMERAL_RUN`, `protocol/conversations.md` section 6).
    static func storedEnvelopeEncrypted(on session: Session, handle: String, deviceID: UInt32, _ db: Database) throws {
        try db.execute(
            sql: "DELETE FROM ephemeral_runs WHERE handle = ? AND device_id = ? AND base_key = ?",
            arguments: [handle, Int64(deviceID), session.baseKey.rawRepresentation])
    }
}
