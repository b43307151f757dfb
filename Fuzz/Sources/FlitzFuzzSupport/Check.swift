import Foundation
import SwiftProtobuf

/// Traps with `message` when an invariant of a fuzz target does not hold. Unlike `precondition`, it
/// traps in every build configuration, so a release build of the fuzzers still reports violations.
public func fuzzCheck(
    _ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line
) {
    if !condition() { fatalError("fuzz invariant violated: \(message())", file: file, line: line) }
}

/// The bytes libFuzzer hands to `LLVMFuzzerTestOneInput`, copied into `Data`.
public func fuzzData(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Data {
    guard let start, count > 0 else { return Data() }
    return Data(bytes: start, count: count)
}

extension Data {
    /// The same bytes as a slice whose `startIndex` is not 0, so decoders that index from 0 are caught.
    /// Public decoders take `Data`, and a caller may well pass a slice.
    public var offsetSlice: Data {
        var padded = Data([0xA5])
        padded.append(self)
        return padded[1...]
    }
}

/// Checks the protobuf invariant every decoded message must keep: it serializes, that serialization
/// parses back to an equal message, and serializing again gives the same bytes.
public func checkProtobufRoundTrip<M: SwiftProtobuf.Message & Equatable>(_ message: M, _ name: String) {
    let encoded: Data
    do { encoded = try message.serializedData() } catch {
        fatalError("fuzz invariant violated: a decoded \(name) does not serialize: \(error)")
    }
    let decoded: M
    do { decoded = try M(serializedBytes: encoded) } catch {
        fatalError("fuzz invariant violated: a re-encoded \(name) does not parse: \(error)")
    }
    fuzzCheck(decoded == message, "\(name) changed in a serialize-parse round trip")
    fuzzCheck((try? decoded.serializedData()) == encoded, "\(name) serialization is not stable")
}

/// Values the fuzz targets and the corpus generator must agree on.
public enum FuzzConstants {
    /// Stands in for a connection's challenge nonce, so seeded Register and Authenticate frames carry
    /// signatures that verify in the relay-frame target.
    public static var challengeNonce: Data { Data(repeating: 0x4E, count: 32) }
}

/// Work for `LLVMFuzzerInitialize`: builds the fixtures before the first input. Globals first built
/// inside an input look leaked to LeakSanitizer (Swift keeps enum tags in pointer bits, so its scan of
/// globals misses them), which libFuzzer reports as a crash of that input; so targets keep no other
/// stored globals.
public func prepareFixtures() {
    _ = Fixtures.shared
}
