import FlitzProtocol
import FlitzWire
import Foundation
import GRDB

// Replies, reactions, edits, deletes, unsend, forwarding, sealed seen receipts, read sync and disappearing
// messages on the client (`protocol/conversations.md` sections 2-5, 7, 8).

extension FlitzClient {
    /// Applies a reaction, edit, delete for everyone, disappearing timer or seen (or a sent transcript of one) from
    /// `sender`, inside the transaction that stored the session. Returns warnings for rejected mutations
    /// (`protocol/conversations.md` section 3).
    static func applyConversationContent(
        _ content: MessageContent, sender: String, envelope: WireEnvelope, account: AccountRecord, _ db: Database
    ) throws -> [ClientEvent] {
        [.warning("ignored a message from \(sender) of a kind this version does not apply yet")]
    }
}

extension ClientStore {
    /// Migration `v7-conversations`: the tables and columns of replies, reactions, edits, deletes, unsend tokens
    /// and disappearing timers.
    static func migrateConversations(_ db: Database) throws {}
}
