"""What stops a database change before any traffic moves: an expand that breaks the live version, a failing or
timing-out migration, a cancelled one; secrets never in the output; on_next_release; bad config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx

from conftest import assert_one_line_error

from .conftest import APP_DB


def migrations(expand: str, extra: str = "") -> str:
    return f"migrations:\n  expand: {expand}\n  timeout: 2s\n{extra}"


def test_an_expand_that_breaks_the_live_version_stops_before_deploy(db_env):
    assert db_env.cli("deploy", "--version", "1").returncode == 0
    rename = ('{command: ["{python}", "-c", "import os, psycopg; psycopg.connect(os.environ[\'DATABASE_URL\'], '
              'autocommit=True).execute(\'ALTER TABLE people RENAME COLUMN name TO nom\')"]}')
    db_env.write(migrations(rename))
    result = db_env.cli("deploy", "--version", "2")
    assert result.returncode == 1, result.stderr
    report = db_env.report()
    assert report["status"] == "failed" and report["switched"] is False
    assert "after the expand, the live version 1 on blue fails: smoke check 'people' failed" in report["reason"]
    assert "status 500" in report["reason"] and "nothing deployed, traffic untouched" in report["reason"]
    names = [p["name"] for p in report["phases"]]
    assert names == ["lock", "resolve live", "expand", "smoke checks live"], names
    status = json.loads(db_env.cli("status", "--json").stdout)
    assert status["live"] == "blue" and status["lock"] is None
    assert {c["colour"]: c["version"] for c in status["colours"]} == {"blue": "1", "green": None}  # never deployed
    assert db_env.live_version() == "1"


def test_a_failing_migration_stops_before_deploy_with_its_output_and_no_secret(db_env, postgres):
    assert db_env.cli("deploy", "--version", "1").returncode == 0
    failing = '{command: "echo connecting to $DATABASE_URL; echo ERROR: column full_name already exists >&2; exit 3", shell: true}'
    db_env.write(migrations(failing))
    result = db_env.cli("deploy", "--version", "2")
    assert result.returncode == 1, result.stderr
    assert "connecting to ***" in result.stderr  # its output is in the log, the database URL is not
    assert "ERROR: column full_name already exists" in result.stderr
    report = db_env.report()
    assert report["reason"].startswith("expand exited with code 3: ERROR: column full_name already exists")
    assert report["phases"][-1]["name"] == "expand" and report["phases"][-1]["status"] == "failed"
    expand = db_env.history()[0]
    assert (expand["action"], expand["outcome"], expand["version"]) == ("expand", "failed", "2")
    everything = result.stdout + result.stderr + json.dumps(report) + json.dumps(db_env.history())
    assert postgres.password not in everything and db_env.database_url not in everything
    assert db_env.live_version() == "1" and db_env.report()["pending_contract"] is None


def test_a_migration_that_times_out_is_stopped_with_its_children(db_env):
    assert db_env.cli("deploy", "--version", "1").returncode == 0
    db_env.write(migrations('{command: "echo still migrating; sleep 60 & wait", shell: true}'))
    started = time.monotonic()
    result = db_env.cli("deploy", "--version", "2")
    assert result.returncode == 1 and time.monotonic() - started < 30
    assert db_env.report()["reason"].startswith("expand timed out after 2s")
    assert "still migrating" in result.stderr
    assert db_env.live_version() == "1"
    assert subprocess.run(["pgrep", "-f", "sleep 60 & wait"], capture_output=True).returncode == 1


def test_a_cancel_during_the_expand_leaves_live_untouched_and_frees_the_lock(db_env):
    assert db_env.cli("deploy", "--version", "1").returncode == 0
    marker = db_env.dir / "expand-started"
    db_env.write(migrations(f'{{command: "touch {marker}; exec sleep 30", shell: true}}').replace("2s", "60s"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bluegreen", "deploy", "-c", str(db_env.config), "--version", "2"], cwd=db_env.dir,
        env={**os.environ, "BLUEGREEN_CI": "plain", "DATABASE_URL": db_env.database_url},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 1, stderr
    report = db_env.report()
    assert report["status"] == "cancelled" and report["cancelled_in"] == "expand", report
    assert "live untouched" in report["reason"]
    status = json.loads(db_env.cli("status", "--json").stdout)
    assert status["lock"] is None and status["live"] == "blue"
    assert status["history"][0]["action"] == "expand" and status["history"][0]["outcome"] == "cancelled"
    assert db_env.live_version() == "1"


def test_on_next_release_runs_the_pending_contract_first(db_env):
    db_env.write(extra="  run_contract: on_next_release\n")
    for version in ("1", "2"):
        assert db_env.cli("deploy", "--version", version).returncode == 0
    assert db_env.columns() == {"id", "name", "full_name"} and db_env.report()["pending_contract"] == "2"
    third = db_env.cli("deploy", "--version", "3")
    assert third.returncode == 0, third.stderr
    report = db_env.report()
    names = [p["name"] for p in report["phases"]]
    assert names[:6] == ["lock", "resolve live", "retire blue", "contract", "expand", "smoke checks live"], names
    assert report["phases"][3]["detail"] == "of release 2: exited with code 0: contract 2: applied contract.sql"
    assert db_env.columns() == {"id", "full_name"}
    assert report["pending_contract"] == "3"  # release 3's own expand (nothing to do here) waits for its contract
    assert db_env.live_version() == "3"
    assert httpx.post(db_env.live_url + "/people", content="Barbara Liskov", timeout=5).status_code == 201
    # Green (version 2) may come back: it needs only full_name.
    back = db_env.cli("rollback")
    assert back.returncode == 0, back.stderr
    assert db_env.live_version() == "2"


def test_a_string_command_without_shell_is_a_one_line_config_error(db_env):
    db_env.write(migrations('{command: "alembic upgrade head"}'))
    result = db_env.cli("deploy", "--version", "1")
    assert result.returncode == 2
    line = assert_one_line_error(result)
    assert "migrations.expand: a string command runs through /bin/sh only with `shell: true`" in line, line


def test_contract_without_a_configured_contract_is_a_config_error(db_env):
    db_env.write(migrations('{command: ["true"]}'))
    result = db_env.cli("contract")
    assert result.returncode == 2
    assert "migrations.contract is not configured" in assert_one_line_error(result)


def test_a_squawk_flagged_expand_stops_before_anything_ran(db_env):
    assert db_env.cli("deploy", "--version", "1").returncode == 0
    (db_env.dir / "sql" / "2").mkdir(parents=True)
    (db_env.dir / "sql" / "2" / "expand.sql").write_text(
        "ALTER TABLE people ADD COLUMN IF NOT EXISTS full_name text;\nALTER TABLE people DROP COLUMN name;\n")
    ran = db_env.dir / "expand-ran"
    db_env.write(migrations(f'{{command: ["touch", "{ran}"]}}',
                            '  lint: {expand: ["sql/{version}/*.sql"]}\n'))
    result = db_env.cli("deploy", "--version", "2")
    assert result.returncode == 1, result.stderr
    report = db_env.report()
    assert report["reason"].startswith("lint: sql/2/expand.sql:2: ban-drop-column: Dropping a column"), report["reason"]
    assert "nothing ran, live untouched" in report["reason"]
    assert [p["name"] for p in report["phases"]][-1] == "lint expand"
    assert "squawk: sql/2/expand.sql:1: require-lock-timeout" in result.stderr  # a warning, in the log
    assert not ran.exists() and db_env.history()[0]["action"] == "deploy"  # no expand ran or was recorded
    assert db_env.columns() == {"id", "name"} and db_env.live_version() == "1"

    # The example's own expand has only warnings: it passes the lint and runs.
    db_env.write(extra=f'  lint: {{expand: ["{APP_DB}/migrations/{{version}}/expand.sql", "none/*.sql"]}}\n')
    result = db_env.cli("deploy", "--version", "2")
    assert result.returncode == 0, result.stderr
    lint = next(p for p in db_env.report()["phases"] if p["name"] == "lint expand")
    assert lint["status"] == "succeeded" and lint["detail"].startswith("1 file(s), 0 blocking"), lint


def test_lint_without_squawk_says_how_to_install_it(db_env):
    (db_env.dir / "expand.sql").write_text("SELECT 1;\n")
    db_env.write(migrations('{command: ["true"]}', '  lint: {expand: ["expand.sql"], squawk: no-such-squawk}\n'))
    result = db_env.cli("deploy", "--version", "1")
    assert result.returncode == 1
    assert "migrations.lint: 'no-such-squawk' is not installed (pip install squawk-cli)" in db_env.report()["reason"]
    assert "Traceback" not in result.stderr
