import FlitzCrypto
import FlitzProtocol
import FlitzVectors
import FlitzWire
import Foundation

/// `vectors/pqxdh.json`: PQXDH with and without a one-time prekey (every key, every DH, the fixed KEM
/// encapsulation, SK and AD), bundles with a KEM prekey it must refuse, and prekey messages without one.
enum PQXDHVectors {
    static let label = "flitz-vectors/pqxdh"

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
            let bundle = try bob.bundle()
            let fixed = try KEMFixtures.encapsulation(for: bundle.kemPreKey.publicKey)
            let initiator = try PQXDH.initiate(identity: alice.device, ephemeralKey: ephemeral, bundle: bundle, encapsulation: fixed)
            var keyMaterial = ProtocolConstants.x3dhPrefix
            for output in initiator.dhOutputs { keyMaterial.append(output.unsafeData) }
            keyMaterial.append(fixed.sharedSecret.unsafeData)
            agreements.append(
                VectorTest(
                    withOneTimePreKey ? "PQXDH with a one-time prekey (four DHs and the KEM secret)" : "PQXDH without a one-time prekey (three DHs and the KEM secret)",
                    flags: withOneTimePreKey ? ["OneTimePreKey"] : ["NoOneTimePreKey"],
                    [
                        "alice": alice.json(), "bob": bob.json(), "bundle": bob.bundleJSON(),
                        "aliceEphemeralPrivateKey": .hex(ephemeral.secret),
                        "aliceEphemeralPublicKey": .hex(ephemeral.publicKey.rawRepresentation),
                        "dhOutputs": .array(initiator.dhOutputs.map { .hex($0) }),
                        "kemCiphertext": .hex(fixed.ciphertext), "kemSharedSecret": .hex(fixed.sharedSecret),
                        "keyMaterial": .hex(keyMaterial), "salt": .hex(ProtocolConstants.zeroSalt), "info": .hex(ProtocolConstants.pqxdhInfo),
                        "sharedSecret": .hex(initiator.sharedSecret), "associatedData": .hex(initiator.associatedData),
                    ]))
        }

        // Bundles: bob's, with its KEM prekey changed.
        let bob = VectorParty(label: "\(label)/bundles/bob", signedPreKey: true, oneTimePreKey: true)
        seeds.append(bob.random.label)
        func bundle(_ overrides: [String: JSONValue], removing: [String] = []) -> JSONValue {
            guard case .object(var object) = bob.bundleJSON() else { preconditionFailure("bundle JSON is an object") }
            for (key, value) in overrides { object[key] = value }
            // Verification never encapsulates: a fixed encapsulation here would be an input nothing checks.
            for key in removing + ["kemCiphertext", "kemSharedSecret"] { object[key] = nil }
            return .object(object)
        }
        let kem = bob.kemPreKey!
        let kemKey = kem.privateKey.publicKey.rawRepresentation
        let lastResortRandom = SeededRandom(label: "\(label)/bundles/lastResort")
        seeds.append("\(label)/bundles/lastResort")
        let lastResort = KEMPreKeyPair(id: 201, kind: .lastResort, device: bob.device, random: lastResortRandom)
        let unreduced = Data(repeating: 0xFF, count: MLKEMSizes.publicKey)
        func invalid(_ code: FlitzProtocolError.Code) -> VectorTest.Result { .invalid(VectorErrorRef(code)) }
        let bundleTests: [VectorTest] = [
            VectorTest(
                "a last-resort KEM prekey (kind 0x02 in the signed payload) verifies", flags: ["LastResort"],
                [
                    "bundle": bundle([
                        "kemPreKeyId": .uint(lastResort.id), "kemPreKey": .hex(lastResort.privateKey.publicKey.rawRepresentation),
                        "kemPreKeySignature": .hex(lastResort.signature), "kemPreKeyLastResort": .bool(true),
                    ]),
                    "kemPreKeySeed": .hex(lastResort.privateKey.seed),
                    "kemPreKeySignaturePayload": .hex(
                        KEMPreKeyPair.signaturePayload(id: lastResort.id, kind: .lastResort, publicKey: lastResort.privateKey.publicKey.rawRepresentation)),
                ]),
            VectorTest(
                "no KEM prekey: PQXDH is not optional (no downgrade to X3DH)", flags: ["MissingKEMPreKey"], result: invalid(.missingKEMPreKey),
                ["bundle": bundle([:], removing: ["kemPreKeyId", "kemPreKey", "kemPreKeySignature", "kemPreKeyLastResort"])]),
            VectorTest(
                "KEM prekey signature with one bit flipped", flags: ["BadKEMSignature"], result: invalid(.authenticationFailed),
                ["bundle": bundle(["kemPreKeySignature": .hex(Data([kem.signature[0] ^ 1]) + kem.signature.dropFirst())])]),
            VectorTest(
                "a one-time KEM prekey presented as last-resort: the kind is signed", flags: ["BadKEMSignature"], result: invalid(.authenticationFailed),
                ["bundle": bundle(["kemPreKeyLastResort": .bool(true)])]),
            VectorTest(
                "a KEM prekey presented under another id: the id is signed", flags: ["BadKEMSignature"], result: invalid(.authenticationFailed),
                ["bundle": bundle(["kemPreKeyId": .uint(kem.id + 1)])]),
            VectorTest(
                "KEM prekey signed by the account key instead of the device key", flags: ["BadKEMSignature"], result: invalid(.authenticationFailed),
                [
                    "bundle": bundle([
                        "kemPreKeySignature": .hex(bob.account.privateKey.signature(for: KEMPreKeyPair.signaturePayload(id: kem.id, kind: .oneTime, publicKey: kemKey)))
                    ])
                ]),
            VectorTest(
                "a 1567-byte KEM prekey", flags: ["BadLength"], result: invalid(.malformedMessage),
                ["bundle": bundle(["kemPreKey": .hex(kemKey.dropLast())])]),
            VectorTest(
                "a correctly signed KEM prekey whose coefficients are not reduced mod q (FIPS 203 modulus check)", flags: ["Unreduced"],
                result: invalid(.invalidKey),
                [
                    "bundle": bundle([
                        "kemPreKey": .hex(unreduced),
                        "kemPreKeySignature": .hex(bob.device.privateKey.signature(for: KEMPreKeyPair.signaturePayload(id: kem.id, kind: .oneTime, publicKey: unreduced))),
                    ])
                ]),
        ]

        // Prekey messages: alice's first message to bob, with the KEM fields removed or cut.
        let alice = VectorParty(label: "\(label)/messages/alice", signedPreKey: false, oneTimePreKey: false)
        seeds.append(alice.random.label)
        var session = try alice.initiate(to: bob)
        let first = try ProtoSessionMessage(serializedBytes: try session.encrypt(Data("first".utf8), random: alice.random))
        func variant(_ change: (inout ProtoPreKeyMessage) -> Void) -> Data {
            var message = first
            guard case .prekeyMessage(var preKey) = message.kind else { preconditionFailure("a first message is a prekey message") }
            change(&preKey)
            message.kind = .prekeyMessage(preKey)
            return try! message.serializedData()
        }
        let parseTests: [VectorTest] = [
            VectorTest(
                "the first message as sent: kem_prekey_id and kem_ciphertext (1568 bytes) present", flags: ["PreKeyMessage"],
                ["sessionMessage": .hex(try first.serializedData()), "kemPreKeyId": .uint(kem.id)]),
            VectorTest(
                "a prekey message without kem_ciphertext: refused before any key is looked up", flags: ["MissingKEMPreKey"],
                result: invalid(.missingKEMPreKey), ["sessionMessage": .hex(variant { $0.kemCiphertext = Data() })]),
            VectorTest(
                "a prekey message with a 1567-byte kem_ciphertext", flags: ["BadLength"], result: invalid(.malformedMessage),
                ["sessionMessage": .hex(variant { $0.kemCiphertext = $0.kemCiphertext.dropLast() })]),
        ]
        _ = alice.random.take()

        return VectorFileBuilder(
            topic: "pqxdh",
            description: "PQXDH (crypto.md section 3a): X3DH's DHs plus ML-KEM-1024 (FIPS 203) to bob's signed KEM prekey. keyMaterial = "
                + "32 x 0xff || DH1 || DH2 || DH3 [|| DH4] || kemSharedSecret; sharedSecret = HKDF-SHA-256(salt = 32 zero bytes, keyMaterial, "
                + "info = \"Flitz-PQXDH-v1\", 32); associatedData = IK_A || IK_B || AccK_A || AccK_B. A responder's KEM prekey is "
                + "ML-KEM-1024.KeyGen_internal(d || z) of its 64-byte seed, the draw after its prekeys. swift-crypto cannot seed the "
                + "encapsulation, so kemCiphertext and kemSharedSecret (also in each bundle object) are fixed inputs: an initiator uses "
                + "them instead of encapsulating, and a responder must decapsulate kemCiphertext with its KEM private key to exactly "
                + "kemSharedSecret. The bundle group checks KEM prekey verification after the checks of x3dh.json; the parse group "
                + "checks a prekey message's KEM fields.",
            specification: "protocol/crypto.md sections 2 (\"Keys\", \"Prekey bundle verification\"), 3a and 7",
            notes: [
                "OneTimePreKey": "The bundle has a one-time prekey: four DHs.",
                "NoOneTimePreKey": "The bundle has no one-time prekey: three DHs.",
                "LastResort": "A last-resort KEM prekey: kind 0x02 in its signed payload.",
                "MissingKEMPreKey": "The KEM prekey or ciphertext is absent: refused, no X3DH fallback.",
                "BadKEMSignature": "The KEM prekey signature does not verify for this key, kind and id under the device identity key.",
                "BadLength": "A KEM key or ciphertext is not 1568 bytes.",
                "Unreduced": "An encapsulation key failing FIPS 203's modulus check.",
                "PreKeyMessage": "A prekey message that parses.",
            ],
            seeds: seeds,
            groups: [
                VectorGroup(type: "agreement", tests: agreements),
                VectorGroup(type: "bundle", tests: bundleTests),
                VectorGroup(type: "parse", tests: parseTests),
            ])
    }
}
