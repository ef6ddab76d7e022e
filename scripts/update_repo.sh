#!/usr/bin/env bash
# Troubleshooting by hand: brings a clone up to date with its origin (fast-forward only) and prints the
# new head. It says plainly what is wrong when the clone has uncommitted changes, is on a detached HEAD
# or the wrong branch, or cannot reach its origin: the three usual reasons a clone stops seeing commits.
#   scripts/update_repo.sh <clone> [branch]     (branch: default origin's HEAD branch, else main)
set -euo pipefail
fail() { echo "update_repo: $*" >&2; exit 1; }
clone="${1:-}"
[ -n "$clone" ] || fail "usage: scripts/update_repo.sh <clone> [branch]"
[ -d "$clone" ] || fail "$clone does not exist"
git -C "$clone" rev-parse --git-dir >/dev/null 2>&1 || fail "$clone is not a git clone"
cd "$clone"
origin="$(git remote get-url origin 2>/dev/null)" || fail "$clone has no remote named origin"
expected="${2:-}"
if [ -z "$expected" ]; then
  expected="$(git symbolic-ref -q --short refs/remotes/origin/HEAD 2>/dev/null || true)"
  expected="${expected#origin/}"
  [ -n "$expected" ] || expected=main
fi
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  git status --short --untracked-files=no >&2
  fail "$clone has uncommitted changes (above): commit, stash or 'git checkout -- .' them first"
fi
branch="$(git symbolic-ref -q --short HEAD)" || fail "$clone is on a detached HEAD ($(git rev-parse --short HEAD)): run 'git -C $clone checkout $expected'"
[ "$branch" = "$expected" ] || fail "$clone is on branch '$branch', not '$expected': run 'git -C $clone checkout $expected'"
git fetch -q origin 2>/tmp/update_repo.$$ || { cat /tmp/update_repo.$$ >&2; rm -f /tmp/update_repo.$$; fail "cannot reach origin '$origin' (path, URL or credentials)"; }
rm -f /tmp/update_repo.$$
git merge -q --ff-only "origin/$expected" || fail "$branch has diverged from origin/$expected: it has commits origin does not"
echo "$clone is at $(git rev-parse HEAD) ($expected, $(git log -1 --format=%s))"
