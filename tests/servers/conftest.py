"""Fixtures: test hosts with a real sshd (lab.py). Without Docker they skip, with BLUEGREEN_REQUIRE_DOCKER=1 fail."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from github.support import need_docker

from .lab import Lab, start_lab


@pytest.fixture(scope="module")
def lab_factory() -> Iterator[Callable[..., Lab]]:
    """start_lab(apps=2, lb=True, dind=False, ssh_port=22) for one test module; its labs are removed at its end."""
    labs: list[Lab] = []

    def make(**options) -> Lab:
        need_docker()
        lab = start_lab(**options)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.close()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """Two app hosts and a load-balancer host (command mode: no Docker engine inside), for one test module."""
    need_docker()
    lab = start_lab(apps=2, lb=True)
    yield lab
    lab.close()
