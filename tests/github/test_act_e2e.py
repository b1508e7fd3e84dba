"""The action end to end with act and the Docker engine, through the example workflows.

A workspace (a git repository in a temp dir) holds the action (action.yml, Dockerfile, src/), the
example workflows with `uses: bluegreen-dev/bluegreen@v1` replaced by `uses: ./`, and as .bluegreen.yml
examples/docker/bluegreen.yml with its defaults (only names, ports and timeouts changed for the test).
Nothing is set up on the host: the action starts the colours' containers and the router container
through the host's Docker socket, and the router keeps its state in a named volume. Traffic is checked
from outside, through the router's published port, after the step has ended.

The tests run in order and share the workspace: deploy, deploy again, roll back, a failing deploy,
deploy-then-promote, the prebuilt image by `docker://` reference, a cleaned checkout, the team's own
test suite between deploy and promote (passing, then failing), and a cancelled workflow.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import yaml

from .support import (ACT_JOB_IMAGE, ROOT, copy_action, docker, for_act, docker_client, free_port, need_act, remove_act_containers,
                      remove_containers, tag_example, unique)

ENVIRONMENT = "production"  # the example workflows deploy this environment


class Workspace:
    def __init__(self, root: Path, act: str, app: str, repository: str, proxy: int, ports: dict[str, int]) -> None:
        self.root, self.act_bin, self.app, self.repository = root, act, app, repository
        self.proxy, self.ports = proxy, ports
        self.durations: list[str] = []

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args], cwd=self.root,
            check=True, capture_output=True, text=True,
        ).stdout.strip()

    def commit(self, message: str, image: str) -> str:
        """A new commit (a push to main); its SHA is the version, `image` is tagged as that version."""
        self.git("commit", "-q", "--allow-empty", "-m", message)
        sha = self.git("rev-parse", "HEAD")
        tag_example(self.repository, sha, source=image)
        return sha

    def act(self, event: str, workflow: str, *inputs: str, timeout: float = 280) -> subprocess.CompletedProcess:
        argv = [self.act_bin, event, "-W", f".github/workflows/{workflow}", "-P", f"ubuntu-latest={ACT_JOB_IMAGE}",
                "--pull=false", "-b", "--rm"]
        for item in inputs:
            argv += ["--input", item]
        started = time.monotonic()
        try:
            result = subprocess.run(argv, cwd=self.root, capture_output=True, text=True, timeout=timeout)
        finally:
            remove_act_containers(self.root)  # a run killed by the timeout leaves its job container
        self.durations.append(f"{workflow} {time.monotonic() - started:.1f}s")
        return result

    def live_version(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.proxy}/version", timeout=5).text.strip()

    def history(self) -> list[dict]:
        """The release history, from the router's state volume (nothing is kept in the workspace)."""
        return json.loads(self.state_file("history.json") or "[]")

    def state_file(self, name: str) -> str | None:
        """A file of the router's state volume; None when it does not exist."""
        with docker_client() as client:
            response = client.get(f"/containers/{self.app}-{ENVIRONMENT}-router/archive",
                                  params={"path": f"/state/{name}"})
        if response.status_code == 404:
            return None
        response.raise_for_status()
        with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
            return tar.extractfile(tar.next()).read().decode()


def log_lines(result: subprocess.CompletedProcess, prefix: str = "bluegreen: ") -> list[str]:
    """The lines the workflow's own `echo "bluegreen: ..."` steps printed (act prefixes them with `| `)."""
    return [m.group(1) for m in re.finditer(r"\|\s+(" + re.escape(prefix) + r".*)", result.stdout)]


@pytest.fixture(scope="module")
def ws(tmp_path_factory, example_image):
    act = need_act()
    root = tmp_path_factory.mktemp("act") / "repo"
    root.mkdir()
    copy_action(root)
    workflows = root / ".github" / "workflows"
    workflows.mkdir(parents=True)
    for name in ("deploy.yml", "rollback.yml", "promote.yml", "deploy-with-tests.yml"):
        text = (ROOT / "examples" / "workflows" / name).read_text()
        assert "uses: bluegreen-dev/bluegreen@v1" in text
        (workflows / name).write_text(for_act(text))

    space = Workspace(root, act, app=unique("e2e"), repository=unique("bluegreen-example-"),
                      proxy=free_port(), ports={"blue": free_port(), "green": free_port()})
    # The example config as a user copies it; only names, ports and timeouts differ.
    config = yaml.safe_load((ROOT / "examples" / "docker" / "bluegreen.yml").read_text())
    config["app"] = space.app
    target = config["environments"][ENVIRONMENT]["target"]
    target.update(image=f"{space.repository}:{{version}}", ports=space.ports, pull="never", stop_timeout=2)
    target["router"]["listen"] = f"127.0.0.1:{space.proxy}"
    config.update(timeouts={"ready": "30s"}, verify={"consecutive_successes": 2, "window": "1s"},
                  scale_down_delay="1s")
    config["smoke"].update(timeout="5s", interval=0.2)
    (root / ".bluegreen.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / ".gitignore").write_text(".bluegreen/\nbluegreen-report.json\n")
    space.git("init", "-q", "-b", "main")
    space.git("add", "-A")
    space.git("commit", "-q", "-m", "the action and its workflows")

    yield space
    remove_containers(space.app)  # the colours and the router
    docker("volume", "rm", f"bluegreen-{space.app}-{ENVIRONMENT}", check=False)
    docker("network", "rm", f"bluegreen-{space.app}-{ENVIRONMENT}", check=False)
    tags = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", space.repository, check=False).stdout.split()
    if tags:
        docker("rmi", *tags, check=False)
    print(f"\nact runs: {', '.join(space.durations)}")


def test_deploy_workflow_builds_the_action_and_switches_traffic(ws, example_image):
    sha = ws.commit("first release", example_image)
    result = ws.act("push", "deploy.yml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"docker build -t act-dockeraction:latest {ws.root}" in result.stdout  # the image from ./Dockerfile
    assert "Success - Main Blue-green deploy" in result.stdout
    assert ws.live_version() == sha  # from outside, after the step: the router container outlived it
    assert not (ws.root / ".bluegreen").exists()  # nothing kept in the workspace
    assert log_lines(result)[0] == "bluegreen: status=succeeded live-colour=blue previous-colour="


def test_a_later_step_reads_the_outputs(ws, example_image):
    first = ws.live_version()
    sha = ws.commit("second release", example_image)
    result = ws.act("push", "deploy.yml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert ws.live_version() == sha
    assert log_lines(result) == [
        "bluegreen: status=succeeded live-colour=green previous-colour=blue",
        f"bluegreen: version={sha} previous-version={first}",
        f"bluegreen: rollback-command=bluegreen rollback -c .bluegreen.yml -e {ENVIRONMENT}",
    ]
    assert "Main Roll back" not in result.stdout  # nothing failed: the rollback step was skipped


def test_rollback_workflow_dispatched_with_act_switches_back(ws):
    previous = ws.history()[0]["previous_version"]
    result = ws.act("workflow_dispatch", "rollback.yml", f"environment={ENVIRONMENT}", "reason=e2e test", "force=false")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert ws.live_version() == previous
    assert log_lines(result) == [
        f"bluegreen: rollback status=succeeded live-colour=blue version={previous}",
        "bluegreen: reason=e2e test",
    ]


def test_failing_smoke_check_fails_the_step_and_leaves_live_alone(ws, example_image):
    live = ws.live_version()
    broken = f"{ws.repository}:broken"
    # A release whose every page but /healthz answers 500: ready, but failing its smoke checks.
    subprocess.run(
        ["docker", "build", "-q", "-t", broken, "-"], check=True, capture_output=True, text=True, timeout=300,
        input=f'FROM {example_image}\nENTRYPOINT ["python", "/app/app.py", "--host", "0.0.0.0", "--port", "8000", "--fail", "smoke"]\n',
    )
    sha = ws.commit("broken release", broken)
    result = ws.act("push", "deploy.yml")
    assert result.returncode != 0
    assert "Failure - Main Blue-green deploy" in result.stdout
    assert re.search(r"::error title=bluegreen deploy failed::smoke check 'version' failed on green .*status 500",
                     result.stdout), result.stdout[-4000:]
    assert ws.live_version() == live  # live traffic untouched
    lines = log_lines(result)
    assert lines[0] == "bluegreen: status=failed live-colour=blue previous-colour=blue"
    assert lines[1].startswith(f"bluegreen: version={sha} ")
    assert "Main Roll back" not in result.stdout  # switched is false: nothing to roll back


# --- a new user's first mistakes (issue 14), after the failed deploy above ------------------------


def releases(ws: Workspace) -> dict[str, str]:
    """Commit message -> SHA (the version each test deployed), from the workspace's git log."""
    return {line[41:]: line[:40] for line in ws.git("log", "--format=%H %s").splitlines()}


def test_forced_rollback_never_routes_to_a_release_that_never_went_live(ws):
    """The broken release is on green and never went live; the user dispatches the rollback workflow with
    force: true (as the old refusal suggested). Live must stay where it is, and the step says what to do."""
    live = ws.live_version()
    shas = releases(ws)
    result = ws.act("workflow_dispatch", "rollback.yml", f"environment={ENVIRONMENT}", "reason=force it", "force=true")
    assert result.returncode != 0
    assert ws.live_version() == live == shas["first release"]
    assert f"green runs version {shas['broken release']}, which never went live" in result.stdout, result.stdout[-3000:]
    # The way out: deploy the last other version that served live traffic again, in the action's terms.
    assert f"deploy it again: command: deploy, version: {shas['second release']}" in result.stdout
    assert "::error title=bluegreen rollback failed::" in result.stdout
    # The refused rollback went to no version.
    assert log_lines(result)[0] == "bluegreen: rollback status=failed live-colour=blue version="


def test_status_command_sets_outputs(ws):
    (ws.root / ".github" / "workflows" / "status.yml").write_text(textwrap.dedent(f"""\
        on: workflow_dispatch
        jobs:
          status:
            runs-on: ubuntu-latest
            steps:
              - id: status
                uses: ./
                with:
                  command: status
                  environment: {ENVIRONMENT}
              - env:
                  OUT: ${{{{ toJSON(steps.status.outputs) }}}}
                run: |
                  echo "bluegreen: $(echo "$OUT" | tr -d '[:space:]')"
        """))
    shas = releases(ws)
    result = ws.act("workflow_dispatch", "status.yml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    outputs = json.loads(log_lines(result)[0].removeprefix("bluegreen: "))
    assert outputs == {
        "status": "succeeded", "live-colour": "blue", "live-version": shas["first release"], "idle-colour": "green",
        "idle-version": shas["broken release"], "idle-state": "ready", "live-url": f"http://127.0.0.1:{ws.proxy}",
        "reason": "", "pending-contract": "",
    }


def test_a_misspelt_input_fails_with_the_suggestion_and_sets_the_outputs(ws, example_image):
    """The deploy workflow with `enviroment:` for `environment:`: with one environment in the config the
    deploy used to go on; now the step fails before anything runs, naming the input it meant."""
    text = (ws.root / ".github" / "workflows" / "deploy.yml").read_text()
    assert "          environment: production\n          version:" in text
    typo = text.replace("          environment: production\n          version:", "          enviroment: production\n          version:", 1)
    (ws.root / ".github" / "workflows" / "typo.yml").write_text(typo)
    live = ws.live_version()
    ws.commit("release with a typo in the workflow", example_image)
    result = ws.act("push", "typo.yml")
    assert result.returncode != 0
    assert "input enviroment is not an input of this action (did you mean environment?" in result.stdout, result.stdout[-3000:]
    assert ws.live_version() == live  # nothing was deployed
    assert log_lines(result)[0] == "bluegreen: status=invalid live-colour= previous-colour="


def test_promote_workflow_prepares_then_promotes(ws, example_image):
    live = ws.live_version()
    sha = ws.commit("approved release", example_image)
    result = ws.act("push", "promote.yml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(rf"prepared: version {sha} is ready on green at http://127.0.0.1:{ws.ports['green']}; "
                     r"live stays blue", result.stdout), result.stdout[-3000:]
    assert "Success - Main Switch to the prepared colour (re-checked first)" in result.stdout
    assert ws.live_version() == sha != live


def test_prebuilt_image_by_docker_reference(ws, action_image):
    """`uses: docker://<image>` (the prebuilt variant): no action.yml, so no defaults; `with:` still arrives as
    INPUT_*, and the entrypoint's own defaults (config .bluegreen.yml) apply."""
    (ws.root / ".github" / "workflows" / "prebuilt.yml").write_text(textwrap.dedent(f"""\
        on: workflow_dispatch
        jobs:
          status:
            runs-on: ubuntu-latest
            steps:
              - uses: docker://{action_image}
                with:
                  command: status
                  environment: {ENVIRONMENT}
        """))
    live = ws.live_version()
    result = ws.act("workflow_dispatch", "prebuilt.yml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(rf"\|\s+{ws.app}/{ENVIRONMENT}\s+live: green \(version {live}\)", result.stdout), result.stdout[-3000:]


def test_a_cleaned_checkout_loses_nothing(ws, example_image):
    """`actions/checkout` cleans the workspace (`git clean -ffdx`) before every job: live keeps serving, and
    the next deploy and a dispatched rollback both still know what was live."""
    live = ws.live_version()
    ws.git("clean", "-ffdx")
    assert ws.live_version() == live
    sha = ws.commit("after a clean checkout", example_image)
    result = ws.act("push", "deploy.yml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert ws.live_version() == sha
    assert log_lines(result)[1] == f"bluegreen: version={sha} previous-version={live}"
    ws.git("clean", "-ffdx")
    result = ws.act("workflow_dispatch", "rollback.yml", f"environment={ENVIRONMENT}", "reason=clean", "force=false")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert ws.live_version() == live


# --- the team's own test suite between deploy and promote (issue 9): deploy-with-tests.yml ---------

# The suite needs pytest (not in the action's image) and httpx; the runner has neither, the workflow installs
# them, as a team's own step would its requirements.
ACCEPTANCE_SUITE = """\
import os

import httpx


def test_the_preview_serves_this_commit():
    response = httpx.get(os.environ["BLUEGREEN_PREVIEW_URL"] + "/version", timeout=5)
    assert response.status_code == 200
    assert os.environ["GITHUB_SHA"] in response.text
"""


def test_own_test_suite_passes_then_promote_switches(ws, example_image):
    for package in ("pytest", "httpx"):  # so the suite passes only if the workflow's pip install worked
        assert docker("run", "--rm", ACT_JOB_IMAGE, "python3", "-c", f"import {package}", check=False).returncode != 0
    suite = ws.root / "tests" / "acceptance"
    suite.mkdir(parents=True)
    (suite / "test_preview.py").write_text(ACCEPTANCE_SUITE)
    ws.git("add", "tests")
    live = ws.live_version()
    sha = ws.commit("a release with its acceptance tests", example_image)
    result = ws.act("push", "deploy-with-tests.yml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Success - Main Deploy to the idle colour; live traffic stays" in result.stdout
    assert re.search(r"\|\s+tests/acceptance/test_preview.py \.", result.stdout), result.stdout[-3000:]
    assert "1 passed" in result.stdout
    assert "Success - Main Switch traffic to the tested version" in result.stdout
    assert ws.live_version() == sha != live
    assert "Tests failed, nothing switched" not in result.stdout


def test_a_failing_test_leaves_live_untouched_and_promote_skipped(ws, example_image):
    suite = ws.root / "tests" / "acceptance"
    (suite / "test_broken.py").write_text(
        "import os\n\nimport httpx\n\n\ndef test_a_page_this_release_lacks():\n"
        "    assert httpx.get(os.environ['BLUEGREEN_PREVIEW_URL'] + '/no-such-page', timeout=5).status_code == 200\n")
    ws.git("add", "tests")
    live, history = ws.live_version(), ws.history()
    sha = ws.commit("a release that fails its acceptance tests", example_image)
    try:
        result = ws.act("push", "deploy-with-tests.yml")
    finally:
        ws.git("rm", "-q", str(suite / "test_broken.py"))
        ws.git("commit", "-q", "-m", "the passing suite again")
    assert result.returncode != 0
    assert "Success - Main Deploy to the idle colour; live traffic stays" in result.stdout
    assert "1 failed, 1 passed" in result.stdout, result.stdout[-3000:]
    assert "Failure - Main Acceptance tests against the new version" in result.stdout
    assert "Main Switch traffic to the tested version" not in result.stdout  # skipped: never started
    assert ws.live_version() == live  # from outside: live traffic untouched
    idle = "green" if history[0]["colour"] == "blue" else "blue"
    assert log_lines(result) == [
        f"bluegreen: not promoted: live stays {history[0]['colour']}; {sha} stays on {idle} "
        f"(http://127.0.0.1:{ws.ports[idle]}) until the next deploy replaces it"
    ]
    # The failed release is recorded as prepared only; the next deploy (the test below) replaces it.
    assert (ws.history()[0]["action"], ws.history()[0]["version"]) == ("prepare", sha)


def test_a_cancelled_workflow_leaves_live_untouched(ws, example_image):
    """A workflow cancelled while the deploy step runs its test suite. act, cancelled, leaves a container
    action running without a signal; GitHub's runner sends SIGINT to the step (its `docker run` forwards it
    into the container, where the entrypoint is PID 1), SIGTERM 7.5 s later, and kills it 2.5 s after that.
    The test does what the runner does, and checks live traffic, the lock, the report and the outputs."""
    config = ws.root / ".bluegreen.yml"
    original = config.read_text()
    slow = yaml.safe_load(original)
    slow["test_suite"] = {"command": ["{python}", "-c", "import time; open('suite-started', 'w'); time.sleep(120)"]}
    config.write_text(yaml.safe_dump(slow, sort_keys=False))
    live, history = ws.live_version(), ws.history()
    ws.commit("a release whose test suite is slow", example_image)
    argv = [ws.act_bin, "push", "-W", ".github/workflows/deploy.yml", "-P", f"ubuntu-latest={ACT_JOB_IMAGE}",
            "--pull=false", "-b", "--rm"]
    run = subprocess.Popen(argv, cwd=ws.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    step = None
    try:
        deadline = time.monotonic() + 240
        while not (ws.root / "suite-started").exists():
            assert run.poll() is None, run.communicate()[0][-4000:]
            assert time.monotonic() < deadline, "the deploy step never reached its test suite"
            time.sleep(0.2)
        step = docker("ps", "-q", "--filter", "ancestor=act-dockeraction:latest").stdout.split()
        assert len(step) == 1, step
        run.send_signal(2)  # the person pressing Cancel; act stops the job without telling the action
        cancelled = time.monotonic()
        docker("kill", "--signal", "SIGINT", step[0])  # what reaches the step's container on GitHub
        waited = subprocess.run(["docker", "wait", step[0]], capture_output=True, text=True, timeout=7.5)
        took = time.monotonic() - cancelled
        exit_code = int(waited.stdout.strip())
    finally:
        if run.poll() is None:
            run.kill()
        run.communicate(timeout=60)
        remove_act_containers(ws.root)  # act, cancelled, leaves the job container running; the step's binds it too
        if step:
            docker("rm", "-f", step[0], check=False)
        config.write_text(original)
        (ws.root / "suite-started").unlink(missing_ok=True)
        ws.git("commit", "-q", "--allow-empty", "-am", "the ordinary config again")  # HEAD never had the slow config
    assert exit_code == 1, exit_code  # cancelled before the switch
    report = json.loads((ws.root / "bluegreen-report.json").read_text())
    assert (report["status"], report["cancelled_in"], report["switched"]) == ("cancelled", "test suite", False)
    assert "cancelled by SIGINT during test suite; live untouched" in report["reason"]
    assert ws.live_version() == live
    assert ws.state_file("lock.json") is None  # released: the next run need not wait
    assert ws.history() == history
    print(f"\nthe action's container stopped {took:.2f}s after SIGINT")
