import FlitzStore
import FlitzStorePostgres
import FlitzStoreSQLite
import Foundation
import Testing

/// The push part of the `RelayStore` conformance suite (`protocol/push.md` 4, 5 and 7), on SQLite and PostgreSQL.
@Suite(.freshStores) struct PushEndpointStoreTests {
    static func webPush(_ url: String = "https://push.example.org/abc", at: Int64 = 2_000) -> StoredPushEndpoint {
        StoredPushEndpoint(
            provider: "webpush", endpoint: url, p256dh: RelayStoreTests.bytes(4, 65), authSecret: RelayStoreTests.bytes(5, 16),
            registeredAtMs: at)
    }

    @Test(arguments: StoreKind.allCases) func endpointIsSetReadReplacedAndRemoved(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let bob = try await RelayStoreTests.register(store, "bob")
        #expect(try await store.pushEndpoint(device: bob) == nil)
        let stored = try await store.setPushEndpoint(device: bob, Self.webPush())
        #expect(stored == Self.webPush())
        #expect(stored.isLive)
        try await store.recordPushAccepted(device: bob, endpoint: "https://push.example.org/abc", atMs: 3_000)
        // The same endpoint again keeps its counters; only the registration time changes.
        let again = try await store.setPushEndpoint(device: bob, Self.webPush(at: 4_000))
        #expect(again.registeredAtMs == 4_000)
        #expect(again.wakesSent == 1)
        #expect(again.lastWakeAtMs == 3_000)
        // Another endpoint starts afresh.
        let other = try await store.setPushEndpoint(device: bob, Self.webPush("https://push.example.org/xyz", at: 5_000))
        #expect(other.wakesSent == 0 && other.lastWakeAtMs == 0 && other.endpoint == "https://push.example.org/xyz")
        try await store.removePushEndpoint(device: bob)
        #expect(try await store.pushEndpoint(device: bob) == nil)
        try await store.removePushEndpoint(device: bob)  // none: no error
        await #expect(throws: StoreError(.unknownDevice)) {
            try await store.setPushEndpoint(device: DeviceAddress(handle: "bob", deviceID: 9), Self.webPush())
        }
    }

    @Test(arguments: StoreKind.allCases) func urgentWindowOpensOnceUntilItPassesOrCloses(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let bob = try await RelayStoreTests.register(store, "bob")
        #expect(try await store.decideUrgentWake(device: bob, nowMs: 10_000, windowUntilMs: 70_000) == .noEndpoint)
        _ = try await store.setPushEndpoint(device: bob, Self.webPush())
        guard case .wake(let endpoint) = try await store.decideUrgentWake(device: bob, nowMs: 10_000, windowUntilMs: 70_000) else {
            Issue.record("expected a wake-up")
            return
        }
        #expect(endpoint.endpoint == "https://push.example.org/abc" && endpoint.urgentWindowUntilMs == 70_000)
        #expect(try await store.decideUrgentWake(device: bob, nowMs: 69_999, windowUntilMs: 129_999) == .coalesced(provider: "webpush"))
        // A failure closes only the window it opened.
        try await store.closeUrgentWindow(device: bob, onlyIfUntilMs: 1)
        #expect(try await store.decideUrgentWake(device: bob, nowMs: 20_000, windowUntilMs: 80_000) == .coalesced(provider: "webpush"))
        try await store.closeUrgentWindow(device: bob, onlyIfUntilMs: 70_000)
        guard case .wake = try await store.decideUrgentWake(device: bob, nowMs: 20_000, windowUntilMs: 80_000) else {
            Issue.record("expected a wake-up after the window closed")
            return
        }
        // An authentication closes it unconditionally; the passing of time reopens it too.
        try await store.closeUrgentWindow(device: bob, onlyIfUntilMs: nil)
        guard case .wake = try await store.decideUrgentWake(device: bob, nowMs: 20_000, windowUntilMs: 80_000) else {
            Issue.record("expected a wake-up after authentication")
            return
        }
        guard case .wake = try await store.decideUrgentWake(device: bob, nowMs: 80_000, windowUntilMs: 140_000) else {
            Issue.record("expected a wake-up once the window passed")
            return
        }
    }

    @Test(arguments: StoreKind.allCases) func racingDecisionsOpenTheWindowOnce(_ kind: StoreKind) async throws {
        let (store, location) = try await StoreScope.make(kind)
        let bob = try await RelayStoreTests.register(store, "bob")
        _ = try await store.setPushEndpoint(device: bob, Self.webPush())
        // A second store on the same file stands in for a second relay node.
        let second = try await StoreScope.open(location)
        let decisions = try await withThrowingTaskGroup(of: UrgentWakeDecision.self) { group in
            for index in 0..<40 {
                let node: any RelayStore = index.isMultiple(of: 2) ? store : second
                group.addTask { try await node.decideUrgentWake(device: bob, nowMs: 10_000, windowUntilMs: 70_000) }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(decisions.filter { if case .wake = $0 { true } else { false } }.count == 1)
        #expect(decisions.filter { $0 == .coalesced(provider: "webpush") }.count == 39)
    }

    @Test(arguments: StoreKind.allCases) func deadEndpointIsDroppedKeepingProviderTimeAndReason(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let bob = try await RelayStoreTests.register(store, "bob")
        _ = try await store.setPushEndpoint(device: bob, Self.webPush())
        try await store.recordPushFailed(device: bob, endpoint: "https://push.example.org/abc", reason: "push service answered 503")
        #expect(try await store.pushEndpoint(device: bob)?.lastFailure == "push service answered 503")
        // A drop of an endpoint that is no longer the device's changes nothing.
        #expect(try await store.dropPushEndpoint(device: bob, endpoint: "https://other.example.org/", reason: "gone", atMs: 5_000) == false)
        #expect(try await store.dropPushEndpoint(device: bob, endpoint: "https://push.example.org/abc", reason: "push service answered 410 Gone", atMs: 5_000))
        let dropped = try #require(try await store.pushEndpoint(device: bob))
        #expect(dropped == StoredPushEndpoint(
            provider: "webpush", endpoint: nil, registeredAtMs: 2_000, lastFailure: "push service answered 410 Gone", droppedAtMs: 5_000))
        #expect(!dropped.isLive)
        #expect(try await store.decideUrgentWake(device: bob, nowMs: 10_000, windowUntilMs: 70_000) == .noEndpoint)
        // Registering again replaces the dropped one.
        #expect(try await store.setPushEndpoint(device: bob, Self.webPush(at: 6_000)).isLive)
    }

    @Test(arguments: StoreKind.allCases) func envelopeIsQueuedUntilAcknowledgedOrExpired(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let alice = try await RelayStoreTests.register(store, "alice")
        let bob = try await RelayStoreTests.register(store, "bob")
        _ = try await store.submit(
            sender: alice, envelopes: [RelayStoreTests.envelope(1, to: bob, expiresAtMs: 50_000), RelayStoreTests.envelope(2, to: bob)],
            atMs: 1_000)
        let first = RelayStoreTests.bytes(1, 16), second = RelayStoreTests.bytes(2, 16)
        #expect(try await store.isEnvelopeQueued(envelopeID: first, device: bob, nowMs: 49_999))
        #expect(try await store.isEnvelopeQueued(envelopeID: first, device: bob, nowMs: 50_000) == false)
        #expect(try await store.isEnvelopeQueued(envelopeID: first, device: alice, nowMs: 1_000) == false)
        _ = try await store.acknowledge(device: bob, envelopeIDs: [second], receiptIDs: [], atMs: 2_000, receiptExpiresAtMs: 90_000)
        #expect(try await store.isEnvelopeQueued(envelopeID: second, device: bob, nowMs: 2_000) == false)
    }

    @Test(arguments: StoreKind.allCases) func endpointsGoWithTheirDeviceAndAccount(_ kind: StoreKind) async throws {
        let (store, _) = try await StoreScope.make(kind)
        let bob = try await RelayStoreTests.register(store, "bob")
        let key = RelayStoreTests.bytes(9, 32)
        let bob2 = DeviceAddress(
            handle: "bob",
            deviceID: try await store.registerDevice(
                handle: "bob", accountIdentityKey: key, device: RelayStoreTests.newDevice(2), atMs: 2_000, maxDevices: 16))
        _ = try await store.setPushEndpoint(device: bob, Self.webPush())
        _ = try await store.setPushEndpoint(device: bob2, Self.webPush("https://push.example.org/two"))
        let entries = [DeviceListEntry(deviceID: 1, deviceIdentityKey: RelayStoreTests.bytes(1, 32))]
        _ = try await store.publishDeviceList(
            handle: "bob", accountIdentityKey: key,
            list: StoredDeviceList(payload: RelayStoreTests.bytes(0xD1, 105), signature: RelayStoreTests.bytes(0x51, 64), version: 1),
            entries: entries, publisher: bob, removeDeviceIDs: [bob2.deviceID], atMs: 3_000, receiptExpiresAtMs: 90_000)
        #expect(try await store.pushEndpoint(device: bob2) == nil)
        #expect(try await store.pushEndpoint(device: bob) != nil)
        _ = try await store.deleteAccount(handle: "bob", accountIdentityKey: key, atMs: 4_000, tombstoneUntilMs: 50_000, receiptExpiresAtMs: 90_000)
        #expect(try await store.pushEndpoint(device: bob) == nil)
    }

    @Test(arguments: StoreKind.allCases) func relaySecretIsStoredOnceAndKept(_ kind: StoreKind) async throws {
        let (store, location) = try await StoreScope.make(kind)
        let first = try await store.relaySecret(named: "push.vapidKey", orStore: Data("first".utf8), atMs: 1_000)
        #expect(first == Data("first".utf8))
        #expect(try await store.relaySecret(named: "push.vapidKey", orStore: Data("second".utf8), atMs: 2_000) == first)
        let reopened = try await StoreScope.open(location)
        #expect(try await reopened.relaySecret(named: "push.vapidKey", orStore: Data("third".utf8), atMs: 3_000) == first)
    }
}
