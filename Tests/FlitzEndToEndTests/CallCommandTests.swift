import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `listen` and `call` as RunningCommands: their `--json` events, and SIGTERM.
extension RunningCommand {
    /// The first JSON line (`--json` output) for which `matches` holds, waiting for the process to write it; nil if
    /// stdout ends first.
    func event(_ matches: ([String: Any]) -> Bool) -> [String: Any]? {
        while true {
            if let found = jsonObjects(text).first(where: matches) { return found }
            let chunk = stdout.fileHandleForReading.availableData  // blocks until data or end of file
            if chunk.isEmpty { return nil }
            text += String(decoding: chunk, as: UTF8.self)
        }
    }

    /// The first `--json` line whose "event" is `name` (and, when given, whose callID is `callID`).
    func event(_ name: String, callID: String? = nil) -> [String: Any]? {
        event { $0["event"] as? String == name && (callID == nil || $0["callID"] as? String == callID) }
    }

    /// SIGTERM (listen runs until stopped), then everything it wrote.
    func stop() -> CommandResult {
        process.terminate()
        return wait()
    }
}

/// `flitz call`, `listen --auto-answer`, `answer`, `decline`, `hangup` and `calls` as a user runs them: real
/// relay, real homes, real UDP on loopback, a real coturn (protocol/calls.md; README, "Calls").
@Suite(.serialized)
struct CallCommandTests {
    // MARK: command line

    @Test func invalidCallArgumentsAreRefusedBeforeAnythingIsSent() throws {
        let scratch = try Scratch()
        let home = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
        let stereo = scratch.path("stereo.wav")
        try TestAudio.wav(TestAudio.tones(seconds: 0.1), sampleRate: 44_100, channels: 2).write(to: stereo)
        let notWAV = scratch.path("song.mp3")
        try Data("ID3 not a wav".utf8).write(to: notWAV)
        let good = scratch.path("good.wav")
        try TestAudio.wav(TestAudio.tones(seconds: 0.1)).write(to: good)

        let cases: [([String], String)] = [
            (["call", "bob", "--ring-timeout", "0"], "--ring-timeout"),
            (["call", "bob", "--ring-timeout", "91"], "--ring-timeout"),
            (["call", "bob", "--duration", "-1"], "--duration"),
            (["call", "bob", "--duration", "nan"], "--duration"),
            (["call", "Bob!"], "invalid handle"),
            (["call", "bob", "--play", scratch.path("missing.wav").path], "cannot read"),
            (["call", "bob", "--play", stereo.path], "ffmpeg -i IN -ac 1 -ar 8000 -c:a pcm_s16le OUT.wav"),
            (["call", "bob", "--play", notWAV.path], "not a WAV file"),
            (["call", "bob", "--record", scratch.path("no/such/dir/x.wav").path], "does not exist"),
            (["call", "bob", "--play", good.path, "--record", good.path], "must not be the --play file"),
            (["listen", "--record", scratch.path("r.wav").path], "go with --auto-answer"),
            (["listen", "--auto-answer", "--notify"], "--notify"),
            (["answer", "not a call"], "CALL is a call id"),
            (["answer", "--wait", "0"], "--wait"),
            (["decline", "--wait", "100"], "--wait"),
            (["calls", "--limit", "0"], "--limit"),
        ]
        for (arguments, message) in cases {
            let result = try home.flitz(arguments)
            #expect(result.status == 64, "\(arguments): \(result)")
            #expect(result.stderr.contains(message), "\(arguments): \(result)")
        }
    }

    /// The control socket: `hangup`/`answer` reach a running `listen`, which answers for itself; without one they
    /// say so; a socket left by a killed listen is not mistaken for a running one.
    @Test func controlSocketReachesTheRunningListen() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let (alice, bob) = try SignalsCommandTests.acquainted(scratch, relay: relay)
        let socket = alice.home.appendingPathComponent("call.sock").path

        let none = try alice.flitz("hangup")
        #expect(none.status == 1, "\(none)")
        #expect(none.stderr.contains("neither `flitz listen` nor `flitz call` runs on this home"), "\(none)")

        let listen = try RunningCommand(["listen", "--json", "--home", alice.home.path], in: scratch)
        #expect(try bob.flitz("send", "alice", "sync point").status == 0)
        // The socket is bound before the relay connection, so once a message is shown it is there.
        #expect(listen.event { $0["text"] as? String == "sync point" } != nil)
        var info = stat()
        #expect(stat(socket, &info) == 0 && info.st_mode & S_IFMT == S_IFSOCK)
        #expect(info.st_mode & 0o777 == 0o600, "only the home's owner may connect")

        let hangup = try alice.flitz("hangup")
        #expect(hangup.status == 1, "\(hangup)")
        #expect(hangup.stderr.contains("no call in progress") && !hangup.stderr.contains("neither"), "the listen answered: \(hangup)")
        let answer = try alice.flitz("answer")
        #expect(answer.status == 1, "\(answer)")
        #expect(answer.stderr.contains("no incoming call is ringing"), "\(answer)")

        // One call-handling process per home: a second listen, or a call next to the listen, would take the
        // relay connection from it; both refuse before connecting (and the call before dialling: no history row).
        let second = try alice.flitz("listen")
        #expect(second.status == 1, "\(second)")
        #expect(second.stderr.contains("already listening on this home") && second.stderr.contains("already runs on this home"), "\(second)")
        let call = try alice.flitz("call", "bob")
        #expect(call.status == 2, "\(call)")
        #expect(call.stderr.contains("not calling bob") && call.stdout.isEmpty, "\(call)")
        #expect(try alice.flitz("calls").stdout.isEmpty, "no history row for a call never placed")
        #expect(try alice.flitz("hangup").stderr.contains("no call in progress"), "the first listen still serves the socket")

        // SIGKILL leaves the socket file behind; nobody serves it any more.
        listen.process.send(SIGKILL)
        _ = listen.wait()
        #expect(FileManager.default.fileExists(atPath: socket))
        let stale = try alice.flitz("hangup")
        #expect(stale.status == 1 && stale.stderr.contains("neither"), "\(stale)")

        // A new listen takes the path over; a clean stop (SIGTERM) removes its file.
        let again = try RunningCommand(["listen", "--json", "--home", alice.home.path], in: scratch)
        #expect(try bob.flitz("send", "alice", "second sync").status == 0)
        #expect(again.event { $0["text"] as? String == "second sync" } != nil)
        #expect(try alice.flitz("hangup").stderr.contains("no call in progress"))
        _ = again.stop()
    }

    // MARK: calls

    /// The issue's main test: alice plays known tones, bob auto-answers and records; ≥ 95 % of the frames arrive
    /// intact after the µ-law round trip; both histories agree; the relay's files hold nothing it must not see.
    @Test func directCallOverLoopback() throws {
        let scratch = try Scratch()
        let database = scratch.path("relay.sqlite"), log = scratch.path("relay.log")
        let relay = try RelayProcess(database: database, log: log)
        defer { relay.stop() }
        let (alice, bob) = try SignalsCommandTests.acquainted(scratch, relay: relay)
        let result = try Self.tonesCall(alice: alice, bob: bob, scratch: scratch, relayOnly: false)
        #expect(result.alicePath["path"] as? String == "direct", "\(result.alicePath)")
        #expect(result.bobPath["path"] as? String == "direct", "\(result.bobPath)")
        result.report("direct")
        relay.stop()
        let findings = LeakSearch.findings(in: databaseFiles(database) + [log], result.needles)
        #expect(findings.isEmpty, "the relay holds what it must never see: \(findings)")
    }

    /// The same call with host candidates off on both sides: media only through a real coturn on loopback, with
    /// the credentials the relay provisions from the shared secret.
    @Test func relayOnlyCallThroughCoturn() throws {
        let scratch = try Scratch()
        let coturn = try Coturn(in: scratch)
        defer { coturn.stop() }
        let database = scratch.path("relay.sqlite"), log = scratch.path("relay.log")
        let relay = try RelayProcess(database: database, log: log, arguments: coturn.relayArguments)
        defer { relay.stop() }
        let (alice, bob) = try SignalsCommandTests.acquainted(scratch, relay: relay)
        let result = try Self.tonesCall(alice: alice, bob: bob, scratch: scratch, relayOnly: true)
        #expect(result.alicePath["path"] as? String == "turn", "\(result.alicePath)")
        #expect(result.bobPath["path"] as? String == "turn", "\(result.bobPath)")
        result.report("through TURN")
        relay.stop()
        coturn.stop()
        let relayFindings = LeakSearch.findings(in: databaseFiles(database) + [log], result.needles)
        #expect(relayFindings.isEmpty, "the relay holds what it must never see: \(relayFindings)")
        // coturn sees addresses (it relays), never keys.
        let keyNeedles = result.needles.filter { $0.label.hasPrefix("SRTP") }
        #expect(LeakSearch.findings(in: [coturn.log], keyNeedles).isEmpty)
    }

    /// Bob declines the first call from another terminal (`flitz decline` through his listen's socket): alice exits
    /// 1, both record "declined". He answers the second with `flitz answer` and ends it with `flitz hangup`: alice
    /// exits 0.
    @Test func declineThenAnswerAndHangUpFromAnotherTerminal() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let (alice, bob) = try SignalsCommandTests.acquainted(scratch, relay: relay)
        let listen = try RunningCommand(["listen", "--json", "--home", bob.home.path], in: scratch)
        defer { _ = listen.stop() }
        try Self.sync(from: alice, to: [listen], text: "ready for calls")

        let first = try RunningCommand(["call", "bob", "--json", "--ring-timeout", "60", "--home", alice.home.path], in: scratch)
        let incoming = try #require(listen.event("incoming"))
        let callID = try #require(incoming["callID"] as? String)
        #expect(incoming["peer"] as? String == "alice")
        let declined = try bob.flitz("decline")
        #expect(declined.status == 0, "\(declined)")
        let firstResult = first.wait()
        #expect(firstResult.status == 1, "\(firstResult)")
        #expect(jsonObjects(firstResult.stdout).last { $0["event"] as? String == "ended" }?["outcome"] as? String == "declined", "\(firstResult)")
        #expect(listen.event("ended", callID: callID)?["outcome"] as? String == "declined")

        let second = try RunningCommand(["call", "bob", "--json", "--home", alice.home.path], in: scratch)
        let secondID = try #require(listen.event { $0["event"] as? String == "incoming" && $0["callID"] as? String != callID }?["callID"] as? String)
        let answered = try bob.flitz("answer", String(secondID.prefix(8)))
        #expect(answered.status == 0, "\(answered)")
        #expect(listen.event("connected", callID: secondID) != nil)
        #expect(second.event("connected") != nil)
        let hungUp = try bob.flitz("hangup")
        #expect(hungUp.status == 0, "\(hungUp)")
        let secondResult = second.wait()
        #expect(secondResult.status == 0, "\(secondResult)")
        #expect(listen.event("ended", callID: secondID)?["outcome"] as? String == "answered")

        let aliceHistory = jsonObjects(try alice.flitz("calls", "--json").stdout)
        let bobHistory = jsonObjects(try bob.flitz("calls", "--json").stdout)
        #expect(aliceHistory.map { $0["outcome"] as? String } == ["answered", "declined"], "newest first: \(aliceHistory)")
        #expect(bobHistory.map { $0["outcome"] as? String } == ["answered", "declined"], "\(bobHistory)")
        #expect(aliceHistory.allSatisfy { $0["direction"] as? String == "outgoing" && $0["peer"] as? String == "bob" })
        #expect(bobHistory.allSatisfy { $0["direction"] as? String == "incoming" && $0["peer"] as? String == "alice" })
    }

    /// Exit codes and text of calls that never connect: `--relay-only` on a relay without TURN is a failure (2);
    /// an outgoing call hung up here while it rings prints "cancelled" (exit 1), its history outcome stays missed.
    @Test func callingAnUnknownHandleIsRefusedBeforeAnythingRings() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let (alice, _) = try SignalsCommandTests.acquainted(scratch, relay: relay)
        let unknown = try alice.flitz("call", "nosuchuser")
        #expect(unknown.status == 3, "\(unknown)")
        #expect(unknown.stderr.contains("no such handle nosuchuser"), "\(unknown)")
        #expect(unknown.stdout.isEmpty, "nothing is shown as calling: \(unknown)")
        #expect(try alice.flitz("calls", "--json").stdout.isEmpty, "no history row for a typo")
    }

    @Test func relayOnlyWithoutTURNFailsAndACancelledCallSaysSo() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let (alice, _) = try SignalsCommandTests.acquainted(scratch, relay: relay)

        let unused = scratch.path("never.wav")
        let relayOnly = try alice.flitz("call", "bob", "--relay-only", "--record", unused.path)
        #expect(relayOnly.status == 2, "\(relayOnly)")
        #expect(relayOnly.stderr.contains("relay-only mode needs a TURN server"), "\(relayOnly)")
        #expect(!FileManager.default.fileExists(atPath: unused.path), "no empty recording is left behind")

        // Nobody listens on bob's side: the relay holds the offer and alice's call rings until she hangs up.
        let call = try RunningCommand(["call", "bob", "--home", alice.home.path], in: scratch)
        while !call.text.contains("ringing") {
            let chunk = call.stdout.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            call.text += String(decoding: chunk, as: UTF8.self)
        }
        let hangup = try alice.flitz("hangup")
        #expect(hangup.status == 0, "\(hangup)")
        let result = call.wait()
        #expect(result.status == 1, "\(result)")
        #expect(result.lines.contains("ended: cancelled") && !result.stdout.contains("no answer"), "\(result)")
        #expect(jsonObjects(try alice.flitz("calls", "--json").stdout).first?["outcome"] as? String == "missed")
    }

    /// A call that arrives during another is answered busy; bob's listen names it ("missed call from carol (you
    /// were in a call)") so the line does not read as the end of the call in progress.
    @Test func aBusyMissedCallNamesTheCaller() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let (alice, bob) = try SignalsCommandTests.acquainted(scratch, relay: relay)
        let carol = User(name: "carol", home: scratch.path("carol"), scratch: scratch)
        #expect(try carol.flitz("init", "--relay", relay.url, "--handle", "carol").status == 0)
        #expect(try carol.flitz("send", "bob", "hi bob").status == 0)
        let listen = try RunningCommand(["listen", "--auto-answer", "--home", bob.home.path], in: scratch)
        defer { _ = listen.stop() }
        #expect(try alice.flitz("send", "bob", "ready").status == 0)
        #expect(listen.line(startingWith: "alice: ready") != nil)

        let first = try RunningCommand(["call", "bob", "--json", "--duration", "8", "--home", alice.home.path], in: scratch)
        #expect(first.event("connected") != nil)
        let busy = try carol.flitz("call", "bob", "--json")
        #expect(busy.status == 1, "\(busy)")
        #expect(jsonObjects(busy.stdout).last { $0["event"] as? String == "ended" }?["outcome"] as? String == "busy", "\(busy)")
        #expect(listen.line(startingWith: "missed call from carol (you were in a call) (id ") != nil)
        #expect(first.wait().status == 0)
    }

    /// Without a running listen, `flitz decline` and `flitz answer` connect themselves and take the offer the relay
    /// holds for the device (delivered right after authentication).
    @Test func declineAndAnswerTheHeldOfferWithoutListen() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let (alice, bob) = try SignalsCommandTests.acquainted(scratch, relay: relay)

        let first = try RunningCommand(["call", "bob", "--json", "--home", alice.home.path], in: scratch)
        #expect(first.event("ringing") != nil, "the relay took the offer")
        let declined = try bob.flitz("decline")
        #expect(declined.status == 0 && declined.lines.last?.hasPrefix("declined the call from alice") == true, "\(declined)")
        #expect(first.wait().status == 1)

        let second = try RunningCommand(["call", "bob", "--json", "--duration", "2", "--home", alice.home.path], in: scratch)
        #expect(second.event("ringing") != nil)
        let answered = try bob.flitz("answer", "alice", "--json")
        #expect(answered.status == 0, "\(answered)")
        #expect(jsonObjects(answered.stdout).contains { $0["event"] as? String == "connected" }, "\(answered)")
        #expect(jsonObjects(answered.stdout).last { $0["event"] as? String == "ended" }?["outcome"] as? String == "answered", "\(answered)")
        #expect(second.wait().status == 0)
        #expect(jsonObjects(try bob.flitz("calls", "--json").stdout).map { $0["outcome"] as? String } == ["answered", "declined"])
    }

    /// Bob has two devices; the laptop auto-answers, the phone stops ringing with "answered elsewhere".
    @Test func answeredElsewhereWithTwoCalleeDevices() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let (alice, bob) = try SignalsCommandTests.acquainted(scratch, relay: relay)
        let laptop = User(name: "bob2", home: scratch.path("bob2"), scratch: scratch)
        let link = try RunningCommand(["devices", "link", "--yes", "--timeout", "60", "--home", bob.home.path], in: scratch)
        let codeLine = try #require(link.line(startingWith: "pairing code: "), "\(link.wait())")
        let joined = try laptop.flitz("init", "--link", String(codeLine.dropFirst("pairing code: ".count)), "--relay", relay.url, "--timeout", "60")
        #expect(joined.status == 0, "\(joined)")
        #expect(link.wait().status == 0)
        // bob's device list gained a device: alice's next send stops (exit 4) until she accepts it.
        #expect(try alice.flitz("send", "bob", "a new device?").status == 4)
        #expect(try alice.flitz("trust", "bob").status == 0)

        let phone = try RunningCommand(["listen", "--json", "--home", bob.home.path], in: scratch)
        defer { _ = phone.stop() }
        let computer = try RunningCommand(["listen", "--json", "--auto-answer", "--home", laptop.home.path], in: scratch)
        defer { _ = computer.stop() }
        try Self.sync(from: alice, to: [phone, computer], text: "two devices ready")

        let call = try runProcess(Binaries.flitz, ["call", "bob", "--json", "--duration", "2", "--home", alice.home.path], in: scratch)
        #expect(call.status == 0, "\(call)")
        let callID = try #require(jsonObjects(call.stdout).first { $0["event"] as? String == "calling" }?["callID"] as? String, "\(call)")
        #expect(computer.event("ended", callID: callID)?["outcome"] as? String == "answered")
        #expect(phone.event("incoming", callID: callID) != nil, "the phone rang too")
        #expect(phone.event("ended", callID: callID)?["outcome"] as? String == "answered_elsewhere")
        #expect(jsonObjects(try bob.flitz("calls", "--json").stdout).first?["outcome"] as? String == "answered_elsewhere")
        #expect(jsonObjects(try laptop.flitz("calls", "--json").stdout).first?["outcome"] as? String == "answered")
        #expect(jsonObjects(try alice.flitz("calls", "--json").stdout).first?["outcome"] as? String == "answered")
    }

    // MARK: helpers

    /// Sends a message and waits until every listen showed it: they are connected from then on.
    static func sync(from sender: User, to listens: [RunningCommand], text: String) throws {
        let recipient = "bob"
        #expect(try sender.flitz("send", recipient, text).status == 0)
        for listen in listens { #expect(listen.event { $0["text"] as? String == text } != nil, "a listen did not show \(text)") }
    }

    struct TonesCall {
        let alicePath: [String: Any]
        let bobPath: [String: Any]
        let comparison: FrameComparison
        let needles: [LeakSearch.Needle]

        func report(_ name: String) {
            print("call \(name): alice setup \(alicePath["setupMs"] ?? "?") ms, bob \(bobPath["setupMs"] ?? "?") ms; \(comparison)")
        }
    }

    /// alice calls bob playing 4 s of tones for 6 s; bob's listen auto-answers and records. Checks exit codes, the
    /// recording, both histories; returns the connected events and what the relay must not have seen.
    static func tonesCall(alice: User, bob: User, scratch: Scratch, relayOnly: Bool) throws -> TonesCall {
        let tones = TestAudio.tones(seconds: 4)
        let play = scratch.path("tones.wav"), taken = scratch.path("bob-heard.wav"), record = scratch.path("bob-heard (1).wav")
        try TestAudio.wav(tones).write(to: play)
        // A recording never overwrites a file: bob-heard.wav exists, so the call is recorded to "bob-heard (1).wav".
        try Data("keep me".utf8).write(to: taken)
        let keyLog = scratch.path("keys.log")
        let only = relayOnly ? ["--relay-only"] : []
        let listen = try RunningCommand(["listen", "--json", "--auto-answer", "--record", taken.path, "--home", bob.home.path] + only, in: scratch)
        try sync(from: alice, to: [listen], text: "call me")

        let call = try runProcess(
            Binaries.flitz, ["call", "bob", "--json", "--play", play.path, "--duration", "6", "--home", alice.home.path] + only,
            environment: ["FLITZ_TEST_CALL_KEYLOG": keyLog.path], in: scratch)
        #expect(call.status == 0, "\(call)")
        let events = jsonObjects(call.stdout)
        let alicePath = try #require(events.first { $0["event"] as? String == "connected" }, "\(call)")
        let aliceEnd = try #require(events.first { $0["event"] as? String == "ended" }, "\(call)")
        #expect(aliceEnd["outcome"] as? String == "answered", "\(call)")
        let callID = try #require(aliceEnd["callID"] as? String)
        #expect(listen.event("recording")?["path"] as? String == record.path)
        let bobPath = try #require(listen.event("connected", callID: callID))
        // "ended" is printed after the recording is complete.
        #expect(listen.event("ended", callID: callID)?["outcome"] as? String == "answered")
        let listenOutput = listen.stop()

        #expect(try Data(contentsOf: taken) == Data("keep me".utf8), "the existing file is untouched")
        let recorded = try TestAudio.samples(ofWAV: record)
        let comparison = FrameComparison.align(sent: tones, recorded: recorded)
        #expect(comparison.fraction >= 0.95, "\(comparison); listen: \(listenOutput)")

        let aliceCalls = jsonObjects(try alice.flitz("calls", "--json").stdout)
        let bobCalls = jsonObjects(try bob.flitz("calls", "--json").stdout)
        #expect(aliceCalls.count == 1 && bobCalls.count == 1, "\(aliceCalls) \(bobCalls)")
        if let a = aliceCalls.first, let b = bobCalls.first {
            #expect(a["callID"] as? String == callID && b["callID"] as? String == callID)
            #expect(a["direction"] as? String == "outgoing" && b["direction"] as? String == "incoming")
            #expect(a["outcome"] as? String == "answered" && b["outcome"] as? String == "answered")
            let aliceSeconds = a["durationSeconds"] as? Double ?? -1, bobSeconds = b["durationSeconds"] as? Double ?? -100
            #expect(aliceSeconds >= 5.5 && aliceSeconds < 10, "alice: \(a)")
            // Each side stamps the end when it learns of it, and the hangup crosses the relay: a loaded machine
            // (CI saw 1.85 s) delays bob's view, so "matching" allows a few seconds, not a fraction of one.
            #expect(abs(aliceSeconds - bobSeconds) <= 3, "matching durations: \(a) \(b)")
        }

        // What the relay must never hold: SDP-like text, both locked media addresses, this machine's other
        // addresses (host candidates), the SRTP master keys and salts (the debug key log of both sides).
        var needles = LeakSearch.sdpNeedles
        for path in [alicePath, bobPath] {
            if let peer = path["peer"] as? String, let colon = peer.lastIndex(of: ":"), let port = UInt16(peer[peer.index(after: colon)...]) {
                needles += LeakSearch.addressNeedles(String(peer[..<colon]), port: port)
            }
        }
        needles += nonLoopbackIPv4Addresses().map { LeakSearch.Needle("host address \($0)", text: $0) }
        let keyLines = ((try? String(contentsOf: keyLog, encoding: .utf8)) ?? "").split(separator: "\n")
        #expect(!keyLines.isEmpty, "the debug build logs the call's keys for this test")
        for line in keyLines {
            let fields = line.split(separator: " ")
            for field in fields.dropFirst() { if let bytes = Data(hex: String(field)) { needles += LeakSearch.keyNeedles("SRTP \(fields[0])", bytes) } }
        }
        return TonesCall(alicePath: alicePath, bobPath: bobPath, comparison: comparison, needles: needles)
    }
}

extension User {
    @discardableResult
    func flitz(_ arguments: [String]) throws -> CommandResult {
        try runProcess(Binaries.flitz, arguments + ["--home", home.path], in: scratch)
    }
}

extension Data {
    /// Lowercase or uppercase hex; nil when not an even number of hex digits.
    init?(hex: String) {
        guard hex.count % 2 == 0, !hex.isEmpty, hex.allSatisfy(\.isHexDigit) else { return nil }
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        self.init(bytes)
    }
}
