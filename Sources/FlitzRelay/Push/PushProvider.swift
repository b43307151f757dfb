import Foundation

/// The class of a wake-up (`protocol/push.md` 2 and 6): what an `URGENCY_URGENT` or `URGENCY_RING` envelope
/// asks for. Silent envelopes never make one.
public enum WakeClass: String, Sendable, Equatable {
    /// A message waits: coalesced per device (`push.md` 5).
    case urgent
    /// A call offer waits: sent at once with high priority, never coalesced.
    case ring

    /// The wake-up as bytes (`push.md` 6): exactly `{"v":1,"wake":"urgent"}` or `{"v":1,"wake":"ring"}`, UTF-8.
    public var payload: Data { Data(#"{"v":1,"wake":"\#(rawValue)"}"#.utf8) }
}

/// Push services a relay can wake devices through (`protocol/push.md` 3). Raw values are the metric labels.
public enum PushProviderKind: String, Sendable, Equatable, CaseIterable {
    /// RFC 8030 Web Push / UnifiedPush with RFC 8291 payload encryption and RFC 8292 VAPID.
    case webPush = "webpush"
    /// Apple Push Notification service over HTTP/2 with token authentication.
    case apns
    /// Firebase Cloud Messaging HTTP v1.
    case fcm
}

/// A device's push endpoint as the relay holds it (`protocol/push.md` 4). Never shown to another user and never logged.
public struct PushEndpoint: Sendable, Equatable {
    /// Which service `endpoint` belongs to.
    public var provider: PushProviderKind
    /// Web Push: the endpoint URL (https, or http on a loopback host). APNs: the device token, lowercase hex,
    /// 64 to 200 characters. FCM: the registration token, 1 to 4 096 bytes.
    public var endpoint: String
    /// Web Push only: the device's 65-byte uncompressed P-256 public key (RFC 8291 `ua_public`); empty otherwise.
    public var p256dh: Data
    /// Web Push only: the device's 16-byte authentication secret (RFC 8291); empty otherwise.
    public var authSecret: Data
    /// APNs only: background pushes (`content-available`, priority 5) instead of alerts with `mutable-content`.
    public var apnsBackground: Bool

    /// An endpoint with the given fields; nothing is checked here (the relay checks at registration, `push.md` 4).
    public init(provider: PushProviderKind, endpoint: String, p256dh: Data = Data(), authSecret: Data = Data(), apnsBackground: Bool = false) {
        self.provider = provider
        self.endpoint = endpoint
        self.p256dh = p256dh
        self.authSecret = authSecret
        self.apnsBackground = apnsBackground
    }
}

/// One wake-up to send: its class and the expiry of the envelope that caused it, from which the push
/// service's time to live is computed (`push.md` 3).
public struct WakeUp: Sendable, Equatable {
    /// `urgent` or `ring`.
    public var wakeClass: WakeClass
    /// Expiry of the waking envelope; the push service may drop the wake-up after it.
    public var expiresAt: Date

    /// A wake-up of `wakeClass` that is useless after `expiresAt`.
    public init(wakeClass: WakeClass, expiresAt: Date) {
        self.wakeClass = wakeClass
        self.expiresAt = expiresAt
    }
}

/// What one attempt at a push service gave (`protocol/push.md` 7). The dispatcher decides about retries.
public enum PushAttemptOutcome: Sendable, Equatable {
    /// The push service accepted the wake-up.
    case accepted
    /// The endpoint is dead (Web Push 404 / 410, APNs 410 or a bad token, FCM `UNREGISTERED`): drop it.
    /// `reason` is a short English text without endpoint, key or payload, e.g. "push service answered 410 Gone".
    case endpointDead(reason: String)
    /// Worth another attempt (429, 5xx, a network failure, an expired provider token): not before
    /// `after` when the service said so (`Retry-After`), else after the dispatcher's backoff.
    case retry(after: Duration?, reason: String)
    /// Refused for good (another 4xx, a payload the service rejects): counted as failed, not retried.
    case failed(reason: String)
}

/// Sends one attempt of a wake-up through one push service (`protocol/push.md` 3). Implementations keep
/// their own credentials and cached tokens; they never log the endpoint, a key or the payload.
public protocol PushSender: Sendable {
    /// The provider this sender serves.
    var provider: PushProviderKind { get }
    /// Makes one HTTP request for `wake` to `endpoint` at time `now` (for tokens and time to live) and
    /// classifies the answer. Never throws: every failure is an outcome.
    func send(_ wake: WakeUp, to endpoint: PushEndpoint, now: Date) async -> PushAttemptOutcome
}
