import FlitzCrypto
import FlitzWire
import Foundation

/// A client's view of one handle's signed device list: the state machine of `protocol/devices.md` section 4.4.
/// A value with no I/O: feed it every list the client sees (bundles, `DeviceListResult`, its own account's) with
/// `receive`, perform the `Decision` (delete sessions, warn, tell the user), and persist it (`Codable`: the
/// trusted key and the accepted and pending lists as payload and signature bytes, verified again on decoding).
///
/// States: none seen; accepted(v); accepted(v) + pending(v'). Lists are scoped to one account identity key:
/// when the trusted key changes (the user accepted an identity change), the tracker starts over at none seen.
public struct DeviceListTracker: Hashable, Sendable, Codable {
    /// What `receive` decided; the caller performs it (section 4.4, table).
    public enum Decision: Hashable, Sendable {
        /// The list is byte-for-byte the accepted one, or the pending one: nothing to do.
        case unchanged
        /// The list was accepted (the first one, or a newer one that only removes devices). The caller deletes its
        /// sessions with `removedDeviceIDs` (ascending; empty for a first list) and tells the user about removals.
        case accepted(removedDeviceIDs: [UInt32])
        /// A newer list adds or re-keys devices: recorded as pending (replacing an older pending list). The caller
        /// warns the user and refuses to send to the handle until `acceptPending()`. `changedDevices` are the
        /// entries not in the accepted list with the same key (added, or re-keyed), ascending by id.
        case pending(changedDevices: [DeviceListPayload.Entry])
        /// A valid list with a lower version than the accepted (or pending) one: a rollback. Refused; warn.
        case refusedRollback
        /// A valid list with the version of the accepted (or pending) one but other bytes: an equivocation by the
        /// signer or a forgery. Refused; warn.
        case refusedEquivocation
        /// The list is not valid under the trusted key (section 4.2): ignored as if absent; warn.
        case ignoredInvalid(DeviceListError)
        /// The list is valid under another account identity key (`newAccountIdentityKey`, 32 bytes): an identity
        /// change (`crypto.md` section 13). Nothing changed here; once the user trusts the new key, pass it as
        /// `trustedAccountKey` and the tracker starts over for it.
        case accountKeyChanged(newAccountIdentityKey: Data)
    }

    /// Why sending to the handle is refused (`sendTargets`).
    public enum SendRefusal: Error, Hashable, Sendable {
        /// A pending list awaits the user's acceptance (`flitz trust HANDLE`).
        case pendingChange
        /// A list was accepted for this key but the bundle carries none: a downgrade.
        case downgrade
        /// No list has been seen and the bundle has several devices (version 1's rule allows exactly one).
        case severalDevicesWithoutList
        /// No list has been seen and the bundle carries a list that is not valid: no fallback to version 1's rule.
        case invalidList
        /// The accepted list and the bundle have no device in common.
        case noListedDevice
    }

    /// The 32-byte account identity key the lists are under (the key trusted for the handle).
    public private(set) var accountIdentityKey: Data
    /// The newest accepted list, nil in state "none seen".
    public private(set) var accepted: SignedDeviceList?
    /// A newer list awaiting the user's acceptance, if any.
    public private(set) var pending: SignedDeviceList?

    /// State "none seen" for a handle whose trusted account identity key is `accountIdentityKey` (32 bytes).
    public init(accountIdentityKey: Data) {
        self.accountIdentityKey = Data(accountIdentityKey)
    }

    /// Restores a tracker from stored lists.
    /// - Throws: `DeviceListError.accountKeyMismatch` when a list is under another key; `.signature` when the
    ///   pending list is not newer than the accepted one (a state `receive` never produces), or is set without one.
    public init(accountIdentityKey: Data, accepted: SignedDeviceList?, pending: SignedDeviceList?) throws(DeviceListError) {
        self.accountIdentityKey = Data(accountIdentityKey)
        for list in [accepted, pending].compactMap({ $0 }) where list.accountIdentityKey != accountIdentityKey {
            throw .accountKeyMismatch
        }
        if let pending {
            guard let accepted, pending.version > accepted.version else { throw .signature }
        }
        self.accepted = accepted
        self.pending = pending
    }

    /// Feeds a list seen for the handle (section 4.4). Verifies it under `trustedAccountKey`; if that key differs
    /// from `accountIdentityKey` the user has accepted a new key, so the tracker first starts over for it.
    /// - Parameters:
    ///   - payload: the list payload bytes; `signature`: its 64-byte signature.
    ///   - trustedAccountKey: the 32-byte account identity key the client trusts for the handle now.
    /// - Returns: the decision to perform; the state changes only for `accepted` and `pending`.
    public mutating func receive(payload: Data, signature: Data, trustedAccountKey: Data) -> Decision {
        if trustedAccountKey != accountIdentityKey { self = DeviceListTracker(accountIdentityKey: trustedAccountKey) }
        let list: SignedDeviceList
        do {
            list = try SignedDeviceList(payload: payload, signature: signature, accountIdentityKey: trustedAccountKey)
        } catch {
            // Valid under the key it names, which is not the trusted one: an identity change, not noise.
            if payload.count >= 51 {
                let named = Data(payload[payload.startIndex + 19..<payload.startIndex + 51])
                if named != trustedAccountKey, (try? SignedDeviceList(payload: payload, signature: signature, accountIdentityKey: named)) != nil {
                    return .accountKeyChanged(newAccountIdentityKey: named)
                }
            }
            return .ignoredInvalid(error)
        }
        guard let current = accepted else {
            accepted = list
            return .accepted(removedDeviceIDs: [])
        }
        if list.payload == current.payload || list.payload == pending?.payload { return .unchanged }
        // Compare with the newest list known: a list not above it is a rollback or an equivocation.
        let newest = pending ?? current
        if list.version < newest.version { return .refusedRollback }
        if list.version == newest.version { return .refusedEquivocation }
        let changed = Self.changedEntries(from: current, to: list)
        if changed.isEmpty {
            // Only removals (or only issued_at changed): accept at once; a pending list older than it is dropped.
            accepted = list
            pending = nil
            return .accepted(removedDeviceIDs: Self.removedIDs(from: current, to: list))
        }
        pending = list
        return .pending(changedDevices: changed)
    }

    /// The user accepted the pending list (`flitz trust HANDLE`): it becomes the accepted list.
    /// - Returns: the device ids whose sessions the caller deletes (in the old list but not in the new one with the
    ///   same key: removed or re-keyed), ascending; empty when nothing was pending.
    @discardableResult
    public mutating func acceptPending() -> [UInt32] {
        guard let pending else { return [] }
        let removed = accepted.map { Self.removedIDs(from: $0, to: pending) } ?? []
        accepted = pending
        self.pending = nil
        return removed
    }

    /// Whether the accepted list holds `deviceID` with exactly `identityKey` (the "only listed devices" rule).
    /// False in state "none seen" (use `acceptsSender` for incoming messages) and for a device only in a pending list.
    public func allows(deviceID: UInt32, identityKey: Data) -> Bool {
        accepted?.contains(deviceID: deviceID, identityKey: identityKey) ?? false
    }

    /// Whether a message from `(deviceID, identityKey)` of this handle may be accepted (section 4.4, "Incoming
    /// messages"): listed in the accepted list; or, before any list was seen, any device (version 1's rule: the
    /// certificate under the trusted key, which the caller checks, suffices).
    public func acceptsSender(deviceID: UInt32, identityKey: Data) -> Bool {
        accepted == nil ? true : allows(deviceID: deviceID, identityKey: identityKey)
    }

    /// Whether sending to the handle is refused until the user accepts a pending list.
    public var hasPendingChange: Bool { pending != nil }

    /// The devices of a fetched bundle to encrypt to (section 4.4, "Only listed devices" and "No downgrade").
    /// Call `receive` with the bundle's list first, if it had one.
    /// - Parameters:
    ///   - bundleDevices: the bundle's devices (id and 32-byte device identity key).
    ///   - bundleCarriedList: whether the bundle carried a device list at all (valid or not).
    /// - Returns: the bundle devices listed in the accepted list with the same key (listed devices absent from the
    ///   bundle are skipped), or, before any list was seen and with no list in the bundle, the bundle's single
    ///   device; otherwise why sending is refused.
    public func sendTargets(
        bundleDevices: [DeviceListPayload.Entry], bundleCarriedList: Bool
    ) -> Result<[DeviceListPayload.Entry], SendRefusal> {
        if pending != nil { return .failure(.pendingChange) }
        guard accepted != nil else {
            if bundleCarriedList { return .failure(.invalidList) }
            return bundleDevices.count == 1 ? .success(bundleDevices) : .failure(.severalDevicesWithoutList)
        }
        guard bundleCarriedList else { return .failure(.downgrade) }
        let targets = bundleDevices.filter { allows(deviceID: $0.deviceID, identityKey: $0.deviceIdentityKey) }
        return targets.isEmpty ? .failure(.noListedDevice) : .success(targets)
    }

    /// Entries of `new` not in `old` with the same id and key, ascending by id.
    static func changedEntries(from old: SignedDeviceList, to new: SignedDeviceList) -> [DeviceListPayload.Entry] {
        new.entries.filter { !old.contains(deviceID: $0.deviceID, identityKey: $0.deviceIdentityKey) }
    }

    /// Ids of `old` not in `new` with the same key (removed or re-keyed), ascending.
    static func removedIDs(from old: SignedDeviceList, to new: SignedDeviceList) -> [UInt32] {
        old.entries.filter { !new.contains(deviceID: $0.deviceID, identityKey: $0.deviceIdentityKey) }.map(\.deviceID)
    }

    private enum CodingKeys: String, CodingKey { case accountIdentityKey, accepted, pending }

    /// Restores a stored tracker; the lists are verified again.
    /// - Throws: `DecodingError.dataCorrupted` for a list that does not verify or a state `receive` cannot produce.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        do {
            try self.init(
                accountIdentityKey: try container.decode(Data.self, forKey: .accountIdentityKey),
                accepted: try container.decodeIfPresent(SignedDeviceList.self, forKey: .accepted),
                pending: try container.decodeIfPresent(SignedDeviceList.self, forKey: .pending))
        } catch let error as DeviceListError {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "stored device list state: \(error)"))
        }
    }

    /// Stores the key and the lists' bytes.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(accountIdentityKey, forKey: .accountIdentityKey)
        try container.encodeIfPresent(accepted, forKey: .accepted)
        try container.encodeIfPresent(pending, forKey: .pending)
    }
}
