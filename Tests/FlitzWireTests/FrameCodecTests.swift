import FlitzWire
import Foundation
import SwiftProtobuf
import Testing

struct FrameCodecTests {
    @Test func roundTripSetsVersion() throws {
        var frame = WireFrame()
        frame.requestID = 42
        var fetch = WireFetchPreKeyBundle()
        fetch.handle = "bob"
        frame.body = .fetchPrekeyBundle(fetch)
        let decoded = try FrameCodec.decode(FrameCodec.encode(frame))
        #expect(decoded.version == WireConstants.protocolVersion)
        #expect(decoded.requestID == 42)
        #expect(decoded.body == .fetchPrekeyBundle(fetch))
    }

    @Test func garbageIsMalformed() {
        #expect(throws: FrameDecodingError.malformed) { try FrameCodec.decode(Data([0xff, 0xff, 0xff, 0xff])) }
        #expect(FrameDecodingError.malformed.code == .malformedFrame)
    }

    @Test func unknownVersionKeepsRequestID() throws {
        var frame = WireFrame(requestID: 7, body: .ok(WireOk()))
        frame.version = 2
        let bytes = try frame.serializedData()
        #expect(throws: FrameDecodingError.unsupportedVersion(2, requestID: 7)) { try FrameCodec.decode(bytes) }
    }

    @Test func emptyBodyAndUnknownKindAreUnknownFrames() throws {
        var empty = WireFrame()
        empty.version = 1
        empty.requestID = 3
        #expect(throws: FrameDecodingError.unknownKind(requestID: 3)) { try FrameCodec.decode(try empty.serializedData()) }
        // Field 99 (length-delimited) is a body kind from a newer version: unknown to this one.
        var bytes = try empty.serializedData()
        bytes.append(contentsOf: [0x9a, 0x06, 0x00])
        #expect(throws: FrameDecodingError.unknownKind(requestID: 3)) { try FrameCodec.decode(bytes) }
    }

    @Test func oversizeFrameIsRejectedBeforeParsing() {
        let bytes = Data(count: WireConstants.maxFrameBytes + 1)
        #expect(throws: FrameDecodingError.tooLarge(size: WireConstants.maxFrameBytes + 1)) { try FrameCodec.decode(bytes) }
    }

    @Test(arguments: [
        ("abc", true), ("a.b_c9", true), (String(repeating: "x", count: 32), true),
        ("ab", false), (String(repeating: "x", count: 33), false), ("Alice", false), ("al ice", false), ("älice", false), ("", false),
    ])
    func handles(handle: String, valid: Bool) {
        #expect(Handle.isValid(handle) == valid)
    }

    @Test func signedPayloadLayouts() {
        let nonce = Data(repeating: 0xaa, count: 32)
        let auth = SignedPayload.authentication(nonce: nonce, handle: "bob")
        #expect(auth == Data("FlitzAuthentication-v1".utf8) + Data([0]) + nonce + Data("bob".utf8))
        let account = Data(repeating: 1, count: 32), device = Data(repeating: 2, count: 32)
        let cert = SignedPayload.deviceCertificate(accountIdentityKey: account, deviceIdentityKey: device)
        #expect(cert.count == 25 + 1 + 64)
        #expect(cert == Data("FlitzDeviceCertificate-v1".utf8) + Data([0]) + account + device)
    }
}
