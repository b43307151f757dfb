import FlitzCrypto
import FlitzProtocol
import Foundation

/// `content.json`: `Content` encoding with padding, and decoding (`protocol/crypto.md` §7, "Content").
///
/// Group `encode`: `messageId`, `sentAtMs`, `text` / `textUtf8`, `unpaddedLength`, `paddingLength`, `encoded`.
/// Group `decode`: `encoded`; valid tests give the decoded `messageId`, `sentAtMs` and `body` (`text`, the
/// default, with `textUtf8`; `sessionReset` with `envelopeId`; `sentTranscript` with `destinationHandle` and
/// `textUtf8`; or `unsupported`).
enum ContentTopic {
    static let topic = VectorTopic(name: "content", verify: verify)

    static func verify(_ vector: VectorCase) throws -> VectorOutcome {
        let test = vector.test
        switch try vector.groupType() {
        case "encode":
            let id = try test.hex("messageId"), sentAt = try test.int("sentAtMs"), encoded = try test.hex("encoded")
            let text = try utf8Text(test)
            // Independently of MessageContent: the padding rule of crypto.md §7 on the protobuf message.
            var proto = ProtoContent()
            proto.messageID = id
            proto.sentAtMs = Int64(sentAt)
            var body = ProtoText()
            body.body = text
            proto.body = .text(body)
            let unpadded = try proto.serializedData()
            try check(unpadded.count, try test.int("unpaddedLength"), "unpaddedLength")
            let n = unpadded.count
            let k = n % 64 == 0 ? 0 : ((62 - n % 64 + 64) % 64 == 0 ? 64 : (62 - n % 64 + 64) % 64)
            try check(k, try test.int("paddingLength"), "paddingLength")
            if k > 0 { proto.padding = Data(count: k) }
            try check(try proto.serializedData(), encoded, "encoded (independent padding)")
            try require(encoded.count % ProtocolConstants.contentPaddingBlock == 0, "encoded length \(encoded.count) is not a multiple of 64")
            let content = MessageContent(messageID: id, sentAtMilliseconds: Int64(sentAt), body: .text(TextMessage(text)))
            try check(content.encoded(), encoded, "MessageContent.encoded()")
            try check(try MessageContent(decoding: encoded), content, "MessageContent(decoding:)")
            return .valid
        case "decode":
            let encoded = try test.hex("encoded")
            return try VectorOutcome.capture {
                let content = try MessageContent(decoding: encoded)
                try check(content.messageID, try test.hex("messageId"), "messageId")
                try check(Int(content.sentAtMilliseconds), try test.int("sentAtMs"), "sentAtMs")
                switch (test.has("body") ? try test.string("body") : "text", content.body) {
                case ("text", .text(let text)): try check(text.body, try utf8Text(test), "text")
                case ("sessionReset", .sessionReset(let envelopeID)): try check(envelopeID, try test.hex("envelopeId"), "envelopeId")
                case ("sentTranscript", .sentTranscript(let transcript)):
                    try check(transcript.destinationHandle, try test.string("destinationHandle"), "destinationHandle")
                    try check(transcript.body.textMessage?.body ?? "", try utf8Text(test), "text")
                    try check(content.encoded(), encoded, "MessageContent.encoded() of the decoded transcript")
                case ("unsupported", .unsupported): break
                case (let expected, let body): throw VectorCheckFailure("body is \(body), expected \(expected)")
                }
            }
        case let type:
            throw VectorCheckFailure.unknownGroup(type, in: "content")
        }
    }

    /// The text from `textUtf8`, checked against `text` when present.
    static func utf8Text(_ test: JSONValue) throws -> String {
        let bytes = try test.hex("textUtf8")
        guard let text = String(validating: bytes, as: UTF8.self) else { throw VectorCheckFailure("textUtf8 is not UTF-8") }
        if test.has("text") { try check(try test.string("text"), text, "text and textUtf8") }
        return text
    }
}
