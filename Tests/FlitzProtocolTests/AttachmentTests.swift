import FlitzCrypto
import FlitzProtocol
import Foundation
import SwiftProtobuf
import Testing

/// Attachment encryption and the pointer (`protocol/attachments.md` sections 2 and 3): round trips around the padding
/// and chunk boundaries, and every way a blob can be wrong (tampered, truncated, reordered, padded with non-zero bytes,
/// another hash, another key), chunks opened alone, Padmé's properties, the pointer's decoding rules, and the
/// streaming SHA-256.
struct AttachmentTests {
    /// Deterministic bytes: a file of `count` bytes drawn from `SeededRandom(label:)`.
    static func file(_ count: Int, label: String = "attachment-tests/file") -> Data {
        count == 0 ? Data() : SeededRandom(label: label).bytes(count)
    }

    static let key = SecretBytes(SeededRandom(label: "attachment-tests/key").bytes(32))

    static func pointer(for plaintext: Data, blob: Data, key: SecretBytes = key, plaintextSize: Int? = nil) -> AttachmentPointer {
        AttachmentPointer(
            blobID: Data(repeating: 7, count: 16), key: key, plaintextSize: UInt64(plaintextSize ?? plaintext.count), contentType: "application/octet-stream",
            fileName: "file.bin", ciphertextSHA256: SHA256.hash(blob), kind: .document, blobExpiresAtMilliseconds: 1_767_225_600_000)
    }

    /// Runs `body` and returns the `FlitzProtocolError` it throws (nil when it does not throw).
    static func protocolError(_ body: () throws -> Void) -> FlitzProtocolError? {
        do {
            try body()
            return nil
        } catch let error as FlitzProtocolError {
            return error
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    // MARK: round trips and layout

    @Test(arguments: [0, 1, 1_023, 1_024, 1_025, 65_535, 65_536, 65_537, 200_000])
    func roundTripsAroundTheBoundaries(size: Int) throws {
        let plaintext = Self.file(size)
        let (blob, sha) = try AttachmentCipher.encrypt(plaintext, attachmentKey: Self.key)
        let layout = AttachmentLayout(plaintextSize: UInt64(size))
        #expect(UInt64(blob.count) == layout.ciphertextSize)
        #expect(layout.ciphertextSize == layout.paddedSize + 16 * layout.chunkCount)
        #expect(layout.chunkCount == (layout.paddedSize + 65_535) / 65_536)
        #expect(sha == SHA256.hash(blob))
        #expect(try AttachmentCipher.decrypt(blob, pointer: Self.pointer(for: plaintext, blob: blob)) == plaintext)
        // The padding is zero bytes, so no chunk but the last ever holds padding.
        let lastPlain = layout.plaintextRange(ofChunk: layout.chunkCount - 1)
        #expect(lastPlain.upperBound == layout.paddedSize && !lastPlain.isEmpty)
        for index in 0..<layout.chunkCount {
            #expect(layout.isLast(index) == (index == layout.chunkCount - 1))
            #expect(layout.ciphertextRange(ofChunk: index).lowerBound == index * 65_552)
        }
    }

    @Test func layoutOfTheSpecificationsExamples() {
        let empty = AttachmentLayout(plaintextSize: 0)
        #expect(empty.paddedSize == 1_024 && empty.chunkCount == 1 && empty.ciphertextSize == 1_040)
        let multi = AttachmentLayout(plaintextSize: 150_000)
        #expect(multi.paddedSize == 151_552 && multi.chunkCount == 3 && multi.ciphertextSize == 151_600)
        #expect(multi.plaintextRange(ofChunk: 2) == 131_072..<151_552)
        #expect(multi.ciphertextRange(ofChunk: 2) == 131_104..<151_600)
        let twoChunks = AttachmentLayout(plaintextSize: 65_537)
        #expect(twoChunks.paddedSize == 67_584 && twoChunks.chunkCount == 2)
    }

    @Test func theSameFileUnderTwoKeysGivesUnrelatedBlobs() throws {
        let plaintext = Self.file(5_000)
        let other = SecretBytes(SeededRandom(label: "attachment-tests/other-key").bytes(32))
        let a = try AttachmentCipher.encrypt(plaintext, attachmentKey: Self.key).blob
        let b = try AttachmentCipher.encrypt(plaintext, attachmentKey: other).blob
        #expect(a.count == b.count && a != b)
        // And the blob does not open under the other key.
        let error = Self.protocolError { _ = try AttachmentCipher.decrypt(a, pointer: Self.pointer(for: plaintext, blob: a, key: other)) }
        #expect(error?.code == .authenticationFailed)
    }

    @Test func slicesOfLargerBuffersEncryptAndDecrypt() throws {
        // Data slices keep their parent's indices; the cipher must not assume they start at 0.
        let buffer = Self.file(140_000)
        let plaintext = buffer[1_000..<131_000]
        let (blob, _) = try AttachmentCipher.encrypt(plaintext, attachmentKey: Self.key)
        #expect(blob == (try AttachmentCipher.encrypt(Data(plaintext), attachmentKey: Self.key)).blob)
        var framed = Data([1, 2, 3])
        framed.append(blob)
        let slice = framed[3...]
        #expect(try AttachmentCipher.decrypt(slice, pointer: Self.pointer(for: Data(plaintext), blob: Data(slice))) == Data(plaintext))
    }

    // MARK: blobs that must be refused

    /// A 200 000-byte file: four chunks, the last one 4 096 bytes of which 704 are padding.
    static let bigPlaintext = file(200_000)
    static let bigBlob = try! AttachmentCipher.encrypt(bigPlaintext, attachmentKey: key).blob
    static let bigLayout = AttachmentLayout(plaintextSize: 200_000)

    @Test func aTamperedByteInAnyChunkIsRejected() throws {
        #expect(Self.bigLayout.chunkCount == 4)
        for index in 0..<Self.bigLayout.chunkCount {
            let range = Self.bigLayout.ciphertextRange(ofChunk: index)
            // A byte of the ciphertext and a byte of the tag.
            for offset in [range.lowerBound + 17, range.upperBound - 1] {
                var blob = Self.bigBlob
                blob[Int(offset)] ^= 0x40
                // With the pointer's (original) hash: the hash check fails first.
                let hashError = Self.protocolError { _ = try AttachmentCipher.decrypt(blob, pointer: Self.pointer(for: Self.bigPlaintext, blob: Self.bigBlob)) }
                #expect(hashError?.code == .authenticationFailed)
                #expect(hashError?.description.contains("hash") == true)
                // With a hash over the tampered blob (a lying sender or a hash collision): the chunk itself fails.
                let chunkError = Self.protocolError { _ = try AttachmentCipher.decrypt(blob, pointer: Self.pointer(for: Self.bigPlaintext, blob: blob)) }
                #expect(chunkError?.code == .authenticationFailed)
                #expect(chunkError?.description.contains("chunk \(index)") == true, "\(String(describing: chunkError))")
            }
        }
    }

    @Test func aTruncatedBlobIsRejected() throws {
        let lastStart = Int(Self.bigLayout.ciphertextRange(ofChunk: 3).lowerBound)
        let truncated = Self.bigBlob.prefix(lastStart)
        // The pointer's size: the blob is too short.
        let sizeError = Self.protocolError { _ = try AttachmentCipher.decrypt(truncated, pointer: Self.pointer(for: Self.bigPlaintext, blob: Self.bigBlob)) }
        #expect(sizeError?.description.contains("truncated") == true)
        // A pointer that fits the truncated blob (3 × 65 536 bytes, its hash): the now-last chunk was sealed as not last.
        let fitting = Self.pointer(for: Self.bigPlaintext, blob: Data(truncated), plaintextSize: 196_608)
        #expect(AttachmentLayout(plaintextSize: 196_608).ciphertextSize == UInt64(truncated.count))
        let flagError = Self.protocolError { _ = try AttachmentCipher.decrypt(truncated, pointer: fitting) }
        #expect(flagError?.code == .authenticationFailed)
        #expect(flagError?.description.contains("chunk 2") == true)
        // The same chunk opens as what it is: chunk 2, not last.
        let keys = try AttachmentKeys(attachmentKey: Self.key)
        let chunk2 = Self.bigBlob.subdata(in: Int(Self.bigLayout.ciphertextRange(ofChunk: 2).lowerBound)..<lastStart)
        #expect(throws: FlitzProtocolError.self) { try keys.openChunk(chunk2, index: 2, isLast: true) }
        #expect(try keys.openChunk(chunk2, index: 2, isLast: false) == Self.bigPlaintext.subdata(in: 131_072..<196_608))
    }

    @Test func reorderedChunksAreRejected() throws {
        let c = (0..<Self.bigLayout.chunkCount).map { Self.bigBlob.subdata(in: Int(Self.bigLayout.ciphertextRange(ofChunk: $0).lowerBound)..<Int(Self.bigLayout.ciphertextRange(ofChunk: $0).upperBound)) }
        for order in [[1, 0, 2, 3], [0, 2, 1, 3], [2, 1, 0, 3]] {
            let blob = order.reduce(into: Data()) { $0.append(c[$1]) }
            #expect(blob.count == Self.bigBlob.count)
            let error = Self.protocolError { _ = try AttachmentCipher.decrypt(blob, pointer: Self.pointer(for: Self.bigPlaintext, blob: blob)) }
            #expect(error?.code == .authenticationFailed, "order \(order)")
        }
        // The last chunk cannot move either (it is shorter, so only as the only chunk of a 1-chunk layout).
        let keys = try AttachmentKeys(attachmentKey: Self.key)
        #expect(throws: FlitzProtocolError.self) { try keys.openChunk(c[3], index: 0, isLast: true) }
    }

    @Test func eachChunkOpensAloneByItsCiphertextRange() throws {
        // Seeking: a ranged download of chunk i verifies and decrypts without the others.
        let keys = try AttachmentKeys(attachmentKey: Self.key)
        var padded = Self.bigPlaintext
        padded.append(Data(count: Int(Self.bigLayout.paddedSize) - Self.bigPlaintext.count))
        for index in (0..<Self.bigLayout.chunkCount).reversed() {
            let range = Self.bigLayout.ciphertextRange(ofChunk: index)
            let sealed = Self.bigBlob.subdata(in: Int(range.lowerBound)..<Int(range.upperBound))
            let plain = try keys.openChunk(sealed, index: UInt32(index), isLast: Self.bigLayout.isLast(index))
            let expected = Self.bigLayout.plaintextRange(ofChunk: index)
            #expect(plain == padded.subdata(in: Int(expected.lowerBound)..<Int(expected.upperBound)))
            #expect(keys.nonce(chunk: UInt32(index), isLast: Self.bigLayout.isLast(index)).count == 24)
        }
        // The nonce is prefix ‖ u32be(index) ‖ flag.
        let nonce = keys.nonce(chunk: 0x0102_0304, isLast: true)
        #expect(nonce.prefix(19) == keys.noncePrefix && Array(nonce.suffix(5)) == [1, 2, 3, 4, 1])
    }

    @Test func nonZeroPaddingIsRejected() throws {
        let keys = try AttachmentKeys(attachmentKey: Self.key)
        let plaintext = Data("eleven byte".utf8)
        for badOffset in [plaintext.count, 500, 1_023] {
            var padded = plaintext + Data(count: 1_024 - plaintext.count)
            padded[badOffset] = 0x01
            let blob = keys.sealChunk(padded, index: 0, isLast: true)
            let error = Self.protocolError { _ = try AttachmentCipher.decrypt(blob, pointer: Self.pointer(for: plaintext, blob: blob)) }
            #expect(error?.code == .authenticationFailed)
            #expect(error?.description.contains("padding") == true)
        }
        #expect(throws: FlitzProtocolError.self) { try AttachmentCipher.checkPadding(Data([0, 0, 0x80])) }
        try AttachmentCipher.checkPadding(Data(count: 4_096))
        try AttachmentCipher.checkPadding(Data())
    }

    @Test func aWrongHashOrSizeIsRejected() throws {
        var pointer = Self.pointer(for: Self.bigPlaintext, blob: Self.bigBlob)
        pointer.ciphertextSHA256[0] ^= 1
        let error = Self.protocolError { _ = try AttachmentCipher.decrypt(Self.bigBlob, pointer: pointer) }
        #expect(error?.description.contains("does not match its hash") == true)
        let longer = Self.bigBlob + Data([0])
        let sizeError = Self.protocolError { _ = try AttachmentCipher.decrypt(longer, pointer: Self.pointer(for: Self.bigPlaintext, blob: longer)) }
        #expect(sizeError?.code == .authenticationFailed)
        #expect(sizeError?.description.contains("longer") == true)
    }

    @Test(arguments: [0, 16, 31, 33, 64])
    func anAttachmentKeyOfTheWrongLengthIsAnError(length: Int) {
        let key = SecretBytes(Data(repeating: 1, count: length))
        #expect(Self.protocolError { _ = try AttachmentKeys(attachmentKey: key) }?.code == .invalidKey)
        #expect(Self.protocolError { _ = try AttachmentCipher.encrypt(Data("x".utf8), attachmentKey: key) }?.code == .invalidKey)
    }

    // MARK: padding

    @Test func paddedSizeIsMonotonicAtLeastTheLengthAndBounded() {
        var previous: UInt64 = 0
        // Every length up to three chunks, then samples up to 2^40.
        var lengths = Array(UInt64(0)...UInt64(200_000))
        var l: UInt64 = 200_001
        while l < 1 << 40 {
            lengths.append(l)
            l = l + l / 7 + 1
        }
        // Collected rather than one #expect per length: a quarter of a million expectations would dominate the suite.
        var problems: [String] = []
        for length in lengths {
            let padded = AttachmentLayout.paddedSize(length)
            if padded < previous { problems.append("not monotonic at \(length)") }
            if padded < length || padded < 1_024 { problems.append("\(padded) under the length \(length) or the floor") }
            previous = padded
            guard length > 1_024 else {
                if padded != 1_024 { problems.append("\(length) does not pad to the floor") }
                continue
            }
            // Padmé: the overhead is under L / 2^S, S = floor(log2(E)) + 1 (so under 6.25 % above the floor, under
            // 3.125 % from 64 KiB), and a padded size pads to itself.
            let e = UInt64(63 - length.leadingZeroBitCount)
            let s = UInt64(63 - e.leadingZeroBitCount) + 1
            if (padded - length) << s >= length { problems.append("overhead bound L / 2^S at \(length)") }
            if (padded - length) * 16 >= length { problems.append("over 6.25 % at \(length)") }
            if length >= 65_536 && (padded - length) * 32 >= length { problems.append("over 3.125 % at \(length)") }
            if AttachmentLayout.paddedSize(padded) != padded { problems.append("\(padded) does not pad to itself") }
            // At most S + 1 significant bits remain: the size leaks O(log log L) bits.
            if UInt64(64 - padded.leadingZeroBitCount - padded.trailingZeroBitCount) > s + 1 { problems.append("too many bits at \(length)") }
        }
        #expect(problems.isEmpty, "\(problems.prefix(10))")
        #expect(lengths.count > 200_000)
    }

    // MARK: the pointer in a Text (section 3)

    static let goodPointer = AttachmentPointer(
        blobID: Data(0..<16), key: key, plaintextSize: 200_000, contentType: "image/png", fileName: "Foto März.png",
        ciphertextSHA256: SHA256.hash(bigBlob), kind: .image, width: 640, height: 480, thumbnail: Data([0xff, 0xd8, 0xff]),
        blobExpiresAtMilliseconds: 1_769_817_600_000)

    static func encoded(_ text: TextMessage) -> Data {
        MessageContent(messageID: Data(repeating: 9, count: 16), sentAtMilliseconds: 1_767_225_600_000, body: .text(text)).encoded()
    }

    /// The encoding of a Text carrying `goodPointer` changed by `change`.
    static func pointerBytes(_ change: (inout ProtoAttachmentPointer) -> Void) throws -> Data {
        var proto = try ProtoContent(serializedBytes: encoded(TextMessage("caption", attachment: goodPointer)))
        guard case .text(var text) = proto.body else { preconditionFailure() }
        change(&text.attachment)
        proto.body = .text(text)
        return try proto.serializedData()
    }

    static func locationBytes(_ location: Location) -> Data {
        var proto = try! ProtoContent(serializedBytes: encoded(TextMessage("", location: Location(latitude: 1, longitude: 1))))
        guard case .text(var text) = proto.body else { preconditionFailure() }
        text.location.latitude = location.latitude
        text.location.longitude = location.longitude
        text.location.label = location.label
        proto.body = .text(text)
        return try! proto.serializedData()
    }

    @Test func pointersAndLocationsRoundTrip() throws {
        for text in [
            TextMessage("caption", attachment: Self.goodPointer), TextMessage("", attachment: Self.goodPointer),
            TextMessage("here", location: Location(latitude: -90, longitude: 180, label: String(repeating: "a", count: 256))),
        ] {
            let decoded = try MessageContent(decoding: Self.encoded(text))
            #expect(decoded.body.textMessage == text)
        }
        #expect(try MessageContent(decoding: try Self.pointerBytes { _ in }).body.textMessage?.attachment == Self.goodPointer)
    }

    @Test func pointerDecodingRefusesEveryRuleOfSection3() throws {
        let changes: [(String, (inout ProtoAttachmentPointer) -> Void)] = [
            ("blob id 15", { $0.blobID = $0.blobID.prefix(15) }), ("blob id 17", { $0.blobID.append(1) }),
            ("key 31", { $0.key = $0.key.prefix(31) }), ("key 33", { $0.key.append(1) }),
            ("hash 31", { $0.ciphertextSha256 = $0.ciphertextSha256.prefix(31) }), ("hash 0", { $0.ciphertextSha256 = Data() }),
            ("chunk size 0", { $0.chunkSize = 0 }), ("chunk size 65 537", { $0.chunkSize = 65_537 }),
            ("ciphertext size + 1", { $0.ciphertextSize += 1 }), ("ciphertext size = padded size", { $0.ciphertextSize = 200_704 }),
            ("kind unspecified", { $0.kind = .unspecified }), ("kind 9", { $0.kind = .UNRECOGNIZED(9) }),
            ("content type 128", { $0.contentType = String(repeating: "t", count: 128) }),
            ("file name 256", { $0.fileName = String(repeating: "n", count: 256) }), ("file name /", { $0.fileName = "a/b" }),
            ("file name \\", { $0.fileName = "a\\b" }), ("file name tab", { $0.fileName = "a\tb" }), ("file name U+0085", { $0.fileName = "a\u{85}" }),
            ("thumbnail 24 577", { $0.thumbnail = Data(count: 24_577) }),
        ]
        for (name, change) in changes {
            let error = Self.protocolError { _ = try MessageContent(decoding: try Self.pointerBytes(change)) }
            #expect(error?.code == .malformedMessage, "\(name)")
        }
        // The limits themselves are fine.
        for change: (inout ProtoAttachmentPointer) -> Void in [
            { $0.contentType = String(repeating: "t", count: 127) }, { $0.fileName = String(repeating: "n", count: 255) },
            { $0.thumbnail = Data(count: 24_576) }, { $0.fileName = "" }, { $0.contentType = "" },
        ] {
            #expect(throws: Never.self) { try MessageContent(decoding: try Self.pointerBytes(change)) }
        }
    }

    @Test func locationDecodingRefusesBadCoordinatesAndLabels() throws {
        let bad = [
            Location(latitude: 90.000_001, longitude: 0), Location(latitude: -91, longitude: 0), Location(latitude: 0, longitude: 180.000_1),
            Location(latitude: 0, longitude: -181), Location(latitude: .nan, longitude: 0), Location(latitude: 0, longitude: .infinity),
            Location(latitude: -.infinity, longitude: 0), Location(latitude: 1, longitude: 1, label: String(repeating: "ü", count: 129)),
        ]
        for location in bad {
            #expect(!location.isValid)
            let error = Self.protocolError { _ = try MessageContent(decoding: Self.locationBytes(location)) }
            #expect(error?.code == .malformedMessage, "\(location)")
        }
        #expect(throws: Never.self) { try MessageContent(decoding: Self.locationBytes(Location(latitude: 90, longitude: -180, label: String(repeating: "ü", count: 128)))) }
        // Both an attachment and a location.
        var proto = try ProtoContent(serializedBytes: Self.encoded(TextMessage("", attachment: Self.goodPointer)))
        guard case .text(var text) = proto.body else { preconditionFailure() }
        text.location.latitude = 1
        proto.body = .text(text)
        #expect(Self.protocolError { _ = try MessageContent(decoding: try proto.serializedData()) }?.code == .malformedMessage)
    }

    // MARK: streaming SHA-256

    @Test func theStreamingHashEqualsTheOneShotHashAtEverySplit() {
        let data = Self.file(1_000, label: "attachment-tests/hash")
        for split in [0, 1, 55, 56, 63, 64, 65, 127, 128, 500, 999, 1_000] {
            var hasher = SHA256.Hasher()
            hasher.update(data.prefix(split))
            hasher.update(data.suffix(from: split))
            #expect(hasher.finalize() == SHA256.hash(data), "split at \(split)")
        }
        // Many small pieces, and an empty update.
        var hasher = SHA256.Hasher()
        hasher.update(Data())
        var offset = 0, step = 1
        while offset < data.count {
            let end = min(offset + step, data.count)
            hasher.update(data.subdata(in: offset..<end))
            offset = end
            step = step % 97 + 13
        }
        #expect(hasher.finalize() == SHA256.hash(data))
        // The blob hashed chunk by chunk, as a streaming encryptor does.
        var blobHasher = SHA256.Hasher()
        for index in 0..<Self.bigLayout.chunkCount {
            let range = Self.bigLayout.ciphertextRange(ofChunk: index)
            blobHasher.update(Self.bigBlob[Int(range.lowerBound)..<Int(range.upperBound)])
        }
        #expect(blobHasher.finalize() == SHA256.hash(Self.bigBlob))
        #expect(SHA256.Hasher().finalize() == SHA256.hash(Data()))
    }

    /// A peer's pointer can carry any 64-bit size: none may crash the receiver (a review found `UInt64.max` trapped
    /// in Padmé's arithmetic and 2^63 in the store), and none above 2^40 decodes.
    @Test(arguments: [(UInt64(1) << 40) + 1, UInt64(1) << 63, UInt64.max - 1, UInt64.max])
    func hugeSizesHaveNoLayoutAndDoNotDecode(size: UInt64) throws {
        let layout = AttachmentLayout(plaintextSize: size)
        #expect(layout.ciphertextSize == .max && layout.paddedSize == .max && layout.chunkCount == .max)
        #expect(AttachmentLayout.paddedSize(size) == .max)
        var pointer = AttachmentPointer(
            blobID: Data(count: 16), key: SecretBytes(Data(count: 32)), plaintextSize: size, contentType: "", fileName: "",
            ciphertextSHA256: Data(count: 32), kind: .document, blobExpiresAtMilliseconds: 0)
        pointer.ciphertextSize = size
        let content = MessageContent(messageID: Data(count: 16), sentAtMilliseconds: 0, body: .text(TextMessage("x", attachment: pointer)))
        #expect(throws: FlitzProtocolError.self) { try MessageContent(decoding: content.encoded()) }
        let limit = AttachmentLayout(plaintextSize: AttachmentLayout.maxPlaintextSize)
        #expect(limit.ciphertextSize > limit.paddedSize && limit.paddedSize >= AttachmentLayout.maxPlaintextSize)
    }
}
