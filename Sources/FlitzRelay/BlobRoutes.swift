import Crypto
import FlitzStore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Synchronization

/// The blob store's HTTP side (`protocol/attachments.md` 4.2-4.4) on the relay's router: TUS 1.0.0 uploads at
/// `/v1/uploads` (core, creation, creation-with-upload, termination, expiration, checksum with sha1 and sha256) and
/// downloads at `/v1/blobs/ID` with single byte ranges. Request and response bodies stream: a PATCH is written to
/// the blob file as it arrives, a download is read from it in 64 KiB pieces. Nothing is logged about a request.
struct BlobRoutes: Sendable {
    /// The uploads collection, as `UploadCapability.upload_path` says.
    static let uploadsPath = "/v1/uploads"
    /// The downloads prefix.
    static let blobsPath = "/v1/blobs"
    /// Bytes read from a blob file per response body write.
    static let downloadPiece = 65_536

    let relay: Relay

    /// Adds the routes to `router`.
    func register(on router: Router<BasicRequestContext>) {
        router.on(RouterPath(stringLiteral: Self.uploadsPath), method: .options) { _, _ in options() }
        router.post(RouterPath(stringLiteral: Self.uploadsPath)) { request, _ in await create(request) }
        router.head(RouterPath(stringLiteral: Self.uploadsPath + "/:id")) { request, context in
            await uploadStatus(request, id: context.parameters.get("id") ?? "")
        }
        router.patch(RouterPath(stringLiteral: Self.uploadsPath + "/:id")) { request, context in
            await patch(request, id: context.parameters.get("id") ?? "")
        }
        router.delete(RouterPath(stringLiteral: Self.uploadsPath + "/:id")) { request, context in
            await terminate(request, id: context.parameters.get("id") ?? "")
        }
        router.get(RouterPath(stringLiteral: Self.blobsPath + "/:id")) { request, context in
            await download(request, id: context.parameters.get("id") ?? "", headOnly: false)
        }
        router.head(RouterPath(stringLiteral: Self.blobsPath + "/:id")) { request, context in
            await download(request, id: context.parameters.get("id") ?? "", headOnly: true)
        }
    }

    // MARK: Headers

    enum Header {
        static let tusResumable = HTTPField.Name("Tus-Resumable")!
        static let tusVersion = HTTPField.Name("Tus-Version")!
        static let tusExtension = HTTPField.Name("Tus-Extension")!
        static let tusMaxSize = HTTPField.Name("Tus-Max-Size")!
        static let tusChecksumAlgorithm = HTTPField.Name("Tus-Checksum-Algorithm")!
        static let uploadOffset = HTTPField.Name("Upload-Offset")!
        static let uploadLength = HTTPField.Name("Upload-Length")!
        static let uploadExpires = HTTPField.Name("Upload-Expires")!
        static let uploadMetadata = HTTPField.Name("Upload-Metadata")!
        static let uploadDeferLength = HTTPField.Name("Upload-Defer-Length")!
        static let uploadChecksum = HTTPField.Name("Upload-Checksum")!
        static let quotaBytes = HTTPField.Name("Flitz-Quota-Bytes")!
        static let quotaUsedBytes = HTTPField.Name("Flitz-Quota-Used-Bytes")!
    }

    static let tusVersion = "1.0.0"
    static let offsetContentType = "application/offset+octet-stream"
    /// Status 460 (TUS checksum extension: "Checksum Mismatch").
    static let checksumMismatch = HTTPResponse.Status(code: 460, reasonPhrase: "Checksum Mismatch")

    /// Headers every TUS answer carries (attachments.md 4.2).
    private static func tusHeaders(_ extra: HTTPFields = [:]) -> HTTPFields {
        var fields: HTTPFields = [Header.tusResumable: tusVersion, .cacheControl: "no-store"]
        fields.append(contentsOf: extra)
        return fields
    }

    /// A TUS answer without body.
    private static func answer(_ status: HTTPResponse.Status, _ extra: HTTPFields = [:]) -> Response {
        Response(status: status, headers: tusHeaders(extra))
    }

    /// A TUS error answer: `text/plain`, one English sentence.
    private static func refusal(_ status: HTTPResponse.Status, _ sentence: String, _ extra: HTTPFields = [:]) -> Response {
        var headers = tusHeaders(extra)
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: sentence + "\n")))
    }

    /// An HTTP-date (RFC 9110 5.6.7), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    static func httpDate(ms: Int64) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter.string(from: Date(timeIntervalSince1970: Double(ms) / 1_000))
    }

    /// The 16-byte blob id of 32 lowercase hex characters, or nil.
    static func blobID(_ text: String) -> Data? {
        let digits = Array(text.utf8)
        guard digits.count == 2 * Relay.Blob.idBytes else { return nil }
        var bytes = Data(capacity: Relay.Blob.idBytes)
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: c - 0x30
            case 0x61...0x66: c - 0x61 + 10
            default: nil
            }
        }
        for index in stride(from: 0, to: digits.count, by: 2) {
            guard let high = value(digits[index]), let low = value(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
        }
        return bytes
    }

    static func hex(_ id: Data) -> String { id.map { String(format: "%02x", $0) }.joined() }

    /// SHA-256 of the bearer token's 32 bytes, or nil when the request carries no well-formed token.
    static func tokenHash(_ request: Request) -> Data? {
        guard let value = request.headers[.authorization], value.hasPrefix("Bearer ") else { return nil }
        let text = value.dropFirst("Bearer ".count).trimmingCharacters(in: .whitespaces)
        guard text.utf8.count == 43, let token = TokenBase64URL.decode(text), token.count == Relay.Blob.tokenBytes else { return nil }
        return Data(SHA256.hash(data: token))
    }

    /// A non-negative decimal integer header (digits only), or nil.
    static func decimal(_ value: String?) -> Int64? {
        guard let value, !value.isEmpty, value.utf8.count <= 18, value.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
        return Int64(value)
    }

    private func unauthorized() -> Response {
        relay.metrics.uploadRefused("token")
        return Self.refusal(.unauthorized, "The upload token is missing, unknown or expired, or is for another upload.")
    }

    private func notFound() -> Response {
        relay.metrics.uploadRefused("not_found")
        return Self.refusal(.notFound, "There is no such upload.")
    }

    /// 412 for a request without `Tus-Resumable: 1.0.0`, else nil.
    private func versionRefusal(_ request: Request) -> Response? {
        guard request.headers[Header.tusResumable] != Self.tusVersion else { return nil }
        relay.metrics.uploadRefused("version")
        return Self.refusal(.preconditionFailed, "This server speaks TUS 1.0.0 only (Tus-Resumable: 1.0.0).", [Header.tusVersion: Self.tusVersion])
    }

    // MARK: OPTIONS

    private func options() -> Response {
        Self.answer(.noContent, [
            Header.tusVersion: Self.tusVersion,
            Header.tusExtension: "creation,creation-with-upload,termination,expiration,checksum",
            Header.tusMaxSize: String(relay.configuration.maxBlobBytes),
            Header.tusChecksumAlgorithm: "sha1,sha256",
        ])
    }

    // MARK: POST (creation, creation-with-upload)

    private func create(_ request: Request) async -> Response {
        if let refusal = versionRefusal(request) { return refusal }
        let now = relay.clock.nowMs()
        guard let tokenHash = Self.tokenHash(request) else { return unauthorized() }
        do {
            guard try await relay.store.uploadToken(hash: tokenHash, nowMs: now) != nil else { return unauthorized() }
        } catch {
            return internalFailure(error)
        }
        if request.headers[Header.uploadMetadata] != nil {
            relay.metrics.uploadRefused("bad_request")
            return Self.refusal(.badRequest, "Upload-Metadata is refused: everything about a file travels inside the encryption.")
        }
        if request.headers[Header.uploadDeferLength] != nil {
            relay.metrics.uploadRefused("bad_request")
            return Self.refusal(.badRequest, "Upload-Defer-Length is not supported: send Upload-Length.")
        }
        guard let length = Self.decimal(request.headers[Header.uploadLength]), length >= 1 else {
            relay.metrics.uploadRefused("bad_request")
            return Self.refusal(.badRequest, "Upload-Length must be a decimal integer of at least 1.")
        }
        let maxBytes = relay.configuration.maxBlobBytes
        guard length <= maxBytes else {
            relay.metrics.uploadRefused("too_large")
            return Self.refusal(.contentTooLarge, "The upload is larger than this relay's blob limit of \(maxBytes) bytes.", [Header.tusMaxSize: String(maxBytes)])
        }
        // creation-with-upload: a body is the PATCH at offset 0.
        let body = PatchBody(request)
        if body.present {
            if let refusal = checkPatchHeaders(request, body: body, remaining: length) { return refusal }
        }
        let blobID = relay.random.bytes(Relay.Blob.idBytes)
        let record: BlobRecord
        let outcome: UploadCreation
        do {
            try await relay.blobs.create(blobID)
        } catch {
            return internalFailure(error)
        }
        do {
            outcome = try await relay.store.createUpload(
                tokenHash: tokenHash, blobID: blobID, length: length, nowMs: now,
                uploadExpiresAtMs: now + relay.configuration.uploadExpiry.wholeMilliseconds, quotaBytes: relay.configuration.blobQuotaBytes)
        } catch {
            // No record names the file: delete it now (the sweep deletes it later if this fails too).
            try? await relay.blobs.delete(blobID)
            return internalFailure(error)
        }
        switch outcome {
        case .created(let created):
            record = created
        case .unknownToken:
            try? await relay.blobs.delete(blobID)
            return unauthorized()
        case .overQuota(let used):
            try? await relay.blobs.delete(blobID)
            relay.metrics.uploadRefused("quota")
            return Self.refusal(
                .contentTooLarge, "The upload would take the account over its quota of \(relay.configuration.blobQuotaBytes) bytes.",
                [Header.quotaBytes: String(relay.configuration.blobQuotaBytes), Header.quotaUsedBytes: String(used)])
        }
        relay.metrics.uploadCreated()
        var offset: Int64 = 0
        var abandoned = false
        if body.present {
            // The upload exists whatever happens to its body: answer 201 with what was committed, so the client can
            // resume at the Location (attachments.md 4.3).
            switch await receive(request, record: record, body: body) {
            case .committed(let committed): offset = committed.committedOffset
            case .refused: break
            case .abandoned: abandoned = true
            }
        }
        var headers: HTTPFields = [
            .location: Self.uploadsPath + "/" + Self.hex(blobID), Header.uploadOffset: String(offset),
        ]
        if offset < length { headers[Header.uploadExpires] = Self.httpDate(ms: record.uploadExpiresAtMs) }
        let created = Self.answer(.created, headers)
        return abandoned ? Self.closingConnection(created) : created
    }

    // MARK: HEAD, DELETE

    /// The live upload `idText` whose token the request carries, or the refusal (404, then 401).
    private func authorizedUpload(_ request: Request, idText: String) async -> Result<BlobRecord, ResponseBox> {
        if let refusal = versionRefusal(request) { return .failure(ResponseBox(refusal)) }
        guard let tokenHash = Self.tokenHash(request) else { return .failure(ResponseBox(unauthorized())) }
        guard let id = Self.blobID(idText) else { return .failure(ResponseBox(notFound())) }
        let record: BlobRecord
        do {
            guard let found = try await relay.store.blob(id: id), found.isLive(atMs: relay.clock.nowMs()) else {
                return .failure(ResponseBox(notFound()))
            }
            record = found
        } catch {
            return .failure(ResponseBox(internalFailure(error)))
        }
        guard record.tokenHash == tokenHash else { return .failure(ResponseBox(unauthorized())) }
        return .success(record)
    }

    private func uploadStatus(_ request: Request, id: String) async -> Response {
        let record: BlobRecord
        switch await authorizedUpload(request, idText: id) {
        case .success(let found): record = found
        case .failure(let box): return box.response
        }
        var headers: HTTPFields = [Header.uploadOffset: String(record.committedOffset), Header.uploadLength: String(record.length)]
        if !record.completed { headers[Header.uploadExpires] = Self.httpDate(ms: record.uploadExpiresAtMs) }
        return Self.answer(.ok, headers)
    }

    private func terminate(_ request: Request, id: String) async -> Response {
        let record: BlobRecord
        switch await authorizedUpload(request, idText: id) {
        case .success(let found): record = found
        case .failure(let box): return box.response
        }
        do {
            let deleted = try await relay.deleteBlobs([record.blobID])
            relay.metrics.blobsDeleted("terminated", count: deleted)
        } catch {
            return internalFailure(error)
        }
        return Self.answer(.noContent)
    }

    // MARK: PATCH

    /// What a request says about its body.
    struct PatchBody {
        /// `Content-Length`, when given.
        let contentLength: Int64?
        /// Whether a body follows (a non-zero Content-Length, or chunked transfer coding).
        let present: Bool

        init(_ request: Request) {
            let length = BlobRoutes.decimal(request.headers[.contentLength])
            contentLength = length
            let chunked = request.headers[.transferEncoding]?.lowercased().contains("chunked") ?? false
            present = (length ?? 0) > 0 || (length == nil && chunked)
        }
    }

    /// The refusal of a PATCH's (or creation-with-upload's) headers before any byte is read, or nil: 415 for the
    /// content type, 400 for an unknown checksum algorithm, 413 when `Content-Length` exceeds `remaining`.
    private func checkPatchHeaders(_ request: Request, body: PatchBody, remaining: Int64) -> Response? {
        guard request.headers[.contentType]?.lowercased() == Self.offsetContentType else {
            relay.metrics.uploadRefused("content_type")
            return Self.refusal(.unsupportedMediaType, "The body must be Content-Type: application/offset+octet-stream.")
        }
        if let checksum = request.headers[Header.uploadChecksum], UploadChecksum(checksum) == nil {
            relay.metrics.uploadRefused("bad_request")
            return Self.refusal(.badRequest, "Upload-Checksum must be sha1 or sha256 followed by the base64 digest.")
        }
        if let length = body.contentLength, length > remaining {
            relay.metrics.uploadRefused("excess")
            return Self.refusal(.contentTooLarge, "The body has more bytes than the upload's Upload-Length allows.")
        }
        return nil
    }

    private func patch(_ request: Request, id: String) async -> Response {
        var record: BlobRecord
        switch await authorizedUpload(request, idText: id) {
        case .success(let found): record = found
        case .failure(let box): return box.response
        }
        guard request.headers[.contentType]?.lowercased() == Self.offsetContentType else {
            relay.metrics.uploadRefused("content_type")
            return Self.refusal(.unsupportedMediaType, "The body must be Content-Type: application/offset+octet-stream.")
        }
        guard let offset = Self.decimal(request.headers[Header.uploadOffset]) else {
            relay.metrics.uploadRefused("bad_request")
            return Self.refusal(.badRequest, "Upload-Offset must be a decimal integer.")
        }
        guard offset == record.committedOffset, !record.completed else { return conflict(record) }
        let body = PatchBody(request)
        if let refusal = checkPatchHeaders(request, body: body, remaining: record.length - offset) { return refusal }
        switch await receive(request, record: record, body: body) {
        case .committed(let committed):
            record = committed
            return Self.answer(.noContent, [Header.uploadOffset: String(record.committedOffset)])
        case .refused(let response):
            return response
        case .abandoned:
            let sentence = "The body sent no bytes for too long and was dropped."
            return Self.closingConnection(Self.refusal(.requestTimeout, sentence), sentence: sentence)
        }
    }

    /// `response` (whose body is dropped, replaced by `sentence` when given) with `Connection: close`, and a body that
    /// ends by failing, so that Hummingbird closes the connection after writing it instead of waiting for the rest of
    /// a stalled request body (it reads a request's body to its end before the next request).
    static func closingConnection(_ response: Response, sentence: String? = nil) -> Response {
        var headers = response.headers
        headers[.connection] = "close"
        let bytes = ByteBuffer(string: sentence.map { $0 + "\n" } ?? "")
        headers[.contentLength] = String(bytes.readableBytes)
        let body = ResponseBody(contentLength: bytes.readableBytes) { writer in
            if bytes.readableBytes > 0 { try await writer.write(bytes) }
            try await writer.finish(nil)
            throw BodyTimeout()
        }
        return Response(status: response.status, headers: headers, body: body)
    }

    private func conflict(_ record: BlobRecord) -> Response {
        relay.metrics.uploadRefused("offset")
        return Self.refusal(
            .conflict, "Upload-Offset is not the committed offset of this upload.", [Header.uploadOffset: String(record.committedOffset)])
    }

    /// The upload's lease (`cluster.md` 4) could not be taken within `Relay.uploadLeaseAttempts` polls.
    struct UploadLeaseUnavailable: Error, CustomStringConvertible {
        var description: String { "upload lease not acquired in time" }
    }

    enum Reception {
        case committed(BlobRecord)
        case refused(Response)
        /// The body stalled past `blob.bodyTimeoutSeconds`; its bytes were truncated away and the connection must close.
        case abandoned
    }

    /// A request body that sent nothing for `blob.bodyTimeoutSeconds`.
    struct BodyTimeout: Error {}

    /// What the body reader got.
    struct BodyReceipt: Sendable {
        var written: Int64 = 0
        var checksum: UploadChecksum?
        var excess = false
    }

    /// When the body last delivered bytes (or started).
    final class BodyProgress: Sendable {
        private let last = Mutex(ContinuousClock.now)
        func touch() { last.withLock { $0 = .now } }
        var lastProgress: ContinuousClock.Instant { last.withLock { $0 } }
    }

    /// Reads `request`'s body into `writer`, at most `remaining` bytes; throws `BodyTimeout` when no bytes arrive
    /// for `idle` (the reading task is then cancelled, which ends the connection's inbound stream).
    static func readBody(
        _ request: Request, into writer: any BlobWriter, remaining: Int64, checksum: UploadChecksum?, idle: Duration
    ) async throws -> BodyReceipt {
        let progress = BodyProgress()
        return try await withThrowingTaskGroup(of: BodyReceipt?.self) { group in
            group.addTask {
                var receipt = BodyReceipt(checksum: checksum)
                for try await buffer in request.body {
                    progress.touch()
                    guard Int64(buffer.readableBytes) <= remaining - receipt.written else {
                        receipt.excess = true
                        break
                    }
                    let bytes = Array(buffer.readableBytesView)
                    receipt.checksum?.update(bytes)
                    try await writer.write(bytes)
                    receipt.written += Int64(bytes.count)
                    progress.touch()
                }
                return receipt
            }
            group.addTask {
                // The watchdog: returns nil never; throws BodyTimeout after `idle` without progress.
                while true {
                    let seen = progress.lastProgress
                    try await Task.sleep(until: seen.advanced(by: idle), clock: .continuous)
                    if progress.lastProgress == seen { throw BodyTimeout() }
                }
            }
            defer { group.cancelAll() }
            while let next = try await group.next() {
                if let receipt = next { return receipt }
            }
            throw BodyTimeout()
        }
    }

    /// Streams the request body into the blob after its committed offset and commits it whole or not at all
    /// (attachments.md 4.3): under the upload's lock, the file is first cut back to the committed offset; bytes are
    /// written as they arrive; more than the upload's length refuses the PATCH (413), a body shorter than its
    /// `Content-Length` (a cut connection) or a failing body stream drops it, a checksum mismatch refuses it (460).
    /// Only a whole body is fsynced and then committed. A refused PATCH's bytes are truncated away.
    private func receive(_ request: Request, record initial: BlobRecord, body: PatchBody) async -> Reception {
        let id = initial.blobID
        // In a cluster, the upload's lease too (cluster.md 4).
        let reception = await relay.withUploadLock(id) {
            await receiveLocked(request, id: id, expectedOffset: initial.committedOffset, body: body)
        }
        // No lease in time (or the request was cancelled while waiting): nothing was written.
        return reception ?? .refused(internalFailure(UploadLeaseUnavailable()))
    }

    private func receiveLocked(_ request: Request, id: Data, expectedOffset: Int64, body: PatchBody) async -> Reception {
        let record: BlobRecord
        do {
            // Another PATCH may have committed while this one waited for the lock.
            guard let found = try await relay.store.blob(id: id), found.isLive(atMs: relay.clock.nowMs()) else { return .refused(notFound()) }
            record = found
        } catch {
            return .refused(internalFailure(error))
        }
        guard record.committedOffset == expectedOffset, !record.completed else { return .refused(conflict(record)) }
        let start = record.committedOffset
        let remaining = record.length - start
        let checksum = request.headers[Header.uploadChecksum].flatMap(UploadChecksum.init)
        var written: Int64 = 0
        let writer: any BlobWriter
        do {
            // Bytes of an earlier PATCH that never committed (a crash) are dropped first.
            try await relay.blobs.truncate(id, to: start)
            writer = try await relay.blobs.openWriter(id, at: start)
        } catch {
            return .refused(internalFailure(error))
        }
        var failure: Response?
        var abandoned = false
        do {
            let receipt = try await Self.readBody(
                request, into: writer, remaining: remaining, checksum: checksum, idle: relay.configuration.blobBodyTimeout)
            written = receipt.written
            if receipt.excess {
                relay.metrics.uploadRefused("excess")
                failure = Self.refusal(.contentTooLarge, "The body has more bytes than the upload's Upload-Length allows.")
            }
            if failure == nil, let expected = body.contentLength, written != expected {
                relay.metrics.uploadRefused("interrupted")
                failure = Self.refusal(.badRequest, "The body ended before its Content-Length.")
            }
            if failure == nil, let checksum = receipt.checksum, !checksum.matches() {
                relay.metrics.uploadRefused("checksum")
                failure = Self.refusal(Self.checksumMismatch, "The body does not match its Upload-Checksum.")
            }
            if failure == nil { try await writer.sync() }
        } catch is BodyTimeout {
            // Stalled: dropped like a cut body; the caller closes the connection.
            relay.metrics.uploadRefused("interrupted")
            abandoned = true
        } catch {
            // The body stream failed (the connection was cut) or the file could not be written.
            relay.metrics.uploadRefused("interrupted")
            failure = Self.refusal(.badRequest, "The body could not be received whole.")
        }
        try? await writer.close()
        if abandoned {
            try? await relay.blobs.truncate(id, to: start)
            return .abandoned
        }
        if let failure {
            try? await relay.blobs.truncate(id, to: start)
            return .refused(failure)
        }
        do {
            switch try await relay.store.commitUpload(blobID: id, from: start, to: start + written, nowMs: relay.clock.nowMs()) {
            case .committed(let committed):
                relay.metrics.uploadBytes(written)
                if committed.completed { relay.metrics.uploadCompleted() }
                return .committed(committed)
            case .offsetMismatch(let current):
                try? await relay.blobs.truncate(id, to: current.committedOffset)
                return .refused(conflict(current))
            case .gone:
                try? await relay.blobs.delete(id)
                return .refused(notFound())
            }
        } catch {
            try? await relay.blobs.truncate(id, to: start)
            return .refused(internalFailure(error))
        }
    }

    // MARK: Downloads

    private func download(_ request: Request, id idText: String, headOnly: Bool) async -> Response {
        let gone = Response(
            status: .notFound, headers: [.cacheControl: "no-store", .contentType: "text/plain; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(string: "There is no such blob.\n")))
        guard let id = Self.blobID(idText) else { return gone }
        let record: BlobRecord
        do {
            // Served only when complete and live: the same 404 for unknown, unfinished, expired and deleted.
            guard let found = try await relay.store.blob(id: id), found.completed, found.isLive(atMs: relay.clock.nowMs()) else { return gone }
            record = found
        } catch {
            return internalFailure(error)
        }
        let size = record.length
        // A file missing or of another length than its record would stream a short body after a 200 head.
        do {
            let stored = try await relay.blobs.length(id)
            guard stored == size else {
                relay.logger.error("blob file missing or of the wrong length", metadata: ["expected": "\(size)", "stored": "\(stored.map(String.init) ?? "none")"])
                return Response(
                    status: .internalServerError, headers: [.cacheControl: "no-store", .contentType: "text/plain; charset=utf-8"],
                    body: .init(byteBuffer: ByteBuffer(string: "The relay lost this blob's bytes.\n")))
            }
        } catch {
            return internalFailure(error)
        }
        var headers: HTTPFields = [.contentType: "application/octet-stream", .acceptRanges: "bytes", .cacheControl: "no-store"]
        var status = HTTPResponse.Status.ok
        var range = Int64(0)..<size
        switch ByteRange.parse(request.headers[.range], size: size) {
        case .whole:
            break
        case .unsatisfiable:
            headers[.contentRange] = "bytes */\(size)"
            headers[.contentType] = nil
            return Response(status: .rangeNotSatisfiable, headers: headers)
        case .partial(let part):
            status = .partialContent
            range = part
            headers[.contentRange] = "bytes \(part.lowerBound)-\(part.upperBound - 1)/\(size)"
        }
        let count = range.upperBound - range.lowerBound
        headers[.contentLength] = String(count)
        if headOnly { return Response(status: status, headers: headers) }
        let blobs = relay.blobs
        let metrics = relay.metrics
        let served = range
        let body = ResponseBody(contentLength: Int(count)) { writer in
            var offset = served.lowerBound
            while offset < served.upperBound {
                let count = Int(min(Int64(Self.downloadPiece), served.upperBound - offset))
                let bytes = try await blobs.read(id, at: offset, count: count)
                guard !bytes.isEmpty else { throw BlobStorageError("blob shorter than its record") }
                try await writer.write(ByteBuffer(bytes: bytes))
                metrics.downloadBytes(bytes.count)
                offset += Int64(bytes.count)
            }
            try await writer.finish(nil)
        }
        return Response(status: status, headers: headers, body: body)
    }

    private func internalFailure(_ error: any Error) -> Response {
        relay.logger.error("blob store failure", metadata: ["error": "\(error)"])
        return Response(
            status: .internalServerError, headers: Self.tusHeaders([.contentType: "text/plain; charset=utf-8"]),
            body: .init(byteBuffer: ByteBuffer(string: "The relay failed; retry later.\n")))
    }
}

/// A `Response` in a `Result` failure.
struct ResponseBox: Error {
    let response: Response
    init(_ response: Response) { self.response = response }
}

/// `Upload-Checksum: ALG BASE64` (TUS checksum extension) with a running hash of the body.
struct UploadChecksum: Sendable {
    private enum Running {
        case sha1(Insecure.SHA1)
        case sha256(SHA256)
    }

    private var running: Running
    private let expected: Data

    /// Parses the header; nil for another algorithm or a malformed digest.
    init?(_ header: String) {
        let parts = header.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2, let digest = Data(base64Encoded: String(parts[1])) else { return nil }
        switch parts[0].lowercased() {
        case "sha1" where digest.count == Insecure.SHA1.byteCount: running = .sha1(Insecure.SHA1())
        case "sha256" where digest.count == SHA256.byteCount: running = .sha256(SHA256())
        default: return nil
        }
        expected = digest
    }

    mutating func update(_ bytes: [UInt8]) {
        switch running {
        case .sha1(var hasher):
            hasher.update(data: bytes)
            running = .sha1(hasher)
        case .sha256(var hasher):
            hasher.update(data: bytes)
            running = .sha256(hasher)
        }
    }

    /// Whether the body's digest equals the header's.
    func matches() -> Bool {
        switch running {
        case .sha1(let hasher): Data(hasher.finalize()) == expected
        case .sha256(let hasher): Data(hasher.finalize()) == expected
        }
    }
}

/// A `Range` header against a blob of `size` bytes (RFC 9110 14.2): one range is honoured; several, or a
/// malformed header, are answered whole.
enum ByteRange: Equatable {
    case whole
    case partial(Range<Int64>)
    case unsatisfiable

    static func parse(_ header: String?, size: Int64) -> ByteRange {
        guard let header else { return .whole }
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        guard trimmed.lowercased().hasPrefix("bytes=") else { return .whole }
        let spec = trimmed.dropFirst("bytes=".count).trimmingCharacters(in: .whitespaces)
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return .whole }
        let first = String(spec[..<dash]).trimmingCharacters(in: .whitespaces)
        let last = String(spec[spec.index(after: dash)...]).trimmingCharacters(in: .whitespaces)
        if first.isEmpty {
            // bytes=-N: the last N bytes.
            guard let suffix = BlobRoutes.decimal(last) else { return .whole }
            guard suffix > 0 else { return .unsatisfiable }
            return .partial(max(0, size - suffix)..<size)
        }
        guard let start = BlobRoutes.decimal(first) else { return .whole }
        var end = size - 1
        if !last.isEmpty {
            guard let given = BlobRoutes.decimal(last) else { return .whole }
            guard given >= start else { return .whole }
            end = min(given, size - 1)
        }
        guard start < size else { return .unsatisfiable }
        return .partial(start..<(end + 1))
    }
}
