extension PostgresRelayStore {
    /// The state relay nodes share (`cluster.md` 4-7): node heartbeats, connection claims, online-only envelopes,
    /// call signals and their sequence memory (unlogged tables: lost on a database crash, like a relay's memory),
    /// token buckets, upload leases.
    static let clusterMigrations: [Migration] = []
}
