import FlitzCrypto
import FlitzMedia
import FlitzProtocol
import FlitzVectors
import Foundation

/// `vectors/call.json` (protocol/calls.md 9): the SRTP key derivation of section 5, the signal binding of section
/// 4.2, SRTP packets of both profiles across a sequence number wrap (section 6), and call message contents with the
/// decoding rules of section 4.1.
enum CallVectors {
    static let label = "flitz-vectors/call"
    /// 2026-01-01T00:00:00Z in milliseconds.
    static let sentAt: Int64 = 1_767_225_600_000

    static func make() throws -> VectorFileBuilder {
        let random = SeededRandom(label: label)
        // Draw order (documented in the description): caller and callee ephemeral private keys (32 each), two call ids
        // (16 each), three account identity seeds (32 each: caller, callee, another), the SRTP master key and salt of
        // each profile (GCM: 32 + 12, CM: 16 + 14), eight RTP payloads (160 each), two message ids (16 each), a
        // signal binding stand-in (32).
        let callerEphemeral = X25519PrivateKey(random: random)
        let calleeEphemeral = X25519PrivateKey(random: random)
        let callIDs = [random.bytes(16), random.bytes(16)]
        let identities = try (0..<3).map { _ in try Ed25519PrivateKey(seed: SecretBytes(random.bytes(32))).publicKey }
        let gcmKey = (random.bytes(32), random.bytes(12))
        let cmKey = (random.bytes(16), random.bytes(14))
        let payloads = (0..<8).map { _ in random.bytes(160) }
        let messageIDs = [random.bytes(16), random.bytes(16)]
        let binding = random.bytes(32)

        return VectorFileBuilder(
            topic: "call",
            description: "Calls (calls.md). srtpKeys: shared = X25519(callerEphemeralPrivateKey, calleeEphemeralPublicKey); okm = "
                + "HKDF-SHA-256(salt = callerEphemeralPublicKey || calleeEphemeralPublicKey, ikm = shared, info = \"FlitzCallSRTP-v1\" || 00 "
                + "|| u8(profile) || callId (16) || u32be(callerDeviceId) || u32be(calleeDeviceId) || callerIdentityKey (32) || "
                + "calleeIdentityKey (32), length = 2 (K + S)) with (K, S) = (32, 12) for profile 1 (SRTP_AEAD_AES_256_GCM) and (16, 14) for "
                + "profile 2 (SRTP_AES128_CM_HMAC_SHA1_80); caller->callee key okm[0, K), salt okm[K, K+S); callee->caller key okm[K+S, 2K+S), "
                + "salt okm[2K+S, 2K+2S). An all-zero shared secret is refused (invalidKey). signalBinding: SHA-256 of the bytes `input` "
                + "(section 4.2). srtpPackets: for each profile, one libsrtp2 send session (RFC 3711 / RFC 7714, replay window 128, the "
                + "master key then master salt) protects RTP packets of a fixed SSRC whose sequence numbers wrap from 65 535 to 0 (the "
                + "rollover counter becomes 1); `rtp` is the 12-byte header (V=2, PT 0, marker on the first) and payload, `srtp` the "
                + "protected packet; invalid tests deliver `srtp` packets to one receive session in order and expect the last to be "
                + "dropped. callMessages: Content (flitz_session.proto) carrying a CallMessage, fields in the protobuf JSON mapping (bytes "
                + "as lowercase hex); valid ones decode, and those marked `canonical` (what an encoder writes, padded to a multiple of 64 bytes) encode back to `encoded`, invalid ones break the rule "
                + "of calls.md 4.1 named in the comment. Drawn from SeededRandom(label: \"\(label)\"), in order: caller and callee "
                + "ephemeral private keys (32 each), two call ids (16 each), three account identity seeds (32 each; the Ed25519 public "
                + "keys are the identity keys), the GCM master key (32) and salt (12), the CM master key (16) and salt (14), eight RTP "
                + "payloads (160 each), two message ids (16 each), a signal binding stand-in (32).",
            specification: "protocol/calls.md sections 4, 5, 6 and 9; flitz_session.proto (CallMessage)",
            notes: notes,
            seeds: [label],
            groups: [
                VectorGroup(
                    type: "srtpKeys", fields: ["label": .string("FlitzCallSRTP-v1")],
                    tests: try srtpKeyTests(caller: callerEphemeral, callee: calleeEphemeral, callIDs: callIDs, identities: identities)),
                VectorGroup(type: "signalBinding", fields: ["label": .string("FlitzCallSignal-v1")], tests: bindingTests(callIDs: callIDs)),
                VectorGroup(
                    type: "srtpPackets",
                    tests: try srtpPacketTests(.aeadAES256GCM, key: gcmKey, payloads: Array(payloads[0..<4]))
                        + srtpPacketTests(.aes128CMHMACSHA1_80, key: cmKey, payloads: Array(payloads[4..<8]))),
                VectorGroup(type: "callMessages", tests: try messageTests(
                    callID: callIDs[0], binding: binding, messageIDs: messageIDs, ephemeral: callerEphemeral.publicKey,
                    answerEphemeral: calleeEphemeral.publicKey)),
            ])
    }

    // MARK: srtpKeys

    static func srtpKeyTests(caller: X25519PrivateKey, callee: X25519PrivateKey, callIDs: [Data], identities: [Ed25519PublicKey]) throws -> [VectorTest] {
        func inputs(_ profile: CallSRTPProfile, callID: Data, callerDevice: UInt32, calleeDevice: UInt32, calleeIdentity: Ed25519PublicKey,
                    calleePublic: Data) -> [String: JSONValue] {
            [
                "profile": .int(Int(profile.rawValue)), "callerEphemeralPrivateKey": .hex(caller.secret),
                "callerEphemeralPublicKey": .hex(caller.publicKey.rawRepresentation), "calleeEphemeralPublicKey": .hex(calleePublic),
                "callId": .hex(callID), "callerDeviceId": .uint(callerDevice), "calleeDeviceId": .uint(calleeDevice),
                "callerIdentityKey": .hex(identities[0].rawRepresentation), "calleeIdentityKey": .hex(calleeIdentity.rawRepresentation),
            ]
        }
        var tests: [VectorTest] = []
        func valid(_ comment: String, flags: [String], _ profile: CallSRTPProfile, callID: Data, callerDevice: UInt32, calleeDevice: UInt32,
                   calleeIdentity: Ed25519PublicKey) throws {
            var fields = inputs(profile, callID: callID, callerDevice: callerDevice, calleeDevice: calleeDevice, calleeIdentity: calleeIdentity,
                                calleePublic: callee.publicKey.rawRepresentation)
            let shared = try caller.sharedSecret(with: callee.publicKey)
            var info = Data("FlitzCallSRTP-v1".utf8) + Data([0, profile.rawValue]) + callID
            withUnsafeBytes(of: callerDevice.bigEndian) { info.append(contentsOf: $0) }
            withUnsafeBytes(of: calleeDevice.bigEndian) { info.append(contentsOf: $0) }
            info += identities[0].rawRepresentation + calleeIdentity.rawRepresentation
            let salt = caller.publicKey.rawRepresentation + callee.publicKey.rawRepresentation
            let (k, s) = (profile.keyLength, profile.saltLength)
            let okm = try HKDF.deriveKey(inputKeyMaterial: shared, salt: salt, info: info, length: 2 * (k + s))
            let keys = try CallKeys.derive(
                profile: profile, ownEphemeral: caller, peerEphemeral: callee.publicKey, isCaller: true, callID: callID,
                callerDeviceID: callerDevice, calleeDeviceID: calleeDevice, callerIdentityKey: identities[0], calleeIdentityKey: calleeIdentity)
            precondition(keys.callerToCallee.key.unsafeData + keys.callerToCallee.salt.unsafeData + keys.calleeToCaller.key.unsafeData
                + keys.calleeToCaller.salt.unsafeData == okm.unsafeData)
            fields["calleeEphemeralPrivateKey"] = .hex(callee.secret)
            fields["shared"] = .hex(shared)
            fields["salt"] = .hex(salt)
            fields["info"] = .hex(info)
            fields["okm"] = .hex(okm)
            fields["callerToCalleeKey"] = .hex(keys.callerToCallee.key)
            fields["callerToCalleeSalt"] = .hex(keys.callerToCallee.salt)
            fields["calleeToCallerKey"] = .hex(keys.calleeToCaller.key)
            fields["calleeToCallerSalt"] = .hex(keys.calleeToCaller.salt)
            tests.append(VectorTest(comment, flags: flags, fields))
        }
        func invalid(_ comment: String, flags: [String], callID: Data, calleePublic: Data) {
            let peer = try! X25519PublicKey(rawRepresentation: calleePublic)
            do {
                _ = try CallKeys.derive(
                    profile: .aeadAES256GCM, ownEphemeral: caller, peerEphemeral: peer, isCaller: true, callID: callID, callerDeviceID: 1,
                    calleeDeviceID: 2, callerIdentityKey: identities[0], calleeIdentityKey: identities[1])
                preconditionFailure("\(comment): derived")
            } catch {
                precondition(error.code == .invalidKey)
            }
            tests.append(VectorTest(
                comment, flags: flags, result: .invalid(VectorErrorRef(FlitzProtocolError.Code.invalidKey)),
                inputs(.aeadAES256GCM, callID: callID, callerDevice: 1, calleeDevice: 2, calleeIdentity: identities[1], calleePublic: calleePublic)))
        }
        try valid("AEAD_AES_256_GCM, caller device 1, callee device 2", flags: ["GCM"], .aeadAES256GCM, callID: callIDs[0],
                  callerDevice: 1, calleeDevice: 2, calleeIdentity: identities[1])
        try valid("AES_CM_128_HMAC_SHA1_80 with the same ephemerals: the profile is bound", flags: ["CM"], .aes128CMHMACSHA1_80,
                  callID: callIDs[0], callerDevice: 1, calleeDevice: 2, calleeIdentity: identities[1])
        try valid("another call id and large device ids", flags: ["GCM"], .aeadAES256GCM, callID: callIDs[1],
                  callerDevice: 4_000_000_000, calleeDevice: 77, calleeIdentity: identities[1])
        try valid("the callee's identity key replaced by another: different keys (no media with a wrong identity)",
                  flags: ["GCM", "WrongIdentity"], .aeadAES256GCM, callID: callIDs[0], callerDevice: 1, calleeDevice: 2,
                  calleeIdentity: identities[2])
        invalid("peer ephemeral key 0 (low order): all-zero shared secret", flags: ["NonContributory"], callID: callIDs[0], calleePublic: Data(count: 32))
        invalid("peer ephemeral key 1 (low order): all-zero shared secret", flags: ["NonContributory"], callID: callIDs[0],
                calleePublic: Data([1]) + Data(count: 31))
        invalid("peer ephemeral key of order 8 (e0eb7a7c…): all-zero shared secret", flags: ["NonContributory"], callID: callIDs[0],
                calleePublic: Data(hexString: "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")!)
        invalid("a call id of 15 bytes", flags: ["BadLength"], callID: callIDs[0].prefix(15), calleePublic: callee.publicKey.rawRepresentation)
        return tests
    }

    // MARK: signalBinding

    static func bindingTests(callIDs: [Data]) -> [VectorTest] {
        func test(_ comment: String, flags: [String], _ fields: CallSignalFields) -> VectorTest {
            var input = Data("FlitzCallSignal-v1".utf8) + Data([0]) + fields.callID + Data([fields.kind.rawValue])
            func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { input.append(contentsOf: $0) } }
            input.append(UInt8(fields.senderHandle.utf8.count))
            input += Data(fields.senderHandle.utf8)
            u32(fields.senderDeviceID)
            input.append(UInt8(fields.recipientHandle.utf8.count))
            input += Data(fields.recipientHandle.utf8)
            u32(fields.recipientDeviceID)
            u32(fields.sequence)
            withUnsafeBytes(of: fields.sentAtMilliseconds.bigEndian) { input.append(contentsOf: $0) }
            u32(fields.ttlSeconds)
            precondition(SHA256.hash(input) == fields.binding)
            return VectorTest(comment, flags: flags, [
                "callId": .hex(fields.callID), "kind": .int(Int(fields.kind.rawValue)), "senderHandle": .string(fields.senderHandle),
                "senderDeviceId": .uint(fields.senderDeviceID), "recipientHandle": .string(fields.recipientHandle),
                "recipientDeviceId": .uint(fields.recipientDeviceID), "sequence": .uint(fields.sequence),
                "sentAtMs": .string(String(fields.sentAtMilliseconds)), "ttlSeconds": .uint(fields.ttlSeconds),
                "input": .hex(input), "binding": .hex(fields.binding),
            ])
        }
        return [
            test("an offer: sequence 1, ttl 75", flags: ["Offer"], CallSignalFields(
                callID: callIDs[0], kind: .offer, senderHandle: "alice", senderDeviceID: 1, recipientHandle: "bob", recipientDeviceID: 2,
                sequence: 1, sentAtMilliseconds: sentAt, ttlSeconds: 75)),
            test("the same offer to the callee's second device", flags: ["Offer"], CallSignalFields(
                callID: callIDs[0], kind: .offer, senderHandle: "alice", senderDeviceID: 1, recipientHandle: "bob", recipientDeviceID: 3,
                sequence: 1, sentAtMilliseconds: sentAt, ttlSeconds: 75)),
            test("the answer back: sequence 1 of the callee's device, ttl 90", flags: ["Answer"], CallSignalFields(
                callID: callIDs[0], kind: .answer, senderHandle: "bob", senderDeviceID: 2, recipientHandle: "alice", recipientDeviceID: 1,
                sequence: 1, sentAtMilliseconds: sentAt + 4_321, ttlSeconds: 90)),
            test("trickled candidates, sequence 2, ttl 1", flags: ["Ice"], CallSignalFields(
                callID: callIDs[0], kind: .ice, senderHandle: "alice", senderDeviceID: 1, recipientHandle: "bob", recipientDeviceID: 2,
                sequence: 2, sentAtMilliseconds: sentAt + 100, ttlSeconds: 1)),
            test("a hangup with the largest sequence and device ids and a long handle", flags: ["Hangup", "Boundary"], CallSignalFields(
                callID: callIDs[1], kind: .hangup, senderHandle: String(repeating: "a", count: 32), senderDeviceID: .max,
                recipientHandle: "b_0.9", recipientDeviceID: .max, sequence: .max, sentAtMilliseconds: .max, ttlSeconds: 90)),
            test("busy, a time before 1970 (negative sent_at_ms)", flags: ["Busy", "Boundary"], CallSignalFields(
                callID: callIDs[1], kind: .busy, senderHandle: "bob", senderDeviceID: 2, recipientHandle: "alice", recipientDeviceID: 1,
                sequence: 1, sentAtMilliseconds: -1, ttlSeconds: 90)),
        ]
    }

    // MARK: srtpPackets

    static func srtpPacketTests(_ profile: SRTPProfile, key: (Data, Data), payloads: [Data]) throws -> [VectorTest] {
        let master = SRTPMasterKey(key: SecretBytes(key.0), salt: SecretBytes(key.1))
        let ssrc: UInt32 = profile == .aeadAES256GCM ? 0xCAFE_BABE : 0x0BAD_F00D
        let name = profile == .aeadAES256GCM ? "AEAD_AES_256_GCM" : "AES_CM_128_HMAC_SHA1_80"
        let flag = profile == .aeadAES256GCM ? "GCM" : "CM"
        var sequencer = RTPSequencer(ssrc: ssrc, initialSequenceNumber: 65_534, initialTimestamp: 0xFFFF_FF60)
        let sender = try SRTPSession(profile: profile, key: master, direction: .send(ssrc: ssrc))
        var packets: [JSONValue] = []
        var protected: [[UInt8]] = []
        for (index, payload) in payloads.enumerated() {
            let header = sequencer.next
            let rtp = sequencer.packet(payload: [UInt8](payload))
            let srtp = try sender.protect(rtp)
            protected.append(srtp)
            packets.append(.object([
                "sequenceNumber": .int(Int(header.sequenceNumber)), "timestamp": .uint(header.timestamp), "marker": .bool(header.marker),
                "rolloverCounter": .int(index < 2 ? 0 : 1), "payload": .hex(payload), "rtp": .hex(Data(rtp)), "srtp": .hex(Data(srtp)),
            ]))
        }
        let base: [String: JSONValue] = [
            "profile": .int(Int(profile.rawValue)), "masterKey": .hex(key.0), "masterSalt": .hex(key.1), "ssrc": .uint(ssrc),
        ]
        var tampered = protected[2]
        tampered[tampered.count - 1] ^= 0x01
        func receive(_ list: [[UInt8]]) -> VectorTest.Result {
            let receiver = try! SRTPSession(profile: profile, key: master, direction: .receive)
            for packet in list.dropLast() { _ = try! receiver.unprotect(packet) }
            let result: Result<[UInt8], SRTPDropReason> = Result { () throws(SRTPDropReason) in try receiver.unprotect(list.last!) }
            guard case .failure(let reason) = result else { preconditionFailure("accepted") }
            return .invalid(VectorErrorRef(reason))
        }
        func deliver(_ list: [[UInt8]]) -> JSONValue { .array(list.map { .hex(Data($0)) }) }
        return [
            VectorTest("\(name): four packets, sequence 65 534, 65 535, 0, 1 (the rollover counter becomes 1)", flags: [flag, "Rollover"],
                       base.merging(["packets": .array(packets)]) { a, _ in a }),
            VectorTest("\(name): the third packet's last byte flipped after the first two", flags: [flag, "Tampered"],
                       result: receive([protected[0], protected[1], tampered]),
                       base.merging(["deliver": deliver([protected[0], protected[1], tampered])]) { a, _ in a }),
            VectorTest("\(name): the second packet delivered twice", flags: [flag, "Replay"],
                       result: receive([protected[0], protected[1], protected[1]]),
                       base.merging(["deliver": deliver([protected[0], protected[1], protected[1]])]) { a, _ in a }),
        ]
    }

    // MARK: callMessages

    static func messageTests(callID: Data, binding: Data, messageIDs: [Data], ephemeral: X25519PublicKey,
                             answerEphemeral: X25519PublicKey) throws -> [VectorTest] {
        let candidates = [
            CallCandidate(kind: .host, address: "192.168.1.20", port: 50_000, priority: 2_130_706_431),
            CallCandidate(kind: .serverReflexive, address: "2001:db8::7", port: 3_478, priority: 1_694_498_815),
            CallCandidate(kind: .relayed, address: "203.0.113.9", port: 65_535, priority: 16_777_215),
        ]
        let offer = CallOffer(codecs: [.pcmu], ephemeralKey: ephemeral, profiles: [.aeadAES256GCM, .aes128CMHMACSHA1_80], candidates: candidates)
        func content(_ body: CallMessage.Body, id: Int = 0) -> MessageContent {
            MessageContent(messageID: messageIDs[id], sentAtMilliseconds: sentAt, body: .call(CallMessage(callID: callID, signalBinding: binding, body: body)))
        }
        var tests: [VectorTest] = []
        func valid(_ comment: String, flags: [String], _ message: MessageContent) throws {
            let encoded = message.encoded()
            let proto = try ProtoContent(serializedBytes: encoded)
            let decoded = try MessageContent(decoding: encoded)
            precondition(decoded == message, comment)
            tests.append(VectorTest(comment, flags: flags, [
                "encoded": .hex(encoded), "kind": .int(Int(kind(message))), "fields": try ContentJSON.fields(of: proto),
                "canonical": .bool(true),
            ]))
        }
        func validProto(_ comment: String, flags: [String], _ proto: ProtoContent) throws {
            let encoded = try proto.serializedData()
            let decoded = try MessageContent(decoding: encoded)
            tests.append(VectorTest(comment, flags: flags, [
                "encoded": .hex(encoded), "kind": .int(Int(kind(decoded))), "fields": try ContentJSON.fields(of: proto),
                "canonical": .bool(false),
            ]))
        }
        func invalid(_ comment: String, flags: [String], _ proto: ProtoContent) throws {
            let bytes = try proto.serializedData()
            do {
                _ = try MessageContent(decoding: bytes)
                preconditionFailure("\(comment): decodes")
            } catch {
                precondition(error.code == .malformedMessage)
            }
            tests.append(VectorTest(comment, flags: flags, result: .invalid(VectorErrorRef(FlitzProtocolError.Code.malformedMessage)),
                                    ["encoded": .hex(bytes), "fields": try ContentJSON.fields(of: proto)]))
        }
        try valid("an offer: PCMU, both profiles (GCM first), a host, a server-reflexive (IPv6) and a relayed candidate",
                  flags: ["Offer"], content(.offer(offer)))
        try valid("an answer: PCMU, GCM, one host candidate", flags: ["Answer"], content(.answer(CallAnswer(
            codec: .pcmu, ephemeralKey: answerEphemeral, profile: .aeadAES256GCM, candidates: [candidates[0]])), id: 1))
        try valid("trickled candidates with the end-of-candidates marker", flags: ["Ice"],
                  content(.ice(candidates: [candidates[2]], endOfCandidates: true)))
        try valid("an end-of-candidates marker alone", flags: ["Ice"], content(.ice(candidates: [], endOfCandidates: true)))
        try valid("a hangup: declined", flags: ["Hangup"], content(.hangup(.declined)))
        try valid("busy", flags: ["Busy"], content(.busy))

        // Mutations of the encoded offer and its neighbours, without padding.
        let offerProto = try ProtoContent(serializedBytes: content(.offer(offer)).encoded())
        func mutate(_ change: (inout ProtoCallMessage) -> Void) -> ProtoContent {
            var proto = offerProto
            proto.padding = Data()
            var call = proto.call
            change(&call)
            proto.call = call
            return proto
        }
        func offerMutation(_ change: @escaping (inout ProtoCallOffer) -> Void) -> ProtoContent {
            mutate { call in
                var offer = call.offer
                change(&offer)
                call.offer = offer
            }
        }
        func answerMutation(_ change: @escaping (inout ProtoCallAnswer) -> Void) -> ProtoContent {
            mutate { call in
                var answer = ProtoCallAnswer()
                answer.version = 1
                answer.media = .audio
                answer.codec = call.offer.codecs[0]
                answer.ephemeralKey = answerEphemeral.rawRepresentation
                answer.srtpProfile = .srtpAes128CmHmacSha180
                change(&answer)
                call.answer = answer
            }
        }
        var candidate = ProtoIceCandidate()
        candidate.type = .host
        candidate.address = "10.0.0.1"
        candidate.port = 40_000
        candidate.priority = 2_130_706_175
        func candidateMutation(_ change: @escaping (inout ProtoIceCandidate) -> Void) -> ProtoContent {
            offerMutation { offer in
                var bad = candidate
                change(&bad)
                offer.candidates = [bad]
            }
        }

        // Valid boundaries.
        try validProto("an offer with 8 codecs, 4 profiles and 16 candidates (the maxima)", flags: ["Offer", "Boundary"], offerMutation { offer in
            offer.codecs = Array(repeating: offer.codecs[0], count: 8)
            offer.srtpProfiles = [.srtpAeadAes256Gcm, .srtpAes128CmHmacSha180, .srtpAeadAes256Gcm, .srtpAes128CmHmacSha180]
            offer.candidates = Array(repeating: candidate, count: 16)
        })
        try validProto("an offer whose profiles include one this version does not know (7): it is skipped", flags: ["Offer", "UnknownProfile"],
                       offerMutation { $0.srtpProfiles = [.UNRECOGNIZED(7), .srtpAes128CmHmacSha180] })
        try validProto("candidate ports 1 and 65 535, an IPv6 loopback literal", flags: ["Ice", "Boundary"], mutate { call in
            var ice = ProtoCallIceCandidates()
            var low = candidate, high = candidate
            low.port = 1
            high.port = 65_535
            high.address = "::1"
            ice.candidates = [low, high]
            call.ice = ice
        })
        try validProto("a hangup without a reason: normal", flags: ["Hangup", "DefaultValues"], mutate { $0.hangup = ProtoCallHangup() })
        try validProto("a hangup with a reason this version does not know (9): normal", flags: ["Hangup", "UnknownReason"], mutate { call in
            var hangup = ProtoCallHangup()
            hangup.reason = .UNRECOGNIZED(9)
            call.hangup = hangup
        })

        // Invalid: the message.
        try invalid("call id of 15 bytes", flags: ["BadLength"], mutate { $0.callID = $0.callID.prefix(15) })
        try invalid("call id of 17 bytes", flags: ["BadLength"], mutate { $0.callID.append(0) })
        try invalid("signal binding of 31 bytes", flags: ["BadLength"], mutate { $0.signalBinding = $0.signalBinding.prefix(31) })
        try invalid("no signal binding", flags: ["BadLength"], mutate { $0.signalBinding = Data() })
        try invalid("a call message without a body", flags: ["NoBody"], mutate { $0.body = nil })
        // The offer.
        try invalid("offer version 2", flags: ["Offer", "BadVersion"], offerMutation { $0.version = 2 })
        try invalid("offer version 0 (absent)", flags: ["Offer", "BadVersion"], offerMutation { $0.version = 0 })
        try invalid("offer media unspecified", flags: ["Offer", "BadMedia"], offerMutation { $0.media = .unspecified })
        try invalid("offer ephemeral key of 31 bytes", flags: ["Offer", "BadLength"], offerMutation { $0.ephemeralKey = $0.ephemeralKey.prefix(31) })
        try invalid("offer without codecs", flags: ["Offer", "Count"], offerMutation { $0.codecs = [] })
        try invalid("offer with 9 codecs", flags: ["Offer", "Count"], offerMutation { $0.codecs = Array(repeating: $0.codecs[0], count: 9) })
        try invalid("offer without profiles", flags: ["Offer", "Count"], offerMutation { $0.srtpProfiles = [] })
        try invalid("offer with 5 profiles", flags: ["Offer", "Count"], offerMutation {
            $0.srtpProfiles = Array(repeating: .srtpAeadAes256Gcm, count: 5)
        })
        try invalid("offer whose only profile is unspecified", flags: ["Offer", "UnknownProfile"], offerMutation { $0.srtpProfiles = [.unspecified] })
        try invalid("offer with 17 candidates", flags: ["Offer", "Count"], offerMutation { $0.candidates = Array(repeating: candidate, count: 17) })
        // The answer.
        try invalid("answer version 2", flags: ["Answer", "BadVersion"], answerMutation { $0.version = 2 })
        try invalid("answer media unspecified", flags: ["Answer", "BadMedia"], answerMutation { $0.media = .unspecified })
        try invalid("answer without a codec", flags: ["Answer", "NoCodec"], answerMutation { $0.clearCodec() })
        try invalid("answer profile unspecified", flags: ["Answer", "UnknownProfile"], answerMutation { $0.srtpProfile = .unspecified })
        try invalid("answer profile 7 (unknown)", flags: ["Answer", "UnknownProfile"], answerMutation { $0.srtpProfile = .UNRECOGNIZED(7) })
        try invalid("answer ephemeral key of 33 bytes", flags: ["Answer", "BadLength"], answerMutation { $0.ephemeralKey.append(0) })
        // Candidates.
        try invalid("candidate type unspecified", flags: ["Candidate"], candidateMutation { $0.type = .unspecified })
        try invalid("candidate type 4 (unknown)", flags: ["Candidate"], candidateMutation { $0.type = .UNRECOGNIZED(4) })
        try invalid("candidate address a host name", flags: ["Candidate", "NotALiteral"], candidateMutation { $0.address = "relay.example.com" })
        try invalid("candidate address 10.0.0 (three parts)", flags: ["Candidate", "NotALiteral"], candidateMutation { $0.address = "10.0.0" })
        try invalid("candidate address with a zone (fe80::1%eth0)", flags: ["Candidate", "NotALiteral"], candidateMutation { $0.address = "fe80::1%eth0" })
        try invalid("candidate address empty", flags: ["Candidate", "NotALiteral"], candidateMutation { $0.address = "" })
        try invalid("candidate port 0", flags: ["Candidate", "Port"], candidateMutation { $0.port = 0 })
        try invalid("candidate port 65 536", flags: ["Candidate", "Port"], candidateMutation { $0.port = 65_536 })
        try invalid("trickled message with 17 candidates", flags: ["Ice", "Count"], mutate { call in
            var ice = ProtoCallIceCandidates()
            ice.candidates = Array(repeating: candidate, count: 17)
            call.ice = ice
        })
        return tests
    }

    /// The signal kind number of a call content.
    static func kind(_ content: MessageContent) -> UInt8 {
        guard case .call(let call) = content.body else { preconditionFailure("not a call message") }
        return call.kind.rawValue
    }

    static let notes: [String: String] = [
        "GCM": "Profile 1, SRTP_AEAD_AES_256_GCM (RFC 7714): 32-byte key, 12-byte salt, 16-byte tag.",
        "CM": "Profile 2, SRTP_AES128_CM_HMAC_SHA1_80 (RFC 3711): 16-byte key, 14-byte salt, 10-byte tag.",
        "WrongIdentity": "An identity key other than the session's: the keys differ, so no media would authenticate.",
        "NonContributory": "A low-order peer key: X25519 gives all zeros, which calls.md 5 refuses.",
        "BadLength": "A byte string of the wrong length.",
        "Offer": "CALL_OFFER.", "Answer": "CALL_ANSWER.", "Ice": "CALL_ICE (CallIceCandidates).", "Hangup": "CALL_HANGUP.", "Busy": "CALL_BUSY.",
        "Boundary": "A value at the edge of its range.",
        "Rollover": "Sequence numbers wrap from 65 535 to 0; the rollover counter (RFC 3711 3.3.1) becomes 1.",
        "Tampered": "A protected packet with a changed byte: dropped (authentication fails).",
        "Replay": "A packet delivered again: dropped by the replay window.",
        "UnknownProfile": "An SRTP profile this version does not know (unknown ones in an offer are skipped; at least one must be known).",
        "UnknownReason": "A hangup reason this version does not know: read as HANGUP_NORMAL.",
        "DefaultValues": "Fields at their default value (0) are not encoded.",
        "NoBody": "A CallMessage without offer, answer, ice, hangup or busy.",
        "BadVersion": "version other than 1.",
        "BadMedia": "media other than CALL_MEDIA_AUDIO.",
        "Count": "Too many or too few codecs, profiles or candidates.",
        "NoCodec": "An answer without its codec.",
        "Candidate": "An IceCandidate breaking a rule of calls.md 4.1.",
        "NotALiteral": "An address that is not an IPv4 or IPv6 literal (inet_pton).",
        "Port": "A port outside 1 to 65 535.",
    ]
}
