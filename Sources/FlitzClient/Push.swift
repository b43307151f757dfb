import FlitzCrypto
import FlitzWire
import Foundation
import GRDB

/// A push service this device can be woken through (`protocol/push.md` 3). Raw values are what the CLI
/// prints and the local store keeps.
public enum PushService: String, Sendable, Equatable, CaseIterable {
    /// RFC 8030 Web Push / UnifiedPush; the wake-up is encrypted to this device (RFC 8291).
    case webPush = "webpush"
    /// Apple Push Notification service.
    case apns
    /// Firebase Cloud Messaging.
    case fcm

    var wire: WirePushProvider {
        switch self {
        case .webPush: .webPush
        case .apns: .apns
        case .fcm: .fcm
        }
    }

    init?(_ wire: WirePushProvider) {
        switch wire {
        case .webPush: self = .webPush
        case .apns: self = .apns
        case .fcm: self = .fcm
        default: return nil
        }
    }

    /// How the service is named in messages.
    public var displayName: String {
        switch self {
        case .webPush: "Web Push"
        case .apns: "APNs"
        case .fcm: "FCM"
        }
    }
}

/// What to register with the relay (`protocol/push.md` 3 and 4).
public enum PushTarget: Sendable, Equatable {
    /// A Web Push / UnifiedPush endpoint URL: `https`, or `http` on a loopback host; at most 2 048 bytes. A relay
    /// refuses loopback and private hosts (and any `http`) unless its `push.allowPrivateEndpoints` is on (push.md 3.1).
    case webPush(endpoint: String)
    /// An APNs device token, 64 to 200 hexadecimal characters (sent lowercase); `background`: silent
    /// `content-available` pushes instead of alerts for a notification service extension.
    case apns(token: String, background: Bool)
    /// An FCM registration token, 1 to 4 096 bytes of printable ASCII.
    case fcm(token: String)

    /// The service this target belongs to.
    public var service: PushService {
        switch self {
        case .webPush: .webPush
        case .apns: .apns
        case .fcm: .fcm
        }
    }

    /// The endpoint as the relay stores it (an APNs token lowercase).
    var endpoint: String {
        switch self {
        case .webPush(let url): url
        case .apns(let token, _): token.lowercased()
        case .fcm(let token): token
        }
    }

    /// Checks the form `protocol/push.md` 3 requires, as the relay will (push.md 4), so a typo fails before
    /// any key is made. Returns nil when acceptable, else a message naming what is wrong. Loopback and private
    /// hosts pass: whether they are allowed is the relay's setting (`push.allowPrivateEndpoints`), and its
    /// refusal is passed on.
    public func problem() -> String? {
        switch self {
        case .webPush(let text):
            guard text.utf8.count <= 2048 else { return "the endpoint URL is \(text.utf8.count) bytes; at most 2048" }
            guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), let host = url.host, !host.isEmpty else {
                return "the endpoint is not an absolute URL"
            }
            guard url.user == nil, url.password == nil else { return "the endpoint must not carry a user name or password" }
            if let components = URLComponents(string: text), let port = components.port, !(1...65_535).contains(port) {
                return "the endpoint's port \(port) is not between 1 and 65535"
            }
            if scheme == "https" { return nil }
            // A relay accepts loopback http only with push.allowPrivateEndpoints on; it decides and says so.
            guard scheme == "http" else { return "the endpoint must be an https URL" }
            return Self.isLoopback(host)
                ? nil
                : "the endpoint must be https; plain http is possible only for a loopback address (127.0.0.0/8, ::1, localhost) "
                    + "and only at a relay started with --push-allow-private-endpoints on"
        case .apns(let token, _):
            guard (64...200).contains(token.count), token.allSatisfy(\.isHexDigit), token.allSatisfy(\.isASCII) else {
                return "an APNs device token is 64 to 200 hexadecimal characters"
            }
            return nil
        case .fcm(let token):
            guard (1...4096).contains(token.utf8.count), token.unicodeScalars.allSatisfy({ (0x21...0x7e).contains($0.value) }) else {
                return "an FCM registration token is 1 to 4096 printable ASCII characters"
            }
            return nil
        }
    }

    /// `127.0.0.0/8`, `::1` or `localhost` (push.md 3.1).
    static func isLoopback(_ host: String) -> Bool {
        let host = host.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if host == "localhost" || host == "::1" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }
}

/// This device's push endpoint as the relay holds it (`PushEndpointStatus`, `protocol/push.md` 4 and 7).
public struct PushStatus: Sendable, Equatable {
    /// Whether the relay has a live endpoint for this device (false: never set, removed, or dropped as dead).
    public var registered: Bool
    /// The registered (or last dropped) endpoint's service; nil when the relay holds none.
    public var service: PushService?
    /// When the endpoint was registered; nil when none.
    public var registeredAt: Date?
    /// The last wake-up the push service accepted; nil when none yet.
    public var lastWakeAt: Date?
    /// Wake-ups the push service accepted for this endpoint.
    public var wakesSent: UInt64
    /// Why the last attempt failed or why the endpoint was dropped; nil when the last attempt succeeded.
    public var lastFailure: String?
    /// When the relay dropped the endpoint as dead; nil otherwise.
    public var droppedAt: Date?

    init(_ wire: WirePushEndpointStatus) {
        func date(_ ms: Int64) -> Date? { ms > 0 ? Date(timeIntervalSince1970: Double(ms) / 1000) : nil }
        registered = wire.registered
        service = PushService(wire.provider)
        registeredAt = date(wire.registeredAtMs)
        lastWakeAt = date(wire.lastWakeAtMs)
        wakesSent = wire.wakesSent
        lastFailure = wire.lastFailure.isEmpty ? nil : wire.lastFailure
        droppedAt = date(wire.droppedAtMs)
    }
}

extension FlitzClient {
    // MARK: push

    /// Registers this device's push endpoint with the relay (`RegisterPushEndpoint`, `protocol/push.md` 4),
    /// replacing any earlier one. For Web Push, first makes a fresh RFC 8291 key pair and 16-byte auth secret
    /// (`WebPush.SubscriberKeys.generate()`) and sends their public parts (`p256dh`, `auth_secret`). The new
    /// registration is stored as pending before it is sent and becomes current when the relay confirms it; a
    /// refusal discards it (the previous registration, if any, stays current).
    /// - Returns: the relay's answer.
    /// - Throws: `ClientError(.invalidArgument)` for a malformed endpoint or token (nothing sent);
    ///   `.refused(.pushProviderUnavailable)` when the relay has no credentials for that service;
    ///   `.refused(.invalidArgument)` when the relay refuses a field; `.relayUnreachable`; `.notInitialized`.
    public func registerPush(_ target: PushTarget) async throws -> PushStatus {
        let account = try requireAccount()
        if let problem = target.problem() { throw ClientError(.invalidArgument, problem) }
        var register = WireRegisterPushEndpoint()
        register.provider = target.service.wire
        register.endpoint = target.endpoint
        var keys: WebPush.SubscriberKeys?
        switch target {
        case .webPush:
            let fresh = WebPush.SubscriberKeys.generate(random: random)
            register.p256Dh = fresh.publicKey
            register.authSecret = fresh.authSecret.unsafeData
            keys = fresh
        case .apns(_, let background):
            register.apnsBackground = background
        case .fcm:
            break
        }
        let at = now().timeIntervalSince1970
        let (privateKey, authSecret, background) = (keys?.privateKey.unsafeData, keys?.authSecret.unsafeData, register.apnsBackground)
        try await store.dbQueue.write { db in
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO push_registrations
                        (state, provider, endpoint, webpush_private_key, webpush_auth_secret, apns_background, registered_at)
                    VALUES ('pending', ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    target.service.rawValue, target.endpoint, ClientStore.sealSecret(privateKey, .webPushPrivateKey, db),
                    ClientStore.sealSecret(authSecret, .webPushAuthSecret, db), background, at,
                ])
        }
        let request = register
        let answer: WirePushEndpointStatus
        do {
            answer = try await withAuthenticatedConnection(account) { connection in
                guard case .pushEndpointStatus(let status) = try await connection.request(.registerPushEndpoint(request)).body else {
                    throw ClientError(.protocolFailure, "unexpected answer to RegisterPushEndpoint")
                }
                return status
            }
        } catch let error as ClientError {
            if case .refused = error.kind {
                // The relay stored nothing: forget the new keys, keep what was current.
                try await store.dbQueue.write { db in try db.execute(sql: "DELETE FROM push_registrations WHERE state = 'pending'") }
                throw Self.pushRefusal(error, service: target.service)
            }
            throw error  // unreachable: the relay may hold it; the pending keys still open its wake-ups
        }
        try await store.dbQueue.write { db in
            try db.execute(sql: "DELETE FROM push_registrations WHERE state = 'current'")
            try db.execute(sql: "UPDATE push_registrations SET state = 'current' WHERE state = 'pending'")
        }
        return PushStatus(answer)
    }

    /// Reads this device's endpoint as the relay holds it (`FetchPushEndpoint`): registered or not, service,
    /// times, wake-ups sent, and when and why the relay dropped it.
    /// - Throws: `ClientError` (`.relayUnreachable`, `.refused`, `.notInitialized`).
    public func pushStatus() async throws -> PushStatus {
        let account = try requireAccount()
        return try await withAuthenticatedConnection(account) { connection in
            guard case .pushEndpointStatus(let status) = try await connection.request(.fetchPushEndpoint(WireFetchPushEndpoint())).body else {
                throw ClientError(.protocolFailure, "unexpected answer to FetchPushEndpoint")
            }
            return PushStatus(status)
        }
    }

    /// Removes this device's endpoint at the relay (`RemovePushEndpoint`; no error when there is none), then
    /// forgets the local registration and its Web Push keys.
    /// - Throws: `ClientError` (`.relayUnreachable`: nothing forgotten, `.refused`, `.notInitialized`).
    @discardableResult
    public func removePush() async throws -> PushStatus {
        let account = try requireAccount()
        let status = try await withAuthenticatedConnection(account) { connection in
            guard case .pushEndpointStatus(let status) = try await connection.request(.removePushEndpoint(WireRemovePushEndpoint())).body else {
                throw ClientError(.protocolFailure, "unexpected answer to RemovePushEndpoint")
            }
            return PushStatus(status)
        }
        try await store.dbQueue.write { db in try db.execute(sql: "DELETE FROM push_registrations") }
        return status
    }

    /// The push service and endpoint this device last registered, from the local store (nil when none).
    /// - Throws: `ClientError(.notInitialized)`, database errors.
    public func localPushRegistration() throws -> (service: PushService, endpoint: String, confirmed: Bool)? {
        _ = try requireAccount()
        return try store.dbQueue.read { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM push_registrations ORDER BY state = 'current' DESC LIMIT 1"),
                let service = PushService(rawValue: row["provider"])
            else { return nil }
            return (service, row["endpoint"], (row["state"] as String) == "current")
        }
    }

    /// Opens a Web Push message body (RFC 8291 `aes128gcm`, as a push service or UnifiedPush distributor hands
    /// it over) with this device's keys, the current registration's first, then a pending one's. Also accepts
    /// the body as base64 or base64url text (what some distributors pass on).
    /// - Returns: the wake-up, exactly as the relay encrypted it (`protocol/push.md` 6), e.g.
    ///   `{"v":1,"wake":"urgent"}`.
    /// - Throws: `ClientError(.invalidArgument)` when this device has no Web Push keys, or the body does not
    ///   decrypt with them (not for this device, or damaged), or decrypts to something that is not a wake-up.
    public func decryptPush(_ body: Data) throws -> Data {
        _ = try requireAccount()
        let keySets = try store.dbQueue.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT webpush_private_key, webpush_auth_secret FROM push_registrations
                    WHERE provider = 'webpush' AND webpush_private_key IS NOT NULL ORDER BY state = 'current' DESC
                    """
            ).compactMap { row -> WebPush.SubscriberKeys? in
                guard let privateKey = try ClientStore.openSecret(row["webpush_private_key"], .webPushPrivateKey, db),
                    let authSecret = try ClientStore.openSecret(row["webpush_auth_secret"], .webPushAuthSecret, db)
                else { return nil }
                return try? WebPush.SubscriberKeys(privateKey: SecretBytes(privateKey), authSecret: SecretBytes(authSecret))
            }
        }
        guard !keySets.isEmpty else {
            throw ClientError(.invalidArgument, "this device has no Web Push keys: register first with `flitz push register --endpoint URL`")
        }
        var candidates = [body]
        if let decoded = Self.base64Body(body) { candidates.append(decoded) }
        for candidate in candidates {
            for keys in keySets {
                guard let plaintext = try? WebPush.decrypt(candidate, keys: keys) else { continue }
                guard let object = try? JSONSerialization.jsonObject(with: plaintext) as? [String: Any], object["wake"] is String else {
                    throw ClientError(.invalidArgument, "the push message decrypts with this device's keys but is not a Flitz wake-up")
                }
                return plaintext
            }
        }
        throw ClientError(
            .invalidArgument,
            "the push message does not decrypt with this device's Web Push keys (it is for another device or registration, or damaged)")
    }

    /// `body` as base64 or base64url text (whitespace ignored, padding optional), decoded; nil when it is not.
    static func base64Body(_ body: Data) -> Data? {
        guard let text = String(data: body, encoding: .utf8) else { return nil }
        var compact = text.filter { !$0.isWhitespace }
        guard !compact.isEmpty, compact.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+/-_=".contains($0)) }) else { return nil }
        compact = compact.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/").replacingOccurrences(of: "=", with: "")
        compact += String(repeating: "=", count: (4 - compact.count % 4) % 4)
        return Data(base64Encoded: compact)
    }

    /// A relay refusal of a registration, explained for the user (`protocol/push.md` 4).
    static func pushRefusal(_ error: ClientError, service: PushService) -> ClientError {
        switch error.kind {
        case .refused(.pushProviderUnavailable):
            let credentials = service == .fcm ? "FCM service account" : "\(service.displayName) credentials"
            return ClientError(
                error.kind, "this relay has no \(credentials), so it cannot wake this device through \(service.displayName); "
                    + "ask its operator, or register a Web Push endpoint (--endpoint URL)",
                relayError: error.relayError)
        case .refused(.invalidArgument):
            return ClientError(
                error.kind, "the relay refused the push registration: \(error.relayError?.message ?? error.message)", relayError: error.relayError)
        default:
            return error
        }
    }
}
