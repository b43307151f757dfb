import Foundation
import SwiftProtobuf

/// The plaintext of one message (`protocol/flitz_session.proto`, `Content`). Later issues add body kinds.
public struct MessageContent: Hashable, Sendable {
    /// What the message carries.
    public enum Body: Hashable, Sendable {
        /// UTF-8 text.
        case text(String)
        /// The sender could not decrypt the envelope with this 16-byte id (empty when none in particular)
        /// and started this fresh session (`protocol/crypto.md`, "Session reset").
        case sessionReset(envelopeID: Data)
        /// A copy of a text message this account sent to `destinationHandle` (`SentTranscript`,
        /// `protocol/crypto.md` section 7): sent by the sending device to its own account's other devices so they
        /// show the message in their history. The content's message id and time are those of the sent message.
        /// Accept it only from a device of the receiver's own account.
        case sentTranscript(destinationHandle: String, text: String)
        /// A body kind this version does not know (a newer peer's): kept, not dropped
        /// (`protocol/relay.md`, "Versioning"). Carries the whole encoded `Content` as it arrived, which
        /// `encoded()` returns unchanged, so nothing of it is lost; this version never composes one.
        case unsupported(encodedContent: Data)
    }

    /// 16-byte message id, chosen at random by the sender; names the message across all its envelopes.
    public let messageID: Data
    /// Sender's clock when composed, in milliseconds since the Unix epoch (informational only).
    public let sentAtMilliseconds: Int64
    /// The body.
    public let body: Body

    /// Creates content.
    public init(messageID: Data, sentAtMilliseconds: Int64, body: Body) {
        self.messageID = messageID
        self.sentAtMilliseconds = sentAtMilliseconds
        self.body = body
    }

    /// Encoded `Content`, zero-padded so its length is a multiple of 64 bytes (`ProtocolConstants.contentPaddingBlock`);
    /// for an `.unsupported` body, the bytes that arrived, unchanged.
    public func encoded() -> Data {
        if case .unsupported(let original) = body { return original }
        var content = ProtoContent()
        content.messageID = messageID
        content.sentAtMs = sentAtMilliseconds
        switch body {
        case .text(let text):
            var t = ProtoText()
            t.body = text
            content.body = .text(t)
        case .sessionReset(let envelopeID):
            var reset = ProtoSessionReset()
            reset.envelopeID = envelopeID
            content.body = .sessionReset(reset)
        case .sentTranscript(let destinationHandle, let text):
            var transcript = ProtoSentTranscript()
            transcript.destinationHandle = destinationHandle
            var t = ProtoText()
            t.body = text
            transcript.body = .text(t)
            content.body = .sentTranscript(transcript)
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
    /// - Throws: `FlitzProtocolError.malformedMessage` when it does not parse, has a message id that is
    ///   not 16 bytes, has no body at all, a session reset whose envelope id is neither empty nor 16 bytes, or a
    ///   sent transcript whose destination is not a handle (3-32 bytes of `a-z 0-9 _ .`) or that has no body at all.
    ///   A body of a kind this version does not know (also inside a sent transcript) decodes as `.unsupported`.
    public init(decoding bytes: Data) throws(FlitzProtocolError) {
        guard let content = try? ProtoContent(serializedBytes: bytes) else {
            throw FlitzProtocolError(.malformedMessage, "content does not parse")
        }
        guard content.messageID.count == 16 else { throw FlitzProtocolError(.malformedMessage, "message id must be 16 bytes") }
        switch content.body {
        case .text(let text): body = .text(text.body)
        case .sessionReset(let reset):
            guard reset.envelopeID.isEmpty || reset.envelopeID.count == 16 else {
                throw FlitzProtocolError(.malformedMessage, "session reset envelope id must be 16 bytes")
            }
            body = .sessionReset(envelopeID: reset.envelopeID)
        case .sentTranscript(let transcript):
            guard LinkGrant.isValidHandle(transcript.destinationHandle) else {
                throw FlitzProtocolError(.malformedMessage, "sent transcript destination is not a handle")
            }
            switch transcript.body {
            case .text(let text): body = .sentTranscript(destinationHandle: transcript.destinationHandle, text: text.body)
            case nil:
                // A transcript of a body kind a newer version added: kept whole, like an unknown body.
                guard !transcript.unknownFields.data.isEmpty else { throw FlitzProtocolError(.malformedMessage, "sent transcript has no body") }
                body = .unsupported(encodedContent: Data(bytes))
            }
        case nil:
            // An unknown oneof field lands in unknownFields; no field at all is malformed.
            guard !content.unknownFields.data.isEmpty else { throw FlitzProtocolError(.malformedMessage, "content has no body") }
            body = .unsupported(encodedContent: Data(bytes))
        }
        messageID = content.messageID
        sentAtMilliseconds = content.sentAtMs
    }
}
