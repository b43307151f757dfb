import FlitzCrypto
import FlitzProtocol
import Foundation

/// Attachment encryption and verification on files, chunk by chunk (`protocol/attachments.md` sections 2.2-2.5):
/// at most one 64 KiB chunk of the file is in memory at a time, never the whole file.
enum MediaFiles {
    /// Pads and encrypts the first `plaintextSize` bytes of `source` under `key` (32 bytes) into a new file `blob`
    /// (mode 0600); returns the blob's SHA-256 (32 bytes).
    /// - Throws: `ClientError(.invalidArgument)` when `source` cannot be read or is shorter than `plaintextSize`
    ///   (it changed while being sent); file system errors writing `blob`.
    static func encrypt(source: URL, plaintextSize: UInt64, to blob: URL, key: SecretBytes) throws -> Data {
        let keys = try AttachmentKeys(attachmentKey: key)
        let layout = AttachmentLayout(plaintextSize: plaintextSize)
        guard let input = try? FileHandle(forReadingFrom: source) else {
            throw ClientError(.invalidArgument, "cannot read \(source.path)")
        }
        defer { try? input.close() }
        try? FileManager.default.removeItem(at: blob)
        guard FileManager.default.createFile(atPath: blob.path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
            throw ClientError(.invalidArgument, "cannot create the temporary file \(blob.path)")
        }
        let output = try FileHandle(forWritingTo: blob)
        defer { try? output.close() }
        var hasher = SHA256.Hasher()
        var remaining = plaintextSize
        for index in 0..<layout.chunkCount {
            let range = layout.plaintextRange(ofChunk: index)
            let fileBytes = Int(min(UInt64(range.count), remaining))
            var chunk = fileBytes > 0 ? (try input.read(upToCount: fileBytes) ?? Data()) : Data()
            guard chunk.count == fileBytes else {
                throw ClientError(.invalidArgument, "\(source.path) changed while it was being encrypted (shorter than \(plaintextSize) bytes)")
            }
            remaining -= UInt64(fileBytes)
            if chunk.count < range.count { chunk.append(Data(count: range.count - chunk.count)) }  // zero padding
            let sealed = keys.sealChunk(chunk, index: UInt32(index), isLast: layout.isLast(index))
            hasher.update(sealed)
            try output.write(contentsOf: sealed)
        }
        try output.synchronize()
        return hasher.finalize()
    }

    /// Opens chunk `index` of a blob laid out for `pointer`; the padding of the last chunk is checked too.
    /// - Throws: `ClientError(.protocolFailure)` "chunk N does not verify" / "padding is not zero".
    static func openChunk(_ sealed: Data, index: UInt64, layout: AttachmentLayout, keys: AttachmentKeys) throws -> Data {
        let isLast = layout.isLast(index)
        let plain: Data
        do {
            plain = try keys.openChunk(sealed, index: UInt32(index), isLast: isLast)
        } catch {
            throw ClientError(.protocolFailure, "rejected the file: chunk \(index) does not verify" + (isLast ? " (tampered or truncated)" : ""))
        }
        let start = layout.plaintextRange(ofChunk: index).lowerBound
        if start + UInt64(plain.count) > layout.plaintextSize {
            let fileBytes = Int(layout.plaintextSize > start ? layout.plaintextSize - start : 0)
            guard plain.dropFirst(fileBytes).allSatisfy({ $0 == 0 }) else {
                throw ClientError(.protocolFailure, "rejected the file: its padding is not zero")
            }
            return plain.prefix(fileBytes)
        }
        return plain
    }

    /// Verifies a downloaded blob file against `pointer` (section 2.5: size, SHA-256, every chunk, the padding)
    /// and writes the plaintext to a new file `output` (0600). Nothing is left at `output` when any check fails.
    /// - Throws: `ClientError(.protocolFailure)` with "blob is truncated", "blob does not match its hash", "chunk N
    ///   does not verify" or "padding is not zero"; `.invalidArgument` for a malformed pointer.
    static func decrypt(blob: URL, pointer: AttachmentPointer, to output: URL) throws {
        let layout = AttachmentLayout(plaintextSize: pointer.plaintextSize)
        guard pointer.ciphertextSize == layout.ciphertextSize else {
            throw ClientError(.invalidArgument, "the attachment's pointer is malformed (its sizes do not match)")
        }
        let size = ((try? FileManager.default.attributesOfItem(atPath: blob.path))?[.size] as? NSNumber)?.uint64Value ?? 0
        guard size == layout.ciphertextSize else {
            throw ClientError(
                .protocolFailure,
                size < layout.ciphertextSize ? "rejected the file: blob is truncated (\(size) of \(layout.ciphertextSize) bytes)"
                    : "rejected the file: blob is longer than its pointer says")
        }
        // The hash first, over the whole blob: nothing is decrypted from a blob that is not the one announced.
        let input = try FileHandle(forReadingFrom: blob)
        defer { try? input.close() }
        var hasher = SHA256.Hasher()
        while let piece = try input.read(upToCount: 1 << 20), !piece.isEmpty { hasher.update(piece) }
        guard ConstantTime.equals(hasher.finalize(), pointer.ciphertextSHA256) else {
            throw ClientError(.protocolFailure, "rejected the file: blob does not match its hash")
        }
        let keys = try AttachmentKeys(attachmentKey: pointer.key)
        try? FileManager.default.removeItem(at: output)
        guard FileManager.default.createFile(atPath: output.path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
            throw ClientError(.invalidArgument, "cannot create \(output.path)")
        }
        do {
            let writer = try FileHandle(forWritingTo: output)
            defer { try? writer.close() }
            try input.seek(toOffset: 0)
            for index in 0..<layout.chunkCount {
                let range = layout.ciphertextRange(ofChunk: index)
                let sealed = try input.read(upToCount: range.count) ?? Data()
                try writer.write(contentsOf: try openChunk(sealed, index: index, layout: layout, keys: keys))
            }
            try writer.synchronize()
        } catch {
            try? FileManager.default.removeItem(at: output)
            throw error
        }
    }
}
