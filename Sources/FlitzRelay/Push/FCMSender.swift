import AsyncHTTPClient
import Foundation
import JWTKit
import NIOCore

/// What the relay needs to push through FCM HTTP v1 (`protocol/push.md` 3.3 and 9: `push.fcm.serviceAccount`,
/// `push.fcm.url`): the fields of a Google service account JSON file and the FCM base URL. The private key is
/// checked when the configuration is made, so a bad file fails at start, not at the first push.
public struct FCMConfiguration: Sendable {
    /// Google's endpoint, the default of `push.fcm.url`.
    public static let defaultBaseURL = "https://fcm.googleapis.com"

    /// `project_id`: the Firebase project, in the send URL.
    public let projectID: String
    /// `client_email`: the service account, the assertion's `iss`.
    public let clientEmail: String
    /// `private_key_id`: the assertion's header `kid`.
    public let privateKeyID: String
    /// `token_uri`: where access tokens come from, and the assertion's `aud` (exactly as in the file).
    public let tokenURI: String
    /// Scheme, host and port (and any path prefix) sends go to, without a trailing slash.
    public let baseURL: String
    /// `private_key`; never printed.
    let privateKey: Insecure.RSA.PrivateKey

    /// Reads a service account file's contents.
    /// - Parameters:
    ///   - serviceAccountJSON: the JSON file Google issues (`"type":"service_account"`); needs `project_id`
    ///     (letters, digits, `-`, `.`, `:`), `client_email`, `private_key` (a PEM RSA key of at least 2048 bits),
    ///     `private_key_id` and `token_uri` (https, or http on a loopback host); other members are ignored.
    ///   - baseURL: `push.fcm.url`: https, or http on a loopback host (tests).
    /// - Throws: `ConfigurationError` naming `push.fcm.serviceAccount` and the missing or bad field, never a key's bytes.
    public init(serviceAccountJSON: Data, baseURL: String = FCMConfiguration.defaultBaseURL) throws(ConfigurationError) {
        let key = "push.fcm.serviceAccount"
        let object: [String: Any]
        do {
            guard let parsed = try JSONSerialization.jsonObject(with: serviceAccountJSON) as? [String: Any] else {
                throw ConfigurationError("\(key): not a JSON object")
            }
            object = parsed
        } catch let error as ConfigurationError {
            throw error
        } catch {
            throw ConfigurationError("\(key): not valid JSON")
        }
        func field(_ name: String) throws(ConfigurationError) -> String {
            guard let value = object[name] else { throw ConfigurationError("\(key): missing \"\(name)\"") }
            guard let text = value as? String, !text.isEmpty else {
                throw ConfigurationError("\(key): \"\(name)\" must be a non-empty string")
            }
            return text
        }
        let projectID = try field("project_id")
        guard projectID.unicodeScalars.allSatisfy({ $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "-.:".unicodeScalars.contains($0)) })
        else { throw ConfigurationError("\(key): \"project_id\" may hold only letters, digits, '-', '.' and ':'") }
        self.projectID = projectID
        clientEmail = try field("client_email")
        privateKeyID = try field("private_key_id")
        let pem = try field("private_key")
        guard pem.contains("-----BEGIN ") else {
            throw ConfigurationError("\(key): \"private_key\" is not a PEM key (no -----BEGIN line)")
        }
        do {
            privateKey = try Insecure.RSA.PrivateKey(pem: pem)
        } catch {
            throw ConfigurationError("\(key): \"private_key\" is not an RSA private key of at least 2048 bits in PEM")
        }
        let tokenURI = try field("token_uri")
        _ = try ProviderHTTP.baseURL(tokenURI, key: "\(key): \"token_uri\"", allowLoopbackHTTP: true)
        self.tokenURI = tokenURI
        self.baseURL = try ProviderHTTP.baseURL(baseURL, key: "push.fcm.url", allowLoopbackHTTP: true)
    }
}

/// Sends wake-ups through FCM HTTP v1 (`protocol/push.md` 3.3): one `POST {baseURL}/v1/projects/{project_id}/messages:send`
/// per attempt with an OAuth 2.0 access token from the service account (RFC 7523 JWT bearer grant), reused
/// until 5 minutes before it expires.
///
/// The `HTTPClient` is the relay's: it owns its lifecycle and its TLS trust roots (`push.caFile`).
public final class FCMSender: PushSender {
    /// Always `.fcm`.
    public let provider: PushProviderKind = .fcm
    /// The OAuth scope FCM HTTP v1 needs.
    public static let scope = "https://www.googleapis.com/auth/firebase.messaging"
    /// An access token is dropped this long before its `expires_in` ends (`push.md` 3.3).
    public static let tokenMargin: Duration = .seconds(5 * 60)
    /// The largest `android.ttl` sent (28 days, in seconds; FCM's documented maximum, `push.md` 3.3): envelopes
    /// may live longer (`relay.retention`, default 30 days).
    public static let maxTTLSeconds: Int64 = 2_419_200

    private let configuration: FCMConfiguration
    private let httpClient: HTTPClient
    private let timeout: TimeAmount
    private let tokens: FCMAccessTokens

    /// A sender for `configuration` over `httpClient`.
    /// - Parameter timeout: per request (the token fetch and the send each), from connecting to the whole
    ///   answer (`push.timeout`, default 10 s).
    public init(configuration: FCMConfiguration, httpClient: HTTPClient, timeout: Duration = .seconds(10)) {
        self.configuration = configuration
        self.httpClient = httpClient
        self.timeout = ProviderHTTP.timeAmount(timeout)
        self.tokens = FCMAccessTokens(configuration: configuration, httpClient: httpClient, timeout: self.timeout)
    }

    /// One attempt (`push.md` 3.3), fetching an access token first when none is cached: `200` accepted;
    /// `404` with error code `UNREGISTERED`, or `410`, endpoint dead; `401` drops the cached access token and
    /// retries; `429`, `5xx` and network failures retry (after `Retry-After` when given); anything else fails.
    /// The token fetch's own `429`, `5xx` and network failures retry, its other answers fail.
    public func send(_ wake: WakeUp, to endpoint: PushEndpoint, now: Date) async -> PushAttemptOutcome {
        guard endpoint.provider == .fcm else { return .failed(reason: "not an FCM endpoint") }
        let registration = endpoint.endpoint
        guard (1...4_096).contains(registration.utf8.count), registration.utf8.allSatisfy({ (0x20...0x7E).contains($0) })
        else { return .failed(reason: "FCM registration token is not 1 to 4096 bytes of printable ASCII") }
        let accessToken: String
        do {
            accessToken = try await tokens.token(now: now)
        } catch let failure as TokenFailure {
            return failure.outcome
        } catch {
            return .failed(reason: "FCM access token: \(String(describing: type(of: error)))")
        }
        var request = HTTPClientRequest(url: "\(configuration.baseURL)/v1/projects/\(configuration.projectID)/messages:send")
        request.method = .POST
        request.headers.add(name: "authorization", value: "Bearer \(accessToken)")
        request.headers.add(name: "content-type", value: "application/json")
        let ttl = max(0, min(Self.maxTTLSeconds, Int64(wake.expiresAt.timeIntervalSince(now).rounded(.down))))
        request.body = .bytes(ByteBuffer(bytes: Self.body(wake.wakeClass, registration: registration, ttlSeconds: ttl)))

        let response: HTTPClientResponse
        let answer: ByteBuffer?
        do {
            response = try await httpClient.execute(request, timeout: timeout)
            answer = try? await response.body.collect(upTo: ProviderHTTP.maxAnswerBytes)
        } catch {
            return .retry(after: nil, reason: "FCM \(ProviderHTTP.networkFailure(error))")
        }
        let error = answer.flatMap { try? JSONDecoder().decode(FCMErrorAnswer.self, from: Data($0.readableBytesView)) }?.error
        let status = ProviderHTTP.code(error?.status)
        let errorCode = ProviderHTTP.code(error?.details?.lazy.compactMap(\.errorCode).first)
        let code = response.status.code
        let described = "FCM answered \(code)" + (status.map { " \($0)" } ?? "") + (errorCode.map { " \($0)" } ?? "")
        switch code {
        case 200:
            return .accepted
        case 404 where errorCode == "UNREGISTERED", 410:
            return .endpointDead(reason: described)
        case 401:
            await tokens.discard(accessToken)
            return .retry(after: nil, reason: described)
        case 429, 500...599:
            return .retry(after: ProviderHTTP.retryAfter(response, now: now), reason: described)
        default:
            return .failed(reason: described)
        }
    }

    /// The request body (`push.md` 3.3), UTF-8 JSON:
    /// `{"message":{"token":T,"data":{"v":"1","wake":C},"android":{"priority":"HIGH","ttl":"Ns","collapse_key":"flitz-wake"}}}`,
    /// `collapse_key` for `urgent` only. `registration` must be printable ASCII (checked by `send`), so only
    /// `"` and `\` need escaping (RFC 8259 section 7).
    static func body(_ wakeClass: WakeClass, registration: String, ttlSeconds: Int64) -> [UInt8] {
        var token = ""
        for character in registration {
            if character == "\"" || character == "\\" { token.append("\\") }
            token.append(character)
        }
        let collapse = wakeClass == .urgent ? #","collapse_key":"flitz-wake""# : ""
        let json = #"{"message":{"token":"\#(token)","data":{"v":"1","wake":"\#(wakeClass.rawValue)"},"#
            + #""android":{"priority":"HIGH","ttl":"\#(ttlSeconds)s"\#(collapse)}}}"#
        return Array(json.utf8)
    }
}

/// An FCM (Google API) error body: `{"error":{"code":404,"status":"NOT_FOUND","details":[{"errorCode":"UNREGISTERED"}]}}`.
private struct FCMErrorAnswer: Decodable {
    struct Body: Decodable {
        struct Detail: Decodable { var errorCode: String? }
        var status: String?
        var details: [Detail]?
    }
    var error: Body?
}

/// A token endpoint answer (RFC 6749 section 5.1 and 5.2).
private struct TokenAnswer: Decodable {
    var access_token: String?
    var expires_in: Int64?
    var error: String?
}

/// The JWT bearer assertion's claims (`push.md` 3.3, RFC 7523 section 3). Only signed here, never verified.
struct FCMAssertionClaims: JWTPayload {
    /// `client_email`.
    var iss: String
    /// `https://www.googleapis.com/auth/firebase.messaging`.
    var scope: String
    /// `token_uri`.
    var aud: String
    /// Issue time, whole seconds since the Unix epoch.
    var iat: Int64
    /// `iat` + 3600.
    var exp: Int64

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Why no access token could be had, already as the attempt's outcome.
private struct TokenFailure: Error {
    var outcome: PushAttemptOutcome
}

/// The cached access token: fetched on first use, reused until 5 minutes before its `expires_in` ends by the
/// caller's `now`, fetched anew after `discard`. Concurrent callers share one fetch.
private actor FCMAccessTokens {
    private let configuration: FCMConfiguration
    private let httpClient: HTTPClient
    private let timeout: TimeAmount
    private let keys = JWTKeyCollection()
    private var cached: (token: String, validUntil: Date)?
    private var pending: Task<(token: String, validUntil: Date), any Error>?

    init(configuration: FCMConfiguration, httpClient: HTTPClient, timeout: TimeAmount) {
        self.configuration = configuration
        self.httpClient = httpClient
        self.timeout = timeout
    }

    func token(now: Date) async throws -> String {
        if let cached, now < cached.validUntil { return cached.token }
        if let pending { return try await pending.value.token }
        // No suspension between the checks above and setting `pending`, so one fetch serves every caller.
        let task = Task { [configuration, httpClient, timeout, keys] in
            try await Self.fetch(configuration: configuration, httpClient: httpClient, timeout: timeout, keys: keys, now: now)
        }
        pending = task
        defer { pending = nil }
        let fetched = try await task.value
        cached = fetched
        return fetched.token
    }

    /// Forgets `token` if it is still the cached one (a `401` answer).
    func discard(_ token: String) {
        if cached?.token == token { cached = nil }
    }

    /// `POST token_uri` with the signed assertion (`push.md` 3.3).
    /// - Throws: `TokenFailure` with `.retry` for `429`, `5xx` and network failures, `.failed` otherwise.
    private static func fetch(
        configuration: FCMConfiguration, httpClient: HTTPClient, timeout: TimeAmount, keys: JWTKeyCollection, now: Date
    ) async throws -> (token: String, validUntil: Date) {
        let kid = JWKIdentifier(string: configuration.privateKeyID)
        let iat = Int64(now.timeIntervalSince1970.rounded(.down))
        let assertion: String
        do {
            await keys.add(rsa: configuration.privateKey, digestAlgorithm: .sha256, kid: kid)
            assertion = try await keys.sign(
                FCMAssertionClaims(
                    iss: configuration.clientEmail, scope: FCMSender.scope, aud: configuration.tokenURI, iat: iat,
                    exp: iat + 3_600),
                kid: kid)
        } catch {
            throw TokenFailure(outcome: .failed(reason: "could not sign the FCM token assertion"))
        }
        var request = HTTPClientRequest(url: configuration.tokenURI)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/x-www-form-urlencoded")
        // The assertion is base64url and dots: nothing to percent-encode (WHATWG application/x-www-form-urlencoded).
        let form = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=\(assertion)"
        request.body = .bytes(ByteBuffer(string: form))
        let response: HTTPClientResponse
        let body: ByteBuffer?
        do {
            response = try await httpClient.execute(request, timeout: timeout)
            body = try? await response.body.collect(upTo: ProviderHTTP.maxAnswerBytes)
        } catch {
            throw TokenFailure(outcome: .retry(after: nil, reason: "FCM token endpoint \(ProviderHTTP.networkFailure(error))"))
        }
        let answer = body.flatMap { try? JSONDecoder().decode(TokenAnswer.self, from: Data($0.readableBytesView)) }
        let code = response.status.code
        let described = "FCM token endpoint answered \(code)" + (ProviderHTTP.code(answer?.error).map { " \($0)" } ?? "")
        switch code {
        case 200:
            guard let token = answer?.access_token, !token.isEmpty, let expiresIn = answer?.expires_in else {
                throw TokenFailure(outcome: .failed(reason: "FCM token endpoint answered 200 without access_token and expires_in"))
            }
            let margin = Double(FCMSender.tokenMargin.components.seconds)
            return (token, now.addingTimeInterval(Double(expiresIn) - margin))
        case 429, 500...599:
            throw TokenFailure(outcome: .retry(after: ProviderHTTP.retryAfter(response, now: now), reason: described))
        default:
            throw TokenFailure(outcome: .failed(reason: described))
        }
    }
}
