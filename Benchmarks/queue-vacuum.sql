-- Expiry passes with autovacuum running (issue 9, `core-v3`): the relay's hash-partitioned queue table (16
-- partitions, protocol/cluster.md 5) at `rows` stored envelopes, in four copies that differ only in their
-- partitions' autovacuum storage parameters: `default` PostgreSQL's (vacuum after 50 + 20 % of a partition's rows
-- are dead); `autovacuum_vacuum_scale_factor = 0` with a threshold of 5 000 (`t5000on`) and of 500 dead rows per
-- partition (`t500on`), both with `vacuum_index_cleanup = on`; and `t500`, scale factor 0 and threshold 500 alone
-- (core-v3's setting). Run by Benchmarks/run-cluster.sh (mode `vacuum`) with psql on a scratch database of a
-- server it may reconfigure (needs a superuser: ALTER SYSTEM):
--
--   psql "$URL" -v rows=1000000 -v devices=10000 -v passes=400 -v pace=0.25 -v naptime=1s -f Benchmarks/queue-vacuum.sql
--
-- Time is compressed, and said so: the relay sweeps every 60 s (`relay.sweepInterval`) and autovacuum looks at each
-- database every 60 s (`autovacuum_naptime`), one sweep per autovacuum round. Here the expiry clock moves 7 days /
-- 2 000 per pass (each pass deletes about rows / 2 000 envelopes, as in queue-partitioning.sql), one pass on each
-- copy every `pace` seconds, and the server's autovacuum_naptime is set to `naptime` for the run (ALTER SYSTEM, reset
-- at the end): with 0.25 s and 1 s, four passes on each copy per autovacuum round, which lets dead rows pile up
-- more than the relay's pace would. Vacuum is autovacuum's own (no explicit VACUUM), with its default cost-based throttling.
-- Each pass is the per-partition form of the sweep (16 statements `DELETE FROM partition WHERE expires_at_ms <= $1`,
-- planned with the value), one top-level statement (its own transaction, so the deleting backend reports its dead
-- rows to the statistics autovacuum reads). Timings are server-side (clock_timestamp()).
\set ON_ERROR_STOP on
\pset footer off
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS flitz_vacuum CASCADE;
CREATE SCHEMA flitz_vacuum;
SET search_path = flitz_vacuum;
ALTER SYSTEM SET autovacuum_naptime = :'naptime';
SELECT pg_reload_conf() AS reloaded \gset

CREATE UNLOGGED TABLE source AS
SELECT 'user' || (d / 2) AS handle,
       (d % 2 + 1)::bigint AS device_id,
       row_number() OVER (PARTITION BY d ORDER BY n) AS sequence,
       1::smallint AS kind,
       decode(md5(n::text), 'hex') AS envelope_id,
       decode(repeat(md5(n::text || 'c'), 8), 'hex') || decode(repeat(md5(n::text || 'd'), 8), 'hex') AS ciphertext,
       (1700000000000 + (n::bigint * 604800000) / :rows) AS expires_at_ms
FROM (SELECT n, (hashint4(n) & 2147483647) % :devices AS d FROM generate_series(1, :rows) AS n) AS g;

CREATE TABLE configs (name text PRIMARY KEY, options text);
INSERT INTO configs VALUES
    ('default', NULL),
    ('t5000on', 'autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000, vacuum_index_cleanup = on'),
    ('t500on', 'autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 500, vacuum_index_cleanup = on'),
    ('t500', 'autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 500');

\echo loading :rows rows into each of four copies
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT * FROM configs ORDER BY name LOOP
        EXECUTE format('CREATE TABLE %I (handle text NOT NULL, device_id bigint NOT NULL, sequence bigint NOT NULL,
            kind smallint NOT NULL, envelope_id bytea NOT NULL, ciphertext bytea, expires_at_ms bigint NOT NULL,
            PRIMARY KEY (handle, device_id, sequence)) PARTITION BY HASH (handle)', 'q_' || c.name);
        EXECUTE format('CREATE INDEX ON %I (expires_at_ms)', 'q_' || c.name);
        EXECUTE format('CREATE INDEX ON %I (envelope_id)', 'q_' || c.name);
        FOR p IN 0..15 LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES WITH (MODULUS 16, REMAINDER %s)',
                'q_' || c.name || '_' || p, 'q_' || c.name, p);
            IF c.options IS NOT NULL THEN
                EXECUTE format('ALTER TABLE %I SET (%s)', 'q_' || c.name || '_' || p, c.options);
            END IF;
        END LOOP;
        EXECUTE format('INSERT INTO %I SELECT * FROM source', 'q_' || c.name);
    END LOOP;
END $$;
DROP TABLE source;
VACUUM ANALYZE;

SELECT pg_sleep(2);  -- the statistics of the load settle (autovacuum's analyze after the inserts)
CREATE TABLE vacuums_before AS SELECT relname, autovacuum_count FROM pg_stat_user_tables WHERE schemaname = 'flitz_vacuum';
CREATE TABLE timings (config text NOT NULL, pass int NOT NULL, ms double precision NOT NULL, deleted bigint NOT NULL,
    dead_before bigint NOT NULL);

-- One expiry pass on one copy: 16 per-partition deletes; records the time, the rows deleted, and the dead rows the
-- statistics showed in that copy's partitions just before.
CREATE FUNCTION pass(config text, i int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    now_ms bigint := 1700000000000 + i * (604800000::bigint / 2000);
    n bigint;
    total bigint := 0;
    dead bigint;
BEGIN
    SELECT coalesce(sum(n_dead_tup), 0) INTO dead FROM pg_stat_user_tables
    WHERE schemaname = 'flitz_vacuum' AND relname LIKE 'q\_' || config || '\_%';
    t0 := clock_timestamp();
    FOR p IN 0..15 LOOP
        EXECUTE format('DELETE FROM %I WHERE expires_at_ms <= $1', 'q_' || config || '_' || p) USING now_ms;
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END LOOP;
    INSERT INTO timings VALUES (config, i, extract(epoch FROM clock_timestamp() - t0) * 1000, total, dead);
END $$;

\echo :passes expiry passes on each copy, one round every :pace s, autovacuum_naptime :naptime
SELECT statement FROM (
    SELECT format('SELECT flitz_vacuum.pass(%L, %s)', c.name, i) AS statement, i, c.k
    FROM generate_series(1, :passes) AS i, (VALUES (1, 'default'), (2, 't5000on'), (3, 't500on'), (4, 't500')) AS c(k, name)
    UNION ALL SELECT format('SELECT pg_sleep(%s)', :'pace'), i, 5 FROM generate_series(1, :passes) AS i
) AS s ORDER BY i, k \gexec

\echo results (ms, server-side; dead = dead rows in the partitions of the copy before a pass, from the statistics)
SELECT t.config, count(*) AS passes, round(avg(deleted)) AS rows_per_pass,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) AS p50_ms,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1) AS p99_ms,
       round(max(ms)::numeric, 1) AS max_ms,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY dead_before)::numeric) AS dead_p50, max(dead_before) AS dead_max,
       (SELECT sum(s.autovacuum_count - coalesce(b.autovacuum_count, 0)) FROM pg_stat_user_tables s
        LEFT JOIN vacuums_before b USING (relname)
        WHERE s.schemaname = 'flitz_vacuum' AND s.relname LIKE 'q\_' || t.config || '\_%') AS autovacuums
FROM timings t GROUP BY t.config ORDER BY t.config;
\copy (SELECT 'VACUUM config=' || config || ' passes=' || count(*) || ' rows_per_pass=' || round(avg(deleted)) || ' p50_ms=' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' p99_ms=' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 1) || ' max_ms=' || round(max(ms)::numeric, 1) || ' dead_p50=' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY dead_before)::numeric) || ' dead_max=' || max(dead_before) FROM flitz_vacuum.timings GROUP BY config ORDER BY config) TO STDOUT

RESET search_path;
ALTER SYSTEM RESET autovacuum_naptime;
SELECT pg_reload_conf() AS reloaded \gset
DROP SCHEMA flitz_vacuum CASCADE;
