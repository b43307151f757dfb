import FlitzCrypto
import FlitzWire
import Foundation
import Testing

/// The relay's side of PQXDH (`protocol/relay.md`, "Prekeys"): KEM prekeys are required, checked, handed out
/// once (then the last-resort one), and prekey ids are never reused.
@Suite struct KEMPreKeyRelayTests {
    @Test func challengeListsTheSupportedVersions() async throws {
        try await RelayHarness.run { relay in
            let versions = try await relay.connect { connection in connection.supportedVersions }
            #expect(versions == [1])
        }
    }

    @Test func registrationNeedsAValidLastResortKEMPreKey() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice")
            try await relay.connect { connection in
                guard case .register(var register) = alice.register(nonce: connection.nonce) else { return }
                register.device.clearLastResortKemPrekey()
                #expect(try await connection.request(.register(register)).errorCode == .malformedFrame)
                register.device.lastResortKemPrekey = alice.kemPreKey(id: 1, lastResort: true)
                register.device.lastResortKemPrekey.signature[0] ^= 1
                #expect(try await connection.request(.register(register)).errorCode == .invalidSignature)
                register.device.lastResortKemPrekey = alice.kemPreKey(id: 1, lastResort: false)
                #expect(try await connection.request(.register(register)).errorCode == .invalidArgument, "a one-time key as last resort")
                register.device.lastResortKemPrekey = alice.kemPreKey(id: 1, lastResort: true, publicKey: Data(count: 1567))
                #expect(try await connection.request(.register(register)).errorCode == .malformedFrame)
                register.device.lastResortKemPrekey = alice.kemPreKey(id: 1, lastResort: true)
                register.device.oneTimeKemPrekeys = (2...52).map { alice.kemPreKey(id: UInt32($0), lastResort: false) }
                #expect(try await connection.request(.register(register)).errorCode == .invalidArgument, "51 one-time KEM prekeys in one frame")
                register.device.oneTimeKemPrekeys = (2...3).map { alice.kemPreKey(id: UInt32($0), lastResort: false) }
                // Each refused attempt consumed a nonce (`relay.md`, "Challenges"): sign the current one.
                register.challengeSignature = alice.device.signature(for: SignedPayload.authentication(nonce: connection.nonce, handle: "alice"))
                guard case .registerResult = try await connection.request(.register(register)).body else {
                    Issue.record("a valid registration was refused")
                    return
                }
            }
        }
    }

    @Test func bundlesCarryOneTimeKEMPreKeysOnceThenTheLastResortOne() async throws {
        try await RelayHarness.run { relay in
            let alice = TestIdentity("alice"), bob = TestIdentity("bob")
            try await relay.connect { connection in
                guard case .register(var register) = bob.register(nonce: connection.nonce) else { return }
                register.device.oneTimeKemPrekeys = [bob.kemPreKey(id: 2, lastResort: false)]
                _ = try await connection.request(.register(register))
            }
            try await relay.connect { connection in
                _ = try await connection.register(alice)
                try await connection.authenticate(alice)
                var fetch = WireFetchPreKeyBundle()
                fetch.handle = "bob"
                var handedOut: [(UInt32, Bool)] = []
                for _ in 0..<3 {
                    guard case .prekeyBundle(let bundle) = try await connection.request(.fetchPrekeyBundle(fetch)).body else { return }
                    let key = bundle.devices[0].kemPrekey
                    #expect(key.publicKey.count == WireConstants.kemPublicKeyLength)
                    handedOut.append((key.id, key.lastResort))
                }
                #expect(handedOut.map(\.0) == [2, 1, 1])
                #expect(handedOut.map(\.1) == [false, true, true])
                // Publishing: ids must exceed every earlier id of their kind.
                var publish = WirePublishPreKeys()
                publish.oneTimeKemPrekeys = [alice.kemPreKey(id: 1, lastResort: false)]
                #expect(try await connection.request(.publishPrekeys(publish)).errorCode == .prekeyIDReused, "id 1 is the last-resort key's")
                publish.oneTimeKemPrekeys = [alice.kemPreKey(id: 5, lastResort: false), alice.kemPreKey(id: 6, lastResort: false)]
                guard case .prekeyStatus(let status) = try await connection.request(.publishPrekeys(publish)).body else {
                    Issue.record("publishing fresh ids was refused")
                    return
                }
                #expect(status.oneTimeKemPrekeysRemaining == 2)
                #expect(try await connection.request(.publishPrekeys(publish)).errorCode == .prekeyIDReused, "the same batch again")
                publish = WirePublishPreKeys()
                publish.oneTimePrekeys = alice.deviceKeys(oneTimePreKeys: 1, startingAt: 3).oneTimePrekeys
                #expect(try await connection.request(.publishPrekeys(publish)).errorCode == .prekeyIDReused, "registered one-time ids were 1-5")
            }
        }
    }
}
