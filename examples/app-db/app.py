#!/usr/bin/env python3
"""An example app with a database, for the expand / contract pattern (psycopg 3; DATABASE_URL).

    DATABASE_URL=postgresql://... python app.py --port 8081 --version 2 [--colour green]

The version's first number decides which schema the code expects:
  1.x  reads and writes `people.name`
  2.x and later read and write `people.full_name` only (the expand added it; the contract drops `name`)

POST /people (body: the name) -> 201 {"id": N} once the row is committed;
GET /people/N -> {"id": N, "name": ...}; GET /people -> {"count": N, "latest": [...]} (the smoke check);
GET /healthz -> 200 once the database answers; GET /version -> the version.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import psycopg


class Pool:
    """A few kept-open connections (autocommit): a request borrows one; a broken one is dropped."""

    def __init__(self, url: str, size: int = 8) -> None:
        self.url, self.idle = url, queue.LifoQueue(maxsize=size)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        try:
            conn = self.idle.get_nowait()
        except queue.Empty:
            conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        try:
            self.idle.put_nowait(conn)
        except queue.Full:
            conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--version", required=True)
    parser.add_argument("--colour", default="")
    args = parser.parse_args()
    column = "name" if args.version.split(".")[0] == "1" else "full_name"
    pool = Pool(os.environ["DATABASE_URL"])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/version":
                return self.reply(200, args.version + "\n")
            try:
                with pool.connection() as conn:
                    if self.path == "/healthz":
                        conn.execute("SELECT 1")
                        return self.reply(200, "ok\n")
                    if self.path == "/people":
                        count = conn.execute("SELECT count(*) FROM people").fetchone()[0]
                        rows = conn.execute(f"SELECT id, {column} FROM people ORDER BY id DESC LIMIT 3").fetchall()
                        return self.json(200, {"count": count, "latest": [{"id": i, "name": n} for i, n in rows]})
                    if self.path.startswith("/people/") and self.path[8:].isdigit():
                        row = conn.execute(f"SELECT id, {column} FROM people WHERE id = %s",
                                           (int(self.path[8:]),)).fetchone()
                        if row is None:
                            return self.reply(404, "no such person\n")
                        return self.json(200, {"id": row[0], "name": row[1], "version": args.version})
            except psycopg.Error as exc:
                return self.reply(500, f"database error: {type(exc).__name__}\n")
            self.reply(404, "not found\n")

        def do_POST(self) -> None:  # noqa: N802
            name = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            if self.path != "/people" or not name:
                return self.reply(400, "POST /people with the name as the body\n")
            try:
                with pool.connection() as conn:
                    row = conn.execute(f"INSERT INTO people ({column}) VALUES (%s) RETURNING id", (name,)).fetchone()
            except psycopg.Error as exc:
                return self.reply(500, f"database error: {type(exc).__name__}\n")
            self.json(201, {"id": row[0]})

        def json(self, status: int, document: object) -> None:
            self.reply(status, json.dumps(document) + "\n", "application/json")

        def reply(self, status: int, body: str, content_type: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *values: object) -> None:
            pass

    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"app-db {args.version} ({args.colour or 'no colour'}) on {args.host}:{args.port}, column {column}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
