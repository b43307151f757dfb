import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import Synchronization

/// A `RandomSource` that hands out the byte strings a vector lists, in order (`vectors/README.md`,
/// "Randomness"). Asking for a different length, or for more than listed, is recorded as a
/// mismatch (and answered with zero bytes) so the verifier can report it.
final class ScriptedRandom: RandomSource {
    private struct State {
        var next = 0
        var mismatch: String?
    }
    private let outputs: [Data]
    private let state = Mutex(State())

    init(_ outputs: [Data]) { self.outputs = outputs }

    func bytes(_ count: Int) -> Data {
        state.withLock { state in
            defer { state.next += 1 }
            guard state.next < outputs.count else {
                state.mismatch = state.mismatch ?? "the implementation drew random bytes \(state.next + 1) (\(count) bytes) but the vector lists \(outputs.count)"
                return Data(count: count)
            }
            let out = outputs[state.next]
            guard out.count == count else {
                state.mismatch = state.mismatch ?? "random draw \(state.next + 1) is \(count) bytes in the implementation, \(out.count) in the vector"
                return Data(count: count)
            }
            return out
        }
    }

    /// Throws unless every listed output was drawn with its exact length.
    func checkAllConsumed() throws(VectorCheckFailure) {
        let (next, mismatch) = state.withLock { ($0.next, $0.mismatch) }
        if let mismatch { throw VectorCheckFailure(mismatch) }
        try require(next == outputs.count, "the vector lists \(outputs.count) random draws, the implementation made \(next)")
    }
}

/// A device rebuilt from a party object (`vectors/README.md`, "Parties"), with every published value checked.
struct VectorPartyKeys {
    let account: AccountIdentity
    let device: DeviceIdentity
    let signedPreKey: SignedPreKeyPair?
    let oneTimePreKey: OneTimePreKeyPair?
    let kemPreKey: KEMPreKeyPair?

    /// Rebuilds the party from its seeds and checks every derived value, the signatures and that the
    /// seeds are the draws of `SeededRandom(label: randomLabel)` in the documented order.
    init(_ json: JSONValue) throws {
        let random = SeededRandom(label: try json.string("randomLabel"))
        let accountSeed = try json.hex("accountIdentitySeed")
        let deviceSeed = try json.hex("deviceIdentitySeed")
        try check(random.bytes(32), accountSeed, "accountIdentitySeed (first draw of randomLabel)")
        try check(random.bytes(32), deviceSeed, "deviceIdentitySeed (second draw)")
        account = try AccountIdentity(seed: SecretBytes(accountSeed))
        let deviceKey = try Ed25519PrivateKey(seed: SecretBytes(deviceSeed))
        try check(account.publicKey.rawRepresentation, try json.hex("accountIdentityKey"), "accountIdentityKey")
        try check(deviceKey.publicKey.rawRepresentation, try json.hex("deviceIdentityKey"), "deviceIdentityKey")
        let payload = SignedPayload.deviceCertificate(
            accountIdentityKey: account.publicKey.rawRepresentation, deviceIdentityKey: deviceKey.publicKey.rawRepresentation)
        try check(payload, try json.hex("deviceCertificatePayload"), "deviceCertificatePayload")
        let certificate = account.certify(deviceKey.publicKey)
        try check(certificate.signature, try json.hex("deviceCertificateSignature"), "deviceCertificateSignature")
        device = try DeviceIdentity(privateKey: deviceKey, certificate: certificate)
        let x = deviceKey.x25519PrivateKey()
        try check(x.secret, try json.hex("deviceIdentityX25519PrivateKey"), "deviceIdentityX25519PrivateKey")
        try check(x.publicKey.rawRepresentation, try json.hex("deviceIdentityX25519PublicKey"), "deviceIdentityX25519PublicKey")
        try check(try deviceKey.publicKey.x25519PublicKey().rawRepresentation, x.publicKey.rawRepresentation, "X25519 form of deviceIdentityKey")
        if json.has("signedPreKey") {
            let spk = try json.object("signedPreKey")
            let privateKey = try X25519PrivateKey(rawRepresentation: SecretBytes(try spk.hex("privateKey")))
            try check(random.bytes(32), privateKey.secret.unsafeData, "signedPreKey.privateKey (third draw)")
            try check(privateKey.publicKey.rawRepresentation, try spk.hex("publicKey"), "signedPreKey.publicKey")
            let signature = deviceKey.signature(for: privateKey.publicKey.rawRepresentation)
            try check(signature, try spk.hex("signature"), "signedPreKey.signature")
            signedPreKey = SignedPreKeyPair(id: try spk.uint32("id"), privateKey: privateKey, signature: signature)
        } else {
            signedPreKey = nil
        }
        if json.has("oneTimePreKey") {
            let opk = try json.object("oneTimePreKey")
            let privateKey = try X25519PrivateKey(rawRepresentation: SecretBytes(try opk.hex("privateKey")))
            try check(random.bytes(32), privateKey.secret.unsafeData, "oneTimePreKey.privateKey (fourth draw)")
            try check(privateKey.publicKey.rawRepresentation, try opk.hex("publicKey"), "oneTimePreKey.publicKey")
            oneTimePreKey = OneTimePreKeyPair(id: try opk.uint32("id"), privateKey: privateKey)
        } else {
            oneTimePreKey = nil
        }
        if json.has("kemPreKey") {
            let kem = try json.object("kemPreKey")
            let seed = try kem.hex("seed")
            try check(random.bytes(64), seed, "kemPreKey.seed (the 64-byte draw after the prekeys)")
            let privateKey = try KEMPrivateKey(seed: SecretBytes(seed))
            try check(privateKey.publicKey.rawRepresentation, try kem.hex("publicKey"), "kemPreKey.publicKey (ML-KEM-1024 KeyGen from the seed)")
            let kind: KEMPreKeyKind = try kem.bool("lastResort") ? .lastResort : .oneTime
            let id = try kem.uint32("id")
            let payload = KEMPreKeyPair.signaturePayload(id: id, kind: kind, publicKey: privateKey.publicKey.rawRepresentation)
            try check(payload, try kem.hex("signaturePayload"), "kemPreKey.signaturePayload")
            let signature = deviceKey.signature(for: payload)
            try check(signature, try kem.hex("signature"), "kemPreKey.signature")
            kemPreKey = KEMPreKeyPair(id: id, kind: kind, privateKey: privateKey, signature: signature)
        } else {
            kemPreKey = nil
        }
    }
}

/// An `UnverifiedPreKeyBundle` from a bundle object (`vectors/README.md`, "Bundles").
func unverifiedBundle(_ json: JSONValue) throws -> UnverifiedPreKeyBundle {
    UnverifiedPreKeyBundle(
        deviceID: try json.uint32("deviceId"), accountIdentityKey: try json.hex("accountIdentityKey"),
        deviceIdentityKey: try json.hex("deviceIdentityKey"), deviceCertificateSignature: try json.hex("deviceCertificateSignature"),
        signedPreKeyID: try json.uint32("signedPreKeyId"), signedPreKey: try json.hex("signedPreKey"),
        signedPreKeySignature: try json.hex("signedPreKeySignature"),
        oneTimePreKey: json.has("oneTimePreKeyId") ? (id: try json.uint32("oneTimePreKeyId"), publicKey: try json.hex("oneTimePreKey")) : nil,
        kemPreKey: json.has("kemPreKeyId")
            ? (
                id: try json.uint32("kemPreKeyId"), publicKey: try json.hex("kemPreKey"), signature: try json.hex("kemPreKeySignature"),
                lastResort: try json.bool("kemPreKeyLastResort")
            ) : nil)
}

/// The initiator's fixed ML-KEM encapsulation a bundle object carries (`kemCiphertext`, `kemSharedSecret`):
/// swift-crypto cannot take injected randomness for it, so vectors give it as an input.
func fixedEncapsulation(_ bundle: JSONValue) throws -> (ciphertext: Data, sharedSecret: SecretBytes) {
    (try bundle.hex("kemCiphertext"), SecretBytes(try bundle.hex("kemSharedSecret")))
}

/// X25519 of raw keys from a vector, for independent checks.
func x25519(_ privateKey: Data, _ publicKey: Data) throws -> Data {
    try X25519PrivateKey(rawRepresentation: SecretBytes(privateKey)).sharedSecret(with: X25519PublicKey(rawRepresentation: publicKey)).unsafeData
}

/// HMAC-SHA-256 of raw bytes.
func hmac(_ key: Data, _ message: UInt8) -> Data {
    HMACSHA256.authenticate(Data([message]), key: SecretBytes(key)).unsafeData
}

/// HKDF-SHA-256 of raw bytes.
func hkdf(salt: Data, ikm: Data, info: Data, length: Int) throws -> Data {
    try HKDF.deriveKey(inputKeyMaterial: SecretBytes(ikm), salt: salt, info: info, length: length).unsafeData
}

extension VectorCheckFailure {
    /// A test group type the topic does not know.
    static func unknownGroup(_ type: String, in topic: String) -> VectorCheckFailure {
        VectorCheckFailure("unknown test group type \"\(type)\" in topic \(topic)")
    }
}
