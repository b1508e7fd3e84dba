"""A throwaway GitLab project run by gitlab-ci-local on this host's shell.

gitlab-ci-local resolves `component: $CI_SERVER_FQDN/<group>/<project>/<name>@$CI_COMMIT_SHA`
from the working tree only when the repo's origin names that group/project and the ref is
the checked-out commit; so each test gets a git repo whose origin is the component project,
with the component's templates/ copied in, a test pipeline as .gitlab-ci.yml and a
bluegreen config on free ports with its state in the test's temp dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import free_port  # noqa: F401  (one port allocator: each xdist worker its own range)

ROOT = Path(__file__).resolve().parents[2]
COMPONENT = ROOT / "gitlab"  # the component project's root
PIPELINES = Path(__file__).resolve().parent / "pipelines"
EXAMPLE_APP = ROOT / "examples" / "app" / "app.py"
ORIGIN = "https://gitlab.example.com/bluegreen/bluegreen.git"  # so CI_SERVER_FQDN/bluegreen/bluegreen is local
INSTALLED_BY_SETUP = Path.home() / ".cache" / "bluegreen" / "tools" / "bin" / "gitlab-ci-local"
SECRET = "glpat-never-print-me-7f3a9c"  # a CI variable the config uses; must appear nowhere




def missing_tool(reason: str) -> None:
    """Skip on a developer's machine; fail where CI promised the tools (BLUEGREEN_REQUIRE_TOOLS=1)."""
    if os.environ.get("BLUEGREEN_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{reason} (BLUEGREEN_REQUIRE_TOOLS=1; `bash .ci/setup-gitlab.sh` installs it)")
    pytest.skip(f"{reason}; `bash .ci/setup-gitlab.sh` installs it")


@pytest.fixture(scope="session")
def gitlab_ci_local() -> str:
    candidates = [os.environ.get("GITLAB_CI_LOCAL"), shutil.which("gitlab-ci-local"), str(INSTALLED_BY_SETUP)]
    tool = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if tool is None:
        missing_tool("gitlab-ci-local is not installed")
    for needed in ("git", "rsync"):
        if shutil.which(needed) is None:
            missing_tool(f"{needed} is not installed (gitlab-ci-local needs it)")
    probe = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:  # e.g. 4.75 started by a Node older than 22
        missing_tool(f"{tool} --version failed: {(probe.stderr or probe.stdout).strip()[:300]}")
    return tool


@dataclass
class Run:
    returncode: int
    output: str  # gitlab-ci-local's stdout and stderr: every job's log lines


@dataclass
class GitLabProject:
    dir: Path
    tool: str
    env: dict[str, str]
    live_url: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    state_dir: Path | None = None  # the local target's state (pids, logs, history), outside the repo

    def write(self, name: str, text: str) -> None:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def use_pipeline(self, name: str) -> None:
        shutil.copy(PIPELINES / name, self.dir / ".gitlab-ci.yml")

    def git(self, *args: str) -> str:
        done = subprocess.run(["git", *args], cwd=self.dir, env=self.env, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    def commit(self, message: str = "change") -> str:
        """Commit everything; the new SHA is CI_COMMIT_SHA, the component's ref and the default version."""
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        # An origin/HEAD, so gitlab-ci-local knows the default branch without asking a server.
        self.git("update-ref", "refs/remotes/origin/main", "HEAD")
        self.git("symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main")
        return self.git("rev-parse", "HEAD")

    def gcl(self, *args: str, timeout: float = 180) -> Run:
        """Run gitlab-ci-local; jobs run on this host's shell, as GitLab would run them (GITLAB_CI=true)."""
        argv = [self.tool, "--force-shell-executor", "--variable", "GITLAB_CI=true",
                "--ignore-predefined-vars", "GITLAB_CI"]
        for name, value in self.variables.items():
            argv += ["--variable", f"{name}={value}"]
        if "--list" not in args:  # its schema check of the expanded pipeline costs ~1 s; once per pipeline will do
            argv.append("--no-json-schema-validation")
        done = subprocess.run(argv + list(args), cwd=self.dir, env=self.env, capture_output=True, text=True,
                              timeout=timeout)
        return Run(done.returncode, done.stdout + done.stderr)

    def dotenv(self, job: str) -> dict[str, str]:
        """The job's dotenv report as gitlab-ci-local keeps it for the jobs that need it."""
        path = self.dir / ".gitlab-ci-local" / "artifacts" / job / ".gitlab-ci-reports" / "dotenv" / "bluegreen.env"
        pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line)
        return {k: v for k, v in pairs}

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """The bluegreen CLI itself, outside any pipeline (to seed a release, read status, clean up)."""
        env = {**self.env, **self.variables}
        return subprocess.run([sys.executable, "-m", "bluegreen", *args], cwd=self.dir, env=env,
                              capture_output=True, text=True, timeout=120)


def local_config(state_dir: Path, proxy: int, blue: int, green: int) -> str:
    """The example app behind Caddy. A smoke check sends a header from a CI variable, which must never be printed."""
    return textwrap.dedent(
        f"""\
        app: gitlabtest
        environments:
          staging:
            target:
              kind: local
              command: ["{{python}}", "{EXAMPLE_APP}", "--port", "{{port}}", "--version", "{{version}}", "--colour", "{{colour}}"]
              ports: {{blue: {blue}, green: {green}}}
              state_dir: {state_dir}
              router: {{listen: "127.0.0.1:{proxy}"}}
        timeouts: {{ready: 15s}}
        smoke:
          timeout: 3s
          interval: 0.1
          checks:
            - name: version
              path: /version
              headers: {{Authorization: "Bearer ${{BG_TEST_TOKEN}}"}}
              expect: {{status: 200, body_contains: "{{version}}"}}
            - name: home
              path: /
              expect: {{json: {{version: "{{version}}"}}}}
        verify:
          consecutive_successes: 2
          failure_limit: 2
          window: 0.5s
          interval: 0.1
          timeout: 5s
        scale_down_delay: never
        """
    )


def new_project(tool: str, repo: Path, scratch: Path, live_url: str, variables: dict[str, str]) -> GitLabProject:
    """A git repo at `repo` (already filled) whose origin is the component project."""
    venv_bin = str(Path(sys.executable).parent)  # `bluegreen` in the jobs is this checkout's
    home = scratch / "home"  # no ~/.gitlab-ci-local/variables.yml of the developer leaks in
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLUEGREEN_", "CI_", "GITLAB_"))}
    env.update(
        HOME=str(home), PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
        GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com",
    )
    project = GitLabProject(repo, tool, env, live_url=live_url, variables=variables)
    project.git("init", "-q", "-b", "main")
    project.git("remote", "add", "origin", ORIGIN)
    return project


@pytest.fixture
def project(gitlab_ci_local: str, tmp_path: Path):
    """A project that includes the component, with the example app on free ports; stops what it started."""
    repo = tmp_path / "project"
    repo.mkdir()
    shutil.copytree(COMPONENT / "templates", repo / "templates")
    proxy, blue, green = free_port(), free_port(), free_port()
    p = new_project(gitlab_ci_local, repo, tmp_path, f"http://127.0.0.1:{proxy}", {"BG_TEST_TOKEN": SECRET})
    p.state_dir = tmp_path / "state"
    p.write("bluegreen.yml", local_config(p.state_dir, proxy, blue, green))
    p.write(".gitignore", ".gitlab-ci-local/\nbluegreen.env\nbluegreen-junit.xml\nbluegreen-report.json\n")
    yield p
    p.cli("down", "-c", "bluegreen.yml")
