import AsyncHTTPClient
import Crypto
import FlitzRelay
import Foundation
import Hummingbird
import HummingbirdHTTP2
import JWTKit
import Synchronization
import Testing

/// A stand-in for `api.push.apple.com` (HTTPS, HTTP/2) checking what Apple checks (`protocol/push.md` 3.2):
/// HTTP/2, the path, the provider token (ES256 signature with the test's key, `kid`, `iss`, `iat` under an
/// hour old by its clock), the `apns-*` headers and the JSON body. A request failing a check gets Apple's
/// error for it; one passing gets the next scripted answer, else `200`.
final class APNsStandIn: Sendable {
    static let keyID = "AB12CD34EF"
    static let teamID = "TEAM123456"
    static let topic = "app.flitz.ios"

    let log = StandInLog()
    let keys = JWTKeyCollection()
    /// Apple's clock, for the age of `iat`.
    let now = Mutex(pushTestNow)

    init(publicKey: ES256PublicKey) async {
        await keys.add(ecdsa: publicKey, kid: JWKIdentifier(string: Self.keyID))
    }

    func handle(_ request: ReceivedRequest) async -> Response {
        log.record(request)
        if let (status, reason) = await problem(request) {
            return StandIn.answer(status, #"{"reason":"\#(reason)"}"#)
        }
        if let scripted = log.nextScripted() { return StandIn.answer(scripted) }
        return StandIn.answer(200, headers: [("apns-id", UUID().uuidString)])
    }

    /// Apple's status and reason for what is wrong with `request`, or nil.
    private func problem(_ request: ReceivedRequest) async -> (Int, String)? {
        guard request.isHTTP2 else { return (400, "HTTP2Required") }  // Apple speaks HTTP/2 only.
        guard request.method == "POST" else { return (405, "MethodNotAllowed") }
        let prefix = "/3/device/"
        guard request.path.hasPrefix(prefix) else { return (404, "BadPath") }
        let token = request.path.dropFirst(prefix.count)
        guard (64...200).contains(token.count), token.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
            return (400, "BadDeviceToken")
        }
        guard let authorization = request.header("authorization") else { return (403, "MissingProviderToken") }
        guard authorization.hasPrefix("bearer "), let jwt = DecodedJWT(String(authorization.dropFirst(7))),
            jwt.header["alg"] as? String == "ES256", jwt.header["kid"] as? String == Self.keyID,
            jwt.claims["iss"] as? String == Self.teamID, let iat = jwt.claims["iat"] as? Int,
            Set(jwt.claims.keys) == ["iss", "iat"],
            (try? await keys.verify(String(authorization.dropFirst(7)), as: AnyClaims.self)) != nil
        else { return (403, "InvalidProviderToken") }
        let age = now.withLock { $0 }.timeIntervalSince1970 - Double(iat)
        guard age >= 0 else { return (403, "InvalidProviderToken") }
        guard age < 3_600 else { return (403, "ExpiredProviderToken") }
        guard let topic = request.header("apns-topic") else { return (400, "MissingTopic") }
        guard topic == Self.topic else { return (400, "DeviceTokenNotForTopic") }
        guard let pushType = request.header("apns-push-type"), ["alert", "background"].contains(pushType) else {
            return (400, "InvalidPushType")
        }
        // Background pushes must use priority 5; alerts here 10 (push.md 3.2).
        guard request.header("apns-priority") == (pushType == "background" ? "5" : "10") else { return (400, "BadPriority") }
        guard let expiration = request.header("apns-expiration"), Int64(expiration) != nil else {
            return (400, "BadExpirationDate")
        }
        guard let body = try? JSONSerialization.jsonObject(with: request.body) as? [String: Any],
            Set(body.keys) == ["aps", "flitz"], let aps = body["aps"] as? [String: Any],
            let flitz = body["flitz"] as? [String: Any], Set(flitz.keys) == ["v", "wake"], flitz["v"] as? Int == 1,
            let wake = flitz["wake"] as? String, ["urgent", "ring"].contains(wake)
        else { return (400, "BadPayload") }
        if pushType == "alert" {
            guard Set(aps.keys) == ["alert", "mutable-content", "sound"], aps["mutable-content"] as? Int == 1,
                aps["sound"] as? String == "default", let alert = aps["alert"] as? [String: Any],
                Set(alert.keys) == ["title", "body"], alert["title"] as? String == "Flitz",
                alert["body"] as? String == (wake == "ring" ? "Incoming call" : "New message")
            else { return (400, "BadPayload") }
        } else {
            guard Set(aps.keys) == ["content-available"], aps["content-available"] as? Int == 1 else {
                return (400, "BadPayload")
            }
        }
        // A collapse id is at most 64 bytes; push.md 3.2 sends one for urgent wake-ups only.
        let collapse = request.header("apns-collapse-id")
        guard collapse == (wake == "urgent" ? "flitz-wake" : nil) else { return (400, "BadCollapseId") }
        return nil
    }
}

extension ReceivedRequest {
    /// The JWT of `authorization: bearer JWT`, decoded without checks.
    var providerToken: DecodedJWT? {
        guard let value = header("authorization"), value.hasPrefix("bearer ") else { return nil }
        return DecodedJWT(String(value.dropFirst(7)))
    }
}

@Suite("APNs sender against a local HTTP/2 stand-in")
struct APNsSenderTests {
    static let deviceToken = String(repeating: "0123456789abcdef", count: 4)
    static let signingKey = P256.Signing.PrivateKey()
    static let wake = WakeUp(wakeClass: .urgent, expiresAt: pushTestNow.addingTimeInterval(3_600))

    /// Runs the stand-in and a sender for it, the key written as a `.p8` file and read back as the relay does.
    func withSender(_ body: @Sendable (APNsSender, APNsStandIn) async throws -> Void) async throws {
        let standIn = await APNsStandIn(publicKey: try ES256PublicKey(pem: Self.signingKey.publicKey.pemRepresentation))
        try await StandIn.withTemporaryDirectory { directory in
            let keyFile = directory.appendingPathComponent("AuthKey_\(APNsStandIn.keyID).p8")
            try Self.signingKey.pemRepresentation.write(to: keyFile, atomically: true, encoding: .utf8)
            try await StandIn.run(server: try .http2Upgrade(tlsConfiguration: StandIn.serverTLS()), handle: standIn.handle) {
                port in
                let configuration = try APNsConfiguration(
                    keyPEM: String(contentsOf: keyFile, encoding: .utf8), keyID: APNsStandIn.keyID,
                    teamID: APNsStandIn.teamID, topic: APNsStandIn.topic, baseURL: "https://127.0.0.1:\(port)")
                try await StandIn.withHTTPClient { client in
                    try await body(APNsSender(configuration: configuration, httpClient: client), standIn)
                }
            }
        }
    }

    static func endpoint(background: Bool = false) -> PushEndpoint {
        PushEndpoint(provider: .apns, endpoint: deviceToken, apnsBackground: background)
    }

    @Test func urgentAlertIsAcceptedWithExactHeadersTokenAndBody() async throws {
        try await withSender { sender, standIn in
            let outcome = await sender.send(Self.wake, to: Self.endpoint(), now: pushTestNow)
            #expect(outcome == .accepted)
            let request = try #require(standIn.log.requests.last)
            #expect(request.isHTTP2)
            #expect(request.path == "/3/device/\(Self.deviceToken)")
            #expect(request.header("apns-topic") == APNsStandIn.topic)
            #expect(request.header("apns-push-type") == "alert")
            #expect(request.header("apns-priority") == "10")
            #expect(request.header("apns-expiration") == "1800003600")
            #expect(request.header("apns-collapse-id") == "flitz-wake")
            #expect(
                request.bodyText
                    == #"{"aps":{"alert":{"title":"Flitz","body":"New message"},"mutable-content":1,"sound":"default"},"flitz":{"v":1,"wake":"urgent"}}"#
            )
            let jwt = try #require(request.providerToken)
            #expect(jwt.header["alg"] as? String == "ES256")
            #expect(jwt.header["kid"] as? String == APNsStandIn.keyID)
            #expect(jwt.claims["iss"] as? String == APNsStandIn.teamID)
            #expect(jwt.claims["iat"] as? Int == 1_800_000_000)
            // The wake-up names nothing: no handle, text, conversation or sender anywhere in the request.
            for word in ["alice", "bob", "hello", "conversation", "sender"] {
                #expect(!request.bodyText.lowercased().contains(word))
            }
        }
    }

    @Test func ringAlertSaysIncomingCallWithoutCollapseID() async throws {
        try await withSender { sender, standIn in
            let ring = WakeUp(wakeClass: .ring, expiresAt: pushTestNow.addingTimeInterval(60))
            #expect(await sender.send(ring, to: Self.endpoint(), now: pushTestNow) == .accepted)
            let request = try #require(standIn.log.requests.last)
            #expect(request.header("apns-collapse-id") == nil)
            #expect(request.header("apns-priority") == "10")
            #expect(request.header("apns-expiration") == "1800000060")
            #expect(
                request.bodyText
                    == #"{"aps":{"alert":{"title":"Flitz","body":"Incoming call"},"mutable-content":1,"sound":"default"},"flitz":{"v":1,"wake":"ring"}}"#
            )
        }
    }

    @Test func backgroundEndpointGetsContentAvailableAtPriorityFive() async throws {
        try await withSender { sender, standIn in
            #expect(await sender.send(Self.wake, to: Self.endpoint(background: true), now: pushTestNow) == .accepted)
            let request = try #require(standIn.log.requests.last)
            #expect(request.header("apns-push-type") == "background")
            #expect(request.header("apns-priority") == "5")
            #expect(request.header("apns-collapse-id") == "flitz-wake")
            #expect(request.bodyText == #"{"aps":{"content-available":1},"flitz":{"v":1,"wake":"urgent"}}"#)
        }
    }

    @Test func providerTokenIsReusedForFiftyMinutesThenRenewed() async throws {
        try await withSender { sender, standIn in
            let later = pushTestNow.addingTimeInterval(50 * 60 - 1)
            let renewal = pushTestNow.addingTimeInterval(50 * 60)
            #expect(await sender.send(Self.wake, to: Self.endpoint(), now: pushTestNow) == .accepted)
            standIn.now.withLock { $0 = later }
            #expect(await sender.send(Self.wake, to: Self.endpoint(), now: later) == .accepted)
            standIn.now.withLock { $0 = renewal }
            #expect(await sender.send(Self.wake, to: Self.endpoint(), now: renewal) == .accepted)
            let requests = standIn.log.requests
            try #require(requests.count == 3)
            let tokens = requests.map { $0.header("authorization") }
            #expect(tokens[0] == tokens[1])
            #expect(tokens[2] != tokens[1])
            let renewed = try #require(requests[2].providerToken)
            #expect(renewed.claims["iat"] as? Int == 1_800_003_000)
        }
    }

    @Test func concurrentSendsShareOneProviderToken() async throws {
        try await withSender { sender, standIn in
            let outcomes = await withTaskGroup(of: PushAttemptOutcome.self, returning: [PushAttemptOutcome].self) { group in
                for _ in 0..<8 { group.addTask { await sender.send(Self.wake, to: Self.endpoint(), now: pushTestNow) } }
                return await group.reduce(into: []) { $0.append($1) }
            }
            #expect(outcomes == Array(repeating: .accepted, count: 8))
            #expect(Set(standIn.log.requests.map { $0.header("authorization") }).count == 1)
        }
    }

    @Test func unregistered410IsADeadEndpoint() async throws {
        try await withSender { sender, standIn in
            standIn.log.script(ScriptedAnswer(status: 410, body: #"{"reason":"Unregistered","timestamp":1799999000000}"#))
            let outcome = await sender.send(Self.wake, to: Self.endpoint(), now: pushTestNow)
            #expect(outcome == .endpointDead(reason: "APNs answered 410 Unregistered"))
        }
    }

    @Test(arguments: ["BadDeviceToken", "DeviceTokenNotForTopic"])
    func badTokenAnswersAreADeadEndpoint(reason: String) async throws {
        try await withSender { sender, standIn in
            standIn.log.script(ScriptedAnswer(status: 400, body: #"{"reason":"\#(reason)"}"#))
            let outcome = await sender.send(Self.wake, to: Self.endpoint(), now: pushTestNow)
            #expect(outcome == .endpointDead(reason: "APNs answered 400 \(reason)"))
        }
    }

    @Test func tooManyRequestsAndServerErrorsRetryHonouringRetryAfter() async throws {
        try await withSender { sender, standIn in
            standIn.log.script(
                ScriptedAnswer(status: 429, body: #"{"reason":"TooManyRequests"}"#),
                ScriptedAnswer(status: 429, headers: [("retry-after", "7")], body: #"{"reason":"TooManyRequests"}"#),
                ScriptedAnswer(status: 503, body: #"{"reason":"ServiceUnavailable"}"#))
            #expect(
                await sender.send(Self.wake, to: Self.endpoint(), now: pushTestNow)
                    == .retry(after: nil, reason: "APNs answered 429 TooManyRequests"))
            #expect(
                await sender.send(Self.wake, to: Self.endpoint(), now: pushTestNow)
                    == .retry(after: .seconds(7), reason: "APNs answered 429 TooManyRequests"))
            #expect(
                await sender.send(Self.wake, to: Self.endpoint(), now: pushTestNow)
                    == .retry(after: nil, reason: "APNs answered 503 ServiceUnavailable"))
            #expect(await sender.send(Self.wake, to: Self.endpoint(), now: pushTestNow) == .accepted)
        }
    }

    @Test func expiredProviderTokenRetriesAndTheNextAttemptCarriesANewToken() async throws {
        try await withSender { sender, standIn in
            standIn.log.script(ScriptedAnswer(status: 403, body: #"{"reason":"ExpiredProviderToken"}"#))
            #expect(
                await sender.send(Self.wake, to: Self.endpoint(), now: pushTestNow)
                    == .retry(after: nil, reason: "APNs answered 403 ExpiredProviderToken"))
            let retryAt = pushTestNow.addingTimeInterval(2)
            standIn.now.withLock { $0 = retryAt }
            #expect(await sender.send(Self.wake, to: Self.endpoint(), now: retryAt) == .accepted)
            let requests = standIn.log.requests
            try #require(requests.count == 2)
            #expect(requests[0].header("authorization") != requests[1].header("authorization"))
            let renewed = try #require(requests[1].providerToken)
            #expect(renewed.claims["iat"] as? Int == 1_800_000_002)
        }
    }

    @Test func otherRefusalsFailWithoutRetry() async throws {
        try await withSender { sender, standIn in
            standIn.log.script(
                ScriptedAnswer(status: 403, body: #"{"reason":"InvalidProviderToken"}"#),
                ScriptedAnswer(status: 413, body: #"{"reason":"PayloadTooLarge"}"#),
                ScriptedAnswer(status: 400, body: #"{"reason":"alice said <hello>"}"#))
            #expect(
                await sender.send(Self.wake, to: Self.endpoint(), now: pushTestNow)
                    == .failed(reason: "APNs answered 403 InvalidProviderToken"))
            #expect(
                await sender.send(Self.wake, to: Self.endpoint(), now: pushTestNow)
                    == .failed(reason: "APNs answered 413 PayloadTooLarge"))
            // A reason that is not a plain code is not repeated (reasons are logged).
            #expect(await sender.send(Self.wake, to: Self.endpoint(), now: pushTestNow) == .failed(reason: "APNs answered 400"))
        }
    }

    @Test func theStandInRefusesAWrongKey() async throws {
        // The stand-in's checks can fail: a token signed with another key is refused as Apple would.
        let standIn = await APNsStandIn(publicKey: try ES256PublicKey(pem: P256.Signing.PrivateKey().publicKey.pemRepresentation))
        try await StandIn.run(server: try .http2Upgrade(tlsConfiguration: StandIn.serverTLS()), handle: standIn.handle) { port in
            let configuration = try APNsConfiguration(
                keyPEM: Self.signingKey.pemRepresentation, keyID: APNsStandIn.keyID, teamID: APNsStandIn.teamID,
                topic: APNsStandIn.topic, baseURL: "https://127.0.0.1:\(port)")
            try await StandIn.withHTTPClient { client in
                let sender = APNsSender(configuration: configuration, httpClient: client)
                #expect(
                    await sender.send(Self.wake, to: Self.endpoint(), now: pushTestNow)
                        == .failed(reason: "APNs answered 403 InvalidProviderToken"))
            }
        }
    }

    @Test func networkFailureRetries() async throws {
        // Port 1 on loopback: nothing listens, the connection is refused.
        let configuration = try APNsConfiguration(
            keyPEM: Self.signingKey.pemRepresentation, keyID: APNsStandIn.keyID, teamID: APNsStandIn.teamID,
            topic: APNsStandIn.topic, baseURL: "https://127.0.0.1:1")
        try await StandIn.withHTTPClient { client in
            let outcome = await APNsSender(configuration: configuration, httpClient: client, timeout: .seconds(1))
                .send(Self.wake, to: Self.endpoint(), now: pushTestNow)
            guard case .retry(nil, let reason) = outcome else {
                Issue.record("expected a retry, got \(outcome)")
                return
            }
            #expect(reason.hasPrefix("APNs request"))
            #expect(!reason.contains(Self.deviceToken))
        }
    }

    @Test func malformedDeviceTokenFailsWithoutARequest() async throws {
        try await withSender { sender, standIn in
            for token in ["ABCDEF" + String(repeating: "0", count: 58), "abc", String(repeating: "0", count: 63) + "/"] {
                let outcome = await sender.send(Self.wake, to: PushEndpoint(provider: .apns, endpoint: token), now: pushTestNow)
                #expect(outcome == .failed(reason: "APNs device token is not 64 to 200 lowercase hex characters"))
            }
            #expect(standIn.log.requests.isEmpty)
        }
    }

    @Test func badConfigurationIsRefusedWithAClearError() throws {
        let good = Self.signingKey.pemRepresentation
        func refusal(
            key: String = good, keyID: String = APNsStandIn.keyID, teamID: String = APNsStandIn.teamID,
            topic: String = APNsStandIn.topic, url: String = APNsConfiguration.defaultBaseURL
        ) -> String? {
            do {
                _ = try APNsConfiguration(keyPEM: key, keyID: keyID, teamID: teamID, topic: topic, baseURL: url)
                return nil
            } catch {
                return error.description
            }
        }
        #expect(refusal() == nil)
        #expect(refusal(key: "not a key") == "push.apns.keyFile: not a PEM file (no -----BEGIN line)")
        let p256Refusal =
            "push.apns.keyFile: not a P-256 (ES256) private key in PEM; APNs needs the .p8 key from Apple's developer account"
        #expect(refusal(key: P384.Signing.PrivateKey().pemRepresentation) == p256Refusal)
        #expect(refusal(key: Self.signingKey.publicKey.pemRepresentation) == p256Refusal)
        #expect(refusal(key: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n") == p256Refusal)
        #expect(refusal(keyID: "") == "push.apns.keyId: must be non-empty letters and digits (Apple's 10-character id)")
        #expect(refusal(teamID: "TEAM 1") == "push.apns.teamId: must be non-empty letters and digits (Apple's 10-character id)")
        #expect(refusal(topic: "") == "push.apns.topic: must be the app's bundle id (non-empty, printable, no spaces)")
        #expect(refusal(url: "http://127.0.0.1:8443") == "push.apns.url: must be an https URL")
        #expect(refusal(url: "api.push.apple.com") == "push.apns.url: not an absolute URL")
        // The refusal never repeats the key.
        #expect(refusal(key: "-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n-----END PRIVATE KEY-----\n")?.contains("SECRET") == false)
    }
}
