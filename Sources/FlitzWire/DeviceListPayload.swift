import Foundation

/// The payload of a signed device list (`protocol/devices.md`, section 4.1), byte for byte:
/// `"FlitzDeviceList-v1" ‖ 0x00 ‖ AccK (32) ‖ u64be(version) ‖ u64be(issued_at) ‖ u16be(n) ‖ n × (u32be(device_id) ‖ IK (32))`,
/// 69 + 36n bytes. Both sides need it: the relay checks a published list (section 4.3) and clients verify
/// one before encrypting to it (section 4.4), so it lives here and not in FlitzProtocol.
public struct DeviceListPayload: Hashable, Sendable {
    /// One listed device.
    public struct Entry: Hashable, Sendable {
        /// Relay-assigned device id.
        public var deviceID: UInt32
        /// 32-byte Ed25519 device identity key.
        public var deviceIdentityKey: Data

        /// An entry; `deviceIdentityKey` must be 32 bytes for the list to encode validly.
        public init(deviceID: UInt32, deviceIdentityKey: Data) {
            self.deviceID = deviceID
            self.deviceIdentityKey = deviceIdentityKey
        }
    }

    /// ASCII label that starts the payload (followed by 0x00).
    public static let label = Array("FlitzDeviceList-v1".utf8)
    /// Most devices an account may have (`MAX_DEVICES`, devices.md section 10).
    public static let maxDevices = 16
    /// Bytes before the entries: label, 0x00, key, version, issued_at, count.
    public static let headerLength = 69
    /// Bytes per entry.
    public static let entryLength = 36
    /// Largest valid payload: 69 + 36 × 16 = 645 bytes.
    public static let maxLength = headerLength + entryLength * maxDevices

    /// 32-byte Ed25519 account identity key that signs the list.
    public var accountIdentityKey: Data
    /// Strictly increasing per account identity key, from 1.
    public var version: UInt64
    /// Milliseconds since the Unix epoch on the signing device's clock; informational only.
    public var issuedAtMs: UInt64
    /// The devices, sorted by `deviceID` ascending.
    public var entries: [Entry]

    /// A payload. Call `encoded()` for its bytes; `init(decoding:)` checks validity rules 2 to 5.
    public init(accountIdentityKey: Data, version: UInt64, issuedAtMs: UInt64, entries: [Entry]) {
        self.accountIdentityKey = accountIdentityKey
        self.version = version
        self.issuedAtMs = issuedAtMs
        self.entries = entries
    }

    /// Why a payload is not a valid device list (devices.md section 4.2, checks 2 to 5).
    public enum DecodingError: Error, Hashable, Sendable, CustomStringConvertible {
        /// Not exactly 69 + 36n bytes, or a wrong label.
        case malformed
        /// n is 0 or more than 16.
        case deviceCount
        /// version or issued_at is 0.
        case zeroField
        /// Entries not strictly ascending by device id, or a device identity key listed twice.
        case unsortedOrDuplicate

        /// English explanation for error messages.
        public var description: String {
            switch self {
            case .malformed: "a device list is 69 + 36n bytes starting with \"FlitzDeviceList-v1\" and 0x00"
            case .deviceCount: "a device list holds 1 to \(DeviceListPayload.maxDevices) devices"
            case .zeroField: "a device list's version and issued_at must be at least 1"
            case .unsortedOrDuplicate: "a device list's entries must be sorted by device id, strictly ascending, with no key twice"
            }
        }
    }

    /// Parses `bytes` and checks validity rules 2 to 5 of devices.md section 4.2 (the signature, rule 1,
    /// is the caller's: `SignedPayload` has no key here).
    /// - Throws: `DecodingError`.
    public init(decoding bytes: Data) throws(DecodingError) {
        let bytes = Array(bytes)
        guard bytes.count >= Self.headerLength, Array(bytes[0..<Self.label.count]) == Self.label, bytes[Self.label.count] == 0 else {
            throw .malformed
        }
        func integer(_ offset: Int, _ length: Int) -> UInt64 {
            bytes[offset..<(offset + length)].reduce(0) { $0 << 8 | UInt64($1) }
        }
        let count = Int(integer(67, 2))
        guard bytes.count == Self.headerLength + Self.entryLength * count else { throw .malformed }
        guard (1...Self.maxDevices).contains(count) else { throw .deviceCount }
        accountIdentityKey = Data(bytes[19..<51])
        version = integer(51, 8)
        issuedAtMs = integer(59, 8)
        guard version >= 1, issuedAtMs >= 1 else { throw .zeroField }
        var entries: [Entry] = []
        var keys = Set<Data>()
        for index in 0..<count {
            let offset = Self.headerLength + Self.entryLength * index
            let entry = Entry(deviceID: UInt32(integer(offset, 4)), deviceIdentityKey: Data(bytes[(offset + 4)..<(offset + 36)]))
            if let last = entries.last, entry.deviceID <= last.deviceID { throw .unsortedOrDuplicate }
            guard keys.insert(entry.deviceIdentityKey).inserted else { throw .unsortedOrDuplicate }
            entries.append(entry)
        }
        self.entries = entries
    }

    /// The payload bytes (69 + 36n), entries in the order given (sort them first).
    public func encoded() -> Data {
        var out = Data(Self.label)
        out.append(0)
        out.append(accountIdentityKey)
        func append<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.bigEndian) { out.append(contentsOf: $0) } }
        append(version)
        append(issuedAtMs)
        append(UInt16(entries.count))
        for entry in entries {
            append(entry.deviceID)
            out.append(entry.deviceIdentityKey)
        }
        return out
    }
}

extension SignedPayload {
    /// ASCII label of the account deletion payload (devices.md section 8).
    public static let deleteAccountLabel = Array("FlitzDeleteAccount-v1".utf8)

    /// What the account identity key signs to delete the account (devices.md section 8):
    /// label ‖ 0x00 ‖ 32-byte account identity key ‖ 32-byte challenge nonce of this connection ‖ UTF-8 handle.
    public static func deleteAccount(accountIdentityKey: Data, nonce: Data, handle: String) -> Data {
        var out = Data(deleteAccountLabel)
        out.append(0)
        out.append(accountIdentityKey)
        out.append(nonce)
        out.append(contentsOf: Array(handle.utf8))
        return out
    }
}
