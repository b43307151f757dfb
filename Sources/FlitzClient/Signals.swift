import FlitzProtocol
import FlitzWire
import Foundation
import GRDB

// Typing and presence (online-only), scheduled send, blocking, message requests and abuse reports on the client
// (`protocol/conversations.md` sections 6, 8, 9, 10).

extension FlitzClient {
    /// Applies a typing or presence signal from `sender` (`protocol/conversations.md` section 6).
    static func applySignal(
        _ content: MessageContent, sender: String, envelope: WireEnvelope, account: AccountRecord, _ db: Database
    ) throws -> [ClientEvent] {
        []
    }
}

extension ClientStore {
    /// Migration `v8-safety`: scheduled messages, the block list copy, message-request state, presence settings.
    static func migrateSafety(_ db: Database) throws {}

    /// Whether the conversation with `handle` is a message request (`protocol/conversations.md` section 9): it
    /// has messages from `handle` and this account never wrote to it (transcripts count) nor accepted it.
    static func isMessageRequest(_ handle: String, _ db: Database) throws -> Bool {
        let wrote = try Bool.fetchOne(db, sql: "SELECT 1 FROM messages WHERE peer = ? AND outgoing = 1 LIMIT 1", arguments: [handle]) ?? false
        return !wrote
    }
}
