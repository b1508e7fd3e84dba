"""Targets: one module per kind, imported only when a config uses it."""

from __future__ import annotations

from importlib import import_module

from ..config import Settings
from .base import ColourState, LockInfo, Release, StateStore, Target

__all__ = ["ColourState", "LockInfo", "Release", "StateStore", "Target", "make_target"]

# kind -> "module:factory"; a factory takes the Settings and returns a Target.
_FACTORIES = {
    "local": "bluegreen.targets.local:LocalProcessTarget",
    "kubernetes": "bluegreen.targets.kubernetes:KubernetesTarget",
    "docker": "bluegreen.targets.docker:DockerTarget",
    "servers": "bluegreen.targets.servers:ServersTarget",
}


def make_target(settings: Settings) -> Target:
    module, _, name = _FACTORIES[settings.target.kind].partition(":")
    return getattr(import_module(module), name)(settings)
