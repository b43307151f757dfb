import FlitzCrypto
import FlitzWire
import Foundation

/// An account's long-term Ed25519 identity key. It certifies the account's devices; safety numbers and
/// trust decisions are about this key (DESIGN.md, "Keys of an account"; `protocol/crypto.md`, "Keys").
public struct AccountIdentity: Sendable {
    /// The Ed25519 signing key.
    public let privateKey: Ed25519PrivateKey
    /// The 32-byte Ed25519 public key.
    public var publicKey: Ed25519PublicKey { privateKey.publicKey }

    /// A new identity from `random`.
    public init(random: any RandomSource = SystemRandom()) {
        privateKey = Ed25519PrivateKey(random: random)
    }

    /// Restores an identity from its 32-byte seed.
    /// - Throws: `FlitzCryptoError.invalidLength`.
    public init(seed: SecretBytes) throws {
        privateKey = try Ed25519PrivateKey(seed: seed)
    }

    /// Certifies `deviceKey` as a device of this account.
    public func certify(_ deviceKey: Ed25519PublicKey) -> DeviceCertificate {
        let payload = SignedPayload.deviceCertificate(
            accountIdentityKey: publicKey.rawRepresentation, deviceIdentityKey: deviceKey.rawRepresentation)
        return DeviceCertificate(
            accountIdentityKey: publicKey, deviceIdentityKey: deviceKey, signature: privateKey.signature(for: payload))
    }
}

/// The account identity key's signature over a device identity key (`protocol/relay.md`, "Signed payloads").
public struct DeviceCertificate: Hashable, Sendable {
    /// 32-byte Ed25519 account identity key.
    public let accountIdentityKey: Ed25519PublicKey
    /// 32-byte Ed25519 device identity key.
    public let deviceIdentityKey: Ed25519PublicKey
    /// 64-byte Ed25519 signature by the account key over `SignedPayload.deviceCertificate`.
    public let signature: Data

    /// Wraps the parts without checking; call `verify()` before trusting it.
    public init(accountIdentityKey: Ed25519PublicKey, deviceIdentityKey: Ed25519PublicKey, signature: Data) {
        self.accountIdentityKey = accountIdentityKey
        self.deviceIdentityKey = deviceIdentityKey
        self.signature = signature
    }

    /// Checks the signature.
    /// - Throws: `FlitzProtocolError.authenticationFailed`.
    public func verify() throws(FlitzProtocolError) {
        let payload = SignedPayload.deviceCertificate(
            accountIdentityKey: accountIdentityKey.rawRepresentation, deviceIdentityKey: deviceIdentityKey.rawRepresentation)
        guard accountIdentityKey.isValidSignature(signature, for: payload) else {
            throw FlitzProtocolError(.authenticationFailed, "device certificate")
        }
    }
}

/// A device's Ed25519 identity key (IK in X3DH) with its certificate from the account identity key.
public struct DeviceIdentity: Sendable {
    /// The device's Ed25519 signing key; its X25519 form is used for X3DH.
    public let privateKey: Ed25519PrivateKey
    /// The account's certificate over `privateKey.publicKey`.
    public let certificate: DeviceCertificate
    /// The 32-byte Ed25519 public key.
    public var publicKey: Ed25519PublicKey { privateKey.publicKey }

    /// Pairs a device key with its certificate.
    /// - Throws: `FlitzProtocolError.authenticationFailed` if the certificate is not for this key or does not verify.
    public init(privateKey: Ed25519PrivateKey, certificate: DeviceCertificate) throws(FlitzProtocolError) {
        guard certificate.deviceIdentityKey == privateKey.publicKey else {
            throw FlitzProtocolError(.authenticationFailed, "certificate is for another device key")
        }
        try certificate.verify()
        self.privateKey = privateKey
        self.certificate = certificate
    }

    /// A new device key certified by `account`.
    public init(account: AccountIdentity, random: any RandomSource = SystemRandom()) {
        let key = Ed25519PrivateKey(random: random)
        self.privateKey = key
        self.certificate = account.certify(key.publicKey)
    }
}
