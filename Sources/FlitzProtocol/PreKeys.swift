import FlitzCrypto
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

    /// Creates an unverified bundle from its fields.
    public init(
        deviceID: UInt32, accountIdentityKey: Data, deviceIdentityKey: Data, deviceCertificateSignature: Data,
        signedPreKeyID: UInt32, signedPreKey: Data, signedPreKeySignature: Data, oneTimePreKey: (id: UInt32, publicKey: Data)?
    ) {
        self.deviceID = deviceID
        self.accountIdentityKey = accountIdentityKey
        self.deviceIdentityKey = deviceIdentityKey
        self.deviceCertificateSignature = deviceCertificateSignature
        self.signedPreKeyID = signedPreKeyID
        self.signedPreKey = signedPreKey
        self.signedPreKeySignature = signedPreKeySignature
        self.oneTimePreKey = oneTimePreKey
    }

    /// Checks the key sizes, the device certificate and the signed prekey signature.
    /// - Throws: `FlitzProtocolError.malformedMessage` for bad sizes, `.authenticationFailed` for a bad signature.
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
            return PreKeyBundle(deviceID: deviceID, certificate: certificate, signedPreKeyID: signedPreKeyID, signedPreKey: spk, oneTimePreKey: opk)
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
}
