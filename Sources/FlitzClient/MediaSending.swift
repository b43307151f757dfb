import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import GRDB

/// An upload under way (`media_uploads.state`, sealed): everything needed to resume it and then send its message,
/// chosen before the upload (`protocol/attachments.md` section 5): the message id and unsend token (whose hash the
/// capability carries), the attachment key, the pointer's fields, the temporary blob file and the upload's token.
struct PendingUpload: Codable, Sendable {
    var messageID: Data
    var unsendToken: Data
    var key: Data
    var caption: String
    var fileName: String
    var contentType: String
    var kind: String
    var voiceNote: Bool
    var width: UInt32
    var height: UInt32
    var durationMilliseconds: UInt32
    var thumbnail: Data
    var plaintextSize: UInt64
    var ciphertextSize: UInt64
    var sha256: Data
    /// The encrypted blob in `HOME/media-tmp`.
    var blobPath: String
    /// The source file's size and modification time: another file at the same path starts a new upload.
    var sourceSize: UInt64
    var sourceModified: Double
    /// The upload capability (section 4.1); nil before it was requested.
    var token: String?
    var uploadPath: String?
    var tokenExpiresAt: Int64 = 0
    var blobExpiresAt: Int64 = 0
    /// The created upload's blob id (32 lowercase hex characters); nil before creation.
    var blobID: String?

    func pointer() throws -> AttachmentPointer {
        guard let blobID, let id = Data(hexString: blobID), let kind = AttachmentPointer.Kind(rawValue: kind) else {
            throw ClientError(.protocolFailure, "the upload has no blob id yet")
        }
        return AttachmentPointer(
            blobID: id, key: SecretBytes(key), plaintextSize: plaintextSize, contentType: contentType, fileName: fileName,
            ciphertextSHA256: sha256, kind: kind, voiceNote: voiceNote, width: width, height: height,
            durationMilliseconds: durationMilliseconds, thumbnail: thumbnail, blobExpiresAtMilliseconds: blobExpiresAt)
    }
}

extension FlitzClient {
    /// Video over this many bytes is transcoded to H.264/AAC before sending unless `original` (16 MiB).
    public static let transcodeThreshold: UInt64 = 16 << 20
    /// Bytes per TUS `PATCH` (`protocol/attachments.md` section 8: at most 4 MiB). Debug builds take
    /// `FLITZ_TEST_UPLOAD_PART_BYTES` (≥ 65 552) so tests interrupt a multi-part upload of a small file.
    static let uploadPartBytes: Int = {
        #if DEBUG
        if let text = ProcessInfo.processInfo.environment["FLITZ_TEST_UPLOAD_PART_BYTES"], let value = Int(text), value >= 65_552 {
            return min(value, 4 << 20)
        }
        #endif
        return 4 << 20
    }()

    /// The directory of temporary blob and plaintext files (`HOME/media-tmp`, mode 0700).
    func mediaTemporaryDirectory() throws -> URL {
        let url = home.appendingPathComponent("media-tmp")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        return url
    }

    // MARK: sending

    /// Sends the file at `path` to `handle` as a media message (`protocol/attachments.md` section 5): previews with
    /// ffmpeg when installed (a note says so when not), pads and encrypts it chunk by chunk to a temporary blob file,
    /// requests an upload capability with the message's unsend token hash, uploads it with TUS in parts of at most
    /// 4 MiB (`sha256` checksums), then sends the `Text` carrying the pointer (and the transcript to the own devices).
    /// Returns the 16-byte message id.
    ///
    /// Resuming: the upload's state is kept in the store (`media_uploads`) until the message is sent; running the
    /// same send again (same recipient and file) resumes from the relay's committed offset (`HEAD`) with the same
    /// message id, key and blob.
    /// - Parameters:
    ///   - caption: the `Text` body (may be empty).
    ///   - original: never transcode a video.
    ///   - voiceNote: send as a voice message (kind audio).
    ///   - onNote: one-line remarks for the user (no ffmpeg, transcoded, resumed).
    ///   - onProgress: upload progress after every committed part.
    /// - Throws: `ClientError`: `.invalidArgument` (no such file, a directory, a caption too long, an invalid handle,
    ///   `voiceNote` for a file whose name is not audio), `.refused(.unknownRecipient)` (no such handle, found before
    ///   any upload),
    ///   `.refused(.invalidArgument)` when the relay refuses the size (the message names the limit or the quota),
    ///   `.relayUnreachable`; and as `send`.
    public func sendFile(
        to handle: String, path: String, caption: String = "", original: Bool = false, voiceNote: Bool = false, timeout: Duration = .seconds(30),
        onNote: @escaping @Sendable (String) -> Void = { _ in }, onProgress: @escaping @Sendable (TransferProgress) -> Void = { _ in }
    ) async throws -> Data {
        let account = try requireAccount()
        try checkMediaOutgoing(caption, to: handle, account: account)
        let source = URL(fileURLWithPath: path).standardizedFileURL
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: source.path, isDirectory: &isDirectory) else {
            throw ClientError(.invalidArgument, "no file at \(path)")
        }
        guard !isDirectory.boolValue else { throw ClientError(.invalidArgument, "\(path) is a directory; give a file") }
        if voiceNote, MediaTools.kind(of: MediaTools.contentType(of: source.lastPathComponent)) != .audio {
            throw ClientError(.invalidArgument, "--voice needs an audio file")
        }
        let attributes = try FileManager.default.attributesOfItem(atPath: source.path)
        let sourceSize = (attributes[.size] as? NSNumber)?.uint64Value ?? 0
        let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
        var (rowID, state) = try pendingUpload(peer: handle, source: source.path, size: sourceSize, modified: modified)
        if state != nil {
            onNote("resuming the unfinished upload of \(source.lastPathComponent)")
        } else {
            // The recipient must exist before anything is encrypted or uploaded (a typo would otherwise upload the
            // whole file first): the device list lookup the send makes anyway.
            try await withSendRetries(timeout: timeout) { connection, _ in
                _ = try await self.refreshDeviceList(handle, on: connection, account: account, forSending: false)
            }
            let made = try prepareUpload(source: source, size: sourceSize, modified: modified, caption: caption, original: original, voiceNote: voiceNote, onNote: onNote)
            rowID = try await store.dbQueue.write { db in
                try db.execute(
                    sql: "INSERT INTO media_uploads (peer, source, state, created_at_ms) VALUES (?, ?, ?, ?)",
                    arguments: [handle, source.path, try self.sealUpload(made), Int64(now().timeIntervalSince1970 * 1000)])
                return db.lastInsertedRowID
            }
            state = made
        }
        guard var upload = state, let rowID else { throw ClientError(.protocolFailure, "the upload was not recorded") }
        if upload.caption != caption && !caption.isEmpty { upload.caption = caption }
        do {
            if try localStatus(of: upload.messageID) == nil {
                try await self.upload(&upload, rowID: rowID, account: account, timeout: timeout, onProgress: onProgress)
            }
            let message = TextMessage(upload.caption, attachment: try upload.pointer())
            let id = try await submitMedia(message, to: handle, messageID: upload.messageID, unsendToken: upload.unsendToken, account: account, timeout: timeout)
            try finishUpload(rowID: rowID, upload)
            return id
        } catch let error as ClientError where error.kind == .refused(.invalidArgument) {
            try finishUpload(rowID: rowID, upload)  // refused for its size: nothing to resume
            throw error
        }
    }

    /// Sends a location (`protocol/attachments.md` section 3: a `Text` carrying a `Location`; no blob). Returns the
    /// 16-byte message id.
    /// - Throws: `ClientError(.invalidArgument)` for coordinates out of range or a label over 256 bytes; as `send`.
    public func sendLocation(
        to handle: String, latitude: Double, longitude: Double, label: String = "", caption: String = "", timeout: Duration = .seconds(30)
    ) async throws -> Data {
        let account = try requireAccount()
        try checkMediaOutgoing(caption, to: handle, account: account)
        let location = Location(latitude: latitude, longitude: longitude, label: label)
        guard location.isValid else {
            throw ClientError(.invalidArgument, "a location needs a latitude of -90...90 and a longitude of -180...180 degrees and a label of at most 256 bytes")
        }
        return try await submitMedia(
            TextMessage(caption, location: location), to: handle, messageID: random.bytes(WireConstants.idLength),
            unsendToken: random.bytes(ConversationLimits.tokenLength), account: account, timeout: timeout)
    }

    /// As `checkOutgoing`, but a media message's caption may be empty.
    func checkMediaOutgoing(_ caption: String, to handle: String, account: AccountRecord) throws {
        guard Handle.isValid(handle) else { throw ClientError(.invalidArgument, "invalid handle \"\(handle)\"") }
        guard handle != account.handle else { throw ClientError(.invalidArgument, "you cannot send a message to yourself") }
        guard caption.utf8.count <= Self.maxTextBytes else {
            throw ClientError(.invalidArgument, "the caption is \(caption.utf8.count) bytes; the limit is \(Self.maxTextBytes) bytes of UTF-8 text")
        }
    }

    /// Sends a media `Text` through the normal send path with the message id and unsend token chosen before the
    /// upload: with the conversation's disappearing timer, to the peer and as a transcript to the own devices.
    /// A message an earlier run already stored is left to `resendPending` (run first on the connection).
    func submitMedia(
        _ message: TextMessage, to handle: String, messageID: Data, unsendToken: Data, account: AccountRecord, timeout: Duration
    ) async throws -> Data {
        let textBytes = message.body.utf8.count + (message.attachment?.thumbnail.count ?? 0) + 512
        return try await withSendRetries(timeout: timeout) { connection, prepared in
            if prepared.value == nil, try self.localStatus(of: messageID) != nil { return messageID }
            let timer = try await self.store.dbQueue.read { db in try Self.disappearingSeconds(handle, db) }
            return try await self.submitContent(
                on: connection, account: account, to: handle, prepared: prepared, textBytes: textBytes, messageID: messageID
            ) { id, sentAt in
                Self.textOutgoing(message, to: handle, messageID: id, sentAt: sentAt, unsendToken: unsendToken, timer: timer, expiresIn: nil)
            }
        }
    }

    // MARK: the pending upload

    func sealUpload(_ upload: PendingUpload) throws -> Data {
        store.sealSecret(try JSONEncoder().encode(upload), .mediaUploadState)
    }

    /// The kept upload of `source` to `peer` when the file is still the same; a stale one is forgotten.
    func pendingUpload(peer: String, source: String, size: UInt64, modified: Double) throws -> (Int64?, PendingUpload?) {
        guard let row = try store.dbQueue.read({ db in
            try Row.fetchOne(db, sql: "SELECT id, state FROM media_uploads WHERE peer = ? AND source = ?", arguments: [peer, source])
        }) else { return (nil, nil) }
        let id: Int64 = row["id"]
        if let upload = try? JSONDecoder().decode(PendingUpload.self, from: try store.openSecret(row["state"], .mediaUploadState)),
            upload.sourceSize == size, upload.sourceModified == modified, FileManager.default.fileExists(atPath: upload.blobPath)
        {
            return (id, upload)
        }
        let stale = try? JSONDecoder().decode(PendingUpload.self, from: try store.openSecret(row["state"], .mediaUploadState))
        if let stale { try? FileManager.default.removeItem(atPath: stale.blobPath) }
        try store.dbQueue.write { db in try db.execute(sql: "DELETE FROM media_uploads WHERE id = ?", arguments: [id]) }
        return (nil, nil)
    }

    /// Forgets a finished (or refused) upload and deletes its temporary blob file.
    func finishUpload(rowID: Int64, _ upload: PendingUpload) throws {
        try store.dbQueue.write { db in try db.execute(sql: "DELETE FROM media_uploads WHERE id = ?", arguments: [rowID]) }
        try? FileManager.default.removeItem(atPath: upload.blobPath)
    }

    func saveUpload(rowID: Int64, _ upload: PendingUpload) throws {
        let sealed = try sealUpload(upload)
        try store.dbQueue.write { db in try db.execute(sql: "UPDATE media_uploads SET state = ? WHERE id = ?", arguments: [sealed, rowID]) }
    }

    /// Previews (and maybe transcodes) `source`, then encrypts it to a new temporary blob file.
    func prepareUpload(
        source: URL, size: UInt64, modified: Double, caption: String, original: Bool, voiceNote: Bool, onNote: (String) -> Void
    ) throws -> PendingUpload {
        let scratch = try mediaTemporaryDirectory()
        let environment = ProcessInfo.processInfo.environment
        var file = source
        var fileName = Self.pointerFileName(source.lastPathComponent)
        var contentType = MediaTools.contentType(of: fileName)
        var kind = MediaTools.kind(of: contentType)
        if voiceNote { kind = .audio }
        var plaintextSize = size
        var transcoded: URL?
        defer { if let transcoded { try? FileManager.default.removeItem(at: transcoded) } }
        if kind == .video, !original, size > Self.transcodeThreshold, let ffmpeg = MediaTools.find("ffmpeg", environment: environment) {
            let output = scratch.appendingPathComponent("transcode-\(UUID().uuidString).mp4")
            transcoded = output
            if MediaTools.transcode(source, ffmpeg: ffmpeg, to: output) != nil,
                let newSize = ((try? FileManager.default.attributesOfItem(atPath: output.path))?[.size] as? NSNumber)?.uint64Value,
                newSize > 0, newSize < size
            {
                onNote("transcoded \(fileName) to H.264/AAC: \(Self.formatBytes(size)) → \(Self.formatBytes(newSize)) (--original sends it as it is)")
                file = output
                plaintextSize = newSize
                fileName = Self.pointerFileName((fileName as NSString).deletingPathExtension + ".mp4")
                contentType = "video/mp4"
            }
        }
        let (preview, note) = MediaTools.preview(file, kind: kind, scratch: scratch, environment: environment)
        if let note { onNote(note) }
        let key = random.bytes(AttachmentKeys.keyLength)
        let blob = scratch.appendingPathComponent("upload-\(UUID().uuidString).blob")
        let sha256 = try MediaFiles.encrypt(source: file, plaintextSize: plaintextSize, to: blob, key: SecretBytes(key))
        return PendingUpload(
            messageID: random.bytes(WireConstants.idLength), unsendToken: random.bytes(ConversationLimits.tokenLength), key: key, caption: caption,
            fileName: fileName, contentType: contentType, kind: kind.rawValue, voiceNote: voiceNote, width: preview.width, height: preview.height,
            durationMilliseconds: preview.durationMilliseconds, thumbnail: preview.thumbnail, plaintextSize: plaintextSize,
            ciphertextSize: AttachmentLayout(plaintextSize: plaintextSize).ciphertextSize, sha256: sha256, blobPath: blob.path,
            sourceSize: size, sourceModified: modified)
    }

    /// A file name the pointer may carry (section 3): control characters, `/` and `\` become `_`, cut to 255 bytes.
    static func pointerFileName(_ name: String) -> String {
        var out = ""
        for scalar in name.unicodeScalars {
            let bad = scalar == "/" || scalar == "\\" || scalar.properties.generalCategory == .control
            let piece = bad ? "_" : String(scalar)
            if out.utf8.count + piece.utf8.count > AttachmentPointer.maxFileNameBytes { break }
            out += piece
        }
        return out
    }

    /// "2.1 MB" style sizes (decimal units, as file managers show them).
    public static func formatBytes(_ bytes: UInt64) -> String {
        if bytes < 1000 { return "\(bytes) B" }
        let units = ["kB", "MB", "GB", "TB"]
        var value = Double(bytes) / 1000
        var unit = 0
        while value >= 1000 && unit < units.count - 1 { value /= 1000; unit += 1 }
        return String(format: value < 10 ? "%.1f %@" : "%.0f %@", value, units[unit])
    }

    // MARK: TUS upload

    /// Uploads the blob of `upload` (section 4.3): a capability when none is held, creation, then `HEAD` and
    /// `PATCH`es from the committed offset. The state is saved after each step, so a killed process resumes.
    func upload(
        _ upload: inout PendingUpload, rowID: Int64, account: AccountRecord, timeout: Duration, onProgress: @escaping @Sendable (TransferProgress) -> Void
    ) async throws {
        try await BlobHTTP.with(relayURL: account.relayURL, caFile: caFile) { http in
            for attempt in 0..<2 {
                let nowMs = Int64(now().timeIntervalSince1970 * 1000)
                if upload.blobID == nil, upload.token == nil || upload.tokenExpiresAt <= nowMs + 60_000 {
                    let capability = try await requestUploadCapability(unsendToken: upload.unsendToken, timeout: timeout)
                    upload.token = capability.token
                    let path = capability.uploadPath.isEmpty ? "/v1/uploads" : capability.uploadPath
                    try Self.checkUploadPath(path)
                    upload.uploadPath = path
                    upload.tokenExpiresAt = capability.tokenExpiresAtMs
                    upload.blobExpiresAt = capability.blobExpiresAtMs
                    if capability.maxBlobBytes > 0, upload.ciphertextSize > capability.maxBlobBytes {
                        throw tooLarge(upload.ciphertextSize, limit: capability.maxBlobBytes)
                    }
                    try saveUpload(rowID: rowID, upload)
                }
                guard let token = upload.token, let uploadPath = upload.uploadPath else { throw ClientError(.protocolFailure, "no upload capability") }
                try Self.checkUploadPath(uploadPath)
                let auth = ("Authorization", "Bearer \(token)")
                var offset: UInt64 = 0
                if let blobID = upload.blobID {
                    let head = try await http.request(.HEAD, uploadPath + "/" + blobID, headers: [auth])
                    guard head.status == 200, let committed = head.header("Upload-Offset").flatMap(UInt64.init) else {
                        // Expired, terminated or no longer ours: start the upload over with a new capability.
                        logger.debug("upload gone; starting over", metadata: ["status": "\(head.status)"])
                        upload.blobID = nil
                        upload.token = nil
                        try saveUpload(rowID: rowID, upload)
                        if attempt == 0 { continue } else { throw ClientError(.protocolFailure, "the relay lost the upload twice (HTTP \(head.status))") }
                    }
                    offset = committed
                } else {
                    let created = try await http.request(.POST, uploadPath, headers: [auth, ("Upload-Length", String(upload.ciphertextSize))])
                    switch created.status {
                    case 201: break
                    case 413:
                        if let quota = created.header("Flitz-Quota-Bytes").flatMap(UInt64.init) {
                            let used = created.header("Flitz-Quota-Used-Bytes").flatMap(UInt64.init) ?? 0
                            throw ClientError(
                                .refused(.invalidArgument),
                                "the file does not fit in your storage quota on the relay: \(Self.formatBytes(upload.ciphertextSize)) encrypted, "
                                    + "\(Self.formatBytes(used)) of \(Self.formatBytes(quota)) used")
                        }
                        throw tooLarge(upload.ciphertextSize, limit: created.header("Tus-Max-Size").flatMap(UInt64.init))
                    case 401 where attempt == 0:
                        upload.token = nil
                        continue
                    default:
                        throw ClientError(.protocolFailure, "the relay refused the upload (HTTP \(created.status)): \(String(decoding: created.body, as: UTF8.self))")
                    }
                    guard let location = created.header("Location"), let id = location.split(separator: "/").last, id.count == 32 else {
                        throw ClientError(.protocolFailure, "the relay's answer to the upload has no valid Location")
                    }
                    upload.blobID = String(id).lowercased()
                    try saveUpload(rowID: rowID, upload)
                    Failpoint.hit("media.afterCreate")
                    offset = created.header("Upload-Offset").flatMap(UInt64.init) ?? 0
                }
                try await patch(&upload, from: offset, http: http, path: uploadPath + "/" + upload.blobID!, auth: auth, onProgress: onProgress)
                return
            }
        }
    }

    /// Refuses an `UploadCapability.upload_path` (section 4.1) that is not a plain absolute path on the relay's own
    /// origin: it must start with `/` and contain no `@`, `?`, `#` or `//` (which could point the upload, with its
    /// bearer token, at another host or smuggle a query). Checked before anything is sent.
    /// - Throws: `ClientError(.protocolFailure)` naming the path.
    static func checkUploadPath(_ path: String) throws {
        guard path.hasPrefix("/"), !path.contains("//"), !path.contains(where: { "@?#".contains($0) }) else {
            throw ClientError(.protocolFailure, "the relay gave an invalid upload path \"\(path)\"; nothing was uploaded")
        }
    }

    private func tooLarge(_ size: UInt64, limit: UInt64?) -> ClientError {
        ClientError(
            .refused(.invalidArgument),
            "the file is too large for this relay: \(size) bytes encrypted"
                + (limit.map { ", the limit is \($0) bytes (\(Self.formatBytes($0)))" } ?? " (over its limit)"))
    }

    /// `PATCH`es the blob file from `offset` in parts of at most `uploadPartBytes`, each with a `sha256`
    /// `Upload-Checksum`; a `409` continues from the relay's offset (at most 3 in a row that do not advance it), a `460`
    /// (checksum) is retried once.
    private func patch(
        _ upload: inout PendingUpload, from start: UInt64, http: BlobHTTP, path: String, auth: (String, String),
        onProgress: @escaping @Sendable (TransferProgress) -> Void
    ) async throws {
        let input = try FileHandle(forReadingFrom: URL(fileURLWithPath: upload.blobPath))
        defer { try? input.close() }
        var offset = start
        var checksumRetries = 0
        var stalled409s = 0  // consecutive 409s that did not move the offset forward
        onProgress(TransferProgress(bytes: offset, total: upload.ciphertextSize, resumedFrom: start))
        while offset < upload.ciphertextSize {
            try input.seek(toOffset: offset)
            let part = try input.read(upToCount: Int(min(UInt64(Self.uploadPartBytes), upload.ciphertextSize - offset))) ?? Data()
            guard !part.isEmpty else { throw ClientError(.protocolFailure, "the temporary blob file \(upload.blobPath) is shorter than expected") }
            let answer = try await http.request(
                .PATCH, path,
                headers: [
                    auth, ("Content-Type", "application/offset+octet-stream"), ("Upload-Offset", String(offset)),
                    ("Upload-Checksum", "sha256 " + SHA256.hash(part).base64EncodedString()),
                ],
                body: part)
            switch answer.status {
            case 204:
                stalled409s = 0
                offset = answer.header("Upload-Offset").flatMap(UInt64.init) ?? offset + UInt64(part.count)
                onProgress(TransferProgress(bytes: offset, total: upload.ciphertextSize, resumedFrom: start))
                Failpoint.hit("media.afterPatch")
            case 409:
                guard let committed = answer.header("Upload-Offset").flatMap(UInt64.init) else {
                    throw ClientError(.protocolFailure, "the relay answered 409 without an Upload-Offset")
                }
                // A relay that keeps answering 409 without the offset advancing would loop forever: at most 3.
                stalled409s = committed > offset ? 0 : stalled409s + 1
                if stalled409s >= 3 {
                    throw ClientError(
                        .protocolFailure, "the relay keeps refusing the upload at offset \(committed) (HTTP 409 three times); run the send again to resume")
                }
                offset = committed
            case 460 where checksumRetries < 2:
                checksumRetries += 1
            case 413:
                throw tooLarge(upload.ciphertextSize, limit: answer.header("Tus-Max-Size").flatMap(UInt64.init))
            default:
                throw ClientError(.protocolFailure, "the relay refused part of the upload (HTTP \(answer.status)): \(String(decoding: answer.body, as: UTF8.self))")
            }
        }
    }

    /// Asks the relay for an upload capability carrying the message's unsend token hash (section 4.1); the blob's
    /// expiry is left to the relay's retention ceiling (0), as the message may be read any time until then.
    func requestUploadCapability(unsendToken: Data, timeout: Duration) async throws -> WireUploadCapability {
        var request = WireRequestUploadCapability()
        request.expiresAtMs = 0
        request.unsendTokenHash = ConversationTokens.unsendTokenHash(unsendToken)
        let frame = request
        return try await withSendRetries(timeout: timeout) { connection, _ in
            guard case .uploadCapability(let capability) = try await connection.request(.requestUploadCapability(frame)).body else {
                throw ClientError(.protocolFailure, "unexpected answer to an upload capability request")
            }
            return capability
        }
    }
}
