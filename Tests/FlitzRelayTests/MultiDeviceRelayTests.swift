import FlitzCrypto
import FlitzRelay
import FlitzStore
import FlitzWire
import Foundation
import Testing

/// One account with several devices: the account identity key and one device identity key per device
/// (`protocol/devices.md`). Device keys are added with `addDevice()`; index 0 is the first (primary) device.
final class TestAccount: @unchecked Sendable {
    // Used from one test task at a time.
    let handle: String
    let account = Ed25519PrivateKey()
    private(set) var devices: [Ed25519PrivateKey] = []
    /// Device ids the relay assigned, by device index.
    var ids: [Int: UInt32] = [:]

    init(_ handle: String) {
        self.handle = handle
        devices.append(Ed25519PrivateKey())
    }

    /// Adds a device key and returns its index.
    @discardableResult
    func addDevice() -> Int {
        devices.append(Ed25519PrivateKey())
        return devices.count - 1
    }

    func deviceKeys(_ index: Int, certifiedBy certifier: Ed25519PrivateKey? = nil, oneTimePreKeys: Int = 3) -> WireDeviceKeys {
        let device = devices[index]
        let certifier = certifier ?? account
        var keys = WireDeviceKeys()
        keys.deviceIdentityKey = device.publicKey.rawRepresentation
        keys.deviceCertificateSignature = certifier.signature(for: SignedPayload.deviceCertificate(
            accountIdentityKey: certifier.publicKey.rawRepresentation, deviceIdentityKey: device.publicKey.rawRepresentation))
        var signed = WireSignedPreKey()
        signed.id = 1
        signed.publicKey = SystemRandom().bytes(32)
        signed.signature = device.signature(for: signed.publicKey)
        keys.signedPrekey = signed
        var kem = WireKEMPreKey()
        kem.id = 1
        kem.lastResort = true
        kem.publicKey = SystemRandom().bytes(WireConstants.kemPublicKeyLength)
        kem.signature = device.signature(for: SignedPayload.kemPreKey(id: 1, lastResort: true, publicKey: kem.publicKey))
        keys.lastResortKemPrekey = kem
        keys.oneTimePrekeys = (0..<oneTimePreKeys).map { index in
            var key = WireOneTimePreKey()
            key.id = UInt32(index + 1)
            key.publicKey = SystemRandom().bytes(32)
            return key
        }
        return keys
    }

    func register(nonce: Data) -> WireFrame.OneOf_Body {
        var register = WireRegister()
        register.handle = handle
        register.accountIdentityKey = account.publicKey.rawRepresentation
        register.device = deviceKeys(0)
        register.challengeSignature = devices[0].signature(for: SignedPayload.authentication(nonce: nonce, handle: handle))
        return .register(register)
    }

    func registerDevice(_ index: Int, nonce: Data, certifiedBy certifier: Ed25519PrivateKey? = nil) -> WireFrame.OneOf_Body {
        var request = WireRegisterDevice()
        request.handle = handle
        request.device = deviceKeys(index, certifiedBy: certifier)
        request.challengeSignature = devices[index].signature(for: SignedPayload.authentication(nonce: nonce, handle: handle))
        return .registerDevice(request)
    }

    func authenticate(_ index: Int, nonce: Data, callSignals: Bool = false) -> WireFrame.OneOf_Body {
        var request = WireAuthenticate()
        request.handle = handle
        request.callSignals = callSignals
        request.deviceID = ids[index] ?? 0
        request.signature = devices[index].signature(for: SignedPayload.authentication(nonce: nonce, handle: handle))
        return .authenticate(request)
    }

    /// A list of `indices` signed by `signer` (the account key by default).
    func list(version: UInt64, _ indices: [Int], signer: Ed25519PrivateKey? = nil) -> WireSignedDeviceList {
        let entries = indices.map { DeviceListPayload.Entry(deviceID: ids[$0]!, deviceIdentityKey: devices[$0].publicKey.rawRepresentation) }
            .sorted { $0.deviceID < $1.deviceID }
        let payload = DeviceListPayload(
            accountIdentityKey: account.publicKey.rawRepresentation, version: version, issuedAtMs: 1_700_000_000_000, entries: entries
        ).encoded()
        var signed = WireSignedDeviceList()
        signed.payload = payload
        signed.signature = (signer ?? account).signature(for: payload)
        return signed
    }

    func publish(_ list: WireSignedDeviceList, removing: [UInt32] = []) -> WireFrame.OneOf_Body {
        var request = WirePublishDeviceList()
        request.deviceList = list
        request.removeDeviceIds = removing
        return .publishDeviceList(request)
    }

    func address(_ index: Int) -> DeviceAddress { DeviceAddress(handle: handle, deviceID: ids[index]!) }
}

extension TestConnection {
    /// Registers the account's first device (`Register`).
    func register(_ account: TestAccount) async throws {
        let reply = try await request(account.register(nonce: nonce))
        guard case .registerResult(let result) = reply.body else { throw Failure("expected RegisterResult, got \(reply)") }
        account.ids[0] = result.deviceID
    }

    /// Registers device `index` of the account (`RegisterDevice`).
    func registerDevice(_ account: TestAccount, _ index: Int) async throws {
        let reply = try await request(account.registerDevice(index, nonce: nonce))
        guard case .registerResult(let result) = reply.body else { throw Failure("expected RegisterResult, got \(reply)") }
        #expect(result.recoveryCode.isEmpty)
        account.ids[index] = result.deviceID
    }

    /// Authenticates device `index` and reads everything up to QueueDrained.
    @discardableResult
    func authenticate(_ account: TestAccount, _ index: Int) async throws -> (WireAuthenticateResult, [WireDeliver]) {
        let reply = try await request(account.authenticate(index, nonce: nonce))
        guard case .authenticateResult(let result) = reply.body else { throw Failure("expected AuthenticateResult, got \(reply)") }
        var delivered: [WireDeliver] = []
        while true {
            let frame = try await next()
            switch frame.body {
            case .deliver(let deliver): delivered.append(deliver)
            case .queueDrained: return (result, delivered)
            default: throw Failure("unexpected \(frame)")
            }
        }
    }

    func submit(_ envelopes: [WireOutgoingEnvelope], selectedDevices: Bool) async throws -> WireFrame {
        var submit = WireSubmit()
        submit.envelopes = envelopes
        submit.selectedDevices = selectedDevices
        return try await request(.submit(submit))
    }

    func acknowledge(envelopes: [Data] = [], receipts: [Data] = []) async throws -> WireFrame {
        var ack = WireAcknowledge()
        ack.envelopeIds = envelopes
        ack.receiptIds = receipts
        return try await request(.acknowledge(ack))
    }
}

struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func grouped(_ id: UInt8, to handle: String, device: UInt32, group: UInt32, ttl: UInt32 = 0) -> WireOutgoingEnvelope {
    var envelope = outgoing(id, to: handle, device: device, ttl: ttl)
    envelope.group = group
    return envelope
}

func envelopeID(_ id: UInt8) -> Data { Data(repeating: id, count: 16) }

extension WireFrame {
    var isOk: Bool { if case .ok = body { true } else { false } }
    var error: WireError? { if case .error(let error) = body { error } else { nil } }
}

/// Multi-device accounts at the relay over real WebSockets and a real SQLite file (`protocol/relay.md`,
/// "Devices of an account", "Submit", "Receipts across devices", "Acknowledge").
@Suite struct MultiDeviceRelayTests {
    /// Registers `account`'s first device and `extra` more with RegisterDevice; publishes a list of all
    /// of them when `publish` is set.
    static func setUp(_ relay: RelayHarness, _ account: TestAccount, extra: Int = 0, publish: Bool = true) async throws {
        try await relay.connect { (connection: TestConnection) async throws -> Void in
            try await connection.register(account)
            for _ in 0..<extra {
                try await connection.registerDevice(account, account.addDevice())
            }
        }
        if publish {
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                try await connection.authenticate(account, 0)
                let reply = try await connection.request(account.publish(account.list(version: 1, Array(0...extra))))
                #expect(reply.isOk, "\(reply)")
            }
        }
    }

    @Test func registerDeviceAssignsTheNextIDOnceAndChecksTheCertificate() async throws {
        // The first connection stays unauthenticated through 17 registrations (ML-KEM keys, signatures): under a
        // loaded suite that took over 30 s, the default authentication timeout, which this test is not about.
        try await RelayHarness.run(authenticationTimeout: .seconds(600)) { relay in
            let alice = TestAccount("alice")
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                try await connection.register(alice)
                let second = alice.addDevice()
                try await connection.registerDevice(alice, second)
                #expect(alice.ids[second] == 2)
                // An identical retry (its answer lost) gets the same id.
                let retry = try await connection.request(alice.registerDevice(second, nonce: connection.nonce))
                guard case .registerResult(let result) = retry.body else { throw Failure("\(retry)") }
                #expect(result.deviceID == 2)
                // A certificate under another account key, an unknown handle, a bad challenge signature.
                let third = alice.addDevice()
                #expect(try await connection.request(alice.registerDevice(third, nonce: connection.nonce, certifiedBy: Ed25519PrivateKey())).errorCode
                    == .invalidSignature)
                #expect(try await connection.request(TestAccount("nobody").registerDevice(0, nonce: connection.nonce)).errorCode == .unknownRecipient)
                #expect(try await connection.request(alice.registerDevice(third, nonce: Data(count: 32))).errorCode == .invalidSignature)
                try await connection.registerDevice(alice, third)
                #expect(alice.ids[third] == 3)
                // Up to 16 devices; the 17th is refused.
                for _ in 4...16 { try await connection.registerDevice(alice, alice.addDevice()) }
                #expect(alice.ids[15] == 16)
                #expect(try await connection.request(alice.registerDevice(alice.addDevice(), nonce: connection.nonce)).errorCode == .tooManyDevices)
            }
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                let (result, _) = try await connection.authenticate(alice, 1)
                #expect(result.seenReceiptsOff == false)
                // RegisterDevice only before authentication.
                #expect(try await connection.request(alice.registerDevice(2, nonce: connection.nonce)).errorCode == .alreadyAuthenticated)
            }
        }
    }

    @Test func publishedDeviceListIsCheckedStoredAndServedWithBundles() async throws {
        try await RelayHarness.run { relay in
            let alice = TestAccount("alice")
            try await Self.setUp(relay, alice, extra: 2, publish: false)
            let bob = TestIdentity("bob")
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                try await connection.authenticate(alice, 0)
                // Not signed by the account key; naming another key; malformed; a device under the wrong key.
                #expect(try await connection.request(alice.publish(alice.list(version: 1, [0, 1], signer: Ed25519PrivateKey()))).errorCode
                    == .invalidSignature)
                var malformed = alice.list(version: 1, [0])
                malformed.payload.removeLast()
                malformed.signature = alice.account.signature(for: malformed.payload)
                let rejected = try await connection.request(alice.publish(malformed))
                #expect(rejected.errorCode == .deviceListRejected)
                #expect(rejected.error?.message.contains("69 + 36n") == true)
                // The publishing device (index 0) must be listed.
                #expect(try await connection.request(alice.publish(alice.list(version: 1, [1, 2]))).errorCode == .deviceListRejected)
                // Removing a listed device, or one that is not current.
                #expect(try await connection.request(alice.publish(alice.list(version: 1, [0, 1]), removing: [1])).errorCode == .deviceListRejected)
                #expect(try await connection.request(alice.publish(alice.list(version: 1, [0, 1]), removing: [9])).errorCode == .deviceListRejected)
                // A valid list of devices 1 and 2 (not 3).
                #expect(try await connection.request(alice.publish(alice.list(version: 5, [0, 1]))).isOk)
                // Not newer.
                #expect(try await connection.request(alice.publish(alice.list(version: 5, [0, 1, 2]))).errorCode == .deviceListRejected)

                var fetch = WireFetchDeviceList()
                fetch.handle = "alice"
                guard case .deviceListResult(let result) = try await connection.request(.fetchDeviceList(fetch)).body else { throw Failure("no list") }
                #expect(result.accountIdentityKey == alice.account.publicKey.rawRepresentation)
                #expect(result.deviceList == alice.list(version: 5, [0, 1]))
                #expect(result.devices.map(\.deviceID) == [1, 2, 3])
                #expect(result.devices.allSatisfy { $0.registeredAtMs > 0 && $0.deviceCertificateSignature.count == 64 })
                fetch.handle = "nobody"
                #expect(try await connection.request(.fetchDeviceList(fetch)).errorCode == .unknownRecipient)
            }
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                _ = try await connection.register(bob)
                try await connection.authenticate(bob)
                var fetch = WireFetchPreKeyBundle()
                fetch.handle = "alice"
                guard case .prekeyBundle(let bundle) = try await connection.request(.fetchPrekeyBundle(fetch)).body else { throw Failure("no bundle") }
                // Only listed devices, with the list.
                #expect(bundle.devices.map(\.deviceID) == [1, 2])
                #expect(bundle.deviceList == alice.list(version: 5, [0, 1]))
                #expect(bundle.devices.map(\.oneTimePrekey.id) == [1, 1])
                // Restricted to chosen devices; an unlisted id is left out.
                fetch.deviceIds = [2, 3]
                guard case .prekeyBundle(let chosen) = try await connection.request(.fetchPrekeyBundle(fetch)).body else { throw Failure("no bundle") }
                #expect(chosen.devices.map(\.deviceID) == [2])
                #expect(chosen.devices.map(\.oneTimePrekey.id) == [2])
            }
            // Each device served cost one one-time prekey: device 1 once, device 2 twice, device 3 never.
            let store = relay.app.relay.store
            #expect(try await store.oneTimePreKeyCount(device: alice.address(0)) == 2)
            #expect(try await store.oneTimePreKeyCount(device: alice.address(1)) == 1)
            #expect(try await store.oneTimePreKeyCount(device: alice.address(2)) == 3)
        }
    }

    @Test func removingADeviceExpiresItsQueueAndClosesItsConnection() async throws {
        try await RelayHarness.run { relay in
            let alice = TestAccount("alice")
            try await Self.setUp(relay, alice, extra: 2)
            let bob = TestIdentity("bob")
            try await relay.connect { (bobConnection: TestConnection) async throws -> Void in
                _ = try await bobConnection.register(bob)
                try await bobConnection.authenticate(bob)
                // Bob writes to alice's three devices (one group).
                let reply = try await bobConnection.submit(
                    [1, 2, 3].map { grouped(UInt8($0), to: "alice", device: UInt32($0), group: 1) }, selectedDevices: false)
                guard case .submitResult(let result) = reply.body else { throw Failure("\(reply)") }
                #expect(result.outcomes.allSatisfy { !$0.hasError })
                try await relay.connect { (third: TestConnection) async throws -> Void in
                    try await third.authenticate(alice, 2)
                    try await relay.connect { (primary: TestConnection) async throws -> Void in
                        try await primary.authenticate(alice, 0)
                        #expect(try await primary.request(alice.publish(alice.list(version: 2, [0, 1]), removing: [3])).isOk)
                    }
                    // The removed device's live connection is closed.
                    #expect(try await third.isClosedByRelay())
                }
                // Bob is told its envelope to the removed device expired.
                let receipts = try await bobConnection.nextDeliver().receipts
                #expect(receipts.map(\.kind) == [.expired])
                #expect(receipts.first?.envelopeID == envelopeID(3))
                #expect(receipts.first?.recipientDeviceID == 3)
            }
            #expect(!relay.app.relay.isConnected(handle: "alice", deviceID: 3))
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                #expect(try await connection.request(alice.authenticate(2, nonce: connection.nonce)).errorCode == .authenticationFailed)
            }
            #expect(try await relay.app.relay.store.device(alice.address(2)) == nil)
            // Its certificate is still valid, but the removed key cannot register again.
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                #expect(try await connection.request(alice.registerDevice(2, nonce: connection.nonce)).errorCode == .invalidSignature)
            }
        }
    }

    @Test func submitMustCoverEveryCurrentDeviceOrStoresNothing() async throws {
        try await RelayHarness.run { relay in
            let alice = TestAccount("alice")
            let bob = TestAccount("bob")
            try await Self.setUp(relay, alice, extra: 1)
            try await Self.setUp(relay, bob, extra: 1)
            // A third device of bob's that is registered but not listed is not a current device for senders.
            try await relay.connect { (connection: TestConnection) async throws -> Void in try await connection.registerDevice(bob, bob.addDevice()) }
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                try await connection.authenticate(alice, 0)
                // Bob's device 2 and alice's own device 2 are missing; bob's 3 (unlisted) is stale.
                let refused = try await connection.submit(
                    [grouped(1, to: "bob", device: 1, group: 7), grouped(2, to: "bob", device: 3, group: 7)], selectedDevices: false)
                #expect(refused.errorCode == .mismatchedDevices)
                let mismatches = refused.error?.deviceMismatches ?? []
                #expect(mismatches.map(\.handle) == ["alice", "bob"])
                #expect(mismatches.map(\.missingDeviceIds) == [[2], [2]])
                #expect(mismatches.map(\.staleDeviceIds) == [[], [3]])
                // Group 0 is a group of one: one envelope cannot cover bob's two devices.
                let single = try await connection.submit([outgoing(3, to: "bob")], selectedDevices: false)
                #expect(single.errorCode == .mismatchedDevices)
                // Nothing was stored.
                #expect(try await relay.app.relay.store.pendingItems(for: bob.address(0), afterSequence: 0, nowMs: 0, limit: 10).isEmpty)
                // The full group with an unknown handle in it is refused whole (relay.md, "Submit"): alice's own
                // copy must not show a message bob's devices never got. Without it, the group is accepted.
                let full = [
                    grouped(4, to: "bob", device: 1, group: 1), grouped(5, to: "bob", device: 2, group: 1),
                    grouped(6, to: "alice", device: 2, group: 1),
                ]
                guard case .submitResult(let withUnknown) = try await connection.submit(
                    full + [grouped(7, to: "nobody", device: 1, group: 1)], selectedDevices: false).body
                else { throw Failure("refused") }
                #expect(withUnknown.outcomes.map(\.error.code) == [.unknownRecipient, .unknownRecipient, .unknownRecipient, .unknownRecipient])
                #expect(try await relay.app.relay.store.pendingItems(for: bob.address(0), afterSequence: 0, nowMs: 0, limit: 10).isEmpty)
                guard case .submitResult(let accepted) = try await connection.submit(full, selectedDevices: false).body else {
                    throw Failure("refused")
                }
                #expect(accepted.outcomes.map(\.error.code) == [.unspecified, .unspecified, .unspecified])
                // selected_devices: per-envelope outcomes, no coverage check; bob's registered but unlisted
                // device 3 is not current either (security review, issue 4).
                guard case .submitResult(let selected) = try await connection.submit(
                    [outgoing(8, to: "bob", device: 2), outgoing(9, to: "bob", device: 9), outgoing(10, to: "bob", device: 3)],
                    selectedDevices: true).body
                else { throw Failure("refused") }
                #expect(selected.outcomes.map(\.error.code) == [.unspecified, .staleDevice, .staleDevice])
                #expect(try await relay.app.relay.store.pendingItems(for: bob.address(2), afterSequence: 0, nowMs: 0, limit: 10).isEmpty)
            }
            // Bob removes device 2; the earlier group, resubmitted as it was, is not checked again.
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                try await connection.authenticate(bob, 0)
                #expect(try await connection.request(bob.publish(bob.list(version: 2, [0]), removing: [2])).isOk)
            }
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                try await connection.authenticate(alice, 0)
                let again = try await connection.submit(
                    [grouped(4, to: "bob", device: 1, group: 1), grouped(5, to: "bob", device: 2, group: 1),
                     grouped(6, to: "alice", device: 2, group: 1)], selectedDevices: false)
                guard case .submitResult(let result) = again.body else { throw Failure("\(again)") }
                #expect(result.outcomes.allSatisfy { !$0.hasError })
                // A new message to bob now covers bob's device 1 alone (and alice's device 2).
                let next = try await connection.submit(
                    [grouped(10, to: "bob", device: 1, group: 1), grouped(11, to: "alice", device: 2, group: 1)], selectedDevices: false)
                guard case .submitResult(let nextResult) = next.body else { throw Failure("\(next)") }
                #expect(nextResult.outcomes.allSatisfy { !$0.hasError })
            }
        }
    }

    @Test func receiptsAcrossDevicesFollowTheGroupRules() async throws {
        try await RelayHarness.run { relay in
            let alice = TestAccount("alice")
            let bob = TestAccount("bob")
            try await Self.setUp(relay, alice, extra: 1)
            try await Self.setUp(relay, bob, extra: 1)
            // Alice's device 1 sends one message: bob 1, bob 2 and her own device 2.
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                try await connection.authenticate(alice, 0)
                let reply = try await connection.submit(
                    [grouped(1, to: "bob", device: 1, group: 3), grouped(2, to: "bob", device: 2, group: 3),
                     grouped(3, to: "alice", device: 2, group: 3)], selectedDevices: false)
                guard case .submitResult(let result) = reply.body, result.outcomes.allSatisfy({ !$0.hasError }) else { throw Failure("\(reply)") }
            }
            let store = relay.app.relay.store
            func receipts(_ account: TestAccount, _ index: Int) async throws -> [StoredReceipt] {
                try await store.pendingItems(for: account.address(index), afterSequence: 0, nowMs: 0, limit: 100).compactMap {
                    if case .receipt(let receipt) = $0.content { receipt } else { nil }
                }
            }
            // Alice's own device 2 acknowledges its copy: no DELIVERED.
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                try await connection.authenticate(alice, 1)
                #expect(try await connection.acknowledge(envelopes: [envelopeID(3)]).isOk)
            }
            #expect(try await receipts(alice, 0).isEmpty)
            // Bob's device 2 acknowledges first: one DELIVERED to each of alice's devices, each about its own envelope.
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                try await connection.authenticate(bob, 1)
                #expect(try await connection.acknowledge(envelopes: [envelopeID(2)]).isOk)
            }
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                try await connection.authenticate(bob, 0)
                #expect(try await connection.acknowledge(envelopes: [envelopeID(1)]).isOk)
            }
            var first = try await receipts(alice, 0)
            var second = try await receipts(alice, 1)
            #expect(first.map(\.kind) == [.delivered])
            #expect(first.map(\.envelopeID) == [envelopeID(2)])
            #expect(first.map(\.recipient) == [bob.address(1)])
            #expect(second.map(\.kind) == [.delivered])
            #expect(second.map(\.envelopeID) == [envelopeID(3)])
            // SEEN once per reader handle, from whichever device reports first.
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                try await connection.authenticate(bob, 0)
                var seen = WireReportSeen()
                seen.envelopeIds = [envelopeID(1)]
                #expect(try await connection.request(.reportSeen(seen)).isOk)
            }
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                try await connection.authenticate(bob, 1)
                var seen = WireReportSeen()
                seen.envelopeIds = [envelopeID(2)]
                #expect(try await connection.request(.reportSeen(seen)).isOk)
            }
            first = try await receipts(alice, 0)
            second = try await receipts(alice, 1)
            #expect(first.map(\.kind) == [.delivered, .seen])
            #expect(first.last?.envelopeID == envelopeID(1))
            #expect(second.map(\.kind) == [.delivered, .seen])
            #expect(second.last?.envelopeID == envelopeID(3))
            // Receipts are pushed to a connected sender device too.
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                let (_, delivered) = try await connection.authenticate(alice, 1)
                #expect(delivered.flatMap(\.receipts).map(\.envelopeID) == [envelopeID(3), envelopeID(3)])
            }
        }
    }

    @Test func seenReceiptsOffDropsEveryReportOfTheAccount() async throws {
        try await RelayHarness.run { relay in
            let alice = TestAccount("alice")
            let bob = TestAccount("bob")
            try await Self.setUp(relay, alice, publish: false)
            try await Self.setUp(relay, bob, extra: 1)
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                try await connection.authenticate(bob, 1)
                var settings = WireUpdateAccountSettings()
                settings.seenReceiptsOff = true
                #expect(try await connection.request(.updateAccountSettings(settings)).isOk)
            }
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                try await connection.authenticate(alice, 0)
                let reply = try await connection.submit(
                    [grouped(1, to: "bob", device: 1, group: 1), grouped(2, to: "bob", device: 2, group: 1)], selectedDevices: false)
                guard case .submitResult = reply.body else { throw Failure("\(reply)") }
            }
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                let (result, delivered) = try await connection.authenticate(bob, 0)
                #expect(result.seenReceiptsOff)
                #expect(delivered.flatMap(\.envelopes).map(\.envelopeID) == [envelopeID(1)])
                var seen = WireReportSeen()
                seen.envelopeIds = [envelopeID(1)]
                #expect(try await connection.request(.reportSeen(seen)).isOk)
                #expect(try await connection.acknowledge(envelopes: [envelopeID(1)]).isOk)
            }
            let kinds = try await relay.app.relay.store.pendingItems(for: alice.address(0), afterSequence: 0, nowMs: 0, limit: 10).compactMap {
                if case .receipt(let receipt) = $0.content { receipt.kind } else { nil }
            }
            #expect(kinds == [.delivered])
        }
    }

    @Test func acknowledgementsAreKeyedByDeviceAndIdempotent() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            let bob = TestAccount("bob")
            try await Self.setUp(relay, bob, extra: 1)
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                _ = try await connection.register(alice)
                try await connection.authenticate(alice)
                let reply = try await connection.submit(
                    [grouped(1, to: "bob", device: 1, group: 1), grouped(2, to: "bob", device: 2, group: 1),
                     grouped(3, to: "bob", device: 1, group: 2, ttl: 60), grouped(4, to: "bob", device: 2, group: 2, ttl: 60)],
                    selectedDevices: false)
                guard case .submitResult = reply.body else { throw Failure("\(reply)") }
            }
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                try await connection.authenticate(bob, 1)
                // A foreign acknowledgement (device 2 acks device 1's envelope) is refused, and so is the whole frame.
                let foreign = try await connection.acknowledge(envelopes: [envelopeID(2), envelopeID(1)])
                #expect(foreign.errorCode == .unknownEnvelope)
                #expect(foreign.error?.envelopeID == envelopeID(1))
                #expect(try await connection.acknowledge(envelopes: [Data(count: 5)]).errorCode == .unknownEnvelope)
                #expect(try await connection.acknowledge(envelopes: [envelopeID(2)]).isOk)
                // Acknowledging again is fine.
                #expect(try await connection.acknowledge(envelopes: [envelopeID(2)]).isOk)
            }
            // Device 1 still receives its envelopes; device 2 gets only the one it did not acknowledge.
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                let (_, delivered) = try await connection.authenticate(bob, 0)
                #expect(delivered.flatMap(\.envelopes).map(\.envelopeID) == [envelopeID(1), envelopeID(3)])
            }
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                let (_, delivered) = try await connection.authenticate(bob, 1)
                #expect(delivered.flatMap(\.envelopes).map(\.envelopeID) == [envelopeID(4)])
                // An envelope that expired from the queue: acknowledging it is still Ok.
                relay.clock.advance(seconds: 61)
                #expect(try await relay.app.relay.sweep().expiredEnvelopes == 2)
                #expect(try await connection.acknowledge(envelopes: [envelopeID(4)]).isOk)
            }
        }
    }

    @Test func deletedAccountIsGoneAndItsHandleStaysTakenUntilRetention() async throws {
        try await RelayHarness.run { relay in
            let alice = TestAccount("alice")
            try await Self.setUp(relay, alice, extra: 1)
            let bob = TestIdentity("bob")
            try await relay.connect { (bobConnection: TestConnection) async throws -> Void in
                _ = try await bobConnection.register(bob)
                try await bobConnection.authenticate(bob)
                let reply = try await bobConnection.submit(
                    [grouped(1, to: "alice", device: 1, group: 1), grouped(2, to: "alice", device: 2, group: 1)], selectedDevices: false)
                guard case .submitResult = reply.body else { throw Failure("\(reply)") }
                try await relay.connect { (other: TestConnection) async throws -> Void in
                    try await other.authenticate(alice, 1)
                    try await relay.connect { (connection: TestConnection) async throws -> Void in
                        try await connection.authenticate(alice, 0)
                        let payload = SignedPayload.deleteAccount(
                            accountIdentityKey: alice.account.publicKey.rawRepresentation, nonce: connection.nonce, handle: "alice")
                        var request = WireDeleteAccount()
                        // Signed over another nonce (a replay), or by a device key: refused.
                        request.signature = alice.account.signature(for: SignedPayload.deleteAccount(
                            accountIdentityKey: alice.account.publicKey.rawRepresentation, nonce: Data(count: 32), handle: "alice"))
                        #expect(try await connection.request(.deleteAccount(request)).errorCode == .invalidSignature)
                        request.signature = alice.devices[0].signature(for: payload)
                        #expect(try await connection.request(.deleteAccount(request)).errorCode == .invalidSignature)
                        request.signature = alice.account.signature(for: payload)
                        #expect(try await connection.request(.deleteAccount(request)).isOk)
                        #expect(try await connection.isClosedByRelay())
                    }
                    #expect(try await other.isClosedByRelay())
                }
                // Bob's undelivered envelopes expired.
                var receipts: [WireReceipt] = []
                while receipts.count < 2 { receipts += try await bobConnection.nextDeliver().receipts }
                #expect(Set(receipts.map(\.kind)) == [.expired])
                #expect(Set(receipts.map(\.envelopeID)) == [envelopeID(1), envelopeID(2)])
                // Gone: bundle and envelopes get UNKNOWN_RECIPIENT.
                var fetch = WireFetchPreKeyBundle()
                fetch.handle = "alice"
                #expect(try await bobConnection.request(.fetchPrekeyBundle(fetch)).errorCode == .unknownRecipient)
                let outcomes = try await bobConnection.submit([outgoing(3, to: "alice")])
                #expect(outcomes.map(\.error.code) == [.unknownRecipient])
            }
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                // Taken while the tombstone lasts; no new device joins it.
                #expect(try await connection.request(TestAccount("alice").register(nonce: connection.nonce)).errorCode == .handleTaken)
                #expect(try await connection.request(alice.registerDevice(1, nonce: connection.nonce)).errorCode == .unknownRecipient)
                #expect(try await connection.request(alice.authenticate(0, nonce: connection.nonce)).errorCode == .authenticationFailed)
            }
            #expect(try await relay.app.relay.store.account(handle: "alice") == nil)
            // After the retention ceiling the sweeper purges the tombstone and the handle is free.
            relay.clock.advance(seconds: 86_401)
            #expect(try await relay.app.relay.sweep().purgedTombstones == 1)
            try await relay.connect { (connection: TestConnection) async throws -> Void in try await connection.register(TestAccount("alice")) }
        }
    }

    @Test func pairingSlotsAreWrittenOnceReadOnceAndExpire() async throws {
        try await RelayHarness.run { relay in
            let rendezvous = Data(repeating: 0x5A, count: 16)
            @Sendable func put(_ slot: UInt32, _ message: Data, id: Data = rendezvous) -> WireFrame.OneOf_Body {
                var request = WireLinkPut()
                request.rendezvousID = id
                request.slot = slot
                request.pairingMessage = message
                return .linkPut(request)
            }
            @Sendable func take(_ slot: UInt32) -> WireFrame.OneOf_Body {
                var request = WireLinkTake()
                request.rendezvousID = rendezvous
                request.slot = slot
                return .linkTake(request)
            }
            @Sendable func taken(_ reply: WireFrame) -> Data? { if case .linkMessage(let message) = reply.body { message.pairingMessage } else { nil } }
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                // Before authentication.
                #expect(taken(try await connection.request(take(1))) == Data())
                #expect(try await connection.request(put(1, Data("offer".utf8))).isOk)
                #expect(try await connection.request(put(1, Data("again".utf8))).errorCode == .invalidArgument)
                #expect(try await connection.request(put(0, Data("x".utf8))).errorCode == .invalidArgument)
                #expect(try await connection.request(put(4, Data("x".utf8))).errorCode == .invalidArgument)
                #expect(try await connection.request(put(2, Data())).errorCode == .invalidArgument)
                #expect(try await connection.request(put(2, Data(count: 1_025))).errorCode == .invalidArgument)
                #expect(try await connection.request(put(2, Data("x".utf8), id: Data(count: 15))).errorCode == .invalidArgument)
                #expect(try await connection.request(put(2, Data(count: 1_024))).isOk)
            }
            let alice = TestAccount("alice")
            try await Self.setUp(relay, alice, publish: false)
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                // After authentication too; read once.
                try await connection.authenticate(alice, 0)
                #expect(taken(try await connection.request(take(1))) == Data("offer".utf8))
                #expect(taken(try await connection.request(take(1))) == Data())
                #expect(try await connection.request(put(1, Data("later".utf8))).errorCode == .invalidArgument)
                #expect(try await connection.request(put(3, Data("done".utf8))).isOk)
            }
            // Gone after the lifetime (10 minutes), swept or not.
            relay.clock.advance(seconds: 601)
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                #expect(taken(try await connection.request(take(2))) == Data())
            }
            #expect(try await relay.app.relay.sweep().purgedLinkMessages == 3)
        }
    }

    @Test func recoveryDeletesTheStoredDeviceList() async throws {
        try await RelayHarness.run { relay in
            let alice = TestAccount("alice")
            let code = try await relay.connect { connection -> String in
                guard case .registerResult(let result) = try await connection.request(alice.register(nonce: connection.nonce)).body else {
                    throw Failure("register")
                }
                alice.ids[0] = result.deviceID
                return result.recoveryCode
            }
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                try await connection.authenticate(alice, 0)
                #expect(try await connection.request(alice.publish(alice.list(version: 1, [0]))).isOk)
            }
            #expect(try await relay.app.relay.store.deviceList(handle: "alice") != nil)
            let recovered = TestIdentity("alice")
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                var recover = WireRecover()
                recover.handle = "alice"
                recover.recoveryCode = code
                recover.accountIdentityKey = recovered.account.publicKey.rawRepresentation
                recover.device = recovered.deviceKeys()
                recover.challengeSignature = recovered.device.signature(for: SignedPayload.authentication(nonce: connection.nonce, handle: "alice"))
                guard case .registerResult(let result) = try await connection.request(.recover(recover)).body else { throw Failure("recover") }
                #expect(result.deviceID == 2)
            }
            #expect(try await relay.app.relay.store.deviceList(handle: "alice") == nil)
        }
    }

    /// A lost Register/Recover answer is re-sent (with a fresh recovery code) only to the device that call
    /// created while it is the only device; a linked device presenting the account key and its own valid
    /// certificate gets nothing and the recovery code stays as it was (security review, issue 4).
    @Test func onlyTheRegisteringDeviceGetsARetriedAnswerNotALinkedDevice() async throws {
        try await RelayHarness.run { relay in
            let alice = TestAccount("alice")
            @Sendable func registerAs(_ index: Int, nonce: Data) -> WireFrame.OneOf_Body {
                var register = WireRegister()
                register.handle = "alice"
                register.accountIdentityKey = alice.account.publicKey.rawRepresentation
                register.device = alice.deviceKeys(index)
                register.challengeSignature = alice.devices[index].signature(for: SignedPayload.authentication(nonce: nonce, handle: "alice"))
                return .register(register)
            }
            @Sendable func recoverAs(_ index: Int, code: String, accountKey: Ed25519PrivateKey, nonce: Data) -> WireFrame.OneOf_Body {
                var recover = WireRecover()
                recover.handle = "alice"
                recover.recoveryCode = code
                recover.accountIdentityKey = accountKey.publicKey.rawRepresentation
                recover.device = alice.deviceKeys(index, certifiedBy: accountKey)
                recover.challengeSignature = alice.devices[index].signature(for: SignedPayload.authentication(nonce: nonce, handle: "alice"))
                return .recover(recover)
            }
            let code = try await relay.connect { connection -> String in
                try await connection.register(alice)
                // The registering device's retry, alone on the handle: answered with a fresh code.
                guard case .registerResult(let retried) = try await connection.request(registerAs(0, nonce: connection.nonce)).body else {
                    throw Failure("retry")
                }
                #expect(retried.deviceID == 1)
                #expect(!retried.recoveryCode.isEmpty)
                try await connection.registerDevice(alice, alice.addDevice())
                return retried.recoveryCode
            }
            let stored = try #require(try await relay.app.relay.store.account(handle: "alice")).recoveryCodeHash
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                // The linked device 2 presents Register and Recover "retries" with the account key.
                #expect(try await connection.request(registerAs(1, nonce: connection.nonce)).errorCode == .handleTaken)
                #expect(try await connection.request(recoverAs(1, code: "garbage", accountKey: alice.account, nonce: connection.nonce)).errorCode
                    == .recoveryFailed)
                // Nor may the first device have it once another device exists.
                #expect(try await connection.request(registerAs(0, nonce: connection.nonce)).errorCode == .handleTaken)
            }
            #expect(try await relay.app.relay.store.account(handle: "alice")?.recoveryCodeHash == stored)
            // The code the user holds still recovers the handle.
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                let newAccount = Ed25519PrivateKey()
                let index = alice.addDevice()
                guard case .registerResult(let result) = try await connection.request(
                    recoverAs(index, code: code, accountKey: newAccount, nonce: connection.nonce)).body
                else { throw Failure("recover") }
                #expect(result.deviceID == 3)
            }
        }
    }

    @Test func newFramesNeedTheRightConnectionState() async throws {
        try await RelayHarness.run { relay in
            try await relay.connect { (connection: TestConnection) async throws -> Void in
                #expect(try await connection.request(.publishDeviceList(WirePublishDeviceList())).errorCode == .notAuthenticated)
                #expect(try await connection.request(.fetchDeviceList(WireFetchDeviceList())).errorCode == .notAuthenticated)
                #expect(try await connection.request(.deleteAccount(WireDeleteAccount())).errorCode == .notAuthenticated)
                #expect(try await connection.request(.updateAccountSettings(WireUpdateAccountSettings())).errorCode == .notAuthenticated)
            }
        }
    }
}
