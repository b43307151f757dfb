import Foundation

/// The outcome of one test case.
public struct VectorTestResult: Sendable, Equatable {
    /// File name inside the directory (`ratchet.json`).
    public let file: String
    /// The file's topic.
    public let topic: String
    /// The test's id, unique within its file.
    public let tcId: Int
    /// The expected result: `valid` or `invalid`.
    public let expected: String
    /// The test's comment.
    public let comment: String
    /// Why it failed; nil when it passed.
    public let failure: String?

    /// Whether the implementation behaved exactly as the vector says.
    public var passed: Bool { failure == nil }
}

/// A file that could not be checked at all: unreadable, not JSON, an unknown topic or format version,
/// a profile that disagrees with this build, or a malformed test list.
public struct VectorFileProblem: Sendable, Equatable, CustomStringConvertible {
    /// File name inside the directory.
    public let file: String
    /// What is wrong, one line.
    public let message: String
    /// `file: message`.
    public var description: String { "\(file): \(message)" }
}

/// Everything one run found.
public struct VectorReport: Sendable {
    /// One result per test case, in file-name order then file order.
    public var results: [VectorTestResult] = []
    /// Files that could not be checked.
    public var problems: [VectorFileProblem] = []

    /// Whether every test of every file passed and no file had a problem.
    public var allPassed: Bool { problems.isEmpty && results.allSatisfy(\.passed) }
    /// Number of passed tests.
    public var passedCount: Int { results.filter(\.passed).count }
    /// Number of failed tests.
    public var failedCount: Int { results.count - passedCount }
}

/// A run that could not start: the directory is missing, unreadable or holds no vector file.
public struct VectorRunError: Error, Sendable, CustomStringConvertible {
    /// What is wrong.
    public let message: String
    /// The message.
    public var description: String { message }
}

/// Runs vector files (`vectors/README.md`) against this build of FlitzCrypto, FlitzWire and FlitzProtocol.
public enum VectorVerifier {
    /// The only `formatVersion` this build reads.
    public static let formatVersion = 1

    /// Checks every `*.json` file directly inside `directory` (subdirectories such as `third_party/` are
    /// not read), in file-name order.
    /// - Throws: `VectorRunError` when the directory cannot be listed or holds no `.json` file.
    public static func verifyDirectory(_ directory: URL, topics: [VectorTopic] = VectorTopics.all) throws(VectorRunError) -> VectorReport {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory.path, isDirectory: &isDirectory) else {
            throw VectorRunError(message: "cannot read directory \(directory.path): it does not exist")
        }
        guard isDirectory.boolValue else {
            throw VectorRunError(message: "cannot read directory \(directory.path): it is a file; give the directory that holds the vector files")
        }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw VectorRunError(message: "cannot read directory \(directory.path): \(error.localizedDescription)")
        }
        let files = names.filter { $0.hasSuffix(".json") }.sorted()
        guard !files.isEmpty else { throw VectorRunError(message: "no vector files (*.json) in \(directory.path)") }
        var report = VectorReport()
        for name in files {
            let url = directory.appendingPathComponent(name)
            guard let data = FileManager.default.contents(atPath: url.path) else {
                report.problems.append(VectorFileProblem(file: name, message: "cannot read the file"))
                continue
            }
            let (results, problem) = verifyFile(named: name, data: data, topics: topics)
            report.results += results
            if let problem { report.problems.append(problem) }
        }
        return report
    }

    /// Checks one vector file's bytes.
    /// - Returns: the per-test results, and a problem when the file could not be checked (then the
    ///   results are empty) or its test list is inconsistent (`numberOfTests`, duplicate `tcId`).
    public static func verifyFile(
        named name: String, data: Data, topics: [VectorTopic] = VectorTopics.all
    ) -> (results: [VectorTestResult], problem: VectorFileProblem?) {
        func problem(_ message: String) -> ([VectorTestResult], VectorFileProblem?) {
            ([], VectorFileProblem(file: name, message: message))
        }
        let file: JSONValue
        do { file = try JSONValue.decode(data) } catch { return problem("not a JSON vector file") }
        guard case .int(let version)? = file["formatVersion"] else { return problem("no formatVersion: not a Flitz vector file") }
        guard version == formatVersion else {
            return problem("format version \(version) is not supported (this build reads version \(formatVersion))")
        }
        guard case .string(let topicName)? = file["topic"] else { return problem("no topic") }
        guard let topic = topics.first(where: { $0.name == topicName }) else {
            return problem("unknown topic \"\(topicName)\" (this build knows \(topics.map(\.name).joined(separator: ", ")))")
        }
        let groups: [JSONValue]
        let notes: JSONValue
        let declaredCount: Int
        do {
            try VectorProfile.verify(try file.object("profile"))
            groups = try file.array("testGroups")
            notes = try file.object("notes")
            declaredCount = try file.int("numberOfTests")
        } catch {
            return problem(error.reason)
        }

        var results: [VectorTestResult] = []
        var seen = Set<Int>()
        var listProblem: String?
        for group in groups {
            let tests: [JSONValue]
            do { tests = try group.array("tests") } catch { return problem("a test group: \(error.reason)") }
            for test in tests {
                guard case .int(let tcId)? = test["tcId"] else { return problem("a test has no integer tcId") }
                if !seen.insert(tcId).inserted { listProblem = listProblem ?? "tcId \(tcId) is used twice" }
                let expected = (try? test.string("result")) ?? "?"
                let comment = (try? test.string("comment")) ?? ""
                let failure = run(test, group: group, file: file, notes: notes, topic: topic)
                results.append(
                    VectorTestResult(file: name, topic: topicName, tcId: tcId, expected: expected, comment: comment, failure: failure))
            }
        }
        if results.count != declaredCount {
            listProblem = listProblem ?? "numberOfTests is \(declaredCount) but the file has \(results.count) tests"
        }
        return (results, listProblem.map { VectorFileProblem(file: name, message: $0) })
    }

    /// Runs one test; nil when it passed, else the reason.
    static func run(_ test: JSONValue, group: JSONValue, file: JSONValue, notes: JSONValue, topic: VectorTopic) -> String? {
        do {
            for flag in try test.array("flags") {
                guard case .string(let name) = flag, notes.has(name) else { throw VectorCheckFailure("flag \(flag) is not defined in notes") }
            }
            let expected = try test.string("result")
            let expectedError: VectorErrorRef?
            switch expected {
            case "valid":
                expectedError = nil
            case "invalid":
                expectedError = try VectorErrorRef(json: try test.object("error"))
            default:
                throw VectorCheckFailure("result must be \"valid\" or \"invalid\", is \"\(expected)\"")
            }
            let expectsUnchangedState: Bool
            switch test["state"] {
            case nil: expectsUnchangedState = false
            case .string("unchanged")?: expectsUnchangedState = true
            case let other?: throw VectorCheckFailure("state must be \"unchanged\", is \(other)")
            }
            let outcome = try topic.verify(VectorCase(test: test, group: group, file: file))
            switch (outcome, expectedError) {
            case (.valid, nil):
                return nil
            case (.valid, let error?):
                return "expected invalid with \(error), but the input was accepted"
            case (.invalid(let actual, _), nil):
                return "expected valid, but it failed with \(actual)"
            case (.invalid(let actual, let unchanged), let error?):
                try require(actual == error, "expected \(error), got \(actual)")
                if expectsUnchangedState {
                    try require(unchanged != nil, "the verifier did not compare the state")
                    try require(unchanged == true, "\(actual) as expected, but the serialized state changed")
                }
                return nil
            }
        } catch let failure as VectorCheckFailure {
            return failure.reason
        } catch {
            return "\(error)"
        }
    }
}
