extension PostgresRelayStore {
    /// The state relay nodes share (`cluster.md` 4), applied after `coreMigrations`: node heartbeats, connection
    /// claims with their per-device epoch counter (`claim_epochs`, kept when a claim goes), online-only envelopes,
    /// call signals and their sequence memory, token buckets (unlogged tables: lost on a database crash, like a single
    /// relay's memory), upload leases. Push endpoints, relay secrets and blob metadata are core tables
    /// (`coreMigrations`). Times are epoch milliseconds (`BIGINT`), device ids `BIGINT`.
    static let clusterMigrations: [Migration] = [
        Migration(
            name: "cluster-v1",
            sql: [
                "CREATE TABLE relay_nodes (node_id TEXT PRIMARY KEY, heartbeat_at_ms BIGINT NOT NULL)",
                // The per-device epoch counter: kept when a claim is released, so every claim's epoch is larger.
                """
                CREATE TABLE claim_epochs (
                    handle TEXT NOT NULL,
                    device_id BIGINT NOT NULL,
                    epoch BIGINT NOT NULL,
                    PRIMARY KEY (handle, device_id)
                )
                """,
                """
                CREATE TABLE connection_claims (
                    handle TEXT NOT NULL,
                    device_id BIGINT NOT NULL,
                    node_id TEXT NOT NULL,
                    epoch BIGINT NOT NULL,
                    claimed_at_ms BIGINT NOT NULL,
                    PRIMARY KEY (handle, device_id)
                )
                """,
                "CREATE INDEX connection_claims_by_node ON connection_claims (node_id)",
                """
                CREATE UNLOGGED TABLE online_only (
                    id BIGSERIAL PRIMARY KEY,
                    handle TEXT NOT NULL,
                    device_id BIGINT NOT NULL,
                    frame BYTEA NOT NULL,
                    expires_at_ms BIGINT NOT NULL
                )
                """,
                "CREATE INDEX online_only_by_expiry ON online_only (expires_at_ms)",
                // serial: acceptance order (oldest first per device, as the in-memory broker's list).
                """
                CREATE UNLOGGED TABLE call_signals (
                    serial BIGSERIAL PRIMARY KEY,
                    handle TEXT NOT NULL,
                    device_id BIGINT NOT NULL,
                    call_id BYTEA NOT NULL,
                    sender_handle TEXT NOT NULL,
                    sender_device_id BIGINT NOT NULL,
                    sequence BIGINT NOT NULL,
                    is_offer BOOLEAN NOT NULL,
                    received_at_ms BIGINT NOT NULL,
                    expires_at_ms BIGINT NOT NULL,
                    delivery BYTEA NOT NULL
                )
                """,
                "CREATE INDEX call_signals_by_device ON call_signals (handle, device_id, serial)",
                "CREATE INDEX call_signals_by_expiry ON call_signals (expires_at_ms)",
                """
                CREATE UNLOGGED TABLE call_sequences (
                    call_id BYTEA NOT NULL,
                    sender_handle TEXT NOT NULL,
                    sender_device_id BIGINT NOT NULL,
                    recipient_handle TEXT NOT NULL,
                    recipient_device_id BIGINT NOT NULL,
                    sequence BIGINT NOT NULL,
                    until_ms BIGINT NOT NULL,
                    PRIMARY KEY (call_id, sender_handle, sender_device_id, recipient_handle, recipient_device_id)
                )
                """,
                "CREATE INDEX call_sequences_by_expiry ON call_sequences (until_ms)",
                // key: the UTF-8 bytes of TokenTake.key (the relay's keys may hold NUL, which TEXT cannot).
                // full_at_ms: when the bucket is full again (then it is pruned: a full bucket equals a missing one).
                """
                CREATE UNLOGGED TABLE rate_buckets (
                    key BYTEA PRIMARY KEY,
                    tokens DOUBLE PRECISION NOT NULL,
                    updated_at_ms BIGINT NOT NULL,
                    full_at_ms BIGINT NOT NULL
                )
                """,
                "CREATE INDEX rate_buckets_by_full ON rate_buckets (full_at_ms)",
                "CREATE TABLE upload_leases (blob_id BYTEA PRIMARY KEY, holder TEXT NOT NULL, until_ms BIGINT NOT NULL)",
            ]),
        // cluster-v2 (sec-claims): `claim_epoch_floor`, one row: every new `claim_epochs` row starts above it. A
        // removed device's epoch row is deleted after raising the floor to its epoch (as `queue_sequence_floor`), so
        // a device id used again (a handle registered again after its tombstone's purge) never gets a smaller epoch.
        // Existing rows of devices that are gone are dropped the same way.
        Migration(
            name: "cluster-v2",
            sql: [
                """
                CREATE TABLE claim_epoch_floor (
                    single BOOLEAN PRIMARY KEY DEFAULT true CHECK (single),
                    epoch BIGINT NOT NULL
                )
                """,
                """
                INSERT INTO claim_epoch_floor (single, epoch)
                SELECT true, COALESCE(MAX(epoch), 0) FROM claim_epochs e
                WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.handle = e.handle AND d.device_id = e.device_id)
                """,
                """
                DELETE FROM claim_epochs e
                WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.handle = e.handle AND d.device_id = e.device_id)
                """,
            ]),
    ]
}
