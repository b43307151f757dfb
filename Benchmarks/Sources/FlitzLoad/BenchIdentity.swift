import FlitzCrypto
import FlitzWire
import Foundation

/// One generated account with its first device: real Ed25519 account and device identity keys
/// (FlitzCrypto), a device certificate, a signed prekey and a signed last-resort KEM prekey, as
/// `protocol/relay.md` ("Register") requires. The relay only checks sizes and signatures of prekeys, so
/// the X25519 and ML-KEM public keys are random bytes of the right length (as the relay tests do).
public struct BenchIdentity: Sendable {
    /// The handle, 3–32 characters of a-z 0-9 _ . (e.g. `b1a2b3c4s17`).
    public let handle: String
    /// `handle` as UTF-8, for `FastWire.writeSubmit`.
    public let handleBytes: [UInt8]
    let account: Ed25519PrivateKey
    let device: Ed25519PrivateKey

    /// A new identity with fresh keys from `SystemRandom`.
    public init(handle: String) {
        precondition(Handle.isValid(handle), "invalid handle \(handle)")
        self.handle = handle
        handleBytes = Array(handle.utf8)
        account = Ed25519PrivateKey()
        device = Ed25519PrivateKey()
    }

    /// `Register` for this identity over the connection's challenge `nonce`.
    func register(nonce: Data) -> WireFrame.OneOf_Body {
        var keys = WireDeviceKeys()
        keys.deviceIdentityKey = device.publicKey.rawRepresentation
        keys.deviceCertificateSignature = account.signature(for: SignedPayload.deviceCertificate(
            accountIdentityKey: account.publicKey.rawRepresentation, deviceIdentityKey: device.publicKey.rawRepresentation))
        var signed = WireSignedPreKey()
        signed.id = 1
        signed.publicKey = SystemRandom().bytes(WireConstants.publicKeyLength)
        signed.signature = device.signature(for: signed.publicKey)
        keys.signedPrekey = signed
        var kem = WireKEMPreKey()
        kem.id = 1
        kem.lastResort = true
        kem.publicKey = SystemRandom().bytes(WireConstants.kemPublicKeyLength)
        kem.signature = device.signature(for: SignedPayload.kemPreKey(id: 1, lastResort: true, publicKey: kem.publicKey))
        keys.lastResortKemPrekey = kem
        var register = WireRegister()
        register.handle = handle
        register.accountIdentityKey = account.publicKey.rawRepresentation
        register.device = keys
        register.challengeSignature = device.signature(for: SignedPayload.authentication(nonce: nonce, handle: handle))
        return .register(register)
    }

    /// `Authenticate` as `deviceID` over the connection's challenge `nonce`.
    func authenticate(nonce: Data, deviceID: UInt32) -> WireFrame.OneOf_Body {
        var authenticate = WireAuthenticate()
        authenticate.handle = handle
        authenticate.deviceID = deviceID
        authenticate.signature = device.signature(for: SignedPayload.authentication(nonce: nonce, handle: handle))
        return .authenticate(authenticate)
    }
}
