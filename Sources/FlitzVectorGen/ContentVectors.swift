import FlitzCrypto
import FlitzProtocol
import FlitzVectors
import Foundation

/// `vectors/content.json`: `Content` encodings with every padding case, and decodings.
enum ContentVectors {
    static let label = "flitz-vectors/content"
    /// 2026-01-01T00:00:00Z in milliseconds.
    static let sentAt: Int64 = 1_767_225_600_000

    static func unpadded(_ id: Data, _ sentAt: Int64, _ text: String) -> Data {
        var proto = ProtoContent()
        proto.messageID = id
        proto.sentAtMs = sentAt
        var body = ProtoText()
        body.body = text
        proto.body = .text(body)
        return try! proto.serializedData()
    }

    static func make() throws -> VectorFileBuilder {
        let random = SeededRandom(label: label)
        func encodeCase(_ comment: String, id: Data, sentAt: Int64, text: String, flags: [String]) -> VectorTest {
            let content = MessageContent(messageID: id, sentAtMilliseconds: sentAt, body: .text(TextMessage(text)))
            let encoded = content.encoded()
            let n = unpadded(id, sentAt, text).count
            // Padding field: tag 0x7a, one length byte, k zero bytes.
            let k = encoded.count == n ? 0 : encoded.count - n - 2
            return VectorTest(
                comment, flags: flags,
                [
                    "messageId": .hex(id), "sentAtMs": .int(Int(sentAt)), "text": .string(text), "textUtf8": .hex(Data(text.utf8)),
                    "unpaddedLength": .int(n), "paddingLength": .int(k), "encoded": .hex(encoded),
                ])
        }
        /// The shortest run of "x" whose unpadded encoding has length ≡ residue (mod 64).
        func text(forResidue residue: Int, id: Data) -> String {
            var text = ""
            while unpadded(id, sentAt, text).count % 64 != residue { text += "x" }
            return text
        }

        var encode: [VectorTest] = []
        encode.append(
            encodeCase(
                "the example of crypto.md section 7", id: Data(0..<16), sentAt: 1, text: "hi", flags: ["SpecExample"]))
        for (residue, flag, what) in [
            (0, "NoPadding", "an encoding already a multiple of 64 bytes gets no padding field"),
            (61, "MinimalPadding", "n = 61 mod 64: one padding byte"),
            (62, "FullBlockPadding", "n = 62 mod 64: k = 0 is impossible (the field costs 2 bytes), so 64 bytes"),
            (63, "Padding63", "n = 63 mod 64: 63 padding bytes"),
        ] {
            let id = random.bytes(16)
            encode.append(encodeCase(what, id: id, sentAt: sentAt, text: text(forResidue: residue, id: id), flags: [flag]))
        }
        encode.append(encodeCase("empty text: the body is present and empty", id: random.bytes(16), sentAt: sentAt, text: "", flags: ["EmptyText"]))
        encode.append(
            encodeCase(
                "non-ASCII text is UTF-8 (length counts bytes)", id: random.bytes(16), sentAt: sentAt + 1,
                text: "Grüße aus Zürich 👋 — café?", flags: ["NonASCII"]))
        encode.append(
            encodeCase("sent_at_ms = 0 is a default value and omitted", id: random.bytes(16), sentAt: 0, text: "zero time", flags: ["DefaultOmitted"]))
        encode.append(
            encodeCase(
                "a negative sent_at_ms is a 10-byte varint", id: random.bytes(16), sentAt: -1, text: "before 1970", flags: ["NegativeTime"]))
        encode.append(
            encodeCase(
                "a 300-byte text: two-byte length varints, several blocks", id: random.bytes(16), sentAt: sentAt,
                text: String(repeating: "Flitz! ", count: 42) + "123456", flags: ["MultiBlock"]))

        // Decoding: padding is ignored; everything else malformed is refused.
        let id = random.bytes(16)
        let base = unpadded(id, sentAt, "hello")
        func decodeValid(_ comment: String, _ bytes: Data, flags: [String]) -> VectorTest {
            VectorTest(
                comment, flags: flags,
                ["encoded": .hex(bytes), "messageId": .hex(id), "sentAtMs": .int(Int(sentAt)), "text": .string("hello"), "textUtf8": .hex(Data("hello".utf8))])
        }
        func decodeInvalid(_ comment: String, _ bytes: Data, flags: [String]) -> VectorTest {
            VectorTest(comment, flags: flags, result: .invalid(VectorErrorRef(FlitzProtocolError.Code.malformedMessage)), ["encoded": .hex(bytes)])
        }
        func padding(_ bytes: Data) -> Data { Data([0x7a, UInt8(bytes.count)]) + bytes }
        let k = 64 - (base.count + 2) % 64
        var decode: [VectorTest] = [
            decodeValid("correctly padded", base + padding(Data(count: k)), flags: []),
            decodeValid("padding bytes that are not zero are ignored", base + padding(Data(repeating: 0xa5, count: k)), flags: ["PaddingIgnored"]),
            decodeValid("no padding at all (length not a multiple of 64) is accepted", base, flags: ["PaddingIgnored"]),
            decodeValid("100 bytes of padding (more than a block) are accepted", base + padding(Data(count: 100)), flags: ["PaddingIgnored"]),
            decodeValid("an unknown field (number 14, varint) is skipped", base + Data([0x70, 0x05]), flags: ["UnknownField"]),
        ]
        // A session reset (crypto.md section 3d) and a body kind a later version adds (kept, not refused).
        let failedEnvelope = random.bytes(16)
        let reset = MessageContent(messageID: id, sentAtMilliseconds: sentAt, body: .sessionReset(envelopeID: failedEnvelope)).encoded()
        decode.append(
            VectorTest(
                "a session reset naming the envelope that failed", flags: ["SessionReset"],
                ["encoded": .hex(reset), "messageId": .hex(id), "sentAtMs": .int(Int(sentAt)), "body": .string("sessionReset"), "envelopeId": .hex(failedEnvelope)]))
        decode.append(
            VectorTest(
                "a body kind this version does not know (field 5) decodes as unsupported and is kept", flags: ["UnknownBody"],
                [
                    "encoded": .hex(Data([0x0a, 0x10]) + id + Data([0x2a, 0x02, 0x0a, 0x00])), "messageId": .hex(id), "sentAtMs": .int(0),
                    "body": .string("unsupported"),
                ]))
        // A sent transcript (field 6): the copy of a sent message for the sender's other devices.
        let transcript = MessageContent(messageID: id, sentAtMilliseconds: sentAt, body: .sentTranscript(SentTranscript(destinationHandle: "bob", body: .text("hello bob"))))
        decode.append(
            VectorTest(
                "a sent transcript: the text sent to bob, for the sender's other devices", flags: ["SentTranscript"],
                [
                    "encoded": .hex(transcript.encoded()), "messageId": .hex(id), "sentAtMs": .int(Int(sentAt)), "body": .string("sentTranscript"),
                    "destinationHandle": .string("bob"), "text": .string("hello bob"), "textUtf8": .hex(Data("hello bob".utf8)),
                ]))
        func transcriptBytes(_ inner: Data) -> Data { Data([0x0a, 0x10]) + id + Data([0x32, UInt8(inner.count)]) + inner }
        let bobHandle = Data([0x0a, 0x03]) + Data("bob".utf8)
        let newerTranscript = transcriptBytes(bobHandle + Data([0x7a, 0x00]))
        decode.append(
            VectorTest(
                "a sent transcript of a body kind this version does not know (its field 15) decodes as unsupported and is kept",
                flags: ["SentTranscript", "UnknownBody"],
                ["encoded": .hex(newerTranscript), "messageId": .hex(id), "sentAtMs": .int(0), "body": .string("unsupported")]))
        decode += [
            decodeInvalid("empty input: no message id", Data(), flags: ["MissingField"]),
            decodeInvalid("not protobuf", Data([0xff, 0xff, 0xff, 0xff]), flags: ["NotProtobuf"]),
            decodeInvalid("truncated inside the text", base.prefix(base.count - 2), flags: ["Truncated"]),
            decodeInvalid("message id of 15 bytes", unpadded(id.prefix(15), sentAt, "hello"), flags: ["BadLength"]),
            decodeInvalid("message id of 17 bytes", unpadded(id + Data([0]), sentAt, "hello"), flags: ["BadLength"]),
            decodeInvalid("no message id", unpadded(Data(), sentAt, "hello"), flags: ["MissingField"]),
            decodeInvalid(
                "no body", Data([0x0a, 0x10]) + id + Data([0x7a, 0x2e]) + Data(count: 46), flags: ["MissingField"]),
            decodeInvalid(
                "a session reset whose envelope id is 5 bytes", Data([0x0a, 0x10]) + id + Data([0x22, 0x07, 0x0a, 0x05, 1, 2, 3, 4, 5]),
                flags: ["SessionReset", "BadLength"]),
            decodeInvalid(
                "a sent transcript with no body", transcriptBytes(bobHandle), flags: ["SentTranscript", "MissingField"]),
            decodeInvalid(
                "a sent transcript whose destination is not a handle (upper case)",
                transcriptBytes(Data([0x0a, 0x03]) + Data("Bob".utf8) + Data([0x12, 0x03, 0x0a, 0x01, 0x61])), flags: ["SentTranscript", "BadHandle"]),
            decodeInvalid(
                "a sent transcript with no destination", transcriptBytes(Data([0x12, 0x03, 0x0a, 0x01, 0x61])),
                flags: ["SentTranscript", "MissingField"]),
            decodeInvalid(
                "text that is not UTF-8", Data([0x0a, 0x10]) + id + Data([0x1a, 0x04, 0x0a, 0x02, 0xff, 0xfe]), flags: ["InvalidUTF8"]),
            decodeInvalid(
                "message_id with wire type varint instead of length-delimited", Data([0x08, 0x05, 0x1a, 0x03, 0x0a, 0x01, 0x61]),
                flags: ["WrongWireType"]),
        ]
        return VectorFileBuilder(
            topic: "content",
            description: "Content, the plaintext of a ratchet message: encode (messageId, sentAtMs, text) without padding (length n), "
                + "or a session_reset (field 4) or a sent_transcript (field 6), then add padding (field 15) of k zero bytes, the smallest k >= 1 with (n + 2 + k) % 64 == 0, unless n % 64 == 0. "
                + "Decoders ignore padding. Message ids are successive 16-byte draws of SeededRandom(label: \"\(label)\") "
                + "(the spec example uses 000102...0f). There is no size limit in Content itself (see README, \"Not covered\").",
            specification: "protocol/crypto.md section 7, \"Content\"; flitz_session.proto",
            notes: [
                "SpecExample": "The worked example in the specification.",
                "NoPadding": "n is a multiple of 64: no padding field.",
                "MinimalPadding": "One byte of padding.",
                "FullBlockPadding": "n = 62 mod 64 needs a whole 64-byte padding.",
                "Padding63": "n = 63 mod 64 needs 63 bytes of padding.",
                "EmptyText": "The text body is present but empty.",
                "NonASCII": "Multi-byte UTF-8 text.",
                "DefaultOmitted": "A proto3 default value is not encoded.",
                "NegativeTime": "A negative int64 takes a 10-byte varint.",
                "MultiBlock": "Lengths over 127 take two-byte varints; the result spans several 64-byte blocks.",
                "PaddingIgnored": "The specification says decoders ignore padding: its length and contents are not checked.",
                "UnknownField": "Unknown fields are skipped (protobuf rules).",
                "MissingField": "A required part (message id or body) is missing.",
                "NotProtobuf": "The bytes are not a protobuf message.",
                "Truncated": "Valid bytes cut short.",
                "BadLength": "The message id is not 16 bytes.",
                "UnknownBody": "A body kind added by a later version: decoded as unsupported, kept for a newer version.",
                "SessionReset": "A SessionReset body (crypto.md section 3d): an envelope id of 16 bytes, or empty.",
                "SentTranscript": "A SentTranscript body (field 6): a destination handle and the sent message's body.",
                "BadHandle": "A handle that is not 3-32 bytes of a-z 0-9 _ . (relay.md, \"Limits\").",
                "InvalidUTF8": "A string field that is not UTF-8.",
                "WrongWireType": "A known field number with the wrong wire type.",
            ],
            seeds: [label],
            groups: [VectorGroup(type: "encode", tests: encode), VectorGroup(type: "decode", tests: decode)])
    }
}
