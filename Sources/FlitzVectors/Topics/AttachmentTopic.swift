import FlitzCrypto
import FlitzProtocol
import Foundation
import SwiftProtobuf

/// `attachment.json`: attachment encryption and the pointer (`protocol/attachments.md` sections 2, 3 and 6).
///
/// Group `encrypt` (shared `info`, `salt`, `chunkSize`, `paddingFloor`): `attachmentKey`, `plaintextPattern` and
/// `plaintextSize` (the plaintext is the pattern repeated and cut), `plaintextSha256`, `okm`, `chunkKey`, `noncePrefix`,
/// `paddedSize`, `chunkCount`, `ciphertextSize`, `chunks` [{`index`, `last`, `plaintextOffset`, `plaintextLength`,
/// `ciphertextOffset`, `nonce`, `ciphertext`}], `blobSha256`. Group `decrypt`: `attachmentKey`, `plaintextSize`,
/// `ciphertextSha256` (the pointer's), and `blob` or `blobFrom` {`tcId`, `ranges`, `xor`}; valid: `plaintextSha256`.
/// Group `openChunk`: `chunkOf` {`tcId`, `chunk`}, `index`, `last`; valid: `plaintextLength`, `plaintextSha256`.
/// Group `paddedSize`: `length` → `paddedSize`, `chunkCount`, `ciphertextSize`, `lastChunkLength` (and `exponent`,
/// `mantissaBits`, `mask` above the floor). Groups `encode` and `decode`: as `conversations.json`'s.
///
/// Independently of the implementation: HKDF, nonces, XChaCha20-Poly1305 and SHA-256 are called here directly
/// (FlitzCrypto) with the constants of the specification written out below; Padmé is recomputed with its formula
/// by bit counting; pointers are built from the protobuf fields by this file's own mapping.
enum AttachmentTopic {
    static let topic = VectorTopic(name: "attachment", verify: verify)

    /// The constants of `protocol/attachments.md` section 8, written out here rather than taken from the implementation.
    static let info = Data("FlitzAttachment-v1".utf8)
    static let chunkSize = 65_536
    static let paddingFloor = 1_024
    static let tagLength = 16

    static func verify(_ vector: VectorCase) throws -> VectorOutcome {
        let test = vector.test
        switch try vector.groupType() {
        case "encrypt":
            try checkGroupConstants(vector.group)
            return try encrypt(test)
        case "decrypt":
            let key = SecretBytes(try test.hex("attachmentKey"))
            let size = UInt64(try test.int("plaintextSize"))
            let hash = try test.hex("ciphertextSha256")
            let blob: Data
            if test.has("blob") {
                blob = try test.hex("blob")
            } else {
                blob = try derivedBlob(try test.object("blobFrom"), file: vector.file)
            }
            let pointer = AttachmentPointer(
                blobID: Data(count: 16), key: key, plaintextSize: size, contentType: "", fileName: "", ciphertextSHA256: hash, kind: .document,
                blobExpiresAtMilliseconds: 0)
            // The specification's verdict, computed here: size, hash, every chunk under its index and flag, zero padding.
            let independent = referenceDecrypt(blob, key: key, plaintextSize: size, hash: hash)
            let outcome = try VectorOutcome.capture {
                let plaintext = try AttachmentCipher.decrypt(blob, pointer: pointer)
                try check(SHA256.hash(plaintext), try test.hex("plaintextSha256"), "plaintextSha256 (AttachmentCipher.decrypt)")
                try check(UInt64(plaintext.count), size, "plaintext length")
            }
            switch (outcome, independent) {
            case (.valid, .some(let plaintext)):
                try check(SHA256.hash(plaintext), try test.hex("plaintextSha256"), "plaintextSha256 (independent decryption)")
            case (.invalid, nil): break
            case (.valid, nil): throw VectorCheckFailure("AttachmentCipher.decrypt accepted a blob the specification rejects")
            case (.invalid, .some): throw VectorCheckFailure("AttachmentCipher.decrypt refused a blob the specification accepts")
            }
            return outcome
        case "openChunk":
            let source = try test.object("chunkOf")
            let file = try encryptTest(vector.file, tcId: try source.int("tcId"))
            let chunks = try file.array("chunks")
            let which = try source.int("chunk")
            try require(chunks.indices.contains(which), "chunkOf.chunk \(which) is not a chunk of that encrypt test")
            let sealed = try chunks[which].hex("ciphertext")
            let index = try test.uint32("index"), last = try test.bool("last")
            let okm = try HKDF.deriveKey(inputKeyMaterial: SecretBytes(try file.hex("attachmentKey")), salt: Data(count: 32), info: info, length: 51)
            let nonce = okm.slice(32..<51).unsafeData + bigEndian(index) + Data([last ? 1 : 0])
            let independent = try? XChaCha20Poly1305.open(sealed, key: okm.slice(0..<32), nonce: nonce, authenticating: Data())
            let keys = try AttachmentKeys(attachmentKey: SecretBytes(try file.hex("attachmentKey")))
            let outcome = try VectorOutcome.capture {
                let plain = try keys.openChunk(sealed, index: index, isLast: last)
                try check(plain.count, try test.int("plaintextLength"), "plaintextLength")
                try check(SHA256.hash(plain), try test.hex("plaintextSha256"), "plaintextSha256 (AttachmentKeys.openChunk)")
            }
            switch (outcome, independent) {
            case (.valid, .some(let plain)): try check(SHA256.hash(plain), try test.hex("plaintextSha256"), "plaintextSha256 (direct XChaCha20-Poly1305)")
            case (.invalid, nil): break
            default: throw VectorCheckFailure("AttachmentKeys.openChunk and a direct XChaCha20-Poly1305 open disagree")
            }
            return outcome
        case "paddedSize":
            let length = UInt64(try test.int("length"))
            let padded = try test.int("paddedSize")
            try check(Int(referencePaddedSize(length)), padded, "paddedSize (Padmé formula)")
            let layout = AttachmentLayout(plaintextSize: length)
            try check(Int(layout.paddedSize), padded, "AttachmentLayout.paddedSize")
            let chunks = (padded + chunkSize - 1) / chunkSize
            try check(chunks, try test.int("chunkCount"), "chunkCount")
            try check(Int(layout.chunkCount), chunks, "AttachmentLayout.chunkCount")
            try check(padded + tagLength * chunks, try test.int("ciphertextSize"), "ciphertextSize")
            try check(Int(layout.ciphertextSize), padded + tagLength * chunks, "AttachmentLayout.ciphertextSize")
            try check(padded - (chunks - 1) * chunkSize, try test.int("lastChunkLength"), "lastChunkLength")
            try check(layout.plaintextRange(ofChunk: layout.chunkCount - 1).count, padded - (chunks - 1) * chunkSize, "AttachmentLayout.plaintextRange of the last chunk")
            if length > UInt64(paddingFloor) {
                let e = bitLength(length) - 1, s = bitLength(UInt64(e))
                try check(e, try test.int("exponent"), "exponent E = floor(log2(L))")
                try check(s, try test.int("mantissaBits"), "mantissaBits S = floor(log2(E)) + 1")
                try check((1 << (e - s)) - 1, try test.int("mask"), "mask m = 2^(E-S) - 1")
            } else {
                try require(!test.has("exponent") && !test.has("mask"), "no Padmé intermediates at or under the floor")
            }
            try require(padded >= Int(length), "paddedSize under the length")
            return .valid
        case "encode":
            return try ConversationsTopic.verifyEncode(test, build: messageContent(from:), protoOf: proto(of:))
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
                try check(ConversationsTopic.bodyName(decoded.body), try test.string("body"), "body")
                if test.has("fields") {
                    try check(try ContentJSON.fields(of: try proto(of: decoded)), try test.object("fields"), "fields of the decoded content")
                }
                if let given { try check(try messageContent(from: given), decoded, "content built from fields") }
            }
        case let type:
            throw VectorCheckFailure.unknownGroup(type, in: "attachment")
        }
    }

    // MARK: encryption, from the specification

    static func checkGroupConstants(_ group: JSONValue) throws {
        try check(Data(try group.string("info").utf8), info, "info")
        try check(try group.hex("salt"), Data(count: 32), "salt")
        try check(try group.int("chunkSize"), chunkSize, "chunkSize")
        try check(AttachmentLayout.chunkSize, chunkSize, "AttachmentLayout.chunkSize")
        try check(try group.int("paddingFloor"), paddingFloor, "paddingFloor")
        try check(AttachmentLayout.paddingFloor, paddingFloor, "AttachmentLayout.paddingFloor")
        try check(AttachmentKeys.info, info, "AttachmentKeys.info")
    }

    static func encrypt(_ test: JSONValue) throws -> VectorOutcome {
        let key = try test.hex("attachmentKey")
        let size = try test.int("plaintextSize")
        let plaintext = try expand(try test.hex("plaintextPattern"), size)
        try check(SHA256.hash(plaintext), try test.hex("plaintextSha256"), "plaintextSha256")
        // Keys (section 2.1).
        let prk = HKDF.extract(salt: Data(count: 32), inputKeyMaterial: SecretBytes(key))
        let okm = try HKDF.expand(pseudoRandomKey: prk, info: info, length: 51)
        try check(okm, try test.hex("okm"), "okm")
        try check(okm.slice(0..<32), try test.hex("chunkKey"), "chunkKey = okm[0..<32]")
        try check(okm.slice(32..<51), try test.hex("noncePrefix"), "noncePrefix = okm[32..<51]")
        let keys = try AttachmentKeys(attachmentKey: SecretBytes(key))
        try check(keys.chunkKey, try test.hex("chunkKey"), "AttachmentKeys.chunkKey")
        try check(keys.noncePrefix, try test.hex("noncePrefix"), "AttachmentKeys.noncePrefix")
        // Sizes (sections 2.2, 2.3).
        let padded = Int(referencePaddedSize(UInt64(size)))
        try check(padded, try test.int("paddedSize"), "paddedSize")
        let count = (padded + chunkSize - 1) / chunkSize
        try check(count, try test.int("chunkCount"), "chunkCount")
        try check(padded + tagLength * count, try test.int("ciphertextSize"), "ciphertextSize")
        let layout = AttachmentLayout(plaintextSize: UInt64(size))
        try check(Int(layout.paddedSize), padded, "AttachmentLayout.paddedSize")
        try check(Int(layout.chunkCount), count, "AttachmentLayout.chunkCount")
        try check(Int(layout.ciphertextSize), padded + tagLength * count, "AttachmentLayout.ciphertextSize")
        // Chunks.
        let paddedPlaintext = plaintext + Data(count: padded - size)
        let chunks = try test.array("chunks")
        try check(chunks.count, count, "number of chunks")
        var blob = Data()
        for (i, chunk) in chunks.enumerated() {
            let last = i == count - 1
            try check(try chunk.int("index"), i, "chunks[\(i)].index")
            try check(try chunk.bool("last"), last, "chunks[\(i)].last")
            let start = i * chunkSize, end = min(start + chunkSize, padded)
            try check(try chunk.int("plaintextOffset"), start, "chunks[\(i)].plaintextOffset")
            try check(try chunk.int("plaintextLength"), end - start, "chunks[\(i)].plaintextLength")
            try check(try chunk.int("ciphertextOffset"), i * (chunkSize + tagLength), "chunks[\(i)].ciphertextOffset")
            try check(try chunk.int("ciphertextOffset"), blob.count, "chunks[\(i)].ciphertextOffset (sum of the chunks before)")
            let nonce = okm.slice(32..<51).unsafeData + bigEndian(UInt32(i)) + Data([last ? 1 : 0])
            try check(nonce, try chunk.hex("nonce"), "chunks[\(i)].nonce = noncePrefix || u32be(i) || u8(last)")
            try check(keys.nonce(chunk: UInt32(i), isLast: last), nonce, "AttachmentKeys.nonce(chunk: \(i))")
            let sealed = try XChaCha20Poly1305.seal(paddedPlaintext.subdata(in: start..<end), key: okm.slice(0..<32), nonce: nonce, authenticating: Data())
            try check(sealed, try chunk.hex("ciphertext"), "chunks[\(i)].ciphertext (XChaCha20-Poly1305)")
            try check(keys.sealChunk(paddedPlaintext.subdata(in: start..<end), index: UInt32(i), isLast: last), sealed, "AttachmentKeys.sealChunk(\(i))")
            let range = layout.ciphertextRange(ofChunk: UInt64(i))
            try check(Int(range.lowerBound), blob.count, "AttachmentLayout.ciphertextRange(ofChunk: \(i)).lowerBound")
            try check(Int(range.upperBound), blob.count + sealed.count, "AttachmentLayout.ciphertextRange(ofChunk: \(i)).upperBound")
            blob.append(sealed)
        }
        let sha = SHA256.hash(blob)
        try check(sha, try test.hex("blobSha256"), "blobSha256")
        let (whole, hash) = try AttachmentCipher.encrypt(plaintext, attachmentKey: SecretBytes(key))
        try check(whole, blob, "AttachmentCipher.encrypt blob")
        try check(hash, sha, "AttachmentCipher.encrypt hash")
        let pointer = AttachmentPointer(
            blobID: Data(count: 16), key: SecretBytes(key), plaintextSize: UInt64(size), contentType: "", fileName: "", ciphertextSHA256: sha,
            kind: .document, blobExpiresAtMilliseconds: 0)
        try check(try AttachmentCipher.decrypt(blob, pointer: pointer), plaintext, "AttachmentCipher.decrypt of the blob")
        return .valid
    }

    /// Padmé with a 1 024-byte floor (section 2.2), by bit counting.
    static func referencePaddedSize(_ length: UInt64) -> UInt64 {
        guard length > UInt64(paddingFloor) else { return UInt64(paddingFloor) }
        let e = bitLength(length) - 1
        let s = bitLength(UInt64(e))
        let mask = (UInt64(1) << UInt64(e - s)) - 1
        return (length + mask) & ~mask
    }

    /// The number of bits of `value` (0 for 0), by shifting.
    static func bitLength(_ value: UInt64) -> Int {
        var v = value, bits = 0
        while v > 0 {
            v >>= 1
            bits += 1
        }
        return bits
    }

    static func bigEndian(_ value: UInt32) -> Data {
        Data([UInt8(value >> 24), UInt8((value >> 16) & 0xff), UInt8((value >> 8) & 0xff), UInt8(value & 0xff)])
    }

    static func expand(_ pattern: Data, _ size: Int) throws -> Data {
        guard size > 0 else { return Data() }
        try require(!pattern.isEmpty, "plaintextPattern is empty but plaintextSize is \(size)")
        var out = Data(capacity: size)
        while out.count < size { out.append(pattern.prefix(size - out.count)) }
        return out
    }

    /// Section 2.5 from the specification: the plaintext, or nil when any check fails.
    static func referenceDecrypt(_ blob: Data, key: SecretBytes, plaintextSize: UInt64, hash: Data) -> Data? {
        let padded = Int(referencePaddedSize(plaintextSize))
        let count = (padded + chunkSize - 1) / chunkSize
        guard blob.count == padded + tagLength * count, SHA256.hash(blob) == hash, key.count == 32,
            let okm = try? HKDF.deriveKey(inputKeyMaterial: key, salt: Data(count: 32), info: info, length: 51)
        else { return nil }
        var plaintext = Data()
        for i in 0..<count {
            let start = i * (chunkSize + tagLength)
            let end = min(start + chunkSize + tagLength, blob.count)
            let nonce = okm.slice(32..<51).unsafeData + bigEndian(UInt32(i)) + Data([i == count - 1 ? 1 : 0])
            guard let chunk = try? XChaCha20Poly1305.open(blob.subdata(in: start..<end), key: okm.slice(0..<32), nonce: nonce, authenticating: Data()) else {
                return nil
            }
            plaintext.append(chunk)
        }
        guard plaintext.suffix(from: Int(plaintextSize)).allSatisfy({ $0 == 0 }) else { return nil }
        return plaintext.prefix(Int(plaintextSize))
    }

    /// The `encrypt` test with `tcId` in `file`.
    static func encryptTest(_ file: JSONValue, tcId: Int) throws -> JSONValue {
        guard case .array(let groups)? = file["testGroups"] else { throw VectorCheckFailure("no testGroups") }
        for group in groups where group["type"] == .string("encrypt") {
            guard case .array(let tests)? = group["tests"] else { continue }
            if let test = tests.first(where: { $0["tcId"] == .int(tcId) }) { return test }
        }
        throw VectorCheckFailure("tcId \(tcId) is not an encrypt test of this file")
    }

    /// A `blobFrom` blob: byte ranges of an encrypt test's blob (its chunks' ciphertexts in order), then XORs.
    static func derivedBlob(_ spec: JSONValue, file: JSONValue) throws -> Data {
        let source = try encryptTest(file, tcId: try spec.int("tcId"))
        var original = Data()
        for chunk in try source.array("chunks") { original.append(try chunk.hex("ciphertext")) }
        var blob = Data()
        for range in try spec.array("ranges") {
            guard case .array(let bounds) = range, bounds.count == 2, case .int(let start) = bounds[0], case .int(let end) = bounds[1],
                0 <= start, start <= end, end <= original.count
            else { throw VectorCheckFailure("blobFrom.ranges has a range that is not [start, end] within the blob") }
            blob.append(original.subdata(in: start..<end))
        }
        for edit in try spec.array("xor") {
            let offset = try edit.int("offset"), value = try edit.hex("value")
            try require(blob.indices.contains(offset) && value.count == 1, "blobFrom.xor offset \(offset) outside the blob, or value not one byte")
            blob[offset] ^= value[0]
        }
        return blob
    }

    // MARK: this verifier's own mapping of Text's attachment and location

    static let kinds: [Int: AttachmentPointer.Kind] = [1: .image, 2: .video, 3: .audio, 4: .document]

    static func messageContent(from proto: ProtoContent) throws -> MessageContent {
        let base = try ConversationsTopic.messageContent(from: proto)
        func media(_ text: TextMessage, _ source: ProtoText) throws -> TextMessage {
            var text = text
            if source.hasAttachment {
                let p = source.attachment
                guard let kind = kinds[p.kind.rawValue] else { throw VectorCheckFailure("a pointer of kind \(p.kind.rawValue) has no Swift value") }
                text.attachment = AttachmentPointer(
                    blobID: p.blobID, key: SecretBytes(p.key), plaintextSize: p.plaintextSize, ciphertextSize: p.ciphertextSize, contentType: p.contentType,
                    fileName: p.fileName, ciphertextSHA256: p.ciphertextSha256, kind: kind, voiceNote: p.voiceNote, width: p.width, height: p.height,
                    durationMilliseconds: p.durationMs, thumbnail: p.thumbnail, blobExpiresAtMilliseconds: p.blobExpiresAtMs)
            }
            if source.hasLocation {
                text.location = Location(latitude: source.location.latitude, longitude: source.location.longitude, label: source.location.label)
            }
            return text
        }
        let body: MessageContent.Body
        switch (base.body, proto.body) {
        case (.text(let text), .text(let source)?):
            body = .text(try media(text, source))
        case (.sentTranscript(var transcript), .sentTranscript(let source)?):
            if case .text(let text) = transcript.body, case .text(let inner)? = source.body { transcript.body = .text(try media(text, inner)) }
            body = .sentTranscript(transcript)
        default:
            body = base.body
        }
        return MessageContent(messageID: base.messageID, sentAtMilliseconds: base.sentAtMilliseconds, body: body, singleUseSession: base.singleUseSession)
    }

    static func proto(of content: MessageContent) throws -> ProtoContent {
        var proto = try ConversationsTopic.proto(of: content)
        func media(_ text: TextMessage, _ out: inout ProtoText) {
            if let pointer = text.attachment {
                var p = ProtoAttachmentPointer()
                p.blobID = pointer.blobID
                p.key = pointer.key.unsafeData
                p.plaintextSize = pointer.plaintextSize
                p.ciphertextSize = pointer.ciphertextSize
                p.chunkSize = UInt32(chunkSize)
                p.contentType = pointer.contentType
                p.fileName = pointer.fileName
                p.ciphertextSha256 = pointer.ciphertextSHA256
                p.kind = ProtoAttachmentKind(rawValue: kinds.first { $0.value == pointer.kind }!.key)!
                p.voiceNote = pointer.voiceNote
                p.width = pointer.width
                p.height = pointer.height
                p.durationMs = pointer.durationMilliseconds
                p.thumbnail = pointer.thumbnail
                p.blobExpiresAtMs = pointer.blobExpiresAtMilliseconds
                out.attachment = p
            }
            if let location = text.location {
                var l = ProtoLocation()
                l.latitude = location.latitude
                l.longitude = location.longitude
                l.label = location.label
                out.location = l
            }
        }
        switch (content.body, proto.body) {
        case (.text(let text), .text(var out)?):
            media(text, &out)
            proto.body = .text(out)
        case (.sentTranscript(let transcript), .sentTranscript(var out)?):
            if case .text(let text) = transcript.body, case .text(var inner)? = out.body {
                media(text, &inner)
                out.body = .text(inner)
                proto.body = .sentTranscript(out)
            }
        default:
            break
        }
        return proto
    }
}
