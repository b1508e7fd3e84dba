#!/usr/bin/env bash
# Debian packages the tests run for real: the HAProxy and nginx (+ njs) routers, PostgreSQL for the
# database-migration tests and Prometheus for metric analysis. The tests start their own instances (own config, ports, data dir), so the
# packages' system services are kept from starting (policy-rc.d) and stopped if they did.
set -euo pipefail
# socat: the HAProxy router's raw switch command talks to the Runtime API with it
# bind9, bind9-dnsutils: the DNS router's authoritative server (the tests run their own named) and nsupdate
# openssh-client: ssh-keygen, ssh-agent and ssh-add for the servers tests (their hosts build their own sshd)
PACKAGES=(haproxy socat nginx libnginx-mod-http-js postgresql prometheus openssh-client bind9 bind9-dnsutils)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  policy=/usr/sbin/policy-rc.d
  had_policy=0; [ -e "$policy" ] && had_policy=1
  if [ $had_policy = 0 ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  [ $had_policy = 1 ] || rm -f "$policy"
fi
for service in nginx haproxy postgresql prometheus prometheus-node-exporter named; do
  service "$service" stop >/dev/null 2>&1 || true
done
echo "setup-packages: $(haproxy -v | head -1); $(nginx -v 2>&1); postgresql $(ls /usr/lib/postgresql)" >&2
