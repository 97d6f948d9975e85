-- Capture ids follow heimdall_lab.ids.check_capture_id: 1-128 letters, digits, '_', '.' or
-- '-', starting with a letter or digit, never '..' (UUID hex ids still qualify).
ALTER TABLE captures DROP CONSTRAINT IF EXISTS captures_id_check;
ALTER TABLE captures ADD CONSTRAINT captures_id_check
    CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$' AND strpos(id, '..') = 0);
