import FlitzCrypto
import Foundation

/// Loads JSON vectors from the repository root (the directory holding `Package.swift`), found by
/// walking up from this file.
enum VectorFiles {
    static let repositoryRoot: URL = {
        var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
            let parent = url.deletingLastPathComponent()
            precondition(parent.path != url.path, "no Package.swift above \(#filePath)")
            url = parent
        }
        return url
    }()

    /// Decodes `vectors/<relativePath>`.
    static func load<T: Decodable>(_ type: T.Type, _ relativePath: String) throws -> T {
        let data = try Data(contentsOf: repositoryRoot.appendingPathComponent("vectors").appendingPathComponent(relativePath))
        return try JSONDecoder().decode(T.self, from: data)
    }
}

extension Data {
    /// Hex that must parse (vector files are trusted test input).
    init(vectorHex hex: String) {
        guard let data = Data(hexString: hex) else { preconditionFailure("bad hex in vector: \(hex)") }
        self = data
    }
}
