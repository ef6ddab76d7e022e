#!/usr/bin/env bash
# The quick start: installs what is missing, builds DevCI, makes the sample repositories, then starts a
# dispatcher and two runners in one process tree with prefixed logs and dispatches the sample's newest
# commit. Ctrl-C stops them all.
#   DEVCI_PORT (8888), DEVCI_DB (~/.devci/devci.sqlite), DEVCI_SAMPLE_DIR (the folder above this checkout)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/install-deps.sh
swift build
devci="$root/.build/debug/devci"
base="${DEVCI_SAMPLE_DIR:-$(dirname "$root")}"
scripts/make-test-repos.sh "$base"
base="$(cd "$base" && pwd)"
port="${DEVCI_PORT:-8888}"
work="$HOME/.devci/runners"
mkdir -p "$work"

prefix() { sed -u "s/^/[$1] /"; }
trap 'trap - INT TERM EXIT; kill 0 2>/dev/null; wait 2>/dev/null' INT TERM EXIT

"$devci" dispatcher --host 127.0.0.1 --port "$port" 2>&1 | prefix dispatcher &
for i in 1 2; do
  clone="$work/runner-$i"
  [ -d "$clone/.git" ] || git clone -q "$base/test_repo_clone_runner" "$clone"
  "$devci" runner "$clone" --dispatcher-server "localhost:$port" --name "runner-$i" 2>&1 | prefix "runner-$i" &
done
head="$(git -C "$base/test_repo" rev-parse HEAD)"
for _ in $(seq 1 50); do
  if "$devci" dispatch "$head" --repo "$base/test_repo" --dispatcher-server "localhost:$port" 2>/dev/null | prefix dispatch; then
    break
  fi
  sleep 0.2
done
echo "[start] DevCI is up: dispatcher on localhost:$port, two runners."
echo "[start] Try: $devci status --dispatcher-server localhost:$port   and   $devci report"
echo "[start] Commit to $base/test_repo, then: $devci dispatch \$(git -C $base/test_repo rev-parse HEAD) --repo $base/test_repo"
echo "[start] Ctrl-C stops everything."
wait
