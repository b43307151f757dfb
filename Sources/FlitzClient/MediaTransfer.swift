import AsyncHTTPClient
import FlitzCrypto
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1

/// Progress of one upload or download, for progress bars.
public struct TransferProgress: Sendable {
    /// Bytes of the blob transferred so far (including what an earlier run transferred).
    public var bytes: UInt64
    /// Bytes of the whole blob.
    public var total: UInt64
    /// Bytes an earlier, interrupted run had already transferred (0 for a fresh transfer).
    public var resumedFrom: UInt64
}

/// The relay's blob store over HTTP(S) (`protocol/attachments.md` sections 4.2-4.4): the base URL derived from the
/// relay's `ws(s)://` address, and the client's TLS trust (`--ca-file`) as the WebSocket uses it.
struct BlobHTTP: Sendable {
    let client: HTTPClient
    /// `http://HOST:PORT` or `https://HOST:PORT`.
    let base: String

    /// One answer: status, headers and the body (bodies of TUS answers are short sentences).
    struct Answer: Sendable {
        var status: Int
        var headers: HTTPHeaders
        var body: Data
        func header(_ name: String) -> String? { headers.first(name: name) }
    }

    /// `ws://H:P[/v1/ws]` → `http://H:P`, `wss://…` → `https://…`.
    static func base(of relayURL: String) -> String {
        var url = relayURL
        if url.lowercased().hasPrefix("wss://") { url = "https://" + url.dropFirst(6) } else if url.lowercased().hasPrefix("ws://") { url = "http://" + url.dropFirst(5) }
        if url.hasSuffix("/v1/ws") { url.removeLast(6) }
        while url.hasSuffix("/") { url.removeLast() }
        return url
    }

    /// Runs `body` with a client for `relayURL`, shut down afterwards.
    /// - Throws: `ClientError(.invalidArgument)` when `caFile` cannot be read; whatever `body` throws.
    static func with<T: Sendable>(relayURL: String, caFile: String?, _ body: (BlobHTTP) async throws -> T) async throws -> T {
        var configuration = HTTPClient.Configuration()
        if relayURL.lowercased().hasPrefix("wss://") { configuration.tlsConfiguration = try RelayConnection.tlsConfiguration(caFile: caFile) }
        configuration.timeout = .init(connect: .seconds(10), read: .seconds(60))
        // Never follow a redirect: it could carry the upload's bearer token or the blob request to another host.
        configuration.redirectConfiguration = .disallow
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let http = BlobHTTP(client: client, base: base(of: relayURL))
        do {
            let result = try await body(http)
            try? await client.shutdown()
            return result
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    /// Sends one request with `Tus-Resumable: 1.0.0` and collects the (short) answer.
    /// - Throws: `ClientError(.relayUnreachable)` when the relay cannot be reached or the exchange breaks.
    func request(_ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], body: Data? = nil) async throws -> Answer {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        request.headers.add(name: "Tus-Resumable", value: "1.0.0")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(data: body)) }
        do {
            let response = try await client.execute(request, timeout: .seconds(120))
            let buffer = try await response.body.collect(upTo: 1 << 20)
            return Answer(status: Int(response.status.code), headers: response.headers, body: Data(buffer: buffer))
        } catch let error as ClientError {
            throw error
        } catch {
            throw ClientError(.relayUnreachable, "the relay's blob store at \(base) did not answer: \(RelayConnection.reason(error))")
        }
    }

    /// `GET /v1/blobs/ID` from byte `offset` (a `Range` request when > 0), handing each arriving piece to `sink`.
    /// Returns the status (200, 206, 404, 416, …) and whether the answer starts at `offset`.
    /// - Throws: `BodyBrokeOff` when the answer started and its body broke off; `ClientError(.relayUnreachable)` when
    ///   the relay cannot be reached; whatever `sink` throws.
    func download(blobID: String, from offset: UInt64, sink: (Data) throws -> Void) async throws -> (status: Int, startsAtOffset: Bool) {
        var request = HTTPClientRequest(url: base + "/v1/blobs/" + blobID)
        request.method = .GET
        if offset > 0 { request.headers.add(name: "Range", value: "bytes=\(offset)-") }
        var answered = false
        do {
            let response = try await client.execute(request, timeout: .seconds(3600))
            let status = Int(response.status.code)
            guard status == 200 || status == 206 else {
                _ = try? await response.body.collect(upTo: 1 << 16)
                return (status, false)
            }
            let starts: Bool
            if status == 206 {
                // Content-Range: bytes A-B/SIZE
                let range = response.headers.first(name: "Content-Range") ?? ""
                let start = range.split(separator: " ").last?.split(separator: "-").first.flatMap { UInt64($0) }
                starts = start == offset
            } else {
                starts = offset == 0
            }
            guard starts else { return (status, false) }
            answered = true
            for try await buffer in response.body { try sink(Data(buffer: buffer)) }
            return (status, true)
        } catch let error as ClientError {
            throw error
        } catch {
            if answered { throw BodyBrokeOff() }
            throw ClientError(.relayUnreachable, "cannot download from the relay at \(base): \(RelayConnection.reason(error)); run it again to resume")
        }
    }

    /// A download whose answer began and whose body then ended before its `Content-Length`.
    struct BodyBrokeOff: Error {}
}
