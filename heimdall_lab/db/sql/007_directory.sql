-- heimdall_lab migration 007: what the public receiver directory says about each receiver.
-- The directory owns these columns (heimdall_lab.db.receivers.import_directory updates them on
-- every import); the user owns name, calibration_db, is_active, timeout_seconds, retry_count
-- and notes, which an import never changes.
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'user';
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS directory_id text;
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS title text NOT NULL DEFAULT '';
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS tls boolean NOT NULL DEFAULT false;
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS users integer;
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS users_max integer;
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS has_gps boolean;
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS gps_good integer;
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS fixes_min integer;
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS tdoa_ch integer;
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS time_limited boolean;
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS antenna text NOT NULL DEFAULT '';
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS sw_version text NOT NULL DEFAULT '';
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS snr_db double precision;
-- when the directory last heard from the receiver (its "updated" field)
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS directory_updated_at timestamptz;
-- when this toolkit last reached it (receivers check), and what the last check said
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS last_seen_at timestamptz;
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS last_checked_at timestamptz;
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS last_check_error text;
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS notes text NOT NULL DEFAULT '';

-- not unique: emulated receivers of different names may have used one loopback port over time
CREATE INDEX IF NOT EXISTS websdrs_address_idx ON websdrs (lower(host), port);
CREATE INDEX IF NOT EXISTS websdrs_directory_id_idx ON websdrs (directory_id);
-- whether the receiver was in the last directory imported (NULL: never imported); selection
-- passes over those the directory no longer lists
ALTER TABLE websdrs ADD COLUMN IF NOT EXISTS listed boolean;
