import FlitzCrypto
import Foundation

// CONTRACT SKELETON (issue 8): the public API the client builds against. The media helpers replace every
// `fatalError` with the real implementation; names and shapes change only together with their callers.

/// SRTP protection profile (protocol/calls.md 5 and 6; RFC 7714, RFC 3711).
public enum SRTPProfile: UInt8, Sendable, CaseIterable {
    /// AEAD_AES_256_GCM: 32-byte master key, 12-byte master salt, 16-byte tag. Preferred.
    case aeadAES256GCM = 1
    /// AES_CM_128_HMAC_SHA1_80: 16-byte master key, 14-byte master salt, 10-byte tag. Fallback.
    case aes128CMHMACSHA1_80 = 2

    /// Master key length in bytes (32 or 16).
    public var keyLength: Int { self == .aeadAES256GCM ? 32 : 16 }
    /// Master salt length in bytes (12 or 14).
    public var saltLength: Int { self == .aeadAES256GCM ? 12 : 14 }
}

/// One direction's SRTP master key and master salt (protocol/calls.md 5).
public struct SRTPMasterKey: Sendable {
    /// `profile.keyLength` bytes.
    public let key: SecretBytes
    /// `profile.saltLength` bytes.
    public let salt: SecretBytes

    /// - Parameters: key and salt of the lengths `SRTPProfile` gives.
    public init(key: SecretBytes, salt: SecretBytes) {
        self.key = key
        self.salt = salt
    }
}

/// The keys of one call as one side uses them: it protects with `send` and unprotects with `receive`.
public struct CallSRTPKeys: Sendable {
    public let profile: SRTPProfile
    public let send: SRTPMasterKey
    public let receive: SRTPMasterKey

    public init(profile: SRTPProfile, send: SRTPMasterKey, receive: SRTPMasterKey) {
        self.profile = profile
        self.send = send
        self.receive = receive
    }
}

/// A UDP ICE candidate (protocol/calls.md 7.1).
public struct MediaCandidate: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: UInt8, Sendable { case host = 1, serverReflexive = 2, relayed = 3 }
    public let kind: Kind
    /// An IPv4 or IPv6 literal.
    public let address: String
    /// 1 to 65535.
    public let port: UInt16
    /// RFC 8445 5.1.2 priority; higher is tried first.
    public let priority: UInt32

    public init(kind: Kind, address: String, port: UInt16, priority: UInt32) {
        self.kind = kind
        self.address = address
        self.port = port
        self.priority = priority
    }

    public var description: String { "\(kind) \(address):\(port)" }
}

/// A TURN server and the long-term credential the relay provisioned (protocol/calls.md 3.5 and 7.1).
public struct TURNServer: Sendable {
    /// Host name or IP literal of the TURN server, and its UDP port (3478 by default).
    public let host: String
    public let port: UInt16
    /// coturn REST-API username "EXPIRY:ID" and its 28-character base64 password.
    public let username: String
    public let password: String

    public init(host: String, port: UInt16, username: String, password: String) {
        self.host = host
        self.port = port
        self.username = username
        self.password = password
    }
}

/// How a call gathers its candidates (protocol/calls.md 7.1).
public struct GatherOptions: Sendable {
    /// STUN servers as (host, UDP port).
    public var stunServers: [(host: String, port: UInt16)]
    public var turnServers: [TURNServer]
    /// false: relay-only mode: only the relayed candidate is offered, and media goes only through TURN.
    public var hostCandidates: Bool
    /// How long to wait for server-reflexive and relayed candidates before the offer or answer goes out
    /// (3 s in protocol/calls.md 10); later ones arrive on `CallMediaSession.trickledCandidates`.
    public var gatherTimeout: Duration

    public init(stunServers: [(host: String, port: UInt16)] = [], turnServers: [TURNServer] = [],
                hostCandidates: Bool = true, gatherTimeout: Duration = .seconds(3)) {
        self.stunServers = stunServers
        self.turnServers = turnServers
        self.hostCandidates = hostCandidates
        self.gatherTimeout = gatherTimeout
    }
}

/// What a call plays and records (protocol/calls.md 6).
public struct AudioOptions: Sendable {
    /// A 16-bit PCM mono 8 000 Hz WAV file to send; nil sends µ-law silence. Other formats are refused by
    /// `CallMediaSession.start` with `MediaError.unsupportedAudio` naming the ffmpeg command that converts them.
    public var playFile: URL?
    /// Where received audio goes: a 16-bit PCM mono 8 000 Hz WAV, laid out by RTP timestamp (gaps are silence),
    /// complete (header sizes written) when `stop()` returns.
    public var recordFile: URL?

    public init(playFile: URL? = nil, recordFile: URL? = nil) {
        self.playFile = playFile
        self.recordFile = recordFile
    }
}

/// How media reached the peer: the locked path (protocol/calls.md 7.2).
public struct MediaPath: Sendable, Equatable, CustomStringConvertible {
    /// The peer's address media is sent to now.
    public let peerAddress: String
    public let peerPort: UInt16
    /// true: through this side's TURN allocation.
    public let viaTURN: Bool

    public init(peerAddress: String, peerPort: UInt16, viaTURN: Bool) {
        self.peerAddress = peerAddress
        self.peerPort = peerPort
        self.viaTURN = viaTURN
    }

    public var description: String { "\(viaTURN ? "via TURN to " : "direct to ")\(peerAddress):\(peerPort)" }
}

/// Per-call counters (protocol/calls.md 6, "Statistics").
public struct CallStatistics: Sendable, Equatable {
    public var packetsSent: UInt64 = 0
    /// Packets that authenticated and were played (or recorded).
    public var packetsReceived: UInt64 = 0
    /// Expected from the extended sequence range minus received.
    public var packetsLost: UInt64 = 0
    /// Failed authentication, replays and packets older than the replay window.
    public var packetsDropped: UInt64 = 0
    /// RFC 3550 A.8 interarrival jitter, milliseconds.
    public var jitterMs: Double = 0

    public init() {}
}

/// Something that happened to the media of a call.
public enum MediaEvent: Sendable, Equatable {
    /// The first packet authenticated: media is connected on `path`.
    case connected(MediaPath)
    /// The play file has been sent to its end (silence follows).
    case playbackFinished
    /// Media could not connect within 15 s of `start`, or stopped for 10 s (protocol/calls.md 7.3).
    case failed(String)
}

/// Errors of FlitzMedia.
public struct MediaError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        case unsupportedAudio, unreadableAudio, socket, stun, turn, srtp, invalidCandidate
    }
    public let code: Code
    /// Human-readable English; never contains keys or packet contents.
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// The media of one call: one UDP socket, its candidates, one SRTP send and one receive session, the audio
/// pump (20 ms PCMU packets) and the recorder (protocol/calls.md 6 and 7).
public final class CallMediaSession: Sendable {
    /// Binds the socket and gathers candidates for at most `options.gatherTimeout`.
    /// - Throws: `MediaError` `.socket` when no socket can be bound; `.turn` when relay-only mode has no allocation.
    public static func open(options: GatherOptions) async throws(MediaError) -> CallMediaSession {
        fatalError("issue 8 contract skeleton: built by the media helpers")
    }

    /// Candidates known now (host, server-reflexive, relayed), highest priority first.
    public var localCandidates: [MediaCandidate] {
        get async { fatalError("issue 8 contract skeleton") }
    }

    /// Candidates found after `open` returned; finishes when gathering is complete (end of candidates).
    public var trickledCandidates: AsyncStream<[MediaCandidate]> { fatalError("issue 8 contract skeleton") }

    /// Connection, playback and failure events, in order; finishes after `stop()`.
    public var events: AsyncStream<MediaEvent> { fatalError("issue 8 contract skeleton") }

    /// Starts sending to every known peer candidate and receiving (protocol/calls.md 7.2).
    /// - Throws: `MediaError.unsupportedAudio` / `.unreadableAudio` for the play file, `.srtp` when libsrtp
    ///   refuses the keys.
    public func start(keys: CallSRTPKeys, audio: AudioOptions) async throws(MediaError) {
        fatalError("issue 8 contract skeleton")
    }

    /// Adds candidates of the peer (from the answer, the offer or `CallIceCandidates`); ignored once locked.
    public func addPeerCandidates(_ candidates: [MediaCandidate]) async {
        fatalError("issue 8 contract skeleton")
    }

    /// Counters so far.
    public func statistics() async -> CallStatistics { fatalError("issue 8 contract skeleton") }

    /// Stops sending, completes the recording, releases the TURN allocation and the socket; returns the final
    /// counters. Idempotent.
    public func stop() async -> CallStatistics { fatalError("issue 8 contract skeleton") }
}
