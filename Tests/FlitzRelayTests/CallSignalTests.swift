import FlitzCrypto
@testable import FlitzRelay
import FlitzStore
import FlitzWire
import Foundation
import Logging
import Synchronization
import Testing

/// Call signals at the relay (`protocol/calls.md` 3): the checks of 3.1 in order, delivery at once and right after
/// authentication (3.2), holding limits and expiry, blocked senders, the ring push (3.3), TURN credentials (3.5) and
/// metrics (3.6), over a real relay on loopback with a real SQLite file, raw frames and the test clock.
@Suite struct CallSignalTests {
    // MARK: Delivery

    @Test func aSignalReachesAConnectedDeviceAtOnceAndAHeldOneRightAfterAuthenticationAheadOfTheQueue() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice"), bob = TestAccount("bob")
            try await registerAll(relay, [alice])
            try await MultiDeviceRelayTests.setUp(relay, bob, extra: 1)
            let phone = try #require(bob.ids[0]), laptop = try #require(bob.ids[1])
            let call = callID(0xC1)
            let start = relay.clock.nowMs()
            // An envelope already waits in the laptop's queue.
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                #expect(try await connection.submitSelected([outgoing(1, to: "bob", device: laptop)]).allSatisfy { !$0.hasError })
            }
            try await relay.connect { phoneConnection in
                _ = try await phoneConnection.authenticateCollecting(bob.authenticate(0, nonce: phoneConnection.nonce, callSignals: true))
                try await relay.connect { connection in
                    try await connection.authenticate(alice)
                    let offer = try await connection.sendCallSignal(signal(.callOffer, call, to: "bob", devices: [phone, laptop], sequence: 1))
                    let result = try #require(offer.callSignalResult, "\(offer)")
                    #expect(result.acceptedAtMs == start && result.expiresAtMs == start + 75_000)
                    #expect(result.deliveredDeviceIds == [phone] && result.heldDeviceIds == [laptop] && result.wokenDeviceIds.isEmpty)
                    let ice = try await connection.sendCallSignal(signal(.callIce, call, to: "bob", devices: [laptop], sequence: 2, ttl: 30))
                    #expect(ice.callSignalResult?.heldDeviceIds == [laptop] && ice.callSignalResult?.expiresAtMs == start + 30_000, "\(ice)")
                    let hangup = try await connection.sendCallSignal(signal(.callHangup, call, to: "bob", devices: [phone, laptop], sequence: 3))
                    #expect(hangup.callSignalResult?.deliveredDeviceIds == [phone] && hangup.callSignalResult?.heldDeviceIds == [laptop], "\(hangup)")
                }
                // The connected phone got the offer, then the hangup, unsolicited, with every field the relay saw.
                let first = try #require(try await phoneConnection.next().callSignalDelivery)
                #expect(first.callID == call && first.kind == .callOffer && first.sequence == 1)
                #expect(first.senderHandle == "alice" && first.senderDeviceID == 1 && first.recipientDeviceID == phone)
                #expect(first.sentAtMs == 1_800_000_000_000 && first.receivedAtMs == start && first.expiresAtMs == start + 75_000)
                #expect(first.urgency == .ring && first.ciphertext == ciphertext(.callOffer, 1, phone))
                let second = try #require(try await phoneConnection.next().callSignalDelivery)
                #expect(second.kind == .callHangup && second.sequence == 3 && second.urgency == .silent)
            }
            // The laptop connects: AuthenticateResult, the three held signals in order, then its queue.
            try await relay.connect { connection in
                let frames = try await connection.authenticateCollecting(bob.authenticate(1, nonce: connection.nonce, callSignals: true))
                let signals = frames.prefix(3).compactMap(\.callSignalDelivery)
                #expect(signals.map(\.sequence) == [1, 2, 3], "\(frames)")
                #expect(signals.map(\.kind) == [.callOffer, .callIce, .callHangup])
                #expect(signals.allSatisfy { $0.recipientDeviceID == laptop && $0.callID == call })
                #expect(signals.map(\.ciphertext) == [ciphertext(.callOffer, 1, laptop), ciphertext(.callIce, 2, laptop), ciphertext(.callHangup, 3, laptop)])
                guard frames.count == 5, case .deliver(let deliver) = frames[3].body, case .queueDrained = frames[4].body else {
                    throw Failure("expected three signals, a Deliver and QueueDrained: \(frames)")
                }
                #expect(deliver.envelopes.map(\.envelopeID) == [envelopeID(1)])
            }
            // Delivered once: the next connection gets the (unacknowledged) envelope again, no signal.
            try await waitUntilOffline(relay, "bob", laptop)
            try await relay.connect { connection in
                let frames = try await connection.authenticateCollecting(bob.authenticate(1, nonce: connection.nonce, callSignals: true))
                #expect(frames.allSatisfy { $0.callSignalDelivery == nil }, "\(frames)")
            }
            #expect(relay.app.relay.calls.counts.inMemory == 0)
        }
    }

    @Test func aConnectionWithoutCallSignalsGetsNoneAndALaterFlaggedOneGetsTheHeldSignal() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [alice, bob])
            let call = callID(0xC5)
            try await relay.connect { bobConnection in
                // Connected, but without call_signals (a `flitz send`): counts as not connected for calls.
                try await bobConnection.authenticate(bob)
                try await relay.connect { connection in
                    try await connection.authenticate(alice)
                    let reply = try await connection.sendCallSignal(signal(.callOffer, call, to: "bob", devices: [1], sequence: 1))
                    let result = try #require(reply.callSignalResult, "\(reply)")
                    #expect(result.heldDeviceIds == [1] && result.deliveredDeviceIds.isEmpty, "\(result)")
                }
                // A delivery would have been written before the answer to this request.
                _ = try await bobConnection.request(.fetchBlockList(WireFetchBlockList()))
                #expect(bobConnection.stashedFrames.isEmpty, "\(bobConnection.stashedFrames)")
                #expect(relay.app.relay.calls.counts.inMemory == 1)
            }
            // A later connection of the same device that sets call_signals gets the held offer after AuthenticateResult.
            try await waitUntilOffline(relay, "bob", 1)
            try await relay.connect { bobConnection in
                let frames = try await bobConnection.authenticateCollecting(bob.authenticate(nonce: bobConnection.nonce, deviceID: 1, callSignals: true))
                let delivery = try #require(frames.first?.callSignalDelivery, "\(frames)")
                #expect(delivery.callID == call && delivery.kind == .callOffer && delivery.ciphertext == ciphertext(.callOffer, 1, 1))
                // It is replaced by a connection without the flag: signals accepted now are held, not written to either.
                try await relay.connect { plain in
                    try await plain.authenticate(bob)
                    try await relay.connect { connection in
                        try await connection.authenticate(alice)
                        let reply = try await connection.sendCallSignal(signal(.callHangup, call, to: "bob", devices: [1], sequence: 2))
                        #expect(reply.callSignalResult?.heldDeviceIds == [1] && reply.callSignalResult?.deliveredDeviceIds == [], "\(reply)")
                    }
                    _ = try await plain.request(.fetchBlockList(WireFetchBlockList()))
                    #expect(plain.stashedFrames.isEmpty, "\(plain.stashedFrames)")
                }
            }
            #expect(relay.app.relay.calls.counts.inMemory == 1)
        }
    }

    @Test func theChecksRunInOrderAndARefusedSignalIsNeitherHeldNorDelivered() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice"), bob = TestAccount("bob")
            try await registerAll(relay, [alice])
            try await MultiDeviceRelayTests.setUp(relay, bob, extra: 1)
            let phone = try #require(bob.ids[0]), laptop = try #require(bob.ids[1])
            let call = callID(0xC2)
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                func code(_ request: WireSendCallSignal) async throws -> WireErrorCode? {
                    try await connection.sendCallSignal(request).errorCode
                }
                let offer = signal(.callOffer, call, to: "bob", devices: [phone, laptop], sequence: 1)
                // 1. Forms; checked before the recipient (an unknown handle with a short call id is INVALID_ARGUMENT).
                var shortID = offer
                shortID.callID = Data(count: 15)
                shortID.recipientHandle = "nobody"
                #expect(try await code(shortID) == .invalidArgument)
                var noKind = offer
                noKind.kind = .unspecified
                #expect(try await code(noKind) == .invalidArgument)
                var unknownKind = offer
                unknownKind.kind = .UNRECOGNIZED(9)
                #expect(try await code(unknownKind) == .invalidArgument)
                var zeroSequence = offer
                zeroSequence.sequence = 0
                #expect(try await code(zeroSequence) == .invalidArgument)
                var empty = offer
                empty.copies[0].ciphertext = Data()
                #expect(try await code(empty) == .invalidArgument)
                var large = offer
                large.copies[1].ciphertext = Data(count: 16_385)
                #expect(try await code(large) == .invalidArgument)
                var twice = offer
                twice.copies[1].recipientDeviceID = phone
                #expect(try await code(twice) == .invalidArgument)
                // 2. By kind: only an offer rings, with its own ttl range; other kinds carry 1 to 10 copies.
                var urgent = offer
                urgent.urgency = .urgent
                #expect(try await code(urgent) == .invalidArgument)
                for ttl: UInt32 in [1, 59, 91] {
                    var wrongTTL = offer
                    wrongTTL.ttlSeconds = ttl
                    #expect(try await code(wrongTTL) == .invalidArgument, "offer ttl \(ttl)")
                }
                var ringingAnswer = signal(.callAnswer, call, to: "bob", devices: [phone], sequence: 1)
                ringingAnswer.urgency = .ring
                #expect(try await code(ringingAnswer) == .invalidArgument)
                #expect(try await code(signal(.callIce, call, to: "bob", devices: [phone], sequence: 1, ttl: 91)) == .invalidArgument)
                #expect(try await code(signal(.callIce, call, to: "bob", devices: [], sequence: 1)) == .invalidArgument)
                #expect(try await code(signal(.callIce, call, to: "bob", devices: Array(1...11), sequence: 1)) == .invalidArgument)
                // 3. The recipient.
                #expect(try await code(signal(.callIce, call, to: "nobody", devices: [1], sequence: 1)) == .unknownRecipient)
                #expect(try await code(signal(.callIce, call, to: "No Such", devices: [1], sequence: 1)) == .unknownRecipient)
                // 4. An offer addresses exactly the current devices; other kinds only current ones.
                let missing = try await connection.sendCallSignal(signal(.callOffer, call, to: "bob", devices: [phone], sequence: 1))
                #expect(missing.errorCode == .mismatchedDevices)
                #expect(missing.error?.deviceMismatches.map(\.handle) == ["bob"])
                #expect(missing.error?.deviceMismatches.first?.missingDeviceIds == [laptop])
                #expect(missing.error?.deviceMismatches.first?.staleDeviceIds == [])
                let stale = try await connection.sendCallSignal(signal(.callOffer, call, to: "bob", devices: [phone, laptop, 77], sequence: 1))
                #expect(stale.error?.deviceMismatches.first?.staleDeviceIds == [77] && stale.error?.deviceMismatches.first?.missingDeviceIds == [])
                #expect(try await code(signal(.callHangup, call, to: "bob", devices: [phone, 77], sequence: 1)) == .staleDevice)
                // 5. Sequences: accepted once, a replay or an older one refused, a later one accepted.
                #expect(try await connection.sendCallSignal(offer).callSignalResult != nil)
                #expect(try await code(offer) == .invalidArgument)
                #expect(try await code(signal(.callIce, call, to: "bob", devices: [phone], sequence: 1)) == .invalidArgument)
                #expect(try await connection.sendCallSignal(signal(.callIce, call, to: "bob", devices: [phone], sequence: 2)).callSignalResult != nil)
                // Another sending device's sequences (here: another call) are its own.
                #expect(try await connection.sendCallSignal(signal(.callOffer, callID(0xC3), to: "bob", devices: [phone, laptop], sequence: 1))
                    .callSignalResult != nil)
            }
            // Only the three accepted signals reached the phone.
            try await relay.connect { connection in
                let frames = try await connection.authenticateCollecting(bob.authenticate(0, nonce: connection.nonce, callSignals: true))
                let signals = frames.compactMap(\.callSignalDelivery)
                #expect(signals.map(\.sequence) == [1, 2, 1] && signals.map(\.callID) == [call, call, callID(0xC3)], "\(frames)")
            }
            let exposition = await relay.app.relay.metrics.exposition()
            #expect(exposition.contains(#"flitz_call_signals_total{kind="offer"} 2"#), "\(exposition)")
            #expect(exposition.contains(#"flitz_call_signals_total{kind="ice"} 1"#))
        }
    }

    @Test func offersAndSignalsAreRateLimitedPerDeviceAfterTheOtherChecks() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [alice, bob])
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                for index in 0..<10 {
                    let reply = try await connection.sendCallSignal(signal(.callOffer, callID(UInt8(index)), to: "bob", devices: [1], sequence: 1))
                    #expect(reply.callSignalResult != nil, "\(reply)")
                }
                let limited = try await connection.sendCallSignal(signal(.callOffer, callID(0x10), to: "bob", devices: [1], sequence: 1))
                #expect(limited.errorCode == .rateLimited && limited.error?.retryAfterMs == 6_000, "\(limited)")
                // A bad signal is refused for what is wrong with it first.
                #expect(try await connection.sendCallSignal(signal(.callOffer, callID(0x10), to: "bob", devices: [2], sequence: 1)).errorCode
                    == .mismatchedDevices)
                relay.clock.advance(seconds: 6)
                #expect(try await connection.sendCallSignal(signal(.callOffer, callID(0x10), to: "bob", devices: [1], sequence: 1)).callSignalResult != nil)
                // 11 signals so far, 10 refilled: 99 more of any kind, then RATE_LIMITED.
                let call = callID(0x20)
                for sequence in 1...99 {
                    let reply = try await connection.sendCallSignal(signal(.callIce, call, to: "bob", devices: [1], sequence: UInt32(sequence)))
                    #expect(reply.callSignalResult != nil, "\(sequence): \(reply)")
                }
                let over = try await connection.sendCallSignal(signal(.callIce, call, to: "bob", devices: [1], sequence: 100))
                #expect(over.errorCode == .rateLimited && over.error?.retryAfterMs == 600, "\(over)")
                // The refused one was not remembered: its sequence is still free once the bucket refills.
                relay.clock.advance(seconds: 1)
                #expect(try await connection.sendCallSignal(signal(.callIce, call, to: "bob", devices: [1], sequence: 100)).callSignalResult != nil)
            }
        }
    }

    // MARK: Holding

    @Test func anExpiredSignalIsDroppedAndAnOfferNeverRingsLate() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [alice, bob])
            let call = callID(0xE1)
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                #expect(try await connection.sendCallSignal(signal(.callOffer, call, to: "bob", devices: [1], sequence: 1)).callSignalResult != nil)
                #expect(try await connection.sendCallSignal(signal(.callIce, call, to: "bob", devices: [1], sequence: 2)).callSignalResult != nil)
                #expect(relay.app.relay.calls.counts.inMemory == 2)
                // 76 s later the offer (75 s) has expired, the candidates (90 s) have not.
                relay.clock.advance(seconds: 76)
                // The pair is remembered until its last signal expires: sequence 2 is still a replay.
                #expect(try await connection.sendCallSignal(signal(.callIce, call, to: "bob", devices: [1], sequence: 2)).errorCode == .invalidArgument)
            }
            try await relay.connect { connection in
                let frames = try await connection.authenticateCollecting(bob.authenticate(nonce: connection.nonce, deviceID: 1, callSignals: true))
                #expect(frames.compactMap(\.callSignalDelivery).map(\.kind) == [.callIce], "\(frames)")
            }
            #expect(relay.app.relay.calls.counts == CallSignalBroker.Counts(inMemory: 0, expired: 1, overflowed: 0))
            let exposition = await relay.app.relay.metrics.exposition()
            #expect(sample(exposition, "flitz_call_signals_expired_total") == 1, "\(exposition)")
            #expect(sample(exposition, "flitz_call_signals_held") == 0)
            // After the candidates' expiry the relay has forgotten the pair.
            relay.clock.advance(seconds: 15)
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                #expect(try await connection.sendCallSignal(signal(.callIce, call, to: "bob", devices: [1], sequence: 1)).callSignalResult != nil)
            }
        }
    }

    @Test func anAccountHoldsAtMostEightSignalsForADeviceTheOldestNonOfferDropped() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [alice, bob])
            let call = callID(0xF1)
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                // An offer, then 69 ICE signals of the same call: every one is accepted and reported held.
                for sequence in 1...70 {
                    let kind: WireCallSignalKind = sequence == 1 ? .callOffer : .callIce
                    let reply = try await connection.sendCallSignal(signal(kind, call, to: "bob", devices: [1], sequence: UInt32(sequence)))
                    #expect(reply.callSignalResult?.heldDeviceIds == [1], "\(reply)")
                }
            }
            // Kept: the offer and the newest seven ICE signals (calls.md 3.2: 8 per sending account and device).
            #expect(relay.app.relay.calls.counts == CallSignalBroker.Counts(inMemory: 8, expired: 0, overflowed: 62))
            let exposition = await relay.app.relay.metrics.exposition()
            #expect(sample(exposition, "flitz_call_signals_held") == 8, "\(exposition)")
            try await relay.connect { connection in
                let frames = try await connection.authenticateCollecting(bob.authenticate(nonce: connection.nonce, deviceID: 1, callSignals: true))
                #expect(frames.compactMap(\.callSignalDelivery).map(\.sequence) == [1] + Array(64...70).map(UInt32.init))
            }
        }
    }

    @Test func aBlockedSenderGetsTheSameAnswerAndNothingArrives() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [alice, bob])
            let marker = Data("blocked-call-\(UUID().uuidString)".utf8)
            try await relay.connect { bobConnection in
                try await bobConnection.authenticate(bob, callSignals: true)
                #expect(try await bobConnection.updateBlockList(block: ["alice"]).errorCode == nil)
                try await relay.connect { connection in
                    try await connection.authenticate(alice)
                    // Bob is connected, yet the answer names his device as held, as for an offline device.
                    let reply = try await connection.sendCallSignal(signal(.callOffer, callID(0xB1), to: "bob", devices: [1], sequence: 1, ciphertext: marker))
                    let result = try #require(reply.callSignalResult, "\(reply)")
                    #expect(result.heldDeviceIds == [1] && result.deliveredDeviceIds.isEmpty && result.wokenDeviceIds.isEmpty)
                    // Every check still applies: a replay is refused as for anyone.
                    #expect(try await connection.sendCallSignal(signal(.callOffer, callID(0xB1), to: "bob", devices: [1], sequence: 1)).errorCode
                        == .invalidArgument)
                }
                // A delivery would have been written before the answer to this request.
                _ = try await bobConnection.request(.fetchBlockList(WireFetchBlockList()))
                #expect(bobConnection.stashedFrames.isEmpty, "\(bobConnection.stashedFrames)")
            }
            #expect(relay.app.relay.calls.counts.inMemory == 0)
            try await waitUntilOffline(relay, "bob", 1)
            try await relay.connect { connection in
                let frames = try await connection.authenticateCollecting(bob.authenticate(nonce: connection.nonce, deviceID: 1, callSignals: true))
                #expect(frames.allSatisfy { $0.callSignalDelivery == nil }, "\(frames)")
            }
        }
    }

    // MARK: Ring push

    @Test func anOfferRingsAHeldDeviceWithAPushEndpointAndOtherSignalsDoNot() async throws {
        try await PushReceiver.run { receiver in
            try await RelayHarness.run(configure: allowPrivatePush) { harness in
                let world = try await PushWorld.make(harness, receiver: receiver)
                let bobID = world.bobDeviceID, alice = world.alice
                let call = callID(0xA1)
                try await harness.connect { connection in
                    try await connection.authenticate(alice)
                    let reply = try await connection.sendCallSignal(signal(.callOffer, call, to: "bob", devices: [bobID], sequence: 1))
                    let result = try #require(reply.callSignalResult, "\(reply)")
                    #expect(result.heldDeviceIds == [bobID] && result.wokenDeviceIds == [bobID])
                    try await receiver.waitFor(count: 1)
                    let ice = try await connection.sendCallSignal(signal(.callIce, call, to: "bob", devices: [bobID], sequence: 2))
                    #expect(ice.callSignalResult?.wokenDeviceIds == [], "\(ice)")
                }
                try await world.idle()
                #expect(receiver.count == 1)
                let ring = try #require(receiver.requests.first)
                #expect(try WebPush.decrypt(ring.body, keys: world.bobKeys) == WakeClass.ring.payload)
                #expect(ring.headers["urgency"] == "high")
                // The wake-up's lifetime is the offer's remaining life (75 s) in the push.md bucket: 60 s.
                #expect(ring.headers["ttl"] == "60")
                #expect(world.monitor.sent == 1)
                let exposition = await harness.app.relay.metrics.exposition()
                #expect(sample(exposition, "flitz_call_ring_pushes_total") == 1, "\(exposition)")
                // Once bob has taken the offer, the dispatcher's check before sending says it no longer waits.
                try await harness.connect { connection in
                    let frames = try await connection.authenticateCollecting(world.bob.authenticate(nonce: connection.nonce, deviceID: bobID, callSignals: true))
                    #expect(frames.compactMap(\.callSignalDelivery).map(\.sequence) == [1, 2])
                }
                #expect(!harness.app.relay.calls.isWaiting(DeviceAddress(handle: "bob", deviceID: bobID), serial: 1, nowMs: harness.clock.nowMs()))
            }
        }
    }

    // MARK: TURN credentials

    @Test func turnPasswordsAreCoturnsRESTCredentials() {
        // Known answer computed outside Swift: python3 -c "import hmac,hashlib,base64; print(base64.b64encode(
        // hmac.new(b'north-wind', b'1800003600:AAECAwQFBgcICQoLDA0ODw', hashlib.sha1).digest()).decode())"
        let username = TURNCredentials.username(expiry: 1_800_003_600, id: Data(0..<16))
        #expect(username == "1800003600:AAECAwQFBgcICQoLDA0ODw")
        #expect(TURNCredentials.password(secret: "north-wind", username: username) == "i1LBuZzpITf7r9xcIvwWvwtPUbs=")
        #expect(TURNCredentials.stunURIs(from: ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp", "turns:[::1]:5349"])
            == ["stun:127.0.0.1:3478", "stun:[::1]:5349"])
    }

    @Test func aRelayWithTURNIssuesTimeLimitedCredentialsThirtyAnHour() async throws {
        let secret = "turn-secret-\(UUID().uuidString)"
        try await RelayHarness.run(configure: {
            $0.turnURIs = ["turn:127.0.0.1:3478?transport=udp"]
            $0.turnSecret = secret
            $0.turnTTL = .seconds(3_600)
        }) { relay in
            let alice = TestIdentity("alice")
            try await registerAll(relay, [alice])
            let nowSeconds = relay.clock.nowMs() / 1_000
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                var usernames = Set<String>()
                for _ in 0..<30 {
                    let reply = try await connection.request(.requestTurnCredentials(WireRequestTurnCredentials()))
                    guard case .turnCredentials(let credentials) = reply.body else { throw Failure("expected TurnCredentials, got \(reply)") }
                    #expect(credentials.turnUris == ["turn:127.0.0.1:3478?transport=udp"])
                    #expect(credentials.stunUris == ["stun:127.0.0.1:3478"])
                    let parts = credentials.username.split(separator: ":")
                    #expect(parts.count == 2 && parts[0] == "\(nowSeconds + 3_600)" && parts[1].count == 22, "\(credentials.username)")
                    #expect(!credentials.username.contains("alice"))
                    #expect(credentials.expiresAtMs == (nowSeconds + 3_600) * 1_000)
                    #expect(credentials.password.count == 28)
                    #expect(credentials.password == TURNCredentials.password(secret: secret, username: credentials.username))
                    usernames.insert(credentials.username)
                }
                #expect(usernames.count == 30)
                let limited = try await connection.request(.requestTurnCredentials(WireRequestTurnCredentials()))
                #expect(limited.errorCode == .rateLimited && limited.error?.retryAfterMs == 120_000, "\(limited)")
            }
            let exposition = await relay.app.relay.metrics.exposition()
            #expect(sample(exposition, "flitz_turn_credentials_issued_total") == 30, "\(exposition)")
            #expect(!exposition.contains(secret))
        }
    }

    @Test func aRelayWithoutTURNAnswersWithItsSTUNURIsOnly() async throws {
        try await RelayHarness.run(configure: { $0.stunURIs = ["stun:stun.example.org:3478"] }) { relay in
            let alice = TestIdentity("alice")
            try await registerAll(relay, [alice])
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                let reply = try await connection.request(.requestTurnCredentials(WireRequestTurnCredentials()))
                guard case .turnCredentials(let credentials) = reply.body else { throw Failure("expected TurnCredentials, got \(reply)") }
                #expect(credentials.turnUris.isEmpty && credentials.username.isEmpty && credentials.password.isEmpty && credentials.expiresAtMs == 0)
                #expect(credentials.stunUris == ["stun:stun.example.org:3478"])
            }
        }
    }

    @Test func turnConfigurationComesFromRepeatedFlagsTheEnvironmentOrAFileArray() throws {
        let flags = try RelayConfiguration.resolve(
            arguments: ["--turn-uri", "turn:a.example:3478", "--turn-uri=turns:b.example:5349", "--turn-secret", "s", "--turn-ttl-seconds", "600",
                        "--stun-uri", "stun:c.example:3478"],
            environment: ["FLITZ_RELAY_TURN_URIS": "turn:ignored.example:1"])
        #expect(flags.turnURIs == ["turn:a.example:3478", "turns:b.example:5349"])
        #expect(flags.turnSecret == "s" && flags.turnTTL == .seconds(600) && flags.stunURIs == ["stun:c.example:3478"])
        let environment = try RelayConfiguration.resolve(
            arguments: [], environment: ["FLITZ_RELAY_TURN_URIS": "turn:a.example:3478,turn:b.example:3478", "FLITZ_RELAY_TURN_SECRET": "s"])
        #expect(environment.turnURIs == ["turn:a.example:3478", "turn:b.example:3478"])
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-turn-\(UUID().uuidString).json")
        try Data(#"{"turn": {"uris": ["turn:f.example:3478"], "secret": "s"}, "stun.uris": ["stun:g.example:3478"]}"#.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let fromFile = try RelayConfiguration.resolve(arguments: ["--config", file.path], environment: [:])
        #expect(fromFile.turnURIs == ["turn:f.example:3478"] && fromFile.stunURIs == ["stun:g.example:3478"])
        #expect(throws: ConfigurationError.self) { try RelayConfiguration.resolve(arguments: ["--turn-uri", "turn:a.example:3478"], environment: [:]) }
        #expect(throws: ConfigurationError.self) { try RelayConfiguration.resolve(arguments: ["--turn-secret", "s"], environment: [:]) }
        #expect(throws: ConfigurationError.self) {
            try RelayConfiguration.resolve(arguments: ["--turn-uri", "http://a.example", "--turn-secret", "s"], environment: [:])
        }
        #expect(throws: ConfigurationError.self) { try RelayConfiguration.resolve(arguments: ["--stun-uri", "turn:a.example"], environment: [:]) }
    }

    // MARK: Blindness

    @Test func theRelayNeverLogsOrStoresCallCiphertextIDsOrHandles() async throws {
        let lines = LogLines()
        var logger = Logger(label: "flitz-relay-call-test") { label in CapturingLogHandler(label: label, lines: lines) }
        logger.logLevel = .debug
        let marker = "SDP-candidate-192.0.2.7-\(UUID().uuidString)"
        let call = Data((0..<16).map { UInt8($0) ^ 0x5A })
        try await RelayHarness.run(logger: logger) { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await registerAll(relay, [alice, bob])
            try await relay.connect { bobConnection in
                try await bobConnection.authenticate(bob, callSignals: true)
                try await relay.connect { connection in
                    try await connection.authenticate(alice)
                    for (sequence, kind) in [WireCallSignalKind.callOffer, .callAnswer, .callIce, .callHangup, .callBusy].enumerated() {
                        let reply = try await connection.sendCallSignal(
                            signal(kind, call, to: "bob", devices: [1], sequence: UInt32(sequence + 1), ciphertext: Data("\(marker)-\(kind)".utf8)))
                        #expect(reply.callSignalResult?.deliveredDeviceIds == [1], "\(reply)")
                    }
                    // Refusals are logged by nobody either.
                    #expect(try await connection.sendCallSignal(signal(.callIce, call, to: "bob", devices: [1], sequence: 1)).errorCode == .invalidArgument)
                    _ = try await connection.request(.requestTurnCredentials(WireRequestTurnCredentials()))
                }
                for _ in 0..<5 { #expect(try await bobConnection.next().callSignalDelivery?.ciphertext.starts(with: Data(marker.utf8)) == true) }
            }
            // Held ones too: bob offline, then connecting.
            try await waitUntilOffline(relay, "bob", 1)
            try await relay.connect { connection in
                try await connection.authenticate(alice)
                #expect(try await connection.sendCallSignal(signal(.callOffer, callID(0x77), to: "bob", devices: [1], sequence: 1, ciphertext: Data(marker.utf8)))
                    .callSignalResult?.heldDeviceIds == [1])
            }
            try await relay.connect { connection in
                let frames = try await connection.authenticateCollecting(bob.authenticate(nonce: connection.nonce, deviceID: 1, callSignals: true))
                #expect(frames.compactMap(\.callSignalDelivery).count == 1)
            }
            try await relay.app.relay.store.checkpointIfSQLite()
            let stored = databaseBytes(relay.databasePath)
            #expect(stored.range(of: Data(marker.utf8)) == nil)
            #expect(stored.range(of: call) == nil)
            let metrics = await relay.app.relay.metrics.exposition()
            for secret in [marker, "alice", "bob", hex(call)] { #expect(!metrics.contains(secret)) }
        }
        let logged = lines.text
        #expect(!logged.isEmpty, "the capture saw no log line: the test would prove nothing")
        #expect(logged.contains("authenticated"))
        for secret in [marker, hex(call), call.base64EncodedString(), "192.0.2.7"] {
            #expect(!logged.contains(secret), "\(secret) in the log")
        }
    }
}

// MARK: Helpers

func callID(_ byte: UInt8) -> Data { Data(repeating: byte, count: 16) }

/// The ciphertext `signal` puts in the copy for `device` by default.
func ciphertext(_ kind: WireCallSignalKind, _ sequence: UInt32, _ device: UInt32) -> Data { Data("call-\(kind)-\(sequence)-\(device)".utf8) }

/// A `SendCallSignal` of `kind` to `devices` of `handle`: ring urgency for an offer, silent otherwise.
func signal(
    _ kind: WireCallSignalKind, _ callID: Data, to handle: String, devices: [UInt32], sequence: UInt32, ttl: UInt32 = 0, ciphertext body: Data? = nil
) -> WireSendCallSignal {
    var request = WireSendCallSignal()
    request.callID = callID
    request.kind = kind
    request.recipientHandle = handle
    request.copies = devices.map { device in
        var copy = WireCallSignalCopy()
        copy.recipientDeviceID = device
        copy.ciphertext = body ?? ciphertext(kind, sequence, device)
        return copy
    }
    request.sequence = sequence
    request.sentAtMs = 1_800_000_000_000
    request.ttlSeconds = ttl
    request.urgency = kind == .callOffer ? .ring : .silent
    return request
}

func hex(_ data: Data) -> String { data.map { String(format: "%02x", $0) }.joined() }

/// Waits until the relay has released `handle`/`deviceID`'s connection.
func waitUntilOffline(_ relay: RelayHarness, _ handle: String, _ deviceID: UInt32) async throws {
    let app = relay.app.relay
    try await poll { !app.isConnected(handle: handle, deviceID: deviceID) }
}

extension TestConnection {
    func sendCallSignal(_ request: WireSendCallSignal) async throws -> WireFrame {
        try await self.request(.sendCallSignal(request))
    }

    /// Sends `authenticate`, then returns every frame after its `AuthenticateResult` up to and including `QueueDrained`.
    func authenticateCollecting(_ authenticate: WireFrame.OneOf_Body) async throws -> [WireFrame] {
        let reply = try await request(authenticate)
        guard case .authenticateResult = reply.body else { throw Failure("expected AuthenticateResult, got \(reply)") }
        var frames: [WireFrame] = []
        while true {
            let frame = try await next()
            frames.append(frame)
            if case .queueDrained = frame.body { return frames }
        }
    }
}

extension WireFrame {
    var callSignalResult: WireCallSignalResult? { if case .callSignalResult(let result) = body { result } else { nil } }
    var callSignalDelivery: WireCallSignalDelivery? { if case .callSignalDelivery(let delivery) = body { delivery } else { nil } }
}

/// Every log line a `CapturingLogHandler` saw, message and metadata.
final class LogLines: Sendable {
    private let lines = Mutex<[String]>([])
    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var text: String { lines.withLock { $0.joined(separator: "\n") } }
}

/// A swift-log handler that keeps each line (with its metadata) in memory, for tests that search the log.
struct CapturingLogHandler: LogHandler {
    let label: String
    let lines: LogLines
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var all = metadata
        if let extra = event.metadata { all.merge(extra) { $1 } }
        lines.append("\(event.level) \(label) \(event.message) \(all)")
    }
}
