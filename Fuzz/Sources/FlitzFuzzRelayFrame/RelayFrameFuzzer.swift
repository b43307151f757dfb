import FlitzCrypto
import FlitzFuzzSupport
import FlitzWire
import Foundation

/// libFuzzer entry point: one WebSocket binary message as the relay (and the client) decodes it.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRelayFrame(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    RelayFrameFuzzer.run(fuzzData(start, count))
    return 0
}

/// libFuzzer calls this once before the first input.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    prepareFixtures()
    RelayFrameFuzzer.run(Data())
    return 0
}

/// `FrameCodec.decode`, what it guarantees about a frame it accepts and about its errors, and the public
/// checks the relay then runs on the fields it verifies (handles and signatures).
enum RelayFrameFuzzer {
    static var nonce: Data { FuzzConstants.challengeNonce }
    /// Stands in for the device identity key the relay has stored for an authenticating device.
    static var storedDeviceKey: Data { Fixtures.shared.bob.publicKey.rawRepresentation }

    static func run(_ bytes: Data) {
        let frame: WireFrame
        do {
            frame = try FrameCodec.decode(bytes)
        } catch {
            checkRejection(error, of: bytes)
            return
        }
        fuzzCheck(bytes.count <= WireConstants.maxFrameBytes, "accepted an oversized frame")
        fuzzCheck(frame.version == WireConstants.protocolVersion, "accepted frame version \(frame.version)")
        guard let body = frame.body else { fatalError("fuzz invariant violated: accepted a frame without a body") }
        // A slice of the same bytes decodes the same way.
        fuzzCheck((try? FrameCodec.decode(bytes.offsetSlice)) == frame, "a slice of the frame decodes differently")

        // Re-encoding keeps the frame: what one side sends is what the other decodes.
        let encoded = FrameCodec.encode(frame)
        if encoded.count <= WireConstants.maxFrameBytes {
            let again: WireFrame
            do { again = try FrameCodec.decode(encoded) } catch {
                fatalError("fuzz invariant violated: a re-encoded frame does not decode: \(error)")
            }
            fuzzCheck(again == frame, "frame changed in an encode-decode round trip")
            fuzzCheck(FrameCodec.encode(again) == encoded, "frame encoding is not stable")
        }
        checkRelayValidation(of: body)
    }

    /// Each rejection is the one its bytes call for, and the relay's error frame for it is itself a valid frame.
    static func checkRejection(_ error: FrameDecodingError, of bytes: Data) {
        switch error {
        case .tooLarge(let size):
            fuzzCheck(size == bytes.count && size > WireConstants.maxFrameBytes, "tooLarge(\(size)) for \(bytes.count) bytes")
        case .malformed:
            fuzzCheck((try? WireFrame(serializedBytes: bytes)) == nil, "malformed, yet the bytes parse as a Frame")
        case .unsupportedVersion(let version, let requestID):
            fuzzCheck(version != WireConstants.protocolVersion, "unsupportedVersion for the supported version")
            fuzzCheck((try? WireFrame(serializedBytes: bytes))?.requestID == requestID, "unsupportedVersion lost the request id")
        case .unknownKind(let requestID):
            let parsed = try? WireFrame(serializedBytes: bytes)
            fuzzCheck(parsed?.body == nil && parsed?.requestID == requestID, "unknownKind for a frame with a known body")
        }
        fuzzCheck(!error.description.isEmpty, "empty error description")
        let requestID: UInt64 = switch error {
        case .unsupportedVersion(_, let id), .unknownKind(let id): id
        case .tooLarge, .malformed: 0
        }
        let reply = WireFrame.error(error.code, error.description, requestID: requestID)
        fuzzCheck((try? FrameCodec.decode(FrameCodec.encode(reply))) == reply, "the error reply is not a valid frame")
    }

    /// The relay's own validation is internal to FlitzRelay; this runs the same public FlitzWire and
    /// FlitzCrypto calls on the same fields (`Relay.validatedDevice`, `verifyChallenge`, `authenticate`,
    /// `submit`), so attacker-chosen keys and signatures reach them.
    static func checkRelayValidation(of body: WireFrame.OneOf_Body) {
        switch body {
        case .register(let request):
            checkHandle(request.handle)
            checkDeviceKeys(request.device, accountIdentityKey: request.accountIdentityKey, handle: request.handle,
                            challengeSignature: request.challengeSignature)
        case .recover(let request):
            checkHandle(request.handle)
            checkDeviceKeys(request.device, accountIdentityKey: request.accountIdentityKey, handle: request.handle,
                            challengeSignature: request.challengeSignature)
        case .authenticate(let request):
            checkHandle(request.handle)
            // The relay takes the device identity key from its store; a fixed one stands in.
            _ = verify(request.signature, by: storedDeviceKey, over: SignedPayload.authentication(nonce: nonce, handle: request.handle))
        case .publishPrekeys(let request):
            if request.hasSignedPrekey { _ = verify(request.signedPrekey.signature, by: storedDeviceKey, over: request.signedPrekey.publicKey) }
        case .fetchPrekeyBundle(let request):
            checkHandle(request.handle)
        case .submit(let request):
            for envelope in request.envelopes { checkHandle(envelope.recipientHandle) }
        default:
            break
        }
    }

    static func checkDeviceKeys(_ keys: WireDeviceKeys, accountIdentityKey: Data, handle: String, challengeSignature: Data) {
        _ = verify(keys.deviceCertificateSignature, by: accountIdentityKey,
                   over: SignedPayload.deviceCertificate(accountIdentityKey: accountIdentityKey, deviceIdentityKey: keys.deviceIdentityKey))
        _ = verify(keys.signedPrekey.signature, by: keys.deviceIdentityKey, over: keys.signedPrekey.publicKey)
        _ = verify(challengeSignature, by: keys.deviceIdentityKey, over: SignedPayload.authentication(nonce: nonce, handle: handle))
    }

    /// Signature verification as the relay does it: a key of the wrong size is simply not valid.
    static func verify(_ signature: Data, by key: Data, over message: Data) -> Bool {
        guard let key = try? Ed25519PublicKey(rawRepresentation: key) else {
            fuzzCheck(key.count != WireConstants.publicKeyLength, "a 32-byte Ed25519 public key was refused")
            return false
        }
        let valid = key.isValidSignature(signature, for: message)
        fuzzCheck(!valid || signature.count == WireConstants.signatureLength, "a signature that is not 64 bytes verified")
        return valid
    }

    /// `Handle.isValid` against the rule it implements, written out independently.
    static func checkHandle(_ handle: String) {
        let allowed = Set("abcdefghijklmnopqrstuvwxyz0123456789_.".unicodeScalars)
        let expected = (3...32).contains(handle.unicodeScalars.count) && handle.unicodeScalars.allSatisfy(allowed.contains)
        fuzzCheck(Handle.isValid(handle) == expected, "Handle.isValid(\(handle.debugDescription)) disagrees with the rule")
    }
}
