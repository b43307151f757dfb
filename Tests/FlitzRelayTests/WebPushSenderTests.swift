#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import AsyncHTTPClient
import Crypto
import FlitzCrypto
@testable import FlitzRelay
import Foundation
import Hummingbird
import JWTKit
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import Testing

/// The injected time of every test: 2027-01-15, far from the machine's clock, so a sender that read the system
/// clock would fail the service's `exp` check.
private let testNow = Date(timeIntervalSince1970: 1_800_000_000)
private let subject = "mailto:ops@flitz.test"

/// What the stand-in push service saw in one request, and what it found wrong with it (empty: nothing).
struct ReceivedPush: Sendable {
    var path: String
    var headers: [String: String]
    var body: Data
    var token: String?
    var claims: CheckedVAPIDClaims?
    var problems: [String]
}

struct CheckedVAPIDClaims: JWTPayload, Equatable {
    var aud: String
    var exp: Int64
    var sub: String
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// A local Web Push service (RFC 8030) on 127.0.0.1, port 0, checking what a real one checks before it accepts:
/// the RFC 8292 `Authorization` header (ES256 signature under the key in `k=`, `aud` its own origin, `exp` in the
/// future and at most 24 hours after `now`, `sub`), the RFC 8188 / 8030 headers, and an `aes128gcm` body.
/// A request with a problem is refused with 401 or 400 and recorded with its problems; otherwise the path picks
/// the answer: `/push/ok` 201, `/status/CODE` CODE (with `Retry-After: 7` for 429), `/date` 429 with an HTTP-date
/// `Retry-After` 30 s after `now`, `/hang` no answer until the test ends.
final class StandInPushService: Sendable {
    let port: Int
    private let received: AsyncStream<ReceivedPush>
    private let release: AsyncStream<Void>.Continuation
    private let task: Task<Void, any Error>
    private let group: ServiceGroup

    var origin: String { "http://127.0.0.1:\(port)" }
    func url(_ path: String) -> String { origin + path }

    private init(port: Int, received: AsyncStream<ReceivedPush>, release: AsyncStream<Void>.Continuation, task: Task<Void, any Error>, group: ServiceGroup) {
        self.group = group
        self.port = port
        self.received = received
        self.release = release
        self.task = task
    }

    static func start(now: Date = testNow) async throws -> StandInPushService {
        let (received, receivedSink) = AsyncStream.makeStream(of: ReceivedPush.self)
        let (released, release) = AsyncStream.makeStream(of: Void.self)
        let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
        let originBox = Mutex<String>("")
        let router = Router()
        router.post("/**") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 1 << 16)
            var push = ReceivedPush(path: request.uri.path, headers: [:], body: Data(body.readableBytesView), problems: [])
            for field in request.headers { push.headers[field.name.canonicalName] = field.value }
            await check(&push, origin: originBox.withLock { $0 }, now: now)
            receivedSink.yield(push)
            if !push.problems.isEmpty {
                return Response(status: push.problems.contains(where: { $0.hasPrefix("vapid") }) ? .unauthorized : .badRequest)
            }
            let path = request.uri.path
            if path == "/push/ok" { return Response(status: .created) }
            if path == "/date" {
                let formatter = DateFormatter()
                formatter.locale = Locale(identifier: "en_US_POSIX")
                formatter.timeZone = TimeZone(identifier: "GMT")
                formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
                return Response(status: .tooManyRequests, headers: [.retryAfter: formatter.string(from: now.addingTimeInterval(30))])
            }
            if path == "/hang" {
                for await _ in released {}
                return Response(status: .created)
            }
            if path.hasPrefix("/status/"), let code = Int(path.dropFirst("/status/".count)) {
                return Response(status: .init(code: code), headers: code == 429 ? [.retryAfter: "7"] : [:])
            }
            return Response(status: .notFound)
        }
        var logger = Logger(label: "stand-in-push-service")
        logger.logLevel = .warning
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in portSink.yield(channel.localAddress?.port ?? 0) }, logger: logger)
        let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
        let task = Task { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else { throw TestTimeout() }
        originBox.withLock { $0 = "http://127.0.0.1:\(port)" }
        return StandInPushService(port: port, received: received, release: release, task: task, group: group)
    }

    /// The next request the service received; throws after `timeout` (a failure guard, not a wait).
    func next(timeout: Duration = .seconds(10)) async throws -> ReceivedPush {
        let stream = received
        return try await withThrowingTaskGroup(of: ReceivedPush?.self) { group in
            group.addTask {
                var iterator = stream.makeAsyncIterator()
                return await iterator.next()
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let push = first else { throw TestTimeout() }
            return push
        }
    }

    func stop() async {
        release.finish()
        await group.triggerGracefulShutdown()
        _ = await task.result
    }

    /// What a push service checks (RFC 8030 section 5, RFC 8292 section 3 and 4, RFC 8188 section 2.1).
    private static func check(_ push: inout ReceivedPush, origin: String, now: Date) async {
        func header(_ name: String) -> String? { push.headers[name.lowercased()] }
        if header("Content-Encoding") != "aes128gcm" { push.problems.append("Content-Encoding is \(header("Content-Encoding") ?? "missing")") }
        if header("Content-Type") != "application/octet-stream" { push.problems.append("Content-Type is \(header("Content-Type") ?? "missing")") }
        if header("TTL").flatMap({ Int($0) }).map({ $0 >= 0 }) != true { push.problems.append("TTL missing or not a non-negative integer") }
        if let urgency = header("Urgency"), !["very-low", "low", "normal", "high"].contains(urgency) {
            push.problems.append("Urgency \(urgency) unknown")
        }
        if let topic = header("Topic"),
           topic.isEmpty || topic.count > 32 || !topic.unicodeScalars.allSatisfy({ CharacterSet.alphanumerics.contains($0) && $0.isASCII || $0 == "-" || $0 == "_" }) {
            push.problems.append("Topic is not up to 32 base64url characters (RFC 8030 section 5.4)")
        }
        if push.body.count < 86 + 17 || push.body[push.body.startIndex + 20] != 65 { push.problems.append("body is no aes128gcm record with a key id") }

        // Authorization: vapid t=JWT, k=KEY
        guard let authorization = header("Authorization"), authorization.hasPrefix("vapid ") else {
            push.problems.append("vapid: no vapid Authorization")
            return
        }
        var parameters: [String: String] = [:]
        for part in authorization.dropFirst("vapid ".count).split(separator: ",") {
            let pair = part.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            if pair.count == 2 { parameters[String(pair[0])] = String(pair[1]) }
        }
        guard let token = parameters["t"], let k = parameters["k"], let keyBytes = base64URLDecode(k), keyBytes.count == 65,
              let publicKey = try? P256.Signing.PublicKey(x963Representation: keyBytes)
        else {
            push.problems.append("vapid: t or k missing, or k not a 65-byte P-256 key")
            return
        }
        push.token = token
        let segments = token.split(separator: ".", omittingEmptySubsequences: false)
        if segments.count != 3 { push.problems.append("vapid: token is not a JWS compact serialization") }
        if let headerBytes = segments.first.flatMap({ base64URLDecode(String($0)) }),
           let headerJSON = try? JSONSerialization.jsonObject(with: headerBytes) as? [String: String] {
            if headerJSON != ["typ": "JWT", "alg": "ES256"] { push.problems.append("vapid: JWT header is \(headerJSON)") }
        } else {
            push.problems.append("vapid: JWT header unreadable")
        }
        do {
            let keys = JWTKeyCollection()
            await keys.add(ecdsa: try ES256PublicKey(backing: publicKey))
            let claims = try await keys.verify(token, as: CheckedVAPIDClaims.self)
            push.claims = claims
            if claims.aud != origin { push.problems.append("vapid: aud \(claims.aud) is not \(origin)") }
            let exp = Date(timeIntervalSince1970: TimeInterval(claims.exp))
            if exp <= now || exp > now.addingTimeInterval(86_400) { push.problems.append("vapid: exp not within 24 h of now") }
            if claims.sub != subject { push.problems.append("vapid: sub \(claims.sub)") }
        } catch {
            push.problems.append("vapid: signature does not verify under k (\(error))")
        }
    }
}

func base64URLDecode(_ text: String) -> Data? {
    var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    if base64.contains("=") { return nil }
    base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
    return Data(base64Encoded: base64)
}

/// Runs `body` with a fresh HTTP client, a started stand-in service and a sender, and tears all down.
private func withSender(
    timeout: Duration = .seconds(10), vapidKey: VAPIDKey = .generate(),
    _ body: (WebPushSender, StandInPushService) async throws -> Void
) async throws {
    let client = HTTPClient(eventLoopGroupProvider: .singleton)
    let service = try await StandInPushService.start()
    let sender = WebPushSender(client: client, vapidKey: vapidKey, subject: subject, timeout: timeout, allowPrivateEndpoints: true)
    do {
        try await body(sender, service)
    } catch {
        await service.stop()
        try await client.shutdown()
        throw error
    }
    await service.stop()
    try await client.shutdown()
}

private func endpoint(_ url: String, _ keys: WebPush.SubscriberKeys) -> PushEndpoint {
    PushEndpoint(provider: .webPush, endpoint: url, p256dh: keys.publicKey, authSecret: keys.authSecret.unsafeData)
}

@Suite("Web Push sender")
struct WebPushSenderTests {
    @Test("urgent and ring: the service accepts the VAPID token and headers, the device decrypts exactly the wake-up",
          arguments: [WakeClass.urgent, .ring])
    func wakeUpReachesTheDevice(wakeClass: WakeClass) async throws {
        let vapidKey = VAPIDKey.generate()
        try await withSender(vapidKey: vapidKey) { sender, service in
            let keys = WebPush.SubscriberKeys.generate()
            let wake = WakeUp(wakeClass: wakeClass, expiresAt: testNow.addingTimeInterval(3_600.9))
            let outcome = await sender.send(wake, to: endpoint(service.url("/push/ok"), keys), now: testNow)
            let push = try await service.next()
            #expect(push.problems == [])
            #expect(outcome == .accepted)
            #expect(push.headers["ttl"] == "3600")
            #expect(push.headers["urgency"] == (wakeClass == .ring ? "high" : "normal"))
            #expect(push.headers["topic"] == (wakeClass == .urgent ? "flitz-wake" : nil))
            #expect(push.headers["authorization"]?.hasSuffix(", k=\(vapidKey.publicKeyBase64URL)") == true)
            #expect(push.claims == CheckedVAPIDClaims(aud: service.origin, exp: 1_800_000_000 + 12 * 3600, sub: subject))
            #expect(push.body.count == 86 + 64 + 16)
            let plaintext = try WebPush.decrypt(push.body, keys: keys)
            #expect(String(decoding: plaintext, as: UTF8.self) == #"{"v":1,"wake":"\#(wakeClass.rawValue)"}"#)
            // The key id in the header is the fresh ephemeral key, not the VAPID key.
            #expect(push.body.subdata(in: 21..<86) != vapidKey.publicKey)
        }
    }

    @Test("each request has a fresh salt and ephemeral key")
    func freshSaltAndEphemeralKey() async throws {
        try await withSender { sender, service in
            let keys = WebPush.SubscriberKeys.generate()
            let wake = WakeUp(wakeClass: .urgent, expiresAt: testNow.addingTimeInterval(60))
            #expect(await sender.send(wake, to: endpoint(service.url("/push/ok"), keys), now: testNow) == .accepted)
            #expect(await sender.send(wake, to: endpoint(service.url("/push/ok"), keys), now: testNow) == .accepted)
            let first = try await service.next().body, second = try await service.next().body
            #expect(first.prefix(16) != second.prefix(16))
            #expect(first.subdata(in: 21..<86) != second.subdata(in: 21..<86))
        }
    }

    @Test("TTL is whole seconds until expiry, 0 once expired")
    func ttlFromInjectedNow() async throws {
        try await withSender { sender, service in
            let keys = WebPush.SubscriberKeys.generate()
            for (expiresIn, ttl) in [(59.999, "59"), (0.5, "0"), (-30, "0"), (2_592_000, "2592000")] {
                let wake = WakeUp(wakeClass: .ring, expiresAt: testNow.addingTimeInterval(expiresIn))
                #expect(await sender.send(wake, to: endpoint(service.url("/push/ok"), keys), now: testNow) == .accepted)
                let push = try await service.next()
                #expect(push.headers["ttl"] == ttl)
            }
        }
    }

    @Test("the VAPID token is reused per origin until an hour before it expires, then renewed")
    func tokenCachedPerOrigin() async throws {
        let other = try await StandInPushService.start(now: testNow.addingTimeInterval(11 * 3600 + 1))
        do {
            try await tokenCachedPerOrigin(other: other)
        } catch {
            await other.stop()
            throw error
        }
        await other.stop()
    }

    private func tokenCachedPerOrigin(other: StandInPushService) async throws {
        try await withSender { sender, service in
            let keys = WebPush.SubscriberKeys.generate()
            let wake = WakeUp(wakeClass: .urgent, expiresAt: testNow.addingTimeInterval(86_400))
            let target = endpoint(service.url("/push/ok"), keys)
            #expect(await sender.send(wake, to: target, now: testNow) == .accepted)
            let first = try await service.next()
            #expect(await sender.send(wake, to: target, now: testNow.addingTimeInterval(11 * 3600 - 1)) == .accepted)
            let second = try await service.next()
            #expect(second.token == first.token)

            // Another origin gets its own token (its own aud), signed at the time of its first use.
            let later = testNow.addingTimeInterval(11 * 3600 + 1)
            #expect(await sender.send(wake, to: endpoint(other.url("/push/ok"), keys), now: later) == .accepted)
            let elsewhere = try await other.next()
            #expect(elsewhere.problems == [])
            #expect(elsewhere.claims?.aud == other.origin)
            #expect(elsewhere.claims?.exp == Int64(later.timeIntervalSince1970) + 12 * 3600)

            // A clock that went back a day never reuses a token whose exp would then be over 12 h ahead.
            let earlier = testNow.addingTimeInterval(-86_400)
            let rewound = try await sender.vapidToken(origin: service.origin, now: earlier)
            #expect(rewound != first.token)

            // Less than an hour before the first token expires: a new one, 12 h from then.
            #expect(await sender.send(wake, to: target, now: later) == .accepted)
            let third = try await service.next()
            #expect(third.token != first.token)
            #expect(third.claims?.exp == Int64(later.timeIntervalSince1970) + 12 * 3600)
        }
    }

    @Test("the stand-in service refuses a token signed by another key than k, and a wrong aud")
    func standInRefusesForgeries() async throws {
        let key = VAPIDKey.generate(), other = VAPIDKey.generate()
        try await StandIn.withHTTPClient { client in
        let service = try await StandInPushService.start()
        // A token for the right origin from a sender holding `other`, presented with `key`'s public key.
        let forger = WebPushSender(client: client, vapidKey: other, subject: subject, allowPrivateEndpoints: true)
        let token = try await forger.vapidToken(origin: service.origin, now: testNow)
        let wrongAud = try await forger.vapidToken(origin: "https://push.example.com", now: testNow)
        let keys = WebPush.SubscriberKeys.generate()
        let body = try WebPush.encrypt(WakeClass.urgent.payload, subscriberPublicKey: keys.publicKey, authSecret: keys.authSecret, paddedLength: 64)
        var statuses: [UInt] = []
        var problems: [[String]] = []
        for (t, k) in [(token, key.publicKeyBase64URL), (wrongAud, other.publicKeyBase64URL)] {
            var request = HTTPClientRequest(url: service.url("/push/ok"))
            request.method = .POST
            request.headers.add(name: "Content-Encoding", value: "aes128gcm")
            request.headers.add(name: "Content-Type", value: "application/octet-stream")
            request.headers.add(name: "TTL", value: "60")
            request.headers.add(name: "Authorization", value: "vapid t=\(t), k=\(k)")
            request.body = .bytes(ByteBuffer(bytes: body))
            let response = try await client.execute(request, timeout: .seconds(10))
            statuses.append(response.status.code)
            problems.append(try await service.next().problems)
        }
        await service.stop()
        #expect(statuses == [401, 401])
        #expect(problems[0].count == 1 && problems[0][0].hasPrefix("vapid: signature does not verify"))
        #expect(problems[1] == ["vapid: aud https://push.example.com is not \(service.origin)"])
        }
    }

    @Test("answers are classified as push.md 3.1 says", arguments: [
        (200, PushAttemptOutcome.accepted),
        (202, .accepted),
        (404, .endpointDead(reason: "push service answered 404 Not Found")),
        (410, .endpointDead(reason: "push service answered 410 Gone")),
        (429, .retry(after: .seconds(7), reason: "push service answered 429")),
        (500, .retry(after: nil, reason: "push service answered 500")),
        (503, .retry(after: nil, reason: "push service answered 503")),
        (400, .failed(reason: "push service answered 400")),
        (413, .failed(reason: "push service answered 413")),
    ])
    func answers(status: Int, expected: PushAttemptOutcome) async throws {
        try await withSender { sender, service in
            let keys = WebPush.SubscriberKeys.generate()
            let wake = WakeUp(wakeClass: .urgent, expiresAt: testNow.addingTimeInterval(60))
            let outcome = await sender.send(wake, to: endpoint(service.url("/status/\(status)"), keys), now: testNow)
            let push = try await service.next()
            #expect(push.problems == [])
            #expect(outcome == expected)
        }
    }

    @Test("Retry-After as an HTTP-date is taken relative to the injected now")
    func retryAfterHTTPDate() async throws {
        try await withSender { sender, service in
            let keys = WebPush.SubscriberKeys.generate()
            let wake = WakeUp(wakeClass: .urgent, expiresAt: testNow.addingTimeInterval(60))
            let outcome = await sender.send(wake, to: endpoint(service.url("/date"), keys), now: testNow)
            #expect(outcome == .retry(after: .seconds(30), reason: "push service answered 429"))
        }
    }

    @Test("Retry-After parsing: seconds, the three HTTP-date forms, past dates and garbage")
    func retryAfterParsing() {
        #expect(WebPushSender.parseRetryAfter("120", now: testNow) == .seconds(120))
        #expect(WebPushSender.parseRetryAfter(" 0 ", now: testNow) == .seconds(0))
        // testNow is Fri, 15 Jan 2027 08:00:00 GMT.
        #expect(WebPushSender.parseRetryAfter("Fri, 15 Jan 2027 08:00:10 GMT", now: testNow) == .seconds(10))
        #expect(WebPushSender.parseRetryAfter("Friday, 15-Jan-27 08:01:00 GMT", now: testNow) == .seconds(60))
        #expect(WebPushSender.parseRetryAfter("Fri Jan 15 08:00:05 2027", now: testNow) == .seconds(5))
        #expect(WebPushSender.parseRetryAfter("Fri, 15 Jan 2027 07:00:00 GMT", now: testNow) == .seconds(0))
        #expect(WebPushSender.parseRetryAfter("-5", now: testNow) == nil)
        #expect(WebPushSender.parseRetryAfter("soon", now: testNow) == nil)
        #expect(WebPushSender.parseRetryAfter("", now: testNow) == nil)
    }

    @Test("a timeout is retried")
    func timeoutRetries() async throws {
        let keys = WebPush.SubscriberKeys.generate()
        let wake = WakeUp(wakeClass: .ring, expiresAt: testNow.addingTimeInterval(60))
        try await withSender(timeout: .milliseconds(500)) { sender, service in
            let outcome = await sender.send(wake, to: endpoint(service.url("/hang"), keys), now: testNow)
            // (Whether the request reached the service before the deadline depends on the machine's load; the
            // service never answers either way.)
            #expect(outcome == .retry(after: nil, reason: "push service did not answer in time"))
        }
    }

    @Test("a closed port is retried")
    func closedPortRetries() async throws {
        // A port bound but not listening refuses connections, and stays ours (no other test can take it).
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(descriptor >= 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) == 0 && getsockname(descriptor, $0, &length) == 0 }
        }
        try #require(bound)
        let port = Int(UInt16(bigEndian: address.sin_port))

        // async-http-client keeps trying to connect until the deadline, so the short timeout bounds this attempt.
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        let sender = WebPushSender(client: client, vapidKey: .generate(), subject: subject, timeout: .milliseconds(500), allowPrivateEndpoints: true)
        let outcome = await sender.send(
            WakeUp(wakeClass: .ring, expiresAt: testNow.addingTimeInterval(60)),
            to: endpoint("http://127.0.0.1:\(port)/push/ok", WebPush.SubscriberKeys.generate()), now: testNow)
        try await client.shutdown()
        guard case .retry(after: nil, let reason) = outcome else {
            Issue.record("a closed port must be retried, got \(outcome)")
            return
        }
        #expect(reason == "cannot reach the push service" || reason == "push service did not answer in time")
    }

    @Test("an endpoint of another provider, a bad URL or bad keys fail without a request")
    func badEndpoints() async throws {
        try await StandIn.withHTTPClient { client in
        let sender = WebPushSender(client: client, vapidKey: .generate(), subject: subject, allowPrivateEndpoints: true)
        let keys = WebPush.SubscriberKeys.generate()
        let wake = WakeUp(wakeClass: .urgent, expiresAt: testNow.addingTimeInterval(60))
        var apns = endpoint("http://127.0.0.1:9/x", keys)
        apns.provider = .apns
        #expect(await sender.send(wake, to: apns, now: testNow) == .failed(reason: "not a Web Push endpoint"))
        #expect(await sender.send(wake, to: endpoint("ftp://127.0.0.1/x", keys), now: testNow)
            == .failed(reason: "endpoint is not an absolute http(s) URL"))
        #expect(await sender.send(wake, to: endpoint("/relative", keys), now: testNow)
            == .failed(reason: "endpoint is not an absolute http(s) URL"))
        // A port the HTTP client cannot represent traps it (a relay crash, found by a newcomer): refused before it.
        for url in ["http://127.0.0.1:99999/x", "https://[::1]:70000/x", "https://push.example.org:65536/x", "http://127.0.0.1:0/x"] {
            #expect(await sender.send(wake, to: endpoint(url, keys), now: testNow) == .failed(reason: "endpoint is not an absolute http(s) URL"), "\(url)")
        }
        var badKey = endpoint("http://127.0.0.1:9/x", keys)
        badKey.p256dh = Data(repeating: 4, count: 65)
        guard case .failed = await sender.send(wake, to: badKey, now: testNow) else {
            Issue.record("a key not on P-256 must fail")
            return
        }
        }
    }

    @Test("by default a host that resolves to a private address gets no request; allowed, the same URL does")
    func privateDestinationRefusedAtSendTime() async throws {
        try await StandIn.withHTTPClient { client in
        let service = try await StandInPushService.start()
        let keys = WebPush.SubscriberKeys.generate()
        let wake = WakeUp(wakeClass: .urgent, expiresAt: testNow.addingTimeInterval(60))
        // `localhost` is a name (from /etc/hosts), not a literal: only resolution can find it is 127.0.0.1.
        let safe = WebPushSender(client: client, vapidKey: .generate(), subject: subject)
        let refused = await safe.send(wake, to: endpoint("http://localhost:\(service.port)/push/refused", keys), now: testNow)
        #expect(refused == .failed(reason: "push endpoint resolves to a private address"))
        let literal = await safe.send(wake, to: endpoint("https://127.0.0.1:\(service.port)/push/refused", keys), now: testNow)
        #expect(literal == .failed(reason: "push endpoint resolves to a private address"))
        // The control: with private endpoints allowed the same host is reached; it is the first request the
        // service saw, so the refused ones never arrived (each send returns only after its answer).
        let allowed = WebPushSender(client: client, vapidKey: .generate(), subject: subject, allowPrivateEndpoints: true)
        _ = await allowed.send(wake, to: endpoint("http://localhost:\(service.port)/push/control", keys), now: testNow)
        #expect(try await service.next().path == "/push/control")
        await service.stop()
        }
    }

    @Test("the resolver finds localhost's 127.0.0.1 and the check refuses it; an unresolvable name is retried")
    func resolverCheck() async throws {
        let addresses = try await PushDestinationPolicy.resolve("localhost")
        #expect(addresses.contains(PushDestinationPolicy.IPAddress(bytes: [127, 0, 0, 1])), "\(addresses)")
        #expect(!addresses.contains(where: PushDestinationPolicy.isPublic))
        #expect(await PushDestinationPolicy.sendTimeRefusal("https://localhost/x") == .failed(reason: "push endpoint resolves to a private address"))
        #expect(await PushDestinationPolicy.sendTimeRefusal("https://[fe80::1%25eth0]/x") != nil)
        // .invalid never resolves (RFC 6761): no request, retried later.
        guard case .retry? = await PushDestinationPolicy.sendTimeRefusal("https://push.flitz.invalid/x") else {
            Issue.record("an unresolvable name must be retried")
            return
        }
    }

    @Test("address ranges: public unicast only")
    func addressRanges() {
        func isPublic(_ text: String) -> Bool? { PushDestinationPolicy.IPAddress(literal: text).map(PushDestinationPolicy.isPublic) }
        for text in [
            "0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.255", "127.0.0.1", "127.255.0.9", "169.254.169.254",
            "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.0.2.1", "192.88.99.1", "192.168.0.1", "198.18.0.1", "198.19.255.255",
            "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "127.1", "2130706433", "0x7f.0.0.1",
            "::", "::1", "fc00::1", "fd00::1", "fe80::1", "febf::1", "fec0::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
            "::ffff:169.254.169.254", "64:ff9b::a00:1", "::127.0.0.1", "100::1", "2001::1", "2001:db8::1", "2002:a00:1::1", "3fff::1",
        ] {
            #expect(isPublic(text) == false, "\(text)")
        }
        for text in ["8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.1", "172.15.255.255", "172.32.0.1", "192.169.0.1", "223.255.255.254",
            "2606:4700::1111", "2a00:1450::1", "::ffff:8.8.8.8", "64:ff9b::808:808", "2001:4860::8888"]
        {
            #expect(isPublic(text) == true, "\(text)")
        }
        #expect(PushDestinationPolicy.IPAddress(literal: "push.example.org") == nil)
        #expect(PushDestinationPolicy.registrationProblem("https://push.example.org/x") == nil)
        #expect(PushDestinationPolicy.registrationProblem("https://8.8.8.8/x") == nil)
        for url in ["http://push.example.org/x", "https://localhost/x", "https://a.b.localhost./x", "https://[::1]/x", "https://10.1.2.3:8443/x"] {
            #expect(PushDestinationPolicy.registrationProblem(url) != nil, "\(url)")
        }
    }

    @Test("origin: scheme, host and only a non-default port")
    func origins() {
        #expect(WebPushSender.origin(of: "https://Push.Example.com/wpush/v2/abc?x=1") == "https://push.example.com")
        #expect(WebPushSender.origin(of: "https://push.example.com:443/a") == "https://push.example.com")
        #expect(WebPushSender.origin(of: "https://push.example.com:8443/a") == "https://push.example.com:8443")
        #expect(WebPushSender.origin(of: "http://127.0.0.1:80/a") == "http://127.0.0.1")
        #expect(WebPushSender.origin(of: "http://[::1]:8080/a") == "http://[::1]:8080")
        #expect(WebPushSender.origin(of: "mailto:x@y") == nil)
        #expect(WebPushSender.origin(of: "not a url") == nil)
    }
}

@Suite("VAPID key")
struct VAPIDKeyTests {
    @Test("generate, PEM round trip, 65-byte public key and its base64url")
    func roundTrip() throws {
        let key = VAPIDKey.generate()
        #expect(key.publicKey.count == 65)
        #expect(key.publicKey.first == 0x04)
        #expect(key.publicKeyBase64URL.count == 87)
        #expect(base64URLDecode(key.publicKeyBase64URL) == key.publicKey)
        #expect(key.pemRepresentation.hasPrefix("-----BEGIN PRIVATE KEY-----"))
        let again = try VAPIDKey(pem: key.pemRepresentation)
        #expect(again.publicKey == key.publicKey)
        #expect(VAPIDKey.generate().publicKey != key.publicKey)
        #expect("\(key)" == "VAPIDKey(redacted)")
    }

    @Test("SEC 1 PEM (openssl ecparam -genkey) is accepted")
    func sec1() throws {
        // A test key made with `openssl ecparam -name prime256v1 -genkey -noout`; used nowhere else.
        let pem = """
            -----BEGIN EC PRIVATE KEY-----
            MHcCAQEEIP80LUp5blcXZz8bBvzygU8o5TDWDK0uIcQhxadNFtiLoAoGCCqGSM49
            AwEHoUQDQgAE7n1Ol62lbZAHHP1ctRJmio/Y0X7/bA53H6eeHNxSRWdOChSAMWuh
            fpVJa4Lq4x1ZBTVVlGW6ShGIFq0ZorvBTg==
            -----END EC PRIVATE KEY-----
            """
        let key = try VAPIDKey(pem: pem)
        #expect(key.publicKey == (try P256.Signing.PrivateKey(pemRepresentation: pem)).publicKey.x963Representation)
        #expect(try VAPIDKey(pem: key.pemRepresentation).publicKey == key.publicKey)
    }

    @Test("anything but a P-256 private key in PEM is refused with a clear error", arguments: [
        "", "not a key", P384.Signing.PrivateKey().pemRepresentation, P256.Signing.PrivateKey().publicKey.pemRepresentation,
    ])
    func refused(pem: String) {
        #expect(throws: VAPIDKeyError("not a P-256 private key in PEM (PKCS #8 or SEC 1)")) { try VAPIDKey(pem: pem) }
    }
}

extension WebPushSenderTests {
    @Test("the VAPID token cache keeps at most 1 024 origins: expired ones go first, then the oldest")
    func tokenCacheIsBounded() async throws {
        let client = HTTPClient(eventLoopGroupProvider: .singleton)
        do {
            try await checkTokenCacheBound(WebPushSender(client: client, vapidKey: .generate(), subject: subject))
        } catch {
            try await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }

    private func checkTokenCacheBound(_ sender: WebPushSender) async throws {
        let limit = WebPushSender.maxCachedTokens
        #expect(limit == 1_024)
        let origins = (0..<(limit + 100)).map { "https://push\($0).example.org" }
        var first: [String: String] = [:]
        for origin in origins { first[origin] = try await sender.vapidToken(origin: origin, now: testNow) }
        // The 100 oldest were evicted; the newest 1 024 are cached and reused as they are.
        #expect(sender.cachedOrigins == Set(origins.suffix(limit)))
        let newest = try #require(origins.last)
        #expect(try await sender.vapidToken(origin: newest, now: testNow) == first[newest])
        // An evicted origin signs anew (and evicts the now-oldest one).
        _ = try await sender.vapidToken(origin: origins[0], now: testNow)
        #expect(sender.cachedOrigins.count == limit)
        #expect(sender.cachedOrigins.contains(origins[0]) && !sender.cachedOrigins.contains(origins[100]))
        // 12 hours later every token has expired: one new origin leaves only itself.
        let later = testNow.addingTimeInterval(WebPushSender.tokenLifetime)
        _ = try await sender.vapidToken(origin: "https://late.example.org", now: later)
        #expect(sender.cachedOrigins == ["https://late.example.org"])
    }
}
