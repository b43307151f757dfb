import FlitzCrypto
import Foundation

// The public API of calls media (issue 8) and its implementation; the network side is MediaTransport.swift,
// the SRTP, RTP and audio side SRTPSession.swift, SRTPStreams.swift, RTP.swift and WAV.swift.

/// SRTP protection profile (protocol/calls.md 5 and 6; RFC 7714, RFC 3711).
public enum SRTPProfile: UInt8, Sendable, CaseIterable {
    /// AEAD_AES_256_GCM: 32-byte master key, 12-byte master salt, 16-byte tag. Preferred.
    case aeadAES256GCM = 1
    /// AES_CM_128_HMAC_SHA1_80: 16-byte master key, 14-byte master salt, 10-byte tag. Fallback.
    case aes128CMHMACSHA1_80 = 2

    /// Master key length in bytes (32 or 16).
    public var keyLength: Int { self == .aeadAES256GCM ? 32 : 16 }
    /// Master salt length in bytes (12 or 14).
    public var saltLength: Int { self == .aeadAES256GCM ? 12 : 14 }
}

/// One direction's SRTP master key and master salt (protocol/calls.md 5).
public struct SRTPMasterKey: Sendable {
    /// `profile.keyLength` bytes.
    public let key: SecretBytes
    /// `profile.saltLength` bytes.
    public let salt: SecretBytes

    /// - Parameters: key and salt of the lengths `SRTPProfile` gives.
    public init(key: SecretBytes, salt: SecretBytes) {
        self.key = key
        self.salt = salt
    }
}

/// The keys of one call as one side uses them: it protects with `send` and unprotects with `receive`.
public struct CallSRTPKeys: Sendable {
    public let profile: SRTPProfile
    public let send: SRTPMasterKey
    public let receive: SRTPMasterKey

    public init(profile: SRTPProfile, send: SRTPMasterKey, receive: SRTPMasterKey) {
        self.profile = profile
        self.send = send
        self.receive = receive
    }
}

/// A UDP ICE candidate (protocol/calls.md 7.1).
public struct MediaCandidate: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: UInt8, Sendable { case host = 1, serverReflexive = 2, relayed = 3 }
    public let kind: Kind
    /// An IPv4 or IPv6 literal.
    public let address: String
    /// 1 to 65535.
    public let port: UInt16
    /// RFC 8445 5.1.2 priority; higher is tried first.
    public let priority: UInt32

    public init(kind: Kind, address: String, port: UInt16, priority: UInt32) {
        self.kind = kind
        self.address = address
        self.port = port
        self.priority = priority
    }

    public var description: String { "\(kind) \(address):\(port)" }
}

/// A TURN server and the long-term credential the relay provisioned (protocol/calls.md 3.5 and 7.1).
public struct TURNServer: Sendable {
    /// Host name or IP literal of the TURN server, and its UDP port (3478 by default).
    public let host: String
    public let port: UInt16
    /// coturn REST-API username "EXPIRY:ID" and its 28-character base64 password.
    public let username: String
    public let password: String

    public init(host: String, port: UInt16, username: String, password: String) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
    }
}

/// How a call gathers its candidates (protocol/calls.md 7.1).
public struct GatherOptions: Sendable {
    /// STUN servers as (host, UDP port).
    public var stunServers: [(host: String, port: UInt16)]
    public var turnServers: [TURNServer]
    /// false: relay-only mode: only the relayed candidate is offered, and media goes only through TURN.
    public var hostCandidates: Bool
    /// How long to wait for server-reflexive and relayed candidates before the offer or answer goes out
    /// (3 s in protocol/calls.md 10); later ones arrive on `CallMediaSession.trickledCandidates`.
    public var gatherTimeout: Duration

    public init(stunServers: [(host: String, port: UInt16)] = [], turnServers: [TURNServer] = [],
                hostCandidates: Bool = true, gatherTimeout: Duration = .seconds(3)) {
        self.stunServers = stunServers
        self.turnServers = turnServers
        self.hostCandidates = hostCandidates
        self.gatherTimeout = gatherTimeout
    }
}

/// What a call plays and records (protocol/calls.md 6).
public struct AudioOptions: Sendable {
    /// A 16-bit PCM mono 8 000 Hz WAV file to send, from the first authenticated packet on (silence before);
    /// nil sends µ-law silence. Other formats are refused by
    /// `CallMediaSession.start` with `MediaError.unsupportedAudio` naming the ffmpeg command that converts them.
    public var playFile: URL?
    /// Where received audio goes: a 16-bit PCM mono 8 000 Hz WAV, laid out by RTP timestamp (gaps are silence),
    /// complete (header sizes written) when `stop()` returns.
    public var recordFile: URL?

    public init(playFile: URL? = nil, recordFile: URL? = nil) {
        self.playFile = playFile
        self.recordFile = recordFile
    }
}

/// How media reached the peer: the locked path (protocol/calls.md 7.2).
public struct MediaPath: Sendable, Equatable, CustomStringConvertible {
    /// The peer's address media is sent to now.
    public let peerAddress: String
    public let peerPort: UInt16
    /// true: through this side's TURN allocation.
    public let viaTURN: Bool

    public init(peerAddress: String, peerPort: UInt16, viaTURN: Bool) {
        self.peerAddress = peerAddress
        self.peerPort = peerPort
        self.viaTURN = viaTURN
    }

    public var description: String { "\(viaTURN ? "via TURN to " : "direct to ")\(peerAddress):\(peerPort)" }
}

/// Per-call counters (protocol/calls.md 6, "Statistics").
public struct CallStatistics: Sendable, Equatable {
    public var packetsSent: UInt64 = 0
    /// Packets that authenticated and were played (or recorded).
    public var packetsReceived: UInt64 = 0
    /// Expected from the extended sequence range minus received.
    public var packetsLost: UInt64 = 0
    /// Failed authentication, replays and packets older than the replay window.
    public var packetsDropped: UInt64 = 0
    /// RFC 3550 A.8 interarrival jitter, milliseconds.
    public var jitterMs: Double = 0

    public init() {}
}

/// Something that happened to the media of a call.
public enum MediaEvent: Sendable, Equatable {
    /// The first packet authenticated: media is connected on `path`.
    case connected(MediaPath)
    /// The play file has been sent to its end (silence follows).
    case playbackFinished
    /// Media could not connect within 15 s of `start`, or stopped for 10 s (protocol/calls.md 7.3); or, as the last
    /// event before the stream finishes at `stop()`, the recording could not be completed (its file is incomplete).
    case failed(String)
}

/// Errors of FlitzMedia.
public struct MediaError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        case unsupportedAudio, unreadableAudio, socket, stun, turn, srtp, invalidCandidate
    }
    public let code: Code
    /// Human-readable English; never contains keys or packet contents.
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// The media of one call: one UDP socket, its candidates, one SRTP send and one receive session, the audio
/// pump (20 ms PCMU packets) and the recorder (protocol/calls.md 6 and 7).
///
/// Before the first authenticated packet every 5th 20 ms tick (every 100 ms) sends one packet to every peer
/// candidate: directly from the socket (unless relay-only) and, with a TURN allocation, also through it; the ticks in
/// between send nothing (their RTP timestamps are skipped). At most `maximumPeers` peer addresses are kept. The first
/// packet that SRTP authenticates locks the path (its source, direct or via TURN), and from then on every tick sends
/// one packet to it; a packet that does not authenticate never moves it (calls.md 7.2).
public final class CallMediaSession: Sendable {
    /// The network side (internal for tests).
    let transport: MediaTransport
    private let core: MediaCall
    private let eventStream: AsyncStream<MediaEvent>

    private init(transport: MediaTransport, relayOnly: Bool) {
        self.transport = transport
        let (events, continuation) = AsyncStream.makeStream(of: MediaEvent.self)
        eventStream = events
        core = MediaCall(transport: transport, relayOnly: relayOnly, events: continuation)
    }

    /// Binds the socket and gathers candidates for at most `options.gatherTimeout`.
    /// - Throws: `MediaError` `.socket` when no socket can be bound; `.turn` when relay-only mode has no allocation.
    public static func open(options: GatherOptions) async throws(MediaError) -> CallMediaSession {
        let transport = try await MediaTransport.open(options: options)
        let session = CallMediaSession(transport: transport, relayOnly: !options.hostCandidates)
        await session.core.run()
        return session
    }

    /// Candidates known now (host, server-reflexive, relayed), highest priority first.
    public var localCandidates: [MediaCandidate] {
        get async { await transport.candidates }
    }

    /// Candidates found after `open` returned; finishes when gathering is complete (end of candidates).
    public var trickledCandidates: AsyncStream<[MediaCandidate]> { transport.trickled }

    /// Connection, playback and failure events, in order; finishes after `stop()`.
    public var events: AsyncStream<MediaEvent> { eventStream }

    /// Starts sending to every known peer candidate and receiving (protocol/calls.md 7.2).
    /// - Throws: `MediaError.unsupportedAudio` / `.unreadableAudio` for the play file, `.srtp` when libsrtp
    ///   refuses the keys.
    public func start(keys: CallSRTPKeys, audio: AudioOptions) async throws(MediaError) {
        let playout = try audio.playFile.map { url throws(MediaError) in PCMUPlayout(audio: try WAVAudio(contentsOf: url)) }
        let recorder = try audio.recordFile.map { url throws(MediaError) in try WAVRecorder(url: url) }
        let streams = try keys.makeStreams(sequencer: RTPSequencer(random: SystemRandom()))
        await core.start(sender: streams.sender, receiver: streams.receiver, playout: playout, recorder: recorder)
    }

    /// The most peer addresses one call sends to (protocol/calls.md 7.2); later ones are ignored.
    public static let maximumPeers = 32

    /// Adds candidates of the peer (from the answer, the offer or `CallIceCandidates`); ignored once locked.
    /// Ignored too: addresses that are not IPv4 literals (the call's socket is IPv4), port 0, and addresses no peer
    /// can have: 0.0.0.0/8 (unspecified), 224.0.0.0/4 (multicast), 240.0.0.0/4 (reserved, with the broadcast
    /// address 255.255.255.255) and 169.254.0.0/16 (link-local). Loopback is allowed (a peer on the same host).
    /// Once `maximumPeers` distinct addresses are known, further ones are ignored (protocol/calls.md 7.2).
    public func addPeerCandidates(_ candidates: [MediaCandidate]) async {
        await core.addPeers(candidates.compactMap { candidate in
            TransportAddress(literal: candidate.address, port: candidate.port).flatMap { $0.isUsablePeer ? $0 : nil }
        })
    }

    /// Counters so far.
    public func statistics() async -> CallStatistics { await core.statistics }

    /// Stops sending, completes the recording, releases the TURN allocation and the socket; returns the final
    /// counters. Idempotent. When the recording cannot be completed (a write failed), `events` gets `.failed` naming
    /// the file and the error before it finishes.
    public func stop() async -> CallStatistics {
        await core.stop()
        return await core.statistics
    }

    // MARK: For tests and measurements (internal)

    /// Time from the first media packet handed to the socket to the first authenticated packet received (zero
    /// when the peer's packet authenticated first); nil before connecting.
    var setupTime: Duration? { get async { await core.setupTime } }

    /// Every authenticated packet, in arrival order (tests compare audio with it).
    var authenticatedPackets: AsyncStream<RTPPacket> { get async { await core.packetStream() } }

    /// The local port of the call's socket.
    var localPort: UInt16 { transport.localPort }

    /// The locked path; nil before the first authenticated packet.
    var currentPath: MediaPath? { get async { await core.currentPath } }

    /// The peer addresses media is sent to before locking, in the order they were added.
    var peerAddresses: [TransportAddress] { get async { await core.peerAddresses } }
}

extension TransportAddress {
    /// Whether a peer candidate may have this address (`CallMediaSession.addPeerCandidates`): IPv4, a non-zero port,
    /// not unspecified (0/8), multicast (224/4), reserved or broadcast (240/4) or link-local (169.254/16).
    var isUsablePeer: Bool {
        guard isIPv4, port != 0 else { return false }
        switch (ip[0], ip[1]) {
        case (0, _), (224..., _), (169, 254): return false
        default: return true
        }
    }
}

/// The state of one call's media, serialised by the actor: SRTP streams, peers, the locked path, the 20 ms pump,
/// the recorder and the timeouts of protocol/calls.md 7.3.
private actor MediaCall {
    static let packetInterval: Duration = .milliseconds(20)
    /// Before locking, a packet goes to the peer candidates on every 5th tick only (every 100 ms, calls.md 7.2).
    static let checkEveryTicks = 5
    static let connectTimeout: Duration = .seconds(15)
    static let silenceTimeout: Duration = .seconds(10)

    private let transport: MediaTransport
    private let relayOnly: Bool
    private let events: AsyncStream<MediaEvent>.Continuation
    private let clock = ContinuousClock()
    private let epoch = ContinuousClock.now

    private var sender: SRTPSender?
    private var receiver: SRTPReceiver?
    private var playout: PCMUPlayout?
    private var recorder: WAVRecorder?
    private var peers: [TransportAddress] = []
    private var locked: (address: TransportAddress, viaTURN: Bool)?
    /// Ticks of the pump so far.
    private var ticks = 0
    private var startedAt: ContinuousClock.Instant?
    private var firstSentAt: ContinuousClock.Instant?
    private var connectedAt: ContinuousClock.Instant?
    private var lastAuthenticatedAt: ContinuousClock.Instant?
    private var failed = false
    private var stopped = false
    private var tasks: [Task<Void, Never>] = []
    private var packetContinuations: [AsyncStream<RTPPacket>.Continuation] = []

    init(transport: MediaTransport, relayOnly: Bool, events: AsyncStream<MediaEvent>.Continuation) {
        self.transport = transport
        self.relayOnly = relayOnly
        self.events = events
    }

    /// Starts reading the socket's media (packets before `start` have no keys and are dropped uncounted).
    func run() {
        let media = transport.media
        tasks.append(Task { [weak self] in
            for await datagram in media {
                guard let self else { return }
                await self.received(datagram)
            }
        })
    }

    func start(sender: SRTPSender, receiver: SRTPReceiver, playout: PCMUPlayout?, recorder: WAVRecorder?) {
        guard !stopped, self.sender == nil else { return }
        self.sender = sender
        self.receiver = receiver
        self.playout = playout
        self.recorder = recorder
        startedAt = clock.now
        tasks.append(Task { [weak self] in
            var deadline = ContinuousClock.now
            while !Task.isCancelled {
                guard let self, await self.tick() else { return }
                deadline += Self.packetInterval
                try? await Task.sleep(until: deadline, clock: .continuous)
            }
        })
    }

    func addPeers(_ addresses: [TransportAddress]) {
        guard locked == nil, !stopped else { return }
        for address in addresses where !peers.contains(address) && peers.count < CallMediaSession.maximumPeers {
            peers.append(address)
            prepareTURNPath(to: address)
        }
    }

    /// Permission and channel binding on this side's allocation, so media can go through it to `peer`.
    private func prepareTURNPath(to peer: TransportAddress) {
        let transport = transport
        tasks.append(Task {
            guard await transport.hasAllocation else { return }
            try? await transport.preparePath(to: peer)
        })
    }

    /// One 20 ms step: the timeouts, then one packet to the locked path, or (every 5th tick before locking) to every
    /// candidate on each route; a tick that sends nothing only advances the RTP timestamp. false: stop pumping.
    private func tick() async -> Bool {
        guard !stopped, var sender else { return false }
        let now = clock.now
        if !failed, let startedAt {
            if let lastAuthenticatedAt {
                if now - lastAuthenticatedAt >= Self.silenceTimeout { fail("no media for 10 s") }
            } else if now - startedAt >= Self.connectTimeout {
                fail("media did not connect within 15 s")
            }
        }
        var payload = MuLaw.silencePayload
        // The play file starts once this side has heard the peer: before that the path may not carry it (a TURN
        // channel still binding), and the first words of a call must not be lost to connectivity checks.
        if playout != nil, locked != nil {
            if let next = playout?.nextPayload() {
                payload = next
            } else {
                playout = nil
                events.yield(.playbackFinished)
            }
        }
        let tick = ticks
        ticks += 1
        if locked == nil && tick % Self.checkEveryTicks != 0 {
            sender.skipPacket()
            self.sender = sender
            return true
        }
        let packet: [UInt8]
        do {
            packet = try sender.packet(payload: payload)
        } catch {
            fail("SRTP protect failed")
            return false
        }
        self.sender = sender
        var sent = false
        if let locked {
            sent = await transport.send(packet, to: locked.address, viaTURN: locked.viaTURN)
        } else {
            for peer in peers {
                if !relayOnly, await transport.send(packet, to: peer, viaTURN: false) { sent = true }
                if await transport.send(packet, to: peer, viaTURN: true) { sent = true }
            }
        }
        if sent && firstSentAt == nil { firstSentAt = now }
        return true
    }

    private func fail(_ reason: String) {
        failed = true
        events.yield(.failed(reason))
    }

    private func received(_ datagram: InboundMedia) {
        guard !stopped, var receiver else { return }
        if relayOnly && !datagram.viaTURN { return }
        let now = clock.now
        let result = receiver.receive(datagram.bytes, arrival: now - epoch)
        self.receiver = receiver
        guard case .success(let packet) = result else { return }
        lastAuthenticatedAt = now
        if locked == nil {
            locked = (datagram.source, datagram.viaTURN)
            connectedAt = now
            if datagram.viaTURN { prepareTURNPath(to: datagram.source) }
            events.yield(.connected(MediaPath(peerAddress: datagram.source.literal, peerPort: datagram.source.port,
                                              viaTURN: datagram.viaTURN)))
        }
        recorder?.record(payload: packet.payload, timestamp: packet.header.timestamp)
        for continuation in packetContinuations { continuation.yield(packet) }
    }

    var statistics: CallStatistics {
        guard let receiver else {
            var statistics = CallStatistics()
            statistics.packetsSent = sender?.packetsSent ?? 0
            return statistics
        }
        return receiver.statistics.callStatistics(packetsSent: sender?.packetsSent ?? 0)
    }

    var peerAddresses: [TransportAddress] { peers }

    var currentPath: MediaPath? {
        locked.map { MediaPath(peerAddress: $0.address.literal, peerPort: $0.address.port, viaTURN: $0.viaTURN) }
    }

    var setupTime: Duration? {
        guard let connectedAt else { return nil }
        // The peer's first packet can authenticate before this side has sent anything: no wait on this side.
        guard let firstSentAt, firstSentAt < connectedAt else { return .zero }
        return connectedAt - firstSentAt
    }

    func packetStream() -> AsyncStream<RTPPacket> {
        let (stream, continuation) = AsyncStream.makeStream(of: RTPPacket.self)
        packetContinuations.append(continuation)
        return stream
    }

    func stop() async {
        guard !stopped else { return }
        stopped = true
        for task in tasks { task.cancel() }
        tasks = []
        do {
            try recorder?.finish()
        } catch {
            events.yield(.failed("the recording is incomplete: \(error.message)"))
        }
        await transport.close()
        for continuation in packetContinuations { continuation.finish() }
        packetContinuations = []
        events.finish()
    }
}
