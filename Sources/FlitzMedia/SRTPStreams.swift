import FlitzCrypto

/// The sending half of a call's media: RTP numbering (`RTPSequencer`) and SRTP protection with the send key
/// (protocol/calls.md 6). One per call.
public struct SRTPSender: Sendable {
    /// The send session (SSRC `sequencer.ssrc`).
    public let session: SRTPSession
    /// The numbering of the next packet.
    public private(set) var sequencer: RTPSequencer
    /// Packets protected so far.
    public private(set) var packetsSent: UInt64 = 0

    /// A sender for `keys.send` with the numbering of `sequencer`.
    /// - Throws: `MediaError.srtp` when libsrtp refuses the key.
    public init(profile: SRTPProfile, key: SRTPMasterKey, sequencer: RTPSequencer) throws(MediaError) {
        session = try SRTPSession(profile: profile, key: key, direction: .send(ssrc: sequencer.ssrc))
        self.sequencer = sequencer
    }

    /// The next SRTP packet carrying `payload` (160 µ-law bytes for PCMU): numbered, marked if first, protected.
    /// Counts it as sent.
    /// - Throws: `MediaError.srtp` when libsrtp refuses (cannot happen for in-order packets of a valid size).
    public mutating func packet(payload: some Collection<UInt8>) throws(MediaError) -> [UInt8] {
        let protected = try session.protect(sequencer.packet(payload: payload))
        packetsSent += 1
        return protected
    }

    /// Lets one packet's time pass without sending it: the RTP timestamp advances, the sequence number does not
    /// (RFC 3550 5.1, as in discontinuous transmission), so the receiver counts nothing as lost.
    public mutating func skipPacket() {
        sequencer.skipPacket()
    }
}

/// The receiving half of a call's media: SRTP unprotection with the receive key, RTP parsing, and the receive
/// statistics (protocol/calls.md 6). A packet that fails authentication, is a replay, is older than the window or is
/// not RTP is counted as dropped and never returned.
public struct SRTPReceiver: Sendable {
    /// The receive session (any inbound SSRC).
    public let session: SRTPSession
    /// Counters so far.
    public private(set) var statistics: RTPReceiveStatistics

    /// A receiver for `keys.receive`.
    /// - Throws: `MediaError.srtp` when libsrtp refuses the key.
    public init(profile: SRTPProfile, key: SRTPMasterKey, clockRate: Int = MuLaw.sampleRate) throws(MediaError) {
        session = try SRTPSession(profile: profile, key: key, direction: .receive)
        statistics = RTPReceiveStatistics(clockRate: clockRate)
    }

    /// Unprotects and parses one datagram.
    /// - Parameter arrival: when it arrived, on the monotonic clock used for every packet of this call (jitter).
    /// - Returns: the RTP packet, or why it was dropped (and counted).
    public mutating func receive(_ datagram: [UInt8], arrival: Duration) -> Result<RTPPacket, SRTPDropReason> {
        let rtp: [UInt8]
        do {
            rtp = try session.unprotect(datagram)
        } catch {
            statistics.recordDropped()
            return .failure(error)
        }
        guard let packet = try? RTPPacket(parsing: rtp) else {
            statistics.recordDropped()
            return .failure(.malformed)
        }
        statistics.record(sequenceNumber: packet.header.sequenceNumber, timestamp: packet.header.timestamp, arrival: arrival)
        return .success(packet)
    }
}

extension CallSRTPKeys {
    /// The sender and receiver of these keys, numbering with `sequencer` (a random one per call in production:
    /// `RTPSequencer(random: SystemRandom())`).
    /// - Throws: `MediaError.srtp` when libsrtp refuses a key.
    public func makeStreams(sequencer: RTPSequencer) throws(MediaError) -> (sender: SRTPSender, receiver: SRTPReceiver) {
        (try SRTPSender(profile: profile, key: send, sequencer: sequencer),
         try SRTPReceiver(profile: profile, key: receive))
    }
}
