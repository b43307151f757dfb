import Logging
import ServiceLifecycle

/// The expiry sweeper (`protocol/relay.md`, "Expiry"): calls `Relay.sweep()` at start and then every
/// `RelayConfiguration.sweepInterval` until graceful shutdown. A failed sweep is logged and retried
/// at the next interval.
public struct ExpirySweeper: Service, CustomStringConvertible {
    let relay: Relay

    /// A sweeper for `relay`.
    public init(relay: Relay) {
        self.relay = relay
    }

    /// "ExpirySweeper", for lifecycle logs.
    public var description: String { "ExpirySweeper" }

    /// Sweeps every `sweepInterval` until graceful shutdown or cancellation; never throws.
    public func run() async throws {
        let interval = relay.configuration.sweepInterval
        let logger = relay.logger
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                // Sweep first: a relay restarted after downtime reports what expired meanwhile at once.
                do {
                    try await relay.sweep()
                } catch {
                    logger.error("expiry sweep failed", metadata: ["error": "\(error)"])
                }
                // Cancellation (graceful shutdown) ends the sleep early; then stop without error.
                try? await Task.sleep(for: interval)
            }
        }
    }
}
