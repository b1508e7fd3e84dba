"""nginx (Debian `nginx` + `libnginx-mod-http-js`) whose upstream njs reads from a file on every request.

How the switch works: `js_set $bluegreen_upstream bluegreen.upstream` runs bluegreen.js (beside this
module) per request; it reads the upstream file and answers the name of an upstream{} block,
`<app>_blue` or `<app>_green` (named blocks keep upstream keepalive), and
`proxy_pass http://$bluegreen_upstream` sends the request there. A switch is one atomic rename of that
file: the next request goes to the new colour, and kept-alive client connections follow it. Never a
reload: `nginx -s reload` closes kept-alive connections (~250 failed requests per run, docs/architecture.md).

The file holds `blue`, `green` or a split such as `blue 90 green 10`, which njs applies per request with
Math.random, so this router is weighted. A file holding anything else makes nginx answer 502 (never a
guessed colour) and read() an error that says what it found.

`python -m bluegreen.routers.nginx [DIR]` prints the njs module's path, or copies it into DIR, for a
`manage: false` nginx (README, Routers).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import sys
from pathlib import Path

from ..config import COLOURS, Colour
from ..config import NginxRouter as NginxConfig
from ..errors import TargetError
from ..remote import Shell
from ..report import write_atomic
from ..state.files import state_io
from ..traffic import Weights, all_to
from .proxy import ProxyRouter, find_binary

NJS_MODULE = Path(__file__).with_name("bluegreen.js")
# Where distributions put the njs module (Debian/Ubuntu, RHEL/Fedora, nginx.org's packages).
JS_MODULE_PATHS = ("/usr/lib/nginx/modules", "/usr/lib64/nginx/modules", "/etc/nginx/modules")
_SPLIT = re.compile(r"(blue|green)\s+(\d{1,3})\s+(blue|green)\s+(\d{1,3})")


def parse(text: str) -> Weights | None:
    """The file's split, by the rules bluegreen.js applies; None when it holds no valid value."""
    words = text.strip()
    if words in COLOURS:
        return all_to(words)  # type: ignore[arg-type]
    found = _SPLIT.fullmatch(words)
    if not found or found[1] == found[3] or int(found[2]) + int(found[4]) != 100:
        return None
    return {found[1]: int(found[2]), found[3]: int(found[4])}  # type: ignore[misc]


def unparse(weights: Weights) -> str:
    """What the file holds for `weights`: one colour for a switch, else 'blue N green M'."""
    for colour in COLOURS:
        if weights[colour] == 100:
            return colour
    return " ".join(f"{c} {weights[c]}" for c in COLOURS)


def js_module_so() -> str:
    for directory in JS_MODULE_PATHS:
        candidate = Path(directory) / "ngx_http_js_module.so"
        if candidate.exists():
            return str(candidate)
    raise TargetError("router: nginx's njs module (ngx_http_js_module.so) is not installed (Debian: apt-get install "
                      "libnginx-mod-http-js)")


def conf_string(value: str, what: str) -> str:
    """`value` quoted for nginx.conf. nginx expands $ inside any string, so a path with one cannot be used."""
    if "$" in value:
        raise TargetError(f"router: the nginx {what} {value!r} contains '$', which nginx would read as a variable")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class NginxRouter(ProxyRouter):
    kind = "nginx"
    weighted = True
    config: NginxConfig

    def __init__(self, config: NginxConfig, upstreams: dict[Colour, list[str]], state_dir: Path, app: str,
                 shell: Shell | None = None) -> None:
        super().__init__(config, upstreams, state_dir, app, shell)
        # Relative to state_dir: the same place whatever folder bluegreen runs from.
        self.upstream_file = state_dir / (config.upstream_file or "upstream")

    def read(self) -> Weights | None:
        text = self.files.read(self.upstream_file, "read the router's upstream file")
        if text is None or not text.strip():
            return None
        weights = parse(text)
        if weights is None:
            raise TargetError(
                f"router: {self.at(self.upstream_file)} holds {text.strip()[:80]!r}, which is neither blue nor green "
                "nor a split like 'blue 90 green 10' (nginx answers 502 meanwhile): write the live colour into it, "
                "or delete it and deploy"
            )
        return weights

    def write(self, weights: Weights) -> None:
        """njs reads the file on every request, so the next request after the rename follows it. The rename is
        atomic: a failed write (a full disk) raises and leaves the file, and live traffic, as they were."""
        # 0644: nginx's workers run as another user (www-data) and must read it
        self.files.write(self.upstream_file, unparse(weights) + "\n", "write the router's upstream file", mode=0o644)

    def raw_switch_command(self, to: Colour) -> str:
        path = self.files.show(self.upstream_file)
        tmp = shlex.quote(path + ".tmp")
        return f"printf '%s\\n' {to} > {tmp} && mv -f {tmp} {shlex.quote(path)}"

    def reachable(self) -> str | None:
        why = super().reachable()
        return why and f"{why} (your nginx's $bluegreen_file is {self.files.show(self.upstream_file)})"

    def reset(self) -> None:
        self.files.remove(self.upstream_file, "remove the router's upstream file")

    def start(self) -> None:
        prefix = self.state_dir / "nginx"  # nginx's own files: its config, pid, temp paths
        config_file = prefix / "nginx.conf"
        with state_io(config_file, "write the router's config"):
            for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
                (prefix / "temp" / temp).mkdir(parents=True, exist_ok=True)
            write_atomic(config_file, self.nginx_conf())
        assert self.process
        # -e stderr: errors before the config is read go to our log, not to /var/log/nginx (root's)
        self.process.spawn([find_binary(self.config.binary, "apt-get install nginx libnginx-mod-http-js"), "-p", f"{prefix}/", "-c", str(config_file), "-e", "stderr",
                            "-g", "daemon off;"], timeout=10)

    def nginx_conf(self) -> str:
        listen = self.config.listen.removeprefix(":")  # ':8080' (every address) is nginx's 'listen 8080'
        user = ""
        if os.geteuid() == 0:  # workers default to nobody, who cannot reach a private state_dir: keep the owner
            user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"
        upstreams = "".join(
            f"    upstream {self.app}_{c} {{ {''.join(f'server {a}; ' for a in self.upstreams[c])}keepalive 32; }}\n"
            for c in COLOURS
        )
        return (
            "# Written by bluegreen (router.manage: true) at each start; the live colour is in the upstream file.\n"
            f"load_module {js_module_so()};\n{user}"
            "worker_processes auto;\npid nginx.pid;\nerror_log stderr warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            "    access_log off;\n"
            "    client_body_temp_path temp/body; proxy_temp_path temp/proxy; fastcgi_temp_path temp/fastcgi;\n"
            "    uwsgi_temp_path temp/uwsgi; scgi_temp_path temp/scgi;\n"
            f"    js_import {conf_string(str(NJS_MODULE), 'njs module path')};\n"
            "    js_set $bluegreen_upstream bluegreen.upstream;\n"
            f"{upstreams}"
            "    server {\n"
            f"        listen {listen};\n"
            f"        set $bluegreen_file {conf_string(str(self.upstream_file.resolve()), 'upstream_file')};\n"
            f"        set $bluegreen_app {self.app};\n"
            "        location / {\n"
            '            if ($bluegreen_upstream = "") { return 502 "bluegreen: no live colour (see the error log)\\n"; }\n'
            "            proxy_pass http://$bluegreen_upstream;\n"
            "            proxy_http_version 1.1;\n"
            '            proxy_set_header Connection "";\n'
            "            proxy_set_header Host $host;\n"
            "            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
            "        }\n"
            "    }\n"
            "}\n"
        )


def main(argv: list[str]) -> int:
    """Print the njs module's path, or copy it into the folder given (for your own nginx)."""
    if not argv:
        print(NJS_MODULE)
        return 0
    target = Path(argv[0]) / NJS_MODULE.name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(NJS_MODULE, target)
        target.chmod(0o644)
    except OSError as exc:
        print(f"bluegreen: error: cannot copy the njs module to {target}: {exc.strerror}", file=sys.stderr)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
