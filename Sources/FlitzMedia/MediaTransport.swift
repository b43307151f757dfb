import Foundation
import NIOCore
import NIOPosix

/// A media datagram that arrived on a call's socket, directly or unwrapped from the TURN allocation. Not yet
/// authenticated: only SRTP decides whether it came from the peer (protocol/calls.md 7.2).
struct InboundMedia: Sendable {
    var bytes: [UInt8]
    /// Where it came from: the sender's address (direct) or the TURN peer address (via TURN).
    var source: TransportAddress
    var viaTURN: Bool
}

/// Delivers the socket's datagrams from the event loop into an `AsyncStream`; nothing else runs on the loop.
private final class DatagramForwarder: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    let continuation: AsyncStream<(TransportAddress, [UInt8])>.Continuation

    init(_ continuation: AsyncStream<(TransportAddress, [UInt8])>.Continuation) { self.continuation = continuation }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        guard let source = TransportAddress(envelope.remoteAddress) else { return }
        continuation.yield((source, Array(envelope.data.readableBytesView)))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP port unreachable surfaces as ECONNREFUSED on a UDP socket: a candidate that does not answer. Harmless.
    }
}

/// The network side of one call (protocol/calls.md 7): one UDP socket bound to 0.0.0.0 on a random port, its host,
/// server-reflexive and relayed candidates, STUN transactions (RFC 8489) and one TURN allocation (RFC 8656 over
/// UDP) with its permissions, channel bindings and refreshes. It knows nothing about SRTP: media datagrams come
/// out of `media` unauthenticated and go in through `send`.
actor MediaTransport {
    /// RFC 8445 5.1.2.2 type preferences (protocol/calls.md 7.1).
    static func priority(_ kind: MediaCandidate.Kind, localPreference: UInt32) -> UInt32 {
        let typePreference: UInt32 = switch kind { case .host: 126; case .serverReflexive: 100; case .relayed: 0 }
        return typePreference << 24 | (localPreference & 0xFFFF) << 8 | (256 - 1)
    }

    /// protocol/calls.md 7.3.
    static let permissionRefresh: Duration = .seconds(240)
    static let channelRefresh: Duration = .seconds(540)

    private let channel: any Channel
    nonisolated let localPort: UInt16
    private let options: GatherOptions

    private(set) var candidates: [MediaCandidate] = []
    private var openReturned = false
    private var trickleContinuation: AsyncStream<[MediaCandidate]>.Continuation
    nonisolated let trickled: AsyncStream<[MediaCandidate]>
    private let mediaContinuation: AsyncStream<InboundMedia>.Continuation
    /// Media datagrams in arrival order; finishes at `close()`.
    nonisolated let media: AsyncStream<InboundMedia>

    /// Open transactions by transaction id: the server the request went to (only it may answer) and the waiter.
    private var pending: [[UInt8]: (server: TransportAddress, continuation: CheckedContinuation<(STUNMessage, [UInt8]), any Error>)] = [:]
    private var allocation: TURNAllocation?
    private var turnFailure: MediaError?
    private var tasks: [Task<Void, Never>] = []
    private var closed = false

    private init(channel: any Channel, localPort: UInt16, options: GatherOptions,
                 media: AsyncStream<InboundMedia>, mediaContinuation: AsyncStream<InboundMedia>.Continuation) {
        self.channel = channel
        self.localPort = localPort
        self.options = options
        self.media = media
        self.mediaContinuation = mediaContinuation
        (trickled, trickleContinuation) = AsyncStream.makeStream(of: [MediaCandidate].self)
    }

    /// Binds the socket and gathers candidates for at most `options.gatherTimeout`; what is found later is
    /// trickled. - Throws: `.socket` when no socket can be bound; `.turn` in relay-only mode without an allocation.
    static func open(options: GatherOptions) async throws(MediaError) -> MediaTransport {
        let (datagrams, datagramContinuation) = AsyncStream.makeStream(of: (TransportAddress, [UInt8]).self)
        let channel: any Channel
        do {
            channel = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(DatagramForwarder(datagramContinuation))
                    }
                }
                .bind(host: "0.0.0.0", port: 0).get()
        } catch {
            throw MediaError(.socket, "cannot bind a UDP socket: \(error)")
        }
        guard let port = channel.localAddress?.port else {
            try? await channel.close()
            throw MediaError(.socket, "the UDP socket has no local port")
        }
        let (media, mediaContinuation) = AsyncStream.makeStream(of: InboundMedia.self)
        let transport = MediaTransport(channel: channel, localPort: UInt16(port), options: options, media: media,
                                       mediaContinuation: mediaContinuation)
        await transport.run(datagrams: datagrams)
        do {
            try await transport.gather()
        } catch {
            await transport.close()
            throw error
        }
        return transport
    }

    private func run(datagrams: AsyncStream<(TransportAddress, [UInt8])>) {
        tasks.append(Task { [weak self] in
            for await (source, bytes) in datagrams {
                guard let self else { return }
                await self.received(bytes, from: source)
            }
        })
        tasks.append(Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                guard let self else { return }
                await self.maintain()
            }
        })
    }

    // MARK: Gathering (protocol/calls.md 7.1)

    private func gather() async throws(MediaError) {
        if options.hostCandidates {
            candidates = Self.hostAddresses().enumerated().map { index, host in
                MediaCandidate(kind: .host, address: host.address, port: localPort,
                               priority: Self.priority(.host, localPreference: host.loopback ? 0 : UInt32(65535 - index)))
            }
        }
        let gathering = Task {
            await withTaskGroup(of: Void.self) { group in
                if self.options.hostCandidates {
                    for server in self.options.stunServers {
                        group.addTask { await self.gatherServerReflexive(host: server.host, port: server.port) }
                    }
                }
                if !self.options.turnServers.isEmpty {
                    group.addTask { await self.gatherRelayed() }
                }
            }
            self.gatheringFinished()
        }
        let timeout = options.gatherTimeout
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await gathering.value }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
        openReturned = true
        if !options.hostCandidates && allocation == nil {
            throw turnFailure ?? MediaError(.turn, "relay-only mode: no TURN allocation within \(options.gatherTimeout)")
        }
    }

    private func gatheringFinished() {
        trickleContinuation.finish()
    }

    private func found(_ candidate: MediaCandidate) {
        guard !closed, !candidates.contains(where: { $0.address == candidate.address && $0.port == candidate.port }) else { return }
        candidates.append(candidate)
        candidates.sort { $0.priority > $1.priority }
        if openReturned { trickleContinuation.yield([candidate]) }
    }

    private func gatherServerReflexive(host: String, port: UInt16) async {
        guard let mapped = await reflexiveAddress(host: host, port: port) else { return }
        found(MediaCandidate(kind: .serverReflexive, address: mapped.literal, port: mapped.port,
                             priority: Self.priority(.serverReflexive, localPreference: 65535)))
    }

    /// The XOR-MAPPED-ADDRESS a STUN Binding request to `host`:`port` reports for this socket; nil when the
    /// server does not answer. A server-reflexive address equal to a host candidate is redundant (RFC 8445
    /// 5.1.3) and not added as a candidate.
    func reflexiveAddress(host: String, port: UInt16) async -> TransportAddress? {
        guard let server = Self.resolve(host, port: port),
              let (response, _) = try? await transact(.request(.binding), to: server, schedule: Self.gatherSchedule),
              response.messageClass == .success else { return nil }
        return response.xorAddress(STUNMessage.AttributeType.xorMappedAddress)
    }

    private func gatherRelayed() async {
        for server in options.turnServers {
            do throws(MediaError) {
                let allocation = try await allocate(on: server)
                self.allocation = allocation
                found(MediaCandidate(kind: .relayed, address: allocation.relayed.literal, port: allocation.relayed.port,
                                     priority: Self.priority(.relayed, localPreference: 65535)))
                return
            } catch {
                turnFailure = error
            }
        }
    }

    /// IPv4 addresses of up interfaces, loopback last.
    static func hostAddresses() -> [(address: String, loopback: Bool)] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return [] }
        defer { freeifaddrs(list) }
        var result: [(address: String, loopback: Bool)] = []
        for entry in sequence(first: first, next: { $0.pointee.ifa_next }) {
            let flags = Int32(truncatingIfNeeded: entry.pointee.ifa_flags)
            guard flags & Int32(IFF_UP) != 0, let address = entry.pointee.ifa_addr,
                  address.pointee.sa_family == sa_family_t(AF_INET) else { continue }
            let ip = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
                var sin = pointer.pointee.sin_addr
                return withUnsafeBytes(of: &sin) { Array($0) }
            }
            let literal = TransportAddress(ip: ip, port: 0).literal
            if !result.contains(where: { $0.address == literal }) {
                result.append((literal, flags & Int32(IFF_LOOPBACK) != 0))
            }
        }
        return result.sorted { !$0.loopback && $1.loopback }
    }

    /// An IPv4 literal or a name resolved to IPv4 (the socket is IPv4).
    static func resolve(_ host: String, port: UInt16) -> TransportAddress? {
        if let literal = TransportAddress(literal: host, port: port), literal.isIPv4 { return literal }
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let first = result else { return nil }
        defer { freeaddrinfo(result) }
        guard let address = first.pointee.ai_addr else { return nil }
        let ip = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
            var sin = pointer.pointee.sin_addr
            return withUnsafeBytes(of: &sin) { Array($0) }
        }
        return TransportAddress(ip: ip, port: port)
    }

    // MARK: Sending and receiving

    /// Sends `bytes` directly to `peer`, or through the TURN allocation (ChannelData once the channel is bound).
    /// Through TURN before the channel is bound, the datagram is not sent (the binding takes one round trip).
    /// - Returns: whether the datagram was handed to the socket.
    @discardableResult
    func send(_ bytes: [UInt8], to peer: TransportAddress, viaTURN: Bool) -> Bool {
        guard !closed else { return false }
        if viaTURN {
            guard let allocation, let channelNumber = allocation.channels[peer]?.number else { return false }
            write(ChannelData.encode(channel: channelNumber, data: bytes), to: allocation.server)
        } else {
            write(bytes, to: peer)
        }
        return true
    }

    var hasAllocation: Bool { allocation != nil }

    private func write(_ bytes: [UInt8], to address: TransportAddress) {
        channel.writeAndFlush(AddressedEnvelope(remoteAddress: address.socketAddress, data: ByteBuffer(bytes: bytes)),
                              promise: nil)
    }

    private func received(_ bytes: [UInt8], from source: TransportAddress) {
        guard !closed, !bytes.isEmpty else { return }
        let fromTURN = allocation.map { $0.server == source } ?? false
        if STUNMessage.isSTUN(bytes) {
            guard let message = try? STUNMessage(parsing: bytes) else { return }
            if message.messageClass == .success || message.messageClass == .error {
                // Only the server the request went to may answer it: a response with a guessed or sniffed
                // transaction id from anywhere else is ignored (the transaction keeps waiting).
                guard pending[message.transactionID]?.server == source else { return }
                pending.removeValue(forKey: message.transactionID)?.continuation.resume(returning: (message, bytes))
            } else if fromTURN, message.method == .data, message.messageClass == .indication,
                      let peer = message.xorAddress(STUNMessage.AttributeType.xorPeerAddress),
                      let data = message.attribute(STUNMessage.AttributeType.data) {
                mediaContinuation.yield(InboundMedia(bytes: data, source: peer, viaTURN: true))
            }
        } else if fromTURN, ChannelData.isChannelData(bytes) {
            guard let (number, data) = ChannelData.decode(bytes), let peer = allocation?.peer(ofChannel: number) else { return }
            mediaContinuation.yield(InboundMedia(bytes: data, source: peer, viaTURN: true))
        } else if bytes[0] >= 128 && bytes[0] <= 191 {
            mediaContinuation.yield(InboundMedia(bytes: bytes, source: source, viaTURN: false))
        }
    }

    // MARK: STUN transactions (RFC 8489 6.2.1)

    /// Retransmission waits: RTO 250 ms doubling, 7 transmissions, then a last wait (about 15 s in all).
    static let defaultSchedule: [Duration] = [.milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2),
                                              .seconds(4), .seconds(4), .seconds(4)]
    /// Gathering gives up sooner: the offer does not wait for it anyway.
    static let gatherSchedule: [Duration] = [.milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(4)]
    /// Releasing at stop: two tries.
    static let releaseSchedule: [Duration] = [.milliseconds(200), .milliseconds(400)]

    private func transact(_ request: STUNMessage, integrityKey: [UInt8]? = nil, to server: TransportAddress,
                          schedule: [Duration] = defaultSchedule) async throws(MediaError) -> (STUNMessage, [UInt8]) {
        guard !closed else { throw MediaError(.socket, "the call's socket is closed") }
        let bytes = request.encoded(integrityKey: integrityKey)
        let id = request.transactionID
        do {
            return try await withCheckedThrowingContinuation { continuation in
                pending[id] = (server, continuation)
                write(bytes, to: server)
                tasks.append(Task { [weak self] in
                    for wait in schedule {
                        try? await Task.sleep(for: wait)
                        guard let self, await self.retransmit(id, bytes, to: server) else { return }
                    }
                    await self?.timeOut(id)
                })
            }
        } catch let error as MediaError {
            throw error
        } catch {
            throw MediaError(.stun, "STUN transaction failed")
        }
    }

    /// false once the transaction has its answer.
    private func retransmit(_ id: [UInt8], _ bytes: [UInt8], to server: TransportAddress) -> Bool {
        guard pending[id] != nil else { return false }
        write(bytes, to: server)
        return true
    }

    private func timeOut(_ id: [UInt8]) {
        pending.removeValue(forKey: id)?.continuation.resume(throwing: MediaError(.stun, "no answer from the STUN/TURN server"))
    }

    // MARK: TURN (RFC 8656)

    private func allocate(on server: TURNServer) async throws(MediaError) -> TURNAllocation {
        guard let address = Self.resolve(server.host, port: server.port) else {
            throw MediaError(.turn, "cannot resolve the TURN server \(server.host)")
        }
        let attributes = [STUNMessage.requestedTransportUDP]
        let (challenge, _) = try await transact(.request(.allocate, attributes), to: address, schedule: Self.gatherSchedule)
        guard challenge.messageClass == .error, challenge.errorCode?.code == 401,
              let realm = challenge.string(STUNMessage.AttributeType.realm),
              let nonce = challenge.string(STUNMessage.AttributeType.nonce) else {
            throw MediaError(.turn, "TURN server did not ask for credentials (error \(challenge.errorCode?.code ?? 0))")
        }
        var auth = TURNAuth(username: server.username, password: server.password, realm: realm, nonce: nonce)
        let response = try await authenticated(.allocate, attributes, auth: &auth, server: address, schedule: Self.gatherSchedule)
        guard let relayed = response.xorAddress(STUNMessage.AttributeType.xorRelayedAddress) else {
            throw MediaError(.turn, "TURN Allocate success without XOR-RELAYED-ADDRESS")
        }
        let lifetime = Duration.seconds(Int64(response.lifetime ?? 600))
        return TURNAllocation(server: address, auth: auth, relayed: relayed,
                              mapped: response.xorAddress(STUNMessage.AttributeType.xorMappedAddress),
                              lifetime: lifetime, refreshAt: .now + lifetime / 2)
    }

    /// A request with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY; a 438 Stale Nonce, or a 401 that names another
    /// realm, is retried with the new nonce and realm (and the key recomputed for that realm), twice at most. A 401
    /// for the same realm means the credential is refused. Success responses must carry a valid MESSAGE-INTEGRITY.
    private func authenticated(_ method: STUNMessage.Method, _ attributes: [STUNMessage.Attribute], auth: inout TURNAuth,
                               server: TransportAddress, schedule: [Duration] = defaultSchedule) async throws(MediaError) -> STUNMessage {
        for _ in 0..<3 {
            let request = STUNMessage.request(method, attributes + [
                STUNMessage.stringAttribute(STUNMessage.AttributeType.username, auth.username),
                STUNMessage.stringAttribute(STUNMessage.AttributeType.realm, auth.realm),
                STUNMessage.stringAttribute(STUNMessage.AttributeType.nonce, auth.nonce),
            ])
            let (response, raw) = try await transact(request, integrityKey: auth.key, to: server, schedule: schedule)
            if response.messageClass == .success {
                guard STUNMessage.verifyIntegrity(of: raw, key: auth.key) else {
                    throw MediaError(.turn, "TURN \(method) response failed MESSAGE-INTEGRITY")
                }
                return response
            }
            let code = response.errorCode?.code
            let realm = response.string(STUNMessage.AttributeType.realm) ?? auth.realm
            guard code == 438 || (code == 401 && realm != auth.realm),
                  let nonce = response.string(STUNMessage.AttributeType.nonce) else {
                let error = response.errorCode
                throw MediaError(.turn, "TURN \(method) refused: \(error?.code ?? 0) \(error?.reason ?? "")")
            }
            auth.rechallenge(realm: realm, nonce: nonce)
        }
        throw MediaError(.turn, "TURN \(method): challenged three times")
    }

    /// CreatePermission for `peer`'s IP and ChannelBind for `peer` (RFC 8656 9 and 11), once; later calls for the
    /// same peer return at once. Media through TURN to `peer` flows when this returns.
    func preparePath(to peer: TransportAddress) async throws(MediaError) {
        guard var allocation, !closed else { throw MediaError(.turn, "no TURN allocation") }
        guard peer.isIPv4 else { throw MediaError(.invalidCandidate, "the call's socket is IPv4 only") }
        guard allocation.channels[peer] == nil, !allocation.binding.contains(peer) else { return }
        let number = allocation.nextChannel
        allocation.nextChannel += 1
        allocation.binding.insert(peer)
        self.allocation = allocation
        defer { self.allocation?.binding.remove(peer) }
        if self.allocation?.permissions[peer.ip] == nil {
            try await createPermission(peer.ip)
        }
        try await bindChannel(number, to: peer)
    }

    private func createPermission(_ ip: [UInt8]) async throws(MediaError) {
        guard var auth = allocation?.auth, let server = allocation?.server else { return }
        let peer = TransportAddress(ip: ip, port: 0)
        _ = try await authenticated(.createPermission, [
            STUNMessage.xorAddressAttribute(STUNMessage.AttributeType.xorPeerAddress, peer, transactionID: [])
        ], auth: &auth, server: server)
        allocation?.auth = auth
        allocation?.permissions[ip] = .now
    }

    private func bindChannel(_ number: UInt16, to peer: TransportAddress) async throws(MediaError) {
        guard var auth = allocation?.auth, let server = allocation?.server else { return }
        _ = try await authenticated(.channelBind, [
            STUNMessage.channelNumberAttribute(number),
            STUNMessage.xorAddressAttribute(STUNMessage.AttributeType.xorPeerAddress, peer, transactionID: []),
        ], auth: &auth, server: server)
        allocation?.auth = auth
        allocation?.channels[peer] = (number, .now)
    }

    /// Refreshes at half the allocation's lifetime, permissions every 4 minutes, channels every 9 minutes
    /// (protocol/calls.md 7.3). Failures are retried on the next tick.
    private func maintain() async {
        guard let allocation, !closed else { return }
        let now = ContinuousClock.now
        if now >= allocation.refreshAt {
            var auth = allocation.auth
            if let response = try? await authenticated(.refresh, [
                STUNMessage.uint32Attribute(STUNMessage.AttributeType.lifetime, UInt32(allocation.lifetime.components.seconds))
            ], auth: &auth, server: allocation.server) {
                let lifetime = Duration.seconds(Int64(response.lifetime ?? UInt32(allocation.lifetime.components.seconds)))
                self.allocation?.auth = auth
                self.allocation?.lifetime = lifetime
                self.allocation?.refreshAt = .now + lifetime / 2
            }
        }
        for (ip, installed) in allocation.permissions where now - installed >= Self.permissionRefresh {
            try? await createPermission(ip)
        }
        for (peer, channel) in allocation.channels where now - channel.bound >= Self.channelRefresh {
            try? await bindChannel(channel.number, to: peer)
        }
    }

    /// The TURN XOR-MAPPED-ADDRESS, for tests.
    var allocationMappedAddress: TransportAddress? { allocation?.mapped }

    // MARK: Closing

    /// Releases the TURN allocation (Refresh with LIFETIME 0, RFC 8656 7), closes the socket, finishes the
    /// streams and fails pending transactions. Idempotent.
    func close() async {
        guard !closed else { return }
        if var auth = allocation?.auth, let server = allocation?.server {
            _ = try? await authenticated(.refresh, [STUNMessage.uint32Attribute(STUNMessage.AttributeType.lifetime, 0)],
                                         auth: &auth, server: server, schedule: Self.releaseSchedule)
        }
        closed = true
        allocation = nil
        for task in tasks { task.cancel() }
        tasks = []
        for (_, entry) in pending { entry.continuation.resume(throwing: MediaError(.socket, "the call's socket is closed")) }
        pending = [:]
        trickleContinuation.finish()
        mediaContinuation.finish()
        try? await channel.close()
    }
}

/// The long-term credential of a TURN allocation (RFC 8489 9.2).
struct TURNAuth: Sendable {
    let username: String
    private let password: String
    private(set) var realm: String
    private(set) var nonce: String
    /// MD5(username ":" realm ":" password), for the current realm.
    private(set) var key: [UInt8]

    init(username: String, password: String, realm: String, nonce: String) {
        self.username = username
        self.password = password
        self.realm = realm
        self.nonce = nonce
        key = STUNMessage.longTermKey(username: username, realm: realm, password: password)
    }

    /// Takes the nonce (and realm) of a 438 or 401 challenge; the key follows the realm (RFC 8489 9.2.2).
    mutating func rechallenge(realm: String, nonce: String) {
        self.nonce = nonce
        if realm != self.realm {
            self.realm = realm
            key = STUNMessage.longTermKey(username: username, realm: realm, password: password)
        }
    }
}

/// One TURN allocation and what was installed on it.
struct TURNAllocation: Sendable {
    let server: TransportAddress
    var auth: TURNAuth
    let relayed: TransportAddress
    let mapped: TransportAddress?
    var lifetime: Duration
    var refreshAt: ContinuousClock.Instant
    /// Peer IP → when the permission was last installed.
    var permissions: [[UInt8]: ContinuousClock.Instant] = [:]
    /// Peer → channel number and when it was last bound.
    var channels: [TransportAddress: (number: UInt16, bound: ContinuousClock.Instant)] = [:]
    /// Peers whose channel binding is under way.
    var binding: Set<TransportAddress> = []
    var nextChannel: UInt16 = ChannelData.channelRange.lowerBound

    func peer(ofChannel number: UInt16) -> TransportAddress? { channels.first { $0.value.number == number }?.key }
}
