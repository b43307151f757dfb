import Foundation

/// Linux `/proc` readings of one process, for CPU and memory figures.
public enum ProcessStats {
    /// Clock ticks per second of `/proc/PID/stat` times (`sysconf(_SC_CLK_TCK)`, usually 100).
    public static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    /// User + system CPU seconds used so far by `pid` (all threads), from `/proc/PID/stat` fields 14 and 15;
    /// nil when the process does not exist.
    public static func cpuSeconds(pid: Int32) -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return nil }
        // Fields after "(comm)": state is field 3, utime 14, stime 15.
        let fields = text[text.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / ticksPerSecond
    }

    /// A field of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`: reported in kB); nil when absent.
    public static func statusBytes(pid: Int32, field: String = "VmRSS") -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, let kilobytes = Int(parts[1]) { return kilobytes * 1024 }
        }
        return nil
    }

    /// This process's id.
    public static var selfPID: Int32 { getpid() }

    /// Raises the soft open-files limit to the hard one; returns (soft before, hard).
    @discardableResult
    public static func raiseOpenFilesLimit() -> (soft: UInt64, hard: UInt64) {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let before = UInt64(limit.rlim_cur)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return (before, UInt64(limit.rlim_max))
    }
}

/// CPU use of the generator and of a server process over one measured interval.
public struct CPUSampler: Sendable {
    let serverPID: Int32?
    let start: (wall: UInt64, own: Double, server: Double?)

    /// Starts the interval now.
    public init(serverPID: Int32?) {
        self.serverPID = serverPID
        start = (monotonicNanoseconds(), ProcessStats.cpuSeconds(pid: ProcessStats.selfPID) ?? 0, serverPID.flatMap { ProcessStats.cpuSeconds(pid: $0) })
    }

    /// CPU use since `init` in percent of one core (200 % = both cores of a 2-core machine busy).
    public func percent() -> (generator: Double, server: Double?) {
        let wall = Double(monotonicNanoseconds() - start.wall) / 1e9
        let own = (ProcessStats.cpuSeconds(pid: ProcessStats.selfPID) ?? 0) - start.own
        var server: Double?
        if let serverPID, let before = start.server, let now = ProcessStats.cpuSeconds(pid: serverPID) { server = (now - before) / wall * 100 }
        return (own / wall * 100, server)
    }
}
