#!/usr/bin/env python3
"""Benchmarks of the PostgreSQL store and standby dispatchers (issue 13), run by hand (never in the test suite):

  1. throughput: trivial jobs per second through one dispatcher with 4 protocol-level runners, on SQLite and on
     PostgreSQL (the same measurement as bench/core.py's first);
  2. the dashboard at a million builds: fills a PostgreSQL database with --builds builds (two jobs each, five
     events per job, two log lines per job), starts `devci reporter` on it, and measures the dashboard, a
     filtered page and build pages one request at a time (median, p95);
  3. failover: two dispatchers on one PostgreSQL database, a protocol-level runner and a feeder that follow the
     leader through both addresses; the leader is killed (kill -9) or frozen (SIGSTOP), and the time from then to
     the first job the new leader assigns is measured, over --trials trials each (the old leader is restarted as
     the standby between trials).

Usage: bench/postgres.py [--devci .build/release/devci] [--jobs 2000] [--builds 1000000] [--trials 10] [--server postgres://…]
Without --server it starts a throwaway PostgreSQL with scripts/postgres.sh and stops it afterwards.
"""
import argparse, os, re, signal, socket, statistics, subprocess, sys, tempfile, threading, time, uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core import bench_fake_throughput, free_port, listening_port, sha  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def create_database(server):
    name = "bench_" + uuid.uuid4().hex[:12]
    subprocess.run(["psql", "-q", server, "-c", f"CREATE DATABASE {name}"], check=True)
    return server.rsplit("/", 1)[0] + "/" + name


def psql(url, sql):
    out = subprocess.run(["psql", "-Atq", url, "-c", sql], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def start_dispatcher(devci, tmp, db, port=0, name="dispatcher"):
    """At the default log level: the failover trials wait for its role in the log."""
    log = open(os.path.join(tmp, f"{name}.log"), "a")
    p = subprocess.Popen([devci, "dispatcher", "--port", str(port), "--db", db, "--artifacts", os.path.join(tmp, "artifacts")],
                         stdout=log, stderr=log)
    return p, listening_port(p, name)


class Follower:
    """A protocol-level runner, and a feeder, that go through `ports` in turn until one leads."""

    def __init__(self, ports):
        self.ports, self.i, self.assigns, self.stop = ports, 0, [], threading.Event()
        self.avoid = {}  # as devci runner does: a port that went silent is tried after the others for 10 s

    def connect(self):
        while not self.stop.is_set():
            n = len(self.ports)
            order = [(self.i + k) % n for k in range(n)]
            self.i = next((j for j in order if self.avoid.get(self.ports[j], 0) <= time.time()),
                          min(order, key=lambda j: self.avoid.get(self.ports[j], 0)))
            port = self.ports[self.i]
            self.i += 1
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                f = s.makefile("rb")
                hello = f.readline().decode()
                if hello.startswith("hello"):
                    s.settimeout(None)
                    return s, f, port
                s.close()
            except socket.timeout:
                self.avoid[port] = time.time() + 10  # accepted, never greeted: frozen
            except OSError:
                pass
            time.sleep(0.05)
        return None, None, None

    def run_runner(self):
        while not self.stop.is_set():
            s, f, port = self.connect()
            if not s:
                return
            s.sendall(b"register name=follower slots=1\nheartbeat\n")
            last, echoes = [time.time()], [False]
            alive = threading.Event()
            alive.set()

            def beat():
                while alive.is_set() and not self.stop.is_set():
                    try:
                        s.sendall(b"heartbeat\n")
                    except OSError:
                        return
                    if echoes[0] and time.time() - last[0] > 3:  # a lease of silence: frozen
                        self.avoid[port] = time.time() + 10
                        s.shutdown(socket.SHUT_RDWR)  # wakes the reading loop, which dials the next address
                        return
                    time.sleep(0.5)
            threading.Thread(target=beat, daemon=True).start()
            try:
                for raw in f:
                    last[0] = time.time()
                    line = raw.decode().rstrip("\n")
                    if line == "ok for=heartbeat":
                        echoes[0] = True
                    elif line.startswith("assign "):
                        self.assigns.append((time.time(), port))
                        kv = dict(x.split("=", 1) for x in line.split()[1:])
                        s.sendall(f"started job={kv['job']} attempt={kv['attempt']}\n"
                                  f"result job={kv['job']} attempt={kv['attempt']} status=success exit=0\n".encode())
            except (OSError, ValueError):
                pass
            alive.clear()
            s.close()

    def run_feeder(self):
        while not self.stop.is_set():
            s, f, _ = self.connect()
            if not s:
                return
            s.settimeout(2)
            try:
                while not self.stop.is_set():
                    s.sendall(f"dispatch repo=/bench commit={sha(0)} branch=main\n".encode())
                    if not f.readline().startswith(b"queued"):
                        break
                    time.sleep(0.05)
            except OSError:
                pass
            s.close()


def failover(devci, server, trials, how):
    with tempfile.TemporaryDirectory() as tmp:
        db = create_database(server)
        ports = [free_port(), free_port()]
        procs = [None, None]
        procs[0], _ = start_dispatcher(devci, tmp, db, ports[0], "a")
        wait_log(tmp, "a", "(protocol")
        procs[1], _ = start_dispatcher(devci, tmp, db, ports[1], "b")
        wait_log(tmp, "b", "standing by")
        follower = Follower(ports)
        for target in (follower.run_runner, follower.run_feeder):
            threading.Thread(target=target, daemon=True).start()
        leader, times = 0, []
        standing = {"a": 0, "b": 1}  # how many times each has said it stands by
        for trial in range(trials):
            deadline = time.time() + 30
            while time.time() < deadline and not any(t > time.time() - 0.5 and p == ports[leader] for t, p in follower.assigns[-5:]):
                time.sleep(0.05)
            victim = procs[leader]
            t0 = time.time()
            victim.send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
            other = 1 - leader
            deadline = t0 + 60
            while time.time() < deadline and not any(t > t0 and p == ports[other] for t, p in follower.assigns):
                time.sleep(0.01)
            first = min((t for t, p in follower.assigns if t > t0 and p == ports[other]), default=None)
            if first is None:
                for p in procs:
                    p.send_signal(signal.SIGCONT)
                    p.kill()
                raise SystemExit(f"trial {trial}: no job assigned by the new leader within 60 s; its log: "
                                 + open(os.path.join(tmp, ("a", "b")[other] + ".log")).read()[-2000:])
            times.append(first - t0)
            print(f"  {how} trial {trial + 1}: {times[-1]:.2f} s", flush=True)
            if how == "stop":
                victim.send_signal(signal.SIGCONT)  # woken without the lead, it stops by itself
            victim.wait(timeout=30)
            name = ("a", "b")[leader]
            procs[leader], _ = start_dispatcher(devci, tmp, db, ports[leader], name)
            standing[name] += 1
            wait_log(tmp, name, "standing by", count=standing[name])
            leader = other
        follower.stop.set()
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait()
        return times


FILL = """
INSERT INTO builds(id, repo, branch, commit_id, status, created_at, started_at, finished_at, title, author, notify_done)
SELECT b, '/srv/git/repo' || (b % 5) || '.git', CASE WHEN b % 3 = 0 THEN 'dev' ELSE 'main' END,
       md5(b::text) || substr(md5((b + 1)::text), 1, 8),
       CASE WHEN b % 10 = 0 THEN 'failed' WHEN b % 10 = 1 THEN 'error' ELSE 'success' END,
       1.6e9 + b * 10, 1.6e9 + b * 10 + 1, 1.6e9 + b * 10 + 30, 'Commit number ' || b, 'Bench', 1
FROM generate_series(1, {n}) b;
INSERT INTO jobs(id, build_id, name, status, attempt, runner, queued_at, started_at, finished_at, stage, exit_code)
SELECT b * 2 - 1 + k, b, (ARRAY['compile', 'unit'])[k + 1],
       CASE WHEN b % 10 = 0 THEN 'failed' WHEN b % 10 = 1 THEN 'error' ELSE 'success' END,
       1, 'r' || (b % 4), 1.6e9 + b * 10, 1.6e9 + b * 10 + 1, 1.6e9 + b * 10 + 30, (ARRAY['build', 'test'])[k + 1], 0
FROM generate_series(1, {n}) b, generate_series(0, 1) k;
INSERT INTO job_events(job_id, at, state, attempt, runner)
SELECT j, 1.6e9 + j * 5, s, 1, 'r' || (j % 4) FROM generate_series(1, {n} * 2) j,
       unnest(ARRAY['pending', 'queued', 'assigned', 'running', 'success']) s;
INSERT INTO log_lines(job_id, attempt, stream, ts, text)
SELECT j, 1, 'out', i, 'test output line ' || i || ' of job ' || j FROM generate_series(1, {n} * 2) j, generate_series(1, 2) i;
INSERT INTO branch_heads(repo, branch, commit_id, at)
SELECT '/srv/git/repo' || r || '.git', br, repeat('0', 40), 1.6e9 FROM generate_series(0, 4) r, unnest(ARRAY['main', 'dev']) br;
SELECT setval(pg_get_serial_sequence(t, 'id'), 10000000) FROM unnest(ARRAY['builds', 'jobs', 'job_events', 'log_lines']) t;
VACUUM ANALYZE;
"""


def dashboard(devci, server, builds):
    import urllib.request
    db = create_database(server)
    with tempfile.TemporaryDirectory() as tmp:
        p, _ = start_dispatcher(devci, tmp, db)  # creates the tables
        p.send_signal(signal.SIGTERM)
        p.wait()
        t0 = time.time()
        # Statement by statement (VACUUM cannot run in the one transaction `psql -c` makes of several).
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", db], input=FILL.format(n=builds), text=True, check=True, capture_output=True)
        print(f"filled {builds} builds in {time.time() - t0:.0f} s", flush=True)
        log = open(os.path.join(tmp, "reporter.log"), "w+")
        r = subprocess.Popen([devci, "reporter", "--port", "0", "--db", db, "--artifacts", tmp], stdout=log, stderr=log)
        port = None
        deadline = time.time() + 20
        while port is None and time.time() < deadline:
            m = re.search(r"listening on http://127.0.0.1:(\d+)", open(os.path.join(tmp, "reporter.log")).read())
            port = int(m.group(1)) if m else None
            time.sleep(0.05)

        def get(path):
            t = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}") as resp:
                resp.read()
            return (time.perf_counter() - t) * 1000

        results = {}
        for name, paths in [("dashboard /", ["/"]), ("filtered /?repo=…&status=failed", ["/?repo=/srv/git/repo0.git&status=failed"]),
                            ("filtered, matching nothing (a scan)", ["/?repo=/srv/git/repo3.git&status=failed"]),
                            ("deep page /?page=200", ["/?page=200"]),
                            ("build pages", [f"/builds/{b}" for b in range(builds - 1000, builds)])]:
            get(paths[0])
            samples = sorted(get(paths[i % len(paths)]) for i in range(200))
            results[name] = (statistics.median(samples), samples[int(len(samples) * 0.95)])
        r.send_signal(signal.SIGTERM)
        r.wait()
        return results


def wait_log(tmp, name, text, count=1, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if open(os.path.join(tmp, f"{name}.log")).read().count(text) >= count:
            return
        time.sleep(0.02)
    raise SystemExit(f"{name} never said '{text}' ({count}); see {tmp}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devci", default=os.path.join(ROOT, ".build/release/devci"))
    ap.add_argument("--jobs", type=int, default=4000)
    ap.add_argument("--runs", type=int, default=3, help="throughput runs per store; the median is reported")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--builds", type=int, default=1_000_000)
    ap.add_argument("--skip", nargs="*", default=[], choices=["throughput", "dashboard"], help="parts not to run")
    ap.add_argument("--failover", nargs="*", default=["kill", "stop"], choices=["kill", "stop"])
    ap.add_argument("--server", help="a PostgreSQL server's address (postgres://postgres@127.0.0.1:PORT/postgres)")
    args = ap.parse_args()
    folder = None
    server = args.server
    if not server:
        folder = tempfile.mkdtemp(prefix="devci-bench-pg-")
        os.chmod(folder, 0o755)
        server = subprocess.run([os.path.join(ROOT, "scripts/postgres.sh"), "start", folder + "/pg"], capture_output=True, text=True,
                                check=True).stdout.strip()
    try:
        version = psql(server, "SHOW server_version")
        print(f"PostgreSQL {version} at {server}; devci {args.devci}")

        if "throughput" not in args.skip:
            measure_throughput(args, server)
        if "dashboard" not in args.skip:
            for name, (median, p95) in dashboard(args.devci, server, args.builds).items():
                print(f"{name} at {args.builds} builds on PostgreSQL: median {median:.1f} ms, p95 {p95:.1f} ms", flush=True)
        for how in args.failover:
            times = failover(args.devci, server, args.trials, how)
            print(f"failover after {'kill -9' if how == 'kill' else 'SIGSTOP'} of the leader, to the first job the new leader assigns: "
                  f"median {statistics.median(times):.2f} s, max {max(times):.2f} s over {len(times)} trials", flush=True)
    finally:
        if folder:
            subprocess.run([os.path.join(ROOT, "scripts/postgres.sh"), "stop", folder + "/pg"])
            os.rmdir(folder)


def measure_throughput(args, server):
    sqlite = [bench_fake_throughput(args.devci, args.jobs)[0] for _ in range(args.runs)]
    pg = []
    for _ in range(args.runs):
        db = create_database(server)

        def check(jobs):
            count = int(psql(db, "SELECT COUNT(*) FROM jobs WHERE status='success'") or 0)
            if count < jobs:
                raise SystemExit(f"the runners heard {jobs} results accepted, the database holds {count}")

        pg.append(bench_fake_throughput(args.devci, args.jobs, db=db, check=check)[0])
    print(f"throughput, {args.jobs} trivial jobs, 4 protocol-level runners, median of {args.runs} runs: "
          f"SQLite {statistics.median(sqlite):.0f} jobs/s ({', '.join(f'{x:.0f}' for x in sqlite)}), "
          f"PostgreSQL {statistics.median(pg):.0f} jobs/s ({', '.join(f'{x:.0f}' for x in pg)})", flush=True)


if __name__ == "__main__":
    main()
