#!/usr/bin/env bash
# Runs DevCI's whole test suite on a fresh machine: installs what is missing, builds once, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build --build-tests
swift test --skip-build "$@"
