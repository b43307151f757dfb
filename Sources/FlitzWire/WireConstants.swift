import Foundation

/// Constants and limits of the relay wire protocol, version 1 (`protocol/relay.md`, "Limits").
public enum WireConstants {
    /// The only `Frame.version` this build speaks.
    public static let protocolVersion: UInt32 = 1
    /// Every `Frame.version` this build speaks, ascending; sent in `Challenge.supported_versions`.
    public static let supportedVersions: [UInt32] = [1]
    /// Largest WebSocket message either side accepts, in bytes (1 MiB).
    public static let maxFrameBytes = 1_048_576
    /// Largest `OutgoingEnvelope.ciphertext`, in bytes (64 KiB).
    public static let maxCiphertextBytes = 65_536
    /// Most envelopes in one `Submit`.
    public static let maxEnvelopesPerSubmit = 100
    /// Most items (envelopes plus receipts) the relay puts in one `Deliver` frame.
    public static let maxItemsPerDeliver = 100
    /// Most one-time prekeys in one `Register`, `Recover` or `PublishPreKeys`.
    public static let maxOneTimePreKeysPerFrame = 200
    /// Most one-time prekeys the relay stores for one device; `PublishPreKeys` beyond it is refused.
    public static let maxOneTimePreKeysStored = 1_000
    /// Most one-time KEM prekeys in one `Register`, `Recover` or `PublishPreKeys` (each is about 1.6 KiB).
    public static let maxOneTimeKEMPreKeysPerFrame = 50
    /// Most one-time KEM prekeys the relay stores for one device.
    public static let maxOneTimeKEMPreKeysStored = 100
    /// Length of an ML-KEM-1024 encapsulation key, in bytes.
    public static let kemPublicKeyLength = 1568
    /// Most ids in one `Acknowledge` or `ReportSeen`.
    public static let maxIDsPerFrame = 1_000
    /// Length of an envelope id, a receipt id and a message id, in bytes.
    public static let idLength = 16
    /// Length of the relay's challenge nonce, in bytes.
    public static let challengeNonceLength = 32
    /// Length of an Ed25519 or X25519 public key, in bytes.
    public static let publicKeyLength = 32
    /// Length of an Ed25519 signature, in bytes.
    public static let signatureLength = 64
    /// Shortest and longest handle, in characters.
    public static let handleLengthRange = 3...32
    /// Most current devices of one account (`MAX_DEVICES`, `protocol/devices.md` section 10); a
    /// `RegisterDevice` beyond it gets `TOO_MANY_DEVICES`.
    public static let maxDevicesPerAccount = DeviceListPayload.maxDevices
    /// Length of a pairing rendezvous id (`LinkPut`, `LinkTake`), in bytes (`devices.md` 5.2).
    public static let rendezvousIDLength = 16
    /// Pairing slots: 1 offer, 2 grant, 3 done (`devices.md` 5.3).
    public static let linkSlots: ClosedRange<UInt32> = 1...3
    /// Size of one pairing message (`LinkPut.message`), in bytes.
    public static let linkMessageBytes = 1...1_024
    /// Default lifetime of a pairing message at the relay, in seconds (10 minutes; `relay.linkLifetime`).
    public static let defaultLinkLifetimeSeconds = 600
}

/// Handles: 3 to 32 characters of `a`-`z`, `0`-`9`, `_` and `.` (`protocol/relay.md`, "Handles").
public enum Handle {
    /// Whether `handle` is a valid handle. Upper case is not folded: `Alice` is invalid.
    public static func isValid(_ handle: String) -> Bool {
        guard WireConstants.handleLengthRange.contains(handle.utf8.count) else { return false }
        return handle.utf8.allSatisfy { byte in
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".")
        }
    }
}

/// Byte layouts that are signed and checked on both sides of the wire (`protocol/relay.md`,
/// "Signed payloads"). The relay verifies these signatures, so they live here and not in FlitzProtocol.
public enum SignedPayload {
    /// ASCII label that starts the authentication payload.
    public static let authenticationLabel = Array("FlitzAuthentication-v1".utf8)
    /// ASCII label that starts the device certificate payload.
    public static let deviceCertificateLabel = Array("FlitzDeviceCertificate-v1".utf8)
    /// ASCII label that starts the KEM prekey payload.
    public static let kemPreKeyLabel = Array("FlitzKEMPreKey-v1".utf8)

    /// What the device identity key signs for a KEM prekey (`protocol/crypto.md`, "Keys"):
    /// label ‖ 0x00 ‖ kind (0x01 one-time, 0x02 last-resort) ‖ u32be(id) ‖ 1568-byte ML-KEM-1024 public key.
    public static func kemPreKey(id: UInt32, lastResort: Bool, publicKey: Data) -> Data {
        var out = Data(kemPreKeyLabel)
        out.append(0)
        out.append(lastResort ? 0x02 : 0x01)
        out.append(contentsOf: withUnsafeBytes(of: id.bigEndian) { Array($0) })
        out.append(publicKey)
        return out
    }

    /// What a device signs to prove it holds its device identity key on this connection:
    /// label ‖ 0x00 ‖ 32-byte challenge nonce ‖ UTF-8 handle.
    public static func authentication(nonce: Data, handle: String) -> Data {
        var out = Data(authenticationLabel)
        out.append(0)
        out.append(nonce)
        out.append(contentsOf: Array(handle.utf8))
        return out
    }

    /// What the account identity key signs to certify a device:
    /// label ‖ 0x00 ‖ 32-byte account identity key ‖ 32-byte device identity key (both raw Ed25519).
    public static func deviceCertificate(accountIdentityKey: Data, deviceIdentityKey: Data) -> Data {
        var out = Data(deviceCertificateLabel)
        out.append(0)
        out.append(accountIdentityKey)
        out.append(deviceIdentityKey)
        return out
    }
}
