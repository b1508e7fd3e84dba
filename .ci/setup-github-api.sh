#!/usr/bin/env bash
# GitHub's own OpenAPI description of its REST API (npm @octokit/openapi), which the fake GitHub API of the
# deployments tests (tests/github/fakegithub.py) checks every request and answer against. Idempotent; prints
# the path of api.github.com.json on stdout, all else on stderr.
#   BLUEGREEN_TOOLS_DIR  where to install (default ~/.cache/bluegreen/tools; the tests look there)
set -euo pipefail

VERSION=23.0.2
PREFIX=${BLUEGREEN_TOOLS_DIR:-$HOME/.cache/bluegreen/tools}/github-api
PACKAGE=$PREFIX/node_modules/@octokit/openapi
SPEC=$PACKAGE/generated/api.github.com.json

installed() { [ -f "$SPEC" ] && grep -q "\"version\": \"$VERSION\"" "$PACKAGE/package.json"; }

if ! installed; then
  command -v npm >/dev/null || {
    echo "setup-github-api: installing npm (apt)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >&2 \
      || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >&2; }
  }
  echo "setup-github-api: installing @octokit/openapi@$VERSION into $PREFIX" >&2
  mkdir -p "$PREFIX"
  npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "@octokit/openapi@$VERSION" >&2
  installed || { echo "setup-github-api: error: $SPEC is missing after the install" >&2; exit 1; }
fi
echo "$SPEC"
