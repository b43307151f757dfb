import FlitzCrypto
import Foundation

/// The hashes of unsend and cancel tokens and the abuse-report signature payload, computed alike by clients and
/// the relay (`protocol/conversations.md` sections 5, 8 and 10). The relay sees a token only when its holder
/// presents it, and learns nothing from it it did not already know.
public enum ConversationTokens {
    /// Length of an unsend or cancel token and of their hashes, in bytes.
    public static let length = 32
    /// Latest `not_before_ms` a Submit may ask for, in milliseconds after it (`SCHEDULE_HORIZON`, 30 days).
    public static let scheduleHorizonMilliseconds: Int64 = 30 * 86_400_000
    /// Most scheduled envelopes one account may have waiting (`MAX_SCHEDULED`).
    public static let maxScheduledPerAccount = 1_000
    /// Most handles on one block list (`MAX_BLOCKED`) and per `UpdateBlockList` list.
    public static let maxBlocked = 10_000
    /// Most handles in `UpdateBlockList.block` or `.unblock`.
    public static let maxBlockChangesPerFrame = 100
    /// Largest `SubmitReport.report`, in bytes.
    public static let maxReportBytes = 262_144
    /// Most messages in one `AbuseReport` (the reported one and 20 before and after it).
    public static let maxReportedMessages = 41
    /// Longest `AbuseReport.reason`, in UTF-8 bytes.
    public static let maxReportReasonBytes = 1_000

    /// SHA-256("FlitzUnsendToken-v1" ‖ 0x00 ‖ token): the 32-byte `OutgoingEnvelope.unsend_token_hash` of a 32-byte token.
    public static func unsendTokenHash(_ token: Data) -> Data { labelled("FlitzUnsendToken-v1", token) }

    /// SHA-256("FlitzCancelToken-v1" ‖ 0x00 ‖ token): the 32-byte `OutgoingEnvelope.cancel_token_hash` of a 32-byte token.
    public static func cancelTokenHash(_ token: Data) -> Data { labelled("FlitzCancelToken-v1", token) }

    /// "FlitzAbuseReport-v1" ‖ 0x00 ‖ report: what the reporting device identity key signs (`SubmitReport.signature`).
    public static func reportSignaturePayload(_ report: Data) -> Data {
        var payload = Data("FlitzAbuseReport-v1".utf8)
        payload.append(0)
        payload.append(report)
        return payload
    }

    private static func labelled(_ label: String, _ token: Data) -> Data {
        var input = Data(label.utf8)
        input.append(0)
        input.append(token)
        return SHA256.hash(input)
    }
}
