import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation

/// `devices.json`: signed device lists, pairing codes, keys and messages, device fingerprints and the account
/// deletion signature (`protocol/devices.md` sections 4, 5 and 8).
///
/// Group `deviceList`: `accountIdentityKey`, `payload`, `signature`; valid tests add `version`, `issuedAtMs` (decimal strings),
/// `devices` (`deviceId`, `deviceIdentityKey`) and `accountIdentitySeed`; invalid ones a `DeviceListError`.
/// Group `linkCode`: `code`, and `linkSecret` when valid. Group `linkKeys`: `linkSecret`, `code`, `rendezvousId`,
/// `macKey`, `message`, `tag`. Group `pairing`: one linking (secret, seeds, keys, handle, device id, offer / grant /
/// done payloads and tags, fingerprint). Group `pairingOpen`: `kind` (`offer`, `grant`, `done`), `linkSecret`,
/// `sealed`, `expectedDeviceIdentityKey`, and the parsed fields when valid. Group `fingerprint`:
/// `deviceIdentityKey`, `digest`, `fingerprint`. Group `deleteAccount`: seed, key, `nonce`, `handle`, `payload`, `signature`.
enum DevicesTopic {
    static let topic = VectorTopic(name: "devices", verify: verify)

    static func verify(_ vector: VectorCase) throws -> VectorOutcome {
        let test = vector.test
        switch try vector.groupType() {
        case "deviceList": return try deviceList(test)
        case "linkCode":
            let code = try test.string("code")
            return try VectorOutcome.capture {
                let secret = try LinkSecret(code: code)
                try check(secret.secret, try test.hex("linkSecret"), "linkSecret from the code")
                // Independently: canonical form is prefix ‖ unpadded base32 of the secret.
                let canonical = code.uppercased().filter { !$0.isWhitespace && $0 != "-" }
                try check(secret.code, canonical, "the canonical code")
            }
        case "linkKeys":
            let secret = try LinkSecret(secret: SecretBytes(try test.hex("linkSecret")))
            try check(secret.code, try test.string("code"), "code")
            try checkKeys(LinkKeys(secret: secret), secret: secret, test)
            let keys = LinkKeys(secret: secret)
            try check(keys.tag(try test.hex("message")), try test.hex("tag"), "tag")
            try check(HMACSHA256.authenticate(try test.hex("message"), key: SecretBytes(try test.hex("macKey"))), try test.hex("tag"), "HMAC-SHA-256 (independent)")
            try require(keys.verify(try test.hex("tag"), for: try test.hex("message")), "LinkKeys.verify refuses the tag")
            return .valid
        case "pairing": return try pairing(test)
        case "pairingOpen": return try pairingOpen(test)
        case "fingerprint":
            let key = try test.hex("deviceIdentityKey")
            let digest = SHA256.hash(Data("FlitzDeviceFingerprint-v1".utf8) + key)
            try check(digest, try test.hex("digest"), "digest")
            let hex = digest.prefix(8).map { String(format: "%02X", $0) }.joined()
            let groups = stride(from: 0, to: 16, by: 4).map { String(Array(hex)[$0..<$0 + 4]) }
            try check(groups.joined(separator: " "), try test.string("fingerprint"), "fingerprint from the digest")
            try check(DeviceFingerprint.of(identityKey: try Ed25519PublicKey(rawRepresentation: key)), try test.string("fingerprint"), "DeviceFingerprint.of")
            return .valid
        case "deleteAccount":
            let account = try AccountIdentity(seed: SecretBytes(try test.hex("accountIdentitySeed")))
            let key = try test.hex("accountIdentityKey"), nonce = try test.hex("nonce"), handle = try test.string("handle")
            try check(account.publicKey.rawRepresentation, key, "accountIdentityKey")
            // Independently: label ‖ 0x00 ‖ AccK ‖ nonce ‖ UTF-8 handle.
            let payload = Data("FlitzDeleteAccount-v1".utf8) + Data([0]) + key + nonce + Data(handle.utf8)
            try check(payload, try test.hex("payload"), "payload")
            try check(SignedPayload.deleteAccount(accountIdentityKey: key, nonce: nonce, handle: handle), payload, "SignedPayload.deleteAccount")
            try check(try account.deleteAccountSignature(nonce: nonce, handle: handle), try test.hex("signature"), "signature")
            try require(account.publicKey.isValidSignature(try test.hex("signature"), for: payload), "the signature does not verify")
            return .valid
        case let type:
            throw VectorCheckFailure.unknownGroup(type, in: "devices")
        }
    }

    static func deviceList(_ test: JSONValue) throws -> VectorOutcome {
        let key = try test.hex("accountIdentityKey"), payload = try test.hex("payload"), signature = try test.hex("signature")
        return try VectorOutcome.capture {
            let list = try SignedDeviceList(payload: payload, signature: signature, accountIdentityKey: key)
            try check(String(list.version), try test.string("version"), "version (decimal)")
            try check(String(list.list.issuedAtMs), try test.string("issuedAtMs"), "issuedAtMs (decimal)")
            let devices = try test.array("devices").map { device throws(VectorCheckFailure) in
                DeviceListPayload.Entry(deviceID: try device.uint32("deviceId"), deviceIdentityKey: try device.hex("deviceIdentityKey"))
            }
            try check(list.entries, devices, "devices")
            // Independently: the layout of devices.md section 4.1, and the signature from the seed.
            var expected = Data("FlitzDeviceList-v1".utf8) + Data([0]) + key
            for value in [list.version, list.list.issuedAtMs] { expected += Data((0..<8).reversed().map { UInt8(value >> (8 * UInt64($0)) & 0xff) }) }
            expected += Data([UInt8(devices.count >> 8), UInt8(devices.count & 0xff)])
            for device in devices {
                expected += Data((0..<4).reversed().map { UInt8(device.deviceID >> (8 * UInt32($0)) & 0xff) }) + device.deviceIdentityKey
            }
            try check(payload, expected, "payload from its fields")
            let account = try AccountIdentity(seed: SecretBytes(try test.hex("accountIdentitySeed")))
            try check(account.publicKey.rawRepresentation, key, "accountIdentityKey from the seed")
            let signed = try SignedDeviceList.sign(list.list, with: account)
            try check(signed.payload, payload, "SignedDeviceList.sign payload")
            try check(signed.signature, signature, "SignedDeviceList.sign signature")
        }
    }

    static func checkKeys(_ keys: LinkKeys, secret: LinkSecret, _ test: JSONValue) throws {
        // Independently: HKDF-SHA-256 of crypto.md section 1 with the parameters of devices.md section 5.2.
        let out = try HKDF.deriveKey(inputKeyMaterial: secret.secret, salt: Data(count: 32), info: Data("Flitz-Link-v1".utf8), length: 48).unsafeData
        try check(out.prefix(16), try test.hex("rendezvousId"), "rendezvousId (HKDF)")
        try check(Data(out.suffix(32)), try test.hex("macKey"), "macKey (HKDF)")
        try check(keys.rendezvousID, try test.hex("rendezvousId"), "LinkKeys.rendezvousID")
        try check(keys.macKey, try test.hex("macKey"), "LinkKeys.macKey")
    }

    static func pairing(_ test: JSONValue) throws -> VectorOutcome {
        let secret = try LinkSecret(code: try test.string("code"))
        try check(secret.secret, try test.hex("linkSecret"), "linkSecret from the code")
        let keys = LinkKeys(secret: secret)
        try checkKeys(keys, secret: secret, test)
        let account = try AccountIdentity(seed: SecretBytes(try test.hex("accountIdentitySeed")))
        try check(account.publicKey.rawRepresentation, try test.hex("accountIdentityKey"), "accountIdentityKey")
        let device = try Ed25519PrivateKey(seed: SecretBytes(try test.hex("deviceIdentitySeed")))
        let deviceKey = device.publicKey.rawRepresentation
        try check(deviceKey, try test.hex("deviceIdentityKey"), "deviceIdentityKey")
        try check(DeviceFingerprint.of(identityKey: device.publicKey), try test.string("deviceFingerprint"), "deviceFingerprint")
        let handle = try test.string("handle"), deviceID = try test.uint32("deviceId")
        let certificate = account.certify(device.publicKey)
        try check(certificate.signature, try test.hex("certificateSignature"), "certificateSignature")
        // Independently: the three layouts of devices.md section 5.3 and their HMAC tags.
        let offer = Data("FlitzLinkOffer-v1".utf8) + Data([0]) + deviceKey
        let handleBytes = Data(handle.utf8)
        let grant = Data("FlitzLinkGrant-v1".utf8) + Data([0]) + account.publicKey.rawRepresentation + deviceKey + certificate.signature
            + Data([UInt8(handleBytes.count >> 8), UInt8(handleBytes.count & 0xff)]) + handleBytes
        let done = Data("FlitzLinkDone-v1".utf8) + Data([0]) + Data((0..<4).reversed().map { UInt8(deviceID >> (8 * UInt32($0)) & 0xff) }) + deviceKey
        let macKey = SecretBytes(try test.hex("macKey"))
        for (name, bytes) in [("offer", offer), ("grant", grant), ("done", done)] {
            try check(bytes, try test.hex(name), name)
            try check(HMACSHA256.authenticate(bytes, key: macKey), try test.hex(name + "Tag"), name + "Tag")
        }
        // Through the API, both directions.
        try check(LinkOffer(deviceIdentityKey: device.publicKey).sealed(with: keys), offer + (try test.hex("offerTag")), "LinkOffer.sealed")
        try check(LinkGrant(certificate: certificate, handle: handle).sealed(with: keys), grant + (try test.hex("grantTag")), "LinkGrant.sealed")
        try check(LinkDone(deviceID: deviceID, deviceIdentityKey: device.publicKey).sealed(with: keys), done + (try test.hex("doneTag")), "LinkDone.sealed")
        try check(try LinkOffer(opening: offer + (try test.hex("offerTag")), with: keys).deviceIdentityKey, device.publicKey, "offer opened")
        let opened = try LinkGrant(opening: grant + (try test.hex("grantTag")), with: keys, expectedDeviceIdentityKey: device.publicKey)
        try check(opened.accountIdentityKey, account.publicKey, "grant opened: accountIdentityKey")
        try check(opened.handle, handle, "grant opened: handle")
        try check(try LinkDone(opening: done + (try test.hex("doneTag")), with: keys, expectedDeviceIdentityKey: device.publicKey).deviceID, deviceID, "done opened")
        return .valid
    }

    static func pairingOpen(_ test: JSONValue) throws -> VectorOutcome {
        let keys = LinkKeys(secret: try LinkSecret(secret: SecretBytes(try test.hex("linkSecret"))))
        let sealed = try test.hex("sealed"), kind = try test.string("kind")
        let expected = test.has("expectedDeviceIdentityKey") ? try Ed25519PublicKey(rawRepresentation: try test.hex("expectedDeviceIdentityKey")) : nil
        return try VectorOutcome.capture {
            switch (kind, expected) {
            case ("offer", _):
                let offer = try LinkOffer(opening: sealed, with: keys)
                try check(offer.deviceIdentityKey.rawRepresentation, try test.hex("deviceIdentityKey"), "deviceIdentityKey")
            case ("grant", let expected?):
                let grant = try LinkGrant(opening: sealed, with: keys, expectedDeviceIdentityKey: expected)
                try check(grant.accountIdentityKey.rawRepresentation, try test.hex("accountIdentityKey"), "accountIdentityKey")
                try check(grant.handle, try test.string("handle"), "handle")
            case ("done", let expected?):
                let done = try LinkDone(opening: sealed, with: keys, expectedDeviceIdentityKey: expected)
                try check(done.deviceID, try test.uint32("deviceId"), "deviceId")
            default:
                throw VectorCheckFailure("pairingOpen kind \(kind) needs expectedDeviceIdentityKey, or is unknown")
            }
        }
    }
}
