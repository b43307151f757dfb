import FlitzCrypto
import FlitzProtocol
import Foundation
import Testing

/// Call messages, the signal binding and the SRTP key derivation (protocol/calls.md 4 and 5).
@Suite struct CallTests {
    static let random = SeededRandom(label: "call tests")
    static let callID = Data((0..<16).map { UInt8($0) })
    static let binding = Data(repeating: 0xB1, count: 32)

    static func identity(_ label: String) -> Ed25519PublicKey { AccountIdentity(random: SeededRandom(label: label)).publicKey }

    static func derive(_ profile: CallSRTPProfile, own: X25519PrivateKey, peer: X25519PublicKey, isCaller: Bool,
                       calleeIdentity: Ed25519PublicKey = identity("bob"), callID: Data = callID) throws(FlitzProtocolError) -> CallKeys {
        try CallKeys.derive(
            profile: profile, ownEphemeral: own, peerEphemeral: peer, isCaller: isCaller, callID: callID, callerDeviceID: 1,
            calleeDeviceID: 2, callerIdentityKey: identity("alice"), calleeIdentityKey: calleeIdentity)
    }

    @Test(arguments: CallSRTPProfile.allCases)
    func bothSidesDeriveTheSameKeysOfTheProfilesSizes(profile: CallSRTPProfile) throws {
        let caller = X25519PrivateKey(random: SeededRandom(label: "caller eph"))
        let callee = X25519PrivateKey(random: SeededRandom(label: "callee eph"))
        let a = try Self.derive(profile, own: caller, peer: callee.publicKey, isCaller: true)
        let b = try Self.derive(profile, own: callee, peer: caller.publicKey, isCaller: false)
        for (x, y) in [(a.callerToCallee, b.callerToCallee), (a.calleeToCaller, b.calleeToCaller)] {
            #expect(x.key.constantTimeEquals(y.key) && x.salt.constantTimeEquals(y.salt))
            #expect(x.key.count == profile.keyLength && x.salt.count == profile.saltLength)
        }
        // The two directions differ.
        #expect(!a.callerToCallee.key.constantTimeEquals(a.calleeToCaller.key))
        // A wrong identity key, the other profile, or swapped roles give different keys.
        let wrong = try Self.derive(profile, own: callee, peer: caller.publicKey, isCaller: false, calleeIdentity: Self.identity("mallory"))
        #expect(!wrong.callerToCallee.key.constantTimeEquals(a.callerToCallee.key))
        let swapped = try Self.derive(profile, own: callee, peer: caller.publicKey, isCaller: true)
        #expect(!swapped.callerToCallee.key.constantTimeEquals(a.callerToCallee.key))
        let other: CallSRTPProfile = profile == .aeadAES256GCM ? .aes128CMHMACSHA1_80 : .aeadAES256GCM
        let otherKeys = try Self.derive(other, own: caller, peer: callee.publicKey, isCaller: true)
        #expect(otherKeys.callerToCallee.key.unsafeData.prefix(16) != a.callerToCallee.key.unsafeData.prefix(16))
    }

    @Test func nonContributoryKeysAndBadCallIDsAreRefused() throws {
        let caller = X25519PrivateKey(random: SeededRandom(label: "caller eph"))
        for low in [Data(count: 32), Data([1]) + Data(count: 31)] {
            let error = #expect(throws: FlitzProtocolError.self) {
                try Self.derive(.aeadAES256GCM, own: caller, peer: try X25519PublicKey(rawRepresentation: low), isCaller: true)
            }
            #expect(error?.code == .invalidKey)
        }
        let callee = X25519PrivateKey(random: SeededRandom(label: "callee eph"))
        let error = #expect(throws: FlitzProtocolError.self) {
            try Self.derive(.aeadAES256GCM, own: caller, peer: callee.publicKey, isCaller: true, callID: Data(count: 15))
        }
        #expect(error?.code == .invalidKey)
    }

    static func fields(_ change: (inout CallSignalFields) -> Void = { _ in }) -> CallSignalFields {
        var fields = CallSignalFields(
            callID: callID, kind: .offer, senderHandle: "alice", senderDeviceID: 1, recipientHandle: "bob", recipientDeviceID: 2,
            sequence: 1, sentAtMilliseconds: 1_767_225_600_000, ttlSeconds: 75)
        change(&fields)
        return fields
    }

    @Test func theBindingCoversEveryField() {
        let base = Self.fields().binding
        #expect(base.count == 32)
        #expect(base == Self.fields().binding)
        let changes: [(inout CallSignalFields) -> Void] = [
            { $0.callID[15] ^= 1 }, { $0.kind = .answer }, { $0.senderHandle = "alicf" }, { $0.senderDeviceID = 3 },
            { $0.recipientHandle = "bobb" }, { $0.recipientDeviceID = 4 }, { $0.sequence = 2 }, { $0.sentAtMilliseconds += 1 },
            { $0.ttlSeconds = 76 },
            // Moving a byte between the handles changes the length prefixes.
            { $0.senderHandle = "aliceb"; $0.recipientHandle = "ob" },
        ]
        for change in changes { #expect(Self.fields(change).binding != base) }
    }

    static let candidates = [
        CallCandidate(kind: .host, address: "192.168.1.20", port: 50_000, priority: 2_130_706_431),
        CallCandidate(kind: .relayed, address: "2001:db8::1", port: 3_478, priority: 16_777_215),
    ]

    static func content(_ body: CallMessage.Body) -> MessageContent {
        MessageContent(messageID: Data(count: 16), sentAtMilliseconds: 5, body: .call(CallMessage(callID: callID, signalBinding: binding, body: body)))
    }

    @Test func everyKindRoundTripsThroughContent() throws {
        let key = X25519PrivateKey(random: Self.random).publicKey
        let offer = CallOffer(codecs: [.pcmu], ephemeralKey: key, profiles: [.aeadAES256GCM, .aes128CMHMACSHA1_80], candidates: Self.candidates)
        let bodies: [(CallMessage.Body, CallSignalKind)] = [
            (.offer(offer), .offer),
            (.answer(CallAnswer(codec: .pcmu, ephemeralKey: key, profile: .aes128CMHMACSHA1_80, candidates: [])), .answer),
            (.ice(candidates: Self.candidates, endOfCandidates: true), .ice),
            (.hangup(.answeredElsewhere), .hangup),
            (.busy, .busy),
        ]
        for (body, kind) in bodies {
            let content = Self.content(body)
            let encoded = content.encoded()
            #expect(encoded.count % 64 == 0)
            let decoded = try MessageContent(decoding: encoded)
            #expect(decoded == content)
            guard case .call(let call) = decoded.body else { Issue.record("not a call"); continue }
            #expect(call.kind == kind)
        }
    }

    @Test func answersMatchOnlyTheirOffer() {
        let key = X25519PrivateKey(random: Self.random).publicKey
        let offer = CallOffer(codecs: [.pcmu], ephemeralKey: key, profiles: [.aes128CMHMACSHA1_80], candidates: [])
        #expect(CallAnswer(codec: .pcmu, ephemeralKey: key, profile: .aes128CMHMACSHA1_80, candidates: []).matches(offer))
        #expect(!CallAnswer(codec: .pcmu, ephemeralKey: key, profile: .aeadAES256GCM, candidates: []).matches(offer))
        let opus = CallAudioCodec(name: "opus", payloadType: 111, clockRate: 48_000, frameMilliseconds: 20)
        #expect(!CallAnswer(codec: opus, ephemeralKey: key, profile: .aes128CMHMACSHA1_80, candidates: []).matches(offer))
    }

    @Test func badCandidatesAreRefused() {
        for (address, port) in [("example.com", UInt16(1)), ("1.2.3", 1), ("fe80::1%eth0", 1), ("", 1), ("10.0.0.1", 0)] {
            let content = Self.content(.ice(candidates: [CallCandidate(kind: .host, address: address, port: port, priority: 1)], endOfCandidates: false))
            let error = #expect(throws: FlitzProtocolError.self) { try MessageContent(decoding: content.encoded()) }
            #expect(error?.code == .malformedMessage)
        }
        let many = Array(repeating: Self.candidates[0], count: 17)
        #expect(throws: FlitzProtocolError.self) {
            try MessageContent(decoding: Self.content(.ice(candidates: many, endOfCandidates: false)).encoded())
        }
        let sixteen = Array(repeating: Self.candidates[0], count: 16)
        #expect(throws: Never.self) {
            try MessageContent(decoding: Self.content(.ice(candidates: sixteen, endOfCandidates: false)).encoded())
        }
        #expect(CallCandidate.isIPLiteral("127.0.0.1") && CallCandidate.isIPLiteral("::ffff:1.2.3.4"))
        #expect(!CallCandidate.isIPLiteral("localhost") && !CallCandidate.isIPLiteral("256.1.1.1"))
    }

    @Test func badOffersAreRefused() {
        let key = X25519PrivateKey(random: Self.random).publicKey
        let offers = [
            CallOffer(codecs: [], ephemeralKey: key, profiles: [.aeadAES256GCM], candidates: []),
            CallOffer(codecs: Array(repeating: .pcmu, count: 9), ephemeralKey: key, profiles: [.aeadAES256GCM], candidates: []),
            CallOffer(codecs: [.pcmu], ephemeralKey: key, profiles: [], candidates: []),
            CallOffer(codecs: [.pcmu], ephemeralKey: key, profiles: Array(repeating: .aeadAES256GCM, count: 5), candidates: []),
        ]
        for offer in offers {
            let error = #expect(throws: FlitzProtocolError.self) { try MessageContent(decoding: Self.content(.offer(offer)).encoded()) }
            #expect(error?.code == .malformedMessage)
        }
    }

    @Test func badIDsAndBindingsAreRefused() {
        for (callID, binding) in [(Data(count: 15), Self.binding), (Self.callID, Data(count: 31)), (Data(), Data())] {
            let content = MessageContent(
                messageID: Data(count: 16), sentAtMilliseconds: 5, body: .call(CallMessage(callID: callID, signalBinding: binding, body: .busy)))
            #expect(throws: FlitzProtocolError.self) { try MessageContent(decoding: content.encoded()) }
        }
    }
}
