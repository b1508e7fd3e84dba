"""Checks against a colour: HTTP smoke checks and the user's test suite."""
