import FlitzCrypto
import FlitzWire
import Foundation

// Linking a new device D to an account from its primary device P (`protocol/devices.md`, sections 5.2 and 5.3).
// P shows the pairing code, D enters it; every pairing message is `message ‖ HMAC(mac_key, message)` under a key
// derived from the code, carried by the relay as opaque bytes under the rendezvous id.

/// The 32-byte single-use link secret `s` behind a pairing code (devices.md section 5.2). Drawn by the primary
/// device (`flitz devices link`), carried to the new device out of band as the code, never through the relay.
public struct LinkSecret: Sendable {
    /// The code's prefix, `"FLITZLINK1:"`.
    public static let codePrefix = "FLITZLINK1:"
    /// Length of the secret in bytes.
    public static let length = 32
    /// Base32 characters after the prefix (32 bytes, no padding).
    public static let encodedLength = 52

    /// The 32 secret bytes.
    public let secret: SecretBytes

    /// A fresh secret: 32 bytes from `random` (one draw).
    public init(random: any RandomSource = SystemRandom()) {
        secret = SecretBytes(random.bytes(Self.length))
    }

    /// Wraps 32 given bytes (tests, vectors).
    /// - Throws: `FlitzProtocolError.invalidPairingCode` when `secret` is not 32 bytes.
    public init(secret: SecretBytes) throws(FlitzProtocolError) {
        guard secret.count == Self.length else {
            throw FlitzProtocolError(.invalidPairingCode, "a link secret is \(Self.length) bytes, got \(secret.count)")
        }
        self.secret = secret
    }

    /// Parses a pairing code as the user typed or scanned it: case-insensitive; spaces, tabs, newlines and dashes
    /// anywhere are ignored; `"FLITZLINK1:"` then 52 characters of the RFC 4648 base32 alphabet (`A-Z2-7`), no padding.
    /// - Throws: `FlitzProtocolError.invalidPairingCode` saying what is wrong (prefix, length, a character outside the
    ///   alphabet, or non-zero trailing bits); the detail never repeats the code.
    public init(code: String) throws(FlitzProtocolError) {
        let cleaned = code.uppercased().filter { !$0.isWhitespace && $0 != "-" }
        guard cleaned.hasPrefix(Self.codePrefix) else {
            throw FlitzProtocolError(.invalidPairingCode, "a pairing code starts with \(Self.codePrefix)")
        }
        let body = cleaned.dropFirst(Self.codePrefix.count)
        guard body.count == Self.encodedLength else {
            throw FlitzProtocolError(
                .invalidPairingCode, "a pairing code has \(Self.encodedLength) characters after \(Self.codePrefix), this one \(body.count)")
        }
        guard body.utf8.allSatisfy({ Base32.alphabet.contains($0) }) else {
            throw FlitzProtocolError(.invalidPairingCode, "a pairing code uses only the letters A-Z and the digits 2-7 after the prefix")
        }
        guard let bytes = Base32.decode(body) else {
            throw FlitzProtocolError(.invalidPairingCode, "the pairing code's last character cannot end a code (a typo?)")
        }
        secret = SecretBytes(bytes)
    }

    /// The pairing code: `"FLITZLINK1:"` ‖ base32(secret), upper case, no padding: 63 characters, all in the QR
    /// alphanumeric set. Secret: show it only on the primary device's screen.
    public var code: String {
        secret.withUnsafeBytes { Self.codePrefix + Base32.encode(Data($0)) }
    }
}

/// The keys both devices derive from the link secret (devices.md section 5.2):
/// `HKDF(salt = 0x00^32, ikm = s, info = "Flitz-Link-v1", L = 48)` split as rendezvous id (16) ‖ MAC key (32).
public struct LinkKeys: Sendable {
    /// HKDF info.
    public static let info = Data("Flitz-Link-v1".utf8)
    /// Length of the HMAC-SHA-256 tag appended to every pairing message.
    public static let tagLength = 32

    /// 16-byte relay-visible address of this pairing (`LinkPut` / `LinkTake`).
    public let rendezvousID: Data
    /// 32-byte HMAC-SHA-256 key authenticating every pairing message both ways.
    public let macKey: SecretBytes

    /// Derives the keys from `secret`.
    public init(secret: LinkSecret) {
        let out = try! HKDF.deriveKey(inputKeyMaterial: secret.secret, salt: Data(count: 32), info: Self.info, length: 48)
        rendezvousID = Data(out.unsafeData.prefix(16))
        macKey = out.slice(16..<48)
    }

    /// `HMAC-SHA-256(mac_key, message)`, 32 bytes.
    public func tag(_ message: Data) -> Data {
        HMACSHA256.authenticate(message, key: macKey).unsafeData
    }

    /// Whether `tag` is the tag of `message`, compared in constant time.
    public func verify(_ tag: Data, for message: Data) -> Bool {
        tag.count == Self.tagLength && ConstantTime.equals(self.tag(message), tag)
    }

    /// `message ‖ tag(message)`, as a pairing message goes to the rendezvous.
    public func seal(_ message: Data) -> Data {
        message + tag(message)
    }

    /// Checks the tag of `message ‖ tag` and returns `message`.
    /// - Throws: `FlitzProtocolError.malformedMessage` when shorter than the tag; `.authenticationFailed` when the
    ///   tag does not verify (wrong code, or altered by the relay).
    public func open(_ sealed: Data) throws(FlitzProtocolError) -> Data {
        let sealed = Data(sealed)
        guard sealed.count >= Self.tagLength else { throw FlitzProtocolError(.malformedMessage, "pairing message shorter than its tag") }
        let message = sealed.prefix(sealed.count - Self.tagLength)
        guard verify(sealed.suffix(Self.tagLength), for: message) else { throw FlitzProtocolError(.authenticationFailed, "pairing message tag") }
        return Data(message)
    }
}

/// Step 3, D → P: `offer = "FlitzLinkOffer-v1" ‖ 0x00 ‖ IK_D` (50 bytes), sent as `offer ‖ tag(offer)`.
public struct LinkOffer: Hashable, Sendable {
    /// ASCII label (then 0x00).
    public static let label = Data("FlitzLinkOffer-v1".utf8)
    /// The new device's 32-byte Ed25519 device identity key `IK_D`.
    public let deviceIdentityKey: Ed25519PublicKey

    /// An offer for `deviceIdentityKey`.
    public init(deviceIdentityKey: Ed25519PublicKey) {
        self.deviceIdentityKey = deviceIdentityKey
    }

    /// The offer bytes (without tag).
    public var payload: Data { Self.label + Data([0]) + deviceIdentityKey.rawRepresentation }

    /// `payload ‖ tag(payload)`, 82 bytes.
    public func sealed(with keys: LinkKeys) -> Data { keys.seal(payload) }

    /// Checks the tag (P, step 4) and parses the offer.
    /// - Throws: `FlitzProtocolError.authenticationFailed` (bad tag), `.malformedMessage` (not label ‖ 0x00 ‖ 32 bytes).
    public init(opening sealed: Data, with keys: LinkKeys) throws(FlitzProtocolError) {
        let message = try keys.open(sealed)
        let prefix = Self.label + Data([0])
        guard message.count == prefix.count + 32, message.prefix(prefix.count) == prefix,
            let key = try? Ed25519PublicKey(rawRepresentation: message.suffix(32))
        else { throw FlitzProtocolError(.malformedMessage, "link offer") }
        deviceIdentityKey = key
    }
}

/// Step 5, P → D: `grant = "FlitzLinkGrant-v1" ‖ 0x00 ‖ AccK ‖ IK_D ‖ certificate signature (64) ‖
/// u16be(len(handle)) ‖ UTF-8 handle`, sent as `grant ‖ tag(grant)`.
public struct LinkGrant: Hashable, Sendable {
    /// ASCII label (then 0x00).
    public static let label = Data("FlitzLinkGrant-v1".utf8)
    /// The account's certificate over the new device's key (AccK, IK_D, signature).
    public let certificate: DeviceCertificate
    /// The account's handle (3 to 32 bytes of `a-z 0-9 _ .`, relay.md "Limits").
    public let handle: String

    /// A grant (P): `certificate` from `AccountIdentity.certify(offer.deviceIdentityKey)`.
    public init(certificate: DeviceCertificate, handle: String) {
        self.certificate = certificate
        self.handle = handle
    }

    /// The grant bytes (without tag): 18 + 32 + 32 + 64 + 2 + len(handle).
    public var payload: Data {
        var out = Self.label + Data([0])
        out += certificate.accountIdentityKey.rawRepresentation + certificate.deviceIdentityKey.rawRepresentation + certificate.signature
        let handleBytes = Data(handle.utf8)
        out += Data([UInt8(handleBytes.count >> 8 & 0xff), UInt8(handleBytes.count & 0xff)]) + handleBytes
        return out
    }

    /// `payload ‖ tag(payload)`.
    public func sealed(with keys: LinkKeys) -> Data { keys.seal(payload) }

    /// The 32-byte account identity key `AccK`, authenticated by the tag.
    public var accountIdentityKey: Ed25519PublicKey { certificate.accountIdentityKey }

    /// Checks and parses a grant (D, step 6): the tag; the layout; that `IK_D` is `expectedDeviceIdentityKey` (D's
    /// own); that the certificate verifies under `AccK`; that the handle is a valid handle.
    /// - Throws: `FlitzProtocolError.authenticationFailed` (bad tag, another device key, certificate not
    ///   verifying), `.malformedMessage` (layout, lengths, handle not 3-32 bytes of `a-z 0-9 _ .`).
    public init(opening sealed: Data, with keys: LinkKeys, expectedDeviceIdentityKey: Ed25519PublicKey) throws(FlitzProtocolError) {
        let message = Array(try keys.open(sealed))
        let prefix = Array(Self.label + Data([0]))
        let fixed = prefix.count + 32 + 32 + 64 + 2
        guard message.count >= fixed, Array(message[0..<prefix.count]) == prefix else {
            throw FlitzProtocolError(.malformedMessage, "link grant")
        }
        var offset = prefix.count
        func take(_ n: Int) -> Data {
            defer { offset += n }
            return Data(message[offset..<offset + n])
        }
        let accountKeyBytes = take(32), deviceKeyBytes = take(32), signature = take(64)
        let handleLength = Int(message[offset]) << 8 | Int(message[offset + 1])
        offset += 2
        guard message.count == fixed + handleLength else { throw FlitzProtocolError(.malformedMessage, "link grant length") }
        guard let handle = String(validating: message[offset...], as: UTF8.self), LinkGrant.isValidHandle(handle) else {
            throw FlitzProtocolError(.malformedMessage, "link grant handle")
        }
        guard let accountKey = try? Ed25519PublicKey(rawRepresentation: accountKeyBytes),
            let deviceKey = try? Ed25519PublicKey(rawRepresentation: deviceKeyBytes)
        else { throw FlitzProtocolError(.malformedMessage, "link grant keys") }
        guard deviceKey == expectedDeviceIdentityKey else {
            throw FlitzProtocolError(.authenticationFailed, "link grant is for another device key")
        }
        let certificate = DeviceCertificate(accountIdentityKey: accountKey, deviceIdentityKey: deviceKey, signature: signature)
        try certificate.verify()
        self.certificate = certificate
        self.handle = handle
    }

    /// relay.md "Limits": 3 to 32 bytes, each one of `a-z 0-9 _ .`.
    static func isValidHandle(_ handle: String) -> Bool {
        WireConstants.handleLengthRange.contains(handle.utf8.count)
            && handle.utf8.allSatisfy { (0x61...0x7a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5f || $0 == 0x2e }
    }
}

/// Step 7, D → P: `done = "FlitzLinkDone-v1" ‖ 0x00 ‖ u32be(device_id) ‖ IK_D` (53 bytes), sent as `done ‖ tag(done)`.
public struct LinkDone: Hashable, Sendable {
    /// ASCII label (then 0x00).
    public static let label = Data("FlitzLinkDone-v1".utf8)
    /// The device id the relay assigned to D (`RegisterDevice`).
    public let deviceID: UInt32
    /// D's 32-byte device identity key.
    public let deviceIdentityKey: Ed25519PublicKey

    /// A done message (D).
    public init(deviceID: UInt32, deviceIdentityKey: Ed25519PublicKey) {
        self.deviceID = deviceID
        self.deviceIdentityKey = deviceIdentityKey
    }

    /// The done bytes (without tag), 53 bytes.
    public var payload: Data {
        Self.label + Data([0])
            + Data([UInt8(deviceID >> 24 & 0xff), UInt8(deviceID >> 16 & 0xff), UInt8(deviceID >> 8 & 0xff), UInt8(deviceID & 0xff)])
            + deviceIdentityKey.rawRepresentation
    }

    /// `payload ‖ tag(payload)`, 85 bytes.
    public func sealed(with keys: LinkKeys) -> Data { keys.seal(payload) }

    /// Checks and parses a done message (P, step 8): the tag, the layout, and that `IK_D` is the offer's key.
    /// - Throws: `FlitzProtocolError.authenticationFailed` (bad tag, another device key), `.malformedMessage` (layout).
    public init(opening sealed: Data, with keys: LinkKeys, expectedDeviceIdentityKey: Ed25519PublicKey) throws(FlitzProtocolError) {
        let message = Array(try keys.open(sealed))
        let prefix = Array(Self.label + Data([0]))
        guard message.count == prefix.count + 4 + 32, Array(message[0..<prefix.count]) == prefix,
            let key = try? Ed25519PublicKey(rawRepresentation: Data(message.suffix(32)))
        else { throw FlitzProtocolError(.malformedMessage, "link done") }
        guard key == expectedDeviceIdentityKey else { throw FlitzProtocolError(.authenticationFailed, "link done is for another device key") }
        deviceID = message[prefix.count..<prefix.count + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        deviceIdentityKey = key
    }
}

/// The fingerprint of a device identity key, shown on both devices while linking (devices.md section 5.3): the
/// first 8 bytes of `SHA-256("FlitzDeviceFingerprint-v1" ‖ IK)` as 16 uppercase hex digits in four groups of four.
public enum DeviceFingerprint {
    /// ASCII label hashed before the key (no separator byte).
    public static let label = Data("FlitzDeviceFingerprint-v1".utf8)

    /// `"XXXX XXXX XXXX XXXX"` for a 32-byte Ed25519 device identity key.
    public static func of(identityKey: Ed25519PublicKey) -> String {
        let hex = SHA256.hash(label + identityKey.rawRepresentation).prefix(8).map { String(format: "%02X", $0) }.joined()
        return stride(from: 0, to: 16, by: 4).map { offset in
            String(hex[hex.index(hex.startIndex, offsetBy: offset)..<hex.index(hex.startIndex, offsetBy: offset + 4)])
        }.joined(separator: " ")
    }
}

/// RFC 4648 base32 (alphabet `A-Z2-7`) without padding, for pairing codes.
enum Base32 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    /// Upper-case base32 of `data`, no padding.
    static func encode(_ data: Data) -> String {
        var out: [UInt8] = []
        var buffer: UInt32 = 0, bits = 0
        for byte in data {
            buffer = buffer << 8 | UInt32(byte)
            bits += 8
            while bits >= 5 {
                bits -= 5
                out.append(alphabet[Int(buffer >> UInt32(bits) & 31)])
            }
        }
        if bits > 0 { out.append(alphabet[Int(buffer << UInt32(5 - bits) & 31)]) }
        return String(decoding: out, as: UTF8.self)
    }

    /// Bytes of upper-case unpadded base32, or nil for a character outside the alphabet, a length that no byte
    /// string encodes to, or non-zero leftover bits (so every byte string has exactly one code).
    static func decode(_ text: Substring) -> Data? {
        var out = Data()
        var buffer: UInt32 = 0, bits = 0
        for character in text.utf8 {
            guard let value = alphabet.firstIndex(of: character) else { return nil }
            buffer = buffer << 5 | UInt32(value)
            bits += 5
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(buffer >> UInt32(bits) & 0xff))
            }
        }
        guard bits < 5, buffer & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        return out
    }
}
