extension PostgresRelayStore {
    /// The relay's own tables (accounts, devices, prekeys, envelope queues, receipts, device lists, pairing slots,
    /// conversations, push endpoints, blob metadata, relay secrets). Envelope queues are partitioned (`cluster.md` 5).
    static let coreMigrations: [Migration] = []
}
