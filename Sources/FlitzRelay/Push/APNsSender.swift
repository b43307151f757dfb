import AsyncHTTPClient
import Foundation
import JWTKit
import NIOCore

/// What the relay needs to push through APNs with token authentication (`protocol/push.md` 3.2 and 9:
/// `push.apns.keyFile`, `push.apns.keyId`, `push.apns.teamId`, `push.apns.topic`, `push.apns.url`).
/// The signing key is checked when the configuration is made, so a bad key fails at start, not at the first push.
public struct APNsConfiguration: Sendable {
    /// Apple's production endpoint, the default of `push.apns.url`.
    public static let defaultBaseURL = "https://api.push.apple.com"

    /// The key's identifier from Apple's developer account (10 characters), sent as the JWT header's `kid`.
    public let keyID: String
    /// The developer team identifier (10 characters), sent as the JWT claim `iss`.
    public let teamID: String
    /// The app's bundle identifier, sent as `apns-topic`.
    public let topic: String
    /// Scheme, host and port (and any path prefix) requests go to, without a trailing slash;
    /// `https` only, since APNs speaks HTTP/2 over TLS.
    public let baseURL: String
    /// The `.p8` key; never printed.
    let signingKey: ES256PrivateKey

    /// Checks and keeps the settings.
    /// - Parameters:
    ///   - keyPEM: the contents of the `.p8` file: a PEM P-256 private key (PKCS #8 `PRIVATE KEY`, as Apple
    ///     issues it, or SEC 1 `EC PRIVATE KEY`).
    ///   - keyID: `push.apns.keyId`; non-empty, letters and digits.
    ///   - teamID: `push.apns.teamId`; non-empty, letters and digits.
    ///   - topic: `push.apns.topic`, the bundle id; non-empty, no whitespace.
    ///   - baseURL: `push.apns.url`, an absolute `https` URL.
    /// - Throws: `ConfigurationError` naming the key (`push.apns.keyFile`, ...) and what is wrong, never the key's bytes.
    public init(
        keyPEM: String, keyID: String, teamID: String, topic: String, baseURL: String = APNsConfiguration.defaultBaseURL
    ) throws(ConfigurationError) {
        guard keyPEM.contains("-----BEGIN ") else {
            throw ConfigurationError("push.apns.keyFile: not a PEM file (no -----BEGIN line)")
        }
        do {
            signingKey = try ES256PrivateKey(pem: keyPEM)
        } catch {
            throw ConfigurationError(
                "push.apns.keyFile: not a P-256 (ES256) private key in PEM; APNs needs the .p8 key from Apple's developer account")
        }
        func identifier(_ value: String, _ key: String) throws(ConfigurationError) -> String {
            guard !value.isEmpty, value.unicodeScalars.allSatisfy({ $0.isASCII && CharacterSet.alphanumerics.contains($0) })
            else { throw ConfigurationError("\(key): must be non-empty letters and digits (Apple's 10-character id)") }
            return value
        }
        self.keyID = try identifier(keyID, "push.apns.keyId")
        self.teamID = try identifier(teamID, "push.apns.teamId")
        guard !topic.isEmpty, topic.unicodeScalars.allSatisfy({ $0.isASCII && $0.value > 0x20 && $0.value < 0x7F }) else {
            throw ConfigurationError("push.apns.topic: must be the app's bundle id (non-empty, printable, no spaces)")
        }
        self.topic = topic
        self.baseURL = try ProviderHTTP.baseURL(baseURL, key: "push.apns.url", allowLoopbackHTTP: false)
    }
}

/// Sends wake-ups through APNs (`protocol/push.md` 3.2): one HTTP/2 `POST {baseURL}/3/device/{token}` per
/// attempt, authenticated with an ES256 provider token reused for 50 minutes.
///
/// The `HTTPClient` is the relay's: it owns its lifecycle and its TLS trust roots (`push.caFile`), and must
/// allow HTTP/2 (AsyncHTTPClient's default `.automatic` negotiates it by ALPN).
public final class APNsSender: PushSender {
    /// Always `.apns`.
    public let provider: PushProviderKind = .apns
    /// Provider tokens are reused this long (`push.md` 3.2): Apple refuses tokens older than an hour and
    /// throttles ones renewed more often than every 20 minutes.
    public static let tokenLifetime: Duration = .seconds(50 * 60)

    private let configuration: APNsConfiguration
    private let httpClient: HTTPClient
    private let timeout: TimeAmount
    private let tokens: APNsProviderTokens

    /// A sender for `configuration` over `httpClient`.
    /// - Parameter timeout: per request, from connecting to the whole answer (`push.timeout`, default 10 s).
    public init(configuration: APNsConfiguration, httpClient: HTTPClient, timeout: Duration = .seconds(10)) {
        self.configuration = configuration
        self.httpClient = httpClient
        self.timeout = ProviderHTTP.timeAmount(timeout)
        self.tokens = APNsProviderTokens(configuration: configuration)
    }

    /// One attempt (`push.md` 3.2): `200` accepted; `410`, or `400` `BadDeviceToken` / `DeviceTokenNotForTopic`,
    /// endpoint dead; `403` `ExpiredProviderToken` drops the cached token and retries; `429`, `5xx` and network
    /// failures retry (after `Retry-After` when given); anything else fails.
    public func send(_ wake: WakeUp, to endpoint: PushEndpoint, now: Date) async -> PushAttemptOutcome {
        guard endpoint.provider == .apns else { return .failed(reason: "not an APNs endpoint") }
        guard Self.isDeviceToken(endpoint.endpoint) else {
            return .failed(reason: "APNs device token is not 64 to 200 lowercase hex characters")
        }
        let token: String
        do {
            token = try await tokens.token(now: now)
        } catch {
            return .failed(reason: "could not sign the APNs provider token")
        }
        var request = HTTPClientRequest(url: "\(configuration.baseURL)/3/device/\(endpoint.endpoint)")
        request.method = .POST
        request.headers.add(name: "authorization", value: "bearer \(token)")
        request.headers.add(name: "apns-topic", value: configuration.topic)
        request.headers.add(name: "apns-push-type", value: endpoint.apnsBackground ? "background" : "alert")
        request.headers.add(name: "apns-priority", value: endpoint.apnsBackground ? "5" : "10")
        request.headers.add(name: "apns-expiration", value: String(Self.unixSeconds(wake.expiresAt)))
        if wake.wakeClass == .urgent {
            request.headers.add(name: "apns-collapse-id", value: "flitz-wake")
        }
        let body = Self.body(wake.wakeClass, background: endpoint.apnsBackground)
        request.body = .bytes(ByteBuffer(bytes: body))

        let response: HTTPClientResponse
        let answer: ByteBuffer?
        do {
            response = try await httpClient.execute(request, timeout: timeout)
            answer = try? await response.body.collect(upTo: ProviderHTTP.maxAnswerBytes)
        } catch {
            return .retry(after: nil, reason: "APNs \(ProviderHTTP.networkFailure(error))")
        }
        let reason = ProviderHTTP.code(answer.flatMap { try? JSONDecoder().decode(APNsAnswer.self, from: Data($0.readableBytesView)) }?.reason)
        let status = response.status.code
        let described = "APNs answered \(status)" + (reason.map { " \($0)" } ?? "")
        switch (status, reason) {
        case (200, _):
            return .accepted
        case (410, _), (400, "BadDeviceToken"), (400, "DeviceTokenNotForTopic"):
            return .endpointDead(reason: described)
        case (403, "ExpiredProviderToken"):
            await tokens.discard(token)
            return .retry(after: nil, reason: described)
        case (429, _), (500...599, _):
            return .retry(after: ProviderHTTP.retryAfter(response, now: now), reason: described)
        default:
            return .failed(reason: described)
        }
    }

    /// The request body (`push.md` 3.2), UTF-8 JSON: for alerts
    /// `{"aps":{"alert":{"title":"Flitz","body":B},"mutable-content":1,"sound":"default"},"flitz":W}`,
    /// for background pushes `{"aps":{"content-available":1},"flitz":W}`, with `W` the wake-up of `push.md` 6.
    static func body(_ wakeClass: WakeClass, background: Bool) -> [UInt8] {
        let aps: String
        if background {
            aps = #"{"content-available":1}"#
        } else {
            let text = wakeClass == .ring ? "Incoming call" : "New message"
            aps = #"{"alert":{"title":"Flitz","body":"\#(text)"},"mutable-content":1,"sound":"default"}"#
        }
        return Array(#"{"aps":\#(aps),"flitz":"#.utf8) + Array(wakeClass.payload) + Array("}".utf8)
    }

    /// Whether `token` is 64 to 200 lowercase hex characters (`push.md` 3.2): also keeps anything else out
    /// of the request path.
    static func isDeviceToken(_ token: String) -> Bool {
        (64...200).contains(token.utf8.count)
            && token.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }

    /// Whole seconds since the Unix epoch, rounded down.
    static func unixSeconds(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970.rounded(.down)) }
}

/// An APNs error body, `{"reason":"BadDeviceToken"}` (410 adds `timestamp`).
private struct APNsAnswer: Decodable {
    var reason: String?
}

/// The provider token's claims (`push.md` 3.2): `{"iss":TEAM_ID,"iat":SECONDS}`. Only signed here, never verified.
struct APNsProviderClaims: JWTPayload {
    /// The team id.
    var iss: String
    /// Issue time, whole seconds since the Unix epoch.
    var iat: Int64

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// The cached provider token: made on first use, reused while less than `APNsSender.tokenLifetime` old by the
/// caller's `now`, made anew after `discard` or when `now` is earlier than its `iat`. Concurrent callers
/// share one signing, so Apple never sees two tokens made for the same renewal.
private actor APNsProviderTokens {
    private let keys = JWTKeyCollection()
    private let keyID: JWKIdentifier
    private let teamID: String
    private let signingKey: ES256PrivateKey
    private var cached: (token: String, issuedAt: Int64)?
    private var pending: Task<(token: String, issuedAt: Int64), any Error>?

    init(configuration: APNsConfiguration) {
        keyID = JWKIdentifier(string: configuration.keyID)
        teamID = configuration.teamID
        signingKey = configuration.signingKey
    }

    func token(now: Date) async throws -> String {
        let seconds = APNsSender.unixSeconds(now)
        let lifetime = APNsSender.tokenLifetime.components.seconds
        if let cached, seconds >= cached.issuedAt, seconds - cached.issuedAt < lifetime { return cached.token }
        if let pending { return try await pending.value.token }
        // No suspension between the checks above and setting `pending`, so one signing serves every caller.
        let task = Task { [keys, keyID, teamID, signingKey] in
            await keys.add(ecdsa: signingKey, kid: keyID)
            return (token: try await keys.sign(APNsProviderClaims(iss: teamID, iat: seconds), kid: keyID), issuedAt: seconds)
        }
        pending = task
        defer { pending = nil }
        let made = try await task.value
        cached = made
        return made.token
    }

    /// Forgets `token` if it is still the cached one (an `ExpiredProviderToken` answer).
    func discard(_ token: String) {
        if cached?.token == token { cached = nil }
    }
}
