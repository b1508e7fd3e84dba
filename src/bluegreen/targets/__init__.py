"""Targets: one module per kind, imported only when a config uses it."""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec

from ..config import Settings
from ..errors import ConfigError
from .base import ColourState, LockInfo, Release, StateStore, Target

__all__ = ["ColourState", "LockInfo", "Release", "StateStore", "Target", "check_installed", "make_target"]

# kind -> "module:factory"; a factory takes the Settings and returns a Target.
_FACTORIES = {
    "local": "bluegreen.targets.local:LocalProcessTarget",
    "kubernetes": "bluegreen.targets.kubernetes:KubernetesTarget",
    "docker": "bluegreen.targets.docker:DockerTarget",
    "servers": "bluegreen.targets.servers:ServersTarget",
}

# kind -> (the library it needs beyond the core, the extra that installs it): `pip install .` alone lacks them.
_EXTRAS = {
    "kubernetes": ("lightkube", "kubernetes"),
    "servers": ("asyncssh", "servers"),
}


def check_installed(settings: Settings) -> None:
    """A kind whose library is missing is a config the installation cannot run: one line naming the extra."""
    kind = settings.target.kind
    if kind in _EXTRAS and find_spec(_EXTRAS[kind][0]) is None:
        library, extra = _EXTRAS[kind]
        raise ConfigError(
            f"{settings.source}: target kind {kind!r} needs {library}, which is not installed: "
            f"pip install 'bluegreen[{extra}]'"
        )


def make_target(settings: Settings) -> Target:
    check_installed(settings)
    module, _, name = _FACTORIES[settings.target.kind].partition(":")
    return getattr(import_module(module), name)(settings)
