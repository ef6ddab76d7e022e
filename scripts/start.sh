#!/usr/bin/env bash
# The quick start: installs what is missing (libgit2-dev, git, python3), builds DevCI, then runs
# `devci up`: the sample repositories are made when missing, and a dispatcher, a runner manager with two
# runners and an observer start in one process tree with prefixed logs. Ctrl-C stops them all.
# Arguments go to `devci up` (e.g. --port 9999 --runners 3 --sample-dir /tmp/devci-sample).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/install-deps.sh
swift build
exec "$root/.build/debug/devci" up "$@"
