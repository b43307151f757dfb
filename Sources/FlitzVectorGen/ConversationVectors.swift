import FlitzCrypto
import FlitzProtocol
import FlitzVectors
import FlitzWire
import Foundation

/// `vectors/conversations.json`: the content kinds of `protocol/conversations.md` (encodings and the decoding rules
/// of its section 2), the message reference's content hash, the unsend and cancel token hashes and the abuse report
/// signature.
enum ConversationVectors {
    static let label = "flitz-vectors/conversations"
    /// 2026-01-01T00:00:00Z in milliseconds.
    static let sentAt: Int64 = 1_767_225_600_000

    static let messageHashLabel = "FlitzMessageHash-v1"
    static let unsendTokenLabel = "FlitzUnsendToken-v1"
    static let cancelTokenLabel = "FlitzCancelToken-v1"
    static let abuseReportLabel = "FlitzAbuseReport-v1"

    static func make() throws -> VectorFileBuilder {
        let random = SeededRandom(label: label)
        // Draw order (documented in the description): eight message ids, then two unsend tokens, two cancel tokens,
        // 100 seen message ids, the reporter's device seed, another device's seed and three reported message ids.
        let ids = (0..<8).map { _ in random.bytes(16) }
        let unsendTokens = (0..<2).map { _ in random.bytes(32) }
        let cancelTokens = (0..<2).map { _ in random.bytes(32) }
        let seenIDs = (0..<100).map { _ in random.bytes(16) }
        let reporterSeed = random.bytes(32)
        let otherSeed = random.bytes(32)
        let reportedIDs = (0..<3).map { _ in random.bytes(16) }

        // The messages the mutations name (their first versions' texts give the hashes).
        let hello = MessageRef(authorHandle: "alice", messageID: ids[0], originalText: "Hello Bob!")
        let reply = MessageRef(authorHandle: "bob", messageID: ids[1], originalText: "Hi Alice — wie geht's? 👋")
        let empty = MessageRef(authorHandle: "carol_1.x", messageID: ids[2], originalText: "")

        return VectorFileBuilder(
            topic: "conversations",
            description: "Conversation content (flitz_session.proto Content kinds 7 to 13, Text's quote / forward_count / no_forward / "
                + "expire_after_seconds, single_use_session 14, SentTranscript bodies and unsend_token): fields is the Content in the "
                + "protobuf JSON mapping (lowerCamelCase names, 64-bit integers as decimal strings, default values omitted) except that "
                + "bytes fields are lowercase hex; encoded is the padded encoding (padding as in content.json: k zero bytes in field 15, "
                + "the smallest k >= 1 with (n + 2 + k) % 64 == 0, none when n % 64 == 0). decode gives bytes and either the decoded "
                + "fields or malformedMessage for each rule of conversations.md section 2. messageRef: content_hash = SHA-256(label || 00 "
                + "|| u8(len author) || author || message_id || UTF-8 original text); tokenHash: SHA-256(label || 00 || token); "
                + "reportSignature: Ed25519 over label || 00 || encoded AbuseReport (flitz_wire.proto). Ids, tokens and seeds are "
                + "successive draws of SeededRandom(label: \"\(label)\"): eight message ids (16), two unsend tokens (32), two cancel "
                + "tokens (32), 100 seen message ids (16), the reporter's device seed (32), another device's seed (32), three reported "
                + "message ids (16); the spec example uses 000102...0f.",
            specification: "protocol/conversations.md sections 2, 3, 5, 8 and 10; flitz_session.proto; flitz_wire.proto",
            notes: notes,
            seeds: [label],
            groups: [
                VectorGroup(type: "encode", tests: try encodeTests(ids: ids, hello: hello, reply: reply, empty: empty, unsendTokens: unsendTokens)),
                VectorGroup(type: "decode", tests: try decodeTests(ids: ids, hello: hello, seenIDs: seenIDs, unsendToken: unsendTokens[0])),
                VectorGroup(type: "messageRef", tests: messageRefTests(ids: ids)),
                VectorGroup(
                    type: "tokenHash",
                    tests: tokenHashTests(unsendTokens: unsendTokens, cancelTokens: cancelTokens)),
                try reportGroup(reporterSeed: reporterSeed, otherSeed: otherSeed, ids: reportedIDs),
            ])
    }

    // MARK: encode

    /// The encoded content without its padding field.
    static func unpadded(_ encoded: Data) -> ProtoContent {
        var proto = try! ProtoContent(serializedBytes: encoded)
        proto.padding = Data()
        return proto
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

    static func encodeTests(ids: [Data], hello: MessageRef, reply: MessageRef, empty: MessageRef, unsendTokens: [Data]) throws -> [VectorTest] {
        var tests: [VectorTest] = []
        var next = 3
        func add(_ comment: String, flags: [String], _ body: MessageContent.Body, singleUse: Bool = false, id: Data? = nil) throws {
            let messageID = id ?? ids[next % ids.count]
            if id == nil { next += 1 }
            let content = MessageContent(messageID: messageID, sentAtMilliseconds: sentAt, body: body, singleUseSession: singleUse)
            let encoded = content.encoded()
            let proto = unpadded(encoded)
            let n = try proto.serializedData().count
            precondition(try! MessageContent(decoding: encoded) == content, "\(comment) does not round-trip")
            tests.append(
                VectorTest(
                    comment, flags: flags,
                    [
                        "body": .string(bodyName(body)), "fields": try ContentJSON.fields(of: proto), "unpaddedLength": .int(n),
                        "paddingLength": .int(encoded.count == n ? 0 : encoded.count - n - 2), "encoded": .hex(encoded),
                    ]))
        }
        let quote = Quote(target: hello, preview: "Hello Bob!")
        // Text and its new fields.
        try add("a plain text: no new field is encoded", flags: ["Text"], .text("Are you free tonight?"))
        try add("a reply: the quote names the target and previews its text", flags: ["Text", "Quote"], .text(TextMessage("Sure, see you!", quote: quote)))
        try add(
            "a reply to a non-ASCII message; the preview is cut to 100 Unicode scalars by Quote.init", flags: ["Text", "Quote", "NonASCII"],
            .text(TextMessage("😂", quote: Quote(target: reply, preview: String(repeating: "é", count: 120)))))
        try add("a reply to a message whose text was empty", flags: ["Text", "Quote"], .text(TextMessage("?", quote: Quote(target: empty, preview: ""))))
        try add("a forward (forward_count 3)", flags: ["Text", "Forward"], .text(TextMessage("pass it on", forwardCount: 3)))
        try add("a message its sender asks not to forward", flags: ["Text", "NoForward"], .text(TextMessage("just for you", noForward: true)))
        try add(
            "expire_after_seconds = 0 (never) is present: proto3 optional keeps an explicit 0", flags: ["Text", "ExpireAfter", "ExplicitZero"],
            .text(TextMessage("keep this", expireAfterSeconds: 0)))
        try add("expire_after_seconds = 3600", flags: ["Text", "ExpireAfter"], .text(TextMessage("gone in an hour", expireAfterSeconds: 3_600)))
        try add(
            "every Text field at once", flags: ["Text", "Quote", "Forward", "NoForward", "ExpireAfter"],
            .text(TextMessage("all of it", quote: quote, forwardCount: 1, noForward: true, expireAfterSeconds: 31_536_000)))
        // Reactions.
        try add("a reaction adds 👍", flags: ["Reaction"], .reaction(Reaction(target: hello, emoji: "👍")))
        try add("a reaction replaces it with ❤️ (U+2764 U+FE0F)", flags: ["Reaction"], .reaction(Reaction(target: hello, emoji: "❤️")))
        try add("a keycap 1️⃣: ASCII '1' with non-ASCII scalars is an emoji", flags: ["Reaction"], .reaction(Reaction(target: reply, emoji: "1️⃣")))
        try add(
            "a 25-byte ZWJ family sequence (U+200D is not whitespace)", flags: ["Reaction"], .reaction(Reaction(target: reply, emoji: "👨‍👩‍👧‍👦")))
        try add("exactly 32 bytes of emoji", flags: ["Reaction", "Boundary"], .reaction(Reaction(target: reply, emoji: String(repeating: "👍", count: 8))))
        try add("an empty emoji removes the sender's reaction", flags: ["Reaction", "ReactionRemove"], .reaction(Reaction(target: hello, emoji: "")))
        // Edits, deletes.
        try add("an edit, version 2", flags: ["Edit"], .edit(Edit(target: hello, body: "Hello Bob!!", version: 2)))
        try add("an edit, version 10 (the last)", flags: ["Edit", "Boundary"], .edit(Edit(target: hello, body: "Hallo Bob – zum zehnten Mal", version: 10)))
        try add("a delete for everyone", flags: ["DeleteForEveryone"], .deleteForEveryone(target: hello))
        // Seen.
        try add("seen naming one message", flags: ["Seen"], .seen(targets: [hello]))
        try add("seen naming three messages of three authors", flags: ["Seen"], .seen(targets: [hello, reply, empty]))
        // Typing and presence.
        try add("typing started", flags: ["Typing"], .typing(true))
        try add("typing stopped: an empty Typing message", flags: ["Typing", "EmptyBody"], .typing(false))
        try add("presence online", flags: ["Presence"], .presence(online: true))
        try add("presence going offline: an empty Presence message", flags: ["Presence", "EmptyBody"], .presence(online: false))
        // Disappearing timers.
        try add("timer off (seconds 0 omitted), version 1", flags: ["DisappearingTimer"], .disappearingTimer(DisappearingTimer(seconds: 0, version: 1)))
        try add("timer 30 s (the shortest), version 2", flags: ["DisappearingTimer", "Boundary"], .disappearingTimer(DisappearingTimer(seconds: 30, version: 2)))
        try add(
            "timer 365 days (the longest), version 3", flags: ["DisappearingTimer", "Boundary"],
            .disappearingTimer(DisappearingTimer(seconds: 31_536_000, version: 3)))
        try add(
            "timer one week with a 64-bit version", flags: ["DisappearingTimer", "LargeVersion"],
            .disappearingTimer(DisappearingTimer(seconds: 604_800, version: 1 << 40)))
        // Scheduled send.
        try add("a scheduled text in a single-use session", flags: ["Text", "SingleUseSession"], .text("happy birthday!"), singleUse: true)
        // Sent transcripts.
        func transcript(_ body: MessageContent.Body, token: Data = Data()) -> MessageContent.Body {
            .sentTranscript(SentTranscript(destinationHandle: "bob", body: body, unsendToken: token))
        }
        try add(
            "a transcript of a text with its unsend token", flags: ["SentTranscript", "Text", "UnsendToken"],
            transcript(.text("Hello Bob!"), token: unsendTokens[0]), id: hello.messageID)
        try add("a transcript of a text without an unsend token", flags: ["SentTranscript", "Text"], transcript(.text("no token")))
        try add(
            "a transcript of a reply with every Text field and a token", flags: ["SentTranscript", "Text", "Quote", "UnsendToken"],
            transcript(.text(TextMessage("ok!", quote: Quote(target: reply, preview: "Hi Alice"), forwardCount: 2, noForward: true, expireAfterSeconds: 60)), token: unsendTokens[1]))
        try add("a transcript of a reaction", flags: ["SentTranscript", "Reaction"], transcript(.reaction(Reaction(target: reply, emoji: "🔥"))))
        try add("a transcript of a reaction removal", flags: ["SentTranscript", "ReactionRemove"], transcript(.reaction(Reaction(target: reply, emoji: ""))))
        try add("a transcript of an edit", flags: ["SentTranscript", "Edit"], transcript(.edit(Edit(target: hello, body: "Hello, Bob!", version: 2))))
        try add("a transcript of a delete for everyone", flags: ["SentTranscript", "DeleteForEveryone"], transcript(.deleteForEveryone(target: hello)))
        try add(
            "a transcript of a timer change", flags: ["SentTranscript", "DisappearingTimer"],
            transcript(.disappearingTimer(DisappearingTimer(seconds: 86_400, version: 4))))
        try add(
            "a scheduled text's transcript, single-use session, with its token", flags: ["SentTranscript", "SingleUseSession", "UnsendToken"],
            transcript(.text("happy birthday!"), token: unsendTokens[1]), singleUse: true)
        return tests
    }

    // MARK: decode

    static func decodeTests(ids: [Data], hello: MessageRef, seenIDs: [Data], unsendToken: Data) throws -> [VectorTest] {
        let id = ids[7]
        func ref(_ reference: MessageRef) -> ProtoMessageRef {
            var proto = ProtoMessageRef()
            proto.authorHandle = reference.authorHandle
            proto.messageID = reference.messageID
            proto.contentHash = reference.contentHash
            return proto
        }
        func content(_ build: (inout ProtoContent) -> Void) -> ProtoContent {
            var proto = ProtoContent()
            proto.messageID = id
            proto.sentAtMs = sentAt
            build(&proto)
            return proto
        }
        func reaction(_ target: ProtoMessageRef?, _ emoji: String) -> ProtoContent {
            content {
                var reaction = ProtoReaction()
                if let target { reaction.target = target }
                reaction.emoji = emoji
                $0.body = .reaction(reaction)
            }
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
        func textWithQuote(_ target: ProtoMessageRef?, _ preview: String) -> ProtoContent {
            content {
                var text = ProtoText()
                text.body = "reply"
                var quote = ProtoQuote()
                if let target { quote.target = target }
                quote.preview = preview
                text.quote = quote
                $0.body = .text(text)
            }
        }
        func seen(_ targets: [ProtoMessageRef]) -> ProtoContent {
            content {
                var seen = ProtoSeen()
                seen.targets = targets
                $0.body = .seen(seen)
            }
        }
        func transcript(_ token: Data, singleUse: Bool = false, _ body: ProtoSentTranscript.OneOf_Body?) -> ProtoContent {
            content {
                var transcript = ProtoSentTranscript()
                transcript.destinationHandle = "bob"
                transcript.body = body
                transcript.unsendToken = token
                $0.body = .sentTranscript(transcript)
                $0.singleUseSession = singleUse
            }
        }
        func plainText(_ body: String) -> ProtoText {
            var text = ProtoText()
            text.body = body
            return text
        }
        let good = ref(hello)
        func bad(_ change: (inout ProtoMessageRef) -> Void) -> ProtoMessageRef {
            var copy = good
            change(&copy)
            return copy
        }

        var tests: [VectorTest] = []
        func valid(_ comment: String, flags: [String], _ proto: ProtoContent) throws {
            let bytes = try proto.serializedData()
            let decoded = try! MessageContent(decoding: bytes)
            tests.append(
                VectorTest(
                    comment, flags: flags,
                    ["encoded": .hex(bytes), "body": .string(bodyName(decoded.body)), "fields": try ContentJSON.fields(of: proto)]))
        }
        func invalid(_ comment: String, flags: [String], _ proto: ProtoContent) throws {
            try invalid(comment, flags: flags, bytes: try proto.serializedData(), fields: try ContentJSON.fields(of: proto))
        }
        func invalid(_ comment: String, flags: [String], bytes: Data, fields: JSONValue? = nil) throws {
            do {
                _ = try MessageContent(decoding: bytes)
                preconditionFailure("\(comment): decodes")
            } catch {
                precondition(error.code == .malformedMessage)
            }
            var object: [String: JSONValue] = ["encoded": .hex(bytes)]
            if let fields { object["fields"] = fields }
            tests.append(VectorTest(comment, flags: flags, result: .invalid(VectorErrorRef(FlitzProtocolError.Code.malformedMessage)), object))
        }

        // Valid boundaries (without padding: decoders ignore it).
        try valid("a reaction whose reference is exactly right", flags: ["Reaction"], reaction(good, "👍"))
        try valid("a 32-byte handle as author", flags: ["MessageRef", "Boundary"], reaction(bad { $0.authorHandle = String(repeating: "z", count: 32) }, "👍"))
        try valid("a 3-byte handle as author", flags: ["MessageRef", "Boundary"], reaction(bad { $0.authorHandle = "a.b" }, "👍"))
        try valid("a quote preview of exactly 100 scalars (200 bytes of é)", flags: ["Quote", "Boundary"], textWithQuote(good, String(repeating: "é", count: 100)))
        try valid(
            "a quote preview of 100 scalars forming fewer characters (e + combining acute, 50 times)", flags: ["Quote", "Boundary"],
            textWithQuote(good, String(repeating: "e\u{301}", count: 50)))
        try valid("an empty quote preview", flags: ["Quote"], textWithQuote(good, ""))
        try valid("an emoji of exactly 32 bytes", flags: ["Reaction", "Boundary"], reaction(good, String(repeating: "👍", count: 8)))
        try valid("an emoji with a skin tone modifier", flags: ["Reaction"], reaction(good, "👋🏽"))
        try valid("a flag ZWJ sequence 🏳️‍🌈", flags: ["Reaction"], reaction(good, "🏳️‍🌈"))
        try valid("a non-ASCII symbol that is not an emoji is accepted (no emoji table)", flags: ["Reaction"], reaction(good, "★"))
        try valid("an edit of version 10", flags: ["Edit", "Boundary"], content { $0.body = .edit(edit(good, "v10", 10)) })
        try valid("seen with 100 targets", flags: ["Seen", "Boundary"], seen(seenIDs.map { seenID in bad { $0.messageID = seenID } }))
        try valid("a timer of 30 seconds", flags: ["DisappearingTimer", "Boundary"], content { $0.body = .disappearingTimer(timer(30, 1)) })
        try valid("a timer of 365 days", flags: ["DisappearingTimer", "Boundary"], content { $0.body = .disappearingTimer(timer(31_536_000, 1)) })
        try valid("a timer off (0 seconds)", flags: ["DisappearingTimer"], content { $0.body = .disappearingTimer(timer(0, 7)) })
        try valid(
            "single_use_session on a text", flags: ["SingleUseSession"],
            content {
                $0.body = .text(plainText("later"))
                $0.singleUseSession = true
            })
        try valid("single_use_session on a transcript of a text", flags: ["SingleUseSession", "SentTranscript"], transcript(unsendToken, singleUse: true, .text(plainText("later"))))
        try valid("a transcript of a text with a 32-byte unsend token", flags: ["SentTranscript", "UnsendToken"], transcript(unsendToken, .text(plainText("hi"))))
        try valid("typing with no field set (stopped)", flags: ["Typing", "EmptyBody"], content { $0.body = .typing(ProtoTyping()) })

        // MessageRef.
        try invalid("reference author in upper case", flags: ["MessageRef", "BadHandle"], reaction(bad { $0.authorHandle = "Alice" }, "👍"))
        try invalid("reference author of 2 bytes", flags: ["MessageRef", "BadHandle"], reaction(bad { $0.authorHandle = "al" }, "👍"))
        try invalid("reference author of 33 bytes", flags: ["MessageRef", "BadHandle"], reaction(bad { $0.authorHandle = String(repeating: "z", count: 33) }, "👍"))
        try invalid("reference author empty", flags: ["MessageRef", "BadHandle"], reaction(bad { $0.authorHandle = "" }, "👍"))
        try invalid("reference author with a space", flags: ["MessageRef", "BadHandle"], reaction(bad { $0.authorHandle = "al ice" }, "👍"))
        try invalid("reference message id of 15 bytes", flags: ["MessageRef", "BadLength"], reaction(bad { $0.messageID = $0.messageID.prefix(15) }, "👍"))
        try invalid("reference message id of 17 bytes", flags: ["MessageRef", "BadLength"], reaction(bad { $0.messageID.append(0) }, "👍"))
        try invalid("reference without message id", flags: ["MessageRef", "BadLength"], reaction(bad { $0.messageID = Data() }, "👍"))
        try invalid("reference content hash of 31 bytes", flags: ["MessageRef", "BadLength"], reaction(bad { $0.contentHash = $0.contentHash.prefix(31) }, "👍"))
        try invalid("reference content hash of 33 bytes", flags: ["MessageRef", "BadLength"], reaction(bad { $0.contentHash.append(0) }, "👍"))
        try invalid("reference without content hash", flags: ["MessageRef", "BadLength"], reaction(bad { $0.contentHash = Data() }, "👍"))
        try invalid("a reaction without a target", flags: ["MessageRef", "MissingField"], reaction(nil, "👍"))
        try invalid("an edit without a target", flags: ["MessageRef", "MissingField"], content { $0.body = .edit(edit(nil, "new", 2)) })
        try invalid("a delete for everyone without a target", flags: ["MessageRef", "MissingField"], content { $0.body = .deleteForEveryone(ProtoDeleteForEveryone()) })
        try invalid(
            "a delete for everyone whose target has a 16-byte hash", flags: ["MessageRef", "BadLength"],
            content {
                var delete = ProtoDeleteForEveryone()
                delete.target = bad { $0.contentHash = $0.contentHash.prefix(16) }
                $0.body = .deleteForEveryone(delete)
            })
        try invalid("an edit whose target author is not a handle", flags: ["MessageRef", "BadHandle"], content { $0.body = .edit(edit(bad { $0.authorHandle = "Bob" }, "new", 2)) })
        // Quote.
        try invalid("a quote without a target", flags: ["Quote", "MissingField"], textWithQuote(nil, "Hello"))
        try invalid("a quote whose target has a 15-byte id", flags: ["Quote", "MessageRef", "BadLength"], textWithQuote(bad { $0.messageID = $0.messageID.prefix(15) }, "Hello"))
        try invalid("a quote preview of 101 ASCII scalars", flags: ["Quote", "TooLong"], textWithQuote(good, String(repeating: "x", count: 101)))
        try invalid("a quote preview of 101 scalars of é (202 bytes)", flags: ["Quote", "TooLong"], textWithQuote(good, String(repeating: "é", count: 101)))
        try invalid(
            "a quote preview of 101 scalars in 51 characters (e + combining acute)", flags: ["Quote", "TooLong"],
            textWithQuote(good, String(repeating: "e\u{301}", count: 50) + "e"))
        // Reaction emoji.
        try invalid("an emoji of 33 bytes", flags: ["Reaction", "BadEmoji"], reaction(good, String(repeating: "👍", count: 8) + "!"))
        try invalid("an emoji of 36 bytes (nine thumbs)", flags: ["Reaction", "BadEmoji"], reaction(good, String(repeating: "👍", count: 9)))
        try invalid("ASCII only: \"ok\"", flags: ["Reaction", "BadEmoji"], reaction(good, "ok"))
        try invalid("ASCII only: \":-)\"", flags: ["Reaction", "BadEmoji"], reaction(good, ":-)"))
        try invalid("an emoji followed by a space", flags: ["Reaction", "BadEmoji"], reaction(good, "👍 "))
        try invalid("an emoji followed by a newline", flags: ["Reaction", "BadEmoji"], reaction(good, "👍\n"))
        try invalid("an emoji with an escape (control) character", flags: ["Reaction", "BadEmoji"], reaction(good, "👍\u{1b}"))
        try invalid("a C1 control character (U+0085 NEL) with an emoji", flags: ["Reaction", "BadEmoji"], reaction(good, "\u{85}👍"))
        try invalid("a no-break space (non-ASCII whitespace)", flags: ["Reaction", "BadEmoji"], reaction(good, "\u{a0}"))
        try invalid("an ideographic space U+3000 (non-ASCII whitespace)", flags: ["Reaction", "BadEmoji"], reaction(good, "\u{3000}"))
        try invalid("a reaction transcript with an ASCII emoji", flags: ["Reaction", "SentTranscript", "BadEmoji"], transcript(Data(), .reaction(reaction(good, "+1").reaction)))
        // Edit.
        try invalid("an edit of version 0", flags: ["Edit", "BadVersion"], content { $0.body = .edit(edit(good, "new", 0)) })
        try invalid("an edit of version 1 (the original's)", flags: ["Edit", "BadVersion"], content { $0.body = .edit(edit(good, "new", 1)) })
        try invalid("an edit of version 11", flags: ["Edit", "BadVersion"], content { $0.body = .edit(edit(good, "new", 11)) })
        try invalid("an edit with an empty body", flags: ["Edit", "MissingField"], content { $0.body = .edit(edit(good, "", 2)) })
        try invalid("an edit transcript of version 1", flags: ["Edit", "SentTranscript", "BadVersion"], transcript(Data(), .edit(edit(good, "new", 1))))
        // Seen.
        try invalid("seen with no target", flags: ["Seen", "BadCount"], seen([]))
        try invalid("seen with 101 targets", flags: ["Seen", "BadCount"], seen((seenIDs + [ids[6]]).map { seenID in bad { $0.messageID = seenID } }))
        try invalid("seen whose second target has a 31-byte hash", flags: ["Seen", "MessageRef", "BadLength"], seen([good, bad { $0.contentHash = $0.contentHash.prefix(31) }]))
        // Timer.
        try invalid("a timer of version 0", flags: ["DisappearingTimer", "BadVersion"], content { $0.body = .disappearingTimer(timer(3_600, 0)) })
        try invalid("a timer of 1 second", flags: ["DisappearingTimer", "BadTimer"], content { $0.body = .disappearingTimer(timer(1, 1)) })
        try invalid("a timer of 29 seconds", flags: ["DisappearingTimer", "BadTimer"], content { $0.body = .disappearingTimer(timer(29, 1)) })
        try invalid("a timer of 365 days + 1 second", flags: ["DisappearingTimer", "BadTimer"], content { $0.body = .disappearingTimer(timer(31_536_001, 1)) })
        try invalid("a timer of 2^32 - 1 seconds", flags: ["DisappearingTimer", "BadTimer"], content { $0.body = .disappearingTimer(timer(.max, 1)) })
        try invalid("a timer transcript of 10 seconds", flags: ["DisappearingTimer", "SentTranscript", "BadTimer"], transcript(Data(), .disappearingTimer(timer(10, 2))))
        // Transcript tokens.
        try invalid("a transcript's unsend token of 31 bytes", flags: ["SentTranscript", "UnsendToken", "BadLength"], transcript(unsendToken.prefix(31), .text(plainText("hi"))))
        try invalid("a transcript's unsend token of 33 bytes", flags: ["SentTranscript", "UnsendToken", "BadLength"], transcript(unsendToken + Data([0]), .text(plainText("hi"))))
        try invalid(
            "an unsend token on a transcript of a reaction (only a text has one)", flags: ["SentTranscript", "UnsendToken"],
            transcript(unsendToken, .reaction(reaction(good, "👍").reaction)))
        try invalid(
            "an unsend token on a transcript of a timer", flags: ["SentTranscript", "UnsendToken"], transcript(unsendToken, .disappearingTimer(timer(60, 2))))
        // Single-use sessions.
        let otherBodies: [(String, ProtoContent.OneOf_Body)] = [
            ("a reaction", .reaction(reaction(good, "👍").reaction)),
            ("an edit", .edit(edit(good, "new", 2))),
            ("typing", .typing(ProtoTyping())),
            ("presence", .presence(ProtoPresence())),
            ("seen", .seen(seen([good]).seen)),
            ("a timer", .disappearingTimer(timer(60, 2))),
        ]
        for (name, body) in otherBodies {
            try invalid(
                "single_use_session on \(name)", flags: ["SingleUseSession"],
                content {
                    $0.body = body
                    $0.singleUseSession = true
                })
        }
        try invalid(
            "single_use_session on a transcript of a reaction", flags: ["SingleUseSession", "SentTranscript"],
            transcript(Data(), singleUse: true, .reaction(reaction(good, "👍").reaction)))
        // Body kinds of a later version cannot be text: single-use on them is malformed too (fields cannot show them).
        let singleUse = Data([0x70, 0x01])
        try invalid(
            "single_use_session on a body kind this version does not know (field 5)", flags: ["SingleUseSession", "UnknownBody"],
            bytes: Data([0x0a, 0x10]) + id + Data([0x2a, 0x02, 0x0a, 0x00]) + singleUse)
        try invalid(
            "single_use_session on a transcript of a body kind this version does not know (its field 15)",
            flags: ["SingleUseSession", "SentTranscript", "UnknownBody"],
            bytes: Data([0x0a, 0x10]) + id + Data([0x32, 0x07, 0x0a, 0x03]) + Data("bob".utf8) + Data([0x7a, 0x00]) + singleUse)
        return tests
    }

    // MARK: hashes

    static func messageRefTests(ids: [Data]) -> [VectorTest] {
        func test(_ comment: String, flags: [String], _ author: String, _ id: Data, _ text: String) -> VectorTest {
            var input = Data(messageHashLabel.utf8)
            input.append(0)
            input.append(UInt8(author.utf8.count))
            input.append(contentsOf: author.utf8)
            input.append(id)
            input.append(contentsOf: text.utf8)
            return VectorTest(
                comment, flags: flags,
                [
                    "label": .string(messageHashLabel), "authorHandle": .string(author), "messageId": .hex(id), "originalText": .string(text),
                    "originalTextUtf8": .hex(Data(text.utf8)), "hashInput": .hex(input),
                    "contentHash": .hex(MessageRef.contentHash(author: author, messageID: id, originalText: text)),
                ])
        }
        return [
            test("author alice, id 000102...0f, text \"hi\"", flags: ["SpecExample"], "alice", Data(0..<16), "hi"),
            test("an ASCII text", flags: [], "alice", ids[0], "Hello Bob!"),
            test("a non-ASCII text (UTF-8 bytes are hashed)", flags: ["NonASCII"], "bob", ids[1], "Hi Alice — wie geht's? 👋"),
            test("an empty text", flags: ["EmptyText"], "carol_1.x", ids[2], ""),
            test("é precomposed (U+00E9)", flags: ["NonASCII", "Normalization"], "dave", ids[3], "caf\u{e9}"),
            test("é decomposed (e U+0301): another hash, texts are not normalized", flags: ["NonASCII", "Normalization"], "dave", ids[3], "cafe\u{301}"),
            test("the same text and id by another author", flags: [], "erin", ids[3], "caf\u{e9}"),
            test(
                "a 32-byte handle and a long multi-line text", flags: ["Boundary"], String(repeating: "z", count: 32), ids[4],
                String(repeating: "Zeile mit Umlauten äöü 🎉\n", count: 20)),
        ]
    }

    static func tokenHashTests(unsendTokens: [Data], cancelTokens: [Data]) -> [VectorTest] {
        func test(_ comment: String, flags: [String], _ kind: String, _ token: Data) -> VectorTest {
            let label = kind == "unsend" ? unsendTokenLabel : cancelTokenLabel
            let input = Data(label.utf8) + Data([0]) + token
            let hash = kind == "unsend" ? ConversationTokens.unsendTokenHash(token) : ConversationTokens.cancelTokenHash(token)
            return VectorTest(
                comment, flags: flags, ["kind": .string(kind), "label": .string(label), "token": .hex(token), "hashInput": .hex(input), "hash": .hex(hash)])
        }
        return [
            test("unsend token of 32 zero bytes", flags: ["UnsendToken", "FixedToken"], "unsend", Data(count: 32)),
            test("unsend token 000102...1f", flags: ["UnsendToken", "FixedToken"], "unsend", Data(0..<32)),
            test("a drawn unsend token", flags: ["UnsendToken"], "unsend", unsendTokens[0]),
            test("another drawn unsend token", flags: ["UnsendToken"], "unsend", unsendTokens[1]),
            test("cancel token of 32 zero bytes (differs from the unsend hash: another label)", flags: ["CancelToken", "FixedToken"], "cancel", Data(count: 32)),
            test("cancel token 000102...1f", flags: ["CancelToken", "FixedToken"], "cancel", Data(0..<32)),
            test("a drawn cancel token", flags: ["CancelToken"], "cancel", cancelTokens[0]),
            test("another drawn cancel token", flags: ["CancelToken"], "cancel", cancelTokens[1]),
        ]
    }

    // MARK: abuse report

    static func reportGroup(reporterSeed: Data, otherSeed: Data, ids: [Data]) throws -> VectorGroup {
        let reporter = try Ed25519PrivateKey(seed: SecretBytes(reporterSeed))
        let other = try Ed25519PrivateKey(seed: SecretBytes(otherSeed))
        func message(_ id: Data, _ author: String, _ at: Int64, _ text: String, reported: Bool = false) -> WireReportedMessage {
            var message = WireReportedMessage()
            message.messageID = id
            message.authorHandle = author
            message.acceptedAtMs = at
            message.text = text
            message.reported = reported
            return message
        }
        var report = WireAbuseReport()
        report.reportedHandle = "mallory"
        report.reason = "Belästigung / harassment"
        report.messages = [
            message(ids[0], "mallory", sentAt, "hey"),
            message(ids[1], "alice", sentAt + 60_000, "please stop"),
            message(ids[2], "mallory", sentAt + 120_000, "no 😈", reported: true),
        ]
        report.createdAtMs = sentAt + 3_600_000
        var minimal = WireAbuseReport()
        minimal.reportedHandle = "mallory"
        minimal.messages = [message(ids[2], "mallory", sentAt + 120_000, "no 😈", reported: true)]
        minimal.createdAtMs = sentAt + 3_600_000

        func test(
            _ comment: String, flags: [String], _ report: WireAbuseReport, signed: Data? = nil, by key: Ed25519PrivateKey, valid: Bool
        ) throws -> VectorTest {
            let bytes = try report.serializedData()
            let payload = ConversationTokens.reportSignaturePayload(bytes)
            var fields: [String: JSONValue] = [
                "report": try WireJSON.fields(ofMessage: report), "reportBytes": .hex(bytes), "label": .string(abuseReportLabel),
                "payload": .hex(payload), "signature": .hex(key.signature(for: signed ?? payload)),
            ]
            if valid { fields["deviceIdentitySeed"] = .hex(key.seed) }
            return VectorTest(comment, flags: flags, result: valid ? .valid : .invalid(VectorErrorRef(FlitzCryptoError.Code.authenticationFailed)), fields)
        }
        var changed = report
        changed.reason = "spam"
        return VectorGroup(
            type: "reportSignature", fields: ["deviceIdentityKey": .hex(reporter.publicKey.rawRepresentation)],
            tests: [
                try test("a report of one message with two of context and a reason", flags: ["Report"], report, by: reporter, valid: true),
                try test("a report of one message, no context, no reason", flags: ["Report"], minimal, by: reporter, valid: true),
                try test("signed by another device's key", flags: ["Report", "WrongKey"], report, by: other, valid: false),
                try test(
                    "the signature covers the report without the label", flags: ["Report", "WrongPayload"], report, signed: try report.serializedData(),
                    by: reporter, valid: false),
                try test(
                    "the signature is of the same report with another reason", flags: ["Report", "WrongPayload"], report,
                    signed: ConversationTokens.reportSignaturePayload(try changed.serializedData()), by: reporter, valid: false),
            ])
    }

    static let notes: [String: String] = [
        "Text": "A Text body (field 3).",
        "Quote": "Text.quote: a reply's target and preview (at most 100 Unicode scalars).",
        "Forward": "Text.forward_count.",
        "NoForward": "Text.no_forward.",
        "ExpireAfter": "Text.expire_after_seconds (proto3 optional: 0 is present and means never).",
        "ExplicitZero": "An optional field set to its default value is still encoded.",
        "NonASCII": "Multi-byte UTF-8 text.",
        "Reaction": "A Reaction (field 7).",
        "ReactionRemove": "A Reaction with an empty emoji: removes the sender's reaction.",
        "Edit": "An Edit (field 8): versions 2 to 10, a non-empty body.",
        "DeleteForEveryone": "A DeleteForEveryone (field 9).",
        "Seen": "A Seen (field 10): 1 to 100 targets.",
        "Typing": "A Typing (field 11).",
        "Presence": "A Presence (field 12).",
        "DisappearingTimer": "A DisappearingTimer (field 13): version >= 1, seconds 0 or 30 to 31536000.",
        "LargeVersion": "A 64-bit version (a decimal string in fields).",
        "SingleUseSession": "Content.single_use_session (field 14): only on a text or a transcript of one.",
        "SentTranscript": "A SentTranscript (field 6) with one of the allowed bodies.",
        "UnsendToken": "An unsend token: SentTranscript.unsend_token (empty, or 32 bytes with a text), or its hash (conversations.md 5).",
        "EmptyBody": "A body message without fields encodes as a zero-length field.",
        "Boundary": "A value at the edge of its allowed range.",
        "MessageRef": "A MessageRef: author a handle, message id 16 bytes, content hash 32 bytes.",
        "BadHandle": "An author that is not 3-32 bytes of a-z 0-9 _ . (relay.md, \"Limits\").",
        "BadLength": "An id, hash or token of the wrong length.",
        "MissingField": "A required part (a target, an edit's body) is missing.",
        "TooLong": "A quote preview over 100 Unicode scalars.",
        "BadEmoji": "A non-empty emoji over 32 bytes, without a non-ASCII scalar, or with whitespace or a control character.",
        "BadVersion": "An edit version outside 2...10 or a timer version 0.",
        "BadCount": "A Seen with 0 or more than 100 targets.",
        "BadTimer": "Timer seconds outside {0} and 30...31536000.",
        "UnknownBody": "A body kind of a later version (no fields given: JSON cannot show unknown fields).",
        "SpecExample": "The example used in the README.",
        "EmptyText": "The original text is empty.",
        "Normalization": "Texts are hashed as their UTF-8 bytes, without Unicode normalization.",
        "CancelToken": "A cancel token (conversations.md 8).",
        "FixedToken": "A token of fixed bytes.",
        "Report": "An AbuseReport signed as SubmitReport.signature (conversations.md 10).",
        "WrongKey": "Signed by a key other than the reporter's device identity key.",
        "WrongPayload": "The signature is over other bytes than label || 00 || report.",
    ]
}
