import FlitzCrypto
import FlitzWire
import Foundation

/// Why a signed device list is not valid for an account identity key (`protocol/devices.md`, section 4.2).
/// Device lists are public (the relay serves them to anyone), so the precise check is no oracle and the client
/// can say what was wrong. `check` is the number of the failing check in section 4.2.
public enum DeviceListError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Check 1: the 64-byte Ed25519 signature does not verify under the account identity key (or is not 64 bytes).
    case signature
    /// Check 1: the signature verifies but the key at offset 19 of the payload is another account identity key.
    case accountKeyMismatch
    /// Check 2: the payload is not exactly 69 + 36n bytes, or does not start with `"FlitzDeviceList-v1" ‖ 0x00`.
    case malformed
    /// Check 3: n is 0 or more than `MAX_DEVICES` (16).
    case deviceCount
    /// Check 4: version or issued_at is 0.
    case zeroField
    /// Check 5: entries are not strictly ascending by device id, or a device identity key is listed twice.
    case unsortedOrDuplicate

    /// The number (1 to 5) of the check of devices.md section 4.2 that failed.
    public var check: Int {
        switch self {
        case .signature, .accountKeyMismatch: 1
        case .malformed: 2
        case .deviceCount: 3
        case .zeroField: 4
        case .unsortedOrDuplicate: 5
        }
    }

    /// The `DeviceListError` for a payload decoding failure (checks 2 to 5).
    init(_ error: DeviceListPayload.DecodingError) {
        switch error {
        case .malformed: self = .malformed
        case .deviceCount: self = .deviceCount
        case .zeroField: self = .zeroField
        case .unsortedOrDuplicate: self = .unsortedOrDuplicate
        }
    }

    /// English explanation; names no key.
    public var description: String {
        switch self {
        case .signature: "the device list's signature does not verify under the account identity key"
        case .accountKeyMismatch: "the device list names another account identity key"
        case .malformed: DeviceListPayload.DecodingError.malformed.description
        case .deviceCount: DeviceListPayload.DecodingError.deviceCount.description
        case .zeroField: DeviceListPayload.DecodingError.zeroField.description
        case .unsortedOrDuplicate: DeviceListPayload.DecodingError.unsortedOrDuplicate.description
        }
    }
}

/// A device list payload with its account identity key's signature, verified (`protocol/devices.md`, section 4).
/// The only ways to get one are `verify` (a received list) and `sign` (the primary device's own), so holding a
/// `SignedDeviceList` means checks 1 to 5 passed. It persists as its two byte strings (`Codable`: `payload`,
/// `signature`); decoding verifies again, under the key inside the payload.
public struct SignedDeviceList: Hashable, Sendable, Codable {
    /// The payload bytes exactly as signed: 69 + 36n bytes (section 4.1).
    public let payload: Data
    /// 64-byte Ed25519 signature of the account identity key over `payload`.
    public let signature: Data
    /// The decoded payload.
    public let list: DeviceListPayload

    /// The 32-byte account identity key that signed the list (offset 19 of the payload).
    public var accountIdentityKey: Data { list.accountIdentityKey }
    /// The list's version: 1 for the first list under an account identity key, then strictly increasing.
    public var version: UInt64 { list.version }
    /// The listed devices, ascending by device id.
    public var entries: [DeviceListPayload.Entry] { list.entries }

    /// Verifies a received list under the account identity key the client trusts for the handle and returns it.
    /// Checks, in this order: the signature (check 1), the payload (checks 2 to 5), the key at offset 19 (check 1).
    /// - Parameters:
    ///   - payload: the payload bytes (`DeviceList.payload` on the wire).
    ///   - signature: the 64-byte signature (`DeviceList.signature`).
    ///   - accountIdentityKey: the trusted 32-byte Ed25519 account identity key `K`.
    /// - Throws: `DeviceListError` naming the first failing check.
    public init(payload: Data, signature: Data, accountIdentityKey: Data) throws(DeviceListError) {
        guard let key = try? Ed25519PublicKey(rawRepresentation: accountIdentityKey),
            key.isValidSignature(signature, for: payload)
        else { throw .signature }
        let list: DeviceListPayload
        do {
            list = try DeviceListPayload(decoding: payload)
        } catch {
            throw DeviceListError(error)
        }
        guard list.accountIdentityKey == accountIdentityKey else { throw .accountKeyMismatch }
        self.payload = Data(payload)
        self.signature = Data(signature)
        self.list = list
    }

    /// Verifies a received list (devices.md section 4.2, all five checks) and returns its decoded payload.
    /// Same checks and order as `init(payload:signature:accountIdentityKey:)`.
    /// - Throws: `DeviceListError`.
    public static func verify(payload: Data, signature: Data, accountIdentityKey: Data) throws(DeviceListError) -> DeviceListPayload {
        try SignedDeviceList(payload: payload, signature: signature, accountIdentityKey: accountIdentityKey).list
    }

    /// Signs `payload` with the account identity key (primary device only, devices.md section 4.3).
    /// Refuses a payload that would not be valid, so the primary never publishes a list contacts must ignore.
    /// - Returns: the payload bytes (69 + 36n) and the 64-byte signature, as they go on the wire.
    /// - Throws: `DeviceListError.accountKeyMismatch` when `payload.accountIdentityKey` is not `account`'s key;
    ///   `malformed`, `deviceCount`, `zeroField`, `unsortedOrDuplicate` for a payload failing checks 2 to 5.
    public static func sign(_ payload: DeviceListPayload, with account: AccountIdentity) throws(DeviceListError) -> (payload: Data, signature: Data) {
        let list = try signed(payload, with: account)
        return (list.payload, list.signature)
    }

    /// Signs `payload` with the account identity key and returns the verified signed list.
    /// - Throws: as `sign(_:with:)`.
    public static func signed(_ payload: DeviceListPayload, with account: AccountIdentity) throws(DeviceListError) -> SignedDeviceList {
        guard payload.accountIdentityKey == account.publicKey.rawRepresentation else { throw .accountKeyMismatch }
        let bytes = payload.encoded()
        return try SignedDeviceList(
            payload: bytes, signature: account.privateKey.signature(for: bytes), accountIdentityKey: account.publicKey.rawRepresentation)
    }

    /// The primary device's next list: `devices` sorted by device id, version one above `previous` (or 1 when
    /// there is none under this account key), signed by `account`.
    /// - Parameters:
    ///   - previous: the last list this account key signed, or nil for the first.
    ///   - devices: every current device (id and 32-byte device identity key), in any order.
    ///   - issuedAtMs: the signer's clock, milliseconds since the Unix epoch (at least 1).
    /// - Throws: `DeviceListError` as `sign(_:with:)` (for example `deviceCount` for more than 16 devices).
    public static func next(
        after previous: SignedDeviceList?, devices: [DeviceListPayload.Entry], issuedAtMs: UInt64, account: AccountIdentity
    ) throws(DeviceListError) -> SignedDeviceList {
        let key = account.publicKey.rawRepresentation
        let version = previous.flatMap { $0.accountIdentityKey == key ? $0.version + 1 : nil } ?? 1
        let payload = DeviceListPayload(
            accountIdentityKey: key, version: version, issuedAtMs: issuedAtMs, entries: devices.sorted { $0.deviceID < $1.deviceID })
        return try signed(payload, with: account)
    }

    /// Whether the list holds `deviceID` with exactly `identityKey` (32 bytes).
    public func contains(deviceID: UInt32, identityKey: Data) -> Bool {
        entries.contains { $0.deviceID == deviceID && $0.deviceIdentityKey == identityKey }
    }

    private enum CodingKeys: String, CodingKey { case payload, signature }

    /// Restores a stored list and verifies it again under the account identity key inside its payload.
    /// - Throws: `DecodingError.dataCorrupted` when it no longer verifies.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let payload = try container.decode(Data.self, forKey: .payload)
        let signature = try container.decode(Data.self, forKey: .signature)
        let key = payload.count >= 51 ? Data(payload[payload.startIndex + 19..<payload.startIndex + 51]) : Data()
        do {
            self = try SignedDeviceList(payload: payload, signature: signature, accountIdentityKey: key)
        } catch {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "stored device list: \(error)"))
        }
    }

    /// Stores the payload and signature bytes.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(payload, forKey: .payload)
        try container.encode(signature, forKey: .signature)
    }

    /// Equal when payload and signature bytes are equal (the decoded list follows from the payload).
    public static func == (a: SignedDeviceList, b: SignedDeviceList) -> Bool { a.payload == b.payload && a.signature == b.signature }
    /// Hashes the payload and signature bytes.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(payload)
        hasher.combine(signature)
    }
}

extension AccountIdentity {
    /// The account deletion signature (devices.md section 8): `Sign(account seed, "FlitzDeleteAccount-v1" ‖ 0x00 ‖
    /// AccK ‖ nonce ‖ UTF-8 handle)`, 64 bytes, for `DeleteAccount.signature`.
    /// - Parameters:
    ///   - nonce: the 32-byte challenge nonce of the connection the request is sent on (so it cannot be replayed).
    ///   - handle: the account's handle.
    /// - Throws: `FlitzProtocolError.malformedMessage` when `nonce` is not 32 bytes.
    public func deleteAccountSignature(nonce: Data, handle: String) throws(FlitzProtocolError) -> Data {
        guard nonce.count == WireConstants.challengeNonceLength else {
            throw FlitzProtocolError(.malformedMessage, "challenge nonce must be \(WireConstants.challengeNonceLength) bytes, got \(nonce.count)")
        }
        return privateKey.signature(
            for: SignedPayload.deleteAccount(accountIdentityKey: publicKey.rawRepresentation, nonce: nonce, handle: handle))
    }
}

extension SignedDeviceList {
    /// The list as it goes on the wire (`PublishDeviceList.device_list`, `flitz_wire.proto`).
    public var wire: WireSignedDeviceList {
        var out = WireSignedDeviceList()
        out.payload = payload
        out.signature = signature
        return out
    }

    /// Verifies a list received on the wire (`PreKeyBundle.device_list`, `DeviceListResult.device_list`) under the
    /// trusted 32-byte account identity key; as `init(payload:signature:accountIdentityKey:)`.
    /// - Throws: `DeviceListError`.
    public init(wire: WireSignedDeviceList, accountIdentityKey: Data) throws(DeviceListError) {
        try self.init(payload: wire.payload, signature: wire.signature, accountIdentityKey: accountIdentityKey)
    }
}

extension DeviceListTracker {
    /// `receive(payload:signature:trustedAccountKey:)` for a list received on the wire.
    public mutating func receive(_ wire: WireSignedDeviceList, trustedAccountKey: Data) -> Decision {
        receive(payload: wire.payload, signature: wire.signature, trustedAccountKey: trustedAccountKey)
    }
}
