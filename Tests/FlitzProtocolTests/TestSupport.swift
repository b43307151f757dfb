import FlitzCrypto
import FlitzProtocol
import Foundation
import Testing

/// A device with deterministic keys: account seed, device seed, signed prekey (id 1), one-time prekey (id 100),
/// one-time KEM prekey (id 200),
/// drawn in that order from `SeededRandom(label:)`.
struct TestDevice {
    let random: SeededRandom
    let account: AccountIdentity
    let identity: DeviceIdentity
    let signedPreKey: SignedPreKeyPair
    let oneTimePreKey: OneTimePreKeyPair
    let kemPreKey: KEMPreKeyPair

    init(_ label: String) {
        random = SeededRandom(label: label)
        account = AccountIdentity(random: random)
        identity = DeviceIdentity(account: account, random: random)
        signedPreKey = SignedPreKeyPair(id: 1, device: identity, random: random)
        oneTimePreKey = OneTimePreKeyPair(id: 100, random: random)
        kemPreKey = KEMPreKeyPair(id: 200, kind: .oneTime, device: identity, random: random)
    }

    func unverifiedBundle(withOneTimePreKey: Bool = true) -> UnverifiedPreKeyBundle {
        UnverifiedPreKeyBundle(
            deviceID: 7, accountIdentityKey: account.publicKey.rawRepresentation,
            deviceIdentityKey: identity.publicKey.rawRepresentation, deviceCertificateSignature: identity.certificate.signature,
            signedPreKeyID: signedPreKey.id, signedPreKey: signedPreKey.privateKey.publicKey.rawRepresentation,
            signedPreKeySignature: signedPreKey.signature,
            oneTimePreKey: withOneTimePreKey ? (id: oneTimePreKey.id, publicKey: oneTimePreKey.privateKey.publicKey.rawRepresentation) : nil,
            kemPreKey: (
                id: kemPreKey.id, publicKey: kemPreKey.privateKey.publicKey.rawRepresentation, signature: kemPreKey.signature,
                lastResort: kemPreKey.kind == .lastResort
            ))
    }

    func bundle(withOneTimePreKey: Bool = true) throws -> PreKeyBundle {
        try unverifiedBundle(withOneTimePreKey: withOneTimePreKey).verified()
    }
}

/// Two sessions after alice's first (prekey) message has been decrypted by bob.
struct SessionPair {
    let aliceDevice: TestDevice
    let bobDevice: TestDevice
    var alice: Session
    var bob: Session

    init(_ label: String, withOneTimePreKey: Bool = true) throws {
        aliceDevice = TestDevice("\(label)/alice")
        bobDevice = TestDevice("\(label)/bob")
        alice = try Session.initiate(
            identity: aliceDevice.identity, bundle: try bobDevice.bundle(withOneTimePreKey: withOneTimePreKey), random: aliceDevice.random)
        let first = try alice.encrypt(Data("first".utf8), random: aliceDevice.random)
        guard case .preKey(let message) = try IncomingSessionMessage(parsing: first) else {
            throw FlitzProtocolError(.malformedMessage, "expected a prekey message")
        }
        let (session, plaintext) = try Session.respond(
            to: message, identity: bobDevice.identity, signedPreKey: bobDevice.signedPreKey,
            oneTimePreKey: withOneTimePreKey ? bobDevice.oneTimePreKey : nil, kemPreKey: bobDevice.kemPreKey, random: bobDevice.random)
        #expect(plaintext == Data("first".utf8))
        bob = session
    }

    /// Alice encrypts; returns the ratchet message inside the `SessionMessage`.
    mutating func fromAlice(_ text: String) throws -> Data {
        try ratchetMessage(alice.encrypt(Data(text.utf8), random: aliceDevice.random))
    }

    /// Bob encrypts; returns the ratchet message.
    mutating func fromBob(_ text: String) throws -> Data {
        try ratchetMessage(bob.encrypt(Data(text.utf8), random: bobDevice.random))
    }

    mutating func bobDecrypts(_ message: Data) throws -> String {
        String(decoding: try bob.decrypt(message, random: bobDevice.random), as: UTF8.self)
    }

    mutating func aliceDecrypts(_ message: Data) throws -> String {
        String(decoding: try alice.decrypt(message, random: aliceDevice.random), as: UTF8.self)
    }
}

/// The ratchet message carried by `SessionMessage` bytes (of either kind).
func ratchetMessage(_ sessionMessage: Data) throws -> Data {
    switch try IncomingSessionMessage(parsing: sessionMessage) {
    case .preKey(let message): message.ratchetMessage
    case .ratchet(let bytes): bytes
    }
}

/// Expects `body` to throw a `FlitzProtocolError` with exactly `code`.
func expectProtocolError<R>(
    _ code: FlitzProtocolError.Code, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> R
) {
    do {
        _ = try body()
        Issue.record("expected FlitzProtocolError code \(code.rawValue), but it succeeded", sourceLocation: sourceLocation)
    } catch let error as FlitzProtocolError {
        #expect(error.code == code, "got \(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected FlitzProtocolError code \(code.rawValue), got \(error)", sourceLocation: sourceLocation)
    }
}

/// Loads JSON vectors from the repository root, found by walking up from this file to `Package.swift`.
enum VectorFiles {
    static let repositoryRoot: URL = {
        var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
            let parent = url.deletingLastPathComponent()
            precondition(parent.path != url.path, "no Package.swift above \(#filePath)")
            url = parent
        }
        return url
    }()

    static func load<T: Decodable>(_ type: T.Type, _ relativePath: String) throws -> T {
        let data = try Data(contentsOf: repositoryRoot.appendingPathComponent("vectors").appendingPathComponent(relativePath))
        return try JSONDecoder().decode(T.self, from: data)
    }
}

extension Data {
    init(vectorHex hex: String) {
        guard let data = Data(hexString: hex) else { preconditionFailure("bad hex in vector: \(hex)") }
        self = data
    }
}
