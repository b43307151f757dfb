import FlitzCrypto
import FlitzMedia
import FlitzProtocol
import FlitzWire
import Foundation

// CALLS ON THE CLIENT (protocol/calls.md) — the public API the CLI builds on:
//
//   let controller = CallController(client: client, options: CallOptions(ringTimeout: .seconds(60), relayOnly: false,
//                                                                         audio: AudioOptions(playFile: wav, recordFile: out)))
//   // Either: a connection of its own while `body` runs (flitz call / answer / decline):
//   try await client.withCalls(controller) { controller in
//       let id = try await controller.placeCall(to: "bob")          // or wait for .incoming, then answer(id) / decline(id)
//       for await event in controller.events { ... }                 // CallEvent: ringing, answered, connected, ended, ...
//   }
//   // Or inside `flitz listen`: try await client.listen(calls: controller) { clientEvent in ... }
//   // Controls at any time: await controller.answer(id), .decline(id), .hangUp(id); controller.activeCalls.
//   // History: try client.callHistory() → [CallRecord] (peer, direction, started, answered, ended, duration, outcome).
//
// `CallEvent.ended(record, statistics)` is the last event of every call (the record is already in the history).
// `withCalls` hangs up what is still going when its body ends; a long-running `listen` calls `hangUpAll()` /
// `shutdown()` itself on SIGINT. `CallEvent.connected(_, path:, setupTime:)` carries the setup time (offer sent, or
// offer received for the callee, to the first authenticated media packet) for the report.
// Exit codes for `flitz call` follow `record.outcome`: answered → 0; missed/declined/busy → 1; failed → 2.
//
// Inside: `CallStateMachine` (the rules, a value) decides; this actor performs its actions: call signals through
// the relay (CallSignaling.swift), media through `CallMediaSession`, keys from `CallKeys.derive`, timers.

/// What a `CallController` does for every call.
public struct CallOptions: Sendable {
    /// The caller's ring timeout (protocol/calls.md 10: 60 s, `--ring-timeout`).
    public var ringTimeout: Duration
    /// Relay-only mode (`--relay-only`): only the relayed candidate is offered and media goes only through TURN.
    public var relayOnly: Bool
    /// What calls play and record unless `placeCall` / `answer` say otherwise.
    public var audio: AudioOptions
    /// How long to gather candidates before the offer or answer goes out (3 s).
    public var gatherTimeout: Duration

    public init(ringTimeout: Duration = .seconds(60), relayOnly: Bool = false, audio: AudioOptions = AudioOptions(), gatherTimeout: Duration = .seconds(3)) {
        self.ringTimeout = ringTimeout
        self.relayOnly = relayOnly
        self.audio = audio
        self.gatherTimeout = gatherTimeout
    }
}

/// Something that happened to a call, for the CLI. Every call's last event is `ended`.
public enum CallEvent: Sendable {
    /// An outgoing call is gathering candidates; its offer goes out next.
    case placing(CallID, to: String)
    /// The offer went out to `devices` of `to` (delivered now, held, or rung by push); ringing.
    case ringing(CallID, to: String, devices: [UInt32])
    /// An incoming call rings. `untrustedCaller`: the caller's identity key is not the trusted one for that handle.
    case incoming(CallID, from: String, untrustedCaller: Bool)
    /// An incoming call stopped ringing (answered here or elsewhere, declined, hung up, expired).
    case stoppedRinging(CallID)
    /// Keys agreed with the peer device; media is connecting.
    case answered(CallID)
    /// The first authenticated media packet arrived on `path`; `setupTime` from the offer going out (caller) or
    /// arriving (callee).
    case connected(CallID, path: MediaPath, setupTime: Duration)
    /// Glare: this device's own unanswered call gave way to the peer's call `by`, now being answered.
    case replaced(CallID, by: CallID)
    /// The play file has been sent to its end (silence follows).
    case playbackFinished(CallID)
    /// The call ended and was recorded in the history; media counters when media ran.
    case ended(CallRecord, CallStatistics?)
    /// A problem worth telling the user (a dropped call signal, a failed send); calls go on.
    case warning(String)
}

extension CallCandidate {
    init(_ candidate: MediaCandidate) {
        self.init(kind: Kind(rawValue: candidate.kind.rawValue) ?? .host, address: candidate.address, port: candidate.port, priority: candidate.priority)
    }
}

extension MediaCandidate {
    init(_ candidate: CallCandidate) {
        self.init(kind: Kind(rawValue: candidate.kind.rawValue) ?? .host, address: candidate.address, port: candidate.port, priority: candidate.priority)
    }
}

/// Runs this device's calls on a relay connection (protocol/calls.md 8): places and answers calls, reads call
/// signals, drives `CallStateMachine`, and runs each call's `CallMediaSession`. One controller per device process.
public actor CallController {
    /// Every `CallEvent`, in order. One consumer.
    public nonisolated let events: AsyncStream<CallEvent>
    private let continuation: AsyncStream<CallEvent>.Continuation
    private let client: FlitzClient
    private let options: CallOptions

    private var machine = CallStateMachine()
    private var sequencer = CallSignalSequencer<ReceivedCallSignal>()
    private var connection: RelayConnection?
    private var account: AccountRecord?
    private var contexts: [CallID: Context] = [:]
    /// This device's next sequence per call and when it was last used (kept after a call ends: late hangups still
    /// need one; forgotten `CallStateMachine.forgetEndedAfter` after the last use once the call ended).
    private var sequences: [CallID: (next: UInt32, usedAt: Date)] = [:]
    /// The last send; each send waits for the one before, so sequences reach the relay in order.
    private var sendChain: Task<Void, Never>?
    private var sequencerTimer: Task<Void, Never>?
    private var bufferTimer: Task<Void, Never>?

    /// What the controller keeps of one call besides the machine's state. Holds the ephemeral private key until
    /// the keys are derived (then it is dropped, and `SecretBytes` zeroes it).
    private struct Context {
        var direction: CallDirection
        var peer: String
        var audio: AudioOptions
        var ephemeral: X25519PrivateKey?
        var media: CallMediaSession?
        /// Incoming: the caller's offer, device and account identity key.
        var offer: CallOffer?
        var callerDevice: UInt32?
        var callerIdentityKey: Ed25519PublicKey?
        var untrustedCaller = false
        /// Outgoing: the offer this device sent (an answer must match it: `CallAnswer.matches`).
        var sentOffer: CallOffer?
        /// Outgoing: the peer's account identity key trusted when the offer went out; signals of the call from a
        /// session with another key are dropped (review finding 5).
        var peerIdentityKey: Data?
        /// Incoming: the profile this device answered with.
        var profile: CallSRTPProfile?
        /// Outgoing: answers by device, with the account identity key of the session each came on.
        var answers: [UInt32: (answer: CallAnswer, identityKey: Ed25519PublicKey)] = [:]
        /// Where trickled candidates go: the offered devices until one answers, then the peer device.
        var trickleTargets: [UInt32] = []
        var setupStart: ContinuousClock.Instant
        var tasks: [Task<Void, Never>] = []
    }

    /// - Parameters: `client` the account's client; `options` ring timeout, relay-only mode, default audio.
    public init(client: FlitzClient, options: CallOptions = CallOptions()) {
        self.client = client
        self.options = options
        (events, continuation) = AsyncStream.makeStream(of: CallEvent.self)
    }

    /// Ids of the calls not ended.
    public var activeCalls: [CallID] { machine.activeCalls }

    // MARK: connection

    /// Reads this device's call signals on `connection` (authenticated) until it closes or the task is cancelled;
    /// calls placed or answered meanwhile signal on it. Call again with a new connection after a reconnect:
    /// media goes on meanwhile.
    /// - Throws: `ClientError(.relayUnreachable)` when the connection closed; `CancellationError`.
    public func run(on connection: RelayConnection) async throws {
        account = try client.requireAccount()
        self.connection = connection
        while !Task.isCancelled, let delivery = await connection.nextCallSignal(timeout: .seconds(86_400)) {
            await received(delivery, on: connection)
        }
        if self.connection === connection { self.connection = nil }
        try Task.checkCancellation()
        throw ClientError(.relayUnreachable, "connection to the relay lost")
    }

    /// Hangs up every call not ended (hangups sent while a connection is there); each ends with its `ended` event.
    public func hangUpAll() async {
        for id in machine.activeCalls { await hangUp(id) }
    }

    /// Ends every call (`hangUpAll`) and finishes `events`: the controller is done.
    public func shutdown() async {
        await hangUpAll()
        continuation.finish()
    }

    // MARK: user actions

    /// Calls `handle`: gathers candidates, offers the call to every current device of `handle`, rings until an
    /// answer, a decline, busy from every device, or the ring timeout. Returns once the offer went out.
    /// - Throws: `ClientError`: `.invalidArgument` (invalid or own handle, already in a call), `.relayUnreachable`
    ///   (no connection), `.refused` (no such handle, relay refusals), `.identityChanged`; `MediaError` when no
    ///   socket or (relay-only) no TURN allocation. The call is then recorded as failed.
    public func placeCall(to handle: String, audio: AudioOptions? = nil) async throws -> CallID {
        guard let connection, let account else { throw ClientError(.relayUnreachable, "not connected to the relay") }
        guard Handle.isValid(handle) else { throw ClientError(.invalidArgument, "invalid handle \"\(handle)\"") }
        guard handle != account.handle else { throw ClientError(.invalidArgument, "you cannot call yourself") }
        guard !machine.isInCall else { throw ClientError(.invalidArgument, "already in a call") }
        // A handle that does not exist is refused before anything is shown, gathered or recorded: a typo is not
        // a failed call (the newcomer review saw "calling", "ended: failed" and a history row).
        var lookup = WireFetchDeviceList()
        lookup.handle = handle
        do {
            _ = try await connection.request(.fetchDeviceList(lookup))
        } catch let error as ClientError where error.kind == .refused(.unknownRecipient) {
            throw client.noSuchHandleError(handle)
        }
        guard let id = CallID(client.random.bytes(16)) else { throw ClientError(.protocolFailure, "no call id") }
        guard machine.placeCall(id, to: handle, at: client.currentTime()) == [.sendOffer(id, to: handle)] else {
            throw ClientError(.invalidArgument, "already in a call")
        }
        contexts[id] = Context(direction: .outgoing, peer: handle, audio: audio ?? options.audio, setupStart: .now)
        continuation.yield(.placing(id, to: handle))
        do {
            let media = try await openMedia(on: connection)
            let ephemeral = X25519PrivateKey(random: client.random)
            guard contexts[id] != nil else {
                _ = await media.stop()  // hung up while gathering
                return id
            }
            contexts[id]?.media = media
            contexts[id]?.ephemeral = ephemeral
            let candidates = await media.localCandidates.prefix(16).map(CallCandidate.init)
            let offer = CallOffer(
                codecs: [.pcmu], ephemeralKey: ephemeral.publicKey, profiles: [.aeadAES256GCM, .aes128CMHMACSHA1_80], candidates: Array(candidates))
            contexts[id]?.sentOffer = offer
            contexts[id]?.peerIdentityKey = try client.store.contact(handle)?.trustedIdentityKey
            let sent = try await send(.offer(offer), id, to: handle, devices: nil)
            // A first contact: the key the offer's sessions were started with (the send refuses an untrusted one).
            if contexts[id]?.peerIdentityKey == nil { contexts[id]?.peerIdentityKey = try client.store.contact(handle)?.trustedIdentityKey }
            contexts[id]?.setupStart = .now
            contexts[id]?.trickleTargets = sent.devices
            await perform(machine.offerSent(id, devices: sent.devices, at: client.currentTime()))
            guard contexts[id] != nil else { return id }
            continuation.yield(.ringing(id, to: handle, devices: sent.devices))
            let timeout = options.ringTimeout
            addTask(id) { controller in
                try? await Task.sleep(for: timeout)
                guard !Task.isCancelled else { return }
                await controller.ringTimeoutFired(id)
            }
            watch(id, media)
        } catch {
            await perform(machine.offerFailed(id, at: client.currentTime()))
            throw error
        }
        return id
    }

    /// Answers the ringing incoming call `id` (with `audio`, else the options' audio). Nothing when it no longer rings.
    public func answer(_ id: CallID, audio: AudioOptions? = nil) async {
        if let audio { contexts[id]?.audio = audio }
        await perform(machine.userAnswered(id, at: client.currentTime()))
    }

    /// Declines the ringing incoming call `id`.
    public func decline(_ id: CallID) async {
        await perform(machine.userDeclined(id, at: client.currentTime()))
    }

    /// Hangs up `id` in any state (a ringing incoming call is declined).
    public func hangUp(_ id: CallID) async {
        await perform(machine.userHungUp(id, at: client.currentTime()))
    }

    // MARK: signals

    private func received(_ delivery: WireCallSignalDelivery, on connection: RelayConnection) async {
        forgetOldCalls()
        let signal: ReceivedCallSignal
        do {
            signal = try await client.acceptCallSignal(delivery, on: connection)
        } catch {
            continuation.yield(.warning("dropped a call signal: \(error)"))
            return
        }
        let key = CallSignalSequencer<ReceivedCallSignal>.Key(
            callID: signal.callID.bytes, senderHandle: signal.senderHandle, senderDeviceID: signal.senderDeviceID)
        for ready in sequencer.received(signal, key: key, sequence: signal.sequence, at: client.currentTime()) { await process(ready) }
        scheduleSequencerTick()
    }

    private func process(_ signal: ReceivedCallSignal) async {
        let id = signal.callID, now = client.currentTime()
        let sender = signal.senderHandle, device = signal.senderDeviceID
        if let context = contexts[id], context.direction == .outgoing, sender == context.peer {
            // Only the account the offer went to may answer, decline, report busy or trickle for it.
            let trusted = context.peerIdentityKey ?? (try? client.store.contact(sender)?.trustedIdentityKey)
            guard let trusted, ConstantTime.equals(trusted, signal.senderAccountIdentityKey.rawRepresentation) else {
                continuation.yield(.warning("dropped a call signal from \(sender): their identity key is not the one trusted when the call was placed"))
                return
            }
        }
        switch signal.message.body {
        case .offer(let offer):
            if contexts[id] == nil && !machine.hasEnded(id) {
                contexts[id] = Context(
                    direction: .incoming, peer: sender, audio: options.audio, offer: offer, callerDevice: device,
                    callerIdentityKey: signal.senderAccountIdentityKey, untrustedCaller: signal.untrustedSender, trickleTargets: [device],
                    setupStart: .now)
            }
            await perform(machine.receivedOffer(id, from: sender, device: device, candidates: offer.candidates, expiresAt: signal.expiresAt, at: now))
            // Ignored (glare lost, a replay of an ended call): nothing of it is kept.
            if !machine.activeCalls.contains(id) { contexts[id] = nil }
        case .answer(let answer):
            if let context = contexts[id], context.direction == .outgoing {
                // The answer must pick a codec and an SRTP profile this device offered (review finding 4).
                guard let sent = context.sentOffer, answer.matches(sent) else {
                    continuation.yield(.warning("dropped an answer from \(sender) whose codec or SRTP profile was not offered"))
                    return
                }
            }
            contexts[id]?.answers[device] = (answer, signal.senderAccountIdentityKey)
            await perform(machine.receivedAnswer(id, from: sender, device: device, candidates: answer.candidates, at: now))
        case .ice(let candidates, _):
            await perform(machine.receivedCandidates(id, from: sender, device: device, candidates: candidates, expiresAt: signal.expiresAt, at: now))
            scheduleBufferExpiry()
        case .hangup(let reason):
            await perform(machine.receivedHangup(id, from: sender, device: device, reason: reason, expiresAt: signal.expiresAt, at: now))
            scheduleBufferExpiry()
        case .busy:
            await perform(machine.receivedBusy(id, from: sender, device: device, at: now))
        }
    }

    // MARK: actions

    private func perform(_ actions: [CallStateMachine.Action]) async {
        for action in actions {
            switch action {
            case .sendOffer:
                break  // placeCall sends it
            case .sendAnswer(let id, let peer, let device):
                await sendAnswer(id, to: peer, device: device)
            case .sendHangup(let id, let reason, let peer, let devices):
                guard !devices.isEmpty else { continue }
                do {
                    _ = try await send(.hangup(reason), id, to: peer, devices: devices)
                } catch {
                    continuation.yield(.warning("could not send a hangup to \(peer): \(error)"))
                }
            case .sendBusy(let id, let peer, let device):
                do {
                    _ = try await send(.busy, id, to: peer, devices: [device])
                } catch {
                    continuation.yield(.warning("could not tell \(peer) this device is busy: \(error)"))
                }
            case .ring(let id, let caller, _, let expiresAt):
                continuation.yield(.incoming(id, from: caller, untrustedCaller: contexts[id]?.untrustedCaller ?? false))
                let wait = max(0, expiresAt.timeIntervalSince(client.currentTime()))
                addTask(id) { controller in
                    try? await Task.sleep(for: .milliseconds(Int64(wait * 1000)))
                    guard !Task.isCancelled else { return }
                    await controller.offerExpired(id)
                }
            case .stopRinging(let id):
                continuation.yield(.stoppedRinging(id))
            case .startMedia(let id, _, let device, let candidates):
                await startMedia(id, device: device, candidates: candidates)
            case .addPeerCandidates(let id, let candidates):
                await contexts[id]?.media?.addPeerCandidates(candidates.map(MediaCandidate.init))
            case .connected:
                break  // reported with its path by the media watcher
            case .replaced(let old, let new):
                _ = await tearDown(old)
                continuation.yield(.replaced(old, by: new))
            case .ended(let record):
                let statistics = await tearDown(record.callID)
                sequencer.forget(callID: record.callID.bytes)
                do {
                    try client.recordCall(record)
                } catch {
                    continuation.yield(.warning("could not record the call in the history: \(error)"))
                }
                continuation.yield(.ended(record, statistics))
            }
        }
    }

    /// Callee: opens the media, answers with the preferred profile the offer has (GCM, else AES-CM), and remembers
    /// what key derivation needs. A failure hangs up with `HANGUP_FAILED`.
    private func sendAnswer(_ id: CallID, to caller: String, device: UInt32) async {
        guard let connection, let offer = contexts[id]?.offer else { return }
        do {
            guard offer.codecs.contains(where: { $0.name == CallAudioCodec.pcmu.name && $0.payloadType == 0 }) else {
                throw ClientError(.protocolFailure, "the offer has no codec this device speaks (PCMU)")
            }
            guard let profile = [CallSRTPProfile.aeadAES256GCM, .aes128CMHMACSHA1_80].first(where: offer.profiles.contains) else {
                throw ClientError(.protocolFailure, "the offer has no SRTP profile this device speaks")
            }
            let media = try await openMedia(on: connection)
            guard contexts[id] != nil else {
                _ = await media.stop()
                return
            }
            let ephemeral = X25519PrivateKey(random: client.random)
            contexts[id]?.media = media
            contexts[id]?.ephemeral = ephemeral
            contexts[id]?.profile = profile
            let candidates = await media.localCandidates.prefix(16).map(CallCandidate.init)
            let answer = CallAnswer(codec: .pcmu, ephemeralKey: ephemeral.publicKey, profile: profile, candidates: Array(candidates))
            _ = try await send(.answer(answer), id, to: caller, devices: [device])
            watch(id, media)
        } catch {
            continuation.yield(.warning("could not answer the call: \(error)"))
            await perform(machine.mediaFailed(id, at: client.currentTime()))
        }
    }

    /// Derives the SRTP keys (protocol/calls.md 5), drops the ephemeral key, and starts media towards `candidates`.
    private func startMedia(_ id: CallID, device: UInt32, candidates: [CallCandidate]) async {
        guard let context = contexts[id], let account else { return }
        do {
            let keys: CallKeys
            let isCaller = context.direction == .outgoing
            guard let media = context.media, let ephemeral = context.ephemeral else { throw ClientError(.protocolFailure, "media not open") }
            if isCaller {
                guard let entry = context.answers[device] else { throw ClientError(.protocolFailure, "no answer from that device") }
                let (answer, calleeKey) = entry
                keys = try CallKeys.derive(
                    profile: answer.profile, ownEphemeral: ephemeral, peerEphemeral: answer.ephemeralKey, isCaller: true, callID: id.bytes,
                    callerDeviceID: account.deviceID, calleeDeviceID: device, callerIdentityKey: account.accountIdentityKey,
                    calleeIdentityKey: calleeKey)
                contexts[id]?.trickleTargets = [device]
            } else {
                guard let offer = context.offer, let profile = context.profile, let callerKey = context.callerIdentityKey else {
                    throw ClientError(.protocolFailure, "no offer")
                }
                keys = try CallKeys.derive(
                    profile: profile, ownEphemeral: ephemeral, peerEphemeral: offer.ephemeralKey, isCaller: false, callID: id.bytes,
                    callerDeviceID: device, calleeDeviceID: account.deviceID, callerIdentityKey: callerKey,
                    calleeIdentityKey: account.accountIdentityKey)
            }
            contexts[id]?.ephemeral = nil  // used for this call only (calls.md 5)
            guard let profile = SRTPProfile(rawValue: keys.profile.rawValue) else { throw ClientError(.protocolFailure, "unknown SRTP profile") }
            let own = isCaller ? keys.callerToCallee : keys.calleeToCaller
            let peer = isCaller ? keys.calleeToCaller : keys.callerToCallee
            let srtp = CallSRTPKeys(
                profile: profile, send: SRTPMasterKey(key: own.key, salt: own.salt), receive: SRTPMasterKey(key: peer.key, salt: peer.salt))
            CallKeyLog.append(srtp)  // debug builds, FLITZ_TEST_CALL_KEYLOG only (CallKeyLog.swift)
            try await media.start(keys: srtp, audio: context.audio)
            await media.addPeerCandidates(candidates.map(MediaCandidate.init))
            continuation.yield(.answered(id))
        } catch {
            continuation.yield(.warning("media could not start: \(error)"))
            await perform(machine.mediaFailed(id, at: client.currentTime()))
        }
    }

    /// Stops a call's tasks and media; returns the media's final counters.
    private func tearDown(_ id: CallID) async -> CallStatistics? {
        guard let context = contexts.removeValue(forKey: id) else { return nil }
        for task in context.tasks { task.cancel() }
        return await context.media?.stop()
    }

    // MARK: media

    /// TURN and STUN servers from the relay (`RequestTurnCredentials`, protocol/calls.md 3.5), then
    /// `CallMediaSession.open`. A relay without TURN, or one that refuses, leaves host candidates only.
    private func openMedia(on connection: RelayConnection) async throws -> CallMediaSession {
        var gather = GatherOptions(hostCandidates: !options.relayOnly, gatherTimeout: options.gatherTimeout)
        do {
            if case .turnCredentials(let credentials) = try await connection.request(.requestTurnCredentials(WireRequestTurnCredentials())).body {
                gather.turnServers = credentials.turnUris.compactMap { uri in
                    Self.hostPort(uri, scheme: "turn").map { TURNServer(host: $0.host, port: $0.port, username: credentials.username, password: credentials.password) }
                }
                gather.stunServers = credentials.stunUris.compactMap { Self.hostPort($0, scheme: "stun") }
            }
        } catch let error as ClientError where error.kind != .relayUnreachable {
            continuation.yield(.warning("no TURN credentials from the relay: \(error.message)"))
        }
        if options.relayOnly && gather.turnServers.isEmpty {
            throw ClientError(.invalidArgument, "relay-only mode needs a TURN server, and the relay provides none")
        }
        return try await CallMediaSession.open(options: gather)
    }

    /// `turn:HOST:PORT?transport=udp` / `stun:HOST:PORT` → (HOST, PORT); port 3478 when absent; IPv6 in brackets.
    static func hostPort(_ uri: String, scheme: String) -> (host: String, port: UInt16)? {
        guard uri.lowercased().hasPrefix(scheme + ":") else { return nil }
        var rest = uri.dropFirst(scheme.count + 1)
        if let query = rest.firstIndex(of: "?") {
            guard rest[query...].lowercased().contains("transport=udp") || !rest[query...].lowercased().contains("transport=") else { return nil }
            rest = rest[..<query]
        }
        var host = Substring(rest), port: UInt16 = 3478
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                guard let value = UInt16(after.dropFirst()) else { return nil }
                port = value
            }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            guard let value = UInt16(rest[rest.index(after: colon)...]) else { return nil }
            port = value
        }
        guard !host.isEmpty, port > 0 else { return nil }
        return (String(host), port)
    }

    /// Follows a call's media: trickles later candidates (with `end_of_candidates` last) and reports its events.
    private func watch(_ id: CallID, _ media: CallMediaSession) {
        addTask(id) { controller in
            for await batch in media.trickledCandidates {
                for start in stride(from: 0, to: batch.count, by: 16) {
                    await controller.trickle(id, Array(batch[start..<min(start + 16, batch.count)]).map(CallCandidate.init), end: false)
                }
            }
            guard !Task.isCancelled else { return }
            await controller.trickle(id, [], end: true)
        }
        addTask(id) { controller in
            for await event in media.events {
                await controller.mediaEvent(id, event)
            }
        }
    }

    private func trickle(_ id: CallID, _ candidates: [CallCandidate], end: Bool) async {
        guard let context = contexts[id], !context.trickleTargets.isEmpty else { return }
        do {
            _ = try await send(.ice(candidates: candidates, endOfCandidates: end), id, to: context.peer, devices: context.trickleTargets)
        } catch {
            continuation.yield(.warning("could not send candidates to \(context.peer): \(error)"))
        }
    }

    private func mediaEvent(_ id: CallID, _ event: MediaEvent) async {
        switch event {
        case .connected(let path):
            guard let start = contexts[id]?.setupStart else { return }
            if machine.mediaConnected(id, at: client.currentTime()) == [.connected(id)] {
                continuation.yield(.connected(id, path: path, setupTime: ContinuousClock.now - start))
            }
        case .playbackFinished:
            continuation.yield(.playbackFinished(id))
        case .failed(let reason):
            continuation.yield(.warning("media failed: \(reason)"))
            await perform(machine.mediaFailed(id, at: client.currentTime()))
        }
    }

    // MARK: timers

    private func ringTimeoutFired(_ id: CallID) async { await perform(machine.ringTimeoutFired(id, at: client.currentTime())) }
    private func offerExpired(_ id: CallID) async { await perform(machine.offerExpired(id, at: client.currentTime())) }

    private func addTask(_ id: CallID, _ body: @escaping @Sendable (CallController) async -> Void) {
        let task = Task { [weak self] in
            guard let self else { return }
            await body(self)
        }
        contexts[id]?.tasks.append(task)
    }

    /// Wakes at the sequencer's next deadline (a signal waiting 2 s for a missing one).
    private func scheduleSequencerTick() {
        sequencerTimer?.cancel()
        guard let deadline = sequencer.nextDeadline else { return }
        let wait = max(0, deadline.timeIntervalSince(client.currentTime()))
        sequencerTimer = Task { [weak self] in
            try? await Task.sleep(for: .milliseconds(Int64(wait * 1000) + 1))
            guard !Task.isCancelled, let self else { return }
            await self.sequencerTick()
        }
    }

    private func sequencerTick() async {
        for ready in sequencer.tick(at: client.currentTime()) { await process(ready) }
        scheduleSequencerTick()
    }

    private func scheduleBufferExpiry() {
        bufferTimer?.cancel()
        guard let deadline = machine.nextBufferExpiry else { return }
        let wait = max(0, deadline.timeIntervalSince(client.currentTime()))
        bufferTimer = Task { [weak self] in
            try? await Task.sleep(for: .milliseconds(Int64(wait * 1000) + 1))
            guard !Task.isCancelled, let self else { return }
            await self.expireBuffer()
        }
    }

    private func expireBuffer() async {
        await perform(machine.bufferExpired(at: client.currentTime()))
        scheduleBufferExpiry()
    }

    // MARK: sending

    /// Sends one call signal with this device's next sequence for `id`, after every earlier send finished.
    private func send(_ body: CallMessage.Body, _ id: CallID, to peer: String, devices: [UInt32]?) async throws -> CallSignalSent {
        let previous = sendChain
        let task = Task<Result<CallSignalSent, any Error>, Never> {
            await previous?.value
            guard let connection = self.connection, let account = self.account else {
                return .failure(ClientError(.relayUnreachable, "not connected to the relay"))
            }
            let sequence = self.nextSequence(id)
            do {
                return .success(
                    try await self.client.sendCallSignal(body, callID: id, to: peer, devices: devices, sequence: sequence, on: connection, account: account))
            } catch {
                return .failure(error)
            }
        }
        sendChain = Task { _ = await task.value }
        return try await task.value.get()
    }

    private func nextSequence(_ id: CallID) -> UInt32 {
        let sequence = sequences[id]?.next ?? 1
        sequences[id] = (sequence + 1, client.currentTime())
        return sequence
    }

    /// Forgets what ended calls left behind 180 s after their last activity (review finding 7): the machine's
    /// ended calls, the sequencer's per-sender state and this device's sequences. Calls still going are kept.
    /// Runs on every received signal, so a long-running `listen` holds at most what the last 180 s brought.
    private func forgetOldCalls() {
        let now = client.currentTime(), idle = CallStateMachine.forgetEndedAfter
        let active = Set(machine.activeCalls)
        _ = machine.forgetEnded(at: now)
        sequencer.forgetInactive(at: now, after: idle, keeping: Set(active.map(\.bytes)))
        sequences = sequences.filter { active.contains($0.key) || contexts[$0.key] != nil || now.timeIntervalSince($0.value.usedAt) < idle }
    }
}

extension FlitzClient {
    /// Connects, authenticates, and runs `controller` on the connection while `body` runs (`flitz call`, and
    /// `flitz answer` / `decline` without a running `listen`: a held offer is delivered right after
    /// authentication). When `body` returns or throws, calls still going are hung up (`hangUpAll`) on the
    /// connection; then it closes. Returns what `body` returns.
    /// - Throws: `ClientError` (`.relayUnreachable` when the connection fails or drops), whatever `body` throws.
    public func withCalls<T: Sendable>(_ controller: CallController, _ body: @escaping @Sendable (CallController) async throws -> T) async throws -> T {
        let account = try requireAccount()
        return try await withAuthenticatedConnection(account, callSignals: true) { connection in
            try await withThrowingTaskGroup(of: T?.self) { group in
                group.addTask {
                    try await controller.run(on: connection)
                    return nil
                }
                group.addTask {
                    do {
                        let result = try await body(controller)
                        await controller.hangUpAll()  // on this connection, before it closes
                        return result
                    } catch {
                        await controller.hangUpAll()
                        throw error
                    }
                }
                defer { group.cancelAll() }
                while let result = try await group.next() {
                    if let result { return result }
                }
                throw ClientError(.relayUnreachable, "connection to the relay lost")
            }
        }
    }
}
