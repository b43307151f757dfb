import FlitzProtocol
import Foundation
import Testing

/// Inputs the fuzzers in `Fuzz/` found, kept as regression tests (`Fuzz/README.md`).
struct FuzzRegressionTests {
    /// fuzz-message-content, crash-410fd0be: a Content whose body is a kind from a newer version (field 5)
    /// decoded as "unsupported" but re-encoded without its body, so the kept message no longer decoded.
    @Test func anUnsupportedBodyReEncodesToTheBytesThatArrived() throws {
        let bytes = Data(vectorHex: "0a105744ac7e95ece56045d4f44e32d1665f2a020a00")
        let content = try MessageContent(decoding: bytes)
        guard case .unsupported(let kept) = content.body else {
            Issue.record("expected an unsupported body, got \(content.body)")
            return
        }
        #expect(kept == bytes)
        #expect(content.encoded() == bytes)
        #expect(try MessageContent(decoding: content.encoded()) == content)
    }
}
