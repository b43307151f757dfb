import AsyncHTTPClient
import Crypto
import CryptoExtras
import FlitzRelay
import Foundation
import Hummingbird
import JWTKit
import Synchronization
import Testing

/// A stand-in for Google's OAuth token endpoint (`POST /token`) and FCM HTTP v1 (`POST
/// /v1/projects/{project}/messages:send`) over HTTP/1.1, checking what Google checks (`protocol/push.md` 3.3).
/// Token endpoint: form body, `grant_type`, the RS256 assertion verified with the test's RSA public key
/// (`kid`, `iss`, `scope`, `aud`, `exp` − `iat` = 3600, `iat` not in the future by its clock); it issues
/// `token-N` valid for 3599 s. Send: `Authorization: Bearer` the last token issued and not revoked, JSON body of
/// exactly the shape of push.md 3.3. Failing a check gets Google's error; passing gets the next scripted
/// answer for that endpoint, else success.
final class FCMStandIn: Sendable {
    static let projectID = "flitz-test"
    static let clientEmail = "flitz-relay@flitz-test.iam.gserviceaccount.com"
    static let privateKeyID = "0123456789abcdef0123456789abcdef01234567"

    let log = StandInLog()
    let tokenLog = StandInLog()
    let keys = JWTKeyCollection()
    let port = Mutex(0)
    let now = Mutex(pushTestNow)
    /// Tokens issued so far, and whether the newest is still accepted.
    let issued = Mutex<(tokens: [String], revoked: Bool)>(([], false))

    var tokenURI: String { "http://127.0.0.1:\(port.withLock { $0 })/token" }

    init(publicKey: JWTKit.Insecure.RSA.PublicKey) async {
        await keys.add(rsa: publicKey, digestAlgorithm: .sha256, kid: JWKIdentifier(string: Self.privateKeyID))
    }

    func handle(_ request: ReceivedRequest) async -> Response {
        if request.path == "/token" {
            tokenLog.record(request)
            if let problem = await tokenProblem(request) {
                return StandIn.answer(400, #"{"error":"\#(problem)","error_description":"refused by the stand-in"}"#)
            }
            if let scripted = tokenLog.nextScripted() { return StandIn.answer(scripted) }
            let token = issued.withLock { issued in
                issued.tokens.append("token-\(issued.tokens.count + 1)")
                issued.revoked = false
                return issued.tokens.last!
            }
            return StandIn.answer(200, #"{"access_token":"\#(token)","expires_in":3599,"token_type":"Bearer"}"#)
        }
        log.record(request)
        if let (status, code, errorCode) = sendProblem(request) {
            let details = errorCode.map { #","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"\#($0)"}]"# } ?? ""
            return StandIn.answer(status, #"{"error":{"code":\#(status),"message":"refused by the stand-in","status":"\#(code)"\#(details)}}"#)
        }
        if let scripted = log.nextScripted() {
            if scripted.status == 401 { issued.withLock { $0.revoked = true } }
            return StandIn.answer(scripted)
        }
        return StandIn.answer(200, #"{"name":"projects/\#(Self.projectID)/messages/0:1800000000000000%0"}"#)
    }

    /// Google's `error` for a bad token request, or nil.
    private func tokenProblem(_ request: ReceivedRequest) async -> String? {
        guard request.method == "POST", request.header("content-type") == "application/x-www-form-urlencoded" else {
            return "invalid_request"
        }
        var form: [String: String] = [:]
        for pair in request.bodyText.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? "" }
            guard parts.count == 2, form[parts[0]] == nil else { return "invalid_request" }
            form[parts[0]] = parts[1]
        }
        guard Set(form.keys) == ["grant_type", "assertion"] else { return "invalid_request" }
        guard form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer" else { return "unsupported_grant_type" }
        guard let assertion = form["assertion"], let jwt = DecodedJWT(assertion),
            jwt.header["alg"] as? String == "RS256", jwt.header["kid"] as? String == Self.privateKeyID,
            (try? await keys.verify(assertion, as: AnyClaims.self)) != nil,
            Set(jwt.claims.keys) == ["iss", "scope", "aud", "iat", "exp"],
            jwt.claims["iss"] as? String == Self.clientEmail,
            jwt.claims["scope"] as? String == "https://www.googleapis.com/auth/firebase.messaging",
            jwt.claims["aud"] as? String == tokenURI,
            let iat = jwt.claims["iat"] as? Int, let exp = jwt.claims["exp"] as? Int, exp - iat == 3_600,
            Double(iat) <= now.withLock({ $0 }).timeIntervalSince1970
        else { return "invalid_grant" }
        return nil
    }

    /// Google's status, code and FCM error code for a bad send, or nil.
    private func sendProblem(_ request: ReceivedRequest) -> (Int, String, String?)? {
        guard request.method == "POST", request.path == "/v1/projects/\(Self.projectID)/messages:send" else {
            return (404, "NOT_FOUND", nil)
        }
        let current = issued.withLock { $0.revoked ? nil : $0.tokens.last }
        guard let current, request.header("authorization") == "Bearer \(current)" else { return (401, "UNAUTHENTICATED", nil) }
        guard request.header("content-type") == "application/json",
            let body = try? JSONSerialization.jsonObject(with: request.body) as? [String: Any],
            Set(body.keys) == ["message"], let message = body["message"] as? [String: Any],
            Set(message.keys) == ["token", "data", "android"], let token = message["token"] as? String, !token.isEmpty,
            let data = message["data"] as? [String: Any], Set(data.keys) == ["v", "wake"], data["v"] as? String == "1",
            let wake = data["wake"] as? String, ["urgent", "ring"].contains(wake),
            let android = message["android"] as? [String: Any], android["priority"] as? String == "HIGH",
            let ttl = android["ttl"] as? String, ttl.hasSuffix("s"), let seconds = Int(ttl.dropLast()), seconds >= 0,
            seconds <= 2_419_200,
            Set(android.keys) == (wake == "urgent" ? ["priority", "ttl", "collapse_key"] : ["priority", "ttl"]),
            wake == "ring" || android["collapse_key"] as? String == "flitz-wake"
        else { return (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT") }
        return nil
    }
}

@Suite("FCM sender against a local OAuth and FCM stand-in")
struct FCMSenderTests {
    static let registration = "fcm-registration:APA91bH_test-token_0123456789"
    static let rsaKey = try! _RSA.Signing.PrivateKey(keySize: .bits2048)
    static let wake = WakeUp(wakeClass: .urgent, expiresAt: pushTestNow.addingTimeInterval(3_600))
    static let endpoint = PushEndpoint(provider: .fcm, endpoint: registration)

    /// A service account file as Google issues it, pointing at `tokenURI`.
    static func serviceAccount(tokenURI: String, privateKey: String = rsaKey.pkcs8PEMRepresentation) -> [String: Any] {
        [
            "type": "service_account", "project_id": FCMStandIn.projectID, "private_key_id": FCMStandIn.privateKeyID,
            "private_key": privateKey, "client_email": FCMStandIn.clientEmail, "client_id": "100000000000000000000",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": tokenURI,
        ]
    }

    /// Runs the stand-in and a sender for it, the service account written as a JSON file and read back.
    func withSender(_ body: @Sendable (FCMSender, FCMStandIn) async throws -> Void) async throws {
        let standIn = await FCMStandIn(publicKey: try JWTKit.Insecure.RSA.PublicKey(pem: Self.rsaKey.publicKey.pemRepresentation))
        try await StandIn.withTemporaryDirectory { directory in
            try await StandIn.run(server: .http1(), handle: standIn.handle) { port in
                standIn.port.withLock { $0 = port }
                let file = directory.appendingPathComponent("service-account.json")
                try JSONSerialization.data(withJSONObject: Self.serviceAccount(tokenURI: standIn.tokenURI)).write(to: file)
                let configuration = try FCMConfiguration(
                    serviceAccountJSON: Data(contentsOf: file), baseURL: "http://127.0.0.1:\(port)")
                try await StandIn.withHTTPClient { client in
                    try await body(FCMSender(configuration: configuration, httpClient: client), standIn)
                }
            }
        }
    }

    @Test func sendsExactDataMessagesFetchingTheAccessTokenOnce() async throws {
        try await withSender { sender, standIn in
            let ring = WakeUp(wakeClass: .ring, expiresAt: pushTestNow.addingTimeInterval(30))
            #expect(await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow) == .accepted)
            #expect(await sender.send(ring, to: Self.endpoint, now: pushTestNow.addingTimeInterval(1)) == .accepted)
            #expect(await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow.addingTimeInterval(2)) == .accepted)
            #expect(standIn.tokenLog.requests.count == 1)
            let sends = standIn.log.requests
            try #require(sends.count == 3)
            #expect(sends.allSatisfy { $0.header("authorization") == "Bearer token-1" })
            #expect(sends[0].path == "/v1/projects/flitz-test/messages:send")
            #expect(sends[0].header("content-type") == "application/json")
            #expect(
                sends[0].bodyText
                    == #"{"message":{"token":"\#(Self.registration)","data":{"v":"1","wake":"urgent"},"android":{"priority":"HIGH","ttl":"3600s","collapse_key":"flitz-wake"}}}"#
            )
            #expect(
                sends[1].bodyText
                    == #"{"message":{"token":"\#(Self.registration)","data":{"v":"1","wake":"ring"},"android":{"priority":"HIGH","ttl":"29s"}}}"#
            )
            #expect(sends[2].bodyText.contains(#""ttl":"3598s""#))
            // The assertion the token endpoint verified, as sent.
            let form = try #require(standIn.tokenLog.requests.first).bodyText
            #expect(form.hasPrefix("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="))
            let jwt = try #require(DecodedJWT(String(form.split(separator: "=").last!)))
            #expect(jwt.header["alg"] as? String == "RS256")
            #expect(jwt.header["kid"] as? String == FCMStandIn.privateKeyID)
            #expect(jwt.claims["iss"] as? String == FCMStandIn.clientEmail)
            #expect(jwt.claims["aud"] as? String == standIn.tokenURI)
            #expect(jwt.claims["iat"] as? Int == 1_800_000_000)
            #expect(jwt.claims["exp"] as? Int == 1_800_003_600)
            for word in ["alice", "bob", "hello", "conversation", "sender"] {
                #expect(!sends.map(\.bodyText).joined().lowercased().contains(word))
            }
        }
    }

    @Test func concurrentSendsShareOneTokenFetch() async throws {
        try await withSender { sender, standIn in
            let outcomes = await withTaskGroup(of: PushAttemptOutcome.self, returning: [PushAttemptOutcome].self) { group in
                for _ in 0..<8 { group.addTask { await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow) } }
                return await group.reduce(into: []) { $0.append($1) }
            }
            #expect(outcomes == Array(repeating: .accepted, count: 8))
            #expect(standIn.tokenLog.requests.count == 1)
            #expect(standIn.log.requests.count == 8)
        }
    }

    @Test func timeToLiveIsCappedAtTwentyEightDaysAndNeverNegative() async throws {
        try await withSender { sender, standIn in
            let month = WakeUp(wakeClass: .ring, expiresAt: pushTestNow.addingTimeInterval(30 * 86_400))
            let gone = WakeUp(wakeClass: .ring, expiresAt: pushTestNow.addingTimeInterval(-5))
            #expect(await sender.send(month, to: Self.endpoint, now: pushTestNow) == .accepted)
            #expect(await sender.send(gone, to: Self.endpoint, now: pushTestNow) == .accepted)
            // Read through #require, so a stand-in that missed a request fails the test instead of crashing the run.
            let requests = standIn.log.requests
            try #require(requests.count == 2)
            #expect(requests[0].bodyText.contains(#""ttl":"2419200s""#))
            #expect(requests[1].bodyText.contains(#""ttl":"0s""#))
        }
    }

    @Test func accessTokenIsReusedUntilFiveMinutesBeforeItExpires() async throws {
        try await withSender { sender, standIn in
            // Issued at t with expires_in 3599: reused while now < t + 3299.
            let lastReuse = pushTestNow.addingTimeInterval(3_298)
            let refetch = pushTestNow.addingTimeInterval(3_299)
            #expect(await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow) == .accepted)
            #expect(await sender.send(Self.wake, to: Self.endpoint, now: lastReuse) == .accepted)
            #expect(standIn.tokenLog.requests.count == 1)
            standIn.now.withLock { $0 = refetch }
            #expect(await sender.send(Self.wake, to: Self.endpoint, now: refetch) == .accepted)
            #expect(standIn.tokenLog.requests.count == 2)
            #expect(standIn.log.requests.last?.header("authorization") == "Bearer token-2")
        }
    }

    @Test func unregisteredOr410IsADeadEndpointButAPlain404Fails() async throws {
        try await withSender { sender, standIn in
            standIn.log.script(
                ScriptedAnswer(
                    status: 404,
                    body: #"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#),
                ScriptedAnswer(status: 410, body: #"{"error":{"code":410,"status":"GONE"}}"#),
                ScriptedAnswer(status: 404, body: #"{"error":{"code":404,"status":"NOT_FOUND"}}"#))
            #expect(
                await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow)
                    == .endpointDead(reason: "FCM answered 404 NOT_FOUND UNREGISTERED"))
            #expect(await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow) == .endpointDead(reason: "FCM answered 410 GONE"))
            #expect(await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow) == .failed(reason: "FCM answered 404 NOT_FOUND"))
        }
    }

    @Test func rateLimitAndServerErrorsRetryHonouringRetryAfter() async throws {
        try await withSender { sender, standIn in
            standIn.log.script(
                ScriptedAnswer(
                    status: 429, headers: [("Retry-After", "30")],
                    body: #"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"errorCode":"QUOTA_EXCEEDED"}]}}"#),
                ScriptedAnswer(status: 503, body: #"{"error":{"code":503,"status":"UNAVAILABLE"}}"#),
                ScriptedAnswer(status: 503, headers: [("Retry-After", "Fri, 15 Jan 2027 08:00:45 GMT")]))
            #expect(
                await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow)
                    == .retry(after: .seconds(30), reason: "FCM answered 429 RESOURCE_EXHAUSTED QUOTA_EXCEEDED"))
            #expect(
                await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow)
                    == .retry(after: nil, reason: "FCM answered 503 UNAVAILABLE"))
            // An HTTP-date Retry-After (RFC 9110 10.2.3) is a wait from the caller's now: 45 s here.
            #expect(await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow) == .retry(after: .seconds(45), reason: "FCM answered 503"))
            #expect(await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow) == .accepted)
        }
    }

    @Test func unauthorizedRetriesAndTheNextAttemptFetchesANewToken() async throws {
        try await withSender { sender, standIn in
            standIn.log.script(ScriptedAnswer(status: 401, body: #"{"error":{"code":401,"status":"UNAUTHENTICATED"}}"#))
            #expect(
                await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow)
                    == .retry(after: nil, reason: "FCM answered 401 UNAUTHENTICATED"))
            standIn.now.withLock { $0 = pushTestNow.addingTimeInterval(1) }
            #expect(await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow.addingTimeInterval(1)) == .accepted)
            #expect(standIn.tokenLog.requests.count == 2)
            #expect(standIn.log.requests.map { $0.header("authorization") } == ["Bearer token-1", "Bearer token-2"])
        }
    }

    @Test func otherRefusalsFailWithoutRetry() async throws {
        try await withSender { sender, standIn in
            standIn.log.script(
                ScriptedAnswer(
                    status: 403, body: #"{"error":{"code":403,"status":"PERMISSION_DENIED","details":[{"errorCode":"SENDER_ID_MISMATCH"}]}}"#),
                ScriptedAnswer(status: 400, body: "<html>bob's token</html>"))
            #expect(
                await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow)
                    == .failed(reason: "FCM answered 403 PERMISSION_DENIED SENDER_ID_MISMATCH"))
            #expect(await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow) == .failed(reason: "FCM answered 400"))
        }
    }

    @Test func tokenEndpointRefusalFailsAndItsOutageRetries() async throws {
        try await withSender { sender, standIn in
            standIn.tokenLog.script(
                ScriptedAnswer(status: 400, body: #"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#),
                ScriptedAnswer(status: 503, headers: [("retry-after", "12")]))
            #expect(
                await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow)
                    == .failed(reason: "FCM token endpoint answered 400 invalid_grant"))
            #expect(
                await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow)
                    == .retry(after: .seconds(12), reason: "FCM token endpoint answered 503"))
            #expect(await sender.send(Self.wake, to: Self.endpoint, now: pushTestNow) == .accepted)
            #expect(standIn.tokenLog.requests.count == 3)
            #expect(standIn.log.requests.count == 1)
        }
    }

    @Test func theStandInRefusesAnAssertionSignedWithAnotherKey() async throws {
        // The stand-in's checks can fail: the token endpoint refuses a foreign key with invalid_grant.
        let other = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let standIn = await FCMStandIn(publicKey: try JWTKit.Insecure.RSA.PublicKey(pem: other.publicKey.pemRepresentation))
        try await StandIn.run(server: .http1(), handle: standIn.handle) { port in
            standIn.port.withLock { $0 = port }
            let json = try JSONSerialization.data(withJSONObject: Self.serviceAccount(tokenURI: standIn.tokenURI))
            let configuration = try FCMConfiguration(serviceAccountJSON: json, baseURL: "http://127.0.0.1:\(port)")
            try await StandIn.withHTTPClient { client in
                let outcome = await FCMSender(configuration: configuration, httpClient: client)
                    .send(Self.wake, to: Self.endpoint, now: pushTestNow)
                #expect(outcome == .failed(reason: "FCM token endpoint answered 400 invalid_grant"))
            }
        }
    }

    @Test func networkFailureRetries() async throws {
        let json = try JSONSerialization.data(withJSONObject: Self.serviceAccount(tokenURI: "http://127.0.0.1:1/token"))
        let configuration = try FCMConfiguration(serviceAccountJSON: json, baseURL: "http://127.0.0.1:1")
        try await StandIn.withHTTPClient { client in
            let outcome = await FCMSender(configuration: configuration, httpClient: client, timeout: .seconds(1))
                .send(Self.wake, to: Self.endpoint, now: pushTestNow)
            guard case .retry(nil, let reason) = outcome else {
                Issue.record("expected a retry, got \(outcome)")
                return
            }
            #expect(reason.hasPrefix("FCM token endpoint request"))
        }
    }

    @Test(arguments: ["project_id", "client_email", "private_key", "private_key_id", "token_uri"])
    func missingServiceAccountFieldIsNamed(field: String) throws {
        var account = Self.serviceAccount(tokenURI: "https://oauth2.googleapis.com/token")
        account[field] = nil
        let json = try JSONSerialization.data(withJSONObject: account)
        #expect(throws: ConfigurationError("push.fcm.serviceAccount: missing \"\(field)\"")) {
            try FCMConfiguration(serviceAccountJSON: json)
        }
    }

    @Test func badServiceAccountIsRefusedWithAClearError() throws {
        func refusal(_ change: (inout [String: Any]) -> Void = { _ in }, url: String = FCMConfiguration.defaultBaseURL) -> String? {
            var account = Self.serviceAccount(tokenURI: "https://oauth2.googleapis.com/token")
            change(&account)
            do {
                _ = try FCMConfiguration(serviceAccountJSON: try! JSONSerialization.data(withJSONObject: account), baseURL: url)
                return nil
            } catch {
                return error.description
            }
        }
        #expect(refusal() == nil)
        let badKey = "push.fcm.serviceAccount: \"private_key\" is not an RSA private key of at least 2048 bits in PEM"
        #expect(refusal { $0["private_key"] = P256.Signing.PrivateKey().pemRepresentation } == badKey)
        #expect(refusal { $0["private_key"] = try! _RSA.Signing.PrivateKey(unsafeKeySize: .init(bitCount: 1024)).pkcs8PEMRepresentation } == badKey)
        #expect(refusal { $0["private_key"] = "MIIEvQ" } == "push.fcm.serviceAccount: \"private_key\" is not a PEM key (no -----BEGIN line)")
        #expect(refusal { $0["project_id"] = 42 } == "push.fcm.serviceAccount: \"project_id\" must be a non-empty string")
        #expect(refusal { $0["project_id"] = "a/b" } == "push.fcm.serviceAccount: \"project_id\" may hold only letters, digits, '-', '.' and ':'")
        #expect(
            refusal { $0["token_uri"] = "http://oauth2.googleapis.com/token" }
                == "push.fcm.serviceAccount: \"token_uri\": http is allowed only for a loopback host; use https")
        #expect(refusal(url: "ftp://fcm.googleapis.com") == "push.fcm.url: must be an https URL")
        #expect(throws: ConfigurationError("push.fcm.serviceAccount: not valid JSON")) {
            try FCMConfiguration(serviceAccountJSON: Data("{\"project_id\":".utf8))
        }
        #expect(throws: ConfigurationError("push.fcm.serviceAccount: not a JSON object")) {
            try FCMConfiguration(serviceAccountJSON: Data("[1]".utf8))
        }
        // The refusal never repeats the key.
        #expect(refusal { $0["private_key"] = "-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n-----END PRIVATE KEY-----\n" }?.contains("SECRET") == false)
    }

    @Test func malformedRegistrationTokenFailsWithoutARequest() async throws {
        try await withSender { sender, standIn in
            for token in ["", "tab\there", String(repeating: "a", count: 4_097)] {
                let outcome = await sender.send(Self.wake, to: PushEndpoint(provider: .fcm, endpoint: token), now: pushTestNow)
                #expect(outcome == .failed(reason: "FCM registration token is not 1 to 4096 bytes of printable ASCII"))
            }
            #expect(standIn.log.requests.isEmpty)
            #expect(standIn.tokenLog.requests.isEmpty)
        }
    }
}
