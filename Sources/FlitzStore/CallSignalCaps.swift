/// The caps on call signals held for one device (`protocol/calls.md` 3.2), as a pure function shared by every
/// `CallSignalStore` and by the relay's in-memory broker (`CallSignalBroker.add`).
///
/// A device holds at most `maxPerSender` (8) signals from one sending account and `maxPerDevice` (64) in all. When a
/// new signal would exceed a cap, one held signal is dropped: the oldest non-offer of its sending account when that
/// account is at its cap; otherwise, when the device is full, of the account holding the most (the new signal
/// counted; ties: the account with the oldest signal). An offer is dropped (its account's oldest) only to make room
/// for another offer. When no signal may go, the new one itself is dropped.
public enum CallSignalCaps {
    /// Most signals held for one device (`calls.md` 3.2 and 10).
    public static let maxPerDevice = 64
    /// Most signals held for one device from one sending account (`calls.md` 3.2 and 10).
    public static let maxPerSender = 8

    /// One held signal as the caps see it: who sent it (the sending account's handle) and whether it is an offer.
    public struct Entry: Hashable, Sendable {
        /// The sending account's handle.
        public var sender: String
        /// Whether it is an offer.
        public var isOffer: Bool

        /// An entry from `sender`, an offer or not.
        public init(sender: String, isOffer: Bool) {
            self.sender = sender
            self.isOffer = isOffer
        }
    }

    /// What to do to add one signal to a device's held list.
    public enum Decision: Hashable, Sendable {
        /// Keep the new signal, dropping nothing.
        case keep
        /// Keep the new signal and drop the held one at this index of the list.
        case keepDropping(Int)
        /// Drop the new signal (nothing held may go for it).
        case dropNew
    }

    /// The decision for adding `new` to `held` (the device's unexpired held signals, oldest first).
    public static func decide(adding new: Entry, to held: [Entry]) -> Decision {
        // Among `indices` (oldest first): the oldest that is not an offer, or for a new offer the oldest.
        func victim(among indices: [Int]) -> Int? {
            indices.first { !held[$0].isOffer } ?? (new.isOffer ? indices.first : nil)
        }
        let own = held.indices.filter { held[$0].sender == new.sender }
        if own.count >= maxPerSender {
            return victim(among: own).map(Decision.keepDropping) ?? .dropNew
        }
        guard held.count >= maxPerDevice else { return .keep }
        var bySender: [String: [Int]] = [:]
        for position in held.indices { bySender[held[position].sender, default: []].append(position) }
        let ranked = bySender.sorted { a, b in
            let countA = a.value.count + (a.key == new.sender ? 1 : 0), countB = b.value.count + (b.key == new.sender ? 1 : 0)
            return countA != countB ? countA > countB : a.value[0] < b.value[0]
        }
        for (_, indices) in ranked {
            if let index = victim(among: indices) { return .keepDropping(index) }
        }
        return .dropNew
    }
}
