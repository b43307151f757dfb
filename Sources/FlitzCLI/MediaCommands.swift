import ArgumentParser
import FlitzClient
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

// Media in the CLI (`protocol/attachments.md` section 5): `send --file/--location`, `download`, `media`.

/// `flitz send HANDLE --file PATH [--caption TEXT] [--original] [--voice]` and `--location LAT,LON [--label TEXT]`.
struct MediaSendOptions: ParsableArguments {
    @Option(help: "Send this file (photo, video, audio, any document), encrypted; running the same command again resumes an interrupted upload.")
    var file: String?
    @Option(help: "With --file or --location: the caption.") var caption: String?
    @Flag(help: "With --file: never transcode a large video.") var original = false
    @Flag(help: "With --file: send an audio file as a voice message.") var voice = false
    // `.unconditional`: the value is taken even when it starts with `-` (a southern or western `-33.9,18.4`).
    @Option(parsing: .unconditional, help: "Send a location: LAT,LON in degrees (e.g. 52.52,13.405 or -33.9249,18.4241).")
    var location: String?
    @Option(help: "With --location: a label for the place.") var label: String?

    var isMedia: Bool { file != nil || location != nil }

    func validate(text: String?, scheduled: Bool) throws {
        if file != nil, location != nil { throw ValidationError("give --file or --location, not both") }
        if isMedia {
            if text != nil { throw ValidationError("with --file or --location, give the text as --caption") }
            if scheduled { throw ValidationError("--file and --location cannot be combined with --at, --expires-in, --no-forward or --disappear yet") }
            if let location {
                guard let (latitude, longitude) = parseCoordinates(location) else {
                    throw ValidationError("--location takes LAT,LON in degrees, e.g. 52.52,13.405")
                }
                guard latitude.isFinite, longitude.isFinite, (-90...90).contains(latitude), (-180...180).contains(longitude) else {
                    throw ValidationError("--location: the latitude must be between -90 and 90 and the longitude between -180 and 180 degrees")
                }
            }
        } else {
            if caption != nil || original || voice || label != nil {
                throw ValidationError("--caption, --original, --voice and --label go with --file or --location")
            }
            if text == nil { throw ValidationError("give the message text, --file PATH or --location LAT,LON") }
        }
        if location != nil, original || voice { throw ValidationError("--original and --voice go with --file") }
        if file != nil, label != nil { throw ValidationError("--label goes with --location") }
        if voice, let file, !FlitzClient.isAudioFile(named: file) { throw ValidationError("--voice needs an audio file") }
    }

    func send(_ client: FlitzClient, to handle: String, timeout: Double) async throws {
        let timeout = Duration.milliseconds(Int64(timeout * 1000))
        if let location, let (latitude, longitude) = parseCoordinates(location) {
            let id = try await FlitzCLI.run {
                try await client.sendLocation(to: handle, latitude: latitude, longitude: longitude, label: label ?? "", caption: caption ?? "", timeout: timeout)
            }
            printLine(id.hexString)
            return
        }
        guard let file else { return }
        let progress = ProgressDisplay(label: "upload")
        let id = try await FlitzCLI.run {
            try await client.sendFile(
                to: handle, path: file, caption: caption ?? "", original: original, voiceNote: voice, timeout: timeout,
                onNote: { printError("flitz: \($0)") }, onProgress: { progress.update($0) })
        }
        progress.finish()
        printLine(id.hexString)
    }
}

/// `LAT,LON` → degrees; nil when malformed.
func parseCoordinates(_ text: String) -> (Double, Double)? {
    let parts = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    guard parts.count == 2, let latitude = Double(parts[0]), let longitude = Double(parts[1]) else { return nil }
    return (latitude, longitude)
}

/// How a message's text shows on a terminal: a media message as `[photo.jpg, 2.1 MB] caption` or
/// `[location 52.52,13.40 Berlin] caption`, else the text; terminal-safe either way.
func displayText(_ text: String, media: MediaSummary?) -> String {
    guard let media else { return terminalSafe(text) }
    let tag: String
    if media.kind == "location" {
        let place = String(format: "%.5g,%.5g", media.latitude ?? 0, media.longitude ?? 0)
        tag = "[location \(place)" + (media.label.isEmpty ? "" : " " + terminalSafe(media.label)) + "]"
    } else {
        var parts = [media.fileName.isEmpty ? media.kind : terminalSafe(media.fileName), FlitzClient.formatBytes(media.size)]
        if media.voiceNote { parts.append("voice note") }
        if media.width > 0, media.height > 0 { parts.append("\(media.width)×\(media.height)") }
        if media.durationMilliseconds > 0 { parts.append(formatDuration(media.durationMilliseconds)) }
        tag = "[" + parts.joined(separator: ", ") + "]"
    }
    return text.isEmpty ? tag : tag + " " + terminalSafe(text)
}

func formatDuration(_ milliseconds: UInt32) -> String {
    let seconds = Int((Double(milliseconds) / 1000).rounded())
    return String(format: "%d:%02d", seconds / 60, seconds % 60)
}

/// The JSON fields of a media message: `kind`, `fileName`, `size`, `contentType` (files), dimensions, duration,
/// `thumbnailBytes`, `voiceNote`, `downloaded` (path); `latitude`, `longitude`, `label` (locations).
func mediaObject(_ media: MediaSummary) -> [String: Any] {
    var object: [String: Any] = ["kind": media.kind]
    if media.kind == "location" {
        object["latitude"] = media.latitude ?? 0
        object["longitude"] = media.longitude ?? 0
        object["label"] = media.label
        return object
    }
    object["fileName"] = media.fileName
    object["size"] = media.size
    object["contentType"] = media.contentType
    if media.width > 0 { object["width"] = media.width }
    if media.height > 0 { object["height"] = media.height }
    if media.durationMilliseconds > 0 { object["durationMs"] = media.durationMilliseconds }
    if media.thumbnailBytes > 0 { object["thumbnailBytes"] = media.thumbnailBytes }
    if media.voiceNote { object["voiceNote"] = true }
    if let path = media.localPath { object["downloaded"] = path }
    return object
}

/// Upload and download progress on stderr: a bar redrawn in place on a terminal, else a plain line per step.
final class ProgressDisplay: Sendable {
    private let label: String
    private let terminal = isatty(2) != 0
    private let state = Mutex<(drawn: Bool, lastPercent: Int)>((false, -1))

    init(label: String) { self.label = label }

    func update(_ progress: TransferProgress) {
        let percent = progress.total == 0 ? 100 : Int(progress.bytes * 100 / progress.total)
        let first: Bool? = state.withLock { state in
            guard percent != state.lastPercent else { return nil }
            defer { state.lastPercent = percent; state.drawn = true }
            return state.lastPercent == -1
        }
        guard let first else { return }
        if first, progress.resumedFrom > 0 {
            if terminal { try? FileHandle.standardError.write(contentsOf: Data("\n".utf8)) }
            printError("flitz: \(label) resumes at \(FlitzClient.formatBytes(progress.resumedFrom)) of \(FlitzClient.formatBytes(progress.total))")
        }
        let sizes = "\(FlitzClient.formatBytes(progress.bytes)) / \(FlitzClient.formatBytes(progress.total))"
        if terminal {
            let width = 30, filled = width * percent / 100
            let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            try? FileHandle.standardError.write(contentsOf: Data("\r\(label) [\(bar)] \(percent)% \(sizes)\u{1B}[K".utf8))
        } else {
            printError("flitz: \(label) \(percent)% (\(sizes))")
        }
    }

    /// Ends a terminal bar's line.
    func finish() {
        if terminal, state.withLock({ $0.drawn }) { try? FileHandle.standardError.write(contentsOf: Data("\n".utf8)) }
    }
}

struct Download: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Download a media message's file: fetch, verify (size, every chunk, SHA-256), decrypt; print where it was written.",
        discussion: """
            An interrupted download resumes when run again. A file that fails verification is rejected and nothing is \
            written to --out; an existing file is never overwritten (NAME (1).EXT is used instead).
            """)
    @OptionGroup var options: CommonOptions
    @Argument(help: "Message id.") var id: String
    @Option(help: "Directory to write the file to (default: the current directory).") var out: String?

    func run() async throws {
        let client = try options.client()
        let target = try parseMessageID(id)
        let directory = URL(fileURLWithPath: out ?? FileManager.default.currentDirectoryPath)
        let progress = ProgressDisplay(label: "download")
        let url = try await FlitzCLI.run { try await client.download(target, to: directory, onProgress: { progress.update($0) }) }
        progress.finish()
        printLine(terminalSafe(url.path))
    }
}

struct Media: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List a conversation's media, newest first (sender, date, size, caption); --export FILE.zip bundles the selection.")
    @OptionGroup var options: CommonOptions
    @Argument(help: "Contact handle.") var handle: String
    @Option(help: "Only this type: image, video, audio, document or location.") var type: String?
    @Flag(help: "One JSON object per line.") var json = false
    @Option(help: "Write the selection to this new ZIP file (downloading and verifying files not on this device yet).") var export: String?

    func validate() throws {
        if let type, !["image", "video", "audio", "document", "location"].contains(type) {
            throw ValidationError("--type takes image, video, audio, document or location")
        }
    }

    func run() async throws {
        let client = try options.client()
        if let export {
            let progress = ProgressDisplay(label: "download")
            let count = try await FlitzCLI.run {
                try await client.exportMedia(
                    with: handle, kind: type, to: URL(fileURLWithPath: export), onNote: { printError("flitz: \($0)") },
                    onProgress: { progress.update($0) })
            }
            progress.finish()
            printLine("wrote \(count) \(count == 1 ? "entry" : "entries") to \(terminalSafe(export))")
            return
        }
        for item in try await FlitzCLI.run({ try client.gallery(with: handle, kind: type) }) {
            if json {
                var object = mediaObject(item.media)
                object["id"] = item.messageID.hexString
                object["from"] = item.author
                object["sentAt"] = rfc3339(item.sentAt)
                object["caption"] = item.caption
                printJSON(object)
            } else {
                let who = item.outgoing ? "you" : item.author
                printLine("\(item.messageID.hexString) \(rfc3339(item.sentAt)) \(who): \(displayText(item.caption, media: item.media))")
            }
        }
    }
}
