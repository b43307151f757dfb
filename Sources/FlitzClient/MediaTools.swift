import FlitzProtocol
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What the sender learns of a file before encrypting it (`protocol/attachments.md` section 5): kind and content
/// type from the file name, and with ffmpeg (when on `PATH`) dimensions, duration and a JPEG thumbnail of at most
/// 24 576 bytes and 320 pixels on the long side. ffmpeg only ever reads the local file and writes local
/// temporary files; nothing of this leaves the device unencrypted.
public struct MediaPreview: Sendable {
    /// Pixels, 0 when unknown.
    public var width: UInt32 = 0
    /// Pixels, 0 when unknown.
    public var height: UInt32 = 0
    /// Milliseconds, 0 when unknown.
    public var durationMilliseconds: UInt32 = 0
    /// JPEG, empty when none.
    public var thumbnail = Data()
}

enum MediaTools {
    /// Content types by lower-case file extension; anything else is `application/octet-stream`, a document.
    static let contentTypes: [String: String] = [
        "jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp", "heic": "image/heic",
        "bmp": "image/bmp", "tif": "image/tiff", "tiff": "image/tiff",
        "mp4": "video/mp4", "m4v": "video/mp4", "mov": "video/quicktime", "mkv": "video/x-matroska", "webm": "video/webm", "avi": "video/x-msvideo",
        "mp3": "audio/mpeg", "m4a": "audio/mp4", "aac": "audio/aac", "ogg": "audio/ogg", "oga": "audio/ogg", "opus": "audio/opus",
        "wav": "audio/wav", "flac": "audio/flac",
        "pdf": "application/pdf", "txt": "text/plain", "zip": "application/zip", "json": "application/json",
    ]

    /// The content type of `fileName` by its extension.
    static func contentType(of fileName: String) -> String {
        contentTypes[(fileName as NSString).pathExtension.lowercased()] ?? "application/octet-stream"
    }

    /// The kind a content type stands for.
    static func kind(of contentType: String) -> AttachmentPointer.Kind {
        if contentType.hasPrefix("image/") { return .image }
        if contentType.hasPrefix("video/") { return .video }
        if contentType.hasPrefix("audio/") { return .audio }
        return .document
    }

    /// The executable `name` on `PATH` (from `environment`), nil when absent.
    static func find(_ name: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> URL? {
        for directory in (environment["PATH"] ?? "").split(separator: ":") {
            let url = URL(fileURLWithPath: String(directory)).appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: url.path) { return url }
        }
        return nil
    }

    /// Variables a child process (ffmpeg, ffprobe) never gets: the passphrases `flitz` reads from its environment.
    static let withheldVariables: Set<String> = ["FLITZ_PASSPHRASE", "FLITZ_NEW_PASSPHRASE"]

    /// `NAME=VALUE` entries of this process's environment (`environ`), in order.
    static func currentEnvironment() -> [String] {
        var entries: [String] = []
        var pointer = environ
        while let entry = pointer.pointee {
            entries.append(String(cString: entry))
            pointer += 1
        }
        return entries
    }

    /// `environment` (`NAME=VALUE` entries) without `withheldVariables`, for a child process.
    static func childEnvironment(_ environment: [String]) -> [String] {
        environment.filter { entry in
            let name = entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? entry
            return !withheldVariables.contains(name)
        }
    }

    /// Runs `executable` with `arguments` to its end (stdin from /dev/null, stdout into `stdout` or discarded,
    /// stderr discarded) with `posix_spawn`, not Foundation's `Process` (docs/decisions.md, "End-to-end tests spawn
    /// children with posix_spawn"), with this process's environment minus the passphrases (`childEnvironment`).
    /// Returns the exit status (128 + signal for a signal).
    static func run(_ executable: URL, _ arguments: [String], stdout: URL? = nil) -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdout?.path ?? "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        let argv = ([executable.path] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        let envp = childEnvironment(currentEnvironment()).map { strdup($0) } + [nil]
        defer { envp.forEach { free($0) } }
        guard posix_spawn(&pid, executable.path, &actions, nil, argv, envp) == 0 else { return 127 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }

    /// Dimensions and duration of a media file by ffprobe; nil when ffprobe fails or cannot read it.
    static func probe(_ file: URL, ffprobe: URL, scratch: URL) -> (width: UInt32, height: UInt32, durationMilliseconds: UInt32, hasVideo: Bool)? {
        let out = scratch.appendingPathComponent("probe-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: out) }
        let status = run(
            ffprobe, ["-v", "error", "-show_entries", "stream=codec_type,width,height,duration:format=duration", "-of", "json", file.path], stdout: out)
        guard status == 0, let data = try? Data(contentsOf: out),
            let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        else { return nil }
        let streams = json["streams"] as? [[String: Any]] ?? []
        let video = streams.first { $0["codec_type"] as? String == "video" }
        let seconds = Double((json["format"] as? [String: Any])?["duration"] as? String ?? "")
            ?? streams.compactMap { Double($0["duration"] as? String ?? "") }.max() ?? 0
        return (
            UInt32(video?["width"] as? Int ?? 0), UInt32(video?["height"] as? Int ?? 0),
            UInt32(clamping: Int((seconds * 1000).rounded())), video != nil
        )
    }

    /// A JPEG thumbnail of `file` (an image, or a video's frame at `seekSeconds`), long side at most 320 pixels,
    /// at most 24 576 bytes: JPEG quality is lowered (ffmpeg `-q:v` 4 to 31), then the size halved, until it fits.
    /// Empty when ffmpeg cannot make one.
    static func thumbnail(_ file: URL, ffmpeg: URL, seekSeconds: Double, scratch: URL) -> Data {
        let out = scratch.appendingPathComponent("thumb-\(UUID().uuidString).jpg")
        defer { try? FileManager.default.removeItem(at: out) }
        for side in [320, 160, 80] {
            for quality in [4, 8, 14, 22, 31] {
                var arguments = ["-nostdin", "-y", "-v", "error"]
                if seekSeconds > 0 { arguments += ["-ss", String(format: "%.3f", seekSeconds)] }
                arguments += [
                    "-i", file.path, "-frames:v", "1",
                    "-vf", "scale=w=\(side):h=\(side):force_original_aspect_ratio=decrease",
                    "-q:v", String(quality), "-f", "image2", "-c:v", "mjpeg", out.path,
                ]
                guard run(ffmpeg, arguments) == 0, let data = try? Data(contentsOf: out), !data.isEmpty else { return Data() }
                if data.count <= AttachmentPointer.maxThumbnailBytes { return data }
            }
        }
        return Data()
    }

    /// Transcodes a video to H.264/AAC MP4 bounded to 1280 pixels wide and about 2 Mbit/s (`--original` skips
    /// this); nil when ffmpeg fails.
    static func transcode(_ file: URL, ffmpeg: URL, to output: URL) -> URL? {
        let status = run(
            ffmpeg,
            [
                "-nostdin", "-y", "-v", "error", "-i", file.path, "-vf", "scale='min(1280,iw)':-2", "-c:v", "libx264", "-preset", "veryfast",
                "-crf", "28", "-maxrate", "2M", "-bufsize", "4M", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart",
                output.path,
            ])
        return status == 0 ? output : nil
    }

    /// The preview of `file` of `kind` with the tools found on `PATH`; a note when ffmpeg is missing for a kind
    /// that would have one.
    static func preview(_ file: URL, kind: AttachmentPointer.Kind, scratch: URL, environment: [String: String]) -> (MediaPreview, note: String?) {
        guard kind != .document else { return (MediaPreview(), nil) }
        guard let ffmpeg = find("ffmpeg", environment: environment), let ffprobe = find("ffprobe", environment: environment) else {
            return (MediaPreview(), "ffmpeg is not installed (ffmpeg/ffprobe not on PATH): sending without a preview, dimensions or duration")
        }
        var preview = MediaPreview()
        let probed = probe(file, ffprobe: ffprobe, scratch: scratch)
        if let probed {
            preview.width = probed.width
            preview.height = probed.height
            if kind != .image { preview.durationMilliseconds = probed.durationMilliseconds }
        }
        if kind == .image || (kind == .video && probed?.hasVideo == true) {
            // A poster frame a second in (or halfway through a shorter video).
            let seek = kind == .video ? min(1.0, Double(probed?.durationMilliseconds ?? 0) / 2000) : 0
            preview.thumbnail = thumbnail(file, ffmpeg: ffmpeg, seekSeconds: seek, scratch: scratch)
        }
        if kind == .audio { preview.width = 0; preview.height = 0 }
        return (preview, probed == nil ? "ffprobe could not read the file: sending without a preview" : nil)
    }
}

extension FlitzClient {
    /// Whether `fileName` names an audio file by its extension (what `flitz send --voice` needs; the same table
    /// `sendFile` uses for the pointer's content type).
    public static func isAudioFile(named fileName: String) -> Bool {
        MediaTools.kind(of: MediaTools.contentType(of: fileName)) == .audio
    }
}
