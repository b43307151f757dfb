import FlitzCrypto
import FlitzProtocol
import FlitzVectors
import FlitzWire
import Foundation

/// `vectors/frames.json`: every wire `Frame` body kind encoded, frames that do not decode, and the
/// authentication payload.
enum FrameVectors {
    static let label = "flitz-vectors/frames"
    /// 2026-01-01T00:00:00Z in milliseconds.
    static let time: Int64 = 1_767_225_600_000

    static func make() throws -> VectorFileBuilder {
        let random = SeededRandom(label: label)
        let alice = VectorParty(label: "\(label)/alice", signedPreKey: true, oneTimePreKey: true)
        let spk = alice.signedPreKey!, opk = alice.oneTimePreKey!
        let nonce = random.bytes(32)
        let envelopeIDs = (0..<3).map { _ in random.bytes(16) }
        let receiptID = random.bytes(16)
        let ciphertext = random.bytes(48)
        let lastResort = KEMPreKeyPair(id: 201, kind: .lastResort, device: alice.device, random: random)
        func wire(_ key: KEMPreKeyPair) -> WireKEMPreKey {
            var out = WireKEMPreKey()
            out.id = key.id
            out.publicKey = key.privateKey.publicKey.rawRepresentation
            out.signature = key.signature
            out.lastResort = key.kind == .lastResort
            return out
        }
        let authentication = SignedPayload.authentication(nonce: nonce, handle: "alice")

        var signedPreKey = WireSignedPreKey()
        signedPreKey.id = spk.id
        signedPreKey.publicKey = spk.privateKey.publicKey.rawRepresentation
        signedPreKey.signature = spk.signature
        var oneTimePreKey = WireOneTimePreKey()
        oneTimePreKey.id = opk.id
        oneTimePreKey.publicKey = opk.privateKey.publicKey.rawRepresentation
        var deviceKeys = WireDeviceKeys()
        deviceKeys.deviceIdentityKey = alice.device.publicKey.rawRepresentation
        deviceKeys.deviceCertificateSignature = alice.device.certificate.signature
        deviceKeys.signedPrekey = signedPreKey
        deviceKeys.oneTimePrekeys = [oneTimePreKey]
        deviceKeys.lastResortKemPrekey = wire(lastResort)
        deviceKeys.oneTimeKemPrekeys = [wire(alice.kemPreKey!)]

        var frames: [(String, String, [String], WireFrame)] = []
        func add(_ comment: String, _ kind: String, flags: [String] = [], requestID: UInt64, _ body: WireFrame.OneOf_Body) {
            frames.append((comment, kind, flags, WireFrame(requestID: requestID, body: body)))
        }

        var challenge = WireChallenge()
        challenge.nonce = nonce
        challenge.relayTimeMs = time
        challenge.supportedVersions = WireConstants.supportedVersions
        add("the relay's first frame: a 32-byte nonce, its clock and the frame versions it speaks", "challenge", flags: ["Unsolicited"], requestID: 0, .challenge(challenge))
        add("an error answering request 7", "error", requestID: 7, .error(WireFrame.error(.invalidHandle, "handle must be 3-32 characters of a-z 0-9 _ .").error))
        add(
            "an error about one envelope of a batch", "error", requestID: 8,
            .error(WireFrame.error(.envelopeIDConflict, "envelope id already used", envelopeID: envelopeIDs[0]).error))
        var registerResult = WireRegisterResult()
        registerResult.deviceID = 1
        registerResult.recoveryCode = "7QH2-MXKD-93PA-LC4E"
        add("the answer to Register and Recover", "registerResult", requestID: 1, .registerResult(registerResult))
        var authenticateResult = WireAuthenticateResult()
        authenticateResult.oneTimePrekeysRemaining = 99
        authenticateResult.relayTimeMs = time + 5
        authenticateResult.oneTimeKemPrekeysRemaining = 19
        add("the answer to Authenticate", "authenticateResult", requestID: 2, .authenticateResult(authenticateResult))

        var deviceBundle = WireDeviceBundle()
        deviceBundle.deviceID = 1
        deviceBundle.deviceIdentityKey = alice.device.publicKey.rawRepresentation
        deviceBundle.deviceCertificateSignature = alice.device.certificate.signature
        deviceBundle.signedPrekey = signedPreKey
        deviceBundle.oneTimePrekey = oneTimePreKey
        deviceBundle.kemPrekey = wire(alice.kemPreKey!)
        var bundle = WirePreKeyBundle()
        bundle.handle = "alice"
        bundle.accountIdentityKey = alice.account.publicKey.rawRepresentation
        bundle.devices = [deviceBundle]
        add("a prekey bundle with a one-time prekey", "prekeyBundle", requestID: 3, .prekeyBundle(bundle))
        deviceBundle.clearOneTimePrekey()
        bundle.devices = [deviceBundle]
        deviceBundle.kemPrekey = wire(lastResort)
        bundle.devices = [deviceBundle]
        add(
            "a prekey bundle whose one-time stocks are empty: no one-time prekey, the last-resort KEM prekey", "prekeyBundle", flags: ["Optional"],
            requestID: 4, .prekeyBundle(bundle))

        var accepted = WireSubmitOutcome()
        accepted.envelopeID = envelopeIDs[0]
        accepted.acceptedAtMs = time
        accepted.expiresAtMs = time + 2_592_000_000
        var refused = WireSubmitOutcome()
        refused.envelopeID = envelopeIDs[1]
        refused.error = WireFrame.error(.unknownRecipient, "no such handle").error
        var submitResult = WireSubmitResult()
        submitResult.outcomes = [accepted, refused]
        add("one envelope stored (the sent receipt), one refused", "submitResult", requestID: 5, .submitResult(submitResult))

        var envelope = WireEnvelope()
        envelope.envelopeID = envelopeIDs[2]
        envelope.senderHandle = "bob"
        envelope.senderDeviceID = 1
        envelope.recipientDeviceID = 1
        envelope.acceptedAtMs = time
        envelope.expiresAtMs = time + 60_000
        envelope.ciphertext = ciphertext
        var receipt = WireReceipt()
        receipt.receiptID = receiptID
        receipt.envelopeID = envelopeIDs[0]
        receipt.kind = .delivered
        receipt.atMs = time + 1_000
        receipt.recipientHandle = "bob"
        receipt.recipientDeviceID = 1
        var deliver = WireDeliver()
        deliver.envelopes = [envelope]
        deliver.receipts = [receipt]
        add("queued items pushed by the relay: an envelope and a receipt", "deliver", flags: ["Unsolicited"], requestID: 0, .deliver(deliver))
        add("sent once the items queued at authentication are delivered", "queueDrained", flags: ["Unsolicited", "EmptyBody"], requestID: 0, .queueDrained(WireQueueDrained()))
        var prekeyStatus = WirePreKeyStatus()
        prekeyStatus.oneTimePrekeysRemaining = 200
        prekeyStatus.oneTimeKemPrekeysRemaining = 20
        add("the answer to PublishPreKeys", "prekeyStatus", requestID: 6, .prekeyStatus(prekeyStatus))
        add("a plain acknowledgement", "ok", flags: ["EmptyBody"], requestID: 9, .ok(WireOk()))

        var register = WireRegister()
        register.handle = "alice"
        register.accountIdentityKey = alice.account.publicKey.rawRepresentation
        register.device = deviceKeys
        register.challengeSignature = alice.device.privateKey.signature(for: authentication)
        add("Register with the device keys and the signed challenge", "register", requestID: 1, .register(register))
        var recover = WireRecover()
        recover.handle = "alice"
        recover.recoveryCode = "7QH2-MXKD-93PA-LC4E"
        recover.accountIdentityKey = alice.account.publicKey.rawRepresentation
        recover.device = deviceKeys
        recover.challengeSignature = register.challengeSignature
        add("Recover a handle with new keys", "recover", requestID: 1, .recover(recover))
        var authenticate = WireAuthenticate()
        authenticate.handle = "alice"
        authenticate.deviceID = 1
        authenticate.signature = register.challengeSignature
        add("Authenticate; the request id needs more than 32 bits", "authenticate", flags: ["LargeRequestId"], requestID: 1 << 40, .authenticate(authenticate))
        var publish = WirePublishPreKeys()
        publish.signedPrekey = signedPreKey
        publish.oneTimePrekeys = [oneTimePreKey]
        publish.lastResortKemPrekey = wire(lastResort)
        publish.oneTimeKemPrekeys = [wire(alice.kemPreKey!)]
        add("PublishPreKeys with a new signed prekey, a last-resort KEM prekey and one one-time prekey of each kind", "publishPrekeys", requestID: 10, .publishPrekeys(publish))
        var fetch = WireFetchPreKeyBundle()
        fetch.handle = "bob"
        add("FetchPreKeyBundle", "fetchPrekeyBundle", requestID: 11, .fetchPrekeyBundle(fetch))
        var outgoing = WireOutgoingEnvelope()
        outgoing.envelopeID = envelopeIDs[0]
        outgoing.recipientHandle = "bob"
        outgoing.recipientDeviceID = 1
        outgoing.ttlSeconds = 3_600
        outgoing.ciphertext = ciphertext
        var submit = WireSubmit()
        submit.envelopes = [outgoing]
        add("Submit one envelope with a one-hour expiry", "submit", requestID: 12, .submit(submit))
        var acknowledge = WireAcknowledge()
        acknowledge.envelopeIds = [envelopeIDs[2]]
        acknowledge.receiptIds = [receiptID]
        add("Acknowledge an envelope and a receipt", "acknowledge", requestID: 13, .acknowledge(acknowledge))
        var seen = WireReportSeen()
        seen.envelopeIds = [envelopeIDs[2], envelopeIDs[1]]
        add("ReportSeen for two envelopes", "reportSeen", requestID: 14, .reportSeen(seen))

        // Conversations (conversations.md 11): their values come from a label of their own, so the frames above keep their bytes.
        let conversation = SeededRandom(label: "\(label)/conversations")
        let unsendToken = conversation.bytes(32), cancelToken = conversation.bytes(32)
        let messageIDs = (0..<3).map { _ in conversation.bytes(16) }
        let reportID = conversation.bytes(16)
        var unsendable = outgoing
        unsendable.envelopeID = messageIDs[0]
        unsendable.urgency = .urgent
        unsendable.unsendTokenHash = ConversationTokens.unsendTokenHash(unsendToken)
        var scheduled = outgoing
        scheduled.envelopeID = messageIDs[1]
        scheduled.group = 1
        scheduled.unsendTokenHash = unsendable.unsendTokenHash
        scheduled.notBeforeMs = time + 86_400_000
        scheduled.cancelTokenHash = ConversationTokens.cancelTokenHash(cancelToken)
        var conversationSubmit = WireSubmit()
        conversationSubmit.envelopes = [unsendable, scheduled]
        add(
            "Submit an envelope with its unsend token's hash and a scheduled one (not_before_ms, cancel_token_hash)", "submit",
            flags: ["Conversations"], requestID: 15, .submit(conversationSubmit))
        var typing = outgoing
        typing.envelopeID = messageIDs[2]
        typing.ttlSeconds = 0
        typing.urgency = .silent
        typing.onlineOnly = true
        var onlineSubmit = WireSubmit()
        onlineSubmit.selectedDevices = true
        onlineSubmit.envelopes = [typing]
        add("Submit an online-only envelope (typing) to selected devices", "submit", flags: ["Conversations"], requestID: 16, .submit(onlineSubmit))
        var held = WireSubmitOutcome()
        held.envelopeID = messageIDs[1]
        held.acceptedAtMs = time
        held.expiresAtMs = time + 86_400_000 + 3_600_000
        held.scheduled = true
        var heldResult = WireSubmitResult()
        heldResult.outcomes = [held]
        add("a scheduled envelope held by the relay", "submitResult", flags: ["Conversations"], requestID: 15, .submitResult(heldResult))
        var onlineEnvelope = envelope
        onlineEnvelope.envelopeID = messageIDs[2]
        onlineEnvelope.expiresAtMs = time
        onlineEnvelope.onlineOnly = true
        var onlineDeliver = WireDeliver()
        onlineDeliver.envelopes = [onlineEnvelope]
        add("an online-only envelope handed to a connected device (never acknowledged)", "deliver", flags: ["Unsolicited", "Conversations"], requestID: 0, .deliver(onlineDeliver))
        var unsend = WireUnsend()
        unsend.unsendToken = unsendToken
        add("Unsend with the message's token", "unsend", flags: ["Conversations"], requestID: 17, .unsend(unsend))
        func unsendOutcome(_ id: Data, _ handle: String, _ device: UInt32, _ state: WireUnsendState) -> WireUnsendOutcome {
            var outcome = WireUnsendOutcome()
            outcome.envelopeID = id
            outcome.recipientHandle = handle
            outcome.recipientDeviceID = device
            outcome.state = state
            return outcome
        }
        var unsendResult = WireUnsendResult()
        unsendResult.outcomes = [
            unsendOutcome(messageIDs[0], "bob", 1, .purged), unsendOutcome(envelopeIDs[0], "bob", 2, .alreadyDelivered),
            unsendOutcome(envelopeIDs[1], "alice", 2, .alreadyExpired),
        ]
        add("the answer to Unsend: one outcome per envelope", "unsendResult", flags: ["Conversations"], requestID: 17, .unsendResult(unsendResult))
        add(
            "Unsend of a token no envelope carries (any more)", "error", flags: ["Conversations"], requestID: 18,
            .error(WireFrame.error(.unknownToken, "unknown token").error))
        var cancel = WireCancelScheduled()
        cancel.cancelToken = cancelToken
        add("CancelScheduled with the cancel token", "cancelScheduled", flags: ["Conversations"], requestID: 19, .cancelScheduled(cancel))
        var cancelled = WireCancelScheduledResult()
        cancelled.cancelled = 2
        add("the answer to CancelScheduled", "cancelScheduledResult", flags: ["Conversations"], requestID: 19, .cancelScheduledResult(cancelled))
        var update = WireUpdateBlockList()
        update.block = ["mallory", "spam.bot"]
        update.unblock = ["eve"]
        add("UpdateBlockList blocking two handles and unblocking one", "updateBlockList", flags: ["Conversations"], requestID: 20, .updateBlockList(update))
        add("FetchBlockList", "fetchBlockList", flags: ["Conversations", "EmptyBody"], requestID: 21, .fetchBlockList(WireFetchBlockList()))
        var blockList = WireBlockList()
        blockList.handles = ["mallory", "spam.bot"]
        add("the block list, ascending", "blockList", flags: ["Conversations"], requestID: 20, .blockList(blockList))
        var reported = WireReportedMessage()
        reported.messageID = messageIDs[0]
        reported.authorHandle = "mallory"
        reported.acceptedAtMs = time
        reported.text = "spam 🥫"
        reported.reported = true
        var abuse = WireAbuseReport()
        abuse.reportedHandle = "mallory"
        abuse.reason = "spam"
        abuse.messages = [reported]
        abuse.createdAtMs = time + 60_000
        let reportBytes = try abuse.serializedData()
        var submitReport = WireSubmitReport()
        submitReport.report = reportBytes
        submitReport.signature = alice.device.privateKey.signature(for: ConversationTokens.reportSignaturePayload(reportBytes))
        add(
            "SubmitReport: an encoded AbuseReport signed by alice's device identity key (conversations.json has its fields)", "submitReport",
            flags: ["Conversations"], requestID: 22, .submitReport(submitReport))
        var reportResult = WireReportResult()
        reportResult.reportID = reportID
        add("the answer to SubmitReport", "reportResult", flags: ["Conversations"], requestID: 22, .reportResult(reportResult))

        // Attachments (attachments.md 4.1, 4.5, 7): a label of their own, so the frames above keep their bytes.
        let attachments = SeededRandom(label: "\(label)/attachments")
        let mediaUnsendToken = attachments.bytes(32)
        let uploadToken = attachments.bytes(32)
        var capabilityRequest = WireRequestUploadCapability()
        capabilityRequest.expiresAtMs = time + 30 * 86_400_000
        capabilityRequest.unsendTokenHash = ConversationTokens.unsendTokenHash(mediaUnsendToken)
        add(
            "RequestUploadCapability with the media message's unsend token hash and the blob's expiry", "requestUploadCapability",
            flags: ["Attachments"], requestID: 23, .requestUploadCapability(capabilityRequest))
        add(
            "RequestUploadCapability with neither (the blob expires at the retention ceiling, no unsend)", "requestUploadCapability",
            flags: ["Attachments", "EmptyBody"], requestID: 24, .requestUploadCapability(WireRequestUploadCapability()))
        var capability = WireUploadCapability()
        // base64url without padding of the 32 token bytes: 43 characters.
        capability.token = uploadToken.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
        capability.uploadPath = "/v1/uploads"
        capability.tokenExpiresAtMs = time + 3_600_000
        capability.blobExpiresAtMs = capabilityRequest.expiresAtMs
        capability.maxBlobBytes = 104_857_600
        capability.quotaBytes = 1_073_741_824
        capability.quotaUsedBytes = 151_600
        add(
            "UploadCapability: the bearer token (43 characters), its expiry, the blob's expiry, the blob limit and the quota", "uploadCapability",
            flags: ["Attachments"], requestID: 23, .uploadCapability(capability))
        var blobsUnsent = WireUnsendResult()
        blobsUnsent.outcomes = [unsendOutcome(messageIDs[0], "bob", 1, .purged)]
        blobsUnsent.blobsDeleted = 1
        add(
            "the answer to an Unsend that also deleted the message's blob (blobs_deleted)", "unsendResult", flags: ["Attachments", "Conversations"],
            requestID: 25, .unsendResult(blobsUnsent))

        let encodeTests = try frames.map { comment, kind, flags, frame in
            VectorTest(
                comment, flags: flags,
                ["bodyKind": .string(kind), "fields": try WireJSON.fields(of: frame), "frame": .hex(FrameCodec.encode(frame))])
        }

        // Decoding failures, each with the wire ErrorCode the relay answers.
        let okFrame = FrameCodec.encode(WireFrame(requestID: 9, body: .ok(WireOk())))
        let fetchFrame = FrameCodec.encode(frames.first { $0.1 == "fetchPrekeyBundle" }!.3)
        func invalid(_ comment: String, _ bytes: Data, _ code: WireErrorCode, requestID: UInt64? = nil, flags: [String]) -> VectorTest {
            var fields: [String: JSONValue] = ["frame": .hex(bytes)]
            if let requestID { fields["errorRequestId"] = .string(String(requestID)) }
            return VectorTest(comment, flags: flags, result: .invalid(VectorErrorRef(code)), fields)
        }
        // Frame{version: 2, request_id: 9, ok: {}}.
        let version2 = Data([0x08, 0x02]) + okFrame.dropFirst(2)
        var decodeTests: [VectorTest] = [
            invalid("not protobuf", Data([0xff, 0xff, 0xff]), .malformedFrame, flags: ["NotProtobuf"]),
            invalid("truncated inside the body", fetchFrame.dropLast(2), .malformedFrame, flags: ["Truncated"]),
            invalid("a field with a length running past the end", Data([0x08, 0x01, 0x9a, 0x01, 0x05, 0x00]), .malformedFrame, flags: ["Truncated"]),
            invalid("version 2 (request id 9 is echoed)", version2, .unsupportedVersion, requestID: 9, flags: ["WrongVersion"]),
            invalid("empty input decodes as version 0", Data(), .unsupportedVersion, requestID: 0, flags: ["WrongVersion"]),
            invalid("no body", Data([0x08, 0x01, 0x10, 0x05]), .unknownFrame, requestID: 5, flags: ["UnknownBody"]),
            invalid(
                "a body kind this version does not know (field 63)", Data([0x08, 0x01, 0x10, 0x05, 0xfa, 0x03, 0x00]), .unknownFrame, requestID: 5,
                flags: ["UnknownBody"]),
        ]
        let unknownExtra = okFrame + Data([0xf8, 0x06, 0x01])  // field 111, varint 1
        // JSON has no place for unknown fields, so fields shows the known ones.
        let extraFrame = try WireFrame(serializedBytes: unknownExtra)
        decodeTests.append(
            VectorTest(
                "an unknown field next to a known body is skipped", flags: ["UnknownField"],
                ["frame": .hex(unknownExtra), "fields": try WireJSON.fields(of: extraFrame)]))

        let signature = alice.device.privateKey.signature(for: authentication)
        let otherHandle = SignedPayload.authentication(nonce: nonce, handle: "mallory")
        let authenticationTests = [
            VectorTest(
                "the device identity key signs label || 0x00 || nonce || handle",
                [
                    "nonce": .hex(nonce), "handle": .string("alice"), "payload": .hex(authentication),
                    "deviceIdentitySeed": .hex(alice.device.privateKey.seed), "deviceIdentityKey": .hex(alice.device.publicKey.rawRepresentation),
                    "signature": .hex(signature),
                ]),
            VectorTest(
                "a signature over another handle does not verify", flags: ["WrongHandle"],
                result: .invalid(VectorErrorRef(FlitzCryptoError.Code.authenticationFailed)),
                [
                    "nonce": .hex(nonce), "handle": .string("alice"), "payload": .hex(authentication),
                    "deviceIdentityKey": .hex(alice.device.publicKey.rawRepresentation),
                    "signature": .hex(alice.device.privateKey.signature(for: otherHandle)),
                ]),
        ]

        return VectorFileBuilder(
            topic: "frames",
            description: "Relay wire frames (flitz.wire.v1.Frame, one per WebSocket binary message). fields is the frame in the "
                + "protobuf JSON mapping (lowerCamelCase names, enum value names, 64-bit integers as decimal strings, default values "
                + "omitted) except that bytes fields are lowercase hex instead of base64; frame is its canonical encoding. Keys come "
                + "from the party alice (randomLabel \"\(label)/alice\"); nonce (32), three envelope ids (16), a receipt id (16) and "
                + "a ciphertext (48) are successive draws of SeededRandom(label: \"\(label)\"); the frames flagged Conversations draw "
                + "an unsend token (32), a cancel token (32), three envelope ids (16) and a report id (16) from SeededRandom(label: "
                + "\"\(label)/conversations\"); the frames flagged Attachments draw an unsend token (32) and an upload token (32) from "
                + "SeededRandom(label: \"\(label)/attachments\"). The decode group gives bytes that do "
                + "not decode and the wire ErrorCode a relay answers with; errorRequestId is the request id that Error frame echoes.",
            specification: "protocol/flitz_wire.proto; protocol/relay.md \"Transport and framing\", \"Errors\", \"Signed payloads\"",
            notes: [
                "Unsolicited": "Sent by the relay on its own, with request id 0.",
                "EmptyBody": "A body message without fields encodes as a zero-length field.",
                "Optional": "An optional sub-message left out.",
                "LargeRequestId": "A request id above 2^32 (uint64 varint; a decimal string in JSON).",
                "NotProtobuf": "The bytes are not a protobuf message.",
                "Truncated": "Bytes cut short or a length past the end.",
                "WrongVersion": "Frame.version is not 1.",
                "UnknownBody": "No body, or a body field this version does not know.",
                "UnknownField": "An unknown field beside a known body is skipped (protobuf rules).",
                "WrongHandle": "The signed payload names another handle.",
                "Conversations": "A frame or field of conversations.md section 11 (unsend, scheduled and online-only envelopes, block list, reports).",
                "Attachments": "A frame or field of attachments.md section 7 (upload capability, blobs deleted by an unsend).",
            ],
            seeds: [label, "\(label)/alice", "\(label)/conversations", "\(label)/attachments"],
            groups: [
                VectorGroup(type: "encode", fields: ["alice": alice.json()], tests: encodeTests),
                VectorGroup(type: "decode", tests: decodeTests),
                VectorGroup(type: "authenticationPayload", tests: authenticationTests),
            ])
    }
}
