import FlitzCrypto
import FlitzProtocol
import Foundation
import GRDB
import Testing

@testable import FlitzClient

@Suite(.serialized)
struct VerificationTests {
    @Test func verifyMarksAContactOnlyWhenTheNumberMatches() async throws {
        let relay = try await InProcessRelay()
        let (alice, bob) = try await relay.aliceAndBob()
        _ = try await alice.send(to: "bob", text: "hi")
        #expect(try await bob.receiveAll().texts == ["hi"])

        let shown = try alice.verification(of: "bob")
        let other = try bob.verification(of: "alice")
        #expect(shown.state == .unverified && other.state == .unverified)
        #expect(shown.safetyNumber == other.safetyNumber, "both people see the same number")
        #expect(shown.scannable == other.scannable)
        #expect(shown.safetyNumber.count == 35 && shown.scannable.count == 73 && shown.scannable.hasPrefix("FLITZSN1:"))

        // A wrong number, a truncated one, or the right digits in the wrong order mark nothing.
        let digits = shown.safetyNumber.filter(\.isNumber)
        let lastDigit = try #require(digits.last?.wholeNumberValue)
        let wrongNumbers = [
            String(digits.dropLast()) + String((lastDigit + 1) % 10), String(digits.dropLast()), "", String(digits.reversed()),
            digits + "0",
        ]
        for wrong in wrongNumbers where wrong != digits {
            let error = #expect(throws: ClientError.self) { try alice.verify("bob", safetyNumber: wrong) }
            #expect(error?.kind == .safetyNumberMismatch && error?.exitCode == 1)
        }
        #expect(try alice.verification(of: "bob").state == .unverified)
        #expect(try alice.contacts().map(\.state) == [.unverified])

        // The digits as read out, spaces optional.
        #expect(try alice.verify("bob", safetyNumber: digits).state == .verified)
        #expect(try alice.verify("bob", safetyNumber: shown.safetyNumber).state == .verified)
        #expect(try alice.verification(of: "bob").state == .verified)
        #expect(try alice.contacts().map { "\($0.handle) \($0.state)" } == ["bob verified"])

        // Bob scans alice's code instead; hex case does not matter, one changed digit does.
        var tampered = Array(other.scannable)
        tampered[tampered.count - 1] = tampered.last == "0" ? "1" : "0"
        for wrong in [String(tampered), "FLITZSN1:", other.safetyNumber, String(other.scannable.dropLast())] {
            let error = #expect(throws: ClientError.self) { try bob.verify("alice", scanned: wrong) }
            #expect(error?.kind == .safetyNumberMismatch)
        }
        #expect(try bob.verification(of: "alice").state == .unverified)
        #expect(try bob.verify("alice", scanned: other.scannable.lowercased()).state == .verified)

        let unknown = #expect(throws: ClientError.self) { try alice.verify("carol", safetyNumber: digits) }
        #expect(unknown?.kind == .invalidArgument)
        await relay.stop()
    }

    @Test func anIdentityChangeRemovesTheMarkAndBlocksSendingUntilTrusted() async throws {
        let relay = try await InProcessRelay()
        let alice = try relay.client("alice"), bob = try relay.client("bob")
        let code = try await alice.initialize(relayURL: relay.url, handle: "alice")
        _ = try await bob.initialize(relayURL: relay.url, handle: "bob")
        _ = try await alice.send(to: "bob", text: "hi")
        #expect(try await bob.receiveAll().texts == ["hi"])
        let oldNumber = try bob.verification(of: "alice").safetyNumber
        #expect(try bob.verify("alice", safetyNumber: oldNumber).state == .verified)

        // Alice's handle moves to new keys (a new phone, or someone holding her recovery code).
        let newPhone = try relay.client("alice-new-phone")
        _ = try await newPhone.initialize(relayURL: relay.url, handle: "alice", recoveryCode: code)
        _ = try await newPhone.send(to: "bob", text: "new phone")
        #expect(try await bob.sync(onWarning: { _ in }) == 1)

        let changed = try bob.verification(of: "alice")
        #expect(changed.state == .identityChanged)
        #expect(changed.safetyNumber != oldNumber)
        #expect(changed.safetyNumber == (try newPhone.verification(of: "bob")).safetyNumber, "the number shown is the new key's")
        #expect(try bob.contacts().map(\.state) == [.identityChanged])
        // Neither verifying nor sending works before `trust`; both exit 4.
        let early = #expect(throws: ClientError.self) { try bob.verify("alice", safetyNumber: changed.safetyNumber) }
        #expect(early?.kind == .identityChanged && early?.exitCode == 4)
        let blocked = await #expect(throws: ClientError.self) { _ = try await bob.send(to: "alice", text: "who is this?") }
        #expect(blocked?.kind == .identityChanged)

        // Trusting the new key unblocks sending but does not carry the old verification over.
        _ = try await bob.trust("alice", expectedSafetyNumber: changed.safetyNumber)
        #expect(try bob.verification(of: "alice").state == .unverified)
        _ = try await bob.send(to: "alice", text: "ok")
        #expect(try await newPhone.receiveAll().texts == ["ok"])
        let stale = #expect(throws: ClientError.self) { try bob.verify("alice", safetyNumber: oldNumber) }
        #expect(stale?.kind == .safetyNumberMismatch, "the old key's number no longer verifies")
        #expect(try bob.verify("alice", safetyNumber: changed.safetyNumber).state == .verified)
        await relay.stop()
    }

    /// Store level, as the network cannot bring an old key back: once another key has been seen, the
    /// verification is gone for good, even when the verified key becomes the trusted one again.
    @Test func aVerifiedKeyThatComesBackIsNotVerifiedAgain() throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-verify-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: home) }
        let store = try ClientStore(home: home)
        let first = Data(repeating: 1, count: 32), second = Data(repeating: 2, count: 32)
        func verified() throws -> Bool { try #require(try store.contact("bob")).isVerified }
        try store.transaction { db in
            try ClientStore.trustIdentity("bob", key: first, db)
            try ClientStore.markVerified("bob", key: first, db)
        }
        #expect(try verified())
        try store.transaction { db in try ClientStore.recordUntrustedIdentity("bob", key: second, db) }
        #expect(try !verified())
        try store.transaction { db in try ClientStore.trustIdentity("bob", key: second, db) }
        #expect(try !verified())
        try store.transaction { db in
            try ClientStore.recordUntrustedIdentity("bob", key: first, db)
            try ClientStore.trustIdentity("bob", key: first, db)
        }
        #expect(try !verified())
        #expect(try store.contact("bob")?.verifiedIdentityKey == nil)
    }

    @Test func aVersion2DatabaseUpgradesWithItsContactsUnverified() throws {
        let home = FileManager.default.temporaryDirectory.appendingPathComponent("flitz-migration-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: home) }
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        let key = Data(repeating: 9, count: 32)
        do {
            let queue = try DatabaseQueue(path: home.appendingPathComponent(ClientStore.fileName).path)
            try ClientStore.migrator.migrate(queue, upTo: "v2")
            try queue.write { db in
                try db.execute(sql: "INSERT INTO contacts (handle, trusted_identity_key) VALUES ('bob', ?)", arguments: [key])
            }
        }
        let store = try ClientStore(home: home)
        #expect(try store.dbQueue.read { db in try ClientStore.migrator.appliedMigrations(db) } == ["v1", "v2", "v3-verified", "v4-pqxdh", "v5-devices", "v6-push", "v7-conversations", "v8-safety", "v9-attachments", "v10-media"])
        let contact = try #require(try store.contact("bob"))
        #expect(contact.trustedIdentityKey == key)
        #expect(contact.verifiedIdentityKey == nil && !contact.isVerified)
    }
}
