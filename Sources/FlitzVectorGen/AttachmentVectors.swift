import FlitzCrypto
import FlitzProtocol
import FlitzVectors
import Foundation

/// `vectors/attachment.json`: attachment encryption (`protocol/attachments.md` section 2: HKDF, Padmé padding, 64 KiB
/// chunks, nonces with index and last-chunk flag, the blob hash), the verification of a downloaded blob (section 2.5),
/// single chunks opened alone, `padded_size` for a table of lengths, and `Text` contents carrying an
/// `AttachmentPointer` or a `Location` with the decoding rules of section 3.
enum AttachmentVectors {
    static let label = "flitz-vectors/attachment"
    /// 2026-01-01T00:00:00Z in milliseconds.
    static let sentAt: Int64 = 1_767_225_600_000
    /// 30 days later: the blobs' expiry in the pointers.
    static let expiresAt: Int64 = sentAt + 30 * 86_400_000

    /// One encrypted file of the `encrypt` group.
    struct File {
        let comment: String
        let flags: [String]
        let key: Data
        let pattern: Data
        let size: Int
        var plaintext: Data { Self.expand(pattern, size) }
        var blob: Data { try! AttachmentCipher.encrypt(plaintext, attachmentKey: SecretBytes(key)).blob }

        /// `pattern` repeated and cut to `size` bytes (the vectors' compact form of a plaintext).
        static func expand(_ pattern: Data, _ size: Int) -> Data {
            guard size > 0 else { return Data() }
            var out = Data(capacity: size)
            while out.count < size { out.append(pattern.prefix(size - out.count)) }
            return out
        }
    }

    static func make() throws -> VectorFileBuilder {
        let random = SeededRandom(label: label)
        // Draw order (documented in the description): five attachment keys (32 each, one per encrypted file), the
        // 251-byte pattern of the multi-chunk file, the key of the non-zero-padding blob (32), five blob ids (16 each),
        // a 64-byte stand-in thumbnail, an unsend token (32), three message ids (16 each).
        let keys = (0..<5).map { _ in random.bytes(32) }
        let pattern = random.bytes(251)
        let paddingKey = random.bytes(32)
        let blobIDs = (0..<5).map { _ in random.bytes(16) }
        var thumbnail = Data([0xff, 0xd8, 0xff, 0xe0])  // a JPEG's first bytes, then drawn bytes: decoders do not parse it
        thumbnail.append(random.bytes(64))
        let unsendToken = random.bytes(32)
        let messageIDs = (0..<3).map { _ in random.bytes(16) }

        let files = [
            File(comment: "an empty file: 1 024 bytes of padding in one last chunk", flags: ["EmptyFile", "UnderFloor", "SingleChunk"], key: keys[0], pattern: Data(), size: 0),
            File(
                comment: "a short text file under the 1 024-byte floor", flags: ["UnderFloor", "SingleChunk"], key: keys[1],
                pattern: Data("Hallo Bob! Here is the file. 👋\n".utf8), size: Data("Hallo Bob! Here is the file. 👋\n".utf8).count),
            File(comment: "exactly 1 024 bytes: no padding", flags: ["Boundary", "SingleChunk"], key: keys[2], pattern: Data("0123456789abcdef".utf8), size: 1_024),
            File(
                comment: "1 025 bytes: the first Padmé bucket above the floor (1 088)", flags: ["Boundary", "SingleChunk"], key: keys[3],
                pattern: Data("Flitz attachment ".utf8), size: 1_025),
            File(
                comment: "150 000 bytes: padded to 151 552, three chunks, the last one 20 480 bytes", flags: ["MultiChunk", "ShortLastChunk"],
                key: keys[4], pattern: pattern, size: 150_000),
        ]
        let big = files[4]
        let bigBlob = big.blob
        let bigPointer = AttachmentPointer(
            blobID: blobIDs[0], key: SecretBytes(big.key), plaintextSize: UInt64(big.size), contentType: "image/jpeg", fileName: "IMG_2041.jpg",
            ciphertextSHA256: SHA256.hash(bigBlob), kind: .image, width: 4_032, height: 3_024, thumbnail: thumbnail,
            blobExpiresAtMilliseconds: expiresAt)

        return VectorFileBuilder(
            topic: "attachment",
            description: "Attachment encryption (attachments.md section 2): okm = HKDF-SHA-256(salt = 32 zero bytes, ikm = attachmentKey, info = "
                + "\"FlitzAttachment-v1\", 51 bytes) = chunkKey (32) || noncePrefix (19); the plaintext (plaintextPattern repeated and cut to "
                + "plaintextSize bytes) is padded with zeros to paddedSize (Padme with a 1 024-byte floor) and cut into 65 536-byte chunks, the "
                + "last one shorter; chunk i is XChaCha20-Poly1305 under nonce = noncePrefix || u32be(i) || u8(last) with empty associated data; "
                + "the blob is the chunks' ciphertexts (each with its 16-byte tag) in order and blobSha256 its SHA-256. decrypt gives a blob "
                + "(inline, or blobFrom: byte ranges of an encrypt test's blob, concatenated, then bytes XORed) and what the pointer says; "
                + "openChunk opens one chunk of an encrypt test alone under an index and flag; paddedSize is a table of lengths; encode and "
                + "decode are Text contents carrying an AttachmentPointer or a Location, fields in the protobuf JSON mapping as in "
                + "conversations.json (bytes as lowercase hex, 64-bit integers as decimal strings, doubles as strings: the shortest decimal "
                + "that reads back as the same binary64, or NaN / Infinity / -Infinity). Drawn from SeededRandom(label: \"\(label)\"), in "
                + "order: five attachment keys (32 each, the encrypt tests in order), the 251-byte pattern of the multi-chunk file, the key of "
                + "the non-zero-padding blob (32), five blob ids (16 each), 64 bytes of a stand-in thumbnail (after the bytes ffd8ffe0), an "
                + "unsend token (32), three message ids (16 each).",
            specification: "protocol/attachments.md sections 2, 3 and 6; flitz_session.proto (Text, AttachmentPointer, Location)",
            notes: notes,
            seeds: [label],
            groups: [
                VectorGroup(
                    type: "encrypt",
                    fields: [
                        "info": .string("FlitzAttachment-v1"), "salt": .hex(Data(count: 32)), "chunkSize": .int(AttachmentLayout.chunkSize),
                        "paddingFloor": .int(AttachmentLayout.paddingFloor),
                    ],
                    tests: try files.map(encryptTest)),
                VectorGroup(type: "decrypt", tests: try decryptTests(files: files, paddingKey: paddingKey)),
                VectorGroup(type: "openChunk", tests: openChunkTests(files: files)),
                VectorGroup(type: "paddedSize", tests: paddedSizeTests()),
                VectorGroup(
                    type: "encode",
                    tests: try encodeTests(
                        big: bigPointer, files: files, blobIDs: blobIDs, unsendToken: unsendToken, messageIDs: messageIDs)),
                VectorGroup(type: "decode", tests: try decodeTests(pointer: bigPointer, messageID: messageIDs[2])),
            ])
    }

    // MARK: encrypt

    /// The tcId of file `index` in the `encrypt` group (the first group, numbered from 1).
    static func encryptTcId(_ index: Int) -> Int { index + 1 }

    static func encryptTest(_ file: File) throws -> VectorTest {
        let plaintext = file.plaintext
        let layout = AttachmentLayout(plaintextSize: UInt64(file.size))
        let keys = try AttachmentKeys(attachmentKey: SecretBytes(file.key))
        let okm = try HKDF.deriveKey(inputKeyMaterial: SecretBytes(file.key), salt: Data(count: 32), info: AttachmentKeys.info, length: 51)
        var padded = plaintext
        padded.append(Data(count: Int(layout.paddedSize) - plaintext.count))
        var chunks: [JSONValue] = []
        var blob = Data()
        for index in 0..<layout.chunkCount {
            let range = layout.plaintextRange(ofChunk: index)
            let sealed = keys.sealChunk(padded.subdata(in: Int(range.lowerBound)..<Int(range.upperBound)), index: UInt32(index), isLast: layout.isLast(index))
            precondition(UInt64(blob.count) == layout.ciphertextRange(ofChunk: index).lowerBound)
            blob.append(sealed)
            chunks.append(
                .object([
                    "index": .int(Int(index)), "last": .bool(layout.isLast(index)), "plaintextOffset": .int(Int(range.lowerBound)),
                    "plaintextLength": .int(range.count), "ciphertextOffset": .int(blob.count - sealed.count),
                    "nonce": .hex(keys.nonce(chunk: UInt32(index), isLast: layout.isLast(index))), "ciphertext": .hex(sealed),
                ]))
        }
        let (whole, sha) = try AttachmentCipher.encrypt(plaintext, attachmentKey: SecretBytes(file.key))
        precondition(whole == blob && sha == SHA256.hash(blob))
        return VectorTest(
            file.comment, flags: file.flags,
            [
                "attachmentKey": .hex(file.key), "plaintextPattern": .hex(file.pattern), "plaintextSize": .int(file.size),
                "plaintextSha256": .hex(SHA256.hash(plaintext)), "okm": .hex(okm), "chunkKey": .hex(keys.chunkKey), "noncePrefix": .hex(keys.noncePrefix),
                "paddedSize": .int(Int(layout.paddedSize)), "chunkCount": .int(Int(layout.chunkCount)), "ciphertextSize": .int(Int(layout.ciphertextSize)),
                "chunks": .array(chunks), "blobSha256": .hex(sha),
            ])
    }

    // MARK: decrypt

    /// A blob made from an encrypt test's blob: `ranges` concatenated, then each (offset, value) XORed in.
    static func derived(_ blob: Data, ranges: [Range<Int>], xor: [(Int, UInt8)] = []) -> Data {
        var out = Data()
        for range in ranges { out.append(blob.subdata(in: range)) }
        for (offset, value) in xor { out[offset] ^= value }
        return out
    }

    static func blobFrom(_ tcId: Int, ranges: [Range<Int>], xor: [(Int, UInt8)] = []) -> JSONValue {
        .object([
            "tcId": .int(tcId), "ranges": .array(ranges.map { .array([.int($0.lowerBound), .int($0.upperBound)]) }),
            "xor": .array(xor.map { .object(["offset": .int($0.0), "value": .hex(Data([$0.1]))]) }),
        ])
    }

    static func decryptTests(files: [File], paddingKey: Data) throws -> [VectorTest] {
        var tests: [VectorTest] = []
        let failed = VectorTest.Result.invalid(VectorErrorRef(FlitzProtocolError.Code.authenticationFailed))
        /// Adds a test of a blob derived from file `fileIndex`'s blob; `hashOf` is what the pointer's hash covers.
        func add(
            _ comment: String, flags: [String], file fileIndex: Int, ranges: [Range<Int>]? = nil, xor: [(Int, UInt8)] = [],
            plaintextSize: Int? = nil, hashOfOriginal: Bool = false, key: Data? = nil
        ) throws {
            let file = files[fileIndex]
            let original = file.blob
            let ranges = ranges ?? [0..<original.count]
            let blob = derived(original, ranges: ranges, xor: xor)
            let size = plaintextSize ?? file.size
            let hash = SHA256.hash(hashOfOriginal ? original : blob)
            let pointer = AttachmentPointer(
                blobID: Data(count: 16), key: SecretBytes(key ?? file.key), plaintextSize: UInt64(size), contentType: "", fileName: "",
                ciphertextSHA256: hash, kind: .document, blobExpiresAtMilliseconds: 0)
            var fields: [String: JSONValue] = [
                "attachmentKey": .hex(key ?? file.key), "plaintextSize": .int(size), "ciphertextSha256": .hex(hash),
                "blobFrom": blobFrom(encryptTcId(fileIndex), ranges: ranges, xor: xor),
            ]
            do {
                let plaintext = try AttachmentCipher.decrypt(blob, pointer: pointer)
                precondition(plaintext == file.plaintext, comment)
                fields["plaintextSha256"] = .hex(SHA256.hash(plaintext))
                tests.append(VectorTest(comment, flags: flags, fields))
            } catch {
                precondition(error.code == .authenticationFailed, comment)
                tests.append(VectorTest(comment, flags: flags, result: failed, fields))
            }
        }
        let big = 4, chunk = AttachmentLayout.sealedChunkSize
        let bigSize = Int(AttachmentLayout(plaintextSize: 150_000).ciphertextSize)
        try add("the whole multi-chunk blob with its pointer", flags: ["MultiChunk"], file: big)
        try add("the short file's blob", flags: ["UnderFloor"], file: 1)
        try add("the empty file's blob", flags: ["EmptyFile"], file: 0)
        try add(
            "one byte of chunk 1 flipped; the pointer's hash is the original blob's", flags: ["HashMismatch"], file: big,
            xor: [(chunk + 1_000, 0x01)], hashOfOriginal: true)
        try add(
            "one byte of chunk 1 flipped and the hash recomputed: the chunk does not verify", flags: ["TamperedChunk"], file: big,
            xor: [(chunk + 1_000, 0x01)])
        try add("the last chunk's tag flipped, hash recomputed", flags: ["TamperedChunk"], file: big, xor: [(bigSize - 1, 0x80)])
        try add("chunk 0's first byte flipped, hash recomputed", flags: ["TamperedChunk"], file: big, xor: [(0, 0x01)])
        try add(
            "the last chunk dropped, original pointer: the size does not match (blob is truncated)", flags: ["Truncated"], file: big,
            ranges: [0..<(2 * chunk)], hashOfOriginal: true)
        try add(
            "the last chunk dropped, a pointer of 131 072 bytes and the truncated blob's hash: the now-last chunk was sealed as not last",
            flags: ["Truncated", "LastFlag"], file: big, ranges: [0..<(2 * chunk)], plaintextSize: 131_072)
        try add(
            "chunks 0 and 1 swapped, hash recomputed", flags: ["Reordered"], file: big, ranges: [chunk..<(2 * chunk), 0..<chunk, (2 * chunk)..<bigSize])
        try add("one byte appended: longer than the pointer says", flags: ["Extended"], file: 1, ranges: [0..<1_040, 0..<1])
        try add("another file's key", flags: ["WrongKey"], file: 1, key: files[0].key)
        try add(
            "the short file's blob with the pointer of a 1-byte shorter file: its last byte (0a) is read as padding", flags: ["WrongSize", "NonZeroPadding"],
            file: 1, plaintextSize: files[1].size - 1)

        // A blob whose padding is not zero, sealed correctly under its own key (attachments.md 2.2: MUST reject).
        let keys = try AttachmentKeys(attachmentKey: SecretBytes(paddingKey))
        var padded = Data("bad padding".utf8)
        padded.append(Data(count: 1_024 - padded.count))
        padded[1_023] = 0x01
        let blob = keys.sealChunk(padded, index: 0, isLast: true)
        let pointer = AttachmentPointer(
            blobID: Data(count: 16), key: SecretBytes(paddingKey), plaintextSize: 11, contentType: "", fileName: "", ciphertextSHA256: SHA256.hash(blob),
            kind: .document, blobExpiresAtMilliseconds: 0)
        do {
            _ = try AttachmentCipher.decrypt(blob, pointer: pointer)
            preconditionFailure("non-zero padding accepted")
        } catch {
            precondition(error.code == .authenticationFailed)
        }
        tests.append(
            VectorTest(
                "11 bytes whose last padding byte is 01 (every chunk verifies, the hash matches)", flags: ["NonZeroPadding"], result: failed,
                [
                    "attachmentKey": .hex(paddingKey), "plaintextSize": .int(11), "ciphertextSha256": .hex(SHA256.hash(blob)), "blob": .hex(blob),
                    "paddedPlaintext": .hex(padded),
                ]))
        return tests
    }

    // MARK: openChunk

    static func openChunkTests(files: [File]) -> [VectorTest] {
        let big = files[4]
        let layout = AttachmentLayout(plaintextSize: UInt64(big.size))
        let keys = try! AttachmentKeys(attachmentKey: SecretBytes(big.key))
        let blob = big.blob
        var padded = big.plaintext
        padded.append(Data(count: Int(layout.paddedSize) - big.size))
        func test(_ comment: String, flags: [String], chunk: UInt64, index: UInt32, last: Bool) -> VectorTest {
            let range = layout.ciphertextRange(ofChunk: chunk)
            let sealed = blob.subdata(in: Int(range.lowerBound)..<Int(range.upperBound))
            var fields: [String: JSONValue] = [
                "chunkOf": .object(["tcId": .int(encryptTcId(4)), "chunk": .int(Int(chunk))]), "index": .int(Int(index)), "last": .bool(last),
            ]
            do {
                let plain = try keys.openChunk(sealed, index: index, isLast: last)
                let expected = layout.plaintextRange(ofChunk: UInt64(index))
                precondition(plain == padded.subdata(in: Int(expected.lowerBound)..<Int(expected.upperBound)))
                fields["plaintextSha256"] = .hex(SHA256.hash(plain))
                fields["plaintextLength"] = .int(plain.count)
                return VectorTest(comment, flags: flags, fields)
            } catch {
                return VectorTest(comment, flags: flags, result: .invalid(VectorErrorRef(FlitzProtocolError.Code.authenticationFailed)), fields)
            }
        }
        return [
            test("chunk 1 alone (bytes 65 552 to 131 103 of the blob), index 1, not last", flags: ["Seek"], chunk: 1, index: 1, last: false),
            test("chunk 2 alone, index 2, last", flags: ["Seek", "LastFlag"], chunk: 2, index: 2, last: true),
            test("chunk 0 alone, index 0, not last", flags: ["Seek"], chunk: 0, index: 0, last: false),
            test("chunk 1 opened as index 0 (moved)", flags: ["Seek", "Reordered"], chunk: 1, index: 0, last: false),
            test("chunk 1 opened as the last chunk (what a truncated blob ends with)", flags: ["Seek", "Truncated", "LastFlag"], chunk: 1, index: 1, last: true),
            test("chunk 2 opened as not last (what an extended blob would need)", flags: ["Seek", "LastFlag"], chunk: 2, index: 2, last: false),
            test("chunk 0 opened as the last chunk at index 2", flags: ["Seek", "Reordered"], chunk: 0, index: 2, last: true),
        ]
    }

    // MARK: paddedSize

    static func paddedSizeTests() -> [VectorTest] {
        // The largest plaintext whose blob fits the default 100 MiB blob limit (ciphertext bytes).
        let limit: UInt64 = 104_857_600
        var low: UInt64 = 0, high: UInt64 = limit
        while low < high {
            let mid = (low + high + 1) / 2
            if AttachmentLayout(plaintextSize: mid).ciphertextSize <= limit { low = mid } else { high = mid - 1 }
        }
        let lengths: [(UInt64, String, [String])] = [
            (0, "empty: the floor", ["UnderFloor"]), (1, "one byte: the floor", ["UnderFloor"]), (1_023, "just under the floor", ["UnderFloor"]),
            (1_024, "exactly the floor", ["Boundary"]), (1_025, "E = 10, S = 4, m = 63", ["Boundary"]), (1_100, "inside the first bucket above the floor", []),
            (2_047, "E = 10", []), (2_048, "a power of two stays", ["Boundary"]), (2_049, "E = 11, S = 4, m = 127", []),
            (65_535, "one byte under a chunk", ["Boundary"]), (65_536, "exactly one chunk", ["Boundary"]),
            (65_537, "one byte over a chunk: two chunks, the last 2 048 bytes", ["Boundary", "MultiChunk"]),
            (131_073, "just over two chunks", ["MultiChunk"]), (150_000, "the multi-chunk encrypt test", ["MultiChunk"]),
            (1_048_575, "one byte under 1 MiB", []), (1_048_576, "1 MiB", ["Boundary"]), (1_048_577, "1 MiB + 1: E = 20, S = 5, m = 32 767", ["Boundary"]),
            (10_485_761, "10 MiB + 1", []), (low, "the largest file whose blob fits the default 100 MiB blob limit", ["BlobLimit"]),
            (low + 1, "one byte more: its blob is over 100 MiB", ["BlobLimit"]),
            (104_857_600, "100 MiB of plaintext: padded 100 MiB, but 1 600 tags take the blob over the limit", ["BlobLimit"]),
            (1_073_741_825, "1 GiB + 1", []), (4_294_967_297, "2^32 + 1 (needs 64-bit sizes)", ["Large"]),
            (1_099_511_627_776, "2^40: the largest plaintext_size (section 3)", ["Large", "Boundary"]),
        ]
        return lengths.map { length, comment, flags in
            let layout = AttachmentLayout(plaintextSize: length)
            var fields: [String: JSONValue] = [
                "length": .int(Int(length)), "paddedSize": .int(Int(layout.paddedSize)), "chunkCount": .int(Int(layout.chunkCount)),
                "ciphertextSize": .int(Int(layout.ciphertextSize)),
                "lastChunkLength": .int(layout.plaintextRange(ofChunk: layout.chunkCount - 1).count),
            ]
            if length > 1_024 {
                let e = 63 - length.leadingZeroBitCount
                let s = (63 - UInt64(e).leadingZeroBitCount) + 1
                fields["exponent"] = .int(e)
                fields["mantissaBits"] = .int(s)
                fields["mask"] = .int((1 << (e - s)) - 1)
            }
            return VectorTest(comment, flags: flags, fields)
        }
    }

    // MARK: encode

    static func encodeTests(big: AttachmentPointer, files: [File], blobIDs: [Data], unsendToken: Data, messageIDs: [Data]) throws -> [VectorTest] {
        var tests: [VectorTest] = []
        func add(_ comment: String, flags: [String], _ body: MessageContent.Body, id: Data? = nil) throws {
            let content = MessageContent(messageID: id ?? messageIDs[0], sentAtMilliseconds: sentAt, body: body)
            let encoded = content.encoded()
            var proto = try ProtoContent(serializedBytes: encoded)
            proto.padding = Data()
            let n = try proto.serializedData().count
            precondition(try! MessageContent(decoding: encoded) == content, "\(comment) does not round-trip")
            tests.append(
                VectorTest(
                    comment, flags: flags,
                    [
                        "body": .string(ConversationVectors.bodyName(body)), "fields": try ContentJSON.fields(of: proto), "unpaddedLength": .int(n),
                        "paddingLength": .int(encoded.count == n ? 0 : encoded.count - n - 2), "encoded": .hex(encoded),
                    ]))
        }
        func pointer(_ file: File, blobID: Data, type: String, name: String, kind: AttachmentPointer.Kind) -> AttachmentPointer {
            AttachmentPointer(
                blobID: blobID, key: SecretBytes(file.key), plaintextSize: UInt64(file.size), contentType: type, fileName: name,
                ciphertextSHA256: SHA256.hash(file.blob), kind: kind, blobExpiresAtMilliseconds: expiresAt)
        }
        try add(
            "a photo with a caption, dimensions and a thumbnail (the multi-chunk file's pointer)", flags: ["Attachment", "Image", "Caption", "Thumbnail"],
            .text(TextMessage("Sonnenuntergang am See 🌅", attachment: big)))
        var video = pointer(files[3], blobID: blobIDs[1], type: "video/mp4", name: "clip.mp4", kind: .video)
        video.width = 1_280
        video.height = 720
        video.durationMilliseconds = 12_345
        try add("a video without a caption, with dimensions and duration", flags: ["Attachment", "Video"], .text(TextMessage("", attachment: video)))
        var voice = pointer(files[2], blobID: blobIDs[2], type: "audio/ogg", name: "", kind: .audio)
        voice.voiceNote = true
        voice.durationMilliseconds = 4_200
        try add("a voice note (audio, voice_note, duration, no file name)", flags: ["Attachment", "Audio", "VoiceNote"], .text(TextMessage("", attachment: voice)))
        try add(
            "an empty document with neither content type nor file name", flags: ["Attachment", "Document", "EmptyFile"],
            .text(TextMessage("", attachment: pointer(files[0], blobID: blobIDs[3], type: "", name: "", kind: .document))))
        try add(
            "a document with a non-ASCII file name and a caption", flags: ["Attachment", "Document", "Caption", "NonASCII"],
            .text(TextMessage("Der Bericht", attachment: pointer(files[1], blobID: blobIDs[4], type: "application/pdf", name: "Bericht März 2026.pdf", kind: .document))))
        try add(
            "a forward of the photo: the same pointer, forward_count 1", flags: ["Attachment", "Image", "Forward"],
            .text(TextMessage("Sonnenuntergang am See 🌅", forwardCount: 1, attachment: big)), id: messageIDs[1])
        try add(
            "the photo's sent transcript with its unsend token (to the sender's own devices)", flags: ["Attachment", "SentTranscript", "UnsendToken"],
            .sentTranscript(SentTranscript(destinationHandle: "bob", body: .text(TextMessage("Sonnenuntergang am See 🌅", attachment: big)), unsendToken: unsendToken)))
        try add(
            "a location with a label", flags: ["Location", "Caption"],
            .text(TextMessage("Treffpunkt", location: Location(latitude: 52.520008, longitude: 13.404954, label: "Alexanderplatz, Berlin"))))
        try add(
            "a location south and east, without a label", flags: ["Location"], .text(TextMessage("", location: Location(latitude: -33.8688, longitude: 151.2093))))
        try add(
            "a location at the limits (90, -180)", flags: ["Location", "Boundary"], .text(TextMessage("", location: Location(latitude: 90, longitude: -180))))
        try add(
            "a location on the equator at the prime meridian (0, 0: both fields omitted)", flags: ["Location", "DefaultValues"],
            .text(TextMessage("", location: Location(latitude: 0, longitude: 0, label: "Null Island"))))
        try add(
            "a location's sent transcript", flags: ["Location", "SentTranscript"],
            .sentTranscript(SentTranscript(destinationHandle: "bob", body: .text(TextMessage("", location: Location(latitude: 48.8584, longitude: 2.2945))))))
        return tests
    }

    // MARK: decode

    static func decodeTests(pointer: AttachmentPointer, messageID: Data) throws -> [VectorTest] {
        var goodPointer = ProtoAttachmentPointer()
        goodPointer.blobID = pointer.blobID
        goodPointer.key = pointer.key.unsafeData
        goodPointer.plaintextSize = pointer.plaintextSize
        goodPointer.ciphertextSize = pointer.ciphertextSize
        goodPointer.chunkSize = 65_536
        goodPointer.contentType = pointer.contentType
        goodPointer.fileName = pointer.fileName
        goodPointer.ciphertextSha256 = pointer.ciphertextSHA256
        goodPointer.kind = .image
        goodPointer.blobExpiresAtMs = pointer.blobExpiresAtMilliseconds
        var goodLocation = ProtoLocation()
        goodLocation.latitude = 52.520008
        goodLocation.longitude = 13.404954
        goodLocation.label = "Alexanderplatz"

        func content(_ build: (inout ProtoText) -> Void) -> ProtoContent {
            var text = ProtoText()
            text.body = "caption"
            build(&text)
            var proto = ProtoContent()
            proto.messageID = messageID
            proto.sentAtMs = sentAt
            proto.body = .text(text)
            return proto
        }
        func attachment(_ change: (inout ProtoAttachmentPointer) -> Void) -> ProtoContent {
            content {
                var p = goodPointer
                change(&p)
                $0.attachment = p
            }
        }
        func location(_ change: (inout ProtoLocation) -> Void) -> ProtoContent {
            content {
                var l = goodLocation
                change(&l)
                $0.location = l
            }
        }

        var tests: [VectorTest] = []
        /// `withFields`: false for inputs too large to repeat as fields (the thumbnails).
        func valid(_ comment: String, flags: [String], _ proto: ProtoContent, withFields: Bool = true) throws {
            let bytes = try proto.serializedData()
            let decoded = try! MessageContent(decoding: bytes)
            var fields: [String: JSONValue] = ["encoded": .hex(bytes), "body": .string(ConversationVectors.bodyName(decoded.body))]
            if withFields { fields["fields"] = try ContentJSON.fields(of: proto) }
            tests.append(VectorTest(comment, flags: flags, fields))
        }
        func invalid(_ comment: String, flags: [String], _ proto: ProtoContent, withFields: Bool = true) throws {
            let bytes = try proto.serializedData()
            do {
                _ = try MessageContent(decoding: bytes)
                preconditionFailure("\(comment): decodes")
            } catch {
                precondition(error.code == .malformedMessage)
            }
            var fields: [String: JSONValue] = ["encoded": .hex(bytes)]
            if withFields { fields["fields"] = try ContentJSON.fields(of: proto) }
            tests.append(VectorTest(comment, flags: flags, result: .invalid(VectorErrorRef(FlitzProtocolError.Code.malformedMessage)), fields))
        }

        // Valid boundaries.
        try valid("a pointer exactly right", flags: ["Attachment"], attachment { _ in })
        try valid("a content type of 127 bytes", flags: ["Attachment", "Boundary"], attachment { $0.contentType = "application/" + String(repeating: "x", count: 115) })
        try valid(
            "a file name of 255 bytes (85 × 3-byte €)", flags: ["Attachment", "Boundary", "NonASCII"],
            attachment { $0.fileName = String(repeating: "€", count: 85) })
        try valid("a file name with spaces, dots and a colon", flags: ["Attachment"], attachment { $0.fileName = "Scan 12.05.2026: Seite 1 .pdf" })
        try valid(
            "a thumbnail of 24 576 bytes (no fields: too long to repeat)", flags: ["Attachment", "Thumbnail", "Boundary"],
            attachment { $0.thumbnail = Data(repeating: 0xab, count: 24_576) }, withFields: false)
        try valid(
            "a zero-byte file: ciphertext_size 1 040", flags: ["Attachment", "EmptyFile"],
            attachment {
                $0.plaintextSize = 0
                $0.ciphertextSize = 1_040
            })
        try valid("a location at (-90, 180)", flags: ["Location", "Boundary"], location {
            $0.latitude = -90
            $0.longitude = 180
        })
        try valid("a location label of 256 bytes", flags: ["Location", "Boundary"], location { $0.label = String(repeating: "ä", count: 128) })

        // Both.
        try invalid("a text with both an attachment and a location", flags: ["Both"], content {
            $0.attachment = goodPointer
            $0.location = goodLocation
        })
        // Lengths.
        try invalid("blob_id of 15 bytes", flags: ["Attachment", "BadLength"], attachment { $0.blobID = $0.blobID.prefix(15) })
        try invalid("blob_id of 17 bytes", flags: ["Attachment", "BadLength"], attachment { $0.blobID.append(0) })
        try invalid("no blob_id", flags: ["Attachment", "BadLength"], attachment { $0.blobID = Data() })
        try invalid("key of 31 bytes", flags: ["Attachment", "BadLength"], attachment { $0.key = $0.key.prefix(31) })
        try invalid("key of 33 bytes", flags: ["Attachment", "BadLength"], attachment { $0.key.append(0) })
        try invalid("no key", flags: ["Attachment", "BadLength"], attachment { $0.key = Data() })
        try invalid("ciphertext_sha256 of 31 bytes", flags: ["Attachment", "BadLength"], attachment { $0.ciphertextSha256 = $0.ciphertextSha256.prefix(31) })
        try invalid("ciphertext_sha256 of 33 bytes", flags: ["Attachment", "BadLength"], attachment { $0.ciphertextSha256.append(0) })
        try invalid("no ciphertext_sha256", flags: ["Attachment", "BadLength"], attachment { $0.ciphertextSha256 = Data() })
        // Sizes.
        try invalid("chunk_size 0 (absent)", flags: ["Attachment", "BadChunkSize"], attachment { $0.chunkSize = 0 })
        try invalid("chunk_size 65 535", flags: ["Attachment", "BadChunkSize"], attachment { $0.chunkSize = 65_535 })
        try invalid("chunk_size 1 048 576", flags: ["Attachment", "BadChunkSize"], attachment { $0.chunkSize = 1_048_576 })
        try invalid("ciphertext_size one more than section 2.3 gives", flags: ["Attachment", "BadSize"], attachment { $0.ciphertextSize += 1 })
        try invalid("ciphertext_size one less", flags: ["Attachment", "BadSize"], attachment { $0.ciphertextSize -= 1 })
        try invalid("ciphertext_size without the tags (the padded size)", flags: ["Attachment", "BadSize"], attachment { $0.ciphertextSize = 151_552 })
        try invalid("ciphertext_size 0 for a 150 000-byte file", flags: ["Attachment", "BadSize"], attachment { $0.ciphertextSize = 0 })
        try invalid(
            "a zero-byte file with ciphertext_size 0 (it is 1 040)", flags: ["Attachment", "BadSize", "EmptyFile"],
            attachment {
                $0.plaintextSize = 0
                $0.ciphertextSize = 0
            })
        try invalid(
            "plaintext_size 2^40 + 1 (over the limit) with its Padmé ciphertext_size", flags: ["Attachment", "BadSize", "TooLarge"],
            attachment {
                $0.plaintextSize = (1 << 40) + 1
                $0.ciphertextSize = 1_116_691_496_960 + 17_039_360 * 16
            })
        try invalid(
            "plaintext_size 2^64 - 1 (its buckets would overflow)", flags: ["Attachment", "BadSize", "TooLarge"],
            attachment {
                $0.plaintextSize = .max
                $0.ciphertextSize = .max
            })
        // Kind.
        try invalid("kind unspecified", flags: ["Attachment", "BadKind"], attachment { $0.kind = .unspecified })
        try invalid("kind 5 (unknown)", flags: ["Attachment", "BadKind"], attachment { $0.kind = .UNRECOGNIZED(5) })
        // Strings.
        try invalid("a content type of 128 bytes", flags: ["Attachment", "TooLong"], attachment { $0.contentType = "application/" + String(repeating: "x", count: 116) })
        try invalid(
            "a file name of 256 bytes (85 × € and one a)", flags: ["Attachment", "TooLong", "NonASCII"],
            attachment { $0.fileName = String(repeating: "€", count: 85) + "a" })
        try invalid("a file name with a slash", flags: ["Attachment", "BadFileName"], attachment { $0.fileName = "../etc/passwd" })
        try invalid("a file name with a backslash", flags: ["Attachment", "BadFileName"], attachment { $0.fileName = "C:\\temp.txt" })
        try invalid("a file name with a newline", flags: ["Attachment", "BadFileName"], attachment { $0.fileName = "a\nb.txt" })
        try invalid("a file name with NUL", flags: ["Attachment", "BadFileName"], attachment { $0.fileName = "a\u{0}.txt" })
        try invalid("a file name with DEL (U+007F)", flags: ["Attachment", "BadFileName"], attachment { $0.fileName = "a\u{7f}.txt" })
        try invalid("a file name with a C1 control (U+0085)", flags: ["Attachment", "BadFileName"], attachment { $0.fileName = "a\u{85}.txt" })
        try invalid(
            "a thumbnail of 24 577 bytes (no fields: too long to repeat)", flags: ["Attachment", "Thumbnail", "TooLong"],
            attachment { $0.thumbnail = Data(repeating: 0xab, count: 24_577) }, withFields: false)
        // Location.
        try invalid("latitude 90.000001", flags: ["Location", "OutOfRange"], location { $0.latitude = 90.000001 })
        try invalid("latitude -90.5", flags: ["Location", "OutOfRange"], location { $0.latitude = -90.5 })
        try invalid("longitude 180.5", flags: ["Location", "OutOfRange"], location { $0.longitude = 180.5 })
        try invalid("longitude -181", flags: ["Location", "OutOfRange"], location { $0.longitude = -181 })
        try invalid("latitude NaN", flags: ["Location", "NotFinite"], location { $0.latitude = .nan })
        try invalid("longitude NaN", flags: ["Location", "NotFinite"], location { $0.longitude = .nan })
        try invalid("latitude Infinity", flags: ["Location", "NotFinite"], location { $0.latitude = .infinity })
        try invalid("longitude -Infinity", flags: ["Location", "NotFinite"], location { $0.longitude = -.infinity })
        try invalid("a label of 257 bytes", flags: ["Location", "TooLong"], location { $0.label = String(repeating: "ä", count: 128) + "a" })
        return tests
    }

    static let notes: [String: String] = [
        "EmptyFile": "A file of 0 bytes: its blob is 1 024 zero bytes sealed as one last chunk (1 040 bytes).",
        "UnderFloor": "A file under the 1 024-byte padding floor.",
        "SingleChunk": "One chunk, sealed with last = 01.",
        "MultiChunk": "More than one 64 KiB chunk.",
        "ShortLastChunk": "The last chunk is shorter than 65 536 bytes.",
        "Boundary": "A value at the edge of its range.",
        "HashMismatch": "The blob does not match the pointer's ciphertext_sha256.",
        "TamperedChunk": "A chunk's bytes changed; the hash given matches the changed blob, so the chunk itself must fail.",
        "Truncated": "A blob without its last chunk.",
        "LastFlag": "The last-chunk flag of the nonce decides the outcome.",
        "Reordered": "A chunk at another index than the one it was sealed at.",
        "Extended": "A blob longer than its pointer says.",
        "WrongKey": "Another attachment key.",
        "WrongSize": "A pointer whose plaintext_size is not the file's (same ciphertext size).",
        "NonZeroPadding": "The padding bytes after plaintext_size are not all zero.",
        "Seek": "One chunk opened alone (a ranged download).",
        "BlobLimit": "Around the default blob limit of 104 857 600 ciphertext bytes.",
        "Large": "A length over 2^32.",
        "Attachment": "A Text carrying an AttachmentPointer (field 6).",
        "Location": "A Text carrying a Location (field 7).",
        "Image": "kind IMAGE.",
        "Video": "kind VIDEO.",
        "Audio": "kind AUDIO.",
        "VoiceNote": "voice_note set.",
        "Document": "kind DOCUMENT.",
        "Caption": "The Text's body is the caption.",
        "Thumbnail": "An inline thumbnail (at most 24 576 bytes).",
        "NonASCII": "Multi-byte UTF-8.",
        "Forward": "Text.forward_count: a forward re-sends the same pointer.",
        "SentTranscript": "A SentTranscript of the media text (to the sender's own devices).",
        "UnsendToken": "SentTranscript.unsend_token (32 bytes).",
        "DefaultValues": "Fields at their default value (0) are not encoded.",
        "Both": "A Text with both an attachment and a location.",
        "BadLength": "blob_id not 16 bytes, key not 32 or ciphertext_sha256 not 32.",
        "BadChunkSize": "chunk_size not 65 536.",
        "BadSize": "ciphertext_size not the section 2.3 value for plaintext_size.",
        "TooLarge": "plaintext_size over 2^40 bytes (section 3), whatever ciphertext_size says.",
        "BadKind": "kind unspecified or unknown.",
        "TooLong": "content_type over 127 bytes, file_name over 255, thumbnail over 24 576 or a label over 256.",
        "BadFileName": "A file name with '/', '\\' or a control character.",
        "OutOfRange": "A latitude outside -90...90 or a longitude outside -180...180.",
        "NotFinite": "A coordinate that is NaN or infinite.",
    ]
}
