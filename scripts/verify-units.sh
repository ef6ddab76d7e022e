#!/usr/bin/env bash
# Checks contrib/systemd/ with `systemd-analyze verify`, the devci binary given (default .build/debug/devci)
# standing in for /usr/local/bin/devci. Exits non-zero on any complaint.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "${1:-.build/debug/devci}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for unit in contrib/systemd/*.service; do
  sed "s#/usr/local/bin/devci#$binary#g" "$unit" >"$work/$(basename "$unit")"
done
cp "$work/devci-runner@.service" "$work/devci-runner@r1.service"
status=0
for unit in "$work"/*.service; do
  [ "$(basename "$unit")" = "devci-runner@.service" ] && continue
  out=$(systemd-analyze verify --man=no "$unit" 2>&1) || status=1
  if [ -n "$out" ]; then echo "$(basename "$unit"): $out" >&2; status=1; fi
done
[ $status -eq 0 ] && echo "verified: $(ls contrib/systemd/*.service | xargs -n1 basename | tr '\n' ' ')"
exit $status
