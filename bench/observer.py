#!/usr/bin/env python3
"""Benchmark of the observer, run by hand: time from `git commit` in the origin to the job running on a
runner, with the observer's default 1 s poll, median of 20 (each commit made at a random phase of the
poll); then 20 back-to-back commits, counting how many get a build.

Usage: bench/observer.py [--devci .build/release/devci] [--samples 20]
"""
import argparse, os, random, signal, sqlite3, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core import ROOT, start_dispatcher, wait_db  # noqa: E402


def git(repo, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devci", default=os.path.join(ROOT, ".build/release/devci"))
    ap.add_argument("--samples", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        origin = os.path.join(tmp, "origin")
        os.makedirs(origin)
        git(origin, "init", "-q", "-b", "main")
        git(origin, "commit", "-q", "--allow-empty", "-m", "first")
        for name in ("obs", "run"):
            subprocess.run(["git", "clone", "-q", origin, os.path.join(tmp, name)], check=True)
        disp, port = start_dispatcher(a.devci, tmp)
        logs = open(os.path.join(tmp, "procs.log"), "w")
        runner = subprocess.Popen([a.devci, "runner", os.path.join(tmp, "run"), "--dispatcher-server", f"127.0.0.1:{port}",
                                   "--test-command", "true", "--log-level", "warning"], stdout=logs, stderr=logs)
        observer = subprocess.Popen([a.devci, "observer", os.path.join(tmp, "obs"), "--dispatcher-server", f"127.0.0.1:{port}",
                                     "--log-level", "warning"], stdout=logs, stderr=logs)
        db = os.path.join(tmp, "devci.sqlite")
        wait_db(db, "SELECT COUNT(*) FROM jobs WHERE status='success'", lambda v: v == 1)
        latencies, stages = [], []
        for i in range(a.samples):
            time.sleep(random.uniform(0, 1.0))
            git(origin, "commit", "-q", "--allow-empty", "-m", f"sample {i}")
            t0 = time.time()
            sha = git(origin, "rev-parse", "HEAD")
            at = wait_db(db, f"SELECT e.at FROM job_events e JOIN jobs j ON j.id = e.job_id JOIN builds b ON b.id = j.build_id "
                             f"WHERE b.commit_id = '{sha}' AND e.state = 'running'", lambda v: v is not None)
            created = wait_db(db, f"SELECT created_at FROM builds WHERE commit_id = '{sha}'", lambda v: True)
            latencies.append((at - t0) * 1000)
            stages.append(((created - t0) * 1000, (at - created) * 1000))
        base = wait_db(db, "SELECT COUNT(*) FROM builds", lambda v: True)
        for i in range(20):
            git(origin, "commit", "-q", "--allow-empty", "-m", f"burst {i}")
        wait_db(db, "SELECT COUNT(*) FROM jobs WHERE status IN ('success','failed','error')", lambda v: v >= base + 20, timeout=60)
        built = wait_db(db, "SELECT COUNT(*) FROM builds", lambda v: True) - base
        for p in (observer, runner, disp):
            p.send_signal(signal.SIGTERM)
            p.wait()
    latencies.sort()
    print(f"commit → job running, 1 s poll: median {statistics.median(latencies):.0f} ms, "
          f"min {latencies[0]:.0f} ms, max {latencies[-1]:.0f} ms over {len(latencies)} (target: under 550 ms)")
    print("commit→queued, queued→running (ms): " + ", ".join(f"{a:.0f}+{b:.0f}" for a, b in stages))
    print(f"20 back-to-back commits: {built} builds")


if __name__ == "__main__":
    main()
