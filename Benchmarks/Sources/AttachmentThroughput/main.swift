// Attachment encryption throughput (protocol/attachments.md section 2) next to raw XChaCha20-Poly1305 on the same
// bytes, in the same run: a 50 MiB buffer, `rounds` rounds (default 9), each round running every variant once in turn
// so that machine load hits them alike; prints the median and the best round in MiB/s (1 MiB = 1 048 576 bytes of
// plaintext per second). Plain ContinuousClock loops, like CryptoTiming.
// `swift build -c release --product AttachmentThroughput && .build/release/AttachmentThroughput [rounds] [MiB]`.
import FlitzCrypto
import FlitzProtocol
import Foundation

@inline(never) func consume<T>(_ value: T) { withExtendedLifetime(value) {} }

let arguments = CommandLine.arguments.dropFirst().map { Int($0)! }
let rounds = arguments.first ?? 9
let mebibytes = arguments.dropFirst().first ?? 50
let size = mebibytes * 1_048_576
let clock = ContinuousClock()
let random = SeededRandom(label: "flitz-attachment-throughput")
let plaintext = random.bytes(size)
let attachmentKey = SecretBytes(random.bytes(32))
let rawKey = SecretBytes(random.bytes(32))
let rawNonce = random.bytes(24)
let layout = AttachmentLayout(plaintextSize: UInt64(size))
let chunk = AttachmentLayout.chunkSize

/// Raw AEAD: the plaintext sealed in 64 KiB pieces under one key and a fixed nonce (a baseline only: nothing to derive,
/// pad, hash or assemble).
func raw() {
    var offset = 0
    while offset < size {
        let end = min(offset + chunk, size)
        consume(try! XChaCha20Poly1305.seal(plaintext.subdata(in: offset..<end), key: rawKey, nonce: rawNonce, authenticating: Data()))
        offset = end
    }
}

/// The same seals appended into one blob: the baseline plus the copy a sender makes of its output.
func rawIntoBlob() {
    var blob = Data(capacity: size + size / chunk * 16 + 16)
    var offset = 0
    while offset < size {
        let end = min(offset + chunk, size)
        blob.append(try! XChaCha20Poly1305.seal(plaintext.subdata(in: offset..<end), key: rawKey, nonce: rawNonce, authenticating: Data()))
        offset = end
    }
    consume(blob)
}

/// Chunk by chunk as a streaming sender does: derive the keys, pad, seal each chunk under its index and flag, append it
/// to the blob and feed it to the streaming SHA-256.
func streaming(hash: Bool) {
    let keys = try! AttachmentKeys(attachmentKey: attachmentKey)
    var blob = Data(capacity: Int(layout.ciphertextSize))
    var hasher = SHA256.Hasher()
    for index in 0..<layout.chunkCount {
        let range = layout.plaintextRange(ofChunk: index)
        let start = Int(range.lowerBound), end = Int(range.upperBound)
        var piece = plaintext.subdata(in: min(start, size)..<min(end, size))
        if piece.count < range.count { piece.append(Data(count: range.count - piece.count)) }  // the zero padding
        let sealed = keys.sealChunk(piece, index: UInt32(index), isLast: layout.isLast(index))
        if hash { hasher.update(sealed) }
        blob.append(sealed)
    }
    consume(hasher.finalize())
    consume(blob)
}

/// The whole-file API: `AttachmentCipher.encrypt` (pads, seals every chunk, hashes the blob).
func whole() -> (Data, Data) { try! AttachmentCipher.encrypt(plaintext, attachmentKey: attachmentKey) }

let (blob, sha) = whole()
let pointer = AttachmentPointer(
    blobID: Data(count: 16), key: attachmentKey, plaintextSize: UInt64(size), contentType: "", fileName: "", ciphertextSHA256: sha,
    kind: .document, blobExpiresAtMilliseconds: 0)
precondition(try! AttachmentCipher.decrypt(blob, pointer: pointer) == plaintext, "round trip")

let variants: [(String, () -> Void)] = [
    ("raw XChaCha20-Poly1305 seal, 64 KiB pieces", raw),
    ("raw seal, appended into one blob", rawIntoBlob),
    ("SHA-256 of the blob alone (libsodium, one call)", { consume(SHA256.hash(blob)) }),
    ("attachment chunks (AttachmentKeys.sealChunk)", { streaming(hash: false) }),
    ("attachment chunks + streaming SHA-256", { streaming(hash: true) }),
    ("AttachmentCipher.encrypt (whole file)", { consume(whole()) }),
    ("AttachmentCipher.decrypt (hash, chunks, padding)", { consume(try! AttachmentCipher.decrypt(blob, pointer: pointer)) }),
]
for (_, body) in variants { body() }  // warm-up
var seconds = Array(repeating: [Double](), count: variants.count)
for _ in 0..<rounds {
    for (i, (_, body)) in variants.enumerated() {
        let start = clock.now
        body()
        let d = clock.now - start
        seconds[i].append(Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18)
    }
}
print("\(mebibytes) MiB (\(size) bytes; padded \(layout.paddedSize), \(layout.chunkCount) chunks, blob \(layout.ciphertextSize)), \(rounds) rounds")
var rawMedian = 0.0
for (i, (name, _)) in variants.enumerated() {
    let sorted = seconds[i].sorted()
    let median = Double(mebibytes) / sorted[sorted.count / 2], best = Double(mebibytes) / sorted[0]
    if i == 0 { rawMedian = median }
    print(String(format: "%-50@ median %8.1f MiB/s   best %8.1f MiB/s   %5.1f %% of raw", name as NSString, median, best, 100 * median / rawMedian))
}
