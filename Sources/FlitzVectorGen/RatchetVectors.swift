import FlitzCrypto
import FlitzProtocol
import FlitzVectors
import Foundation

/// `vectors/ratchet.json`: a Double Ratchet conversation, step by step with every intermediate key, and
/// decryptions that must fail and leave the session unchanged.
enum RatchetVectors {
    static let label = "flitz-vectors/ratchet"

    enum Event {
        case send(String)
        case receive(String)
    }

    /// Message ids start with the sender ("a" alice, "b" bob). Out of order within a chain (a2 before a1),
    /// across a DH step (a1 after a4), and skipped through PN (a6 makes bob store a5's key).
    static let script: [Event] = [
        .send("a0"), .send("a1"), .send("a2"),
        .receive("a0"), .receive("a2"),
        .send("b0"), .send("b1"),
        .receive("b1"), .receive("b0"),
        .send("a3"), .send("a4"), .send("a5"),
        .receive("a4"), .receive("a1"),
        .send("b2"), .send("b3"),
        .receive("b3"),
        .send("a6"),
        .receive("a6"), .receive("a3"), .receive("a5"),
        .receive("b2"),
        .send("b4"), .send("a7"),
        .receive("b4"), .receive("a7"),
        .send("b5"), .receive("b5"),
    ]

    static func plaintext(_ id: String) -> Data {
        Data("message \(id) from \(id.hasPrefix("a") ? "alice" : "bob")".utf8)
    }

    static func make() throws -> VectorFileBuilder {
        let alice = VectorParty(label: "\(label)/alice", signedPreKey: false, oneTimePreKey: false)
        let bob = VectorParty(label: "\(label)/bob", signedPreKey: true, oneTimePreKey: true)
        var aliceSession = try alice.initiate(to: bob)
        let initiationRandom = alice.random.take()
        let bundle = try bob.bundle()
        let agreement = try PQXDH.initiate(
            identity: alice.device, ephemeralKey: X25519PrivateKey(rawRepresentation: SecretBytes(initiationRandom[0])), bundle: bundle,
            encapsulation: try KEMFixtures.encapsulation(for: bundle.kemPreKey.publicKey))
        let spk = bob.signedPreKey!.privateKey.publicKey.rawRepresentation
        let firstDH = try X25519PrivateKey(rawRepresentation: SecretBytes(initiationRandom[1])).sharedSecret(with: X25519PublicKey(rawRepresentation: spk))
        let (firstRoot, firstChain) = RatchetKDF.rootStep(rootKey: agreement.sharedSecret, dhOutput: firstDH)

        var tests: [VectorTest] = [
            VectorTest(
                "alice starts her session from bob's bundle: draws EK_A, then her first ratchet key", flags: ["Initiate"],
                [
                    "action": .string("initiate"), "party": .string("alice"), "randomBytes": .hexArray(initiationRandom),
                    "baseKey": .hex(aliceSession.baseKey.rawRepresentation), "dhOutput": .hex(firstDH), "rootKey": .hex(firstRoot),
                    "sendingChainKey": .hex(firstChain), "stateAfter": stateJSON(aliceSession),
                ])
        ]
        var bobSession: Session?
        var sent: [String: Data] = [:]
        var snapshots: [String: Session] = ["alice:start": aliceSession]

        for event in script {
            switch event {
            case .send(let id):
                let fromAlice = id.hasPrefix("a")
                let (test, after, bytes) = try encryptTest(
                    "\(fromAlice ? "alice" : "bob") encrypts \(id)", party: fromAlice ? "alice" : "bob", message: id,
                    session: fromAlice ? aliceSession : bobSession!, plaintext: plaintext(id), random: fromAlice ? alice.random : bob.random)
                tests.append(test)
                sent[id] = bytes
                if fromAlice { aliceSession = after } else { bobSession = after }
            case .receive(let id):
                let toBob = id.hasPrefix("a")
                let (ratchetBytes, preKey) = try ratchetMessage(of: sent[id]!)
                let random = toBob ? bob.random : alice.random
                var fields: [String: JSONValue] = ["party": .string(toBob ? "bob" : "alice"), "message": .string(id)]
                let before: ProtoRatchetState
                let after: Session
                var flags: [String] = []
                if toBob, bobSession == nil {
                    var initial = ProtoRatchetState()
                    initial.sendingRatchetPrivateKey = bob.signedPreKey!.privateKey.secret.unsafeData
                    initial.rootKey = agreement.sharedSecret.unsafeData
                    before = initial
                    let (session, out) = try Session.respond(to: preKey!, identity: bob.device, signedPreKey: bob.signedPreKey!, oneTimePreKey: bob.oneTimePreKey, kemPreKey: bob.kemPreKey!, random: random)
                    precondition(out == plaintext(id))
                    after = session
                    fields["action"] = .string("respond")
                    fields["sessionMessage"] = .hex(sent[id]!)
                    flags.append("Respond")
                } else {
                    let session = toBob ? bobSession! : aliceSession
                    before = session.ratchetState
                    var copy = session
                    let out = try copy.decrypt(ratchetBytes, random: random)
                    precondition(out == plaintext(id))
                    after = copy
                    fields["action"] = .string("decrypt")
                    fields["stateBefore"] = stateJSON(session)
                    fields["ratchetMessage"] = .hex(ratchetBytes)
                    flags.append("Decrypt")
                }
                let consumed = random.take()
                let trace = try decryptTrace(before: before, after: after.ratchetState, message: ratchetBytes, random: consumed)
                flags += trace.flags
                fields.merge(trace.fields) { $1 }
                fields["randomBytes"] = .hexArray(consumed)
                fields["plaintext"] = .hex(plaintext(id))
                fields["stateAfter"] = stateJSON(after)
                tests.append(VectorTest("\(toBob ? "bob" : "alice") decrypts \(id)" + trace.summary, flags: flags, fields))
                if toBob { bobSession = after } else { aliceSession = after }
                snapshots["\(toBob ? "bob" : "alice"):\(id)"] = after
            }
        }

        return VectorFileBuilder(
            topic: "ratchet",
            description: "The Double Ratchet, one step per test. The conversation group replays a conversation between alice "
                + "(initiator) and bob (responder, signed and one-time prekey): alice initiates, bob's first decryption creates his "
                + "session (respond), then encrypt and decrypt steps with out-of-order delivery within a chain, across DH ratchet "
                + "steps, and through PN. Each step gives the state before (a SessionRecord, crypto.md section 8, with its ratchet part "
                + "spelled out), the input, the random bytes the party draws (a 24-byte nonce per encryption, a 32-byte ratchet private "
                + "key per DH ratchet step), every intermediate key, the exact output and the state after. Steps of one party chain: "
                + "stateAfter of one is stateBefore of that party's next. The decryptFailures group gives states and messages that "
                + "must be refused with the exact error, leaving the serialized state byte-identical (including stored skipped keys). "
                + "The encryptLimits group starts from alice's state after she decrypted b0, with its record edited (sending counter, "
                + "sending chain); its nonces are draws of SeededRandom(label: \"\(label)/limits\").",
            specification: "protocol/crypto.md sections 4, 5, 6 and 8",
            notes: [
                "Initiate": "alice's session from the bundle (X3DH as in x3dh.json, then the first root step).",
                "Respond": "bob's session from alice's prekey message: RK = SK, DHs = his signed prekey, then a decryption.",
                "Encrypt": "One encryption.",
                "PreKeyMessage": "Sent before alice has decrypted a reply: the SessionMessage is a PreKeyMessage.",
                "Decrypt": "One decryption of a ratchet message.",
                "DHRatchetStep": "The header's ratchet key is new: a DH ratchet step (one 32-byte draw).",
                "SkippedKeys": "Message keys are skipped and stored (newSkippedMessageKeys).",
                "SkippedThroughPN": "Keys of the previous receiving chain are skipped up to the header's PN.",
                "UsesSkippedKey": "Decrypted with a stored skipped message key, which is then removed.",
                "OutOfOrder": "Delivered after a message sent later.",
                "TamperedCiphertext": "A bit of the ciphertext, tag or nonce is flipped.",
                "TamperedHeader": "A header field is changed (it is authenticated as AEAD associated data).",
                "UnknownRatchetKey": "A header with a ratchet key never seen: the DH step happens on a copy and authentication fails.",
                "TooFarAhead": "More than MAX_SKIP keys would be skipped.",
                "Boundary": "Exactly MAX_SKIP keys would be skipped: allowed, so the failure is authentication.",
                "Replay": "A message already decrypted.",
                "WrongVersion": "The header version byte is not 1.",
                "Truncated": "Shorter than a header, or than header + nonce + tag.",
                "PendingPreKey": "alice before any reply: the pending prekey must survive the failure.",
                "CounterLimit": "The sending counter at its limit: N = 2^32 - 2 is the last message of a chain.",
                "NoSendingChain": "No sending chain yet: encryption is refused.",
            ],
            seeds: [alice.random.label, bob.random.label, failureLabel, "\(label)/limits"],
            groups: [
                VectorGroup(
                    type: "conversation",
                    fields: [
                        "alice": alice.json(), "bob": bob.json(), "bundle": bob.bundleJSON(), "sharedSecret": .hex(agreement.sharedSecret),
                        "associatedData": .hex(agreement.associatedData),
                    ],
                    tests: tests),
                VectorGroup(type: "decryptFailures", tests: try failures(snapshots: snapshots, sent: sent)),
                VectorGroup(type: "encryptLimits", tests: try encryptLimits(snapshots: snapshots)),
            ])
    }

    /// One encryption step: the test, the session after it and the `SessionMessage` bytes.
    static func encryptTest(
        _ comment: String, party: String, message id: String, session: Session, plaintext: Data, random: RecordingRandom, flags extra: [String] = []
    ) throws -> (VectorTest, Session, Data) {
        var after = session
        let bytes = try after.encrypt(plaintext, random: random)
        let consumed = random.take()
        let (ratchetBytes, preKey) = try ratchetMessage(of: bytes)
        let parts = split(ratchetMessage: ratchetBytes)
        let header = try RatchetHeader(decoding: ratchetBytes)
        let chainKey = SecretBytes(session.ratchetState.sendingChainKey)
        let (next, messageKey) = RatchetKDF.chainStep(chainKey: chainKey)
        var flags = ["Encrypt"] + extra
        if preKey != nil { flags.append("PreKeyMessage") }
        let test = VectorTest(
            comment, flags: flags,
            [
                "action": .string("encrypt"), "party": .string(party), "message": .string(id),
                "stateBefore": stateJSON(session), "plaintext": .hex(plaintext), "randomBytes": .hexArray(consumed),
                "header": .object([
                    "version": .int(Int(ProtocolConstants.version)), "ratchetKey": .hex(header.ratchetKey.rawRepresentation),
                    "previousChainLength": .uint(header.previousChainLength), "messageNumber": .uint(header.messageNumber),
                ]),
                "encodedHeader": .hex(parts.header), "nonce": .hex(parts.nonce), "chainKey": .hex(chainKey),
                "messageKey": .hex(messageKey), "nextChainKey": .hex(next),
                "encryptionKey": .hex(RatchetKDF.encryptionKey(messageKey: messageKey)),
                "aeadAssociatedData": .hex(session.associatedData + parts.header), "ciphertext": .hex(parts.ciphertext),
                "ratchetMessage": .hex(ratchetBytes), "sessionMessageKind": .string(preKey == nil ? "ratchetMessage" : "prekeyMessage"),
                "sessionMessage": .hex(bytes), "stateAfter": stateJSON(after),
            ])
        return (test, after, bytes)
    }

    /// The sending counter's last value, and encryptions that must fail without changing the state.
    static func encryptLimits(snapshots: [String: Session]) throws -> [VectorTest] {
        let random = RecordingRandom(label: "\(label)/limits")
        func edited(_ session: Session, _ change: (inout ProtoSessionRecord) -> Void) throws -> Session {
            var record = try ProtoSessionRecord(serializedBytes: session.serialized())
            change(&record)
            return try Session(serialized: try record.serializedData())
        }
        let alice = snapshots["alice:b0"]!  // has a sending chain and no pending prekey
        let last = try edited(alice) { $0.ratchet.sendingCounter = UInt32.max - 1 }
        let (valid, exhausted, _) = try encryptTest(
            "the last message of a sending chain: N = 2^32 - 2", party: "alice", message: "last", session: last,
            plaintext: Data("the last one".utf8), random: random, flags: ["CounterLimit"])
        let noChain = try edited(alice) { $0.ratchet.sendingChainKey = Data() }
        func failure(_ comment: String, _ session: Session, _ code: FlitzProtocolError.Code, flags: [String]) -> VectorTest {
            VectorTest(
                comment, flags: flags, result: .invalid(VectorErrorRef(code), stateUnchanged: true),
                [
                    "action": .string("encrypt"), "party": .string("alice"), "stateBefore": stateJSON(session),
                    "plaintext": .hex(Data("one too many".utf8)), "randomBytes": .hexArray([random.bytes(24)]),
                ])
        }
        return [
            valid,
            failure("after N = 2^32 - 2 the chain is exhausted", exhausted, .counterOverflow, flags: ["CounterLimit"]),
            failure(
                "a record without a sending chain (a responder that has decrypted nothing)", noChain, .noSendingChain,
                flags: ["NoSendingChain"]),
        ]
    }

    /// Intermediate values of one decryption, derived from the states before and after with FlitzProtocol's KDFs.
    static func decryptTrace(
        before: ProtoRatchetState, after: ProtoRatchetState, message: Data, random: [Data]
    ) throws -> (fields: [String: JSONValue], flags: [String], summary: String) {
        let header = try RatchetHeader(decoding: message)
        let key = header.ratchetKey.rawRepresentation
        var fields: [String: JSONValue] = [:]
        var flags: [String] = []
        var notes: [String] = []
        let messageKey: SecretBytes
        if let skipped = before.skippedMessageKeys.first(where: { $0.ratchetKey == key && $0.counter == header.messageNumber }) {
            messageKey = SecretBytes(skipped.messageKey)
            fields["usedSkippedKey"] = .bool(true)
            fields["dhRatchetStep"] = .null
            fields["newSkippedMessageKeys"] = .array([])
            fields["chainKey"] = .null
            flags += ["UsesSkippedKey", "OutOfOrder"]
            notes.append("with a stored skipped key")
        } else {
            fields["usedSkippedKey"] = .bool(false)
            let old = Set(before.skippedMessageKeys.map { "\($0.ratchetKey.hexString):\($0.counter)" })
            let added = after.skippedMessageKeys.filter { !old.contains("\($0.ratchetKey.hexString):\($0.counter)") }
            fields["newSkippedMessageKeys"] = .array(
                added.map { .object(["ratchetKey": .hex($0.ratchetKey), "counter": .uint($0.counter), "messageKey": .hex($0.messageKey)]) })
            if !added.isEmpty {
                flags.append("SkippedKeys")
                notes.append("skipping \(added.count) key\(added.count == 1 ? "" : "s")")
            }
            var chainKey: SecretBytes
            var counter: UInt32
            if key != before.receivingRatchetKey {
                if added.contains(where: { $0.ratchetKey == before.receivingRatchetKey }) {
                    flags.append("SkippedThroughPN")
                    notes.append("through PN \(header.previousChainLength)")
                }
                let receiveDH = try X25519PrivateKey(rawRepresentation: SecretBytes(before.sendingRatchetPrivateKey)).sharedSecret(with: header.ratchetKey)
                let (root1, receivingChain) = RatchetKDF.rootStep(rootKey: SecretBytes(before.rootKey), dhOutput: receiveDH)
                let newPrivate = try X25519PrivateKey(rawRepresentation: SecretBytes(random[0]))
                let sendDH = try newPrivate.sharedSecret(with: header.ratchetKey)
                let (root2, sendingChain) = RatchetKDF.rootStep(rootKey: root1, dhOutput: sendDH)
                precondition(root2.unsafeData == after.rootKey && sendingChain.unsafeData == after.sendingChainKey)
                fields["dhRatchetStep"] = .object([
                    "receiveDhOutput": .hex(receiveDH), "rootKeyAfterReceive": .hex(root1), "receivingChainKey": .hex(receivingChain),
                    "newRatchetPrivateKey": .hex(random[0]), "newRatchetKey": .hex(newPrivate.publicKey.rawRepresentation),
                    "sendDhOutput": .hex(sendDH), "rootKey": .hex(root2), "sendingChainKey": .hex(sendingChain),
                ])
                flags.append("DHRatchetStep")
                notes.insert("with a DH ratchet step", at: 0)
                chainKey = receivingChain
                counter = 0
            } else {
                fields["dhRatchetStep"] = .null
                chainKey = SecretBytes(before.receivingChainKey)
                counter = before.receivingCounter
            }
            while counter < header.messageNumber {
                chainKey = RatchetKDF.chainStep(chainKey: chainKey).chainKey
                counter += 1
            }
            fields["chainKey"] = .hex(chainKey)
            let step = RatchetKDF.chainStep(chainKey: chainKey)
            precondition(step.chainKey.unsafeData == after.receivingChainKey)
            messageKey = step.messageKey
        }
        fields["messageKey"] = .hex(messageKey)
        fields["encryptionKey"] = .hex(RatchetKDF.encryptionKey(messageKey: messageKey))
        return (fields, flags, notes.isEmpty ? "" : " " + notes.joined(separator: ", "))
    }

    static let failureLabel = "\(label)/failures"

    /// Decryptions that must fail, from states of the conversation.
    static func failures(snapshots: [String: Session], sent: [String: Data]) throws -> [VectorTest] {
        let random = SeededRandom(label: failureLabel)
        func message(_ id: String) -> Data { try! ratchetMessage(of: sent[id]!).ratchetMessage }
        func changed(_ id: String, at offset: Int, xor: UInt8 = 0x01) -> Data {
            var bytes = message(id)
            let index = offset >= 0 ? offset : bytes.count + offset
            bytes[index] ^= xor
            return bytes
        }
        func withCounters(_ id: String, previousChainLength: UInt32? = nil, messageNumber: UInt32? = nil) -> Data {
            var bytes = message(id)
            if let previousChainLength { bytes.replaceSubrange(33..<37, with: withUnsafeBytes(of: previousChainLength.bigEndian) { Data($0) }) }
            if let messageNumber { bytes.replaceSubrange(37..<41, with: withUnsafeBytes(of: messageNumber.bigEndian) { Data($0) }) }
            return bytes
        }
        func forged(previousChainLength: UInt32, messageNumber: UInt32) -> Data {
            let key = X25519PrivateKey(random: random).publicKey
            let header = RatchetHeader(ratchetKey: key, previousChainLength: previousChainLength, messageNumber: messageNumber)
            return header.encoded + random.bytes(24) + random.bytes(32)
        }
        func test(
            _ comment: String, _ snapshot: String, _ bytes: Data, _ code: FlitzProtocolError.Code, flags: [String], draws: Bool = false
        ) -> VectorTest {
            VectorTest(
                comment, flags: flags, result: .invalid(VectorErrorRef(code), stateUnchanged: true),
                [
                    "party": .string(String(snapshot.prefix { $0 != ":" })), "stateBefore": stateJSON(snapshots[snapshot]!),
                    "ratchetMessage": .hex(bytes), "randomBytes": .hexArray(draws ? [random.bytes(32)] : []),
                ])
        }
        let bobAfterA4 = "bob:a4"  // chain 2 current (Nr = 2), a1 and a3 stored as skipped keys
        let state = snapshots[bobAfterA4]!.ratchetState
        precondition(state.receivingCounter == 2 && state.skippedMessageKeys.count == 2)
        let maxSkip = RatchetLimits.maxSkip
        return [
            test("a5 with a ciphertext bit flipped", bobAfterA4, changed("a5", at: 65), .authenticationFailed, flags: ["TamperedCiphertext"]),
            test("a5 with a tag bit flipped", bobAfterA4, changed("a5", at: -1), .authenticationFailed, flags: ["TamperedCiphertext"]),
            test("a5 with a nonce bit flipped", bobAfterA4, changed("a5", at: 41), .authenticationFailed, flags: ["TamperedCiphertext"]),
            test(
                "a5 with its message number changed to 5 (keys 2-4 are skipped in the copy only)", bobAfterA4,
                withCounters("a5", messageNumber: 5), .authenticationFailed, flags: ["TamperedHeader"]),
            test("a5 with a ratchet key bit flipped", bobAfterA4, changed("a5", at: 1, xor: 0x02), .authenticationFailed,
                 flags: ["TamperedHeader", "UnknownRatchetKey"], draws: true),
            test(
                "a3 (its key is stored) with a ciphertext bit flipped: the stored key must stay", bobAfterA4, changed("a3", at: 70),
                .authenticationFailed, flags: ["TamperedCiphertext", "UsesSkippedKey"]),
            test(
                "a forged header with a ratchet key never seen", bobAfterA4, forged(previousChainLength: 0, messageNumber: 0),
                .authenticationFailed, flags: ["UnknownRatchetKey"], draws: true),
            test(
                "message number Nr + MAX_SKIP + 1 in the current chain", bobAfterA4, withCounters("a5", messageNumber: 2 + maxSkip + 1),
                .tooManySkippedMessages, flags: ["TooFarAhead"]),
            test(
                "message number Nr + MAX_SKIP in the current chain: allowed, then the tag fails", bobAfterA4,
                withCounters("a5", messageNumber: 2 + maxSkip), .authenticationFailed, flags: ["TooFarAhead", "Boundary"]),
            test(
                "a new ratchet key whose PN is Nr + MAX_SKIP + 1 in the current chain", bobAfterA4,
                forged(previousChainLength: 2 + maxSkip + 1, messageNumber: 0), .tooManySkippedMessages, flags: ["TooFarAhead", "UnknownRatchetKey"]),
            test(
                "a new ratchet key with message number MAX_SKIP + 1 in its new chain", bobAfterA4,
                forged(previousChainLength: 2, messageNumber: maxSkip + 1), .tooManySkippedMessages, flags: ["TooFarAhead", "UnknownRatchetKey"],
                draws: true),
            test("a4 again (replay in the current chain)", bobAfterA4, message("a4"), .duplicateMessage, flags: ["Replay"]),
            test("a0 again (replay from the previous chain)", bobAfterA4, message("a0"), .duplicateMessage, flags: ["Replay"]),
            test(
                "a1 again after its stored key was used (previous chain)", "bob:a1", message("a1"), .duplicateMessage,
                flags: ["Replay", "UsesSkippedKey"]),
            test("a0 again right after bob's session was created from it", "bob:a0", message("a0"), .duplicateMessage, flags: ["Replay"]),
            test("header version 2", bobAfterA4, changed("a5", at: 0, xor: 0x03), .unsupportedVersion, flags: ["WrongVersion"]),
            test("header version 0", bobAfterA4, changed("a5", at: 0, xor: 0x01), .unsupportedVersion, flags: ["WrongVersion"]),
            test("empty input", bobAfterA4, Data(), .malformedMessage, flags: ["Truncated"]),
            test("40 bytes: one short of a header", bobAfterA4, message("a5").prefix(40), .malformedMessage, flags: ["Truncated"]),
            test("a header alone (41 bytes)", bobAfterA4, message("a5").prefix(41), .malformedMessage, flags: ["Truncated"]),
            test(
                "80 bytes: one short of header + nonce + tag", bobAfterA4, message("a5").prefix(80), .malformedMessage, flags: ["Truncated"]),
            test(
                "alice before any reply, b1 with a tag bit flipped", "alice:start", changed("b1", at: -1), .authenticationFailed,
                flags: ["TamperedCiphertext", "PendingPreKey"], draws: true),
        ]
    }
}
