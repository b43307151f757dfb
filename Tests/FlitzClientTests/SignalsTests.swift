import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import GRDB
import Synchronization
import Testing

@testable import FlitzClient

/// A settable clock for clients (`FlitzClient(now:)`).
final class TestClock: Sendable {
    private let time: Mutex<Date>
    init(_ start: Date = Date()) { time = Mutex(start) }
    var now: Date { time.withLock { $0 } }
    func advance(_ seconds: TimeInterval) { time.withLock { $0 = $0.addingTimeInterval(seconds) } }
    var closure: @Sendable () -> Date { { self.now } }
}

/// Records every `Acknowledge` a client writes (through `FlitzClient.frameTap`).
final class AcknowledgedEnvelopes: Sendable {
    private let ids = Mutex<[Data]>([])
    init(_ client: FlitzClient) {
        client.frameTap.withLock { tap in
            tap = { [self] frame in
                guard case .acknowledge(let ack) = frame.body else { return }
                self.ids.withLock { $0 += ack.envelopeIds }
            }
        }
    }
    var all: [Data] { ids.withLock { $0 } }
}

/// A client's `listen` running in a task, its events queued for the test to wait on.
final class Listening: Sendable {
    private let events: WaitQueue<ClientEvent>
    private let task: Task<Void, any Error>

    init(_ client: FlitzClient) {
        let events = WaitQueue<ClientEvent>()
        self.events = events
        task = Task { try await client.listen { events.push($0) } }
    }

    /// Waits for an event matching `match`, skipping others; false when none came within 60 s (a failure guard).
    func waitFor(_ match: (ClientEvent) -> Bool) async -> Bool {
        while let event = await events.next(timeout: .seconds(60)) {
            if match(event) { return true }
        }
        return false
    }

    func stop() async {
        task.cancel()
        _ = await task.result
    }
}

extension FlitzClient {
    /// Drains the queue once on an authenticated connection and returns the events.
    func drainEvents() async throws -> [ClientEvent] {
        let account = try requireAccount()
        return try await withAuthenticatedConnection(account) { connection in try await self.drain(connection) }
    }

    /// Sends an online-only signal on an authenticated connection; returns the envelopes submitted.
    func signal(_ body: MessageContent.Body, to handles: [String]) async throws -> Int {
        let account = try requireAccount()
        return try await withAuthenticatedConnection(account) { connection in
            try await self.sendSignal(body, to: handles, on: connection, account: account)
        }
    }
}

/// Pure parts of typing, presence, scheduling and reports (`protocol/conversations.md` sections 6, 8, 10).
struct SignalValueTests {
    let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func typingThrottleSendsOneTruePerFiveSecondsAndStops() {
        var throttle = TypingThrottle()
        #expect(throttle.keystroke(at: t0) == true)
        #expect(throttle.keystroke(at: t0 + 1) == nil)
        #expect(throttle.keystroke(at: t0 + 4.9) == nil)
        #expect(throttle.keystroke(at: t0 + 5) == true, "refresh after 5 s of continued typing")
        #expect(throttle.tick(at: t0 + 9) == nil, "idle 4 s")
        #expect(throttle.idleDeadline == t0 + 10)
        #expect(throttle.tick(at: t0 + 10) == false, "idle 5 s")
        #expect(throttle.tick(at: t0 + 20) == nil)
        #expect(throttle.stopped(at: t0 + 20) == nil, "nothing shown, nothing to stop")
        #expect(throttle.keystroke(at: t0 + 21) == true)
        #expect(throttle.stopped(at: t0 + 22) == false, "sent or cleared")
        #expect(throttle.keystroke(at: t0 + 23) == true, "a new run starts at once")
    }

    @Test func typingIndicatorTimesOutAfterFifteenSeconds() {
        var shown = TypingIndicators()
        var changed = shown.received(from: "bob", typing: true, at: t0)
        #expect(changed)
        changed = shown.received(from: "bob", typing: true, at: t0 + 5)
        #expect(!changed, "a refresh changes nothing shown")
        var gone = shown.expire(at: t0 + 19.9)
        #expect(gone.isEmpty)
        gone = shown.expire(at: t0 + 20)
        #expect(gone == ["bob"])
        #expect(shown.typists.isEmpty)
        changed = shown.received(from: "carol", typing: true, at: t0 + 30)
        #expect(changed && shown.typists == ["carol"])
        changed = shown.received(from: "carol", typing: false, at: t0 + 31)
        #expect(changed && shown.typists.isEmpty)
        changed = shown.received(from: "carol", typing: false, at: t0 + 32)
        #expect(!changed)
    }

    @Test func presenceRelativeTimes() throws {
        let utc = try #require(TimeZone(identifier: "UTC"))
        // 2027-01-15 12:00:00 UTC
        let now = Date(timeIntervalSince1970: 1_800_000_000 - 1_800_000_000.truncatingRemainder(dividingBy: 86_400) + 12 * 3_600)
        func say(_ ago: TimeInterval, online: Bool = false) -> String {
            PresenceFormat.describe(online: online, lastSeen: now - ago, now: now, timeZone: utc)
        }
        #expect(say(0, online: true) == "online")
        #expect(PresenceFormat.describe(online: false, lastSeen: nil, now: now, timeZone: utc) == "never seen")
        #expect(say(0) == "just now")
        #expect(say(299) == "just now")
        #expect(say(300) == "5 minutes ago")
        #expect(say(59 * 60) == "59 minutes ago")
        #expect(say(3_600) == "1 hour ago")
        #expect(say(5 * 3_600) == "5 hours ago")
        #expect(say(20 * 3_600) == "20 hours ago", "under 24 hours")
        #expect(say(30 * 3_600) == "yesterday", "06:00 the day before")
        #expect(say(36 * 3_600) == "yesterday", "00:00 the day before")
        let twoDays = say(37 * 3_600)
        #expect(twoDays.hasPrefix("on ") && twoDays.count == "on 2027-01-13".count)
        #expect(PresenceFormat.coarsen(Date(timeIntervalSince1970: 1_000_299)) == Date(timeIntervalSince1970: 1_000_200))
        #expect(PresenceFormat.coarsen(Date(timeIntervalSince1970: 1_000_500)) == Date(timeIntervalSince1970: 1_000_500))
    }

    @Test func scheduleTimesOutsideTheHorizonAreRefused() throws {
        #expect(throws: ClientError.self) { try FlitzClient.checkScheduleTime(t0 - 1, now: t0) }
        #expect(throws: ClientError.self) { try FlitzClient.checkScheduleTime(t0, now: t0) }
        #expect(throws: ClientError.self) { try FlitzClient.checkScheduleTime(t0 + 30 * 86_400 + 1, now: t0) }
        try FlitzClient.checkScheduleTime(t0 + 1, now: t0)
        try FlitzClient.checkScheduleTime(t0 + 30 * 86_400, now: t0)
        do {
            try FlitzClient.checkScheduleTime(t0 - 60, now: t0)
        } catch let error as ClientError {
            #expect(error.message.contains("in the past"))
        }
    }

    @Test func reportContextIsCutAtAScalarBoundary() {
        #expect(FlitzClient.truncatedUTF8("abc", maxBytes: 4) == "abc")
        #expect(FlitzClient.truncatedUTF8("aéé", maxBytes: 4) == "aé", "é is 2 bytes: 1 + 2 fits, 1 + 2 + 2 does not")
        #expect(FlitzClient.truncatedUTF8(String(repeating: "😀", count: 2_000), maxBytes: 4_096).utf8.count == 4_096)
    }
}

/// Online-only receive, typing, presence, message requests and single-use sessions through a real relay.
@Suite(.serialized)
struct SignalsTests {
    /// alice and bob with sessions both ways (neither conversation is a request).
    func acquainted(_ relay: InProcessRelay, aliceClock: TestClock = TestClock(), bobClock: TestClock = TestClock()) async throws
        -> (FlitzClient, FlitzClient)
    {
        let alice = try relay.client("alice", now: aliceClock.closure), bob = try relay.client("bob", now: bobClock.closure)
        _ = try await alice.initialize(relayURL: relay.url, handle: "alice")
        _ = try await bob.initialize(relayURL: relay.url, handle: "bob")
        _ = try await alice.send(to: "bob", text: "hi bob")
        #expect(try await bob.receiveAll().texts == ["hi bob"])
        _ = try await bob.send(to: "alice", text: "hi alice")
        #expect(try await alice.receiveAll().texts == ["hi alice"])
        return (alice, bob)
    }

    @Test func typingReachesAConnectedDevice() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await acquainted(relay)
        let sent = SubmittedEnvelopes(alice)
        let listening = Listening(bob)
        _ = try await alice.send(to: "bob", text: "ping")
        #expect(await listening.waitFor { if case .message(let message) = $0 { message.text == "ping" } else { false } }, "bob is connected")
        sent.clear()
        #expect(try await alice.signal(.typing(true), to: ["bob"]) == 1)
        let envelope = try #require(sent.all.first)
        #expect(envelope.envelope.onlineOnly && envelope.selected && envelope.envelope.urgency == .silent)
        #expect(await listening.waitFor { if case .typing(from: "alice", active: true) = $0 { true } else { false } })
        await listening.stop()
        let stored = try await bob.store.dbQueue.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM messages") ?? 0 }
        #expect(stored == 3, "a signal is not a message")
        await relay.stop()
    }

    /// `process` applies an `online_only` envelope and acknowledges only the stored one beside it (the relay's
    /// part, setting the flag and storing nothing, is the relay's tests' and the end-to-end tests').
    @Test func onlineOnlyEnvelopeIsAppliedButNotAcknowledged() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await acquainted(relay)
        let sent = SubmittedEnvelopes(alice)
        #expect(try await alice.signal(.typing(true), to: ["bob"]) == 1)
        _ = try await alice.send(to: "bob", text: "stored")
        let submitted = sent.all.filter { $0.envelope.recipientHandle == "bob" }.map(\.envelope)
        #expect(submitted.count == 2)
        let aliceDevice = try #require(try alice.store.loadAccount()).deviceID
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        var deliver = WireDeliver()
        deliver.envelopes = submitted.map { outgoing in
            var envelope = WireEnvelope()
            envelope.envelopeID = outgoing.envelopeID
            envelope.senderHandle = "alice"
            envelope.senderDeviceID = aliceDevice
            envelope.recipientDeviceID = outgoing.recipientDeviceID
            envelope.acceptedAtMs = now
            envelope.expiresAtMs = now + 86_400_000
            envelope.ciphertext = outgoing.ciphertext
            envelope.onlineOnly = outgoing.onlineOnly
            return envelope
        }
        #expect(deliver.envelopes.map(\.onlineOnly) == [true, false])
        let acks = AcknowledgedEnvelopes(bob)
        let account = try #require(try bob.store.loadAccount())
        let frame = deliver
        let events = try await bob.withAuthenticatedConnection(account) { connection in try await bob.process(frame, on: connection) }
        #expect(events.contains { if case .typing(from: "alice", active: true) = $0 { true } else { false } })
        #expect(acks.all == [submitted[1].envelopeID], "only the stored envelope is acknowledged")
        await relay.stop()
    }

    @Test func ephemeralRunStopsAtFiveHundredUntilAStoredEnvelope() async throws {
        let relay = try await InProcessRelay()
        let (alice, _) = try await acquainted(relay)
        try await alice.store.dbQueue.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO ephemeral_runs (handle, device_id, base_key, count) SELECT handle, device_id, base_key, 499 FROM sessions WHERE handle = 'bob' AND active = 1")
        }
        #expect(try await alice.signal(.typing(true), to: ["bob"]) == 1, "the 500th")
        #expect(try await alice.signal(.typing(true), to: ["bob"]) == 0, "the 501st is not sent")
        _ = try await alice.send(to: "bob", text: "stored")
        #expect(try await alice.signal(.typing(true), to: ["bob"]) == 1, "a stored envelope starts the run over")
        await relay.stop()
    }

    @Test func presenceNeedsReciprocityAndCoarsensLastSeen() async throws {
        let relay = try await InProcessRelay()
        let bobClock = TestClock(Date(timeIntervalSince1970: 1_800_000_130))
        let (alice, bob) = try await acquainted(relay, bobClock: bobClock)
        try alice.sharePresence(with: ["bob"])
        let listening = Listening(bob)
        // A stored message after a heartbeat: once bob shows it, the heartbeat (sent before it) was applied.
        func heartbeat(_ online: Bool, then text: String) async throws {
            #expect(try await alice.signal(.presence(online: online), to: ["bob"]) == 1)
            _ = try await alice.send(to: "bob", text: text)
            #expect(await listening.waitFor { if case .message(let message) = $0 { message.text == text } else { false } })
        }
        // bob shares with no one: he sees no one's presence, and deletes what arrives.
        try await heartbeat(true, then: "one")
        #expect(try bob.presence().isEmpty)
        let kept = try await bob.store.dbQueue.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM presence_seen") ?? 0 }
        #expect(kept == 0)
        try bob.sharePresence(with: ["alice"])
        try await heartbeat(true, then: "two")
        var entry = try #require(try bob.presence().first)
        #expect(entry.handle == "alice" && entry.online && entry.sharedWith)
        #expect(entry.lastSeen == Date(timeIntervalSince1970: 1_800_000_000), "rounded down to 5 minutes")
        bobClock.advance(91)
        entry = try #require(try bob.presence().first)
        #expect(!entry.online, "no heartbeat for 90 s")
        #expect(PresenceFormat.describe(online: false, lastSeen: entry.lastSeen, now: bobClock.now) == "just now")
        bobClock.advance(-91)
        try await heartbeat(false, then: "three")
        #expect(try bob.presence().first?.online == false, "offline at once")
        try bob.hidePresence()
        #expect(try bob.presence().isEmpty)
        await listening.stop()
        await relay.stop()
    }

    @Test func messageRequestsWithholdSeenAndSignalsUntilAccepted() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let id = try await alice.send(to: "bob", text: "hello stranger")
        let inbox = try await bob.receiveAll()
        #expect(inbox.messages.map(\.isRequest) == [true])
        #expect(try bob.messageRequests().map(\.handle) == ["alice"])
        #expect(try await alice.status(of: id) == .delivered, "no seen receipt for a request")
        // No typing or presence goes to a request.
        try bob.sharePresence(with: ["alice"])
        #expect(try await bob.signal(.typing(true), to: ["alice"]) == 0)
        try bob.acceptRequest("alice")
        #expect(try bob.messageRequests().isEmpty)
        #expect(try await bob.receiveAll().texts.isEmpty)
        #expect(try await alice.status(of: id) == .seen, "accepting lets the seen receipt go")
        _ = try await alice.send(to: "bob", text: "thanks")
        #expect(try await bob.receiveAll().messages.map(\.isRequest) == [false])
        await relay.stop()
    }

    @Test func writingToAStrangerEndsTheRequest() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        _ = try await alice.send(to: "bob", text: "hello")
        _ = try await bob.receiveAll()
        #expect(try bob.messageRequests().count == 1)
        _ = try await bob.send(to: "alice", text: "hi")
        #expect(try bob.messageRequests().isEmpty)
        #expect(throws: ClientError.self) { try bob.acceptRequest("alice") }
        await relay.stop()
    }

    /// Found by a newcomer: the scheduling device lost the message once it was scheduled (not in history, no
    /// status, no unsend). It is there like a sent one, and an unsend before the release purges it.
    @Test func aScheduledMessageIsInTheSendersHistoryAndCanBeUnsent() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await acquainted(relay)
        let scheduled = try await alice.schedule(to: "bob", text: "good morning", at: Date().addingTimeInterval(3600))
        #expect(scheduled.held)
        #expect(try alice.localStatus(of: scheduled.messageID) == .sent)
        #expect(try alice.history(with: "bob").contains { $0.messageID == scheduled.messageID && $0.text == "good morning" })
        let unsent = try await alice.unsend(scheduled.messageID)
        #expect(unsent.outcomes.map(\.state) == [.purged])
        #expect(try await bob.receiveAll().texts.isEmpty)
        await relay.stop()
    }

    @Test func scheduledMessageUsesASingleUseSessionAndLeavesTheRatchetAlone() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await acquainted(relay)
        let account = try #require(try alice.store.loadAccount())
        let bobSessionsBefore = try bob.store.sessions(with: "alice").map(\.session.baseKey)
        let aliceSessionsBefore = try alice.store.sessions(with: "bob").map(\.session.baseKey)
        let oneTimeBefore = try await bob.store.dbQueue.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM one_time_prekeys") ?? 0 }
        // Encrypted now (as `send --at` does), released later: here submitted by hand after two ordinary messages.
        let messageID = SystemRandom().bytes(16)
        let envelopes = try await alice.withAuthenticatedConnection(account) { connection in
            try await alice.scheduledEnvelopes(
                on: connection, account: account, to: "bob", text: "scheduled", messageID: messageID,
                notBefore: Int64(Date().timeIntervalSince1970 * 1000) + 60_000, cancelToken: SystemRandom().bytes(32),
                unsendToken: SystemRandom().bytes(32))
        }
        #expect(envelopes.count == 1 && envelopes[0].notBeforeMs > 0 && envelopes[0].cancelTokenHash.count == 32)
        #expect(try alice.store.sessions(with: "bob").map(\.session.baseKey) == aliceSessionsBefore, "the sender keeps no single-use session")
        _ = try await alice.send(to: "bob", text: "in between 1")
        _ = try await alice.send(to: "bob", text: "in between 2")
        #expect(try await bob.receiveAll().texts == ["in between 1", "in between 2"])
        // The release: the relay hands the held envelope over as an ordinary one.
        var released = envelopes[0]
        released.notBeforeMs = 0
        released.cancelTokenHash = Data()
        released.unsendTokenHash = Data()
        let submitted = released
        try await alice.withAuthenticatedConnection(account) { connection in
            var submit = WireSubmit()
            submit.envelopes = [submitted]
            _ = try await connection.request(.submit(submit))
        }
        let inbox = try await bob.receiveAll()
        #expect(inbox.texts == ["scheduled"])
        #expect(inbox.warnings.isEmpty)
        #expect(try bob.store.sessions(with: "alice").map(\.session.baseKey) == bobSessionsBefore, "the single-use session is not stored")
        let oneTimeAfter = try await bob.store.dbQueue.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM one_time_prekeys") ?? 0 }
        #expect(oneTimeAfter == oneTimeBefore - 1, "its one-time prekey is deleted")
        // A replay of the released envelope cannot start a session or show the message twice.
        try await alice.withAuthenticatedConnection(account) { connection in
            var again = submitted
            again.envelopeID = SystemRandom().bytes(16)
            var submit = WireSubmit()
            submit.envelopes = [again]
            _ = try await connection.request(.submit(submit))
        }
        #expect(try await bob.receiveAll().texts.isEmpty)
        // And the conversation's ratchet goes on both ways.
        _ = try await alice.send(to: "bob", text: "after")
        #expect(try await bob.receiveAll().texts == ["after"])
        _ = try await bob.send(to: "alice", text: "reply")
        #expect(try await alice.receiveAll().texts == ["reply"])
        await relay.stop()
    }
}
