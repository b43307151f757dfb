@testable import FlitzRelay
import FlitzStore
import Foundation
import Testing

/// `flitz-relay reports` prints reporter-chosen text safely (security review of issue 6): a report can neither forge
/// entries nor reach the operator's terminal with escapes or bidi overrides.
@Suite struct ReportListingTests {
    @Test func reporterChosenTextIsEscapedAndCannotForgeEntries() throws {
        let forged = "hi\n  reported 2026-01-01T00:00:00Z mallory: forged\nreport 00\u{1B}[2J\u{9B}31m\u{202E}evil\u{2028}x\u{2066}\\u{a}"
        let data = ConversationRelayTests.report([("alice", forged, true), ("alice", "fine", false)], reason: "spam\r\nreport ff\u{7}")
        let stored = StoredReport(
            reportID: Data(repeating: 1, count: 16), reporter: DeviceAddress(handle: "bob", deviceID: 1), receivedAtMs: 0, report: data,
            signature: Data(repeating: 2, count: 64))
        let listing = try ReportListing.text([stored])
        let lines = listing.split(separator: "\n", omittingEmptySubsequences: false)
        // report, reporter, reported, reason, and two lines per message; then the final newline.
        #expect(lines.count == 4 + 2 * 2 + 1, "\(listing)")
        #expect(lines.filter { $0.hasPrefix("report ") }.count == 1)
        let bad: [Unicode.Scalar] = ["\u{1B}", "\u{9B}", "\u{202E}", "\u{2028}", "\u{2066}", "\u{7}", "\r"]
        #expect(!listing.unicodeScalars.contains { bad.contains($0) })
        #expect(listing.contains(#"hi\u{a}  reported 2026-01-01T00:00:00Z mallory: forged\u{a}report 00\u{1b}[2J\u{9b}31m\u{202e}evil\u{2028}x\u{2066}\\u{a}"#), "\(listing)")
        #expect(listing.contains(#"spam\u{d}\u{a}report ff\u{7}"#))
        #expect(listing.contains("      | fine\n"))
    }
}
