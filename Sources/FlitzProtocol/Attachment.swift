import FlitzCrypto
import Foundation

/// The sizes of one encrypted attachment (`protocol/attachments.md` sections 2.2 and 2.3): padding bucket,
/// chunk count and where each chunk lies in the plaintext and in the blob.
public struct AttachmentLayout: Hashable, Sendable {
    /// Plaintext bytes per chunk, 65 536 (`CHUNK_SIZE`).
    public static let chunkSize = 65_536
    /// Ciphertext bytes of a full chunk: 65 536 + the 16-byte tag.
    public static let sealedChunkSize = chunkSize + XChaCha20Poly1305.tagLength
    /// Every file pads to at least this many bytes (section 2.2).
    public static let paddingFloor = 1_024
    /// The largest valid plaintext size, 2^40 bytes (1 TiB; section 3): far above any relay's blob limit, and low
    /// enough that no size arithmetic can overflow.
    public static let maxPlaintextSize: UInt64 = 1 << 40

    /// Bytes of the file.
    public let plaintextSize: UInt64
    /// Bytes after padding (`padded_size(plaintextSize)`).
    public let paddedSize: UInt64
    /// Number of chunks, at least 1.
    public let chunkCount: UInt64
    /// Bytes of the blob: `paddedSize` + 16 per chunk.
    public let ciphertextSize: UInt64

    /// The layout of a file of `plaintextSize` bytes. Above `maxPlaintextSize` there is no valid layout:
    /// `paddedSize`, `chunkCount` and `ciphertextSize` are then `UInt64.max`, which no pointer may carry.
    public init(plaintextSize: UInt64) {
        self.plaintextSize = plaintextSize
        guard plaintextSize <= Self.maxPlaintextSize else {
            // A peer's pointer can name any size; computing its buckets could overflow (a crash in Swift).
            (paddedSize, chunkCount, ciphertextSize) = (.max, .max, .max)
            return
        }
        paddedSize = Self.paddedSize(plaintextSize)
        chunkCount = (paddedSize + UInt64(Self.chunkSize) - 1) / UInt64(Self.chunkSize)
        ciphertextSize = paddedSize + chunkCount * UInt64(XChaCha20Poly1305.tagLength)
    }

    /// Padmé with a 1 024-byte floor (section 2.2): 1 024 for `length` ≤ 1 024, else `length` rounded up so only
    /// its top `floor(log2(E)) + 1` bits after the leading one may be set, where `E = floor(log2(length))`.
    /// Lengths above `maxPlaintextSize` have no bucket: `UInt64.max`.
    public static func paddedSize(_ length: UInt64) -> UInt64 {
        guard length > UInt64(paddingFloor) else { return UInt64(paddingFloor) }
        guard length <= maxPlaintextSize else { return .max }
        let e = UInt64(63 - length.leadingZeroBitCount)
        let s = UInt64(63 - e.leadingZeroBitCount) + 1
        let mask = (UInt64(1) << (e - s)) - 1
        return (length + mask) & ~mask
    }

    /// Whether chunk `index` is the last one (sealed with the last-chunk flag).
    public func isLast(_ index: UInt64) -> Bool { index == chunkCount - 1 }

    /// The padded-plaintext byte range of chunk `index` (< `chunkCount`).
    public func plaintextRange(ofChunk index: UInt64) -> Range<UInt64> {
        let start = index * UInt64(Self.chunkSize)
        return start..<min(start + UInt64(Self.chunkSize), paddedSize)
    }

    /// The blob byte range of chunk `index` (< `chunkCount`): chunk `i` starts at `i` × 65 552.
    public func ciphertextRange(ofChunk index: UInt64) -> Range<UInt64> {
        let plain = plaintextRange(ofChunk: index)
        let start = index * UInt64(Self.sealedChunkSize)
        return start..<(start + UInt64(plain.count) + UInt64(XChaCha20Poly1305.tagLength))
    }
}

/// The keys of one attachment (`protocol/attachments.md` section 2.1): HKDF-SHA-256 of the 32-byte attachment
/// key with info `"FlitzAttachment-v1"` gives a 32-byte chunk key and a 19-byte nonce prefix; chunk `i` is sealed
/// with XChaCha20-Poly1305 under nonce `prefix ‖ u32be(i) ‖ u8(last)` and empty associated data.
public struct AttachmentKeys: Sendable {
    /// HKDF info string.
    public static let info = Data("FlitzAttachment-v1".utf8)
    /// Length of the attachment key, 32 bytes.
    public static let keyLength = 32
    /// Length of the nonce prefix, 19 bytes.
    public static let noncePrefixLength = 19

    /// 32-byte XChaCha20-Poly1305 key for every chunk.
    public let chunkKey: SecretBytes
    /// 19-byte nonce prefix.
    public let noncePrefix: Data

    /// Derives the chunk key and nonce prefix from a 32-byte attachment key.
    /// - Throws: `FlitzProtocolError.invalidKey` when `attachmentKey` is not 32 bytes.
    public init(attachmentKey: SecretBytes) throws(FlitzProtocolError) {
        guard attachmentKey.count == Self.keyLength else { throw FlitzProtocolError(.invalidKey, "attachment key must be 32 bytes") }
        let okm: SecretBytes
        do {
            okm = try HKDF.deriveKey(inputKeyMaterial: attachmentKey, salt: Data(count: 32), info: Self.info, length: 51)
        } catch {
            throw FlitzProtocolError(.invalidKey, "attachment key derivation failed")
        }
        chunkKey = okm.slice(0..<32)
        noncePrefix = okm.slice(32..<51).unsafeData
    }

    /// The 24-byte nonce of chunk `index`: prefix ‖ u32be(index) ‖ 0x01 for the last chunk, else 0x00.
    public func nonce(chunk index: UInt32, isLast: Bool) -> Data {
        var nonce = noncePrefix
        withUnsafeBytes(of: index.bigEndian) { nonce.append(contentsOf: $0) }
        nonce.append(isLast ? 1 : 0)
        return nonce
    }

    /// Seals one chunk of padded plaintext (at most 65 536 bytes); returns ciphertext ‖ 16-byte tag.
    public func sealChunk(_ plaintext: Data, index: UInt32, isLast: Bool) -> Data {
        // Lengths are fixed by construction, so seal cannot fail.
        try! XChaCha20Poly1305.seal(plaintext, key: chunkKey, nonce: nonce(chunk: index, isLast: isLast), authenticating: Data())
    }

    /// Opens one chunk.
    /// - Throws: `FlitzProtocolError.authenticationFailed` when the chunk was altered, is another chunk (index), or
    ///   carries the wrong last-chunk flag (a truncated blob's final chunk).
    public func openChunk(_ ciphertext: Data, index: UInt32, isLast: Bool) throws(FlitzProtocolError) -> Data {
        do {
            return try XChaCha20Poly1305.open(ciphertext, key: chunkKey, nonce: nonce(chunk: index, isLast: isLast), authenticating: Data())
        } catch {
            throw FlitzProtocolError(.authenticationFailed, isLast ? "last chunk \(index) does not verify (tampered or truncated)" : "chunk \(index) does not verify")
        }
    }
}

/// Whole-file attachment encryption in memory (`protocol/attachments.md` section 2), for vectors, tests and small
/// files; the reference client streams large files chunk by chunk with `AttachmentLayout` and `AttachmentKeys`.
public enum AttachmentCipher {
    /// Pads and encrypts `plaintext` under `attachmentKey` (32 bytes); returns the blob and its SHA-256.
    /// - Throws: `FlitzProtocolError.invalidKey` for a key that is not 32 bytes.
    public static func encrypt(_ plaintext: Data, attachmentKey: SecretBytes) throws(FlitzProtocolError) -> (blob: Data, sha256: Data) {
        let keys = try AttachmentKeys(attachmentKey: attachmentKey)
        let layout = AttachmentLayout(plaintextSize: UInt64(plaintext.count))
        // A fresh buffer: `plaintext` may be a slice whose indices do not start at 0.
        var padded = Data(capacity: Int(layout.paddedSize))
        padded.append(plaintext)
        padded.append(Data(count: Int(layout.paddedSize) - plaintext.count))
        var blob = Data(capacity: Int(layout.ciphertextSize))
        for index in 0..<layout.chunkCount {
            let range = layout.plaintextRange(ofChunk: index)
            blob.append(keys.sealChunk(padded[Int(range.lowerBound)..<Int(range.upperBound)], index: UInt32(index), isLast: layout.isLast(index)))
        }
        return (blob, SHA256.hash(blob))
    }

    /// Verifies and decrypts a whole blob against its pointer (section 2.5).
    /// - Throws: `FlitzProtocolError.authenticationFailed` when the size, the SHA-256, any chunk or the zero
    ///   padding does not verify (the message says which); `.invalidKey` for a key that is not 32 bytes.
    public static func decrypt(_ blob: Data, pointer: AttachmentPointer) throws(FlitzProtocolError) -> Data {
        let layout = AttachmentLayout(plaintextSize: pointer.plaintextSize)
        guard UInt64(blob.count) == layout.ciphertextSize else {
            throw FlitzProtocolError(.authenticationFailed, blob.count < layout.ciphertextSize ? "blob is truncated" : "blob is longer than its pointer says")
        }
        guard ConstantTime.equals(SHA256.hash(blob), pointer.ciphertextSHA256) else {
            throw FlitzProtocolError(.authenticationFailed, "blob does not match its hash")
        }
        let keys = try AttachmentKeys(attachmentKey: pointer.key)
        var padded = Data(capacity: Int(layout.paddedSize))
        for index in 0..<layout.chunkCount {
            // Offsets from `blob.startIndex`: a slice keeps its parent's indices.
            let range = layout.ciphertextRange(ofChunk: index)
            let chunk = blob[(blob.startIndex + Int(range.lowerBound))..<(blob.startIndex + Int(range.upperBound))]
            padded.append(try keys.openChunk(chunk, index: UInt32(index), isLast: layout.isLast(index)))
        }
        try checkPadding(padded[Int(layout.plaintextSize)...])
        return padded.prefix(Int(layout.plaintextSize))
    }

    /// Checks that padding bytes are all zero (section 2.2).
    /// - Throws: `FlitzProtocolError.authenticationFailed` otherwise.
    public static func checkPadding(_ padding: Data) throws(FlitzProtocolError) {
        guard padding.allSatisfy({ $0 == 0 }) else { throw FlitzProtocolError(.authenticationFailed, "padding is not zero") }
    }
}

/// What a media message's receiver needs to fetch and open one file (`AttachmentPointer`,
/// `protocol/attachments.md` section 3).
public struct AttachmentPointer: Hashable, Sendable {
    /// The kind of file, for galleries and previews.
    public enum Kind: String, Hashable, Sendable, CaseIterable {
        case image, video, audio, document
    }

    /// Most bytes of a thumbnail (JPEG).
    public static let maxThumbnailBytes = 24_576
    /// Most bytes of a file name.
    public static let maxFileNameBytes = 255
    /// Most bytes of a content type.
    public static let maxContentTypeBytes = 127

    /// 16-byte blob id assigned by the relay.
    public var blobID: Data
    /// 32-byte attachment key.
    public var key: SecretBytes
    /// Bytes of the file.
    public var plaintextSize: UInt64
    /// Bytes of the blob (must equal `AttachmentLayout(plaintextSize:).ciphertextSize`).
    public var ciphertextSize: UInt64
    /// MIME type (≤ 127 bytes), may be empty.
    public var contentType: String
    /// File name (≤ 255 bytes, no `/`, `\` or control character), may be empty.
    public var fileName: String
    /// 32-byte SHA-256 of the blob.
    public var ciphertextSHA256: Data
    /// Image, video, audio or document.
    public var kind: Kind
    /// An audio recorded as a voice message.
    public var voiceNote: Bool
    /// Pixels; 0 when unknown.
    public var width: UInt32
    /// Pixels; 0 when unknown.
    public var height: UInt32
    /// Milliseconds of video or audio; 0 when unknown.
    public var durationMilliseconds: UInt32
    /// JPEG thumbnail (≤ 24 576 bytes), empty when none.
    public var thumbnail: Data
    /// When the relay may delete the blob, ms since the Unix epoch.
    public var blobExpiresAtMilliseconds: Int64

    /// Creates a pointer; `ciphertextSize` defaults to the layout's.
    public init(
        blobID: Data, key: SecretBytes, plaintextSize: UInt64, ciphertextSize: UInt64? = nil, contentType: String, fileName: String,
        ciphertextSHA256: Data, kind: Kind, voiceNote: Bool = false, width: UInt32 = 0, height: UInt32 = 0,
        durationMilliseconds: UInt32 = 0, thumbnail: Data = Data(), blobExpiresAtMilliseconds: Int64
    ) {
        self.blobID = blobID
        self.key = key
        self.plaintextSize = plaintextSize
        self.ciphertextSize = ciphertextSize ?? AttachmentLayout(plaintextSize: plaintextSize).ciphertextSize
        self.contentType = contentType
        self.fileName = fileName
        self.ciphertextSHA256 = ciphertextSHA256
        self.kind = kind
        self.voiceNote = voiceNote
        self.width = width
        self.height = height
        self.durationMilliseconds = durationMilliseconds
        self.thumbnail = thumbnail
        self.blobExpiresAtMilliseconds = blobExpiresAtMilliseconds
    }

    /// Whether `name` is an acceptable file name (≤ 255 bytes, no `/`, `\` or control character).
    public static func isValidFileName(_ name: String) -> Bool {
        name.utf8.count <= maxFileNameBytes
            && !name.unicodeScalars.contains { $0 == "/" || $0 == "\\" || $0.properties.generalCategory == .control }
    }

    public static func == (a: Self, b: Self) -> Bool {
        a.blobID == b.blobID && a.key.constantTimeEquals(b.key) && a.plaintextSize == b.plaintextSize
            && a.ciphertextSize == b.ciphertextSize && a.contentType == b.contentType && a.fileName == b.fileName
            && a.ciphertextSHA256 == b.ciphertextSHA256 && a.kind == b.kind && a.voiceNote == b.voiceNote
            && a.width == b.width && a.height == b.height && a.durationMilliseconds == b.durationMilliseconds
            && a.thumbnail == b.thumbnail && a.blobExpiresAtMilliseconds == b.blobExpiresAtMilliseconds
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(blobID)
        hasher.combine(ciphertextSHA256)
    }
}

/// A shared location (`Location`, `protocol/attachments.md` section 3).
public struct Location: Hashable, Sendable {
    /// Most bytes of a label.
    public static let maxLabelBytes = 256
    /// Degrees, −90…90.
    public var latitude: Double
    /// Degrees, −180…180.
    public var longitude: Double
    /// At most 256 bytes, may be empty.
    public var label: String

    /// Creates a location.
    public init(latitude: Double, longitude: Double, label: String = "") {
        self.latitude = latitude
        self.longitude = longitude
        self.label = label
    }

    /// Whether the coordinates are finite and in range and the label within its limit.
    public var isValid: Bool {
        latitude.isFinite && longitude.isFinite && (-90...90).contains(latitude) && (-180...180).contains(longitude)
            && label.utf8.count <= Self.maxLabelBytes
    }
}
