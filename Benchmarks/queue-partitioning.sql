-- Queue reads and expiry deletes at 1 million stored envelopes: a copy of the relay's queue table hash-partitioned
-- by recipient handle into 16 partitions (protocol/cluster.md 5) against the same table unpartitioned. Run by
-- Benchmarks/run-cluster.sh (mode `partitioning`) with psql on a scratch database:
--
--   psql "$URL" -v rows=1000000 -v devices=10000 -v reads=2000 -v deletes=200 -f Benchmarks/queue-partitioning.sql
--
-- It works in its own schema `flitz_bench` (dropped first and at the end), never on the relay's tables. Both tables
-- get the same rows (one INSERT ... SELECT into each from one generated set): `devices` devices of `devices / 2`
-- handles, envelope ciphertexts of 256 random-looking bytes, expiries spread evenly over 7 days. The timings are
-- taken inside the server (clock_timestamp() around each statement in PL/pgSQL), so they leave out the network
-- round trip, which is the same for both tables. Every statement is an EXECUTE ... USING: planned with its values
-- each time, as the relay's statements are (postgres-nio sends each query as an unnamed extended-protocol statement).
-- A cached generic plan would be wrong here: for `expires_at_ms <= $1` it guesses a third of the table and scans it
-- all (150 ms per pass at 1 million rows, whatever the partitioning), and it cannot prune partitions at plan time.
--
-- Measured, each as median, p99 and max over its repetitions:
--   read            a device's queue read: WHERE handle = $1 AND device_id = $2 AND sequence > $3
--                   ORDER BY sequence LIMIT 100 (with the ciphertext), random devices, $3 = 0
--   delete-one      an expiry pass as one statement: DELETE ... WHERE expires_at_ms <= now (the clock moves on by
--                   7 days / 2 000 per pass, so each pass deletes about rows / 2 000 envelopes)
--   delete-parts    partitioned only: the same pass as 16 statements, one per partition (cluster.md 5)
\set ON_ERROR_STOP on
\pset footer off
SET client_min_messages = warning;
DROP SCHEMA IF EXISTS flitz_bench CASCADE;
CREATE SCHEMA flitz_bench;
SET search_path = flitz_bench;
SET flitz.reads = :reads;
SET flitz.devices = :devices;
SET flitz.deletes = :deletes;

CREATE TABLE plain (
    handle text NOT NULL,
    device_id bigint NOT NULL,
    sequence bigint NOT NULL,
    kind smallint NOT NULL,
    envelope_id bytea NOT NULL,
    ciphertext bytea,
    expires_at_ms bigint NOT NULL,
    PRIMARY KEY (handle, device_id, sequence)
);
CREATE INDEX plain_by_expiry ON plain (expires_at_ms);
CREATE INDEX plain_by_envelope ON plain (envelope_id);

CREATE TABLE parted (LIKE plain INCLUDING DEFAULTS) PARTITION BY HASH (handle);
ALTER TABLE parted ADD PRIMARY KEY (handle, device_id, sequence);
CREATE INDEX parted_by_expiry ON parted (expires_at_ms);
CREATE INDEX parted_by_envelope ON parted (envelope_id);
DO $$
BEGIN
    FOR p IN 0..15 LOOP
        EXECUTE format('CREATE TABLE parted_%s PARTITION OF parted FOR VALUES WITH (MODULUS 16, REMAINDER %s)', p, p);
    END LOOP;
END $$;

-- The rows: device d (0-based) is device (d % 2) + 1 of handle 'user' || (d / 2); its envelopes have sequences
-- 1, 2, 3 ... in the order of their row numbers.
CREATE UNLOGGED TABLE source AS
SELECT 'user' || (d / 2) AS handle,
       (d % 2 + 1)::bigint AS device_id,
       row_number() OVER (PARTITION BY d ORDER BY n) AS sequence,
       1::smallint AS kind,
       decode(md5(n::text), 'hex') AS envelope_id,
       decode(repeat(md5(n::text || 'c'), 8), 'hex') || decode(repeat(md5(n::text || 'd'), 8), 'hex') AS ciphertext,
       (1700000000000 + (n::bigint * 604800000) / :rows) AS expires_at_ms
FROM (SELECT n, (hashint4(n) & 2147483647) % :devices AS d FROM generate_series(1, :rows) AS n) AS g;

\echo loading :rows rows into each table
INSERT INTO plain SELECT * FROM source;
INSERT INTO parted SELECT * FROM source;
DROP TABLE source;
VACUUM ANALYZE plain;
VACUUM ANALYZE parted;
SELECT pg_size_pretty(pg_total_relation_size('plain')) AS plain_size,
       (SELECT pg_size_pretty(sum(pg_total_relation_size(c.oid))) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'parted'::regclass AND c.relkind = 'r') AS parted_size,
       (SELECT count(*) FROM plain) AS plain_rows, (SELECT count(*) FROM parted) AS parted_rows;

CREATE TABLE timings (measurement text NOT NULL, tbl text NOT NULL, ms double precision NOT NULL);

-- Reads: the same random devices, alternating between the tables so load on the machine hits both alike.
CREATE FUNCTION read_plain(h text, d bigint) RETURNS int LANGUAGE plpgsql AS $$
DECLARE n int;
BEGIN
    EXECUTE 'SELECT count(*) FROM (SELECT sequence, ciphertext FROM plain WHERE handle = $1 AND device_id = $2 AND sequence > $3
             ORDER BY sequence LIMIT 100) AS q' INTO n USING h, d, 0::bigint;
    RETURN n;
END $$;
CREATE FUNCTION read_parted(h text, d bigint) RETURNS int LANGUAGE plpgsql AS $$
DECLARE n int;
BEGIN
    EXECUTE 'SELECT count(*) FROM (SELECT sequence, ciphertext FROM parted WHERE handle = $1 AND device_id = $2 AND sequence > $3
             ORDER BY sequence LIMIT 100) AS q' INTO n USING h, d, 0::bigint;
    RETURN n;
END $$;

DO $$
DECLARE
    t0 timestamptz;
    d int;
    n int;
    got bigint := 0;
BEGIN
    PERFORM setseed(0.42);
    FOR i IN 1..current_setting('flitz.reads')::int LOOP
        d := floor(random() * current_setting('flitz.devices')::int);
        t0 := clock_timestamp();
        n := read_plain('user' || (d / 2), d % 2 + 1);
        INSERT INTO timings VALUES ('read', 'unpartitioned', extract(epoch FROM clock_timestamp() - t0) * 1000);
        t0 := clock_timestamp();
        n := n - read_parted('user' || (d / 2), d % 2 + 1);
        INSERT INTO timings VALUES ('read', 'partitioned', extract(epoch FROM clock_timestamp() - t0) * 1000);
        IF n <> 0 THEN RAISE EXCEPTION 'the tables disagree for device %', d; END IF;
        got := got + 1;
    END LOOP;
END $$;

-- Expiry passes (the DO block runs outside a transaction block, so it may COMMIT): the clock moves 7 days / 2 000 per pass; each pass runs on both tables (alternating which goes
-- first), as one statement on each and, on the partitioned table, also as one statement per partition (a second,
-- identical copy of the partitioned pass would find nothing left, so the partitioned table is passed with the two
-- forms in turn: odd passes one statement, even passes per partition).
DO $$
DECLARE
    t0 timestamptz;
    now_ms bigint;
    step bigint := 604800000 / 2000;
    deleted bigint;
    total bigint;
BEGIN
    FOR i IN 1..current_setting('flitz.deletes')::int LOOP
        now_ms := 1700000000000 + i * step;
        t0 := clock_timestamp();
        EXECUTE 'DELETE FROM plain WHERE expires_at_ms <= $1' USING now_ms;
        INSERT INTO timings VALUES ('delete-one', 'unpartitioned', extract(epoch FROM clock_timestamp() - t0) * 1000);
        IF i % 2 = 1 THEN
            t0 := clock_timestamp();
            EXECUTE 'DELETE FROM parted WHERE expires_at_ms <= $1' USING now_ms;
            INSERT INTO timings VALUES ('delete-one', 'partitioned', extract(epoch FROM clock_timestamp() - t0) * 1000);
        ELSE
            t0 := clock_timestamp();
            FOR p IN 0..15 LOOP
                EXECUTE format('DELETE FROM parted_%s WHERE expires_at_ms <= $1', p) USING now_ms;
            END LOOP;
            INSERT INTO timings VALUES ('delete-parts', 'partitioned', extract(epoch FROM clock_timestamp() - t0) * 1000);
        END IF;
        -- Each pass is its own transaction, as the relay's sweep is: rows deleted by earlier passes are dead to
        -- this one's index scan (in one long transaction every pass would walk all the earlier passes' rows).
        COMMIT;
    END LOOP;
    SELECT count(*) INTO deleted FROM plain;
    SELECT count(*) INTO total FROM parted;
    IF deleted <> total THEN RAISE EXCEPTION 'the tables disagree after the passes: % and % rows', deleted, total; END IF;
END $$;

\echo results (ms, server-side)
SELECT measurement, tbl AS "table", count(*) AS n,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3) AS p50_ms,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 3) AS p99_ms,
       round(max(ms)::numeric, 3) AS max_ms
FROM timings GROUP BY measurement, tbl ORDER BY measurement, tbl;
\copy (SELECT 'PARTITIONING measurement=' || measurement || ' table=' || tbl || ' n=' || count(*) || ' p50_ms=' || round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3) || ' p99_ms=' || round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 3) || ' max_ms=' || round(max(ms)::numeric, 3) FROM flitz_bench.timings GROUP BY measurement, tbl ORDER BY measurement, tbl) TO STDOUT

RESET search_path;
DROP SCHEMA flitz_bench CASCADE;
