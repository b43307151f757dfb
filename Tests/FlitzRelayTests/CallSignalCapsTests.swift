@testable import FlitzRelay
import FlitzStore
import FlitzWire
import Foundation
import Testing

/// `FlitzStore.CallSignalCaps` (the caps PostgreSQL's `PostgresCallSignalStore` applies) and the in-memory broker's
/// `CallSignalBroker.add`, which applies it to its `Item`s (`calls.md` 3.2): the broker must keep the same signals,
/// step by step, for any sequence of additions.
@Suite struct CallSignalCapsTests {
    /// A small seeded generator (SplitMix64), so a failure replays.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func capsAgreeWithTheBroker(seed: UInt64) {
        var random = SplitMix(state: seed)
        var brokerList: [CallSignalBroker.Item] = []
        var capsList: [CallSignalCaps.Entry] = []
        // Few accounts (hitting the per-account cap) in early rounds, many (hitting the per-device cap) later.
        for step in 0..<3_000 {
            let accounts = step < 1_500 ? 3 : 14
            let sender = "s\(Int.random(in: 0..<accounts, using: &random))"
            let isOffer = Int.random(in: 0..<10, using: &random) < 3
            var delivery = WireCallSignalDelivery()
            delivery.senderHandle = sender
            delivery.kind = isOffer ? .callOffer : .callIce
            delivery.sequence = UInt32(step)
            delivery.expiresAtMs = 1_000_000
            let (dropped, kept) = CallSignalBroker.add(CallSignalBroker.Item(serial: UInt64(step), delivery: delivery), to: &brokerList)

            let entry = CallSignalCaps.Entry(sender: sender, isOffer: isOffer)
            switch CallSignalCaps.decide(adding: entry, to: capsList) {
            case .keep:
                capsList.append(entry)
                #expect(kept && dropped == 0, "step \(step)")
            case .keepDropping(let index):
                capsList.remove(at: index)
                capsList.append(entry)
                #expect(kept && dropped == 1, "step \(step)")
            case .dropNew:
                #expect(!kept && dropped == 1, "step \(step)")
            }
            let brokerEntries = brokerList.map { CallSignalCaps.Entry(sender: $0.delivery.senderHandle, isOffer: $0.delivery.kind == .callOffer) }
            if brokerEntries != capsList {
                Issue.record("lists differ after step \(step)")
                return
            }
            #expect(capsList.count <= CallSignalCaps.maxPerDevice)
            // Occasionally the device takes everything.
            if Int.random(in: 0..<200, using: &random) == 0 {
                brokerList.removeAll()
                capsList.removeAll()
            }
        }
    }
}
