import FlitzCrypto
import FlitzProtocol
import FlitzVectors
import Foundation

/// `vectors/session.json`: `SessionMessage`s carrying `Content` (a prekey message, bob's reply, a plain
/// ratchet message), messages that do not parse or cannot start a session, and records that do not restore.
enum SessionVectors {
    static let label = "flitz-vectors/session"
    /// 2026-01-01T00:00:00Z in milliseconds.
    static let sentAt: Int64 = 1_767_225_600_000

    static func make() throws -> VectorFileBuilder {
        let alice = VectorParty(label: "\(label)/alice", signedPreKey: false, oneTimePreKey: false)
        let bob = VectorParty(label: "\(label)/bob", signedPreKey: true, oneTimePreKey: true)
        var aliceSession = try alice.initiate(to: bob)
        _ = alice.random.take()
        var bobSession: Session?
        var exchange: [VectorTest] = []
        var firstMessage = Data()

        let texts = [(true, "Hi Bob! Coffee on Friday?"), (false, "Yes, 10 am at the usual place."), (true, "See you there.")]
        for (index, (fromAlice, text)) in texts.enumerated() {
            let random = fromAlice ? alice.random : bob.random
            let content = MessageContent(messageID: random.bytes(16), sentAtMilliseconds: sentAt + Int64(index) * 60_000, body: .text(TextMessage(text)))
            _ = random.take()
            let plaintext = content.encoded()
            let senderBefore = fromAlice ? aliceSession : bobSession!
            var sender = senderBefore
            let bytes = try sender.encrypt(plaintext, random: random)
            let senderRandom = random.take()
            let (ratchetBytes, preKey) = try ratchetMessage(of: bytes)
            if index == 0 { firstMessage = bytes }
            var fields: [String: JSONValue] = [
                "sender": .string(fromAlice ? "alice" : "bob"),
                "content": .object([
                    "messageId": .hex(content.messageID), "sentAtMs": .int(Int(content.sentAtMilliseconds)), "text": .string(text),
                ]),
                "plaintext": .hex(plaintext), "senderStateBefore": stateJSON(senderBefore), "senderRandomBytes": .hexArray(senderRandom),
                "senderStateAfter": stateJSON(sender), "sessionMessage": .hex(bytes),
                "kind": .string(preKey == nil ? "ratchetMessage" : "prekeyMessage"), "ratchetMessage": .hex(ratchetBytes),
            ]
            if let preKey {
                var object: [String: JSONValue] = [
                    "accountIdentityKey": .hex(preKey.certificate.accountIdentityKey.rawRepresentation),
                    "deviceIdentityKey": .hex(preKey.certificate.deviceIdentityKey.rawRepresentation),
                    "deviceCertificateSignature": .hex(preKey.certificate.signature),
                    "baseKey": .hex(preKey.baseKey.rawRepresentation), "signedPreKeyId": .uint(preKey.signedPreKeyID),
                ]
                if let id = preKey.oneTimePreKeyID { object["oneTimePreKeyId"] = .uint(id) }
                object["kemPreKeyId"] = .uint(preKey.kemPreKeyID)
                object["kemCiphertext"] = .hex(preKey.kemCiphertext)
                fields["prekeyMessage"] = .object(object)
            }
            // Deliver.
            let receiverRandom = fromAlice ? bob.random : alice.random
            var receiver: Session
            if fromAlice, bobSession == nil {
                let (session, out) = try Session.respond(to: preKey!, identity: bob.device, signedPreKey: bob.signedPreKey!, oneTimePreKey: bob.oneTimePreKey, kemPreKey: bob.kemPreKey!, random: receiverRandom)
                precondition(out == plaintext)
                receiver = session
            } else {
                receiver = fromAlice ? bobSession! : aliceSession
                fields["receiverStateBefore"] = stateJSON(receiver)
                let out = try receiver.decrypt(ratchetBytes, random: receiverRandom)
                precondition(out == plaintext)
            }
            fields["receiverRandomBytes"] = .hexArray(receiverRandom.take())
            fields["receiverStateAfter"] = stateJSON(receiver)
            if fromAlice {
                aliceSession = sender
                bobSession = receiver
            } else {
                bobSession = sender
                aliceSession = receiver
            }
            exchange.append(
                VectorTest(
                    [
                        "alice's first message: a PreKeyMessage; bob creates his session from it",
                        "bob's reply: a plain ratchet message",
                        "alice's next message: plain, since she has decrypted a reply",
                    ][index], flags: [preKey == nil ? "RatchetMessage" : "PreKeyMessage"], fields))
        }

        // Parsing failures.
        let malformed = VectorErrorRef(FlitzProtocolError.Code.malformedMessage)
        let unsupported = VectorErrorRef(FlitzProtocolError.Code.unsupportedVersion)
        let authenticationFailed = VectorErrorRef(FlitzProtocolError.Code.authenticationFailed)
        let mallory = VectorParty(label: "\(label)/mallory", signedPreKey: false, oneTimePreKey: false)
        func prekeyVariant(_ change: (inout ProtoPreKeyMessage) -> Void) -> Data {
            var message = try! ProtoSessionMessage(serializedBytes: firstMessage)
            guard case .prekeyMessage(var preKey) = message.kind else { preconditionFailure() }
            change(&preKey)
            message.kind = .prekeyMessage(preKey)
            return try! message.serializedData()
        }
        var version2 = try ProtoSessionMessage(serializedBytes: firstMessage)
        version2.version = 2
        func parse(_ comment: String, _ bytes: Data, _ error: VectorErrorRef, flags: [String]) -> VectorTest {
            VectorTest(comment, flags: flags, result: .invalid(error), ["sessionMessage": .hex(bytes)])
        }
        let parseTests = [
            parse("not protobuf", Data([0xff, 0xff]), malformed, flags: ["NotProtobuf"]),
            parse("empty input decodes as version 0", Data(), unsupported, flags: ["WrongVersion"]),
            parse("version 2", try version2.serializedData(), unsupported, flags: ["WrongVersion"]),
            parse("version 1 without a kind", Data([0x08, 0x01]), malformed, flags: ["MissingField"]),
            parse("31-byte base key", prekeyVariant { $0.baseKey = $0.baseKey.prefix(31) }, malformed, flags: ["BadLength"]),
            parse("33-byte device identity key", prekeyVariant { $0.deviceIdentityKey += Data([0]) }, malformed, flags: ["BadLength"]),
            parse(
                "certificate signature with a bit flipped", prekeyVariant { $0.deviceCertificateSignature[0] ^= 0x01 }, authenticationFailed,
                flags: ["BadCertificate"]),
            parse(
                "alice's device presented under mallory's account key", prekeyVariant { $0.accountIdentityKey = mallory.account.publicKey.rawRepresentation },
                authenticationFailed, flags: ["BadCertificate"]),
        ]

        // Session creation failures (bob holds signed prekey 1 and one-time prekey 100).
        let failureRandom = SeededRandom(label: "\(label)/failures")
        let carol = VectorParty(label: "\(label)/carol", signedPreKey: false, oneTimePreKey: false)
        let withoutOPK = try UnverifiedPreKeyBundle(
            deviceID: 1, accountIdentityKey: bob.account.publicKey.rawRepresentation, deviceIdentityKey: bob.device.publicKey.rawRepresentation,
            deviceCertificateSignature: bob.device.certificate.signature, signedPreKeyID: 1,
            signedPreKey: bob.signedPreKey!.privateKey.publicKey.rawRepresentation, signedPreKeySignature: bob.signedPreKey!.signature,
            oneTimePreKey: nil,
            kemPreKey: bob.kemPreKey.map { ($0.id, $0.privateKey.publicKey.rawRepresentation, $0.signature, false) }
        ).verified()
        var carolSession = try Session.initiate(
            identity: carol.device, bundle: withoutOPK, random: carol.random,
            encapsulation: try KEMFixtures.encapsulation(for: withoutOPK.kemPreKey.publicKey))
        let carolMessage = try carolSession.encrypt(Data("no one-time prekey".utf8), random: carol.random)
        // mallory relabels alice's prekey message: her own account key and a certificate she made over alice's device key.
        let relabelled = prekeyVariant {
            $0.accountIdentityKey = mallory.account.publicKey.rawRepresentation
            $0.deviceCertificateSignature = mallory.account.certify(alice.device.publicKey).signature
        }
        func respond(
            _ comment: String, _ bytes: Data, signedPreKeyID: UInt32, oneTimePreKeyID: UInt32?, _ code: FlitzProtocolError.Code, flags: [String]
        ) -> VectorTest {
            var fields: [String: JSONValue] = [
                "sessionMessage": .hex(bytes), "responderSignedPreKeyId": .uint(signedPreKeyID), "randomBytes": .hexArray([failureRandom.bytes(32)]),
            ]
            if let oneTimePreKeyID { fields["responderOneTimePreKeyId"] = .uint(oneTimePreKeyID) }
            return VectorTest(comment, flags: flags, result: .invalid(VectorErrorRef(code)), fields)
        }
        let respondTests = [
            respond("the message names signed prekey 1, the responder holds only 2", firstMessage, signedPreKeyID: 2, oneTimePreKeyID: 100,
                    .unknownPreKey, flags: ["UnknownPreKey"]),
            respond("the message names one-time prekey 100, the responder has none left", firstMessage, signedPreKeyID: 1, oneTimePreKeyID: nil,
                    .unknownPreKey, flags: ["UnknownPreKey"]),
            respond("the message names one-time prekey 100, the responder holds 101", firstMessage, signedPreKeyID: 1, oneTimePreKeyID: 101,
                    .unknownPreKey, flags: ["UnknownPreKey"]),
            respond("the message names no one-time prekey, the responder offers 100", carolMessage, signedPreKeyID: 1, oneTimePreKeyID: 100,
                    .unknownPreKey, flags: ["UnknownPreKey"]),
            respond(
                "the first ratchet message with a tag bit flipped", prekeyVariant { $0.ratchetMessage[$0.ratchetMessage.count - 1] ^= 0x01 },
                signedPreKeyID: 1, oneTimePreKeyID: 100, .authenticationFailed, flags: ["TamperedCiphertext"]),
            respond(
                "relabelled by mallory: her account key and her valid certificate over alice's device key (AD differs)", relabelled,
                signedPreKeyID: 1, oneTimePreKeyID: 100, .authenticationFailed, flags: ["Relabelled"]),
        ]

        // Records that do not restore.
        let record = bobSession!.serialized()
        func recordVariant(_ change: (inout ProtoSessionRecord) -> Void) -> Data {
            var proto = try! ProtoSessionRecord(serializedBytes: record)
            change(&proto)
            return try! proto.serializedData()
        }
        let invalidRecord = VectorErrorRef(FlitzProtocolError.Code.invalidSessionRecord)
        func restore(_ comment: String, _ bytes: Data, flags: [String]) -> VectorTest {
            VectorTest(comment, flags: flags, result: .invalid(invalidRecord), ["sessionRecord": .hex(bytes)])
        }
        let restoreTests = [
            VectorTest("bob's record after the exchange (control case)", ["sessionRecord": .hex(record)]),
            restore("not protobuf", Data([0xff, 0xff]), flags: ["NotProtobuf"]),
            restore("empty input decodes as version 0", Data(), flags: ["WrongVersion"]),
            restore("version 2", recordVariant { $0.version = 2 }, flags: ["WrongVersion"]),
            restore("127-byte associated data", recordVariant { $0.associatedData = $0.associatedData.prefix(127) }, flags: ["BadLength"]),
            restore("31-byte remote account identity key", recordVariant { $0.remoteAccountIdentityKey = $0.remoteAccountIdentityKey.prefix(31) },
                    flags: ["BadLength"]),
            restore("31-byte root key", recordVariant { $0.ratchet.rootKey = $0.ratchet.rootKey.prefix(31) }, flags: ["BadLength"]),
            restore(
                "a stored skipped message key of 31 bytes",
                recordVariant {
                    var key = ProtoSkippedMessageKey()
                    key.ratchetKey = $0.ratchet.receivingRatchetKey
                    key.counter = 7
                    key.messageKey = Data(count: 31)
                    $0.ratchet.skippedMessageKeys.append(key)
                }, flags: ["BadLength"]),
        ]

        return VectorFileBuilder(
            topic: "session",
            description: "SessionMessage, the envelope ciphertext: version 1 and either a PreKeyMessage (alice until she has "
                + "decrypted a reply) or a plain ratchet message. In the exchange group each plaintext is an encoded, padded Content "
                + "(content.json); before encrypting, the sender draws the 16-byte message id, then the nonce (senderRandomBytes). "
                + "States are SessionRecords as in ratchet.json. The respond group's randomBytes is what the responder may draw "
                + "(its DH ratchet step). mallory and carol are other accounts.",
            specification: "protocol/crypto.md sections 7 and 8; flitz_session.proto",
            notes: [
                "PreKeyMessage": "A PreKeyMessage with the first ratchet message.",
                "RatchetMessage": "A plain ratchet message.",
                "NotProtobuf": "The bytes are not a protobuf message.",
                "WrongVersion": "version is not 1 (an empty message has version 0).",
                "MissingField": "No kind.",
                "BadLength": "A key or the AD has the wrong size.",
                "BadCertificate": "The device certificate does not verify.",
                "UnknownPreKey": "The prekey ids of the message and of the responder's keys differ.",
                "TamperedCiphertext": "A bit of the first ratchet message is flipped.",
                "Relabelled": "An unknown-key-share attempt: a valid certificate by another account over alice's device key.",
            ],
            seeds: [alice.random.label, bob.random.label, mallory.random.label, "\(label)/failures", carol.random.label],
            groups: [
                VectorGroup(type: "exchange", fields: ["alice": alice.json(), "bob": bob.json()], tests: exchange),
                VectorGroup(type: "parse", tests: parseTests),
                VectorGroup(type: "respond", fields: ["bob": bob.json()], tests: respondTests),
                VectorGroup(type: "restore", tests: restoreTests),
            ])
    }
}
