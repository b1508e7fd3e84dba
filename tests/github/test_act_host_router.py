"""Two first-try traps of the host-router mode, under act: the router is a Caddy on the host that reads the
switch file bluegreen writes in the workspace (`router.mode: host`).

- No router running: the deploy stops before anything changes, saying the router is not running.
- A Caddy run by its own user (not root) reads the switch file and serves the switched colour.
"""

from __future__ import annotations

import shutil
import tempfile
import textwrap
from pathlib import Path

import httpx
import yaml

from .support import caddy_as_nobody, docker, free_port, remove_containers, unique
from .test_act_e2e import ENVIRONMENT, log_lines, ws  # noqa: F401  (ws: the module's act workspace)


def test_host_router_not_running_then_run_as_nobody(ws, example_image):  # noqa: F811
    app, proxy = unique("host"), free_port()
    config = yaml.safe_load((ws.root / ".bluegreen.yml").read_text())
    config["app"] = app
    target = config["environments"][ENVIRONMENT]["target"]
    target["ports"] = {"blue": free_port(), "green": free_port()}
    target["router"] = {"mode": "host", "manage": False, "listen": f"127.0.0.1:{proxy}"}
    (ws.root / ".bluegreen-host.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (ws.root / ".github" / "workflows" / "host.yml").write_text(textwrap.dedent(f"""\
        on: push
        jobs:
          deploy:
            runs-on: ubuntu-latest
            steps:
              - uses: ./
                id: deploy
                with:
                  config: .bluegreen-host.yml
                  environment: {ENVIRONMENT}
                  version: ${{{{ github.sha }}}}
              - if: always()
                env:
                  STATUS: ${{{{ steps.deploy.outputs.status }}}}
                  REASON: ${{{{ steps.deploy.outputs.reason }}}}
                run: |
                  echo "bluegreen: status=$STATUS reason=$REASON"
        """))
    scratch = Path(tempfile.mkdtemp(prefix="bg-host-router-"))
    scratch.chmod(0o755)
    caddy = None
    try:
        # Trap 5: nothing listens on router.listen. The step fails before anything is deployed.
        ws.commit("a release, and no router on the host", example_image)
        result = ws.act("push", "host.yml")
        assert result.returncode != 0
        assert log_lines(result), result.stdout[-3000:] + result.stderr[-3000:]
        line = log_lines(result)[0]
        assert line.startswith("bluegreen: status=failed reason=the router (caddy at 127.0.0.1:") and "is not reachable" in line
        assert docker("ps", "-aq", "--filter", f"name={app}-").stdout.split() == []  # no colour was started

        # Trap 4: the host's Caddy runs as nobody; the switch file in the workspace must be readable to it.
        state = ws.root / ".bluegreen" / ENVIRONMENT
        for folder in [*reversed(state.parents), state]:  # a path nobody may walk, as a runner's workspace is
            if folder.is_relative_to(Path(tempfile.gettempdir())) and folder.exists():
                folder.chmod(folder.stat().st_mode | 0o011)
        state.mkdir(parents=True, exist_ok=True)
        state.chmod(0o755)
        caddy = caddy_as_nobody(proxy, state / "upstream", scratch)
        sha = ws.commit("the same release, the router running", example_image)
        result = ws.act("push", "host.yml")
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert oct((state / "upstream").stat().st_mode & 0o777) == "0o644"
        assert httpx.get(f"http://127.0.0.1:{proxy}/version", timeout=5).text.strip() == sha  # nobody read it
    finally:
        if caddy is not None:
            caddy.terminate()
            caddy.wait(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)
        remove_containers(app)
        docker("network", "rm", f"bluegreen-{app}-{ENVIRONMENT}", check=False)
        for name in (".bluegreen-host.yml", ".github/workflows/host.yml"):
            (ws.root / name).unlink(missing_ok=True)
