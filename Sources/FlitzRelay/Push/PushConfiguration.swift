import Foundation

/// The relay's push settings (`protocol/push.md` 9); `RelayConfiguration.push`. Keys are `push.*`.
public struct PushConfiguration: Sendable, Equatable {
    /// `push.coalesceWindow`: after an `urgent` wake-up, none for that device until it connects or this passes
    /// (`push.md` 5). Default 60 seconds.
    public var coalesceWindow: Duration = .seconds(60)
    /// `push.ringBurst`: most `ring` wake-ups of one device at once; rings skip the window, so this bounds what one
    /// sender can make a device's phone ring (`push.md` 5 step 1). Default 3.
    public var ringBurst = 3
    /// `push.ringInterval`: one more `ring` wake-up of a device is allowed per this time, up to `ringBurst`
    /// (`push.md` 5 step 1). Default 10 seconds.
    public var ringInterval: Duration = .seconds(10)
    /// `push.vapidKey`: the relay's VAPID key (RFC 8292), a P-256 private key as PEM text or the path of a PEM
    /// file. Default none: the relay makes one on first start and keeps it in its database.
    public var vapidKey: String?
    /// `push.vapidSubject`: the VAPID `sub` claim, a `mailto:` or `https:` URI. Default `mailto:flitz-relay@localhost`.
    public var vapidSubject = "mailto:flitz-relay@localhost"
    /// `push.apns.keyFile`: the APNs `.p8` PEM key file. Default none (APNs off).
    public var apnsKeyFile: String?
    /// `push.apns.keyId`: the key's id (JWT `kid`). Default none.
    public var apnsKeyID: String?
    /// `push.apns.teamId`: the Apple team id (JWT `iss`). Default none.
    public var apnsTeamID: String?
    /// `push.apns.topic`: the app's bundle id (`apns-topic`). Default none.
    public var apnsTopic: String?
    /// `push.apns.url`: the APNs base URL. Default `https://api.push.apple.com`.
    public var apnsURL = "https://api.push.apple.com"
    /// `push.fcm.serviceAccount`: the FCM service account JSON file. Default none (FCM off).
    public var fcmServiceAccount: String?
    /// `push.fcm.url`: the FCM base URL. Default `https://fcm.googleapis.com`.
    public var fcmURL = "https://fcm.googleapis.com"
    /// `push.caFile`: extra PEM CA certificates trusted for push services, beside the system's (tests). Default none.
    public var caFile: String?
    /// `push.allowPrivateEndpoints`: whether devices may register Web Push URLs on loopback, private, link-local
    /// or otherwise non-public addresses (and `http` on loopback), for trying Web Push with a local receiver
    /// (`push.md` 3.1 and 4, `PushDestinationPolicy`). Default false: only `https` to public addresses, checked at
    /// registration and against every resolved address before each request.
    public var allowPrivateEndpoints = false
    /// `push.retryBase`: attempt n + 1 waits `max(Retry-After, retryBase × 2^(n-1))`, at most 60 s (`push.md` 7).
    /// Default 1 second.
    public var retryBase: Duration = .seconds(1)
    /// `push.maxAttempts`: attempts per wake-up in all, at least 1 (`push.md` 7). Default 4.
    public var maxAttempts = 4
    /// `push.timeout`: one attempt without an answer for this long counts as failed and is retried. Default 10 seconds.
    public var timeout: Duration = .seconds(10)

    /// Most wake-up jobs the dispatcher handles at once (each a store decision and its attempts); not a
    /// configuration key: tests lower it to hold the dispatcher busy. Default 256.
    var maxConcurrentJobs = 256
    /// Most wake-up jobs waiting for a free slot; one more is refused and counted in
    /// `flitz_relay_push_dropped_jobs_total` (`push.md` 10). Not a configuration key; tests lower it. Default 10 000.
    var queueLimit = 10_000

    /// The longest wait between attempts (`push.md` 7).
    public static let maxRetryWait: Duration = .seconds(60)

    /// The documented defaults.
    public init() {}

    /// Whether APNs is configured: all four of key file, key id, team id and topic are set (`push.md` 3).
    public var apnsEnabled: Bool { apnsKeyFile != nil && apnsKeyID != nil && apnsTeamID != nil && apnsTopic != nil }

    /// Whether FCM is configured: its service account file is set.
    public var fcmEnabled: Bool { fcmServiceAccount != nil }

    /// The wait before attempt `attempt + 1` after attempt `attempt` (1-based) failed, honouring the service's
    /// `Retry-After` (`push.md` 7): `min(60 s, max(retryAfter, retryBase × 2^(attempt-1)))`.
    public func backoff(afterAttempt attempt: Int, retryAfter: Duration?) -> Duration {
        let exponent = min(max(attempt - 1, 0), 30)
        let exponential = retryBase * (1 << exponent)
        let wait = max(retryAfter ?? .zero, exponential)
        return min(wait, Self.maxRetryWait)
    }
}
