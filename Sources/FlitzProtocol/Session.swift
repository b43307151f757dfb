import FlitzCrypto
import Foundation
import SwiftProtobuf

/// A parsed, certificate-checked PQXDH initial message (`protocol/crypto.md`, "Prekey message").
public struct IncomingPreKeyMessage: Sendable {
    /// The initiator's verified device certificate (account identity key over device identity key IK_A).
    public let certificate: DeviceCertificate
    /// EK_A, the initiator's 32-byte X25519 base key.
    public let baseKey: X25519PublicKey
    /// Id of the responder's signed prekey the initiator used.
    public let signedPreKeyID: UInt32
    /// Id of the responder's one-time prekey the initiator used, if any.
    public let oneTimePreKeyID: UInt32?
    /// Id of the responder's KEM prekey the initiator encapsulated to.
    public let kemPreKeyID: UInt32
    /// The 1568-byte ML-KEM-1024 ciphertext.
    public let kemCiphertext: Data
    /// The first ratchet message.
    public let ratchetMessage: Data
}

/// What an envelope's ciphertext holds (`protocol/flitz_session.proto`, `SessionMessage`).
public enum IncomingSessionMessage: Sendable {
    /// A session-creating message.
    case preKey(IncomingPreKeyMessage)
    /// A message of an existing session.
    case ratchet(Data)

    /// Parses an envelope's ciphertext and verifies a prekey message's device certificate.
    /// - Throws: `FlitzProtocolError.malformedMessage`, `.unsupportedVersion`, `.authenticationFailed` (certificate),
    ///   `.missingKEMPreKey` for a prekey message without a KEM ciphertext (a downgrade to X3DH is refused).
    public init(parsing bytes: Data) throws(FlitzProtocolError) {
        let message: ProtoSessionMessage
        do { message = try ProtoSessionMessage(serializedBytes: bytes) } catch {
            throw FlitzProtocolError(.malformedMessage, "not a SessionMessage")
        }
        guard message.version == UInt32(ProtocolConstants.version) else {
            throw FlitzProtocolError(.unsupportedVersion, "session message version \(message.version)")
        }
        switch message.kind {
        case .ratchetMessage(let data):
            self = .ratchet(data)
        case .prekeyMessage(let pk):
            guard let account = try? Ed25519PublicKey(rawRepresentation: pk.accountIdentityKey),
                let device = try? Ed25519PublicKey(rawRepresentation: pk.deviceIdentityKey),
                let base = try? X25519PublicKey(rawRepresentation: pk.baseKey)
            else { throw FlitzProtocolError(.malformedMessage, "prekey message key sizes") }
            guard !pk.kemCiphertext.isEmpty else { throw FlitzProtocolError(.missingKEMPreKey, "prekey message without KEM ciphertext") }
            guard pk.kemCiphertext.count == MLKEMSizes.ciphertext else { throw FlitzProtocolError(.malformedMessage, "KEM ciphertext size") }
            let certificate = DeviceCertificate(accountIdentityKey: account, deviceIdentityKey: device, signature: pk.deviceCertificateSignature)
            try certificate.verify()
            self = .preKey(
                IncomingPreKeyMessage(
                    certificate: certificate, baseKey: base, signedPreKeyID: pk.signedPrekeyID,
                    oneTimePreKeyID: pk.hasOneTimePrekeyID ? pk.oneTimePrekeyID : nil, kemPreKeyID: pk.kemPrekeyID,
                    kemCiphertext: pk.kemCiphertext, ratchetMessage: pk.ratchetMessage))
        case nil:
            throw FlitzProtocolError(.malformedMessage, "empty SessionMessage")
        }
    }
}

/// An end-to-end session between two devices: PQXDH to start, then the Double Ratchet. Encrypts to and
/// decrypts from `SessionMessage` bytes; serialises to `SessionRecord` bytes for storage
/// (`protocol/crypto.md`, "Sessions").
public struct Session: Sendable {
    /// The peer's verified device certificate (their account and device identity keys).
    public let remoteCertificate: DeviceCertificate
    /// The PQXDH base key (EK_A) that created this session; identifies it across retries.
    public let baseKey: X25519PublicKey
    /// 128-byte AD: IK_A ‖ IK_B ‖ AccK_A ‖ AccK_B (`X3DHAgreement.associatedData`).
    public let associatedData: Data
    private let localCertificate: DeviceCertificate
    private var ratchet: DoubleRatchet
    private var pendingPreKey: ProtoPendingPreKey?
    /// Whether PQXDH used the responder's last-resort KEM prekey (no one-time KEM prekey was left), so the
    /// session's post-quantum part rests on a reusable key (Signal PQXDH §4.3).
    public let usedLastResortPreKey: Bool

    /// Whether this side is still sending prekey messages (no reply decrypted yet).
    public var isAwaitingReply: Bool { pendingPreKey != nil }

    /// Starts a session as initiator from a verified bundle. Random consumption: EK_A (32 bytes), then the
    /// first ratchet key (32 bytes); the KEM encapsulation uses the system's randomness unless `encapsulation`
    /// fixes it (test vectors only).
    /// - Throws: `FlitzProtocolError.invalidKey` for low-order keys, `.authenticationFailed` for unusable identity keys.
    public static func initiate(
        identity: DeviceIdentity, bundle: PreKeyBundle, random: any RandomSource = SystemRandom(),
        encapsulation: (ciphertext: Data, sharedSecret: SecretBytes)? = nil
    ) throws(FlitzProtocolError) -> Session {
        let ephemeral = X25519PrivateKey(random: random)
        let agreement = try PQXDH.initiate(identity: identity, ephemeralKey: ephemeral, bundle: bundle, encapsulation: encapsulation)
        let ratchet = try DoubleRatchet(
            initiatorWith: agreement.sharedSecret, associatedData: agreement.associatedData,
            responderRatchetKey: bundle.signedPreKey, random: random)
        var pending = ProtoPendingPreKey()
        pending.baseKey = ephemeral.publicKey.rawRepresentation
        pending.signedPrekeyID = bundle.signedPreKeyID
        if let opk = bundle.oneTimePreKey { pending.oneTimePrekeyID = opk.id }
        pending.kemPrekeyID = bundle.kemPreKey.id
        pending.kemCiphertext = agreement.kemCiphertext ?? Data()
        return Session(
            remoteCertificate: bundle.certificate, baseKey: ephemeral.publicKey, associatedData: agreement.associatedData,
            localCertificate: identity.certificate, ratchet: ratchet, pendingPreKey: pending,
            usedLastResortPreKey: bundle.kemPreKey.kind == .lastResort)
    }

    /// Creates the responder's session from a prekey message and decrypts its first message.
    /// The caller looks up the prekeys by the ids in `message` and deletes the one-time prekeys (X25519 and
    /// KEM) only after this returns, i.e. after the first message authenticated.
    /// - Throws: `FlitzProtocolError.unknownPreKey` when the ids do not match the keys given;
    ///   errors of `PQXDH.respond` and `DoubleRatchet.decrypt`.
    public static func respond(
        to message: IncomingPreKeyMessage, identity: DeviceIdentity, signedPreKey: SignedPreKeyPair,
        oneTimePreKey: OneTimePreKeyPair?, kemPreKey: KEMPreKeyPair, random: any RandomSource = SystemRandom()
    ) throws(FlitzProtocolError) -> (session: Session, plaintext: Data) {
        guard signedPreKey.id == message.signedPreKeyID, oneTimePreKey?.id == message.oneTimePreKeyID, kemPreKey.id == message.kemPreKeyID else {
            throw FlitzProtocolError(.unknownPreKey)
        }
        let agreement = try PQXDH.respond(
            identity: identity, signedPreKey: signedPreKey, oneTimePreKey: oneTimePreKey, kemPreKey: kemPreKey,
            kemCiphertext: message.kemCiphertext, initiatorCertificate: message.certificate, baseKey: message.baseKey)
        var session = Session(
            remoteCertificate: message.certificate, baseKey: message.baseKey, associatedData: agreement.associatedData,
            localCertificate: identity.certificate,
            ratchet: DoubleRatchet(responderWith: agreement.sharedSecret, associatedData: agreement.associatedData, ratchetKey: signedPreKey.privateKey),
            pendingPreKey: nil, usedLastResortPreKey: kemPreKey.kind == .lastResort)
        let plaintext = try session.ratchet.decrypt(message.ratchetMessage, random: random)
        return (session, plaintext)
    }

    private init(
        remoteCertificate: DeviceCertificate, baseKey: X25519PublicKey, associatedData: Data, localCertificate: DeviceCertificate,
        ratchet: DoubleRatchet, pendingPreKey: ProtoPendingPreKey?, usedLastResortPreKey: Bool
    ) {
        self.usedLastResortPreKey = usedLastResortPreKey
        self.remoteCertificate = remoteCertificate
        self.baseKey = baseKey
        self.associatedData = associatedData
        self.localCertificate = localCertificate
        self.ratchet = ratchet
        self.pendingPreKey = pendingPreKey
    }

    /// Encrypts `plaintext` into `SessionMessage` bytes: a prekey message until a reply has decrypted.
    /// - Throws: `FlitzProtocolError.noSendingChain`, `.counterOverflow`.
    public mutating func encrypt(_ plaintext: Data, random: any RandomSource = SystemRandom()) throws(FlitzProtocolError) -> Data {
        let ratchetMessage = try ratchet.encrypt(plaintext, random: random)
        var message = ProtoSessionMessage()
        message.version = UInt32(ProtocolConstants.version)
        if let pendingPreKey {
            var pk = ProtoPreKeyMessage()
            pk.accountIdentityKey = localCertificate.accountIdentityKey.rawRepresentation
            pk.deviceIdentityKey = localCertificate.deviceIdentityKey.rawRepresentation
            pk.deviceCertificateSignature = localCertificate.signature
            pk.baseKey = pendingPreKey.baseKey
            pk.signedPrekeyID = pendingPreKey.signedPrekeyID
            if pendingPreKey.hasOneTimePrekeyID { pk.oneTimePrekeyID = pendingPreKey.oneTimePrekeyID }
            pk.kemPrekeyID = pendingPreKey.kemPrekeyID
            pk.kemCiphertext = pendingPreKey.kemCiphertext
            pk.ratchetMessage = ratchetMessage
            message.kind = .prekeyMessage(pk)
        } else {
            message.kind = .ratchetMessage(ratchetMessage)
        }
        return try! message.serializedData()
    }

    /// Decrypts a ratchet message of this session (for a prekey message whose base key is this
    /// session's, pass its `ratchetMessage`). On any error the session is unchanged.
    /// - Throws: see `DoubleRatchet.decrypt`.
    public mutating func decrypt(_ ratchetMessage: Data, random: any RandomSource = SystemRandom()) throws(FlitzProtocolError) -> Data {
        let plaintext = try ratchet.decrypt(ratchetMessage, random: random)
        pendingPreKey = nil
        return plaintext
    }

    /// The `SessionRecord` bytes for local storage. They contain secret keys: store them protected.
    public func serialized() -> Data {
        var record = ProtoSessionRecord()
        record.version = 1
        record.associatedData = associatedData
        record.remoteAccountIdentityKey = remoteCertificate.accountIdentityKey.rawRepresentation
        record.remoteDeviceIdentityKey = remoteCertificate.deviceIdentityKey.rawRepresentation
        record.remoteDeviceCertificateSignature = remoteCertificate.signature
        record.localAccountIdentityKey = localCertificate.accountIdentityKey.rawRepresentation
        record.localDeviceIdentityKey = localCertificate.deviceIdentityKey.rawRepresentation
        record.localDeviceCertificateSignature = localCertificate.signature
        record.baseKey = baseKey.rawRepresentation
        record.ratchet = ratchet.record
        if let pendingPreKey { record.pendingPrekey = pendingPreKey }
        record.lastResort = usedLastResortPreKey
        return try! record.serializedData()
    }

    /// Restores a session from `serialized()` bytes.
    /// - Throws: `FlitzProtocolError.invalidSessionRecord`.
    public init(serialized bytes: Data) throws(FlitzProtocolError) {
        guard let record = try? ProtoSessionRecord(serializedBytes: bytes), record.version == 1, record.associatedData.count == X3DH.associatedDataLength,
            let remoteAccount = try? Ed25519PublicKey(rawRepresentation: record.remoteAccountIdentityKey),
            let remoteDevice = try? Ed25519PublicKey(rawRepresentation: record.remoteDeviceIdentityKey),
            let localAccount = try? Ed25519PublicKey(rawRepresentation: record.localAccountIdentityKey),
            let localDevice = try? Ed25519PublicKey(rawRepresentation: record.localDeviceIdentityKey),
            let base = try? X25519PublicKey(rawRepresentation: record.baseKey)
        else { throw FlitzProtocolError(.invalidSessionRecord) }
        remoteCertificate = DeviceCertificate(accountIdentityKey: remoteAccount, deviceIdentityKey: remoteDevice, signature: record.remoteDeviceCertificateSignature)
        localCertificate = DeviceCertificate(accountIdentityKey: localAccount, deviceIdentityKey: localDevice, signature: record.localDeviceCertificateSignature)
        baseKey = base
        associatedData = record.associatedData
        ratchet = try DoubleRatchet(record: record.ratchet, associatedData: record.associatedData)
        pendingPreKey = record.hasPendingPrekey ? record.pendingPrekey : nil
        usedLastResortPreKey = record.lastResort
    }

    /// The raw storage form of the ratchet, for test vectors and diagnostics only.
    public var ratchetState: ProtoRatchetState { ratchet.record }
}
