"""`pip install .` has no SSH and no Kubernetes client: a config that needs one says which extra to install, in
one line, exit 2 (the config cannot run on this installation), from `validate` as from `deploy`.

The venv is real (python -m venv) and holds what `pip install .` brings, without the extras: its site-packages
points (a .pth file) at this checkout's src/ and at a folder of links to every installed distribution except
asyncssh and lightkube (no download, so it runs offline)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT, assert_one_line_error

EXTRAS = {"servers": "asyncssh", "kubernetes": "lightkube"}
ROUTER_EXTRAS = {"dns": ("dns", "dnspython")}  # router kind -> (import name, distribution)
AWS_LIBRARY = "boto3"  # the alb and route53 routers' extra, aws


@pytest.fixture(scope="module")
def core_python(tmp_path_factory) -> Path:
    """The python of a venv with bluegreen's core dependencies only."""
    base = tmp_path_factory.mktemp("core-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base / "venv")], check=True, timeout=120)
    installed = Path(sysconfig.get_paths()["purelib"])
    core = base / "site"
    core.mkdir()
    for entry in installed.iterdir():
        if not entry.name.lower().startswith((*EXTRAS.values(), AWS_LIBRARY, *(i for i, _ in ROUTER_EXTRAS.values()))):
            (core / entry.name).symlink_to(entry)
    python = base / "venv" / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "core.pth").write_text(f"{ROOT / 'src'}\n{core}\n")
    for library in (*EXTRAS.values(), AWS_LIBRARY, *(i for i, _ in ROUTER_EXTRAS.values())):  # the venv really lacks them
        missing = subprocess.run([str(python), "-c", f"import {library}"], capture_output=True, text=True)
        assert missing.returncode != 0 and "ModuleNotFoundError" in missing.stderr
    return python


CONFIGS = {
    "servers": """\
        target:
          kind: servers
          hosts: [app1.example.com]
          ssh: {user: deploy, known_hosts: "app1.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"}
          run: {mode: command, deploy: "true", start: "true", stop: "true"}
          ports: {blue: 8081, green: 8082}
          router_host: app1.example.com
          router: {kind: haproxy, listen: ":80", socket: /run/haproxy/admin.sock, map_file: /etc/haproxy/bg.map}
    """,
    "kubernetes": """\
        target:
          kind: kubernetes
          namespace: example
    """,
}


@pytest.mark.parametrize("kind", list(EXTRAS))
@pytest.mark.parametrize("command", [["validate"], ["deploy", "--version", "1"], ["status"]])
def test_a_kind_whose_extra_is_missing_names_the_extra(core_python: Path, tmp_path: Path, kind: str, command: list[str]):
    config = tmp_path / "bluegreen.yml"
    config.write_text("app: shop\nenvironments:\n  production:\n" + textwrap.indent(textwrap.dedent(CONFIGS[kind]), "    "))
    result = subprocess.run([str(core_python), "-m", "bluegreen", *command, "-c", str(config)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    line = assert_one_line_error(result)
    assert line == (f"bluegreen: error: {config}: target kind '{kind}' needs {EXTRAS[kind]}, which is not installed: "
                    f"pip install 'bluegreen[{kind}]'")


def test_the_aws_routers_name_their_extra_when_boto3_is_missing(core_python: Path, tmp_path: Path):
    config = tmp_path / "bluegreen.yml"
    arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012"
    config.write_text(f"""app: shop
environments:
  production:
    url: https://shop.example.com
    target:
      kind: local
      command: ["true"]
      ports: {{blue: 8081, green: 8082}}
      router: {{kind: alb, listener_arn: "{arn}:listener/app/shop/1/2",
                target_groups: {{blue: "{arn}:targetgroup/b/1", green: "{arn}:targetgroup/g/2"}}}}
""")
    result = subprocess.run([str(core_python), "-m", "bluegreen", "validate", "-c", str(config)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert assert_one_line_error(result) == (f"bluegreen: error: {config}: router kind 'alb' needs boto3, which is "
                                             "not installed: pip install 'bluegreen[aws]'")


@pytest.mark.parametrize("kind", list(ROUTER_EXTRAS))
@pytest.mark.parametrize("command", [["validate"], ["status"]])
def test_a_router_whose_extra_is_missing_names_the_extra(core_python: Path, tmp_path: Path, kind: str,
                                                          command: list[str]):
    config = tmp_path / "bluegreen.yml"
    config.write_text(textwrap.dedent(f"""\
        app: shop
        environments:
          production:
            url: http://app.example.com
            target:
              kind: local
              command: [app]
              addresses: {{blue: 127.0.0.2, green: 127.0.0.3}}
              router: {{kind: {kind}, server: 127.0.0.1, zone: example.com, tsig_key: k}}
        """))
    result = subprocess.run([str(core_python), "-m", "bluegreen", *command, "-c", str(config)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert assert_one_line_error(result) == (
        f"bluegreen: error: {config}: router kind '{kind}' needs {ROUTER_EXTRAS[kind][1]}, which is not installed: "
        f"pip install 'bluegreen[{kind}]'")


def test_the_core_venv_runs_the_local_target(core_python: Path):
    """The same venv is a working installation for what needs no extra: `validate` of the local example."""
    result = subprocess.run([str(core_python), "-m", "bluegreen", "validate", "-c",
                             str(ROOT / "examples" / "local" / "bluegreen.yml")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
