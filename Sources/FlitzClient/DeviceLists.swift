import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import GRDB

extension ClientStore {
    /// The stored device list state of `handle` (own included), nil before any list was seen.
    static func tracker(_ handle: String, _ db: Database) throws -> DeviceListTracker? {
        guard let data = try Data.fetchOne(db, sql: "SELECT tracker FROM device_lists WHERE handle = ?", arguments: [handle]) else { return nil }
        do {
            return try JSONDecoder().decode(DeviceListTracker.self, from: data)
        } catch {
            throw ClientError(.protocolFailure, "the stored device list of \(handle) is corrupt")
        }
    }

    static func save(_ tracker: DeviceListTracker, for handle: String, _ db: Database) throws {
        try db.execute(
            sql: "INSERT OR REPLACE INTO device_lists (handle, tracker) VALUES (?, ?)", arguments: [handle, try JSONEncoder().encode(tracker)])
    }

    /// The key a handle's lists must be under: this account's key for its own handle, else the contact's
    /// trusted key, else (no contact yet) nil.
    static func trustedAccountKey(for handle: String, account: AccountRecord, _ db: Database) throws -> Data? {
        if handle == account.handle { return account.accountIdentityKey.rawRepresentation }
        return try contact(handle, db)?.trustedIdentityKey
    }

    /// The accepted list of `handle`, only if it is under the key trusted for the handle now.
    static func acceptedDeviceList(_ handle: String, account: AccountRecord, _ db: Database) throws -> SignedDeviceList? {
        guard let key = try trustedAccountKey(for: handle, account: account, db), let tracker = try tracker(handle, db),
            ConstantTime.equals(tracker.accountIdentityKey, key)
        else { return nil }
        return tracker.accepted
    }

    /// Whether a newer list of `handle` waits for the user's acceptance (sending is refused meanwhile).
    static func hasPendingDeviceList(_ handle: String, account: AccountRecord, _ db: Database) throws -> Bool {
        guard let key = try trustedAccountKey(for: handle, account: account, db), let tracker = try tracker(handle, db),
            ConstantTime.equals(tracker.accountIdentityKey, key)
        else { return false }
        return tracker.hasPendingChange
    }

    /// Feeds a list the relay served for `handle` to its tracker (`protocol/devices.md` section 4.4) and performs
    /// the decision: deletes sessions with removed devices, stores the new state. `wire` nil: the relay served
    /// no list. A handle without a contact yet takes `servedAccountKey` (trust on first use is `checkIdentity`'s).
    /// Additions to this account's own list are accepted at once: only its primary device signs them, and it
    /// is the user who linked the device.
    static func consider(
        _ wire: WireSignedDeviceList?, handle: String, servedAccountKey: Data, account: AccountRecord, _ db: Database
    ) throws -> DeviceListTracker.Decision? {
        let trusted = try trustedAccountKey(for: handle, account: account, db) ?? servedAccountKey
        var tracker = try tracker(handle, db) ?? DeviceListTracker(accountIdentityKey: trusted)
        guard let wire else { return nil }
        let old = ConstantTime.equals(tracker.accountIdentityKey, trusted) ? tracker.accepted : nil
        var decision = tracker.receive(wire, trustedAccountKey: trusted)
        if case .pending = decision, handle == account.handle {
            tracker.acceptPending()
            decision = .accepted(removedDeviceIDs: old.map { old in
                old.entries.filter { !(tracker.accepted?.contains(deviceID: $0.deviceID, identityKey: $0.deviceIdentityKey) ?? false) }
                    .map(\.deviceID)
            } ?? [])
        }
        switch decision {
        case .accepted(let removed):
            try deleteSessions(handle, deviceIDs: removed, db)
            if let accepted = tracker.accepted { try deleteUnlistedSessions(handle, list: accepted, db) }
            try save(tracker, for: handle, db)
        case .pending:
            try save(tracker, for: handle, db)
        default:
            break
        }
        return decision
    }

    static func deleteSessions(_ handle: String, deviceIDs: [UInt32], _ db: Database) throws {
        for id in deviceIDs {
            try db.execute(sql: "DELETE FROM sessions WHERE handle = ? AND device_id = ?", arguments: [handle, Int64(id)])
        }
    }

    /// Deletes every session with `handle` whose (device id, remote device identity key) `list` does not hold,
    /// for example one started under version 1's rule with a device the list now gives another key or drops
    /// (devices.md 4.4, "Only listed devices"). Run whenever a list is accepted, the first one included.
    static func deleteUnlistedSessions(_ handle: String, list: SignedDeviceList, _ db: Database) throws {
        for stored in try sessions(with: handle, db) where !isListed(stored.session, deviceID: stored.deviceID, in: list) {
            try db.execute(
                sql: "DELETE FROM sessions WHERE handle = ? AND device_id = ? AND base_key = ?",
                arguments: [handle, Int64(stored.deviceID), stored.session.baseKey.rawRepresentation])
        }
    }

    /// Whether `list` holds `deviceID` with the session's remote device identity key.
    static func isListed(_ session: Session, deviceID: UInt32, in list: SignedDeviceList) -> Bool {
        list.contains(deviceID: deviceID, identityKey: session.remoteCertificate.deviceIdentityKey.rawRepresentation)
    }

    /// Whether sending on `session` to `handle`'s `deviceID` is allowed: `handle`'s accepted list holds the
    /// device with the session's key, or no list is accepted yet (version 1's rule).
    static func mayEncrypt(_ session: Session, to handle: String, deviceID: UInt32, account: AccountRecord, _ db: Database) throws -> Bool {
        guard let list = try acceptedDeviceList(handle, account: account, db) else { return true }
        return isListed(session, deviceID: deviceID, in: list)
    }

    /// The user accepted `handle`'s pending list (`flitz trust`). Returns whether one was pending.
    static func acceptPendingDeviceList(_ handle: String, account: AccountRecord, _ db: Database) throws -> Bool {
        guard let key = try trustedAccountKey(for: handle, account: account, db), var tracker = try tracker(handle, db),
            ConstantTime.equals(tracker.accountIdentityKey, key), tracker.hasPendingChange
        else { return false }
        try deleteSessions(handle, deviceIDs: tracker.acceptPending(), db)
        if let accepted = tracker.accepted { try deleteUnlistedSessions(handle, list: accepted, db) }
        try save(tracker, for: handle, db)
        return true
    }
}

extension FlitzClient {
    /// Considers a served list for `handle` in its own transaction and turns the decision into warnings, or an
    /// error when sending must stop (`forSending`). Checks this device is still in its own account's list.
    /// - Throws: `ClientError(.identityChanged)` for a pending list (exit 4); `.protocolFailure` for a refused
    ///   or invalid list when sending; `removedError` when this device is no longer in its own list.
    @discardableResult
    func considerDeviceList(
        _ wire: WireSignedDeviceList?, handle: String, servedAccountKey: Data, account: AccountRecord, forSending: Bool,
        checkRemoval: Bool = true, onWarning: (String) -> Void = { _ in }
    ) throws -> DeviceListTracker.Decision? {
        let decision = try store.transaction { db in
            try ClientStore.consider(wire, handle: handle, servedAccountKey: servedAccountKey, account: account, db)
        }
        var refusal: String?
        switch decision {
        case .accepted(let removed) where !removed.isEmpty:
            onWarning(handle == account.handle ? "a device of your account was removed" : "\(handle) removed a device")
        case .pending:
            if forSending { throw pendingListError(handle) }
            onWarning(pendingListError(handle).message)
        case .refusedRollback:
            refusal = "the relay served an older device list of \(handle) than one already accepted (a rollback); it was refused"
        case .refusedEquivocation:
            refusal = "\(handle)'s device list was signed twice with the same version and different devices (equivocation or forgery); it was refused"
        case .ignoredInvalid(let error):
            refusal = "\(handle)'s device list is not valid (\(error)); it was ignored"
        case .accountKeyChanged:
            if handle == account.handle { throw removedError(account) }
            if forSending { try checkIdentity(handle, accountIdentityKey: servedAccountKey) }
        case .accepted, .unchanged, nil:
            break
        }
        if let refusal {
            if forSending { throw ClientError(.protocolFailure, "\(refusal); not sending") }
            onWarning(refusal)
        }
        if handle == account.handle && checkRemoval { try checkNotRemoved(account) }
        return decision
    }

    func pendingListError(_ handle: String) -> ClientError {
        ClientError(
            .identityChanged,
            "\(handle) has a new device in their signed device list. Check with \(handle) that they linked it, "
                + "then run `flitz trust \(handle)` to send to it")
    }

    /// Stops when this device is missing from its account's accepted list (devices.md 4.4, "Own account").
    func checkNotRemoved(_ account: AccountRecord) throws {
        let list = try store.dbQueue.read { db in try ClientStore.acceptedDeviceList(account.handle, account: account, db) }
        guard let list, !list.contains(deviceID: account.deviceID, identityKey: account.device.publicKey.rawRepresentation) else { return }
        try store.markAccount(removed: true)
        throw removedError(account)
    }

    func removedError(_ account: AccountRecord) -> ClientError {
        ClientError(
            .refused(.authenticationFailed),
            "this device was removed from \(account.handle)'s account (its device list no longer holds it); this home cannot be used any more")
    }

    /// Fetches `handle`'s device list and current devices (`FetchDeviceList`) and considers the list. When
    /// `forSending`, a first contact's key is trusted on first use, as with a bundle.
    /// - Throws: `noSuchHandleError` for an unknown handle; as `considerDeviceList`.
    @discardableResult
    func refreshDeviceList(
        _ handle: String, on connection: RelayConnection, account: AccountRecord, forSending: Bool, checkRemoval: Bool = true,
        onWarning: (String) -> Void = { _ in }
    ) async throws -> WireDeviceListResult {
        var fetch = WireFetchDeviceList()
        fetch.handle = handle
        let answer: WireFrame
        do {
            answer = try await connection.request(.fetchDeviceList(fetch))
        } catch let error as ClientError where error.kind == .refused(.unknownRecipient) {
            throw noSuchHandleError(handle)
        }
        guard case .deviceListResult(let result) = answer.body else {
            throw ClientError(.protocolFailure, "unexpected answer to a device list request")
        }
        if forSending, handle != account.handle { try checkIdentity(handle, accountIdentityKey: result.accountIdentityKey) }
        try considerDeviceList(
            result.hasDeviceList ? result.deviceList : nil, handle: handle, servedAccountKey: result.accountIdentityKey, account: account,
            forSending: forSending, checkRemoval: checkRemoval, onWarning: onWarning)
        return result
    }

    func noSuchHandleError(_ handle: String) -> ClientError {
        ClientError(.refused(.unknownRecipient), "no such handle \(handle) (deleted or never registered)")
    }
}
