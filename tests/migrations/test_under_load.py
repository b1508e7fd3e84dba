"""Under load: writes and reads through the live URL while release 2 expands the schema and goes live, and
while it is rolled back and forward again. Every request must succeed, and every acknowledged write must be
in the database afterwards, readable by the version that did not write it."""

from __future__ import annotations

import random
import threading
import time

import httpx
import psycopg

WRITERS = 4


class Load:
    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.acked: dict[int, str] = {}  # id -> name, once the app answered 201
        self.requests = 0
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True) for n in range(WRITERS)]

    def run(self, n: int) -> None:
        rng = random.Random(n)
        with httpx.Client(base_url=self.url, timeout=10) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                name = f"writer{n}-{i}"
                self.call(lambda: self.write(client, name))
                with self.lock:
                    known = list(self.acked.items())
                if known:
                    self.call(lambda: self.read(client, *rng.choice(known)))

    def write(self, client: httpx.Client, name: str) -> None:
        response = client.post("/people", content=name)
        if response.status_code != 201:
            raise AssertionError(f"POST {name}: {response.status_code} {response.text.strip()}")
        with self.lock:
            self.acked[response.json()["id"]] = name

    def read(self, client: httpx.Client, person: int, name: str) -> None:
        response = client.get(f"/people/{person}")
        if response.status_code != 200 or response.json()["name"] != name:
            raise AssertionError(f"GET {person}: {response.status_code} {response.text.strip()}, expected {name}")

    def call(self, request) -> None:  # type: ignore[no-untyped-def]
        try:
            request()
        except Exception as exc:  # a refused connection counts too
            with self.lock:
                self.failures.append(f"{type(exc).__name__}: {exc}")
        with self.lock:
            self.requests += 1

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)


def test_expand_switch_and_rollback_under_load_lose_nothing(db_env):
    assert db_env.cli("deploy", "--version", "1").returncode == 0
    with Load(db_env.live_url) as load:
        time.sleep(1)
        for step in (("deploy", "--version", "2"), ("rollback",), ("rollback",)):
            result = db_env.cli(*step)
            assert result.returncode == 0, result.stderr
            if step[0] == "deploy":  # the expand ran under load, then the switch
                phases = {p["name"]: p["status"] for p in db_env.report()["phases"]}
                assert phases["expand"] == phases["switch blue -> green"] == "succeeded", phases
            time.sleep(0.5)
        assert db_env.live_version() == "2"
    print(f"\nunder load: {load.requests} requests, {len(load.acked)} acknowledged writes, "
          f"{len(load.failures)} failed")
    assert load.failures == [], load.failures[:5]
    assert len(load.acked) > 100, "the load did not run"
    with psycopg.connect(db_env.database_url) as conn:
        stored = dict(conn.execute("SELECT id, full_name FROM people WHERE name = full_name").fetchall())
    lost = {i: n for i, n in load.acked.items() if stored.get(i) != n}
    assert lost == {}, f"{len(lost)} acknowledged writes are not in the database: {list(lost.items())[:5]}"
