"""A secret given to the action never appears in stdout, stderr, the job summary, the outputs or the report.

The run below tries hard to leak: the test suite prints the kubeconfig file, and the smoke check hits an
app that echoes the request's headers (the secret one included) in a 500 body, which lands in the
failure reason. The runner would mask the log, but the summary, the outputs and the report are ours to
keep clean, and the only place a secret may appear is the `::add-mask::` line that registers it, before
anything else is printed.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap

import pytest

from .support import free_port
from .test_adapter import Step

KUBE_TOKEN = "kube-token-5f1c0a9e7d3b4e2a8c6f"
CLIENT_KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIkeymaterial0123456789\n-----END EC PRIVATE KEY-----"
HEADER_SECRET = "Bearer hdr-secret-9b8a7c6d5e4f"

KUBECONFIG = textwrap.dedent(f"""\
    apiVersion: v1
    kind: Config
    clusters:
      - name: prod
        cluster: {{server: "https://10.0.0.1:6443"}}
    users:
      - name: deployer
        user:
          token: {KUBE_TOKEN}
          client-key-data: {base64.b64encode(CLIENT_KEY.encode()).decode()}
    contexts:
      - name: prod
        context: {{cluster: prod, user: deployer}}
    current-context: prod
    """)

ECHO_APP = textwrap.dedent("""\
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/healthz":
                body, status = b"ok", 200
            else:  # a careless app: echoes the credentials it was given in its error page
                body, status = ("denied for " + str(self.headers.get("Authorization"))).encode(), 500
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """)


@pytest.mark.parametrize("encoding", ["yaml", "base64"])
def test_secrets_never_leak(tmp_path, encoding):
    workspace = tmp_path / "workspace"
    (workspace / "deploy").mkdir(parents=True)
    (workspace / "deploy" / "echo_app.py").write_text(ECHO_APP)
    (workspace / "deploy" / "leaky_suite.sh").write_text('cat "$KUBECONFIG"\n')
    proxy, blue, green = free_port(), free_port(), free_port()
    (workspace / "deploy" / "bluegreen.yml").write_text(textwrap.dedent(f"""\
        app: secrets
        environments:
          prod:
            target:
              kind: local
              command: ["{{python}}", "echo_app.py", "{{port}}"]
              ports: {{blue: {blue}, green: {green}}}
              router: {{listen: "127.0.0.1:{proxy}"}}
        timeouts: {{ready: 10s}}
        test_suite:
          command: ["sh", "leaky_suite.sh"]
        smoke:
          timeout: 2s
          interval: 0.1
          checks:
            - name: api
              path: /api
              headers: {{Authorization: "${{API_TOKEN}}", Accept: application/json}}
              expect: {{status: 200}}
        """))
    step = Step(workspace)
    kubeconfig = KUBECONFIG if encoding == "yaml" else base64.b64encode(KUBECONFIG.encode()).decode()
    try:
        result = step.run(config="bluegreen.yml", working_directory="deploy", version="1", kubeconfig=kubeconfig,
                          env={"API_TOKEN": HEADER_SECRET})
    finally:
        down = subprocess.run([sys.executable, "-m", "bluegreen", "down", "-c", "deploy/bluegreen.yml"], cwd=workspace,
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "BLUEGREEN_CI": "plain", "API_TOKEN": HEADER_SECRET})
        assert down.returncode == 0, down.stderr  # else the app and its proxy outlive the test

    assert result.returncode == 1, result.stdout + result.stderr  # the smoke check failed: live untouched
    lines = result.stdout.splitlines()
    masks = [line for line in lines if line.startswith("::add-mask::")]
    # Masks come first, before any other line.
    assert lines[: len(masks)] == masks
    registered = "\n".join(masks)
    for secret in (KUBE_TOKEN, HEADER_SECRET, "MHcCAQEEIkeymaterial0123456789"):
        assert secret in registered, f"{secret!r} was not masked"

    report = (workspace / "deploy" / "bluegreen-report.json").read_text()
    texts = {
        "stdout after the masks": "\n".join(lines[len(masks):]),
        "stderr": result.stderr,
        "job summary": step.summary.read_text(),
        "outputs": step.output.read_text(),
        "report": report,
    }
    for where, text in texts.items():
        for secret in (KUBE_TOKEN, HEADER_SECRET, "hdr-secret-9b8a7c6d5e4f", "MHcCAQEEIkeymaterial0123456789"):
            assert secret not in text, f"{secret!r} leaked into the {where}"

    # The leaks were real attempts, redacted: the suite printed the token, the app echoed the header.
    assert "token: ***" in texts["stdout after the masks"]
    reason = json.loads(report)["reason"]
    assert reason.startswith("smoke check 'api' failed on blue") and "***" in reason, reason
    assert step.outputs()["reason"] == reason
