"""Live traffic as weights: the percent of new requests each colour gets. A blue-green switch is
{to: 100, other: 0}; a canary step is any split, on the routers that can split."""

from __future__ import annotations

from .config import COLOURS, Colour

Weights = dict[Colour, int]  # percent of new requests per colour; the values add up to 100


def all_to(colour: Colour) -> Weights:
    return {c: (100 if c == colour else 0) for c in COLOURS}


def larger_share(weights: Weights) -> Colour:
    """The colour that takes most new requests: the live one (the stable one during a canary; blue on a tie)."""
    return max(COLOURS, key=lambda c: weights.get(c, 0))


def check_weights(weights: Weights) -> None:
    """A programming error, not a user's: both colours, shares from 0 adding up to 100."""
    if sorted(weights) != ["blue", "green"] or sum(weights.values()) != 100 or min(weights.values()) < 0:
        raise ValueError(f"weights must give both colours a share adding up to 100, not {weights}")


def describe(weights: Weights) -> str:
    """`all to green`, or `blue 90%, green 10%`."""
    live = [c for c in COLOURS if weights.get(c) == 100]
    return f"all to {live[0]}" if live else ", ".join(f"{c} {weights.get(c, 0)}%" for c in COLOURS)
