import ArgumentParser
import FlitzVectors
import Foundation

/// `flitz vectors verify DIR`: checks test vector files against this build (`vectors/README.md`).
struct VectorsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vectors", abstract: "Check protocol test vectors against this build.", subcommands: [Verify.self])

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run every vector file in DIR and print a pass/fail table.",
            discussion: """
                Reads every *.json file directly in DIR (not subdirectories such as third_party/). Prints one line per \
                test (topic, tcId, expected result, pass or FAIL, and the reason of a failure), then a summary. \
                Exit codes: 0 every vector passed; 1 a vector failed; 2 DIR or a file could not be read, or a file has an \
                unknown topic or format version, or an inconsistent test list.
                """)

        @Argument(help: "Directory of vector files, e.g. vectors.") var directory: String

        func run() throws {
            let report: VectorReport
            do {
                report = try VectorVerifier.verifyDirectory(URL(fileURLWithPath: directory))
            } catch {
                printError("flitz: \(error.message)")
                throw ExitCode(2)
            }
            printLine(VectorTable.render(report))
            for problem in report.problems { printError("flitz: \(problem)") }
            if !report.problems.isEmpty { throw ExitCode(2) }
            if report.failedCount > 0 { throw ExitCode(1) }
        }
    }
}

/// The text the `verify` command prints.
enum VectorTable {
    static func render(_ report: VectorReport) -> String {
        var lines = [pad("topic", 12) + pad("tcId", 6) + pad("expected", 10) + pad("result", 8) + "reason"]
        for result in report.results {
            lines.append(
                pad(result.topic, 12) + pad(String(result.tcId), 6) + pad(result.expected, 10) + pad(result.passed ? "pass" : "FAIL", 8)
                    + (result.failure ?? ""))
        }
        lines.append("")
        var topics: [String] = []
        for result in report.results where !topics.contains(result.topic) { topics.append(result.topic) }
        for topic in topics {
            let results = report.results.filter { $0.topic == topic }
            let valid = results.filter { $0.expected == "valid" }.count
            let failed = results.filter { !$0.passed }.count
            lines.append(
                pad(topic, 12) + "\(results.count) vectors (\(valid) valid, \(results.count - valid) invalid): "
                    + "\(results.count - failed) pass, \(failed) fail")
        }
        let files = Set(report.results.map(\.file)).count
        lines.append(
            "summary: \(report.results.count) vectors in \(files) files: \(report.passedCount) pass, \(report.failedCount) fail"
                + (report.problems.isEmpty ? "" : "; \(report.problems.count) file problem\(report.problems.count == 1 ? "" : "s")"))
        return lines.map { String($0.reversed().drop { $0 == " " }.reversed()) }.joined(separator: "\n")
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }
}
