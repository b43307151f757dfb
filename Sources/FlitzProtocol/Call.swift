import FlitzCrypto
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// The call layer's values (protocol/calls.md 4 and 5): call messages, the signal binding and the SRTP key
// derivation. `MessageContent.Body.call` encodes and decodes through `CallMessage.proto` / `init(proto:)` below.

/// The kind of a call signal, as the relay sees it (`CallSignalKind` in flitz_wire.proto; protocol/calls.md 3).
public enum CallSignalKind: UInt8, Sendable, Hashable {
    case offer = 1, answer = 2, ice = 3, hangup = 4, busy = 5
}

/// SRTP profile of a call (`SrtpProfile` in flitz_session.proto; protocol/calls.md 5). Raw values are the enum's
/// numbers, which the key derivation binds.
public enum CallSRTPProfile: UInt8, Sendable, Hashable, CaseIterable {
    /// SRTP_AEAD_AES_256_GCM: 32-byte master key, 12-byte master salt. Preferred.
    case aeadAES256GCM = 1
    /// SRTP_AES128_CM_HMAC_SHA1_80: 16-byte master key, 14-byte master salt. Fallback.
    case aes128CMHMACSHA1_80 = 2

    /// Master key length in bytes.
    public var keyLength: Int { self == .aeadAES256GCM ? 32 : 16 }
    /// Master salt length in bytes.
    public var saltLength: Int { self == .aeadAES256GCM ? 12 : 14 }
}

/// An audio codec of an offer or answer (`AudioCodec`). Version 1 knows only PCMU.
public struct CallAudioCodec: Sendable, Hashable {
    /// "PCMU".
    public let name: String
    /// RTP payload type, 0 for PCMU.
    public let payloadType: UInt8
    /// Hz, 8 000 for PCMU.
    public let clockRate: UInt32
    /// Milliseconds per packet, 20.
    public let frameMilliseconds: UInt32

    /// G.711 µ-law, payload type 0, 8 000 Hz, 20 ms.
    public static let pcmu = CallAudioCodec(name: "PCMU", payloadType: 0, clockRate: 8000, frameMilliseconds: 20)

    public init(name: String, payloadType: UInt8, clockRate: UInt32, frameMilliseconds: UInt32) {
        self.name = name
        self.payloadType = payloadType
        self.clockRate = clockRate
        self.frameMilliseconds = frameMilliseconds
    }
}

/// A UDP ICE candidate inside a call message (`IceCandidate`; protocol/calls.md 4.1 and 7.1).
public struct CallCandidate: Sendable, Hashable {
    public enum Kind: UInt8, Sendable, Hashable { case host = 1, serverReflexive = 2, relayed = 3 }
    public let kind: Kind
    /// IPv4 or IPv6 literal.
    public let address: String
    /// 1 to 65535.
    public let port: UInt16
    /// RFC 8445 priority.
    public let priority: UInt32

    public init(kind: Kind, address: String, port: UInt16, priority: UInt32) {
        self.kind = kind
        self.address = address
        self.port = port
        self.priority = priority
    }
}

/// Why a call ended (`HangupReason`).
public enum CallHangupReason: UInt8, Sendable, Hashable {
    case normal = 1, declined = 2, answeredElsewhere = 3, noAnswer = 4, failed = 5, declinedElsewhere = 6
}

/// The caller's offer (`CallOffer`).
public struct CallOffer: Sendable, Hashable {
    /// 1 to 8, in preference order.
    public let codecs: [CallAudioCodec]
    /// 32-byte X25519 public key, fresh for this call.
    public let ephemeralKey: X25519PublicKey
    /// 1 to 4, in preference order.
    public let profiles: [CallSRTPProfile]
    /// 0 to 16.
    public let candidates: [CallCandidate]

    public init(codecs: [CallAudioCodec], ephemeralKey: X25519PublicKey, profiles: [CallSRTPProfile], candidates: [CallCandidate]) {
        self.codecs = codecs
        self.ephemeralKey = ephemeralKey
        self.profiles = profiles
        self.candidates = candidates
    }
}

/// The callee's answer (`CallAnswer`).
public struct CallAnswer: Sendable, Hashable {
    public let codec: CallAudioCodec
    /// 32-byte X25519 public key, fresh for this call.
    public let ephemeralKey: X25519PublicKey
    public let profile: CallSRTPProfile
    /// 0 to 16.
    public let candidates: [CallCandidate]

    public init(codec: CallAudioCodec, ephemeralKey: X25519PublicKey, profile: CallSRTPProfile, candidates: [CallCandidate]) {
        self.codec = codec
        self.ephemeralKey = ephemeralKey
        self.profile = profile
        self.candidates = candidates
    }
}

/// The plaintext of one call signal (`CallMessage`; protocol/calls.md 4), carried as `MessageContent.Body.call`.
public struct CallMessage: Sendable, Hashable {
    public enum Body: Sendable, Hashable {
        case offer(CallOffer)
        case answer(CallAnswer)
        /// Trickled candidates (0 to 16) and whether they are the last.
        case ice(candidates: [CallCandidate], endOfCandidates: Bool)
        case hangup(CallHangupReason)
        case busy
    }

    /// 16 bytes.
    public let callID: Data
    /// 32 bytes: `CallSignalBinding.hash` of the signal's relay-visible fields.
    public let signalBinding: Data
    public let body: Body

    public init(callID: Data, signalBinding: Data, body: Body) {
        self.callID = callID
        self.signalBinding = signalBinding
        self.body = body
    }

    /// The signal kind this body travels as.
    public var kind: CallSignalKind {
        switch body {
        case .offer: .offer
        case .answer: .answer
        case .ice: .ice
        case .hangup: .hangup
        case .busy: .busy
        }
    }
}

/// The relay-visible fields of one call signal, as bound into its ciphertext (protocol/calls.md 4.2).
public struct CallSignalFields: Sendable, Hashable {
    /// 16 bytes.
    public var callID: Data
    public var kind: CallSignalKind
    public var senderHandle: String
    public var senderDeviceID: UInt32
    public var recipientHandle: String
    public var recipientDeviceID: UInt32
    /// Per (call id, sending device), from 1.
    public var sequence: UInt32
    /// Sender's clock, ms since the Unix epoch.
    public var sentAtMilliseconds: Int64
    /// Effective ttl in seconds (60-90 for an offer, 1-90 otherwise).
    public var ttlSeconds: UInt32

    public init(callID: Data, kind: CallSignalKind, senderHandle: String, senderDeviceID: UInt32, recipientHandle: String,
                recipientDeviceID: UInt32, sequence: UInt32, sentAtMilliseconds: Int64, ttlSeconds: UInt32) {
        self.callID = callID
        self.kind = kind
        self.senderHandle = senderHandle
        self.senderDeviceID = senderDeviceID
        self.recipientHandle = recipientHandle
        self.recipientDeviceID = recipientDeviceID
        self.sequence = sequence
        self.sentAtMilliseconds = sentAtMilliseconds
        self.ttlSeconds = ttlSeconds
    }

    /// The 32-byte signal binding (protocol/calls.md 4.2):
    /// `SHA-256("FlitzCallSignal-v1" ‖ 0x00 ‖ call_id ‖ u8(kind) ‖ u8(len) ‖ sender handle ‖ u32be(sender device)
    /// ‖ u8(len) ‖ recipient handle ‖ u32be(recipient device) ‖ u32be(sequence) ‖ i64be(sent_at_ms) ‖ u32be(ttl))`.
    /// The call id is taken as given (16 bytes in every valid signal); a handle longer than 255 UTF-8 bytes (never a
    /// valid handle) is cut to 255 bytes so the length byte stays true to what is hashed.
    public var binding: Data {
        var input = Data("FlitzCallSignal-v1".utf8)
        input.append(0)
        input.append(callID)
        input.append(kind.rawValue)
        for (handle, device) in [(senderHandle, senderDeviceID), (recipientHandle, recipientDeviceID)] {
            let bytes = Data(handle.utf8).prefix(255)
            input.append(UInt8(bytes.count))
            input.append(bytes)
            input.appendBigEndian(device)
        }
        input.appendBigEndian(sequence)
        input.appendBigEndian(UInt64(bitPattern: sentAtMilliseconds))
        input.appendBigEndian(ttlSeconds)
        return SHA256.hash(input)
    }
}

/// One direction's SRTP master key and salt.
public struct CallMasterKey: Sendable {
    /// `profile.keyLength` bytes.
    public let key: SecretBytes
    /// `profile.saltLength` bytes.
    public let salt: SecretBytes

    public init(key: SecretBytes, salt: SecretBytes) {
        self.key = key
        self.salt = salt
    }
}

/// The SRTP keys of a call (protocol/calls.md 5).
public struct CallKeys: Sendable {
    public let profile: CallSRTPProfile
    public let callerToCallee: CallMasterKey
    public let calleeToCaller: CallMasterKey

    /// Derives both directions' master keys and salts.
    /// - Parameters:
    ///   - ownEphemeral: this side's call ephemeral private key; `peerEphemeral` the other side's public key.
    ///   - isCaller: whether this side made the offer (it decides the order of the salt `E_A ‖ E_B`).
    ///   - callID: 16 bytes. Device ids and 32-byte Ed25519 account identity keys of caller and callee.
    /// - Throws: `FlitzProtocolError.invalidKey` when the shared secret is all zero (non-contributory) or a
    ///   length is wrong.
    public static func derive(
        profile: CallSRTPProfile, ownEphemeral: X25519PrivateKey, peerEphemeral: X25519PublicKey, isCaller: Bool,
        callID: Data, callerDeviceID: UInt32, calleeDeviceID: UInt32,
        callerIdentityKey: Ed25519PublicKey, calleeIdentityKey: Ed25519PublicKey
    ) throws(FlitzProtocolError) -> CallKeys {
        guard callID.count == 16 else { throw FlitzProtocolError(.invalidKey, "call id must be 16 bytes") }
        let shared: SecretBytes
        do {
            shared = try ownEphemeral.sharedSecret(with: peerEphemeral)
        } catch {
            throw FlitzProtocolError(.invalidKey, "call key agreement is non-contributory")
        }
        let callerKey = isCaller ? ownEphemeral.publicKey : peerEphemeral
        let calleeKey = isCaller ? peerEphemeral : ownEphemeral.publicKey
        var salt = callerKey.rawRepresentation
        salt.append(calleeKey.rawRepresentation)
        var info = Data("FlitzCallSRTP-v1".utf8)
        info.append(0)
        info.append(profile.rawValue)
        info.append(callID)
        info.appendBigEndian(callerDeviceID)
        info.appendBigEndian(calleeDeviceID)
        info.append(callerIdentityKey.rawRepresentation)
        info.append(calleeIdentityKey.rawRepresentation)
        let (k, s) = (profile.keyLength, profile.saltLength)
        // Cannot throw: at most 2 × 46 bytes.
        let okm = try! HKDF.deriveKey(inputKeyMaterial: shared, salt: salt, info: info, length: 2 * (k + s))
        return CallKeys(
            profile: profile,
            callerToCallee: CallMasterKey(key: okm.slice(0..<k), salt: okm.slice(k..<(k + s))),
            calleeToCaller: CallMasterKey(key: okm.slice((k + s)..<(2 * k + s)), salt: okm.slice((2 * k + s)..<(2 * k + 2 * s))))
    }

    public init(profile: CallSRTPProfile, callerToCallee: CallMasterKey, calleeToCaller: CallMasterKey) {
        self.profile = profile
        self.callerToCallee = callerToCallee
        self.calleeToCaller = calleeToCaller
    }
}

extension Data {
    /// Appends `value` in network byte order.
    fileprivate mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.bigEndian) { append(contentsOf: $0) }
    }
}

/// The limits of call messages (protocol/calls.md 4.1).
public enum CallLimits {
    /// The only `CallOffer.version` / `CallAnswer.version`.
    public static let version: UInt32 = 1
    /// Codecs in an offer.
    public static let offerCodecs: ClosedRange<Int> = 1...8
    /// SRTP profiles in an offer.
    public static let offerProfiles: ClosedRange<Int> = 1...4
    /// Candidates in one offer, answer or `CallIceCandidates`.
    public static let maxCandidates = 16
    /// Bytes of a call id.
    public static let callIDLength = 16
    /// Bytes of a signal binding.
    public static let bindingLength = 32
}

extension CallAnswer {
    /// Whether this answer's codec and profile are among `offer`'s (protocol/calls.md 4.1: otherwise the answer is
    /// dropped). The receiver of an answer checks this against the offer it sent.
    public func matches(_ offer: CallOffer) -> Bool {
        offer.codecs.contains(codec) && offer.profiles.contains(profile)
    }
}

extension CallMessage {
    /// The `CallMessage` proto of this message.
    var proto: ProtoCallMessage {
        var message = ProtoCallMessage()
        message.callID = callID
        message.signalBinding = signalBinding
        switch body {
        case .offer(let offer):
            var proto = ProtoCallOffer()
            proto.version = CallLimits.version
            proto.media = .audio
            proto.codecs = offer.codecs.map(Self.proto)
            proto.ephemeralKey = offer.ephemeralKey.rawRepresentation
            proto.srtpProfiles = offer.profiles.map(Self.proto)
            proto.candidates = offer.candidates.map(Self.proto)
            message.body = .offer(proto)
        case .answer(let answer):
            var proto = ProtoCallAnswer()
            proto.version = CallLimits.version
            proto.media = .audio
            proto.codec = Self.proto(answer.codec)
            proto.ephemeralKey = answer.ephemeralKey.rawRepresentation
            proto.srtpProfile = Self.proto(answer.profile)
            proto.candidates = answer.candidates.map(Self.proto)
            message.body = .answer(proto)
        case .ice(let candidates, let endOfCandidates):
            var proto = ProtoCallIceCandidates()
            proto.candidates = candidates.map(Self.proto)
            proto.endOfCandidates = endOfCandidates
            message.body = .ice(proto)
        case .hangup(let reason):
            var proto = ProtoCallHangup()
            proto.reason = ProtoHangupReason(rawValue: Int(reason.rawValue)) ?? .hangupNormal
            message.body = .hangup(proto)
        case .busy:
            message.body = .busy(ProtoCallBusy())
        }
        return message
    }

    /// Decodes and checks a `CallMessage` proto by protocol/calls.md 4.1's rules.
    /// - Throws: `FlitzProtocolError.malformedMessage` naming the rule broken: a call id that is not 16 bytes, a
    ///   binding that is not 32 bytes, no body, a version other than 1, media other than audio, an ephemeral key that
    ///   is not 32 bytes, an offer with 0 or more than 8 codecs or 0 or more than 4 profiles (or none this version
    ///   knows), an answer without a codec or with an unknown profile, more than 16 candidates, a candidate of an
    ///   unknown type, whose address is not an IPv4 or IPv6 literal or whose port is not 1 to 65535.
    init(proto message: ProtoCallMessage) throws(FlitzProtocolError) {
        guard message.callID.count == CallLimits.callIDLength else { throw Self.malformed("call id must be 16 bytes") }
        guard message.signalBinding.count == CallLimits.bindingLength else {
            throw Self.malformed("signal binding must be 32 bytes")
        }
        let body: Body
        switch message.body {
        case .offer(let offer):
            try Self.checkHeader(version: offer.version, media: offer.media)
            guard CallLimits.offerCodecs.contains(offer.codecs.count) else {
                throw Self.malformed("an offer has 1 to 8 codecs")
            }
            guard CallLimits.offerProfiles.contains(offer.srtpProfiles.count) else {
                throw Self.malformed("an offer has 1 to 4 SRTP profiles")
            }
            // Profiles a later version adds are skipped; at least one must be known.
            let profiles = offer.srtpProfiles.compactMap { CallSRTPProfile(rawValue: UInt8(clamping: $0.rawValue)) }
            guard !profiles.isEmpty else { throw Self.malformed("an offer has no known SRTP profile") }
            body = .offer(CallOffer(
                codecs: offer.codecs.map(Self.codec), ephemeralKey: try Self.ephemeralKey(offer.ephemeralKey),
                profiles: profiles, candidates: try Self.candidates(offer.candidates)))
        case .answer(let answer):
            try Self.checkHeader(version: answer.version, media: answer.media)
            guard answer.hasCodec else { throw Self.malformed("an answer has a codec") }
            guard let profile = CallSRTPProfile(rawValue: UInt8(clamping: answer.srtpProfile.rawValue)) else {
                throw Self.malformed("an answer's SRTP profile is a known one")
            }
            body = .answer(CallAnswer(
                codec: Self.codec(answer.codec), ephemeralKey: try Self.ephemeralKey(answer.ephemeralKey),
                profile: profile, candidates: try Self.candidates(answer.candidates)))
        case .ice(let ice):
            body = .ice(candidates: try Self.candidates(ice.candidates), endOfCandidates: ice.endOfCandidates)
        case .hangup(let hangup):
            // Unspecified is normal (flitz_session.proto); a reason a later version adds reads as normal too.
            body = .hangup(CallHangupReason(rawValue: UInt8(clamping: hangup.reason.rawValue)) ?? .normal)
        case .busy:
            body = .busy
        case nil:
            throw Self.malformed("a call message has a body")
        }
        self.init(callID: message.callID, signalBinding: message.signalBinding, body: body)
    }

    private static func malformed(_ rule: String) -> FlitzProtocolError {
        FlitzProtocolError(.malformedMessage, "call message: \(rule)")
    }

    private static func checkHeader(version: UInt32, media: ProtoCallMedia) throws(FlitzProtocolError) {
        guard version == CallLimits.version else { throw malformed("version must be 1") }
        guard media == .audio else { throw malformed("media must be audio") }
    }

    private static func ephemeralKey(_ bytes: Data) throws(FlitzProtocolError) -> X25519PublicKey {
        guard let key = try? X25519PublicKey(rawRepresentation: bytes) else {
            throw malformed("ephemeral key must be 32 bytes")
        }
        return key
    }

    private static func candidates(_ protos: [ProtoIceCandidate]) throws(FlitzProtocolError) -> [CallCandidate] {
        guard protos.count <= CallLimits.maxCandidates else { throw malformed("at most 16 candidates per message") }
        var candidates: [CallCandidate] = []
        for proto in protos {
            guard let kind = CallCandidate.Kind(rawValue: UInt8(clamping: proto.type.rawValue)) else {
                throw malformed("candidate type must be known")
            }
            guard CallCandidate.isIPLiteral(proto.address) else {
                throw malformed("candidate address must be an IPv4 or IPv6 literal")
            }
            guard (1...65535).contains(proto.port) else { throw malformed("candidate port must be 1 to 65535") }
            candidates.append(CallCandidate(kind: kind, address: proto.address, port: UInt16(proto.port), priority: proto.priority))
        }
        return candidates
    }

    private static func codec(_ proto: ProtoAudioCodec) -> CallAudioCodec {
        CallAudioCodec(name: proto.name, payloadType: UInt8(clamping: proto.payloadType), clockRate: proto.clockRate,
                       frameMilliseconds: proto.frameMs)
    }

    private static func proto(_ codec: CallAudioCodec) -> ProtoAudioCodec {
        var proto = ProtoAudioCodec()
        proto.name = codec.name
        proto.payloadType = UInt32(codec.payloadType)
        proto.clockRate = codec.clockRate
        proto.frameMs = codec.frameMilliseconds
        return proto
    }

    private static func proto(_ profile: CallSRTPProfile) -> ProtoSrtpProfile {
        ProtoSrtpProfile(rawValue: Int(profile.rawValue)) ?? .unspecified
    }

    private static func proto(_ candidate: CallCandidate) -> ProtoIceCandidate {
        var proto = ProtoIceCandidate()
        proto.type = ProtoCandidateType(rawValue: Int(candidate.kind.rawValue)) ?? .unspecified
        proto.address = candidate.address
        proto.port = UInt32(candidate.port)
        proto.priority = candidate.priority
        return proto
    }
}

extension CallCandidate {
    /// Whether `address` is an IPv4 literal (dotted quad) or an IPv6 literal (RFC 4291 text form, no zone), as
    /// `inet_pton` reads them; host names are not.
    public static func isIPLiteral(_ address: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, address, &v4) == 1 || inet_pton(AF_INET6, address, &v6) == 1
    }
}
