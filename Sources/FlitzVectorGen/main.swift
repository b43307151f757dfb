// flitz-vectors: writes the deterministic Flitz test vectors (vectors/README.md).
// Usage: flitz-vectors [OUTPUT_DIR]   (default: the repository's vectors/)
import FlitzVectors
import Foundation

enum Generator {
    /// One generator function per topic; the file is `<topic>.json`. Add a topic here and a verifier
    /// in `FlitzVectors.VectorTopics.all`.
    static let topics: [(name: String, make: @Sendable () throws -> VectorFileBuilder)] = [
        ("hkdf", HKDFVectors.make),
        ("x3dh", X3DHVectors.make),
        ("pqxdh", PQXDHVectors.make),
        ("ratchet", RatchetVectors.make),
        ("session", SessionVectors.make),
        ("content", ContentVectors.make),
        ("frames", FrameVectors.make),
        ("fingerprint", FingerprintVectors.make),
        ("devices", DeviceVectors.make),
        ("push", PushVectors.make),
        ("conversations", ConversationVectors.make),
        ("attachment", AttachmentVectors.make),
        ("call", CallVectors.make),
    ]

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
        for (name, make) in topics {
            let builder = try make()
            precondition(builder.topic == name, "generator for \(name) made topic \(builder.topic)")
            let url = directory.appendingPathComponent("\(name).json")
            try builder.json().encoded().write(to: url, options: .atomic)
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
