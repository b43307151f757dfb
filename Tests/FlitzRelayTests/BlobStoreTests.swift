import AsyncHTTPClient
import Crypto
import FlitzCrypto
import FlitzRelay
import FlitzWire
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

/// One HTTP answer.
struct HTTPAnswer: Sendable {
    let status: Int
    let headers: HTTPHeaders
    let body: [UInt8]

    func header(_ name: String) -> String? { headers.first(name: name) }
    var text: String { String(decoding: body, as: UTF8.self) }
}

/// The blob store's HTTP side over loopback (`protocol/attachments.md` 4) with AsyncHTTPClient.
struct BlobHTTP: Sendable {
    let port: Int

    func send(
        _ method: HTTPMethod, _ path: String, token: String? = nil, tus: Bool = true, headers: [(String, String)] = [], body: [UInt8]? = nil,
        stream: [[UInt8]]? = nil
    ) async throws -> HTTPAnswer {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
        request.method = method
        if tus { request.headers.add(name: "Tus-Resumable", value: "1.0.0") }
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        if let stream {
            // Chunked transfer coding: the relay does not know the length up front.
            let pieces = stream.map { ByteBuffer(bytes: $0) }
            request.body = .stream(AsyncStream<ByteBuffer> { continuation in
                for piece in pieces { continuation.yield(piece) }
                continuation.finish()
            }, length: .unknown)
        }
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let collected = try await response.body.collect(upTo: 16 << 20)
        return HTTPAnswer(status: Int(response.status.code), headers: response.headers, body: Array(collected.readableBytesView))
    }

    /// Creates an upload of `length` bytes; returns its path (`/v1/uploads/ID`).
    func create(token: String, length: Int) async throws -> String {
        let answer = try await send(.POST, "/v1/uploads", token: token, headers: [("Upload-Length", "\(length)")])
        #expect(answer.status == 201, "\(answer.text)")
        return try #require(answer.header("Location"))
    }

    /// PATCHes `bytes` at `offset`.
    func patch(_ path: String, token: String, offset: Int, _ bytes: [UInt8], headers: [(String, String)] = []) async throws -> HTTPAnswer {
        try await send(
            .PATCH, path, token: token,
            headers: [("Content-Type", "application/offset+octet-stream"), ("Upload-Offset", "\(offset)")] + headers, body: bytes)
    }
}

/// Deterministic test bytes.
func blobBytes(_ count: Int, seed: UInt8 = 7) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
}

func base64SHA256(_ bytes: [UInt8]) -> String { Data(Crypto.SHA256.hash(data: bytes)).base64EncodedString() }

extension TestConnection {
    /// An upload capability (attachments.md 4.1).
    func uploadCapability(expiresAtMs: Int64 = 0, unsendTokenHash: Data = Data()) async throws -> WireUploadCapability {
        var request = WireRequestUploadCapability()
        request.expiresAtMs = expiresAtMs
        request.unsendTokenHash = unsendTokenHash
        let reply = try await self.request(.requestUploadCapability(request))
        guard case .uploadCapability(let capability) = reply.body else {
            Issue.record("expected UploadCapability, got \(reply)")
            throw TestTimeout()
        }
        return capability
    }
}

extension RelayHarness {
    var blobs: BlobHTTP { BlobHTTP(port: port) }
    var blobDirectory: URL { URL(fileURLWithPath: databasePath).deletingLastPathComponent().appendingPathComponent("flitz-blobs") }

    /// Files in the blob directory.
    func blobFiles() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: blobDirectory.path).sorted() }

    /// Registers and authenticates `handle`, then runs `body` with the connection.
    func withAccount<T: Sendable>(_ handle: String, _ body: @escaping @Sendable (TestConnection, TestIdentity) async throws -> T) async throws -> T {
        let identity = TestIdentity(handle)
        return try await connect { connection in
            _ = try await connection.register(identity)
            try await connection.authenticate(identity)
            return try await body(connection, identity)
        }
    }
}

/// The blob store (`protocol/attachments.md` 4): capability frame, TUS uploads, downloads, limits, expiry, deletion.
@Suite struct BlobStoreTests {
    @Test func capabilityUploadAndDownloadWithRanges() async throws {
        try await RelayHarness.run { relay in
            try await relay.withAccount("alice") { connection, _ in
                let capability = try await connection.uploadCapability()
                #expect(capability.token.utf8.count == 43)
                #expect(capability.uploadPath == "/v1/uploads")
                let now = Int64(relay.clock.now().timeIntervalSince1970 * 1_000)
                #expect(capability.tokenExpiresAtMs == now + 3_600_000)
                #expect(capability.blobExpiresAtMs == now + 86_400_000)  // the harness's retention ceiling
                #expect(capability.maxBlobBytes == 104_857_600)
                #expect(capability.quotaBytes == 1_073_741_824)
                #expect(capability.quotaUsedBytes == 0)

                let http = relay.blobs
                let options = try await http.send(.OPTIONS, "/v1/uploads", tus: false)
                #expect(options.status == 204)
                #expect(options.header("Tus-Version") == "1.0.0")
                #expect(options.header("Tus-Extension") == "creation,creation-with-upload,termination,expiration,checksum")
                #expect(options.header("Tus-Max-Size") == "104857600")
                #expect(options.header("Tus-Checksum-Algorithm") == "sha1,sha256")
                #expect(options.header("Tus-Resumable") == "1.0.0")
                #expect(options.header("Cache-Control") == "no-store")

                let data = blobBytes(200_000)
                let created = try await http.send(.POST, "/v1/uploads", token: capability.token, headers: [("Upload-Length", "200000")])
                #expect(created.status == 201)
                let location = try #require(created.header("Location"))
                #expect(location.count == "/v1/uploads/".count + 32)
                #expect(created.header("Upload-Offset") == "0")
                #expect(created.header("Upload-Expires")?.hasSuffix(" GMT") == true)
                #expect(created.header("Tus-Resumable") == "1.0.0")
                let blobPath = "/v1/blobs/" + location.dropFirst("/v1/uploads/".count)

                // Not downloadable before completion.
                let first = try await http.patch(location, token: capability.token, offset: 0, Array(data[0..<120_000]))
                #expect(first.status == 204)
                #expect(first.header("Upload-Offset") == "120000")
                #expect(try await http.send(.GET, blobPath, tus: false).status == 404)
                #expect(try await http.send(.HEAD, blobPath, tus: false).status == 404)

                let head = try await http.send(.HEAD, location, token: capability.token)
                #expect(head.status == 200)
                #expect(head.header("Upload-Offset") == "120000")
                #expect(head.header("Upload-Length") == "200000")
                #expect(head.header("Upload-Expires") != nil)
                #expect(head.header("Cache-Control") == "no-store")

                // Wrong offset: 409 with the committed offset.
                let stale = try await http.patch(location, token: capability.token, offset: 0, Array(data[0..<10]))
                #expect(stale.status == 409)
                #expect(stale.header("Upload-Offset") == "120000")

                let last = try await http.patch(
                    location, token: capability.token, offset: 120_000, Array(data[120_000...]),
                    headers: [("Upload-Checksum", "sha256 " + base64SHA256(Array(data[120_000...])))])
                #expect(last.status == 204)
                #expect(last.header("Upload-Offset") == "200000")
                // Complete: further PATCHes get 409 with Upload-Offset = Upload-Length.
                let after = try await http.patch(location, token: capability.token, offset: 200_000, [1])
                #expect(after.status == 409)
                #expect(after.header("Upload-Offset") == "200000")

                let whole = try await http.send(.GET, blobPath, tus: false)
                #expect(whole.status == 200)
                #expect(whole.body == data)
                #expect(whole.header("Content-Type") == "application/octet-stream")
                #expect(whole.header("Accept-Ranges") == "bytes")
                #expect(whole.header("Cache-Control") == "no-store")
                #expect(whole.header("Content-Length") == "200000")
                let headBlob = try await http.send(.HEAD, blobPath, tus: false)
                #expect(headBlob.status == 200)
                #expect(headBlob.header("Content-Length") == "200000")
                #expect(headBlob.body.isEmpty)

                let ranged = try await http.send(.GET, blobPath, tus: false, headers: [("Range", "bytes=65552-131103")])
                #expect(ranged.status == 206)
                #expect(ranged.header("Content-Range") == "bytes 65552-131103/200000")
                #expect(ranged.body == Array(data[65_552...131_103]))
                let open = try await http.send(.GET, blobPath, tus: false, headers: [("Range", "bytes=199990-")])
                #expect(open.status == 206)
                #expect(open.body == Array(data[199_990...]))
                let suffix = try await http.send(.GET, blobPath, tus: false, headers: [("Range", "bytes=-5")])
                #expect(suffix.status == 206)
                #expect(suffix.header("Content-Range") == "bytes 199995-199999/200000")
                #expect(suffix.body == Array(data[199_995...]))
                let beyond = try await http.send(.GET, blobPath, tus: false, headers: [("Range", "bytes=200000-")])
                #expect(beyond.status == 416)
                #expect(beyond.header("Content-Range") == "bytes */200000")
                let several = try await http.send(.GET, blobPath, tus: false, headers: [("Range", "bytes=0-1,5-6")])
                #expect(several.status == 200)
                #expect(several.body.count == 200_000)

                // Quota usage now counts the blob.
                #expect(try await connection.uploadCapability().quotaUsedBytes == 200_000)
                let metrics = await relay.app.relay.metrics.exposition()
                #expect(sample(metrics, "flitz_relay_uploads_created_total") == 1)
                #expect(sample(metrics, "flitz_relay_uploads_completed_total") == 1)
                #expect(sample(metrics, "flitz_relay_blob_bytes_stored") == 200_000)
                #expect((sample(metrics, "flitz_relay_blob_download_bytes_total") ?? 0) >= 200_000)
                #expect(!metrics.contains("alice"))
            }
        }
    }

    @Test func creationRefusals() async throws {
        try await RelayHarness.run(configure: { $0.maxBlobBytes = 4_096; $0.blobQuotaBytes = 6_000 }) { relay in
            try await relay.withAccount("alice") { connection, _ in
                let http = relay.blobs
                let capability = try await connection.uploadCapability()
                let token = capability.token
                // 412 without Tus-Resumable.
                let noVersion = try await http.send(.POST, "/v1/uploads", token: token, tus: false, headers: [("Upload-Length", "10")])
                #expect(noVersion.status == 412)
                #expect(noVersion.header("Tus-Version") == "1.0.0")
                #expect(noVersion.header("Content-Type")?.hasPrefix("text/plain") == true)
                // 401: no token, unknown token, malformed token.
                #expect(try await http.send(.POST, "/v1/uploads", headers: [("Upload-Length", "10")]).status == 401)
                let unknown = TestBase64URL.encodeForTests(SystemRandom().bytes(32))
                #expect(try await http.send(.POST, "/v1/uploads", token: unknown, headers: [("Upload-Length", "10")]).status == 401)
                #expect(try await http.send(.POST, "/v1/uploads", token: "short", headers: [("Upload-Length", "10")]).status == 401)
                // 400: Upload-Metadata, Upload-Defer-Length, missing or malformed Upload-Length.
                let metadata = try await http.send(
                    .POST, "/v1/uploads", token: token, headers: [("Upload-Length", "10"), ("Upload-Metadata", "filename aGVsbG8=")])
                #expect(metadata.status == 400)
                #expect(metadata.text.contains("Upload-Metadata"))
                #expect(try await http.send(.POST, "/v1/uploads", token: token, headers: [("Upload-Defer-Length", "1")]).status == 400)
                #expect(try await http.send(.POST, "/v1/uploads", token: token).status == 400)
                #expect(try await http.send(.POST, "/v1/uploads", token: token, headers: [("Upload-Length", "0")]).status == 400)
                #expect(try await http.send(.POST, "/v1/uploads", token: token, headers: [("Upload-Length", "-5")]).status == 400)
                // 413 over the blob limit, with Tus-Max-Size.
                let tooLarge = try await http.send(.POST, "/v1/uploads", token: token, headers: [("Upload-Length", "4097")])
                #expect(tooLarge.status == 413)
                #expect(tooLarge.header("Tus-Max-Size") == "4096")
                // None of these used the token: it still creates one upload, and only one.
                let first = try await http.create(token: token, length: 4_000)
                #expect(first.hasPrefix("/v1/uploads/"))
                #expect(try await http.send(.POST, "/v1/uploads", token: token, headers: [("Upload-Length", "10")]).status == 401)
                // 413 over the quota (4 000 of 6 000 used by the unfinished upload), with the quota headers.
                let second = try await connection.uploadCapability()
                #expect(second.quotaUsedBytes == 4_000)
                let overQuota = try await http.send(.POST, "/v1/uploads", token: second.token, headers: [("Upload-Length", "2001")])
                #expect(overQuota.status == 413)
                #expect(overQuota.header("Flitz-Quota-Bytes") == "6000")
                #expect(overQuota.header("Flitz-Quota-Used-Bytes") == "4000")
                #expect(try await http.create(token: second.token, length: 2_000).hasPrefix("/v1/uploads/"))
                // Exactly two files: refused creations left none behind.
                #expect(try relay.blobFiles().count == 2)
                let metrics = await relay.app.relay.metrics.exposition()
                #expect(sample(metrics, "flitz_relay_uploads_refused_total{reason=\"quota\"}") == 1)
                #expect(sample(metrics, "flitz_relay_uploads_refused_total{reason=\"too_large\"}") == 1)
            }
        }
    }

    @Test func patchRefusalsLeaveTheOffset() async throws {
        try await RelayHarness.run { relay in
            try await relay.withAccount("alice") { connection, _ in
                let http = relay.blobs
                let token = try await connection.uploadCapability().token
                let other = try await connection.uploadCapability().token
                let path = try await http.create(token: token, length: 1_000)
                let otherPath = try await http.create(token: other, length: 10)
                let data = blobBytes(1_000)
                // A token for another upload: 401; an unknown id: 404.
                #expect(try await http.send(.HEAD, path, token: other).status == 401)
                #expect(try await http.patch(path, token: other, offset: 0, Array(data[0..<10])).status == 401)
                #expect(try await http.send(.DELETE, path, token: other).status == 401)
                #expect(try await http.send(.HEAD, otherPath, token: token).status == 401)
                #expect(try await http.send(.HEAD, "/v1/uploads/" + String(repeating: "ab", count: 16), token: token).status == 404)
                #expect(try await http.send(.HEAD, "/v1/uploads/nothex", token: token).status == 404)
                #expect(try await http.send(.HEAD, path).status == 401)
                #expect(try await http.send(.HEAD, path, token: token, tus: false).status == 412)
                // 415: another content type.
                let wrongType = try await http.send(
                    .PATCH, path, token: token, headers: [("Content-Type", "application/octet-stream"), ("Upload-Offset", "0")], body: [1, 2])
                #expect(wrongType.status == 415)
                // 460: checksum mismatch (sha1 and sha256); 400: another algorithm.
                let sha1 = Data(Insecure.SHA1.hash(data: [0, 0, 0])).base64EncodedString()
                #expect(try await http.patch(path, token: token, offset: 0, Array(data[0..<100]), headers: [("Upload-Checksum", "sha1 " + sha1)]).status == 460)
                #expect(try await http.patch(
                    path, token: token, offset: 0, Array(data[0..<100]), headers: [("Upload-Checksum", "sha256 " + base64SHA256([1]))]).status == 460)
                #expect(try await http.patch(path, token: token, offset: 0, Array(data[0..<100]), headers: [("Upload-Checksum", "md5 AAAA")]).status == 400)
                // 413: more bytes than Upload-Length allows, by Content-Length and as they arrive (chunked).
                #expect(try await http.patch(path, token: token, offset: 0, blobBytes(1_001)).status == 413)
                let streamed = try await http.send(
                    .PATCH, path, token: token, headers: [("Content-Type", "application/offset+octet-stream"), ("Upload-Offset", "0")],
                    stream: [blobBytes(600), blobBytes(600)])
                #expect(streamed.status == 413)
                // None of them moved the offset or left bytes behind.
                let head = try await http.send(.HEAD, path, token: token)
                #expect(head.header("Upload-Offset") == "0")
                let id = String(path.dropFirst("/v1/uploads/".count))
                #expect(try FileManager.default.attributesOfItem(atPath: relay.blobDirectory.appendingPathComponent(id).path)[.size] as? Int == 0)
                // A matching sha1 checksum and a chunked body are accepted.
                let good = try await http.patch(
                    path, token: token, offset: 0, Array(data[0..<500]),
                    headers: [("Upload-Checksum", "sha1 " + Data(Insecure.SHA1.hash(data: Array(data[0..<500]))).base64EncodedString())])
                #expect(good.status == 204)
                let chunked = try await http.send(
                    .PATCH, path, token: token, headers: [("Content-Type", "application/offset+octet-stream"), ("Upload-Offset", "500")],
                    stream: [Array(data[500..<800]), Array(data[800...])])
                #expect(chunked.status == 204)
                #expect(chunked.header("Upload-Offset") == "1000")
                #expect(try await http.send(.GET, "/v1/blobs/" + id, tus: false).body == data)
                let metrics = await relay.app.relay.metrics.exposition()
                #expect(sample(metrics, "flitz_relay_uploads_refused_total{reason=\"checksum\"}") == 2)
                #expect(sample(metrics, "flitz_relay_uploads_refused_total{reason=\"excess\"}") == 2)
            }
        }
    }

    @Test func creationWithUploadAndTermination() async throws {
        try await RelayHarness.run { relay in
            try await relay.withAccount("alice") { connection, _ in
                let http = relay.blobs
                let token = try await connection.uploadCapability().token
                let data = blobBytes(3_000)
                let created = try await http.send(
                    .POST, "/v1/uploads", token: token,
                    headers: [
                        ("Upload-Length", "3000"), ("Content-Type", "application/offset+octet-stream"),
                        ("Upload-Checksum", "sha256 " + base64SHA256(data)),
                    ],
                    body: data)
                #expect(created.status == 201)
                #expect(created.header("Upload-Offset") == "3000")
                #expect(created.header("Upload-Expires") == nil)
                let location = try #require(created.header("Location"))
                let id = String(location.dropFirst("/v1/uploads/".count))
                #expect(try await http.send(.GET, "/v1/blobs/" + id, tus: false).body == data)
                #expect(try relay.blobFiles() == [id])
                // Termination deletes the finished blob with its bytes and frees the quota.
                #expect(try await http.send(.DELETE, location, token: token).status == 204)
                #expect(try await http.send(.GET, "/v1/blobs/" + id, tus: false).status == 404)
                #expect(try await http.send(.HEAD, location, token: token).status == 404)
                #expect(try relay.blobFiles().isEmpty)
                #expect(try await connection.uploadCapability().quotaUsedBytes == 0)
                // A creation-with-upload whose body fails its checksum still creates the upload, at offset 0.
                let second = try await connection.uploadCapability().token
                let failed = try await http.send(
                    .POST, "/v1/uploads", token: second,
                    headers: [("Upload-Length", "3000"), ("Content-Type", "application/offset+octet-stream"), ("Upload-Checksum", "sha256 " + base64SHA256([9]))],
                    body: data)
                #expect(failed.status == 201)
                #expect(failed.header("Upload-Offset") == "0")
            }
        }
    }

    @Test func interruptedPatchResumesFromTheCommittedOffset() async throws {
        try await RelayHarness.run { relay in
            try await relay.withAccount("alice") { connection, _ in
                let http = relay.blobs
                let token = try await connection.uploadCapability().token
                let data = blobBytes(1_048_576)
                let path = try await http.create(token: token, length: data.count)
                #expect(try await http.patch(path, token: token, offset: 0, Array(data[0..<262_144])).status == 204)
                let file = relay.blobDirectory.appendingPathComponent(String(path.dropFirst("/v1/uploads/".count))).path

                // A PATCH that promises the rest but sends only part of it, then the connection is cut.
                let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connect(host: "127.0.0.1", port: relay.port) { channel in
                        channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
                    }
                try await channel.executeThenClose { _, outbound in
                    let head = "PATCH \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer \(token)\r\n"
                        + "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 262144\r\nContent-Length: 786432\r\n\r\n"
                    try await outbound.write(ByteBuffer(string: head))
                    try await outbound.write(ByteBuffer(bytes: data[262_144..<462_144]))
                    // Wait (failure guard only) until the relay has written some of these bytes to the file.
                    let deadline = ContinuousClock.now + .seconds(20)
                    while (try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int ?? 0) <= 262_144 {
                        guard ContinuousClock.now < deadline else { throw TestTimeout() }
                        try await Task.sleep(for: .milliseconds(5))
                    }
                }
                // The offset did not move.
                let head = try await http.send(.HEAD, path, token: token)
                #expect(head.header("Upload-Offset") == "262144")
                // Continue from HEAD's offset: it waits for the cut PATCH to be dropped, then commits.
                let rest = try await http.patch(path, token: token, offset: 262_144, Array(data[262_144...]))
                #expect(rest.status == 204)
                #expect(rest.header("Upload-Offset") == "1048576")
                let blob = try await http.send(.GET, "/v1/blobs/" + String(path.dropFirst("/v1/uploads/".count)), tus: false)
                #expect(blob.body == data)
                let metrics = await relay.app.relay.metrics.exposition()
                #expect(sample(metrics, "flitz_relay_uploads_refused_total{reason=\"interrupted\"}") == 1)
            }
        }
    }

    @Test func stalledPatchIsAbandonedAfterTheBodyTimeout() async throws {
        try await RelayHarness.run(configure: { $0.blobBodyTimeout = .milliseconds(200) }) { relay in
            try await relay.withAccount("alice") { connection, _ in
                let http = relay.blobs
                let token = try await connection.uploadCapability().token
                let data = blobBytes(524_288)
                let path = try await http.create(token: token, length: data.count)
                #expect(try await http.patch(path, token: token, offset: 0, Array(data[0..<131_072])).status == 204)
                let file = relay.blobDirectory.appendingPathComponent(String(path.dropFirst("/v1/uploads/".count))).path

                // A PATCH that promises the rest, sends part of it and then stalls with the connection open.
                let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connect(host: "127.0.0.1", port: relay.port) { channel in
                        channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
                    }
                // Failure guard only: a relay that never closes the stalled connection fails the test instead of hanging it.
                let guardTask = Task {
                    try await Task.sleep(for: .seconds(20))
                    try await channel.channel.close()
                }
                defer { guardTask.cancel() }
                let answer = try await channel.executeThenClose { inbound, outbound in
                    let head = "PATCH \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer \(token)\r\n"
                        + "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 131072\r\nContent-Length: 393216\r\n\r\n"
                    try await outbound.write(ByteBuffer(string: head))
                    try await outbound.write(ByteBuffer(bytes: data[131_072..<231_072]))
                    // The relay answers and closes the connection once the body has been idle for the timeout.
                    var received = ByteBuffer()
                    for try await var buffer in inbound { received.writeBuffer(&buffer) }
                    return String(buffer: received)
                }
                #expect(answer.hasPrefix("HTTP/1.1 408"), "\(answer)")
                #expect(answer.lowercased().contains("connection: close"))
                // Dropped like a cut body: the offset did not move, the bytes are truncated away, the lock is free.
                let head = try await http.send(.HEAD, path, token: token)
                #expect(head.header("Upload-Offset") == "131072")
                #expect(try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int == 131_072)
                let rest = try await http.patch(path, token: token, offset: 131_072, Array(data[131_072...]))
                #expect(rest.status == 204)
                #expect(rest.header("Upload-Offset") == "524288")
                let blob = try await http.send(.GET, "/v1/blobs/" + String(path.dropFirst("/v1/uploads/".count)), tus: false)
                #expect(blob.body == data)
                let metrics = await relay.app.relay.metrics.exposition()
                #expect(sample(metrics, "flitz_relay_uploads_refused_total{reason=\"interrupted\"}") == 1)
            }
        }
    }

    @Test func aBlobWhoseFileIsLostIsAnErrorNotAnEmptyDownload() async throws {
        try await RelayHarness.run { relay in
            try await relay.withAccount("alice") { connection, _ in
                let http = relay.blobs
                let token = try await connection.uploadCapability().token
                let path = try await http.create(token: token, length: 1_000)
                #expect(try await http.patch(path, token: token, offset: 0, blobBytes(1_000)).status == 204)
                let id = String(path.dropFirst("/v1/uploads/".count))
                let file = relay.blobDirectory.appendingPathComponent(id).path
                #expect(try await http.send(.GET, "/v1/blobs/" + id, tus: false).status == 200)

                // Shorter than its record: 500, not a 200 that ends early.
                try FileManager.default.removeItem(atPath: file)
                #expect(FileManager.default.createFile(atPath: file, contents: Data(blobBytes(10))))
                let short = try await http.send(.GET, "/v1/blobs/" + id, tus: false)
                #expect(short.status == 500)
                #expect(short.header("Content-Type")?.hasPrefix("text/plain") == true)
                #expect(!short.text.isEmpty)
                // Missing: 500 for GET and HEAD.
                try FileManager.default.removeItem(atPath: file)
                let missing = try await http.send(.GET, "/v1/blobs/" + id, tus: false)
                #expect(missing.status == 500)
                #expect(missing.text == "The relay lost this blob's bytes.\n")
                #expect(try await http.send(.HEAD, "/v1/blobs/" + id, tus: false).status == 500)
            }
        }
    }

    @Test func aPatchThatOutlastsTheUploadExpiryDoesNotComplete() async throws {
        try await RelayHarness.run { relay in
            try await relay.withAccount("alice") { connection, _ in
                let http = relay.blobs
                let token = try await connection.uploadCapability().token
                let data = blobBytes(262_144)
                let path = try await http.create(token: token, length: data.count)
                let file = relay.blobDirectory.appendingPathComponent(String(path.dropFirst("/v1/uploads/".count))).path
                #expect(try await http.send(.HEAD, path, token: token).header("Upload-Offset") == "0")

                // The completing PATCH passes its checks, then the upload expires while its body arrives.
                let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connect(host: "127.0.0.1", port: relay.port) { channel in
                        channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
                    }
                let answer = try await channel.executeThenClose { inbound, outbound in
                    let head = "PATCH \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nAuthorization: Bearer \(token)\r\n"
                        + "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: 262144\r\n\r\n"
                    try await outbound.write(ByteBuffer(string: head))
                    try await outbound.write(ByteBuffer(bytes: data[0..<100_000]))
                    // Wait (failure guard only) until the relay is writing this body to the file.
                    let deadline = ContinuousClock.now + .seconds(20)
                    while (try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int ?? 0) == 0 {
                        guard ContinuousClock.now < deadline else { throw TestTimeout() }
                        try await Task.sleep(for: .milliseconds(5))
                    }
                    relay.clock.advance(seconds: 86_401)
                    try await outbound.write(ByteBuffer(bytes: data[100_000...]))
                    var received = ByteBuffer()
                    for try await var buffer in inbound {
                        received.writeBuffer(&buffer)
                        if String(buffer: received).contains("\r\n\r\n") { break }
                    }
                    return String(buffer: received)
                }
                #expect(answer.hasPrefix("HTTP/1.1 404"), "\(answer)")
                #expect(try await http.send(.HEAD, path, token: token).status == 404)
                #expect(try await http.send(.GET, "/v1/blobs/" + String(path.dropFirst("/v1/uploads/".count)), tus: false).status == 404)
                #expect(!FileManager.default.fileExists(atPath: file))
            }
        }
    }

    @Test func theSweepDeletesOldBlobFilesWithoutARecord() async throws {
        try await RelayHarness.run { relay in
            try await relay.withAccount("alice") { connection, _ in
                let http = relay.blobs
                // A live upload whose file is old (no write for 2 hours) keeps its file: it has a record.
                let token = try await connection.uploadCapability().token
                let path = try await http.create(token: token, length: 100)
                let kept = String(path.dropFirst("/v1/uploads/".count))
                let old = Date(timeIntervalSinceNow: -7_200)
                try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: relay.blobDirectory.appendingPathComponent(kept).path)
                // Files without a record: one last written 2 hours ago (a crash between file and record), one just now.
                let stray = String(repeating: "ab", count: 16)
                let recent = String(repeating: "cd", count: 16)
                let notABlob = "operator-notes.txt"
                for name in [stray, recent, notABlob] {
                    #expect(FileManager.default.createFile(atPath: relay.blobDirectory.appendingPathComponent(name).path, contents: Data(blobBytes(10))))
                }
                for name in [stray, notABlob] {
                    try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: relay.blobDirectory.appendingPathComponent(name).path)
                }
                #expect(try relay.blobFiles() == [kept, stray, recent, notABlob].sorted())
                try await relay.app.relay.sweep()
                #expect(try relay.blobFiles() == [kept, recent, notABlob].sorted())
                #expect(try await http.patch(path, token: token, offset: 0, blobBytes(100)).status == 204)
                let metrics = await relay.app.relay.metrics.exposition()
                #expect(sample(metrics, "flitz_relay_blobs_deleted_total{reason=\"stray\"}") == 1)
            }
        }
    }

    @Test func refusedCreationsLeaveNoFile() async throws {
        try await RelayHarness.run(configure: { $0.blobQuotaBytes = 1_000 }) { relay in
            try await relay.withAccount("alice") { connection, _ in
                let http = relay.blobs
                let token = try await connection.uploadCapability().token
                let over = try await http.send(.POST, "/v1/uploads", token: token, headers: [("Upload-Length", "600")])
                #expect(over.status == 201)
                let second = try await connection.uploadCapability().token
                let refused = try await http.send(.POST, "/v1/uploads", token: second, headers: [("Upload-Length", "600")])
                #expect(refused.status == 413)
                #expect(try relay.blobFiles().count == 1)
            }
        }
    }

    @Test func expiryAndGarbageCollection() async throws {
        try await RelayHarness.run { relay in
            try await relay.withAccount("alice") { connection, _ in
                let http = relay.blobs
                let now = Int64(relay.clock.now().timeIntervalSince1970 * 1_000)
                // A blob that expires in 2 hours, an unfinished upload (24 hours), and an unused token (1 hour).
                let finished = try await connection.uploadCapability(expiresAtMs: now + 7_200_000)
                let finishedPath = try await http.create(token: finished.token, length: 100)
                #expect(try await http.patch(finishedPath, token: finished.token, offset: 0, blobBytes(100)).status == 204)
                let blobPath = "/v1/blobs/" + finishedPath.dropFirst("/v1/uploads/".count)
                let unfinished = try await connection.uploadCapability()
                let unfinishedPath = try await http.create(token: unfinished.token, length: 100)
                #expect(try await http.patch(unfinishedPath, token: unfinished.token, offset: 0, blobBytes(50)).status == 204)
                let unused = try await connection.uploadCapability()
                #expect(try relay.blobFiles().count == 2)

                // After 1 hour the unused token can no longer create.
                relay.clock.advance(seconds: 3_601)
                #expect(try await http.send(.POST, "/v1/uploads", token: unused.token, headers: [("Upload-Length", "1")]).status == 401)
                // After 2 hours the blob is never served, swept or not.
                relay.clock.advance(seconds: 3_600)
                #expect(try await http.send(.GET, blobPath, tus: false).status == 404)
                #expect(try await http.send(.HEAD, finishedPath, token: finished.token).status == 404)
                #expect(try await http.send(.HEAD, unfinishedPath, token: unfinished.token).status == 200)
                try await relay.app.relay.sweep()
                #expect(try relay.blobFiles().count == 1)
                // After 24 hours the unfinished upload is gone too.
                relay.clock.advance(seconds: 86_400)
                #expect(try await http.send(.HEAD, unfinishedPath, token: unfinished.token).status == 404)
                #expect(try await http.patch(unfinishedPath, token: unfinished.token, offset: 50, blobBytes(50)).status == 404)
                try await relay.app.relay.sweep()
                #expect(try relay.blobFiles().isEmpty)
                #expect(try await connection.uploadCapability().quotaUsedBytes == 0)
                let metrics = await relay.app.relay.metrics.exposition()
                #expect(sample(metrics, "flitz_relay_blobs_deleted_total{reason=\"expired\"}") == 2)
            }
        }
    }

    @Test func unsendDeletesBlobs() async throws {
        try await RelayHarness.run { relay in
            try await relay.withAccount("alice") { connection, _ in
                let http = relay.blobs
                let unsendToken = SystemRandom().bytes(32)
                let hash = ConversationTokens.unsendTokenHash(unsendToken)
                let finished = try await connection.uploadCapability(unsendTokenHash: hash)
                let finishedPath = try await http.create(token: finished.token, length: 10)
                #expect(try await http.patch(finishedPath, token: finished.token, offset: 0, blobBytes(10)).status == 204)
                let unfinished = try await connection.uploadCapability(unsendTokenHash: hash)
                _ = try await http.create(token: unfinished.token, length: 10)
                let kept = try await connection.uploadCapability()
                let keptPath = try await http.create(token: kept.token, length: 10)
                #expect(try relay.blobFiles().count == 3)

                var unsend = WireUnsend()
                unsend.unsendToken = unsendToken
                let reply = try await connection.request(.unsend(unsend))
                guard case .unsendResult(let result) = reply.body else { throw TestTimeout() }
                #expect(result.blobsDeleted == 2)
                #expect(result.outcomes.isEmpty)
                #expect(try relay.blobFiles() == [String(keptPath.dropFirst("/v1/uploads/".count))])
                #expect(try await http.send(.GET, "/v1/blobs/" + finishedPath.dropFirst("/v1/uploads/".count), tus: false).status == 404)
                // Again: neither an envelope nor a blob carries it.
                #expect(try await connection.request(.unsend(unsend)).errorCode == .unknownToken)
            }
        }
    }

    @Test func accountDeletionDeletesBlobs() async throws {
        try await RelayHarness.run { relay in
            let identity = TestIdentity("alice")
            try await relay.connect { connection in
                _ = try await connection.register(identity)
                try await connection.authenticate(identity)
                let http = relay.blobs
                let capability = try await connection.uploadCapability()
                let path = try await http.create(token: capability.token, length: 10)
                #expect(try await http.patch(path, token: capability.token, offset: 0, blobBytes(10)).status == 204)
                let unused = try await connection.uploadCapability()
                #expect(try relay.blobFiles().count == 1)
                var request = WireDeleteAccount()
                request.signature = identity.account.signature(for: SignedPayload.deleteAccount(
                    accountIdentityKey: identity.account.publicKey.rawRepresentation, nonce: connection.nonce, handle: "alice"))
                #expect(try await connection.request(.deleteAccount(request)).isOk)
                #expect(try relay.blobFiles().isEmpty)
                #expect(try await http.send(.GET, "/v1/blobs/" + path.dropFirst("/v1/uploads/".count), tus: false).status == 404)
                #expect(try await http.send(.POST, "/v1/uploads", token: unused.token, headers: [("Upload-Length", "1")]).status == 401)
            }
        }
    }

    @Test func accountRecoveryDeletesBlobs() async throws {
        try await RelayHarness.run { relay in
            let identity = TestIdentity("alice")
            let (code, path, token) = try await relay.connect { connection in
                let (_, code) = try await connection.register(identity)
                try await connection.authenticate(identity)
                let capability = try await connection.uploadCapability()
                let path = try await relay.blobs.create(token: capability.token, length: 10)
                #expect(try await relay.blobs.patch(path, token: capability.token, offset: 0, blobBytes(10)).status == 204)
                return (code, path, capability.token)
            }
            #expect(try relay.blobFiles().count == 1)
            let recovered = TestIdentity("alice")
            try await relay.connect { connection in
                var recover = WireRecover()
                recover.handle = "alice"
                recover.recoveryCode = code
                recover.accountIdentityKey = recovered.account.publicKey.rawRepresentation
                recover.device = recovered.deviceKeys()
                recover.challengeSignature = recovered.device.signature(for: SignedPayload.authentication(nonce: connection.nonce, handle: "alice"))
                guard case .registerResult = try await connection.request(.recover(recover)).body else { throw TestTimeout() }
            }
            #expect(try relay.blobFiles().isEmpty)
            #expect(try await relay.blobs.send(.GET, "/v1/blobs/" + path.dropFirst("/v1/uploads/".count), tus: false).status == 404)
            #expect(try await relay.blobs.send(.HEAD, path, token: token).status == 404)
        }
    }

    @Test func capabilityChecksAndRateLimit() async throws {
        try await RelayHarness.run { relay in
            try await relay.connect { connection in
                // Not authenticated.
                #expect(try await connection.request(.requestUploadCapability(WireRequestUploadCapability())).errorCode == .notAuthenticated)
                let identity = TestIdentity("alice")
                _ = try await connection.register(identity)
                try await connection.authenticate(identity)
                var bad = WireRequestUploadCapability()
                bad.unsendTokenHash = Data(count: 31)
                #expect(try await connection.request(.requestUploadCapability(bad)).errorCode == .invalidArgument)
                bad = WireRequestUploadCapability()
                bad.expiresAtMs = Int64(relay.clock.now().timeIntervalSince1970 * 1_000)
                #expect(try await connection.request(.requestUploadCapability(bad)).errorCode == .invalidArgument)
                // An expiry past the retention ceiling is capped.
                var far = WireRequestUploadCapability()
                let now = Int64(relay.clock.now().timeIntervalSince1970 * 1_000)
                far.expiresAtMs = now + 10 * 86_400_000
                let reply = try await connection.request(.requestUploadCapability(far))
                guard case .uploadCapability(let capped) = reply.body else { throw TestTimeout() }
                #expect(capped.blobExpiresAtMs == now + 86_400_000)
                // 60 per minute per device: 59 more pass, the next is refused with a retry time.
                for _ in 0..<59 { _ = try await connection.uploadCapability() }
                let limited = try await connection.request(.requestUploadCapability(WireRequestUploadCapability()))
                #expect(limited.errorCode == .rateLimited)
                if case .error(let error) = limited.body { #expect(error.retryAfterMs > 0) }
                relay.clock.advance(seconds: 2)
                _ = try await connection.uploadCapability()
            }
        }
    }

    @Test func blobDirectoryAndFilesArePrivate() async throws {
        try await RelayHarness.run { relay in
            try await relay.withAccount("alice") { connection, _ in
                let token = try await connection.uploadCapability().token
                _ = try await relay.blobs.create(token: token, length: 5)
                let directory = try FileManager.default.attributesOfItem(atPath: relay.blobDirectory.path)
                #expect((directory[.posixPermissions] as? Int) == 0o700)
                let file = try #require(try relay.blobFiles().first)
                let attributes = try FileManager.default.attributesOfItem(atPath: relay.blobDirectory.appendingPathComponent(file).path)
                #expect((attributes[.posixPermissions] as? Int) == 0o600)
            }
        }
    }
}

/// base64url without padding (the token's form).
enum TestBase64URL {
    static func encodeForTests(_ bytes: Data) -> String {
        bytes.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}
