"""What every message says, whatever its format: a headline and the facts of the run, from its payload."""

from __future__ import annotations

from typing import Any

# outcome -> (Slack emoji code, the same as Unicode, what happened, Adaptive Card colour)
LOOK = {
    "succeeded": (":white_check_mark:", "\u2705", "succeeded", "Good"),
    "rolled_back": (":leftwards_arrow_with_hook:", "\u21a9\ufe0f", "rolled back", "Good"),
    "switched_back": (":warning:", "\u26a0\ufe0f", "failed after the switch; traffic switched back", "Warning"),
    "failed": (":x:", "\u274c", "failed", "Attention"),
    "cancelled": (":no_entry_sign:", "\U0001f6ab", "cancelled", "Warning"),
    "paused": (":double_vertical_bar:", "\u23f8\ufe0f", "paused", "Accent"),
}


def look(data: dict[str, Any]) -> tuple[str, str, str, str]:
    return LOOK.get(data["event"], (":information_source:", "\u2139\ufe0f", data["event"].replace("_", " "), "Default"))


def headline(data: dict[str, Any], unicode: bool = False) -> str:
    """`✅ shop/production: deploy 2.0 succeeded`."""
    code, emoji, words, _ = look(data)
    version = f" {data['version']}" if data.get("version") and data["command"] != "rollback" else ""
    return f"{emoji if unicode else code} {data['app']}/{data['environment']}: {data['command']}{version} {words}"


def facts(data: dict[str, Any], unicode: bool = False) -> list[tuple[str, str]]:
    """(title, value) pairs, those the run has: at most 8 (Slack takes 10 fields per section)."""
    code, emoji, words, _ = look(data)
    rows = [("Status", f"{emoji if unicode else code} {words}"), ("App", f"{data['app']} / {data['environment']}")]
    if data.get("version"):
        rows.append(("Version", data["version"]))
    if data.get("previous_version"):
        rows.append(("Previous version", data["previous_version"]))
    if data.get("live_colour"):
        live = f"{data['live_colour']}" + (f" ({data['live_version']})" if data.get("live_version") else "")
        rows.append(("Live", live))
    was, now = data.get("previous_colour"), data.get("live_colour")
    if data.get("switched") and was and now and was != now:
        rows.append(("Colours", f"{was} \u2192 {now}"))
    if data.get("duration") is not None:
        rows.append(("Duration", duration(data["duration"])))
    if data.get("actor"):
        rows.append(("By", data["actor"]))
    return rows


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest} s"


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
