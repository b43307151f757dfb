import FlitzCrypto
import FlitzProtocol
import Foundation
import SwiftProtobuf

/// Everything one session setup between Alice (initiator) and Bob (responder) needs, made once from a
/// seeded source, so that the measured closures only run the setup steps themselves.
///
/// Two setups are offered:
/// - PQXDH, the production path of the root package (`UnverifiedPreKeyBundle.verified()`,
///   `Session.initiate`, `Session.encrypt`; `IncomingSessionMessage(parsing:)`, `Session.respond`);
/// - X3DH only, the path the root package ran before PQXDH (commit 1106967), rebuilt here from the
///   public pieces that it was made of (`X3DH`, `DoubleRatchet`, the `SessionMessage` protobuf), because
///   the package's `Session` no longer offers it. Only the KEM parts are missing; everything else
///   (certificate and signed-prekey checks, key parsing, four DHs, ratchet start, first message) is the same.
public struct Handshake: Sendable {
    /// Alice's device (account identity, device identity, certificate).
    public let alice: DeviceIdentity
    /// Bob's device.
    public let bob: DeviceIdentity
    /// Bob's signed X25519 prekey (also his first ratchet key).
    public let signedPreKey: SignedPreKeyPair
    /// Bob's one-time X25519 prekey.
    public let oneTimePreKey: OneTimePreKeyPair
    /// Bob's one-time ML-KEM-1024 prekey.
    public let kemPreKey: KEMPreKeyPair
    /// Bob's bundle as a client gets it from the relay (with the KEM prekey), not yet verified.
    public let unverifiedBundle: UnverifiedPreKeyBundle
    /// `unverifiedBundle.verified()`, for the agreement benchmarks that start from a verified bundle.
    public let bundle: PreKeyBundle
    /// Alice's ephemeral (base) key EK_A for the agreement benchmarks (sessions make a fresh one).
    public let ephemeralKey: X25519PrivateKey
    /// A real 1568-byte ML-KEM-1024 ciphertext to Bob's KEM prekey, for `PQXDH.respond`.
    public let kemCiphertext: Data
    /// The first message's plaintext: an encoded `Content` with a short text, padded to 64 bytes.
    public let firstPlaintext: Data

    /// Relay-assigned device id of Bob's device in the bundle.
    public static let bobDeviceID: UInt32 = 2

    public init(label: String = "flitz-bench handshake") {
        let random = SeededRandom(label: label)
        alice = DeviceIdentity(account: AccountIdentity(random: random), random: random)
        bob = DeviceIdentity(account: AccountIdentity(random: random), random: random)
        signedPreKey = SignedPreKeyPair(id: 1, device: bob, random: random)
        oneTimePreKey = OneTimePreKeyPair(id: 7, random: random)
        kemPreKey = KEMPreKeyPair(id: 9, kind: .oneTime, device: bob, random: random)
        unverifiedBundle = UnverifiedPreKeyBundle(
            deviceID: Self.bobDeviceID,
            accountIdentityKey: bob.certificate.accountIdentityKey.rawRepresentation,
            deviceIdentityKey: bob.publicKey.rawRepresentation,
            deviceCertificateSignature: bob.certificate.signature,
            signedPreKeyID: signedPreKey.id,
            signedPreKey: signedPreKey.privateKey.publicKey.rawRepresentation,
            signedPreKeySignature: signedPreKey.signature,
            oneTimePreKey: (id: oneTimePreKey.id, publicKey: oneTimePreKey.privateKey.publicKey.rawRepresentation),
            kemPreKey: (
                id: kemPreKey.id, publicKey: kemPreKey.privateKey.publicKey.rawRepresentation, signature: kemPreKey.signature,
                lastResort: false
            )
        )
        bundle = try! unverifiedBundle.verified()
        ephemeralKey = X25519PrivateKey(random: random)
        kemCiphertext = try! kemPreKey.privateKey.publicKey.encapsulate().ciphertext
        firstPlaintext = MessageContent(
            messageID: random.bytes(16), sentAtMilliseconds: 1_796_000_000_000, body: .text("hello")
        ).encoded()
    }

    // MARK: PQXDH (the root package's Session)

    /// Alice's side of a PQXDH session setup: verify Bob's bundle (certificate, signed prekey signature,
    /// KEM prekey signature over 1591 bytes, FIPS 203 modulus check), `Session.initiate` (EK_A, PQXDH with
    /// a fresh ML-KEM encapsulation, ratchet start) and the first `encrypt` (the prekey message).
    @inline(__always)
    public func initiatePQXDH() -> (session: Session, message: Data) {
        let bundle = try! unverifiedBundle.verified()
        var session = try! Session.initiate(identity: alice, bundle: bundle, random: SystemRandom())
        let message = try! session.encrypt(firstPlaintext, random: SystemRandom())
        return (session, message)
    }

    /// Bob's side of a PQXDH session setup: parse the prekey message and verify Alice's certificate,
    /// then `Session.respond` (PQXDH with ML-KEM decapsulation, ratchet start, first decrypt with its DH step).
    @inline(__always)
    public func respondPQXDH(to message: Data) -> (session: Session, plaintext: Data) {
        guard case .preKey(let incoming) = try! IncomingSessionMessage(parsing: message) else {
            fatalError("expected a prekey message")
        }
        return try! Session.respond(
            to: incoming, identity: bob, signedPreKey: signedPreKey, oneTimePreKey: oneTimePreKey, kemPreKey: kemPreKey,
            random: SystemRandom())
    }

    // MARK: X3DH only (the setup before PQXDH, rebuilt)

    /// Alice's side as before PQXDH: `verified()` without the KEM checks, EK_A, `X3DH.initiate`, ratchet
    /// start, first ratchet message in a `PreKeyMessage` without `kem_prekey_id` / `kem_ciphertext`.
    @inline(__always)
    public func initiateX3DH() -> (ratchet: DoubleRatchet, message: Data) {
        // verified() before PQXDH: key sizes, device certificate, signed prekey signature.
        let account = try! Ed25519PublicKey(rawRepresentation: unverifiedBundle.accountIdentityKey)
        let device = try! Ed25519PublicKey(rawRepresentation: unverifiedBundle.deviceIdentityKey)
        let certificate = DeviceCertificate(
            accountIdentityKey: account, deviceIdentityKey: device, signature: unverifiedBundle.deviceCertificateSignature)
        try! certificate.verify()
        precondition(device.isValidSignature(unverifiedBundle.signedPreKeySignature, for: unverifiedBundle.signedPreKey))
        let spk = try! X25519PublicKey(rawRepresentation: unverifiedBundle.signedPreKey)
        let opk = unverifiedBundle.oneTimePreKey.map { (id: $0.id, publicKey: try! X25519PublicKey(rawRepresentation: $0.publicKey)) }
        // `PreKeyBundle` now requires a KEM prekey; X3DH never reads it, so the verified one is passed along.
        let x3dhBundle = PreKeyBundle(
            deviceID: unverifiedBundle.deviceID, certificate: certificate, signedPreKeyID: unverifiedBundle.signedPreKeyID,
            signedPreKey: spk, oneTimePreKey: opk, kemPreKey: bundle.kemPreKey)
        // Session.initiate before PQXDH.
        let ephemeral = X25519PrivateKey(random: SystemRandom())
        let agreement = try! X3DH.initiate(identity: alice, ephemeralKey: ephemeral, bundle: x3dhBundle)
        var ratchet = try! DoubleRatchet(
            initiatorWith: agreement.sharedSecret, associatedData: agreement.associatedData,
            responderRatchetKey: x3dhBundle.signedPreKey, random: SystemRandom())
        // Session.encrypt before PQXDH (a prekey message: fields 1-7 of PreKeyMessage).
        let ratchetMessage = try! ratchet.encrypt(firstPlaintext, random: SystemRandom())
        var pk = ProtoPreKeyMessage()
        pk.accountIdentityKey = alice.certificate.accountIdentityKey.rawRepresentation
        pk.deviceIdentityKey = alice.certificate.deviceIdentityKey.rawRepresentation
        pk.deviceCertificateSignature = alice.certificate.signature
        pk.baseKey = ephemeral.publicKey.rawRepresentation
        pk.signedPrekeyID = x3dhBundle.signedPreKeyID
        if let opk = x3dhBundle.oneTimePreKey { pk.oneTimePrekeyID = opk.id }
        pk.ratchetMessage = ratchetMessage
        var message = ProtoSessionMessage()
        message.version = UInt32(ProtocolConstants.version)
        message.kind = .prekeyMessage(pk)
        return (ratchet, try! message.serializedData())
    }

    /// Bob's side as before PQXDH: `IncomingSessionMessage(parsing:)` without the KEM checks (protobuf
    /// parse, key sizes, certificate), `Session.respond` with `X3DH.respond`, ratchet start, first decrypt.
    @inline(__always)
    public func respondX3DH(to bytes: Data) -> (ratchet: DoubleRatchet, plaintext: Data) {
        let message = try! ProtoSessionMessage(serializedBytes: bytes)
        precondition(message.version == UInt32(ProtocolConstants.version))
        guard case .prekeyMessage(let pk) = message.kind else { fatalError("expected a prekey message") }
        let account = try! Ed25519PublicKey(rawRepresentation: pk.accountIdentityKey)
        let device = try! Ed25519PublicKey(rawRepresentation: pk.deviceIdentityKey)
        let base = try! X25519PublicKey(rawRepresentation: pk.baseKey)
        let certificate = DeviceCertificate(accountIdentityKey: account, deviceIdentityKey: device, signature: pk.deviceCertificateSignature)
        try! certificate.verify()
        precondition(signedPreKey.id == pk.signedPrekeyID && pk.hasOneTimePrekeyID && oneTimePreKey.id == pk.oneTimePrekeyID)
        let agreement = try! X3DH.respond(
            identity: bob, signedPreKey: signedPreKey, oneTimePreKey: oneTimePreKey, initiatorCertificate: certificate, baseKey: base)
        var ratchet = DoubleRatchet(
            responderWith: agreement.sharedSecret, associatedData: agreement.associatedData, ratchetKey: signedPreKey.privateKey)
        let plaintext = try! ratchet.decrypt(pk.ratchetMessage, random: SystemRandom())
        return (ratchet, plaintext)
    }

    // MARK: Checks (outside the measurement)

    /// Checks that both agreements agree on both sides and that both setups deliver the first message.
    public func check() {
        let x3dhA = try! X3DH.initiate(identity: alice, ephemeralKey: ephemeralKey, bundle: bundle)
        let x3dhB = try! X3DH.respond(
            identity: bob, signedPreKey: signedPreKey, oneTimePreKey: oneTimePreKey, initiatorCertificate: alice.certificate,
            baseKey: ephemeralKey.publicKey)
        precondition(x3dhA.dhOutputs.count == 4 && x3dhA.kemCiphertext == nil, "expected X3DH with four DHs")
        precondition(x3dhA.sharedSecret.constantTimeEquals(x3dhB.sharedSecret), "X3DH sides disagree")

        let pqA = try! PQXDH.initiate(identity: alice, ephemeralKey: ephemeralKey, bundle: bundle)
        let pqB = try! PQXDH.respond(
            identity: bob, signedPreKey: signedPreKey, oneTimePreKey: oneTimePreKey, kemPreKey: kemPreKey,
            kemCiphertext: pqA.kemCiphertext!, initiatorCertificate: alice.certificate, baseKey: ephemeralKey.publicKey)
        precondition(pqA.kemCiphertext?.count == MLKEMSizes.ciphertext, "expected a 1568-byte KEM ciphertext")
        precondition(pqA.sharedSecret.constantTimeEquals(pqB.sharedSecret), "PQXDH sides disagree")
        precondition(!pqA.sharedSecret.constantTimeEquals(x3dhA.sharedSecret), "PQXDH and X3DH must not share an SK")
        // The fixed ciphertext the responder benchmark decapsulates is a real one to this KEM prekey.
        _ = try! PQXDH.respond(
            identity: bob, signedPreKey: signedPreKey, oneTimePreKey: oneTimePreKey, kemPreKey: kemPreKey,
            kemCiphertext: kemCiphertext, initiatorCertificate: alice.certificate, baseKey: ephemeralKey.publicKey)

        let pq = initiatePQXDH()
        precondition(pq.session.isAwaitingReply)
        precondition(respondPQXDH(to: pq.message).plaintext == firstPlaintext, "PQXDH setup does not deliver")
        let classic = initiateX3DH()
        precondition(respondX3DH(to: classic.message).plaintext == firstPlaintext, "X3DH setup does not deliver")
        // The rebuilt X3DH message is the PQXDH one without fields 8 and 9.
        var stripped = try! ProtoSessionMessage(serializedBytes: pq.message)
        guard case .prekeyMessage(var pk) = stripped.kind else { fatalError("expected a prekey message") }
        pk.kemPrekeyID = 0
        pk.kemCiphertext = Data()
        stripped.kind = .prekeyMessage(pk)
        precondition(try! stripped.serializedData().count == classic.message.count, "X3DH message differs from PQXDH minus KEM fields")
    }
}
