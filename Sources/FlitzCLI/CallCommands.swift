import ArgumentParser
import FlitzClient
import Foundation

// `flitz call`, `answer`, `decline`, `hangup`, `calls` and the call options of `listen` (protocol/calls.md 8;
// README, "Calls"). The commands parse and check their arguments here; CallRunner.swift drives FlitzClient's
// CallController and prints the progress; CallControl.swift is the Unix socket between the processes.

/// Exit statuses of `flitz call` (and of `flitz answer` running the call itself).
enum CallExit {
    /// Answered, and ended normally (either side hung up).
    static let answered: Int32 = 0
    /// No answer, declined or busy.
    static let notAnswered: Int32 = 1
    /// Failure: media never connected or stopped, the relay unreachable, a local error.
    static let failed: Int32 = 2
}

/// --play and --record, shared by `call`, `answer` and `listen`.
struct CallAudioArguments: ParsableArguments {
    @Option(help: "Send this WAV (16-bit PCM, mono, 8000 Hz); without it, silence.") var play: String?
    @Option(help: "Write what the other side sends to this WAV (16-bit PCM, mono, 8000 Hz), complete when the call ends.")
    var record: String?
    @Flag(name: .customLong("relay-only"), help: "Offer only the TURN relayed candidate and send media only through TURN (hides this device's addresses).")
    var relayOnly = false

    /// Checks the files before anyone is rung: a play file that cannot be sent is refused now, not after the answer.
    func validate() throws {
        if let play { try CallWAV.checkPlayable(play) }
        if let record {
            let url = URL(fileURLWithPath: record)
            var isDirectory: ObjCBool = false
            let parent = url.deletingLastPathComponent().path
            guard FileManager.default.fileExists(atPath: parent, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ValidationError("--record: the directory \(parent) does not exist")
            }
            guard !(FileManager.default.fileExists(atPath: record, isDirectory: &isDirectory) && isDirectory.boolValue) else {
                throw ValidationError("--record: \(record) is a directory")
            }
            if let play, URL(fileURLWithPath: play).standardizedFileURL == url.standardizedFileURL {
                throw ValidationError("--record must not be the --play file")
            }
        }
    }

    /// Absolute paths (the control socket hands them to another process, whose working directory differs).
    var playURL: URL? { play.map { URL(fileURLWithPath: $0).standardizedFileURL } }
    var recordURL: URL? { record.map { URL(fileURLWithPath: $0).standardizedFileURL } }
}

/// Parses seconds given on the command line: a positive finite number, at most `maximum`.
func parseSeconds(_ value: Double, option: String, maximum: Double) throws -> Duration {
    guard value.isFinite, value > 0, value <= maximum else {
        throw ValidationError("\(option) must be a number of seconds above 0 and at most \(Int(maximum))")
    }
    return .milliseconds(Int64((value * 1000).rounded()))
}

struct CallCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "call",
        abstract: "Call a contact: ring every device of theirs, play and record audio, print the progress.",
        discussion: """
            Prints calling, ringing, answered, connected (with the media path and the setup time: offer sent to \
            the first authenticated media packet, so it includes the ringing), ended (outcome and duration) and the media statistics. The call \
            ends after --duration seconds of being answered, when the other side hangs up, on `flitz hangup` from \
            another terminal, or on Ctrl-C (before an answer: "ended: cancelled"). Refused before dialling while a \
            `flitz listen` or `flitz call` runs on this home. Exit status: 0 answered and ended normally; 1 no answer, \
            declined, busy or cancelled; 2 failure (media did not connect, the relay unreachable, --relay-only without \
            a TURN server, another listen or call on this home); 3 refused by the relay (no such handle); 64 invalid \
            command line.
            """)
    @OptionGroup var options: CommonOptions
    @Argument(help: "The contact's handle.") var handle: String
    @OptionGroup var audio: CallAudioArguments
    @Option(help: "Hang up this many seconds after the answer (default: stay until either side hangs up).") var duration: Double?
    @Option(name: .customLong("ring-timeout"), help: "Give up after ringing this many seconds (1 to 90).") var ringTimeout: Double = 60
    @Flag(help: "One JSON object per line: event (calling, ringing, answered, connected, ended, statistics) and its fields.")
    var json = false

    func validate() throws {
        guard CallHandleSyntax.isPlausible(handle) else { throw ValidationError("invalid handle \"\(handle)\"") }
        if let duration { _ = try parseSeconds(duration, option: "--duration", maximum: 86_400) }
        // The offer expires after at most 90 s (protocol/calls.md 10): nobody rings longer.
        _ = try parseSeconds(ringTimeout, option: "--ring-timeout", maximum: 90)
    }

    func run() async throws {
        let client = try options.client()
        let status = try await CallRunner(client: client, json: json).placeCall(
            to: handle, audio: audio, duration: try duration.map { try parseSeconds($0, option: "--duration", maximum: 86_400) },
            ringTimeout: try parseSeconds(ringTimeout, option: "--ring-timeout", maximum: 90))
        if status != CallExit.answered { throw ExitCode(status) }
    }
}

/// CALL as `answer`, `decline` and `hangup` take it.
struct CallSelector: ParsableArguments {
    @Argument(help: "Which call: its id (or a unique prefix of at least 4 hex digits) or the other person's handle; may be omitted when only one call qualifies.")
    var call: String?

    func validate() throws { try Self.check(call) }

    static func check(_ call: String?) throws {
        guard let call else { return }
        let isHex = call.count >= 4 && call.count <= 32 && call.allSatisfy(\.isHexDigit)
        guard isHex || CallHandleSyntax.isPlausible(call) else {
            throw ValidationError("CALL is a call id (4 to 32 hex digits) or a handle, not \"\(call)\"")
        }
    }
}

struct Answer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Answer a ringing call.",
        discussion: """
            When `flitz listen` (or `flitz call`) runs on this home, asks it over the home's control socket to \
            answer: that process then plays, records and prints the call. Otherwise connects itself, takes the \
            offer the relay holds for this device (within --wait seconds), answers it and stays in the call until \
            either side hangs up (or --duration); exit status then as for `flitz call`.
            """)
    @OptionGroup var options: CommonOptions
    @OptionGroup var selector: CallSelector
    @OptionGroup var audio: CallAudioArguments
    @Option(help: "Without a running listen: hang up this many seconds after answering.") var duration: Double?
    @Option(help: "Without a running listen: seconds to wait for a ringing call to arrive (1 to 90).") var wait: Double = 5
    @Flag(help: "Without a running listen: one JSON object per line, as `flitz call --json`.") var json = false

    func validate() throws {
        if let duration { _ = try parseSeconds(duration, option: "--duration", maximum: 86_400) }
        _ = try parseSeconds(wait, option: "--wait", maximum: 90)
    }

    func run() async throws {
        let request = CallControl.Request(
            command: .answer, call: selector.call, play: audio.playURL?.path, record: audio.recordURL?.path, relayOnly: audio.relayOnly)
        if try forwardToOwner(request, options: options) { return }
        let client = try options.client()
        let status = try await CallRunner(client: client, json: json).answerHeldCall(
            selector: selector.call, audio: audio, duration: try duration.map { try parseSeconds($0, option: "--duration", maximum: 86_400) },
            wait: try parseSeconds(wait, option: "--wait", maximum: 90))
        if status != CallExit.answered { throw ExitCode(status) }
    }
}

/// The call side of `flitz decline` (SafetyCommands.swift's `DeclineRequest` is the command: with a HANDLE and no
/// ringing call from it, it declines that handle's message request as before).
struct CallDeclineArguments: ParsableArguments {
    @Option(help: "Decline this ringing call: its id (or a unique prefix of at least 4 hex digits) or the caller's handle.")
    var call: String?
    @Option(help: "Without a running listen: seconds to wait for a ringing call to arrive (1 to 90).") var wait: Double = 5

    func validate() throws {
        try CallSelector.check(call)
        _ = try parseSeconds(wait, option: "--wait", maximum: 90)
    }

    /// `flitz decline [--call CALL]`: through the running listen, else by taking the held offer.
    func declineCall(options: CommonOptions) async throws {
        if try forwardToOwner(CallControl.Request(command: .decline, call: call), options: options) { return }
        let client = try options.client()
        let message = try await CallRunner(client: client, json: false).declineHeldCall(
            selector: call, wait: try parseSeconds(wait, option: "--wait", maximum: 90))
        printLine(message)
    }

    /// `flitz decline HANDLE` while HANDLE's call rings in the listen (or call) running on this home: declines the
    /// call and returns true, leaving the message request alone. False when nothing of HANDLE's rings there.
    static func declineRingingCall(from handle: String, options: CommonOptions) throws -> Bool {
        let path = CallControl.socketPath(home: options.homeURL)
        guard let reply = try? CallControl.send(CallControl.Request(command: .decline, call: handle), to: path), reply.ok else { return false }
        printLine(reply.message)
        return true
    }
}

struct Hangup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Hang up the call in progress (or stop ringing out) in the `flitz listen` or `flitz call` running on this home.")
    @OptionGroup var options: CommonOptions
    @OptionGroup var selector: CallSelector

    func run() async throws {
        if try forwardToOwner(CallControl.Request(command: .hangup, call: selector.call), options: options) { return }
        printError("flitz: no call in progress: neither `flitz listen` nor `flitz call` runs on this home")
        throw ExitCode(1)
    }
}

/// Sends `request` to the process serving this home's control socket and prints its reply. Returns false when no
/// process serves it; exits with the reply's status when it refused.
func forwardToOwner(_ request: CallControl.Request, options: CommonOptions) throws -> Bool {
    let path = CallControl.socketPath(home: options.homeURL)
    let reply: CallControl.Reply?
    do { reply = try CallControl.send(request, to: path) } catch {
        printError("flitz: \(error.message)")
        throw ExitCode(CallExit.failed)
    }
    guard let reply else { return false }
    if reply.ok {
        printLine(reply.message)
        return true
    }
    printError("flitz: \(reply.message)")
    throw ExitCode(reply.exitCode ?? 1)
}

struct Calls: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List this device's call history, newest first.",
        discussion: """
            One line per call: start time, direction, the other person, outcome (answered, missed, no answer, \
            declined, busy, failed, answered elsewhere) and, when answered, the duration. --json prints one object \
            per call: callID, peer, direction (incoming or outgoing), startedAt, answeredAt, endedAt, \
            durationSeconds (answered to ended; 0 when not answered) and outcome. Local only: nothing is sent.
            """)
    @OptionGroup var options: CommonOptions
    @Option(help: "Most calls to show (1 to 10000).") var limit: Int = 100
    @Flag(help: "One JSON object per call.") var json = false

    func validate() throws {
        guard (1...10_000).contains(limit) else { throw ValidationError("--limit must be 1 to 10000") }
    }

    func run() async throws {
        let client = try options.client()
        try await CallRunner(client: client, json: json).printHistory(limit: limit)
    }
}

extension CommonOptions {
    /// The home directory as `client()` chooses it: --home, else $FLITZ_HOME, else ~/.flitz.
    var homeURL: URL {
        let environment = ProcessInfo.processInfo.environment
        let userHome = environment["HOME"].map { URL(fileURLWithPath: $0) } ?? FileManager.default.homeDirectoryForCurrentUser
        return URL(fileURLWithPath: home ?? environment["FLITZ_HOME"] ?? userHome.appendingPathComponent(".flitz").path)
    }
}

/// The pre-flight check of a --play file (the media layer reads it only after the answer; refusing it then would
/// ring the other person for nothing). protocol/calls.md 6: 16-bit PCM, mono, 8000 Hz.
enum CallWAV {
    static let conversion = "ffmpeg -i IN -ac 1 -ar 8000 -c:a pcm_s16le OUT.wav"

    /// - Throws: `ValidationError` naming what is wrong and the ffmpeg command that converts the file.
    static func checkPlayable(_ path: String) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw ValidationError("--play: cannot read \(path)") }
        defer { try? handle.close() }
        let header = (try? handle.read(upToCount: 4096)) ?? Data()
        guard let format = format(of: header) else {
            throw ValidationError("--play: \(path) is not a WAV file; convert it with: \(conversion)")
        }
        guard format.pcm, format.channels == 1, format.sampleRate == 8000, format.bitsPerSample == 16 else {
            throw ValidationError(
                "--play: \(path) is \(format.pcm ? "PCM" : "not PCM"), \(format.channels) channel(s), \(format.sampleRate) Hz, "
                    + "\(format.bitsPerSample)-bit; calls need 16-bit PCM mono 8000 Hz: \(conversion)")
        }
    }

    struct Format: Equatable {
        var pcm: Bool
        var channels: Int
        var sampleRate: Int
        var bitsPerSample: Int
    }

    /// The `fmt ` chunk of a RIFF/WAVE header within the first bytes; nil when it is not one.
    static func format(of header: Data) -> Format? {
        let bytes = [UInt8](header)
        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> Int { u16(at) | u16(at + 2) << 16 }
        guard bytes.count >= 12, bytes[0..<4].elementsEqual("RIFF".utf8), bytes[8..<12].elementsEqual("WAVE".utf8) else { return nil }
        var offset = 12
        while offset + 8 <= bytes.count {
            let size = u32(offset + 4)
            if bytes[offset..<offset + 4].elementsEqual("fmt ".utf8) {
                guard size >= 16, offset + 8 + 16 <= bytes.count else { return nil }
                let tag = u16(offset + 8)
                // WAVE_FORMAT_PCM, or WAVE_FORMAT_EXTENSIBLE (its subformat is not checked here; the media layer does).
                return Format(
                    pcm: tag == 1 || tag == 0xFFFE, channels: u16(offset + 10), sampleRate: u32(offset + 12), bitsPerSample: u16(offset + 22))
            }
            offset += 8 + size + (size & 1)
        }
        return nil
    }
}

/// Handles as the relay accepts them (3-32 of a-z, 0-9, _ and .); the client checks again.
enum CallHandleSyntax {
    static func isPlausible(_ text: String) -> Bool {
        (3...32).contains(text.count) && text.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "." }
    }
}

/// The call options of `flitz listen`.
struct ListenCallOptions: ParsableArguments {
    @Flag(name: .customLong("auto-answer"), help: "Answer every incoming call at once (scripts).") var autoAnswer = false
    @OptionGroup var audio: CallAudioArguments

    func validate() throws {
        if !autoAnswer, audio.play != nil || audio.record != nil {
            // `flitz answer --play/--record` gives them per call; here they would silently apply to no call.
            throw ValidationError("--play and --record go with --auto-answer (or give them to `flitz answer`)")
        }
    }

    /// One call-handling process per home (two would take the relay connection from each other): when a live
    /// `listen` or `call` already serves the home's control socket, prints why this one cannot run and exits.
    /// - Throws: `ExitCode(status)` after printing `what` and the remedy.
    static func refuseIfOwned(home: URL, what: String, status: Int32) throws {
        guard CallControl.isServed(CallControl.socketPath(home: home)) else { return }
        printError(
            "flitz: \(what): a `flitz listen` or `flitz call` already runs on this home (\(home.path)) and owns its relay "
                + "connection for calls; stop it first (or answer, decline and hang up through it with `flitz answer`, "
                + "`flitz decline`, `flitz hangup`)")
        throw ExitCode(status)
    }

    /// Binds the home's control socket; a failure is reported and listening goes on without it.
    static func openControlSocket(home: URL) -> CallControl.Server? {
        do {
            return try CallControl.Server(path: CallControl.socketPath(home: home))
        } catch {
            printError("flitz: calls cannot be answered from another terminal: \(error.message)")
            return nil
        }
    }
}
