import FlitzCrypto
import FlitzProtocol
import FlitzVectors
import FlitzWire
import Foundation

/// `vectors/devices.json`: signed device lists (valid and failing each check), pairing codes and keys, the pairing
/// messages of one linking, device fingerprints and the account deletion signature (`protocol/devices.md`).
enum DeviceVectors {
    static let label = "flitz-vectors/devices"
    /// 2026-01-01T00:00:00Z in milliseconds.
    static let issuedAt: UInt64 = 1_767_225_600_000

    static func devicesJSON(_ entries: [DeviceListPayload.Entry]) -> JSONValue {
        .array(entries.map { .object(["deviceId": .uint($0.deviceID), "deviceIdentityKey": .hex($0.deviceIdentityKey)]) })
    }

    static func make() throws -> VectorFileBuilder {
        let random = SeededRandom(label: label)
        func deviceKey() -> Data { Ed25519PrivateKey(random: random).publicKey.rawRepresentation }

        // MARK: device lists
        let example = try AccountIdentity(seed: SecretBytes(Data(0..<32)))
        let account = AccountIdentity(random: random)
        let other = AccountIdentity(random: random)
        let key = account.publicKey.rawRepresentation
        func validList(_ comment: String, _ signer: AccountIdentity, version: UInt64, issuedAt: UInt64, _ entries: [DeviceListPayload.Entry], flags: [String])
            throws -> VectorTest
        {
            let payload = DeviceListPayload(accountIdentityKey: signer.publicKey.rawRepresentation, version: version, issuedAtMs: issuedAt, entries: entries)
            let signed = try SignedDeviceList.sign(payload, with: signer)
            return VectorTest(
                comment, flags: flags,
                [
                    "accountIdentitySeed": .hex(signer.privateKey.seed), "accountIdentityKey": .hex(signer.publicKey.rawRepresentation),
                    "payload": .hex(signed.payload), "signature": .hex(signed.signature), "version": .string(String(version)),
                    "issuedAtMs": .string(String(issuedAt)), "devices": devicesJSON(entries),
                ])
        }
        func invalidList(_ comment: String, payload: Data, signature: Data, under k: Data = key, _ expected: DeviceListError, flags: [String]) -> VectorTest {
            // The generator checks its own claim before writing it.
            do {
                _ = try SignedDeviceList(payload: payload, signature: signature, accountIdentityKey: k)
                preconditionFailure("invalid list vector \(comment) verifies")
            } catch {
                precondition(error == expected, "invalid list vector \(comment): \(error)")
            }
            return VectorTest(
                comment, flags: flags, result: .invalid(VectorErrorRef(expected)),
                ["accountIdentityKey": .hex(k), "payload": .hex(payload), "signature": .hex(signature)])
        }
        /// Payload bytes of `account` over exactly these entries (not sorted), and its signature.
        func raw(version: UInt64 = 2, issuedAt: UInt64 = DeviceVectors.issuedAt, _ entries: [DeviceListPayload.Entry], signer: AccountIdentity? = nil) -> (Data, Data) {
            let payload = DeviceListPayload(accountIdentityKey: key, version: version, issuedAtMs: issuedAt, entries: entries).encoded()
            return (payload, (signer ?? account).privateKey.signature(for: payload))
        }
        func resigned(_ payload: Data) -> (Data, Data) { (payload, account.privateKey.signature(for: payload)) }

        let three = [1, 2, 5].map { DeviceListPayload.Entry(deviceID: UInt32($0), deviceIdentityKey: deviceKey()) }
        let sixteen = (1...16).map { DeviceListPayload.Entry(deviceID: UInt32($0 * 3), deviceIdentityKey: deviceKey()) }
        var lists: [VectorTest] = [
            try validList(
                "the example of devices.md section 4.1", example, version: 1, issuedAt: 1_700_000_000_000,
                [.init(deviceID: 1, deviceIdentityKey: Data(repeating: 0x22, count: 32))], flags: ["SpecExample"]),
            try validList("three devices, ids 1, 2 and 5", account, version: 7, issuedAt: issuedAt, three, flags: ["MultiDevice"]),
            try validList("MAX_DEVICES (16) devices", account, version: 8, issuedAt: issuedAt, sixteen, flags: ["MaxDevices"]),
            try validList(
                "device ids and version at their largest", account, version: UInt64.max, issuedAt: 1,
                [.init(deviceID: UInt32.max, deviceIdentityKey: three[0].deviceIdentityKey)], flags: ["LargeValues"]),
        ]
        let good = raw(three)
        var flipped = good.1
        flipped[17] ^= 0x01
        var foreignKey = good.0
        foreignKey.replaceSubrange(19..<51, with: other.publicKey.rawRepresentation)
        var badLabel = good.0
        badLabel[0] = UInt8(ascii: "f")
        var badSeparator = good.0
        badSeparator[18] = 0x01
        let seventeen = sixteen + [.init(deviceID: 100, deviceIdentityKey: deviceKey())]
        lists += [
            invalidList("a signature bit flipped", payload: good.0, signature: flipped, .signature, flags: ["BadSignature"]),
            invalidList("signed by another account identity key", payload: good.0, signature: raw(three, signer: other).1, .signature, flags: ["BadSignature"]),
            invalidList(
                "verified under another account identity key than the one it names", payload: good.0, signature: good.1,
                under: other.publicKey.rawRepresentation, .signature, flags: ["BadSignature"]),
            invalidList("a 63-byte signature", payload: good.0, signature: good.1.prefix(63), .signature, flags: ["BadSignature"]),
            invalidList(
                "signed by K but naming another account key at offset 19", payload: foreignKey,
                signature: account.privateKey.signature(for: foreignKey), .accountKeyMismatch, flags: ["AccountKeyMismatch"]),
            invalidList("one byte short", payload: resigned(good.0.dropLast()).0, signature: resigned(good.0.dropLast()).1, .malformed, flags: ["Malformed"]),
            invalidList("one byte too many", payload: resigned(good.0 + Data([0])).0, signature: resigned(good.0 + Data([0])).1, .malformed, flags: ["Malformed"]),
            invalidList("shorter than the header", payload: resigned(good.0.prefix(40)).0, signature: resigned(good.0.prefix(40)).1, .malformed, flags: ["Malformed"]),
            invalidList("a lower-case label", payload: badLabel, signature: resigned(badLabel).1, .malformed, flags: ["Malformed"]),
            invalidList("0x01 instead of 0x00 after the label", payload: badSeparator, signature: resigned(badSeparator).1, .malformed, flags: ["Malformed"]),
            invalidList("no devices", payload: raw([]).0, signature: raw([]).1, .deviceCount, flags: ["DeviceCount"]),
            invalidList("17 devices", payload: raw(seventeen).0, signature: raw(seventeen).1, .deviceCount, flags: ["DeviceCount"]),
            invalidList("version 0", payload: raw(version: 0, three).0, signature: raw(version: 0, three).1, .zeroField, flags: ["ZeroField"]),
            invalidList("issued_at 0", payload: raw(issuedAt: 0, three).0, signature: raw(issuedAt: 0, three).1, .zeroField, flags: ["ZeroField"]),
            invalidList(
                "entries not sorted by device id", payload: raw([three[1], three[0]]).0, signature: raw([three[1], three[0]]).1,
                .unsortedOrDuplicate, flags: ["Unsorted"]),
            invalidList(
                "a device id twice", payload: raw([three[0], .init(deviceID: 1, deviceIdentityKey: three[1].deviceIdentityKey)]).0,
                signature: raw([three[0], .init(deviceID: 1, deviceIdentityKey: three[1].deviceIdentityKey)]).1, .unsortedOrDuplicate,
                flags: ["Duplicate"]),
            invalidList(
                "a device identity key twice", payload: raw([three[0], .init(deviceID: 2, deviceIdentityKey: three[0].deviceIdentityKey)]).0,
                signature: raw([three[0], .init(deviceID: 2, deviceIdentityKey: three[0].deviceIdentityKey)]).1, .unsortedOrDuplicate,
                flags: ["Duplicate"]),
        ]

        // MARK: pairing codes and keys
        func codeValid(_ comment: String, _ code: String, _ secret: Data, flags: [String]) -> VectorTest {
            VectorTest(comment, flags: flags, ["code": .string(code), "linkSecret": .hex(secret)])
        }
        func codeInvalid(_ comment: String, _ code: String, flags: [String]) -> VectorTest {
            precondition((try? LinkSecret(code: code)) == nil, "pairing code vector \(comment) parses")
            return VectorTest(comment, flags: flags, result: .invalid(VectorErrorRef(FlitzProtocolError.Code.invalidPairingCode)), ["code": .string(code)])
        }
        let exampleSecret = Data(0..<32)
        let exampleCode = try LinkSecret(secret: SecretBytes(exampleSecret)).code
        let body = String(exampleCode.dropFirst(LinkSecret.codePrefix.count))
        let grouped = stride(from: 0, to: body.count, by: 4).map { i in
            String(body[body.index(body.startIndex, offsetBy: i)..<body.index(body.startIndex, offsetBy: min(i + 4, body.count))])
        }
        let codes: [VectorTest] = [
            codeValid("the code of the secret 00 01 ... 1f", exampleCode, exampleSecret, flags: ["Canonical"]),
            codeValid("lower case", exampleCode.lowercased(), exampleSecret, flags: ["Typed"]),
            codeValid("groups of four separated by spaces, surrounding whitespace", "  FLITZLINK1: " + grouped.joined(separator: " ") + "\n", exampleSecret, flags: ["Typed"]),
            codeValid("dashes", "flitzlink1:" + grouped.joined(separator: "-"), exampleSecret, flags: ["Typed"]),
            codeInvalid("no prefix", body, flags: ["BadPrefix"]),
            codeInvalid("another version's prefix", "FLITZLINK2:" + body, flags: ["BadPrefix"]),
            codeInvalid("51 characters", "FLITZLINK1:" + body.dropLast(), flags: ["BadLength"]),
            codeInvalid("53 characters", "FLITZLINK1:" + body + "A", flags: ["BadLength"]),
            codeInvalid("with base32 padding", exampleCode + "====", flags: ["BadLength"]),
            codeInvalid("the digit 1, outside the alphabet", "FLITZLINK1:1" + body.dropFirst(), flags: ["BadCharacter"]),
            codeInvalid("the digit 0, outside the alphabet", "FLITZLINK1:0" + body.dropFirst(), flags: ["BadCharacter"]),
            codeInvalid(
                "the last character sets one of the 4 unused bits (Q -> R)", "FLITZLINK1:" + body.dropLast() + "R", flags: ["TrailingBits"]),
        ]
        func keysTest(_ comment: String, _ secret: LinkSecret, flags: [String]) -> VectorTest {
            let keys = LinkKeys(secret: secret)
            return VectorTest(
                comment, flags: flags,
                [
                    "linkSecret": .hex(secret.secret), "code": .string(secret.code), "rendezvousId": .hex(keys.rendezvousID),
                    "macKey": .hex(keys.macKey), "message": .hex(Data("Flitz".utf8)), "tag": .hex(keys.tag(Data("Flitz".utf8))),
                ])
        }
        let linkKeys: [VectorTest] = [
            keysTest("the secret 00 01 ... 1f", try LinkSecret(secret: SecretBytes(exampleSecret)), flags: ["Canonical"]),
            keysTest("a drawn secret", LinkSecret(random: random), flags: []),
        ]

        // MARK: one linking
        let linkSecret = LinkSecret(random: random)
        let keys = LinkKeys(secret: linkSecret)
        let primary = AccountIdentity(random: random)
        let newDevice = Ed25519PrivateKey(random: random)
        let stranger = Ed25519PrivateKey(random: random).publicKey
        let handle = "alice.phone_2"
        let deviceID: UInt32 = 2
        let offer = LinkOffer(deviceIdentityKey: newDevice.publicKey)
        let grant = LinkGrant(certificate: primary.certify(newDevice.publicKey), handle: handle)
        let done = LinkDone(deviceID: deviceID, deviceIdentityKey: newDevice.publicKey)
        let pairing = [
            VectorTest(
                "one linking: the offer, grant and done messages with their tags", flags: ["Flow"],
                [
                    "linkSecret": .hex(linkSecret.secret), "code": .string(linkSecret.code), "rendezvousId": .hex(keys.rendezvousID),
                    "macKey": .hex(keys.macKey), "accountIdentitySeed": .hex(primary.privateKey.seed),
                    "accountIdentityKey": .hex(primary.publicKey.rawRepresentation), "deviceIdentitySeed": .hex(newDevice.seed),
                    "deviceIdentityKey": .hex(newDevice.publicKey.rawRepresentation),
                    "deviceFingerprint": .string(DeviceFingerprint.of(identityKey: newDevice.publicKey)),
                    "certificateSignature": .hex(grant.certificate.signature), "handle": .string(handle), "deviceId": .uint(deviceID),
                    "offer": .hex(offer.payload), "offerTag": .hex(keys.tag(offer.payload)),
                    "grant": .hex(grant.payload), "grantTag": .hex(keys.tag(grant.payload)),
                    "done": .hex(done.payload), "doneTag": .hex(keys.tag(done.payload)),
                ])
        ]
        // Opening received pairing messages: every check.
        let otherSecret = LinkSecret(random: random)
        func openTest(
            _ comment: String, kind: String, sealed: Data, secret: LinkSecret = linkSecret, expecting: Ed25519PublicKey = newDevice.publicKey,
            error: FlitzProtocolError.Code? = nil, flags: [String]
        ) -> VectorTest {
            var fields: [String: JSONValue] = ["kind": .string(kind), "linkSecret": .hex(secret.secret), "sealed": .hex(sealed)]
            if kind != "offer" { fields["expectedDeviceIdentityKey"] = .hex(expecting.rawRepresentation) }
            let k = LinkKeys(secret: secret)
            let outcome: Result<Void, FlitzProtocolError> = Result { () throws(FlitzProtocolError) in
                switch kind {
                case "offer": _ = try LinkOffer(opening: sealed, with: k)
                case "grant": _ = try LinkGrant(opening: sealed, with: k, expectedDeviceIdentityKey: expecting)
                default: _ = try LinkDone(opening: sealed, with: k, expectedDeviceIdentityKey: expecting)
                }
            }
            switch (outcome, error) {
            case (.success, nil): break
            case (.failure(let actual), let expected?) where actual.code == expected: break
            default: preconditionFailure("pairing vector \(comment): \(outcome)")
            }
            guard let error else {
                switch kind {
                case "offer": fields["deviceIdentityKey"] = .hex(newDevice.publicKey.rawRepresentation)
                case "grant":
                    fields["accountIdentityKey"] = .hex(primary.publicKey.rawRepresentation)
                    fields["handle"] = .string(handle)
                default: fields["deviceId"] = .uint(deviceID)
                }
                return VectorTest(comment, flags: flags, fields)
            }
            return VectorTest(comment, flags: flags, result: .invalid(VectorErrorRef(error)), fields)
        }
        var tamperedGrant = grant.sealed(with: keys)
        tamperedGrant[30] ^= 0x01
        let forgedCertificate = DeviceCertificate(
            accountIdentityKey: primary.publicKey, deviceIdentityKey: newDevice.publicKey, signature: other.certify(newDevice.publicKey).signature)
        let opening: [VectorTest] = [
            openTest("the offer", kind: "offer", sealed: offer.sealed(with: keys), flags: ["Flow"]),
            openTest("the grant", kind: "grant", sealed: grant.sealed(with: keys), flags: ["Flow"]),
            openTest("the done message", kind: "done", sealed: done.sealed(with: keys), flags: ["Flow"]),
            openTest("an offer under another pairing code", kind: "offer", sealed: offer.sealed(with: keys), secret: otherSecret, error: .authenticationFailed, flags: ["BadTag"]),
            openTest("a grant with one bit changed", kind: "grant", sealed: tamperedGrant, error: .authenticationFailed, flags: ["BadTag"]),
            openTest("fewer bytes than a tag", kind: "done", sealed: Data(count: 31), error: .malformedMessage, flags: ["Malformed"]),
            openTest(
                "a correctly tagged offer one byte short", kind: "offer", sealed: keys.seal(offer.payload.dropLast()), error: .malformedMessage,
                flags: ["Malformed"]),
            openTest(
                "a grant certifying another device's key", kind: "grant", sealed: grant.sealed(with: keys), expecting: stranger,
                error: .authenticationFailed, flags: ["WrongDevice"]),
            openTest(
                "a grant whose certificate another account signed", kind: "grant",
                sealed: LinkGrant(certificate: forgedCertificate, handle: handle).sealed(with: keys), error: .authenticationFailed,
                flags: ["BadCertificate"]),
            openTest(
                "a grant whose handle is not a handle (upper case)", kind: "grant",
                sealed: LinkGrant(certificate: grant.certificate, handle: "Alice").sealed(with: keys), error: .malformedMessage, flags: ["Malformed"]),
            openTest(
                "a grant whose handle length disagrees with its bytes", kind: "grant", sealed: keys.seal(grant.payload + Data("x".utf8)),
                error: .malformedMessage, flags: ["Malformed"]),
            openTest(
                "a done message for another device's key", kind: "done", sealed: done.sealed(with: keys), expecting: stranger,
                error: .authenticationFailed, flags: ["WrongDevice"]),
        ]

        // MARK: fingerprints and account deletion
        var fingerprints: [VectorTest] = []
        for (comment, k) in [
            ("the placeholder key 22 x 32 of devices.md section 4.1", Data(repeating: 0x22, count: 32)),
            ("the example account identity key", example.publicKey.rawRepresentation), ("a drawn device key", deviceKey()),
        ] {
            let publicKey = try Ed25519PublicKey(rawRepresentation: k)
            fingerprints.append(
                VectorTest(
                    comment,
                    ["deviceIdentityKey": .hex(k), "digest": .hex(SHA256.hash(DeviceFingerprint.label + k)),
                     "fingerprint": .string(DeviceFingerprint.of(identityKey: publicKey))]))
        }
        let nonce = random.bytes(32)
        let deletion = [
            VectorTest(
                "delete the account alice on a connection with this challenge nonce", flags: [],
                [
                    "accountIdentitySeed": .hex(account.privateKey.seed), "accountIdentityKey": .hex(key), "nonce": .hex(nonce),
                    "handle": .string("alice"),
                    "payload": .hex(SignedPayload.deleteAccount(accountIdentityKey: key, nonce: nonce, handle: "alice")),
                    "signature": .hex(try account.deleteAccountSignature(nonce: nonce, handle: "alice")),
                ])
        ]

        return VectorFileBuilder(
            topic: "devices",
            description: "Multi-device accounts (devices.md). deviceList: payload \"FlitzDeviceList-v1\" || 0x00 || AccK || u64be(version) || "
                + "u64be(issued_at) || u16be(n) || n x (u32be(device_id) || IK), signed with Ed25519 by the account identity key; valid tests "
                + "give the decoded fields (version and issuedAtMs as decimal strings: they are 64-bit) (and the seed, to re-sign: Ed25519 is deterministic); invalid tests name the first failing check "
                + "(DeviceListError, code = check number of section 4.2; checks run as: signature, payload checks 2-5, key at offset 19). "
                + "linkCode: parsing pairing codes (\"FLITZLINK1:\" || RFC 4648 base32 without padding; case, spaces and dashes ignored). "
                + "linkKeys: HKDF(salt 0x00^32, ikm = secret, info \"Flitz-Link-v1\", 48) = rendezvousId (16) || macKey (32); tag = HMAC-SHA-256(macKey, message). "
                + "pairing: one linking's offer, grant and done payloads (each sent as payload || tag). pairingOpen: opening sealed pairing "
                + "messages, checking the tag first, then the layout, the expected device key and the certificate. fingerprint: first 8 bytes of "
                + "SHA-256(\"FlitzDeviceFingerprint-v1\" || IK) as four groups of four upper-case hex digits. deleteAccount: the account "
                + "deletion signature. Keys are drawn from SeededRandom(label: \"\(label)\") in the order of Sources/FlitzVectorGen/DeviceVectors.swift "
                + "(each Ed25519 seed 32 bytes, each link secret 32 bytes); the spec examples use the seed / secret 000102...1f.",
            specification: "protocol/devices.md sections 4.1, 4.2, 5.2, 5.3 and 8",
            notes: [
                "SpecExample": "The worked example in devices.md section 4.1.",
                "MultiDevice": "Several devices, ids not contiguous.",
                "MaxDevices": "MAX_DEVICES = 16 entries, the most a valid list holds.",
                "LargeValues": "version 2^64 - 1 and device id 2^32 - 1 encode big-endian and are valid.",
                "BadSignature": "Check 1: the signature does not verify under the trusted account identity key.",
                "AccountKeyMismatch": "Check 1: validly signed, but the payload names another account identity key.",
                "Malformed": "A length or label that does not match the layout.",
                "DeviceCount": "Check 3: n is 0 or above 16.",
                "ZeroField": "Check 4: version or issued_at is 0.",
                "Unsorted": "Check 5: entries not strictly ascending by device id.",
                "Duplicate": "Check 5: a device id or a device identity key listed twice.",
                "Canonical": "The code as generated: upper case, no separators.",
                "Typed": "As a user may type it: case, spaces and dashes are ignored.",
                "BadPrefix": "Not \"FLITZLINK1:\".",
                "BadLength": "Not 52 base32 characters after the prefix (padding is not allowed).",
                "BadCharacter": "A character outside A-Z2-7.",
                "TrailingBits": "52 characters carry 260 bits; the last 4 must be zero, so each secret has one code.",
                "Flow": "A step of a successful linking (devices.md section 5.3).",
                "BadTag": "The HMAC tag does not verify: another code, or an altered message.",
                "WrongDevice": "The message is for another device identity key than the one this side expects.",
                "BadCertificate": "The certificate does not verify under the account identity key in the grant.",
            ],
            seeds: [label],
            groups: [
                VectorGroup(type: "deviceList", tests: lists),
                VectorGroup(type: "linkCode", tests: codes),
                VectorGroup(type: "linkKeys", tests: linkKeys),
                VectorGroup(type: "pairing", tests: pairing),
                VectorGroup(type: "pairingOpen", tests: opening),
                VectorGroup(type: "fingerprint", tests: fingerprints),
                VectorGroup(type: "deleteAccount", tests: deletion),
            ])
    }
}
