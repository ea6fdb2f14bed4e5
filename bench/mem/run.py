"""Memory per connection, per timer and per task: cxxloop beside asyncio, uvloop and rloop.

    python bench/mem/run.py [--quick] [--loops cxxloop,uvloop,...] [--markdown] [--json FILE]

Each measurement is a fresh server or worker process; its resident set size
(VmRSS from /proc/<pid>/status) is read before and after N objects exist, and
the difference per object is reported, with the ratio against uvloop and
asyncio (> 1: cxxloop uses less). RSS counts everything the process touched:
the interpreter's objects, the loop's C/C++/Rust structures and the kernel's
view of the heap, so the figures include what pymalloc and glibc keep around.

Workloads
    tcp_protocol   N idle TCP connections to bench/net/servers.py --style protocol,
                   each after one 1 KiB echo (so both read and write paths ran)
    tcp_streams    the same with --style streams (StreamReader/StreamWriter per
                   connection, a task blocked in reader.read())
    timers         N pending call_later(3600) handles in one loop; then all
                   cancelled
    tasks          N tasks, each awaiting a future of its own; then all done

"kept" is what stays resident after the objects are gone (connections closed,
timers cancelled, tasks done) and the loop has slept 1.2 s: memory a loop or
allocator holds for reuse beyond that (pymalloc arenas, glibc's heap) shows there.

The client of the connection workloads is this process (blocking sockets,
sequential connects); the server has a core to itself when --pin is on (the
default, as in bench/net).
"""

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS = os.path.join(HERE, os.pardir, "net", "servers.py")
ALL_LOOPS = ("cxxloop", "proactor", "uvloop", "rloop", "asyncio")
WORKLOADS = ("tcp_protocol", "tcp_streams", "timers", "tasks")


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def raise_fd_limit(n):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, n))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def loop_available(loop, python):
    mod = {"proactor": "cxxloop", "asyncio": "asyncio"}.get(loop, loop)
    code = f"import {mod}"
    if loop == "proactor":
        code += "; import sys; ok, _, why = cxxloop._core.uring_support(); sys.exit(0 if ok else 3)"
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def _pin(cpu):
    def pin():
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass
    return pin


# ---------------------------------------------------------------------------
# connection workloads: a bench/net server, this process as the client
# ---------------------------------------------------------------------------

def measure_connections(loop, style, n, python, pin):
    cpus = sorted(os.sched_getaffinity(0))
    preexec = _pin(cpus[-1]) if pin and len(cpus) > 1 else None
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # The server inherits the raised fd limit from this process.
    proc = subprocess.Popen([python, SERVERS, "--loop", loop, "--style", style],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=preexec, start_new_session=True)
    socks = []
    try:
        line = proc.stdout.readline().split()
        if not line or line[0] != "READY":
            raise RuntimeError(f"{loop}/{style}: server said {line!r}: {proc.stderr.read()[-500:]}")
        port = int(line[1])
        payload = b"x" * 1024

        def roundtrip(s, payload=payload):
            s.sendall(payload)
            got = 0
            while got < len(payload):
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("server closed")
                got += len(chunk)

        # Warm up: a few connections made, used and closed, so imports and
        # first-use allocations are in the baseline. Each makes several round
        # trips, small and large: the proactor's receives walk through its one
        # shared buffer ring (8 x 256 KiB consumed incrementally, or 64 x 16 KiB
        # whole buffers on kernels before 6.12), and all of it
        # must have been touched once before the baseline, or that fixed cost
        # would be spread over the connections measured.
        large = b"x" * 65536
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port)) as s:
                for _ in range(8):
                    roundtrip(s)
                    roundtrip(s, large)
        time.sleep(0.3)
        before = rss_bytes(proc.pid)
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            socks.append(s)
            roundtrip(s)
        time.sleep(0.3)
        during = rss_bytes(proc.pid)
        for s in socks:
            s.close()
        socks.clear()
        time.sleep(1.5)   # past any free-list trimming delay (see the worker)
        after = rss_bytes(proc.pid)
        return {"per_item": (during - before) / n, "kept": (after - before) / n}
    finally:
        for s in socks:
            s.close()
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except OSError:
            pass
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


# ---------------------------------------------------------------------------
# in-process workloads: a worker per measurement
# ---------------------------------------------------------------------------

WORKER = r"""
import asyncio, gc, json, sys
loop_name, workload, n = sys.argv[1], sys.argv[2], int(sys.argv[3])

def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

def make_loop():
    if loop_name == "asyncio":
        return asyncio.SelectorEventLoop()
    if loop_name == "proactor":
        import cxxloop
        return cxxloop.ProactorEventLoop()
    mod = __import__(loop_name)
    return mod.new_event_loop()

loop = make_loop()
def nothing():
    pass

async def settle():
    for _ in range(3):
        await asyncio.sleep(0)

async def idle():
    # A loop may keep freed objects for reuse for a while (cxxloop's handle free
    # lists give back what sat unused for a second once the loop sleeps): "kept" is
    # read after the loop has slept past that.
    await asyncio.sleep(1.2)
    await settle()

# Warm up the paths once, at a tenth of the size.
if workload == "timers":
    hs = [loop.call_later(3600, nothing) for _ in range(n // 10)]
    for h in hs:
        h.cancel()
    del hs
    loop.run_until_complete(settle())
    gc.collect()
    before = rss()
    hs = [loop.call_later(3600, nothing) for _ in range(n)]
    gc.collect()
    during = rss()
    for h in hs:
        h.cancel()
    del hs
    loop.run_until_complete(idle())
    gc.collect()
    after = rss()
elif workload == "tasks":
    async def waiter(f):
        await f

    async def run(k):
        futs = [loop.create_future() for _ in range(k)]
        tasks = [loop.create_task(waiter(f)) for f in futs]
        await asyncio.sleep(0)
        gc.collect()
        mid = rss()
        for f in futs:
            f.set_result(None)
        await asyncio.gather(*tasks)
        return mid

    loop.run_until_complete(run(n // 10))
    gc.collect()
    before = rss()
    during = loop.run_until_complete(run(n))
    loop.run_until_complete(idle())
    gc.collect()
    after = rss()
else:
    raise SystemExit("unknown workload")
loop.close()
print(json.dumps({"per_item": (during - before) / n, "kept": (after - before) / n}))
"""


def measure_worker(loop, workload, n, python, pin):
    cpus = sorted(os.sched_getaffinity(0))
    preexec = _pin(cpus[-1]) if pin and len(cpus) > 1 else None
    out = subprocess.run([python, "-c", WORKER, loop, workload, str(n)],
                         capture_output=True, text=True, preexec_fn=preexec, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{loop}/{workload}: {out.stderr[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------

def fmt_bytes(b):
    return f"{b:,.0f} B"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller N, 1 repetition")
    p.add_argument("--loops", default="cxxloop,uvloop,rloop,asyncio",
                   help="comma-separated subset of " + ",".join(ALL_LOOPS))
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--conns", type=int, default=None, help="connections (default 4000; --quick 1000)")
    p.add_argument("--items", type=int, default=None, help="timers and tasks (default 200000; --quick 50000)")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--no-pin", dest="pin", action="store_false")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)

    reps = args.reps or (1 if args.quick else 3)
    conns = args.conns or (1000 if args.quick else 4000)
    items = args.items or (50000 if args.quick else 200000)
    conns = min(conns, raise_fd_limit(2 * conns + 200) // 2 - 100)
    loops = [l for l in args.loops.split(",") if l]
    for l in loops:
        if l not in ALL_LOOPS:
            p.error(f"unknown loop {l!r}")
    workloads = [w for w in args.workloads.split(",") if w]
    usable = {l: loop_available(l, args.python) for l in loops}

    results = {w: {l: [] for l in loops} for w in workloads}
    for rep in range(reps):
        for w in workloads:
            order = loops[rep % len(loops):] + loops[:rep % len(loops)]
            for l in order:
                if not usable[l]:
                    continue
                print(f"rep {rep + 1}/{reps} {w} {l}", file=sys.stderr, flush=True)
                try:
                    if w.startswith("tcp_"):
                        r = measure_connections(l, w[4:], conns, args.python, args.pin)
                    else:
                        r = measure_worker(l, w, items, args.python, args.pin)
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    print(f"  {l}/{w} failed: {exc}", file=sys.stderr)
                    continue
                results[w][l].append(r)

    def med(w, l, key):
        vals = [r[key] for r in results[w][l]]
        return statistics.median(vals) if vals else None

    lines = []
    head = f"cxxloop memory benchmark: python {platform.python_version()}, " \
           f"{conns} connections, {items} timers/tasks, {reps} rep(s), RSS per object (median)"
    lines.append(head)
    for w in workloads:
        lines.append("")
        if args.markdown:
            lines.append(f"**{w}**\n")
            lines.append("| loop | per object | kept after close/cancel | vs uvloop | vs asyncio |")
            lines.append("|---|---|---|---|---|")
        else:
            lines.append(f"{w}:")
            lines.append(f"  {'loop':10} {'per object':>14} {'kept':>12} {'vs uvloop':>10} {'vs asyncio':>11}")
        base_uv = med(w, "uvloop", "per_item") if "uvloop" in loops else None
        base_as = med(w, "asyncio", "per_item") if "asyncio" in loops else None
        for l in loops:
            per = med(w, l, "per_item")
            kept = med(w, l, "kept")
            if per is None:
                cells = ["unavailable", "-", "-", "-"]
            else:
                ru = f"{base_uv / per:.2f}x" if base_uv and per > 0 else "-"
                ra = f"{base_as / per:.2f}x" if base_as and per > 0 else "-"
                cells = [fmt_bytes(per), fmt_bytes(kept), ru, ra]
            if args.markdown:
                lines.append(f"| {l} | " + " | ".join(cells) + " |")
            else:
                lines.append(f"  {l:10} {cells[0]:>14} {cells[1]:>12} {cells[2]:>10} {cells[3]:>11}")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": sys.version, "conns": conns, "items": items,
                       "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
