import FlitzCrypto
import FlitzProtocol
import Foundation
import SwiftProtobuf
import Testing

/// The content kinds of `protocol/conversations.md` section 2: round trips of every kind, and each decoding rule
/// refusing its input with `malformedMessage` and a message that names the rule.
struct ConversationContentTests {
    let id = Data(0..<16)
    let hello = MessageRef(authorHandle: "alice", messageID: Data(repeating: 0xa1, count: 16), originalText: "Hello Bob!")
    let reply = MessageRef(authorHandle: "bob", messageID: Data(repeating: 0xb0, count: 16), originalText: "Grüße 👋")
    let token = Data(repeating: 0x5e, count: 32)

    // MARK: round trips

    var everyBody: [(MessageContent.Body, Bool)] {
        let quote = Quote(target: hello, preview: "Hello Bob!")
        let bodies: [MessageContent.Body] = [
            .text("plain"),
            .text(TextMessage("a reply", quote: quote)),
            .text(TextMessage("forwarded", forwardCount: 2, noForward: true)),
            .text(TextMessage("never disappears", expireAfterSeconds: 0)),
            .text(TextMessage("every field", quote: quote, forwardCount: 1, noForward: true, expireAfterSeconds: 3_600)),
            .reaction(Reaction(target: hello, emoji: "👍")),
            .reaction(Reaction(target: hello, emoji: "")),
            .edit(Edit(target: hello, body: "Hello, Bob!", version: 2)),
            .edit(Edit(target: hello, body: "last", version: 10)),
            .deleteForEveryone(target: reply),
            .seen(targets: [hello]),
            .seen(targets: [hello, reply]),
            .typing(true), .typing(false),
            .presence(online: true), .presence(online: false),
            .disappearingTimer(DisappearingTimer(seconds: 0, version: 1)),
            .disappearingTimer(DisappearingTimer(seconds: 31_536_000, version: .max)),
            .sentTranscript(SentTranscript(destinationHandle: "bob", body: .text(TextMessage("with token", quote: quote)), unsendToken: token)),
            .sentTranscript(SentTranscript(destinationHandle: "bob", body: .text("without token"))),
            .sentTranscript(SentTranscript(destinationHandle: "bob", body: .reaction(Reaction(target: reply, emoji: "❤️")))),
            .sentTranscript(SentTranscript(destinationHandle: "bob", body: .edit(Edit(target: hello, body: "v2", version: 2)))),
            .sentTranscript(SentTranscript(destinationHandle: "bob", body: .deleteForEveryone(target: hello))),
            .sentTranscript(SentTranscript(destinationHandle: "bob", body: .disappearingTimer(DisappearingTimer(seconds: 30, version: 2)))),
        ]
        return bodies.map { ($0, false) } + [
            (.text("scheduled"), true),
            (.sentTranscript(SentTranscript(destinationHandle: "bob", body: .text("scheduled"), unsendToken: token)), true),
        ]
    }

    @Test func everyKindRoundTripsPadded() throws {
        for (body, singleUse) in everyBody {
            let content = MessageContent(messageID: id, sentAtMilliseconds: 1_767_225_600_000, body: body, singleUseSession: singleUse)
            let encoded = content.encoded()
            #expect(encoded.count % 64 == 0, "\(body)")
            #expect(try MessageContent(decoding: encoded) == content, "\(body)")
        }
    }

    @Test func expireAfterZeroIsNotTheSameAsAbsent() throws {
        let never = MessageContent(messageID: id, sentAtMilliseconds: 1, body: .text(TextMessage("x", expireAfterSeconds: 0)))
        let timer = MessageContent(messageID: id, sentAtMilliseconds: 1, body: .text(TextMessage("x")))
        #expect(never.encoded() != timer.encoded())
        #expect(try MessageContent(decoding: never.encoded()).body.textMessage?.expireAfterSeconds == 0)
        #expect(try MessageContent(decoding: timer.encoded()).body.textMessage?.expireAfterSeconds == nil)
    }

    @Test func quoteCutsItsPreviewToOneHundredScalars() {
        let quote = Quote(target: hello, preview: String(repeating: "e\u{301}", count: 60))
        #expect(quote.preview.unicodeScalars.count == 100)
        #expect(Quote(target: hello, preview: "short").preview == "short")
    }

    @Test func contentHashFollowsItsDefinition() {
        let messageID = Data(0..<16)
        var input = Data("FlitzMessageHash-v1".utf8) + Data([0, 5]) + Data("alice".utf8) + messageID
        input.append(contentsOf: "hi".utf8)
        let reference = MessageRef(authorHandle: "alice", messageID: messageID, originalText: "hi")
        #expect(reference.contentHash == SHA256.hash(input))
        #expect(reference.matches(authorHandle: "alice", messageID: messageID, originalText: "hi"))
        #expect(!reference.matches(authorHandle: "alice", messageID: messageID, originalText: "hi!"))
        #expect(!reference.matches(authorHandle: "alicf", messageID: messageID, originalText: "hi"))
        #expect(!reference.matches(authorHandle: "alice", messageID: Data(1..<17), originalText: "hi"))
        // Texts are hashed as bytes: NFC and NFD spellings differ.
        #expect(MessageRef.contentHash(author: "a.b", messageID: messageID, originalText: "caf\u{e9}")
            != MessageRef.contentHash(author: "a.b", messageID: messageID, originalText: "cafe\u{301}"))
    }

    @Test func emojiRule() {
        for good in ["👍", "❤️", "1️⃣", "👋🏽", "🏳️‍🌈", "👨‍👩‍👧‍👦", "★", String(repeating: "👍", count: 8)] {
            #expect(Reaction.isValidEmoji(good), "\(good)")
        }
        for bad in ["", "ok", ":-)", "👍 ", "👍\n", "👍\u{1b}", "\u{85}", "\u{a0}", "\u{3000}", String(repeating: "👍", count: 8) + "!"] {
            #expect(!Reaction.isValidEmoji(bad), "\(bad.unicodeScalars.map { String($0.value, radix: 16) })")
        }
    }

    // MARK: malformed content

    func ref(_ reference: MessageRef, _ change: (inout ProtoMessageRef) -> Void = { _ in }) -> ProtoMessageRef {
        var proto = ProtoMessageRef()
        proto.authorHandle = reference.authorHandle
        proto.messageID = reference.messageID
        proto.contentHash = reference.contentHash
        change(&proto)
        return proto
    }

    func bytes(singleUse: Bool = false, _ body: ProtoContent.OneOf_Body?) throws -> Data {
        var content = ProtoContent()
        content.messageID = id
        content.sentAtMs = 1
        content.body = body
        content.singleUseSession = singleUse
        return try content.serializedData()
    }

    func reaction(_ target: ProtoMessageRef?, _ emoji: String = "👍") -> ProtoReaction {
        var reaction = ProtoReaction()
        if let target { reaction.target = target }
        reaction.emoji = emoji
        return reaction
    }

    func edit(_ target: ProtoMessageRef?, _ body: String, _ version: UInt32) -> ProtoEdit {
        var edit = ProtoEdit()
        if let target { edit.target = target }
        edit.body = body
        edit.version = version
        return edit
    }

    func timer(_ seconds: UInt32, _ version: UInt64) -> ProtoDisappearingTimer {
        var timer = ProtoDisappearingTimer()
        timer.seconds = seconds
        timer.version = version
        return timer
    }

    func transcript(_ body: ProtoSentTranscript.OneOf_Body?, token: Data = Data()) -> ProtoContent.OneOf_Body {
        var transcript = ProtoSentTranscript()
        transcript.destinationHandle = "bob"
        transcript.body = body
        transcript.unsendToken = token
        return .sentTranscript(transcript)
    }

    func text(_ body: String, quote: ProtoQuote? = nil) -> ProtoText {
        var text = ProtoText()
        text.body = body
        if let quote { text.quote = quote }
        return text
    }

    /// Decoding `bytes` throws `malformedMessage` whose detail contains `detail`.
    func expectMalformed(_ bytes: Data, _ detail: String, _ comment: Comment, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let content = try MessageContent(decoding: bytes)
            Issue.record("\(comment): decoded as \(content.body)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.code == .malformedMessage, comment, sourceLocation: sourceLocation)
            #expect(error.detail.contains(detail), "\(comment): \"\(error.detail)\" does not say \"\(detail)\"", sourceLocation: sourceLocation)
        }
    }

    @Test func refusesBadReferences() throws {
        let cases: [(String, (inout ProtoMessageRef) -> Void, String)] = [
            ("upper-case author", { $0.authorHandle = "Alice" }, "author is not a handle"),
            ("2-byte author", { $0.authorHandle = "al" }, "author is not a handle"),
            ("33-byte author", { $0.authorHandle = String(repeating: "a", count: 33) }, "author is not a handle"),
            ("empty author", { $0.authorHandle = "" }, "author is not a handle"),
            ("15-byte id", { $0.messageID = Data(count: 15) }, "id must be 16 bytes"),
            ("17-byte id", { $0.messageID = Data(count: 17) }, "id must be 16 bytes"),
            ("no id", { $0.messageID = Data() }, "id must be 16 bytes"),
            ("31-byte hash", { $0.contentHash = Data(count: 31) }, "hash must be 32 bytes"),
            ("33-byte hash", { $0.contentHash = Data(count: 33) }, "hash must be 32 bytes"),
            ("no hash", { $0.contentHash = Data() }, "hash must be 32 bytes"),
        ]
        for (what, change, detail) in cases {
            let bad = ref(hello, change)
            expectMalformed(try bytes(.reaction(reaction(bad))), detail, "reaction: \(what)")
            expectMalformed(try bytes(.edit(edit(bad, "x", 2))), detail, "edit: \(what)")
            var delete = ProtoDeleteForEveryone()
            delete.target = bad
            expectMalformed(try bytes(.deleteForEveryone(delete)), detail, "delete: \(what)")
            var seen = ProtoSeen()
            seen.targets = [ref(hello), bad]
            expectMalformed(try bytes(.seen(seen)), detail, "seen: \(what)")
            var quote = ProtoQuote()
            quote.target = bad
            expectMalformed(try bytes(.text(text("re", quote: quote))), detail, "quote: \(what)")
        }
        expectMalformed(try bytes(.reaction(reaction(nil))), "reference is missing", "reaction without target")
        expectMalformed(try bytes(.edit(edit(nil, "x", 2))), "reference is missing", "edit without target")
        expectMalformed(try bytes(.deleteForEveryone(ProtoDeleteForEveryone())), "reference is missing", "delete without target")
        expectMalformed(try bytes(.text(text("re", quote: ProtoQuote()))), "reference is missing", "quote without target")
    }

    @Test func refusesLongQuotePreviews() throws {
        func quoted(_ preview: String) throws -> Data {
            var quote = ProtoQuote()
            quote.target = ref(hello)
            quote.preview = preview
            return try bytes(.text(text("re", quote: quote)))
        }
        for preview in [String(repeating: "x", count: 100), String(repeating: "é", count: 100), String(repeating: "e\u{301}", count: 50)] {
            #expect(try MessageContent(decoding: try quoted(preview)).body.textMessage?.quote?.preview == preview)
        }
        for preview in [String(repeating: "x", count: 101), String(repeating: "é", count: 101), String(repeating: "e\u{301}", count: 50) + "e"] {
            expectMalformed(try quoted(preview), "quote preview over 100", "preview of \(preview.unicodeScalars.count) scalars")
        }
    }

    @Test func refusesReactionsThatAreNotEmoji() throws {
        for emoji in ["ok", ":-)", "👍 ", "👍\n", "👍\u{1b}", "\u{85}👍", "\u{a0}", "\u{3000}", String(repeating: "👍", count: 9)] {
            expectMalformed(try bytes(.reaction(reaction(ref(hello), emoji))), "not an emoji", "\(emoji.debugDescription)")
            expectMalformed(try bytes(transcript(.reaction(reaction(ref(hello), emoji)))), "not an emoji", "transcript \(emoji.debugDescription)")
        }
        #expect(try MessageContent(decoding: try bytes(.reaction(reaction(ref(hello), "")))).body == .reaction(Reaction(target: hello, emoji: "")))
    }

    @Test func refusesEditVersionsOutsideTwoToTenAndEmptyEdits() throws {
        for version: UInt32 in [0, 1, 11, .max] {
            expectMalformed(try bytes(.edit(edit(ref(hello), "new", version))), "version must be 2 to 10", "version \(version)")
            expectMalformed(try bytes(transcript(.edit(edit(ref(hello), "new", version)))), "version must be 2 to 10", "transcript version \(version)")
        }
        for version: UInt32 in [2, 10] {
            #expect(try MessageContent(decoding: try bytes(.edit(edit(ref(hello), "new", version)))).body == .edit(Edit(target: hello, body: "new", version: version)))
        }
        expectMalformed(try bytes(.edit(edit(ref(hello), "", 2))), "edit has no text", "empty edit")
    }

    @Test func refusesSeenWithoutTargetsOrWithTooMany() throws {
        func seen(_ count: Int) throws -> Data {
            var seen = ProtoSeen()
            seen.targets = (0..<count).map { index in ref(hello) { $0.messageID = Data(repeating: UInt8(index), count: 16) } }
            return try bytes(.seen(seen))
        }
        expectMalformed(try seen(0), "seen must name 1 to 100", "no target")
        expectMalformed(try seen(101), "seen must name 1 to 100", "101 targets")
        guard case .seen(let targets) = try MessageContent(decoding: try seen(100)).body else {
            Issue.record("100 targets do not decode as seen")
            return
        }
        #expect(targets.count == 100)
    }

    @Test func refusesTimersOutsideTheirRange() throws {
        for seconds: UInt32 in [1, 29, 31_536_001, .max] {
            expectMalformed(try bytes(.disappearingTimer(timer(seconds, 1))), "off or 30 seconds to 365 days", "\(seconds) s")
            expectMalformed(try bytes(transcript(.disappearingTimer(timer(seconds, 1)))), "off or 30 seconds to 365 days", "transcript \(seconds) s")
        }
        expectMalformed(try bytes(.disappearingTimer(timer(60, 0))), "version must be at least 1", "version 0")
        for seconds: UInt32 in [0, 30, 31_536_000] {
            #expect(
                try MessageContent(decoding: try bytes(.disappearingTimer(timer(seconds, 3)))).body
                    == .disappearingTimer(DisappearingTimer(seconds: seconds, version: 3)))
        }
    }

    @Test func refusesBadTranscriptTokens() throws {
        for length in [1, 16, 31, 33, 64] {
            expectMalformed(try bytes(transcript(.text(text("hi")), token: Data(count: length))), "unsend token must be 32 bytes", "\(length)-byte token")
        }
        expectMalformed(
            try bytes(transcript(.reaction(reaction(ref(hello))), token: token)), "only a transcript of a text carries an unsend token", "token on a reaction")
        expectMalformed(
            try bytes(transcript(.disappearingTimer(timer(60, 2)), token: token)), "only a transcript of a text carries an unsend token", "token on a timer")
        expectMalformed(
            try bytes(transcript(.deleteForEveryone({ var d = ProtoDeleteForEveryone(); d.target = ref(hello); return d }()), token: token)),
            "only a transcript of a text carries an unsend token", "token on a delete")
    }

    @Test func refusesSingleUseSessionsOnAnythingButText() throws {
        var delete = ProtoDeleteForEveryone()
        delete.target = ref(hello)
        var seen = ProtoSeen()
        seen.targets = [ref(hello)]
        var reset = ProtoSessionReset()
        reset.envelopeID = Data(count: 16)
        let bodies: [(String, ProtoContent.OneOf_Body)] = [
            ("reaction", .reaction(reaction(ref(hello)))), ("edit", .edit(edit(ref(hello), "x", 2))), ("delete", .deleteForEveryone(delete)),
            ("seen", .seen(seen)), ("typing", .typing(ProtoTyping())), ("presence", .presence(ProtoPresence())),
            ("timer", .disappearingTimer(timer(60, 1))), ("session reset", .sessionReset(reset)),
            ("transcript of a reaction", transcript(.reaction(reaction(ref(hello))))),
        ]
        for (what, body) in bodies {
            expectMalformed(try bytes(singleUse: true, body), "single-use session", "\(what)")
            // The same body without the flag decodes.
            #expect(throws: Never.self, "\(what)") { try MessageContent(decoding: try bytes(body)) }
        }
        // Later body kinds are not text either: at top level (field 5) and inside a transcript (its field 15).
        let flag = Data([0x70, 0x01])
        expectMalformed(Data([0x0a, 0x10]) + id + Data([0x2a, 0x00]) + flag, "single-use session", "unknown kind")
        let newerTranscript = Data([0x0a, 0x10]) + id + Data([0x32, 0x07, 0x0a, 0x03]) + Data("bob".utf8) + Data([0x7a, 0x00])
        #expect(try MessageContent(decoding: newerTranscript).body == .unsupported(encodedContent: newerTranscript))
        expectMalformed(newerTranscript + flag, "single-use session", "transcript of an unknown kind")
        #expect(try MessageContent(decoding: try bytes(singleUse: true, .text(text("later")))).singleUseSession)
        #expect(try MessageContent(decoding: try bytes(singleUse: true, transcript(.text(text("later")), token: token))).singleUseSession)
    }
}
