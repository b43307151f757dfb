import AsyncHTTPClient
import FlitzStore
import Foundation
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle
import Synchronization

/// Waits out one backoff between push attempts (`protocol/push.md` 7); throws `CancellationError` when cancelled.
/// The relay sleeps for the given duration; tests inject one that records the waits and returns at once.
public typealias PushSleeper = @Sendable (Duration) async throws -> Void

/// One wake-up candidate from a `Submit`: an `urgent` or `ring` envelope made durable for a device that had no
/// authenticated connection (`protocol/push.md` 5).
struct PushCandidate: Sendable, Equatable {
    /// The recipient device.
    var device: DeviceAddress
    /// `urgent` (also for `URGENCY_UNSPECIFIED`) or `ring`.
    var wakeClass: WakeClass
    /// The 16-byte envelope id checked again just before sending.
    var envelopeID: Data
    /// The envelope's expiry, milliseconds since the Unix epoch.
    var expiresAtMs: Int64
    /// For the ring of a `CALL_OFFER` (`calls.md` 3.3): the held copy's serial in the relay's `CallSignalBroker`,
    /// checked again just before sending instead of an envelope (`envelopeID` is then empty).
    var callSignalSerial: UInt64? = nil
}

/// Sends wake-ups in the background (`protocol/push.md` 5 and 7): a swift-service-lifecycle `Service` started and
/// shut down with the relay. `Relay.submit` hands it candidates after the Submit's envelopes are durable and never
/// waits for it; an authentication closes the device's coalescing window through it. It owns the relay's one
/// AsyncHTTPClient `HTTPClient` (system trust roots plus `push.caFile`), made when it starts and shut down when it
/// stops, and the `PushSender`s built over it. Never logs an endpoint, a key or a payload.
final class PushDispatcher: Service, Sendable, CustomStringConvertible {
    private enum Job: Sendable {
        /// Wake candidates of one device from one Submit: `count` envelopes of one class; the one checked before
        /// sending is the latest to expire.
        case wake(PushCandidate, count: Int)
    }

    private let store: any RelayStore
    private let configuration: PushConfiguration
    private let clock: any RelayClock
    private let metrics: RelayMetrics
    private let logger: Logger
    private let isConnected: @Sendable (DeviceAddress) async -> Bool
    /// Whether a held call signal copy (device, serial) still waits to be delivered (`CallSignalBroker.isWaiting`).
    private let isCallSignalWaiting: @Sendable (DeviceAddress, UInt64, Int64) async -> Bool
    private let jobs: AsyncStream<Job>
    private let continuation: AsyncStream<Job>.Continuation
    private let sleeperState = Mutex<PushSleeper>({ duration in try await Task.sleep(for: duration) })
    private let extraTrustRoots: [NIOSSLCertificate]
    private let credentials: PushCredentials
    private let rings: PushRingLimiter
    /// In a cluster, the shared token buckets that hold the ring limit for every node (`cluster.md` 4); nil: `rings`.
    private let cluster: (any RelayCluster)?
    /// What the dispatcher did, for tests and metrics.
    let monitor = PushMonitor(PushCounts())

    /// A dispatcher over `store`.
    /// - Parameters:
    ///   - extraTrustRoots: `push.caFile`'s certificates, trusted beside the system's.
    ///   - credentials: the VAPID key and the APNs and FCM settings read at start; without a VAPID key the
    ///     dispatcher sends nothing (a `Relay` made directly, without `buildRelay`).
    ///   - isConnected: whether a device has an authenticated connection now (`ConnectionRegistry`).
    init(
        store: any RelayStore, configuration: PushConfiguration, clock: any RelayClock, metrics: RelayMetrics, logger: Logger,
        extraTrustRoots: [NIOSSLCertificate] = [], credentials: PushCredentials, isConnected: @escaping @Sendable (DeviceAddress) async -> Bool,
        isCallSignalWaiting: @escaping @Sendable (DeviceAddress, UInt64, Int64) async -> Bool = { _, _, _ in false },
        cluster: (any RelayCluster)? = nil
    ) {
        self.isCallSignalWaiting = isCallSignalWaiting
        self.cluster = cluster
        self.store = store
        self.configuration = configuration
        self.clock = clock
        self.metrics = metrics
        self.logger = logger
        self.extraTrustRoots = extraTrustRoots
        self.credentials = credentials
        self.isConnected = isConnected
        rings = PushRingLimiter(burst: configuration.ringBurst, interval: configuration.ringInterval)
        // Bounded: a flood of Submits to offline devices cannot grow the queue without limit; a job over the bound
        // is refused and counted (push.md 10, flitz_relay_push_dropped_jobs_total).
        (jobs, continuation) = AsyncStream.makeStream(of: Job.self, bufferingPolicy: .bufferingOldest(max(1, configuration.queueLimit)))
    }

    /// "PushDispatcher", for lifecycle logs.
    var description: String { "PushDispatcher" }

    /// The wait between attempts; tests replace it to record backoffs without waiting.
    var sleeper: PushSleeper {
        get { sleeperState.withLock { $0 } }
        set { sleeperState.withLock { $0 = newValue } }
    }

    /// The providers a device may register for (`push.md` 3): Web Push always, APNs and FCM when configured.
    var availableProviders: Set<PushProviderKind> { credentials.providers }

    /// Hands the wake candidates of one durable Submit to the background; returns at once.
    func submitted(_ candidates: [PushCandidate]) {
        guard !candidates.isEmpty else { return }
        // One job per device and class: a ring wakes once, a burst of urgent envelopes decides the window once.
        var groups: [DeviceAddress: [WakeClass: (PushCandidate, Int)]] = [:]
        for candidate in candidates {
            let existing = groups[candidate.device]?[candidate.wakeClass]
            let latest = existing.map { $0.0.expiresAtMs >= candidate.expiresAtMs ? $0.0 : candidate } ?? candidate
            groups[candidate.device, default: [:]][candidate.wakeClass] = (latest, (existing?.1 ?? 0) + 1)
        }
        for (_, classes) in groups {
            for wakeClass in [WakeClass.ring, .urgent] {
                guard let (candidate, count) = classes[wakeClass] else { continue }
                enqueue(.wake(candidate, count: count))
            }
        }
    }

    /// `device` authenticated: closes its window (`push.md` 5 step 3) before the relay answers the Authenticate.
    /// Awaited, not queued: a background job could run after a quick disconnect and a new `urgent` envelope, whose
    /// wake-up the stale window would then swallow. One conditional `UPDATE` that touches only a row with a window.
    /// A store failure is logged (no endpoint in it) and leaves the window to lapse by itself; the authentication
    /// still succeeds.
    func deviceConnected(_ device: DeviceAddress) async {
        do {
            // A read first (concurrent with the writer): most devices have no open window, and an authentication
            // should not queue behind every Submit for a write that changes nothing. A window opened after this
            // read is caught by the re-check before sending (the device is connected), which closes it.
            guard let endpoint = try await store.pushEndpoint(device: device), endpoint.urgentWindowUntilMs != 0 else { return }
            try await store.closeUrgentWindow(device: device, onlyIfUntilMs: nil)
        } catch {
            logger.error("push window close failed", metadata: ["error": "\(error)"])
        }
    }

    private func enqueue(_ job: Job) {
        monitor.record { $0.pending += 1 }
        switch continuation.yield(job) {
        case .enqueued:
            return
        case .dropped:
            // push.queueLimit jobs already wait: this one is refused (its envelopes stay queued; only the wake-up
            // is lost, and the device's next envelope may wake it).
            metrics.pushJobDropped()
            monitor.record {
                $0.pending -= 1
                $0.droppedJobs += 1
            }
        case .terminated:
            // The dispatcher has stopped (relay shutting down): nothing will handle it.
            monitor.record { $0.pending -= 1 }
        @unknown default:
            monitor.record { $0.pending -= 1 }
        }
    }

    /// Makes the HTTP client and senders, then handles jobs until graceful shutdown; shuts the client down.
    func run() async throws {
        var tls = TLSConfiguration.makeClientConfiguration()
        if !extraTrustRoots.isEmpty { tls.additionalTrustRoots = [.certificates(extraTrustRoots)] }
        var clientConfiguration = HTTPClient.Configuration(tlsConfiguration: tls)
        let timeout = ProviderHTTP.timeAmount(configuration.timeout)
        clientConfiguration.timeout = .init(connect: timeout, read: timeout)
        // Push services never redirect; following one could send a wake-up somewhere the device never named.
        clientConfiguration.redirectConfiguration = .disallow
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: clientConfiguration)
        let senders: [PushProviderKind: any PushSender]
        do {
            senders = credentials.vapidKeyPEM.isEmpty ? [:] : try makePushSenders(configuration: configuration, credentials: credentials, httpClient: client)
        } catch {
            try? await client.shutdown()
            throw error
        }
        let slots = PushSlots(max(1, configuration.maxConcurrentJobs))
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                var iterator = self.jobs.makeAsyncIterator()
                // At most push.maxConcurrentJobs at once; later jobs wait in the stream, which holds at most
                // push.queueLimit (a flood of Submits to offline devices does not become a flood of tasks and store
                // writes). A slot is taken before a job leaves the stream, so the stream's bound is the queue's.
                while await slots.acquire() {
                    guard let job = await iterator.next() else {
                        slots.release()
                        break
                    }
                    group.addTask {
                        await self.handle(job, senders: senders)
                        self.monitor.record { $0.pending -= 1 }
                        slots.release()
                    }
                }
            }
        }
        continuation.finish()
        try await client.shutdown()
    }

    // MARK: Jobs

    private func handle(_ job: Job, senders: [PushProviderKind: any PushSender]) async {
        do {
            switch job {
            case .wake(let candidate, let count):
                try await wake(candidate, count: count, senders: senders)
            }
        } catch is CancellationError {
            return
        } catch {
            // Never the endpoint: the store's errors carry no arguments.
            logger.error("push dispatch failed", metadata: ["error": "\(error)"])
        }
    }

    /// `push.md` 5: decide, then send with retries (`push.md` 7).
    /// Takes one ring wake-up of `device`: from this process's `rings`, or in a cluster from the shared bucket
    /// `push.ring.HANDLE/DEVICE` (burst `push.ringBurst`, refilled continuously at one per `push.ringInterval`), so
    /// every node together allows one burst. False: the bucket is empty.
    /// - Throws: `StoreError` when the database fails (the wake-up is then lost, never doubled).
    private func takeRing(_ device: DeviceAddress, nowMs: Int64) async throws -> Bool {
        guard let cluster else { return rings.take(device, nowMs: nowMs) }
        let take = TokenTake(
            key: "push.ring.\(device.handle)/\(device.deviceID)", cost: 1,
            perMinute: 60_000 / Double(max(1, configuration.ringInterval.wholeMilliseconds)), burst: max(1, configuration.ringBurst))
        return try await cluster.takeTokens([take], nowMs: nowMs) == 0
    }

    private func wake(_ candidate: PushCandidate, count: Int, senders: [PushProviderKind: any PushSender]) async throws {
        let device = candidate.device
        // A ring is wanted while its copy is held, even if the device is connected without `call_signals`
        // (calls.md 3.2, 3.3): `isCallSignalWaiting` below decides for it.
        if candidate.callSignalSerial == nil, await isConnected(device) { return }
        let nowMs = clock.nowMs()
        let stored: StoredPushEndpoint
        var windowUntilMs: Int64?
        switch candidate.wakeClass {
        case .ring:
            // A ring neither opens nor checks the window, but a device takes at most push.ringBurst rings at once,
            // refilled one per push.ringInterval; the rest count as coalesced (push.md 5 step 1).
            guard let found = try await store.pushEndpoint(device: device), found.isLive else { return }
            guard try await takeRing(device, nowMs: nowMs) else {
                if let kind = PushProviderKind(rawValue: found.provider) { tally(.coalesced, kind, count) }
                return
            }
            stored = found
            // Further rings of the same Submit ride on this wake-up.
            tally(.coalesced, PushProviderKind(rawValue: found.provider) ?? .webPush, count - 1)
        case .urgent:
            let until = nowMs + configuration.coalesceWindow.wholeMilliseconds
            switch try await store.decideUrgentWake(device: device, nowMs: nowMs, windowUntilMs: until) {
            case .noEndpoint:
                return
            case .coalesced(let provider):
                if let kind = PushProviderKind(rawValue: provider) { tally(.coalesced, kind, count) }
                return
            case .wake(let found):
                stored = found
                windowUntilMs = until
                if let kind = PushProviderKind(rawValue: found.provider) { tally(.coalesced, kind, count - 1) }
            }
        }
        guard let provider = PushProviderKind(rawValue: stored.provider), let address = stored.endpoint else { return }
        let endpoint = PushEndpoint(
            provider: provider, endpoint: address, p256dh: stored.p256dh, authSecret: stored.authSecret, apnsBackground: stored.apnsBackground)
        let outcome = try await deliver(to: endpoint, candidate: candidate, sender: senders[provider])
        switch outcome {
        case .sent:
            tally(.sent, provider)
            try await store.recordPushAccepted(device: device, endpoint: address, atMs: clock.nowMs())
        case .skipped:
            tally(.skipped, provider)
            // The device connected (its authentication closed the window) or the envelope is gone: the next
            // envelope may wake again.
            if let windowUntilMs { try await store.closeUrgentWindow(device: device, onlyIfUntilMs: windowUntilMs) }
        case .dead(let reason):
            if try await store.dropPushEndpoint(device: device, endpoint: address, reason: reason + ": endpoint dropped", atMs: clock.nowMs()) {
                tally(.dropped, provider)
            }
            logger.notice("push endpoint dropped as dead", metadata: ["push.provider": "\(provider.rawValue)", "push.reason": "\(reason)"])
        case .failed(let reason):
            tally(.failed, provider)
            try await store.recordPushFailed(device: device, endpoint: address, reason: reason)
            // The window stays open (push.md 7): closing it would send every further urgent envelope to a failing
            // endpoint at once, so one sender could make the relay hammer a push service.
            logger.notice("push wake-up failed", metadata: ["push.provider": "\(provider.rawValue)", "push.reason": "\(reason)"])
        }
    }

    private enum Delivery {
        case sent
        case skipped
        case dead(String)
        case failed(String)
    }

    /// Up to `push.maxAttempts` attempts, each after checking again that the wake-up is still wanted.
    private func deliver(to endpoint: PushEndpoint, candidate: PushCandidate, sender: (any PushSender)?) async throws -> Delivery {
        guard let sender else { return .failed("no \(endpoint.provider.rawValue) sender is configured on this relay") }
        let attempts = max(1, configuration.maxAttempts)
        var lastReason = ""
        for attempt in 1...attempts {
            // Just before sending (push.md 5): connected meanwhile, acknowledged, purged or expired → skip.
            if let serial = candidate.callSignalSerial {
                // A call offer's ring: skipped once the held copy was delivered or expired (an offer never rings late).
                guard await isCallSignalWaiting(candidate.device, serial, clock.nowMs()) else { return .skipped }
            } else {
                if await isConnected(candidate.device) { return .skipped }
                guard try await store.isEnvelopeQueued(envelopeID: candidate.envelopeID, device: candidate.device, nowMs: clock.nowMs()) else {
                    return .skipped
                }
            }
            switch await attemptOnce(sender, candidate, endpoint) {
            case .accepted:
                return .sent
            case .endpointDead(let reason):
                return .dead(reason)
            case .failed(let reason):
                return .failed(reason)
            case .retry(let after, let reason):
                lastReason = reason
                guard attempt < attempts else { break }
                let wait = configuration.backoff(afterAttempt: attempt, retryAfter: after)
                monitor.record { $0.retries += 1 }
                try await sleeper(wait)
            }
        }
        return .failed("gave up after \(attempts) attempts: \(lastReason)")
    }

    /// One attempt, given up as retryable after `push.timeout` (a sender's own HTTP timeout normally answers first).
    private func attemptOnce(_ sender: any PushSender, _ candidate: PushCandidate, _ endpoint: PushEndpoint) async -> PushAttemptOutcome {
        let timeout = configuration.timeout
        let (wake, now) = Self.wakeUp(candidate.wakeClass, expiresAtMs: candidate.expiresAtMs, nowMs: clock.nowMs())
        return await withTaskGroup(of: PushAttemptOutcome?.self) { group in
            group.addTask { await sender.send(wake, to: endpoint, now: now) }
            group.addTask {
                // Real time: this guards against a sender that never answers, not a rule tests need to move.
                try? await Task.sleep(for: timeout + .milliseconds(500))
                return Task.isCancelled ? nil : .retry(after: nil, reason: "no answer within push.timeout")
            }
            var outcome: PushAttemptOutcome = .retry(after: nil, reason: "cancelled")
            for await result in group {
                if let result {
                    outcome = result
                    break
                }
            }
            group.cancelAll()
            return outcome
        }
    }

    /// The time-to-live buckets (`push.md` 5, "Time to live"), longest first, seconds: 28 days (FCM's maximum),
    /// 7 days, 1 day, 1 hour, 60 seconds, 0.
    static let timeToLiveBuckets: [Int64] = [2_419_200, 604_800, 86_400, 3_600, 60, 0]

    /// The largest bucket not above `remainingMs` (milliseconds until the envelope expires), in seconds; 0 when
    /// under a minute or already past.
    static func timeToLive(remainingMs: Int64) -> Int64 {
        let seconds = max(0, remainingMs) / 1_000
        return timeToLiveBuckets.first { $0 <= seconds } ?? 0
    }

    /// The wake-up one attempt sends and the `now` it hands the sender (`push.md` 5, "Time to live"): `now` is the
    /// relay clock rounded down to whole seconds and `expiresAt` is `now` plus the bucketed time to live, both
    /// whole seconds, so every provider's `TTL`, `apns-expiration` minus now and FCM `ttl` show exactly the bucket
    /// (not the sender's chosen expiry) and never reach past the envelope's expiry.
    static func wakeUp(_ wakeClass: WakeClass, expiresAtMs: Int64, nowMs: Int64) -> (WakeUp, now: Date) {
        let nowSeconds = nowMs >= 0 ? nowMs / 1_000 : (nowMs - 999) / 1_000
        let ttl = timeToLive(remainingMs: expiresAtMs - nowMs)
        let wake = WakeUp(wakeClass: wakeClass, expiresAt: Date(timeIntervalSince1970: Double(nowSeconds + ttl)))
        return (wake, Date(timeIntervalSince1970: Double(nowSeconds)))
    }

    private func tally(_ metric: RelayMetrics.PushMetric, _ provider: PushProviderKind, _ amount: Int = 1) {
        guard amount > 0 else { return }
        metrics.push(metric, provider, count: amount)
        monitor.record { snapshot in
            switch metric {
            case .sent: snapshot.sent += amount
            case .coalesced: snapshot.coalesced += amount
            case .skipped: snapshot.skipped += amount
            case .failed: snapshot.failed += amount
            case .dropped: snapshot.dropped += amount
            }
        }
    }
}

/// A counting semaphore for the dispatcher's concurrent jobs. `acquire` returns false when the task is already
/// cancelled; a waiting `acquire` is not woken by cancellation (slots are released as jobs finish, which they do
/// after at most `push.maxAttempts` attempts).
final class PushSlots: Sendable {
    private let state: Mutex<(free: Int, waiters: [CheckedContinuation<Bool, Never>])>

    init(_ count: Int) { state = Mutex((count, [])) }

    /// Takes a slot, waiting for one to be released; false (no slot taken) when the task is already cancelled.
    func acquire() async -> Bool {
        if Task.isCancelled { return false }
        return await withCheckedContinuation { continuation in
            let taken = state.withLock { state -> Bool in
                if state.free > 0 {
                    state.free -= 1
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if taken { continuation.resume(returning: true) }
        }
    }

    /// Returns a slot, handing it to a waiter if any.
    func release() {
        let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            if !state.waiters.isEmpty { return state.waiters.removeFirst() }
            state.free += 1
            return nil
        }
        waiter?.resume(returning: true)
    }
}

/// Counts of the dispatcher's work at one instant, kept by `PushMonitor`: tests await a condition (all jobs
/// handled, a wake-up sent) instead of sleeping.
struct PushCounts: Sendable, Equatable {
    /// Jobs handed over and not yet handled completely (0: the dispatcher is idle).
    var pending = 0
    /// Wake-ups accepted by a push service.
    var sent = 0
    /// `urgent` envelopes coalesced into an earlier wake-up, and `ring` envelopes over the ring limit.
    var coalesced = 0
    /// Wake-ups skipped: the device connected or the envelope was gone first.
    var skipped = 0
    /// Wake-ups given up or refused.
    var failed = 0
    /// Endpoints dropped as dead.
    var dropped = 0
    /// Waits between attempts.
    var retries = 0
    /// Jobs refused because `push.queueLimit` jobs were already waiting.
    var droppedJobs = 0
}

/// `CountMonitor` of `PushCounts`.
typealias PushMonitor = CountMonitor<PushCounts>
