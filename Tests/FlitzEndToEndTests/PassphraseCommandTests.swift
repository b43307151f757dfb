import Foundation
import Testing

/// `flitz init --passphrase`, `FLITZ_PASSPHRASE` and `flitz passphrase set|change|remove` with the real binaries
/// (docs/storage-at-rest.md). `FLITZ_TEST_PWHASH=minimum` (debug builds only) keeps each derivation cheap.
@Suite(.serialized)
struct PassphraseCommandTests {
    @Test func sealedHomeAsksEveryCommandAndChangesRoundTrip() throws {
        let scratch = try Scratch()
        let relay = try RelayProcess(database: scratch.path("relay.sqlite"), log: scratch.path("relay.log"))
        defer { relay.stop() }
        let aliceHome = scratch.path("alice")
        let bob = User(name: "bob", home: scratch.path("bob"), scratch: scratch)
        let first = "tr0ub4dor&3 first", second = "correct horse battery staple"
        func alice(_ arguments: [String], passphrase: String?, new: String? = nil) throws -> CommandResult {
            var environment = ["FLITZ_TEST_PWHASH": "minimum"]
            environment["FLITZ_PASSPHRASE"] = passphrase
            environment["FLITZ_NEW_PASSPHRASE"] = new
            let result = try runProcess(Binaries.flitz, arguments + ["--home", aliceHome.path], environment: environment, in: scratch)
            for secret in [first, second] {
                #expect(!result.stdout.contains(secret) && !result.stderr.contains(secret), "the passphrase is never printed")
            }
            return result
        }

        let created = try alice(["init", "--relay", relay.url, "--handle", "alice", "--passphrase"], passphrase: first)
        #expect(created.status == 0, "\(created)")
        #expect(try bob.flitz("init", "--relay", relay.url, "--handle", "bob").status == 0)
        let sent = try alice(["send", "bob", "sealed hello"], passphrase: first)
        #expect(sent.status == 0, "\(sent)")
        let received = try bob.flitz("receive")
        #expect(received.lines.count == 1 && received.stdout.contains("alice: sealed hello"), "\(received)")

        let missing = try alice(["receive"], passphrase: nil)
        #expect(missing.status == 77, "\(missing)")
        #expect(missing.stderr.contains("the passphrase is needed: run on a terminal or set FLITZ_PASSPHRASE"), "\(missing)")
        let storeFile = aliceHome.appendingPathComponent("flitz.sqlite")
        let before = try Data(contentsOf: storeFile)
        let wrong = try alice(["send", "bob", "never sent"], passphrase: "not it")
        #expect(wrong.status == 77, "\(wrong)")
        #expect(wrong.stderr == "flitz: wrong passphrase\n", "\(wrong)")
        #expect(try Data(contentsOf: storeFile) == before, "a wrong passphrase changes nothing")
        #expect(before.range(of: Data(first.utf8)) == nil)

        let changed = try alice(["passphrase", "change"], passphrase: first, new: second)
        #expect(changed.status == 0, "\(changed)")
        #expect(try alice(["receive"], passphrase: first).status == 77)
        #expect(try bob.flitz("send", "alice", "to the new key").status == 0)
        #expect(try alice(["receive"], passphrase: second).lines == ["bob: to the new key"])

        let removed = try alice(["passphrase", "remove"], passphrase: second)
        #expect(removed.status == 0, "\(removed)")
        #expect(try alice(["send", "bob", "unsealed again"], passphrase: nil).status == 0)
        #expect(try bob.flitz("receive").lines == ["alice: unsealed again"])

        let set = try alice(["passphrase", "set"], passphrase: first)
        #expect(set.status == 0, "\(set)")
        #expect(try alice(["contacts"], passphrase: nil).status == 77)
        #expect(try alice(["passphrase", "set"], passphrase: first).status == 1, "set twice is refused")
        #expect(try bob.flitz("send", "alice", "sealed once more").status == 0)
        #expect(try alice(["receive"], passphrase: first).lines == ["bob: sealed once more"])
    }
}
