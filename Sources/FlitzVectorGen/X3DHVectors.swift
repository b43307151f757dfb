import FlitzCrypto
import FlitzProtocol
import Foundation

/// `vectors/x3dh.json`: X3DH with and without a one-time prekey.
enum X3DHVectors {
    static func make() throws -> JSONValue {
        var cases: [JSONValue] = []
        for (name, withOneTimePreKey) in [("withOneTimePreKey", true), ("withoutOneTimePreKey", false)] {
            let label = "flitz-vectors/x3dh/\(name)"
            let alice = VectorParty(label: "\(label)/alice", signedPreKey: false, oneTimePreKey: false)
            let bob = VectorParty(label: "\(label)/bob", signedPreKey: true, oneTimePreKey: withOneTimePreKey)
            let bundle = try bob.bundle()
            // Alice's random: account seed, device seed, then the ephemeral (base) key.
            let ephemeral = X25519PrivateKey(random: alice.random)
            _ = alice.random.take()
            let initiator = try X3DH.initiate(identity: alice.device, ephemeralKey: ephemeral, bundle: bundle)
            let responder = try X3DH.respond(
                identity: bob.device, signedPreKey: bob.signedPreKey!, oneTimePreKey: bob.oneTimePreKey,
                initiatorCertificate: alice.device.certificate, baseKey: ephemeral.publicKey)
            precondition(initiator.sharedSecret.constantTimeEquals(responder.sharedSecret), "X3DH sides disagree")
            precondition(initiator.associatedData == responder.associatedData)
            var keyMaterial = ProtocolConstants.x3dhPrefix
            for output in initiator.dhOutputs { keyMaterial.append(output.unsafeData) }
            cases.append(
                .object([
                    "name": .string(name),
                    "alice": alice.json(),
                    "bob": bob.json(),
                    "aliceEphemeralPrivateKey": .hex(ephemeral.secret),
                    "aliceEphemeralPublicKey": .hex(ephemeral.publicKey.rawRepresentation),
                    "dhOutputs": .array(initiator.dhOutputs.map { .hex($0) }),
                    "keyMaterial": .hex(keyMaterial),
                    "salt": .hex(ProtocolConstants.zeroSalt),
                    "info": .hex(ProtocolConstants.x3dhInfo),
                    "sharedSecret": .hex(initiator.sharedSecret),
                    "associatedData": .hex(initiator.associatedData),
                ]))
        }
        return .object([
            "description": .string(
                "X3DH (protocol/crypto.md, \"X3DH\"): alice initiates to bob's prekey bundle, with and without a one-time prekey. "
                    + "dhOutputs are DH1 = DH(IK_A, SPK_B), DH2 = DH(EK_A, IK_B), DH3 = DH(EK_A, SPK_B)[, DH4 = DH(EK_A, OPK_B)] "
                    + "with identity keys in their X25519 form; keyMaterial = 32 x 0xff || DH1 || DH2 || DH3 [|| DH4]; "
                    + "sharedSecret = HKDF-SHA-256(salt, keyMaterial, info, 32); associatedData = alice's || bob's device identity key."),
            "generator": .string(Generator.name),
            "testCases": .array(cases),
        ])
    }
}
