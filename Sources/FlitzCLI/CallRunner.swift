import ArgumentParser
import FlitzClient
import FlitzMedia
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Drives FlitzClient's `CallController` for the CLI commands and prints the progress (human lines, or one JSON
/// object per line with --json). The only file of FlitzCLI that touches the call API of FlitzClient.
struct CallRunner {
    let client: FlitzClient
    let json: Bool

    /// `flitz call`: places the call, serves the home's control socket (`flitz hangup` from another terminal),
    /// hangs up after `duration` of being answered or on Ctrl-C / SIGTERM. Returns the exit status (`CallExit`).
    func placeCall(to handle: String, audio: CallAudioArguments, duration: Duration?, ringTimeout: Duration) async throws -> Int32 {
        try ListenCallOptions.refuseIfOwned(home: client.home, what: "not calling \(handle)", status: CallExit.failed)
        let recording = CallRecordingFile.reserve(audio.audioOptions, json: json)
        defer { CallRecordingFile.removeIfUnused(recording) }
        let controller = CallController(
            client: client, options: CallOptions(ringTimeout: ringTimeout, relayOnly: audio.relayOnly, audio: recording))
        let book = CallBook()
        let printer = CallPrinter(json: json)
        let control = ListenCallOptions.openControlSocket(home: client.home)
        defer { control?.stop() }
        return try await FlitzCLI.run {
            try await client.withCalls(controller) { controller in
                try await withThrowingTaskGroup(of: Int32?.self) { group in
                    defer { group.cancelAll() }
                    if let control { group.addTask { await Self.serve(control, controller: controller, book: book, defaults: nil, json: json); return nil } }
                    group.addTask { await Self.hangUpOnSignal(controller, book: book); return nil }
                    group.addTask {
                        var mine: CallID?
                        for await event in controller.events {
                            book.note(event)
                            if !json, case .ended(let record, let statistics) = event, record.callID == mine, record.answeredAt == nil,
                                book.wasHungUpLocally(record.callID)
                            {
                                // Text only: the history (and --json) keep the outcome calls.md gives it.
                                printLine("ended: cancelled")
                                if let statistics { printer.print(.ended(record, statistics), statisticsOnly: true) }
                            } else {
                                printer.print(event)
                            }
                            switch event {
                            case .placing(let id, _): mine = id
                            case .replaced(let old, let new) where old == mine: mine = new
                            case .answered(let id) where id == mine:
                                if let duration { Self.hangUp(id, after: duration, controller) }
                            case .ended(let record, _) where record.callID == mine:
                                return CallRunner.exitStatus(record.outcome)
                            default: break
                            }
                        }
                        return CallExit.failed
                    }
                    do {
                        _ = try await controller.placeCall(to: handle)
                    } catch let error as ClientError where error.exitCode == 1 {
                        // A local failure (relay-only without a TURN server, ...) is a failure (2), not "no answer".
                        printError("flitz: \(error.message)")
                        return CallExit.failed
                    }
                    while let result = try await group.next() {
                        if let result { return result }
                    }
                    return CallExit.failed
                }
            }
        }
    }

    /// `flitz answer` without a running listen: waits up to `wait` for a ringing call matching `selector` (the
    /// relay delivers a held offer right after authentication), answers it and stays until it ends.
    func answerHeldCall(selector: String?, audio: CallAudioArguments, duration: Duration?, wait: Duration) async throws -> Int32 {
        let recording = CallRecordingFile.reserve(audio.audioOptions, json: json)
        defer { CallRecordingFile.removeIfUnused(recording) }
        return try await takeHeldCall(selector: selector, audio: recording, relayOnly: audio.relayOnly, wait: wait) { controller, id, book in
            await controller.answer(id)
            for await event in controller.events {
                book.note(event)
                CallPrinter(json: json).print(event)
                switch event {
                case .answered(let answered) where answered == id:
                    if let duration { Self.hangUp(id, after: duration, controller) }
                case .ended(let record, _) where record.callID == id:
                    return CallRunner.exitStatus(record.outcome)
                default: break
                }
            }
            return CallExit.failed
        }
    }

    /// `flitz decline` without a running listen: declines the held offer; returns the line to print.
    func declineHeldCall(selector: String?, wait: Duration) async throws -> String {
        let declined = Mutex<String?>(nil)
        let status = try await takeHeldCall(selector: selector, audio: AudioOptions(), relayOnly: false, wait: wait) { controller, id, book in
            let peer = book.peer(of: id) ?? "?"
            await controller.decline(id)
            for await event in controller.events {
                book.note(event)
                if case .ended(let record, _) = event, record.callID == id {
                    declined.withLock { $0 = "declined the call from \(peer) (id \(id))" }
                    return CallExit.answered
                }
            }
            return CallExit.failed
        }
        guard status == CallExit.answered, let line = declined.withLock({ $0 }) else { throw ExitCode(status) }
        return line
    }

    /// Connects, waits up to `wait` for an incoming call matching `selector`, then runs `body` on it.
    private func takeHeldCall(
        selector: String?, audio: AudioOptions, relayOnly: Bool, wait: Duration,
        _ body: @escaping @Sendable (CallController, CallID, CallBook) async -> Int32
    ) async throws -> Int32 {
        let controller = CallController(client: client, options: CallOptions(relayOnly: relayOnly, audio: audio))
        let book = CallBook()
        let printer = CallPrinter(json: json)
        return try await FlitzCLI.run {
            try await client.withCalls(controller) { controller in
                try await withThrowingTaskGroup(of: Int32?.self) { group in
                    defer { group.cancelAll() }
                    group.addTask {
                        try await Task.sleep(for: wait)
                        printError("flitz: no incoming call \(selector.map { "matching \($0) " } ?? "")is ringing")
                        return CallExit.notAnswered
                    }
                    group.addTask {
                        for await event in controller.events {
                            book.note(event)
                            printer.print(event)
                            if case .incoming(let id, let from, _) = event, CallBook.matches(id: id, peer: from, selector: selector) {
                                return await body(controller, id, book)
                            }
                        }
                        return CallExit.failed
                    }
                    while let result = try await group.next() {
                        if let result { return result }
                    }
                    return CallExit.failed
                }
            }
        }
    }

    /// `flitz calls`.
    func printHistory(limit: Int) async throws {
        let records = try await FlitzCLI.run { try client.callHistory(limit: limit) }
        for record in records {
            if json {
                var object: [String: Any] = [
                    "callID": record.callID.description, "peer": record.peer, "direction": record.direction.rawValue,
                    "startedAt": rfc3339(record.startedAt), "endedAt": rfc3339(record.endedAt), "durationSeconds": record.duration,
                    "outcome": record.outcome.rawValue,
                ]
                if let answered = record.answeredAt { object["answeredAt"] = rfc3339(answered) }
                printJSON(object)
            } else {
                let arrow = record.direction == .outgoing ? "to  " : "from"
                let length = record.answeredAt == nil ? "" : String(format: "  %.1f s", record.duration)
                printLine("\(rfc3339(record.startedAt))  \(arrow) \(record.peer)  \(record.outcome.label(direction: record.direction))\(length)")
            }
        }
    }

    static func exitStatus(_ outcome: CallOutcome) -> Int32 {
        switch outcome {
        case .answered: CallExit.answered
        case .missed, .declined, .busy, .answeredElsewhere: CallExit.notAnswered
        case .failed: CallExit.failed
        }
    }

    static func hangUp(_ id: CallID, after duration: Duration, _ controller: CallController) {
        Task {
            try? await Task.sleep(for: duration)
            await controller.hangUp(id)
        }
    }

    /// Ctrl-C or SIGTERM: hang up every call (their `ended` lines follow); a second signal exits at once.
    static func hangUpOnSignal(_ controller: CallController, book: CallBook? = nil) async {
        for await number in TerminationSignals.stream() {
            if TerminationSignals.seen.withLock({ $0 += 1; return $0 }) > 1 { exit(128 + number) }
            for id in await controller.activeCalls {
                book?.noteHungUpLocally(id)
                await controller.hangUp(id)
            }
        }
    }

    /// Answers control requests (CallControl) from `answer`, `decline` and `hangup` in other terminals.
    static func serve(_ server: CallControl.Server, controller: CallController?, book: CallBook, defaults: AudioOptions?, json: Bool) async {
        for await pending in server.requests {
            let request = pending.request
            guard let controller else {
                pending.reply(.failure(request.command == .hangup ? "no call in progress" : "no incoming call is ringing"))
                continue
            }
            switch request.command {
            case .answer, .decline:
                switch book.select(request.call, ringingOnly: true) {
                case .none: pending.reply(.failure("no incoming call \(request.call.map { "matching \($0) " } ?? "")is ringing"))
                case .ambiguous(let count): pending.reply(.failure("\(count) calls ring: give the call id (`flitz \(request.command.rawValue) ID`)"))
                case .one(let id, let peer):
                    if request.command == .answer {
                        var audio = defaults ?? AudioOptions()
                        if let play = request.play { audio.playFile = URL(fileURLWithPath: play) }
                        if let record = request.record { audio.recordFile = URL(fileURLWithPath: record) }
                        await controller.answer(id, audio: CallRecordingFile.reserve(audio, json: json))
                        pending.reply(.success("answered the call from \(peer) (id \(id))"))
                    } else {
                        await controller.decline(id)
                        pending.reply(.success("declined the call from \(peer) (id \(id))"))
                    }
                }
            case .hangup:
                switch book.select(request.call, ringingOnly: false) {
                case .none: pending.reply(.failure("no call \(request.call.map { "matching \($0) " } ?? "")in progress"))
                case .ambiguous(let count): pending.reply(.failure("\(count) calls are in progress: give the call id (`flitz hangup ID`)"))
                case .one(let id, let peer):
                    book.noteHungUpLocally(id)
                    await controller.hangUp(id)
                    pending.reply(.success("hung up the call with \(peer) (id \(id))"))
                }
            }
        }
    }
}

extension CallAudioArguments {
    var audioOptions: AudioOptions { AudioOptions(playFile: playURL, recordFile: recordURL) }
}

/// Recordings never overwrite a file: like `flitz download`, `NAME.wav` taken becomes `NAME (1).wav`, `NAME (2).wav`,
/// and so on. The chosen file is created empty at once (O_EXCL), so two calls of one listen never pick the same name.
enum CallRecordingFile {
    /// `audio` with its record file replaced by an unused one; prints the path used (a line, or a JSON
    /// `recording` event with `path`). Unchanged when it records nothing or no free name is found (1 to 9999).
    static func reserve(_ audio: AudioOptions, json: Bool) -> AudioOptions {
        guard let wanted = audio.recordFile else { return audio }
        let directory = wanted.deletingLastPathComponent()
        let base = wanted.deletingPathExtension().lastPathComponent, ext = wanted.pathExtension
        for n in 0..<10_000 {
            let name = n == 0 ? wanted.lastPathComponent : "\(base) (\(n))\(ext.isEmpty ? "" : ".\(ext)")"
            let url = directory.appendingPathComponent(name)
            let fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
            if fd < 0 {
                if errno == EEXIST { continue }
                return audio  // the recorder reports why it cannot write there
            }
            close(fd)
            var chosen = audio
            chosen.recordFile = url
            if json { printJSON(["event": "recording", "path": url.path]) } else { printLine("recording to \(url.path)") }
            return chosen
        }
        return audio
    }

    /// Removes the file `reserve` created when the call never recorded into it (still empty: not answered, or it
    /// failed before media started). The recorder's header makes a used file at least 44 bytes long.
    static func removeIfUnused(_ audio: AudioOptions) {
        guard let url = audio.recordFile,
            let size = (try? FileManager.default.attributesOfItem(atPath: url.path))?[.size] as? NSNumber, size.intValue == 0
        else { return }
        try? FileManager.default.removeItem(at: url)
    }
}

/// The calls of this process as its events told them: which ring here, which are in progress (for the control
/// socket's selection by id prefix or handle).
final class CallBook: Sendable {
    struct Entry {
        var peer: String
        var ringing: Bool
    }
    private let calls = Mutex<[CallID: Entry]>([:])
    private let hungUpLocally = Mutex<Set<CallID>>([])

    /// The user hung up `id` here (Ctrl-C, SIGTERM, `flitz hangup`): an unanswered outgoing call then prints
    /// "cancelled".
    func noteHungUpLocally(_ id: CallID) { _ = hungUpLocally.withLock { $0.insert(id) } }
    func wasHungUpLocally(_ id: CallID) -> Bool { hungUpLocally.withLock { $0.contains(id) } }

    enum Selection { case none, one(CallID, peer: String), ambiguous(Int) }

    func note(_ event: CallEvent) {
        calls.withLock { calls in
            switch event {
            case .placing(let id, let to): calls[id] = Entry(peer: to, ringing: false)
            case .incoming(let id, let from, _): calls[id] = Entry(peer: from, ringing: true)
            case .stoppedRinging(let id), .answered(let id): calls[id]?.ringing = false
            case .replaced(let old, _): calls[old] = nil
            case .ended(let record, _): calls[record.callID] = nil
            default: break
            }
        }
    }

    func peer(of id: CallID) -> String? { calls.withLock { $0[id]?.peer } }

    /// Whether a call other than `id` is in progress here (placed, or answered: not merely ringing).
    func inCall(besides id: CallID) -> Bool { calls.withLock { $0.contains { $0.key != id && !$0.value.ringing } } }

    func select(_ selector: String?, ringingOnly: Bool) -> Selection {
        let candidates = calls.withLock { calls in
            calls.filter { id, entry in (!ringingOnly || entry.ringing) && Self.matches(id: id, peer: entry.peer, selector: selector) }
        }
        if candidates.count > 1 { return .ambiguous(candidates.count) }
        guard let (id, entry) = candidates.first else { return .none }
        return .one(id, peer: entry.peer)
    }

    /// nil matches every call; a handle its peer; hex digits a prefix of its id.
    static func matches(id: CallID, peer: String, selector: String?) -> Bool {
        guard let selector else { return true }
        return peer == selector || (selector.count >= 4 && id.description.hasPrefix(selector.lowercased()))
    }
}

/// Prints call events: one line each, or one JSON object per line (README, "Calls").
struct CallPrinter: Sendable {
    let json: Bool

    /// `inAnotherCall`: an incoming call that ends missed was answered busy because another call was in progress.
    func print(_ event: CallEvent, statisticsOnly: Bool = false, inAnotherCall: Bool = false) {
        if statisticsOnly, case .ended(let record, let statistics?) = event {
            printStatistics(record, statistics)
            return
        }
        switch event {
        case .placing(let id, let to):
            emit(["event": "calling", "callID": id.description, "peer": to], "calling \(to) (id \(id))")
        case .ringing(let id, let to, let devices):
            emit(["event": "ringing", "callID": id.description, "peer": to, "devices": devices.count],
                 "ringing: \(devices.count) device\(devices.count == 1 ? "" : "s")")
        case .incoming(let id, let from, let untrusted):
            emit(["event": "incoming", "callID": id.description, "peer": from, "untrustedCaller": untrusted],
                 "call from \(from)\(untrusted ? " [new identity key, not verified]" : "") (id \(id))")
        case .stoppedRinging(let id):
            emit(["event": "stoppedRinging", "callID": id.description], nil)
        case .answered(let id):
            emit(["event": "answered", "callID": id.description], "answered")
        case .connected(let id, let path, let setup):
            let ms = Int((Double(setup.components.seconds) * 1000 + Double(setup.components.attoseconds) / 1e15).rounded())
            emit(["event": "connected", "callID": id.description, "path": path.viaTURN ? "turn" : "direct",
                  "peer": "\(path.peerAddress):\(path.peerPort)", "setupMs": ms],
                 "connected \(path) (setup \(ms) ms)")
        case .replaced(let old, let new):
            emit(["event": "replaced", "callID": old.description, "by": new.description],
                 "both of you called at once: joining the call \(new)")
        case .playbackFinished(let id):
            emit(["event": "playbackFinished", "callID": id.description], "finished playing")
        case .ended(let record, let statistics):
            // An incoming call missed (rang out, or answered busy while another call ran) names its caller: the
            // line must not read as the end of the call in progress.
            let text = record.direction == .incoming && record.outcome == .missed
                ? "missed call from \(record.peer)\(inAnotherCall ? " (you were in a call)" : "") (id \(record.callID))"
                : "ended: \(record.outcome.label(direction: record.direction))\(record.answeredAt == nil ? "" : String(format: ", %.1f s", record.duration))"
            emit(["event": "ended", "callID": record.callID.description, "peer": record.peer, "direction": record.direction.rawValue,
                  "outcome": record.outcome.rawValue, "durationSeconds": record.duration], text)
            if let statistics { printStatistics(record, statistics) }
        case .warning(let text):
            printError("flitz: \(text)")
        }
    }

    private func printStatistics(_ record: CallRecord, _ s: CallStatistics) {
        emit(["event": "statistics", "callID": record.callID.description, "packetsSent": s.packetsSent, "packetsReceived": s.packetsReceived,
              "packetsLost": s.packetsLost, "packetsDropped": s.packetsDropped, "jitterMs": s.jitterMs],
             String(format: "sent %llu received %llu lost %llu dropped %llu jitter %.1f ms", s.packetsSent, s.packetsReceived, s.packetsLost, s.packetsDropped, s.jitterMs))
    }

    private func emit(_ object: [String: Any], _ line: String?) {
        if json { printJSON(object) } else if let line { printLine(line) }
    }
}


/// SIGINT and SIGTERM as a stream (their default action, ending the process, is replaced while it is iterated).
enum TerminationSignals {
    static let seen = Mutex(0)

    static func stream() -> AsyncStream<Int32> {
        AsyncStream { continuation in
            let sources = SignalSources([SIGINT, SIGTERM].map { number in
                signal(number, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: number)
                source.setEventHandler { continuation.yield(number) }
                source.resume()
                return source
            })
            continuation.onTermination = { _ in sources.cancel() }
        }
    }
}

extension ListenCallOptions {
    /// `flitz listen`'s calls: one `CallController` for the process, its events printed (and, with --auto-answer,
    /// every incoming call answered), the home's control socket served, and on SIGINT/SIGTERM every call hung up
    /// (their recordings completed, their `ended` lines printed) before the process exits. `body` runs the
    /// connection with the controller.
    func listen(client: FlitzClient, json: Bool, _ body: @escaping @Sendable (CallController) async throws -> Void) async throws {
        try Self.refuseIfOwned(home: client.home, what: "already listening on this home", status: 1)
        let controller = CallController(client: client, options: CallOptions(relayOnly: audio.relayOnly, audio: audio.audioOptions))
        let book = CallBook()
        let printer = CallPrinter(json: json)
        let control = Self.openControlSocket(home: client.home)
        defer { control?.stop() }
        let autoAnswer = autoAnswer
        let defaults = audio.audioOptions
        try await withThrowingTaskGroup(of: Void.self) { group in
            defer { group.cancelAll() }
            let printing = Task {
                for await event in controller.events {
                    var busy = false
                    if case .ended(let record, _) = event { busy = book.inCall(besides: record.callID) }
                    book.note(event)
                    printer.print(event, inAnotherCall: busy)
                    if autoAnswer, case .incoming(let id, _, _) = event {
                        await controller.answer(id, audio: CallRecordingFile.reserve(defaults, json: json))
                    }
                }
            }
            if let control { group.addTask { await CallRunner.serve(control, controller: controller, book: book, defaults: defaults, json: json) } }
            group.addTask {
                for await number in TerminationSignals.stream() {
                    await controller.shutdown()
                    await printing.value
                    control?.stop()
                    Glibc.exit(128 + number)
                }
            }
            group.addTask { try await body(controller) }
            try await group.next()
        }
    }
}

/// The dispatch sources of `TerminationSignals`, cancelled together (DispatchSource is thread-safe but not marked Sendable).
private final class SignalSources: @unchecked Sendable {
    private let sources: [any DispatchSourceSignal]
    init(_ sources: [any DispatchSourceSignal]) { self.sources = sources }
    func cancel() { sources.forEach { $0.cancel() } }
}
