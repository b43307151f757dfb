import FlitzCrypto
import Foundation

/// Fixed ML-KEM-1024 encapsulations for the vectors' KEM prekeys. swift-crypto cannot take injected
/// randomness for `encapsulate()`, so each (ciphertext, shared secret) pair was made once and is committed
/// in `Fixtures/kem-encapsulations.json`; the vectors carry them as inputs (`protocol/crypto.md`, "PQXDH").
/// A key without a fixture gets one made now and written back, so the next run is byte-identical.
enum KEMFixtures {
    struct Entry: Codable {
        var publicKeySHA256: String
        var ciphertext: String
        var sharedSecret: String
    }

    static var file: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/kem-encapsulations.json")
    }

    private static func load() throws -> [Entry] {
        guard let data = try? Data(contentsOf: file) else { return [] }
        return try JSONDecoder().decode([Entry].self, from: data)
    }

    /// The committed (1568-byte ciphertext, 32-byte shared secret) for `publicKey`, checked by decapsulation
    /// by the callers that hold the private key.
    static func encapsulation(for publicKey: KEMPublicKey) throws -> (ciphertext: Data, sharedSecret: SecretBytes) {
        let id = SHA256.hash(publicKey.rawRepresentation).hexString
        var entries = try load()
        if let entry = entries.first(where: { $0.publicKeySHA256 == id }),
            let ciphertext = Data(hexString: entry.ciphertext), let secret = Data(hexString: entry.sharedSecret)
        {
            return (ciphertext, SecretBytes(secret))
        }
        let made = try publicKey.encapsulate()
        entries.append(Entry(publicKeySHA256: id, ciphertext: made.ciphertext.hexString, sharedSecret: made.sharedSecret.unsafeData.hexString))
        entries.sort { $0.publicKeySHA256 < $1.publicKeySHA256 }
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(entries).write(to: file, options: .atomic)
        FileHandle.standardError.write(Data("made a new KEM fixture in \(file.path); commit it\n".utf8))
        return (made.ciphertext, made.sharedSecret)
    }
}
