#!/usr/bin/env python3
"""Issue 10 benchmarks: queues and the webhook, against a release build.

Usage: bench/triggers.py [--devci .build/release/devci] [--jobs 2000] [--parked 10000] [--deliveries 300]

1. Queue isolation: jobs/s through one dispatcher and 4 protocol-level runners on the `default` queue, alone
   and with --parked jobs waiting on a queue no runner serves (they must not slow the others down).
2. Webhook: signed GitHub push deliveries (one commit each) to a task, one at a time: the time from the POST to
   the answer (the run is stored by then), median and p95, and deliveries/s.
"""
import argparse, hashlib, hmac, http.client, json, os, re, signal, socket, statistics, subprocess, sys, tempfile, threading, time, uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core import Peer, fake_runner, wait_db, sha, ROOT  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(devci, tmp, extra=(), http=False):
    # --log-level warning hides the "listening" lines: the ports are chosen here.
    port, http_port = free_port(), (free_port() if http else None)
    log = open(os.path.join(tmp, "dispatcher.log"), "w+")
    args = [devci, "dispatcher", "--port", str(port), "--db", os.path.join(tmp, "devci.sqlite"), "--log-level", "warning", *extra]
    if http:
        args += ["--http-port", str(http_port)]
    p = subprocess.Popen(args, stdout=log, stderr=log)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", http_port or port)).close()
            socket.create_connection(("127.0.0.1", port)).close()
            return p, port, http_port
        except OSError:
            if p.poll() is not None:
                raise SystemExit("dispatcher exited:\n" + open(log.name).read())
            time.sleep(0.05)
    raise SystemExit("dispatcher did not start:\n" + open(log.name).read())


def throughput(devci, jobs, parked):
    with tempfile.TemporaryDirectory() as tmp:
        p, port, _ = start(devci, tmp)
        client = Peer(port)
        for i in range(parked):
            client.send("add_job command=true queue=gpu")
        for i in range(parked):
            client.readline()
        stop, counts = threading.Event(), {}
        for i in range(4):
            threading.Thread(target=fake_runner, args=(port, f"fake{i}", stop, counts), daemon=True).start()
        time.sleep(0.5)
        t0 = time.time()
        for i in range(jobs):
            client.send(f"dispatch repo=/bench commit={sha(i)} branch=main")
        for i in range(jobs):
            client.readline()
        wait_db(os.path.join(tmp, "devci.sqlite"), "SELECT COUNT(*) FROM jobs WHERE status='success'", lambda v: v >= jobs)
        dt = time.time() - t0
        client.send("status")
        status = client.readline()
        stop.set()
        p.send_signal(signal.SIGTERM)
        p.wait()
        return jobs / dt, status


def webhook(devci, deliveries):
    with tempfile.TemporaryDirectory() as tmp:
        conf = os.path.join(tmp, "conf")
        os.makedirs(conf)
        with open(os.path.join(conf, "t.yml"), "w") as f:
            f.write("tasks:\n  ci:\n    command: 'true'\n    triggered_by: [{repository: 'https://github.com/o/r.git'}]\n")
        secret = b"bench secret"
        p, port, http_port = start(devci, tmp, ["--config", conf, "--webhook-secret", secret.decode()], http=True)
        conn = http.client.HTTPConnection("127.0.0.1", http_port)
        samples = []
        t0 = time.time()
        for i in range(deliveries):
            commit = sha(i)
            body = json.dumps({"ref": "refs/heads/main", "commits": [{"id": commit, "message": f"change {i}"}],
                               "head_commit": {"id": commit, "message": f"change {i}"},
                               "repository": {"clone_url": "https://github.com/o/r.git", "ssh_url": "git@github.com:o/r.git"}}).encode()
            sig = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
            s = time.perf_counter()
            conn.request("POST", "/hooks/github", body, {"Content-Type": "application/json", "X-GitHub-Event": "push",
                                                         "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": sig})
            r = conn.getresponse()
            r.read()
            samples.append((time.perf_counter() - s) * 1000)
            if r.status != 200:
                raise SystemExit(f"delivery {i}: {r.status}")
        dt = time.time() - t0
        p.send_signal(signal.SIGTERM)
        p.wait()
        samples.sort()
        return deliveries / dt, statistics.median(samples), samples[int(len(samples) * 0.95)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devci", default=os.path.join(ROOT, ".build/release/devci"))
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--parked", type=int, default=10000)
    ap.add_argument("--deliveries", type=int, default=300)
    a = ap.parse_args()
    if not os.path.exists(a.devci):
        raise SystemExit(f"no binary at {a.devci}: swift build -c release (or pass --devci)")
    alone, _ = throughput(a.devci, a.jobs, 0)
    print(f"default queue alone:                         {alone:7.0f} jobs/s")
    beside, status = throughput(a.devci, a.jobs, a.parked)
    print(f"beside {a.parked} jobs parked on queue 'gpu': {beside:7.0f} jobs/s   ({status})")
    rate, p50, p95 = webhook(a.devci, a.deliveries)
    print(f"webhook push → run stored and answered:      median {p50:.1f} ms, p95 {p95:.1f} ms, {rate:.0f} deliveries/s")


if __name__ == "__main__":
    main()
