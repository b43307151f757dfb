import FlitzCrypto
import Foundation

// CONTRACT SKELETON (issue 8): public API of the call layer (protocol/calls.md 4 and 5). The protocol helper
// replaces each `fatalError` and wires `MessageContent.Body.call` into encoding and decoding.

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

    /// The 32-byte signal binding (protocol/calls.md 4.2).
    public var binding: Data { fatalError("issue 8 contract skeleton: built by the protocol helper") }
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
        fatalError("issue 8 contract skeleton: built by the protocol helper")
    }

    public init(profile: CallSRTPProfile, callerToCallee: CallMasterKey, calleeToCaller: CallMasterKey) {
        self.profile = profile
        self.callerToCallee = callerToCallee
        self.calleeToCaller = calleeToCaller
    }
}
