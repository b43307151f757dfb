import FlitzStore
import Synchronization
import Testing

@testable import FlitzRelay

/// `ConnectionRegistry.claim` with cluster epochs (sec-claims, finding 12 of the cluster security review): two
/// logins of one device on one node whose claims reach the registry out of epoch order leave the larger epoch (the
/// device's live claim in the database) registered, and the other connection is told to close.
@Suite struct ClusterClaimRegistryTests {
    /// Records the signals one connection was sent.
    final class Signals: Sendable {
        private let received = Mutex<[String]>([])
        var all: [String] { received.withLock { $0 } }
        func record(_ signal: ConnectionSignal) {
            let name = switch signal {
            case .wake: "wake"
            case .close: "close"
            case .onlineOnly: "onlineOnly"
            }
            received.withLock { $0.append(name) }
        }
    }

    static let device = DeviceAddress(handle: "alice", deviceID: 1)

    @Test func aSmallerEpochNeverReplacesALargerOne() {
        let registry = ConnectionRegistry()
        let newer = Signals(), older = Signals()
        // The connection with epoch 8 registers first; the one with epoch 7 (its claim committed earlier) after.
        registry.claim(Self.device, connectionID: 2, epoch: 8) { newer.record($0) }
        registry.claim(Self.device, connectionID: 1, epoch: 7) { older.record($0) }
        #expect(older.all == ["close"])
        #expect(newer.all.isEmpty)
        let local = registry.localConnections()
        #expect(local.map(\.connectionID) == [2] && local.map(\.epoch) == [8])
        // The closing connection's release leaves the live one registered.
        registry.release(Self.device, connectionID: 1)
        #expect(registry.isConnected(Self.device))
        // In order (a larger epoch after a smaller one), the older is replaced as before.
        let newest = Signals()
        registry.claim(Self.device, connectionID: 3, epoch: 9) { newest.record($0) }
        #expect(newer.all == ["close"])
        #expect(newest.all.isEmpty)
        #expect(registry.localConnections().map(\.connectionID) == [3])
    }

    @Test func aSingleRelayStillReplacesByArrival() {
        let registry = ConnectionRegistry()
        let first = Signals(), second = Signals()
        registry.claim(Self.device, connectionID: 1) { first.record($0) }
        registry.claim(Self.device, connectionID: 2) { second.record($0) }
        #expect(first.all == ["close"])
        #expect(second.all.isEmpty)
        #expect(registry.localConnections().map(\.connectionID) == [2])
    }
}
