import FlitzCrypto
import FlitzRelay
import FlitzWire
import Foundation
import GRDB
import Synchronization
import Testing

@testable import FlitzClient

/// Records the envelopes a client writes in `Submit` frames (through `FlitzClient.frameTap`, decoded from
/// the bytes written to the relay), with whether their Submit chose devices on purpose.
final class SubmittedEnvelopes: Sendable {
    private let state = Mutex<[(envelope: WireOutgoingEnvelope, selected: Bool)]>([])

    init(_ client: FlitzClient) {
        client.frameTap.withLock { tap in
            tap = { [self] frame in
                guard case .submit(let submit) = frame.body else { return }
                self.state.withLock { $0 += submit.envelopes.map { ($0, submit.selectedDevices) } }
            }
        }
    }

    var all: [(envelope: WireOutgoingEnvelope, selected: Bool)] { state.withLock { $0 } }
    func clear() { state.withLock { $0 = [] } }
}

extension FlitzClient {
    /// Runs `listenForNotifications` until its first report (the queue drained on connecting is one batch),
    /// then stops it.
    func firstNotifications() async throws -> [MessageNotification] {
        let (stream, continuation) = AsyncStream<[MessageNotification]>.makeStream()
        let listener = Task {
            try await self.listenForNotifications(onNotifications: { continuation.yield($0) }, onWarning: { _ in })
        }
        // Failure guard only: a report normally arrives within a second.
        let timeout = Task {
            try await Task.sleep(for: .seconds(60))
            continuation.finish()
        }
        var iterator = stream.makeAsyncIterator()
        let first = await iterator.next()
        timeout.cancel()
        listener.cancel()
        _ = await listener.result  // closed before the next command on this home connects
        return try #require(first, "no notification within 60 s")
    }
}

@Suite(.serialized)
struct PushClientTests {
    // MARK: urgency classes (push.md 2)

    @Test func everyEnvelopeCarriesItsUrgencyClass() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let alice2 = try await relay.link("alice2", to: alice)
        let fromAlice = SubmittedEnvelopes(alice), fromBob = SubmittedEnvelopes(bob)
        // A text message: urgent to bob's device, silent as a sent transcript to alice's other device.
        _ = try await alice.send(to: "bob", text: "hi")
        let sent = fromAlice.all
        let toBob = sent.filter { $0.envelope.recipientHandle == "bob" }.map(\.envelope.urgency)
        let toOwn = sent.filter { $0.envelope.recipientHandle == "alice" }.map(\.envelope.urgency)
        #expect(!toBob.isEmpty && toBob.allSatisfy { $0 == .urgent }, "\(toBob)")
        #expect(!toOwn.isEmpty && toOwn.allSatisfy { $0 == .silent }, "\(toOwn)")
        #expect(try await bob.receiveAll().texts == ["hi"])
        #expect(try await alice2.receiveAll().messages.map(\.to) == ["bob"])

        // A session reset (bob restored an old session state) is silent; alice's resend of the lost text is urgent.
        let backup = try bob.store.sessions(with: "alice").first(where: \.active)!.session.serialized()
        _ = try await bob.send(to: "alice", text: "reply")
        _ = try await alice.receiveAll()
        _ = try await alice.send(to: "bob", text: "ratchets")
        _ = try await bob.receiveAll()
        _ = try await bob.send(to: "alice", text: "reply 2")
        _ = try await alice.receiveAll()
        try await bob.store.dbQueue.write { db in try db.execute(sql: "UPDATE sessions SET record = ? WHERE handle = 'alice'", arguments: [backup]) }
        fromAlice.clear()
        fromBob.clear()
        _ = try await alice.send(to: "bob", text: "lost on the old state?")
        let failed = try await bob.receiveAll()
        #expect(failed.warnings.contains { $0.contains("started a new session with alice") }, "\(failed.warnings)")
        let resets = fromBob.all.filter(\.selected)
        #expect(resets.count == 1)
        #expect(resets.map(\.envelope.urgency) == [.silent])
        fromAlice.clear()
        _ = try await alice.receiveAll()  // answers the reset: resends the lost text to bob's device only
        let resent = fromAlice.all.filter(\.selected)
        #expect(resent.map(\.envelope.recipientHandle) == ["bob"])
        #expect(resent.map(\.envelope.urgency) == [.urgent])
        #expect(try await bob.receiveAll().texts == ["lost on the old state?"])
        // No envelope this client wrote left the class unspecified.
        #expect(!(fromAlice.all + fromBob.all).contains { $0.envelope.urgency == .unspecified })
        await relay.stop()
    }

    @Test func aResubmittedPendingEnvelopeKeepsItsClass() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        _ = try await alice.send(to: "bob", text: "first")
        _ = try await bob.receiveAll()
        // An envelope stored but never acknowledged (a killed `flitz send`) is resubmitted by the next command.
        let account = try #require(try alice.store.loadAccount())
        let messageID = SystemRandom().bytes(16)
        _ = try await alice.withAuthenticatedConnection(account) { connection in
            try await alice.prepare(on: connection, account: account, to: "bob", text: "stored, not sent", expiresIn: nil, messageID: messageID)
        }
        let recorder = SubmittedEnvelopes(alice)
        #expect(try await alice.sync(onWarning: { _ in }) == 0)
        #expect(recorder.all.map(\.envelope.urgency) == [.urgent])
        #expect(try await bob.receiveAll().texts == ["stored, not sent"])
        await relay.stop()
    }

    // MARK: notification rules (push.md 8)

    @Test func keywordsMatchWholeWordsInAnyCase() {
        #expect(NotificationRules.matches("Dinner at 8?", keyword: "dinner"))
        #expect(NotificationRules.matches("what about DINNER", keyword: "Dinner"))
        #expect(NotificationRules.matches("(dinner)", keyword: "dinner"))
        #expect(!NotificationRules.matches("dinners are late", keyword: "dinner"))
        #expect(!NotificationRules.matches("afterdinner", keyword: "dinner"))
        #expect(!NotificationRules.matches("dinner_time", keyword: "dinner"))
        #expect(NotificationRules.matches("afterdinner, then dinner", keyword: "dinner"), "a later whole-word occurrence counts")
        #expect(NotificationRules.matches("Straße gesperrt", keyword: "straße"))
        #expect(!NotificationRules.matches("anything", keyword: ""))
    }

    @Test func muteKeywordAndGroupingThroughTheRelay() async throws {
        let relay = try await InProcessRelay()
        let clock = ManualClock()
        let (alice, bob) = try await relay.aliceAndBob(now: clock.now)
        let carol = try relay.client("carol")
        _ = try await carol.initialize(relayURL: relay.url, handle: "carol")
        // bob has written to alice and accepted carol: their messages are no message requests (never notified).
        _ = try await bob.send(to: "alice", text: "hello alice")
        try bob.acceptRequest("carol")
        try bob.mute("alice", until: clock.now().addingTimeInterval(3600))
        #expect(try bob.addKeyword("Dinner") == "Dinner")
        #expect(try bob.addKeyword("DINNER") == "Dinner", "one keyword regardless of case")

        // Muted alice: only her keyword message notifies, marked; carol's single message shows as itself.
        let muted = try await alice.send(to: "bob", text: "are you there?")
        let alert = try await alice.send(to: "bob", text: "dinner at 8?")
        _ = try await carol.send(to: "bob", text: "hi bob")
        let first = try await bob.firstNotifications()
        #expect(first.map(\.title) == ["alice (keyword: Dinner)", "carol"])
        #expect(first.map(\.body) == ["dinner at 8?", "hi bob"])
        #expect(first[0].keyword == "Dinner")
        // The muted message was still received and stored (the relay knows nothing of the mute).
        #expect(try bob.count("SELECT COUNT(*) FROM messages WHERE outgoing = 0 AND peer = 'alice'") == 2)
        // A notification is not a read: delivered, not seen, and `receive` still shows every message once.
        #expect(try await alice.status(of: muted) == .delivered)
        #expect(try await alice.status(of: alert) == .delivered)
        #expect(try await bob.receiveAll().texts == ["are you there?", "dinner at 8?", "hi bob"])
        #expect(try await alice.status(of: alert) == .seen)

        // Two hours later the mute has expired: three messages of one batch become one summary.
        clock.advance(days: 2.0 / 24)
        #expect(try bob.notificationSettings().mutes.isEmpty)
        _ = try await alice.send(to: "bob", text: "one")
        _ = try await carol.send(to: "bob", text: "two")
        _ = try await alice.send(to: "bob", text: "three")
        let second = try await bob.firstNotifications()
        #expect(second.count == 1)
        #expect(second.first?.title == "Flitz")
        #expect(second.first?.body == "3 new messages from alice, carol")
        #expect(second.first?.senders == ["alice", "carol"])
        #expect(second.first?.messageIDs.count == 3)

        // A mute without end holds until unmuted; the keyword alert is not folded into the summary.
        try bob.mute("carol", until: nil)
        _ = try await carol.send(to: "bob", text: "muted")
        _ = try await alice.send(to: "bob", text: "a")
        _ = try await alice.send(to: "bob", text: "b")
        _ = try await carol.send(to: "bob", text: "DINNER!")
        let third = try await bob.firstNotifications()
        #expect(third.map(\.title) == ["carol (keyword: Dinner)", "Flitz"])
        #expect(third.last?.body == "2 new messages from alice")
        clock.advance(days: 365)
        #expect(try bob.notificationSettings().mutes == [ConversationMute(handle: "carol", until: nil)])
        try bob.unmute("carol")
        #expect(throws: ClientError.self) { try bob.unmute("carol") }
        _ = try await carol.send(to: "bob", text: "back")
        #expect(try await bob.firstNotifications().map(\.title) == ["carol"])
        await relay.stop()
    }

    @Test func settingsAreCheckedAndStayOnTheDevice() async throws {
        let relay = try await InProcessRelay()
        let clock = ManualClock()
        let (_, bob) = try await relay.aliceAndBob(now: clock.now)
        #expect(throws: ClientError.self) { try bob.mute("alice", until: clock.now()) }
        #expect(throws: ClientError.self) { try bob.mute("Not A Handle", until: nil) }
        #expect(throws: ClientError.self) { try bob.mute("bob", until: nil) }
        #expect(throws: ClientError.self) { try bob.addKeyword("two words") }
        #expect(throws: ClientError.self) { try bob.addKeyword(String(repeating: "x", count: 65)) }
        #expect(throws: ClientError.self) { try bob.removeKeyword("absent") }
        try bob.mute("alice", until: clock.now().addingTimeInterval(60))
        try bob.addKeyword("secretword")
        #expect(try bob.notificationSettings() == NotificationSettings(
            mutes: [ConversationMute(handle: "alice", until: clock.now().addingTimeInterval(60))], keywords: ["secretword"]))
        try bob.removeKeyword("SECRETWORD")
        #expect(try bob.notificationSettings().keywords.isEmpty)
        // The relay's database never holds a keyword or a mute.
        try bob.addKeyword("secretword")
        _ = try await bob.receiveAll()
        for name in ["relay.sqlite", "relay.sqlite-wal"] {
            let file = relay.directory.appendingPathComponent(name)
            guard let bytes = FileManager.default.contents(atPath: file.path) else { continue }
            #expect(bytes.range(of: Data("secretword".utf8)) == nil, "\(name)")
        }
        await relay.stop()
    }

    // MARK: push registration (push.md 4)

    @Test func decryptOpensAWakeUpForThisDeviceOnly() async throws {
        let relay = try await InProcessRelay(allowPrivatePushEndpoints: true)
        let (alice, bob) = try await relay.aliceAndBob()
        #expect(throws: ClientError.self) { try bob.decryptPush(Data([1, 2, 3])) }
        // Registering while the relay is unreachable keeps the new keys as pending: a wake-up encrypted to
        // them (the relay may have stored the registration before the connection dropped) still opens.
        try await bob.store.dbQueue.write { db in try db.execute(sql: "UPDATE account SET relay_url = 'ws://127.0.0.1:9'") }
        let unreachable = await #expect(throws: ClientError.self) { try await bob.registerPush(.webPush(endpoint: "http://127.0.0.1:9/push/bob")) }
        #expect(unreachable?.kind == .relayUnreachable)
        #expect(try bob.localPushRegistration()?.confirmed == false)
        let keys = try #require(try bob.store.dbQueue.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM push_registrations WHERE state = 'pending'")
        })
        let subscriber = try WebPush.SubscriberKeys(
            privateKey: SecretBytes(keys["webpush_private_key"] as Data), authSecret: SecretBytes(keys["webpush_auth_secret"] as Data))
        for wake in [WakeClass.urgent, .ring] {
            let body = try WebPush.encrypt(wake.payload, subscriberPublicKey: subscriber.publicKey, authSecret: subscriber.authSecret, paddedLength: 64)
            #expect(try bob.decryptPush(body) == wake.payload)
            #expect(try bob.decryptPush(Data(body.base64EncodedString().utf8)) == wake.payload, "base64 text as some distributors pass it")
            var tampered = body
            tampered[tampered.count - 1] ^= 1
            #expect(throws: ClientError.self) { try bob.decryptPush(tampered) }
        }
        // Not for this device: encrypted to someone else's keys.
        let other = WebPush.SubscriberKeys.generate()
        let foreign = try WebPush.encrypt(WakeClass.urgent.payload, subscriberPublicKey: other.publicKey, authSecret: other.authSecret, paddedLength: 64)
        let error = #expect(throws: ClientError.self) { try bob.decryptPush(foreign) }
        #expect(error?.message.contains("does not decrypt") == true)
        #expect(error?.exitCode == 1)
        _ = alice
        await relay.stop()
    }

    @Test func malformedEndpointsAreRefusedBeforeAnythingIsSent() async throws {
        for target: PushTarget in [
            .webPush(endpoint: "ftp://push.example/x"), .webPush(endpoint: "http://push.example/x"), .webPush(endpoint: "not a url"),
            .webPush(endpoint: "https://push.example/" + String(repeating: "a", count: 2048)),
            .apns(token: "abc", background: false), .apns(token: String(repeating: "g", count: 64), background: false),
            .fcm(token: ""), .fcm(token: "has space"),
            .webPush(endpoint: "http://127.0.0.1:99999/x"), .webPush(endpoint: "https://[::1]:70000/x"), .webPush(endpoint: "http://127.0.0.1:0/x"),
            .webPush(endpoint: "http://user:pw@127.0.0.1:8080/x"),
        ] {
            #expect(target.problem() != nil, "\(target)")
        }
        for target: PushTarget in [
            .webPush(endpoint: "https://push.example/x"), .webPush(endpoint: "http://127.0.0.1:8080/x"), .webPush(endpoint: "http://localhost/x"),
            .webPush(endpoint: "http://[::1]:9/x"), .apns(token: String(repeating: "A1", count: 32), background: true), .fcm(token: "abc:DEF-123_x"),
        ] {
            #expect(target.problem() == nil, "\(target)")
        }
        let relay = try await InProcessRelay()
        let (_, bob) = try await relay.aliceAndBob()
        let error = await #expect(throws: ClientError.self) { try await bob.registerPush(.webPush(endpoint: "http://push.example/x")) }
        #expect(error?.kind == .invalidArgument)
        #expect(try bob.localPushRegistration() == nil)
        await relay.stop()
    }

    @Test func aRelayThatRefusesPrivateEndpointsSaysSo() async throws {
        // The client accepts loopback http (push.md 3.1); a relay without push.allowPrivateEndpoints refuses it,
        // and private addresses over https, with a message the client passes on; nothing is kept locally.
        let relay = try await InProcessRelay()
        let (_, bob) = try await relay.aliceAndBob()
        for endpoint in ["http://127.0.0.1:9/push/bob", "https://10.0.0.1/x", "https://localhost/x"] {
            #expect(PushTarget.webPush(endpoint: endpoint).problem() == nil)
            let error = await #expect(throws: ClientError.self) { try await bob.registerPush(.webPush(endpoint: endpoint)) }
            #expect(error?.kind == .refused(.invalidArgument), "\(endpoint): \(String(describing: error))")
            #expect(error?.message.contains("push.allowPrivateEndpoints") == true, "\(error?.message ?? "")")
            #expect(try bob.localPushRegistration() == nil)
        }
        await relay.stop()
    }

    @Test func statusRemoveAndRefusalsAgainstTheRelay() async throws {
        let relay = try await InProcessRelay()
        let (_, bob) = try await relay.aliceAndBob()
        let none = try await bob.pushStatus()
        #expect(!none.registered && none.service == nil && none.registeredAt == nil && none.wakesSent == 0 && none.droppedAt == nil)
        // A relay without APNs or FCM credentials: refused (exit 3) with a message saying so; nothing kept locally.
        let apns = await #expect(throws: ClientError.self) {
            try await bob.registerPush(.apns(token: String(repeating: "AB", count: 32), background: true))
        }
        #expect(apns?.kind == .refused(.pushProviderUnavailable))
        #expect(apns?.message.hasPrefix("this relay has no APNs credentials") == true, "\(apns?.message ?? "")")
        #expect(apns?.exitCode == 3)
        let fcm = await #expect(throws: ClientError.self) { try await bob.registerPush(.fcm(token: "fcm-token:1")) }
        #expect(fcm?.message.hasPrefix("this relay has no FCM service account") == true, "\(fcm?.message ?? "")")
        #expect(try bob.localPushRegistration() == nil)
        // Removing when there is nothing is no error.
        #expect(try await bob.removePush().registered == false)
        await relay.stop()
    }

    @Test func aRelayRefusalOfAFieldIsExplained() async throws {
        let relay = try await InProcessRelay(allowPrivatePushEndpoints: true)
        let (_, bob) = try await relay.aliceAndBob()
        let account = try #require(try bob.store.loadAccount())
        // What the client never sends (it makes valid keys), sent raw: the relay names the field, the client says so.
        var register = WireRegisterPushEndpoint()
        register.provider = .webPush
        register.endpoint = "http://127.0.0.1:9/push/bob"
        register.p256Dh = Data(repeating: 4, count: 65)
        register.authSecret = Data(count: 16)
        let request = register
        let refused = await #expect(throws: ClientError.self) {
            try await bob.withAuthenticatedConnection(account) { connection in _ = try await connection.request(.registerPushEndpoint(request)) }
        }
        let explained = FlitzClient.pushRefusal(try #require(refused), service: .webPush)
        #expect(explained.kind == .refused(.invalidArgument))
        #expect(explained.message.hasPrefix("the relay refused the push registration: ") && explained.message.contains("p256dh"), "\(explained)")
        #expect(explained.exitCode == 3)
        await relay.stop()
    }

    /// Needs a relay that registers Web Push endpoints (push-gateway with its Web Push sender wired in).
    @Test
    func registerStatusAndRemoveAgainstTheRelay() async throws {
        let relay = try await InProcessRelay(allowPrivatePushEndpoints: true)
        let (_, bob) = try await relay.aliceAndBob()
        let registered = try await bob.registerPush(.webPush(endpoint: "http://127.0.0.1:9/push/bob"))
        #expect(registered.registered && registered.service == .webPush && registered.registeredAt != nil)
        #expect(try bob.localPushRegistration()?.confirmed == true)
        let status = try await bob.pushStatus()
        #expect(status.registered && status.service == .webPush && status.wakesSent == 0 && status.droppedAt == nil)
        // APNs without credentials at the relay: refused with the clear message; the Web Push keys stay.
        let refused = await #expect(throws: ClientError.self) {
            try await bob.registerPush(.apns(token: String(repeating: "ab", count: 32), background: false))
        }
        #expect(refused?.kind == .refused(.pushProviderUnavailable))
        #expect(refused?.message.contains("this relay has no APNs credentials") == true)
        #expect(try await bob.pushStatus().service == .webPush)
        #expect(try bob.localPushRegistration()?.service == .webPush)
        try await bob.removePush()
        #expect(try await bob.pushStatus().registered == false)
        #expect(try bob.localPushRegistration() == nil)
        #expect(throws: ClientError.self) { try bob.decryptPush(Data([1])) }
        await relay.stop()
    }
}

