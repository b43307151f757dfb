import FlitzCrypto
import FlitzStore
import FlitzStoreSQLite
import FlitzWire
import Foundation

/// The operator's view of abuse reports (`flitz-relay reports`, `protocol/conversations.md` 10): who reported whom
/// and when, the reason, and each message with its author, time and text, the reported one marked. This is the only
/// plaintext the relay holds, sent by the reporter's choice; it is printed for the operator and never logged.
public enum ReportListing {
    /// The reports stored in the SQLite database at `databasePath`, oldest first.
    /// - Throws: `StoreError` when the database cannot be opened.
    public static func load(databasePath: String) async throws -> [StoredReport] {
        let store = try SQLiteRelayStore(path: databasePath, makeID: { SystemRandom().bytes(16) })
        return try await store.reports()
    }

    /// One report decoded for display.
    struct Entry: Encodable {
        struct Message: Encodable {
            var messageID: String
            var author: String
            var acceptedAtMs: Int64
            var text: String
            var reported: Bool
        }

        var reportID: String
        var reporterHandle: String
        var reporterDeviceID: UInt32
        var receivedAtMs: Int64
        var reportedHandle: String
        var reason: String
        var createdAtMs: Int64
        var signature: String
        var messages: [Message]
    }

    static func entry(_ stored: StoredReport) throws -> Entry {
        let report = try WireAbuseReport(serializedBytes: stored.report)
        return Entry(
            reportID: hex(stored.reportID), reporterHandle: stored.reporter.handle, reporterDeviceID: stored.reporter.deviceID,
            receivedAtMs: stored.receivedAtMs, reportedHandle: report.reportedHandle, reason: report.reason, createdAtMs: report.createdAtMs,
            signature: hex(stored.signature),
            messages: report.messages.map { message in
                Entry.Message(
                    messageID: hex(message.messageID), author: message.authorHandle, acceptedAtMs: message.acceptedAtMs, text: message.text,
                    reported: message.reported)
            })
    }

    /// Human-readable listing: one block per report, times in ISO 8601 UTC. Reporter-chosen text (reason, message
    /// text) goes through `escaped`, and each message's text is on its own indented line, so a report can neither
    /// forge entries nor send terminal escapes or bidi overrides to the operator's terminal.
    /// - Throws: when a stored report no longer decodes (it was checked when it was stored).
    public static func text(_ reports: [StoredReport]) throws -> String {
        guard !reports.isEmpty else { return "no reports\n" }
        var out = ""
        for stored in reports {
            let entry = try entry(stored)
            out += "report \(entry.reportID)\n"
            out += "  reporter  \(entry.reporterHandle)/\(entry.reporterDeviceID)  at \(time(entry.receivedAtMs))\n"
            out += "  reported  \(entry.reportedHandle)\n"
            out += "  reason    \(entry.reason.isEmpty ? "(none)" : escaped(entry.reason))\n"
            for message in entry.messages {
                out += "  \(message.reported ? "reported" : "message ") \(time(message.acceptedAtMs)) \(escaped(message.author))\n"
                out += "      | \(escaped(message.text))\n"
            }
        }
        return out
    }

    /// The listing as a JSON array (lowerCamelCase keys, bytes as lowercase hex).
    /// - Throws: when a stored report no longer decodes.
    public static func json(_ reports: [StoredReport]) throws -> String {
        guard !reports.isEmpty else { return "[]\n" }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(reports.map(entry)), as: UTF8.self) + "\n"
    }

    /// `text` with every C0 and C1 control, DEL, U+2028/U+2029 and bidi control (U+061C, U+200E, U+200F,
    /// U+202A-U+202E, U+2066-U+2069) written as `\u{…}` (hex), and a backslash as `\\`, so the result is one line
    /// that cannot move the cursor, recolour the terminal or reorder what follows.
    static func escaped(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            let value = scalar.value
            let control = value < 0x20 || (0x7F...0x9F).contains(value) || value == 0x2028 || value == 0x2029 || value == 0x061C
                || value == 0x200E || value == 0x200F || (0x202A...0x202E).contains(value) || (0x2066...0x2069).contains(value)
            if control {
                out += "\\u{\(String(value, radix: 16))}"
            } else if scalar == "\\" {
                out += "\\\\"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    private static func hex(_ data: Data) -> String { data.map { String(format: "%02x", $0) }.joined() }

    private static func time(_ ms: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.string(from: Date(timeIntervalSince1970: Double(ms) / 1_000))
    }
}
