#!/usr/bin/env python3
"""A herd of protocol-level runners connecting to one dispatcher at once, as a whole fleet does after a
dispatcher restart: how long until every one is registered, and how many are stuck.

Each runner dials, reads `hello`, sends `register` and its first `heartbeat`, and waits for `registered`; a
runner refused (`busy`), closed on, or not answered within its own deadline dials again with backoff, as
`devci runner` does. Exits 0 when all registered before --timeout, 1 otherwise (the integration test uses
it with 3,000; the benchmark with 10,000).

Usage: bench/herd.py --port PORT [--host 127.0.0.1] [--runners 10000] [--timeout 60] [--token T]
   or: bench/herd.py --devci .build/release/devci --runners 10000   (starts its own dispatcher)
"""
import argparse, asyncio, os, random, resource, subprocess, sys, tempfile, time


async def runner(i, args, done, stats):
    backoff = 0.1
    while True:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(args.host, args.port), timeout=10)
            try:
                hello = await asyncio.wait_for(reader.readline(), timeout=10)
                if not hello.startswith(b"hello"):
                    raise ConnectionError(hello.decode(errors="replace").strip() or "closed")
                if args.token:
                    writer.write(f"auth token={args.token}\n".encode())
                writer.write(f"register name=herd-{i} slots=1\nheartbeat\n".encode())
                await writer.drain()
                while True:
                    line = await asyncio.wait_for(reader.readline(), timeout=10)
                    if not line:
                        raise ConnectionError("closed")
                    if line.startswith(b"registered"):
                        done.append(time.monotonic())
                        # Stay connected and heartbeating, like a real runner, until the herd is in.
                        while not stats["finished"]:
                            writer.write(b"heartbeat\n")
                            await writer.drain()
                            await asyncio.sleep(1)
                        return
                    if line.startswith(b"error"):
                        raise ConnectionError(line.decode().strip())
            finally:
                writer.close()
        except (OSError, ConnectionError, asyncio.TimeoutError) as e:
            stats["retries"] += 1
            stats["last_error"] = str(e) or type(e).__name__
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, 5)


async def herd(args):
    done, stats = [], {"retries": 0, "last_error": "", "finished": False}
    start = time.monotonic()
    tasks = [asyncio.create_task(runner(i, args, done, stats)) for i in range(args.runners)]
    deadline = start + args.timeout
    while len(done) < args.runners and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    elapsed = (done[-1] - start) if len(done) == args.runners else time.monotonic() - start
    stats["finished"] = True
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(f"registered {len(done)} of {args.runners} in {elapsed:.2f} s "
          f"(median {sorted(d - start for d in done)[len(done) // 2] if done else 0:.2f} s; "
          f"{stats['retries']} redial(s){', last: ' + stats['last_error'] if stats['retries'] else ''})")
    return len(done) == args.runners


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    ap.add_argument("--devci", help="start this devci binary's dispatcher instead of using --port")
    ap.add_argument("--runners", type=int, default=10000)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--token")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.runners + 100:
        sys.exit(f"the open-file limit ({hard}) is too low for {args.runners} connections")
    dispatcher = None
    if args.devci:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from core import start_dispatcher
        tmp = tempfile.mkdtemp(prefix="devci-herd-")
        dispatcher, args.port = start_dispatcher(args.devci, tmp)
    try:
        ok = asyncio.run(herd(args))
    finally:
        if dispatcher:
            dispatcher.terminate()
            dispatcher.wait()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
