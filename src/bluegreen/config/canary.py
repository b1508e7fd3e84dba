"""strategy: canary: its steps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .base import Duration, Model


UNTIL_PROMOTED = "until promoted"


class CanaryStep(Model):
    """One step of a canary: the share of requests the new colour gets, and how long it holds there."""

    weight: int = Field(ge=1, le=100, description="Percent of new requests sent to the new colour.")
    pause: Duration | Literal["until promoted"] = Field(
        0, description="How long the step holds while its gates run (smoke checks through the live URL, the "
        "analysis); 'until promoted': the run ends as paused and `bluegreen promote` resumes at the next step."
    )


class CanarySettings(Model):
    """strategy: canary: the new colour gets `weight`% of requests step by step; the stable colour keeps serving
    the rest, so an abort is one change of the router."""

    steps: list[CanaryStep] = Field(
        min_length=1, description="Increasing weights; a last step of 100 is added when missing. The 100% step "
        "ends like a blue-green release (verify, analysis.duration, scale_down_delay)."
    )

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[CanaryStep]) -> list[CanaryStep]:
        weights = [step.weight for step in steps]
        if any(b <= a for a, b in zip(weights, weights[1:])):
            raise ValueError(f"weights must increase step by step, got {weights}")
        if steps[-1].weight == 100 and steps[-1].pause:
            raise ValueError("the 100% step takes no pause: it is verified like a blue-green release")
        return steps if steps[-1].weight == 100 else [*steps, CanaryStep(weight=100)]
