#!/usr/bin/env bash
# Installs what building and running DevCI needs from Debian's packages, when it is missing:
# libgit2-dev (through pkg-config), git, python3 for the sample repository's tests, and for the container tests
# a Docker engine (docker.io: dockerd and its client; nothing is started here) and busybox-static for their image,
# systemd-analyze (systemd) to verify the service units in contrib/systemd, Prometheus with promtool
# (prometheus) to check and scrape /metrics, and PostgreSQL (postgresql: initdb, pg_ctl, psql) for the store's
# tests on PostgreSQL. Services the packages would start on install (PostgreSQL's own cluster) are not started:
# the tests start their own servers on private ports.
set -euo pipefail
missing=()
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists libgit2 2>/dev/null || missing+=(libgit2-dev)
command -v git >/dev/null 2>&1 || missing+=(git)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || missing+=(busybox-static)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v psql >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # No service starts by itself: policy-rc.d says no to every start while the packages install.
  policy=/usr/sbin/policy-rc.d
  added_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null && $sudo chmod +x "$policy" && added_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  [ -z "$added_policy" ] || $sudo rm -f "$policy"
fi
# aiosmtpd, a real SMTP server for the notification tests, from PyPI.
if ! python3 -c "import aiosmtpd" >/dev/null 2>&1; then
  echo "installing aiosmtpd (pip)" >&2
  python3 -m pip install --quiet aiosmtpd 2>/dev/null || python3 -m pip install --quiet --break-system-packages aiosmtpd
fi
command -v swift >/dev/null 2>&1 || { echo "swift is not on PATH: install Swift 6.1 or later" >&2; exit 1; }
