-- heimdall_lab migration 003: TimescaleDB, where the server has it.
--
-- If pg_available_extensions lists timescaledb and it loads, measurements becomes a
-- hypertable on timestamp_utc (7-day chunks) with compression (segmented by receiver,
-- ordered by time) and a policy compressing chunks older than 30 days. Otherwise nothing
-- changes: measurements stays a plain table with the same columns and indexes, and
-- heimdall_lab.db's queries use date_bin instead of time_bucket. The migration is recorded
-- either way: a server that gains TimescaleDB later needs heimdall_lab.db.enable_timescale().

CREATE OR REPLACE FUNCTION heimdall_enable_timescale() RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        RETURN false;
    END IF;
    PERFORM create_hypertable('measurements', 'timestamp_utc',
                              chunk_time_interval => interval '7 days',
                              create_default_indexes => false,
                              if_not_exists => true,
                              migrate_data => true);
    IF NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                   WHERE hypertable_schema = current_schema()
                     AND hypertable_name = 'measurements' AND compression_enabled) THEN
        ALTER TABLE measurements SET (timescaledb.compress,
                                      timescaledb.compress_segmentby = 'websdr_id',
                                      timescaledb.compress_orderby = 'timestamp_utc DESC');
    END IF;
    PERFORM add_compression_policy('measurements', compress_after => interval '30 days',
                                   if_not_exists => true);
    RETURN true;
END
$$;

DO $migration$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') THEN
        RAISE NOTICE 'heimdall_lab: timescaledb is not available; measurements stays a plain table';
        RETURN;
    END IF;
    BEGIN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'heimdall_lab: timescaledb is available but does not load (%); '
                      'measurements stays a plain table. Add timescaledb to '
                      'shared_preload_libraries, restart, then run enable_timescale()', SQLERRM;
        RETURN;
    END;
    PERFORM heimdall_enable_timescale();
END
$migration$;
