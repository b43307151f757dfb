import FlitzCrypto
import FlitzProtocol
import Foundation
import GRDB
import Testing

@testable import FlitzClient

/// A scratch directory for media tests, removed at the end.
final class MediaScratch {
    let url: URL
    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-media-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(at: url) }
    func path(_ name: String) -> URL { url.appendingPathComponent(name) }
}

/// Deterministic bytes that are not all zero (so padding and plaintext differ).
func mediaTestBytes(_ count: Int, seed: UInt8 = 7) -> Data {
    var data = Data(count: count)
    var x = UInt32(seed) | 1
    for i in 0..<count {
        x = x &* 1_664_525 &+ 1_013_904_223
        data[i] = UInt8(truncatingIfNeeded: x >> 24)
    }
    return data
}

/// Attachment encryption on files (MediaFiles, attachments.md 2), ffmpeg previews (MediaTools) and the attachments
/// rows of a location sent through the in-process relay.
@Suite(.serialized)
struct MediaClientTests {
    /// The streamed blob equals the in-memory reference (`AttachmentCipher`) for sizes below the padding floor, at a
    /// chunk boundary and spanning several chunks with a short last one; decryption gives the file back.
    @Test(arguments: [0, 1, 1_024, 65_536, 200_000, 3 * 1_048_576 + 17])
    func streamingEncryptionMatchesTheReference(size: Int) throws {
        let scratch = try MediaScratch()
        let plaintext = mediaTestBytes(size)
        let source = scratch.path("in"), blob = scratch.path("blob"), out = scratch.path("out")
        try plaintext.write(to: source)
        let key = SecretBytes(mediaTestBytes(32, seed: 3))
        let sha = try MediaFiles.encrypt(source: source, plaintextSize: UInt64(size), to: blob, key: key)
        let reference = try AttachmentCipher.encrypt(plaintext, attachmentKey: key)
        let streamed = try Data(contentsOf: blob)
        #expect(streamed == reference.blob)
        #expect(sha == reference.sha256)
        #expect(UInt64(streamed.count) == AttachmentLayout(plaintextSize: UInt64(size)).ciphertextSize)
        let pointer = AttachmentPointer(
            blobID: Data(count: 16), key: key, plaintextSize: UInt64(size), contentType: "", fileName: "f", ciphertextSHA256: sha, kind: .document,
            blobExpiresAtMilliseconds: 0)
        try MediaFiles.decrypt(blob: blob, pointer: pointer, to: out)
        #expect(try Data(contentsOf: out) == plaintext)
    }

    /// A tampered, truncated or extended blob, and one whose hash matches but whose chunk or padding does not, is
    /// rejected with the reason, and nothing is left where the file would go.
    @Test func badBlobsAreRejectedAndNothingIsWritten() throws {
        let scratch = try MediaScratch()
        let size = 150_000
        let plaintext = mediaTestBytes(size)
        let key = SecretBytes(mediaTestBytes(32, seed: 9))
        let (blob, sha) = try AttachmentCipher.encrypt(plaintext, attachmentKey: key)
        let pointer = AttachmentPointer(
            blobID: Data(count: 16), key: key, plaintextSize: UInt64(size), contentType: "", fileName: "f", ciphertextSHA256: sha, kind: .document,
            blobExpiresAtMilliseconds: 0)
        func reject(_ bytes: Data, pointer: AttachmentPointer, _ reason: String) throws {
            let file = scratch.path("blob-\(UUID().uuidString)"), out = scratch.path("out-\(UUID().uuidString)")
            try bytes.write(to: file)
            do {
                try MediaFiles.decrypt(blob: file, pointer: pointer, to: out)
                Issue.record("accepted a bad blob (\(reason))")
            } catch let error as ClientError {
                #expect(error.message.contains(reason), "\(error.message)")
            }
            #expect(!FileManager.default.fileExists(atPath: out.path))
        }
        var tampered = blob
        tampered[70_000] ^= 0x01
        try reject(tampered, pointer: pointer, "does not match its hash")
        try reject(blob.prefix(blob.count - 100), pointer: pointer, "blob is truncated")
        try reject(blob.prefix(2 * AttachmentLayout.sealedChunkSize), pointer: pointer, "blob is truncated")
        try reject(blob + Data([0]), pointer: pointer, "longer")
        // The hash is right for the tampered blob (a sender that lies): the chunk check still refuses it.
        var lying = pointer
        lying.ciphertextSHA256 = SHA256.hash(tampered)
        try reject(tampered, pointer: lying, "chunk 1 does not verify")
        // A truncated blob re-hashed by a liar: its last whole chunk was not sealed as the last.
        let cut = blob.prefix(2 * AttachmentLayout.sealedChunkSize)
        var shorter = AttachmentPointer(
            blobID: Data(count: 16), key: key, plaintextSize: UInt64(2 * AttachmentLayout.chunkSize), contentType: "", fileName: "f",
            ciphertextSHA256: SHA256.hash(cut), kind: .document, blobExpiresAtMilliseconds: 0)
        shorter.ciphertextSize = AttachmentLayout(plaintextSize: shorter.plaintextSize).ciphertextSize
        if UInt64(cut.count) == shorter.ciphertextSize { try reject(cut, pointer: shorter, "does not verify") }
        // Non-zero padding under a valid seal and hash.
        var padded = plaintext
        padded.append(Data(repeating: 1, count: Int(AttachmentLayout(plaintextSize: UInt64(size)).paddedSize) - size))
        let keys = try AttachmentKeys(attachmentKey: key)
        let layout = AttachmentLayout(plaintextSize: UInt64(size))
        var badPadding = Data()
        for index in 0..<layout.chunkCount {
            let range = layout.plaintextRange(ofChunk: index)
            badPadding.append(keys.sealChunk(padded[Int(range.lowerBound)..<Int(range.upperBound)], index: UInt32(index), isLast: layout.isLast(index)))
        }
        var padPointer = pointer
        padPointer.ciphertextSHA256 = SHA256.hash(badPadding)
        try reject(badPadding, pointer: padPointer, "padding is not zero")
    }

    @Test func namesAndAddresses() {
        #expect(BlobHTTP.base(of: "ws://127.0.0.1:8080") == "http://127.0.0.1:8080")
        #expect(BlobHTTP.base(of: "wss://relay.example/v1/ws") == "https://relay.example")
        #expect(BlobHTTP.base(of: "ws://h:1/") == "http://h:1")
        let id = Data(repeating: 0xab, count: 16)
        #expect(FlitzClient.safeFileName("../../etc/passwd", messageID: id, contentType: "") == "etcpasswd")
        #expect(FlitzClient.safeFileName(".bashrc", messageID: id, contentType: "") == "bashrc")
        #expect(FlitzClient.safeFileName("a\u{1b}[31mb.txt", messageID: id, contentType: "") == "a[31mb.txt")
        #expect(FlitzClient.safeFileName("", messageID: id, contentType: "image/png") == "attachment-abababab.png")
        #expect(FlitzClient.safeFileName("invoice\u{202E}fdp.exe", messageID: id, contentType: "") == "invoice_fdp.exe")
        #expect(FlitzClient.safeFileName("a\u{200B}b.txt", messageID: id, contentType: "") == "a_b.txt")
        #expect(FlitzClient.safeFileName("-rf", messageID: id, contentType: "") == "_-rf")
        #expect(FlitzClient.safeFileName(".-x", messageID: id, contentType: "") == "_-x")
        #expect(FlitzClient.pointerFileName("x/y\\z\n.jpg") == "x_y_z_.jpg")
        #expect(FlitzClient.pointerFileName(String(repeating: "é", count: 200)).utf8.count <= 255)
        #expect(MediaTools.kind(of: MediaTools.contentType(of: "IMG.JPG")) == .image)
        #expect(MediaTools.kind(of: MediaTools.contentType(of: "clip.mov")) == .video)
        #expect(MediaTools.kind(of: MediaTools.contentType(of: "note.ogg")) == .audio)
        #expect(MediaTools.kind(of: MediaTools.contentType(of: "report.pdf")) == .document)
        #expect(FlitzClient.formatBytes(2_100_000) == "2.1 MB")
        #expect(
            MediaTools.childEnvironment(["PATH=/usr/bin", "FLITZ_PASSPHRASE=secret", "FLITZ_NEW_PASSPHRASE=new=x", "FLITZ_HOME=/h"])
                == ["PATH=/usr/bin", "FLITZ_HOME=/h"])
        #expect(throws: Never.self) { try FlitzClient.checkUploadPath("/v1/uploads") }
        for bad in ["v1/uploads", "//evil.example/up", "/v1/uploads@evil", "/up?x=1", "/up#f", "/a//b", "http://evil/up"] {
            #expect(throws: ClientError.self) { try FlitzClient.checkUploadPath(bad) }
        }
    }

    /// An existing file is never overwritten: the next free `NAME (n).EXT` is taken.
    @Test func downloadsNeverOverwrite() throws {
        let scratch = try MediaScratch()
        try Data("a".utf8).write(to: scratch.path("photo.jpg"))
        try Data("b".utf8).write(to: scratch.path("photo (1).jpg"))
        #expect(FlitzClient.freeDestination(in: scratch.url, name: "photo.jpg").lastPathComponent == "photo (2).jpg")
        #expect(FlitzClient.freeDestination(in: scratch.url, name: "new.jpg").lastPathComponent == "new.jpg")
    }

    /// With ffmpeg installed (`make test` installs it): a generated image gets its dimensions and a JPEG thumbnail
    /// within the limits, a generated video its duration, dimensions and a poster frame, an audio file its duration.
    @Test(.enabled(if: MediaTools.find("ffmpeg") != nil && MediaTools.find("ffprobe") != nil))
    func ffmpegPreviews() throws {
        let scratch = try MediaScratch()
        let ffmpeg = MediaTools.find("ffmpeg")!
        let image = scratch.path("test.png"), video = scratch.path("clip.mp4"), audio = scratch.path("tone.wav")
        #expect(MediaTools.run(ffmpeg, ["-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=1280x720:rate=1", "-frames:v", "1", image.path]) == 0)
        #expect(
            MediaTools.run(
                ffmpeg,
                ["-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=25:duration=2", "-f", "lavfi", "-i", "sine=duration=2",
                 "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", video.path]) == 0)
        #expect(MediaTools.run(ffmpeg, ["-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=3", audio.path]) == 0)
        let environment = ProcessInfo.processInfo.environment

        let (photo, photoNote) = MediaTools.preview(image, kind: .image, scratch: scratch.url, environment: environment)
        #expect(photoNote == nil)
        #expect(photo.width == 1280 && photo.height == 720)
        #expect(photo.durationMilliseconds == 0)
        #expect(!photo.thumbnail.isEmpty && photo.thumbnail.count <= AttachmentPointer.maxThumbnailBytes)
        #expect(photo.thumbnail.prefix(2) == Data([0xff, 0xd8]))  // JPEG
        let thumb = scratch.path("thumb.jpg")
        try photo.thumbnail.write(to: thumb)
        let probed = MediaTools.probe(thumb, ffprobe: MediaTools.find("ffprobe")!, scratch: scratch.url)
        #expect(probed?.width == 320 && probed?.height == 180)

        let (clip, _) = MediaTools.preview(video, kind: .video, scratch: scratch.url, environment: environment)
        #expect(clip.width == 640 && clip.height == 360)
        #expect((1_900...2_200).contains(clip.durationMilliseconds), "\(clip.durationMilliseconds)")
        #expect(!clip.thumbnail.isEmpty && clip.thumbnail.count <= AttachmentPointer.maxThumbnailBytes)

        let (tone, _) = MediaTools.preview(audio, kind: .audio, scratch: scratch.url, environment: environment)
        #expect((2_900...3_100).contains(tone.durationMilliseconds), "\(tone.durationMilliseconds)")
        #expect(tone.thumbnail.isEmpty)
        // Scratch files of the tools are gone.
        let left = try FileManager.default.contentsOfDirectory(atPath: scratch.url.path).filter { $0.hasPrefix("probe-") || $0.hasPrefix("thumb-") }
        #expect(left.isEmpty)
    }

    /// Without ffmpeg on PATH, a photo goes without preview and one note says why; a document needs no note.
    @Test func withoutFFmpegANoteSaysWhy() throws {
        let scratch = try MediaScratch()
        let (preview, note) = MediaTools.preview(scratch.path("x.jpg"), kind: .image, scratch: scratch.url, environment: ["PATH": scratch.url.path])
        #expect(preview.thumbnail.isEmpty && preview.width == 0)
        #expect(note?.contains("ffmpeg is not installed") == true)
        #expect(MediaTools.preview(scratch.path("x.pdf"), kind: .document, scratch: scratch.url, environment: ["PATH": ""]).note == nil)
    }

    /// A location goes through the normal send path: one attachments row at the sender and the recipient in the
    /// message's transaction; receive and history show it; the gallery filters by kind; a delete for everyone removes
    /// the rows.
    @Test func locationRowsFollowTheMessage() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let id = try await alice.sendLocation(to: "bob", latitude: 52.52, longitude: 13.405, label: "Berlin", caption: "here")
        let inbox = try await bob.receiveAll()
        let received = try #require(inbox.messages.first { $0.messageID == id })
        #expect(received.text == "here")
        #expect(received.details.media?.kind == "location")
        #expect(received.details.media?.latitude == 52.52 && received.details.media?.longitude == 13.405)
        #expect(received.details.media?.label == "Berlin")
        #expect(try bob.history(with: "alice").first { $0.messageID == id }?.details.media?.label == "Berlin")
        #expect(try alice.gallery(with: "bob").map(\.messageID) == [id])
        #expect(try bob.gallery(with: "alice", kind: "location").map(\.messageID) == [id])
        #expect(try bob.gallery(with: "alice", kind: "image").isEmpty)
        await #expect(throws: ClientError.self) { try await bob.download(id, to: FileManager.default.temporaryDirectory) }
        await #expect(throws: ClientError.self) { try await alice.sendLocation(to: "bob", latitude: 91, longitude: 0) }
        try await alice.deleteMessage(id, forEveryone: true)
        _ = try await bob.receiveAll()
        #expect(try bob.gallery(with: "alice").isEmpty)
        #expect(try alice.gallery(with: "bob").isEmpty)
        let rows = try await bob.store.dbQueue.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM attachments") }
        #expect(rows == 0)
    }

    /// A delete for everyone removes the downloaded copy only while it is exactly the file `download` recorded
    /// (device, inode, size, mtime): an edited file, or another file saved under that name since, is left.
    @Test func deletingRemovesOnlyTheUnchangedDownload() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        let scratch = try MediaScratch()
        let ids = [
            try await alice.sendLocation(to: "bob", latitude: 1, longitude: 1),
            try await alice.sendLocation(to: "bob", latitude: 2, longitude: 2),
            try await alice.sendLocation(to: "bob", latitude: 3, longitude: 3),
        ]
        _ = try await bob.receiveAll()
        let files = ["same.bin", "edited.bin", "replaced.bin"].map { scratch.path($0) }
        for (id, file) in zip(ids, files) {
            try Data("downloaded".utf8).write(to: file)
            let identity = try #require(DownloadedFileIdentity(path: file.path))
            try await bob.store.dbQueue.write { db in
                try db.execute(
                    sql: """
                        UPDATE attachments SET local_path = ?, local_device = ?, local_inode = ?, local_size = ?, local_mtime_ns = ?
                        WHERE message_seq = (SELECT seq FROM messages WHERE message_id = ?)
                        """,
                    arguments: [file.path, identity.device, identity.inode, identity.size, identity.modifiedNanoseconds, id])
            }
        }
        // Edited in place (size changes), and replaced by an unrelated file under the same name (new inode).
        let handle = try FileHandle(forWritingTo: files[1])
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(" and edited".utf8))
        try handle.close()
        // Made while the old one exists (so its inode differs), then renamed over it.
        try Data("downloaded".utf8).write(to: scratch.path("other.bin"))
        #expect(rename(scratch.path("other.bin").path, files[2].path) == 0)
        for id in ids { try await alice.deleteMessage(id, forEveryone: true) }
        _ = try await bob.receiveAll()
        #expect(!FileManager.default.fileExists(atPath: files[0].path))
        #expect(try Data(contentsOf: files[1]) == Data("downloaded and edited".utf8))
        #expect(try Data(contentsOf: files[2]) == Data("downloaded".utf8))
        await relay.stop()
    }
}
