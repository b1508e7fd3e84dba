"""Fixtures for the GitHub Action tests (helpers in support.py)."""

from .support import action_image, example_image  # noqa: F401  (session fixtures: the images)
