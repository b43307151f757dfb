import Foundation
import Testing

/// Media through the real binaries and a real relay with a blob directory (`protocol/attachments.md`): a
/// multi-megabyte file whose upload is interrupted and resumed, downloaded byte-identical; tampered and truncated
/// blobs rejected; the relay never sees the plaintext or the name; oversize refused with the limit; an expired blob
/// gone; unsend deleting the blob; the gallery, its filters and ZIP export; ffmpeg previews and the note without it.
@Suite(.serialized)
struct MediaCommandTests {
    /// A relay with its blob directory, alice and bob who have written to each other (no message request).
    struct Setup {
        let scratch: Scratch
        let relay: RelayProcess
        let alice: User
        let bob: User
        let blobDirectory: URL
        let database: URL
        let log: URL

        init(relayArguments: [String] = [], environment: [String: String] = [:]) throws {
            scratch = try Scratch()
            database = scratch.path("relay.sqlite")
            log = scratch.path("relay.log")
            blobDirectory = scratch.path("blobs")
            relay = try RelayProcess(
                database: database, log: log, arguments: ["--blob-dir", blobDirectory.path] + relayArguments, environment: environment)
            alice = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
            bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
            #expect(try alice.flitz("init", "--relay", relay.url, "--handle", "alice").status == 0)
            #expect(try bob.flitz("init", "--relay", relay.url, "--handle", "bob").status == 0)
            #expect(try alice.flitz("send", "bob", "hi bob").status == 0)
            #expect(try bob.flitz("receive").status == 0)
            #expect(try bob.flitz("send", "alice", "hi alice").status == 0)
            #expect(try alice.flitz("receive").status == 0)
        }

        /// Every regular file under the blob directory.
        var blobFiles: [URL] {
            let enumerator = FileManager.default.enumerator(at: blobDirectory, includingPropertiesForKeys: [.isRegularFileKey])
            return (enumerator?.allObjects as? [URL] ?? []).filter { (try? $0.resourceValues(forKeys: [.isRegularFileKey]).isRegularFile) == true }
        }

        /// The relay's database files, log and blobs.
        var relayFiles: [URL] {
            let dbFiles = ((try? FileManager.default.contentsOfDirectory(at: scratch.url, includingPropertiesForKeys: nil)) ?? []).filter {
                $0.lastPathComponent.hasPrefix("relay.sqlite")
            }
            return dbFiles + [log] + blobFiles
        }
    }

    /// `flitz` for `user` with extra environment variables.
    static func flitz(_ user: User, environment: [String: String], _ arguments: [String]) throws -> CommandResult {
        try runProcess(Binaries.flitz, arguments + ["--home", user.home.path], environment: environment, in: user.scratch)
    }

    /// A file of `size` bytes of deterministic noise with a recognisable marker every 64 KiB.
    static func makeFile(_ url: URL, size: Int, marker: String) throws {
        var data = Data(count: size)
        var x: UInt32 = 12_345
        for i in 0..<size {
            x = x &* 1_664_525 &+ 1_013_904_223
            data[i] = UInt8(truncatingIfNeeded: x >> 24)
        }
        let mark = Data(marker.utf8)
        var offset = 0
        while offset + mark.count <= size {
            data.replaceSubrange(offset..<(offset + mark.count), with: mark)
            offset += 65_536
        }
        try data.write(to: url)
    }

    static func jsonRows(_ result: CommandResult) -> [[String: Any]] {
        result.lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    @Test func multiMegabyteFileInterruptedResumedAndDownloadedIdentical() throws {
        let setup = try Setup()
        let name = "holiday-secret-name-7f3a.bin"
        let marker = "PLAINTEXT-MARKER-91c2"
        let file = setup.scratch.path(name)
        try Self.makeFile(file, size: 3 * 1_048_576 + 12_345, marker: marker)
        // Parts of 1 MiB, and the process dies after the first one is committed.
        let small = ["FLITZ_TEST_UPLOAD_PART_BYTES": "1048576"]
        let killed = try Self.flitz(
            setup.alice, environment: small.merging(["FLITZ_FAILPOINT": "media.afterPatch"]) { $1 },
            ["send", "bob", "--file", file.path, "--caption", "the beach"])
        #expect(killed.status == 86, "\(killed)")
        #expect(try setup.bob.flitz("receive").lines.isEmpty)
        let resumed = try Self.flitz(setup.alice, environment: small, ["send", "bob", "--file", file.path, "--caption", "the beach"])
        #expect(resumed.status == 0, "\(resumed)")
        #expect(resumed.stderr.contains("resuming the unfinished upload"), "\(resumed)")
        #expect(resumed.stderr.contains("upload resumes at 1.0 MB"), "\(resumed)")
        let id = try #require(resumed.lines.last)
        // No temporary blob is left at the sender.
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: setup.alice.home.appendingPathComponent("media-tmp").path)) ?? []
        #expect(leftovers.isEmpty, "\(leftovers)")

        let received = try setup.bob.flitz("receive", "--json")
        #expect(received.status == 0, "\(received)")
        let row = try #require(Self.jsonRows(received).first { $0["id"] as? String == id }, "\(received)")
        #expect(row["from"] as? String == "alice")
        #expect(row["caption"] as? String == "the beach")
        #expect(row["fileName"] as? String == name)
        #expect((row["size"] as? NSNumber)?.intValue == 3 * 1_048_576 + 12_345)
        #expect(row["contentType"] as? String == "application/octet-stream")
        #expect(row["sentAt"] != nil)

        let out = setup.scratch.path("downloads")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        // A download killed past its first MiB leaves nothing in --out and resumes where it stopped.
        let cut = try Self.flitz(setup.bob, environment: ["FLITZ_FAILPOINT": "media.duringDownload"], ["download", id, "--out", out.path])
        #expect(cut.status == 86, "\(cut)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: out.path).isEmpty)
        let downloaded = try setup.bob.flitz("download", id, "--out", out.path)
        #expect(downloaded.status == 0, "\(downloaded)")
        #expect(downloaded.stderr.contains("download resumes at"), "\(downloaded)")
        #expect(downloaded.lines.last == out.appendingPathComponent(name).path)
        #expect(try Data(contentsOf: out.appendingPathComponent(name)) == Data(contentsOf: file))
        // A second download never overwrites the first.
        let again = try setup.bob.flitz("download", id, "--out", out.path)
        #expect(again.lines.last == out.appendingPathComponent("holiday-secret-name-7f3a (1).bin").path, "\(again)")

        // History and the sender's own view show it readably.
        let history = try setup.bob.flitz("history", "alice")
        #expect(history.stdout.contains("[\(name), 3.2 MB] the beach"), "\(history)")
        // The relay saw neither the plaintext nor the name.
        setup.relay.stop()
        #expect(!setup.blobFiles.isEmpty)
        #expect(anyFile(setup.relayFiles, contains: marker) == nil)
        #expect(anyFile(setup.relayFiles, contains: name) == nil)
        #expect(anyFile(setup.relayFiles, contains: "the beach") == nil)
    }

    @Test func tamperedAndTruncatedBlobsAreRejectedAndNotWritten() throws {
        let setup = try Setup()
        let file = setup.scratch.path("report.pdf")
        try Self.makeFile(file, size: 300_000, marker: "TAMPER-MARKER")
        let sent = try setup.alice.flitz("send", "bob", "--file", file.path)
        #expect(sent.status == 0, "\(sent)")
        let id = try #require(sent.lines.last)
        #expect(try setup.bob.flitz("receive").status == 0)
        let blob = try #require(setup.blobFiles.max { ($0.fileSize) < ($1.fileSize) })
        let original = try Data(contentsOf: blob)
        let out = setup.scratch.path("out")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)

        var tampered = original
        tampered[100_000] ^= 0x40
        try tampered.write(to: blob)
        let refused = try setup.bob.flitz("download", id, "--out", out.path)
        #expect(refused.status != 0, "\(refused)")
        #expect(refused.stderr.contains("does not verify") || refused.stderr.contains("does not match its hash"), "\(refused)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: out.path).isEmpty)

        try original.prefix(original.count - 70_000).write(to: blob)
        let truncated = try setup.bob.flitz("download", id, "--out", out.path)
        #expect(truncated.status != 0, "\(truncated)")
        // The relay checks the stored length before answering (attachments.md 4.4): a lost or shortened file is a 500,
        // never a short 200; the client's own truncation check stays for a body cut in transit.
        #expect(truncated.stderr.contains("HTTP 500") || truncated.stderr.contains("truncated"), "\(truncated)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: out.path).isEmpty)

        try original.write(to: blob)
        let good = try setup.bob.flitz("download", id, "--out", out.path)
        #expect(good.status == 0, "\(good)")
        #expect(try Data(contentsOf: out.appendingPathComponent("report.pdf")) == Data(contentsOf: file))
    }

    @Test func oversizeIsRefusedWithTheLimit() throws {
        let setup = try Setup(relayArguments: ["--blob-max-bytes", "100000"])
        let file = setup.scratch.path("big.bin")
        try Self.makeFile(file, size: 200_000, marker: "BIG")
        let refused = try setup.alice.flitz("send", "bob", "--file", file.path)
        #expect(refused.status == 3, "\(refused)")
        #expect(refused.stderr.contains("too large") && refused.stderr.contains("100000"), "\(refused)")
        #expect(try setup.bob.flitz("receive").lines.isEmpty)
        // A file under the limit still goes.
        let smallFile = setup.scratch.path("small.bin")
        try Self.makeFile(smallFile, size: 50_000, marker: "SMALL")
        #expect(try setup.alice.flitz("send", "bob", "--file", smallFile.path).status == 0)
    }

    @Test func anExpiredBlobIsGone() throws {
        var setup: Setup? = try Setup(relayArguments: ["--retention", "3600"])
        let file = setup!.scratch.path("old.txt")
        try Self.makeFile(file, size: 5_000, marker: "OLD")
        let sent = try setup!.alice.flitz("send", "bob", "--file", file.path)
        #expect(sent.status == 0, "\(sent)")
        let id = try #require(sent.lines.last)
        #expect(try setup!.bob.flitz("receive").status == 0)
        // The same relay two hours later.
        setup!.relay.stop()
        let later = try RelayProcess(
            database: setup!.database, log: setup!.log, port: setup!.relay.port,
            arguments: ["--blob-dir", setup!.blobDirectory.path, "--retention", "3600"], environment: ["FLITZ_TEST_CLOCK_OFFSET": "7200"])
        defer { later.stop() }
        let out = setup!.scratch.path("out")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let gone = try setup!.bob.flitz("download", id, "--out", out.path)
        #expect(gone.status == 3, "\(gone)")
        #expect(gone.stderr.contains("no longer has this file"), "\(gone)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: out.path).isEmpty)
        setup = nil
    }

    @Test func unsendDeletesTheBlob() throws {
        let setup = try Setup()
        let file = setup.scratch.path("oops.jpg")
        try Self.makeFile(file, size: 40_000, marker: "OOPS")
        let sent = try setup.alice.flitz("send", "bob", "--file", file.path, "--caption", "wrong chat")
        let id = try #require(sent.lines.last, "\(sent)")
        let unsent = try setup.alice.flitz("unsend", id)
        #expect(unsent.status == 0, "\(unsent)")
        #expect(unsent.stdout.contains("blobs_deleted: 1"), "\(unsent)")
        #expect(setup.blobFiles.isEmpty, "\(setup.blobFiles)")
        #expect(try setup.alice.flitz("media", "bob").lines.isEmpty)
    }

    @Test func galleryFiltersAndZipExport() throws {
        let setup = try Setup()
        let photo = setup.scratch.path("photo.png"), doc = setup.scratch.path("notes.txt")
        try Self.makeFile(photo, size: 20_000, marker: "PNG")
        try Data("meeting notes\n".utf8).write(to: doc)
        let env = ["PATH": "/nonexistent"]  // no ffmpeg: the fake PNG is not an image ffmpeg could read
        #expect(try Self.flitz(setup.alice, environment: env, ["send", "bob", "--file", photo.path, "--caption", "look"]).status == 0)
        #expect(try setup.alice.flitz("send", "bob", "--file", doc.path).status == 0)
        #expect(try setup.alice.flitz("send", "bob", "--location", "52.52,13.405", "--label", "Berlin").status == 0)
        #expect(try setup.alice.flitz("send", "bob", "just text").status == 0)
        // A southern latitude (a leading `-`) is the option's value, not an option; out of range is a usage error.
        let south = try setup.alice.flitz("send", "bob", "--location", "-33.9249,18.4241", "--label", "Cape Town")
        #expect(south.status == 0, "\(south)")
        for bad in ["91,0", "0,-181", "nan,0", "inf,1"] {
            let refused = try setup.alice.flitz("send", "bob", "--location", bad)
            #expect(refused.status == 64, "\(refused)")
            #expect(refused.stderr.contains("latitude must be between -90 and 90"), "\(refused)")
        }
        let received = try setup.bob.flitz("receive")
        #expect(received.stdout.contains("[photo.png, 20 kB] look"), "\(received)")
        #expect(received.stdout.contains("[location 52.52,13.405 Berlin]"), "\(received)")

        let all = Self.jsonRows(try setup.bob.flitz("media", "alice", "--json"))
        #expect(all.map { $0["kind"] as? String } == ["location", "location", "document", "image"])
        #expect(all.first?["latitude"] as? Double == -33.9249 && all.first?["label"] as? String == "Cape Town")
        #expect(all.allSatisfy { $0["from"] as? String == "alice" && $0["sentAt"] != nil })
        #expect(all.last?["caption"] as? String == "look")
        #expect(Self.jsonRows(try setup.bob.flitz("media", "alice", "--type", "image", "--json")).map { $0["fileName"] as? String } == ["photo.png"])
        #expect(Self.jsonRows(try setup.bob.flitz("media", "alice", "--type", "video", "--json")).isEmpty)
        let text = try setup.bob.flitz("media", "alice", "--type", "document")
        #expect(text.stdout.contains("alice: [notes.txt, 14 B]"), "\(text)")

        let zip = setup.scratch.path("export.zip")
        let exported = try setup.bob.flitz("media", "alice", "--export", zip.path)
        #expect(exported.status == 0, "\(exported)")
        let unzipped = setup.scratch.path("unzipped")
        // Python's zipfile, an unzipper independent of ZIPFoundation; python3 is installed by scripts/install-deps.sh
        // (unzip is not on a fresh Debian 12).
        let unzip = try runProcess(
            URL(fileURLWithPath: "/usr/bin/env"), ["python3", "-m", "zipfile", "-e", zip.path, unzipped.path], in: setup.scratch)
        #expect(unzip.status == 0, "\(unzip)")
        #expect(try Data(contentsOf: unzipped.appendingPathComponent("photo.png")) == Data(contentsOf: photo))
        #expect(try Data(contentsOf: unzipped.appendingPathComponent("notes.txt")) == Data(contentsOf: doc))
        #expect(try String(contentsOf: unzipped.appendingPathComponent("locations.txt"), encoding: .utf8).contains("52.52,13.405\tBerlin"))
        // Images only; an existing ZIP is never overwritten.
        let images = setup.scratch.path("images.zip")
        #expect(try setup.bob.flitz("media", "alice", "--type", "image", "--export", images.path).stdout.contains("wrote 1 entry to"))
        #expect(try setup.bob.flitz("media", "alice", "--export", zip.path).status != 0)
        // Clear one-line refusals, before anything is uploaded or downloaded.
        let missing = try setup.bob.flitz("media", "alice", "--export", setup.scratch.path("nowhere/out.zip").path)
        #expect(missing.status != 0 && missing.stderr.contains("no directory"), "\(missing)")
        #expect(!missing.stderr.contains("NSError") && !missing.stderr.contains("Domain="), "\(missing)")
        let notDirectory = try setup.bob.flitz("download", all.first { $0["kind"] as? String == "document" }?["id"] as? String ?? "", "--out", doc.path)
        #expect(notDirectory.status != 0 && notDirectory.stderr.contains("is not a directory"), "\(notDirectory)")
        let directory = try setup.alice.flitz("send", "bob", "--file", setup.scratch.url.path)
        #expect(directory.status != 0 && directory.stderr.contains("is a directory"), "\(directory)")
        let voice = try setup.alice.flitz("send", "bob", "--file", doc.path, "--voice")
        #expect(voice.status == 64 && voice.stderr.contains("--voice needs an audio file"), "\(voice)")
        let blobsBefore = setup.blobFiles.count
        let nobody = try setup.alice.flitz("send", "nosuchuser", "--file", photo.path)
        #expect(nobody.status == 3 && nobody.stderr.contains("no such handle"), "\(nobody)")
        #expect(!nobody.stderr.contains("upload"), "\(nobody)")
        #expect(setup.blobFiles.count == blobsBefore)
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/ffmpeg")))
    func ffmpegPreviewsThroughTheCLI() throws {
        let setup = try Setup()
        let image = setup.scratch.path("test.jpg"), video = setup.scratch.path("clip.mp4")
        let ffmpeg = URL(fileURLWithPath: "/usr/bin/ffmpeg")
        #expect(try runProcess(ffmpeg, ["-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=800x600:rate=1", "-frames:v", "1", image.path], in: setup.scratch).status == 0)
        #expect(
            try runProcess(
                ffmpeg,
                ["-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=2", "-c:v", "libx264", "-pix_fmt", "yuv420p", video.path],
                in: setup.scratch
            ).status == 0)
        let sentImage = try setup.alice.flitz("send", "bob", "--file", image.path)
        #expect(sentImage.status == 0 && !sentImage.stderr.contains("ffmpeg"), "\(sentImage)")
        #expect(try setup.alice.flitz("send", "bob", "--file", video.path).status == 0)
        let rows = Self.jsonRows(try setup.bob.flitz("receive", "--json"))
        let photo = try #require(rows.first { $0["fileName"] as? String == "test.jpg" })
        #expect(photo["kind"] as? String == "image" && photo["contentType"] as? String == "image/jpeg")
        #expect((photo["width"] as? NSNumber)?.intValue == 800 && (photo["height"] as? NSNumber)?.intValue == 600)
        #expect((1...24_576).contains((photo["thumbnailBytes"] as? NSNumber)?.intValue ?? 0))
        let clip = try #require(rows.first { $0["fileName"] as? String == "clip.mp4" })
        #expect(clip["kind"] as? String == "video")
        #expect((1_900...2_200).contains((clip["durationMs"] as? NSNumber)?.intValue ?? 0), "\(clip)")
        #expect((clip["width"] as? NSNumber)?.intValue == 320)
        #expect(((clip["thumbnailBytes"] as? NSNumber)?.intValue ?? 0) > 0)
    }

    @Test func withoutFFmpegOneLineSaysWhy() throws {
        let setup = try Setup()
        let image = setup.scratch.path("pic.jpg")
        try Self.makeFile(image, size: 10_000, marker: "JPG")
        let sent = try Self.flitz(setup.alice, environment: ["PATH": "/nonexistent"], ["send", "bob", "--file", image.path])
        #expect(sent.status == 0, "\(sent)")
        let notes = sent.stderr.split(separator: "\n").filter { $0.contains("ffmpeg") }
        #expect(notes.count == 1 && notes[0].contains("not installed"), "\(sent)")
        let row = try #require(Self.jsonRows(try setup.bob.flitz("receive", "--json")).first)
        #expect(row["thumbnailBytes"] == nil && row["width"] == nil)
    }
}

extension URL {
    fileprivate var fileSize: Int { (try? resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0 }
}
