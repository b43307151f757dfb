/// Receive-side counters of one call (protocol/calls.md 6, "Statistics"): packets that authenticated, packets dropped
/// (authentication failure, replay, older than the window), packets lost (RFC 3550 A.3: expected from the extended
/// sequence range minus received) and interarrival jitter (RFC 3550 A.8). A value type with no clock: the caller
/// passes each packet's arrival time.
public struct RTPReceiveStatistics: Sendable, Hashable {
    /// The RTP clock (8 000 Hz for PCMU).
    public let clockRate: Int

    /// Packets that authenticated (`record(sequenceNumber:timestamp:arrival:)` calls).
    public private(set) var received: UInt64 = 0
    /// Packets dropped before playing (`recordDropped()` calls).
    public private(set) var dropped: UInt64 = 0

    private var baseSequence: Int64 = 0
    /// Highest sequence number seen, extended with its wrap count (RFC 3550 A.1 `cycles + max_seq`).
    public private(set) var highestExtendedSequence: Int64 = 0
    private var started = false
    private var previousArrival: Duration = .zero
    private var previousTimestamp: UInt32 = 0
    /// RFC 3550 A.8 `jitter`, in timestamp units.
    private var jitter: Double = 0

    /// - Parameter clockRate: Hz of the RTP timestamps, 8 000 for PCMU.
    public init(clockRate: Int = MuLaw.sampleRate) { self.clockRate = clockRate }

    /// Counts one packet that authenticated.
    /// - Parameters:
    ///   - sequenceNumber, timestamp: from its RTP header.
    ///   - arrival: when it arrived, on any monotonic clock the caller uses for every packet of the call.
    public mutating func record(sequenceNumber: UInt16, timestamp: UInt32, arrival: Duration) {
        received += 1
        guard started else {
            started = true
            baseSequence = Int64(sequenceNumber)
            highestExtendedSequence = Int64(sequenceNumber)
            previousArrival = arrival
            previousTimestamp = timestamp
            return
        }
        // The sequence distance from the highest one, taken modulo 2^16 into -32768...32767 (a later packet moves
        // the highest one, wrapping included; an earlier one is a reordered packet).
        let delta = Int64(Int16(bitPattern: sequenceNumber &- UInt16(truncatingIfNeeded: highestExtendedSequence)))
        if delta > 0 { highestExtendedSequence += delta }

        // RFC 3550 A.8: D(i-1, i) = (R_i - R_{i-1}) - (S_i - S_{i-1}) in timestamp units; J += (|D| - J) / 16.
        let arrivalDelta = (arrival - previousArrival) / .seconds(1) * Double(clockRate)
        let timestampDelta = Double(Int32(bitPattern: timestamp &- previousTimestamp))
        let difference = abs(arrivalDelta - timestampDelta)
        jitter += (difference - jitter) / 16
        previousArrival = arrival
        previousTimestamp = timestamp
    }

    /// Counts one dropped packet (failed authentication, replay, too old, malformed).
    public mutating func recordDropped() { dropped += 1 }

    /// Packets expected from the extended sequence range (0 before the first packet).
    public var expected: UInt64 { started ? UInt64(highestExtendedSequence - baseSequence + 1) : 0 }

    /// Expected minus received, never below 0 (duplicates cannot occur after SRTP's replay check, but late
    /// reordered packets may arrive after the count was taken).
    public var lost: UInt64 { expected > received ? expected - received : 0 }

    /// Interarrival jitter in milliseconds.
    public var jitterMilliseconds: Double { jitter * 1000 / Double(clockRate) }

    /// These counters as a call's statistics, with the sender's count.
    public func callStatistics(packetsSent: UInt64) -> CallStatistics {
        var statistics = CallStatistics()
        statistics.packetsSent = packetsSent
        statistics.packetsReceived = received
        statistics.packetsLost = lost
        statistics.packetsDropped = dropped
        statistics.jitterMs = jitterMilliseconds
        return statistics
    }
}
