import FlitzCrypto
import FlitzFuzzSupport
import FlitzProtocol
import FlitzWire
import Foundation
import SwiftProtobuf

/// libFuzzer entry point: bytes as the body of a `PreKeyBundle` frame.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPreKeyBundle(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    PreKeyBundleFuzzer.run(fuzzData(start, count))
    return 0
}

/// libFuzzer calls this once before the first input.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    prepareFixtures()
    PreKeyBundleFuzzer.run(Data())
    return 0
}

/// A fetched `WirePreKeyBundle` through the client's verification (`FlitzClient`'s `fetchBundle` maps each
/// device to an `UnverifiedPreKeyBundle` and calls `verified()`), then what the client does with a verified
/// bundle: `Session.initiate` and a first message.
///
/// Random bytes almost never carry valid signatures, so each device is also tried re-signed by bob's
/// fixture keys: that is what a hostile but registered peer can publish, and it takes attacker-chosen
/// prekeys (low-order points, wrong sizes) past the signature checks into X3DH.
enum PreKeyBundleFuzzer {
    static var plaintext: Data { Data("fuzz".utf8) }

    static func run(_ bytes: Data) {
        guard let wire = try? WirePreKeyBundle(serializedBytes: bytes) else { return }
        checkProtobufRoundTrip(wire, "PreKeyBundle")
        for device in wire.devices.prefix(4) {
            let unverified = UnverifiedPreKeyBundle(
                deviceID: device.deviceID, accountIdentityKey: wire.accountIdentityKey, deviceIdentityKey: device.deviceIdentityKey,
                deviceCertificateSignature: device.deviceCertificateSignature, signedPreKeyID: device.signedPrekey.id,
                signedPreKey: device.signedPrekey.publicKey, signedPreKeySignature: device.signedPrekey.signature,
                oneTimePreKey: device.hasOneTimePrekey ? (device.oneTimePrekey.id, device.oneTimePrekey.publicKey) : nil,
                kemPreKey: device.hasKemPrekey
                    ? (device.kemPrekey.id, device.kemPrekey.publicKey, device.kemPrekey.signature, device.kemPrekey.lastResort) : nil)
            check(unverified, expectValid: false)
            check(resigned(unverified), expectValid: true)
        }
    }

    /// The same prekeys under signatures by bob's fixture account and device keys.
    static func resigned(_ bundle: UnverifiedPreKeyBundle) -> UnverifiedPreKeyBundle {
        let fixtures = Fixtures.shared
        var bundle = bundle
        bundle.accountIdentityKey = fixtures.bobAccount.publicKey.rawRepresentation
        bundle.deviceIdentityKey = fixtures.bob.publicKey.rawRepresentation
        bundle.deviceCertificateSignature = fixtures.bob.certificate.signature
        bundle.signedPreKeySignature = fixtures.bob.privateKey.signature(for: bundle.signedPreKey)
        // A fuzzed KEM prekey is re-signed as it is; a missing one becomes bob's real one.
        let kem = bundle.kemPreKey ?? (
            fixtures.bobKEMPreKey.id, fixtures.bobKEMPreKey.privateKey.publicKey.rawRepresentation, Data(), false
        )
        let kind: KEMPreKeyKind = kem.lastResort ? .lastResort : .oneTime
        bundle.kemPreKey = (
            kem.id, kem.publicKey,
            fixtures.bob.privateKey.signature(for: KEMPreKeyPair.signaturePayload(id: kem.id, kind: kind, publicKey: kem.publicKey)), kem.lastResort
        )
        return bundle
    }

    /// `verified()`; with `expectValid`, the signatures are good, so only the prekey sizes or an ML-KEM key
    /// failing FIPS 203's check may fail it.
    static func check(_ unverified: UnverifiedPreKeyBundle, expectValid: Bool) {
        let bundle: PreKeyBundle
        do {
            bundle = try unverified.verified()
        } catch {
            let sizesOK = unverified.signedPreKey.count == 32 && (unverified.oneTimePreKey.map { $0.publicKey.count == 32 } ?? true)
                && unverified.kemPreKey?.publicKey.count == MLKEMSizes.publicKey
            let explained = (!sizesOK && error.code == .malformedMessage) || (sizesOK && error.code == .invalidKey)
            fuzzCheck(!expectValid || explained, "a correctly signed bundle was refused: \(error)")
            return
        }
        fuzzCheck(bundle.certificate.accountIdentityKey.rawRepresentation == unverified.accountIdentityKey, "account key changed")
        fuzzCheck(bundle.certificate.deviceIdentityKey.rawRepresentation == unverified.deviceIdentityKey, "device key changed")
        fuzzCheck(bundle.signedPreKey.rawRepresentation == unverified.signedPreKey, "signed prekey changed")
        fuzzCheck(bundle.oneTimePreKey?.publicKey.rawRepresentation == unverified.oneTimePreKey?.publicKey, "one-time prekey changed")
        fuzzCheck(bundle.deviceID == unverified.deviceID && bundle.signedPreKeyID == unverified.signedPreKeyID, "ids changed")
        initiate(bundle)
    }

    /// alice starts a session with the bundle; when its prekeys are bob's real ones, bob must be able to answer.
    static func initiate(_ bundle: PreKeyBundle) {
        let fixtures = Fixtures.shared
        var session: Session
        do {
            session = try Session.initiate(identity: fixtures.alice, bundle: bundle, random: Fixtures.random())
        } catch {
            // Refusing a key is fine (a low-order point gives an all-zero DH output: invalidKey); crashing is not.
            fuzzCheck(error.code == .invalidKey || error.code == .authenticationFailed, "initiate refused a bundle with \(error)")
            return
        }
        let sent: Data
        do { sent = try session.encrypt(plaintext, random: Fixtures.random()) } catch {
            fatalError("fuzz invariant violated: a new initiator session cannot encrypt: \(error)")
        }
        guard case .preKey(let message) = try? IncomingSessionMessage(parsing: sent) else {
            fatalError("fuzz invariant violated: an initiator's first message is not a prekey message")
        }
        fuzzCheck(message.signedPreKeyID == bundle.signedPreKeyID && message.oneTimePreKeyID == bundle.oneTimePreKey?.id,
                  "the prekey message names other prekeys than the bundle's")
        let realKeys = bundle.certificate == fixtures.bob.certificate
            && bundle.kemPreKey.id == fixtures.bobKEMPreKey.id && bundle.kemPreKey.publicKey == fixtures.bobKEMPreKey.privateKey.publicKey
            && bundle.kemPreKey.kind == .oneTime
            && bundle.signedPreKey == fixtures.bobSignedPreKey.privateKey.publicKey && bundle.signedPreKeyID == fixtures.bobSignedPreKey.id
            && bundle.oneTimePreKey.map { $0.id == fixtures.bobOneTimePreKey.id && $0.publicKey == fixtures.bobOneTimePreKey.privateKey.publicKey } ?? true
        guard realKeys else { return }
        do {
            let (_, received) = try Session.respond(
                to: message, identity: fixtures.bob, signedPreKey: fixtures.bobSignedPreKey,
                oneTimePreKey: bundle.oneTimePreKey == nil ? nil : fixtures.bobOneTimePreKey, kemPreKey: fixtures.bobKEMPreKey,
                random: Fixtures.random())
            fuzzCheck(received == plaintext, "bob decrypted something else than alice sent")
        } catch {
            fatalError("fuzz invariant violated: bob cannot answer a session started from his own bundle: \(error)")
        }
    }
}
