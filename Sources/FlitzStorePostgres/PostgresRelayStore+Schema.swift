extension PostgresRelayStore {
    /// The relay's own tables (accounts, devices, prekeys, envelope queues, receipts, device lists, pairing slots,
    /// conversations, push endpoints, blob metadata, relay secrets). Envelope queues are partitioned (`cluster.md` 5).
    ///
    /// The tables and columns mirror `SQLiteRelayStore`'s schema (same names, so the two stores read alike), with
    /// PostgreSQL types: `BYTEA` for bytes, `BIGINT` for every integer (times are milliseconds since the Unix epoch),
    /// `BOOLEAN` for flags. Differences: the queue is `queue_items` (hash-partitioned by handle into 16 partitions,
    /// keyed by `(handle, device_id, sequence)`; its expiry column is `expires_at_ms`), sequences come from the
    /// per-device `queue_counters` row (which also counts undelivered envelopes, replacing SQLite's `queue_depths`),
    /// `envelope_routes.group_id` is never NULL, and `scheduled_envelopes`/`reports` carry an identity column `seq` for
    /// insertion order (SQLite's `rowid`).
    static let coreMigrations: [Migration] = [
        Migration(name: "core-v1", sql: coreV1),
        Migration(name: "core-v2", sql: coreV2),
        Migration(name: "core-v3", sql: coreV3),
    ]

    /// `core-v3`: autovacuum after a bounded number of dead rows on the tables the expiry sweep scans by expiry
    /// (every `queue_items` partition, whose `expires_at_ms` index it walks, and `envelope_routes`, whose partial
    /// `envelope_routes_queued_by_expiry` index it walks and whose rows it updates out of that index): scale factor
    /// 0 and a threshold of `vacuumThreshold` dead rows instead of PostgreSQL's default 50 + 20 % of the table. A
    /// sweep's index scan revisits the heap page of every row deleted since the table's last vacuum, so with the
    /// default an expiry pass at 1 M queued envelopes took 68 ms at the median (up to ~180 000 dead rows) instead of
    /// 33 ms with this (`docs/decisions.md`, "Bounded autovacuum on the queue (issue 9, vacuum)"). Storage parameters
    /// are per table: the partitioned parent takes none, so each partition gets them; a partition added later must be
    /// given them too.
    private static var coreV3: [String] {
        let options = "autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = \(vacuumThreshold)"
        return (0..<queuePartitionCount).map { "ALTER TABLE \(queuePartitionName($0)) SET (\(options))" }
            + ["ALTER TABLE envelope_routes SET (\(options))"]
    }

    /// `core-v3`'s autovacuum threshold: dead rows per table (each queue partition, `envelope_routes`) before
    /// autovacuum processes it, whatever the table's size. 500 rather than 5 000: the sweep visits the dead rows of
    /// all 16 partitions, so 5 000 per partition still let ~50 000 pile up at the median (49-59 ms passes) in the
    /// measurement; 500 kept them near 6 000-10 000 (22-33 ms). Each such vacuum reads the partition's indexes once.
    static let vacuumThreshold = 500

    /// `core-v2`: `queue_sequence_floor`, one row: the least `next_sequence` a new `queue_counters` row starts at.
    /// A removed device's counter row is deleted (no longer kept for ever) after raising the floor to its
    /// `next_sequence`, so a handle registered again after its tombstone's purge never sees a device id's sequences
    /// go backwards. Existing counter rows of devices that are gone are dropped the same way.
    private static let coreV2: [String] = [
        """
        CREATE TABLE queue_sequence_floor (
            single BOOLEAN PRIMARY KEY DEFAULT true CHECK (single),
            next_sequence BIGINT NOT NULL
        )
        """,
        """
        INSERT INTO queue_sequence_floor (single, next_sequence)
        SELECT true, GREATEST(1, COALESCE(MAX(next_sequence), 1)) FROM queue_counters c
        WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.handle = c.handle AND d.device_id = c.device_id)
        """,
        """
        DELETE FROM queue_counters c
        WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.handle = c.handle AND d.device_id = c.device_id)
        """,
    ]

    /// Queue partitions: `queue_items_p00` to `queue_items_p15` (`cluster.md` 5).
    static let queuePartitionCount = 16

    /// The name of queue partition `index` (0 to 15).
    static func queuePartitionName(_ index: Int) -> String {
        index < 10 ? "queue_items_p0\(index)" : "queue_items_p\(index)"
    }

    private static var coreV1: [String] {
        var sql = [
            """
            CREATE TABLE accounts (
                handle TEXT PRIMARY KEY,
                account_identity_key BYTEA NOT NULL,
                recovery_code_hash BYTEA NOT NULL,
                next_device_id BIGINT NOT NULL,
                origin_device_id BIGINT,
                created_at BIGINT NOT NULL,
                seen_receipts_off BOOLEAN NOT NULL DEFAULT false
            )
            """,
            """
            CREATE TABLE devices (
                handle TEXT NOT NULL REFERENCES accounts(handle) ON DELETE CASCADE,
                device_id BIGINT NOT NULL,
                device_identity_key BYTEA NOT NULL,
                device_certificate_signature BYTEA NOT NULL,
                signed_prekey_id BIGINT NOT NULL,
                signed_prekey_public_key BYTEA NOT NULL,
                signed_prekey_signature BYTEA NOT NULL,
                max_one_time_prekey_id BIGINT NOT NULL DEFAULT 0,
                max_kem_prekey_id BIGINT NOT NULL DEFAULT 0,
                created_at BIGINT NOT NULL,
                PRIMARY KEY (handle, device_id)
            )
            """,
            """
            CREATE TABLE one_time_prekeys (
                handle TEXT NOT NULL,
                device_id BIGINT NOT NULL,
                prekey_id BIGINT NOT NULL,
                public_key BYTEA NOT NULL,
                PRIMARY KEY (handle, device_id, prekey_id),
                FOREIGN KEY (handle, device_id) REFERENCES devices(handle, device_id) ON DELETE CASCADE
            )
            """,
            """
            CREATE TABLE kem_prekeys (
                handle TEXT NOT NULL,
                device_id BIGINT NOT NULL,
                prekey_id BIGINT NOT NULL,
                public_key BYTEA NOT NULL,
                signature BYTEA NOT NULL,
                last_resort BOOLEAN NOT NULL,
                PRIMARY KEY (handle, device_id, prekey_id),
                FOREIGN KEY (handle, device_id) REFERENCES devices(handle, device_id) ON DELETE CASCADE
            )
            """,
            "CREATE UNIQUE INDEX kem_prekeys_one_last_resort ON kem_prekeys (handle, device_id) WHERE last_resort",
            // One row per accepted envelope, kept (without ciphertext) until route_expires_at. state: 0 queued,
            // 1 delivered, 2 expired (or recipient device removed), 3 scheduled, 4 purged by an unsend, 5 cancelled,
            // 6 dropped (the recipient blocks the sender).
            """
            CREATE TABLE envelope_routes (
                envelope_id BYTEA PRIMARY KEY,
                sender_handle TEXT NOT NULL,
                sender_device_id BIGINT NOT NULL,
                recipient_handle TEXT NOT NULL,
                recipient_device_id BIGINT NOT NULL,
                accepted_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                route_expires_at BIGINT NOT NULL,
                state BIGINT NOT NULL,
                seen_reported BOOLEAN NOT NULL DEFAULT false,
                group_id BYTEA NOT NULL,
                unsend_token_hash BYTEA
            )
            """,
            "CREATE INDEX envelope_routes_queued_by_expiry ON envelope_routes (expires_at) WHERE state = 0",
            "CREATE INDEX envelope_routes_by_retention ON envelope_routes (route_expires_at)",
            "CREATE INDEX envelope_routes_by_group ON envelope_routes (group_id)",
            "CREATE INDEX envelope_routes_by_recipient ON envelope_routes (recipient_handle, recipient_device_id)",
            """
            CREATE INDEX envelope_routes_by_unsend ON envelope_routes (sender_handle, unsend_token_hash)
                WHERE unsend_token_hash IS NOT NULL
            """,
            // cluster.md 5: each device's next queue sequence, updated in the transaction that queues (commit order);
            // `envelopes` counts the device's undelivered envelopes (relay.maxQueuedEnvelopes): added to by the queuing
            // helper, taken from by a trigger on every delete of an envelope row.
            """
            CREATE TABLE queue_counters (
                handle TEXT NOT NULL,
                device_id BIGINT NOT NULL,
                next_sequence BIGINT NOT NULL,
                envelopes BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (handle, device_id)
            )
            """,
            // Per-device queue: envelopes (kind 1, with ciphertext) and receipts (kind 2).
            """
            CREATE TABLE queue_items (
                handle TEXT NOT NULL,
                device_id BIGINT NOT NULL,
                sequence BIGINT NOT NULL,
                kind BIGINT NOT NULL,
                envelope_id BYTEA NOT NULL,
                ciphertext BYTEA,
                receipt_id BYTEA,
                receipt_kind BIGINT,
                receipt_at BIGINT,
                receipt_recipient_handle TEXT,
                receipt_recipient_device_id BIGINT,
                expires_at_ms BIGINT NOT NULL,
                PRIMARY KEY (handle, device_id, sequence)
            ) PARTITION BY HASH (handle)
            """,
        ]
        for index in 0..<queuePartitionCount {
            sql.append(
                "CREATE TABLE \(queuePartitionName(index)) PARTITION OF queue_items FOR VALUES WITH (MODULUS \(queuePartitionCount), REMAINDER \(index))"
            )
        }
        sql += [
            "CREATE INDEX queue_items_by_envelope ON queue_items (envelope_id)",
            "CREATE INDEX queue_items_by_expiry ON queue_items (expires_at_ms)",
            "CREATE INDEX queue_items_by_receipt ON queue_items (receipt_id) WHERE receipt_id IS NOT NULL",
            """
            CREATE FUNCTION flitz_queue_envelope_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                UPDATE queue_counters SET envelopes = envelopes - 1 WHERE handle = OLD.handle AND device_id = OLD.device_id;
                RETURN NULL;
            END
            $$
            """,
            """
            CREATE TRIGGER queue_items_envelope_deleted AFTER DELETE ON queue_items
                FOR EACH ROW WHEN (OLD.kind = 1) EXECUTE FUNCTION flitz_queue_envelope_deleted()
            """,
            """
            CREATE TABLE device_lists (
                handle TEXT PRIMARY KEY REFERENCES accounts(handle) ON DELETE CASCADE,
                payload BYTEA NOT NULL,
                signature BYTEA NOT NULL,
                version BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE device_list_entries (
                handle TEXT NOT NULL REFERENCES accounts(handle) ON DELETE CASCADE,
                device_id BIGINT NOT NULL,
                device_identity_key BYTEA NOT NULL,
                PRIMARY KEY (handle, device_id)
            )
            """,
            """
            CREATE TABLE removed_device_keys (
                handle TEXT NOT NULL REFERENCES accounts(handle) ON DELETE CASCADE,
                device_identity_key BYTEA NOT NULL,
                PRIMARY KEY (handle, device_identity_key)
            )
            """,
            """
            CREATE TABLE account_tombstones (
                handle TEXT PRIMARY KEY,
                deleted_at BIGINT NOT NULL,
                purge_at BIGINT NOT NULL
            )
            """,
            // A taken slot keeps its row (message NULL) so that it cannot be written again.
            """
            CREATE TABLE link_messages (
                rendezvous_id BYTEA NOT NULL,
                slot BIGINT NOT NULL,
                message BYTEA,
                expires_at BIGINT NOT NULL,
                PRIMARY KEY (rendezvous_id, slot)
            )
            """,
            "CREATE INDEX link_messages_by_expiry ON link_messages (expires_at)",
            """
            CREATE TABLE group_receipts (
                group_id BYTEA NOT NULL,
                recipient_handle TEXT NOT NULL,
                kind BIGINT NOT NULL,
                route_expires_at BIGINT NOT NULL,
                PRIMARY KEY (group_id, recipient_handle, kind)
            )
            """,
            "CREATE INDEX group_receipts_by_retention ON group_receipts (route_expires_at)",
            // push.md 4: one endpoint per device, deleted with it. A dropped endpoint keeps only provider, time and
            // reason (endpoint NULL, keys NULL). urgent_window_until is the coalescing window's end (push.md 5).
            """
            CREATE TABLE push_endpoints (
                handle TEXT NOT NULL,
                device_id BIGINT NOT NULL,
                provider TEXT NOT NULL,
                endpoint TEXT,
                p256dh BYTEA,
                auth_secret BYTEA,
                apns_background BOOLEAN NOT NULL,
                registered_at BIGINT NOT NULL,
                last_wake_at BIGINT NOT NULL DEFAULT 0,
                wakes_sent BIGINT NOT NULL DEFAULT 0,
                last_failure TEXT NOT NULL DEFAULT '',
                dropped_at BIGINT NOT NULL DEFAULT 0,
                urgent_window_until BIGINT NOT NULL DEFAULT 0,
                PRIMARY KEY (handle, device_id),
                FOREIGN KEY (handle, device_id) REFERENCES devices(handle, device_id) ON DELETE CASCADE
            )
            """,
            """
            CREATE TABLE relay_secrets (
                name TEXT PRIMARY KEY,
                value BYTEA NOT NULL,
                created_at BIGINT NOT NULL
            )
            """,
            // conversations.md 8: a scheduled envelope's ciphertext until its release, cancel or unsend.
            """
            CREATE TABLE scheduled_envelopes (
                envelope_id BYTEA PRIMARY KEY,
                seq BIGINT GENERATED ALWAYS AS IDENTITY,
                sender_handle TEXT NOT NULL,
                not_before BIGINT NOT NULL,
                ttl_ms BIGINT NOT NULL,
                urgency BIGINT NOT NULL,
                cancel_token_hash BYTEA NOT NULL,
                ciphertext BYTEA NOT NULL
            )
            """,
            "CREATE INDEX scheduled_by_release ON scheduled_envelopes (not_before, seq)",
            "CREATE INDEX scheduled_by_cancel ON scheduled_envelopes (sender_handle, cancel_token_hash)",
            """
            CREATE TABLE block_lists (
                handle TEXT NOT NULL,
                blocked_handle TEXT NOT NULL,
                PRIMARY KEY (handle, blocked_handle)
            )
            """,
            "CREATE INDEX block_lists_by_blocked ON block_lists (blocked_handle)",
            """
            CREATE TABLE reports (
                report_id BYTEA PRIMARY KEY,
                seq BIGINT GENERATED ALWAYS AS IDENTITY,
                reporter_handle TEXT NOT NULL,
                reporter_device_id BIGINT NOT NULL,
                received_at BIGINT NOT NULL,
                report BYTEA NOT NULL,
                signature BYTEA NOT NULL
            )
            """,
            "CREATE INDEX reports_by_reporter ON reports (reporter_handle, received_at)",
            // attachments.md 4: capability tokens as SHA-256 only, and uploads (finished or not).
            """
            CREATE TABLE upload_tokens (
                token_hash BYTEA PRIMARY KEY,
                handle TEXT NOT NULL,
                device_id BIGINT NOT NULL,
                unsend_token_hash BYTEA NOT NULL,
                blob_expires_at BIGINT NOT NULL,
                token_expires_at BIGINT NOT NULL,
                created_at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX upload_tokens_by_handle ON upload_tokens (handle)",
            "CREATE INDEX upload_tokens_by_expiry ON upload_tokens (token_expires_at)",
            """
            CREATE TABLE blobs (
                blob_id BYTEA PRIMARY KEY,
                token_hash BYTEA NOT NULL UNIQUE,
                handle TEXT NOT NULL,
                device_id BIGINT NOT NULL,
                length BIGINT NOT NULL,
                committed_offset BIGINT NOT NULL,
                completed BOOLEAN NOT NULL,
                expires_at BIGINT NOT NULL,
                upload_expires_at BIGINT NOT NULL,
                unsend_token_hash BYTEA NOT NULL,
                created_at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX blobs_by_handle ON blobs (handle, unsend_token_hash)",
            "CREATE INDEX blobs_by_expiry ON blobs (expires_at)",
            "CREATE INDEX blobs_by_upload_expiry ON blobs (completed, upload_expires_at)",
        ]
        return sql
    }
}
