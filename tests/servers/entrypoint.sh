#!/bin/sh
# Per container: its own host key (kept across a restart), the run's client key for deploy, the Docker
# engine if DIND=1 (a restart leaves its pid files behind), then sshd.
set -e
[ -s /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
install -d -m 700 -o deploy -g deploy /home/deploy/.ssh
printf '%s\n' "$AUTHORIZED_KEY" > /home/deploy/.ssh/authorized_keys
chown deploy:deploy /home/deploy/.ssh/authorized_keys && chmod 600 /home/deploy/.ssh/authorized_keys
if [ "$DIND" = 1 ]; then
  rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
  dockerd --host unix:///var/run/docker.sock >/var/log/dockerd.log 2>&1 &
fi
exec /usr/sbin/sshd -D -e -p "${SSH_PORT:-22}"
