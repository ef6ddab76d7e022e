#!/usr/bin/env bash
# Makes the sample repositories the quick start uses, from this checkout's test_repo/ folder:
#   BASE/test_repo               a git repository with a first commit (commit here to see DevCI test it)
#   BASE/test_repo_clone_obs     the observer's clone
#   BASE/test_repo_clone_runner  the runners' clone
# BASE is the first argument, else DEVCI_SAMPLE_DIR, else the folder that holds this checkout
# (so the seed's ../test_repo_clone_runner paths work from here). What exists already is kept.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
base="${1:-${DEVCI_SAMPLE_DIR:-$(dirname "$root")}}"
mkdir -p "$base"
base="$(cd "$base" && pwd)"
origin="$base/test_repo"
export GIT_AUTHOR_NAME="${GIT_AUTHOR_NAME:-DevCI sample}" GIT_AUTHOR_EMAIL="${GIT_AUTHOR_EMAIL:-sample@devci.invalid}"
export GIT_COMMITTER_NAME="${GIT_COMMITTER_NAME:-$GIT_AUTHOR_NAME}" GIT_COMMITTER_EMAIL="${GIT_COMMITTER_EMAIL:-$GIT_AUTHOR_EMAIL}"

if [ "$origin" = "$root/test_repo" ]; then
  echo "error: BASE must not be this checkout ($root): pick another folder" >&2
  exit 1
fi
if [ ! -d "$origin/.git" ]; then
  mkdir -p "$origin"
  cp -R "$root/test_repo/." "$origin/"
  git -C "$origin" init -q -b main
  git -C "$origin" add -A
  git -C "$origin" commit -q -m "Sample project with a passing test suite"
  echo "made $origin"
else
  echo "kept $origin"
fi
for clone in test_repo_clone_obs test_repo_clone_runner; do
  if [ ! -d "$base/$clone/.git" ]; then
    git clone -q "$origin" "$base/$clone"
    echo "made $base/$clone"
  else
    echo "kept $base/$clone"
  fi
done
echo "head of $origin: $(git -C "$origin" rev-parse HEAD)"
