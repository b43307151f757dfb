import FlitzCrypto
import FlitzWire
import Foundation
import GRDB

/// Abuse reports (`protocol/conversations.md` section 10): the only way plaintext ever reaches the relay, and
/// only by the recipient's choice.
public enum ReportLimits {
    /// Context messages on each side of the reported one when `--context` is not given.
    public static let defaultContext = 5
    /// Most context messages on each side.
    public static let maxContext = 20
    /// Context texts are cut to this many UTF-8 bytes (the reported message is sent whole).
    public static let maxContextTextBytes = 4_096
}

extension FlitzClient {
    /// Builds the `AbuseReport` of the message `messageID` that `author` (not this account) sent: it, and up to
    /// `context` messages before and after it in that conversation as this device shows them (decrypted text,
    /// author, `accepted_at_ms`; context texts cut to 4 096 bytes), `reason` and this device's clock; signs
    /// "FlitzAbuseReport-v1" ‖ 0x00 ‖ report with the device identity key and sends `SubmitReport`. Returns the
    /// relay's 16-byte report id.
    /// - Throws: `ClientError(.unknownMessage)` when no message from someone else has that id here;
    ///   `.invalidArgument` for `context` outside 0…20 or a reason over 1 000 bytes; `.refused` (for example
    ///   `RATE_LIMITED`, 10 reports per hour); `.relayUnreachable`.
    public func report(messageID: Data, context: Int = ReportLimits.defaultContext, reason: String = "") async throws -> Data {
        let account = try requireAccount()
        guard (0...ReportLimits.maxContext).contains(context) else {
            throw ClientError(.invalidArgument, "--context takes 0 to \(ReportLimits.maxContext) messages")
        }
        guard reason.utf8.count <= ConversationTokens.maxReportReasonBytes else {
            throw ClientError(.invalidArgument, "the reason is \(reason.utf8.count) bytes; at most \(ConversationTokens.maxReportReasonBytes)")
        }
        let report = try await store.dbQueue.read { db -> WireAbuseReport in
            guard let target = try Row.fetchOne(
                db,
                sql: "SELECT seq, peer, deleted FROM messages WHERE message_id = ? AND outgoing = 0 AND transcript = 0 AND kind = 'text' ORDER BY seq LIMIT 1",
                arguments: [messageID])
            else {
                throw ClientError(.unknownMessage, "no message from someone else with id \(messageID.hexString) on this device")
            }
            let seq: Int64 = target["seq"], peer: String = target["peer"]
            guard target["deleted"] as Int64 == 0 else {
                throw ClientError(.invalidArgument, "that message was deleted or disappeared; there is nothing left to report")
            }
            // Context: shown messages only; mutations (reactions, edits, receipts) and deleted or disappeared ones
            // are not messages anyone can read any more (newcomer review: they went out as empty entries).
            let visible = "kind = 'text' AND deleted = 0"
            let before = try Row.fetchAll(
                db, sql: "SELECT * FROM messages WHERE peer = ? AND seq < ? AND \(visible) ORDER BY seq DESC LIMIT ?", arguments: [peer, seq, context])
            let reported = try Row.fetchOne(db, sql: "SELECT * FROM messages WHERE seq = ?", arguments: [seq])
            let after = try Row.fetchAll(
                db, sql: "SELECT * FROM messages WHERE peer = ? AND seq > ? AND \(visible) ORDER BY seq LIMIT ?", arguments: [peer, seq, context])
            var report = WireAbuseReport()
            report.reportedHandle = peer
            report.reason = reason
            report.createdAtMs = Int64(self.now().timeIntervalSince1970 * 1000)
            let rows: [Row] = Array(before.reversed()) + (reported.map { [$0] } ?? []) + after
            report.messages = rows.map { row in
                var message = WireReportedMessage()
                message.messageID = row["message_id"]
                let outgoing: Bool = row["outgoing"]
                message.authorHandle = outgoing ? account.handle : peer
                message.acceptedAtMs = row["accepted_at_ms"]
                let isReported = row["seq"] as Int64 == seq
                message.reported = isReported
                let text: String = row["text"]
                message.text = isReported ? text : Self.truncatedUTF8(text, maxBytes: ReportLimits.maxContextTextBytes)
                return message
            }
            return report
        }
        let bytes: Data
        do {
            bytes = try report.serializedData()
        } catch {
            throw ClientError(.protocolFailure, "could not encode the report")
        }
        guard bytes.count <= ConversationTokens.maxReportBytes else {
            throw ClientError(.invalidArgument, "the report is \(bytes.count) bytes; at most \(ConversationTokens.maxReportBytes): use a smaller --context")
        }
        var submit = WireSubmitReport()
        submit.report = bytes
        submit.signature = account.device.privateKey.signature(for: ConversationTokens.reportSignaturePayload(bytes))
        let frame = submit
        return try await withAuthenticatedConnection(account) { connection in
            guard case .reportResult(let result) = try await connection.request(.submitReport(frame)).body else {
                throw ClientError(.protocolFailure, "unexpected answer to a report")
            }
            return result.reportID
        }
    }

    /// `text` cut to at most `maxBytes` UTF-8 bytes at a scalar boundary.
    static func truncatedUTF8(_ text: String, maxBytes: Int) -> String {
        guard text.utf8.count > maxBytes else { return text }
        var out = String.UnicodeScalarView()
        var count = 0
        for scalar in text.unicodeScalars {
            let size = String(scalar).utf8.count
            guard count + size <= maxBytes else { break }
            out.append(scalar)
            count += size
        }
        return String(out)
    }
}
