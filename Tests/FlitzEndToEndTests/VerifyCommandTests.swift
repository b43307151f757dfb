import Foundation
import Testing

/// `flitz verify`, `contacts`, `trust` and `safety-number` as a user runs them: outputs and exit codes.
@Suite(.serialized)
struct VerifyCommandTests {
    @Test func verifyMarksOnMatchAndAKeyChangeUndoesIt() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        let alice = User(name: "alice", home: scratch.path("alice"), scratch: scratch)
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
        #expect(try alice.flitz("init", "--relay", relay.url, "--handle", "alice").status == 0)
        let bobInit = try bob.flitz("init", "--relay", relay.url, "--handle", "bob")
        let recoveryCode = try #require(bobInit.lines.first { $0.hasPrefix("recovery code: ") }).dropFirst("recovery code: ".count)
        #expect(try alice.flitz("verify", "bob").status == 1, "no contact before a message was exchanged")
        #expect(try alice.flitz("send", "bob", "hi").status == 0)
        #expect(try bob.flitz("receive").lines == ["[request] alice: hi"])

        // Shown: digits, scannable form, state; both people see the same.
        let shown = try alice.flitz("verify", "bob")
        #expect(shown.status == 0, "\(shown)")
        let (number, scannable) = try forms(shown)
        #expect(number.count == 35 && scannable.count == 73 && scannable.hasPrefix("FLITZSN1:"))
        #expect(shown.lines.last == "status: not verified")
        let bobSees = try forms(bob.flitz("verify", "alice"))
        #expect(bobSees.number == number && bobSees.scannable == scannable)

        // A different number: exit 1, nothing marked. Malformed input: exit 64.
        let wrong = try alice.flitz("verify", "bob", "--safety-number", "00000 00000 00000 00000 00000 00000")
        #expect(wrong.status == 1, "\(wrong)")
        #expect(wrong.stderr.contains("NOT marked verified"), "\(wrong)")
        #expect(try alice.flitz("verify", "bob").lines.last == "status: not verified")
        #expect(try alice.flitz("verify", "bob", "--safety-number", "12345 abcde").status == 64)
        #expect(try alice.flitz("verify", "bob", "--safety-number", number, "--scanned", scannable).status == 64)

        // The number as read out (spaces optional), or the scanned code, marks the contact verified.
        let verified = try alice.flitz("verify", "bob", "--safety-number", number.replacingOccurrences(of: " ", with: ""))
        #expect(verified.status == 0, "\(verified)")
        #expect(verified.lines.last == "status: verified")
        #expect(try alice.flitz("contacts").lines == ["bob: verified"])
        #expect(try bob.flitz("verify", "alice", "--scanned", "FLITZSN1:" + String(repeating: "0", count: 64)).status == 1)
        #expect(try bob.flitz("verify", "alice", "--scanned", scannable).lines.last == "status: verified")

        // Bob's handle moves to new keys: sending and verifying stop (exit 4) until alice trusts the new key,
        // and the verified mark is gone until she verifies again.
        let bob2 = User(name: "bob2", home: scratch.path("bob2"), scratch: scratch)
        #expect(try bob2.flitz("init", "--relay", relay.url, "--handle", "bob", "--recover", String(recoveryCode)).status == 0)
        #expect(try alice.flitz("send", "bob", "still there?").status == 4)
        let changed = try alice.flitz("verify", "bob")
        #expect(changed.status == 0, "\(changed)")
        #expect(changed.lines.last == "status: identity key changed, not trusted yet")
        let newNumber = try forms(changed).number
        #expect(newNumber != number)
        #expect(try alice.flitz("contacts").lines == ["bob: identity key changed, not trusted yet"])
        #expect(try alice.flitz("verify", "bob", "--safety-number", newNumber).status == 4)
        #expect(try alice.flitz("trust", "bob", "--safety-number", newNumber).status == 0)
        #expect(try alice.flitz("verify", "bob").lines.last == "status: not verified")
        #expect(try alice.flitz("send", "bob", "welcome back").status == 0)
        #expect(try alice.flitz("verify", "bob", "--safety-number", newNumber).lines.last == "status: verified")
        #expect(try alice.flitz("safety-number", "bob").lines == [newNumber], "safety-number still prints the digits alone")
        relay.stop()
    }

    /// The digits and the scannable form from `verify`'s output.
    func forms(_ result: CommandResult) throws -> (number: String, scannable: String) {
        let number = try #require(result.lines.first { $0.hasPrefix("safety number: ") }).dropFirst("safety number: ".count)
        let scannable = try #require(result.lines.first { $0.hasPrefix("scannable: ") }).dropFirst("scannable: ".count)
        return (String(number), String(scannable))
    }
}
