import FlitzCrypto
import FlitzFuzzSupport
import FlitzProtocol
import FlitzWire
import Foundation
import SwiftProtobuf

/// `flitz-fuzz-corpus [DIR]`: writes the seed corpus (`DIR/<target>/seed-*`, default `Fuzz/Corpus`) from
/// `vectors/*.json` and a few frames built from them. Deterministic: no randomness, so running it twice
/// gives the same files. It replaces the `seed-*` files only; inputs kept from fuzzing runs stay.
@main
struct CorpusGenerator {
    static func main() throws {
        let arguments = CommandLine.arguments.dropFirst()
        let root = arguments.first.map { URL(fileURLWithPath: $0) }
            ?? vectorsDirectory.deletingLastPathComponent().appendingPathComponent("Fuzz/Corpus")
        let seeds = try Seeds()
        let corpus: [(String, [(String, Data)])] = [
            ("relay-frame", seeds.frames()),
            ("envelope", seeds.envelopes()),
            ("ratchet-header", seeds.ratchetMessages()),
            ("message-content", seeds.contents()),
            ("prekey-bundle", seeds.bundles()),
        ]
        for (target, files) in corpus {
            let directory = root.appendingPathComponent(target)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            for old in try FileManager.default.contentsOfDirectory(atPath: directory.path) where old.hasPrefix("seed-") {
                try FileManager.default.removeItem(at: directory.appendingPathComponent(old))
            }
            for (name, bytes) in files {
                try bytes.write(to: directory.appendingPathComponent("seed-\(name)"))
            }
            print("\(target): \(files.count) seeds, \(files.reduce(0) { $0 + $1.1.count }) bytes")
        }
    }
}

/// The vector data the seeds are made of.
struct Seeds {
    let ratchet = VectorJSON(loadVectorFile("ratchet.json"))
    let session = VectorJSON(loadVectorFile("session.json"))
    let x3dh = VectorJSON(loadVectorFile("x3dh.json"))
    let pqxdh = VectorJSON(loadVectorFile("pqxdh.json"))
    let content = VectorJSON(loadVectorFile("content.json"))
    let conversations = VectorJSON(loadVectorFile("conversations.json"))
    let attachment = VectorJSON(loadVectorFile("attachment.json"))
    let frameVectors = VectorJSON(loadVectorFile("frames.json"))
    let fixtures = Fixtures.shared

    init() throws {}

    /// The tests of `file`'s groups of type `type` (vectors/README.md, "File format").
    func tests(_ file: VectorJSON, _ type: String) -> [VectorJSON] {
        file["testGroups"].array.filter { $0["type"].string == type }.flatMap { $0["tests"].array }
    }

    /// The ratchet conversation group: its parties and steps.
    var conversation: VectorJSON {
        guard let group = ratchet["testGroups"].array.first(where: { $0["type"].string == "conversation" }) else {
            fatalError("ratchet.json has no conversation group")
        }
        return group
    }

    /// Every `SessionMessage` of the vectors, named by file and test id.
    var sessionMessages: [(String, Data)] {
        conversation["tests"].array.filter { $0["action"].string == "encrypt" }.map { ("ratchet-\($0["tcId"].uint32)", $0["sessionMessage"].bytes) }
            + tests(session, "exchange").map { ("session-\($0["tcId"].uint32)", $0["sessionMessage"].bytes) }
            + (tests(session, "parse") + tests(pqxdh, "parse")).map { ("parse-\($0["tcId"].uint32)", $0["sessionMessage"].bytes) }
    }

    // MARK: Targets

    func ratchetMessages() -> [(String, Data)] {
        conversation["tests"].array.filter { $0["action"].string == "encrypt" }.flatMap {
            [("ratchet-\($0["tcId"].uint32)", $0["ratchetMessage"].bytes), ("ratchet-\($0["tcId"].uint32)-header", $0["encodedHeader"].bytes)]
        } + tests(session, "exchange").map { ("session-\($0["tcId"].uint32)", $0["ratchetMessage"].bytes) }
    }

    func contents() -> [(String, Data)] {
        let id = Data(repeating: 0x11, count: 16)
        return tests(session, "exchange").map { ("session-\($0["tcId"].uint32)", $0["plaintext"].bytes) }
            + (tests(content, "encode") + tests(content, "decode")).map { ("content-\($0["tcId"].uint32)", $0["encoded"].bytes) }
            // Every conversation kind (conversations.md section 2) and each input its decoding rules refuse.
            + (tests(conversations, "encode") + tests(conversations, "decode")).map { ("conversations-\($0["tcId"].uint32)", $0["encoded"].bytes) }
            // Texts carrying an AttachmentPointer or a Location, and each input attachments.md section 3 refuses; not the
            // thumbnail boundary cases, which are longer than the fuzzers' -max_len of 4096.
            + (tests(attachment, "encode") + tests(attachment, "decode")).map { ("attachment-\($0["tcId"].uint32)", $0["encoded"].bytes) }
            .filter { $0.1.count <= 4_096 } + [
            ("empty-text", MessageContent(messageID: id, sentAtMilliseconds: 0, body: .text("")).encoded()),
            ("unicode-text", MessageContent(messageID: id, sentAtMilliseconds: -1, body: .text("Grüße 👋🏽\u{1b}[31m\n")).encoded()),
        ]
    }

    func envelopes() -> [(String, Data)] {
        sessionMessages.flatMap { name, ciphertext in
            [("\(name)-envelope", serialized(envelope(ciphertext))), ("\(name)-ciphertext", ciphertext)]
        } + [("outgoing", serialized(outgoingEnvelope(sessionMessages[0].1)))]
    }

    func bundles() -> [(String, Data)] {
        [
            ("ratchet-bob", serialized(bundle(conversation["bob"], oneTime: true))),
            ("ratchet-bob-no-one-time", serialized(bundle(conversation["bob"], oneTime: false))),
        ] + (tests(x3dh, "agreement") + tests(pqxdh, "agreement")).map {
            ("agreement-\($0["tcId"].uint32)", serialized(bundle($0["bob"], oneTime: $0["bob"].has("oneTimePreKey"))))
        }
    }

    /// One frame of every body kind, plus the three kinds of refusal.
    func frames() -> [(String, Data)] {
        let bob = conversation["bob"]
        let handle = "bob"
        let challenge = fixtures.bob.privateKey.signature(for: SignedPayload.authentication(nonce: FuzzConstants.challengeNonce, handle: handle))
        let id16 = Data(repeating: 0x16, count: 16)

        var register = WireRegister()
        register.handle = handle
        register.accountIdentityKey = bob["accountIdentityKey"].bytes
        register.device = deviceKeys(bob)
        register.challengeSignature = challenge
        var recover = WireRecover()
        recover.handle = handle
        recover.recoveryCode = "7QH2-ABCD-EFGH-JKLM"
        recover.accountIdentityKey = register.accountIdentityKey
        recover.device = register.device
        recover.challengeSignature = challenge
        var authenticate = WireAuthenticate()
        authenticate.handle = handle
        authenticate.deviceID = 1
        authenticate.signature = challenge
        var publish = WirePublishPreKeys()
        publish.signedPrekey = register.device.signedPrekey
        publish.oneTimePrekeys = register.device.oneTimePrekeys
        var fetch = WireFetchPreKeyBundle()
        fetch.handle = handle
        var submit = WireSubmit()
        submit.envelopes = sessionMessages.prefix(3).map { outgoingEnvelope($0.1) }
        var acknowledge = WireAcknowledge()
        acknowledge.envelopeIds = [id16]
        acknowledge.receiptIds = [Data(repeating: 0x17, count: 16)]
        var seen = WireReportSeen()
        seen.envelopeIds = [id16, Data(repeating: 0x18, count: 16)]

        var challengeBody = WireChallenge()
        challengeBody.nonce = FuzzConstants.challengeNonce
        challengeBody.relayTimeMs = 1_767_225_600_000
        var registerResult = WireRegisterResult()
        registerResult.deviceID = 1
        registerResult.recoveryCode = recover.recoveryCode
        var authenticateResult = WireAuthenticateResult()
        authenticateResult.oneTimePrekeysRemaining = 99
        authenticateResult.relayTimeMs = 1_767_225_600_000
        var outcome = WireSubmitOutcome()
        outcome.envelopeID = id16
        outcome.acceptedAtMs = 1_767_225_600_000
        outcome.expiresAtMs = 1_769_817_600_000
        var refused = WireSubmitOutcome()
        refused.envelopeID = Data(repeating: 0x19, count: 16)
        refused.error = WireFrame.error(.queueFull, "queue full").error
        var submitResult = WireSubmitResult()
        submitResult.outcomes = [outcome, refused]
        var deliver = WireDeliver()
        deliver.envelopes = sessionMessages.prefix(3).map { envelope($0.1) }
        var receipt = WireReceipt()
        receipt.receiptID = Data(repeating: 0x17, count: 16)
        receipt.envelopeID = id16
        receipt.kind = .seen
        receipt.atMs = 1_767_225_600_000
        receipt.recipientHandle = "alice"
        receipt.recipientDeviceID = 1
        deliver.receipts = [receipt]
        var status = WirePreKeyStatus()
        status.oneTimePrekeysRemaining = 12
        status.oneTimeKemPrekeysRemaining = 4
        challengeBody.supportedVersions = WireConstants.supportedVersions
        publish.lastResortKemPrekey = register.device.lastResortKemPrekey
        publish.oneTimeKemPrekeys = register.device.oneTimeKemPrekeys

        let bodies: [(String, WireFrame.OneOf_Body)] = [
            ("register", .register(register)), ("recover", .recover(recover)), ("authenticate", .authenticate(authenticate)),
            ("publish-prekeys", .publishPrekeys(publish)), ("fetch-prekey-bundle", .fetchPrekeyBundle(fetch)), ("submit", .submit(submit)),
            ("acknowledge", .acknowledge(acknowledge)), ("report-seen", .reportSeen(seen)),
            ("challenge", .challenge(challengeBody)), ("error", WireFrame.error(.staleDevice, "stale device", requestID: 5, envelopeID: id16).body!),
            ("register-result", .registerResult(registerResult)), ("authenticate-result", .authenticateResult(authenticateResult)),
            ("prekey-bundle", .prekeyBundle(bundle(bob, oneTime: true))), ("submit-result", .submitResult(submitResult)),
            ("deliver", .deliver(deliver)), ("queue-drained", .queueDrained(WireQueueDrained())), ("prekey-status", .prekeyStatus(status)),
            ("ok", .ok(WireOk())),
        ]
        var frames = bodies.enumerated().map { index, body in
            ("\(body.0)", FrameCodec.encode(WireFrame(requestID: UInt64(index + 1), body: body.1)))
        }
        var newer = WireFrame(requestID: 7, body: .ok(WireOk()))
        newer.version = 2
        frames.append(("refused-version-2", serialized(newer)))
        var empty = WireFrame()
        empty.version = WireConstants.protocolVersion
        empty.requestID = 8
        frames.append(("refused-no-body", serialized(empty)))
        // Field 99, length-delimited: a body kind from a newer version.
        frames.append(("refused-unknown-kind", serialized(empty) + Data([0x9A, 0x06, 0x00])))
        // The frames of conversations.md section 11 (unsend, scheduled and online-only envelopes, block list, reports).
        frames += tests(frameVectors, "encode").filter { $0.has("flags") && $0["flags"].array.contains { $0.string == "Conversations" } }.map {
            ("conversations-\($0["tcId"].uint32)", $0["frame"].bytes)
        }
        // The upload capability frames of attachments.md section 7 (some are also flagged Conversations: named once, as those).
        frames += tests(frameVectors, "encode").filter {
            $0.has("flags") && $0["flags"].array.contains { $0.string == "Attachments" } && !$0["flags"].array.contains { $0.string == "Conversations" }
        }.map { ("attachments-\($0["tcId"].uint32)", $0["frame"].bytes) }
        return frames
    }

    // MARK: Building blocks

    func deviceKeys(_ party: VectorJSON) -> WireDeviceKeys {
        var keys = WireDeviceKeys()
        keys.deviceIdentityKey = party["deviceIdentityKey"].bytes
        keys.deviceCertificateSignature = party["deviceCertificateSignature"].bytes
        keys.signedPrekey = signedPreKey(party)
        var oneTime = WireOneTimePreKey()
        oneTime.id = party["oneTimePreKey"]["id"].uint32
        oneTime.publicKey = party["oneTimePreKey"]["publicKey"].bytes
        keys.oneTimePrekeys = [oneTime]
        keys.lastResortKemPrekey = kemPreKey(party)
        keys.lastResortKemPrekey.lastResort = true
        keys.oneTimeKemPrekeys = [kemPreKey(party)]
        return keys
    }

    /// The party's KEM prekey as published (its signature covers kind and id, so the copy marked
    /// last-resort above is an input the relay refuses, which is also worth fuzzing from).
    func kemPreKey(_ party: VectorJSON) -> WireKEMPreKey {
        var key = WireKEMPreKey()
        key.id = party["kemPreKey"]["id"].uint32
        key.publicKey = party["kemPreKey"]["publicKey"].bytes
        key.signature = party["kemPreKey"]["signature"].bytes
        key.lastResort = party["kemPreKey"]["lastResort"].bool
        return key
    }

    func signedPreKey(_ party: VectorJSON) -> WireSignedPreKey {
        var key = WireSignedPreKey()
        key.id = party["signedPreKey"]["id"].uint32
        key.publicKey = party["signedPreKey"]["publicKey"].bytes
        key.signature = party["signedPreKey"]["signature"].bytes
        return key
    }

    /// The bundle the relay would hand out for `party`'s one device.
    func bundle(_ party: VectorJSON, oneTime: Bool) -> WirePreKeyBundle {
        var device = WireDeviceBundle()
        device.deviceID = 1
        device.deviceIdentityKey = party["deviceIdentityKey"].bytes
        device.deviceCertificateSignature = party["deviceCertificateSignature"].bytes
        device.signedPrekey = signedPreKey(party)
        device.kemPrekey = kemPreKey(party)
        if oneTime {
            device.oneTimePrekey.id = party["oneTimePreKey"]["id"].uint32
            device.oneTimePrekey.publicKey = party["oneTimePreKey"]["publicKey"].bytes
        }
        var bundle = WirePreKeyBundle()
        bundle.handle = "bob"
        bundle.accountIdentityKey = party["accountIdentityKey"].bytes
        bundle.devices = [device]
        return bundle
    }

    func envelope(_ ciphertext: Data) -> WireEnvelope {
        var envelope = WireEnvelope()
        envelope.envelopeID = Data(repeating: 0xE1, count: 16)
        envelope.senderHandle = "alice"
        envelope.senderDeviceID = 1
        envelope.recipientDeviceID = 1
        envelope.acceptedAtMs = 1_767_225_600_000
        envelope.expiresAtMs = 1_769_817_600_000
        envelope.ciphertext = ciphertext
        return envelope
    }

    func outgoingEnvelope(_ ciphertext: Data) -> WireOutgoingEnvelope {
        var envelope = WireOutgoingEnvelope()
        envelope.envelopeID = Data(repeating: 0xE2, count: 16)
        envelope.recipientHandle = "bob"
        envelope.recipientDeviceID = 1
        envelope.ttlSeconds = 3_600
        envelope.ciphertext = ciphertext
        return envelope
    }

    func serialized(_ message: some SwiftProtobuf.Message) -> Data {
        // Generated proto3 messages without required fields always serialize.
        guard let data = try? message.serializedData() else { fatalError("cannot serialize \(type(of: message))") }
        return data
    }
}
