// flitz-vectors: writes the deterministic Flitz test vectors (protocol/vectors.md).
// Usage: swift run flitz-vectors [OUTPUT_DIR]   (default: the repository's vectors/)
import Foundation

enum Generator {
    static let name = "flitz-vectors (Sources/FlitzVectorGen), `swift run flitz-vectors`"

    /// The repository's `vectors/` directory, found by walking up from this source file to `Package.swift`.
    static func defaultOutputDirectory() -> URL {
        var url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
            let parent = url.deletingLastPathComponent()
            guard parent.path != url.path else { return URL(fileURLWithPath: "vectors") }
            url = parent
        }
        return url.appendingPathComponent("vectors")
    }

    static func run(arguments: [String]) throws {
        guard arguments.count <= 1, arguments.first.map({ !$0.hasPrefix("-") }) ?? true else {
            throw GeneratorError("usage: flitz-vectors [OUTPUT_DIR]")
        }
        let directory = arguments.first.map { URL(fileURLWithPath: $0) } ?? defaultOutputDirectory()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let files: [(String, () throws -> JSONValue)] = [
            ("kdf.json", KDFVectors.make),
            ("x3dh.json", X3DHVectors.make),
            ("ratchet.json", RatchetVectors.make),
            ("session.json", SessionVectors.make),
        ]
        for (name, make) in files {
            let url = directory.appendingPathComponent(name)
            try make().encoded().write(to: url, options: .atomic)
            print("wrote \(url.path)")
        }
    }
}

struct GeneratorError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

do {
    try Generator.run(arguments: Array(CommandLine.arguments.dropFirst()))
} catch {
    FileHandle.standardError.write(Data("flitz-vectors: \(error)\n".utf8))
    exit(1)
}
