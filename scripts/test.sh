#!/usr/bin/env bash
# Runs DevCI's whole test suite on a fresh machine: installs what is missing, builds once, starts the real
# servers the tests use (a Docker engine on a private socket, with a busybox image imported into it, and a
# PostgreSQL cluster on a free loopback port), tests,
# and stops every server it started, whatever the outcome.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests
# The service units must load: systemd-analyze verify, with the fresh binary standing in for /usr/local/bin/devci.
scripts/verify-units.sh .build/debug/devci

servers=$(mktemp -d /tmp/devci-test-servers.XXXXXX)
# PostgreSQL runs as the postgres user, which must reach its folder in here.
chmod 755 "$servers"
stop_servers() {
  [ -d "$servers/postgres" ] && scripts/postgres.sh stop "$servers/postgres"
  if [ -f "$servers/docker.pid" ]; then
    kill "$(cat "$servers/docker.pid")" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$(cat "$servers/docker.pid")" 2>/dev/null || break; sleep 0.1; done
  fi
  # The engine leaves its network namespace mounted under its exec folder: unmount what is left, deepest first.
  awk -v d="$servers" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$servers" 2>/dev/null || true
}
trap stop_servers EXIT

# PostgreSQL: a throwaway cluster on a free loopback port, for the store's tests on PostgreSQL.
DEVCI_TEST_POSTGRES_URL=$(scripts/postgres.sh start "$servers/postgres")
export DEVCI_TEST_POSTGRES_URL

# The container engine: its own socket, data and state folders, no network set-up on the host.
mkdir -p "$servers/docker"
dockerd --host "unix://$servers/docker.sock" --data-root "$servers/docker/data" --exec-root "$servers/docker/exec" \
  --pidfile "$servers/docker/dockerd.pid" --iptables=false --ip6tables=false --bridge=none \
  >"$servers/docker.log" 2>&1 &
echo $! >"$servers/docker.pid"
export DOCKER_HOST="unix://$servers/docker.sock"
for _ in $(seq 300); do docker version >/dev/null 2>&1 && break; sleep 0.1; done
docker version >/dev/null 2>&1 || { echo "the Docker engine did not start:" >&2; tail -20 "$servers/docker.log" >&2; exit 1; }
# No registry is reachable: the tests' image is busybox-static with its applet links, imported from a folder.
scripts/make-busybox-image.sh devci-test/busybox:1 >/dev/null
export DEVCI_TEST_DOCKER_HOST="$DOCKER_HOST" DEVCI_TEST_IMAGE=devci-test/busybox:1
unset DOCKER_HOST

swift test --skip-build "$@"
