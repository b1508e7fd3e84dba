#!/usr/bin/env python3
"""A minimal migration tool (stand-in for alembic, Flyway, sqitch or `psql -f`): plain SQL files.

    DATABASE_URL=postgresql://... python migrate.py expand|contract VERSION

Applies migrations/VERSION/expand.sql or contract.sql in one transaction, once: a table
schema_migrations remembers what was applied, so running it again is a no-op. A version without
that file has nothing to do.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("expand", "contract"):
        print("usage: migrate.py expand|contract VERSION", file=sys.stderr)
        return 2
    half, version = sys.argv[1], sys.argv[2]
    file = Path(__file__).parent / "migrations" / version / f"{half}.sql"
    if not file.exists():
        print(f"{half} {version}: nothing to do (no {file.relative_to(file.parents[2])})")
        return 0
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:  # one transaction: all of the file, or nothing
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                     "(version text, half text, applied_at timestamptz DEFAULT now(), PRIMARY KEY (version, half))")
        if conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s AND half = %s", (version, half)).fetchone():
            print(f"{half} {version}: already applied")
            return 0
        conn.execute(file.read_text())
        conn.execute("INSERT INTO schema_migrations (version, half) VALUES (%s, %s)", (version, half))
    print(f"{half} {version}: applied {file.name}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except psycopg.Error as exc:
        print(f"migration failed: {type(exc).__name__}: {exc}".strip(), file=sys.stderr)
        sys.exit(1)
