import Foundation
import Testing

/// `flitz vectors verify DIR` as a user runs it: the committed vectors pass, a corrupted copy fails with a
/// FAIL line and exit 1, and a directory or file it cannot check exits 2 with a message.
@Suite struct VectorsCommandTests {
    static let vectors = Binaries.packageRoot.appendingPathComponent("vectors")

    @Test func committedVectorsPass() throws {
        let scratch = try Scratch()
        let result = try runProcess(Binaries.flitz, ["vectors", "verify", Self.vectors.path], in: scratch)
        #expect(result.status == 0, "\(result)")
        let summary = try #require(result.lines.last)
        #expect(summary.hasPrefix("summary: ") && summary.hasSuffix(" 0 fail"), "\(summary)")
        #expect(result.lines.first?.hasPrefix("topic") == true)
        #expect(!result.stdout.contains("FAIL"))
        for topic in ["hkdf", "x3dh", "ratchet", "session", "content", "frames", "fingerprint"] {
            #expect(result.lines.contains { $0.hasPrefix(topic + " ") && $0.contains(" pass") }, "no line for \(topic)")
        }
    }

    @Test func corruptedVectorFails() throws {
        let scratch = try Scratch()
        let directory = scratch.path("vectors")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var text = try String(contentsOf: Self.vectors.appendingPathComponent("fingerprint.json"), encoding: .utf8)
        // Change the first digit of the first safety number.
        let range = try #require(text.range(of: #""safetyNumber" : ""#))
        let digit = text[range.upperBound]
        text.replaceSubrange(range.upperBound...range.upperBound, with: digit == "1" ? "2" : "1")
        try text.write(to: directory.appendingPathComponent("fingerprint.json"), atomically: true, encoding: .utf8)
        let result = try runProcess(Binaries.flitz, ["vectors", "verify", directory.path], in: scratch)
        #expect(result.status == 1, "\(result)")
        #expect(result.lines.contains { $0.hasPrefix("fingerprint") && $0.contains("FAIL") && $0.contains("safety number") }, "\(result)")
        #expect(result.lines.last?.hasSuffix(" 1 fail") == true, "\(result)")
    }

    @Test func uncheckableInputExits2() throws {
        let scratch = try Scratch()
        let missing = try runProcess(Binaries.flitz, ["vectors", "verify", scratch.path("missing").path], in: scratch)
        #expect(missing.status == 2, "\(missing)")
        #expect(missing.stderr.contains("cannot read directory"))
        let file = scratch.path("a-file.json")
        try Data("{}".utf8).write(to: file)
        let notDirectory = try runProcess(Binaries.flitz, ["vectors", "verify", file.path], in: scratch)
        #expect(notDirectory.status == 2, "\(notDirectory)")
        #expect(notDirectory.stderr.contains("it is a file"), "\(notDirectory)")

        let directory = scratch.path("unknown")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Data(#"{"formatVersion": 1, "topic": "mls"}"#.utf8).write(to: directory.appendingPathComponent("mls.json"))
        let unknown = try runProcess(Binaries.flitz, ["vectors", "verify", directory.path], in: scratch)
        #expect(unknown.status == 2, "\(unknown)")
        #expect(unknown.stderr.contains("unknown topic \"mls\""), "\(unknown)")

        try Data(#"{"formatVersion": 2, "topic": "hkdf"}"#.utf8).write(to: directory.appendingPathComponent("mls.json"))
        let version = try runProcess(Binaries.flitz, ["vectors", "verify", directory.path], in: scratch)
        #expect(version.status == 2, "\(version)")
        #expect(version.stderr.contains("format version 2 is not supported"), "\(version)")
    }
}
