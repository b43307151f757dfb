import FlitzCrypto
@testable import FlitzRelay
import FlitzStore
import FlitzStoreSQLite
import FlitzWire
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Synchronization
import Testing

/// The relay's push gateway (`protocol/push.md` 4, 5, 7 and 10) through a real relay (`RelayHarness`, raw frames)
/// and a local Web Push receiver started by the test (Hummingbird on 127.0.0.1, plain http, allowed for loopback).
@Suite struct PushGatewayTests {
    // MARK: The issue's CI test

    @Test func burstOfTwentyWakesOnceWithNothingInItAndNothingAfterADrain() async throws {
        try await PushReceiver.run { receiver in
            try await RelayHarness.run(configure: allowPrivatePush) { harness in
                let world = try await PushWorld.make(harness, receiver: receiver)
                // Bob is offline; alice sends a burst of 20 urgent messages.
                let ids = (1...20).map { UInt8($0) }
                try await world.send(ids, urgency: .urgent)
                try await world.idle()
                #expect(receiver.count == 1)
                #expect(world.monitor.sent == 1)
                #expect(world.monitor.coalesced == 19)
                let request = try #require(receiver.requests.first)
                let plaintext = try WebPush.decrypt(request.body, keys: world.bobKeys)
                #expect(plaintext == WakeClass.urgent.payload)
                #expect(plaintext == Data(#"{"v":1,"wake":"urgent"}"#.utf8))
                // Nothing in it names the sender, the recipient, the text or an id.
                let text = String(decoding: plaintext, as: UTF8.self)
                for secret in ["alice", "bob", "ciphertext"] { #expect(!text.contains(secret)) }
                for id in ids { #expect(plaintext.range(of: Data(repeating: id, count: 16)) == nil) }
                #expect(request.body.range(of: Data("alice".utf8)) == nil)
                #expect(request.headers["urgency"] == "normal")
                #expect(request.headers["topic"] == "flitz-wake")
                #expect(request.headers["content-encoding"] == "aes128gcm")
                // TTL: the bucket not above the seconds until the envelope expires (ttl 0: the harness's retention,
                // exactly one day on the frozen clock, which is a bucket itself).
                #expect(request.headers["ttl"] == "86400")
                // Signed with the VAPID key the relay made on first start and kept in its database.
                let stored = try await harness.app.relay.store.relaySecret(named: vapidKeySecretName, orStore: Data(), atMs: 0)
                let vapid = try VAPIDKey(pem: String(decoding: stored, as: UTF8.self))
                #expect(request.headers["authorization"]?.hasPrefix("vapid t=") == true)
                #expect(request.headers["authorization"]?.hasSuffix(", k=\(vapid.publicKeyBase64URL)") == true)

                // Bob connects and drains: the window closes; nothing is pushed while he is connected.
                try await harness.connect { bob in
                    let delivered = try await bob.authenticate(world.bob)
                    let envelopeIDs = delivered.flatMap(\.envelopes).map(\.envelopeID)
                    #expect(envelopeIDs.count == 20)
                    var acknowledge = WireAcknowledge()
                    acknowledge.envelopeIds = envelopeIDs
                    #expect(try await bob.request(.acknowledge(acknowledge)).body == .ok(WireOk()))
                    try await world.send([30], urgency: .urgent)
                    _ = try await bob.nextDeliver()
                    try await world.idle()
                    #expect(receiver.count == 1)
                    #expect(world.monitor.sent == 1 && world.monitor.coalesced == 19 && world.monitor.skipped == 0)
                }
                // Offline again: the next message wakes at once, because the connection closed the window; the
                // second request is the only one after the first.
                try await world.waitUntilBobOffline()
                try await world.send([31], urgency: .urgent)
                try await receiver.waitFor(count: 2)
                try await world.idle()
                #expect(receiver.count == 2)
            }
        }
    }

    @Test func silentWakesNothingAndRingWakesAtOnceInsideTheWindow() async throws {
        try await PushReceiver.run { receiver in
            try await RelayHarness.run(configure: allowPrivatePush) { harness in
                let world = try await PushWorld.make(harness, receiver: receiver)
                try await world.send([1, 2, 3], urgency: .silent)
                try await world.idle()
                #expect(receiver.count == 0)
                #expect(world.monitor == PushCounts())
                try await world.send([4], urgency: .urgent)
                try await receiver.waitFor(count: 1)
                // Inside the urgent window: another urgent is coalesced, a ring goes out at once.
                try await world.send([5], urgency: .urgent)
                try await world.send([6], urgency: .ring)
                try await receiver.waitFor(count: 2)
                try await world.idle()
                #expect(receiver.count == 2)
                #expect(world.monitor.coalesced == 1)
                let ring = receiver.requests[1]
                #expect(try WebPush.decrypt(ring.body, keys: world.bobKeys) == WakeClass.ring.payload)
                #expect(ring.headers["urgency"] == "high")
                #expect(ring.headers["topic"] == nil)
                // The two classes have equal length on the wire (padding to 64 bytes).
                #expect(ring.body.count == receiver.requests[0].body.count)
            }
        }
    }

    @Test func backlogOfTwoHundredFromTwentySendersWakesOnce() async throws {
        try await PushReceiver.run { receiver in
            try await RelayHarness.run(configure: {
                allowPrivatePush(&$0)
                $0.rateLimits.enabled = false
            }) { harness in
                let world = try await PushWorld.make(harness, receiver: receiver)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for sender in 0..<20 {
                        group.addTask {
                            let identity = TestIdentity("sender\(sender)")
                            try await harness.connect { connection in
                                let (id, _) = try await connection.register(identity)
                                try await connection.authenticate(identity, deviceID: id)
                                let envelopes = (0..<10).map { index in
                                    var envelope = outgoing(UInt8(index), to: "bob")
                                    envelope.envelopeID = Data([UInt8(sender), UInt8(index)] + Array(repeating: 0xEE, count: 14))
                                    envelope.urgency = .urgent
                                    return envelope
                                }
                                let outcomes = try await connection.submit(envelopes)
                                #expect(outcomes.allSatisfy { !$0.hasError })
                            }
                        }
                    }
                    try await group.waitForAll()
                }
                try await world.idle()
                #expect(receiver.count == 1)
                #expect(world.monitor.sent == 1)
                #expect(world.monitor.coalesced == 199)
                let exposition = await harness.app.relay.metrics.exposition()
                #expect(exposition.contains(#"flitz_relay_push_sent_total{provider="webpush"} 1"#))
                #expect(exposition.contains(#"flitz_relay_push_coalesced_total{provider="webpush"} 199"#))
            }
        }
    }

    @Test func windowReopensOnceItPasses() async throws {
        try await PushReceiver.run { receiver in
            try await RelayHarness.run(configure: allowPrivatePush) { harness in
                let world = try await PushWorld.make(harness, receiver: receiver)
                try await world.send([1], urgency: .urgent)
                try await receiver.waitFor(count: 1)
                harness.clock.advance(seconds: 59)
                try await world.send([2], urgency: .urgent)
                try await world.idle()
                #expect(receiver.count == 1)
                harness.clock.advance(seconds: 1.001)
                try await world.send([3], urgency: .urgent)
                try await receiver.waitFor(count: 2)
                try await world.idle()
                #expect(world.monitor.sent == 2 && world.monitor.coalesced == 1)
            }
        }
    }

    // MARK: Registration (push.md 4)

    @Test func privateEndpointsAreRefusedUnlessAllowed() async throws {
        // Default configuration: push.allowPrivateEndpoints is off.
        try await RelayHarness.run { harness in
            let bob = TestIdentity("bob")
            let keys = WebPush.SubscriberKeys.generate()
            try await harness.connect { connection in
                let (id, _) = try await connection.register(bob)
                try await connection.authenticate(bob, deviceID: id)
                func register(_ endpoint: String) async throws -> WireFrame {
                    var request = WireRegisterPushEndpoint()
                    request.provider = .webPush
                    request.endpoint = endpoint
                    request.p256Dh = keys.publicKey
                    request.authSecret = keys.authSecret.unsafeData
                    return try await connection.request(.registerPushEndpoint(request))
                }
                for bad in [
                    "https://10.0.0.1/x", "https://[fd00::1]/", "https://169.254.169.254/", "https://127.0.0.1:9/", "https://localhost/",
                    "http://127.0.0.1:\(harness.port)/", "http://localhost/p", "http://[::1]:8080/p", "https://192.168.1.1/x", "https://172.16.0.1/x",
                    "https://100.64.0.1/x", "https://0.0.0.0/x", "https://[::ffff:127.0.0.1]/x", "https://[fe80::1]/x", "https://224.0.0.1/x",
                    "https://2130706433/x", "https://127.1/x", "https://0x7f.0.0.1/x", "https://push.localhost/x", "https://LOCALHOST./x",
                ] {
                    let reply = try await register(bad)
                    guard case .error(let error) = reply.body else {
                        Issue.record("\(bad) was accepted: \(reply)")
                        continue
                    }
                    #expect(error.code == .invalidArgument, "\(bad)")
                    #expect(error.message.contains("endpoint") && error.message.contains("push.allowPrivateEndpoints"), "\(bad): \(error.message)")
                }
                let empty = try await connection.request(.fetchPushEndpoint(WireFetchPushEndpoint()))
                #expect(empty.body == .pushEndpointStatus(WirePushEndpointStatus()))
                for good in ["https://push.example.org/x", "https://8.8.8.8/x", "https://[2606:4700::1111]/x"] {
                    let reply = try await register(good)
                    guard case .pushEndpointStatus(let status) = reply.body else {
                        Issue.record("expected a status for \(good), got \(reply)")
                        continue
                    }
                    #expect(status.registered && status.provider == .webPush)
                }
            }
        }
    }

    @Test func registrationChecksFieldsInOrderAndProviders() async throws {
        try await RelayHarness.run(configure: allowPrivatePush) { harness in
            let bob = TestIdentity("bob")
            let keys = WebPush.SubscriberKeys.generate()
            @Sendable func webPush(_ endpoint: String, p256dh: Data? = nil, auth: Data? = nil) -> WireFrame.OneOf_Body {
                var request = WireRegisterPushEndpoint()
                request.provider = .webPush
                request.endpoint = endpoint
                request.p256Dh = p256dh ?? keys.publicKey
                request.authSecret = auth ?? keys.authSecret.unsafeData
                return .registerPushEndpoint(request)
            }
            try await harness.connect { connection in
                // Before authentication: NOT_AUTHENTICATED.
                #expect(try await connection.request(webPush("https://push.example.org/a")).errorCode == .notAuthenticated)
                let (id, _) = try await connection.register(bob)
                try await connection.authenticate(bob, deviceID: id)
                func refusal(_ body: WireFrame.OneOf_Body) async throws -> (WireErrorCode?, String) {
                    let reply = try await connection.request(body)
                    if case .error(let error) = reply.body { return (error.code, error.message) }
                    return (nil, "")
                }
                var none = WireRegisterPushEndpoint()
                none.endpoint = "https://push.example.org/a"
                #expect(try await refusal(.registerPushEndpoint(none)).0 == .invalidArgument)
                for bad in ["not a url", "ftp://push.example.org/a", "https://", "/relative", "http://push.example.org/a", "http://128.0.0.1/a",
                    "https://push.example.org:99999/a", "https://push.example.org:0/a", "https://user:pw@push.example.org/a",
                    "https://push.example.org/" + String(repeating: "a", count: 2_048)]
                {
                    let (code, message) = try await refusal(webPush(bad))
                    #expect(code == .invalidArgument, "\(bad)")
                    #expect(message.contains("endpoint"))
                }
                // Order: a bad endpoint is named before bad keys.
                #expect(try await refusal(webPush("http://example.org/", p256dh: Data(count: 3))).1.contains("endpoint"))
                var offCurve = Data([0x04]) + Data(repeating: 0x01, count: 64)
                offCurve[64] = 0x07
                #expect(try await refusal(webPush("https://push.example.org/a", p256dh: offCurve)).1.contains("p256dh"))
                #expect(try await refusal(webPush("https://push.example.org/a", p256dh: keys.publicKey.dropLast())).1.contains("p256dh"))
                #expect(try await refusal(webPush("https://push.example.org/a", auth: Data(count: 15))).1.contains("auth_secret"))
                // APNs: a token's form is checked, then keys must be empty, then the relay has no credentials.
                var apns = WireRegisterPushEndpoint()
                apns.provider = .apns
                apns.endpoint = "zz"
                #expect(try await refusal(.registerPushEndpoint(apns)).1.contains("endpoint"))
                apns.endpoint = String(repeating: "AB", count: 32)
                apns.p256Dh = keys.publicKey
                #expect(try await refusal(.registerPushEndpoint(apns)).1.contains("p256dh"))
                apns.p256Dh = Data()
                #expect(try await refusal(.registerPushEndpoint(apns)).0 == .pushProviderUnavailable)
                var fcm = WireRegisterPushEndpoint()
                fcm.provider = .fcm
                fcm.endpoint = "token:with-\u{7F}-delete"
                #expect(try await refusal(.registerPushEndpoint(fcm)).0 == .invalidArgument)
                fcm.endpoint = "fcm-registration-token"
                #expect(try await refusal(.registerPushEndpoint(fcm)).0 == .pushProviderUnavailable)
                // Nothing refused was stored.
                let empty = try await connection.request(.fetchPushEndpoint(WireFetchPushEndpoint()))
                #expect(empty.body == .pushEndpointStatus(WirePushEndpointStatus()))
                // Loopback http and https are accepted; the status reads back.
                for good in ["http://127.0.0.1:9/p", "http://localhost/p", "http://[::1]:8080/p", "https://push.example.org/a"] {
                    let reply = try await connection.request(webPush(good))
                    guard case .pushEndpointStatus(let status) = reply.body else {
                        Issue.record("expected a status for \(good), got \(reply)")
                        continue
                    }
                    #expect(status.registered && status.provider == .webPush && status.registeredAtMs == harness.clock.nowMs())
                }
                let removed = try await connection.request(.removePushEndpoint(WireRemovePushEndpoint()))
                #expect(removed.body == .pushEndpointStatus(WirePushEndpointStatus()))
                let fetched = try await connection.request(.fetchPushEndpoint(WireFetchPushEndpoint()))
                #expect(fetched.body == .pushEndpointStatus(WirePushEndpointStatus()))
                // Removing nothing is no error.
                #expect(try await connection.request(.removePushEndpoint(WireRemovePushEndpoint())).errorCode == nil)
            }
        }
    }

    // MARK: Failures (push.md 7)

    @Test func goneEndpointIsDroppedAndShownDropped() async throws {
        try await PushReceiver.run { receiver in
            receiver.script([410])
            try await RelayHarness.run(configure: allowPrivatePush) { harness in
                let world = try await PushWorld.make(harness, receiver: receiver)
                try await world.send([1], urgency: .urgent)
                try await world.idle()
                #expect(receiver.count == 1)
                #expect(world.monitor.dropped == 1 && world.monitor.sent == 0 && world.monitor.failed == 0)
                let status = try await world.bobStatus()
                #expect(!status.registered)
                #expect(status.provider == .webPush)
                #expect(status.droppedAtMs == harness.clock.nowMs())
                #expect(status.lastFailure.contains("410"))
                #expect(!status.lastFailure.contains("127.0.0.1"))
                // A dropped endpoint is never used again.
                try await world.send([2], urgency: .ring)
                try await world.idle()
                #expect(receiver.count == 1)
                let exposition = await harness.app.relay.metrics.exposition()
                #expect(exposition.contains(#"flitz_relay_push_endpoints_dropped_total{provider="webpush"} 1"#))
            }
        }
    }

    @Test func tooManyRequestsIsRetriedWithBackoffThenAccepted() async throws {
        try await PushReceiver.run { receiver in
            receiver.script([503, 429, 201], retryAfter: [1: "5"])
            try await RelayHarness.run(configure: allowPrivatePush) { harness in
                let waits = Mutex<[Duration]>([])
                harness.app.relay.push.sleeper = { duration in waits.withLock { $0.append(duration) } }
                let world = try await PushWorld.make(harness, receiver: receiver)
                try await world.send([1], urgency: .urgent)
                try await world.idle()
                #expect(receiver.count == 3)
                // max(Retry-After, base × 2^(n-1)): 1 s after the 503, 5 s (Retry-After) after the 429.
                #expect(waits.withLock { $0 } == [.seconds(1), .seconds(5)])
                #expect(world.monitor.sent == 1 && world.monitor.failed == 0 && world.monitor.retries == 2)
                let status = try await world.bobStatus()
                #expect(status.registered && status.wakesSent == 1 && status.lastFailure.isEmpty)
                #expect(status.lastWakeAtMs == harness.clock.nowMs())
            }
        }
    }

    @Test func everyAttemptFailingGivesUpAndKeepsTheWindow() async throws {
        try await PushReceiver.run { receiver in
            receiver.script([500, 500, 500, 500])
            try await RelayHarness.run(configure: allowPrivatePush) { harness in
                let waits = Mutex<[Duration]>([])
                harness.app.relay.push.sleeper = { duration in waits.withLock { $0.append(duration) } }
                let world = try await PushWorld.make(harness, receiver: receiver)
                try await world.send([1], urgency: .urgent)
                try await world.idle()
                #expect(receiver.count == 4)
                #expect(waits.withLock { $0 } == [.seconds(1), .seconds(2), .seconds(4)])
                #expect(world.monitor.failed == 1)
                // The window stays open (push.md 7): the next message inside it is coalesced, not another try.
                try await world.send([2], urgency: .urgent)
                try await world.idle()
                #expect(receiver.count == 4)
                #expect(world.monitor.coalesced == 1)
                // After the window the next message wakes (the receiver now accepts).
                harness.clock.advance(seconds: 60)
                let status = try await world.bobStatus()
                #expect(status.registered && status.wakesSent == 0 && status.lastFailure.contains("500"))
                try await world.send([3], urgency: .urgent)
                try await receiver.waitFor(count: 5)
                try await world.idle()
                #expect(world.monitor.sent == 1 && world.monitor.coalesced == 1)
            }
        }
    }

    @Test func envelopeThatExpiresBeforeTheNextAttemptWakesNobody() async throws {
        try await PushReceiver.run { receiver in
            receiver.script([503])
            try await RelayHarness.run(configure: allowPrivatePush) { harness in
                // The backoff wait moves the relay's clock past the envelope's expiry (ttl 30 s) instead of waiting.
                harness.app.relay.push.sleeper = { _ in harness.clock.advance(seconds: 31) }
                let world = try await PushWorld.make(harness, receiver: receiver)
                try await world.send([1], urgency: .urgent, ttl: 30)
                try await world.idle()
                #expect(receiver.count == 1)
                #expect(world.monitor.skipped == 1 && world.monitor.sent == 0)
                // The skipped wake-up closed its window: a fresh envelope wakes again.
                try await world.send([2], urgency: .urgent)
                try await receiver.waitFor(count: 2)
                try await world.idle()
                #expect(world.monitor.sent == 1)
            }
        }
    }

    @Test func deviceThatConnectsBeforeTheNextAttemptIsNotWoken() async throws {
        try await PushReceiver.run { receiver in
            receiver.script([503])
            try await RelayHarness.run(configure: allowPrivatePush) { harness in
                // The backoff wait holds the wake-up until bob is connected.
                let gate = Gate()
                defer { gate.open() }  // never leave the dispatcher waiting, so the relay can shut down on a failure
                harness.app.relay.push.sleeper = { _ in await gate.arriveAndWait() }
                let world = try await PushWorld.make(harness, receiver: receiver)
                try await world.send([1], urgency: .ring)
                try await poll { gate.arrived == 1 }
                try await harness.connect { bob in
                    let delivered = try await bob.authenticate(world.bob, deviceID: world.bobDeviceID)
                    #expect(delivered.flatMap(\.envelopes).count == 1)
                    gate.open()
                    try await world.idle()
                    #expect(receiver.count == 1)
                    #expect(world.monitor.skipped == 1 && world.monitor.sent == 0 && world.monitor.failed == 0)
                }
                let exposition = await harness.app.relay.metrics.exposition()
                #expect(exposition.contains(#"flitz_relay_push_skipped_total{provider="webpush"} 1"#))
            }
        }
    }

    // MARK: The VAPID key (push.md 9)

    @Test func vapidKeyIsMadeOnceKeptInTheStoreOrGiven() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-vapid-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("relay.sqlite").path
        let clock = TestClock()
        let first = try await loadVAPIDKey(PushConfiguration(), store: try SQLiteRelayStore(path: path, makeID: { SystemRandom().bytes(16) }), clock: clock)
        // A restart (a new store on the same file) keeps the key.
        let again = try await loadVAPIDKey(PushConfiguration(), store: try SQLiteRelayStore(path: path, makeID: { SystemRandom().bytes(16) }), clock: clock)
        #expect(first == again)
        #expect(first.hasPrefix("-----BEGIN PRIVATE KEY-----"))
        _ = try VAPIDKey(pem: first)
        // --vapid-key: PEM text or a file, used as given; anything else refused without echoing it.
        let given = VAPIDKey.generate().pemRepresentation
        var configuration = PushConfiguration()
        configuration.vapidKey = given
        let store = try SQLiteRelayStore(path: path, makeID: { SystemRandom().bytes(16) })
        #expect(try await loadVAPIDKey(configuration, store: store, clock: clock) == given)
        let file = directory.appendingPathComponent("vapid.pem")
        try Data(given.utf8).write(to: file)
        configuration.vapidKey = file.path
        #expect(try await loadVAPIDKey(configuration, store: store, clock: clock) == given)
        configuration.vapidKey = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----"
        await #expect(throws: ConfigurationError.self) { try await loadVAPIDKey(configuration, store: store, clock: clock) }
        configuration.vapidKey = directory.appendingPathComponent("missing.pem").path
        await #expect(throws: ConfigurationError.self) { try await loadVAPIDKey(configuration, store: store, clock: clock) }
        // A value that is neither PEM nor a file (say a key pasted without its header) is never echoed.
        let secretLooking = "MHcCAQEEIBSECRETSECRETSECRETSECRETSECRETSECRETSECRoAoGCCqGSM49"
        configuration.vapidKey = secretLooking
        let error = await #expect(throws: ConfigurationError.self) { try await loadVAPIDKey(configuration, store: store, clock: clock) }
        #expect(error?.description == "push.vapidKey (--vapid-key) is neither PEM text nor a readable file")
        #expect(error.map { !$0.description.contains("SECRET") } == true)
    }

    // MARK: Endpoints belong to a device

    @Test func endpointGoesWithTheRemovedDevice() async throws {
        try await RelayHarness.run(configure: allowPrivatePush) { harness in
            let carol = TestAccount("carol")
            try await MultiDeviceRelayTests.setUp(harness, carol, extra: 1)
            let keys = WebPush.SubscriberKeys.generate()
            for index in [0, 1] {
                try await harness.connect { (connection: TestConnection) async throws -> Void in
                    try await connection.authenticate(carol, index)
                    var request = WireRegisterPushEndpoint()
                    request.provider = .webPush
                    request.endpoint = "https://push.example.org/carol-\(index)"
                    request.p256Dh = keys.publicKey
                    request.authSecret = keys.authSecret.unsafeData
                    guard case .pushEndpointStatus(let status) = try await connection.request(.registerPushEndpoint(request)).body, status.registered
                    else { throw Failure("registration failed") }
                }
            }
            try await harness.connect { (primary: TestConnection) async throws -> Void in
                try await primary.authenticate(carol, 0)
                #expect(try await primary.request(carol.publish(carol.list(version: 2, [0]), removing: [carol.ids[1]!])).isOk)
            }
            #expect(try await harness.app.relay.store.pushEndpoint(device: carol.address(1)) == nil)
            #expect(try await harness.app.relay.store.pushEndpoint(device: carol.address(0))?.endpoint == "https://push.example.org/carol-0")
        }
    }

    @Test func endpointGoesWithTheDeletedAccount() async throws {
        try await PushReceiver.run { receiver in
            try await RelayHarness.run(configure: allowPrivatePush) { harness in
                let world = try await PushWorld.make(harness, receiver: receiver)
                let bobDevice = DeviceAddress(handle: "bob", deviceID: world.bobDeviceID)
                #expect(try await harness.app.relay.store.pushEndpoint(device: bobDevice)?.isLive == true)
                try await harness.connect { bob in
                    try await bob.authenticate(world.bob, deviceID: world.bobDeviceID)
                    var delete = WireDeleteAccount()
                    delete.signature = world.bob.account.signature(for: SignedPayload.deleteAccount(
                        accountIdentityKey: world.bob.account.publicKey.rawRepresentation, nonce: bob.nonce, handle: "bob"))
                    #expect(try await bob.request(.deleteAccount(delete)).body == .ok(WireOk()))
                }
                #expect(try await harness.app.relay.store.pushEndpoint(device: bobDevice) == nil)
            }
        }
    }
}

// MARK: - Helpers

/// Alice (connected when she sends) and bob (offline, with a Web Push endpoint at the test's receiver).
struct PushWorld: Sendable {
    let harness: RelayHarness
    let alice = TestIdentity("alice")
    let bob = TestIdentity("bob")
    let bobKeys = WebPush.SubscriberKeys.generate()
    var bobDeviceID: UInt32 = 1

    var monitor: PushCounts { harness.app.relay.push.monitor.snapshot }

    /// Registers alice and bob, registers bob's endpoint at `receiver`, and waits until bob is offline.
    static func make(_ harness: RelayHarness, receiver: PushReceiver) async throws -> PushWorld {
        var world = PushWorld(harness: harness)
        let alice = world.alice, bob = world.bob, keys = world.bobKeys
        try await harness.connect { connection in _ = try await connection.register(alice) }
        world.bobDeviceID = try await harness.connect { connection in
            let (id, _) = try await connection.register(bob)
            try await connection.authenticate(bob, deviceID: id)
            var request = WireRegisterPushEndpoint()
            request.provider = .webPush
            request.endpoint = receiver.url(path: "bob-1")
            request.p256Dh = keys.publicKey
            request.authSecret = keys.authSecret.unsafeData
            let reply = try await connection.request(.registerPushEndpoint(request))
            guard case .pushEndpointStatus(let status) = reply.body, status.registered else {
                Issue.record("registration failed: \(reply)")
                throw TestTimeout()
            }
            return id
        }
        try await world.waitUntilBobOffline()
        return world
    }

    /// Alice submits one envelope per id to bob, each in its own Submit, with `urgency`.
    func send(_ ids: [UInt8], urgency: WireUrgency, ttl: UInt32 = 0) async throws {
        let alice = self.alice, bobDeviceID = self.bobDeviceID
        try await harness.connect { connection in
            try await connection.authenticate(alice)
            for id in ids {
                var envelope = outgoing(id, to: "bob", device: bobDeviceID, ttl: ttl)
                envelope.urgency = urgency
                let outcomes = try await connection.submit([envelope])
                #expect(outcomes.count == 1 && !outcomes[0].hasError)
            }
        }
    }

    /// Waits until the dispatcher has handled everything handed to it (each Submit hands over before its reply).
    func idle() async throws {
        let monitor = harness.app.relay.push.monitor
        try await within { await monitor.wait { $0.pending == 0 } }
    }

    /// Waits until the relay has released bob's last connection.
    func waitUntilBobOffline() async throws {
        let relay = harness.app.relay, id = bobDeviceID
        try await poll { !relay.isConnected(handle: "bob", deviceID: id) }
    }

    /// Bob's `PushEndpointStatus`, read over a connection of his.
    func bobStatus() async throws -> WirePushEndpointStatus {
        let bob = self.bob, id = bobDeviceID
        let status = try await harness.connect { connection in
            try await connection.authenticate(bob, deviceID: id)
            return try await connection.request(.fetchPushEndpoint(WireFetchPushEndpoint()))
        }
        guard case .pushEndpointStatus(let value) = status.body else {
            Issue.record("expected PushEndpointStatus, got \(status)")
            throw TestTimeout()
        }
        try await waitUntilBobOffline()
        return value
    }
}

/// Runs `body`, failing with `TestTimeout` after `seconds` (a guard against a hang, not a wait).
func within(_ seconds: Double = 60, _ body: @escaping @Sendable () async throws -> Void) async throws {
    try await withThrowingTaskGroup(of: Bool.self) { group in
        group.addTask {
            try await body()
            return true
        }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return false
        }
        let finished = try await group.next() ?? false
        group.cancelAll()
        if !finished { throw TestTimeout() }
    }
}

/// Checks `condition` every 2 ms until it holds; `TestTimeout` after `seconds`.
func poll(_ seconds: Double = 60, _ condition: @Sendable () -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while !condition() {
        guard ContinuousClock.now < deadline else { throw TestTimeout() }
        try await Task.sleep(for: .milliseconds(2))
    }
}

/// Holds callers of `arriveAndWait` until `open`; counts them.
final class Gate: Sendable {
    private let state = Mutex<(opened: Bool, arrived: Int, waiters: [CheckedContinuation<Void, Never>])>((false, 0, []))

    var arrived: Int { state.withLock { $0.arrived } }

    func arriveAndWait() async {
        await withCheckedContinuation { continuation in
            let go = state.withLock { state -> Bool in
                state.arrived += 1
                if state.opened { return true }
                state.waiters.append(continuation)
                return false
            }
            if go { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { state in
            state.opened = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// A local stand-in for a Web Push service (RFC 8030): accepts `POST /push/{id}` on 127.0.0.1 over plain http,
/// records each request's headers and body, and answers with the scripted statuses (then 201).
final class PushReceiver: Sendable {
    struct Request: Sendable {
        let path: String
        /// Header values by lowercase name.
        let headers: [String: String]
        let body: Data
    }

    private let state = Mutex<(requests: [Request], script: [Int], retryAfter: [Int: String], port: Int?)>(([], [], [:], nil))

    /// Requests received so far, in order.
    var requests: [Request] { state.withLock { $0.requests } }
    var count: Int { requests.count }

    /// Answers the next requests with `statuses` in order; `retryAfter` maps a script index to a `Retry-After` value.
    func script(_ statuses: [Int], retryAfter: [Int: String] = [:]) {
        state.withLock {
            $0.script = statuses
            $0.retryAfter = retryAfter
        }
    }

    func url(path: String) -> String {
        "http://127.0.0.1:\(state.withLock { $0.port ?? 0 })/push/\(path)"
    }

    /// Waits until `count` requests arrived; `TestTimeout` after 60 s.
    func waitFor(count: Int) async throws {
        try await poll(60) { self.count >= count }
    }

    private func received(_ request: Request) -> (status: Int, retryAfter: String?) {
        state.withLock { state in
            let index = state.requests.count
            state.requests.append(request)
            let status = index < state.script.count ? state.script[index] : 201
            return (status, state.retryAfter[index])
        }
    }

    /// Starts a receiver, runs `body`, stops it.
    static func run(_ body: @escaping @Sendable (PushReceiver) async throws -> Void) async throws {
        let receiver = PushReceiver()
        let router = Router()
        router.post("/push/:id") { request, _ -> Response in
            let bytes = try await request.body.collect(upTo: 1 << 16)
            var headers: [String: String] = [:]
            for field in request.headers { headers[field.name.canonicalName] = field.value }
            let (status, retryAfter) = receiver.received(Request(path: request.uri.path, headers: headers, body: Data(bytes.readableBytesView)))
            var fields = HTTPFields()
            if let retryAfter { fields[.retryAfter] = retryAfter }
            return Response(status: .init(code: status), headers: fields)
        }
        let ready = Mutex<Bool>(false)
        var logger = Logger(label: "push-receiver")
        logger.logLevel = .warning
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0), serverName: "push-receiver"),
            onServerRunning: { channel in
                receiver.state.withLock { $0.port = channel.localAddress?.port }
                ready.withLock { $0 = true }
            }, logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService(gracefulShutdownSignals: []) }
            try await poll { ready.withLock { $0 } }
            do {
                try await body(receiver)
            } catch {
                group.cancelAll()
                throw error
            }
            group.cancelAll()
        }
    }
}

/// The push tests' receivers listen on 127.0.0.1 over plain http, which only a relay with
/// `push.allowPrivateEndpoints` accepts (`push.md` 3.1).
func allowPrivatePush(_ configuration: inout RelayConfiguration) {
    configuration.push.allowPrivateEndpoints = true
}
