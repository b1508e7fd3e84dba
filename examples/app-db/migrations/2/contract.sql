-- Release 2, contract (runs a release later: no colour runs version 1 any more): drop what only 1 used.
DROP TRIGGER IF EXISTS people_sync_names ON people;
DROP FUNCTION IF EXISTS people_sync_names();
ALTER TABLE people DROP COLUMN IF EXISTS name;
ALTER TABLE people ALTER COLUMN full_name SET NOT NULL;
