import FlitzCrypto
import FlitzWire
import Foundation

/// A signed prekey: an X25519 key pair whose public key the device identity key signs (raw 32 bytes).
public struct SignedPreKeyPair: Sendable {
    /// Identifier chosen by the device, unique among its signed prekeys.
    public let id: UInt32
    /// The X25519 key pair.
    public let privateKey: X25519PrivateKey
    /// 64-byte Ed25519 signature by the device identity key over the 32-byte public key.
    public let signature: Data

    /// Generates and signs a new signed prekey.
    public init(id: UInt32, device: DeviceIdentity, random: any RandomSource = SystemRandom()) {
        self.id = id
        self.privateKey = X25519PrivateKey(random: random)
        self.signature = device.privateKey.signature(for: privateKey.publicKey.rawRepresentation)
    }

    /// Restores a stored signed prekey.
    public init(id: UInt32, privateKey: X25519PrivateKey, signature: Data) {
        self.id = id
        self.privateKey = privateKey
        self.signature = signature
    }
}

/// A one-time prekey: an X25519 key pair handed out by the relay at most once.
public struct OneTimePreKeyPair: Sendable {
    /// Identifier chosen by the device, unique among its one-time prekeys.
    public let id: UInt32
    /// The X25519 key pair.
    public let privateKey: X25519PrivateKey

    /// Generates a new one-time prekey.
    public init(id: UInt32, random: any RandomSource = SystemRandom()) {
        self.id = id
        self.privateKey = X25519PrivateKey(random: random)
    }

    /// Restores a stored one-time prekey.
    public init(id: UInt32, privateKey: X25519PrivateKey) {
        self.id = id
        self.privateKey = privateKey
    }
}

/// Whether a KEM prekey is handed out once or is the device's reusable last-resort one.
public enum KEMPreKeyKind: UInt8, Sendable {
    /// Handed out by the relay at most once; deleted by the responder after first use.
    case oneTime = 0x01
    /// Handed out whenever no one-time KEM prekey is left; kept until rotated out.
    case lastResort = 0x02
}

/// A signed ML-KEM-1024 prekey (`protocol/crypto.md`, "Keys" and "PQXDH").
public struct KEMPreKeyPair: Sendable {
    /// Identifier chosen by the device; one-time and last-resort KEM prekeys share one id space.
    public let id: UInt32
    /// One-time or last-resort.
    public let kind: KEMPreKeyKind
    /// The ML-KEM-1024 key pair (64-byte seed, 1568-byte public key).
    public let privateKey: KEMPrivateKey
    /// 64-byte Ed25519 signature by the device identity key over `signaturePayload`.
    public let signature: Data

    /// The signed payload: `"FlitzKEMPreKey-v1" ‖ 0x00 ‖ kind ‖ u32be(id) ‖ 1568-byte public key` (1591
    /// bytes); the relay checks the same bytes (`SignedPayload.kemPreKey` in FlitzWire).
    public static func signaturePayload(id: UInt32, kind: KEMPreKeyKind, publicKey: Data) -> Data {
        SignedPayload.kemPreKey(id: id, lastResort: kind == .lastResort, publicKey: publicKey)
    }

    /// Generates (64 bytes of `random`) and signs a new KEM prekey.
    public init(id: UInt32, kind: KEMPreKeyKind, device: DeviceIdentity, random: any RandomSource = SystemRandom()) {
        self.id = id
        self.kind = kind
        self.privateKey = KEMPrivateKey(random: random)
        self.signature = device.privateKey.signature(
            for: Self.signaturePayload(id: id, kind: kind, publicKey: privateKey.publicKey.rawRepresentation))
    }

    /// Restores a stored KEM prekey.
    public init(id: UInt32, kind: KEMPreKeyKind, privateKey: KEMPrivateKey, signature: Data) {
        self.id = id
        self.kind = kind
        self.privateKey = privateKey
        self.signature = signature
    }
}

/// A prekey bundle as fetched from the relay, not yet checked. Call `verified()` before use.
public struct UnverifiedPreKeyBundle: Sendable {
    /// Relay-assigned device id of the bundle's device.
    public var deviceID: UInt32
    /// 32-byte Ed25519 account identity key.
    public var accountIdentityKey: Data
    /// 32-byte Ed25519 device identity key.
    public var deviceIdentityKey: Data
    /// 64-byte certificate signature by the account key.
    public var deviceCertificateSignature: Data
    /// Signed prekey id.
    public var signedPreKeyID: UInt32
    /// 32-byte X25519 signed prekey.
    public var signedPreKey: Data
    /// 64-byte signature by the device identity key over `signedPreKey`.
    public var signedPreKeySignature: Data
    /// One-time prekey id and 32-byte X25519 public key, when the relay had one.
    public var oneTimePreKey: (id: UInt32, publicKey: Data)?
    /// KEM prekey id, 1568-byte ML-KEM-1024 public key, 64-byte signature and kind; `nil` when the relay
    /// sent none, which `verified()` refuses (PQXDH is not optional).
    public var kemPreKey: (id: UInt32, publicKey: Data, signature: Data, lastResort: Bool)?

    /// Creates an unverified bundle from its fields.
    public init(
        deviceID: UInt32, accountIdentityKey: Data, deviceIdentityKey: Data, deviceCertificateSignature: Data,
        signedPreKeyID: UInt32, signedPreKey: Data, signedPreKeySignature: Data, oneTimePreKey: (id: UInt32, publicKey: Data)?,
        kemPreKey: (id: UInt32, publicKey: Data, signature: Data, lastResort: Bool)?
    ) {
        self.deviceID = deviceID
        self.accountIdentityKey = accountIdentityKey
        self.deviceIdentityKey = deviceIdentityKey
        self.deviceCertificateSignature = deviceCertificateSignature
        self.signedPreKeyID = signedPreKeyID
        self.signedPreKey = signedPreKey
        self.signedPreKeySignature = signedPreKeySignature
        self.oneTimePreKey = oneTimePreKey
        self.kemPreKey = kemPreKey
    }

    /// Checks, in this order (`protocol/crypto.md`, "Prekey bundle verification"): key sizes, the device
    /// certificate, the signed prekey signature, the KEM prekey's presence, size and signature, and the
    /// KEM public key's FIPS 203 modulus check.
    /// - Throws: `FlitzProtocolError.malformedMessage` for bad sizes, `.missingKEMPreKey` without a KEM
    ///   prekey, `.authenticationFailed` for a bad signature, `.invalidKey` for a KEM key failing FIPS 203's check.
    public func verified() throws(FlitzProtocolError) -> PreKeyBundle {
        do {
            let account = try Ed25519PublicKey(rawRepresentation: accountIdentityKey)
            let device = try Ed25519PublicKey(rawRepresentation: deviceIdentityKey)
            let certificate = DeviceCertificate(accountIdentityKey: account, deviceIdentityKey: device, signature: deviceCertificateSignature)
            try certificate.verify()
            guard device.isValidSignature(signedPreKeySignature, for: signedPreKey) else {
                throw FlitzProtocolError(.authenticationFailed, "signed prekey signature")
            }
            let spk = try X25519PublicKey(rawRepresentation: signedPreKey)
            let opk = try oneTimePreKey.map { (id: $0.id, publicKey: try X25519PublicKey(rawRepresentation: $0.publicKey)) }
            guard let kemPreKey else { throw FlitzProtocolError(.missingKEMPreKey, "bundle has no KEM prekey") }
            guard kemPreKey.publicKey.count == MLKEMSizes.publicKey, kemPreKey.signature.count == 64 else {
                throw FlitzProtocolError(.malformedMessage, "KEM prekey sizes")
            }
            let kind: KEMPreKeyKind = kemPreKey.lastResort ? .lastResort : .oneTime
            let payload = KEMPreKeyPair.signaturePayload(id: kemPreKey.id, kind: kind, publicKey: kemPreKey.publicKey)
            guard device.isValidSignature(kemPreKey.signature, for: payload) else {
                throw FlitzProtocolError(.authenticationFailed, "KEM prekey signature")
            }
            guard let kem = try? KEMPublicKey(rawRepresentation: kemPreKey.publicKey) else {
                throw FlitzProtocolError(.invalidKey, "KEM prekey fails the FIPS 203 modulus check")
            }
            return PreKeyBundle(
                deviceID: deviceID, certificate: certificate, signedPreKeyID: signedPreKeyID, signedPreKey: spk, oneTimePreKey: opk,
                kemPreKey: (id: kemPreKey.id, publicKey: kem, kind: kind))
        } catch let error as FlitzProtocolError {
            throw error
        } catch {
            throw FlitzProtocolError(.malformedMessage, "prekey bundle key sizes")
        }
    }
}

/// A prekey bundle whose certificate and signed prekey signature have been verified.
public struct PreKeyBundle: Sendable {
    /// Relay-assigned device id.
    public let deviceID: UInt32
    /// Verified certificate: account identity key over device identity key.
    public let certificate: DeviceCertificate
    /// Signed prekey id.
    public let signedPreKeyID: UInt32
    /// Verified X25519 signed prekey (SPK_B).
    public let signedPreKey: X25519PublicKey
    /// One-time prekey (OPK_B), when present.
    public let oneTimePreKey: (id: UInt32, publicKey: X25519PublicKey)?
    /// Verified ML-KEM-1024 prekey (PQPK_B) and whether it is the last-resort one.
    public let kemPreKey: (id: UInt32, publicKey: KEMPublicKey, kind: KEMPreKeyKind)

    /// Creates a verified bundle; only `UnverifiedPreKeyBundle.verified()` and tests should.
    public init(
        deviceID: UInt32, certificate: DeviceCertificate, signedPreKeyID: UInt32, signedPreKey: X25519PublicKey,
        oneTimePreKey: (id: UInt32, publicKey: X25519PublicKey)?, kemPreKey: (id: UInt32, publicKey: KEMPublicKey, kind: KEMPreKeyKind)
    ) {
        self.deviceID = deviceID
        self.certificate = certificate
        self.signedPreKeyID = signedPreKeyID
        self.signedPreKey = signedPreKey
        self.oneTimePreKey = oneTimePreKey
        self.kemPreKey = kemPreKey
    }
}
