import FlitzProtocol
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The client call state machine of protocol/calls.md section 8, as a value: one `mutating func` per event, each
// returning the `CallStateMachine.Action`s its owner (`CallController`) performs. No I/O, no clock: every event
// carries its time. Tested as transcripts in Tests/FlitzClientTests/CallStateMachineTests.swift.

/// Which side of a call this device is.
public enum CallDirection: String, Sendable, Hashable, Codable {
    /// This device offered the call.
    case outgoing
    /// This device was offered the call.
    case incoming
}

/// How a call ended, as the local call history records it (protocol/calls.md 8). The raw values are what the
/// `calls` table stores and `flitz calls --json` prints.
public enum CallOutcome: String, Sendable, Hashable, Codable, CaseIterable {
    /// Answered (by this device or, for the caller, by the callee), then ended by either side.
    case answered
    /// Not answered: the ring timeout passed, the offer expired, or the caller gave up first. Shown to the
    /// caller as "no answer".
    case missed
    /// The callee declined (on any of its devices).
    case declined
    /// Every offered device answered `CALL_BUSY`.
    case busy
    /// Media could not connect or broke (`HANGUP_FAILED`), or the offer could not be sent.
    case failed
    /// Another device of this account answered.
    case answeredElsewhere = "answered_elsewhere"

    /// English for people: "answered", "no answer" (a missed outgoing call), "missed", "declined", "busy",
    /// "failed", "answered elsewhere".
    public func label(direction: CallDirection) -> String {
        switch self {
        case .missed: direction == .outgoing ? "no answer" : "missed"
        case .answeredElsewhere: "answered elsewhere"
        default: rawValue
        }
    }
}

/// A 16-byte call id (protocol/calls.md 2), ordered bytewise as an unsigned big-endian number (the glare rule).
public struct CallID: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Exactly 16 bytes.
    public let bytes: Data

    /// - Returns: nil unless `bytes` is 16 bytes long.
    public init?(_ bytes: Data) {
        guard bytes.count == 16 else { return nil }
        self.bytes = Data(bytes)
    }

    /// Lowercase hex, 32 characters.
    public var description: String { bytes.map { String(format: "%02x", $0) }.joined() }

    public static func < (lhs: CallID, rhs: CallID) -> Bool { lhs.bytes.lexicographicallyPrecedes(rhs.bytes) }
}

/// One call of the local call history (`calls` table, migration `v14-calls`).
public struct CallRecord: Sendable, Hashable {
    public var callID: CallID
    /// The other party's handle.
    public var peer: String
    public var direction: CallDirection
    /// When the offer was placed (outgoing) or arrived (incoming).
    public var startedAt: Date
    /// When the call was answered (keys agreed), nil when it never was.
    public var answeredAt: Date?
    public var endedAt: Date
    public var outcome: CallOutcome

    /// Seconds from the answer to the end; 0 for a call never answered.
    public var duration: TimeInterval { answeredAt.map { max(0, endedAt.timeIntervalSince($0)) } ?? 0 }

    public init(callID: CallID, peer: String, direction: CallDirection, startedAt: Date, answeredAt: Date?, endedAt: Date, outcome: CallOutcome) {
        self.callID = callID
        self.peer = peer
        self.direction = direction
        self.startedAt = startedAt
        self.answeredAt = answeredAt
        self.endedAt = endedAt
        self.outcome = outcome
    }
}

/// The calls of one device (protocol/calls.md 8): ringing (outgoing or incoming), answered (keys agreed, media
/// connecting), connected, ended. Besides each call's own flow it applies the rules across calls: busy while in
/// a call, glare, signals buffered before their offer, and ended calls ignoring every later signal.
///
/// Signals reach it already decrypted, binding-checked and in sequence order (`CallSignalSequencer`); a signal
/// from anyone but the call's peer (handle and, once known, device) is ignored.
public struct CallStateMachine: Sendable {
    /// What the owner must do. Performed in the order returned.
    public enum Action: Sendable, Equatable {
        /// Gather candidates and send a `CALL_OFFER` to every current device of `to`; then report
        /// `offerSent(_:devices:expiresAt:at:)` (or `offerFailed`).
        case sendOffer(CallID, to: String)
        /// Open the media, send a `CALL_ANSWER` to the caller's `device`, derive the keys.
        case sendAnswer(CallID, to: String, device: UInt32)
        /// Send a `CALL_HANGUP` with `reason` to these devices of `to` (not sent when `devices` is empty).
        case sendHangup(CallID, CallHangupReason, to: String, devices: [UInt32])
        /// Send `CALL_BUSY` to `device` of `to`.
        case sendBusy(CallID, to: String, device: UInt32)
        /// Show an incoming call until `expiresAt` (the offer's expiry).
        case ring(CallID, from: String, device: UInt32, expiresAt: Date)
        /// Stop showing an incoming call.
        case stopRinging(CallID)
        /// Keys are agreed with `device` of `peer`: start media towards `candidates` (all known so far).
        case startMedia(CallID, peer: String, device: UInt32, candidates: [CallCandidate])
        /// More candidates of the peer device for running media.
        case addPeerCandidates(CallID, [CallCandidate])
        /// The first authenticated media packet arrived.
        case connected(CallID)
        /// Glare (protocol/calls.md 8): this device's own unanswered offer `CallID` gave way to the incoming
        /// call `by`, which is being answered; the own call leaves no history.
        case replaced(CallID, by: CallID)
        /// The call ended: stop its media and timers, and record it in the call history.
        case ended(CallRecord)
    }

    /// Where one call stands.
    private enum Phase: Sendable {
        /// Outgoing, before the offer went out: the devices are not known yet.
        case offering
        /// Outgoing, offered to `devices`, of which `busy` answered `CALL_BUSY`.
        case ringingOutgoing(devices: [UInt32], busy: Set<UInt32>)
        /// Incoming, ringing until `expiresAt`.
        case ringingIncoming(expiresAt: Date)
        /// Keys agreed with `device`; media connecting. `others`: the other offered devices (outgoing only).
        case answered(device: UInt32, others: [UInt32])
        /// Media connected with `device`.
        case connected(device: UInt32, others: [UInt32])
    }

    private struct Call: Sendable {
        var id: CallID
        var peer: String
        var direction: CallDirection
        /// Incoming: the caller's device.
        var callerDevice: UInt32?
        var phase: Phase
        var startedAt: Date
        var answeredAt: Date?
        /// Peer candidates known before media started (offer or answer, trickled, buffered).
        var candidates: [CallCandidate]

        func record(_ outcome: CallOutcome, at now: Date) -> CallRecord {
            CallRecord(callID: id, peer: peer, direction: direction, startedAt: startedAt, answeredAt: answeredAt, endedAt: now, outcome: outcome)
        }

        /// Outgoing and not answered yet (offering or ringing).
        var isUnanswered: Bool {
            switch phase {
            case .offering, .ringingOutgoing: true
            default: false
            }
        }

        /// The device media goes to, once answered.
        var mediaDevice: UInt32? {
            switch phase {
            case .answered(let device, _), .connected(let device, _): device
            default: nil
            }
        }
    }

    /// Signals that arrived before their offer (protocol/calls.md 8), kept until the offer or `expiresAt`.
    private struct Buffered: Sendable {
        var sender: String
        var device: UInt32
        var candidates: [CallCandidate] = []
        var hangup = false
        var expiresAt: Date
    }

    private var calls: [CallID: Call] = [:]
    private var buffered: [CallID: [Buffered]] = [:]
    /// Calls that ended, with when: later signals for them are ignored until `forgetEnded` drops them, 180 s on.
    private var ended: [CallID: Date] = [:]
    /// Own offers that ended (hung up, timed out, or gave way to an incoming call in glare) while they were being
    /// sent: hung up as soon as `offerSent` names their devices, so they do not ring on.
    private var unsentOffersEnded: [CallID: String] = [:]

    /// Most peer candidates one call keeps (protocol/calls.md 8), those buffered before the offer included; later
    /// ones are dropped. Media sends to every peer candidate until one authenticates, so this bounds what a peer
    /// can make this device send to (review finding 1: 16 per message, but any number of messages).
    public static let maxPeerCandidates = 32

    /// Most call ids with buffered signals at once; signals for further unknown call ids are dropped (a bound on
    /// what peers can make this device hold, like the relay's 64 held signals per device).
    public static let maxBufferedCalls = 64

    /// No calls.
    public init() {}

    /// Whether this device is in a call: any call in any state but ended (it answers new offers busy).
    public var isInCall: Bool { !calls.isEmpty }

    /// Ids of the calls not ended, ascending.
    public var activeCalls: [CallID] { calls.keys.sorted() }

    /// Whether `id` ended on this machine (later signals for it are ignored).
    public func hasEnded(_ id: CallID) -> Bool { ended[id] != nil }

    /// How long an ended call id is remembered (protocol/calls.md 10: twice the longest signal ttl, 90 s, so no copy
    /// of its signals can still come from the relay afterwards).
    public static let forgetEndedAfter: TimeInterval = 180

    /// Forgets calls that ended `forgetEndedAfter` or more before `now` (review finding 7: a long-running device
    /// would otherwise keep every call id it ever saw). Returns no actions.
    public mutating func forgetEnded(at now: Date) -> [Action] {
        ended = ended.filter { now.timeIntervalSince($0.value) < Self.forgetEndedAfter }
        return []
    }

    /// How many ended call ids are remembered (tests).
    var rememberedEndedCalls: Int { ended.count }

    /// The peer handle of a call not ended.
    public func peer(of id: CallID) -> String? { calls[id]?.peer }

    /// The earliest time a buffered signal expires (for `bufferExpired(at:)`), nil when none is buffered.
    public var nextBufferExpiry: Date? { buffered.values.flatMap { $0.map(\.expiresAt) }.min() }

    // MARK: local events

    /// The user calls `peer` with the fresh call id `id`. Nothing when this device is already in a call (the
    /// owner refuses the call first) or `id` is known.
    public mutating func placeCall(_ id: CallID, to peer: String, at now: Date) -> [Action] {
        guard calls.isEmpty, ended[id] == nil else { return [] }
        calls[id] = Call(id: id, peer: peer, direction: .outgoing, phase: .offering, startedAt: now, candidates: [])
        return [.sendOffer(id, to: peer)]
    }

    /// The offer of `id` went out to `devices` (the callee's current devices).
    public mutating func offerSent(_ id: CallID, devices: [UInt32], at now: Date) -> [Action] {
        if let peer = unsentOffersEnded.removeValue(forKey: id) { return [.sendHangup(id, .normal, to: peer, devices: devices)] }
        guard var call = calls[id], case .offering = call.phase else { return [] }
        call.phase = .ringingOutgoing(devices: devices.sorted(), busy: [])
        calls[id] = call
        return []
    }

    /// The offer of `id` could not be sent (the relay refused it, the handle does not exist, no device).
    public mutating func offerFailed(_ id: CallID, at now: Date) -> [Action] {
        unsentOffersEnded[id] = nil
        guard let call = calls[id], case .offering = call.phase else { return [] }
        return end(call, .failed, at: now)
    }

    /// The user answers the incoming call `id`.
    public mutating func userAnswered(_ id: CallID, at now: Date) -> [Action] {
        guard var call = calls[id], case .ringingIncoming = call.phase, let device = call.callerDevice else { return [] }
        return answer(&call, device: device, at: now, actions: [.stopRinging(id)])
    }

    /// The user declines the incoming call `id` (a hangup while it rings is a decline too).
    public mutating func userDeclined(_ id: CallID, at now: Date) -> [Action] {
        guard let call = calls[id], case .ringingIncoming = call.phase, let device = call.callerDevice else { return [] }
        return [.stopRinging(id), .sendHangup(id, .declined, to: call.peer, devices: [device])] + end(call, .declined, at: now)
    }

    /// The user hangs up `id`, in any state. Before an answer the caller's outcome is missed ("no answer").
    public mutating func userHungUp(_ id: CallID, at now: Date) -> [Action] {
        guard let call = calls[id] else { return [] }
        switch call.phase {
        case .offering:
            unsentOffersEnded[id] = call.peer
            return end(call, .missed, at: now)
        case .ringingOutgoing(let devices, let busy):
            return [.sendHangup(id, .normal, to: call.peer, devices: devices.filter { !busy.contains($0) })] + end(call, .missed, at: now)
        case .ringingIncoming:
            return userDeclined(id, at: now)
        case .answered(let device, _), .connected(let device, _):
            return [.sendHangup(id, .normal, to: call.peer, devices: [device])] + end(call, .answered, at: now)
        }
    }

    /// The caller's ring timeout (60 s by default, `--ring-timeout`) passed for `id`.
    public mutating func ringTimeoutFired(_ id: CallID, at now: Date) -> [Action] {
        guard let call = calls[id] else { return [] }
        switch call.phase {
        case .offering:
            unsentOffersEnded[id] = call.peer
            return end(call, .missed, at: now)
        case .ringingOutgoing(let devices, let busy):
            return [.sendHangup(id, .noAnswer, to: call.peer, devices: devices.filter { !busy.contains($0) })] + end(call, .missed, at: now)
        default: return []
        }
    }

    /// The offer of the incoming call `id` expired while it rang: it stops ringing, missed.
    public mutating func offerExpired(_ id: CallID, at now: Date) -> [Action] {
        guard let call = calls[id], case .ringingIncoming = call.phase else { return [] }
        return [.stopRinging(id)] + end(call, .missed, at: now)
    }

    /// The first authenticated media packet of `id` arrived.
    public mutating func mediaConnected(_ id: CallID, at now: Date) -> [Action] {
        guard var call = calls[id], case .answered(let device, let others) = call.phase else { return [] }
        call.phase = .connected(device: device, others: others)
        calls[id] = call
        return [.connected(id)]
    }

    /// Media of `id` could not connect or broke (protocol/calls.md 7.3): `HANGUP_FAILED` to the peer.
    public mutating func mediaFailed(_ id: CallID, at now: Date) -> [Action] {
        guard let call = calls[id], let device = call.mediaDevice else { return [] }
        return [.sendHangup(id, .failed, to: call.peer, devices: [device])] + end(call, .failed, at: now)
    }

    /// Drops buffered signals whose expiry passed.
    public mutating func bufferExpired(at now: Date) -> [Action] {
        for (id, entries) in buffered {
            let kept = entries.filter { $0.expiresAt > now }
            buffered[id] = kept.isEmpty ? nil : kept
        }
        return []
    }

    // MARK: signals

    /// A `CALL_OFFER` for `id` from `device` of `sender`, with the offer's candidates, expiring at `expiresAt`.
    public mutating func receivedOffer(
        _ id: CallID, from sender: String, device: UInt32, candidates: [CallCandidate], expiresAt: Date, at now: Date
    ) -> [Action] {
        if ended[id] != nil { return touchEnded(id, at: now) }
        guard calls[id] == nil else { return [] }
        let early = buffered.removeValue(forKey: id)?.filter { $0.sender == sender && $0.device == device } ?? []
        var call = Call(
            id: id, peer: sender, direction: .incoming, callerDevice: device, phase: .ringingIncoming(expiresAt: expiresAt), startedAt: now,
            candidates: [])
        call.candidates = Self.merged(call.candidates, candidates + early.flatMap(\.candidates)).kept
        // A hangup that came first: the offer never rings (calls.md 8).
        if early.contains(where: \.hangup) {
            return end(call, .missed, at: now)
        }
        // Glare: an unanswered outgoing call to the same handle.
        if let own = calls.values.first(where: { $0.direction == .outgoing && $0.peer == sender && $0.isUnanswered }) {
            if own.id < id {
                ended[id] = now  // ours wins; the peer gives way and answers it; later signals of theirs are moot
                return []
            }
            var actions: [Action] = []
            switch own.phase {
            case .ringingOutgoing(let devices, let busy):
                actions.append(.sendHangup(own.id, .normal, to: own.peer, devices: devices.filter { !busy.contains($0) }))
            default:
                unsentOffersEnded[own.id] = own.peer
            }
            calls[own.id] = nil
            ended[own.id] = now
            actions.append(.replaced(own.id, by: id))
            return answer(&call, device: device, at: now, actions: actions)
        }
        // In a call already: busy, recorded as missed, never rings.
        if !calls.isEmpty {
            ended[id] = now
            return [.sendBusy(id, to: sender, device: device), .ended(call.record(.missed, at: now))]
        }
        calls[id] = call
        return [.ring(id, from: sender, device: device, expiresAt: expiresAt)]
    }

    /// A `CALL_ANSWER` for `id` from `device` of `sender`, with the answer's candidates. The first answer wins;
    /// any later one is told `HANGUP_ANSWERED_ELSEWHERE`.
    public mutating func receivedAnswer(_ id: CallID, from sender: String, device: UInt32, candidates: [CallCandidate], at now: Date) -> [Action] {
        guard var call = calls[id], call.direction == .outgoing, call.peer == sender else { return [] }
        switch call.phase {
        case .ringingOutgoing(let devices, let busy):
            guard devices.contains(device) else { return [] }
            let others = devices.filter { $0 != device && !busy.contains($0) }
            call.phase = .answered(device: device, others: others)
            call.answeredAt = now
            call.candidates = Self.merged([], candidates).kept
            calls[id] = call
            var actions: [Action] = []
            if !others.isEmpty { actions.append(.sendHangup(id, .answeredElsewhere, to: sender, devices: others)) }
            actions.append(.startMedia(id, peer: sender, device: device, candidates: call.candidates))
            return actions
        case .answered(let winner, let others), .connected(let winner, let others):
            guard device != winner, others.contains(device) else { return [] }
            return [.sendHangup(id, .answeredElsewhere, to: sender, devices: [device])]
        default:
            return []
        }
    }

    /// `CALL_ICE` for `id` from `device` of `sender`: candidates, kept or passed to running media.
    public mutating func receivedCandidates(_ id: CallID, from sender: String, device: UInt32, candidates: [CallCandidate], expiresAt: Date, at now: Date) -> [Action] {
        if ended[id] != nil { return touchEnded(id, at: now) }
        guard var call = calls[id] else {
            bufferSignal(id, sender: sender, device: device, expiresAt: expiresAt) { $0.candidates = Self.merged($0.candidates, candidates).kept }
            return []
        }
        guard call.peer == sender, !candidates.isEmpty else { return [] }
        if let media = call.mediaDevice {
            guard media == device else { return [] }
            let (kept, added) = Self.merged(call.candidates, candidates)
            call.candidates = kept
            calls[id] = call
            return added.isEmpty ? [] : [.addPeerCandidates(id, added)]
        }
        // Before the answer: the caller's candidates for this callee device; a caller keeps none from callee devices
        // until one answers (only the winner's count, and its answer carries them).
        guard call.direction == .incoming, call.callerDevice == device else { return [] }
        call.candidates = Self.merged(call.candidates, candidates).kept
        calls[id] = call
        return []
    }

    /// `CALL_HANGUP` for `id` with `reason` from `device` of `sender`.
    public mutating func receivedHangup(_ id: CallID, from sender: String, device: UInt32, reason: CallHangupReason, expiresAt: Date, at now: Date) -> [Action] {
        if ended[id] != nil { return touchEnded(id, at: now) }
        guard let call = calls[id] else {
            bufferSignal(id, sender: sender, device: device, expiresAt: expiresAt) { $0.hangup = true }
            return []
        }
        guard call.peer == sender else { return [] }
        switch call.phase {
        case .offering:
            return []
        case .ringingOutgoing(let devices, let busy):
            // A callee device gave up on the call before answering: a decline (calls.md 8).
            guard devices.contains(device) else { return [] }
            let others = devices.filter { $0 != device && !busy.contains($0) }
            var actions: [Action] = []
            if !others.isEmpty { actions.append(.sendHangup(id, .declinedElsewhere, to: sender, devices: others)) }
            return actions + end(call, reason == .failed ? .failed : .declined, at: now)
        case .ringingIncoming:
            guard call.callerDevice == device else { return [] }
            let outcome: CallOutcome
            switch reason {
            case .answeredElsewhere: outcome = .answeredElsewhere
            case .declinedElsewhere: outcome = .declined
            default: outcome = .missed
            }
            return [.stopRinging(id)] + end(call, outcome, at: now)
        case .answered(let peerDevice, _), .connected(let peerDevice, _):
            guard peerDevice == device else { return [] }
            return end(call, reason == .failed ? .failed : .answered, at: now)
        }
    }

    /// `CALL_BUSY` for `id` from `device` of `sender`: busy once every offered device is.
    public mutating func receivedBusy(_ id: CallID, from sender: String, device: UInt32, at now: Date) -> [Action] {
        guard var call = calls[id], call.peer == sender, case .ringingOutgoing(let devices, var busy) = call.phase, devices.contains(device)
        else { return [] }
        busy.insert(device)
        if busy.count == devices.count { return end(call, .busy, at: now) }
        call.phase = .ringingOutgoing(devices: devices, busy: busy)
        calls[id] = call
        return []
    }

    // MARK: helpers

    /// `known` followed by those of `new` that are usable (`isUsable`), not known yet, and fit within
    /// `maxPeerCandidates`; `added` is what was appended.
    static func merged(_ known: [CallCandidate], _ new: [CallCandidate]) -> (kept: [CallCandidate], added: [CallCandidate]) {
        var kept = known, added: [CallCandidate] = []
        for candidate in new where kept.count < maxPeerCandidates && isUsable(candidate) && !kept.contains(candidate) {
            kept.append(candidate)
            added.append(candidate)
        }
        return (kept, added)
    }

    /// Whether media may send to `candidate`: a unicast IPv4 or IPv6 literal and a port. Refused: unspecified
    /// (0.0.0.0/8, ::), multicast (224.0.0.0/4, ff00::/8), broadcast and reserved (240.0.0.0/4, including
    /// 255.255.255.255), link-local (169.254.0.0/16, fe80::/10), IPv4-mapped IPv6 by the IPv4 rules, and anything
    /// not an address literal. Loopback stays allowed (same-host peers and tests).
    public static func isUsable(_ candidate: CallCandidate) -> Bool {
        guard candidate.port != 0 else { return false }
        if let v4 = ipv4(candidate.address) { return isUsableIPv4(v4) }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, candidate.address, &v6) == 1 else { return false }
        let bytes = withUnsafeBytes(of: &v6) { Array($0) }
        if bytes.allSatisfy({ $0 == 0 }) { return false }  // ::
        if bytes[0] == 0xff { return false }  // multicast
        if bytes[0] == 0xfe && bytes[1] & 0xc0 == 0x80 { return false }  // link-local
        if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {  // ::ffff:a.b.c.d
            return isUsableIPv4(Array(bytes[12..<16]))
        }
        return true
    }

    private static func ipv4(_ address: String) -> [UInt8]? {
        let parts = address.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        let bytes = parts.compactMap { $0.count <= 3 && $0.allSatisfy(\.isASCII) ? UInt8($0) : nil }
        return bytes.count == 4 ? bytes : nil
    }

    private static func isUsableIPv4(_ b: [UInt8]) -> Bool {
        if b[0] == 0 { return false }  // unspecified / "this network"
        if b[0] >= 224 { return false }  // multicast, reserved, broadcast
        if b[0] == 169 && b[1] == 254 { return false }  // link-local
        return true
    }

    private mutating func answer(_ call: inout Call, device: UInt32, at now: Date, actions: [Action]) -> [Action] {
        call.phase = .answered(device: device, others: [])
        call.answeredAt = now
        calls[call.id] = call
        return actions + [
            .sendAnswer(call.id, to: call.peer, device: device),
            .startMedia(call.id, peer: call.peer, device: device, candidates: call.candidates),
        ]
    }

    /// A signal for the ended call `id` arrived: it is ignored, and the call is remembered 180 s from now.
    private mutating func touchEnded(_ id: CallID, at now: Date) -> [Action] {
        ended[id] = max(ended[id] ?? now, now)
        return []
    }

    private mutating func end(_ call: Call, _ outcome: CallOutcome, at now: Date) -> [Action] {
        calls[call.id] = nil
        ended[call.id] = now
        buffered[call.id] = nil
        return [.ended(call.record(outcome, at: now))]
    }

    private mutating func bufferSignal(_ id: CallID, sender: String, device: UInt32, expiresAt: Date, _ change: (inout Buffered) -> Void) {
        guard buffered[id] != nil || buffered.count < Self.maxBufferedCalls else { return }
        var entries = buffered[id] ?? []
        if let index = entries.firstIndex(where: { $0.sender == sender && $0.device == device }) {
            change(&entries[index])
            entries[index].expiresAt = max(entries[index].expiresAt, expiresAt)
        } else {
            var entry = Buffered(sender: sender, device: device, expiresAt: expiresAt)
            change(&entry)
            entries.append(entry)
        }
        buffered[id] = entries
    }
}

