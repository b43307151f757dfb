import FlitzCrypto
import FlitzMedia
import FlitzProtocol
import Foundation
import SwiftProtobuf
#if canImport(Glibc)
import Glibc
#endif

extension VectorErrorRef {
    /// The reference for an SRTP packet dropped by `SRTPSession.unprotect`: type `SRTPDropReason`, the case name,
    /// and as code 1 authenticationFailed, 2 replayed, 3 tooOld, 4 malformed.
    public init(_ reason: SRTPDropReason) {
        let (name, code): (String, Int) = switch reason {
        case .authenticationFailed: ("authenticationFailed", 1)
        case .replayed: ("replayed", 2)
        case .tooOld: ("tooOld", 3)
        case .malformed: ("malformed", 4)
        }
        self.init(type: "SRTPDropReason", name: name, code: code)
    }
}

/// `call.json`: calls (`protocol/calls.md` sections 4, 5, 6 and 9).
///
/// Group `srtpKeys` (shared `label`): `profile`, `callerEphemeralPrivateKey`, `callerEphemeralPublicKey`,
/// `calleeEphemeralPublicKey`, `callId`, `callerDeviceId`, `calleeDeviceId`, `callerIdentityKey`, `calleeIdentityKey`;
/// valid: `calleeEphemeralPrivateKey`, `shared`, `salt`, `info`, `okm` and the four `callerToCallee…` / `calleeToCaller…`
/// keys and salts. Group `signalBinding`: the fields, `input` and `binding`. Group `srtpPackets`: `profile`,
/// `masterKey`, `masterSalt`, `ssrc`, and `packets` [{`sequenceNumber`, `timestamp`, `marker`, `rolloverCounter`,
/// `payload`, `rtp`, `srtp`}] (valid) or `deliver` (invalid: the last one is dropped). Group `callMessages`: `encoded`,
/// `fields`, and for valid tests `kind` and `canonical` (whether encoding the decoded content gives `encoded` again).
///
/// Independently of the implementation: the key derivation and the binding are recomputed here with the layouts of
/// the specification written out (X25519, HKDF and SHA-256 from FlitzCrypto); RTP headers are laid out here. The SRTP
/// transform itself is libsrtp2's, reached through `SRTPSession` (no second SRTP implementation is available).
enum CallTopic {
    static let topic = VectorTopic(name: "call", verify: verify)

    static let keyLabel = Data("FlitzCallSRTP-v1".utf8)
    static let bindingLabel = Data("FlitzCallSignal-v1".utf8)

    static func verify(_ vector: VectorCase) throws -> VectorOutcome {
        let test = vector.test
        switch try vector.groupType() {
        case "srtpKeys":
            try check(Data(try vector.group.string("label").utf8), keyLabel, "label")
            return try srtpKeys(test)
        case "signalBinding":
            try check(Data(try vector.group.string("label").utf8), bindingLabel, "label")
            return try signalBinding(test)
        case "srtpPackets":
            return try srtpPackets(test)
        case "callMessages":
            return try callMessage(test)
        case let type:
            throw VectorCheckFailure.unknownGroup(type, in: "call")
        }
    }

    static func bigEndian<T: FixedWidthInteger>(_ value: T) -> Data { withUnsafeBytes(of: value.bigEndian) { Data($0) } }

    // MARK: srtpKeys (section 5)

    static func srtpKeys(_ test: JSONValue) throws -> VectorOutcome {
        let number = try test.int("profile")
        guard let profile = CallSRTPProfile(rawValue: UInt8(number)) else { throw VectorCheckFailure("unknown profile \(number)") }
        let (k, s) = number == 1 ? (32, 12) : (16, 14)
        try check(profile.keyLength, k, "CallSRTPProfile.keyLength")
        try check(profile.saltLength, s, "CallSRTPProfile.saltLength")
        let caller = try X25519PrivateKey(rawRepresentation: SecretBytes(try test.hex("callerEphemeralPrivateKey")))
        try check(caller.publicKey.rawRepresentation, try test.hex("callerEphemeralPublicKey"), "callerEphemeralPublicKey")
        let calleePublic = try X25519PublicKey(rawRepresentation: try test.hex("calleeEphemeralPublicKey"))
        let callID = try test.hex("callId")
        let callerDevice = try test.uint32("callerDeviceId"), calleeDevice = try test.uint32("calleeDeviceId")
        let callerIdentity = try Ed25519PublicKey(rawRepresentation: try test.hex("callerIdentityKey"))
        let calleeIdentity = try Ed25519PublicKey(rawRepresentation: try test.hex("calleeIdentityKey"))
        var callerKeys: CallKeys?
        let outcome = try VectorOutcome.capture {
            callerKeys = try CallKeys.derive(
                profile: profile, ownEphemeral: caller, peerEphemeral: calleePublic, isCaller: true, callID: callID,
                callerDeviceID: callerDevice, calleeDeviceID: calleeDevice, callerIdentityKey: callerIdentity, calleeIdentityKey: calleeIdentity)
        }
        guard case .valid = outcome, let callerKeys else {
            // The specification's verdict: an all-zero shared secret or a call id that is not 16 bytes.
            let zero = (try? caller.sharedSecret(with: calleePublic)) == nil
            try require(zero || callID.count != 16, "CallKeys.derive refused inputs the specification accepts")
            return outcome
        }
        try require(callID.count == 16, "CallKeys.derive accepted a call id of \(callID.count) bytes")
        let shared = try caller.sharedSecret(with: calleePublic)
        try check(shared, try test.hex("shared"), "shared = X25519(callerEphemeralPrivateKey, calleeEphemeralPublicKey)")
        let callee = try X25519PrivateKey(rawRepresentation: SecretBytes(try test.hex("calleeEphemeralPrivateKey")))
        try check(callee.publicKey, calleePublic, "calleeEphemeralPublicKey of calleeEphemeralPrivateKey")
        try check(try callee.sharedSecret(with: caller.publicKey), try test.hex("shared"), "shared = X25519(calleeEphemeralPrivateKey, callerEphemeralPublicKey)")
        let salt = caller.publicKey.rawRepresentation + calleePublic.rawRepresentation
        try check(salt, try test.hex("salt"), "salt = E_A || E_B")
        let info = keyLabel + Data([0, UInt8(number)]) + callID + bigEndian(callerDevice) + bigEndian(calleeDevice)
            + callerIdentity.rawRepresentation + calleeIdentity.rawRepresentation
        try check(info, try test.hex("info"), "info")
        let okm = try HKDF.deriveKey(inputKeyMaterial: shared, salt: salt, info: info, length: 2 * (k + s)).unsafeData
        try check(okm, try test.hex("okm"), "okm")
        let parts = [okm[0..<k], okm[k..<(k + s)], okm[(k + s)..<(2 * k + s)], okm[(2 * k + s)..<(2 * k + 2 * s)]].map { Data($0) }
        let names = ["callerToCalleeKey", "callerToCalleeSalt", "calleeToCallerKey", "calleeToCallerSalt"]
        for (part, name) in zip(parts, names) { try check(part, try test.hex(name), name) }
        let calleeKeys = try CallKeys.derive(
            profile: profile, ownEphemeral: callee, peerEphemeral: caller.publicKey, isCaller: false, callID: callID,
            callerDeviceID: callerDevice, calleeDeviceID: calleeDevice, callerIdentityKey: callerIdentity, calleeIdentityKey: calleeIdentity)
        for (side, keys) in [("caller", callerKeys), ("callee", calleeKeys)] {
            try check(keys.profile, profile, "\(side) CallKeys.profile")
            try check(keys.callerToCallee.key, parts[0], "\(side) CallKeys.callerToCallee.key")
            try check(keys.callerToCallee.salt, parts[1], "\(side) CallKeys.callerToCallee.salt")
            try check(keys.calleeToCaller.key, parts[2], "\(side) CallKeys.calleeToCaller.key")
            try check(keys.calleeToCaller.salt, parts[3], "\(side) CallKeys.calleeToCaller.salt")
        }
        return .valid
    }

    // MARK: signalBinding (section 4.2)

    static func signalBinding(_ test: JSONValue) throws -> VectorOutcome {
        let callID = try test.hex("callId")
        let kindNumber = try test.int("kind")
        guard let kind = CallSignalKind(rawValue: UInt8(kindNumber)) else { throw VectorCheckFailure("unknown kind \(kindNumber)") }
        let sender = try test.string("senderHandle"), recipient = try test.string("recipientHandle")
        let senderDevice = try test.uint32("senderDeviceId"), recipientDevice = try test.uint32("recipientDeviceId")
        let sequence = try test.uint32("sequence"), ttl = try test.uint32("ttlSeconds")
        guard let sentAt = Int64(try test.string("sentAtMs")) else { throw VectorCheckFailure("sentAtMs is not a decimal int64") }
        let input = bindingLabel + Data([0]) + callID + Data([UInt8(kindNumber)])
            + Data([UInt8(sender.utf8.count)]) + Data(sender.utf8) + bigEndian(senderDevice)
            + Data([UInt8(recipient.utf8.count)]) + Data(recipient.utf8) + bigEndian(recipientDevice)
            + bigEndian(sequence) + bigEndian(sentAt) + bigEndian(ttl)
        try check(input, try test.hex("input"), "input")
        try check(SHA256.hash(input), try test.hex("binding"), "binding = SHA-256(input)")
        let fields = CallSignalFields(
            callID: callID, kind: kind, senderHandle: sender, senderDeviceID: senderDevice, recipientHandle: recipient,
            recipientDeviceID: recipientDevice, sequence: sequence, sentAtMilliseconds: sentAt, ttlSeconds: ttl)
        try check(fields.binding, try test.hex("binding"), "CallSignalFields.binding")
        return .valid
    }

    // MARK: srtpPackets (section 6)

    static func srtpPackets(_ test: JSONValue) throws -> VectorOutcome {
        let number = try test.int("profile")
        let profile: SRTPProfile = switch number {
        case 1: .aeadAES256GCM
        case 2: .aes128CMHMACSHA1_80
        default: throw VectorCheckFailure("unknown profile \(number)")
        }
        let master = SRTPMasterKey(key: SecretBytes(try test.hex("masterKey")), salt: SecretBytes(try test.hex("masterSalt")))
        let ssrc = try test.uint32("ssrc")
        let receiver = try SRTPSession(profile: profile, key: master, direction: .receive)
        if test.has("deliver") {
            let packets = try test.hexArray("deliver")
            try require(!packets.isEmpty, "deliver is empty")
            for (index, packet) in packets.dropLast().enumerated() {
                do {
                    _ = try receiver.unprotect([UInt8](packet))
                } catch {
                    throw VectorCheckFailure("deliver[\(index)] was dropped (\(error)); only the last one should be")
                }
            }
            do {
                _ = try receiver.unprotect([UInt8](packets.last!))
                return .valid
            } catch {
                return .invalid(VectorErrorRef(error), stateUnchanged: nil)
            }
        }
        let sender = try SRTPSession(profile: profile, key: master, direction: .send(ssrc: ssrc))
        let tagLength = number == 1 ? 16 : 10
        var previousSequence: Int?
        var rollover = 0
        for (index, packet) in try test.array("packets").enumerated() {
            let sequence = try packet.int("sequenceNumber"), timestamp = try packet.uint32("timestamp")
            let marker = try packet.bool("marker"), payload = try packet.hex("payload")
            if let previousSequence, sequence < previousSequence { rollover += 1 }
            previousSequence = sequence
            try check(try packet.int("rolloverCounter"), rollover, "packets[\(index)].rolloverCounter")
            // RFC 3550 5.1, written out: V=2, no padding/extension/CSRC, M and PT 0, sequence, timestamp, SSRC.
            let rtp = Data([0x80, marker ? 0x80 : 0x00]) + bigEndian(UInt16(sequence)) + bigEndian(timestamp) + bigEndian(ssrc) + payload
            try check(rtp, try packet.hex("rtp"), "packets[\(index)].rtp")
            try check(Data(RTPHeader(marker: marker, sequenceNumber: UInt16(sequence), timestamp: timestamp, ssrc: ssrc).packet(payload: payload)),
                      rtp, "RTPHeader.packet (packets[\(index)])")
            let srtp = try sender.protect([UInt8](rtp))
            try check(Data(srtp), try packet.hex("srtp"), "packets[\(index)].srtp (libsrtp2 protect)")
            try check(srtp.count, rtp.count + tagLength, "packets[\(index)] tag length")
            try check(Data(srtp.prefix(12)), rtp.prefix(12), "packets[\(index)] header in the clear")
            do {
                try check(Data(try receiver.unprotect(srtp)), rtp, "packets[\(index)] unprotected")
            } catch let reason as SRTPDropReason {
                throw VectorCheckFailure("packets[\(index)] was dropped on receipt (\(reason))")
            }
        }
        return .valid
    }

    // MARK: callMessages (section 4.1)

    static let bytesFields = ContentJSON.bytesFieldNames

    static func callMessage(_ test: JSONValue) throws -> VectorOutcome {
        let encoded = try test.hex("encoded")
        let proto = try ContentJSON.content(from: try test.object("fields"))
        try check(try proto.serializedData(), encoded, "encoded (from fields)")
        // The specification's verdict on the fields, computed here.
        let violation = rule(broken: proto)
        let outcome = try VectorOutcome.capture {
            let content = try MessageContent(decoding: encoded)
            guard case .call(let call) = content.body else { throw VectorCheckFailure("did not decode as a call message") }
            try check(Int(call.kind.rawValue), try test.int("kind"), "kind")
            if try test.bool("canonical") {
                try check(content.encoded(), encoded, "MessageContent.encoded() of the decoded content")
            }
            try check(try MessageContent(decoding: content.encoded()), content, "the decoded content, encoded and decoded again")
            try check(call.callID, proto.call.callID, "callID")
            try check(call.signalBinding, proto.call.signalBinding, "signalBinding")
        }
        switch (outcome, violation) {
        case (.valid, nil), (.invalid, .some): return outcome
        case (.valid, .some(let rule)): throw VectorCheckFailure("MessageContent accepted a call message that breaks: \(rule)")
        case (.invalid, nil): throw VectorCheckFailure("MessageContent refused a call message the specification accepts")
        }
    }

    /// The first rule of calls.md 4.1 (and the message's own field lengths) that `content` breaks, or nil.
    static func rule(broken content: ProtoContent) -> String? {
        guard case .call(let call)? = content.body else { return "not a call message" }
        if call.callID.count != 16 { return "call id of 16 bytes" }
        if call.signalBinding.count != 32 { return "binding of 32 bytes" }
        func candidates(_ list: [ProtoIceCandidate]) -> String? {
            if list.count > 16 { return "at most 16 candidates" }
            for candidate in list {
                if ![1, 2, 3].contains(candidate.type.rawValue) { return "candidate type known" }
                var v4 = in_addr(), v6 = in6_addr()
                if inet_pton(AF_INET, candidate.address, &v4) != 1 && inet_pton(AF_INET6, candidate.address, &v6) != 1 {
                    return "candidate address a literal"
                }
                if candidate.port < 1 || candidate.port > 65_535 { return "candidate port 1 to 65 535" }
            }
            return nil
        }
        switch call.body {
        case .offer(let offer)?:
            if offer.version != 1 || offer.media.rawValue != 1 || offer.ephemeralKey.count != 32 { return "version 1, audio, 32-byte key" }
            if !(1...8).contains(offer.codecs.count) { return "1 to 8 codecs" }
            if !(1...4).contains(offer.srtpProfiles.count) { return "1 to 4 profiles" }
            if !offer.srtpProfiles.contains(where: { [1, 2].contains($0.rawValue) }) { return "a known profile" }
            return candidates(offer.candidates)
        case .answer(let answer)?:
            if answer.version != 1 || answer.media.rawValue != 1 || answer.ephemeralKey.count != 32 { return "version 1, audio, 32-byte key" }
            if !answer.hasCodec { return "a codec" }
            if ![1, 2].contains(answer.srtpProfile.rawValue) { return "a known profile" }
            return candidates(answer.candidates)
        case .ice(let ice)?: return candidates(ice.candidates)
        case .hangup?, .busy?: return nil
        case nil: return "a body"
        }
    }
}
