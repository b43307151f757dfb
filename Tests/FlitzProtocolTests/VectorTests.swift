import FlitzCrypto
import FlitzProtocol
import Foundation
import Testing

// Checks vectors/kdf.json, x3dh.json, ratchet.json and session.json two ways: recomputing them from the
// same seeds through the public API, and checking each value independently from the vector's own inputs.

struct PartyVector: Decodable, Sendable {
    struct SignedPreKey: Decodable, Sendable { let id: UInt32; let privateKey, publicKey, signature: String }
    struct OneTimePreKey: Decodable, Sendable { let id: UInt32; let privateKey, publicKey: String }
    let randomLabel: String
    let accountIdentitySeed, accountIdentityKey, deviceIdentitySeed, deviceIdentityKey: String
    let deviceIdentityX25519PrivateKey, deviceIdentityX25519PublicKey: String
    let deviceCertificatePayload, deviceCertificateSignature: String
    let signedPreKey: SignedPreKey?
    let oneTimePreKey: OneTimePreKey?
}

/// A party rebuilt from its label the way `flitz-vectors` builds it (protocol/vectors.md).
struct RebuiltParty {
    let random: SeededRandom
    let account: AccountIdentity
    let device: DeviceIdentity
    let signedPreKey: SignedPreKeyPair?
    let oneTimePreKey: OneTimePreKeyPair?
    let kemPreKey: KEMPreKeyPair?

    init(_ vector: PartyVector) {
        let random = SeededRandom(label: vector.randomLabel)
        let account = AccountIdentity(random: random)
        let device = DeviceIdentity(account: account, random: random)
        self.random = random
        self.account = account
        self.device = device
        signedPreKey = vector.signedPreKey.map { SignedPreKeyPair(id: $0.id, device: device, random: random) }
        oneTimePreKey = vector.oneTimePreKey.map { OneTimePreKeyPair(id: $0.id, random: random) }
        kemPreKey = vector.signedPreKey.map { _ in KEMPreKeyPair(id: 200, kind: .oneTime, device: device, random: random) }
    }

    /// Starts a session to `responder` with the vector's fixed KEM encapsulation.
    func initiate(to responder: RebuiltParty, kemCiphertext: String, kemSharedSecret: String) throws -> Session {
        try Session.initiate(
            identity: device, bundle: try responder.bundle(), random: random,
            encapsulation: (Data(vectorHex: kemCiphertext), SecretBytes(Data(vectorHex: kemSharedSecret))))
    }

    func bundle() throws -> PreKeyBundle {
        try UnverifiedPreKeyBundle(
            deviceID: 1, accountIdentityKey: account.publicKey.rawRepresentation, deviceIdentityKey: device.publicKey.rawRepresentation,
            deviceCertificateSignature: device.certificate.signature, signedPreKeyID: signedPreKey!.id,
            signedPreKey: signedPreKey!.privateKey.publicKey.rawRepresentation, signedPreKeySignature: signedPreKey!.signature,
            oneTimePreKey: oneTimePreKey.map { (id: $0.id, publicKey: $0.privateKey.publicKey.rawRepresentation) },
            kemPreKey: kemPreKey.map { (id: $0.id, publicKey: $0.privateKey.publicKey.rawRepresentation, signature: $0.signature, lastResort: false) }
        ).verified()
    }

    /// Expects every published value of `vector` to match the rebuilt keys, and checks the signatures independently.
    func check(_ vector: PartyVector, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(account.privateKey.seed.unsafeData.hexString == vector.accountIdentitySeed, sourceLocation: sourceLocation)
        #expect(account.publicKey.rawRepresentation.hexString == vector.accountIdentityKey, sourceLocation: sourceLocation)
        #expect(device.privateKey.seed.unsafeData.hexString == vector.deviceIdentitySeed, sourceLocation: sourceLocation)
        #expect(device.publicKey.rawRepresentation.hexString == vector.deviceIdentityKey, sourceLocation: sourceLocation)
        let x = device.privateKey.x25519PrivateKey()
        #expect(x.secret.unsafeData.hexString == vector.deviceIdentityX25519PrivateKey, sourceLocation: sourceLocation)
        #expect(x.publicKey.rawRepresentation.hexString == vector.deviceIdentityX25519PublicKey, sourceLocation: sourceLocation)
        #expect(device.certificate.signature.hexString == vector.deviceCertificateSignature, sourceLocation: sourceLocation)
        // Independent: the payload layout and both signatures verify from the vector's bytes alone.
        let payload = Data("FlitzDeviceCertificate-v1".utf8) + Data([0]) + Data(vectorHex: vector.accountIdentityKey)
            + Data(vectorHex: vector.deviceIdentityKey)
        #expect(payload.hexString == vector.deviceCertificatePayload, sourceLocation: sourceLocation)
        let accountKey = try Ed25519PublicKey(rawRepresentation: Data(vectorHex: vector.accountIdentityKey))
        #expect(accountKey.isValidSignature(Data(vectorHex: vector.deviceCertificateSignature), for: payload), sourceLocation: sourceLocation)
        let deviceKey = try Ed25519PublicKey(rawRepresentation: Data(vectorHex: vector.deviceIdentityKey))
        #expect(try deviceKey.x25519PublicKey().rawRepresentation.hexString == vector.deviceIdentityX25519PublicKey, sourceLocation: sourceLocation)
        if let spk = vector.signedPreKey {
            #expect(signedPreKey?.privateKey.secret.unsafeData.hexString == spk.privateKey, sourceLocation: sourceLocation)
            #expect(signedPreKey?.privateKey.publicKey.rawRepresentation.hexString == spk.publicKey, sourceLocation: sourceLocation)
            #expect(signedPreKey?.signature.hexString == spk.signature, sourceLocation: sourceLocation)
            #expect(
                deviceKey.isValidSignature(Data(vectorHex: spk.signature), for: Data(vectorHex: spk.publicKey)), sourceLocation: sourceLocation)
        }
        if let opk = vector.oneTimePreKey {
            #expect(oneTimePreKey?.privateKey.secret.unsafeData.hexString == opk.privateKey, sourceLocation: sourceLocation)
            #expect(oneTimePreKey?.privateKey.publicKey.rawRepresentation.hexString == opk.publicKey, sourceLocation: sourceLocation)
        }
    }
}

func x25519(_ privateHex: String, _ publicHex: String) throws -> String {
    try X25519PrivateKey(rawRepresentation: SecretBytes(Data(vectorHex: privateHex)))
        .sharedSecret(with: X25519PublicKey(rawRepresentation: Data(vectorHex: publicHex))).unsafeData.hexString
}

// MARK: - kdf.json

struct KDFVectorFile: Decodable {
    struct RootStep: Decodable { let rootKey, dhOutput, newRootKey, chainKey: String }
    struct ChainStep: Decodable { let chainKey, messageKey, nextChainKey: String }
    struct EncryptionKey: Decodable { let messageKey, encryptionKey: String }
    let description, generator, randomLabel: String
    let rootStep: [RootStep]
    let chainStep: [ChainStep]
    let encryptionKey: [EncryptionKey]
}

@Suite struct KDFVectorTests {
    @Test func kdfVectors() throws {
        let file = try VectorFiles.load(KDFVectorFile.self, "kdf.json")
        #expect(file.rootStep.count == 3 && file.chainStep.count == 3 && file.encryptionKey.count == 3)
        let random = SeededRandom(label: file.randomLabel)
        for step in file.rootStep {
            #expect(random.bytes(32).hexString == step.rootKey)
            #expect(random.bytes(32).hexString == step.dhOutput)
            let (root, chain) = RatchetKDF.rootStep(rootKey: SecretBytes(Data(vectorHex: step.rootKey)), dhOutput: SecretBytes(Data(vectorHex: step.dhOutput)))
            #expect(root.unsafeData.hexString == step.newRootKey)
            #expect(chain.unsafeData.hexString == step.chainKey)
            // Independent: HKDF-SHA-256(salt = root key, ikm = DH output, info = "Flitz-Ratchet-v1"), 64 bytes.
            let okm = try HKDF.deriveKey(
                inputKeyMaterial: SecretBytes(Data(vectorHex: step.dhOutput)), salt: Data(vectorHex: step.rootKey),
                info: Data("Flitz-Ratchet-v1".utf8), length: 64)
            #expect(okm.unsafeData.hexString == step.newRootKey + step.chainKey)
        }
        for step in file.chainStep {
            #expect(random.bytes(32).hexString == step.chainKey)
            let (next, messageKey) = RatchetKDF.chainStep(chainKey: SecretBytes(Data(vectorHex: step.chainKey)))
            #expect(messageKey.unsafeData.hexString == step.messageKey)
            #expect(next.unsafeData.hexString == step.nextChainKey)
            let key = SecretBytes(Data(vectorHex: step.chainKey))
            #expect(HMACSHA256.authenticate(Data([0x01]), key: key).unsafeData.hexString == step.messageKey)
            #expect(HMACSHA256.authenticate(Data([0x02]), key: key).unsafeData.hexString == step.nextChainKey)
        }
        for step in file.encryptionKey {
            #expect(random.bytes(32).hexString == step.messageKey)
            let messageKey = SecretBytes(Data(vectorHex: step.messageKey))
            #expect(RatchetKDF.encryptionKey(messageKey: messageKey).unsafeData.hexString == step.encryptionKey)
            let independent = try HKDF.deriveKey(
                inputKeyMaterial: messageKey, salt: Data(count: 32), info: Data("Flitz-MessageKey-v1".utf8), length: 32)
            #expect(independent.unsafeData.hexString == step.encryptionKey)
        }
    }
}

// MARK: - x3dh.json

struct X3DHVectorCase: Decodable, Sendable, CustomTestStringConvertible {
    let name: String
    let alice, bob: PartyVector
    let aliceEphemeralPrivateKey, aliceEphemeralPublicKey: String
    let dhOutputs: [String]
    let keyMaterial, salt, info, sharedSecret, associatedData: String
    var testDescription: String { name }

    struct File: Decodable { let description, generator: String; let testCases: [X3DHVectorCase] }
    static func all() throws -> [X3DHVectorCase] { try VectorFiles.load(File.self, "x3dh.json").testCases }
}

@Suite struct X3DHVectorTests {
    @Test func bothCasesArePresent() throws {
        #expect(try X3DHVectorCase.all().map(\.name) == ["withOneTimePreKey", "withoutOneTimePreKey"])
    }

    @Test(arguments: try X3DHVectorCase.all())
    func recomputeFromSeeds(_ vector: X3DHVectorCase) throws {
        let alice = RebuiltParty(vector.alice)
        let bob = RebuiltParty(vector.bob)
        try alice.check(vector.alice)
        try bob.check(vector.bob)
        let ephemeral = X25519PrivateKey(random: alice.random)
        #expect(ephemeral.secret.unsafeData.hexString == vector.aliceEphemeralPrivateKey)
        #expect(ephemeral.publicKey.rawRepresentation.hexString == vector.aliceEphemeralPublicKey)
        let agreement = try X3DH.initiate(identity: alice.device, ephemeralKey: ephemeral, bundle: try bob.bundle())
        #expect(agreement.dhOutputs.map { $0.unsafeData.hexString } == vector.dhOutputs)
        #expect(agreement.sharedSecret.unsafeData.hexString == vector.sharedSecret)
        #expect(agreement.associatedData.hexString == vector.associatedData)
        let responder = try X3DH.respond(
            identity: bob.device, signedPreKey: bob.signedPreKey!, oneTimePreKey: bob.oneTimePreKey,
            initiatorCertificate: alice.device.certificate, baseKey: ephemeral.publicKey)
        #expect(responder.sharedSecret.unsafeData.hexString == vector.sharedSecret)
    }

    @Test(arguments: try X3DHVectorCase.all())
    func independentlyFromVectorKeys(_ vector: X3DHVectorCase) throws {
        let bobSPK = try #require(vector.bob.signedPreKey)
        var expected = [
            try x25519(vector.alice.deviceIdentityX25519PrivateKey, bobSPK.publicKey),
            try x25519(vector.aliceEphemeralPrivateKey, vector.bob.deviceIdentityX25519PublicKey),
            try x25519(vector.aliceEphemeralPrivateKey, bobSPK.publicKey),
        ]
        if let opk = vector.bob.oneTimePreKey { expected.append(try x25519(vector.aliceEphemeralPrivateKey, opk.publicKey)) }
        #expect(vector.dhOutputs == expected)
        // The responder's view of the same DHs.
        #expect(try x25519(bobSPK.privateKey, vector.alice.deviceIdentityX25519PublicKey) == expected[0])
        #expect(try x25519(vector.bob.deviceIdentityX25519PrivateKey, vector.aliceEphemeralPublicKey) == expected[1])
        #expect(vector.keyMaterial == String(repeating: "ff", count: 32) + expected.joined())
        #expect(vector.salt == String(repeating: "00", count: 32))
        #expect(vector.info == Data("Flitz-X3DH-v1".utf8).hexString)
        let sk = try HKDF.deriveKey(
            inputKeyMaterial: SecretBytes(Data(vectorHex: vector.keyMaterial)), salt: Data(vectorHex: vector.salt),
            info: Data(vectorHex: vector.info), length: 32)
        #expect(sk.unsafeData.hexString == vector.sharedSecret)
        #expect(
            vector.associatedData
                == vector.alice.deviceIdentityKey + vector.bob.deviceIdentityKey + vector.alice.accountIdentityKey + vector.bob.accountIdentityKey)
    }
}

// MARK: - ratchet.json

struct RatchetStateVector: Decodable, Equatable, Sendable {
    struct Skipped: Decodable, Equatable, Sendable { let ratchetKey: String; let counter: UInt32; let messageKey: String }
    let sendingRatchetPrivateKey, sendingRatchetKey, receivingRatchetKey, rootKey, sendingChainKey, receivingChainKey: String
    let sendingCounter, receivingCounter, previousSendingCounter: UInt32
    let skippedMessageKeys: [Skipped]
    let previousReceivingRatchetKeys: [String]

    init(_ state: ProtoRatchetState) throws {
        sendingRatchetPrivateKey = state.sendingRatchetPrivateKey.hexString
        sendingRatchetKey = try X25519PrivateKey(rawRepresentation: SecretBytes(state.sendingRatchetPrivateKey)).publicKey.rawRepresentation.hexString
        receivingRatchetKey = state.receivingRatchetKey.hexString
        rootKey = state.rootKey.hexString
        sendingChainKey = state.sendingChainKey.hexString
        receivingChainKey = state.receivingChainKey.hexString
        sendingCounter = state.sendingCounter
        receivingCounter = state.receivingCounter
        previousSendingCounter = state.previousSendingCounter
        skippedMessageKeys = state.skippedMessageKeys.map {
            Skipped(ratchetKey: $0.ratchetKey.hexString, counter: $0.counter, messageKey: $0.messageKey.hexString)
        }
        previousReceivingRatchetKeys = state.previousReceivingRatchetKeys.map(\.hexString)
    }
}

struct RatchetVectorFile: Decodable, Sendable {
    struct Header: Decodable, Sendable { let version: UInt8; let ratchetKey: String; let previousChainLength, messageNumber: UInt32 }
    struct Message: Decodable, Sendable {
        let id, sender, plaintext: String
        let header: Header
        let encodedHeader, nonce, chainKey, messageKey, encryptionKey, aeadAssociatedData, ciphertext: String
        let ratchetMessage, sessionMessageKind, sessionMessage: String
    }
    struct States: Decodable, Sendable { let alice: RatchetStateVector; let bob: RatchetStateVector? }
    struct Event: Decodable, Sendable {
        let index: Int
        let action, party, message: String
        let randomBytes: [String]
        let dhRatchetStep: Bool?
        let statesAfter: States
    }
    let description, generator: String
    let alice, bob: PartyVector
    let aliceInitiationRandomBytes: [String]
    let aliceBaseKey, bobRatchetPrivateKey, bobRatchetKey, sharedSecret, associatedData: String
    let kemCiphertext, kemSharedSecret: String
    let messages: [Message]
    let events: [Event]
    let deliveryOrder: [String]

    static func load() throws -> RatchetVectorFile { try VectorFiles.load(RatchetVectorFile.self, "ratchet.json") }
}

@Suite struct RatchetVectorTests {
    @Test func conversationShape() throws {
        let file = try RatchetVectorFile.load()
        #expect(file.messages.count >= 12)
        #expect(Set(file.messages.map(\.sender)) == ["alice", "bob"])
        #expect(file.events.filter { $0.dhRatchetStep == true }.count >= 3)
        let sendOrder = file.events.filter { $0.action == "send" }.map(\.message)
        #expect(file.deliveryOrder != sendOrder)
        #expect(Set(file.deliveryOrder) == Set(sendOrder))
        #expect(file.events.map(\.index) == Array(0..<file.events.count))
    }

    /// Each message on its own, from the vector's keys: header layout, KDF_CK, the message key to
    /// encryption key step, the AEAD and the message layout.
    @Test func eachMessageDecryptsFromItsVectorKeys() throws {
        let file = try RatchetVectorFile.load()
        #expect(file.bobRatchetKey == file.bob.signedPreKey?.publicKey)
        for message in file.messages {
            let header = message.header
            var encodedHeader = Data([header.version]) + Data(vectorHex: header.ratchetKey)
            withUnsafeBytes(of: header.previousChainLength.bigEndian) { encodedHeader.append(contentsOf: $0) }
            withUnsafeBytes(of: header.messageNumber.bigEndian) { encodedHeader.append(contentsOf: $0) }
            #expect(header.version == 1)
            #expect(encodedHeader.hexString == message.encodedHeader, "\(message.id)")
            #expect(Data(vectorHex: message.nonce).count == 24)
            let mk = HMACSHA256.authenticate(Data([0x01]), key: SecretBytes(Data(vectorHex: message.chainKey)))
            #expect(mk.unsafeData.hexString == message.messageKey, "\(message.id)")
            let key = try HKDF.deriveKey(inputKeyMaterial: mk, salt: Data(count: 32), info: Data("Flitz-MessageKey-v1".utf8), length: 32)
            #expect(key.unsafeData.hexString == message.encryptionKey, "\(message.id)")
            #expect(message.aeadAssociatedData == file.associatedData + message.encodedHeader)
            let plaintext = try XChaCha20Poly1305.open(
                Data(vectorHex: message.ciphertext), key: key, nonce: Data(vectorHex: message.nonce),
                authenticating: Data(vectorHex: message.aeadAssociatedData))
            #expect(plaintext.hexString == message.plaintext, "\(message.id)")
            #expect(message.ratchetMessage == message.encodedHeader + message.nonce + message.ciphertext)
            #expect(try ratchetMessage(Data(vectorHex: message.sessionMessage)).hexString == message.ratchetMessage)
        }
    }

    /// The first receiving chain of bob comes from SK: KDF_RK(SK, DH(bob's signed prekey, alice's first ratchet key)).
    @Test func firstChainComesFromTheSharedSecret() throws {
        let file = try RatchetVectorFile.load()
        let first = try #require(file.messages.first)
        let dh = try x25519(file.bobRatchetPrivateKey, first.header.ratchetKey)
        let (_, chainKey) = RatchetKDF.rootStep(rootKey: SecretBytes(Data(vectorHex: file.sharedSecret)), dhOutput: SecretBytes(Data(vectorHex: dh)))
        #expect(chainKey.unsafeData.hexString == first.chainKey)
        // Alice's initiation drew EK_A (32 bytes) then her first ratchet private key (32 bytes).
        #expect(file.aliceInitiationRandomBytes.count == 2)
        let baseKey = try X25519PrivateKey(rawRepresentation: SecretBytes(Data(vectorHex: file.aliceInitiationRandomBytes[0])))
        #expect(baseKey.publicKey.rawRepresentation.hexString == file.aliceBaseKey)
        #expect(try x25519(file.aliceInitiationRandomBytes[1], file.bobRatchetKey) == dh)
    }

    /// Replays the script with the same seeds: every byte sent and every state must match.
    @Test func replayFromSeeds() throws {
        let file = try RatchetVectorFile.load()
        let alice = RebuiltParty(file.alice)
        let bob = RebuiltParty(file.bob)
        try alice.check(file.alice)
        try bob.check(file.bob)
        var aliceSession = try alice.initiate(to: bob, kemCiphertext: file.kemCiphertext, kemSharedSecret: file.kemSharedSecret)
        #expect(aliceSession.baseKey.rawRepresentation.hexString == file.aliceBaseKey)
        #expect(aliceSession.associatedData.hexString == file.associatedData)
        var bobSession: Session?
        let messages = Dictionary(uniqueKeysWithValues: file.messages.map { ($0.id, $0) })
        for event in file.events {
            let message = try #require(messages[event.message])
            let bytes = Data(vectorHex: message.sessionMessage)
            switch (event.action, event.party) {
            case ("send", "alice"):
                #expect(try aliceSession.encrypt(Data(vectorHex: message.plaintext), random: alice.random) == bytes, "\(event.message)")
            case ("send", "bob"):
                #expect(try bobSession!.encrypt(Data(vectorHex: message.plaintext), random: bob.random) == bytes, "\(event.message)")
            case ("receive", "alice"):
                #expect(try aliceSession.decrypt(ratchetMessage(bytes), random: alice.random).hexString == message.plaintext)
            case ("receive", "bob"):
                if bobSession == nil {
                    guard case .preKey(let preKey) = try IncomingSessionMessage(parsing: bytes) else {
                        Issue.record("first message to bob must be a prekey message")
                        return
                    }
                    let (session, plaintext) = try Session.respond(
                        to: preKey, identity: bob.device, signedPreKey: bob.signedPreKey!, oneTimePreKey: bob.oneTimePreKey, kemPreKey: bob.kemPreKey!, random: bob.random)
                    bobSession = session
                    #expect(plaintext.hexString == message.plaintext)
                } else {
                    #expect(try bobSession!.decrypt(ratchetMessage(bytes), random: bob.random).hexString == message.plaintext)
                }
            default:
                Issue.record("unknown event \(event.action) \(event.party)")
            }
            #expect(try RatchetStateVector(aliceSession.ratchetState) == event.statesAfter.alice, "alice after event \(event.index)")
            #expect(try bobSession.map { try RatchetStateVector($0.ratchetState) } == event.statesAfter.bob, "bob after event \(event.index)")
        }
    }
}

// MARK: - session.json

struct SessionVectorFile: Decodable, Sendable {
    struct PreKey: Decodable, Sendable {
        let accountIdentityKey, deviceIdentityKey, deviceCertificateSignature, baseKey: String
        let signedPreKeyId: UInt32
        let oneTimePreKeyId: UInt32?
    }
    struct Message: Decodable, Sendable {
        let sender, messageId, text, contentEncoding, sessionMessage, kind, ratchetMessage: String
        let sentAtMs: Int64
        let randomBytes, receiverRandomBytes: [String]
        let prekeyMessage: PreKey?
    }
    let description, generator, associatedData: String
    let kemCiphertext, kemSharedSecret: String
    let alice, bob: PartyVector
    let aliceInitiationRandomBytes: [String]
    let messages: [Message]
}

@Suite struct SessionVectorTests {
    @Test func replayFromSeeds() throws {
        let file = try VectorFiles.load(SessionVectorFile.self, "session.json")
        #expect(file.messages.map(\.kind) == ["prekeyMessage", "ratchetMessage", "ratchetMessage"])
        let alice = RebuiltParty(file.alice)
        let bob = RebuiltParty(file.bob)
        try alice.check(file.alice)
        try bob.check(file.bob)
        var aliceSession = try alice.initiate(to: bob, kemCiphertext: file.kemCiphertext, kemSharedSecret: file.kemSharedSecret)
        var bobSession: Session?
        for message in file.messages {
            let fromAlice = message.sender == "alice"
            let random = fromAlice ? alice.random : bob.random
            let id = random.bytes(16)
            #expect(id.hexString == message.messageId)
            let content = MessageContent(messageID: id, sentAtMilliseconds: message.sentAtMs, body: .text(message.text))
            #expect(content.encoded().hexString == message.contentEncoding)
            #expect(content.encoded().count % 64 == 0)
            let bytes = fromAlice ? try aliceSession.encrypt(content.encoded(), random: random) : try bobSession!.encrypt(content.encoded(), random: random)
            #expect(bytes.hexString == message.sessionMessage)

            // Parse the vector bytes independently of the replay.
            let parsed = try IncomingSessionMessage(parsing: Data(vectorHex: message.sessionMessage))
            let received: Data
            switch parsed {
            case .preKey(let preKey):
                let expected = try #require(message.prekeyMessage)
                #expect(message.kind == "prekeyMessage")
                #expect(preKey.certificate.accountIdentityKey.rawRepresentation.hexString == expected.accountIdentityKey)
                #expect(preKey.certificate.deviceIdentityKey.rawRepresentation.hexString == expected.deviceIdentityKey)
                #expect(preKey.certificate.signature.hexString == expected.deviceCertificateSignature)
                #expect(preKey.baseKey.rawRepresentation.hexString == expected.baseKey)
                #expect(preKey.signedPreKeyID == expected.signedPreKeyId)
                #expect(preKey.oneTimePreKeyID == expected.oneTimePreKeyId)
                #expect(preKey.ratchetMessage.hexString == message.ratchetMessage)
                let (session, plaintext) = try Session.respond(
                    to: preKey, identity: bob.device, signedPreKey: bob.signedPreKey!, oneTimePreKey: bob.oneTimePreKey, kemPreKey: bob.kemPreKey!, random: bob.random)
                bobSession = session
                received = plaintext
            case .ratchet(let ratchetBytes):
                #expect(message.kind == "ratchetMessage")
                #expect(message.prekeyMessage == nil)
                #expect(ratchetBytes.hexString == message.ratchetMessage)
                received = fromAlice
                    ? try bobSession!.decrypt(ratchetBytes, random: bob.random) : try aliceSession.decrypt(ratchetBytes, random: alice.random)
            }
            #expect(received.hexString == message.contentEncoding)
            #expect(try MessageContent(decoding: received) == content)
        }
        #expect(aliceSession.associatedData.hexString == file.associatedData)
    }
}
