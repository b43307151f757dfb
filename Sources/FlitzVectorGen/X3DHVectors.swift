import FlitzCrypto
import FlitzProtocol
import FlitzVectors
import Foundation

/// `vectors/x3dh.json`: X3DH with and without a one-time prekey, and the bundles and keys it must refuse.
enum X3DHVectors {
    static let label = "flitz-vectors/x3dh"

    /// X25519 u-coordinates whose product with any scalar is all zero (RFC 7748 section 6.1).
    static let lowOrderPoints: [(String, Data, [String])] = [
        ("all-zero (u = 0)", Data(count: 32), ["LowOrder", "AllZero"]),
        ("u = 1, order 4", Data([1]) + Data(count: 31), ["LowOrder"]),
        ("an order-8 point", Data(hexString: "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")!, ["LowOrder"]),
        ("u = p, a non-canonical encoding of 0", Data(hexString: "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")!, ["LowOrder", "NonCanonical"]),
    ]

    static func make() throws -> VectorFileBuilder {
        var seeds: [String] = []
        var agreements: [VectorTest] = []
        for (name, withOneTimePreKey) in [("withOneTimePreKey", true), ("withoutOneTimePreKey", false)] {
            let caseLabel = "\(label)/\(name)"
            let alice = VectorParty(label: "\(caseLabel)/alice", signedPreKey: false, oneTimePreKey: false)
            let bob = VectorParty(label: "\(caseLabel)/bob", signedPreKey: true, oneTimePreKey: withOneTimePreKey)
            seeds += [alice.random.label, bob.random.label]
            let ephemeral = X25519PrivateKey(random: alice.random)  // alice's third draw
            _ = alice.random.take()
            let initiator = try X3DH.initiate(identity: alice.device, ephemeralKey: ephemeral, bundle: try bob.bundle())
            var keyMaterial = ProtocolConstants.x3dhPrefix
            for output in initiator.dhOutputs { keyMaterial.append(output.unsafeData) }
            agreements.append(
                VectorTest(
                    withOneTimePreKey ? "X3DH with a one-time prekey (four DHs)" : "X3DH without a one-time prekey (three DHs)",
                    flags: withOneTimePreKey ? ["OneTimePreKey"] : ["NoOneTimePreKey"],
                    [
                        "alice": alice.json(), "bob": bob.json(), "bundle": bob.bundleJSON(),
                        "aliceEphemeralPrivateKey": .hex(ephemeral.secret),
                        "aliceEphemeralPublicKey": .hex(ephemeral.publicKey.rawRepresentation),
                        "dhOutputs": .array(initiator.dhOutputs.map { .hex($0) }),
                        "keyMaterial": .hex(keyMaterial), "salt": .hex(ProtocolConstants.zeroSalt), "info": .hex(ProtocolConstants.x3dhInfo),
                        "sharedSecret": .hex(initiator.sharedSecret), "associatedData": .hex(initiator.associatedData),
                    ]))
        }

        // Refusals. bob has both prekeys; mallory is another account.
        let alice = VectorParty(label: "\(label)/invalid/alice", signedPreKey: false, oneTimePreKey: false)
        let bob = VectorParty(label: "\(label)/invalid/bob", signedPreKey: true, oneTimePreKey: true)
        let mallory = VectorParty(label: "\(label)/invalid/mallory", signedPreKey: false, oneTimePreKey: false)
        let aliceEphemeral = X25519PrivateKey(random: alice.random)
        seeds += [alice.random.label, bob.random.label, mallory.random.label]
        let good = bob.bundleJSON()
        func bundle(_ changes: [String: JSONValue]) -> JSONValue {
            guard case .object(var object) = good else { preconditionFailure() }
            for (key, value) in changes { object[key] = value }
            return .object(object)
        }
        func flipped(_ data: Data) -> Data {
            var data = data
            data[data.startIndex] ^= 0x01
            return data
        }
        let authenticationFailed = VectorErrorRef(FlitzProtocolError.Code.authenticationFailed)
        let invalidKey = VectorErrorRef(FlitzProtocolError.Code.invalidKey)
        let malformed = VectorErrorRef(FlitzProtocolError.Code.malformedMessage)
        let spk = bob.signedPreKey!.privateKey.publicKey.rawRepresentation
        let shortSPK = spk.prefix(31)
        let bundleTests = [
            VectorTest("a good bundle (control case)", ["bundle": good]),
            VectorTest(
                "certificate signature with one bit flipped", flags: ["BadCertificate"], result: .invalid(authenticationFailed),
                ["bundle": bundle(["deviceCertificateSignature": .hex(flipped(bob.device.certificate.signature))])]),
            VectorTest(
                "certificate made by another account's key", flags: ["BadCertificate"], result: .invalid(authenticationFailed),
                ["bundle": bundle(["deviceCertificateSignature": .hex(mallory.account.certify(bob.device.publicKey).signature)])]),
            VectorTest(
                "bob's certificate presented under another account key", flags: ["BadCertificate"], result: .invalid(authenticationFailed),
                ["bundle": bundle(["accountIdentityKey": .hex(mallory.account.publicKey.rawRepresentation)])]),
            VectorTest(
                "signed prekey signature with one bit flipped", flags: ["BadSignedPreKeySignature"], result: .invalid(authenticationFailed),
                ["bundle": bundle(["signedPreKeySignature": .hex(flipped(bob.signedPreKey!.signature))])]),
            VectorTest(
                "signed prekey signed by the account key instead of the device key", flags: ["BadSignedPreKeySignature"],
                result: .invalid(authenticationFailed),
                ["bundle": bundle(["signedPreKeySignature": .hex(bob.account.privateKey.signature(for: spk))])]),
            VectorTest(
                "signed prekey signature of 63 bytes", flags: ["BadSignedPreKeySignature"], result: .invalid(authenticationFailed),
                ["bundle": bundle(["signedPreKeySignature": .hex(bob.signedPreKey!.signature.prefix(63))])]),
            VectorTest(
                "31-byte signed prekey with a valid signature over those 31 bytes: sizes are checked after signatures",
                flags: ["BadLength"], result: .invalid(malformed),
                ["bundle": bundle(["signedPreKey": .hex(shortSPK), "signedPreKeySignature": .hex(bob.device.privateKey.signature(for: shortSPK))])]),
            VectorTest(
                "31-byte account identity key", flags: ["BadLength"], result: .invalid(malformed),
                ["bundle": bundle(["accountIdentityKey": .hex(bob.account.publicKey.rawRepresentation.prefix(31))])]),
            VectorTest(
                "33-byte one-time prekey", flags: ["BadLength"], result: .invalid(malformed),
                ["bundle": bundle(["oneTimePreKey": .hex(bob.oneTimePreKey!.privateKey.publicKey.rawRepresentation + Data([0]))])]),
        ]

        var initiateTests: [VectorTest] = []
        for (what, point, flags) in lowOrderPoints {
            initiateTests.append(
                VectorTest(
                    "signed prekey \(what), correctly signed: DH1 and DH3 are all zero", flags: flags, result: .invalid(invalidKey),
                    [
                        "alice": alice.json(), "aliceEphemeralPrivateKey": .hex(aliceEphemeral.secret),
                        "bundle": bundle(["signedPreKey": .hex(point), "signedPreKeySignature": .hex(bob.device.privateKey.signature(for: point))]),
                    ]))
        }
        initiateTests.append(
            VectorTest(
                "one-time prekey all-zero: DH4 is all zero", flags: ["LowOrder", "AllZero"], result: .invalid(invalidKey),
                ["alice": alice.json(), "aliceEphemeralPrivateKey": .hex(aliceEphemeral.secret), "bundle": bundle(["oneTimePreKey": .hex(Data(count: 32))])]))

        var respondTests: [VectorTest] = []
        let certificate: JSONValue = .object([
            "accountIdentityKey": .hex(alice.account.publicKey.rawRepresentation),
            "deviceIdentityKey": .hex(alice.device.publicKey.rawRepresentation),
            "signature": .hex(alice.device.certificate.signature),
        ])
        for (what, point, flags) in lowOrderPoints.prefix(3) {
            respondTests.append(
                VectorTest(
                    "base key \(what)", flags: flags, result: .invalid(invalidKey),
                    ["bob": bob.json(), "initiatorCertificate": certificate, "baseKey": .hex(point)]))
        }
        // The Ed25519 identity point (small order): a certificate over it verifies, but it has no X25519 form.
        let identityPoint = Data([1]) + Data(count: 31)
        let forged = alice.account.certify(try Ed25519PublicKey(rawRepresentation: identityPoint))
        respondTests.append(
            VectorTest(
                "initiator device identity key without an X25519 form (the Ed25519 identity point), validly certified",
                flags: ["NoX25519Form"], result: .invalid(authenticationFailed),
                [
                    "bob": bob.json(), "baseKey": .hex(aliceEphemeral.publicKey.rawRepresentation),
                    "initiatorCertificate": .object([
                        "accountIdentityKey": .hex(alice.account.publicKey.rawRepresentation), "deviceIdentityKey": .hex(identityPoint),
                        "signature": .hex(forged.signature),
                    ]),
                ]))

        return VectorFileBuilder(
            topic: "x3dh",
            description: "X3DH: alice initiates to bob's prekey bundle. dhOutputs are DH1 = DH(IK_A, SPK_B), DH2 = DH(EK_A, IK_B), "
                + "DH3 = DH(EK_A, SPK_B) [, DH4 = DH(EK_A, OPK_B)] with identity keys in their X25519 form; keyMaterial = 32 x 0xff || "
                + "DH1 || ... ; sharedSecret = HKDF-SHA-256(salt, keyMaterial, info, 32); associatedData = IK_A || IK_B || AccK_A || AccK_B "
                + "(Ed25519 encodings). alice's third draw is EK_A. The bundle group checks bundle verification (certificate, then signed "
                + "prekey signature, then key sizes); the initiate and respond groups hold bundles and certificates that verify but "
                + "keys that make a DH all zero or have no X25519 form. mallory is an unrelated account.",
            specification: "protocol/crypto.md sections 2 (\"Prekey bundle verification\") and 3",
            notes: [
                "OneTimePreKey": "The bundle has a one-time prekey: four DHs.",
                "NoOneTimePreKey": "The bundle has no one-time prekey: three DHs.",
                "BadCertificate": "The device certificate does not verify under the bundle's account key.",
                "BadSignedPreKeySignature": "The signed prekey signature does not verify under the device identity key.",
                "BadLength": "A key is not 32 bytes.",
                "LowOrder": "A public key of small order: every X25519 output with it is all zero.",
                "AllZero": "The all-zero public key.",
                "NonCanonical": "A u-coordinate >= p (libsodium reduces it mod p).",
                "NoX25519Form": "An Ed25519 key that crypto_sign_ed25519_pk_to_curve25519 refuses.",
            ],
            seeds: seeds,
            groups: [
                VectorGroup(type: "agreement", tests: agreements),
                VectorGroup(type: "bundle", tests: bundleTests),
                VectorGroup(type: "initiate", tests: initiateTests),
                VectorGroup(type: "respond", tests: respondTests),
            ])
    }
}
