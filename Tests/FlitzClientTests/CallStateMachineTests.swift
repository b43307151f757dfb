import FlitzProtocol
import Foundation
import Testing

@testable import FlitzClient

/// Transcripts of the call state machine (protocol/calls.md 8): event, expected actions, event, ...
@Suite struct CallStateMachineTests {
    typealias Action = CallStateMachine.Action

    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)
    static func at(_ seconds: TimeInterval) -> Date { t0.addingTimeInterval(seconds) }
    static func id(_ byte: UInt8) -> CallID { CallID(Data(repeating: byte, count: 16))! }
    static let host = CallCandidate(kind: .host, address: "192.0.2.1", port: 4000, priority: 2_130_706_431)
    static let relayed = CallCandidate(kind: .relayed, address: "198.51.100.7", port: 50_000, priority: 16_777_215)
    static let expiry = at(75)

    static func record(
        _ id: CallID, _ peer: String, _ direction: CallDirection, started: TimeInterval, answered: TimeInterval? = nil, ended: TimeInterval,
        _ outcome: CallOutcome
    ) -> Action {
        .ended(CallRecord(callID: id, peer: peer, direction: direction, startedAt: at(started), answeredAt: answered.map(at), endedAt: at(ended), outcome: outcome))
    }

    // MARK: caller

    @Test func callerAnsweredThenHangsUp() {
        var m = CallStateMachine()
        let c = Self.id(1)
        #expect(m.placeCall(c, to: "bob", at: Self.at(0)) == [.sendOffer(c, to: "bob")])
        #expect(m.offerSent(c, devices: [1], at: Self.at(1)) == [])
        #expect(m.receivedAnswer(c, from: "bob", device: 1, candidates: [Self.host], at: Self.at(3))
            == [.startMedia(c, peer: "bob", device: 1, candidates: [Self.host])])
        #expect(m.receivedCandidates(c, from: "bob", device: 1, candidates: [Self.relayed], expiresAt: Self.expiry, at: Self.at(4))
            == [.addPeerCandidates(c, [Self.relayed])])
        #expect(m.mediaConnected(c, at: Self.at(4)) == [.connected(c)])
        #expect(m.userHungUp(c, at: Self.at(13)) == [
            .sendHangup(c, .normal, to: "bob", devices: [1]), Self.record(c, "bob", .outgoing, started: 0, answered: 3, ended: 13, .answered),
        ])
        #expect(!m.isInCall)
    }

    @Test func missedCallRingTimeoutGivesNoAnswerAndMissed() {
        var caller = CallStateMachine(), callee = CallStateMachine()
        let c = Self.id(2)
        _ = caller.placeCall(c, to: "bob", at: Self.at(0))
        _ = caller.offerSent(c, devices: [1, 2], at: Self.at(1))
        #expect(callee.receivedOffer(c, from: "alice", device: 7, candidates: [], expiresAt: Self.expiry, at: Self.at(1))
            == [.ring(c, from: "alice", device: 7, expiresAt: Self.expiry)])
        #expect(caller.ringTimeoutFired(c, at: Self.at(60)) == [
            .sendHangup(c, .noAnswer, to: "bob", devices: [1, 2]), Self.record(c, "bob", .outgoing, started: 0, ended: 60, .missed),
        ])
        #expect(callee.receivedHangup(c, from: "alice", device: 7, reason: .noAnswer, expiresAt: Self.expiry, at: Self.at(60))
            == [.stopRinging(c), Self.record(c, "alice", .incoming, started: 1, ended: 60, .missed)])
        #expect(CallOutcome.missed.label(direction: .outgoing) == "no answer")
        #expect(CallOutcome.missed.label(direction: .incoming) == "missed")
        // Once ended, a late timer does nothing.
        #expect(caller.ringTimeoutFired(c, at: Self.at(61)) == [])
    }

    @Test func calleeStopsRingingAtTheOffersExpiry() {
        var m = CallStateMachine()
        let c = Self.id(3)
        _ = m.receivedOffer(c, from: "alice", device: 7, candidates: [], expiresAt: Self.expiry, at: Self.at(0))
        #expect(m.offerExpired(c, at: Self.expiry) == [.stopRinging(c), Self.record(c, "alice", .incoming, started: 0, ended: 75, .missed)])
    }

    @Test func declineEndsTheCallerAndTheOtherDevices() {
        var caller = CallStateMachine(), phone = CallStateMachine(), laptop = CallStateMachine()
        let c = Self.id(4)
        _ = caller.placeCall(c, to: "bob", at: Self.at(0))
        _ = caller.offerSent(c, devices: [1, 2], at: Self.at(0))
        _ = phone.receivedOffer(c, from: "alice", device: 7, candidates: [], expiresAt: Self.expiry, at: Self.at(1))
        _ = laptop.receivedOffer(c, from: "alice", device: 7, candidates: [], expiresAt: Self.expiry, at: Self.at(1))
        #expect(phone.userDeclined(c, at: Self.at(5)) == [
            .stopRinging(c), .sendHangup(c, .declined, to: "alice", devices: [7]), Self.record(c, "alice", .incoming, started: 1, ended: 5, .declined),
        ])
        #expect(caller.receivedHangup(c, from: "bob", device: 1, reason: .declined, expiresAt: Self.expiry, at: Self.at(5)) == [
            .sendHangup(c, .declinedElsewhere, to: "bob", devices: [2]), Self.record(c, "bob", .outgoing, started: 0, ended: 5, .declined),
        ])
        #expect(laptop.receivedHangup(c, from: "alice", device: 7, reason: .declinedElsewhere, expiresAt: Self.expiry, at: Self.at(5))
            == [.stopRinging(c), Self.record(c, "alice", .incoming, started: 1, ended: 5, .declined)])
    }

    @Test func busyFromEveryOfferedDeviceEndsBusy() {
        var caller = CallStateMachine(), callee = CallStateMachine()
        let c = Self.id(5), other = Self.id(6)
        // The callee is already in a call (ringing counts).
        _ = callee.receivedOffer(other, from: "carol", device: 3, candidates: [], expiresAt: Self.expiry, at: Self.at(0))
        _ = caller.placeCall(c, to: "bob", at: Self.at(1))
        _ = caller.offerSent(c, devices: [1, 2], at: Self.at(1))
        #expect(callee.receivedOffer(c, from: "alice", device: 7, candidates: [], expiresAt: Self.expiry, at: Self.at(2))
            == [.sendBusy(c, to: "alice", device: 7), Self.record(c, "alice", .incoming, started: 2, ended: 2, .missed)])
        #expect(caller.receivedBusy(c, from: "bob", device: 1, at: Self.at(2)) == [], "one of two devices is busy: still ringing")
        #expect(caller.receivedBusy(c, from: "bob", device: 2, at: Self.at(3)) == [Self.record(c, "bob", .outgoing, started: 1, ended: 3, .busy)])
        // The call the callee was in is untouched and the busy one is over.
        #expect(callee.activeCalls == [other])
        #expect(callee.receivedHangup(c, from: "alice", device: 7, reason: .noAnswer, expiresAt: Self.expiry, at: Self.at(4)) == [])
    }

    @Test func hangupBeforeAnswer() {
        var caller = CallStateMachine(), callee = CallStateMachine()
        let c = Self.id(7)
        _ = caller.placeCall(c, to: "bob", at: Self.at(0))
        _ = caller.offerSent(c, devices: [1], at: Self.at(0))
        _ = callee.receivedOffer(c, from: "alice", device: 7, candidates: [], expiresAt: Self.expiry, at: Self.at(1))
        #expect(caller.userHungUp(c, at: Self.at(4)) == [
            .sendHangup(c, .normal, to: "bob", devices: [1]), Self.record(c, "bob", .outgoing, started: 0, ended: 4, .missed),
        ])
        #expect(callee.receivedHangup(c, from: "alice", device: 7, reason: .normal, expiresAt: Self.expiry, at: Self.at(4))
            == [.stopRinging(c), Self.record(c, "alice", .incoming, started: 1, ended: 4, .missed)])
        #expect(callee.userAnswered(c, at: Self.at(5)) == [], "too late to answer an ended call")
    }

    @Test func calleeHangsUpAnAnsweredCall() {
        var caller = CallStateMachine(), callee = CallStateMachine()
        let c = Self.id(8)
        _ = caller.placeCall(c, to: "bob", at: Self.at(0))
        _ = caller.offerSent(c, devices: [1], at: Self.at(0))
        #expect(callee.receivedOffer(c, from: "alice", device: 7, candidates: [Self.host], expiresAt: Self.expiry, at: Self.at(1))
            == [.ring(c, from: "alice", device: 7, expiresAt: Self.expiry)])
        #expect(callee.userAnswered(c, at: Self.at(2)) == [
            .stopRinging(c), .sendAnswer(c, to: "alice", device: 7), .startMedia(c, peer: "alice", device: 7, candidates: [Self.host]),
        ])
        _ = caller.receivedAnswer(c, from: "bob", device: 1, candidates: [], at: Self.at(2))
        #expect(callee.mediaConnected(c, at: Self.at(3)) == [.connected(c)])
        #expect(callee.userHungUp(c, at: Self.at(10)) == [
            .sendHangup(c, .normal, to: "alice", devices: [7]), Self.record(c, "alice", .incoming, started: 1, answered: 2, ended: 10, .answered),
        ])
        #expect(caller.receivedHangup(c, from: "bob", device: 1, reason: .normal, expiresAt: Self.expiry, at: Self.at(10))
            == [Self.record(c, "bob", .outgoing, started: 0, answered: 2, ended: 10, .answered)])
    }

    @Test func answeredElsewhereWithTwoCalleeDevices() {
        var caller = CallStateMachine(), phone = CallStateMachine(), laptop = CallStateMachine()
        let c = Self.id(9)
        _ = caller.placeCall(c, to: "bob", at: Self.at(0))
        _ = caller.offerSent(c, devices: [2, 1], at: Self.at(0))
        _ = phone.receivedOffer(c, from: "alice", device: 7, candidates: [], expiresAt: Self.expiry, at: Self.at(1))
        _ = laptop.receivedOffer(c, from: "alice", device: 7, candidates: [], expiresAt: Self.expiry, at: Self.at(1))
        _ = phone.userAnswered(c, at: Self.at(3))
        // The phone (device 1) answers first: the laptop is told "answered elsewhere" and media starts with the phone.
        #expect(caller.receivedAnswer(c, from: "bob", device: 1, candidates: [Self.host], at: Self.at(3)) == [
            .sendHangup(c, .answeredElsewhere, to: "bob", devices: [2]), .startMedia(c, peer: "bob", device: 1, candidates: [Self.host]),
        ])
        #expect(laptop.receivedHangup(c, from: "alice", device: 7, reason: .answeredElsewhere, expiresAt: Self.expiry, at: Self.at(3))
            == [.stopRinging(c), Self.record(c, "alice", .incoming, started: 1, ended: 3, .answeredElsewhere)])
        // A second answer (the laptop answered before the hangup reached it) is told the same again, nothing else.
        #expect(caller.receivedAnswer(c, from: "bob", device: 2, candidates: [Self.relayed], at: Self.at(4))
            == [.sendHangup(c, .answeredElsewhere, to: "bob", devices: [2])])
        // Candidates from the losing device never reach the media.
        #expect(caller.receivedCandidates(c, from: "bob", device: 2, candidates: [Self.relayed], expiresAt: Self.expiry, at: Self.at(4)) == [])
        #expect(caller.mediaConnected(c, at: Self.at(4)) == [.connected(c)])
    }

    @Test func earlyCandidatesAreBufferedUntilTheOffer() {
        var m = CallStateMachine()
        let c = Self.id(10)
        #expect(m.receivedCandidates(c, from: "alice", device: 7, candidates: [Self.relayed], expiresAt: Self.expiry, at: Self.at(0)) == [])
        #expect(m.nextBufferExpiry == Self.expiry)
        // Another sender's buffered candidates for the same id are not the caller's.
        _ = m.receivedCandidates(c, from: "mallory", device: 1, candidates: [Self.host], expiresAt: Self.expiry, at: Self.at(0))
        #expect(m.receivedOffer(c, from: "alice", device: 7, candidates: [Self.host], expiresAt: Self.expiry, at: Self.at(1))
            == [.ring(c, from: "alice", device: 7, expiresAt: Self.expiry)])
        #expect(m.nextBufferExpiry == nil)
        #expect(m.userAnswered(c, at: Self.at(2)) == [
            .stopRinging(c), .sendAnswer(c, to: "alice", device: 7), .startMedia(c, peer: "alice", device: 7, candidates: [Self.host, Self.relayed]),
        ])
    }

    /// `count` distinct usable host candidates on 203.0.113.`octet`, ports from `firstPort`.
    static func hosts(_ count: Int, octet: UInt8, firstPort: UInt16 = 5000) -> [CallCandidate] {
        (0..<count).map { CallCandidate(kind: .host, address: "203.0.113.\(octet)", port: firstPort + UInt16($0), priority: 100) }
    }

    @Test func aCallKeepsAtMost32PeerCandidatesBufferedOnesIncluded() {
        var m = CallStateMachine()
        let c = Self.id(40)
        let early = Self.hosts(16, octet: 1) + Self.hosts(16, octet: 2)  // two ICE messages before the offer
        #expect(m.receivedCandidates(c, from: "alice", device: 7, candidates: Array(early[0..<16]), expiresAt: Self.expiry, at: Self.at(0)) == [])
        #expect(m.receivedCandidates(c, from: "alice", device: 7, candidates: Array(early[16...]), expiresAt: Self.expiry, at: Self.at(0)) == [])
        let offered = Self.hosts(16, octet: 3)
        #expect(m.receivedOffer(c, from: "alice", device: 7, candidates: offered, expiresAt: Self.expiry, at: Self.at(1))
            == [.ring(c, from: "alice", device: 7, expiresAt: Self.expiry)])
        // Ringing: more trickled candidates are dropped too.
        #expect(m.receivedCandidates(c, from: "alice", device: 7, candidates: Self.hosts(16, octet: 4), expiresAt: Self.expiry, at: Self.at(1)) == [])
        // The offer's 16, then the first 16 buffered: 32.
        #expect(m.userAnswered(c, at: Self.at(2)) == [
            .stopRinging(c), .sendAnswer(c, to: "alice", device: 7),
            .startMedia(c, peer: "alice", device: 7, candidates: offered + Array(early[0..<16])),
        ])
        // Running media gets none beyond 32.
        #expect(m.receivedCandidates(c, from: "alice", device: 7, candidates: Self.hosts(16, octet: 5), expiresAt: Self.expiry, at: Self.at(3)) == [])
    }

    @Test func theCallerKeepsAtMost32OfTheAnsweringDevice() {
        var m = CallStateMachine()
        let c = Self.id(41)
        _ = m.placeCall(c, to: "bob", at: Self.at(0))
        _ = m.offerSent(c, devices: [1], at: Self.at(0))
        let answered = Self.hosts(16, octet: 1)
        #expect(m.receivedAnswer(c, from: "bob", device: 1, candidates: answered, at: Self.at(1))
            == [.startMedia(c, peer: "bob", device: 1, candidates: answered)])
        let trickled = Self.hosts(10, octet: 2), more = Self.hosts(10, octet: 3)
        #expect(m.receivedCandidates(c, from: "bob", device: 1, candidates: trickled, expiresAt: Self.expiry, at: Self.at(2))
            == [.addPeerCandidates(c, trickled)])
        // A repeat adds nothing; of the next ten, six fit.
        #expect(m.receivedCandidates(c, from: "bob", device: 1, candidates: trickled, expiresAt: Self.expiry, at: Self.at(2)) == [])
        #expect(m.receivedCandidates(c, from: "bob", device: 1, candidates: more, expiresAt: Self.expiry, at: Self.at(3))
            == [.addPeerCandidates(c, Array(more[0..<6]))])
        #expect(m.receivedCandidates(c, from: "bob", device: 1, candidates: Self.hosts(1, octet: 4), expiresAt: Self.expiry, at: Self.at(4)) == [])
    }

    @Test func unspecifiedMulticastBroadcastAndLinkLocalCandidatesAreIgnored() {
        var m = CallStateMachine()
        let c = Self.id(42)
        let refused = ["0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.250", "255.255.255.255", "169.254.10.20", "::", "ff02::1", "fe80::1",
            "febf::1", "::ffff:169.254.0.1", "::ffff:224.0.0.1", "example.org", "1.2.3", ""]
            .map { CallCandidate(kind: .host, address: $0, port: 4000, priority: 1) } + [CallCandidate(kind: .host, address: "192.0.2.9", port: 0, priority: 1)]
        let allowed = ["127.0.0.1", "::1", "10.0.0.2", "192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1", "fec0::1"]
            .map { CallCandidate(kind: .host, address: $0, port: 4000, priority: 1) }
        for candidate in refused { #expect(!CallStateMachine.isUsable(candidate), "\(candidate.address):\(candidate.port)") }
        for candidate in allowed { #expect(CallStateMachine.isUsable(candidate), "\(candidate.address)") }
        #expect(m.receivedCandidates(c, from: "alice", device: 7, candidates: Array(refused[0..<8]), expiresAt: Self.expiry, at: Self.at(0)) == [])
        _ = m.receivedOffer(c, from: "alice", device: 7, candidates: Array(refused[8...]) + allowed, expiresAt: Self.expiry, at: Self.at(1))
        #expect(m.userAnswered(c, at: Self.at(2)) == [
            .stopRinging(c), .sendAnswer(c, to: "alice", device: 7), .startMedia(c, peer: "alice", device: 7, candidates: allowed),
        ])
        #expect(m.receivedCandidates(c, from: "alice", device: 7, candidates: refused, expiresAt: Self.expiry, at: Self.at(3)) == [])
    }

    @Test func bufferedSignalsExpire() {
        var m = CallStateMachine()
        let c = Self.id(11)
        _ = m.receivedHangup(c, from: "alice", device: 7, reason: .normal, expiresAt: Self.at(90), at: Self.at(0))
        _ = m.bufferExpired(at: Self.at(91))
        #expect(m.nextBufferExpiry == nil)
        // The offer (somehow later) rings: the expired hangup no longer counts.
        #expect(m.receivedOffer(c, from: "alice", device: 7, candidates: [], expiresAt: Self.at(150), at: Self.at(92))
            == [.ring(c, from: "alice", device: 7, expiresAt: Self.at(150))])
    }

    @Test func earlyHangupMeansTheOfferNeverRings() {
        var m = CallStateMachine()
        let c = Self.id(12)
        #expect(m.receivedHangup(c, from: "alice", device: 7, reason: .normal, expiresAt: Self.expiry, at: Self.at(0)) == [])
        #expect(m.receivedOffer(c, from: "alice", device: 7, candidates: [], expiresAt: Self.expiry, at: Self.at(1))
            == [Self.record(c, "alice", .incoming, started: 1, ended: 1, .missed)])
        #expect(!m.isInCall)
        #expect(m.hasEnded(c))
    }

    @Test func endedCallIgnoresEveryLaterSignal() {
        var m = CallStateMachine()
        let c = Self.id(13)
        _ = m.receivedOffer(c, from: "alice", device: 7, candidates: [], expiresAt: Self.expiry, at: Self.at(0))
        _ = m.userDeclined(c, at: Self.at(1))
        #expect(m.receivedOffer(c, from: "alice", device: 7, candidates: [], expiresAt: Self.expiry, at: Self.at(2)) == [], "a replayed offer")
        #expect(m.receivedCandidates(c, from: "alice", device: 7, candidates: [Self.host], expiresAt: Self.expiry, at: Self.at(2)) == [])
        #expect(m.receivedHangup(c, from: "alice", device: 7, reason: .normal, expiresAt: Self.expiry, at: Self.at(2)) == [])
        #expect(m.receivedBusy(c, from: "alice", device: 7, at: Self.at(2)) == [])
        #expect(m.nextBufferExpiry == nil, "nothing buffered for an ended call")
        #expect(m.userAnswered(c, at: Self.at(3)) == [])
    }

    @Test func glareKeepsTheSmallerCallIDOnBothSides() {
        var alice = CallStateMachine(), bob = CallStateMachine()
        let small = Self.id(0x10), large = Self.id(0x20)
        // Alice calls bob with the smaller id while bob calls alice with the larger one.
        _ = alice.placeCall(small, to: "bob", at: Self.at(0))
        _ = alice.offerSent(small, devices: [1], at: Self.at(0))
        _ = bob.placeCall(large, to: "alice", at: Self.at(0))
        _ = bob.offerSent(large, devices: [7, 8], at: Self.at(0))
        // Alice keeps hers and ignores bob's offer.
        #expect(alice.receivedOffer(large, from: "bob", device: 1, candidates: [], expiresAt: Self.expiry, at: Self.at(1)) == [])
        // Bob hangs up his own offer everywhere and answers alice's without asking.
        #expect(bob.receivedOffer(small, from: "alice", device: 7, candidates: [Self.host], expiresAt: Self.expiry, at: Self.at(1)) == [
            .sendHangup(large, .normal, to: "alice", devices: [7, 8]), .replaced(large, by: small),
            .sendAnswer(small, to: "alice", device: 7), .startMedia(small, peer: "alice", device: 7, candidates: [Self.host]),
        ])
        // Both end up in the same call: alice receives the answer; bob's hangup of his offer changes nothing.
        #expect(alice.receivedHangup(large, from: "bob", device: 1, reason: .normal, expiresAt: Self.expiry, at: Self.at(2)) == [])
        #expect(alice.receivedAnswer(small, from: "bob", device: 1, candidates: [], at: Self.at(2))
            == [.startMedia(small, peer: "bob", device: 1, candidates: [])])
        #expect(alice.activeCalls == [small] && bob.activeCalls == [small])
        #expect(bob.hasEnded(large))
    }

    @Test func glareBeforeTheOwnOfferWentOutHangsItUpOnceSent() {
        var bob = CallStateMachine()
        let small = Self.id(0x10), large = Self.id(0x20)
        _ = bob.placeCall(large, to: "alice", at: Self.at(0))
        let actions = bob.receivedOffer(small, from: "alice", device: 7, candidates: [], expiresAt: Self.expiry, at: Self.at(1))
        #expect(actions.first == .replaced(large, by: small))
        #expect(bob.offerSent(large, devices: [7], at: Self.at(2)) == [.sendHangup(large, .normal, to: "alice", devices: [7])])
    }

    @Test func signalsFromOthersThanThePeerAreIgnored() {
        var m = CallStateMachine()
        let c = Self.id(14)
        _ = m.placeCall(c, to: "bob", at: Self.at(0))
        _ = m.offerSent(c, devices: [1], at: Self.at(0))
        #expect(m.receivedAnswer(c, from: "mallory", device: 1, candidates: [], at: Self.at(1)) == [])
        #expect(m.receivedAnswer(c, from: "bob", device: 9, candidates: [], at: Self.at(1)) == [], "a device that was not offered")
        #expect(m.receivedHangup(c, from: "mallory", device: 1, reason: .declined, expiresAt: Self.expiry, at: Self.at(1)) == [])
        #expect(m.receivedBusy(c, from: "mallory", device: 1, at: Self.at(1)) == [])
        #expect(m.activeCalls == [c])
    }

    @Test func mediaFailureHangsUpFailed() {
        var m = CallStateMachine()
        let c = Self.id(15)
        _ = m.placeCall(c, to: "bob", at: Self.at(0))
        _ = m.offerSent(c, devices: [1], at: Self.at(0))
        _ = m.receivedAnswer(c, from: "bob", device: 1, candidates: [], at: Self.at(1))
        #expect(m.mediaFailed(c, at: Self.at(16)) == [
            .sendHangup(c, .failed, to: "bob", devices: [1]), Self.record(c, "bob", .outgoing, started: 0, answered: 1, ended: 16, .failed),
        ])
    }

    @Test func aSecondCallCannotBePlacedDuringOne() {
        var m = CallStateMachine()
        _ = m.placeCall(Self.id(16), to: "bob", at: Self.at(0))
        #expect(m.placeCall(Self.id(17), to: "carol", at: Self.at(1)) == [])
        #expect(m.offerFailed(Self.id(16), at: Self.at(2)) == [Self.record(Self.id(16), "bob", .outgoing, started: 0, ended: 2, .failed)])
    }

    @Test func callIDsOrderAsUnsignedBigEndianNumbers() throws {
        let a = try #require(CallID(Data([0x00] + [UInt8](repeating: 0xff, count: 15))))
        let b = try #require(CallID(Data([0x80] + [UInt8](repeating: 0x00, count: 15))))
        #expect(a < b && !(b < a))
        #expect(CallID(Data(count: 15)) == nil)
    }
}

/// The sequence ordering of call signals per (call id, sending device) (protocol/calls.md 3.4).
@Suite struct CallSignalSequencerTests {
    typealias Sequencer = CallSignalSequencer<String>
    static let key = Sequencer.Key(callID: Data(repeating: 1, count: 16), senderHandle: "alice", senderDeviceID: 7)
    static let t0 = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func inOrderSignalsPassAndReplaysAreIgnored() {
        var s = Sequencer()
        #expect(s.received("offer", key: Self.key, sequence: 1, at: Self.t0) == ["offer"])
        #expect(s.received("ice", key: Self.key, sequence: 2, at: Self.t0) == ["ice"])
        #expect(s.received("offer again", key: Self.key, sequence: 1, at: Self.t0) == [], "a replay")
        #expect(s.received("ice again", key: Self.key, sequence: 2, at: Self.t0) == [], "a replay")
        #expect(s.nextDeadline == nil)
    }

    @Test func aLaterSignalWaitsForTheMissingOne() {
        var s = Sequencer()
        #expect(s.received("hangup", key: Self.key, sequence: 3, at: Self.t0) == [])
        #expect(s.received("hangup", key: Self.key, sequence: 3, at: Self.t0) == [], "a replay of a waiting one")
        #expect(s.received("ice", key: Self.key, sequence: 2, at: Self.t0) == [])
        #expect(s.nextDeadline == Self.t0.addingTimeInterval(2))
        #expect(s.received("offer", key: Self.key, sequence: 1, at: Self.t0.addingTimeInterval(1)) == ["offer", "ice", "hangup"])
        #expect(s.nextDeadline == nil)
    }

    @Test func aGapIsGivenUpAfterTwoSeconds() {
        var s = Sequencer()
        #expect(s.received("offer", key: Self.key, sequence: 1, at: Self.t0) == ["offer"])
        #expect(s.received("hangup", key: Self.key, sequence: 4, at: Self.t0) == [])
        #expect(s.tick(at: Self.t0.addingTimeInterval(1.9)) == [])
        #expect(s.tick(at: Self.t0.addingTimeInterval(2)) == ["hangup"])
        #expect(s.received("ice", key: Self.key, sequence: 2, at: Self.t0.addingTimeInterval(3)) == [], "the missing one, too late: a replay")
    }

    @Test func sendersAndCallsAreOrderedSeparately() {
        var s = Sequencer()
        let other = Sequencer.Key(callID: Self.key.callID, senderHandle: "alice", senderDeviceID: 8)
        #expect(s.received("a1", key: Self.key, sequence: 1, at: Self.t0) == ["a1"])
        #expect(s.received("b1", key: other, sequence: 1, at: Self.t0) == ["b1"])
        s.forget(callID: Self.key.callID)
        #expect(s.received("a1 after forget", key: Self.key, sequence: 1, at: Self.t0) == ["a1 after forget"])
    }

    // MARK: forgetting old calls (review finding 7)

    typealias Machine = CallStateMachineTests

    @Test func theSequencerForgetsACall180SecondsAfterItsLastSignalUnlessItIsKept() {
        var s = Sequencer()
        let other = Sequencer.Key(callID: Data(repeating: 2, count: 16), senderHandle: "bob", senderDeviceID: 3)
        _ = s.received("a1", key: Self.key, sequence: 1, at: Machine.at(0))
        _ = s.received("a2", key: Self.key, sequence: 2, at: Machine.at(100))
        _ = s.received("b1", key: other, sequence: 1, at: Machine.at(0))
        s.forgetInactive(at: Machine.at(279), after: 180, keeping: [])
        #expect(s.knownCallIDs == [Self.key.callID], "b idle 279 s: gone; a idle 179 s: kept")
        #expect(s.received("a2 replayed", key: Self.key, sequence: 2, at: Machine.at(279)) == [], "still a replay")
        s.forgetInactive(at: Machine.at(459), after: 180, keeping: [Self.key.callID])
        #expect(s.knownCallIDs == [Self.key.callID], "a call still going is kept")
        s.forgetInactive(at: Machine.at(459), after: 180)
        #expect(s.knownCallIDs.isEmpty)
    }

    @Test func anEndedCallIsForgotten180SecondsAfterItsLastSignal() {
        var m = CallStateMachine()
        let c = Machine.id(50), lost = Machine.id(0x51)
        _ = m.placeCall(Machine.id(0x40), to: "alice", at: Machine.at(0))
        _ = m.offerSent(Machine.id(0x40), devices: [7], at: Machine.at(0))
        // Glare lost by alice's bigger id: ended at once, never in `calls`.
        #expect(m.receivedOffer(lost, from: "alice", device: 7, candidates: [], expiresAt: Machine.expiry, at: Machine.at(1)) == [])
        _ = m.userHungUp(Machine.id(0x40), at: Machine.at(2))
        _ = m.receivedOffer(c, from: "alice", device: 7, candidates: [], expiresAt: Machine.expiry, at: Machine.at(3))
        _ = m.userDeclined(c, at: Machine.at(4))
        #expect(m.rememberedEndedCalls == 3)
        // A late hangup for c at 100 s is ignored and keeps it remembered until 280 s.
        #expect(m.receivedHangup(c, from: "alice", device: 7, reason: .normal, expiresAt: Machine.at(190), at: Machine.at(100)) == [])
        #expect(m.forgetEnded(at: Machine.at(183)) == [])
        #expect(m.rememberedEndedCalls == 1 && m.hasEnded(c) && !m.hasEnded(lost))
        #expect(m.receivedCandidates(c, from: "alice", device: 7, candidates: [Machine.host], expiresAt: Machine.at(280), at: Machine.at(190)) == [])
        _ = m.forgetEnded(at: Machine.at(369))
        #expect(m.hasEnded(c), "179 s after its last signal")
        _ = m.forgetEnded(at: Machine.at(370))
        #expect(m.rememberedEndedCalls == 0 && !m.hasEnded(c))
        // Forgotten, the id is unknown again: a signal for it is buffered like any early one, not acted on.
        #expect(m.receivedHangup(c, from: "alice", device: 7, reason: .normal, expiresAt: Machine.at(400), at: Machine.at(371)) == [])
    }
}
