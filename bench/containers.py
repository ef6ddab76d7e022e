#!/usr/bin/env python3
"""Issue 11 benchmark: what running a trivial job in a container adds over running it on the host.

Usage: bench/containers.py [--devci .build/release/devci] [--jobs 50] [--docker-host unix:///path] [--image NAME]

`devci run --local` runs a one-job pipeline (`true`) --jobs times on the host and --jobs times with `image:`,
through the same executors a runner uses, timed from outside; prints the median and p95 of each and the
added median (process start-up is in both, so it cancels out). Target: under 300 ms.
The engine is DOCKER_HOST (or --docker-host); without an --image the busybox image is made with
scripts/make-busybox-image.sh.
"""
import argparse, os, statistics, subprocess, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def durations(devci, jobs, image, engine, tmp, label):
    """Wall time of `devci run --local` on a one-job pipeline, --jobs times: process start-up is the same on both
    sides, so the difference of the medians is what the container adds."""
    work = os.path.join(tmp, label)
    os.makedirs(work)
    with open(os.path.join(work, ".devci.yml"), "w") as f:
        f.write("jobs:\n  trivial:\n    run: \"true\"\n" + (f"    image: {image}\n" if image else ""))
    reports = os.path.join(tmp, "reports-" + label)
    out = []
    for _ in range(jobs):
        t0 = time.perf_counter()
        r = subprocess.run([devci, "run", "--local", os.path.join(work, ".devci.yml"), "--docker-host", engine, "--reports", reports],
                           capture_output=True, text=True)
        out.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise SystemExit(f"{label} run failed:\n{r.stdout}\n{r.stderr}")
    return out


def summary(xs):
    xs = sorted(xs)
    return statistics.median(xs) * 1000, xs[int(len(xs) * 0.95) - 1] * 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devci", default=os.path.join(ROOT, ".build/release/devci"))
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--docker-host", default=os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))
    ap.add_argument("--image")
    a = ap.parse_args()
    env = dict(os.environ, DOCKER_HOST=a.docker_host)
    image = a.image
    if not image:
        image = "devci-bench/busybox:1"
        subprocess.run([os.path.join(ROOT, "scripts/make-busybox-image.sh"), image], env=env, check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        host = durations(a.devci, a.jobs, None, a.docker_host, tmp, "host")
        boxed = durations(a.devci, a.jobs, image, a.docker_host, tmp, "container")
    hm, hp = summary(host)
    cm, cp = summary(boxed)
    print(f"{a.jobs} runs of a one-job pipeline (true), devci run --local, wall time per run")
    print(f"  host:      median {hm:7.1f} ms   p95 {hp:7.1f} ms")
    print(f"  container: median {cm:7.1f} ms   p95 {cp:7.1f} ms   ({image} on {a.docker_host})")
    print(f"  added by the container: {cm - hm:.1f} ms at the median (target: under 300 ms)")


if __name__ == "__main__":
    main()
