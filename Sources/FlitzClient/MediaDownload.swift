import FlitzCrypto
import FlitzProtocol
import Foundation
import GRDB
import ZIPFoundation

/// One media message in a conversation's gallery (`flitz media`).
public struct MediaItem: Sendable {
    /// 16-byte message id.
    public var messageID: Data
    /// Its author's handle.
    public var author: String
    /// The other party.
    public var peer: String
    /// Whether this account sent it.
    public var outgoing: Bool
    /// The relay's acceptance time (the sender's time while unknown).
    public var sentAt: Date
    /// The caption (the `Text` body; may be empty).
    public var caption: String
    /// The file or location.
    public var media: MediaSummary
}

extension FlitzClient {
    // MARK: gallery

    /// The media messages of the conversation with `handle`, newest first, optionally of one kind
    /// (`image`, `video`, `audio`, `document`, `location`). Deleted and disappeared messages are not listed.
    /// - Throws: `ClientError(.invalidArgument)` for an unknown kind; database errors.
    public func gallery(with handle: String, kind: String? = nil) throws -> [MediaItem] {
        let account = try requireAccount()
        if let kind, !(AttachmentPointer.Kind.allCases.map(\.rawValue) + ["location"]).contains(kind) {
            throw ClientError(.invalidArgument, "unknown media type \(kind): use image, video, audio, document or location")
        }
        try sweepExpired()
        return try store.dbQueue.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT a.*, m.message_id, m.outgoing, m.peer, m.text, m.accepted_at_ms, m.sent_at_ms FROM attachments a
                    JOIN messages m ON m.seq = a.message_seq
                    WHERE m.peer = ? AND m.deleted = 0 AND (? IS NULL OR a.kind = ?)
                    ORDER BY CASE WHEN m.accepted_at_ms > 0 THEN m.accepted_at_ms ELSE m.sent_at_ms END DESC, m.seq DESC
                    """,
                arguments: [handle, kind, kind]
            ).map { Self.mediaItem($0, account: account, db) }
        }
    }

    static func mediaItem(_ row: Row, account: AccountRecord, _ db: Database?) -> MediaItem {
        let outgoing: Bool = row["outgoing"]
        let peer: String = row["peer"]
        let accepted: Int64 = row["accepted_at_ms"] ?? 0
        let sent: Int64 = row["sent_at_ms"] ?? 0
        return MediaItem(
            messageID: row["message_id"], author: outgoing ? account.handle : peer, peer: peer, outgoing: outgoing,
            sentAt: Date(timeIntervalSince1970: Double(accepted > 0 ? accepted : sent) / 1000), caption: row["text"], media: mediaSummary(row, db))
    }

    // MARK: download

    /// Downloads, verifies and decrypts the file of media message `messageID` into `directory`
    /// (`protocol/attachments.md` sections 2.5 and 5) and returns where it was written. The blob goes to a kept
    /// temporary file in `HOME/media-tmp` (an interrupted download resumes with a `Range` request from the last chunk
    /// that verifies); the file is decrypted only after its size and SHA-256 match, and moved into `directory` only
    /// when every chunk and the padding verified. An existing file is never overwritten: a free name `NAME (n).EXT`
    /// is taken. The name is the pointer's, made safe (no path, no leading dot).
    /// - Throws: `ClientError`: `.unknownMessage` (no media message with that id), `.invalidArgument` (a location,
    ///   no such directory), `.protocolFailure` ("blob does not match its hash", "chunk N does not verify", "blob is
    ///   truncated": nothing is written into `directory`), `.refused(.unknownEnvelope)` (the relay no longer has the blob: expired, unsent, deleted),
    ///   `.relayUnreachable`.
    public func download(
        _ messageID: Data, to directory: URL, onProgress: @escaping @Sendable (TransferProgress) -> Void = { _ in }
    ) async throws -> URL {
        let account = try requireAccount()
        try sweepExpired()
        guard let row = try store.dbQueue.read({ db in
            try Row.fetchOne(
                db,
                sql: """
                    SELECT a.*, m.message_id, m.outgoing, m.peer, m.text, m.accepted_at_ms, m.sent_at_ms FROM attachments a
                    JOIN messages m ON m.seq = a.message_seq WHERE m.message_id = ? AND m.deleted = 0 ORDER BY m.seq DESC LIMIT 1
                    """,
                arguments: [messageID])
        }) else { throw ClientError(.unknownMessage, "no media message with id \(messageID.hexString) on this device") }
        let seq: Int64 = row["message_seq"]
        guard let sealed = row["pointer"] as Data?, let pointer = Self.decodePointer(try store.openSecret(sealed, .attachmentPointer)) else {
            let item = Self.mediaItem(row, account: account, nil)
            if item.media.kind == "location" {
                throw ClientError(.invalidArgument, "that message is a location (\(item.media.latitude ?? 0),\(item.media.longitude ?? 0)); there is no file to download")
            }
            throw ClientError(.protocolFailure, "the attachment's pointer is unreadable")
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory) else {
            throw ClientError(.invalidArgument, "no directory \(directory.path)")
        }
        guard isDirectory.boolValue else { throw ClientError(.invalidArgument, "\(directory.path) is not a directory") }
        let scratch = try mediaTemporaryDirectory()
        let blobHex = pointer.blobID.hexString
        let blobFile = scratch.appendingPathComponent("download-\(blobHex).blob")
        let plainFile = scratch.appendingPathComponent("download-\(blobHex).plain")
        try await fetchBlob(pointer, into: blobFile, relayURL: account.relayURL, onProgress: onProgress)
        do {
            try MediaFiles.decrypt(blob: blobFile, pointer: pointer, to: plainFile)
        } catch {
            try? FileManager.default.removeItem(at: blobFile)  // a bad blob is not resumed from
            throw error
        }
        try? FileManager.default.removeItem(at: blobFile)
        let destination = Self.freeDestination(in: directory, name: Self.safeFileName(pointer.fileName, messageID: messageID, contentType: pointer.contentType))
        do {
            try FileManager.default.moveItem(at: plainFile, to: destination)
        } catch {
            try? FileManager.default.removeItem(at: plainFile)
            throw ClientError(.invalidArgument, "cannot write \(destination.path): \(error.localizedDescription)")
        }
        try? FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: destination.path)
        // Its identity, so that deleting the message later removes this file only while it is unchanged.
        let identity = DownloadedFileIdentity(path: destination.path)
        try await store.dbQueue.write { db in
            try db.execute(
                sql: """
                    UPDATE attachments SET local_path = ?, local_device = ?, local_inode = ?, local_size = ?, local_mtime_ns = ?
                    WHERE message_seq = ?
                    """,
                arguments: [destination.path, identity?.device, identity?.inode, identity?.size, identity?.modifiedNanoseconds, seq])
        }
        return destination
    }

    /// Brings the blob of `pointer` into `file`, resuming a kept partial file from its last whole chunk that
    /// opens (HTTP `Range`); each chunk is checked as it arrives, so a tampered one stops the transfer at once.
    func fetchBlob(_ pointer: AttachmentPointer, into file: URL, relayURL: String, onProgress: @escaping @Sendable (TransferProgress) -> Void) async throws {
        let layout = AttachmentLayout(plaintextSize: pointer.plaintextSize)
        guard pointer.ciphertextSize == layout.ciphertextSize else {
            throw ClientError(.invalidArgument, "the attachment's pointer is malformed (its sizes do not match)")
        }
        let keys = try AttachmentKeys(attachmentKey: pointer.key)
        let sealedChunk = UInt64(AttachmentLayout.sealedChunkSize)
        // Keep the whole chunks of an earlier run that still open; drop the rest.
        var verified: UInt64 = 0
        if let existing = try? FileHandle(forReadingFrom: file) {
            defer { try? existing.close() }
            var index: UInt64 = 0
            while index < layout.chunkCount {
                let range = layout.ciphertextRange(ofChunk: index)
                guard let sealed = try? existing.read(upToCount: range.count), sealed.count == range.count,
                    (try? MediaFiles.openChunk(sealed, index: index, layout: layout, keys: keys)) != nil
                else { break }
                verified = range.upperBound
                index += 1
            }
        } else {
            _ = FileManager.default.createFile(atPath: file.path, contents: nil, attributes: [.posixPermissions: 0o600])
        }
        let writer = try FileHandle(forWritingTo: file)
        defer { try? writer.close() }
        try writer.truncate(atOffset: verified)
        if verified >= layout.ciphertextSize { return }
        let resumedFrom = verified
        if verified > 0 { logger.debug("resuming a download", metadata: ["offset": "\(verified)"]) }
        try await BlobHTTP.with(relayURL: relayURL, caFile: caFile) { http in
            var pending = Data()  // bytes of the chunk not yet complete
            var received = verified
            var nextChunk = verified / sealedChunk
            var lastReported: UInt64 = 0
            onProgress(TransferProgress(bytes: received, total: layout.ciphertextSize, resumedFrom: resumedFrom))
            let sink: (Data) throws -> Void = { piece in
                guard received + UInt64(piece.count) <= layout.ciphertextSize else {
                    throw ClientError(.protocolFailure, "rejected the file: blob is longer than its pointer says")
                }
                try writer.write(contentsOf: piece)
                received += UInt64(piece.count)
                pending.append(piece)
                while nextChunk < layout.chunkCount {
                    let size = layout.ciphertextRange(ofChunk: nextChunk).count
                    guard pending.count >= size else { break }
                    _ = try MediaFiles.openChunk(pending.prefix(size), index: nextChunk, layout: layout, keys: keys)
                    pending = Data(pending.dropFirst(size))
                    nextChunk += 1
                }
                if received - lastReported >= 1 << 20 || received == layout.ciphertextSize {
                    lastReported = received
                    onProgress(TransferProgress(bytes: received, total: layout.ciphertextSize, resumedFrom: resumedFrom))
                }
                if received >= 1 << 20 && received < layout.ciphertextSize { Failpoint.hit("media.duringDownload") }
            }
            /// Back to the end of the last chunk that verified.
            func rewind(to chunk: UInt64) throws {
                received = chunk * sealedChunk
                nextChunk = chunk
                pending = Data()
                try writer.truncate(atOffset: received)
            }
            var status = 0
            var brokenWithoutProgress = 0
            while true {
                let chunkBefore = nextChunk
                do {
                    var starts: Bool
                    (status, starts) = try await http.download(blobID: pointer.blobID.hexString, from: received, sink: sink)
                    if !starts, status == 200 || status == 206 || status == 416 {
                        // The relay did not resume where asked: fetch the whole blob again.
                        try rewind(to: 0)
                        (status, starts) = try await http.download(blobID: pointer.blobID.hexString, from: 0, sink: sink)
                    }
                    break
                } catch is BlobHTTP.BodyBrokeOff {
                    // The body broke off. Once more from the last verified chunk; a relay that breaks off twice with no
                    // new chunk has fewer bytes than it announced: its blob is truncated.
                    let progressed = nextChunk > chunkBefore
                    brokenWithoutProgress = progressed ? 0 : brokenWithoutProgress + 1
                    if brokenWithoutProgress >= 2 {
                        try? FileManager.default.removeItem(at: file)
                        throw ClientError(
                            .protocolFailure,
                            "rejected the file: blob is truncated (the relay sends only \(received) of \(layout.ciphertextSize) bytes)")
                    }
                    try rewind(to: nextChunk)
                }
            }
            switch status {
            case 200, 206: break
            case 404:
                throw ClientError(.refused(.unknownEnvelope), "the relay no longer has this file (it expired, was unsent or deleted)")
            default:
                throw ClientError(.protocolFailure, "the relay refused the download (HTTP \(status))")
            }
            try writer.synchronize()
        }
    }

    /// The name to write a received file under: the pointer's name without any path, control character or leading
    /// dot, its Unicode format characters (category Cf: bidi overrides such as U+202E, zero-width characters) shown
    /// as `_` so the name reads as what it is, and `_` before a leading `-` (never taken for an option by a shell
    /// command); `attachment-ID8` (with an extension from the content type when known) when nothing is left.
    static func safeFileName(_ name: String, messageID: Data, contentType: String) -> String {
        var cleaned = String(String.UnicodeScalarView(name.unicodeScalars.filter {
            !($0 == "/" || $0 == "\\" || $0.properties.generalCategory == .control || $0 == "\u{0}")
        }.map { $0.properties.generalCategory == .format ? "_" : $0 }))
        cleaned = cleaned.trimmingCharacters(in: .whitespaces)
        while cleaned.hasPrefix(".") { cleaned.removeFirst() }
        if cleaned.hasPrefix("-") { cleaned = "_" + cleaned }
        if cleaned.isEmpty {
            let ext = MediaTools.contentTypes.first { $0.value == contentType }?.key
            cleaned = "attachment-" + String(messageID.hexString.prefix(8)) + (ext.map { "." + $0 } ?? "")
        }
        return cleaned
    }

    /// `directory/name`, or `directory/NAME (n).EXT` for the first free n when taken.
    static func freeDestination(in directory: URL, name: String) -> URL {
        var candidate = directory.appendingPathComponent(name)
        let base = (name as NSString).deletingPathExtension, ext = (name as NSString).pathExtension
        var n = 1
        while FileManager.default.fileExists(atPath: candidate.path) {
            candidate = directory.appendingPathComponent(ext.isEmpty ? "\(base) (\(n))" : "\(base) (\(n)).\(ext)")
            n += 1
        }
        return candidate
    }

    // MARK: export

    /// Writes the gallery selection (`gallery(with:kind:)`) to a new ZIP file `zip` (ZIPFoundation): every file,
    /// downloaded and verified first when it is not on this device yet (its verified copy is kept in
    /// `HOME/media`), under its safe name (`NAME (n).EXT` for repeats), and the locations in `locations.txt`.
    /// Returns the number of entries.
    /// - Throws: `ClientError(.invalidArgument)` when `zip` exists (never overwritten) or nothing is selected; as
    ///   `download` for a file that cannot be fetched or verified (no ZIP is left then).
    public func exportMedia(
        with handle: String, kind: String? = nil, to zip: URL, onNote: @escaping @Sendable (String) -> Void = { _ in },
        onProgress: @escaping @Sendable (TransferProgress) -> Void = { _ in }
    ) async throws -> Int {
        guard !FileManager.default.fileExists(atPath: zip.path) else { throw ClientError(.invalidArgument, "\(zip.path) exists; not overwriting it") }
        // Up front, before anything is downloaded: the ZIP's directory must exist.
        var isDirectory: ObjCBool = false
        let parent = zip.deletingLastPathComponent()
        guard FileManager.default.fileExists(atPath: parent.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ClientError(.invalidArgument, "cannot write \(zip.path): no directory \(parent.path)")
        }
        let items = try gallery(with: handle, kind: kind)
        guard !items.isEmpty else { throw ClientError(.invalidArgument, "no media with \(handle)" + (kind.map { " of type \($0)" } ?? "")) }
        let kept = home.appendingPathComponent("media")
        try FileManager.default.createDirectory(at: kept, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        var files: [(name: String, url: URL)] = []
        var locations: [String] = []
        var used: Set<String> = ["locations.txt"]  // reserved: a file of that name becomes "locations (1).txt"
        for item in items.reversed() {  // oldest first inside the archive
            if item.media.kind == "location" {
                // The label is the sender's text: control characters (line breaks, tabs, escapes) become spaces so
                // each location stays one line of four tab-separated fields.
                let label = String(String.UnicodeScalarView(item.media.label.unicodeScalars.map {
                    $0.properties.generalCategory == .control ? " " : $0
                }))
                locations.append(
                    "\(item.media.latitude ?? 0),\(item.media.longitude ?? 0)\t\(label)\t\(item.author)\t\(ISO8601DateFormatter().string(from: item.sentAt))")
                continue
            }
            var url: URL
            if let path = item.media.localPath, FileManager.default.fileExists(atPath: path) {
                url = URL(fileURLWithPath: path)
            } else {
                onNote("downloading \(item.media.fileName.isEmpty ? item.messageID.hexString : item.media.fileName)")
                url = try await download(item.messageID, to: kept, onProgress: onProgress)
            }
            var name = Self.safeFileName(item.media.fileName, messageID: item.messageID, contentType: item.media.contentType)
            let base = (name as NSString).deletingPathExtension, ext = (name as NSString).pathExtension
            var n = 1
            while used.contains(name) {
                name = ext.isEmpty ? "\(base) (\(n))" : "\(base) (\(n)).\(ext)"
                n += 1
            }
            used.insert(name)
            files.append((name, url))
        }
        do {
            let archive = try Archive(url: zip, accessMode: .create)
            for file in files {
                try archive.addEntry(with: file.name, fileURL: file.url, compressionMethod: .deflate)
            }
            if !locations.isEmpty {
                let list = try mediaTemporaryDirectory().appendingPathComponent("locations-\(UUID().uuidString).txt")
                defer { try? FileManager.default.removeItem(at: list) }
                try Data((locations.joined(separator: "\n") + "\n").utf8).write(to: list)
                try archive.addEntry(with: "locations.txt", fileURL: list, compressionMethod: .deflate)
            }
        } catch {
            try? FileManager.default.removeItem(at: zip)
            throw ClientError(.invalidArgument, "cannot write \(zip.path): \((error as? ClientError)?.message ?? error.localizedDescription)")
        }
        return files.count + (locations.isEmpty ? 0 : 1)
    }
}
