import FlitzCrypto
import FlitzProtocol
import FlitzVectors
import Foundation
import Testing

// Runs every committed vector file through FlitzVectors (the same verifier as `flitz vectors verify`),
// and checks that the verifier does fail: on corrupted copies of the committed vectors, and on an
// implementation that changes state while refusing a message.

enum CommittedVectors {
    static let directory = VectorFiles.repositoryRoot.appendingPathComponent("vectors")

    static func file(_ topic: String) throws -> JSONValue {
        try JSONValue.decode(try Data(contentsOf: directory.appendingPathComponent("\(topic).json")))
    }
}

@Suite struct VectorTests {
    @Test func everyCommittedVectorPasses() throws {
        let report = try VectorVerifier.verifyDirectory(CommittedVectors.directory)
        #expect(report.problems.isEmpty, "\(report.problems)")
        for result in report.results where !result.passed {
            Issue.record("\(result.topic) tcId \(result.tcId) (\(result.comment)): \(result.failure ?? "")")
        }
        #expect(report.results.count >= 150)
    }

    @Test func everyTopicHasAFileAndNegativeVectors() throws {
        let report = try VectorVerifier.verifyDirectory(CommittedVectors.directory)
        #expect(Set(report.results.map(\.topic)) == Set(VectorTopics.all.map(\.name)))
        for topic in VectorTopics.all.map(\.name) where topic != "fingerprint" {
            #expect(report.results.contains { $0.topic == topic && $0.expected == "invalid" }, "\(topic) has no invalid vector")
        }
    }

    /// Every ratchet failure is stateful: each must promise an unchanged state, and the required kinds are there.
    @Test func ratchetFailuresAreComplete() throws {
        let file = try CommittedVectors.file("ratchet")
        let failures = try #require(file.testGroups.first { $0["type"] == .string("decryptFailures") }).tests
        #expect(failures.allSatisfy { $0["state"] == .string("unchanged") })
        let flags = Set(failures.flatMap(\.flags))
        for flag in ["TamperedCiphertext", "UnknownRatchetKey", "TooFarAhead", "Replay", "WrongVersion", "Truncated", "UsesSkippedKey"] {
            #expect(flags.contains(flag), "no decryptFailures vector flagged \(flag)")
        }
        // The conversation exercises skipping through PN and stored keys across DH steps.
        let steps = try #require(file.testGroups.first { $0["type"] == .string("conversation") }).tests
        for flag in ["SkippedThroughPN", "DHRatchetStep", "UsesSkippedKey", "Respond", "Initiate", "PreKeyMessage"] {
            #expect(steps.contains { $0.flags.contains(flag) }, "no conversation step flagged \(flag)")
        }
    }

    @Test func everyFrameBodyKindIsEncoded() throws {
        let encode = try #require(try CommittedVectors.file("frames").testGroups.first { $0["type"] == .string("encode") }).tests
        let kinds = Set(encode.compactMap { test -> String? in if case .string(let kind)? = test["bodyKind"] { kind } else { nil } })
        #expect(
            kinds == [
                "challenge", "error", "registerResult", "authenticateResult", "prekeyBundle", "submitResult", "deliver", "queueDrained",
                "prekeyStatus", "ok", "register", "recover", "authenticate", "publishPrekeys", "fetchPrekeyBundle", "submit", "acknowledge",
                "reportSeen", "unsend", "unsendResult", "cancelScheduled", "cancelScheduledResult", "updateBlockList", "fetchBlockList",
                "blockList", "submitReport", "reportResult", "requestUploadCapability", "uploadCapability",
            ])
    }

    /// conversations.json refuses something for every rule of conversations.md section 2 and encodes every content kind.
    @Test func conversationVectorsCoverEveryRuleAndKind() throws {
        let file = try CommittedVectors.file("conversations")
        let decode = try #require(file.testGroups.first { $0["type"] == .string("decode") }).tests
        let refusedFlags = Set(decode.filter { $0["result"] == .string("invalid") }.flatMap(\.flags))
        for flag in [
            "MessageRef", "BadHandle", "BadLength", "MissingField", "Quote", "TooLong", "BadEmoji", "Edit", "BadVersion", "BadCount", "BadTimer",
            "UnsendToken", "SingleUseSession", "SentTranscript",
        ] {
            #expect(refusedFlags.contains(flag), "no refused conversations vector flagged \(flag)")
        }
        let encode = try #require(file.testGroups.first { $0["type"] == .string("encode") }).tests
        let kinds = Set(encode.compactMap { test -> String? in if case .string(let kind)? = test["body"] { kind } else { nil } })
        #expect(kinds == ["text", "reaction", "edit", "deleteForEveryone", "seen", "typing", "presence", "disappearingTimer", "sentTranscript"])
        let encodeFlags = Set(encode.flatMap(\.flags))
        for flag in ["Quote", "Forward", "NoForward", "ExpireAfter", "ReactionRemove", "SingleUseSession", "UnsendToken"] {
            #expect(encodeFlags.contains(flag), "no encoded conversations vector flagged \(flag)")
        }
        for type in ["messageRef", "tokenHash", "reportSignature"] {
            #expect(file.testGroups.contains { $0["type"] == .string(type) }, "no \(type) group")
        }
    }

    /// attachment.json encrypts across the padding and chunk boundaries, refuses every bad blob of attachments.md 2.5 and
    /// every decoding rule of section 3, and encodes every pointer kind and a location.
    @Test func attachmentVectorsCoverEveryRule() throws {
        let file = try CommittedVectors.file("attachment")
        func group(_ type: String) throws -> [JSONValue] { try #require(file.testGroups.first { $0["type"] == .string(type) }).tests }
        let encryptFlags = Set(try group("encrypt").flatMap(\.flags))
        for flag in ["EmptyFile", "UnderFloor", "Boundary", "MultiChunk", "ShortLastChunk"] {
            #expect(encryptFlags.contains(flag), "no encrypt vector flagged \(flag)")
        }
        let refusedBlobs = Set(try group("decrypt").filter { $0["result"] == .string("invalid") }.flatMap(\.flags))
        for flag in ["HashMismatch", "TamperedChunk", "Truncated", "LastFlag", "Reordered", "Extended", "WrongKey", "NonZeroPadding"] {
            #expect(refusedBlobs.contains(flag), "no refused decrypt vector flagged \(flag)")
        }
        let refusedContent = Set(try group("decode").filter { $0["result"] == .string("invalid") }.flatMap(\.flags))
        for flag in ["Both", "BadLength", "BadChunkSize", "BadSize", "BadKind", "TooLong", "BadFileName", "Thumbnail", "OutOfRange", "NotFinite"] {
            #expect(refusedContent.contains(flag), "no refused decode vector flagged \(flag)")
        }
        let encodeFlags = Set(try group("encode").flatMap(\.flags))
        for flag in ["Image", "Video", "Audio", "VoiceNote", "Document", "Location", "SentTranscript", "Forward"] {
            #expect(encodeFlags.contains(flag), "no encode vector flagged \(flag)")
        }
        #expect(try group("openChunk").contains { $0["result"] == .string("valid") })
        #expect(try group("paddedSize").count >= 20)
    }

    /// The list of bytes fields converted to hex must be exactly the `bytes` fields of the .proto.
    @Test func wireJSONKnowsEveryBytesField() throws {
        let proto = try String(contentsOf: VectorFiles.repositoryRoot.appendingPathComponent("protocol/flitz_wire.proto"), encoding: .utf8)
        var names = Set<String>()
        for line in proto.split(separator: "\n") {
            let words = line.split(separator: " ").map(String.init)
            guard let index = words.firstIndex(of: "bytes"), index + 1 < words.count else { continue }
            let parts = words[index + 1].split(separator: "_")
            names.insert(parts.enumerated().map { $0 == 0 ? String($1) : $1.capitalized }.joined())
        }
        #expect(names == WireJSON.bytesFieldNames)
    }
}

// MARK: - The verifier can fail

/// One deliberate change to a committed vector and what the verifier must say about it.
struct Corruption: CustomTestStringConvertible, Sendable {
    let name: String
    let topic: String
    /// The test to change: the first one in a group of this type matching `where`.
    let groupType: String
    let matching: @Sendable (JSONValue) -> Bool
    let change: @Sendable (inout [String: JSONValue]) -> Void
    /// Words the failure reason must contain.
    let reason: String
    var testDescription: String { name }
}

/// Flips the last hex digit of a hex string.
func flipLastHexDigit(_ value: JSONValue?) -> JSONValue {
    guard case .string(var text)? = value, let last = text.popLast() else { return .string("00") }
    return .string(text + (last == "0" ? "1" : "0"))
}

let corruptions: [Corruption] = [
    Corruption(
        name: "hkdf okm", topic: "hkdf", groupType: "hkdf", matching: { $0["use"] == .string("rootKDF") },
        change: { $0["okm"] = flipLastHexDigit($0["okm"]) }, reason: "okm"),
    Corruption(
        name: "x3dh shared secret", topic: "x3dh", groupType: "agreement", matching: { _ in true },
        change: { $0["sharedSecret"] = flipLastHexDigit($0["sharedSecret"]) }, reason: "sharedSecret"),
    Corruption(
        name: "x3dh party seed", topic: "x3dh", groupType: "agreement", matching: { _ in true },
        change: { test in
            guard case .object(var alice)? = test["alice"] else { return }
            alice["deviceIdentitySeed"] = flipLastHexDigit(alice["deviceIdentitySeed"])
            test["alice"] = .object(alice)
        }, reason: "deviceIdentitySeed"),
    Corruption(
        name: "ratchet message bytes of an encryption", topic: "ratchet", groupType: "conversation",
        matching: { $0["action"] == .string("encrypt") && $0["message"] == .string("a3") },
        change: { $0["sessionMessage"] = flipLastHexDigit($0["sessionMessage"]) }, reason: "Session.encrypt output"),
    Corruption(
        name: "ratchet nonce drawn", topic: "ratchet", groupType: "conversation", matching: { $0["action"] == .string("encrypt") },
        change: { test in
            guard case .array(let draws)? = test["randomBytes"] else { return }
            test["randomBytes"] = .array(draws.map { flipLastHexDigit($0) })
        }, reason: "Session.encrypt output"),
    Corruption(
        name: "ratchet stored skipped key after a step", topic: "ratchet", groupType: "conversation",
        matching: { $0.flags.contains("SkippedThroughPN") },
        change: { test in
            guard case .object(var state)? = test["stateAfter"] else { return }
            state["sessionRecord"] = flipLastHexDigit(state["sessionRecord"])
            test["stateAfter"] = .object(state)
        }, reason: "record"),
    Corruption(
        name: "ratchet intermediate chain key", topic: "ratchet", groupType: "conversation",
        matching: { $0["action"] == .string("decrypt") && $0["chainKey"] != .null },
        change: { $0["chainKey"] = flipLastHexDigit($0["chainKey"]) }, reason: "chainKey"),
    Corruption(
        name: "ratchet failure with another error code", topic: "ratchet", groupType: "decryptFailures",
        matching: { $0.flags.contains("Replay") },
        change: { $0["error"] = VectorErrorRef(FlitzProtocolError.Code.authenticationFailed).json }, reason: "expected FlitzProtocolError.authenticationFailed"),
    Corruption(
        name: "ratchet failure that is in fact a valid message", topic: "ratchet", groupType: "decryptFailures",
        matching: { $0["comment"] == .string("a5 with a ciphertext bit flipped") },
        change: { test in
            // Flipping the same ciphertext bit back restores the genuine message.
            guard case .string(let hex)? = test["ratchetMessage"], var bytes = Data(hexString: hex) else { return }
            bytes[65] ^= 0x01
            test["ratchetMessage"] = .hex(bytes)
        }, reason: "was accepted"),
    Corruption(
        name: "session message byte", topic: "session", groupType: "exchange", matching: { _ in true },
        change: { $0["sessionMessage"] = flipLastHexDigit($0["sessionMessage"]) }, reason: "output"),
    Corruption(
        name: "content padding length", topic: "content", groupType: "encode", matching: { _ in true },
        change: { $0["paddingLength"] = .int(3) }, reason: "paddingLength"),
    Corruption(
        name: "content negative made valid", topic: "content", groupType: "decode", matching: { $0["result"] == .string("invalid") },
        change: { $0["result"] = .string("valid") }, reason: "expected valid"),
    Corruption(
        name: "frame byte", topic: "frames", groupType: "encode", matching: { $0["bodyKind"] == .string("deliver") },
        change: { $0["frame"] = flipLastHexDigit($0["frame"]) }, reason: "FrameCodec.encode"),
    Corruption(
        name: "frame error request id", topic: "frames", groupType: "decode", matching: { $0.has("errorRequestId") },
        change: { $0["errorRequestId"] = .string("12345") }, reason: "request id"),
    Corruption(
        name: "safety number digit", topic: "fingerprint", groupType: "safetyNumber", matching: { _ in true },
        change: { test in
            guard case .string(let number)? = test["safetyNumber"] else { return }
            test["safetyNumber"] = .string((number.first == "1" ? "2" : "1") + number.dropFirst())
        }, reason: "safety number"),
    Corruption(
        name: "uppercase hex", topic: "fingerprint", groupType: "safetyNumber", matching: { _ in true },
        change: { test in
            guard case .string(let key)? = test["keyA"] else { return }
            test["keyA"] = .string(key.uppercased())
        }, reason: "lowercase hex"),
    Corruption(
        name: "push wake-up body byte", topic: "push", groupType: "encrypt", matching: { $0["wakeClass"] == .string("ring") },
        change: { $0["body"] = flipLastHexDigit($0["body"]) }, reason: "body"),
    Corruption(
        name: "push RFC 8291 intermediate", topic: "push", groupType: "encrypt", matching: { $0.flags.contains("RFC8291AppendixA") },
        change: { $0["prk"] = flipLastHexDigit($0["prk"]) }, reason: "prk"),
    Corruption(
        name: "push tampered body made valid", topic: "push", groupType: "decrypt", matching: { $0.flags.contains("Tampered") },
        change: { test in
            test["result"] = .string("valid")
            test["error"] = nil
            test["plaintext"] = .hex(Data(#"{"v":1,"wake":"urgent"}"#.utf8))
        }, reason: "expected valid"),
    Corruption(
        name: "conversations encoded byte", topic: "conversations", groupType: "encode", matching: { $0["body"] == .string("reaction") },
        change: { $0["encoded"] = flipLastHexDigit($0["encoded"]) }, reason: "encoded"),
    Corruption(
        name: "conversations decoded field", topic: "conversations", groupType: "decode", matching: { $0["body"] == .string("edit") },
        change: { test in
            guard case .object(var fields)? = test["fields"] else { return }
            fields["sentAtMs"] = .string("1")
            test["fields"] = .object(fields)
        }, reason: "fields"),
    Corruption(
        name: "conversations refused emoji made valid", topic: "conversations", groupType: "decode", matching: { $0.flags.contains("BadEmoji") },
        change: { test in
            test["result"] = .string("valid")
            test["error"] = nil
            test["body"] = .string("reaction")
        }, reason: "expected valid"),
    Corruption(
        name: "conversations content hash", topic: "conversations", groupType: "messageRef", matching: { $0.flags.contains("NonASCII") },
        change: { $0["contentHash"] = flipLastHexDigit($0["contentHash"]) }, reason: "contentHash"),
    Corruption(
        name: "conversations unsend token hash", topic: "conversations", groupType: "tokenHash", matching: { $0["kind"] == .string("unsend") },
        change: { $0["hash"] = flipLastHexDigit($0["hash"]) }, reason: "hash"),
    Corruption(
        name: "conversations report signature", topic: "conversations", groupType: "reportSignature", matching: { $0["result"] == .string("valid") },
        change: { $0["signature"] = flipLastHexDigit($0["signature"]) }, reason: "signature"),
    Corruption(
        name: "attachment okm", topic: "attachment", groupType: "encrypt", matching: { $0.flags.contains("MultiChunk") },
        change: { $0["okm"] = flipLastHexDigit($0["okm"]) }, reason: "okm"),
    Corruption(
        name: "attachment last chunk's nonce flag", topic: "attachment", groupType: "encrypt", matching: { $0.flags.contains("MultiChunk") },
        change: { test in
            guard case .array(var chunks)? = test["chunks"], case .object(var last)? = chunks.last else { return }
            last["nonce"] = flipLastHexDigit(last["nonce"])
            chunks[chunks.count - 1] = .object(last)
            test["chunks"] = .array(chunks)
        }, reason: "nonce"),
    Corruption(
        name: "attachment truncated blob made valid", topic: "attachment", groupType: "decrypt", matching: { $0.flags.contains("LastFlag") },
        change: { test in
            test["result"] = .string("valid")
            test["error"] = nil
        }, reason: "expected valid"),
    Corruption(
        name: "attachment padded size", topic: "attachment", groupType: "paddedSize", matching: { $0["length"] == .int(1_025) },
        change: { $0["paddedSize"] = .int(1_056) }, reason: "paddedSize"),
    Corruption(
        name: "attachment opened chunk at another index made valid", topic: "attachment", groupType: "openChunk", matching: { $0.flags.contains("Reordered") },
        change: { test in
            test["result"] = .string("valid")
            test["error"] = nil
        }, reason: "expected valid"),
    Corruption(
        name: "attachment location coordinate", topic: "attachment", groupType: "encode", matching: { $0["comment"] == .string("a location with a label") },
        change: { test in
            guard case .object(var fields)? = test["fields"], case .object(var text)? = fields["text"], case .object(var location)? = text["location"] else { return }
            location["latitude"] = .string("52.520009")
            text["location"] = .object(location)
            fields["text"] = .object(text)
            test["fields"] = .object(fields)
        }, reason: "encoded"),
    Corruption(
        name: "undefined flag", topic: "hkdf", groupType: "kdfChain", matching: { _ in true },
        change: { $0["flags"] = .array([.string("NoSuchFlag")]) }, reason: "not defined in notes"),
]

extension JSONValue {
    var testGroups: [JSONValue] { if case .array(let groups)? = self["testGroups"] { groups } else { [] } }
    var tests: [JSONValue] { if case .array(let tests)? = self["tests"] { tests } else { [] } }
    var flags: [String] { if case .array(let flags)? = self["flags"] { flags.compactMap { if case .string(let s) = $0 { s } else { nil } } } else { [] } }
}

/// `file` with the first matching test of a group changed; returns the file and that test's tcId.
func corrupt(_ file: JSONValue, _ corruption: Corruption) throws -> (JSONValue, Int) {
    guard case .object(var root) = file, case .array(var groups)? = root["testGroups"] else { throw VectorCheckFailure("no testGroups") }
    for (g, group) in groups.enumerated() where group["type"] == .string(corruption.groupType) {
        guard case .object(var groupObject) = group, case .array(var tests)? = groupObject["tests"] else { continue }
        guard let t = tests.firstIndex(where: corruption.matching), case .object(var test) = tests[t], case .int(let tcId)? = test["tcId"] else {
            continue
        }
        corruption.change(&test)
        tests[t] = .object(test)
        groupObject["tests"] = .array(tests)
        groups[g] = .object(groupObject)
        root["testGroups"] = .array(groups)
        return (.object(root), tcId)
    }
    throw VectorCheckFailure("no test to corrupt for \(corruption.name)")
}

@Suite struct CorruptedVectorTests {
    @Test(arguments: corruptions)
    func corruptedVectorFails(_ corruption: Corruption) throws {
        let (file, tcId) = try corrupt(try CommittedVectors.file(corruption.topic), corruption)
        let (results, problem) = VectorVerifier.verifyFile(named: "\(corruption.topic).json", data: try file.encoded())
        #expect(problem == nil)
        let changed = try #require(results.first { $0.tcId == tcId })
        #expect(!changed.passed, "the verifier accepted a corrupted vector")
        #expect(changed.failure?.contains(corruption.reason) == true, "reason: \(changed.failure ?? "none")")
        // Only the corrupted test fails.
        #expect(results.filter { !$0.passed }.map(\.tcId) == [tcId])
    }

    @Test func fileLevelProblemsAreReported() throws {
        let hkdf = try CommittedVectors.file("hkdf")
        guard case .object(let root) = hkdf else { throw VectorCheckFailure("not an object") }
        func problem(_ change: (inout [String: JSONValue]) -> Void) throws -> String? {
            var copy = root
            change(&copy)
            return VectorVerifier.verifyFile(named: "hkdf.json", data: try JSONValue.object(copy).encoded()).problem?.message
        }
        #expect(try problem { $0["formatVersion"] = .int(2) }?.contains("format version 2") == true)
        #expect(try problem { $0["topic"] = .string("mls") }?.contains("unknown topic \"mls\"") == true)
        #expect(try problem { $0["numberOfTests"] = .int(1) }?.contains("numberOfTests") == true)
        #expect(
            try problem { root in
                guard case .object(var profile)? = root["profile"], case .object(var limits)? = profile["limits"] else { return }
                limits["maxSkip"] = .int(999)
                profile["limits"] = .object(limits)
                root["profile"] = .object(profile)
            }?.contains("maxSkip") == true)
        #expect(VectorVerifier.verifyFile(named: "x.json", data: Data("not json".utf8)).problem != nil)
        // A duplicate tcId.
        let (duplicated, _) = try corrupt(hkdf, Corruption(
            name: "duplicate", topic: "hkdf", groupType: "kdfChain", matching: { _ in true }, change: { $0["tcId"] = .int(1) }, reason: ""))
        #expect(VectorVerifier.verifyFile(named: "hkdf.json", data: try duplicated.encoded()).problem?.message.contains("tcId 1") == true)
    }

    @Test func unreadableDirectoryThrows() {
        #expect(throws: VectorRunError.self) {
            try VectorVerifier.verifyDirectory(URL(fileURLWithPath: "/nonexistent/flitz-vectors"))
        }
    }

    /// An implementation that refuses correctly but changes its state must fail a `"state": "unchanged"` vector.
    @Test func changedStateFails() throws {
        let file = try CommittedVectors.file("ratchet")
        let leaky = VectorTopic(name: "ratchet") { vector in
            guard vector.test["state"] == .string("unchanged") else { return try RatchetVectorsTopic.verify(vector) }
            return .invalid(try VectorErrorRef(json: try vector.test.object("error")), stateUnchanged: false)
        }
        let (results, _) = VectorVerifier.verifyFile(named: "ratchet.json", data: try file.encoded(), topics: [leaky])
        let failures = results.filter { !$0.passed }
        #expect(!failures.isEmpty)
        #expect(failures.allSatisfy { $0.failure?.contains("state changed") == true })
        // Every ratchet failure (decryption and encryption) is stateful.
        #expect(failures.count == results.filter { $0.expected == "invalid" }.count)
    }
}

/// The real ratchet topic, for wrapping.
enum RatchetVectorsTopic {
    static func verify(_ vector: VectorCase) throws -> VectorOutcome {
        try VectorTopics.all.first { $0.name == "ratchet" }!.verify(vector)
    }
}
