import FlitzCrypto
import Foundation

/// The outcome of X3DH on either side (Signal X3DH spec §3; `protocol/crypto.md`, "X3DH").
public struct X3DHAgreement: Sendable {
    /// SK: 32 bytes of HKDF-SHA-256(salt = 32 zero bytes, ikm = 0xFF×32 ‖ DH1 ‖ DH2 ‖ DH3 [‖ DH4], info = "Flitz-X3DH-v1").
    public let sharedSecret: SecretBytes
    /// AD: 128 bytes, the raw Ed25519 keys IK_A ‖ IK_B ‖ AccK_A ‖ AccK_B (device identity keys, then the
    /// account identity keys that certify them; initiator first). Binding the account keys stops a relay
    /// from presenting one account's device as another's (an unknown-key-share).
    public let associatedData: Data
    /// The DH outputs DH1...DH4 in order (three or four of 32 bytes), kept for test vectors.
    public let dhOutputs: [SecretBytes]
    /// PQXDH only: the 1568-byte ML-KEM-1024 ciphertext CT the initiator sends (`nil` for X3DH).
    public let kemCiphertext: Data?
    /// PQXDH only: the 32-byte KEM shared secret SS, kept for test vectors (`nil` for X3DH).
    public let kemSharedSecret: SecretBytes?
}

/// X3DH key agreement with Ed25519 identity keys used for Diffie-Hellman through their X25519 form.
public enum X3DH {
    /// The initiator's side. `ephemeralKey` is EK_A, fresh per session.
    /// - Throws: `FlitzProtocolError.authenticationFailed` when a key is unusable (non-contributory DH or
    ///   an identity key without an X25519 form).
    public static func initiate(
        identity: DeviceIdentity, ephemeralKey: X25519PrivateKey, bundle: PreKeyBundle
    ) throws(FlitzProtocolError) -> X3DHAgreement {
        try initiate(identity: identity, ephemeralKey: ephemeralKey, bundle: bundle, kem: nil)
    }

    /// The initiator's side with an optional KEM (ciphertext, secret) entering the KDF (PQXDH).
    static func initiate(
        identity: DeviceIdentity, ephemeralKey: X25519PrivateKey, bundle: PreKeyBundle, kem: (ciphertext: Data, sharedSecret: SecretBytes)?
    ) throws(FlitzProtocolError) -> X3DHAgreement {
        do {
            let ikA = identity.privateKey.x25519PrivateKey()
            let ikB = try bundle.certificate.deviceIdentityKey.x25519PublicKey()
            var outputs = [
                try ikA.sharedSecret(with: bundle.signedPreKey),
                try ephemeralKey.sharedSecret(with: ikB),
                try ephemeralKey.sharedSecret(with: bundle.signedPreKey),
            ]
            if let opk = bundle.oneTimePreKey {
                outputs.append(try ephemeralKey.sharedSecret(with: opk.publicKey))
            }
            return try agreement(outputs: outputs, kem: kem, initiator: identity.certificate, responder: bundle.certificate)
        } catch let error as FlitzProtocolError {
            throw error
        } catch let error as FlitzCryptoError where error.code == .nonContributory {
            throw FlitzProtocolError(.invalidKey, "low-order public key in X3DH")
        } catch {
            throw FlitzProtocolError(.authenticationFailed, "X3DH key agreement")
        }
    }

    /// The responder's side, from the initiator's verified device certificate (IK_A and its account key)
    /// and base key EK_A.
    /// - Throws: `FlitzProtocolError.authenticationFailed` when a key is unusable.
    public static func respond(
        identity: DeviceIdentity, signedPreKey: SignedPreKeyPair, oneTimePreKey: OneTimePreKeyPair?,
        initiatorCertificate: DeviceCertificate, baseKey: X25519PublicKey
    ) throws(FlitzProtocolError) -> X3DHAgreement {
        try respond(
            identity: identity, signedPreKey: signedPreKey, oneTimePreKey: oneTimePreKey, initiatorCertificate: initiatorCertificate,
            baseKey: baseKey, kem: nil)
    }

    /// The responder's side with an optional KEM (ciphertext, secret) entering the KDF (PQXDH).
    static func respond(
        identity: DeviceIdentity, signedPreKey: SignedPreKeyPair, oneTimePreKey: OneTimePreKeyPair?,
        initiatorCertificate: DeviceCertificate, baseKey: X25519PublicKey, kem: (ciphertext: Data, sharedSecret: SecretBytes)?
    ) throws(FlitzProtocolError) -> X3DHAgreement {
        do {
            let ikA = try initiatorCertificate.deviceIdentityKey.x25519PublicKey()
            let ikB = identity.privateKey.x25519PrivateKey()
            var outputs = [
                try signedPreKey.privateKey.sharedSecret(with: ikA),
                try ikB.sharedSecret(with: baseKey),
                try signedPreKey.privateKey.sharedSecret(with: baseKey),
            ]
            if let oneTimePreKey {
                outputs.append(try oneTimePreKey.privateKey.sharedSecret(with: baseKey))
            }
            return try agreement(outputs: outputs, kem: kem, initiator: initiatorCertificate, responder: identity.certificate)
        } catch let error as FlitzProtocolError {
            throw error
        } catch let error as FlitzCryptoError where error.code == .nonContributory {
            throw FlitzProtocolError(.invalidKey, "low-order public key in X3DH")
        } catch {
            throw FlitzProtocolError(.authenticationFailed, "X3DH key agreement")
        }
    }

    /// Length of AD in bytes.
    public static let associatedDataLength = 128

    /// SK and AD from the DH outputs and, for PQXDH, the KEM ciphertext and shared secret: the KEM secret
    /// is appended to the DH outputs and the HKDF info names the protocol, so X3DH and PQXDH never share an SK.
    private static func agreement(
        outputs: [SecretBytes], kem: (ciphertext: Data, sharedSecret: SecretBytes)?, initiator: DeviceCertificate, responder: DeviceCertificate
    ) throws -> X3DHAgreement {
        var ikm = ProtocolConstants.x3dhPrefix
        for output in outputs { output.withUnsafeBytes { ikm.append(contentsOf: $0) } }
        kem?.sharedSecret.withUnsafeBytes { ikm.append(contentsOf: $0) }
        defer { ikm.resetBytes(in: 0..<ikm.count) }
        let info = kem == nil ? ProtocolConstants.x3dhInfo : ProtocolConstants.pqxdhInfo
        let sk = try HKDF.deriveKey(inputKeyMaterial: SecretBytes(ikm), salt: ProtocolConstants.zeroSalt, info: info, length: 32)
        let associatedData = initiator.deviceIdentityKey.rawRepresentation + responder.deviceIdentityKey.rawRepresentation
            + initiator.accountIdentityKey.rawRepresentation + responder.accountIdentityKey.rawRepresentation
        return X3DHAgreement(
            sharedSecret: sk, associatedData: associatedData, dhOutputs: outputs, kemCiphertext: kem?.ciphertext, kemSharedSecret: kem?.sharedSecret)
    }
}

/// PQXDH: X3DH plus an ML-KEM-1024 encapsulation to the responder's signed KEM prekey, in the manner of
/// Signal's PQXDH (revision 3) (`protocol/crypto.md`, "PQXDH"). The session layer uses only this; `X3DH`
/// remains as its classical part and for test vectors.
public enum PQXDH {
    /// The initiator's side. `ephemeralKey` is EK_A, fresh per session; `encapsulation` is `nil` in normal
    /// use (a fresh encapsulation to the bundle's KEM prekey) and a fixed (1568-byte CT, 32-byte SS) pair in
    /// test vectors, because swift-crypto cannot take injected randomness for it.
    /// - Throws: `FlitzProtocolError.invalidKey` for a low-order X25519 key, `.authenticationFailed` for an
    ///   identity key without an X25519 form, `.malformedMessage` for a wrongly sized fixed encapsulation.
    public static func initiate(
        identity: DeviceIdentity, ephemeralKey: X25519PrivateKey, bundle: PreKeyBundle,
        encapsulation: (ciphertext: Data, sharedSecret: SecretBytes)? = nil
    ) throws(FlitzProtocolError) -> X3DHAgreement {
        let kem: (ciphertext: Data, sharedSecret: SecretBytes)
        if let encapsulation {
            guard encapsulation.ciphertext.count == MLKEMSizes.ciphertext, encapsulation.sharedSecret.count == MLKEMSizes.sharedSecret else {
                throw FlitzProtocolError(.malformedMessage, "fixed KEM encapsulation sizes")
            }
            kem = encapsulation
        } else {
            do { kem = try bundle.kemPreKey.publicKey.encapsulate() } catch { throw FlitzProtocolError(.invalidKey, "KEM encapsulation") }
        }
        return try X3DH.initiate(identity: identity, ephemeralKey: ephemeralKey, bundle: bundle, kem: kem)
    }

    /// The responder's side: X3DH's DHs plus decapsulating the 1568-byte `kemCiphertext` with the KEM prekey
    /// the initiator named.
    /// - Throws: `FlitzProtocolError.invalidKey`, `.authenticationFailed` as `X3DH.respond`;
    ///   `.malformedMessage` for a ciphertext that is not 1568 bytes.
    public static func respond(
        identity: DeviceIdentity, signedPreKey: SignedPreKeyPair, oneTimePreKey: OneTimePreKeyPair?, kemPreKey: KEMPreKeyPair,
        kemCiphertext: Data, initiatorCertificate: DeviceCertificate, baseKey: X25519PublicKey
    ) throws(FlitzProtocolError) -> X3DHAgreement {
        let secret: SecretBytes
        do { secret = try kemPreKey.privateKey.decapsulate(kemCiphertext) } catch {
            throw FlitzProtocolError(.malformedMessage, "KEM ciphertext")
        }
        return try X3DH.respond(
            identity: identity, signedPreKey: signedPreKey, oneTimePreKey: oneTimePreKey, initiatorCertificate: initiatorCertificate,
            baseKey: baseKey, kem: (kemCiphertext, secret))
    }
}
