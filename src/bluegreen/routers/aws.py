"""What the AWS routers (alb.py, route53.py) share: a boto3 client built the way AWS users configure it, and
every failure of an API call as one line.

Credentials and the endpoint come from the environment only, as every AWS tool takes them: AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE, a web identity (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE,
as aws-actions/configure-aws-credentials leaves it), an instance or task role; AWS_ENDPOINT_URL (or
AWS_ENDPOINT_URL_<SERVICE>) points a client elsewhere, which botocore honours itself. A call is tried at most
ATTEMPTS times (botocore's standard retries: throttling, 5xx, a dropped connection), each bounded by the timeout.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from ..config import COLOURS, Colour
from ..errors import TargetError
from ..traffic import Weights

ATTEMPTS = 3
ACCESS_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnrecognizedClientException",
                 "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException"}
THROTTLED = {"Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
             "TooManyRequestsException", "PriorRequestNotComplete", "SlowDown"}
NO_CREDENTIALS = ("no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a web "
                  "identity (AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE) in the environment")


def one_line(text: object, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def scaled(weights: Weights, top: int) -> dict[Colour, int]:
    """Percent per colour as the service's relative weights, 0 to `top` (ALB 999, Route 53 255)."""
    return {c: round(weights.get(c, 0) * top / 100) for c in COLOURS}


def percent(raw: dict[Colour, int]) -> Weights | None:
    """Relative weights (as written by bluegreen or by hand) as percent; None when neither colour gets any."""
    total = sum(raw.values())
    if total <= 0:
        return None
    blue = round(100 * raw.get("blue", 0) / total)
    if 0 < raw.get("blue", 0) < total:
        blue = min(max(blue, 1), 99)  # a colour that gets any traffic never reads as 0 %
    return {"blue": blue, "green": 100 - blue}


class AwsApi:
    """One service's client, made on first use; `call` runs an operation and turns any failure into a TargetError
    that names the operation, what it was about, and what to do."""

    def __init__(self, service: str, region: str | None, timeout: float) -> None:
        self.service, self.region, self.timeout = service, region, timeout
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            config = Config(retries={"total_max_attempts": ATTEMPTS, "mode": "standard"},
                            connect_timeout=self.timeout, read_timeout=self.timeout, user_agent_appid="bluegreen")
            try:
                self._client = boto3.session.Session().client(self.service, region_name=self.region, config=config)
            except BotoCoreError as exc:  # a broken profile, an unknown region
                raise TargetError(f"AWS {self.service}: {one_line(exc)}") from None
        return self._client

    @property
    def endpoint(self) -> str:
        return self.client.meta.endpoint_url

    def call(self, operation: str, about: str, **params: Any) -> Any:
        """`operation`: the client method (describe_listeners); `about`: the object, for the message."""
        try:
            return getattr(self.client, operation)(**params)
        except (ClientError, BotoCoreError) as exc:
            raise TargetError(self.explain(exc, operation, about)) from None

    def explain(self, exc: Exception, operation: str, about: str) -> str:
        action = f"{self.service}:{''.join(p.title() for p in operation.split('_'))}"  # elbv2:ModifyListener
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code, message = error.get("Code", "Unknown"), one_line(error.get("Message", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if code in ACCESS_DENIED:
                return (f"AWS denied {action} on {about} ({code}: {message}): the credentials' IAM policy must allow "
                        "it (README, Cloud load balancers)")
            if code in THROTTLED:
                return f"AWS throttled {action} on {about} ({code}) {ATTEMPTS} times in a row: try again later"
            if status >= 500:
                return f"AWS {action} on {about} failed on AWS's side ({code}, HTTP {status}) {ATTEMPTS} times in a row"
            return f"AWS {action} on {about}: {code}: {message}"
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return NO_CREDENTIALS
        if isinstance(exc, ReadTimeoutError):
            return (f"AWS {action} on {about}: no answer from {self.endpoint} within {self.timeout:g} s, "
                    f"{ATTEMPTS} times in a row")
        if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
            return f"AWS {action}: cannot reach {self.endpoint}: {one_line(exc)}"
        if isinstance(exc, ConnectionClosedError):
            return f"AWS {action} on {about}: {self.endpoint} closed the connection before answering, {ATTEMPTS} times"
        return f"AWS {action} on {about}: {one_line(exc)}"
