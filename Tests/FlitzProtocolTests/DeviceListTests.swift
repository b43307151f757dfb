import FlitzCrypto
import FlitzProtocol
import FlitzWire
import SwiftProtobuf
import Foundation
import Testing

/// Helpers shared by the device list, tracker and linking tests.
enum DeviceListFixtures {
    /// devices.md section 4.1's example account: seed 00 01 … 1f.
    static func exampleAccount() throws -> AccountIdentity {
        try AccountIdentity(seed: SecretBytes(Data(0..<32)))
    }

    /// A 32-byte placeholder device key of one repeated byte.
    static func key(_ byte: UInt8) -> Data { Data(repeating: byte, count: 32) }

    static func entry(_ id: UInt32, _ byte: UInt8) -> DeviceListPayload.Entry {
        .init(deviceID: id, deviceIdentityKey: key(byte))
    }

    /// A list of `account` signed over exactly these entries (not re-sorted), for building invalid ones too.
    static func signedBytes(
        _ account: AccountIdentity, version: UInt64, issuedAt: UInt64 = 1_700_000_000_000, _ entries: [DeviceListPayload.Entry]
    ) -> (payload: Data, signature: Data) {
        let payload = DeviceListPayload(
            accountIdentityKey: account.publicKey.rawRepresentation, version: version, issuedAtMs: issuedAt, entries: entries
        ).encoded()
        return (payload, account.privateKey.signature(for: payload))
    }

    static func hex(_ string: String) -> Data { Data(hexString: string.filter { !$0.isWhitespace })! }
}

/// `SignedDeviceList`: signing and the five validity checks of devices.md section 4.2.
struct DeviceListTests {
    typealias F = DeviceListFixtures

    @Test func signsTheSpecExampleByteForByte() throws {
        let account = try F.exampleAccount()
        #expect(account.publicKey.rawRepresentation == F.hex("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"))
        let payload = DeviceListPayload(
            accountIdentityKey: account.publicKey.rawRepresentation, version: 1, issuedAtMs: 1_700_000_000_000, entries: [F.entry(1, 0x22)])
        let signed = try SignedDeviceList.sign(payload, with: account)
        #expect(signed.payload.count == 105)
        #expect(
            signed.signature
                == F.hex(
                    "122a23d56d3eb4974c9ffee6f1203bc7c8edeb6d926e87c5d2759be42bdbb25c13cd6992e3afe077fa85be22252f6b2bf5cb4152432be7fb7947eb9ca4c6aa02"
                ))
        let verified = try SignedDeviceList.verify(
            payload: signed.payload, signature: signed.signature, accountIdentityKey: account.publicKey.rawRepresentation)
        #expect(verified == payload)
    }

    @Test func eachCheckFailsWithItsError() throws {
        let account = try F.exampleAccount(), other = AccountIdentity(random: SeededRandom(label: "other account"))
        let key = account.publicKey.rawRepresentation
        func verify(_ pair: (payload: Data, signature: Data), under k: Data? = nil) -> DeviceListError? {
            do {
                _ = try SignedDeviceList(payload: pair.payload, signature: pair.signature, accountIdentityKey: k ?? key)
                return nil
            } catch { return error }
        }
        let good = F.signedBytes(account, version: 3, [F.entry(1, 1), F.entry(4, 2)])
        #expect(verify(good) == nil)
        // Check 1: signature under another key, a flipped signature bit, a short signature, a 31-byte key.
        #expect(verify(good, under: other.publicKey.rawRepresentation) == .signature)
        var flipped = good.signature
        flipped[0] ^= 1
        #expect(verify((good.payload, flipped)) == .signature)
        #expect(verify((good.payload, good.signature.prefix(63))) == .signature)
        #expect(verify(good, under: key.prefix(31)) == .signature)
        // Check 1: validly signed by `account` but naming another key at offset 19.
        var foreign = good.payload
        foreign.replaceSubrange(19..<51, with: other.publicKey.rawRepresentation)
        #expect(verify((foreign, account.privateKey.signature(for: foreign))) == .accountKeyMismatch)
        // Check 2: truncated, extended, wrong label.
        func resigned(_ payload: Data) -> (Data, Data) { (payload, account.privateKey.signature(for: payload)) }
        #expect(verify(resigned(good.payload.dropLast())) == .malformed)
        #expect(verify(resigned(good.payload + Data([0]))) == .malformed)
        var label = good.payload
        label[0] = UInt8(ascii: "f")
        #expect(verify(resigned(label)) == .malformed)
        #expect(verify(resigned(Data())) == .malformed)
        // Check 3: no devices, 17 devices.
        #expect(verify(F.signedBytes(account, version: 1, [])) == .deviceCount)
        #expect(verify(F.signedBytes(account, version: 1, (1...17).map { F.entry(UInt32($0), UInt8($0)) })) == .deviceCount)
        #expect(verify(F.signedBytes(account, version: 1, (1...16).map { F.entry(UInt32($0), UInt8($0)) })) == nil)
        // Check 4: version 0, issued_at 0.
        #expect(verify(F.signedBytes(account, version: 0, [F.entry(1, 1)])) == .zeroField)
        #expect(verify(F.signedBytes(account, version: 1, issuedAt: 0, [F.entry(1, 1)])) == .zeroField)
        // Check 5: descending ids, a repeated id, a repeated key.
        #expect(verify(F.signedBytes(account, version: 1, [F.entry(2, 1), F.entry(1, 2)])) == .unsortedOrDuplicate)
        #expect(verify(F.signedBytes(account, version: 1, [F.entry(1, 1), F.entry(1, 2)])) == .unsortedOrDuplicate)
        #expect(verify(F.signedBytes(account, version: 1, [F.entry(1, 1), F.entry(2, 1)])) == .unsortedOrDuplicate)
        #expect(DeviceListError.unsortedOrDuplicate.check == 5 && DeviceListError.accountKeyMismatch.check == 1)
    }

    @Test func signRefusesAListContactsWouldIgnore() throws {
        let account = try F.exampleAccount(), other = AccountIdentity(random: SeededRandom(label: "other account"))
        func sign(_ payload: DeviceListPayload) -> DeviceListError? {
            do {
                _ = try SignedDeviceList.sign(payload, with: account)
                return nil
            } catch { return error }
        }
        let key = account.publicKey.rawRepresentation
        #expect(sign(.init(accountIdentityKey: key, version: 1, issuedAtMs: 1, entries: [F.entry(2, 1), F.entry(1, 2)])) == .unsortedOrDuplicate)
        #expect(sign(.init(accountIdentityKey: key, version: 0, issuedAtMs: 1, entries: [F.entry(1, 1)])) == .zeroField)
        #expect(
            sign(.init(accountIdentityKey: other.publicKey.rawRepresentation, version: 1, issuedAtMs: 1, entries: [F.entry(1, 1)]))
                == .accountKeyMismatch)
    }

    @Test func nextSortsAndCountsVersionsPerAccountKey() throws {
        let account = try F.exampleAccount(), recovered = AccountIdentity(random: SeededRandom(label: "recovered account"))
        let first = try SignedDeviceList.next(after: nil, devices: [F.entry(5, 5), F.entry(1, 1)], issuedAtMs: 10, account: account)
        #expect(first.version == 1)
        #expect(first.entries.map(\.deviceID) == [1, 5])
        #expect(first.contains(deviceID: 5, identityKey: F.key(5)))
        #expect(!first.contains(deviceID: 5, identityKey: F.key(1)))
        let second = try SignedDeviceList.next(after: first, devices: [F.entry(1, 1)], issuedAtMs: 11, account: account)
        #expect(second.version == 2)
        // After a recovery the new key's first list is version 1 again (devices.md section 7).
        let afterRecovery = try SignedDeviceList.next(after: second, devices: [F.entry(6, 6)], issuedAtMs: 12, account: recovered)
        #expect(afterRecovery.version == 1)
        #expect(throws: DeviceListError.deviceCount) {
            try SignedDeviceList.next(after: nil, devices: (1...17).map { F.entry(UInt32($0), UInt8($0)) }, issuedAtMs: 1, account: account)
        }
    }

    @Test func persistsAsItsBytesAndVerifiesAgainOnRestore() throws {
        let account = try F.exampleAccount()
        let list = try SignedDeviceList.next(after: nil, devices: [F.entry(1, 1), F.entry(2, 2)], issuedAtMs: 10, account: account)
        let json = try JSONEncoder().encode(list)
        let restored = try JSONDecoder().decode(SignedDeviceList.self, from: json)
        #expect(restored == list)
        #expect(restored.list == list.list)
        // A stored list whose signature was altered does not restore.
        var object = try #require(try JSONSerialization.jsonObject(with: json) as? [String: String])
        let stored = try #require(object["signature"])
        var signature = try #require(Data(base64Encoded: stored))
        signature[10] ^= 0x40
        object["signature"] = signature.base64EncodedString()
        let tampered = try JSONSerialization.data(withJSONObject: object)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(SignedDeviceList.self, from: tampered) }
    }

    @Test func travelsAsTheWireMessage() throws {
        let account = try F.exampleAccount()
        let list = try SignedDeviceList.next(after: nil, devices: [F.entry(1, 1)], issuedAtMs: 10, account: account)
        let bytes = try list.wire.serializedData()
        let received = try WireSignedDeviceList(serializedBytes: bytes)
        #expect(try SignedDeviceList(wire: received, accountIdentityKey: account.publicKey.rawRepresentation) == list)
        var tracker = DeviceListTracker(accountIdentityKey: account.publicKey.rawRepresentation)
        #expect(tracker.receive(received, trustedAccountKey: account.publicKey.rawRepresentation) == .accepted(removedDeviceIDs: []))
        #expect(throws: DeviceListError.signature) { try SignedDeviceList(wire: WireSignedDeviceList(), accountIdentityKey: account.publicKey.rawRepresentation) }
    }

    @Test func deleteAccountSignatureIsOverTheSpecPayload() throws {
        let account = try F.exampleAccount()
        let nonce = Data(repeating: 0xab, count: 32)
        let signature = try account.deleteAccountSignature(nonce: nonce, handle: "alice")
        let payload = SignedPayload.deleteAccount(accountIdentityKey: account.publicKey.rawRepresentation, nonce: nonce, handle: "alice")
        #expect(payload.prefix(22) == Data("FlitzDeleteAccount-v1".utf8) + Data([0]))
        #expect(payload.count == 22 + 32 + 32 + 5)
        #expect(account.publicKey.isValidSignature(signature, for: payload))
        // Bound to the nonce and the handle.
        let otherNonce = SignedPayload.deleteAccount(accountIdentityKey: account.publicKey.rawRepresentation, nonce: Data(count: 32), handle: "alice")
        #expect(!account.publicKey.isValidSignature(signature, for: otherNonce))
        #expect(throws: FlitzProtocolError.self) { try account.deleteAccountSignature(nonce: Data(count: 31), handle: "alice") }
    }
}
