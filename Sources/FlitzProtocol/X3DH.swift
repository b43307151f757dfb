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
}

/// X3DH key agreement with Ed25519 identity keys used for Diffie-Hellman through their X25519 form.
public enum X3DH {
    /// The initiator's side. `ephemeralKey` is EK_A, fresh per session.
    /// - Throws: `FlitzProtocolError.authenticationFailed` when a key is unusable (non-contributory DH or
    ///   an identity key without an X25519 form).
    public static func initiate(
        identity: DeviceIdentity, ephemeralKey: X25519PrivateKey, bundle: PreKeyBundle
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
            return try agreement(outputs: outputs, initiator: identity.certificate, responder: bundle.certificate)
        } catch let error as FlitzProtocolError {
            throw error
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
            return try agreement(outputs: outputs, initiator: initiatorCertificate, responder: identity.certificate)
        } catch let error as FlitzProtocolError {
            throw error
        } catch {
            throw FlitzProtocolError(.authenticationFailed, "X3DH key agreement")
        }
    }

    /// Length of AD in bytes.
    public static let associatedDataLength = 128

    private static func agreement(
        outputs: [SecretBytes], initiator: DeviceCertificate, responder: DeviceCertificate
    ) throws -> X3DHAgreement {
        var ikm = ProtocolConstants.x3dhPrefix
        for output in outputs { output.withUnsafeBytes { ikm.append(contentsOf: $0) } }
        defer { ikm.resetBytes(in: 0..<ikm.count) }
        let sk = try HKDF.deriveKey(
            inputKeyMaterial: SecretBytes(ikm), salt: ProtocolConstants.zeroSalt, info: ProtocolConstants.x3dhInfo, length: 32)
        let associatedData = initiator.deviceIdentityKey.rawRepresentation + responder.deviceIdentityKey.rawRepresentation
            + initiator.accountIdentityKey.rawRepresentation + responder.accountIdentityKey.rawRepresentation
        return X3DHAgreement(sharedSecret: sk, associatedData: associatedData, dhOutputs: outputs)
    }
}
