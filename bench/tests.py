#!/usr/bin/env python3
"""Test results at their bound (issue 14), run by hand on a release build (never in the test suite):

  1. a job whose JUnit report holds --tests results (default 50,000, the most an attempt keeps), --failing of
     them failing with a 1 KB message: the runner's parse time (the job's last line to the runner's `tests:` line),
     then sending and storing them (that line to the build's end), the runner's and the dispatcher's peak memory;
  2. the reporter on that build: the build page (failures shown), its JSON (every test), the flaky page, the
     branch's test timings and one test's history, median and p95 of --requests requests.

Usage: bench/tests.py [--devci .build/release/devci] [--tests 50000] [--failing 1000] [--requests 20]
"""
import argparse, os, sqlite3, statistics, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core import free_port, start_dispatcher  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--devci", default=".build/release/devci")
p.add_argument("--tests", type=int, default=50_000)
p.add_argument("--failing", type=int, default=1000)
p.add_argument("--requests", type=int, default=20)
a = p.parse_args()
devci = os.path.abspath(a.devci)
tmp = tempfile.mkdtemp(prefix="devci-bench-tests-")
env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="b@x", GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="b@x")


def run(*cmd, cwd=None):
    return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


origin = os.path.join(tmp, "origin")
os.makedirs(origin)
open(os.path.join(origin, "report.py"), "w").write(f"""
import os, sys
os.makedirs("reports", exist_ok=True)
with open("reports/junit.xml", "w") as out:
    out.write('<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="bench">')
    for i in range({a.tests}):
        out.write('<testcase classname="bench.Suite%d" name="test_%d" time="0.%03d">' % (i % 100, i, i % 1000))
        if i < {a.failing}:
            out.write('<failure message="assertion %d">%s</failure>' % (i, "x" * 1024))
        out.write('</testcase>')
    out.write('</testsuite></testsuites>')
print("report written", flush=True)
sys.exit(1 if {a.failing} else 0)
""")
open(os.path.join(origin, ".devci.yml"), "w").write("jobs:\n  unit:\n    run: python3 report.py\n    reports: {junit: [reports/junit.xml]}\n")
run("git", "init", "-q", "-b", "main", cwd=origin)
run("git", "add", "-A", cwd=origin)
run("git", "commit", "-qm", "bench", cwd=origin)
commit = run("git", "rev-parse", "HEAD", cwd=origin).strip()
run("git", "clone", "-q", origin, os.path.join(tmp, "clone"))
db = os.path.join(tmp, "devci.sqlite")


web = free_port()
logs = open(os.path.join(tmp, "processes.log"), "w")
dispatcher, port = start_dispatcher(devci, tmp)
runner = subprocess.Popen([devci, "runner", os.path.join(tmp, "clone"), "--dispatcher-server", f"127.0.0.1:{port}", "--name", "r"],
                          stdout=logs, stderr=logs)
try:
    run(devci, "dispatch", commit, "--repo", origin, "--dispatcher-server", f"127.0.0.1:{port}")
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            row = sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("SELECT status, finished_at FROM builds WHERE id = 1").fetchone()
            if row and row[1]:
                break
        except sqlite3.Error:
            pass
        time.sleep(0.1)
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    status, finished = c.execute("SELECT status, finished_at FROM builds WHERE id = 1").fetchone()
    written = c.execute("SELECT ts FROM log_lines WHERE text = 'report written'").fetchone()[0] / 1000
    parsed = c.execute("SELECT ts FROM log_lines WHERE text LIKE 'tests: reports/junit.xml:%'").fetchone()[0] / 1000
    stored = c.execute("SELECT COUNT(*) FROM test_results").fetchone()[0]

    def peak(pid):
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    print(f"build 1 {status}: {stored} test results stored")
    print(f"runner: report read and parsed in {parsed - written:.2f} s; sent, stored and the build ended {finished - parsed:.2f} s later")
    print(f"peak memory: runner {peak(runner.pid):.0f} MiB, dispatcher {peak(dispatcher.pid):.0f} MiB")
    reporter = subprocess.Popen([devci, "reporter", "--port", str(web), "--db", db], stdout=logs, stderr=logs)
    deadline = time.time() + 20
    while True:  # until it answers
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{web}/static/devci.css").read()
            break
        except OSError:
            if time.time() > deadline:
                raise SystemExit("the reporter did not start")
            time.sleep(0.05)
    name = "origin"
    for path in ["/builds/1", "/api/builds/1", f"/repos/{name}/flaky", f"/repos/{name}/tests?branch=main",
                 f"/repos/{name}/tests/history?suite=bench.Suite7&name=test_7"]:
        times = []
        for _ in range(a.requests):
            t = time.perf_counter()
            body = urllib.request.urlopen(f"http://127.0.0.1:{web}{path}").read()
            times.append((time.perf_counter() - t) * 1000)
        times.sort()
        print(f"{path}: median {statistics.median(times):.1f} ms, p95 {times[int(len(times) * 0.95) - 1]:.1f} ms, {len(body) // 1024} KiB")
    print(f"reporter peak memory {peak(reporter.pid):.0f} MiB")
    reporter.terminate()
finally:
    runner.terminate()
    dispatcher.terminate()
    runner.wait()
    dispatcher.wait()
