import Foundation
import Hummingbird
import Logging
import NIOCore
import Testing

/// Runs `flitz` with extra environment variables (e.g. `FLITZ_TEST_CLOCK_OFFSET`).
func flitz(_ user: User, _ arguments: [String], environment: [String: String] = [:]) throws -> CommandResult {
    try runProcess(Binaries.flitz, arguments + ["--home", user.home.path], environment: environment, in: user.scratch)
}

/// A local Web Push service (RFC 8030) stand-in: accepts `POST /push/NAME` with `201 Created` and hands
/// over each body, as a UnifiedPush distributor would receive it.
final class WebPushReceiver: Sendable {
    let bodies: AsyncStream<Data>
    let port: Int
    private let task: Task<Void, any Error>

    init() async throws {
        let (bodies, continuation) = AsyncStream<Data>.makeStream()
        let (ports, portContinuation) = AsyncStream<Int>.makeStream()
        let router = Router()
        router.post("/push/:name") { request, _ -> Response in
            let buffer = try await request.body.collect(upTo: 65_536)
            continuation.yield(Data(buffer.readableBytesView))
            return Response(status: .created)
        }
        var logger = Logger(label: "webpush-receiver")
        logger.logLevel = .critical  // stopping by cancellation is not an error worth printing
        let application = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in portContinuation.yield(channel.localAddress?.port ?? 0) }, logger: logger)
        task = Task { try await application.runService(gracefulShutdownSignals: []) }
        var iterator = ports.makeAsyncIterator()
        self.port = await iterator.next() ?? 0
        self.bodies = bodies
    }

    func stop() { task.cancel() }
}


/// `flitz notifications ...`, `flitz listen --notify` and `flitz push ...` as a user runs them.
@Suite(.serialized)
struct PushCommandTests {
    @Test func notificationSettingsAndListenNotify() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"), arguments: ["--push-allow-private-endpoints", "on"])
        defer { relay.stop() }
        let alice = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
        let carol = User(name: "carol", home: scratch.path("carol"), scratch: scratch)
        for user in [alice, bob, carol] {
            #expect(try user.flitz("init", "--relay", relay.url, "--handle", user.name).status == 0)
        }
        // Accepted before they write, so their messages are no message requests (which are never notified).
        #expect(try bob.flitz("accept", "alice").lines == ["accepted alice"])
        #expect(try bob.flitz("accept", "carol").lines == ["accepted carol"])
        #expect(try bob.flitz("accept", "carol").status == 1, "already accepted")

        // Settings: shown, checked (64 for a malformed command line, 1 for what the client refuses).
        let muted = try bob.flitz("notifications", "mute", "alice", "--for", "8h")
        #expect(muted.status == 0, "\(muted)")
        #expect(muted.lines.first?.hasPrefix("muted alice until ") == true, "\(muted)")
        #expect(try bob.flitz("notifications", "mute", "carol").lines == ["muted carol until unmuted"])
        #expect(try bob.flitz("notifications", "keywords", "add", "dinner").lines == ["keyword: dinner"])
        #expect(try bob.flitz("notifications", "keywords").lines == ["dinner"])
        let shown = try bob.flitz("notifications", "show")
        #expect(shown.lines.count == 3, "\(shown)")
        #expect(shown.lines[0].hasPrefix("muted: alice until "))
        #expect(Array(shown.lines.dropFirst()) == ["muted: carol until unmuted", "keyword: dinner"])
        #expect(try bob.flitz("notifications").lines == shown.lines, "show is the default")
        #expect(try bob.flitz("notifications", "mute", "carol", "--for", "5x").status == 64)
        #expect(try bob.flitz("notifications", "mute", "carol", "--until", "tomorrow").status == 64)
        #expect(try bob.flitz("notifications", "mute", "carol", "--for", "1h", "--until", "2030-01-01T00:00:00Z").status == 64)
        let past = try bob.flitz("notifications", "mute", "carol", "--until", "2001-01-01T00:00:00Z")
        #expect(past.status == 1 && past.stderr.contains("in the future"), "\(past)")
        #expect(try bob.flitz("notifications", "keywords", "add", "two words").status == 1)

        // Nine hours on (the debug build's clock offset), alice's mute has ended; carol's has no end.
        let later = try flitz(bob, ["notifications", "show", "--json"], environment: ["FLITZ_TEST_CLOCK_OFFSET": "32400"])
        #expect(later.lines == [#"{"keywords":["dinner"],"mutes":[{"handle":"carol","until":null}]}"#], "\(later)")

        // Received while muted: carol's plain message is not shown, her keyword message is, alice's message shows.
        #expect(try carol.flitz("send", "bob", "muted chatter").status == 0)
        #expect(try carol.flitz("send", "bob", "Dinner at 8?").status == 0)
        #expect(try bob.flitz("notifications", "unmute", "alice").lines == ["unmuted alice"])
        #expect(try bob.flitz("notifications", "unmute", "alice").status == 1, "not muted any more")
        #expect(try alice.flitz("send", "bob", "hello").status == 0)
        let listen = try RunningCommand(["listen", "--notify", "--home", bob.home.path], in: scratch)
        DispatchQueue.global().asyncAfter(deadline: .now() + 90) { [process = listen.process] in if process.isRunning { process.terminate() } }
        #expect(listen.line(startingWith: "body: hello") != nil)
        listen.process.terminate()
        let first = listen.wait()
        #expect(first.lines == ["title: carol (keyword: dinner)", "body: Dinner at 8?", "title: alice", "body: hello"], "\(first)")
        // Notified is not read: `receive` still shows every message, the muted one too.
        #expect(try bob.flitz("receive").lines == ["carol: muted chatter", "carol: Dinner at 8?", "alice: hello"])

        // Several messages of one batch (bob offline, so the reconnect drain) become one summary.
        #expect(try alice.flitz("send", "bob", "one").status == 0)
        #expect(try bob.flitz("notifications", "unmute", "carol").status == 0)
        #expect(try carol.flitz("send", "bob", "two").status == 0)
        #expect(try alice.flitz("send", "bob", "three").status == 0)
        let grouped = try RunningCommand(["listen", "--notify", "--json", "--home", bob.home.path], in: scratch)
        DispatchQueue.global().asyncAfter(deadline: .now() + 90) { [process = grouped.process] in if process.isRunning { process.terminate() } }
        let summary = try #require(grouped.line(startingWith: "{"))
        grouped.process.terminate()
        _ = grouped.wait()
        let object = try #require(try JSONSerialization.jsonObject(with: Data(summary.utf8)) as? [String: Any])
        #expect(object["title"] as? String == "Flitz")
        #expect(object["body"] as? String == "3 new messages from alice, carol")
        #expect(object["from"] as? [String] == ["alice", "carol"])
        #expect(object["count"] as? Int == 3)
        #expect((object["ids"] as? [String])?.count == 3)

        #expect(try bob.flitz("notifications", "keywords", "remove", "DINNER").status == 0)
        #expect(try bob.flitz("notifications", "keywords", "remove", "dinner").status == 1)
        // The relay's database and log never saw a setting.
        let files = [relay.log, scratch.path("relay.sqlite"), scratch.path("relay.sqlite-wal")]
        #expect(anyFile(files, contains: "dinner") == nil)
    }

    @Test func pushDecryptAndRegisterErrors() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"), arguments: ["--push-allow-private-endpoints", "on"])
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
        #expect(try bob.flitz("init", "--relay", relay.url, "--handle", "bob").status == 0)
        let garbage = scratch.path("garbage.bin")
        try Data(repeating: 7, count: 150).write(to: garbage)

        // No keys yet; no body at all.
        let noKeys = try bob.flitz("push", "decrypt", garbage.path)
        #expect(noKeys.status == 1 && noKeys.stderr.contains("no Web Push keys"), "\(noKeys)")
        let empty = try bob.flitz("push", "decrypt")
        #expect(empty.status == 1 && empty.stderr.contains("no push message body"), "\(empty)")
        #expect(try bob.flitz("push", "decrypt", scratch.path("missing").path).status == 1)

        // Malformed command lines: exit 64, nothing sent.
        #expect(try bob.flitz("push", "register").status == 64)
        #expect(try bob.flitz("push", "register", "--endpoint", "http://push.example/x").status == 64)
        #expect(try bob.flitz("push", "register", "--endpoint", "https://push.example/x", "--fcm-token", "t").status == 64)
        #expect(try bob.flitz("push", "register", "--apns-token", "xyz").status == 64)
        #expect(try bob.flitz("push", "register", "--fcm-token", "t", "--background").status == 64)

        // The relay's view: nothing registered; no APNs credentials (exit 3, said plainly); remove is idempotent.
        let status = try bob.flitz("push", "status")
        #expect(status.status == 0 && status.lines == ["registered: no"], "\(status)")
        let json = try bob.flitz("push", "status", "--json")
        #expect(
            json.lines == [#"{"droppedAt":null,"lastFailure":null,"lastWakeAt":null,"provider":null,"registered":false,"registeredAt":null,"wakesSent":0}"#],
            "\(json)")
        let apns = try bob.flitz("push", "register", "--apns-token", String(repeating: "ab", count: 32))
        #expect(apns.status == 3 && apns.stderr.contains("this relay has no APNs credentials"), "\(apns)")
        #expect(try bob.flitz("push", "remove").lines == ["removed (this device had no push registration)"])

        // With the relay gone the registration cannot be confirmed (exit 2), but its keys are kept: a body
        // that is not for them still does not decrypt, with a clear message.
        relay.stop()
        let unreachable = try bob.flitz("push", "register", "--endpoint", "http://127.0.0.1:9/push/bob")
        #expect(unreachable.status == 2, "\(unreachable)")
        let notOurs = try bob.flitz("push", "decrypt", garbage.path)
        #expect(notOurs.status == 1 && notOurs.stderr.contains("does not decrypt with this device's Web Push keys"), "\(notOurs)")
        #expect(notOurs.stdout.isEmpty)
        #expect(try bob.flitz("push", "status").status == 2)
    }

    /// Needs the relay's push gateway (branch push-gateway): register, a real wake-up through a local Web Push
    /// receiver, `push decrypt` of its body, status, remove.
    @Test
    func registerWakeDecryptStatusRemove() async throws {
        let scratch = try Scratch()
        let receiver = try await WebPushReceiver()
        defer { receiver.stop() }
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"), arguments: ["--push-allow-private-endpoints", "on"])
        defer { relay.stop() }
        let alice = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
        #expect(try alice.flitz("init", "--relay", relay.url, "--handle", "alice").status == 0)
        #expect(try bob.flitz("init", "--relay", relay.url, "--handle", "bob").status == 0)
        let registered = try bob.flitz("push", "register", "--endpoint", "http://127.0.0.1:\(receiver.port)/push/bob")
        #expect(registered.status == 0 && registered.lines.first?.hasPrefix("registered webpush") == true, "\(registered)")
        let status = try bob.flitz("push", "status")
        #expect(Array(status.lines.prefix(2)) == ["registered: yes", "provider: webpush"], "\(status)")
        let apns = try bob.flitz("push", "register", "--apns-token", String(repeating: "ab", count: 32))
        #expect(apns.status == 3 && apns.stderr.contains("this relay has no APNs credentials"), "\(apns)")

        #expect(try alice.flitz("send", "bob", "wake up").status == 0)
        var bodies = receiver.bodies.makeAsyncIterator()
        let body = try #require(await bodies.next())
        let file = scratch.path("wake.bin")
        try body.write(to: file)
        let opened = try bob.flitz("push", "decrypt", file.path)
        #expect(opened.status == 0 && opened.lines == [#"{"v":1,"wake":"urgent"}"#], "\(opened)")
        #expect(!opened.stdout.contains("alice") && !opened.stdout.contains("wake up"))
        let json = try bob.flitz("push", "status", "--json")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(object["registered"] as? Bool == true && object["provider"] as? String == "webpush" && object["wakesSent"] as? Int == 1)
        #expect(try bob.flitz("push", "remove").lines == ["removed"])
        #expect(try bob.flitz("push", "status").lines.first == "registered: no")
        #expect(try bob.flitz("push", "decrypt", file.path).status == 1, "keys forgotten with the registration")
    }
}
