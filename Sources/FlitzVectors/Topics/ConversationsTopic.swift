import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import SwiftProtobuf

/// `conversations.json`: conversation content (`protocol/conversations.md` sections 2, 3, 5, 8, 10).
///
/// Group `encode`: `fields` (the unpadded `Content` in the protobuf JSON mapping, bytes as hex), `body`,
/// `unpaddedLength`, `paddingLength`, `encoded`. Group `decode`: `encoded` (and `fields` when JSON can show it);
/// valid tests give `body` and `fields` of the decoded content, invalid ones `malformedMessage`. Group
/// `messageRef`: `authorHandle`, `messageId`, `originalText(Utf8)`, `hashInput`, `contentHash`. Group `tokenHash`:
/// `kind`, `token`, `hashInput`, `hash`. Group `reportSignature`: `report` (fields), `reportBytes`, `payload`,
/// `signature` under the group's `deviceIdentityKey` (valid tests also give `deviceIdentitySeed`).
///
/// Independently of the implementation: encodings come from the fields through SwiftProtobuf with this file's
/// padding rule; the Swift values are built from the fields by this file's own mapping; hashes are SHA-256
/// (libsodium) of preimages assembled here from the labels of the specification.
enum ConversationsTopic {
    static let topic = VectorTopic(name: "conversations", verify: verify)

    /// The labels of `protocol/conversations.md`, written out here rather than taken from the implementation.
    static let messageHashLabel = "FlitzMessageHash-v1"
    static let unsendTokenLabel = "FlitzUnsendToken-v1"
    static let cancelTokenLabel = "FlitzCancelToken-v1"
    static let abuseReportLabel = "FlitzAbuseReport-v1"

    static func verify(_ vector: VectorCase) throws -> VectorOutcome {
        let test = vector.test
        switch try vector.groupType() {
        case "encode":
            return try verifyEncode(test, build: messageContent(from:), protoOf: proto(of:))
        case "decode":
            let encoded = try test.hex("encoded")
            var given: ProtoContent?
            if test.has("fields") {
                let proto = try ContentJSON.content(from: try test.object("fields"))
                try check(try proto.serializedData(), encoded, "encoded (from fields)")
                given = proto
            }
            return try VectorOutcome.capture {
                let decoded = try MessageContent(decoding: encoded)
                try check(bodyName(decoded.body), try test.string("body"), "body")
                try check(try ContentJSON.fields(of: try proto(of: decoded)), try test.object("fields"), "fields of the decoded content")
                if let given { try check(try messageContent(from: given), decoded, "content built from fields") }
            }
        case "messageRef":
            let author = try test.string("authorHandle"), id = try test.hex("messageId")
            let text = try ContentTopic.utf8Text(test.renamingText(from: "originalText"))
            try check(try test.string("label"), messageHashLabel, "label")
            var input = Data(messageHashLabel.utf8) + Data([0])
            try require(author.utf8.count <= 255, "author too long for u8(len)")
            input.append(UInt8(author.utf8.count))
            input.append(contentsOf: author.utf8)
            input.append(id)
            input.append(contentsOf: text.utf8)
            try check(input, try test.hex("hashInput"), "hashInput")
            let hash = try test.hex("contentHash")
            try check(SHA256.hash(input), hash, "contentHash (SHA-256 of hashInput)")
            try check(MessageRef.contentHash(author: author, messageID: id, originalText: text), hash, "MessageRef.contentHash")
            let reference = MessageRef(authorHandle: author, messageID: id, originalText: text)
            try check(reference.contentHash, hash, "MessageRef(authorHandle:messageID:originalText:)")
            try require(reference.matches(authorHandle: author, messageID: id, originalText: text), "matches(...) is false for its own message")
            try require(!reference.matches(authorHandle: author, messageID: id, originalText: text + "."), "matches(...) is true for another text")
            return .valid
        case "tokenHash":
            let kind = try test.string("kind"), token = try test.hex("token"), hash = try test.hex("hash")
            let label = switch kind {
            case "unsend": unsendTokenLabel
            case "cancel": cancelTokenLabel
            default: throw VectorCheckFailure("kind must be unsend or cancel, is \(kind)")
            }
            try check(try test.string("label"), label, "label")
            let input = Data(label.utf8) + Data([0]) + token
            try check(input, try test.hex("hashInput"), "hashInput")
            try check(SHA256.hash(input), hash, "hash (SHA-256 of hashInput)")
            let implementation = kind == "unsend" ? ConversationTokens.unsendTokenHash(token) : ConversationTokens.cancelTokenHash(token)
            try check(implementation, hash, "ConversationTokens.\(kind)TokenHash")
            return .valid
        case "reportSignature":
            let report = try WireJSON.message(WireAbuseReport.self, from: try test.object("report"))
            let bytes = try test.hex("reportBytes"), payload = try test.hex("payload"), signature = try test.hex("signature")
            try check(try report.serializedData(), bytes, "reportBytes (from report)")
            try check(try test.string("label"), abuseReportLabel, "label")
            try check(Data(abuseReportLabel.utf8) + Data([0]) + bytes, payload, "payload = label || 00 || report")
            try check(ConversationTokens.reportSignaturePayload(bytes), payload, "ConversationTokens.reportSignaturePayload")
            let key = try Ed25519PublicKey(rawRepresentation: try vector.group.hex("deviceIdentityKey"))
            if test.has("deviceIdentitySeed") {
                let seed = try Ed25519PrivateKey(seed: SecretBytes(try test.hex("deviceIdentitySeed")))
                try check(seed.publicKey, key, "deviceIdentityKey from deviceIdentitySeed")
                try check(seed.signature(for: payload), signature, "signature (RFC 8032 signatures are deterministic)")
            }
            return try VectorOutcome.capture { try key.verify(signature, for: payload) }
        case let type:
            throw VectorCheckFailure.unknownGroup(type, in: "conversations")
        }
    }

    /// An `encode` vector of a content topic: the fields encode (with independently computed padding) to the
    /// given bytes, `MessageContent` built from them encodes the same, and decoding gives the content and fields
    /// back. `build` and `protoOf` are the topic's own mapping between the proto and `MessageContent`.
    static func verifyEncode(
        _ test: JSONValue, build: (ProtoContent) throws -> MessageContent, protoOf: (MessageContent) throws -> ProtoContent
    ) throws -> VectorOutcome {
        let fields = try test.object("fields"), encoded = try test.hex("encoded")
        var proto = try ContentJSON.content(from: fields)
        try require(proto.padding.isEmpty, "fields must not carry padding")
        let n = try proto.serializedData().count
        try check(n, try test.int("unpaddedLength"), "unpaddedLength")
        let k = n % 64 == 0 ? 0 : ((62 - n % 64 + 64) % 64 == 0 ? 64 : (62 - n % 64 + 64) % 64)
        try check(k, try test.int("paddingLength"), "paddingLength")
        if k > 0 { proto.padding = Data(count: k) }
        try check(try proto.serializedData(), encoded, "encoded (from fields, independent padding)")
        let built = try build(proto)
        try check(built.encoded(), encoded, "MessageContent.encoded() of the content built from fields")
        let decoded = try MessageContent(decoding: encoded)
        try check(decoded, built, "MessageContent(decoding:)")
        try check(bodyName(decoded.body), try test.string("body"), "body")
        try check(try ContentJSON.fields(of: try protoOf(decoded)), fields, "fields of the decoded content")
        return .valid
    }

    static func bodyName(_ body: MessageContent.Body) -> String {
        switch body {
        case .text: "text"
        case .sessionReset: "sessionReset"
        case .sentTranscript: "sentTranscript"
        case .reaction: "reaction"
        case .edit: "edit"
        case .deleteForEveryone: "deleteForEveryone"
        case .seen: "seen"
        case .typing: "typing"
        case .presence: "presence"
        case .disappearingTimer: "disappearingTimer"
        case .call: "call"
        case .unsupported: "unsupported"
        }
    }

    // MARK: this verifier's own mapping between the protobuf messages and the Swift API

    static func messageContent(from proto: ProtoContent) throws -> MessageContent {
        let body: MessageContent.Body
        switch proto.body {
        case .text(let text): body = .text(self.text(text))
        case .sessionReset(let reset): body = .sessionReset(envelopeID: reset.envelopeID)
        case .sentTranscript(let transcript):
            let inner: MessageContent.Body
            switch transcript.body {
            case .text(let text): inner = .text(self.text(text))
            case .reaction(let reaction): inner = .reaction(Reaction(target: reference(reaction.target), emoji: reaction.emoji))
            case .edit(let edit): inner = .edit(Edit(target: reference(edit.target), body: edit.body, version: edit.version))
            case .deleteForEveryone(let delete): inner = .deleteForEveryone(target: reference(delete.target))
            case .disappearingTimer(let timer): inner = .disappearingTimer(DisappearingTimer(seconds: timer.seconds, version: timer.version))
            case nil: throw VectorCheckFailure("a transcript without a body has no Swift value")
            }
            body = .sentTranscript(SentTranscript(destinationHandle: transcript.destinationHandle, body: inner, unsendToken: transcript.unsendToken))
        case .reaction(let reaction): body = .reaction(Reaction(target: reference(reaction.target), emoji: reaction.emoji))
        case .edit(let edit): body = .edit(Edit(target: reference(edit.target), body: edit.body, version: edit.version))
        case .deleteForEveryone(let delete): body = .deleteForEveryone(target: reference(delete.target))
        case .seen(let seen): body = .seen(targets: seen.targets.map(reference))
        case .typing(let typing): body = .typing(typing.typing)
        case .presence(let presence): body = .presence(online: presence.online)
        case .disappearingTimer(let timer): body = .disappearingTimer(DisappearingTimer(seconds: timer.seconds, version: timer.version))
        case .call: throw VectorCheckFailure("call messages are the call topic's (vectors/call.json)")
        case nil: throw VectorCheckFailure("content without a body has no Swift value")
        }
        return MessageContent(messageID: proto.messageID, sentAtMilliseconds: proto.sentAtMs, body: body, singleUseSession: proto.singleUseSession)
    }

    static func reference(_ proto: ProtoMessageRef) -> MessageRef {
        MessageRef(authorHandle: proto.authorHandle, messageID: proto.messageID, contentHash: proto.contentHash)
    }

    static func text(_ proto: ProtoText) -> TextMessage {
        TextMessage(
            proto.body, quote: proto.hasQuote ? Quote(target: reference(proto.quote.target), preview: proto.quote.preview) : nil,
            forwardCount: proto.forwardCount, noForward: proto.noForward, expireAfterSeconds: proto.hasExpireAfterSeconds ? proto.expireAfterSeconds : nil)
    }

    /// The unpadded `Content` of `content` (not for `.unsupported`).
    static func proto(of content: MessageContent) throws -> ProtoContent {
        var proto = ProtoContent()
        proto.messageID = content.messageID
        proto.sentAtMs = content.sentAtMilliseconds
        proto.singleUseSession = content.singleUseSession
        switch content.body {
        case .text(let text): proto.body = .text(self.proto(of: text))
        case .sessionReset(let envelopeID):
            var reset = ProtoSessionReset()
            reset.envelopeID = envelopeID
            proto.body = .sessionReset(reset)
        case .sentTranscript(let transcript):
            var out = ProtoSentTranscript()
            out.destinationHandle = transcript.destinationHandle
            out.unsendToken = transcript.unsendToken
            switch try self.proto(of: MessageContent(messageID: Data(), sentAtMilliseconds: 0, body: transcript.body)).body {
            case .text(let text)?: out.body = .text(text)
            case .reaction(let reaction)?: out.body = .reaction(reaction)
            case .edit(let edit)?: out.body = .edit(edit)
            case .deleteForEveryone(let delete)?: out.body = .deleteForEveryone(delete)
            case .disappearingTimer(let timer)?: out.body = .disappearingTimer(timer)
            default: throw VectorCheckFailure("a transcript of \(bodyName(transcript.body))")
            }
            proto.body = .sentTranscript(out)
        case .reaction(let reaction):
            var out = ProtoReaction()
            out.target = self.proto(of: reaction.target)
            out.emoji = reaction.emoji
            proto.body = .reaction(out)
        case .edit(let edit):
            var out = ProtoEdit()
            out.target = self.proto(of: edit.target)
            out.body = edit.body
            out.version = edit.version
            proto.body = .edit(out)
        case .deleteForEveryone(let target):
            var out = ProtoDeleteForEveryone()
            out.target = self.proto(of: target)
            proto.body = .deleteForEveryone(out)
        case .seen(let targets):
            var out = ProtoSeen()
            out.targets = targets.map { self.proto(of: $0) }
            proto.body = .seen(out)
        case .typing(let typing):
            var out = ProtoTyping()
            out.typing = typing
            proto.body = .typing(out)
        case .presence(let online):
            var out = ProtoPresence()
            out.online = online
            proto.body = .presence(out)
        case .disappearingTimer(let timer):
            var out = ProtoDisappearingTimer()
            out.seconds = timer.seconds
            out.version = timer.version
            proto.body = .disappearingTimer(out)
        case .call:
            throw VectorCheckFailure("call messages are the call topic's (vectors/call.json)")
        case .unsupported:
            throw VectorCheckFailure("an unsupported body has no fields")
        }
        return proto
    }

    static func proto(of reference: MessageRef) -> ProtoMessageRef {
        var proto = ProtoMessageRef()
        proto.authorHandle = reference.authorHandle
        proto.messageID = reference.messageID
        proto.contentHash = reference.contentHash
        return proto
    }

    static func proto(of text: TextMessage) -> ProtoText {
        var proto = ProtoText()
        proto.body = text.body
        if let quote = text.quote {
            var out = ProtoQuote()
            out.target = self.proto(of: quote.target)
            out.preview = quote.preview
            proto.quote = out
        }
        proto.forwardCount = text.forwardCount
        proto.noForward = text.noForward
        if let seconds = text.expireAfterSeconds { proto.expireAfterSeconds = seconds }
        return proto
    }
}

extension JSONValue {
    /// This object with `<name>` / `<name>Utf8` copied to `text` / `textUtf8`, for `ContentTopic.utf8Text`.
    func renamingText(from name: String) -> JSONValue {
        guard case .object(var members) = self else { return self }
        members["text"] = members[name]
        members["textUtf8"] = members["\(name)Utf8"]
        return .object(members)
    }
}
