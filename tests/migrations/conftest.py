"""A throw-away PostgreSQL cluster (Debian's postgresql: initdb, pg_ctl) for the session, one database per test,
and the example app with a database (examples/app-db) on the local target behind a real Caddy."""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from conftest import ROOT, free_port  # tests/conftest.py (tests/ is on the path: it is no package)

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[test]')")

APP_DB = ROOT / "examples" / "app-db"


def _missing(reason: str) -> None:
    """Skip on a developer's machine; fail where CI promised the tools (BLUEGREEN_REQUIRE_TOOLS=1)."""
    if os.environ.get("BLUEGREEN_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{reason} (BLUEGREEN_REQUIRE_TOOLS=1; `bash .ci/setup-packages.sh` installs it)")
    pytest.skip(reason)


@dataclass
class Cluster:
    port: int
    password: str  # trust authentication ignores it: it is there to prove it never reaches a log

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        _missing("PostgreSQL is not installed (Debian package postgresql: initdb, pg_ctl)")
    bindir = Path(found[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="bluegreen-pg-"))
    # initdb refuses to run as root: the cluster belongs to nobody when the tests run as root.
    prefix: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        prefix = ["runuser", "-u", "nobody", "--"]
    data, port = root / "data", free_port()
    run = lambda *argv: subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=120)  # noqa: E731
    made = run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    assert made.returncode == 0, made.stderr
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    started = run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
    assert started.returncode == 0, started.stderr + (root / "log").read_text(errors="replace")
    try:
        yield Cluster(port=port, password="pw-" + secrets.token_hex(8))
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database(postgres: Cluster) -> Iterator[str]:
    """A fresh database for one test; its URL (with the cluster's password in it)."""
    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres.url(name)
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass
class DbEnv:
    """examples/app-db on the local target, in a temp dir, on free ports, with its own database."""

    dir: Path
    config: Path
    proxy_port: int
    ports: dict[str, int]
    database_url: str

    @property
    def live_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def write(self, migrations: str | None = None, extra: str = "") -> None:
        """(Re)write the config; `migrations` replaces the example's migrations block."""
        block = migrations if migrations is not None else textwrap.dedent(f"""\
            migrations:
              expand: {{command: ["{{python}}", "{APP_DB / 'migrate.py'}", "expand", "{{version}}"]}}
              contract: {{command: ["{{python}}", "{APP_DB / 'migrate.py'}", "contract", "{{version}}"]}}
              timeout: 30s
            """)
        self.config.write_text(textwrap.dedent(f"""\
            app: dbapp
            environments:
              test:
                target:
                  kind: local
                  command: ["{{python}}", "{APP_DB / 'app.py'}", "--port", "{{port}}", "--version", "{{version}}", "--colour", "{{colour}}"]
                  ports: {{blue: {self.ports['blue']}, green: {self.ports['green']}}}
                  state_dir: state
                  router: {{listen: "127.0.0.1:{self.proxy_port}"}}
            timeouts: {{ready: 15s}}
            smoke:
              timeout: 5s
              interval: 0.1
              checks:
                - name: people
                  path: /people
                  expect: {{status: 200}}
            verify: {{consecutive_successes: 2, window: 0.5s, interval: 0.1, timeout: 5s}}
            scale_down_delay: never
            """) + block + extra)  # extra: more lines of the migrations block, indented

    def cli(self, command: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "bluegreen", command, "-c", str(self.config), *args], cwd=self.dir,
            capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "BLUEGREEN_CI": "plain", "DATABASE_URL": self.database_url},
        )

    def report(self) -> dict:
        return json.loads((self.dir / "bluegreen-report.json").read_text())

    def history(self) -> list[dict]:
        return json.loads((self.dir / "state" / "history.json").read_text())

    def live_version(self) -> str:
        return httpx.get(self.live_url + "/version", timeout=5).text.strip()

    def columns(self) -> set[str]:
        with psycopg.connect(self.database_url) as conn:
            rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'people'")
            return {name for (name,) in rows}


@pytest.fixture
def db_env(tmp_path: Path, database: str) -> Iterator[DbEnv]:
    env = DbEnv(dir=tmp_path, config=tmp_path / "bluegreen.yml", proxy_port=free_port(),
                ports={"blue": free_port(), "green": free_port()}, database_url=database)
    env.write()
    yield env
    env.cli("down", timeout=60)
