import FlitzCrypto
import FlitzProtocol
import Foundation

/// `ratchet.json`: a Double Ratchet conversation step by step, and decryptions that must fail without
/// changing the session (`protocol/crypto.md` §4, §5, §8).
///
/// Group `conversation` (parties `alice`, `bob`, `bundle`, `sharedSecret`, `associatedData`): tests with
/// `action` `initiate`, `respond`, `encrypt` or `decrypt`, each with the state before (a state object,
/// `vectors/README.md`), its input, the `randomBytes` the party draws, every intermediate key, the exact
/// output bytes and the state after. Group `decryptFailures`: `stateBefore`, `ratchetMessage`,
/// `randomBytes`; the error, and `"state": "unchanged"`. Group `encryptLimits`: an `encrypt` step at the
/// last sending counter, and encryptions refused with `"state": "unchanged"` (`stateBefore`, `plaintext`).
enum RatchetTopic {
    static let topic = VectorTopic(name: "ratchet", verify: verify)

    static func verify(_ vector: VectorCase) throws -> VectorOutcome {
        let test = vector.test, group = vector.group
        switch try vector.groupType() {
        case "conversation":
            switch try test.string("action") {
            case "initiate": try initiate(test, group)
            case "respond": try respond(test, group)
            case "encrypt": try encrypt(test, group)
            case "decrypt": try decrypt(test, group)
            case let action: throw VectorCheckFailure("unknown action \"\(action)\"")
            }
            return .valid
        case "decryptFailures":
            let (record, _) = try SessionStateJSON.read(try test.object("stateBefore"), "stateBefore")
            var session = try Session(serialized: record)
            try check(session.serialized(), record, "restored session re-serialized")
            let message = try test.hex("ratchetMessage")
            let random = ScriptedRandom(try test.hexArray("randomBytes"))
            return try VectorOutcome.capture(stateUnchanged: { session.serialized() == record }) {
                _ = try session.decrypt(message, random: random)
            }
        case "encryptLimits":
            guard try test.string("result") == "invalid" else {
                try encrypt(test, group)
                return .valid
            }
            let (record, _) = try SessionStateJSON.read(try test.object("stateBefore"), "stateBefore")
            var session = try Session(serialized: record)
            let plaintext = try test.hex("plaintext")
            let random = ScriptedRandom(try test.hexArray("randomBytes"))
            return try VectorOutcome.capture(stateUnchanged: { session.serialized() == record }) {
                _ = try session.encrypt(plaintext, random: random)
            }
        case let type:
            throw VectorCheckFailure.unknownGroup(type, in: "ratchet")
        }
    }

    static func initiate(_ test: JSONValue, _ group: JSONValue) throws {
        let alice = try VectorPartyKeys(try group.object("alice"))
        let randomBytes = try test.hexArray("randomBytes")
        try require(randomBytes.count == 2, "initiate draws EK_A and the first ratchet private key")
        let random = ScriptedRandom(randomBytes)
        let bundleJSON = try group.object("bundle")
        let session = try Session.initiate(
            identity: alice.device, bundle: try unverifiedBundle(bundleJSON).verified(), random: random,
            encapsulation: try fixedEncapsulation(bundleJSON))
        try random.checkAllConsumed()
        let (record, proto) = try SessionStateJSON.read(try test.object("stateAfter"), "stateAfter")
        try check(session.serialized(), record, "Session.initiate record")
        let baseKey = try X25519PrivateKey(rawRepresentation: SecretBytes(randomBytes[0])).publicKey.rawRepresentation
        try check(baseKey, try test.hex("baseKey"), "baseKey (EK_A public)")
        try check(session.baseKey.rawRepresentation, baseKey, "Session.baseKey")
        // Independently (crypto.md §4, "State"): KDF_RK(SK, X25519(DHs, SPK_B)).
        let spk = try bundleJSON.hex("signedPreKey")
        let dh = try x25519(randomBytes[1], spk)
        try check(dh, try test.hex("dhOutput"), "dhOutput")
        let okm = try hkdf(salt: try group.hex("sharedSecret"), ikm: dh, info: ReferenceRatchet.rootInfo, length: 64)
        try check(Data(okm.prefix(32)), try test.hex("rootKey"), "rootKey")
        try check(Data(okm.suffix(32)), try test.hex("sendingChainKey"), "sendingChainKey")
        var expected = ProtoRatchetState()
        expected.sendingRatchetPrivateKey = randomBytes[1]
        expected.receivingRatchetKey = spk
        expected.rootKey = Data(okm.prefix(32))
        expected.sendingChainKey = Data(okm.suffix(32))
        try checkJSON(SessionStateJSON.ratchet(expected), SessionStateJSON.ratchet(proto.ratchet), "stateAfter.ratchet (reference)")
        try check(proto.associatedData, try group.hex("associatedData"), "stateAfter associated data")
        try check(proto.pendingPrekey.baseKey, baseKey, "pending prekey base key")
        try check(proto.pendingPrekey.signedPrekeyID, try bundleJSON.uint32("signedPreKeyId"), "pending signed prekey id")
        try check(proto.pendingPrekey.hasOneTimePrekeyID, bundleJSON.has("oneTimePreKeyId"), "pending one-time prekey id present")
    }

    static func respond(_ test: JSONValue, _ group: JSONValue) throws {
        let bob = try VectorPartyKeys(try group.object("bob"))
        guard let signedPreKey = bob.signedPreKey else { throw VectorCheckFailure("bob has no signed prekey") }
        guard case .preKey(let message) = try IncomingSessionMessage(parsing: try test.hex("sessionMessage")) else {
            throw VectorCheckFailure("respond needs a prekey message")
        }
        let randomBytes = try test.hexArray("randomBytes")
        let random = ScriptedRandom(randomBytes)
        let oneTimePreKey = message.oneTimePreKeyID == nil ? nil : bob.oneTimePreKey
        guard let kemPreKey = bob.kemPreKey else { throw VectorCheckFailure("bob has no KEM prekey") }
        let (session, plaintext) = try Session.respond(
            to: message, identity: bob.device, signedPreKey: signedPreKey, oneTimePreKey: oneTimePreKey, kemPreKey: kemPreKey, random: random)
        try random.checkAllConsumed()
        try check(plaintext, try test.hex("plaintext"), "plaintext")
        let (record, proto) = try SessionStateJSON.read(try test.object("stateAfter"), "stateAfter")
        try check(session.serialized(), record, "Session.respond record")
        // Independently: the responder starts with RK = SK and DHs = its signed prekey, then decrypts.
        var initial = ProtoRatchetState()
        initial.sendingRatchetPrivateKey = signedPreKey.privateKey.secret.unsafeData
        initial.rootKey = try group.hex("sharedSecret")
        var reference = ReferenceRatchet(state: initial, associatedData: try group.hex("associatedData"))
        let trace = try reference.decrypt(message.ratchetMessage, random: randomBytes)
        try checkTrace(trace, test)
        try checkJSON(SessionStateJSON.ratchet(reference.state), SessionStateJSON.ratchet(proto.ratchet), "stateAfter.ratchet (reference)")
    }

    static func encrypt(_ test: JSONValue, _ group: JSONValue) throws {
        let (before, beforeProto) = try SessionStateJSON.read(try test.object("stateBefore"), "stateBefore")
        let (after, afterProto) = try SessionStateJSON.read(try test.object("stateAfter"), "stateAfter")
        let plaintext = try test.hex("plaintext"), randomBytes = try test.hexArray("randomBytes")
        try require(randomBytes.count == 1, "encrypt draws one nonce")
        let random = ScriptedRandom(randomBytes)
        var session = try Session(serialized: before)
        let sessionMessage = try session.encrypt(plaintext, random: random)
        try random.checkAllConsumed()
        try check(sessionMessage, try test.hex("sessionMessage"), "Session.encrypt output")
        try check(session.serialized(), after, "Session.encrypt record")

        // Independently from the state before.
        var reference = ReferenceRatchet(state: beforeProto.ratchet, associatedData: beforeProto.associatedData)
        let trace = try reference.encrypt(plaintext, nonce: randomBytes[0])
        try check(trace.header, try test.hex("encodedHeader"), "encodedHeader")
        try check(randomBytes[0], try test.hex("nonce"), "nonce")
        try check(trace.chainKey, try test.hex("chainKey"), "chainKey")
        try check(trace.messageKey, try test.hex("messageKey"), "messageKey")
        try check(hmac(trace.chainKey, 0x02), try test.hex("nextChainKey"), "nextChainKey")
        try check(trace.encryptionKey, try test.hex("encryptionKey"), "encryptionKey")
        try check(beforeProto.associatedData + trace.header, try test.hex("aeadAssociatedData"), "aeadAssociatedData")
        try check(trace.ciphertext, try test.hex("ciphertext"), "ciphertext")
        try check(trace.message, try test.hex("ratchetMessage"), "ratchetMessage")
        try checkJSON(SessionStateJSON.ratchet(reference.state), SessionStateJSON.ratchet(afterProto.ratchet), "stateAfter.ratchet (reference)")
        var referenceRecord = beforeProto
        referenceRecord.ratchet = reference.state
        try check(try referenceRecord.serializedData(), after, "stateAfter.sessionRecord (reference)")
        // The header fields, both ways.
        let headerJSON = try test.object("header")
        let header = try RatchetHeader(decoding: trace.header)
        try check(Int(ProtocolConstants.version), try headerJSON.int("version"), "header.version")
        try check(header.ratchetKey.rawRepresentation, try headerJSON.hex("ratchetKey"), "header.ratchetKey")
        try check(header.previousChainLength, try headerJSON.uint32("previousChainLength"), "header.previousChainLength")
        try check(header.messageNumber, try headerJSON.uint32("messageNumber"), "header.messageNumber")
        try check(header.encoded, trace.header, "RatchetHeader.encoded")
        // The SessionMessage around it: a PreKeyMessage while the record has a pending prekey.
        var expected = ProtoSessionMessage()
        expected.version = 1
        if beforeProto.hasPendingPrekey {
            try check(try test.string("sessionMessageKind"), "prekeyMessage", "sessionMessageKind")
            var preKey = ProtoPreKeyMessage()
            preKey.accountIdentityKey = beforeProto.localAccountIdentityKey
            preKey.deviceIdentityKey = beforeProto.localDeviceIdentityKey
            preKey.deviceCertificateSignature = beforeProto.localDeviceCertificateSignature
            preKey.baseKey = beforeProto.pendingPrekey.baseKey
            preKey.signedPrekeyID = beforeProto.pendingPrekey.signedPrekeyID
            if beforeProto.pendingPrekey.hasOneTimePrekeyID { preKey.oneTimePrekeyID = beforeProto.pendingPrekey.oneTimePrekeyID }
            preKey.ratchetMessage = trace.message
            preKey.kemPrekeyID = beforeProto.pendingPrekey.kemPrekeyID
            preKey.kemCiphertext = beforeProto.pendingPrekey.kemCiphertext
            expected.kind = .prekeyMessage(preKey)
        } else {
            try check(try test.string("sessionMessageKind"), "ratchetMessage", "sessionMessageKind")
            expected.kind = .ratchetMessage(trace.message)
        }
        try check(try expected.serializedData(), sessionMessage, "sessionMessage (reference)")
    }

    static func decrypt(_ test: JSONValue, _ group: JSONValue) throws {
        let (before, beforeProto) = try SessionStateJSON.read(try test.object("stateBefore"), "stateBefore")
        let (after, afterProto) = try SessionStateJSON.read(try test.object("stateAfter"), "stateAfter")
        let message = try test.hex("ratchetMessage"), randomBytes = try test.hexArray("randomBytes")
        let random = ScriptedRandom(randomBytes)
        var session = try Session(serialized: before)
        try check(try session.decrypt(message, random: random), try test.hex("plaintext"), "Session.decrypt plaintext")
        try random.checkAllConsumed()
        try check(session.serialized(), after, "Session.decrypt record")

        var reference = ReferenceRatchet(state: beforeProto.ratchet, associatedData: beforeProto.associatedData)
        let trace = try reference.decrypt(message, random: randomBytes)
        try checkTrace(trace, test)
        try checkJSON(SessionStateJSON.ratchet(reference.state), SessionStateJSON.ratchet(afterProto.ratchet), "stateAfter.ratchet (reference)")
        var referenceRecord = beforeProto
        referenceRecord.ratchet = reference.state
        referenceRecord.clearPendingPrekey()  // a decrypted reply ends the prekey phase
        try check(try referenceRecord.serializedData(), after, "stateAfter.sessionRecord (reference)")
    }

    static func checkTrace(_ trace: ReferenceRatchet.DecryptTrace, _ test: JSONValue) throws {
        try check(trace.plaintext, try test.hex("plaintext"), "plaintext (reference)")
        try check(trace.usedSkippedKey, try test.bool("usedSkippedKey"), "usedSkippedKey")
        try checkJSON(trace.dhRatchetStep, try test.field("dhRatchetStep"), "dhRatchetStep")
        try checkJSON(.array(trace.newSkipped), .array(try test.array("newSkippedMessageKeys")), "newSkippedMessageKeys")
        try checkJSON(trace.chainKey.map { .hex($0) } ?? .null, try test.field("chainKey"), "chainKey")
        try check(trace.messageKey, try test.hex("messageKey"), "messageKey")
        try check(trace.encryptionKey, try test.hex("encryptionKey"), "encryptionKey")
    }
}
