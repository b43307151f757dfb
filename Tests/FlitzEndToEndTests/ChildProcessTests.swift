import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The harness's spawner (ChildProcess.swift) behaves as `Process` did for what the end-to-end tests rely on.
@Suite struct ChildProcessTests {
    static let shell = URL(fileURLWithPath: "/bin/sh")

    @Test func exitCodesAndSignalsAreReported() throws {
        let scratch = try Scratch()
        let exited = try runProcess(Self.shell, ["-c", "echo out; echo err >&2; exit 86"], in: scratch)
        #expect(exited.status == 86 && exited.stdout == "out\n" && exited.stderr == "err\n", "\(exited)")

        let killed = ChildProcess()
        killed.executableURL = Self.shell
        killed.arguments = ["-c", "kill -KILL $$"]
        try killed.run()
        killed.waitUntilExit()
        #expect(killed.terminationReason == .uncaughtSignal && killed.terminationStatus == SIGKILL)
        #expect(!killed.isRunning)
        killed.terminate()  // after the exit: nothing
    }

    @Test func aTimeoutTerminatesTheChild() throws {
        let scratch = try Scratch()
        let result = try runProcess(Self.shell, ["-c", "exec sleep 60"], in: scratch, timeout: 0.5)
        #expect(result.status == SIGTERM, "\(result)")
    }

    @Test func theChildHasDefaultSignalsAndOnlyItsThreeStreams() throws {
        let scratch = try Scratch()
        // A pipe this process keeps open (not close-on-exec) must not reach the child.
        let held = Pipe()
        let listing = try runProcess(Self.shell, ["-c", "ls /proc/self/fd; grep -E '^Sig(Ign|Blk)' /proc/self/status"], in: scratch)
        withExtendedLifetime(held) {}
        // ls's own directory descriptor is the one entry past 2.
        let fds = listing.lines.filter { $0.allSatisfy(\.isNumber) }
        #expect(fds.count == 4 && Array(fds.prefix(3)) == ["0", "1", "2"], "\(listing)")
        // Standard signals 1-31 (SIGPIPE among them) neither ignored nor blocked; glibc keeps 32 and 33 for itself.
        for field in ["SigIgn:", "SigBlk:"] {
            let mask = listing.lines.first { $0.hasPrefix(field) }.flatMap { UInt64($0.dropFirst(field.count + 1), radix: 16) }
            #expect(mask.map { $0 & 0x7fff_ffff } == 0, "\(field) \(listing)")
        }
    }

    @Test func pipesReachEndOfFileWhenTheChildExits() throws {
        let input = Pipe(), output = Pipe()
        let cat = ChildProcess()
        cat.executableURL = URL(fileURLWithPath: "/bin/cat")
        cat.standardInput = input
        cat.standardOutput = output
        cat.standardError = FileHandle.nullDevice
        try cat.run()
        #expect(cat.isRunning && cat.processIdentifier > 0)
        input.fileHandleForWriting.write(Data("through the pipe\n".utf8))
        try input.fileHandleForWriting.close()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        cat.waitUntilExit()
        #expect(text == "through the pipe\n")
        #expect(cat.terminationReason == .exit && cat.terminationStatus == 0)
    }

    @Test func aMissingExecutableThrows() {
        let missing = ChildProcess()
        missing.executableURL = URL(fileURLWithPath: "/nonexistent/flitz")
        #expect(throws: ChildProcess.SpawnError.self) { try missing.run() }
        missing.waitUntilExit()  // never started: returns at once
    }
}
