"""Faults moto does not produce by itself, injected by a small HTTP proxy in front of it on 127.0.0.1.

The routers' clients are pointed at the proxy (AWS_ENDPOINT_URL); every request is forwarded to moto unless a
planned fault matches it (a substring of "METHOD path body", e.g. "Action=ModifyListener" or "POST /2013-04-01/
hostedzone"):

- throttle: a 400 with the AWS query-protocol XML error body, code Throttling (nothing forwarded);
- error: a 5xx (InternalFailure by default; nothing forwarded);
- deny: a 403 AccessDenied (nothing forwarded);
- lose: the request IS forwarded (the change is applied), then the connection is closed with no answer;
- hang: no answer until the client gives up (or the proxy stops), then the connection is closed;
- answer: a 200 with the given body instead of moto's (nothing forwarded).
"""

from __future__ import annotations

import http.client
import http.server
import socket
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from conftest import free_port

ERROR_BODY = ('<ErrorResponse xmlns="https://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><Error>'
              "<Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
              "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>")
HANG_LIMIT = 30.0  # seconds a hung request is held at most (a wide guard: the client's timeout is far shorter)


@dataclass
class Fault:
    match: str
    kind: str  # throttle, error, deny, lose, hang
    times: int | None  # None: every matching request
    status: int = 500
    body: str = ""


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.faults: list[Fault] = []
        self.seen: list[str] = []  # "METHOD path body" of every request
        self.injected: list[str] = []  # "kind: request" of every fault answered
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                proxy.handle(self)

            do_POST = do_PUT = do_DELETE = do_GET  # noqa: N815

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def plan(self, match: str, kind: str, times: int | None = None, status: int = 500, body: str = "") -> None:
        with self.lock:
            self.faults.append(Fault(match, kind, times, status, body))

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()

    def count(self, match: str) -> int:
        return sum(match in line for line in self.seen)

    def _fault_for(self, line: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.match in line and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    self.injected.append(f"{fault.kind}: {line[:80]}")
                    return fault
        return None

    def handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        line = f"{request.command} {request.path} {body.decode('utf-8', 'replace')}"
        self.seen.append(line)
        fault = self._fault_for(line)
        if fault and fault.kind in ("throttle", "error", "deny"):
            status, code, message = {
                "throttle": (400, "Throttling", "Rate exceeded"),
                "deny": (403, "AccessDenied", "User: arn:aws:iam::123456789012:user/ci is not authorized"),
            }.get(fault.kind, (fault.status, "InternalFailure", "We encountered an internal error"))
            kind = "Receiver" if status >= 500 else "Sender"
            return self._answer(request, status, {"Content-Type": "text/xml"},
                                ERROR_BODY.format(kind=kind, code=code, message=message).encode())
        if fault and fault.kind == "answer":
            return self._answer(request, 200, {"Content-Type": "text/xml"}, fault.body.encode())
        if fault and fault.kind == "hang":
            self.stopping.wait(HANG_LIMIT)
            return self._drop(request)
        upstream = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in ("connection", "keep-alive")}
            upstream.request(request.command, request.path, body=body, headers=headers)
            answer = upstream.getresponse()
            status, answer_headers, answer_body = answer.status, answer.getheaders(), answer.read()
        finally:
            upstream.close()
        if fault and fault.kind == "lose":  # applied by moto; the answer never reaches the client
            return self._drop(request)
        self._answer(request, status, {k: v for k, v in answer_headers if k.lower() not in (
            "transfer-encoding", "connection", "content-length", "date", "server")}, answer_body)

    @staticmethod
    def _answer(request: http.server.BaseHTTPRequestHandler, status: int, headers: dict[str, str],
                body: bytes) -> None:
        request.send_response(status)
        for name, value in headers.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Connection", "close")
        request.end_headers()
        request.wfile.write(body)
        request.close_connection = True

    @staticmethod
    def _drop(request: http.server.BaseHTTPRequestHandler) -> None:
        request.close_connection = True
        try:
            request.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
