-- heimdall_lab migration 002: captures and their per-receiver measurements.
-- Plain PostgreSQL; 003 turns measurements into a TimescaleDB hypertable where it can.

CREATE TABLE IF NOT EXISTS captures (
    -- the capture id of heimdall_lab.fetch: uuid4().hex, 32 lower-case hex digits
    id               text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
    start_time       timestamptz,
    frequency_hz     double precision NOT NULL CHECK (frequency_hz > 0),
    duration_s       double precision NOT NULL CHECK (duration_s > 0),
    parameters       jsonb NOT NULL DEFAULT '{}'::jsonb,
    status           text NOT NULL DEFAULT 'pending'
                     -- the stages a capture moves through; partial: done, some receivers failed
                     CHECK (status IN ('pending', 'connecting', 'receiving', 'processing', 'storing',
                                       'done', 'partial', 'failed', 'cancelled')),
    progress_percent double precision NOT NULL DEFAULT 0 CHECK (progress_percent BETWEEN 0 AND 100),
    error_message    text,
    iq_url           text,
    software_version text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS captures_start_time_idx ON captures (start_time DESC);
CREATE INDEX IF NOT EXISTS captures_status_idx ON captures (status);

DROP TRIGGER IF EXISTS captures_touch_updated_at ON captures;
CREATE TRIGGER captures_touch_updated_at BEFORE UPDATE ON captures
    FOR EACH ROW EXECUTE FUNCTION heimdall_touch_updated_at();

-- One row per receiver per capture per measurement time. The primary key is the
-- uniqueness rule (writing the same capture twice leaves one copy); it contains the time
-- column, as a TimescaleDB hypertable requires of its unique indexes.
CREATE TABLE IF NOT EXISTS measurements (
    capture_id            text NOT NULL REFERENCES captures (id) ON DELETE CASCADE,
    websdr_id             integer NOT NULL REFERENCES websdrs (id),
    timestamp_utc         timestamptz NOT NULL,
    frequency_hz          double precision NOT NULL,
    sample_rate           double precision,
    samples_count         bigint,
    snr_db                double precision,
    frequency_offset_hz   double precision,
    signal_power_dbfs     double precision,
    signal_power_dbm      double precision,
    noise_power_dbfs      double precision,
    noise_power_dbm       double precision,
    cn0_dbhz              double precision,
    occupied_bandwidth_hz double precision,
    signal_present        boolean,
    rssi_dbm              double precision,
    -- power spectral density in dBFS/Hz (dBm/Hz if calibrated), bins in natural order:
    -- bin k lies (k - n/2) * psd_resolution_hz from frequency_hz, n = cardinality(psd)
    -- (heimdall_lab.dsp.psd's layout)
    psd                   real[],
    psd_resolution_hz     double precision,
    iq_path               text,
    metadata              jsonb,
    CONSTRAINT measurements_pkey PRIMARY KEY (capture_id, websdr_id, timestamp_utc),
    CONSTRAINT measurements_psd_shape CHECK (
        psd IS NULL
        OR (coalesce(array_ndims(psd), 1) = 1 AND coalesce(psd_resolution_hz > 0, false)))
);

CREATE INDEX IF NOT EXISTS measurements_capture_time_idx ON measurements (capture_id, timestamp_utc DESC);
CREATE INDEX IF NOT EXISTS measurements_websdr_time_idx ON measurements (websdr_id, timestamp_utc DESC);
CREATE INDEX IF NOT EXISTS measurements_frequency_idx ON measurements (frequency_hz);
-- time ranges across captures and receivers: BRIN, tiny and nearly free to maintain for
-- rows that arrive in time order (TimescaleDB adds chunk exclusion on top)
CREATE INDEX IF NOT EXISTS measurements_time_brin ON measurements USING brin (timestamp_utc);
