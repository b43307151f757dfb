import CFlitzSRTP
import FlitzCrypto
import Foundation

/// libsrtp2 is initialised once per process, on first use (`srtp_init`); the result is kept.
private let srtpLibraryStatus: srtp_err_status_t = srtp_init()

/// Why `SRTPSession.unprotect` dropped a packet (protocol/calls.md 6, "Dropped, never played"). Deliberately
/// coarse for authentication: a bad tag, a bad cipher text and an unknown context are all `.authenticationFailed`.
public enum SRTPDropReason: Error, Sendable, Hashable, CustomStringConvertible {
    /// The packet does not authenticate under the receive key (tampered, wrong key, not SRTP at all).
    case authenticationFailed
    /// The packet index was already received (within the replay window).
    case replayed
    /// The packet index is older than the replay window (128 packets).
    case tooOld
    /// Too short to be an SRTP packet (fewer than 12 header bytes plus the tag) or longer than
    /// `SRTPSession.maximumPacketLength`.
    case malformed

    public var description: String {
        switch self {
        case .authenticationFailed: "SRTP authentication failed"
        case .replayed: "SRTP replay"
        case .tooOld: "SRTP packet older than the replay window"
        case .malformed: "not an SRTP packet"
        }
    }
}

/// One libsrtp2 session: either the send side of a call (one SSRC, the local one) or its receive side (any inbound
/// SSRC), replay window 128 packets, the profile's crypto policy for RTP (protocol/calls.md 6). RTCP is not used.
///
/// Thread-safe: calls are serialised by a lock (libsrtp sessions are not). The key material is copied into
/// libsrtp, and our temporary copy is zeroed; `deinit` deallocates the libsrtp session (libsrtp zeroes it).
public final class SRTPSession: @unchecked Sendable {
    /// Which side of the call this session is.
    public enum Direction: Sendable, Hashable {
        /// Protects outgoing RTP packets whose SSRC is `ssrc` (the local one); packets with another SSRC are refused.
        case send(ssrc: UInt32)
        /// Unprotects incoming SRTP packets of any SSRC (`ssrc_any_inbound`).
        case receive
    }

    /// The replay window, in packets (protocol/calls.md 10).
    public static let replayWindow = 128
    /// The longest RTP packet `protect` accepts and the longest SRTP packet `unprotect` accepts, in bytes
    /// (larger than any UDP payload over Ethernet; PCMU 20 ms packets are 172 bytes before protection).
    public static let maximumPacketLength = 1500

    /// The profile of the keys.
    public let profile: SRTPProfile
    /// Send or receive.
    public let direction: Direction

    private let lock = NSLock()
    private var context: srtp_t?

    /// Creates a libsrtp session for `key` (master key then master salt, as `SRTPProfile` sizes them).
    /// - Throws: `MediaError` `.srtp` when the key or salt length does not match `profile`, or libsrtp cannot be
    ///   initialised or refuses the policy.
    public init(profile: SRTPProfile, key: SRTPMasterKey, direction: Direction) throws(MediaError) {
        self.profile = profile
        self.direction = direction
        guard key.key.count == profile.keyLength, key.salt.count == profile.saltLength else {
            throw MediaError(.srtp, "SRTP master key must be \(profile.keyLength) bytes and salt \(profile.saltLength) bytes")
        }
        guard srtpLibraryStatus == srtp_err_status_ok else {
            throw MediaError(.srtp, "libsrtp2 could not be initialised (status \(srtpLibraryStatus.rawValue))")
        }
        var policy = srtp_policy_t()
        switch profile {
        case .aeadAES256GCM:
            srtp_crypto_policy_set_aes_gcm_256_16_auth(&policy.rtp)
            srtp_crypto_policy_set_aes_gcm_256_16_auth(&policy.rtcp)
        case .aes128CMHMACSHA1_80:
            srtp_crypto_policy_set_rtp_default(&policy.rtp)
            srtp_crypto_policy_set_rtp_default(&policy.rtcp)
        }
        switch direction {
        case .send(let ssrc):
            policy.ssrc = srtp_ssrc_t(type: ssrc_specific, value: ssrc)
        case .receive:
            policy.ssrc = srtp_ssrc_t(type: ssrc_any_inbound, value: 0)
        }
        policy.window_size = UInt(Self.replayWindow)
        policy.allow_repeat_tx = 0
        policy.next = nil
        // libsrtp reads key ‖ salt from one buffer and copies what it derives; the buffer is zeroed on release.
        let material = SecretBytes(count: 64) { buffer in
            buffer.initializeMemory(as: UInt8.self, repeating: 0)
            key.key.withUnsafeBytes { buffer.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            key.salt.withUnsafeBytes {
                (buffer.baseAddress! + profile.keyLength).copyMemory(from: $0.baseAddress!, byteCount: $0.count)
            }
        }
        var session: srtp_t?
        let status = material.withUnsafeBytes { bytes -> srtp_err_status_t in
            // libsrtp only reads the key (srtp_policy_t.key is not const in its header).
            policy.key = UnsafeMutablePointer(mutating: bytes.bindMemory(to: UInt8.self).baseAddress)
            defer { policy.key = nil }
            return srtp_create(&session, &policy)
        }
        guard status == srtp_err_status_ok, let session else {
            throw MediaError(.srtp, "libsrtp2 refused the SRTP policy (status \(status.rawValue))")
        }
        context = session
    }

    deinit {
        if let context { srtp_dealloc(context) }
    }

    /// Protects one RTP packet (header and payload) for sending.
    /// - Parameter rtp: a complete RTP packet of at least 12 bytes and at most `maximumPacketLength`, whose SSRC is
    ///   the session's.
    /// - Returns: the SRTP packet: the header, the encrypted payload and the tag (16 bytes for GCM, 10 for
    ///   HMAC-SHA1-80).
    /// - Throws: `MediaError` `.srtp` for a receive session, a packet of the wrong size or SSRC, or a sequence number
    ///   already protected (libsrtp refuses to reuse a packet index).
    public func protect(_ rtp: [UInt8]) throws(MediaError) -> [UInt8] {
        guard case .send = direction else { throw MediaError(.srtp, "a receive SRTP session cannot protect") }
        guard rtp.count >= RTPHeader.length, rtp.count <= Self.maximumPacketLength else {
            throw MediaError(.srtp, "RTP packet of \(rtp.count) bytes cannot be protected")
        }
        var status = srtp_err_status_ok
        let output = [UInt8](unsafeUninitializedCapacity: rtp.count + Int(SRTP_MAX_TRAILER_LEN)) { buffer, count in
            _ = buffer.initialize(from: rtp)
            var length = Int32(rtp.count)
            lock.lock()
            status = srtp_protect(context, buffer.baseAddress, &length)
            lock.unlock()
            count = status == srtp_err_status_ok ? Int(length) : 0
        }
        guard status == srtp_err_status_ok else {
            throw MediaError(.srtp, "libsrtp2 could not protect the packet (status \(status.rawValue))")
        }
        return output
    }

    /// Unprotects one received SRTP packet. A dropped packet leaves the session unchanged (libsrtp updates the
    /// replay window and rollover counter only for packets that authenticate).
    /// - Returns: the RTP packet (header and decrypted payload, tag removed).
    /// - Throws: `SRTPDropReason` `.authenticationFailed`, `.replayed`, `.tooOld` or `.malformed`; a send session
    ///   throws `.authenticationFailed` for every packet.
    public func unprotect(_ srtp: [UInt8]) throws(SRTPDropReason) -> [UInt8] {
        guard case .receive = direction else { throw .authenticationFailed }
        guard srtp.count >= RTPHeader.length, srtp.count <= Self.maximumPacketLength else { throw .malformed }
        var status = srtp_err_status_ok
        let output = [UInt8](unsafeUninitializedCapacity: srtp.count) { buffer, count in
            _ = buffer.initialize(from: srtp)
            var length = Int32(srtp.count)
            lock.lock()
            status = srtp_unprotect(context, buffer.baseAddress, &length)
            lock.unlock()
            count = status == srtp_err_status_ok ? Int(length) : srtp.count
        }
        switch status {
        case srtp_err_status_ok: return output
        case srtp_err_status_replay_fail: throw .replayed
        case srtp_err_status_replay_old: throw .tooOld
        case srtp_err_status_bad_param, srtp_err_status_parse_err: throw .malformed
        default: throw .authenticationFailed
        }
    }

    /// The libsrtp2 version string, e.g. "libsrtp2 2.5.0" (for benchmark reports).
    public static var libraryVersion: String { String(cString: srtp_get_version_string()) }
}
