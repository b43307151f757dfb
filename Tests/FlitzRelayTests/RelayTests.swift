import FlitzCrypto
import FlitzRelay
import FlitzStoreSQLite
import FlitzWire
import Foundation
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// End-to-end tests of the relay over real WebSockets (`protocol/relay.md`).
@Suite struct RelayTests {
    @Test func healthAnswersOK() async throws {
        try await RelayHarness.run { relay in
            let url = try #require(URL(string: "http://127.0.0.1:\(relay.port)/health"))
            let (data, response) = try await URLSession.shared.data(from: url)
            #expect((response as? HTTPURLResponse)?.statusCode == 200)
            #expect(String(decoding: data, as: UTF8.self) == "ok")
        }
    }

    @Test func registerThenAuthenticate() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            try await relay.connect { connection in
                #expect(connection.nonce.count == 32)
                let (deviceID, code) = try await connection.register(alice, oneTimePreKeys: 7)
                #expect(deviceID == 1)
                #expect(code.count == 20)
                let reply = try await connection.request(alice.authenticate(nonce: connection.nonce, deviceID: 1))
                guard case .authenticateResult(let result) = reply.body else { Issue.record("\(reply)"); return }
                #expect(result.oneTimePrekeysRemaining == 7)
                #expect(result.relayTimeMs == Int64(relay.clock.now().timeIntervalSince1970 * 1_000))
                guard case .queueDrained = try await connection.next().body else { Issue.record("expected QueueDrained"); return }
                #expect(relay.app.relay.isConnected(handle: "alice", deviceID: 1))
                // Register/Recover/Authenticate after authentication.
                #expect(try await connection.request(alice.register(nonce: connection.nonce)).errorCode == .alreadyAuthenticated)
                #expect(try await connection.request(alice.authenticate(nonce: connection.nonce, deviceID: 1)).errorCode == .alreadyAuthenticated)
            }
        }
    }

    @Test func badSignaturesAndHandlesAreRefused() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            try await relay.connect { connection in
                _ = try await connection.register(alice)
                // Authentication signed by another key, or for an unknown device.
                let impostor = TestIdentity("alice")
                #expect(try await connection.request(impostor.authenticate(nonce: connection.nonce, deviceID: 1)).errorCode == .authenticationFailed)
                #expect(try await connection.request(alice.authenticate(nonce: connection.nonce, deviceID: 2)).errorCode == .authenticationFailed)
                #expect(try await connection.request(alice.authenticate(nonce: Data(count: 32), deviceID: 1)).errorCode == .authenticationFailed)
                // Handle taken, invalid handle.
                #expect(try await connection.request(TestIdentity("alice").register(nonce: connection.nonce)).errorCode == .handleTaken)
                #expect(try await connection.request(TestIdentity("Alice").register(nonce: connection.nonce)).errorCode == .invalidHandle)
                #expect(try await connection.request(TestIdentity("ab").register(nonce: connection.nonce)).errorCode == .invalidHandle)
                // A device certificate by the wrong account key.
                let bob = TestIdentity("bob")
                guard case .register(var register) = bob.register(nonce: connection.nonce) else { return }
                register.accountIdentityKey = Ed25519PrivateKey().publicKey.rawRepresentation
                #expect(try await connection.request(.register(register)).errorCode == .invalidSignature)
                // A challenge signature over another nonce.
                guard case .register(var stale) = bob.register(nonce: Data(count: 32)) else { return }
                stale.handle = "bob"
                #expect(try await connection.request(.register(stale)).errorCode == .invalidSignature)
                // Short keys.
                guard case .register(var short) = bob.register(nonce: connection.nonce) else { return }
                short.accountIdentityKey = Data(count: 31)
                #expect(try await connection.request(.register(short)).errorCode == .malformedFrame)
                // The connection still works.
                _ = try await connection.register(bob)
                try await connection.authenticate(bob)
            }
        }
    }

    @Test func offlineQueueDeliveredInOrderThenReceipts() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            let bob = TestIdentity("bob")
            try await relay.connect { connection in _ = try await connection.register(bob) }
            try await relay.connect { aliceConnection in
                _ = try await aliceConnection.register(alice)
                try await aliceConnection.authenticate(alice)
                let outcomes = try await aliceConnection.submit([outgoing(1, to: "bob"), outgoing(2, to: "bob")])
                #expect(outcomes.map(\.hasError) == [false, false])
                #expect(outcomes.map(\.envelopeID) == [Data(repeating: 1, count: 16), Data(repeating: 2, count: 16)])
                #expect(outcomes[0].expiresAtMs - outcomes[0].acceptedAtMs == 86_400_000)
                _ = try await aliceConnection.submit([outgoing(3, to: "bob", ttl: 60)])

                try await relay.connect { bobConnection in
                    let delivered = try await bobConnection.authenticate(bob)
                    let envelopes = delivered.flatMap(\.envelopes)
                    #expect(envelopes.map(\.envelopeID) == (1...3).map { Data(repeating: $0, count: 16) })
                    #expect(envelopes.map(\.ciphertext) == (1...3).map { Data("ciphertext-\($0)".utf8) })
                    #expect(envelopes.allSatisfy { $0.senderHandle == "alice" && $0.senderDeviceID == 1 && $0.recipientDeviceID == 1 })
                    #expect(envelopes[2].expiresAtMs - envelopes[2].acceptedAtMs == 60_000)

                    // Acknowledge → DELIVERED receipt pushed to the connected sender.
                    var ack = WireAcknowledge()
                    ack.envelopeIds = [Data(repeating: 1, count: 16)]
                    guard case .ok = try await bobConnection.request(.acknowledge(ack)).body else { Issue.record("expected Ok"); return }
                    let deliveredReceipt = try await aliceConnection.nextDeliver().receipts
                    #expect(deliveredReceipt.map(\.kind) == [.delivered])
                    #expect(deliveredReceipt.first?.envelopeID == Data(repeating: 1, count: 16))
                    #expect(deliveredReceipt.first?.recipientHandle == "bob")
                    #expect(deliveredReceipt.first?.receiptID.count == 16)

                    // Seen → SEEN receipt.
                    var seen = WireReportSeen()
                    seen.envelopeIds = [Data(repeating: 1, count: 16), Data(repeating: 2, count: 16)]
                    guard case .ok = try await bobConnection.request(.reportSeen(seen)).body else { Issue.record("expected Ok"); return }
                    var seenReceipts: [WireReceipt] = []
                    while seenReceipts.count < 2 { seenReceipts += try await aliceConnection.nextDeliver().receipts }
                    #expect(seenReceipts.map(\.kind) == [.seen, .seen])

                    // Live push while connected.
                    _ = try await aliceConnection.submit([outgoing(4, to: "bob")])
                    let pushed = try await bobConnection.nextDeliver()
                    #expect(pushed.envelopes.map(\.envelopeID) == [Data(repeating: 4, count: 16)])

                    // Acknowledge receipts: they are not delivered again.
                    var receiptAck = WireAcknowledge()
                    receiptAck.receiptIds = (deliveredReceipt + seenReceipts).map(\.receiptID)
                    _ = try await aliceConnection.request(.acknowledge(receiptAck))
                }
            }
            // Unacknowledged envelopes come again on the next connection; acknowledged ones and receipts do not.
            try await relay.connect { bobConnection in
                let envelopes = try await bobConnection.authenticate(bob).flatMap(\.envelopes)
                #expect(envelopes.map(\.envelopeID) == [2, 3, 4].map { Data(repeating: $0, count: 16) })
            }
            try await relay.connect { aliceConnection in
                let delivered = try await aliceConnection.authenticate(alice)
                #expect(delivered.isEmpty)
            }
        }
    }

    @Test func expiredEnvelopeIsNeverDeliveredAndSenderGetsExpiredReceipt() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            let bob = TestIdentity("bob")
            try await relay.connect { connection in _ = try await connection.register(bob) }
            try await relay.connect { aliceConnection in
                _ = try await aliceConnection.register(alice)
                try await aliceConnection.authenticate(alice)
                _ = try await aliceConnection.submit([outgoing(1, to: "bob", ttl: 60), outgoing(2, to: "bob", ttl: 600)])
                relay.clock.advance(seconds: 61)
                // Not swept yet: still never delivered.
                try await relay.connect { bobConnection in
                    let envelopes = try await bobConnection.authenticate(bob).flatMap(\.envelopes)
                    #expect(envelopes.map(\.envelopeID) == [Data(repeating: 2, count: 16)])
                }
                let result = try await relay.app.relay.sweep()
                #expect(result.expiredEnvelopes == 1)
                let receipts = try await aliceConnection.nextDeliver().receipts
                #expect(receipts.map(\.kind) == [.expired])
                #expect(receipts.map(\.envelopeID) == [Data(repeating: 1, count: 16)])
            }
        }
    }

    @Test func resubmissionIsIdempotentAndConflictsAreRefused() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            let bob = TestIdentity("bob")
            let carol = TestIdentity("carol")
            try await relay.connect { connection in _ = try await connection.register(bob) }
            try await relay.connect { connection in
                _ = try await connection.register(carol)
                try await connection.authenticate(carol)
                #expect(try await connection.submit([outgoing(9, to: "bob")])[0].hasError == false)
            }
            try await relay.connect { connection in
                _ = try await connection.register(alice)
                try await connection.authenticate(alice)
                let first = try await connection.submit([outgoing(1, to: "bob")])[0]
                relay.clock.advance(seconds: 5)
                let again = try await connection.submit([outgoing(1, to: "bob")])[0]
                #expect(!again.hasError)
                #expect(again.acceptedAtMs == first.acceptedAtMs)
                #expect(again.expiresAtMs == first.expiresAtMs)
                let conflicts = try await connection.submit([outgoing(1, to: "carol"), outgoing(9, to: "bob")])
                #expect(conflicts.map(\.error.code) == [.envelopeIDConflict, .envelopeIDConflict])
                // Stale device (chosen devices: no coverage check), unknown recipient, bad sizes: per-envelope
                // errors; the rest is accepted.
                let mixedReply = try await connection.submit([
                    outgoing(2, to: "bob", device: 2), outgoing(3, to: "nobody"), outgoing(4, to: "bob", ciphertext: Data()),
                    outgoing(5, to: "bob"),
                ], selectedDevices: true)
                guard case .submitResult(let mixedResult) = mixedReply.body else { throw Failure("\(mixedReply)") }
                let mixed = mixedResult.outcomes
                #expect(mixed.map(\.error.code) == [.staleDevice, .unknownRecipient, .invalidArgument, .unspecified])
                #expect(mixed[0].error.envelopeID == Data(repeating: 2, count: 16))
                #expect(try await connection.request(.submit(WireSubmit())).errorCode == .invalidArgument)
            }
            try await relay.connect { connection in
                let envelopes = try await connection.authenticate(bob).flatMap(\.envelopes)
                #expect(envelopes.map(\.envelopeID) == [9, 1, 5].map { Data(repeating: $0, count: 16) })
            }
        }
    }

    @Test func preKeyBundlesHandOutEachOneTimePreKeyOnce() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            let bob = TestIdentity("bob")
            try await relay.connect { connection in _ = try await connection.register(bob, oneTimePreKeys: 2) }
            try await relay.connect { connection in
                _ = try await connection.register(alice)
                try await connection.authenticate(alice)
                var fetch = WireFetchPreKeyBundle()
                fetch.handle = "bob"
                var ids: [UInt32] = []
                for _ in 0..<3 {
                    let reply = try await connection.request(.fetchPrekeyBundle(fetch))
                    guard case .prekeyBundle(let bundle) = reply.body else { Issue.record("\(reply)"); return }
                    #expect(bundle.accountIdentityKey == bob.account.publicKey.rawRepresentation)
                    #expect(bundle.devices.map(\.deviceID) == [1])
                    #expect(bundle.devices[0].signedPrekey.publicKey == bob.signedPreKeyPublic)
                    if bundle.devices[0].hasOneTimePrekey { ids.append(bundle.devices[0].oneTimePrekey.id) }
                }
                #expect(ids == [1, 2])
                fetch.handle = "nobody"
                #expect(try await connection.request(.fetchPrekeyBundle(fetch)).errorCode == .unknownRecipient)
                // Publish more.
                var publish = WirePublishPreKeys()
                publish.oneTimePrekeys = alice.deviceKeys(oneTimePreKeys: 3, startingAt: 100).oneTimePrekeys
                let status = try await connection.request(.publishPrekeys(publish))
                guard case .prekeyStatus(let remaining) = status.body else { Issue.record("\(status)"); return }
                #expect(remaining.oneTimePrekeysRemaining == 8)
                publish.signedPrekey = alice.deviceKeys().signedPrekey
                publish.signedPrekey.signature = Data(count: 64)
                #expect(try await connection.request(.publishPrekeys(publish)).errorCode == .invalidSignature)
                // The stock per device is bounded: 8 + 4 × 198 = 800, + 200 = 1 000 exactly, then one more is refused.
                var bulk = WirePublishPreKeys()
                for round in 0..<5 {
                    let count = round < 4 ? 198 : 200
                    bulk.oneTimePrekeys = alice.deviceKeys(oneTimePreKeys: count, startingAt: UInt32(1_000 + round * 200)).oneTimePrekeys
                    guard case .prekeyStatus(let status) = try await connection.request(.publishPrekeys(bulk)).body else {
                        Issue.record("publishing round \(round) was refused")
                        return
                    }
                    #expect(status.oneTimePrekeysRemaining == UInt32(8 + 198 * min(round + 1, 4) + (round == 4 ? 200 : 0)))
                }
                bulk.oneTimePrekeys = alice.deviceKeys(oneTimePreKeys: 1, startingAt: 9_000).oneTimePrekeys
                #expect(try await connection.request(.publishPrekeys(bulk)).errorCode == .invalidArgument)
            }
        }
    }

    @Test func badInputGetsErrorFramesAndTheConnectionStaysOpen() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            try await relay.connect { connection in
                try await connection.sendRaw(Data([0xFF, 0xFF, 0xFF]))
                #expect(try await connection.next().errorCode == .malformedFrame)

                var v2 = WireFrame(requestID: 77, body: .ok(WireOk()))
                v2.version = 2
                try await connection.sendRaw(try v2.serializedData())
                let unsupported = try await connection.next()
                #expect(unsupported.errorCode == .unsupportedVersion)
                #expect(unsupported.requestID == 77)

                var empty = WireFrame()
                empty.version = 1
                empty.requestID = 78
                try await connection.sendRaw(try empty.serializedData())
                let unknown = try await connection.next()
                #expect(unknown.errorCode == .unknownFrame)
                #expect(unknown.requestID == 78)

                #expect(try await connection.request(.challenge(WireChallenge())).errorCode == .unknownFrame)
                #expect(try await connection.request(.submit(WireSubmit())).errorCode == .notAuthenticated)
                #expect(try await connection.request(.acknowledge(WireAcknowledge())).errorCode == .notAuthenticated)

                _ = try await connection.register(alice)
                try await connection.authenticate(alice)
            }
        }
    }

    @Test func oversizeFrameIsRefusedThenClosed() async throws {
        try await RelayHarness.run { relay in
            try await relay.connect { connection in
                try await connection.sendRaw(Data(count: WireConstants.maxFrameBytes + 1))
                #expect(try await connection.next().errorCode == .frameTooLarge)
                #expect(try await connection.isClosedByRelay())
            }
            // Other connections are unaffected.
            try await relay.connect { connection in
                _ = try await connection.register(TestIdentity("alice"))
            }
        }
    }

    @Test func aRepeatedRegistrationWithTheSameKeysIsAnsweredAgain() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            let first = try await relay.connect { connection in try await connection.register(alice) }
            // The answer was lost; the client retries with the same keys.
            let again = try await relay.connect { connection in try await connection.register(alice) }
            #expect(again.0 == first.0)
            #expect(again.1 != first.1, "a fresh recovery code replaces the lost one")
            try await relay.connect { connection in
                let mallory = TestIdentity("alice")
                var recover = WireRecover()
                recover.handle = "alice"
                recover.recoveryCode = first.1
                recover.accountIdentityKey = mallory.account.publicKey.rawRepresentation
                recover.device = mallory.deviceKeys()
                recover.challengeSignature = mallory.device.signature(for: SignedPayload.authentication(nonce: connection.nonce, handle: "alice"))
                #expect(try await connection.request(.recover(recover)).errorCode == .recoveryFailed, "the replaced code is dead")
                _ = try await connection.authenticate(alice, deviceID: again.0)
            }
        }
    }

    @Test func unauthenticatedConnectionsAreClosedAfterTheTimeout() async throws {
        try await RelayHarness.run(authenticationTimeout: .milliseconds(200)) { relay in
            try await relay.connect { connection in
                let closed = try await connection.isClosedByRelay()
                #expect(closed)
            }
        }
    }

    @Test func newConnectionReplacesTheOldOne() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            try await relay.connect { connection in _ = try await connection.register(alice) }
            try await relay.connect { first in
                try await first.authenticate(alice)
                try await relay.connect { second in
                    try await second.authenticate(alice)
                    #expect(try await first.isClosedByRelay())
                    #expect(relay.app.relay.isConnected(handle: "alice", deviceID: 1))
                }
            }
        }
    }

    @Test func recoveryReplacesTheDevice() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            let bob = TestIdentity("bob")
            let code = try await relay.connect { connection in try await connection.register(bob).1 }
            try await relay.connect { connection in
                _ = try await connection.register(alice)
                try await connection.authenticate(alice)
                _ = try await connection.submit([outgoing(1, to: "bob")])
            }
            let newBob = TestIdentity("bob")
            try await relay.connect { oldBob in
                try await oldBob.authenticate(bob)
                try await relay.connect { connection in
                    var recover = WireRecover()
                    recover.handle = "bob"
                    recover.recoveryCode = "AAAAAAAAAAAAAAAAAAAA"
                    recover.accountIdentityKey = newBob.account.publicKey.rawRepresentation
                    recover.device = newBob.deviceKeys()
                    recover.challengeSignature = newBob.device.signature(for: SignedPayload.authentication(nonce: connection.nonce, handle: "bob"))
                    #expect(try await connection.request(.recover(recover)).errorCode == .recoveryFailed)
                    recover.handle = "nobody"
                    recover.challengeSignature = newBob.device.signature(for: SignedPayload.authentication(nonce: connection.nonce, handle: "nobody"))
                    #expect(try await connection.request(.recover(recover)).errorCode == .recoveryFailed)
                    recover.handle = "bob"
                    recover.recoveryCode = code
                    recover.challengeSignature = newBob.device.signature(for: SignedPayload.authentication(nonce: connection.nonce, handle: "bob"))
                    let reply = try await connection.request(.recover(recover))
                    guard case .registerResult(let result) = reply.body else { Issue.record("\(reply)"); return }
                    #expect(result.deviceID == 2)
                    #expect(result.recoveryCode.count == 20)
                    #expect(result.recoveryCode != code)
                    #expect(try await oldBob.isClosedByRelay())
                    // The queued envelope for the removed device is gone; the new device starts empty.
                    #expect(try await connection.authenticate(newBob, deviceID: 2).isEmpty)
                }
            }
            try await relay.connect { connection in
                let reply = try await connection.request(bob.authenticate(nonce: connection.nonce, deviceID: 1))
                #expect(reply.errorCode == .authenticationFailed)
            }
            // The sender of the undelivered envelope was told it expired.
            try await relay.connect { connection in
                let receipts = try await connection.authenticate(alice).flatMap(\.receipts)
                #expect(receipts.map(\.kind) == [.expired])
            }
        }
    }

    @Test func acknowledgedCiphertextLeavesTheDatabaseFiles() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            let bob = TestIdentity("bob")
            let marker = Data("opaque-ciphertext-marker-5d1e0b".utf8)
            try await relay.connect { connection in _ = try await connection.register(bob) }
            try await relay.connect { connection in
                _ = try await connection.register(alice)
                try await connection.authenticate(alice)
                _ = try await connection.submit([outgoing(1, to: "bob", ciphertext: marker)])
            }
            try await relay.connect { connection in
                #expect(try await connection.authenticate(bob).flatMap(\.envelopes).map(\.ciphertext) == [marker])
                var ack = WireAcknowledge()
                ack.envelopeIds = [Data(repeating: 1, count: 16)]
                _ = try await connection.request(.acknowledge(ack))
            }
            let store = try #require(relay.app.relay.store as? SQLiteRelayStore)
            try await store.checkpoint()
            for file in [relay.databasePath, relay.databasePath + "-wal"] {
                if let contents = FileManager.default.contents(atPath: file) {
                    #expect(contents.range(of: marker) == nil, "ciphertext found in \(file)")
                }
            }
        }
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            let bob = TestIdentity("bob")
            try await relay.connect { connection in _ = try await connection.register(bob) }
            try await relay.connect { connection in
                _ = try await connection.register(alice)
                try await connection.authenticate(alice)
                for index in 1...40 {
                    var submit = WireSubmit()
                    submit.envelopes = [outgoing(UInt8(index), to: "bob")]
                    try await connection.send(WireFrame(requestID: UInt64(1_000 + index), body: .submit(submit)))
                }
                for index in 1...40 {
                    let reply = try await connection.next()
                    #expect(reply.requestID == UInt64(1_000 + index))
                }
            }
            try await relay.connect { connection in
                let envelopes = try await connection.authenticate(bob).flatMap(\.envelopes)
                #expect(envelopes.map(\.envelopeID) == (1...40).map { Data(repeating: UInt8($0), count: 16) })
            }
        }
    }

    @Test func largeQueuesAreSplitIntoFramesUnderTheLimit() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            let bob = TestIdentity("bob")
            try await relay.connect { connection in _ = try await connection.register(bob) }
            try await relay.connect { connection in
                _ = try await connection.register(alice)
                try await connection.authenticate(alice)
                let big = Data(repeating: 0x42, count: WireConstants.maxCiphertextBytes)
                for batch in 0..<4 {  // 10 × 64 KiB per Submit stays under the frame limit.
                    let outcomes = try await connection.submit((1...10).map { outgoing(UInt8(batch * 10 + $0), to: "bob", ciphertext: big) })
                    #expect(outcomes.allSatisfy { !$0.hasError })
                }
            }
            try await relay.connect { connection in
                let delivers = try await connection.authenticate(bob)
                #expect(delivers.count >= 3)
                #expect(delivers.allSatisfy { (try? $0.serializedData().count) ?? .max <= WireConstants.maxFrameBytes })
                #expect(delivers.flatMap(\.envelopes).map(\.envelopeID) == (1...40).map { Data(repeating: UInt8($0), count: 16) })
            }
        }
    }
}
