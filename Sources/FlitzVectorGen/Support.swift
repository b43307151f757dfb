import FlitzCrypto
import FlitzProtocol
import FlitzVectors
import Foundation
import Synchronization

/// A `SeededRandom` that remembers every output, so vectors can list the random bytes each step consumed.
final class RecordingRandom: RandomSource {
    let label: String
    private let base: SeededRandom
    private let log = Mutex<[Data]>([])

    init(label: String) {
        self.label = label
        base = SeededRandom(label: label)
    }

    func bytes(_ count: Int) -> Data {
        let out = base.bytes(count)
        log.withLock { $0.append(out) }
        return out
    }

    /// The outputs since the last call, oldest first.
    func take() -> [Data] {
        log.withLock { log in
            defer { log.removeAll() }
            return log
        }
    }
}

/// One device of a vector: account identity, device identity and (for responders) prekeys, all drawn
/// from its `RecordingRandom` in this order: account seed (32), device seed (32), signed prekey (32),
/// one-time prekey (32), KEM prekey seed (64, responders only).
struct VectorParty {
    let random: RecordingRandom
    let account: AccountIdentity
    let device: DeviceIdentity
    let signedPreKey: SignedPreKeyPair?
    let oneTimePreKey: OneTimePreKeyPair?
    let kemPreKey: KEMPreKeyPair?

    static let signedPreKeyID: UInt32 = 1
    static let oneTimePreKeyID: UInt32 = 100
    static let kemPreKeyID: UInt32 = 200

    init(label: String, signedPreKey: Bool, oneTimePreKey: Bool) {
        random = RecordingRandom(label: label)
        account = AccountIdentity(random: random)
        device = DeviceIdentity(account: account, random: random)
        self.signedPreKey = signedPreKey ? SignedPreKeyPair(id: Self.signedPreKeyID, device: device, random: random) : nil
        self.oneTimePreKey = oneTimePreKey ? OneTimePreKeyPair(id: Self.oneTimePreKeyID, random: random) : nil
        self.kemPreKey = signedPreKey ? KEMPreKeyPair(id: Self.kemPreKeyID, kind: .oneTime, device: device, random: random) : nil
        _ = random.take()
    }

    /// Starts a session to `responder` with the fixed KEM encapsulation of its KEM prekey.
    func initiate(to responder: VectorParty) throws -> Session {
        let bundle = try responder.bundle()
        return try Session.initiate(
            identity: device, bundle: bundle, random: random, encapsulation: try KEMFixtures.encapsulation(for: bundle.kemPreKey.publicKey))
    }

    /// Answers a prekey message as this (responder) party.
    func respond(to message: IncomingPreKeyMessage) throws -> (session: Session, plaintext: Data) {
        try Session.respond(
            to: message, identity: device, signedPreKey: signedPreKey!, oneTimePreKey: oneTimePreKey, kemPreKey: kemPreKey!, random: random)
    }

    /// The bundle a relay would serve for this party, verified.
    func bundle() throws -> PreKeyBundle {
        guard let signedPreKey else { preconditionFailure("not a responder") }
        return try UnverifiedPreKeyBundle(
            deviceID: 1, accountIdentityKey: account.publicKey.rawRepresentation,
            deviceIdentityKey: device.publicKey.rawRepresentation, deviceCertificateSignature: device.certificate.signature,
            signedPreKeyID: signedPreKey.id, signedPreKey: signedPreKey.privateKey.publicKey.rawRepresentation,
            signedPreKeySignature: signedPreKey.signature,
            oneTimePreKey: oneTimePreKey.map { (id: $0.id, publicKey: $0.privateKey.publicKey.rawRepresentation) },
            kemPreKey: kemPreKey.map { (id: $0.id, publicKey: $0.privateKey.publicKey.rawRepresentation, signature: $0.signature, lastResort: false) }
        ).verified()
    }

    /// The bundle a relay would serve, as JSON (`vectors/README.md`, "Bundles").
    func bundleJSON() -> JSONValue {
        guard let signedPreKey else { preconditionFailure("not a responder") }
        var object: [String: JSONValue] = [
            "deviceId": .int(1),
            "accountIdentityKey": .hex(account.publicKey.rawRepresentation),
            "deviceIdentityKey": .hex(device.publicKey.rawRepresentation),
            "deviceCertificateSignature": .hex(device.certificate.signature),
            "signedPreKeyId": .uint(signedPreKey.id),
            "signedPreKey": .hex(signedPreKey.privateKey.publicKey.rawRepresentation),
            "signedPreKeySignature": .hex(signedPreKey.signature),
        ]
        if let oneTimePreKey {
            object["oneTimePreKeyId"] = .uint(oneTimePreKey.id)
            object["oneTimePreKey"] = .hex(oneTimePreKey.privateKey.publicKey.rawRepresentation)
        }
        if let kemPreKey {
            let publicKey = kemPreKey.privateKey.publicKey
            object["kemPreKeyId"] = .uint(kemPreKey.id)
            object["kemPreKey"] = .hex(publicKey.rawRepresentation)
            object["kemPreKeySignature"] = .hex(kemPreKey.signature)
            object["kemPreKeyLastResort"] = .bool(kemPreKey.kind == .lastResort)
            // The initiator's fixed encapsulation to this key (swift-crypto cannot seed it; see KEMFixtures).
            let fixed = try! KEMFixtures.encapsulation(for: publicKey)
            object["kemCiphertext"] = .hex(fixed.ciphertext)
            object["kemSharedSecret"] = .hex(fixed.sharedSecret)
        }
        return .object(object)
    }

    /// Everything about the party's keys, as JSON.
    func json() -> JSONValue {
        var object: [String: JSONValue] = [
            "randomLabel": .string(random.label),
            "accountIdentitySeed": .hex(account.privateKey.seed),
            "accountIdentityKey": .hex(account.publicKey.rawRepresentation),
            "deviceIdentitySeed": .hex(device.privateKey.seed),
            "deviceIdentityKey": .hex(device.publicKey.rawRepresentation),
            "deviceIdentityX25519PrivateKey": .hex(device.privateKey.x25519PrivateKey().secret),
            "deviceIdentityX25519PublicKey": .hex(device.privateKey.x25519PrivateKey().publicKey.rawRepresentation),
            "deviceCertificatePayload": .hex(
                Data("FlitzDeviceCertificate-v1".utf8) + Data([0]) + account.publicKey.rawRepresentation
                    + device.publicKey.rawRepresentation),
            "deviceCertificateSignature": .hex(device.certificate.signature),
        ]
        if let signedPreKey {
            object["signedPreKey"] = .object([
                "id": .uint(signedPreKey.id),
                "privateKey": .hex(signedPreKey.privateKey.secret),
                "publicKey": .hex(signedPreKey.privateKey.publicKey.rawRepresentation),
                "signature": .hex(signedPreKey.signature),
            ])
        }
        if let oneTimePreKey {
            object["oneTimePreKey"] = .object([
                "id": .uint(oneTimePreKey.id),
                "privateKey": .hex(oneTimePreKey.privateKey.secret),
                "publicKey": .hex(oneTimePreKey.privateKey.publicKey.rawRepresentation),
            ])
        }
        if let kemPreKey {
            let publicKey = kemPreKey.privateKey.publicKey.rawRepresentation
            object["kemPreKey"] = .object([
                "id": .uint(kemPreKey.id),
                "lastResort": .bool(kemPreKey.kind == .lastResort),
                "seed": .hex(kemPreKey.privateKey.seed),
                "publicKey": .hex(publicKey),
                "signaturePayload": .hex(KEMPreKeyPair.signaturePayload(id: kemPreKey.id, kind: kemPreKey.kind, publicKey: publicKey)),
                "signature": .hex(kemPreKey.signature),
            ])
        }
        return .object(object)
    }
}

/// The ratchet message inside `SessionMessage` bytes, and the prekey message if it is one.
func ratchetMessage(of sessionMessage: Data) throws -> (ratchetMessage: Data, preKey: IncomingPreKeyMessage?) {
    switch try IncomingSessionMessage(parsing: sessionMessage) {
    case .preKey(let message): (message.ratchetMessage, message)
    case .ratchet(let bytes): (bytes, nil)
    }
}

/// Splits a ratchet message into header, nonce and ciphertext ‖ tag.
func split(ratchetMessage message: Data) -> (header: Data, nonce: Data, ciphertext: Data) {
    let message = Data(message)
    return (message.prefix(41), message[41..<65], message.suffix(from: 65))
}

/// A session's state as a vector state object (`SessionStateJSON.state`).
func stateJSON(_ session: Session) -> JSONValue {
    try! SessionStateJSON.state(record: session.serialized())
}
