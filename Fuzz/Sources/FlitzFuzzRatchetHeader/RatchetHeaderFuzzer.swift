import FlitzCrypto
import FlitzFuzzSupport
import FlitzProtocol
import Foundation

/// libFuzzer entry point: bytes as a ratchet message (41-byte header ‖ nonce ‖ ciphertext ‖ tag).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRatchetHeader(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    RatchetHeaderFuzzer.run(fuzzData(start, count))
    return 0
}

/// libFuzzer calls this once before the first input.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    prepareFixtures()
    RatchetHeaderFuzzer.run(Data())
    return 0
}

/// `RatchetHeader(decoding:)` with its exact layout as the oracle, then the whole message through
/// `Session.decrypt` in bob's session from the vectors (header checks, skipped keys, DH ratchet steps).
enum RatchetHeaderFuzzer {
    static func run(_ bytes: Data) {
        let header: RatchetHeader
        do {
            header = try RatchetHeader(decoding: bytes)
        } catch {
            // Exactly the inputs the layout rules out are refused, each with its own code.
            if let version = bytes.first, version == ProtocolConstants.version {
                fuzzCheck(bytes.count < RatchetHeader.encodedLength && error.code == .malformedMessage, "refused a valid header: \(error)")
            } else {
                fuzzCheck(error.code == (bytes.isEmpty ? .malformedMessage : .unsupportedVersion), "wrong error for a bad version: \(error)")
            }
            ClientReceive.ratchetMessage(bytes)
            return
        }
        // The layout: version ‖ key ‖ PN (u32 BE) ‖ N (u32 BE); encoding gives back the 41 bytes decoded.
        fuzzCheck(header.encoded == bytes.prefix(RatchetHeader.encodedLength), "header does not re-encode to its bytes")
        fuzzCheck(header.ratchetKey.rawRepresentation == bytes.dropFirst().prefix(32), "ratchet key is not bytes 1..<33")
        fuzzCheck((try? RatchetHeader(decoding: header.encoded)) == header, "header changed in an encode-decode round trip")
        fuzzCheck((try? RatchetHeader(decoding: bytes.offsetSlice)) == header, "a slice of the header decodes differently")
        ClientReceive.ratchetMessage(bytes)
        ClientReceive.ratchetMessage(bytes.offsetSlice)
    }
}
