#!/bin/bash
# Issue 14 on a real project, by hand: more-itertools 10.5.0 (its sdist from PyPI, which holds its pytest suite),
# a synthetic history of 16 commits pushed at once (the 11th changes `ilen`), the observer's backlog cap at 1.
# Prints DevCI's culprit and the one `git bisect run` finds by hand, and the repository's flaky tests.
# Needs pip (PyPI) and pytest. Usage: bench/real-project.sh [.build/release/devci]
set -euo pipefail
DEVCI=$(realpath "${1:-.build/release/devci}")
W=$(mktemp -d /tmp/devci-real-XXXX)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
export GIT_AUTHOR_NAME="Ada Lovelace" GIT_AUTHOR_EMAIL=ada@example.com GIT_COMMITTER_NAME="Ada Lovelace" GIT_COMMITTER_EMAIL=ada@example.com
pip download -q --no-binary :all: --no-deps more-itertools==10.5.0 -d "$W"
tar -C "$W" -xzf "$W/more-itertools-10.5.0.tar.gz" && mv "$W/more-itertools-10.5.0" "$W/origin"
cd "$W/origin"
printf 'jobs:\n  tests:\n    run: python3 -m pytest -q -p no:cacheprovider --junitxml=reports/junit.xml tests\n    reports: {junit: ["reports/junit.xml"]}\n    timeout: 5m\n' > .devci.yml
git init -q -b main . && git add -A && git commit -qm "more-itertools 10.5.0"
git clone -q "$W/origin" "$W/clone-runner"; git clone -q "$W/origin" "$W/clone-obs"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$DEVCI" dispatcher --port "$PORT" --db "$W/db.sqlite" > "$W/dispatcher.log" 2>&1 & PIDS+=($!)
sleep 1
"$DEVCI" runner "$W/clone-runner" --dispatcher-server "localhost:$PORT" --name r1 > "$W/runner.log" 2>&1 & PIDS+=($!)
"$DEVCI" observer "$W/clone-obs" --dispatcher-server "localhost:$PORT" --max-backlog 1 --interval 500ms > "$W/observer.log" 2>&1 & PIDS+=($!)
until "$DEVCI" report --db "$W/db.sqlite" 2>/dev/null | grep -q "^1 .*success"; do sleep 0.5; done
git clone -q "$W/origin" "$W/dev" && cd "$W/dev"
for i in $(seq 1 16); do
  if [ "$i" = 11 ]; then
    sed -i 's/    return sum(compress(repeat(1), zip(iterable)))/    return sum(1 for _ in zip(iterable, iterable))/' more_itertools/more.py
    git commit -qam "ilen: count in a single pass"
  else
    echo "- note $i" >> docs/versions.rst && git commit -qam "docs: note $i"
  fi
done
cd "$W/origin" && git pull -q --ff-only "$W/dev" main
T0=$(date +%s)
until "$DEVCI" report --db "$W/db.sqlite" 2>/dev/null | grep -qE "broken by|bisection stopped"; do sleep 1; done
echo "DevCI: bisection ended after $(( $(date +%s) - T0 )) s"
"$DEVCI" report --db "$W/db.sqlite"
"$DEVCI" report --db "$W/db.sqlite" --run 2 --tests | head -8
git clone -q "$W/origin" "$W/bisect" && cd "$W/bisect"
git bisect start main main~16 > /dev/null
echo "git bisect run, by hand:"
git bisect run python3 -m pytest -q -x -p no:cacheprovider tests 2>&1 | grep -E "is the first bad commit|^running" | sed 's/^/  /'
echo "work folder: $W"
