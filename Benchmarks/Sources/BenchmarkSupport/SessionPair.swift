import FlitzCrypto
import FlitzProtocol
import Foundation

/// Alice and Bob with an established session: PQXDH from a verified prekey bundle (with a one-time
/// prekey and a one-time KEM prekey), Alice's prekey message decrypted by Bob, Bob's reply decrypted by Alice.
public struct SessionPair {
    /// The initiator's session.
    public var alice: Session
    /// The responder's session.
    public var bob: Session

    public static func established() -> SessionPair {
        let random = SeededRandom(label: "flitz-bench session setup")
        let aliceDevice = DeviceIdentity(account: AccountIdentity(random: random), random: random)
        let bobAccount = AccountIdentity(random: random)
        let bobDevice = DeviceIdentity(account: bobAccount, random: random)
        let signedPreKey = SignedPreKeyPair(id: 1, device: bobDevice, random: random)
        let oneTimePreKey = OneTimePreKeyPair(id: 7, random: random)
        let kemPreKey = KEMPreKeyPair(id: 9, kind: .oneTime, device: bobDevice, random: random)
        let bundle = try! UnverifiedPreKeyBundle(
            deviceID: 2,
            accountIdentityKey: bobAccount.publicKey.rawRepresentation,
            deviceIdentityKey: bobDevice.publicKey.rawRepresentation,
            deviceCertificateSignature: bobDevice.certificate.signature,
            signedPreKeyID: signedPreKey.id,
            signedPreKey: signedPreKey.privateKey.publicKey.rawRepresentation,
            signedPreKeySignature: signedPreKey.signature,
            oneTimePreKey: (id: oneTimePreKey.id, publicKey: oneTimePreKey.privateKey.publicKey.rawRepresentation),
            kemPreKey: (id: kemPreKey.id, publicKey: kemPreKey.privateKey.publicKey.rawRepresentation, signature: kemPreKey.signature, lastResort: false)
        ).verified()

        var alice = try! Session.initiate(identity: aliceDevice, bundle: bundle, random: random)
        guard case .preKey(let first) = try! IncomingSessionMessage(parsing: try! alice.encrypt(Data("hello".utf8), random: random)) else {
            fatalError("expected a prekey message")
        }
        var bob = try! Session.respond(
            to: first, identity: bobDevice, signedPreKey: signedPreKey, oneTimePreKey: oneTimePreKey, kemPreKey: kemPreKey, random: random
        ).session
        _ = deliver(Data("hi".utf8), from: &bob, to: &alice)
        precondition(!alice.isAwaitingReply, "session not established")
        return SessionPair(alice: alice, bob: bob)
    }

    /// One message: encrypt with the production randomness (SystemRandom nonces and ratchet keys),
    /// parse the SessionMessage as a receiver would, decrypt.
    @inline(__always)
    public static func deliver(_ plaintext: Data, from sender: inout Session, to receiver: inout Session) -> Data {
        let wire = try! sender.encrypt(plaintext, random: SystemRandom())
        guard case .ratchet(let body) = try! IncomingSessionMessage(parsing: wire) else {
            fatalError("expected a ratchet message")
        }
        return try! receiver.decrypt(body, random: SystemRandom())
    }

    /// Checks, outside the measurement, that alice → bob messages do not step Bob's ratchet.
    /// Alice's first message after the handshake carries the ratchet key she made on decrypting Bob's
    /// reply, so Bob steps once here; every later alice → bob message stays in that chain.
    public mutating func checkSameChain(_ plaintext: Data) {
        let before = bob.ratchetState.receivingRatchetKey
        precondition(Self.deliver(plaintext, from: &alice, to: &bob) == plaintext)
        precondition(bob.ratchetState.receivingRatchetKey != before, "expected Bob's first DH ratchet step")
        for _ in 0..<3 {
            let before = bob.ratchetState.receivingRatchetKey
            precondition(Self.deliver(plaintext, from: &alice, to: &bob) == plaintext)
            precondition(bob.ratchetState.receivingRatchetKey == before, "unexpected DH ratchet step")
        }
    }

    /// Checks, outside the measurement, that alternating messages step the receiver's ratchet every time.
    /// Leaves the pair so that alice sends next.
    public mutating func checkDHStepEveryMessage(_ plaintext: Data) {
        for _ in 0..<2 {
            var before = bob.ratchetState.receivingRatchetKey
            precondition(Self.deliver(plaintext, from: &alice, to: &bob) == plaintext)
            precondition(bob.ratchetState.receivingRatchetKey != before, "no DH ratchet step at bob")
            before = alice.ratchetState.receivingRatchetKey
            precondition(Self.deliver(plaintext, from: &bob, to: &alice) == plaintext)
            precondition(alice.ratchetState.receivingRatchetKey != before, "no DH ratchet step at alice")
        }
    }
}
