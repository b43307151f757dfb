import FlitzStore
import FlitzWire
import Foundation
import Synchronization

/// One token-bucket limit (`protocol/relay.md`, "Rate limits"): a bucket holds at most `burst` tokens and
/// refills at `perMinute` tokens a minute; each request takes one token (a Submit takes one per envelope
/// from its sender→recipient pair bucket). `perMinute` 0 (or `burst` 0) switches this limit off.
public struct RateLimit: Sendable, Hashable {
    /// Refill rate in tokens per minute (fractions allowed); 0 disables the limit.
    public var perMinute: Double
    /// Bucket size: the most requests accepted at once after a quiet period; 0 disables the limit.
    public var burst: Int

    /// A limit of `perMinute` tokens a minute with room for `burst`.
    public init(perMinute: Double, burst: Int) {
        self.perMinute = perMinute
        self.burst = burst
    }

    /// Whether requests are limited at all.
    public var isEnabled: Bool { perMinute > 0 && burst > 0 }
}

/// Every rate limit of a relay, keyed as in `protocol/relay.md`, "Rate limits" (`limits.*`). The defaults
/// let a person on several devices chat and sync freely while a script cannot register handles in bulk,
/// guess recovery codes quickly or drain a handle's one-time prekeys.
public struct RateLimits: Sendable, Hashable {
    /// `limits.enabled`: false switches every limit off (load tests). Default true.
    public var enabled = true
    /// `limits.device.*`: every request of one authenticated device. Default 6 000/min, burst 300.
    public var device = RateLimit(perMinute: 6_000, burst: 300)
    /// `limits.pair.*`: envelopes from one sender handle to one recipient handle (one token per envelope).
    /// Default 3 000/min, burst 500 (a message to 16 devices plus 15 own devices is 31 envelopes).
    public var pair = RateLimit(perMinute: 3_000, burst: 500)
    /// `limits.registerAddress.*`: Register from one source address. Default 10/min, burst 20.
    public var registerAddress = RateLimit(perMinute: 10, burst: 20)
    /// `limits.registerHandle.*`: Register of one handle. Default 5/min, burst 10.
    public var registerHandle = RateLimit(perMinute: 5, burst: 10)
    /// `limits.recoverAddress.*`: Recover from one source address. Default 5/min, burst 10.
    public var recoverAddress = RateLimit(perMinute: 5, burst: 10)
    /// `limits.recoverHandle.*`: Recover of one handle. Default 3/min, burst 5.
    public var recoverHandle = RateLimit(perMinute: 3, burst: 5)
    /// `limits.linkAddress.*`: RegisterDevice, LinkPut and LinkTake from one source address (unauthenticated
    /// pairing). Default 60/min, burst 60.
    public var linkAddress = RateLimit(perMinute: 60, burst: 60)
    /// `limits.prekeyDevice.*`: FetchPreKeyBundle by one device. Default 60/min, burst 100.
    public var prekeyDevice = RateLimit(perMinute: 60, burst: 100)
    /// `limits.prekeyHandle.*`: FetchPreKeyBundle of one target handle, by anyone (each fetch takes one-time
    /// prekeys; this bounds draining). Default 30/min, burst 100.
    public var prekeyHandle = RateLimit(perMinute: 30, burst: 100)
    /// `limits.uploadCapability.*`: RequestUploadCapability by one device (`attachments.md` 4.1). Default 60/min,
    /// burst 60.
    public var uploadCapability = RateLimit(perMinute: 60, burst: 60)
    /// `limits.callOffer.*`: `CALL_OFFER` signals of one device (`calls.md` 3.1 check 6). Default 10/min, burst 10.
    public var callOffer = RateLimit(perMinute: 10, burst: 10)
    /// `limits.callSignal.*`: call signals of any kind of one device (`calls.md` 3.1 check 6). Default 100/min,
    /// burst 100.
    public var callSignal = RateLimit(perMinute: 100, burst: 100)
    /// `limits.turnCredentials.*`: `RequestTurnCredentials` by one device (`calls.md` 3.5). Default 30 an hour
    /// (0.5/min), burst 30.
    public var turnCredentials = RateLimit(perMinute: 0.5, burst: 30)

    /// The documented defaults.
    public init() {}

    /// Every limit off.
    public static let off: RateLimits = {
        var limits = RateLimits()
        limits.enabled = false
        return limits
    }()
}

/// Token buckets per key for one `RateLimit`, under the owning `RateLimiter`'s lock. Time is the relay clock in
/// milliseconds, so tests move it by hand. Memory is bounded: past `maxKeys` buckets, full (idle) buckets are
/// dropped, since a full bucket behaves exactly like a missing one; if most are still busy, every bucket of this
/// kind is dropped (each key gets a fresh burst: the limit fails open for a moment rather than letting an
/// attacker with many addresses grow the relay's memory).
struct TokenBuckets {
    private struct Bucket {
        var tokens: Double
        var updatedMs: Int64
    }

    let limit: RateLimit
    private let maxKeys: Int
    private var buckets: [String: Bucket] = [:]

    init(_ limit: RateLimit, maxKeys: Int) {
        self.limit = limit
        self.maxKeys = maxKeys
    }

    private var tokensPerMs: Double { limit.perMinute / 60_000 }

    /// Tokens of `key` at `nowMs` (a clock that went back refills nothing); `burst` for an unknown key.
    private func tokens(_ key: String, nowMs: Int64) -> Double {
        guard let bucket = buckets[key] else { return Double(limit.burst) }
        return min(Double(limit.burst), bucket.tokens + Double(max(0, nowMs - bucket.updatedMs)) * tokensPerMs)
    }

    /// Milliseconds until `key` holds `cost` tokens (capped to the burst, so a large batch still passes after a
    /// quiet period); 0 when it does now or the limit is off.
    func wait(_ key: String, cost: Int, nowMs: Int64) -> Int64 {
        guard limit.isEnabled else { return 0 }
        let needed = Double(min(cost, limit.burst))
        let available = tokens(key, nowMs: nowMs)
        guard available < needed else { return 0 }
        return max(1, Int64(((needed - available) / tokensPerMs).rounded(.up)))
    }

    /// Takes `cost` tokens (capped to the burst) from `key`; call only after `wait` returned 0.
    mutating func take(_ key: String, cost: Int, nowMs: Int64) {
        guard limit.isEnabled else { return }
        let remaining = tokens(key, nowMs: nowMs) - Double(min(cost, limit.burst))
        if buckets[key] == nil, buckets.count >= maxKeys { prune(nowMs: nowMs) }
        buckets[key] = Bucket(tokens: remaining, updatedMs: nowMs)
    }

    /// Number of buckets held.
    var count: Int { buckets.count }

    private mutating func prune(nowMs: Int64) {
        let burst = Double(limit.burst)
        buckets = buckets.filter { tokens($0.key, nowMs: nowMs) < burst }
        if buckets.count > maxKeys / 2 { buckets.removeAll(keepingCapacity: true) }
    }
}

/// The relay's token buckets (`protocol/relay.md`, "Rate limits"), checked before a request is handled.
/// A refused request gets `RATE_LIMITED` with `retry_after_ms` and takes no token; the connection stays open.
final class RateLimiter: Sendable {
    /// The bucket kinds, one per `RateLimits` entry.
    enum Kind: Int, CaseIterable {
        case device, pair, registerAddress, registerHandle, recoverAddress, recoverHandle, linkAddress, prekeyDevice, prekeyHandle, uploadCapability
        case callOffer, callSignal, turnCredentials
    }

    let limits: RateLimits
    private let tables: Mutex<[TokenBuckets]>
    private let sharedTakeCount = Atomic<Int>(0)

    /// How many times this limiter asked the shared buckets in the database (tests: refused requests never do).
    var sharedTakes: Int { sharedTakeCount.load(ordering: .relaxed) }

    /// The key of a handle's buckets: the handle itself when it is a valid one (`relay.md`: 3-32 bytes of
    /// `a-z 0-9 _ .`), otherwise one shared `invalid` key, so arbitrary (long) strings never become bucket keys; such
    /// requests are refused after admission anyway.
    static func handleKey(_ handle: String) -> String {
        let bytes = handle.utf8
        guard (3...32).contains(bytes.count), bytes.allSatisfy({ (0x61...0x7a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5f || $0 == 0x2e })
        else { return "invalid" }
        return handle
    }

    init(_ limits: RateLimits, maxKeys: Int = 100_000) {
        self.limits = limits
        tables = Mutex(Kind.allCases.map { kind in
            TokenBuckets(limits.enabled ? limits[kind] : RateLimit(perMinute: 0, burst: 0), maxKeys: maxKeys)
        })
    }

    /// Buckets held for `kind` (tests check the memory bound).
    func bucketCount(_ kind: Kind) -> Int { tables.withLock { $0[kind.rawValue].count } }

    /// Checks the limits of an unauthenticated request from `source` (the peer's IP address).
    /// - Throws: `RelayError(.rateLimited)` with `retryAfterMs`.
    func admitUnauthenticated(_ body: WireFrame.OneOf_Body, source: String, nowMs: Int64) throws(RelayError) {
        try take(Self.takes(unauthenticated: body, source: source), nowMs: nowMs)
    }

    /// The buckets an unauthenticated request from `source` takes from: (kind, key, cost).
    static func takes(unauthenticated body: WireFrame.OneOf_Body, source: String) -> [(Kind, String, Int)] {
        switch body {
        case .register(let request): [(.registerAddress, source, 1), (.registerHandle, handleKey(request.handle), 1)]
        case .recover(let request): [(.recoverAddress, source, 1), (.recoverHandle, handleKey(request.handle), 1)]
        case .registerDevice, .linkPut, .linkTake: [(.linkAddress, source, 1)]
        default: []
        }
    }

    /// Checks the limits of a request by the authenticated `device` from `source`: every request takes a token
    /// of the device's bucket; some take more (`protocol/relay.md`, "Rate limits").
    /// - Throws: `RelayError(.rateLimited)` with `retryAfterMs`.
    func admitAuthenticated(_ body: WireFrame.OneOf_Body, device: DeviceAddress, source: String, nowMs: Int64) throws(RelayError) {
        try take(Self.takes(authenticated: body, device: device, source: source), nowMs: nowMs)
    }

    /// The buckets a request of the authenticated `device` from `source` takes from: (kind, key, cost).
    static func takes(authenticated body: WireFrame.OneOf_Body, device: DeviceAddress, source: String) -> [(Kind, String, Int)] {
        let key = device.description
        switch body {
        case .fetchPrekeyBundle(let request):
            return [(.device, key, 1), (.prekeyDevice, key, 1), (.prekeyHandle, handleKey(request.handle), 1)]
        case .linkPut, .linkTake:
            return [(.device, key, 1), (.linkAddress, source, 1)]
        case .requestUploadCapability:
            return [(.device, key, 1), (.uploadCapability, key, 1)]
        case .requestTurnCredentials:
            return [(.device, key, 1), (.turnCredentials, key, 1)]
        case .submit(let request):
            // One token per envelope from each sender→recipient handle pair.
            var costs: [String: Int] = [:]
            for envelope in request.envelopes { costs[device.handle + "\u{0}" + handleKey(envelope.recipientHandle), default: 0] += 1 }
            return [(.device, key, 1)] + costs.map { (.pair, $0.key, $0.value) }
        default:
            return [(.device, key, 1)]
        }
    }

    /// Checks the call signal limits of `device` (`calls.md` 3.1 check 6, after the other checks): every signal takes
    /// a `limits.callSignal` token, an offer also a `limits.callOffer` one.
    /// - Throws: `RelayError(.rateLimited)` with `retryAfterMs`.
    func admitCallSignal(offer: Bool, device: DeviceAddress, nowMs: Int64) throws(RelayError) {
        try take(Self.takes(callSignalOffer: offer, device: device), nowMs: nowMs)
    }

    /// The buckets a call signal of `device` takes from (`calls.md` 3.1 check 6).
    static func takes(callSignalOffer offer: Bool, device: DeviceAddress) -> [(Kind, String, Int)] {
        let key = device.description
        return [(.callSignal, key, 1)] + (offer ? [(.callOffer, key, 1)] : [])
    }

    /// Takes `entries` from the buckets every node shares (`cluster.md` 4: `RelayCluster.takeTokens`), all or none.
    /// A bucket's key is `KIND.SUBJECT` (a NUL, which PostgreSQL text cannot hold, becomes `/`, which no handle has).
    /// - Throws: `RelayError(.rateLimited)` with `retryAfterMs`; `RelayError(.internal)` when the database fails.
    func takeShared(_ entries: [(Kind, String, Int)], nowMs: Int64, cluster: any RelayCluster) async throws(RelayError) {
        guard limits.enabled else { return }
        // This node's own buckets first (the same limits): what one node alone would refuse never reaches the
        // database, so a flood of refused frames costs no database write (cluster.md 4, "Token buckets").
        try take(entries, nowMs: nowMs)
        sharedTakeCount.add(1, ordering: .relaxed)
        let takes = entries.compactMap { (kind, key, cost) -> TokenTake? in
            let limit = limits[kind]
            guard limit.isEnabled else { return nil }
            return TokenTake(
                key: "\(kind).\(key.replacingOccurrences(of: "\u{0}", with: "/"))", cost: min(cost, limit.burst), perMinute: limit.perMinute,
                burst: limit.burst)
        }
        guard !takes.isEmpty else { return }
        let retry: Int64
        do {
            retry = try await cluster.takeTokens(takes, nowMs: nowMs)
        } catch {
            throw RelayError(.internal, "the relay failed; retry later")
        }
        if retry > 0 { throw RelayError(.rateLimited, "rate limit reached; retry after \(retry) ms", retryAfterMs: retry) }
    }

    /// Takes `cost` tokens from each (kind, key), all or none, under one lock.
    private func take(_ entries: [(Kind, String, Int)], nowMs: Int64) throws(RelayError) {
        guard limits.enabled else { return }
        let refusal = tables.withLock { tables -> (Int64, Kind)? in
            var longest: (Int64, Kind)?
            for (kind, key, cost) in entries {
                let wait = tables[kind.rawValue].wait(key, cost: cost, nowMs: nowMs)
                if wait > (longest?.0 ?? 0) { longest = (wait, kind) }
            }
            if longest != nil { return longest }
            for (kind, key, cost) in entries { tables[kind.rawValue].take(key, cost: cost, nowMs: nowMs) }
            return nil
        }
        if let (retry, kind) = refusal {
            throw RelayError(.rateLimited, "rate limit limits.\(kind) reached; retry after \(retry) ms", retryAfterMs: retry)
        }
    }
}

extension RateLimits {
    /// The limit of one bucket kind.
    subscript(kind: RateLimiter.Kind) -> RateLimit {
        get {
            switch kind {
            case .device: device
            case .pair: pair
            case .registerAddress: registerAddress
            case .registerHandle: registerHandle
            case .recoverAddress: recoverAddress
            case .recoverHandle: recoverHandle
            case .linkAddress: linkAddress
            case .prekeyDevice: prekeyDevice
            case .prekeyHandle: prekeyHandle
            case .uploadCapability: uploadCapability
            case .callOffer: callOffer
            case .callSignal: callSignal
            case .turnCredentials: turnCredentials
            }
        }
        set {
            switch kind {
            case .device: device = newValue
            case .pair: pair = newValue
            case .registerAddress: registerAddress = newValue
            case .registerHandle: registerHandle = newValue
            case .recoverAddress: recoverAddress = newValue
            case .recoverHandle: recoverHandle = newValue
            case .linkAddress: linkAddress = newValue
            case .prekeyDevice: prekeyDevice = newValue
            case .prekeyHandle: prekeyHandle = newValue
            case .uploadCapability: uploadCapability = newValue
            case .callOffer: callOffer = newValue
            case .callSignal: callSignal = newValue
            case .turnCredentials: turnCredentials = newValue
            }
        }
    }
}

extension Relay {
    /// Checks the rate limits of an unauthenticated request from `source` (`protocol/relay.md`, "Rate limits").
    /// - Throws: `RelayError(.rateLimited)` with `retryAfterMs`.
    /// In a cluster the buckets are the database's, shared by every node (`cluster.md` 4).
    func admitUnauthenticated(_ body: WireFrame.OneOf_Body, source: String) async throws(RelayError) {
        if let cluster {
            try await limiter.takeShared(RateLimiter.takes(unauthenticated: body, source: source), nowMs: clock.nowMs(), cluster: cluster.cluster)
        } else {
            try limiter.admitUnauthenticated(body, source: source, nowMs: clock.nowMs())
        }
    }

    /// Checks the rate limits of a request by the authenticated `device` from `source`; in a cluster, the shared buckets.
    /// - Throws: `RelayError(.rateLimited)` with `retryAfterMs`.
    func admitAuthenticated(_ body: WireFrame.OneOf_Body, device: DeviceAddress, source: String) async throws(RelayError) {
        if let cluster {
            try await limiter.takeShared(
                RateLimiter.takes(authenticated: body, device: device, source: source), nowMs: clock.nowMs(), cluster: cluster.cluster)
        } else {
            try limiter.admitAuthenticated(body, device: device, source: source, nowMs: clock.nowMs())
        }
    }
}
