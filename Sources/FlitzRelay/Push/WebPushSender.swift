import AsyncHTTPClient
import Crypto
import FlitzCrypto
import Foundation
import JWTKit
import NIOCore
import NIOHTTP1
import Synchronization

/// Why a VAPID key could not be read (`VAPIDKey.init(pem:)`). The message never contains key material.
public struct VAPIDKeyError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A short English message, safe to log.
    public var message: String

    /// An error with `message`.
    public init(_ message: String) { self.message = message }

    /// The message.
    public var description: String { "VAPIDKeyError: \(message)" }
}

/// The relay's VAPID key (RFC 8292): a P-256 ECDSA signing key from swift-crypto that signs the ES256 token in
/// every Web Push request's `Authorization` header (`protocol/push.md` 3.1, 9 `push.vapidKey`). Secret: prints
/// redacted.
public struct VAPIDKey: Sendable, CustomStringConvertible {
    let signingKey: P256.Signing.PrivateKey

    private init(signingKey: P256.Signing.PrivateKey) { self.signingKey = signingKey }

    /// A fresh key from swift-crypto's system randomness.
    public static func generate() -> VAPIDKey { VAPIDKey(signingKey: P256.Signing.PrivateKey()) }

    /// The key from PEM: PKCS #8 (`BEGIN PRIVATE KEY`) or SEC 1 (`BEGIN EC PRIVATE KEY`), P-256 only.
    /// - Throws: `VAPIDKeyError` when `pem` is not a P-256 private key in either form (the message names no key bytes).
    public init(pem: String) throws(VAPIDKeyError) {
        do {
            signingKey = try P256.Signing.PrivateKey(pemRepresentation: pem)
        } catch {
            throw VAPIDKeyError("not a P-256 private key in PEM (PKCS #8 or SEC 1)")
        }
    }

    /// The key as PKCS #8 PEM (`-----BEGIN PRIVATE KEY-----`), what the relay stores and `init(pem:)` reads. Secret.
    public var pemRepresentation: String { signingKey.pemRepresentation }

    /// The 65-byte uncompressed public key (`0x04 ‖ x ‖ y`), the `k` of RFC 8292 section 3.2.
    public var publicKey: Data { signingKey.publicKey.x963Representation }

    /// `publicKey` in unpadded base64url (87 characters): the `k=` parameter, and what a web app passes to
    /// `PushManager.subscribe` as `applicationServerKey`.
    public var publicKeyBase64URL: String { Base64URL.encode(publicKey) }

    /// Redacted: a private key never prints.
    public var description: String { "VAPIDKey(redacted)" }
}

/// The `PushSender` for Web Push (RFC 8030) and UnifiedPush (`protocol/push.md` 3.1): one POST per attempt with
/// the wake-up encrypted by RFC 8291 (`aes128gcm`, padded to 64 bytes) and a VAPID (RFC 8292) ES256 token that
/// is cached per origin. Never logs an endpoint, a key or the payload; outcomes' reasons name none of them.
public final class WebPushSender: PushSender {
    /// Padded plaintext length (`push.md` 3.1): every class gives a body of 86 + 64 + 16 = 166 bytes.
    public static let paddedLength = 64
    /// Lifetime of a VAPID token (`push.md` 3.1): 12 hours (RFC 8292 allows at most 24).
    public static let tokenLifetime: TimeInterval = 12 * 3600
    /// A cached token is replaced this long before it expires: 1 hour.
    public static let tokenRenewalMargin: TimeInterval = 3600
    /// At most this many bytes of a push service's answer body are read (and then ignored).
    static let maxAnswerBytes = 64 * 1024

    /// Always `.webPush`.
    public var provider: PushProviderKind { .webPush }

    private let client: HTTPClient
    private let vapidKey: VAPIDKey
    private let subject: String
    private let timeout: Duration
    private let allowPrivateEndpoints: Bool
    private let signingKey: ES256PrivateKey
    private let keys = JWTKeyCollection()
    /// Per origin: the token, when it expires, and when it was made (a counter, for evicting the oldest). Expired
    /// entries are pruned when a new one is added; at most `maxCachedTokens` are kept.
    private let tokens = Mutex<(byOrigin: [String: (token: String, expiresAt: Date, made: UInt64)], made: UInt64)>(([:], 0))
    /// Most origins whose VAPID token is cached: every registered endpoint names its origin, so without a bound
    /// a device could grow the cache by registering endpoints at many hosts. Past it, expired tokens go first,
    /// then the oldest; an evicted origin's next wake-up signs a new token.
    public static let maxCachedTokens = 1_024

    /// A sender over `client`, which the caller (the relay) creates, configures (TLS, CA file) and shuts down.
    /// - Parameters:
    ///   - client: the HTTP client; redirects should be off, as push services never redirect.
    ///   - vapidKey: the relay's VAPID key (`push.vapidKey`).
    ///   - subject: the JWT `sub` claim (`push.vapidSubject`), a `mailto:` or `https:` URI;
    ///     default `mailto:flitz-relay@localhost`.
    ///   - timeout: the whole request's deadline (`push.timeout`, default 10 s); passing it gives `.retry`.
    ///   - allowPrivateEndpoints: `push.allowPrivateEndpoints`; default false: before each request the endpoint must
    ///     be `https` and every address its host resolves to public, else `.failed` and nothing is sent
    ///     (`PushDestinationPolicy.sendTimeRefusal`). True sends to any host (local test receivers).
    public init(
        client: HTTPClient, vapidKey: VAPIDKey, subject: String = "mailto:flitz-relay@localhost", timeout: Duration = .seconds(10),
        allowPrivateEndpoints: Bool = false
    ) {
        self.client = client
        self.allowPrivateEndpoints = allowPrivateEndpoints
        self.vapidKey = vapidKey
        self.subject = subject
        self.timeout = timeout
        // ES256PrivateKey(backing:) only rejects keys that are not P-256; ours always is.
        self.signingKey = try! ES256PrivateKey(backing: vapidKey.signingKey)
    }

    /// Sends one attempt (`push.md` 3.1) and classifies the answer: 200 / 201 / 202 `.accepted`; 404 / 410
    /// `.endpointDead`; 429 / 5xx `.retry` (with `Retry-After` in seconds or as an HTTP-date, relative to `now`);
    /// a connection failure or timeout `.retry`; anything else, an endpoint that is not a Web Push URL, or keys
    /// that do not encrypt, `.failed`. Unless private endpoints are allowed, an `http` endpoint or one whose host
    /// resolves to any non-public address is `.failed` ("push endpoint resolves to a private address") and a host
    /// that does not resolve `.retry`, before anything is sent. `now` sets the token's `exp` and the `TTL`; the system clock is never read.
    public func send(_ wake: WakeUp, to endpoint: PushEndpoint, now: Date) async -> PushAttemptOutcome {
        guard endpoint.provider == .webPush else { return .failed(reason: "not a Web Push endpoint") }
        guard let origin = Self.origin(of: endpoint.endpoint) else {
            return .failed(reason: "endpoint is not an absolute http(s) URL")
        }
        // Client input: never a request to the relay's own host or a private network unless the operator allows it.
        if !allowPrivateEndpoints, let refusal = await PushDestinationPolicy.sendTimeRefusal(endpoint.endpoint) { return refusal }
        let body: Data
        do {
            body = try WebPush.encrypt(
                wake.wakeClass.payload, subscriberPublicKey: endpoint.p256dh, authSecret: SecretBytes(endpoint.authSecret),
                paddedLength: Self.paddedLength)
        } catch {
            return .failed(reason: "cannot encrypt to the registered keys (\(error.code))")
        }
        let token: String
        do {
            token = try await vapidToken(origin: origin, now: now)
        } catch {
            return .failed(reason: "cannot sign the VAPID token")
        }

        var request = HTTPClientRequest(url: endpoint.endpoint)
        request.method = .POST
        request.headers.add(name: "Content-Encoding", value: "aes128gcm")
        request.headers.add(name: "Content-Type", value: "application/octet-stream")
        request.headers.add(name: "TTL", value: String(Self.ttl(until: wake.expiresAt, now: now)))
        switch wake.wakeClass {
        case .urgent:
            request.headers.add(name: "Urgency", value: "normal")
            request.headers.add(name: "Topic", value: "flitz-wake")
        case .ring:
            request.headers.add(name: "Urgency", value: "high")
        }
        request.headers.add(name: "Authorization", value: "vapid t=\(token), k=\(vapidKey.publicKeyBase64URL)")
        request.body = .bytes(ByteBuffer(bytes: body))

        let response: HTTPClientResponse
        do {
            response = try await client.execute(request, timeout: TimeAmount(timeout))
            // Read and drop the answer so the connection can be reused; its content does not matter.
            _ = try? await response.body.collect(upTo: Self.maxAnswerBytes)
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout || error == .connectTimeout {
            return .retry(after: nil, reason: "push service did not answer in time")
        } catch {
            return .retry(after: nil, reason: "cannot reach the push service")
        }
        return Self.classify(status: Int(response.status.code), retryAfter: response.headers.first(name: "Retry-After"), now: now)
    }

    /// `push.md` 3.1 "Answers". `retryAfter` is the raw header; an unreadable one is ignored.
    static func classify(status: Int, retryAfter: String?, now: Date) -> PushAttemptOutcome {
        switch status {
        case 200, 201, 202:
            return .accepted
        case 404:
            return .endpointDead(reason: "push service answered 404 Not Found")
        case 410:
            return .endpointDead(reason: "push service answered 410 Gone")
        case 429, 500...599:
            return .retry(after: retryAfter.flatMap { parseRetryAfter($0, now: now) }, reason: "push service answered \(status)")
        default:
            return .failed(reason: "push service answered \(status)")
        }
    }

    /// `Retry-After` (RFC 9110 section 10.2.3): delay-seconds, or an HTTP-date taken relative to `now`
    /// (a date in the past gives zero). Nil for anything else.
    static func parseRetryAfter(_ value: String, now: Date) -> Duration? {
        let value = value.trimmingCharacters(in: .whitespaces)
        if !value.isEmpty, value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            // An absurd number of digits saturates rather than failing: the dispatcher caps waits anyway.
            return .seconds(Int64(value) ?? Int64.max)
        }
        for format in httpDateFormats {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "GMT")
            formatter.dateFormat = format
            if let date = formatter.date(from: value) {
                let seconds = max(0, date.timeIntervalSince(now))
                return .milliseconds(Int64((seconds * 1000).rounded(.up)))
            }
        }
        return nil
    }

    /// IMF-fixdate, then the obsolete RFC 850 and asctime forms a recipient must accept (RFC 9110 section 5.6.7).
    private static let httpDateFormats = ["EEE, dd MMM yyyy HH:mm:ss 'GMT'", "EEEE, dd-MMM-yy HH:mm:ss 'GMT'", "EEE MMM d HH:mm:ss yyyy"]

    /// Whole seconds from `now` until `expiresAt`, at least 0 (`push.md` 3.1 `TTL`).
    static func ttl(until expiresAt: Date, now: Date) -> Int {
        let seconds = expiresAt.timeIntervalSince(now)
        guard seconds > 0 else { return 0 }
        return seconds >= Double(Int32.max) ? Int(Int32.max) : Int(seconds.rounded(.down))
    }

    /// The RFC 6454 origin the token's `aud` names: lowercase scheme and host, and the port only when it is not
    /// the scheme's default. Nil for a URL that is not absolute `http` or `https` with a host, or whose port is
    /// outside 1 to 65 535 (the HTTP client traps on such a port, so it must never reach it).
    static func origin(of endpoint: String) -> String? {
        guard let components = URLComponents(string: endpoint),
              let scheme = components.scheme?.lowercased(), scheme == "https" || scheme == "http",
              var host = components.host?.lowercased(), !host.isEmpty,
              components.port.map({ (1...65_535).contains($0) }) ?? true
        else { return nil }
        if host.contains(":"), !host.hasPrefix("[") { host = "[\(host)]" }  // an IPv6 literal
        let defaultPort = scheme == "https" ? 443 : 80
        if let port = components.port, port != defaultPort { return "\(scheme)://\(host):\(port)" }
        return "\(scheme)://\(host)"
    }

    /// The cached token for `origin`, or a new one valid for `tokenLifetime` from `now` when there is none or it
    /// expires within `tokenRenewalMargin`.
    /// - Throws: what JWTKit throws when it cannot sign (not expected with a valid P-256 key).
    func vapidToken(origin: String, now: Date) async throws -> String {
        // Reused while more than the margin remains, and never when `now` went back so far that `exp` would be
        // more than a lifetime ahead (a push service refuses an `exp` over 24 hours away).
        if let cached = tokens.withLock({ $0.byOrigin[origin] }) {
            let remaining = cached.expiresAt.timeIntervalSince(now)
            if remaining > Self.tokenRenewalMargin, remaining <= Self.tokenLifetime { return cached.token }
        }
        // Adding the same key again is idempotent; doing it here (once per origin per 11 hours) avoids an
        // actor hop in `init` and any window in which a first `sign` could run before it.
        await keys.add(ecdsa: signingKey)
        let expiresAt = Date(timeIntervalSince1970: (now.timeIntervalSince1970 + Self.tokenLifetime).rounded(.down))
        let claims = VAPIDClaims(aud: origin, exp: Int64(expiresAt.timeIntervalSince1970), sub: subject)
        let token = try await keys.sign(claims, header: ["typ": "JWT", "alg": "ES256"])
        tokens.withLock { tokens in
            tokens.byOrigin = tokens.byOrigin.filter { $0.value.expiresAt > now }
            // Full of live tokens: drop the oldest (one scan of at most 1 024 entries per new origin).
            while tokens.byOrigin[origin] == nil, tokens.byOrigin.count >= Self.maxCachedTokens,
                let oldest = tokens.byOrigin.min(by: { $0.value.made < $1.value.made })?.key
            {
                tokens.byOrigin[oldest] = nil
            }
            tokens.made += 1
            tokens.byOrigin[origin] = (token, expiresAt, tokens.made)
        }
        return token
    }

    /// The origins whose token is cached now (tests check the bound).
    var cachedOrigins: Set<String> { tokens.withLock { Set($0.byOrigin.keys) } }
}

/// The VAPID token's claims (RFC 8292 section 2): `aud` the push service's origin, `exp` seconds since the
/// Unix epoch, `sub` a contact URI.
private struct VAPIDClaims: JWTPayload, Equatable {
    var aud: String
    var exp: Int64
    var sub: String

    /// Nothing to check when signing; push services check `exp` against their own clock.
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Unpadded base64url (RFC 4648 section 5), as RFC 8292 writes keys.
private enum Base64URL {
    static func encode(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
