import FlitzCrypto
import FlitzProtocol
import Foundation

/// `session.json`: `SessionMessage` encoding and parsing, session creation from a prekey message, and
/// `SessionRecord` restoration (`protocol/crypto.md` §7, §8).
///
/// Group `exchange` (parties `alice`, `bob`): each test is one message with its `Content`, the sender's
/// state before and after encrypting it, the `SessionMessage` fields and bytes, and the receiver's state
/// before (null: bob creates his session from it) and after. Group `parse`: `sessionMessage` bytes that do
/// not parse. Group `respond` (party `bob`): a prekey message and the prekey ids the responder holds.
/// Group `restore`: `sessionRecord` bytes that do not restore.
enum SessionTopic {
    static let topic = VectorTopic(name: "session", verify: verify)

    static func verify(_ vector: VectorCase) throws -> VectorOutcome {
        let test = vector.test, group = vector.group
        switch try vector.groupType() {
        case "exchange":
            try exchange(test, group)
            return .valid
        case "parse":
            let bytes = try test.hex("sessionMessage")
            return try VectorOutcome.capture { _ = try IncomingSessionMessage(parsing: bytes) }
        case "respond":
            let bob = try VectorPartyKeys(try group.object("bob"))
            guard let spk = bob.signedPreKey else { throw VectorCheckFailure("bob has no signed prekey") }
            guard case .preKey(let message) = try IncomingSessionMessage(parsing: try test.hex("sessionMessage")) else {
                throw VectorCheckFailure("respond needs a prekey message")
            }
            let signedPreKey = SignedPreKeyPair(id: try test.uint32("responderSignedPreKeyId"), privateKey: spk.privateKey, signature: spk.signature)
            var oneTimePreKey: OneTimePreKeyPair?
            if test.has("responderOneTimePreKeyId") {
                guard let opk = bob.oneTimePreKey else { throw VectorCheckFailure("bob has no one-time prekey") }
                oneTimePreKey = OneTimePreKeyPair(id: try test.uint32("responderOneTimePreKeyId"), privateKey: opk.privateKey)
            }
            let random = ScriptedRandom(try test.hexArray("randomBytes"))
            guard let kemPreKey = bob.kemPreKey else { throw VectorCheckFailure("bob has no KEM prekey") }
            return try VectorOutcome.capture {
                _ = try Session.respond(
                    to: message, identity: bob.device, signedPreKey: signedPreKey, oneTimePreKey: oneTimePreKey, kemPreKey: kemPreKey, random: random)
            }
        case "restore":
            let bytes = try test.hex("sessionRecord")
            return try VectorOutcome.capture { _ = try Session(serialized: bytes) }
        case let type:
            throw VectorCheckFailure.unknownGroup(type, in: "session")
        }
    }

    static func exchange(_ test: JSONValue, _ group: JSONValue) throws {
        let plaintext = try test.hex("plaintext")
        // The plaintext is an encoded Content.
        let contentJSON = try test.object("content")
        let content = MessageContent(
            messageID: try contentJSON.hex("messageId"), sentAtMilliseconds: Int64(try contentJSON.int("sentAtMs")),
            body: .text(TextMessage(try contentJSON.string("text"))))
        try check(content.encoded(), plaintext, "plaintext = encoded content")
        try check(try MessageContent(decoding: plaintext), content, "decoded content")

        // Sender.
        let (senderBefore, _) = try SessionStateJSON.read(try test.object("senderStateBefore"), "senderStateBefore")
        let (senderAfter, _) = try SessionStateJSON.read(try test.object("senderStateAfter"), "senderStateAfter")
        let senderRandom = ScriptedRandom(try test.hexArray("senderRandomBytes"))
        var sender = try Session(serialized: senderBefore)
        let sessionMessage = try test.hex("sessionMessage")
        try check(try sender.encrypt(plaintext, random: senderRandom), sessionMessage, "Session.encrypt output")
        try senderRandom.checkAllConsumed()
        try check(sender.serialized(), senderAfter, "sender record after")

        // The SessionMessage from its fields (independently), and parsed back.
        let ratchetMessage = try test.hex("ratchetMessage")
        var expected = ProtoSessionMessage()
        expected.version = 1
        let parsed = try IncomingSessionMessage(parsing: sessionMessage)
        switch try test.string("kind") {
        case "prekeyMessage":
            let fields = try test.object("prekeyMessage")
            var preKey = ProtoPreKeyMessage()
            preKey.accountIdentityKey = try fields.hex("accountIdentityKey")
            preKey.deviceIdentityKey = try fields.hex("deviceIdentityKey")
            preKey.deviceCertificateSignature = try fields.hex("deviceCertificateSignature")
            preKey.baseKey = try fields.hex("baseKey")
            preKey.signedPrekeyID = try fields.uint32("signedPreKeyId")
            if fields.has("oneTimePreKeyId") { preKey.oneTimePrekeyID = try fields.uint32("oneTimePreKeyId") }
            preKey.ratchetMessage = ratchetMessage
            preKey.kemPrekeyID = try fields.uint32("kemPreKeyId")
            preKey.kemCiphertext = try fields.hex("kemCiphertext")
            expected.kind = .prekeyMessage(preKey)
            guard case .preKey(let message) = parsed else { throw VectorCheckFailure("parsed as a ratchet message") }
            try check(message.certificate.accountIdentityKey.rawRepresentation, preKey.accountIdentityKey, "parsed accountIdentityKey")
            try check(message.certificate.deviceIdentityKey.rawRepresentation, preKey.deviceIdentityKey, "parsed deviceIdentityKey")
            try check(message.certificate.signature, preKey.deviceCertificateSignature, "parsed deviceCertificateSignature")
            try check(message.baseKey.rawRepresentation, preKey.baseKey, "parsed baseKey")
            try check(message.signedPreKeyID, preKey.signedPrekeyID, "parsed signedPreKeyId")
            try check(message.oneTimePreKeyID, fields.has("oneTimePreKeyId") ? preKey.oneTimePrekeyID : nil, "parsed oneTimePreKeyId")
            try check(message.ratchetMessage, ratchetMessage, "parsed ratchetMessage")
            try check(message.kemPreKeyID, preKey.kemPrekeyID, "parsed kemPreKeyId")
            try check(message.kemCiphertext, preKey.kemCiphertext, "parsed kemCiphertext")
        case "ratchetMessage":
            try require(!test.has("prekeyMessage"), "a ratchet message has no prekeyMessage fields")
            expected.kind = .ratchetMessage(ratchetMessage)
            guard case .ratchet(let bytes) = parsed else { throw VectorCheckFailure("parsed as a prekey message") }
            try check(bytes, ratchetMessage, "parsed ratchetMessage")
        case let kind:
            throw VectorCheckFailure("unknown kind \"\(kind)\"")
        }
        try check(try expected.serializedData(), sessionMessage, "sessionMessage from its fields")

        // Receiver.
        let receiverRandom = ScriptedRandom(try test.hexArray("receiverRandomBytes"))
        let (receiverAfter, _) = try SessionStateJSON.read(try test.object("receiverStateAfter"), "receiverStateAfter")
        let receiver: Session
        let received: Data
        if test.has("receiverStateBefore") {
            let (receiverBefore, _) = try SessionStateJSON.read(try test.object("receiverStateBefore"), "receiverStateBefore")
            var session = try Session(serialized: receiverBefore)
            received = try session.decrypt(ratchetMessage, random: receiverRandom)
            receiver = session
        } else {
            let bob = try VectorPartyKeys(try group.object("bob"))
            guard case .preKey(let message) = parsed, let spk = bob.signedPreKey, let kem = bob.kemPreKey else {
                throw VectorCheckFailure("a receiver without a session needs a prekey message, a signed prekey and a KEM prekey")
            }
            (receiver, received) = try Session.respond(
                to: message, identity: bob.device, signedPreKey: spk, oneTimePreKey: message.oneTimePreKeyID == nil ? nil : bob.oneTimePreKey,
                kemPreKey: kem, random: receiverRandom)
        }
        try receiverRandom.checkAllConsumed()
        try check(received, plaintext, "received plaintext")
        try check(receiver.serialized(), receiverAfter, "receiver record after")
    }
}
