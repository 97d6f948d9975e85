-- A live capture beats: its process sets heartbeat_at every few seconds (see
-- heimdall_lab.db.captures.HEARTBEAT_S), so a capture is taken for dead only when its heartbeat
-- stops, however long it has been running.
ALTER TABLE captures ADD COLUMN IF NOT EXISTS heartbeat_at timestamptz;
