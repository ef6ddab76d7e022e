#!/usr/bin/env python3
"""Benchmark of the reporter, run by hand: fills a database with 100,000 builds (two jobs each, events and
log lines, one job with a 50 MB log), then measures the dashboard and build pages: latency (median, p95)
one request at a time, and pages per second with 4 clients.

Usage: bench/reporter.py [--devci .build/release/devci] [--builds 100000]
"""
import argparse, os, random, re, signal, sqlite3, statistics, subprocess, sys, tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core import ROOT, start_dispatcher  # noqa: E402


def fill(db, builds):
    con = sqlite3.connect(db)
    con.execute("PRAGMA synchronous = OFF")
    now = time.time() - builds * 10
    statuses = ["success"] * 8 + ["failed", "error"]
    with con:
        for b in range(1, builds + 1):
            t = now + b * 10
            st = random.choice(statuses)
            con.execute("INSERT INTO builds(id, repo, branch, commit_id, status, created_at, started_at, finished_at, title, author) "
                        "VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (b, f"/srv/git/repo{b % 5}.git", random.choice(["main", "dev"]), "%040x" % random.getrandbits(160), st,
                         t, t + 1, t + 1 + random.random() * 60, f"Commit number {b}", "Bench"))
            for k, name in enumerate(["compile", "unit"]):
                j = b * 2 - 1 + k
                con.execute("INSERT INTO jobs(id, build_id, name, status, attempt, runner, queued_at, started_at, finished_at, stage, exit_code) "
                            "VALUES (?,?,?,?,?,?,?,?,?,?,?)", (j, b, name, st, 1, f"r{b % 4}", t, t + 1, t + 30, ["build", "test"][k], 0))
                for state in ["pending", "queued", "assigned", "running", st]:
                    con.execute("INSERT INTO job_events(job_id, at, state, attempt, runner) VALUES (?,?,?,?,?)", (j, t, state, 1, f"r{b % 4}"))
                con.executemany("INSERT INTO log_lines(job_id, attempt, stream, ts, text) VALUES (?,?,?,?,?)",
                                [(j, 1, "out", int(t * 1000) + i, f"test output line {i} of job {j}") for i in range(5)])
        for r in range(5):
            for br in ["main", "dev"]:
                con.execute("INSERT INTO branch_heads(repo, branch, commit_id, at) VALUES (?,?,?,?)", (f"/srv/git/repo{r}.git", br, "0" * 40, now))
        big = builds * 2
        line = "x" * 90
        con.executemany("INSERT INTO log_lines(job_id, attempt, stream, ts, text) VALUES (?,?,?,?,?)",
                        ((big, 1, "out", i, f"{i:08d} {line}") for i in range(520_000)))
    con.close()
    return builds  # the build whose job has the 50 MB log


def get(port, path):
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}") as r:
        body = r.read()
    return (time.perf_counter() - t0) * 1000, len(body)


def measure(port, paths, n):
    samples = sorted(get(port, random.choice(paths))[0] for _ in range(n))
    return statistics.median(samples), samples[int(n * 0.95)]


def throughput(port, paths, seconds=5, clients=4):
    count = [0]
    stop = time.time() + seconds
    def worker():
        while time.time() < stop:
            get(port, random.choice(paths))
            count[0] += 1
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads: t.start()
    for t in threads: t.join()
    return count[0] / seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devci", default=os.path.join(ROOT, ".build/release/devci"))
    ap.add_argument("--builds", type=int, default=100_000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        disp, _ = start_dispatcher(a.devci, tmp)  # creates and migrates the database
        disp.send_signal(signal.SIGTERM); disp.wait()
        db = os.path.join(tmp, "devci.sqlite")
        t0 = time.time()
        big = fill(db, a.builds)
        print(f"filled {a.builds} builds, {a.builds * 2} jobs, {os.path.getsize(db) / 1e6:.0f} MB in {time.time() - t0:.0f} s")
        log = open(os.path.join(tmp, "reporter.log"), "w+")
        rep = subprocess.Popen([a.devci, "reporter", "--port", "0", "--db", db], stdout=log, stderr=log)
        port = 0
        for _ in range(200):
            log.seek(0)
            m = re.search(r"listening on http://127.0.0.1:(\d+)", log.read())
            if m:
                port = int(m.group(1)); break
            time.sleep(0.05)
        get(port, "/")
        for name, paths in [("dashboard /", ["/"]),
                            ("dashboard page 50, filtered", ["/?repo=%2Fsrv%2Fgit%2Frepo3.git&page=50", "/?status=failed&page=20"]),
                            ("build page", [f"/builds/{random.randint(1, a.builds)}" for _ in range(200)]),
                            ("build page with a 50 MB log", [f"/builds/{big}"])]:
            med, p95 = measure(port, paths, 100)
            print(f"{name}: median {med:.1f} ms, p95 {p95:.1f} ms; {throughput(port, paths):.0f} pages/s with 4 clients")
        t, size = get(port, f"/jobs/{big * 2}/log.txt")
        print(f"50 MB log download: {size / 1e6:.0f} MB in {t / 1000:.1f} s")
        rep.send_signal(signal.SIGTERM); rep.wait()


if __name__ == "__main__":
    main()
