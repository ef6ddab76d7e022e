#!/usr/bin/env python3
"""Benchmarks of DevCI's core, run by hand (never in the test suite):

  1. throughput: jobs per second through one dispatcher with 4 runners on trivial jobs, two ways:
     a) protocol-level runners (this script answers `assign` at once), which measures the dispatcher alone;
     b) real `devci runner` processes running `true` after a libgit2 checkout, end to end.
  2. latency: the dispatcher's added time per job, from `dispatch` sent to `assign` received plus from
     `result` sent to `accepted` received, one job at a time.
  3. reassignment: from `kill -9` of the runner running a job to the job running on another runner.

Usage: bench/core.py [--devci .build/release/devci] [--jobs 2000] [--kills 5]
"""
import argparse, os, random, re, signal, socket, sqlite3, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_dispatcher(devci, tmp, port=0, lease="3s", heartbeat="1s", db=None):
    """`db`: a postgres:// address (its artifacts then go to tmp); default a SQLite file in tmp."""
    log = open(os.path.join(tmp, "dispatcher.log"), "w+")
    store = ["--db", db, "--artifacts", os.path.join(tmp, "artifacts")] if db else ["--db", os.path.join(tmp, "devci.sqlite")]
    p = subprocess.Popen([devci, "dispatcher", "--port", str(port)] + store +
                         ["--lease", lease, "--heartbeat", heartbeat, "--log-level", "warning"],
                         stdout=log, stderr=log)
    # --log-level warning hides the "listening" line: find the port from the socket table instead.
    return p, listening_port(p, "dispatcher")


def listening_port(p, name, timeout=20):
    """The TCP port process `p` listens on, from the socket table, once it does."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if f"pid={p.pid}," in line:
                return int(re.search(r":(\d+)\s", line).group(1))
        time.sleep(0.02)
    raise SystemExit(f"{name} did not start")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Peer:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.readline()  # hello

    def send(self, line):
        self.sock.sendall((line + "\n").encode())

    def readline(self):
        return self.file.readline().decode().rstrip("\n")


def fake_runner(port, name, stop, counts):
    peer = Peer(port)
    peer.send(f"register name={name} slots=1")
    assert peer.readline().startswith("registered")
    def beat():
        while not stop.is_set():
            peer.send("heartbeat")
            time.sleep(0.5)
    threading.Thread(target=beat, daemon=True).start()
    while not stop.is_set():
        line = peer.readline()
        if not line:
            return
        if line.startswith("assign "):
            f = dict(kv.split("=", 1) for kv in line.split()[1:])
            peer.send(f"started job={f['job']} attempt={f['attempt']}\n"
                      f"log job={f['job']} attempt={f['attempt']} stream=out ts={int(time.time()*1000)} text=ok\n"
                      f"result job={f['job']} attempt={f['attempt']} status=success exit=0 reason=")
        elif line.startswith("accepted "):
            counts[name] = counts.get(name, 0) + 1


def wait_db(db, sql, want, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            row = con.execute(sql).fetchone()
            v = row[0] if row else None
            con.close()
            if want(v):
                return v
        except sqlite3.OperationalError:
            pass
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting on {sql}")


def sha(i):
    return "%040x" % random.getrandbits(160)


def bench_fake_throughput(devci, jobs, db=None, check=None):
    """Jobs per second through one dispatcher (SQLite in a temporary folder, or `db`), timed until every runner
    has heard `accepted` (which follows the write), then `check(jobs)` confirms the database agrees."""
    with tempfile.TemporaryDirectory() as tmp:
        p, port = start_dispatcher(devci, tmp, db=db)
        stop, counts = threading.Event(), {}
        for i in range(4):
            threading.Thread(target=fake_runner, args=(port, f"fake{i}", stop, counts), daemon=True).start()
        time.sleep(0.5)
        client = Peer(port)
        t0 = time.time()
        for i in range(jobs):
            client.send(f"dispatch repo=/bench commit={sha(i)} branch=main")
        for i in range(jobs):
            client.readline()
        # No polling of the database while timing: a client process every few milliseconds (psql) would take
        # a core of these two from what is measured.
        while sum(counts.values()) < jobs:
            time.sleep(0.005)
        dt = time.time() - t0
        if check:
            check(jobs)
        else:
            wait_db(os.path.join(tmp, "devci.sqlite"), "SELECT COUNT(*) FROM jobs WHERE status='success'", lambda v: v >= jobs)
        stop.set()
        p.send_signal(signal.SIGTERM); p.wait()
        return jobs / dt, counts


def bench_latency(devci, n=300):
    with tempfile.TemporaryDirectory() as tmp:
        p, port = start_dispatcher(devci, tmp)
        runner = Peer(port)
        runner.send("register name=lat slots=1")
        runner.readline()
        runner.send("heartbeat")  # a runner is offered work once its first heartbeat is in
        client = Peer(port)
        samples = []
        for i in range(n):
            t0 = time.perf_counter()
            client.send(f"dispatch repo=/bench commit={sha(i)} branch=main")
            line = runner.readline()
            while not line.startswith("assign"):
                line = runner.readline()
            t1 = time.perf_counter()
            client.readline()  # queued
            f = dict(kv.split("=", 1) for kv in line.split()[1:])
            t2 = time.perf_counter()
            runner.send(f"started job={f['job']} attempt={f['attempt']}")
            runner.send(f"result job={f['job']} attempt={f['attempt']} status=success exit=0")
            line = runner.readline()
            while not line.startswith("accepted"):
                line = runner.readline()
            t3 = time.perf_counter()
            samples.append(((t1 - t0) + (t3 - t2)) * 1000)
        p.send_signal(signal.SIGTERM); p.wait()
        samples.sort()
        return statistics.median(samples), samples[int(len(samples) * 0.95)]


def make_repo(tmp, commits):
    repo = os.path.join(tmp, "origin")
    subprocess.run(["git", "init", "-q", "-b", "main", repo], check=True)
    # fast-import: thousands of commits in well under a second
    stream = []
    for i in range(commits):
        data = f"run {i}\n"
        stream.append(f"commit refs/heads/main\nmark :{i+1}\ncommitter b <b@b> {1700000000+i} +0000\ndata 3\nc{i%10}\n"
                      + (f"from :{i}\n" if i else "")
                      + f"M 644 inline file.txt\ndata {len(data)}\n{data}\n")
    subprocess.run(["git", "-C", repo, "fast-import", "--quiet"], input="".join(stream).encode(), check=True)
    subprocess.run(["git", "-C", repo, "checkout", "-q", "main"], check=True)
    shas = subprocess.run(["git", "-C", repo, "rev-list", "--reverse", "main"], capture_output=True, text=True, check=True).stdout.split()
    return repo, shas


def start_runner(devci, tmp, repo, port, i, command):
    clone = os.path.join(tmp, f"clone{i}")
    if not os.path.exists(clone):
        subprocess.run(["git", "clone", "-q", repo, clone], check=True)
    log = open(os.path.join(tmp, f"runner{i}.log"), "a")
    return subprocess.Popen([devci, "runner", clone, "--dispatcher-server", f"127.0.0.1:{port}",
                             "--name", f"r{i}", "--test-command", command, "--log-level", "warning"],
                            stdout=log, stderr=log)


def start_runners(devci, tmp, repo, port, n, command):
    return {f"r{i}": start_runner(devci, tmp, repo, port, i, command) for i in range(n)}


def bench_real_throughput(devci, jobs):
    with tempfile.TemporaryDirectory() as tmp:
        repo, shas = make_repo(tmp, jobs)
        p, port = start_dispatcher(devci, tmp)
        runners = start_runners(devci, tmp, repo, port, 4, "true")
        db = os.path.join(tmp, "devci.sqlite")
        time.sleep(1)
        client = Peer(port)
        t0 = time.time()
        for s in shas:
            client.send(f"dispatch repo={repo} commit={s} branch=main")
        wait_db(db, "SELECT COUNT(*) FROM jobs WHERE status IN ('success','failed','error')", lambda v: v >= jobs)
        dt = time.time() - t0
        bad = wait_db(db, "SELECT COUNT(*) FROM jobs WHERE status != 'success'", lambda v: True)
        for r in runners.values():
            r.send_signal(signal.SIGTERM); r.wait()
        p.send_signal(signal.SIGTERM); p.wait()
        return jobs / dt, bad


def bench_kill(devci, kills):
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        repo, shas = make_repo(tmp, kills)
        p, port = start_dispatcher(devci, tmp)
        runners = start_runners(devci, tmp, repo, port, 2, "sleep 5")
        db = os.path.join(tmp, "devci.sqlite")
        time.sleep(1)
        client = Peer(port)
        for s in shas:
            client.send(f"dispatch repo={repo} commit={s} branch=main")
            job = int(dict(kv.split("=", 1) for kv in client.readline().split()[1:])["jobs"])
            holder = wait_db(db, f"SELECT runner FROM job_events WHERE job_id={job} AND state='running' ORDER BY id LIMIT 1", lambda v: v)
            time.sleep(0.5)
            t0 = time.time()
            runners[holder].kill()
            runners[holder].wait()
            wait_db(db, f"SELECT COUNT(*) FROM job_events WHERE job_id={job} AND state='running'", lambda v: v >= 2)
            results.append(time.time() - t0)
            runners[holder] = start_runner(devci, tmp, repo, port, int(holder[1:]), "sleep 5")  # keep two runners
            wait_db(db, f"SELECT COUNT(*) FROM jobs WHERE id={job} AND status='success'", lambda v: v == 1)
        for r in runners.values():
            r.send_signal(signal.SIGTERM); r.wait()
        p.send_signal(signal.SIGTERM); p.wait()
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devci", default=os.path.join(ROOT, ".build/release/devci"))
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--kills", type=int, default=5)
    a = ap.parse_args()
    if not os.path.exists(a.devci):
        raise SystemExit(f"no binary at {a.devci}: swift build -c release (or pass --devci)")
    rate, counts = bench_fake_throughput(a.devci, a.jobs)
    print(f"dispatcher alone, 4 protocol-level runners: {rate:.0f} jobs/s over {a.jobs} jobs (per runner: {sorted(counts.values())})")
    med, p95 = bench_latency(a.devci)
    print(f"dispatcher added latency per job: median {med:.2f} ms, p95 {p95:.2f} ms (dispatch→assign + result→accepted)")
    rate, bad = bench_real_throughput(a.devci, min(a.jobs, 1000))
    print(f"end to end, 4 real runners running `true`: {rate:.0f} jobs/s over {min(a.jobs, 1000)} jobs ({bad} not successful)")
    times = bench_kill(a.devci, a.kills)
    print(f"kill -9 of a runner → job running elsewhere (lease 3s): median {statistics.median(times):.2f} s, max {max(times):.2f} s over {len(times)}")


if __name__ == "__main__":
    main()
