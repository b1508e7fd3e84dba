"""Expand / contract against a real PostgreSQL: the example app with a database (examples/app-db), the real CLI,
the local target behind a real Caddy. v1 reads and writes `name`; v2 adds and writes `full_name` (expand: add
column, trigger, backfill); release 2's contract drops `name`."""

from __future__ import annotations

import json

import httpx


def add(env, name: str) -> int:
    response = httpx.post(env.live_url + "/people", content=name, timeout=5)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def read(env, person: int) -> str:
    response = httpx.get(f"{env.live_url}/people/{person}", timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["name"]


def test_expand_then_rollback_then_contract_then_no_rollback_past_it(db_env):
    first = db_env.cli("deploy", "--version", "1")
    assert first.returncode == 0, first.stderr
    ada = add(db_env, "Ada Lovelace")
    assert db_env.columns() == {"id", "name"}

    second = db_env.cli("deploy", "--version", "2")
    assert second.returncode == 0, second.stderr
    report = db_env.report()
    names = [p["name"] for p in report["phases"]]
    assert names[:5] == ["lock", "resolve live", "expand", "smoke checks live", "deploy green"], names
    expand = report["phases"][2]
    assert expand["status"] == "succeeded" and expand["duration"] > 0 and expand["detail"] == "exited with code 0: expand 2: applied expand.sql"
    assert "expand 2: applied expand.sql" in second.stderr  # its output, streamed to the log
    assert report["pending_contract"] == "2"
    assert db_env.columns() == {"id", "name", "full_name"}
    assert read(db_env, ada) == "Ada Lovelace"  # v2 reads the backfilled row
    grace = add(db_env, "Grace Hopper")  # v2 writes full_name only

    status = db_env.cli("status")
    assert "schema: contract pending for release 2" in status.stdout, status.stdout
    schema = json.loads(db_env.cli("status", "--json").stdout)["schema"]
    assert schema["pending_contract"]["version"] == "2" and schema["last_contract"] is None

    # The contract is refused while blue (version 1, which reads `name`) can still be switched back to.
    refused = db_env.cli("contract")
    assert refused.returncode == 1, refused.stderr
    assert "blue still runs version 1, which depends on the old schema" in refused.stderr
    assert db_env.columns() == {"id", "name", "full_name"}

    # A rollback after an expand alone works, and v1 reads the row v2 wrote (the trigger filled `name`).
    back = db_env.cli("rollback")
    assert back.returncode == 0, back.stderr
    assert db_env.live_version() == "1"
    assert read(db_env, grace) == "Grace Hopper"
    linus = add(db_env, "Linus")  # v1 writes name only; the trigger fills full_name for v2

    # ... and the contract is refused while version 1 is live.
    assert "is not live and verified" in db_env.cli("contract", "--retire-previous").stderr
    assert db_env.cli("rollback").returncode == 0  # forward again to 2 (green, still running)
    assert read(db_env, linus) == "Linus"

    # --retire-previous stops blue first, then the contract drops `name`.
    done = db_env.cli("contract", "--retire-previous")
    assert done.returncode == 0, done.stderr
    report = db_env.report()
    assert [p["name"] for p in report["phases"]][-2:] == ["retire blue", "contract"], report["phases"]
    assert report["pending_contract"] is None and report["version"] == "2"
    assert db_env.columns() == {"id", "full_name"}
    assert read(db_env, ada) == "Ada Lovelace" and read(db_env, linus) == "Linus"
    schema = json.loads(db_env.cli("status", "--json").stdout)["schema"]
    assert schema["pending_contract"] is None and schema["last_contract"]["version"] == "2"

    # A rollback past the contract is refused, forced or not: exit 1, nothing changed.
    history_before = db_env.history()
    for args in ((), ("--force",)):
        refused = db_env.cli("rollback", *args)
        assert refused.returncode == 1, refused.stderr
        assert "version 1 predates the contract of release 2" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
        assert db_env.live_version() == "2"
    assert db_env.history() == history_before
    assert db_env.cli("contract").returncode == 0  # nothing pending: a no-op, said so
    assert db_env.report()["phases"][-1]["detail"] == "no expand is waiting for its contract"
