import FlitzCrypto
import FlitzProtocol
import Foundation

/// Where a contact stands with this user: trusted, verified by comparing safety numbers (`protocol/crypto.md`
/// §12), or changed.
public enum VerificationState: String, Sendable {
    /// The trusted account identity key is the one whose safety number the user confirmed.
    case verified
    /// Trusted (on first use or with `trust`) but never confirmed, or changed since it was.
    case unverified
    /// A different key was seen and is not trusted yet: sending is refused until `trust`.
    case identityChanged
}

/// A contact's safety number and verification state.
public struct ContactVerification: Sendable {
    /// The contact's handle.
    public let handle: String
    /// The state.
    public let state: VerificationState
    /// The 35-character safety number (six groups of five digits) of this account's key and the contact's
    /// key to compare now: the new, untrusted key when `state` is `.identityChanged`, else the trusted one.
    public let safetyNumber: String
    /// The scannable form of the same two keys: `"FLITZSN1:"` and 64 uppercase hex digits (73 characters).
    public let scannable: String
}

extension FlitzClient {
    /// The safety number with `handle` in both forms, and whether it was verified. Local only.
    /// - Throws: `ClientError(.invalidArgument)` when no message has been exchanged with `handle` yet.
    public func verification(of handle: String) throws -> ContactVerification {
        let own = try requireAccount().accountIdentityKey.rawRepresentation
        guard let contact = try store.contact(handle) else { throw noContactError(handle) }
        return Self.verification(of: contact, own: own)
    }

    /// Every contact (sorted by handle) with its safety number and state.
    public func contacts() throws -> [ContactVerification] {
        let own = try requireAccount().accountIdentityKey.rawRepresentation
        return try store.dbQueue.read { db in try ClientStore.contacts(db) }.map { Self.verification(of: $0, own: own) }
    }

    /// Marks `handle` verified if `safetyNumber` (30 digits as shown; spaces ignored) is the safety number
    /// of the trusted key. Compared in constant time, inside the transaction that records it.
    /// - Throws: `ClientError(.safetyNumberMismatch)` (nothing changes); `.identityChanged` when a new key or
    ///   a device list adding a device is pending (run `trust` first); `.invalidArgument` for an unknown contact.
    @discardableResult
    public func verify(_ handle: String, safetyNumber: String) throws -> ContactVerification {
        try verify(handle) { own, key in
            let given = Data(String(safetyNumber.filter { !$0.isWhitespace }).utf8)
            let expected = Data(SafetyNumber.compute(own, key).filter { $0 != " " }.utf8)
            return ConstantTime.equals(given, expected)
        }
    }

    /// Marks `handle` verified if `scanned` is the scannable form (`FLITZSN1:…`, case-insensitive hex) of the
    /// trusted key. Compared in constant time, inside the transaction that records it.
    /// - Throws: as `verify(_:safetyNumber:)`.
    @discardableResult
    public func verify(_ handle: String, scanned: String) throws -> ContactVerification {
        try verify(handle) { own, key in
            let given = Data(scanned.trimmingCharacters(in: .whitespacesAndNewlines).uppercased().utf8)
            return ConstantTime.equals(given, Data(SafetyNumber.scannable(own, key).utf8))
        }
    }

    private func verify(_ handle: String, matches: (Data, Data) -> Bool) throws -> ContactVerification {
        let account = try requireAccount()
        let own = account.accountIdentityKey.rawRepresentation
        return try store.transaction { db in
            guard let contact = try ClientStore.contact(handle, db) else { throw noContactError(handle) }
            guard contact.untrustedIdentityKey == nil else {
                throw ClientError(
                    .identityChanged,
                    "the identity key of \(handle) has changed and is not trusted yet; compare `flitz verify \(handle)` with them, "
                        + "run `flitz trust \(handle)`, then verify again")
            }
            // A device list change waiting for `trust` (exit 4, README's exit-code table; devices.md 4.4).
            guard try !ClientStore.hasPendingDeviceList(handle, account: account, db) else {
                throw ClientError(
                    .identityChanged,
                    "\(handle) has a new device in their signed device list that is not trusted yet; check with \(handle) that they "
                        + "linked it, run `flitz trust \(handle) --safety-number \"NUMBER\"`, then verify again")
            }
            guard matches(own, contact.trustedIdentityKey) else {
                throw ClientError(
                    .safetyNumberMismatch,
                    "that is not the safety number of \(handle)'s identity key; \(handle) is NOT marked verified. "
                        + "Check that you compared with the right person; if it still differs, someone may be intercepting your messages")
            }
            try ClientStore.markVerified(handle, key: contact.trustedIdentityKey, db)
            var verified = contact
            verified.verifiedIdentityKey = contact.trustedIdentityKey
            return Self.verification(of: verified, own: own)
        }
    }

    private static func verification(of contact: ContactRecord, own: Data) -> ContactVerification {
        let key = contact.untrustedIdentityKey ?? contact.trustedIdentityKey
        let state: VerificationState =
            contact.untrustedIdentityKey != nil ? .identityChanged : contact.isVerified ? .verified : .unverified
        return ContactVerification(
            handle: contact.handle, state: state, safetyNumber: SafetyNumber.compute(own, key), scannable: SafetyNumber.scannable(own, key))
    }

    private func noContactError(_ handle: String) -> ClientError {
        ClientError(.invalidArgument, "no contact \(handle) yet: safety numbers exist once you have exchanged a message")
    }
}
