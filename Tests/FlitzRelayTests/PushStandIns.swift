import AsyncHTTPClient
import Foundation
import Hummingbird
import HTTPTypes
import HummingbirdCore
import HummingbirdHTTP2
import JWTKit
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization
import Testing

// Shared by APNsSenderTests and FCMSenderTests: local stand-ins for push services (Hummingbird on 127.0.0.1
// port 0), the requests they saw, scripted answers, test keys written to a temporary directory, and the
// HTTP client the relay would own.

/// One request a stand-in received, as it arrived.
struct ReceivedRequest: Sendable {
    var method: String
    var path: String
    /// Lowercased names; values in arrival order.
    var headers: [String: [String]]
    var body: Data
    /// Whether it came on an HTTP/2 stream.
    var isHTTP2: Bool

    func header(_ name: String) -> String? { headers[name]?.first }
    var bodyText: String { String(decoding: body, as: UTF8.self) }
}

/// An answer a test makes the stand-in give instead of its own.
struct ScriptedAnswer: Sendable {
    var status: Int
    var headers: [(String, String)] = []
    var body: String = ""
}

/// Requests in arrival order, and answers to give next (first in, first out). A stand-in records a request
/// before answering it, so once `send` returns its request is here: no waiting needed.
final class StandInLog: Sendable {
    private let received = Mutex<[ReceivedRequest]>([])
    private let scripted = Mutex<[ScriptedAnswer]>([])

    func record(_ request: ReceivedRequest) { received.withLock { $0.append(request) } }

    /// Every request so far.
    var requests: [ReceivedRequest] { received.withLock { $0 } }

    /// Queues answers for the next requests that pass the stand-in's checks.
    func script(_ answers: ScriptedAnswer...) { scripted.withLock { $0.append(contentsOf: answers) } }

    func nextScripted() -> ScriptedAnswer? {
        scripted.withLock { $0.isEmpty ? nil : $0.removeFirst() }
    }
}

/// Request context keeping the channel, to tell HTTP/2 streams from HTTP/1 connections.
struct StandInContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

enum StandIn {
    /// Runs a Hummingbird server on 127.0.0.1 port 0 answering every request with `handle`, calls `body` with
    /// its port, then stops it.
    static func run(
        server: HTTPServerBuilder,
        handle: @escaping @Sendable (ReceivedRequest) async -> Response,
        _ body: @Sendable (Int) async throws -> Void
    ) async throws {
        let router = Router(context: StandInContext.self)
        router.on("**", method: .post) { request, context in
            try await handle(received(request, context: context))
        }
        router.on("**", method: .get) { request, context in
            try await handle(received(request, context: context))
        }
        let (ports, portContinuation) = AsyncStream<Int>.makeStream()
        var logger = Logger(label: "flitz-push-stand-in")
        logger.logLevel = .warning
        let app = Application(
            router: router, server: server,
            configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { portContinuation.yield($0.localAddress!.port!) },
            logger: logger)
        let services = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await services.run() }
            var portIterator = ports.makeAsyncIterator()
            guard let port = await portIterator.next() else { throw TestTimeout() }
            do {
                try await body(port)
            } catch {
                await services.triggerGracefulShutdown()
                throw error
            }
            await services.triggerGracefulShutdown()
            try await group.waitForAll()
        }
    }

    private static func received(_ request: Request, context: StandInContext) async throws -> ReceivedRequest {
        var headers: [String: [String]] = [:]
        for field in request.headers {
            headers[field.name.canonicalName, default: []].append(field.value)
        }
        let body = try await request.body.collect(upTo: 1 << 20)
        // An HTTP/2 request arrives on a stream channel whose parent is the TCP connection, whose parent is the
        // listening socket; an HTTP/1 request on the connection itself. (Asking a plain socket for an HTTP/2
        // option is a fatal error in NIO, so the option cannot be probed.)
        return ReceivedRequest(
            method: request.method.rawValue, path: request.uri.path, headers: headers,
            body: Data(body.readableBytesView), isHTTP2: context.channel.parent?.parent != nil)
    }

    /// A response with `status`, `headers` and a JSON (or form) `body`.
    static func answer(_ status: Int, _ body: String = "", headers: [(String, String)] = []) -> Response {
        var fields = HTTPFields()
        for (name, value) in headers { fields.append(HTTPField(name: HTTPField.Name(name)!, value: value)) }
        if !body.isEmpty { fields[.contentType] = "application/json" }
        return Response(
            status: .init(code: status), headers: fields, body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    static func answer(_ scripted: ScriptedAnswer) -> Response {
        answer(scripted.status, scripted.body, headers: scripted.headers)
    }

    /// Tests/Fixtures/tls, found from this file's path.
    static var tlsDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/tls")
    }

    /// TLS for the HTTPS stand-in: the fixture server certificate for localhost / 127.0.0.1.
    static func serverTLS() throws -> TLSConfiguration {
        let certificates = try NIOSSLCertificate.fromPEMFile(tlsDirectory.appendingPathComponent("server.pem").path)
        let key = try NIOSSLPrivateKey(file: tlsDirectory.appendingPathComponent("server-key.pem").path, format: .pem)
        return TLSConfiguration.makeServerConfiguration(certificateChain: certificates.map { .certificate($0) }, privateKey: .privateKey(key))
    }

    /// Runs `body` with an HTTP client like the relay's: trusting the fixture CA (as `push.caFile` makes it),
    /// HTTP/2 by ALPN, no redirects. Shuts it down after.
    static func withHTTPClient(_ body: (HTTPClient) async throws -> Void) async throws {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.trustRoots = .file(tlsDirectory.appendingPathComponent("ca.pem").path)
        let client = HTTPClient(
            eventLoopGroupProvider: .singleton,
            configuration: .init(tlsConfiguration: tls, redirectConfiguration: .disallow))
        do {
            try await body(client)
        } catch {
            try await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }

    /// A fresh temporary directory, removed after `body`.
    static func withTemporaryDirectory(_ body: (URL) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-push-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try await body(directory)
    }
}

/// A JWT's header and claims as JSON objects, without verifying anything.
struct DecodedJWT {
    var header: [String: Any]
    var claims: [String: Any]

    init?(_ token: String) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let header = Self.object(parts[0]), let claims = Self.object(parts[1]) else { return nil }
        self.header = header
        self.claims = claims
    }

    private static func object(_ part: Substring) -> [String: Any]? {
        var base64 = part.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64.append("=") }
        guard let data = Data(base64Encoded: base64) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }
}

/// Claims of any JWT, for signature checks with JWTKit; the stand-ins check the values themselves.
struct AnyClaims: JWTPayload {
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// The time tests start at (2027-01-15T08:00:00Z), so expiries and `iat` are fixed numbers.
let pushTestNow = Date(timeIntervalSince1970: 1_800_000_000)
