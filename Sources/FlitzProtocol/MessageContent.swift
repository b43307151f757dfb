import FlitzCrypto
import Foundation
import SwiftProtobuf

/// Names one message across devices (`protocol/conversations.md` section 3, `MessageRef`): who wrote it, its id,
/// and the hash of what its author first sent, so a mutation applies only to the exact message its author sent.
public struct MessageRef: Hashable, Sendable {
    /// The author's handle (3-32 bytes of `a-z 0-9 _ .`).
    public var authorHandle: String
    /// The message's 16-byte id.
    public var messageID: Data
    /// 32-byte content hash (`MessageRef.contentHash(author:messageID:originalText:)`).
    public var contentHash: Data

    /// A reference with a given hash (as received).
    public init(authorHandle: String, messageID: Data, contentHash: Data) {
        self.authorHandle = authorHandle
        self.messageID = messageID
        self.contentHash = contentHash
    }

    /// The reference to a message whose first version's text is `originalText`.
    public init(authorHandle: String, messageID: Data, originalText: String) {
        self.init(
            authorHandle: authorHandle, messageID: messageID,
            contentHash: Self.contentHash(author: authorHandle, messageID: messageID, originalText: originalText))
    }

    /// SHA-256("FlitzMessageHash-v1" ‖ 0x00 ‖ u8(len author) ‖ author ‖ message_id ‖ UTF-8 original text), 32 bytes
    /// (`protocol/conversations.md` section 3). `author` is at most 32 bytes, so its length fits one byte.
    public static func contentHash(author: String, messageID: Data, originalText: String) -> Data {
        var input = Data("FlitzMessageHash-v1".utf8)
        input.append(0)
        input.append(UInt8(truncatingIfNeeded: author.utf8.count))
        input.append(contentsOf: author.utf8)
        input.append(messageID)
        input.append(contentsOf: originalText.utf8)
        return SHA256.hash(input)
    }

    /// Whether this reference's hash is the one of a message with that author, id and original text.
    public func matches(authorHandle: String, messageID: Data, originalText: String) -> Bool {
        self.authorHandle == authorHandle && self.messageID == messageID
            && ConstantTime.equals(contentHash, Self.contentHash(author: authorHandle, messageID: messageID, originalText: originalText))
    }
}

/// A reply's quote (`Quote`): the target and a preview of at most 100 Unicode scalars of its text.
public struct Quote: Hashable, Sendable {
    /// The message replied to.
    public var target: MessageRef
    /// At most `ConversationLimits.quotePreviewScalars` Unicode scalars.
    public var preview: String

    /// Creates a quote, cutting `preview` to its first 100 Unicode scalars.
    public init(target: MessageRef, preview: String) {
        self.target = target
        self.preview = String(String.UnicodeScalarView(preview.unicodeScalars.prefix(ConversationLimits.quotePreviewScalars)))
    }
}

/// A text message (`Text`): the body plus reply, forwarding and disappearing fields (`protocol/conversations.md`).
public struct TextMessage: Hashable, Sendable, ExpressibleByStringLiteral {
    /// UTF-8 text (at most `FlitzClient.maxTextBytes` in the reference client).
    public var body: String
    /// Set on a reply.
    public var quote: Quote?
    /// 0 for an original; a forward's is the forwarded message's count + 1.
    public var forwardCount: UInt32
    /// The sender asks that it not be forwarded (honest-client rule, section 7).
    public var noForward: Bool
    /// Disappearing override in seconds: nil = the conversation's timer, 0 = never (section 8).
    public var expireAfterSeconds: UInt32?
    /// A media message's file (`protocol/attachments.md` section 3); `body` is then its caption.
    public var attachment: AttachmentPointer?
    /// A shared location; never together with `attachment`.
    public var location: Location?

    /// Creates a text message.
    public init(
        _ body: String, quote: Quote? = nil, forwardCount: UInt32 = 0, noForward: Bool = false, expireAfterSeconds: UInt32? = nil,
        attachment: AttachmentPointer? = nil, location: Location? = nil
    ) {
        self.body = body
        self.quote = quote
        self.forwardCount = forwardCount
        self.noForward = noForward
        self.expireAfterSeconds = expireAfterSeconds
        self.attachment = attachment
        self.location = location
    }

    /// A plain text message.
    public init(stringLiteral value: String) { self.init(value) }
}

/// A reaction (`Reaction`): adds or replaces (non-empty emoji) or removes (empty) the sender's one reaction.
public struct Reaction: Hashable, Sendable {
    /// The message reacted to.
    public var target: MessageRef
    /// Empty to remove; else an emoji (`isValidEmoji`).
    public var emoji: String

    /// Creates a reaction.
    public init(target: MessageRef, emoji: String) {
        self.target = target
        self.emoji = emoji
    }

    /// Whether `emoji` is acceptable as a non-empty reaction (section 2): 1-32 bytes of UTF-8 with at least one
    /// non-ASCII scalar and no whitespace or control character (so "👍", "❤️" and "1️⃣", not "ok").
    public static func isValidEmoji(_ emoji: String) -> Bool {
        guard (1...ConversationLimits.maxEmojiBytes).contains(emoji.utf8.count) else { return false }
        return emoji.unicodeScalars.contains { !$0.isASCII }
            && !emoji.unicodeScalars.contains { $0.properties.isWhitespace || $0.properties.generalCategory == .control }
    }
}

/// An edit (`Edit`): a new text for a message the sender wrote; versions 2…10 (section 4).
public struct Edit: Hashable, Sendable {
    /// The edited message (its author must be the edit's sender).
    public var target: MessageRef
    /// The new text (non-empty).
    public var body: String
    /// 2…`ConversationLimits.maxVersions`; the original is version 1.
    public var version: UInt32

    /// Creates an edit.
    public init(target: MessageRef, body: String, version: UInt32) {
        self.target = target
        self.body = body
        self.version = version
    }
}

/// The conversation's disappearing timer (`DisappearingTimer`, section 8).
public struct DisappearingTimer: Hashable, Sendable {
    /// 0 (off) or `ConversationLimits.disappearingRange` seconds.
    public var seconds: UInt32
    /// ≥ 1: one more than the highest version the sender had seen.
    public var version: UInt64

    /// Creates a timer setting.
    public init(seconds: UInt32, version: UInt64) {
        self.seconds = seconds
        self.version = version
    }
}

/// A copy of something this account sent, for its own other devices (`SentTranscript`, section 2).
public struct SentTranscript: Hashable, Sendable {
    /// The handle it was sent to.
    public var destinationHandle: String
    /// What was sent: `.text`, `.reaction`, `.edit`, `.deleteForEveryone` or `.disappearingTimer`.
    public var body: MessageContent.Body
    /// With `.text`: the message's 32-byte unsend token; else empty.
    public var unsendToken: Data

    /// Creates a transcript.
    public init(destinationHandle: String, body: MessageContent.Body, unsendToken: Data = Data()) {
        self.destinationHandle = destinationHandle
        self.body = body
        self.unsendToken = unsendToken
    }
}

/// Limits of conversation content (`protocol/conversations.md` section 12).
public enum ConversationLimits {
    /// Longest quote preview, in Unicode scalars.
    public static let quotePreviewScalars = 100
    /// Longest reaction emoji, in UTF-8 bytes.
    public static let maxEmojiBytes = 32
    /// Most versions of a message (the original and 9 edits).
    public static let maxVersions: UInt32 = 10
    /// Edit and delete-for-everyone window, in milliseconds of relay time (24 hours).
    public static let mutationWindowMilliseconds: Int64 = 86_400_000
    /// Most targets of one `Seen`.
    public static let maxSeenTargets = 100
    /// Disappearing timer range in seconds (0 is "off").
    public static let disappearingRange: ClosedRange<UInt32> = 30...31_536_000
    /// Length of an unsend or cancel token, in bytes.
    public static let tokenLength = 32
}

/// The plaintext of one message (`protocol/flitz_session.proto`, `Content`; `protocol/conversations.md`).
public struct MessageContent: Hashable, Sendable {
    /// What the message carries.
    public indirect enum Body: Hashable, Sendable {
        /// A text message (with its reply, forwarding and disappearing fields).
        case text(TextMessage)
        /// The sender could not decrypt the envelope with this 16-byte id (empty when none in particular)
        /// and started this fresh session (`protocol/crypto.md`, "Session reset").
        case sessionReset(envelopeID: Data)
        /// A copy of something this account sent (`SentTranscript`, `protocol/crypto.md` section 7): sent by the
        /// sending device to its own account's other devices. The content's message id and time are those of the
        /// sent message. Accept it only from a device of the receiver's own account.
        case sentTranscript(SentTranscript)
        /// Adds, replaces or removes the sender's reaction (section 4).
        case reaction(Reaction)
        /// A new version of a message the sender wrote (section 4).
        case edit(Edit)
        /// Deletes a message the sender wrote, for everyone (section 4).
        case deleteForEveryone(target: MessageRef)
        /// A sealed seen receipt (from a peer) or a read sync (from an own device), 1-100 targets (section 5).
        case seen(targets: [MessageRef])
        /// Typing started (true) or stopped (false); online-only (section 6).
        case typing(Bool)
        /// Presence heartbeat: online now (true) or going offline (false); online-only (section 6).
        case presence(online: Bool)
        /// The conversation's disappearing timer (section 8).
        case disappearingTimer(DisappearingTimer)
        /// A call signal's plaintext (protocol/calls.md 4): valid only inside a call signal, never an envelope.
        case call(CallMessage)
        /// A body kind this version does not know (a newer peer's): kept, not dropped
        /// (`protocol/relay.md`, "Versioning"). Carries the whole encoded `Content` as it arrived, which
        /// `encoded()` returns unchanged, so nothing of it is lost; this version never composes one.
        case unsupported(encodedContent: Data)

        /// The body of a text message, or of a transcript of one.
        public var textMessage: TextMessage? {
            switch self {
            case .text(let text): text
            case .sentTranscript(let transcript): transcript.body.textMessage
            default: nil
            }
        }
    }

    /// 16-byte message id, chosen at random by the sender; names the message across all its envelopes.
    public let messageID: Data
    /// Sender's clock when composed, in milliseconds since the Unix epoch (informational only).
    public let sentAtMilliseconds: Int64
    /// The body.
    public let body: Body
    /// Scheduled send: carried in a single-use session the receiver does not keep (section 8).
    public let singleUseSession: Bool

    /// Creates content.
    public init(messageID: Data, sentAtMilliseconds: Int64, body: Body, singleUseSession: Bool = false) {
        self.messageID = messageID
        self.sentAtMilliseconds = sentAtMilliseconds
        self.body = body
        self.singleUseSession = singleUseSession
    }

    /// Encoded `Content`, zero-padded so its length is a multiple of 64 bytes (`ProtocolConstants.contentPaddingBlock`);
    /// for an `.unsupported` body, the bytes that arrived, unchanged.
    public func encoded() -> Data {
        if case .unsupported(let original) = body { return original }
        var content = ProtoContent()
        content.messageID = messageID
        content.sentAtMs = sentAtMilliseconds
        content.singleUseSession = singleUseSession
        switch body {
        case .text(let text): content.body = .text(Self.proto(text))
        case .sessionReset(let envelopeID):
            var reset = ProtoSessionReset()
            reset.envelopeID = envelopeID
            content.body = .sessionReset(reset)
        case .sentTranscript(let transcript):
            var proto = ProtoSentTranscript()
            proto.destinationHandle = transcript.destinationHandle
            proto.unsendToken = transcript.unsendToken
            switch transcript.body {
            case .text(let text): proto.body = .text(Self.proto(text))
            case .reaction(let reaction): proto.body = .reaction(Self.proto(reaction))
            case .edit(let edit): proto.body = .edit(Self.proto(edit))
            case .deleteForEveryone(let target): proto.body = .deleteForEveryone(Self.protoDelete(target))
            case .disappearingTimer(let timer): proto.body = .disappearingTimer(Self.proto(timer))
            default: preconditionFailure("a sent transcript carries text, a reaction, an edit, a delete or a timer")
            }
            content.body = .sentTranscript(proto)
        case .reaction(let reaction): content.body = .reaction(Self.proto(reaction))
        case .edit(let edit): content.body = .edit(Self.proto(edit))
        case .deleteForEveryone(let target): content.body = .deleteForEveryone(Self.protoDelete(target))
        case .seen(let targets):
            var seen = ProtoSeen()
            seen.targets = targets.map(Self.proto)
            content.body = .seen(seen)
        case .typing(let typing):
            var proto = ProtoTyping()
            proto.typing = typing
            content.body = .typing(proto)
        case .presence(let online):
            var proto = ProtoPresence()
            proto.online = online
            content.body = .presence(proto)
        case .disappearingTimer(let timer): content.body = .disappearingTimer(Self.proto(timer))
        case .call(let call): content.body = .call(call.proto)
        case .unsupported:
            preconditionFailure("returned above")
        }
        var encoded = try! content.serializedData()
        var padding = 0
        while encoded.count % ProtocolConstants.contentPaddingBlock != 0 {
            padding += 1
            content.padding = Data(count: padding)
            encoded = try! content.serializedData()
        }
        return encoded
    }

    /// Decodes content.
    /// - Throws: `FlitzProtocolError.malformedMessage` when it does not parse, has a message id that is not 16
    ///   bytes, has no body at all, or breaks a rule of `protocol/crypto.md` section 7 or
    ///   `protocol/conversations.md` section 2 (references, quotes, emoji, edit versions, seen targets, timers,
    ///   transcripts, tokens, single-use sessions). A body of a kind this version does not know (also inside a
    ///   sent transcript) decodes as `.unsupported`.
    public init(decoding bytes: Data) throws(FlitzProtocolError) {
        guard let content = try? ProtoContent(serializedBytes: bytes) else {
            throw FlitzProtocolError(.malformedMessage, "content does not parse")
        }
        guard content.messageID.count == 16 else { throw FlitzProtocolError(.malformedMessage, "message id must be 16 bytes") }
        switch content.body {
        case .text(let text): body = .text(try Self.text(text))
        case .sessionReset(let reset):
            guard reset.envelopeID.isEmpty || reset.envelopeID.count == 16 else {
                throw FlitzProtocolError(.malformedMessage, "session reset envelope id must be 16 bytes")
            }
            body = .sessionReset(envelopeID: reset.envelopeID)
        case .sentTranscript(let transcript):
            guard LinkGrant.isValidHandle(transcript.destinationHandle) else {
                throw FlitzProtocolError(.malformedMessage, "sent transcript destination is not a handle")
            }
            guard transcript.unsendToken.isEmpty || transcript.unsendToken.count == ConversationLimits.tokenLength else {
                throw FlitzProtocolError(.malformedMessage, "sent transcript unsend token must be 32 bytes")
            }
            let inner: Body
            switch transcript.body {
            case .text(let text): inner = .text(try Self.text(text))
            case .reaction(let reaction): inner = .reaction(try Self.reaction(reaction))
            case .edit(let edit): inner = .edit(try Self.edit(edit))
            case .deleteForEveryone(let delete): inner = .deleteForEveryone(target: try Self.reference(delete.target, present: delete.hasTarget))
            case .disappearingTimer(let timer): inner = .disappearingTimer(try Self.timer(timer))
            case nil:
                // A transcript of a body kind a newer version added: kept whole, like an unknown body.
                guard !transcript.unknownFields.data.isEmpty else { throw FlitzProtocolError(.malformedMessage, "sent transcript has no body") }
                // A later kind is not a text, so it cannot travel in a single-use session (section 2).
                guard !content.singleUseSession else {
                    throw FlitzProtocolError(.malformedMessage, "only a text (or its transcript) travels in a single-use session")
                }
                body = .unsupported(encodedContent: Data(bytes))
                messageID = content.messageID
                sentAtMilliseconds = content.sentAtMs
                singleUseSession = content.singleUseSession
                return
            }
            if case .text = inner {} else if !transcript.unsendToken.isEmpty {
                throw FlitzProtocolError(.malformedMessage, "only a transcript of a text carries an unsend token")
            }
            body = .sentTranscript(SentTranscript(destinationHandle: transcript.destinationHandle, body: inner, unsendToken: transcript.unsendToken))
        case .reaction(let reaction): body = .reaction(try Self.reaction(reaction))
        case .edit(let edit): body = .edit(try Self.edit(edit))
        case .deleteForEveryone(let delete): body = .deleteForEveryone(target: try Self.reference(delete.target, present: delete.hasTarget))
        case .seen(let seen):
            guard (1...ConversationLimits.maxSeenTargets).contains(seen.targets.count) else {
                throw FlitzProtocolError(.malformedMessage, "seen must name 1 to \(ConversationLimits.maxSeenTargets) messages")
            }
            body = .seen(targets: try seen.targets.map { (target) throws(FlitzProtocolError) in try Self.reference(target, present: true) })
        case .typing(let typing): body = .typing(typing.typing)
        case .presence(let presence): body = .presence(online: presence.online)
        case .disappearingTimer(let timer): body = .disappearingTimer(try Self.timer(timer))
        case .call(let call): body = .call(try CallMessage(proto: call))
        case nil:
            // An unknown oneof field lands in unknownFields; no field at all is malformed.
            guard !content.unknownFields.data.isEmpty else { throw FlitzProtocolError(.malformedMessage, "content has no body") }
            body = .unsupported(encodedContent: Data(bytes))
        }
        if content.singleUseSession, body.textMessage == nil {
            throw FlitzProtocolError(.malformedMessage, "only a text (or its transcript) travels in a single-use session")
        }
        messageID = content.messageID
        sentAtMilliseconds = content.sentAtMs
        singleUseSession = content.singleUseSession
    }

    // MARK: proto conversion

    private static func proto(_ reference: MessageRef) -> ProtoMessageRef {
        var proto = ProtoMessageRef()
        proto.authorHandle = reference.authorHandle
        proto.messageID = reference.messageID
        proto.contentHash = reference.contentHash
        return proto
    }

    private static func proto(_ text: TextMessage) -> ProtoText {
        var proto = ProtoText()
        proto.body = text.body
        if let quote = text.quote {
            var q = ProtoQuote()
            q.target = Self.proto(quote.target)
            q.preview = quote.preview
            proto.quote = q
        }
        proto.forwardCount = text.forwardCount
        proto.noForward = text.noForward
        if let seconds = text.expireAfterSeconds { proto.expireAfterSeconds = seconds }
        if let attachment = text.attachment { proto.attachment = Self.proto(attachment) }
        if let location = text.location {
            var l = ProtoLocation()
            l.latitude = location.latitude
            l.longitude = location.longitude
            l.label = location.label
            proto.location = l
        }
        return proto
    }

    private static let attachmentKinds: [AttachmentPointer.Kind: ProtoAttachmentKind] = [
        .image: .image, .video: .video, .audio: .audio, .document: .document,
    ]

    private static func proto(_ pointer: AttachmentPointer) -> ProtoAttachmentPointer {
        var proto = ProtoAttachmentPointer()
        proto.blobID = pointer.blobID
        proto.key = pointer.key.unsafeData
        proto.plaintextSize = pointer.plaintextSize
        proto.ciphertextSize = pointer.ciphertextSize
        proto.chunkSize = UInt32(AttachmentLayout.chunkSize)
        proto.contentType = pointer.contentType
        proto.fileName = pointer.fileName
        proto.ciphertextSha256 = pointer.ciphertextSHA256
        proto.kind = attachmentKinds[pointer.kind]!
        proto.voiceNote = pointer.voiceNote
        proto.width = pointer.width
        proto.height = pointer.height
        proto.durationMs = pointer.durationMilliseconds
        proto.thumbnail = pointer.thumbnail
        proto.blobExpiresAtMs = pointer.blobExpiresAtMilliseconds
        return proto
    }

    private static func pointer(_ proto: ProtoAttachmentPointer) throws(FlitzProtocolError) -> AttachmentPointer {
        guard proto.blobID.count == 16 else { throw FlitzProtocolError(.malformedMessage, "attachment blob id must be 16 bytes") }
        guard proto.key.count == AttachmentKeys.keyLength else { throw FlitzProtocolError(.malformedMessage, "attachment key must be 32 bytes") }
        guard proto.ciphertextSha256.count == 32 else { throw FlitzProtocolError(.malformedMessage, "attachment hash must be 32 bytes") }
        guard proto.chunkSize == UInt32(AttachmentLayout.chunkSize) else { throw FlitzProtocolError(.malformedMessage, "attachment chunk size must be 65536") }
        guard proto.plaintextSize <= AttachmentLayout.maxPlaintextSize else {
            throw FlitzProtocolError(.malformedMessage, "attachment plaintext size over 2^40 bytes")
        }
        guard proto.ciphertextSize == AttachmentLayout(plaintextSize: proto.plaintextSize).ciphertextSize else {
            throw FlitzProtocolError(.malformedMessage, "attachment ciphertext size does not match its plaintext size")
        }
        guard let kind = attachmentKinds.first(where: { $0.value == proto.kind })?.key else {
            throw FlitzProtocolError(.malformedMessage, "attachment kind is unspecified or unknown")
        }
        guard proto.contentType.utf8.count <= AttachmentPointer.maxContentTypeBytes else {
            throw FlitzProtocolError(.malformedMessage, "attachment content type over \(AttachmentPointer.maxContentTypeBytes) bytes")
        }
        guard AttachmentPointer.isValidFileName(proto.fileName) else {
            throw FlitzProtocolError(.malformedMessage, "attachment file name is over 255 bytes or contains '/', '\\' or a control character")
        }
        guard proto.thumbnail.count <= AttachmentPointer.maxThumbnailBytes else {
            throw FlitzProtocolError(.malformedMessage, "attachment thumbnail over \(AttachmentPointer.maxThumbnailBytes) bytes")
        }
        return AttachmentPointer(
            blobID: proto.blobID, key: SecretBytes(proto.key), plaintextSize: proto.plaintextSize, ciphertextSize: proto.ciphertextSize,
            contentType: proto.contentType, fileName: proto.fileName, ciphertextSHA256: proto.ciphertextSha256, kind: kind,
            voiceNote: proto.voiceNote, width: proto.width, height: proto.height, durationMilliseconds: proto.durationMs,
            thumbnail: proto.thumbnail, blobExpiresAtMilliseconds: proto.blobExpiresAtMs)
    }

    private static func proto(_ reaction: Reaction) -> ProtoReaction {
        var proto = ProtoReaction()
        proto.target = Self.proto(reaction.target)
        proto.emoji = reaction.emoji
        return proto
    }

    private static func proto(_ edit: Edit) -> ProtoEdit {
        var proto = ProtoEdit()
        proto.target = Self.proto(edit.target)
        proto.body = edit.body
        proto.version = edit.version
        return proto
    }

    private static func protoDelete(_ target: MessageRef) -> ProtoDeleteForEveryone {
        var proto = ProtoDeleteForEveryone()
        proto.target = Self.proto(target)
        return proto
    }

    private static func proto(_ timer: DisappearingTimer) -> ProtoDisappearingTimer {
        var proto = ProtoDisappearingTimer()
        proto.seconds = timer.seconds
        proto.version = timer.version
        return proto
    }

    private static func reference(_ proto: ProtoMessageRef, present: Bool) throws(FlitzProtocolError) -> MessageRef {
        guard present else { throw FlitzProtocolError(.malformedMessage, "a message reference is missing") }
        guard LinkGrant.isValidHandle(proto.authorHandle) else { throw FlitzProtocolError(.malformedMessage, "message reference author is not a handle") }
        guard proto.messageID.count == 16 else { throw FlitzProtocolError(.malformedMessage, "message reference id must be 16 bytes") }
        guard proto.contentHash.count == 32 else { throw FlitzProtocolError(.malformedMessage, "message reference hash must be 32 bytes") }
        return MessageRef(authorHandle: proto.authorHandle, messageID: proto.messageID, contentHash: proto.contentHash)
    }

    private static func text(_ proto: ProtoText) throws(FlitzProtocolError) -> TextMessage {
        var quote: Quote?
        if proto.hasQuote {
            let target = try reference(proto.quote.target, present: proto.quote.hasTarget)
            guard proto.quote.preview.unicodeScalars.count <= ConversationLimits.quotePreviewScalars else {
                throw FlitzProtocolError(.malformedMessage, "quote preview over \(ConversationLimits.quotePreviewScalars) characters")
            }
            quote = Quote(target: target, preview: proto.quote.preview)
        }
        guard !(proto.hasAttachment && proto.hasLocation) else {
            throw FlitzProtocolError(.malformedMessage, "a text carries both an attachment and a location")
        }
        var location: Location?
        if proto.hasLocation {
            location = Location(latitude: proto.location.latitude, longitude: proto.location.longitude, label: proto.location.label)
            guard location!.isValid else {
                throw FlitzProtocolError(.malformedMessage, "location is out of range, not finite, or its label is over \(Location.maxLabelBytes) bytes")
            }
        }
        return TextMessage(
            proto.body, quote: quote, forwardCount: proto.forwardCount, noForward: proto.noForward,
            expireAfterSeconds: proto.hasExpireAfterSeconds ? proto.expireAfterSeconds : nil,
            attachment: proto.hasAttachment ? try pointer(proto.attachment) : nil, location: location)
    }

    private static func reaction(_ proto: ProtoReaction) throws(FlitzProtocolError) -> Reaction {
        let target = try reference(proto.target, present: proto.hasTarget)
        guard proto.emoji.isEmpty || Reaction.isValidEmoji(proto.emoji) else {
            throw FlitzProtocolError(.malformedMessage, "reaction is not an emoji of at most \(ConversationLimits.maxEmojiBytes) bytes")
        }
        return Reaction(target: target, emoji: proto.emoji)
    }

    private static func edit(_ proto: ProtoEdit) throws(FlitzProtocolError) -> Edit {
        let target = try reference(proto.target, present: proto.hasTarget)
        guard (2...ConversationLimits.maxVersions).contains(proto.version) else {
            throw FlitzProtocolError(.malformedMessage, "edit version must be 2 to \(ConversationLimits.maxVersions)")
        }
        guard !proto.body.isEmpty else { throw FlitzProtocolError(.malformedMessage, "edit has no text") }
        return Edit(target: target, body: proto.body, version: proto.version)
    }

    private static func timer(_ proto: ProtoDisappearingTimer) throws(FlitzProtocolError) -> DisappearingTimer {
        guard proto.version >= 1 else { throw FlitzProtocolError(.malformedMessage, "disappearing timer version must be at least 1") }
        guard proto.seconds == 0 || ConversationLimits.disappearingRange.contains(proto.seconds) else {
            throw FlitzProtocolError(.malformedMessage, "disappearing timer must be off or 30 seconds to 365 days")
        }
        return DisappearingTimer(seconds: proto.seconds, version: proto.version)
    }
}
