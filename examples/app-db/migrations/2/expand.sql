-- Release 2, expand: add full_name beside name; both versions' writes are seen by both.
-- Version 1 (live while this runs) writes only name; version 2 writes only full_name.
ALTER TABLE people ADD COLUMN IF NOT EXISTS full_name text;
-- name stays NOT NULL for version 1's reads; the trigger fills it from full_name for version 2's inserts.
CREATE OR REPLACE FUNCTION people_sync_names() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    NEW.full_name := coalesce(NEW.full_name, NEW.name);
    NEW.name := coalesce(NEW.name, NEW.full_name);
  ELSIF NEW.name IS DISTINCT FROM OLD.name AND NEW.full_name IS NOT DISTINCT FROM OLD.full_name THEN
    NEW.full_name := NEW.name;
  ELSIF NEW.full_name IS DISTINCT FROM OLD.full_name AND NEW.name IS NOT DISTINCT FROM OLD.name THEN
    NEW.name := NEW.full_name;
  END IF;
  RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS people_sync_names ON people;
CREATE TRIGGER people_sync_names BEFORE INSERT OR UPDATE ON people
  FOR EACH ROW EXECUTE FUNCTION people_sync_names();
-- Backfill after the trigger exists: a row version 1 inserts meanwhile is filled by the trigger.
UPDATE people SET full_name = name WHERE full_name IS NULL;
