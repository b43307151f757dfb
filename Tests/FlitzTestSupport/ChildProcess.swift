import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A child process started with `posix_spawn`: what the end-to-end tests use instead of Foundation's `Process`,
/// whose `run()` on Linux can crash the whole test process (swift-corelibs-foundation's
/// `findMaximumOpenFromProcSelfFD()` copies 256 bytes of each `/proc/self/fd` entry's `d_name`, past glibc's
/// buffer; fixed upstream in swift-corelibs-foundation PR #5472, not in Swift 6.3.1). See docs/decisions.md,
/// "End-to-end tests spawn children with posix_spawn".
///
/// The members the tests use keep `Process`'s names and meanings, so `Process()` becomes `ChildProcess()`:
/// `terminationStatus` is the exit code, or the signal number when `terminationReason` is `.uncaughtSignal`.
/// Streams: nil inherits this process's; a `FileHandle` is used as it is; a `Pipe` gives the child its read end
/// (stdin) or write end (stdout, stderr), and that end is closed here after the spawn, so reading the other end
/// sees end of file when the child exits. Every other descriptor is closed in the child. Safe from any thread.
public final class ChildProcess: @unchecked Sendable {
    /// How the child ended: with an exit code, or killed by a signal.
    public enum TerminationReason: Sendable { case exit, uncaughtSignal }

    /// `posix_spawn` failed for `executable` with `errno`.
    public struct SpawnError: Error, CustomStringConvertible {
        public let executable: String
        public let errno: Int32
        public var description: String { "cannot start \(executable): \(String(cString: strerror(errno)))" }
    }

    /// Starts an unconfigured child; set `executableURL` (and the rest) before `run()`.
    public init() {}

    /// The program to run.
    public var executableURL: URL?
    /// Its arguments, without the program name.
    public var arguments: [String] = []
    /// nil: this process's environment.
    public var environment: [String: String]?
    /// nil, a `FileHandle` or a `Pipe` (see above) for each of the three streams.
    public var standardInput: Any?
    public var standardOutput: Any?
    public var standardError: Any?

    private enum State { case notStarted, running, exited(status: Int32, reason: TerminationReason) }
    private let condition = NSCondition()
    private var state = State.notStarted
    private var pid: pid_t = 0

    /// 0 before `run()`.
    public var processIdentifier: Int32 { condition.withLock { pid } }

    /// Started and not yet seen to exit.
    public var isRunning: Bool {
        condition.withLock { if case .running = state { true } else { false } }
    }

    /// The exit code, or the signal that ended the child. Only after it has exited (traps before, as `Process` does).
    public var terminationStatus: Int32 {
        condition.withLock {
            guard case .exited(let status, _) = state else { preconditionFailure("ChildProcess still running or not started") }
            return status
        }
    }

    /// Whether it exited or was killed by a signal. Only after it has exited.
    public var terminationReason: TerminationReason {
        condition.withLock {
            guard case .exited(_, let reason) = state else { preconditionFailure("ChildProcess still running or not started") }
            return reason
        }
    }

    /// Starts the child. Throws `SpawnError` (errno from `posix_spawn`) if it cannot be started.
    public func run() throws {
        guard let executableURL else { throw SpawnError(executable: "(no executable)", errno: ENOENT) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }

        // Default dispositions and an empty mask, as `Process` gives: the test process ignores SIGPIPE, and an
        // ignored signal would otherwise be inherited through exec.
        var all = sigset_t(), none = sigset_t()
        sigfillset(&all)
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        for (stream, target) in [(standardInput, STDIN_FILENO), (standardOutput, STDOUT_FILENO), (standardError, STDERR_FILENO)] {
            if let fd = Self.descriptor(stream, input: target == STDIN_FILENO) {
                posix_spawn_file_actions_adddup2(&actions, fd, target)
            }
        }
        // No inherited descriptors beyond 0-2 (Foundation's pipes are not close-on-exec: a child holding another
        // child's pipe would keep its reader from ever seeing end of file). glibc closes them with close_range(2).
        guard Self.addCloseFrom(&actions, 3) == 0 else { throw SpawnError(executable: executableURL.path, errno: ENOSYS) }

        let environment = environment ?? ProcessInfo.processInfo.environment
        let argv = ([executableURL.path] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }

        try condition.withLock {
            guard case .notStarted = state else { preconditionFailure("ChildProcess.run() called twice") }
            var child: pid_t = 0
            let rc = posix_spawn(&child, executableURL.path, &actions, &attributes, argv, envp)
            guard rc == 0 else { throw SpawnError(executable: executableURL.path, errno: rc) }
            pid = child
            state = .running
        }
        // The child has its own copies now.
        if let pipe = standardInput as? Pipe { try? pipe.fileHandleForReading.close() }
        if let pipe = standardOutput as? Pipe { try? pipe.fileHandleForWriting.close() }
        if let pipe = standardError as? Pipe { try? pipe.fileHandleForWriting.close() }

        let reaper = Thread { [self] in reap() }
        reaper.name = "ChildProcess \(pid)"
        reaper.start()
    }

    /// Blocks until the child has exited (at once if it has, or was never started).
    public func waitUntilExit() {
        condition.withLock {
            while case .running = state { condition.wait() }
        }
    }

    /// SIGTERM; nothing if the child has exited.
    public func terminate() { send(SIGTERM) }

    /// SIGINT; nothing if the child has exited.
    public func interrupt() { send(SIGINT) }

    /// Sends `signal` while the child is running. The pid cannot have been reused: it is reaped under the same lock.
    public func send(_ signal: Int32) {
        condition.withLock {
            if case .running = state { _ = kill(pid, signal) }
        }
    }

    /// Waits without reaping (WNOWAIT) so `send` never signals a reused pid, then reaps under the lock.
    private func reap() {
        var info = siginfo_t()
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
        condition.withLock {
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            // <sys/wait.h>: low 7 bits 0 means exited, code in bits 8-15; otherwise the terminating signal.
            state = status & 0x7f == 0 ? .exited(status: (status >> 8) & 0xff, reason: .exit) : .exited(status: status & 0x7f, reason: .uncaughtSignal)
            condition.broadcast()
        }
    }

    private static func descriptor(_ stream: Any?, input: Bool) -> Int32? {
        switch stream {
        case let handle as FileHandle: handle.fileDescriptor
        case let pipe as Pipe: input ? pipe.fileHandleForReading.fileDescriptor : pipe.fileHandleForWriting.fileDescriptor
        case nil: nil
        default: preconditionFailure("ChildProcess streams are FileHandle or Pipe, not \(type(of: stream!))")
        }
    }

    /// `posix_spawn_file_actions_addclosefrom_np` (glibc 2.34+), looked up at run time: Swift's Glibc module does
    /// not declare it.
    private static let addCloseFrom: @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32 = {
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") else {
            fatalError("glibc without posix_spawn_file_actions_addclosefrom_np (needs 2.34 or later)")
        }
        return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
    }()
}
