import Foundation

/// The relay's source of wall-clock time, injected so that tests control expiry (`protocol/relay.md`, "Expiry").
public protocol RelayClock: Sendable {
    /// The current time.
    func now() -> Date
}

/// The system clock. Debug builds add `FLITZ_TEST_CLOCK_OFFSET` seconds (a decimal number, may be
/// negative) from the environment to it; release builds ignore that variable.
public struct SystemRelayClock: RelayClock {
    /// The offset in seconds added to the system time (always 0 in release builds).
    public let offsetSeconds: Double

    /// Reads `FLITZ_TEST_CLOCK_OFFSET` from `environment` in debug builds.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        #if DEBUG
        offsetSeconds = environment["FLITZ_TEST_CLOCK_OFFSET"].flatMap(Double.init) ?? 0
        #else
        offsetSeconds = 0
        #endif
    }

    /// The system time plus `offsetSeconds`.
    public func now() -> Date { Date().addingTimeInterval(offsetSeconds) }
}

extension RelayClock {
    /// `now()` in milliseconds since the Unix epoch.
    func nowMs() -> Int64 { Int64((now().timeIntervalSince1970 * 1_000).rounded(.down)) }
}
