-- Release 1: the table, as version 1 uses it.
CREATE TABLE IF NOT EXISTS people (id bigserial PRIMARY KEY, name text NOT NULL);
