import FlitzCrypto
import FlitzProtocol
import Foundation
import SwiftProtobuf
import Testing

/// `Content.sent_transcript` (crypto.md section 7): the copy of a sent message for the sender's other devices.
struct SentTranscriptTests {
    let id = Data(0..<16)

    @Test func roundTripsPaddedWithTheMessagesIDAndTime() throws {
        let content = MessageContent(messageID: id, sentAtMilliseconds: 1_767_225_600_000, body: .sentTranscript(SentTranscript(destinationHandle: "bob", body: .text("hi bob"))))
        let encoded = content.encoded()
        #expect(encoded.count % 64 == 0)
        #expect(try MessageContent(decoding: encoded) == content)
        // Field 6 of Content, a SentTranscript with the handle (1) and a Text (2).
        let proto = try ProtoContent(serializedBytes: encoded)
        guard case .sentTranscript(let transcript) = proto.body else {
            Issue.record("not a sent transcript: \(proto)")
            return
        }
        #expect(transcript.destinationHandle == "bob")
        #expect(transcript.text.body == "hi bob")
        #expect(proto.messageID == id)
    }

    func transcriptBytes(_ build: (inout ProtoSentTranscript) -> Void) throws -> Data {
        var transcript = ProtoSentTranscript()
        build(&transcript)
        var content = ProtoContent()
        content.messageID = id
        content.body = .sentTranscript(transcript)
        return try content.serializedData()
    }

    @Test func refusesABadDestinationOrAMissingBody() throws {
        for handle in ["", "Bob", "b", String(repeating: "b", count: 33), "bob!"] {
            let bytes = try transcriptBytes {
                $0.destinationHandle = handle
                $0.text = ProtoText()
            }
            #expect(throws: FlitzProtocolError.self, "\(handle)") { try MessageContent(decoding: bytes) }
        }
        let noBody = try transcriptBytes { $0.destinationHandle = "bob" }
        #expect(throws: FlitzProtocolError(.malformedMessage, "sent transcript has no body")) { try MessageContent(decoding: noBody) }
    }

    @Test func aTranscriptOfANewerBodyKindIsKeptAsUnsupported() throws {
        // Field 15 inside SentTranscript: a body kind a later version adds.
        var bytes = try transcriptBytes { $0.destinationHandle = "bob" }
        let inner = Data([0x0a, 0x03]) + Data("bob".utf8) + Data([0x7a, 0x00])
        bytes = Data([0x0a, 0x10]) + id + Data([0x32, UInt8(inner.count)]) + inner
        let content = try MessageContent(decoding: bytes)
        #expect(content.body == .unsupported(encodedContent: bytes))
        #expect(content.encoded() == bytes)
    }
}
