import FlitzFuzzSupport
import FlitzProtocol
import Foundation

/// libFuzzer entry point: bytes as a decrypted message's plaintext.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMessageContent(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    MessageContentFuzzer.run(fuzzData(start, count))
    return 0
}

/// libFuzzer calls this once before the first input.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    prepareFixtures()
    MessageContentFuzzer.run(Data())
    return 0
}

/// `MessageContent(decoding:)`: what decodes re-encodes (padded) to the same content, and a slice of the
/// same bytes decodes the same way.
enum MessageContentFuzzer {
    static func run(_ bytes: Data) {
        let content: MessageContent
        do {
            content = try MessageContent(decoding: bytes)
        } catch {
            fuzzCheck(error.code == .malformedMessage, "content refused with \(error)")
            fuzzCheck((try? MessageContent(decoding: bytes.offsetSlice)) == nil, "a slice of refused content decodes")
            return
        }
        fuzzCheck((try? MessageContent(decoding: bytes.offsetSlice)) == content, "a slice of the content decodes differently")
        ClientReceive.checkContentRoundTrip(content)
    }
}
