import FlitzCrypto
import FlitzProtocol
import FlitzRelay
import FlitzWire
import Foundation
import GRDB
import Synchronization
import Testing

@testable import FlitzClient

/// A clock for the relay and the clients that tests move forward by hand (never by sleeping).
final class SteppedClock: RelayClock, Sendable {
    private let offset = Mutex<TimeInterval>(0)
    func now() -> Date { Date().addingTimeInterval(offset.withLock { $0 }) }
    func advance(seconds: TimeInterval) { offset.withLock { $0 += seconds } }
    var client: @Sendable () -> Date { { self.now() } }
}

/// Records the frames a client writes.
final class FrameLog: Sendable {
    private let frames = Mutex<[WireFrame]>([])
    init(_ client: FlitzClient) { client.frameTap.withLock { $0 = { frame in self.frames.withLock { $0.append(frame) } } } }
    var submitted: [WireOutgoingEnvelope] {
        frames.withLock { $0 }.flatMap { frame -> [WireOutgoingEnvelope] in
            if case .submit(let submit) = frame.body { return submit.envelopes }
            return []
        }
    }
    var reportedSeen: Int { frames.withLock { $0 }.filter { if case .reportSeen = $0.body { true } else { false } }.count }
    func clear() { frames.withLock { $0 = [] } }
}

extension FlitzClient {
    /// Prepares (encrypts and stores) a text without submitting it, as a crashed `flitz` leaves it.
    func prepare(
        on connection: RelayConnection, account: AccountRecord, to handle: String, text: String, expiresIn: UInt32?, messageID: Data
    ) async throws -> PreparedMessage {
        let outgoing = Self.textOutgoing(
            TextMessage(text), to: handle, messageID: messageID, sentAt: 1, unsendToken: random.bytes(32), timer: 0, expiresIn: expiresIn)
        return try #require(try await prepare(on: connection, account: account, to: handle, outgoing: outgoing))
    }

    /// This device's history with `handle` as (text, details) pairs.
    func shown(_ handle: String) throws -> [ConversationMessage] { try history(with: handle, limit: 1_000) }

    /// The message `id` in the conversation with `handle`.
    func message(_ id: Data, with handle: String) throws -> ConversationMessage? { try shown(handle).first { $0.messageID == id } }

    /// The reference to the message `id` as this device holds it.
    func reference(_ id: Data) throws -> MessageRef { try storedMessage(id, account: try requireAccount()).reference }

    /// How many rows of the local store still hold `text` anywhere in a message, a version or a quote.
    func storedCopies(of text: String) throws -> Int {
        try store.dbQueue.read { db in
            try Int.fetchOne(
                db,
                sql: """
                    SELECT (SELECT COUNT(*) FROM messages WHERE text = ?1 OR original_text = ?1 OR quote_preview = ?1)
                        + (SELECT COUNT(*) FROM message_versions WHERE text = ?1)
                    """,
                arguments: [text]) ?? 0
        }
    }
}

extension InProcessRelay {
    /// alice and bob who have written to each other, so neither conversation is a message request.
    func acquainted(clock: SteppedClock) async throws -> (FlitzClient, FlitzClient) {
        let (alice, bob) = try await aliceAndBob(now: clock.client)
        _ = try await alice.send(to: "bob", text: "hi bob")
        _ = try await bob.receiveAll()
        _ = try await bob.send(to: "alice", text: "hi alice")
        _ = try await alice.receiveAll()
        return (alice, bob)
    }
}

@Suite(.serialized)
struct ConversationTests {
    @Test func textsCarryAnUnsendTokenHashAndMutationsGoSilent() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, bob) = try await relay.acquainted(clock: clock)
        let log = FrameLog(alice)
        let id = try await alice.send(to: "bob", text: "a text")
        let token = try #require(try alice.storedMessage(id, account: try alice.requireAccount()).unsendToken)
        #expect(token.count == 32)
        let textEnvelopes = log.submitted
        #expect(textEnvelopes.count == 1)
        #expect(textEnvelopes.allSatisfy { $0.unsendTokenHash == ConversationTokens.unsendTokenHash(token) })
        #expect(textEnvelopes.allSatisfy { $0.urgency == .urgent })
        log.clear()
        try await alice.react(to: id, emoji: "👍")
        #expect(log.submitted.count == 1)
        #expect(log.submitted.allSatisfy { $0.urgency == .silent && $0.unsendTokenHash.isEmpty })
        // Mutations never show as messages, on either side.
        let inbox = try await bob.receiveAll()
        #expect(inbox.texts == ["a text"], "\(inbox.warnings)")
        #expect(try alice.shown("bob").map(\.text) == ["hi bob", "hi alice", "a text"])
        #expect(try bob.message(id, with: "alice")?.details.reactions == [ReactionSummary(emoji: "👍", count: 1, reactors: ["alice"])])
        await relay.stop()
    }

    @Test func aMutationLeftUnsentByACrashIsResentAsTheSameContent() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, bob) = try await relay.acquainted(clock: clock)
        let id = try await alice.send(to: "bob", text: "react to me")
        _ = try await bob.receiveAll()
        let reference = try bob.reference(id)
        let bobAccount = try bob.requireAccount()
        // Encrypted and stored, then the process "dies" before submitting.
        let orphan = try await bob.withAuthenticatedConnection(bobAccount) { connection in
            try await bob.prepare(
                on: connection, account: bobAccount, to: "alice",
                outgoing: FlitzClient.mutationOutgoing(
                    .reaction(Reaction(target: reference, emoji: "🎉")), to: "alice", messageID: Data(repeating: 7, count: 16), sentAt: 5))
        }
        #expect(orphan != nil)
        _ = try await bob.send(to: "alice", text: "after restart")
        let inbox = try await alice.receiveAll()
        #expect(inbox.texts == ["after restart"], "\(inbox.warnings)")
        #expect(try alice.message(id, with: "bob")?.details.reactions.map(\.emoji) == ["🎉"])
        await relay.stop()
    }

    @Test func repliesShowTheCurrentTextThenOriginalNotAvailable() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, bob) = try await relay.acquainted(clock: clock)
        let question = try await alice.send(to: "bob", text: "dinner at 8?")
        _ = try await bob.receiveAll()
        let answer = try await bob.reply(to: question, text: "yes")
        let inbox = try await alice.receiveAll()
        let reply = try #require(inbox.messages.first { $0.messageID == answer })
        #expect(reply.details.reply == QuotedMessage(author: "alice", messageID: question, text: "dinner at 8?", fromPreview: false))
        try await alice.edit(question, text: "dinner at 9?")
        // The quote shows the target's current text, on both sides.
        #expect(try alice.message(answer, with: "bob")?.details.reply?.text == "dinner at 9?")
        _ = try await bob.receiveAll()
        #expect(try bob.message(answer, with: "alice")?.details.reply?.text == "dinner at 9?")
        try await alice.deleteMessage(question, forEveryone: true)
        _ = try await bob.receiveAll()
        for (client, peer) in [(alice, "bob"), (bob, "alice")] {
            let tombstone = try #require(try client.message(question, with: peer))
            #expect(tombstone.details.deleted && tombstone.text.isEmpty)
            #expect(try client.message(answer, with: peer)?.details.reply?.text == nil)  // original not available
            #expect(try client.storedCopies(of: "dinner at 8?") == 0)
            #expect(try client.storedCopies(of: "dinner at 9?") == 0)
        }
        await relay.stop()
    }

    @Test func aReplyToAMessageDeletedForMeOrNeverHeld() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, bob) = try await relay.acquainted(clock: clock)
        let question = try await alice.send(to: "bob", text: "are you there?")
        _ = try await bob.receiveAll()
        try await alice.deleteMessage(question, forEveryone: false)  // deleted for me: alice no longer holds it
        let answer = try await bob.reply(to: question, text: "here")
        _ = try await alice.receiveAll()
        #expect(try alice.message(answer, with: "bob")?.details.reply?.text == nil, "deleted for me: original not available")
        // A delete for me is local: a later mutation of it is unknown here.
        #expect(try alice.message(question, with: "bob") == nil)
        // A device that never held the target (linked later, say) shows the reply's preview.
        try await alice.store.dbQueue.write { db in try db.execute(sql: "DELETE FROM messages WHERE message_id = ?", arguments: [question]) }
        #expect(
            try alice.message(answer, with: "bob")?.details.reply
                == QuotedMessage(author: "alice", messageID: question, text: "are you there?", fromPreview: true))
        await relay.stop()
    }

    @Test func reactionsAggregateReplaceAndConverge() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, bob) = try await relay.acquainted(clock: clock)
        let id = try await alice.send(to: "bob", text: "photo")
        _ = try await bob.receiveAll()
        try await bob.react(to: id, emoji: "👍")
        try await alice.react(to: id, emoji: "👍")
        _ = try await alice.receiveAll()
        #expect(try alice.message(id, with: "bob")?.details.reactions == [ReactionSummary(emoji: "👍", count: 2, reactors: ["alice", "bob"])])
        try await bob.react(to: id, emoji: "😂")
        _ = try await alice.receiveAll()
        #expect(try alice.message(id, with: "bob")?.details.reactions.map(\.emoji) == ["👍", "😂"])
        try await bob.react(to: id, emoji: "")
        _ = try await alice.receiveAll()
        #expect(try alice.message(id, with: "bob")?.details.reactions == [ReactionSummary(emoji: "👍", count: 1, reactors: ["alice"])])
        await #expect(throws: ClientError.self) { try await bob.react(to: id, emoji: "ok") }

        // Two reactions by one person to one message converge whatever the arrival order.
        let account = try alice.requireAccount()
        let first = try await alice.send(to: "bob", text: "one")
        let second = try await alice.send(to: "bob", text: "two")
        let older = { (target: MessageRef) in
            MessageContent(messageID: Data(repeating: 1, count: 16), sentAtMilliseconds: 1_000, body: .reaction(Reaction(target: target, emoji: "🙂")))
        }
        let newer = { (target: MessageRef) in
            MessageContent(messageID: Data(repeating: 2, count: 16), sentAtMilliseconds: 2_000, body: .reaction(Reaction(target: target, emoji: "🔥")))
        }
        let (one, two) = (try alice.reference(first), try alice.reference(second))
        try alice.store.transaction { db in
            for content in [older(one), newer(one), newer(two), older(two)] {
                let events = try FlitzClient.applyContent(
                    content, sender: "bob", acceptedAt: 1, receivedAt: 1, account: account, keepPending: false, db)
                #expect(events.isEmpty)
            }
        }
        #expect(try alice.message(first, with: "bob")?.details.reactions.map(\.emoji) == ["🔥"])
        #expect(try alice.message(second, with: "bob")?.details.reactions.map(\.emoji) == ["🔥"])
        await relay.stop()
    }

    @Test func editsKeepHistoryAndEveryRuleIsEnforced() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, bob) = try await relay.acquainted(clock: clock)
        let id = try await alice.send(to: "bob", text: "version 1")
        _ = try await bob.receiveAll()
        for version in 2...10 { #expect(try await alice.edit(id, text: "version \(version)") == UInt32(version)) }
        // At most 10 versions.
        await #expect(throws: ClientError.self) { try await alice.edit(id, text: "version 11") }
        let inbox = try await bob.receiveAll()
        #expect(inbox.messages.isEmpty && inbox.warnings.isEmpty, "\(inbox.warnings)")
        let edited = try #require(try bob.message(id, with: "alice"))
        #expect(edited.text == "version 10" && edited.details.version == 10 && edited.details.edited)
        #expect(edited.previousVersions == (1...9).map { "version \($0)" })
        let reference = try bob.reference(id)

        // Not the author: refused by bob's client, and rejected by alice's when sent anyway.
        await #expect(throws: ClientError.self) { try await bob.edit(id, text: "bob's words") }
        _ = try await bob.sendMutation(.edit(Edit(target: reference, body: "bob's words", version: 10)), to: "alice", timeout: .seconds(30))
        // A wrong content hash: the target is not what its author sent.
        let forged = MessageRef(authorHandle: "alice", messageID: id, originalText: "something alice never wrote")
        _ = try await bob.sendMutation(.reaction(Reaction(target: forged, emoji: "👍")), to: "alice", timeout: .seconds(30))
        // A lower version than the one shown (an author's second device can send one late): kept, not shown.
        _ = try await alice.sendMutation(.edit(Edit(target: reference, body: "stale", version: 9)), to: "bob", timeout: .seconds(30))
        #expect(try await alice.receiveAll().warnings == ["rejected an edit from bob: not the author", "rejected a reaction from bob: content mismatch"])
        #expect(try await bob.receiveAll().warnings.isEmpty)
        #expect(try bob.message(id, with: "alice")?.text == "version 10")

        // Too late: 24 hours after the relay accepted the original, by the relay's clock.
        let late = try await alice.send(to: "bob", text: "fresh")
        _ = try await bob.receiveAll()
        clock.advance(seconds: 86_400 + 60)
        await #expect(throws: ClientError.self) { try await alice.edit(late, text: "too late") }
        await #expect(throws: ClientError.self) { try await alice.deleteMessage(late, forEveryone: true) }
        let lateReference = try alice.reference(late)
        _ = try await alice.sendMutation(.edit(Edit(target: lateReference, body: "too late", version: 2)), to: "bob", timeout: .seconds(30))
        _ = try await alice.sendMutation(.deleteForEveryone(target: lateReference), to: "bob", timeout: .seconds(30))
        #expect(try await bob.receiveAll().warnings == ["rejected an edit from alice: too late", "rejected a delete for everyone from alice: too late"])
        #expect(try bob.message(late, with: "alice")?.text == "fresh")
        await relay.stop()
    }

    @Test func deleteForEveryoneOnlyByTheAuthor() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, bob) = try await relay.acquainted(clock: clock)
        let id = try await alice.send(to: "bob", text: "mine")
        _ = try await bob.receiveAll()
        try await bob.react(to: id, emoji: "👍")
        await #expect(throws: ClientError.self) { try await bob.deleteMessage(id, forEveryone: true) }
        _ = try await bob.sendMutation(.deleteForEveryone(target: try bob.reference(id)), to: "alice", timeout: .seconds(30))
        #expect(try await alice.receiveAll().warnings == ["rejected a delete for everyone from bob: not the author"])
        #expect(try alice.message(id, with: "bob")?.text == "mine")
        try await alice.deleteMessage(id, forEveryone: true)
        _ = try await bob.receiveAll()
        let tombstone = try #require(try bob.message(id, with: "alice"))
        #expect(tombstone.details.deleted && tombstone.details.reactions.isEmpty)
        // Any mutation of a deleted message is rejected.
        _ = try await bob.sendMutation(.reaction(Reaction(target: MessageRef(authorHandle: "alice", messageID: id, originalText: "mine"), emoji: "😢")), to: "alice", timeout: .seconds(30))
        #expect(try await alice.receiveAll().warnings == ["rejected a reaction from bob: deleted"])
        await relay.stop()
    }

    @Test func forwardingCountsAndHonoursNoForward() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, bob) = try await relay.acquainted(clock: clock)
        let secret = try await alice.send(to: "bob", text: "just for you", noForward: true)
        let meme = try await alice.send(to: "bob", text: "a meme")
        _ = try await bob.receiveAll()
        #expect(try bob.message(secret, with: "alice")?.details.noForward == true)
        do {
            _ = try await bob.forward(secret, to: "alice")
            Issue.record("a no-forward message was forwarded")
        } catch let error as ClientError {
            #expect(error.message.contains("the sender asked that this message not be forwarded"))
        }
        let forwarded = try await bob.forward(meme, to: "alice")
        let inbox = try await alice.receiveAll()
        let copy = try #require(inbox.messages.first { $0.messageID == forwarded })
        #expect(copy.text == "a meme" && copy.details.forwardCount == 1 && copy.details.reply == nil)
        let again = try await alice.forward(forwarded, to: "bob")
        _ = try await bob.receiveAll()
        #expect(try bob.message(again, with: "alice")?.details.forwardCount == 2)
        await relay.stop()
    }

    @Test func sealedSeenReachesTheAuthorAndTheRelayLearnsNothing() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, bob) = try await relay.acquainted(clock: clock)
        try await bob.setSeenReceipts(.sealed)
        #expect(try bob.seenReceipts() == .sealed)
        let id = try await alice.send(to: "bob", text: "read me")
        let log = FrameLog(bob)
        #expect(try await bob.receiveAll().texts == ["read me"])
        #expect(log.reportedSeen == 0)
        #expect(log.submitted.count == 1 && log.submitted[0].urgency == .silent && log.submitted[0].recipientHandle == "alice")
        let receipts = try await alice.rawReceipts()
        #expect(!receipts.contains { $0.kind == .seen })
        #expect(try alice.localStatus(of: id) == .seen)
        // Back to relay-tracked receipts; read-receipts off is the same as seen-receipts off.
        try await bob.setSeenReceipts(.relay)
        #expect(try bob.readReceipts())
        try await bob.setReadReceipts(false)
        #expect(try bob.seenReceipts() == .off)
        await relay.stop()
    }

    /// A sealed receipt goes to the author's devices only, not to the reader's own other devices: found by a
    /// newcomer, whose two-device account could never send one (the relay's coverage check refused it).
    @Test func sealedSeenFromAReaderWithTwoDevices() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, bob1) = try await relay.aliceAndBob(now: clock.client)
        let bob2 = try await relay.link("bob2", to: bob1, now: clock.client)
        _ = try await bob1.send(to: "alice", text: "hi alice")
        _ = try await alice.receiveAll()
        try await bob1.setSeenReceipts(.sealed)
        let id = try await alice.send(to: "bob", text: "read me on two devices")
        #expect(try await bob1.receiveAll().texts == ["read me on two devices"])
        _ = try await alice.receiveAll()
        #expect(try alice.localStatus(of: id) == .seen)
        #expect(!(try await alice.rawReceipts()).contains { $0.kind == .seen }, "sealed, not relay-tracked")
        _ = try await bob2.receiveAll()
        await relay.stop()
    }

    @Test func aMessageRequestGetsNoSeenReceiptOfEitherKind() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, bob) = try await relay.aliceAndBob(now: clock.client)
        let first = try await alice.send(to: "bob", text: "hello stranger")
        let log = FrameLog(bob)
        #expect(try await bob.receiveAll().texts == ["hello stranger"])
        try await bob.setSeenReceipts(.sealed)
        let second = try await alice.send(to: "bob", text: "still there?")
        #expect(try await bob.receiveAll().texts == ["still there?"])
        #expect(log.reportedSeen == 0)
        #expect(!log.submitted.contains { $0.recipientHandle == "alice" })
        #expect(try await alice.status(of: first) == .delivered)
        #expect(try await alice.status(of: second) == .delivered)
        #expect(try bob.conversations().isEmpty, "a request is not listed among conversations")
        await relay.stop()
    }

    @Test func aMutationForAMessageNotYetArrivedIsKeptSevenDays() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, _) = try await relay.acquainted(clock: clock)
        let account = try alice.requireAccount()
        let lateID = Data(repeating: 9, count: 16)
        let reference = MessageRef(authorHandle: "bob", messageID: lateID, originalText: "late")
        let reaction = MessageContent(messageID: Data(repeating: 3, count: 16), sentAtMilliseconds: 10, body: .reaction(Reaction(target: reference, emoji: "👀")))
        let now = Int64(clock.now().timeIntervalSince1970 * 1000)
        let warnings = try alice.store.transaction { db in
            try FlitzClient.applyContent(reaction, sender: "bob", acceptedAt: now, receivedAt: now, account: account, keepPending: true, db)
        }
        #expect(warnings.count == 1)
        // The target arrives: the kept reaction applies.
        let events = try alice.store.transaction { db -> [ClientEvent] in
            try db.execute(
                sql: "INSERT INTO messages (message_id, outgoing, peer, text, envelope_id, status, accepted_at_ms) VALUES (?, 0, 'bob', 'late', ?, 'delivered', ?)",
                arguments: [lateID, Data(repeating: 4, count: 16), now])
            return try FlitzClient.storedText(
                TextMessage("late"), content: MessageContent(messageID: lateID, sentAtMilliseconds: 1, body: .text("late")), conversation: "bob",
                outgoing: false, unsendToken: nil, account: account, db)
        }
        #expect(events.isEmpty)
        #expect(try alice.message(lateID, with: "bob")?.details.reactions.map(\.emoji) == ["👀"])
        // One that never finds its target is dropped after 7 days.
        let orphan = MessageContent(
            messageID: Data(repeating: 5, count: 16), sentAtMilliseconds: 10,
            body: .reaction(Reaction(target: MessageRef(authorHandle: "bob", messageID: Data(repeating: 6, count: 16), originalText: "never"), emoji: "👀")))
        _ = try alice.store.transaction { db in
            try FlitzClient.applyContent(orphan, sender: "bob", acceptedAt: now, receivedAt: now, account: account, keepPending: true, db)
        }
        let pending = { try alice.store.dbQueue.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM pending_mutations") ?? 0 } }
        #expect(try pending() == 1)
        clock.advance(seconds: 7 * 86_400 + 1)
        try alice.sweepExpired()
        #expect(try pending() == 0)
        await relay.stop()
    }

    @Test func disappearingMessagesLeaveEveryDeviceAndReadSyncStartsTheTimer() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice1, bob1) = try await relay.aliceAndBob(now: clock.client)
        let alice2 = try await relay.link("alice2", to: alice1, now: clock.client)
        let bob2 = try await relay.link("bob2", to: bob1, now: clock.client)
        _ = try await alice1.send(to: "bob", text: "hi bob")
        _ = try await bob1.send(to: "alice", text: "hi alice")
        for client in [alice1, alice2, bob1, bob2] { _ = try await client.receiveAll() }

        try await alice1.setDisappearing("bob", seconds: 60)
        for client in [alice2, bob1, bob2] { _ = try await client.sync(onWarning: { _ in }) }
        #expect(try [alice1, alice2].map { try $0.disappearing("bob") } == [60, 60])
        #expect(try [bob1, bob2].map { try $0.disappearing("alice") } == [60, 60])
        let log = FrameLog(alice1)
        let id = try await alice1.send(to: "bob", text: "this will vanish")
        #expect(log.submitted.count == 3 && log.submitted.allSatisfy { $0.ttlSeconds == 60 })
        // bob1 shows it; bob2 learns by the read sync (not shown there, not unread either).
        #expect(try await bob1.receiveAll().texts == ["this will vanish"])
        _ = try await bob2.sync(onWarning: { _ in })
        _ = try await alice2.sync(onWarning: { _ in })
        #expect(try bob2.conversations().first?.unread == 0)
        #expect(try bob2.message(id, with: "alice")?.details.disappearAfterSeconds == 60)
        for client in [alice1, alice2, bob1, bob2] { #expect(try client.storedCopies(of: "this will vanish") == 1) }
        clock.advance(seconds: 61)
        for client in [alice1, alice2, bob1, bob2] {
            try client.sweepExpired()
            #expect(try client.storedCopies(of: "this will vanish") == 0)
            #expect(try client.shown(client === alice1 || client === alice2 ? "bob" : "alice").map(\.text).contains("this will vanish") == false)
        }
        // The per-message override: 0 keeps it whatever the timer.
        let kept = try await alice1.send(to: "bob", text: "keep this", disappearAfter: 0)
        clock.advance(seconds: 120)
        try alice1.sweepExpired()
        #expect(try alice1.message(kept, with: "bob")?.text == "keep this")
        await relay.stop()
    }

    @Test func unsendPurgesQueuedCopiesAndDeletesDeliveredOnes() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, bob) = try await relay.acquainted(clock: clock)
        // bob is offline: his copy is still queued, so the relay purges it and bob never sees it.
        let oops = try await alice.send(to: "bob", text: "oops, wrong person")
        let purged = try await alice.unsend(oops)
        #expect(purged.outcomes.map { "\($0.handle) \($0.state.rawValue)" } == ["bob purged"])
        #expect(!purged.deletedForEveryone)
        #expect(try await bob.receiveAll().messages.isEmpty)
        #expect(try alice.message(oops, with: "bob")?.details.deleted == true)
        // Delivered already: said so, and a delete for everyone follows.
        let delivered = try await alice.send(to: "bob", text: "too late to take back")
        _ = try await bob.receiveAll()
        let answer = try await alice.unsend(delivered)
        #expect(answer.outcomes.map(\.state) == [.alreadyDelivered] && answer.deletedForEveryone)
        _ = try await bob.receiveAll()
        #expect(try bob.message(delivered, with: "alice")?.details.deleted == true)
        // After 24 hours no delete follows (it would be refused); the outcome is still told.
        let old = try await alice.send(to: "bob", text: "from yesterday")
        _ = try await bob.receiveAll()
        clock.advance(seconds: 86_400 + 60)
        let late = try await alice.unsend(old)
        #expect(late.outcomes.map(\.state) == [.alreadyDelivered] && !late.deletedForEveryone)
        // Only the sender's messages have a token.
        await #expect(throws: ClientError.self) { _ = try await bob.unsend(old) }
        await relay.stop()
    }

    @Test func timersConvergeByVersionThenTime() async throws {
        let clock = SteppedClock()
        let relay = try await InProcessRelay(clock: clock)
        let (alice, bob) = try await relay.acquainted(clock: clock)
        try await alice.setDisappearing("bob", seconds: 300)
        try await bob.setDisappearing("alice", seconds: 60)  // version 1 too: concurrent
        _ = try await alice.sync(onWarning: { _ in })
        _ = try await bob.sync(onWarning: { _ in })
        #expect(try alice.disappearing("bob") == bob.disappearing("alice"))
        try await bob.setDisappearing("alice", seconds: 0)  // version 2 wins
        _ = try await alice.sync(onWarning: { _ in })
        #expect(try alice.disappearing("bob") == 0)
        await relay.stop()
    }
}
