"""bluegreen.ssh against real OpenSSH servers (Docker containers from lab.py): commands, parallelism, host-key
refusals with nothing run, unreachable hosts, authentication, a jump host, forwards to HAProxy, and secrets that
never reach a message."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import asyncssh
import httpx
import pytest

from bluegreen.errors import ConfigError, TargetError
from bluegreen.ssh import HostErrors, Login, SSHError, SSHPool

from .lab import HAPROXY_MAP, HAPROXY_SOCKET, Lab, ROOT


@pytest.fixture
def pool(lab: Lab):
    with SSHPool(lab.login()) as pool:
        yield pool


def fingerprint(public_key: str) -> str:
    """What `ssh-keygen -lf` prints for the key: SHA256:..."""
    done = subprocess.run(["ssh-keygen", "-lf", "-"], input=public_key + "\n", capture_output=True, text=True,
                          check=True)
    return done.stdout.split()[1]


def other_key() -> str:
    return asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()


def marker_exists(host, marker: str) -> bool:
    return host.exec(f"test -e {marker}", check=False).returncode == 0


def refused(login: Login, address: str) -> str:
    with SSHPool(login) as pool:
        with pytest.raises(SSHError) as caught:
            pool.connect([address])
    return str(caught.value)


# --- commands -------------------------------------------------------------------------------------

def test_run_passes_stdin_and_returns_exit_status_and_both_streams(lab: Lab, pool: SSHPool) -> None:
    host = pool.host(lab.apps[0].ssh_address)
    assert host.name == lab.apps[0].ssh_address
    done = host.run("cat; echo oops >&2; exit 3", input="héllo\nworld\n")
    assert (done.exit_status, done.stdout, done.stderr) == (3, "héllo\nworld\n", "oops\n")
    assert not done.ok and done.last_error_line() == "oops"
    assert host.run("id -un; hostname").stdout.split() == ["deploy", "app1"]
    big = host.run("head -c 3000000 /dev/zero | tr '\\0' x")  # more than any window or buffer
    assert big.ok and len(big.stdout) == 3_000_000
    assert host.run("exit 0").exit_status == 0


def test_a_command_past_its_timeout_is_an_error_naming_the_host_and_the_connection_stays(
        lab: Lab, pool: SSHPool) -> None:
    host = pool.host(lab.apps[0].ssh_address)
    started = time.monotonic()
    with pytest.raises(SSHError, match=rf"^{lab.apps[0].address}: `sleep 30` did not end within 0.5s$"):
        host.run("sleep 30", timeout=0.5)
    assert time.monotonic() - started < 10  # wide for a busy machine; one that waited for the command: 30 s
    assert host.run("echo still here").stdout == "still here\n"


def test_each_works_on_every_host_at_once(lab: Lab, pool: SSHPool) -> None:
    addresses = [h.ssh_address for h in lab.hosts]  # app1, app2, lb
    pool.connect(addresses)
    one = pool.host(addresses[0])
    started = time.monotonic()
    one.run("sleep 1")
    alone = time.monotonic() - started
    started = time.monotonic()
    names = pool.each(addresses, lambda host: host.run("sleep 1; hostname").stdout.strip())
    together = time.monotonic() - started
    assert names == dict(zip(addresses, ["app1", "app2", "lb"]))
    assert list(names) == addresses
    assert together < alone + 0.5, (alone, together)


def test_each_names_every_host_that_failed_after_all_ended(lab: Lab, pool: SSHPool) -> None:
    addresses = [h.ssh_address for h in lab.hosts]
    marker = f"/tmp/each-{uuid.uuid4().hex}"

    def step(host):
        if host.name != addresses[0]:
            raise TargetError(f"{host.name}: not ready")
        time.sleep(0.5)
        host.run(f"touch {marker}")
        return "done"

    with pytest.raises(HostErrors) as caught:
        pool.each(addresses, step)
    assert str(caught.value) == f"{addresses[1]}: not ready; {addresses[2]}: not ready"
    assert set(caught.value.errors) == set(addresses[1:])
    assert marker_exists(lab.apps[0], marker)  # the slow host finished before the error was raised


def test_more_commands_at_once_than_sshd_allows_sessions_all_run(lab: Lab, pool: SSHPool) -> None:
    host = pool.host(lab.apps[1].ssh_address)
    results: list = []
    threads = [threading.Thread(target=lambda i=i: results.append(host.run(f"sleep 0.3; echo {i}")))
               for i in range(24)]  # OpenSSH's MaxSessions is 10: the pool keeps to 8 at once
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(int(r.stdout) for r in results) == list(range(24))
    assert all(r.ok for r in results)


def test_a_connection_lost_mid_command_names_the_host_and_the_next_command_reconnects(
        lab: Lab, pool: SSHPool) -> None:
    app = lab.apps[1]
    host = pool.host(app.ssh_address)
    host.run("true")
    failure: list[BaseException] = []

    def long_command():
        try:
            host.run("sleep 30")
        except SSHError as exc:
            failure.append(exc)

    thread = threading.Thread(target=long_command)
    thread.start()
    time.sleep(0.5)
    app.exec("pkill -KILL -u deploy sshd")  # the session's sshd processes: the connection drops
    thread.join(10)
    assert not thread.is_alive() and failure
    assert str(failure[0]).startswith(f"{app.address}: connection lost running `sleep 30`")
    assert host.run("hostname").stdout.strip() == app.name


# --- host keys: always verified, nothing run on a refused host ------------------------------------

def test_a_changed_host_key_is_refused_with_its_fingerprint_and_nothing_runs(lab: Lab) -> None:
    app1, app2 = lab.apps
    known = app1.known_hosts_line(other_key()) + "\n" + app2.known_hosts_line() + "\n"
    marker = f"/tmp/changed-{uuid.uuid4().hex}"
    with SSHPool(lab.login(known_hosts=known)) as pool:
        with pytest.raises(SSHError) as caught:
            pool.connect([app1.ssh_address, app2.ssh_address])
        message = str(caught.value)
        assert message == (f"{app1.address}: host key changed (known_hosts lists another key for it): it offers "
                           f"ssh-ed25519 {fingerprint(app1.host_key)}; refused, nothing run")
        with pytest.raises(SSHError, match="host key changed"):
            pool.host(app1.ssh_address).run(f"touch {marker}")
        assert pool.host(app2.ssh_address).run("hostname").stdout.strip() == "app2"  # the good host connected
    assert not marker_exists(app1, marker)


def test_a_key_of_a_type_the_host_does_not_have_is_a_changed_key_with_the_fingerprint_offered(lab: Lab) -> None:
    """known_hosts lists an RSA key, the host has only ed25519: sshd hangs up in the key exchange (no common
    type); the message still says changed and gives the key the host offers."""
    app = lab.apps[0]
    rsa = asyncssh.generate_private_key("ssh-rsa", key_size=2048).export_public_key().decode().strip()
    marker = f"/tmp/rsa-{uuid.uuid4().hex}"
    with SSHPool(lab.login(known_hosts=app.known_hosts_line(rsa) + "\n")) as pool:
        with pytest.raises(SSHError) as caught:
            pool.host(app.ssh_address).run(f"touch {marker}")
    assert str(caught.value) == (f"{app.address}: host key changed (known_hosts lists another key for it): it "
                                 f"offers ssh-ed25519 {fingerprint(app.host_key)}; refused, nothing run")
    assert not marker_exists(app, marker)


def test_an_unknown_host_is_refused_with_its_fingerprint_and_nothing_runs(lab: Lab) -> None:
    app1, app2 = lab.apps
    marker = f"/tmp/unknown-{uuid.uuid4().hex}"
    with SSHPool(lab.login(known_hosts=app1.known_hosts_line() + "\n")) as pool:
        with pytest.raises(SSHError) as caught:
            pool.host(app2.ssh_address).run(f"touch {marker}")
    assert str(caught.value) == (f"{app2.address}: host key unknown (not in known_hosts): it offers ssh-ed25519 "
                                 f"{fingerprint(app2.host_key)}; refused, nothing run")
    assert not marker_exists(app2, marker)


def test_a_known_hosts_line_for_another_port_does_not_vouch_for_this_one(lab_factory) -> None:
    lab = lab_factory(apps=1, lb=False, ssh_port=2222)
    app = lab.apps[0]
    assert app.ssh_address == f"{app.address}:2222"
    with SSHPool(lab.login()) as pool:  # [addr]:2222 in known_hosts
        assert pool.host(app.ssh_address).run("hostname").stdout.strip() == "app1"
    with SSHPool(lab.login(port=2222)) as pool:  # the port from the login, the address bare
        assert pool.host(app.address).run("hostname").stdout.strip() == "app1"
    message = refused(lab.login(known_hosts=f"[{app.address}]:2200 {app.host_key}\n"), app.ssh_address)
    assert message.startswith(f"{app.ssh_address}: host key unknown (not in known_hosts)")


# --- unreachable hosts and authentication ---------------------------------------------------------

def test_a_closed_port_is_refused_naming_the_host(lab: Lab) -> None:
    address = f"{lab.apps[0].address}:2200"
    assert refused(lab.login(), address) == (f"{address}: connection refused on port 2200 (no SSH server "
                                             "listening)")


def test_a_name_that_does_not_resolve_is_named(lab: Lab) -> None:
    message = refused(lab.login(), "no-such-host.invalid")
    assert message.startswith("no-such-host.invalid: cannot resolve the host name")


def test_a_paused_host_times_out_within_connect_timeout(lab_factory) -> None:
    lab = lab_factory(apps=1, lb=False)
    app = lab.apps[0]
    app.pause()
    try:
        started = time.monotonic()
        message = refused(lab.login(connect_timeout=1.5), app.ssh_address)
        elapsed = time.monotonic() - started
    finally:
        app.unpause()
    assert message == f"{app.address}: timed out connecting to port 22 after 1.5s (ssh.connect_timeout)"
    assert elapsed < 10, elapsed  # wide for a busy machine: without the timeout it waits on a frozen host


def test_a_stopped_host_is_named_within_connect_timeout_and_reachable_again_once_started(lab_factory) -> None:
    lab = lab_factory(apps=2, lb=False)
    app1, app2 = lab.apps
    with SSHPool(lab.login(connect_timeout=2)) as pool:
        pool.connect([app1.ssh_address, app2.ssh_address])
        app2.stop()
        try:
            started = time.monotonic()
            with pytest.raises(SSHError) as caught:
                pool.host(app2.ssh_address).run("true")  # the old connection is gone: it reconnects, and fails
            elapsed = time.monotonic() - started
        finally:
            app2.start()
        assert str(caught.value).startswith(f"{app2.address}: ")
        assert elapsed < 10, elapsed  # wide for a busy machine
        assert pool.host(app1.ssh_address).run("hostname").stdout.strip() == "app1"
        assert pool.host(app2.ssh_address).run("hostname").stdout.strip() == "app2"  # same address, same key


def test_a_dead_host_fails_a_running_command_after_the_keepalive_not_never(lab_factory) -> None:
    lab = lab_factory(apps=1, lb=False)
    app = lab.apps[0]
    with SSHPool(lab.login(keepalive_interval=0.5, keepalive_count_max=2)) as pool:
        host = pool.host(app.ssh_address)
        host.run("true")
        app.pause()
        try:
            started = time.monotonic()
            with pytest.raises(SSHError, match=rf"^{app.address}: connection lost"):
                host.run("echo hi")
            elapsed = time.monotonic() - started
        finally:
            app.unpause()
    assert elapsed < 15, elapsed  # wide for a busy machine: without keepalives it waits for ever


def test_a_key_the_host_does_not_accept_is_refused_as_authentication(lab: Lab) -> None:
    wrong = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
    app = lab.apps[0]
    assert refused(lab.login(private_key=wrong), app.ssh_address) == (
        f"{app.address}: authentication refused for user deploy (is the key in ~deploy/.ssh/authorized_keys on the "
        "host?)")
    assert refused(lab.login(user="root"), app.ssh_address).startswith(f"{app.address}: authentication refused "
                                                                       "for user root")


# --- keys: content, passphrase, agent -------------------------------------------------------------

def keygen(passphrase: str) -> str:
    """A private key as `ssh-keygen` writes it (OpenSSH format; with a passphrase, bcrypt-encrypted)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "id")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", path], check=True)
        with open(path) as key:
            return key.read()


def run_key(lab: Lab, private_key: str, passphrase: str | None) -> str:
    key = asyncssh.import_private_key(private_key, passphrase)
    lab.apps[0].exec("cat >> /home/deploy/.ssh/authorized_keys", input=key.export_public_key().decode())
    with SSHPool(lab.login(private_key=private_key, passphrase=passphrase)) as pool:
        return pool.host(lab.apps[0].ssh_address).run("id -un").stdout.strip()


def test_encrypted_keys_in_openssh_and_pem_form_log_in_with_their_passphrase(lab: Lab) -> None:
    secret = "correct horse battery staple"
    openssh = keygen(secret)  # as ssh-keygen writes it: OpenSSH format, bcrypt KDF
    rsa = asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    pem = rsa.export_private_key("pkcs8-pem", passphrase=secret).decode()
    plain_pem = asyncssh.generate_private_key("ecdsa-sha2-nistp256").export_private_key("pkcs1-pem").decode()
    assert run_key(lab, openssh, secret) == "deploy"
    assert run_key(lab, pem, secret) == "deploy"
    assert run_key(lab, plain_pem, None) == "deploy"


SECRET_PASSPHRASE = "s3cret-passphrase-XYZ"


@pytest.mark.parametrize(("key", "passphrase", "message"), [
    ("encrypted", "wrong-passphrase-123", "ssh.passphrase does not decrypt ssh.private_key"),
    ("encrypted", None, "ssh.private_key is encrypted: set ssh.passphrase"),
    ("garbage", None, "ssh.private_key is not a private key (expected the content of an OpenSSH or PEM key file)"),
    ("public", None, "ssh.private_key is not a private key (expected the content of an OpenSSH or PEM key file)"),
])
def test_a_key_that_cannot_be_read_is_one_line_naming_the_field_never_its_content(
        lab: Lab, key: str, passphrase: str | None, message: str) -> None:
    private = asyncssh.generate_private_key("ssh-ed25519")
    content = {
        "encrypted": private.export_private_key("openssh", passphrase=SECRET_PASSPHRASE).decode(),
        "garbage": "-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END OPENSSH PRIVATE KEY-----\n",
        "public": private.export_public_key().decode(),
    }[key]
    with pytest.raises(ConfigError) as caught:
        SSHPool(lab.login(private_key=content, passphrase=passphrase))
    assert str(caught.value) == message
    assert_no_secret(str(caught.value), content, passphrase)


def test_known_hosts_that_cannot_be_read_is_one_line(lab: Lab) -> None:
    with pytest.raises(ConfigError, match=r"^ssh.known_hosts is empty"):
        SSHPool(lab.login(known_hosts=" \n"))
    good = lab.apps[0].known_hosts_line()
    for line in ("10.0.0.1 ssh-ed25519 not-base64!!", "10.0.0.1 ssh-ed25519", "a-host-alone"):
        with pytest.raises(ConfigError) as caught:
            SSHPool(lab.login(known_hosts=f"# lab\n{good}\n\n{line}\n"))
        assert str(caught.value) == "ssh.known_hosts line 4 is not `host key-type base64-key`"
    SSHPool(lab.login(known_hosts=f"# comment\n\n{good}\n@revoked * {other_key()}\n")).close()


def test_without_a_key_the_agent_logs_in(lab: Lab, tmp_path, monkeypatch) -> None:
    agent_socket = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(agent_socket)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if agent_socket.exists():
                break
            time.sleep(0.05)
        key_file = tmp_path / "id"
        key_file.write_text(lab.private_key)
        key_file.chmod(0o600)
        subprocess.run(["ssh-add", "-q", str(key_file)], env={**os.environ, "SSH_AUTH_SOCK": str(agent_socket)},
                       check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(agent_socket))
        with SSHPool(lab.login(private_key=None)) as pool:
            assert pool.host(lab.apps[0].ssh_address).run("id -un").stdout == "deploy\n"
        monkeypatch.delenv("SSH_AUTH_SOCK")
        with SSHPool(lab.login(private_key=None)) as pool:
            with pytest.raises(ConfigError, match=r"^ssh.private_key is not set and no ssh-agent runs"):
                pool.connect([lab.apps[0].ssh_address])
    finally:
        agent.terminate()
        agent.wait(5)


# --- a jump host --------------------------------------------------------------------------------

def test_a_jump_host_reaches_the_app_hosts_through_the_load_balancer(lab: Lab) -> None:
    lb, app1 = lab.lb, lab.apps[0]
    with SSHPool(lab.login(jump_host=f"deploy@{lb.address}:22")) as pool:
        pool.connect([h.ssh_address for h in lab.apps])
        seen_from = pool.host(app1.ssh_address).run("echo $SSH_CONNECTION").stdout.split()[0]
    assert seen_from == lb.address  # the app host saw the connection come from the load balancer


def test_a_jump_host_is_verified_against_the_same_known_hosts(lab: Lab) -> None:
    lb, app1 = lab.lb, lab.apps[0]
    known = "".join(h.known_hosts_line() + "\n" for h in lab.apps)  # the jump host is not listed
    message = refused(lab.login(known_hosts=known, jump_host=lb.address), app1.ssh_address)
    assert message == (f"jump host {lb.address}: host key unknown (not in known_hosts): it offers ssh-ed25519 "
                       f"{fingerprint(lb.host_key)}; refused, nothing run")


def test_a_host_the_jump_host_cannot_reach_is_named(lab: Lab) -> None:
    address = f"{lab.apps[0].address}:2200"
    message = refused(lab.login(jump_host=lab.lb.address), address)
    assert message.startswith(f"{address}: the jump host could not reach port 2200 (")


# --- forwards and probes: HAProxy on the load balancer -------------------------------------------

def haproxy_api(path: str, command: str) -> str:
    with socket.socket(socket.AF_UNIX) as conn:
        conn.settimeout(5)
        conn.connect(path)
        conn.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def test_forwards_reach_haproxy_on_the_load_balancer_and_probes_ask_the_host(lab: Lab, pool: SSHPool) -> None:
    ports = {"blue": 8081, "green": 8082}
    lab.haproxy(lab.lb, lab.apps, ports, app="fwd")
    for app in lab.apps:  # blue on every app host
        app.exec("nohup python3 /opt/example/app.py --host 0.0.0.0 --port 8081 --version v1 --colour blue "
                 ">/tmp/blue.log 2>&1 &", user="deploy")
    lb = pool.host(lab.lb.ssh_address)
    admin = lb.dial_unix(HAPROXY_SOCKET)
    assert admin == lb.dial_unix(HAPROXY_SOCKET)  # one forward per destination
    assert haproxy_api(admin, f"show map {HAPROXY_MAP}").strip() == ""
    front = lb.dial_tcp("127.0.0.1", 80)
    assert front == lb.dial_tcp("127.0.0.1", 80) and front[0] == "127.0.0.1"
    url = "http://%s:%d" % front
    assert httpx.get(url + "/", timeout=5).status_code == 503  # nothing live yet
    assert haproxy_api(admin, f"add map {HAPROXY_MAP} fwd fwd_blue").strip() == ""
    for app in lab.apps:
        assert lb.probe_tcp(app.address, 8081, timeout=5) is None or wait_listening(lb, app.address, 8081)
    versions = {httpx.get(url + "/version", timeout=5).text.strip() for _ in range(4)}
    assert versions == {"v1"}
    # probe_tcp asks the host itself: the load balancer's port 80 is open, 8082 nowhere
    assert lb.probe_tcp("127.0.0.1", 80) is None
    why = lb.probe_tcp(lab.apps[0].address, 8082)
    assert why == (f"nothing accepts connections on {lab.apps[0].address}:8082 as {lab.lb.address} sees it "
                   "(Connection refused)")
    # a port forward to something that is not listening: the local end accepts, then closes
    closed = lb.dial_tcp("127.0.0.1", 8099)
    with pytest.raises(httpx.HTTPError):
        httpx.get("http://%s:%d/" % closed, timeout=5)


def wait_listening(host, address: str, port: int) -> bool:
    deadline = time.monotonic() + 10
    while host.probe_tcp(address, port) is not None:
        assert time.monotonic() < deadline, f"nothing listens on {address}:{port}"
        time.sleep(0.1)
    return True


def test_haproxy_on_every_app_host_in_front_of_its_own_ports(lab_factory) -> None:
    lab = lab_factory(apps=2, lb=False)
    lab.haproxy_each(lab.apps, {"blue": 8081, "green": 8082}, app="each")
    with SSHPool(lab.login()) as pool:
        def serve_green(host):
            host.run("nohup python3 /opt/example/app.py --port 8082 --version v2 --colour green >/dev/null 2>&1 &")
            admin = host.dial_unix(HAPROXY_SOCKET)
            assert haproxy_api(admin, f"add map {HAPROXY_MAP} each each_green").strip() == ""
            wait_listening(host, "127.0.0.1", 8082)
            return httpx.get("http://%s:%d/version" % host.dial_tcp("127.0.0.1", 80), timeout=5).text.strip()

        assert pool.each([h.ssh_address for h in lab.apps], serve_green) == {h.ssh_address: "v2" for h in lab.apps}


# --- secrets ------------------------------------------------------------------------------------

def assert_no_secret(text: str, *secrets: str | None) -> None:
    for secret in secrets:
        if not secret:
            continue
        for line in secret.splitlines():
            line = line.strip()
            if len(line) >= 8 and not line.startswith("-----"):
                assert line not in text, f"a secret line reached a message: {text!r}"
                for word in line.split():  # known_hosts: the key's base64
                    assert len(word) < 20 or word not in text, f"a secret reached a message: {text!r}"


def test_secrets_never_reach_a_message_or_a_repr(lab: Lab) -> None:
    secret = SECRET_PASSPHRASE
    key = asyncssh.import_private_key(lab.private_key).export_private_key("openssh", passphrase=secret).decode()
    login = lab.login(private_key=key, passphrase=secret, jump_host=None)
    texts = [repr(login), str(login)]
    app = lab.apps[0]
    with SSHPool(login) as pool:
        texts.append(repr(pool))
        texts.append(repr(pool.host(app.ssh_address)))
    texts.append(refused(lab.login(private_key=key, passphrase=secret,
                                   known_hosts=app.known_hosts_line(other_key()) + "\n"), app.ssh_address))
    wrong = asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh", passphrase=secret).decode()
    texts.append(refused(lab.login(private_key=wrong, passphrase=secret), app.ssh_address))
    with pytest.raises(ConfigError) as caught:
        SSHPool(lab.login(private_key=key, passphrase=secret + "-wrong"))
    texts.append(str(caught.value))
    for text in texts:
        assert_no_secret(text, key, secret, lab.known_hosts, wrong)
        assert secret not in text
    assert "known_hosts=" not in repr(login) and "private_key=" not in repr(login)


def test_the_cli_help_does_not_import_asyncssh() -> None:
    code = ("import sys; from bluegreen import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('asyncssh' in sys.modules, 'bluegreen.ssh' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "False False", done.stderr
