import FlitzCrypto
import FlitzProtocol
import FlitzWire
import Foundation
import GRDB
import Testing

@testable import FlitzClient

/// Findings of the security review of the multi-device code (issue 4): the primary does not trust the id in a
/// link's done message, and no session is encrypted on unless the accepted list holds its device with its key.
@Suite struct DeviceSecurityTests {
    static func key(_ byte: UInt8) -> Data { Data(repeating: byte, count: 32) }

    static func info(_ id: UInt32, _ key: Data) -> WireDeviceInfo {
        var info = WireDeviceInfo()
        info.deviceID = id
        info.deviceIdentityKey = key
        return info
    }

    static func list(_ account: AccountIdentity, _ entries: [(UInt32, Data)]) throws -> SignedDeviceList {
        try SignedDeviceList.signed(
            DeviceListPayload(
                accountIdentityKey: account.publicKey.rawRepresentation, version: 1, issuedAtMs: 1,
                entries: entries.map { .init(deviceID: $0.0, deviceIdentityKey: $0.1) }),
            with: account)
    }

    /// A hostile relay answering the new device's RegisterDevice with the primary's own id (or a listed id, or
    /// an old one, or one it does not hold) makes linking stop before anything is signed; the list never
    /// leaves out the primary.
    @Test func theLinkedDeviceIDFromTheDoneMessageIsChecked() throws {
        let account = AccountIdentity()
        let own = DeviceListPayload.Entry(deviceID: 1, deviceIdentityKey: Self.key(1))
        let newKey = Self.key(9)
        func entries(_ accepted: SignedDeviceList?, _ id: UInt32, relay: [WireDeviceInfo]? = nil) throws -> [DeviceListPayload.Entry] {
            try FlitzClient.entriesAddingLinkedDevice(
                accepted: accepted, own: own, linked: .init(deviceID: id, deviceIdentityKey: newKey),
                relayDevices: relay ?? [Self.info(1, Self.key(1)), Self.info(id, newKey)])
        }
        func refused(_ body: () throws -> [DeviceListPayload.Entry], sourceLocation: SourceLocation = #_sourceLocation) {
            do {
                let entries = try body()
                Issue.record("accepted: \(entries.map(\.deviceID))", sourceLocation: sourceLocation)
            } catch let error as ClientError {
                #expect(error.kind == .protocolFailure, sourceLocation: sourceLocation)
            } catch {
                Issue.record("\(error)", sourceLocation: sourceLocation)
            }
        }
        let onlyOwn = try Self.list(account, [(1, Self.key(1))])
        // The primary's own id: the list would map it to the new key and drop the primary.
        refused { try entries(onlyOwn, 1) }
        refused { try entries(nil, 1) }
        // A listed id under another key.
        let two = try Self.list(account, [(1, Self.key(1)), (3, Self.key(3))])
        refused { try entries(two, 3) }
        // Not above every listed id.
        refused { try entries(two, 2) }
        // Not held by the relay with this key.
        refused { try entries(two, 4, relay: [Self.info(4, Self.key(4))]) }
        refused { try entries(two, 4, relay: []) }
        // A list that already leaves out the primary is not extended.
        refused { try entries(try Self.list(account, [(2, Self.key(2))]), 3) }
        // The honest cases: a new id above the others, and a repeat of the same device.
        let added = try entries(two, 4)
        #expect(added.map(\.deviceID).sorted() == [1, 3, 4])
        #expect(added.contains { $0.deviceID == 4 && $0.deviceIdentityKey == newKey })
        let first = try entries(nil, 2)
        #expect(first.map(\.deviceID).sorted() == [1, 2])
        let repeated = try entries(try Self.list(account, [(1, Self.key(1)), (2, newKey)]), 2)
        #expect(repeated.map(\.deviceID).sorted() == [1, 2])
    }

    /// A session whose remote device identity key is not the one the accepted list gives its device id (as a
    /// session started under version 1's rule with a device later relabelled) is never encrypted on: sending
    /// starts a new session with the listed key; and accepting a list deletes such sessions.
    @Test func onlySessionsWithTheListedDeviceKeyAreUsedAndKept() async throws {
        let relay = try await InProcessRelay()
        let (alice1, _, bob1, bob2) = try await relay.twoDevicesEach()
        _ = try await alice1.send(to: "bob", text: "first")
        #expect(try await bob2.receiveAll().texts == ["first"])
        let bob1Key = try #require(try bob1.store.loadAccount()).device.publicKey.rawRepresentation
        let bob2Key = try #require(try bob2.store.loadAccount()).device.publicKey.rawRepresentation
        func remoteKeys(_ deviceID: UInt32) throws -> [Data] {
            try alice1.store.sessions(with: "bob").filter { $0.deviceID == deviceID }.map(\.session.remoteCertificate.deviceIdentityKey.rawRepresentation)
        }
        func plant(asDevice deviceID: UInt32, active: Bool) throws {
            try alice1.store.transaction { db in
                let session = try #require(try ClientStore.sessions(with: "bob", db).first { $0.deviceID == 1 && $0.active }).session
                try ClientStore.save(session, handle: "bob", deviceID: deviceID, makeActive: active, db)
            }
        }
        // bob's device 1 session, labelled device 2 and made the active one for device 2.
        try plant(asDevice: 2, active: true)
        _ = try await alice1.send(to: "bob", text: "second")
        #expect(try await bob2.receiveAll().texts == ["second"])
        let active2 = try #require(try alice1.store.sessions(with: "bob").first { $0.deviceID == 2 && $0.active })
        #expect(active2.session.remoteCertificate.deviceIdentityKey.rawRepresentation == bob2Key)

        // Accepting a list (here bob's next one, with a third device) deletes every session not under a listed key.
        _ = try await relay.link("bob3", to: bob1)
        do {
            _ = try await alice1.send(to: "bob", text: "not yet")
            Issue.record("sent to a device not accepted")
        } catch let error as ClientError {
            #expect(error.kind == .identityChanged)
        }
        try plant(asDevice: 3, active: false)
        #expect(try remoteKeys(3) == [bob1Key])
        #expect(try remoteKeys(2).contains(bob1Key))
        _ = try await alice1.trust("bob")
        #expect(try remoteKeys(3).isEmpty)
        let kept = try remoteKeys(2)
        #expect(!kept.isEmpty && kept.allSatisfy { $0 == bob2Key })
        #expect(try remoteKeys(1).allSatisfy { $0 == bob1Key })
        await relay.stop()
    }
}
