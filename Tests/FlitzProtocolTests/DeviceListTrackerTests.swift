import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import Testing

/// `DeviceListTracker` row by row against the state table of devices.md section 4.4; each test reads as a
/// transcript: event, expected decision, state.
struct DeviceListTrackerTests {
    typealias F = DeviceListFixtures

    let account: AccountIdentity
    let key: Data
    let newAccount = AccountIdentity(random: SeededRandom(label: "tracker new account"))

    init() throws {
        account = try F.exampleAccount()
        key = account.publicKey.rawRepresentation
    }

    func list(_ version: UInt64, _ entries: [DeviceListPayload.Entry], issuedAt: UInt64 = 1_700_000_000_000, by signer: AccountIdentity? = nil)
        -> (payload: Data, signature: Data)
    {
        F.signedBytes(signer ?? account, version: version, issuedAt: issuedAt, entries)
    }

    func receive(_ tracker: inout DeviceListTracker, _ pair: (payload: Data, signature: Data), trusting k: Data? = nil) -> DeviceListTracker.Decision {
        tracker.receive(payload: pair.payload, signature: pair.signature, trustedAccountKey: k ?? key)
    }

    /// A tracker in accepted(2) with devices 1 and 2.
    func acceptedTwo() -> DeviceListTracker {
        var tracker = DeviceListTracker(accountIdentityKey: key)
        _ = receive(&tracker, list(2, [F.entry(1, 1), F.entry(2, 2)]))
        return tracker
    }

    // none seen

    @Test func noneSeenBundleWithoutListAndOneDeviceUsesVersionOneRule() {
        let tracker = DeviceListTracker(accountIdentityKey: key)
        #expect(tracker.sendTargets(bundleDevices: [F.entry(1, 1)], bundleCarriedList: false) == .success([F.entry(1, 1)]))
        #expect(tracker.acceptsSender(deviceID: 9, identityKey: F.key(9)))
        #expect(!tracker.allows(deviceID: 1, identityKey: F.key(1)))
    }

    @Test func noneSeenBundleWithoutListAndSeveralDevicesRefuses() {
        let tracker = DeviceListTracker(accountIdentityKey: key)
        #expect(tracker.sendTargets(bundleDevices: [F.entry(1, 1), F.entry(2, 2)], bundleCarriedList: false) == .failure(.severalDevicesWithoutList))
        #expect(tracker.sendTargets(bundleDevices: [], bundleCarriedList: false) == .failure(.severalDevicesWithoutList))
    }

    @Test func noneSeenValidListIsAccepted() {
        var tracker = DeviceListTracker(accountIdentityKey: key)
        #expect(receive(&tracker, list(5, [F.entry(1, 1), F.entry(2, 2)])) == .accepted(removedDeviceIDs: []))
        #expect(tracker.accepted?.version == 5)
        #expect(tracker.allows(deviceID: 2, identityKey: F.key(2)))
        #expect(!tracker.allows(deviceID: 2, identityKey: F.key(1)))
        #expect(!tracker.acceptsSender(deviceID: 3, identityKey: F.key(3)))
    }

    @Test func noneSeenInvalidListInBundleIsNoFallback() {
        var tracker = DeviceListTracker(accountIdentityKey: key)
        var bad = list(1, [F.entry(1, 1)])
        bad.signature[0] ^= 1
        #expect(receive(&tracker, bad) == .ignoredInvalid(.signature))
        #expect(tracker.accepted == nil)
        #expect(tracker.sendTargets(bundleDevices: [F.entry(1, 1)], bundleCarriedList: true) == .failure(.invalidList))
    }

    // accepted(v)

    @Test func acceptedSameBytesIsUnchanged() {
        var tracker = acceptedTwo()
        let before = tracker
        #expect(receive(&tracker, list(2, [F.entry(1, 1), F.entry(2, 2)])) == .unchanged)
        #expect(tracker == before)
    }

    @Test func acceptedLowerVersionIsRollback() {
        var tracker = acceptedTwo()
        let before = tracker
        #expect(receive(&tracker, list(1, [F.entry(1, 1)])) == .refusedRollback)
        #expect(tracker == before)
    }

    @Test func acceptedSameVersionOtherBytesIsEquivocation() {
        var tracker = acceptedTwo()
        let before = tracker
        #expect(receive(&tracker, list(2, [F.entry(1, 1)])) == .refusedEquivocation)
        // Even only issued_at differing is another list under the same version.
        #expect(receive(&tracker, list(2, [F.entry(1, 1), F.entry(2, 2)], issuedAt: 5)) == .refusedEquivocation)
        #expect(tracker == before)
    }

    @Test func acceptedNewerListWithOnlyRemovalsIsAcceptedAtOnce() {
        var tracker = acceptedTwo()
        #expect(receive(&tracker, list(3, [F.entry(1, 1)])) == .accepted(removedDeviceIDs: [2]))
        #expect(tracker.accepted?.version == 3)
        #expect(!tracker.allows(deviceID: 2, identityKey: F.key(2)))
        #expect(!tracker.hasPendingChange)
    }

    @Test func acceptedNewerListAddingADeviceIsPending() {
        var tracker = acceptedTwo()
        #expect(receive(&tracker, list(3, [F.entry(1, 1), F.entry(2, 2), F.entry(3, 3)])) == .pending(changedDevices: [F.entry(3, 3)]))
        #expect(tracker.accepted?.version == 2)
        #expect(tracker.pending?.version == 3)
        #expect(tracker.hasPendingChange)
        #expect(!tracker.allows(deviceID: 3, identityKey: F.key(3)))
        #expect(tracker.sendTargets(bundleDevices: [F.entry(1, 1)], bundleCarriedList: true) == .failure(.pendingChange))
    }

    @Test func acceptedNewerListReKeyingADeviceIsPending() {
        var tracker = acceptedTwo()
        // Device 2 with another key, device 1 removed at the same time: pending, not accepted.
        #expect(receive(&tracker, list(3, [F.entry(2, 9)])) == .pending(changedDevices: [F.entry(2, 9)]))
        #expect(tracker.accepted?.version == 2)
    }

    @Test func acceptedBundleWithoutListIsADowngrade() {
        let tracker = acceptedTwo()
        #expect(tracker.sendTargets(bundleDevices: [F.entry(1, 1)], bundleCarriedList: false) == .failure(.downgrade))
    }

    @Test func acceptedSendsOnlyToListedDevicesWithTheirKeys() {
        let tracker = acceptedTwo()
        // Device 2 absent from the bundle is skipped; 3 (unlisted) and 1 with another key are not encrypted to.
        #expect(
            tracker.sendTargets(bundleDevices: [F.entry(1, 1), F.entry(3, 3)], bundleCarriedList: true) == .success([F.entry(1, 1)]))
        #expect(tracker.sendTargets(bundleDevices: [F.entry(1, 7), F.entry(3, 3)], bundleCarriedList: true) == .failure(.noListedDevice))
        #expect(tracker.acceptsSender(deviceID: 1, identityKey: F.key(1)))
        #expect(!tracker.acceptsSender(deviceID: 1, identityKey: F.key(2)))
    }

    // accepted(v) + pending(v')

    @Test func userAcceptsPendingThenAsOnlyRemovals() {
        var tracker = acceptedTwo()
        _ = receive(&tracker, list(3, [F.entry(1, 1), F.entry(3, 3)]))
        #expect(tracker.acceptPending() == [2])
        #expect(tracker.accepted?.version == 3)
        #expect(tracker.pending == nil)
        #expect(tracker.allows(deviceID: 3, identityKey: F.key(3)))
        #expect(!tracker.allows(deviceID: 2, identityKey: F.key(2)))
        // Re-keyed ids count as removed: their old sessions go.
        _ = receive(&tracker, list(4, [F.entry(1, 1), F.entry(3, 8)]))
        #expect(tracker.acceptPending() == [3])
        #expect(tracker.acceptPending() == [])
    }

    @Test func pendingIsReplacedByANewerList() {
        var tracker = acceptedTwo()
        _ = receive(&tracker, list(3, [F.entry(1, 1), F.entry(2, 2), F.entry(3, 3)]))
        #expect(receive(&tracker, list(5, [F.entry(1, 1), F.entry(2, 2), F.entry(4, 4)])) == .pending(changedDevices: [F.entry(4, 4)]))
        #expect(tracker.pending?.version == 5)
        #expect(tracker.accepted?.version == 2)
        // The pending list again: unchanged. One between accepted and pending: a rollback; the pending version: equivocation.
        #expect(receive(&tracker, list(5, [F.entry(1, 1), F.entry(2, 2), F.entry(4, 4)])) == .unchanged)
        #expect(receive(&tracker, list(4, [F.entry(1, 1), F.entry(2, 2), F.entry(3, 3)])) == .refusedRollback)
        #expect(receive(&tracker, list(5, [F.entry(1, 1), F.entry(2, 2), F.entry(3, 3)])) == .refusedEquivocation)
        #expect(tracker.pending?.version == 5)
        // A newer list that only removes (relative to the accepted one) is accepted and drops the pending one.
        #expect(receive(&tracker, list(6, [F.entry(2, 2)])) == .accepted(removedDeviceIDs: [1]))
        #expect(tracker.pending == nil)
        #expect(tracker.accepted?.version == 6)
    }

    // any

    @Test func invalidListIsIgnoredInEveryState() {
        var bad = list(9, [F.entry(1, 1)])
        bad.payload[bad.payload.count - 1] ^= 1
        for var tracker in [DeviceListTracker(accountIdentityKey: key), acceptedTwo()] {
            let before = tracker
            #expect(receive(&tracker, bad) == .ignoredInvalid(.signature))
            #expect(receive(&tracker, list(9, [F.entry(2, 1), F.entry(1, 2)])) == .ignoredInvalid(.unsortedOrDuplicate))
            #expect(tracker == before)
        }
    }

    @Test func listUnderAnotherAccountKeyIsAnIdentityChange() {
        var tracker = acceptedTwo()
        let before = tracker
        let newKey = newAccount.publicKey.rawRepresentation
        let foreign = list(1, [F.entry(7, 7)], by: newAccount)
        #expect(receive(&tracker, foreign) == .accountKeyChanged(newAccountIdentityKey: newKey))
        #expect(tracker == before)
        // A list claiming the new key but not signed by it is just invalid.
        var forged = foreign
        forged.signature[5] ^= 1
        #expect(receive(&tracker, forged) == .ignoredInvalid(.signature))
        // Once the user trusts the new key, its lists start over: version 1 is accepted, not a rollback.
        #expect(receive(&tracker, foreign, trusting: newKey) == .accepted(removedDeviceIDs: []))
        #expect(tracker.accountIdentityKey == newKey)
        #expect(tracker.accepted?.version == 1)
        #expect(tracker.allows(deviceID: 7, identityKey: F.key(7)))
        #expect(!tracker.allows(deviceID: 1, identityKey: F.key(1)))
    }

    @Test func persistsAndRefusesImpossibleStates() throws {
        var tracker = acceptedTwo()
        _ = receive(&tracker, list(3, [F.entry(1, 1), F.entry(2, 2), F.entry(3, 3)]))
        let restored = try JSONDecoder().decode(DeviceListTracker.self, from: try JSONEncoder().encode(tracker))
        #expect(restored == tracker)
        #expect(restored.pending?.version == 3)
        let accepted = try #require(tracker.accepted), pending = try #require(tracker.pending)
        #expect(throws: DeviceListError.signature) { try DeviceListTracker(accountIdentityKey: key, accepted: pending, pending: accepted) }
        #expect(throws: DeviceListError.signature) { try DeviceListTracker(accountIdentityKey: key, accepted: nil, pending: pending) }
        #expect(throws: DeviceListError.accountKeyMismatch) {
            try DeviceListTracker(accountIdentityKey: newAccount.publicKey.rawRepresentation, accepted: accepted, pending: nil)
        }
    }
}
