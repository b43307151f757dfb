import FlitzCrypto
import FlitzProtocol
import Foundation
import SwiftProtobuf
import Testing

@Suite struct SessionTests {
    @Test(arguments: [true, false])
    func prekeyMessageUntilReplyThenRatchetMessages(withOneTimePreKey: Bool) throws {
        let alice = TestDevice("session/alice")
        let bob = TestDevice("session/bob")
        var aliceSession = try Session.initiate(
            identity: alice.identity, bundle: try bob.bundle(withOneTimePreKey: withOneTimePreKey), random: alice.random)
        #expect(aliceSession.isAwaitingReply)
        let first = try aliceSession.encrypt(Data("one".utf8), random: alice.random)
        let second = try aliceSession.encrypt(Data("two".utf8), random: alice.random)
        guard case .preKey(let preKey) = try IncomingSessionMessage(parsing: first),
            case .preKey(let preKey2) = try IncomingSessionMessage(parsing: second)
        else {
            Issue.record("expected prekey messages")
            return
        }
        #expect(preKey.certificate == alice.identity.certificate)
        #expect(preKey.baseKey == aliceSession.baseKey)
        #expect(preKey2.baseKey == aliceSession.baseKey)
        #expect(preKey.signedPreKeyID == 1)
        #expect(preKey.oneTimePreKeyID == (withOneTimePreKey ? 100 : nil))
        var (bobSession, plaintext) = try Session.respond(
            to: preKey, identity: bob.identity, signedPreKey: bob.signedPreKey,
            oneTimePreKey: withOneTimePreKey ? bob.oneTimePreKey : nil, kemPreKey: bob.kemPreKey, random: bob.random)
        #expect(plaintext == Data("one".utf8))
        #expect(bobSession.associatedData == aliceSession.associatedData)
        #expect(bobSession.baseKey == aliceSession.baseKey)
        #expect(bobSession.remoteCertificate == alice.identity.certificate)
        #expect(aliceSession.remoteCertificate == bob.identity.certificate)
        #expect(!bobSession.isAwaitingReply)
        #expect(try bobSession.decrypt(preKey2.ratchetMessage, random: bob.random) == Data("two".utf8))

        let reply = try bobSession.encrypt(Data("three".utf8), random: bob.random)
        guard case .ratchet(let replyBytes) = try IncomingSessionMessage(parsing: reply) else {
            Issue.record("expected a ratchet message")
            return
        }
        #expect(try aliceSession.decrypt(replyBytes, random: alice.random) == Data("three".utf8))
        #expect(!aliceSession.isAwaitingReply)
        guard case .ratchet(let after) = try IncomingSessionMessage(parsing: aliceSession.encrypt(Data("four".utf8), random: alice.random)) else {
            Issue.record("expected a ratchet message after the reply")
            return
        }
        #expect(try bobSession.decrypt(after, random: bob.random) == Data("four".utf8))
    }

    @Test func respondingWithWrongPreKeysIsUnknownPreKey() throws {
        let alice = TestDevice("session/alice")
        let bob = TestDevice("session/bob")
        var aliceSession = try Session.initiate(identity: alice.identity, bundle: try bob.bundle(), random: alice.random)
        guard case .preKey(let preKey) = try IncomingSessionMessage(parsing: aliceSession.encrypt(Data("x".utf8), random: alice.random)) else {
            Issue.record("expected a prekey message")
            return
        }
        expectProtocolError(.unknownPreKey) {
            try Session.respond(to: preKey, identity: bob.identity, signedPreKey: bob.signedPreKey, oneTimePreKey: nil, kemPreKey: bob.kemPreKey, random: bob.random)
        }
        let otherSigned = SignedPreKeyPair(id: 2, device: bob.identity, random: bob.random)
        expectProtocolError(.unknownPreKey) {
            try Session.respond(to: preKey, identity: bob.identity, signedPreKey: otherSigned, oneTimePreKey: bob.oneTimePreKey, kemPreKey: bob.kemPreKey, random: bob.random)
        }
        // Right ids but the wrong private key: the first message does not decrypt.
        let impostor = OneTimePreKeyPair(id: 100, random: bob.random)
        expectProtocolError(.authenticationFailed) {
            try Session.respond(to: preKey, identity: bob.identity, signedPreKey: bob.signedPreKey, oneTimePreKey: impostor, kemPreKey: bob.kemPreKey, random: bob.random)
        }
    }

    @Test func serializeAndRestoreMidConversation() throws {
        var pair = try SessionPair("session/restore")
        let a1 = try pair.fromAlice("a1")
        let a2 = try pair.fromAlice("a2")
        #expect(try pair.bobDecrypts(a2) == "a2")
        let b1 = try pair.fromBob("b1")
        let b2 = try pair.fromBob("b2")
        #expect(try pair.aliceDecrypts(b2) == "b2")

        let aliceBytes = pair.alice.serialized()
        let bobBytes = pair.bob.serialized()
        pair.alice = try Session(serialized: aliceBytes)
        pair.bob = try Session(serialized: bobBytes)
        #expect(pair.alice.serialized() == aliceBytes)
        #expect(pair.bob.serialized() == bobBytes)
        #expect(pair.bob.associatedData == pair.alice.associatedData)
        #expect(pair.bob.remoteCertificate == pair.aliceDevice.identity.certificate)
        #expect(!pair.alice.isAwaitingReply)

        // Skipped keys survive the restore, and both directions continue.
        #expect(try pair.bobDecrypts(a1) == "a1")
        #expect(try pair.aliceDecrypts(b1) == "b1")
        #expect(try pair.bobDecrypts(pair.fromAlice("a3")) == "a3")
        #expect(try pair.aliceDecrypts(pair.fromBob("b3")) == "b3")
    }

    @Test func restoredInitiatorStillSendsPrekeyMessages() throws {
        let alice = TestDevice("session/alice")
        let bob = TestDevice("session/bob")
        let original = try Session.initiate(identity: alice.identity, bundle: try bob.bundle(), random: alice.random)
        var restored = try Session(serialized: original.serialized())
        #expect(restored.isAwaitingReply)
        guard case .preKey(let preKey) = try IncomingSessionMessage(parsing: restored.encrypt(Data("x".utf8), random: alice.random)) else {
            Issue.record("expected a prekey message")
            return
        }
        #expect(preKey.oneTimePreKeyID == 100)
        #expect(preKey.baseKey == original.baseKey)
    }

    @Test func corruptSessionRecordIsRejected() throws {
        let pair = try SessionPair("session/corrupt")
        expectProtocolError(.invalidSessionRecord) { try Session(serialized: Data([0xff, 0xff, 0xff])) }
        expectProtocolError(.invalidSessionRecord) { try Session(serialized: Data()) }
        var record = try ProtoSessionRecord(serializedBytes: pair.bob.serialized())
        record.version = 2
        expectProtocolError(.invalidSessionRecord) { try Session(serialized: try record.serializedData()) }
        record.version = 1
        record.ratchet.rootKey = Data(count: 31)
        expectProtocolError(.invalidSessionRecord) { try Session(serialized: try record.serializedData()) }
    }

    @Test func garbageSessionMessageIsMalformed() {
        expectProtocolError(.malformedMessage) { try IncomingSessionMessage(parsing: Data([0xff, 0xff, 0xff, 0xff])) }
        // Version 1 with no kind.
        expectProtocolError(.malformedMessage) { try IncomingSessionMessage(parsing: Data([0x08, 0x01])) }
        // Empty bytes decode as version 0.
        expectProtocolError(.unsupportedVersion) { try IncomingSessionMessage(parsing: Data()) }
    }

    @Test func sessionMessageVersion2IsUnsupported() throws {
        var pair = try SessionPair("session/version")
        var message = try ProtoSessionMessage(serializedBytes: pair.alice.encrypt(Data("x".utf8), random: pair.aliceDevice.random))
        #expect(message.version == 1)
        message.version = 2
        expectProtocolError(.unsupportedVersion) { try IncomingSessionMessage(parsing: try message.serializedData()) }
    }

    @Test func prekeyMessageWithBadCertificateIsRejected() throws {
        let alice = TestDevice("session/alice")
        let bob = TestDevice("session/bob")
        var session = try Session.initiate(identity: alice.identity, bundle: try bob.bundle(), random: alice.random)
        let bytes = try session.encrypt(Data("x".utf8), random: alice.random)
        var message = try ProtoSessionMessage(serializedBytes: bytes)
        guard case .prekeyMessage(var preKey) = message.kind else {
            Issue.record("expected a prekey message")
            return
        }
        preKey.deviceCertificateSignature[10] ^= 0x01
        message.kind = .prekeyMessage(preKey)
        expectProtocolError(.authenticationFailed) { try IncomingSessionMessage(parsing: try message.serializedData()) }

        // A valid certificate for another device key than the one claimed.
        let mallory = TestDevice("session/mallory")
        preKey.deviceCertificateSignature = alice.identity.certificate.signature
        preKey.deviceIdentityKey = mallory.identity.publicKey.rawRepresentation
        message.kind = .prekeyMessage(preKey)
        expectProtocolError(.authenticationFailed) { try IncomingSessionMessage(parsing: try message.serializedData()) }

        preKey.baseKey = Data(count: 31)
        message.kind = .prekeyMessage(preKey)
        expectProtocolError(.malformedMessage) { try IncomingSessionMessage(parsing: try message.serializedData()) }
    }
}

@Suite struct MessageContentTests {
    static let messageID = Data((0..<16).map { UInt8($0) })

    @Test(arguments: [0, 1, 20, 35, 36, 37, 50, 63, 64, 65, 100, 127, 128, 500, 1000])
    func roundTripAndPadding(_ length: Int) throws {
        let content = MessageContent(
            messageID: Self.messageID, sentAtMilliseconds: 1_767_225_600_000, body: .text(TextMessage(String(repeating: "é", count: length / 2) + (length % 2 == 1 ? "x" : ""))))
        let encoded = content.encoded()
        #expect(encoded.count % 64 == 0)
        #expect(encoded.count >= 64)
        #expect(try MessageContent(decoding: encoded) == content)
        // Padding is zero bytes in field 15 and never more than needed.
        let proto = try ProtoContent(serializedBytes: encoded)
        #expect(proto.padding.allSatisfy { $0 == 0 })
        #expect(proto.messageID == Self.messageID)
        #expect(proto.sentAtMs == 1_767_225_600_000)
        #expect(proto.text.body == content.bodyText)
    }

    @Test func knownEncoding() {
        let content = MessageContent(messageID: Self.messageID, sentAtMilliseconds: 1, body: .text("hi"))
        // 0a 10 <id> (18) | 10 01 (2) | 1a 04 0a 02 "hi" (6) | 7a 24 <36 zero bytes> (38)  = 64 bytes.
        let expected = "0a10" + Self.messageID.hexString + "1001" + "1a040a026869" + "7a24" + String(repeating: "00", count: 36)
        #expect(content.encoded().hexString == expected)
        #expect(content.encoded().count == 64)
    }

    @Test func malformedContentIsRejected() throws {
        expectProtocolError(.malformedMessage) { try MessageContent(decoding: Data([0xff, 0xff, 0xff])) }
        // No body.
        var proto = ProtoContent()
        proto.messageID = Self.messageID
        expectProtocolError(.malformedMessage) { try MessageContent(decoding: try proto.serializedData()) }
        // Message id of the wrong length.
        proto.messageID = Data(count: 15)
        var text = ProtoText()
        text.body = "x"
        proto.body = .text(text)
        expectProtocolError(.malformedMessage) { try MessageContent(decoding: try proto.serializedData()) }
        proto.messageID = Self.messageID
        #expect(try MessageContent(decoding: try proto.serializedData()).body == .text("x"))
    }
}

extension MessageContent {
    var bodyText: String {
        switch body {
        case .text(let text): text.body
        default: ""
        }
    }
}
