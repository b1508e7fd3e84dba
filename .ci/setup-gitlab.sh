#!/usr/bin/env bash
# Prepare what the GitLab tests need: gitlab-ci-local on Node 22 (its 4.75 line needs 22; the
# machine's Node may be older), and rsync (its shell executor needs it). Idempotent, and quick when
# everything is there. Prints the path of a gitlab-ci-local wrapper on stdout; all else goes to stderr.
#   BLUEGREEN_TOOLS_DIR  where to install (default ~/.cache/bluegreen/tools)
set -euo pipefail

GCL_VERSION=4.75.1
NODE_MAJOR=22
TOOLS=${BLUEGREEN_TOOLS_DIR:-$HOME/.cache/bluegreen/tools}
WRAPPER=$TOOLS/bin/gitlab-ci-local
NODE=$TOOLS/node_modules/.bin/node

log() { echo "setup-gitlab: $*" >&2; }

apt_install() {
  log "installing $* (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "$@" >&2 || { apt-get update -qq >&2 && apt-get install -y -qq "$@" >&2; }
}

command -v rsync >/dev/null || apt_install rsync
command -v git >/dev/null || apt_install git

# Already installed at the pinned version: nothing to do.
if [ -x "$WRAPPER" ] && [ "$("$WRAPPER" --version 2>/dev/null)" = "$GCL_VERSION" ]; then
  echo "$WRAPPER"
  exit 0
fi

command -v npm >/dev/null || apt_install nodejs npm
log "installing node@$NODE_MAJOR and gitlab-ci-local@$GCL_VERSION into $TOOLS"
mkdir -p "$TOOLS/bin"
# The npm package node@22 ships the Node binary for this platform (an npm dependency, no download).
npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error "node@$NODE_MAJOR" "gitlab-ci-local@$GCL_VERSION" >&2
case "$("$NODE" --version 2>/dev/null)" in
  "v$NODE_MAJOR".*) ;;
  *) log "error: $NODE is not Node $NODE_MAJOR (did npm skip the node package's install script?)"; exit 1 ;;
esac

# A wrapper, so gitlab-ci-local runs on this Node whatever `node` is first on PATH.
cat >"$WRAPPER.tmp" <<SH
#!/bin/sh
exec "$NODE" "$TOOLS/node_modules/gitlab-ci-local/dist/index.js" "\$@"
SH
chmod +x "$WRAPPER.tmp"
mv "$WRAPPER.tmp" "$WRAPPER"

version=$("$WRAPPER" --version)
[ "$version" = "$GCL_VERSION" ] || { log "error: gitlab-ci-local says $version, expected $GCL_VERSION"; exit 1; }
log "gitlab-ci-local $version on Node $("$NODE" --version)"
echo "$WRAPPER"
