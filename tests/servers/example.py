"""examples/servers/bluegreen.yml as a user copies it, pointed at a lab: the CI tests (act, gitlab-ci-local)
deploy with the example itself, changing only what a user changes (names, addresses, how the app runs).

The run mode is command mode (lab.COMMAND_RUN: the lab's app hosts have no Docker engine of their own); the
ports, state_dir, router and smoke checks are the example's own. The lab's HAProxy must be started for the
example's ports: `lab.haproxy(lab.lb, lab.apps, EXAMPLE_PORTS, app=name)`.
"""

from __future__ import annotations

import textwrap

import yaml

from .lab import COMMAND_RUN, ROOT, Lab

EXAMPLE = ROOT / "examples" / "servers" / "bluegreen.yml"
ENVIRONMENT = "production"


def example_config(lab: Lab, app: str) -> dict:
    config = yaml.safe_load(EXAMPLE.read_text())
    config["app"] = app
    environment = config["environments"][ENVIRONMENT]
    environment["url"] = f"http://{lab.lb.address}"
    target = environment["target"]
    target["hosts"] = [h.ssh_address for h in lab.apps]
    target["router_host"] = lab.lb.ssh_address
    target["run"] = yaml.safe_load(textwrap.dedent(COMMAND_RUN.replace("{app}", app)))["run"]
    target["stop_timeout"] = "2s"
    config["timeouts"] = {"ready": "20s"}
    config["verify"] = {"window": "1s"}  # the example's 5s, shortened for the test's runtime
    return config


# A team's test suite that tries to leak: it prints the three SSH secrets from its environment (bluegreen's), once
# per host. Every line of them must come out masked.
LEAKY_SUITE = {"command": ["python3", "-c", "import os; print(*(os.environ.get(n, '<unset>') for n in "
                           "('SSH_PRIVATE_KEY', 'SSH_KNOWN_HOSTS', 'SSH_KEY_PASSPHRASE')), sep='\\n')"],
               "timeout": "30s"}


def example_ports() -> dict[str, int]:
    config = yaml.safe_load(EXAMPLE.read_text())
    return config["environments"][ENVIRONMENT]["target"]["ports"]
