"""Process benchmarks: subprocesses, pipes and signals on cxxloop, stock asyncio,
uvloop and rloop, side by side in one run.

    python bench/proc/run.py --quick            # ~30 s
    python bench/proc/run.py                    # full run (~1.5 min)
    python bench/proc/run.py --markdown         # Markdown tables + machine details
    python bench/proc/run.py --json out.json    # every sample
    python bench/proc/run.py --smoke            # tiny sizes, 1 repetition: does it run?

Workloads (see bench/README.md):
  spawn_true    asyncio.create_subprocess_exec("true") then await wait(), one at a
                time; processes/s.
  pipe_cat      100 MiB through `cat`: one task writes 256 KiB chunks to stdin (write +
                drain), another reads stdout until EOF; MiB/s, and the loop process's
                CPU time per transfer (cat's excluded), the medians of three transfers
                in one worker (one takes only ~0.15 s). On a shared 2-core machine
                MiB/s depends on how the two processes are scheduled; the CPU time is
                the steadier measure of the loop's own cost.
  signal_rtt    os.kill(os.getpid(), SIGUSR1) from a coroutine, then await the future
                the loop's handler resolves; microseconds from the kill to the handler
                running, median of the samples.

Every measurement runs in a fresh worker process (this script with --worker), so
no loop's process-wide state (signal dispositions, SIGCHLD handlers, child reapers)
can affect another. Each repetition measures every loop once, rotating which goes
first; reported are medians over the repetitions, and ratios against uvloop as the
median of per-repetition ratios (> 1 = cxxloop better).
"""

import argparse
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

LOOPS = ["cxxloop", "uvloop", "rloop", "asyncio"]
MIB = 1024 * 1024


class Workload:
    """One kind of measurement (a worker run) and the sizes it is run at."""

    def __init__(self, name, full, quick, smoke):
        self.name, self.full, self.quick, self.smoke = name, full, quick, smoke


class Metric:
    """One row of the table: a number a workload's worker reports."""

    def __init__(self, workload, key, title, unit, higher_is_better):
        self.workload, self.key, self.title, self.unit = workload, key, title, unit
        self.higher_is_better = higher_is_better


WORKLOADS = [Workload("spawn_true", 300, 100, 5), Workload("pipe_cat", 100, 100, 2),
             Workload("signal_rtt", 5000, 1000, 20)]
METRICS = [
    Metric("spawn_true", "rate", "spawn+wait `true`", "processes/s", True),
    Metric("pipe_cat", "rate", "100 MiB through `cat`", "MiB/s", True),
    Metric("pipe_cat", "cpu", "100 MiB through `cat`: loop process CPU", "ms", False),
    Metric("signal_rtt", "us", "signal delivery (kill self -> handler)", "us", False),
]


# ---------------------------------------------------------------------------
# The worker: one loop, one workload, one measurement; prints a JSON line.
# ---------------------------------------------------------------------------

def make_loop_factory(name):
    import asyncio
    if name == "asyncio":
        return asyncio.SelectorEventLoop
    if name == "cxxloop":
        import cxxloop
        return cxxloop.new_event_loop
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    if name == "rloop":
        import rloop
        return rloop.new_event_loop
    raise ValueError(name)


async def spawn_true(n):
    import asyncio
    for _ in range(10):  # warm-up
        await (await asyncio.create_subprocess_exec("true")).wait()
    t0 = time.perf_counter()
    for _ in range(n):
        proc = await asyncio.create_subprocess_exec("true")
        if await proc.wait() != 0:
            raise RuntimeError("true failed")
    return {"rate": n / (time.perf_counter() - t0)}


async def pipe_cat(mib, transfers=3):
    """The median of `transfers` transfers (one takes only ~0.15 s): MiB/s, and the
    CPU time of this process (not cat's) per transfer, in ms."""
    await _pipe_cat_once(min(mib, 16))  # warm-up
    results = [await _pipe_cat_once(mib) for _ in range(transfers)]
    return {"rate": statistics.median(r[0] for r in results),
            "cpu": statistics.median(r[1] for r in results)}


async def _pipe_cat_once(mib):
    import asyncio
    chunk = os.urandom(256 * 1024)
    total = mib * MIB
    proc = await asyncio.create_subprocess_exec(
        "cat", stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    async def write():
        for _ in range(total // len(chunk)):
            proc.stdin.write(chunk)
            await proc.stdin.drain()
        proc.stdin.close()

    async def read():
        got = 0
        while True:
            data = await proc.stdout.read(MIB)
            if not data:
                return got
            got += len(data)

    t0, cpu0 = time.perf_counter(), time.process_time()
    _, got = await asyncio.gather(write(), read())
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if got != total or await proc.wait() != 0:
        raise RuntimeError(f"cat returned {got} of {total} bytes")
    return mib / elapsed, cpu * 1000


async def signal_rtt(n):
    import asyncio
    loop = asyncio.get_running_loop()
    state = {}

    def handler():
        state["t1"] = time.perf_counter_ns()
        state["fut"].set_result(None)

    loop.add_signal_handler(signal.SIGUSR1, handler)
    pid = os.getpid()
    samples = []
    try:
        for i in range(n + 50):
            state["fut"] = loop.create_future()
            t0 = time.perf_counter_ns()
            os.kill(pid, signal.SIGUSR1)
            await state["fut"]
            if i >= 50:  # the first 50 are warm-up
                samples.append((state["t1"] - t0) / 1000)
    finally:
        try:
            loop.remove_signal_handler(signal.SIGUSR1)
        except AttributeError:  # rloop 0.5.0: '_is_main_thread' missing; the worker exits
            pass
    return {"us": statistics.median(samples)}


def worker(loop_name, workload, size):
    import asyncio
    import gc
    factory = make_loop_factory(loop_name)
    fn = {"spawn_true": spawn_true, "pipe_cat": pipe_cat, "signal_rtt": signal_rtt}[workload]
    loop = factory()
    try:
        gc.collect()
        gc.disable()
        values = loop.run_until_complete(asyncio.wait_for(fn(size), 120))
    finally:
        gc.enable()
        loop.close()
    print(json.dumps(values))


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------

def available(loop_name):
    """None if the loop imports and makes a loop in a fresh process, else why not."""
    code = ("import asyncio, sys\n"
            "sys.path.insert(0, {!r})\n"
            "from run import make_loop_factory\n"
            "make_loop_factory({!r})().close()\n").format(os.path.dirname(__file__), loop_name)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    if out.returncode != 0:
        return (out.stderr.strip().splitlines() or ["import failed"])[-1]
    return None


def measure(loop_name, wl, size, timeout):
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", loop_name,
                          wl.name, str(size)], capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return None, tail
    return json.loads(out.stdout.strip().splitlines()[-1]), None


def run_all(args):
    loops, skipped = [], {}
    for name in args.loops:
        why = available(name)
        if why:
            skipped[name] = why
        else:
            loops.append(name)
    results = {"machine": machine_info(), "versions": versions(), "skipped": skipped,
               "reps": args.reps, "quick": args.quick, "workloads": {}}
    for wl in WORKLOADS:
        if args.workloads and wl.name not in args.workloads:
            continue
        size = wl.smoke if args.smoke else wl.quick if args.quick else wl.full
        samples = {name: [] for name in loops}
        errors = {}
        for rep in range(args.reps):
            order = loops[rep % len(loops):] + loops[:rep % len(loops)]
            for name in order:
                if name in errors:
                    continue
                values, err = measure(name, wl, size, args.timeout)
                if err:
                    errors[name] = err
                else:
                    samples[name].append(values)
                if not args.q:
                    shown = err and "error" or " ".join(f"{k}={v:.1f}" for k, v in values.items())
                    print(f"  {wl.name} rep {rep + 1}/{args.reps} {name}: {shown}",
                          file=sys.stderr)
        results["workloads"][wl.name] = {"size": size, "samples": samples, "errors": errors}
    return results


def ratio(metric, samples, a, b):
    """How many times better a is than b: median of per-repetition ratios."""
    pairs = list(zip(_values(metric, samples, a), _values(metric, samples, b)))
    if not pairs:
        return None
    if metric.higher_is_better:
        return statistics.median(x / y for x, y in pairs)
    return statistics.median(y / x for x, y in pairs)


def _values(metric, samples, loop_name):
    return [rep[metric.key] for rep in samples.get(loop_name, [])]


def render(results, markdown=False):
    out = []
    m, v = results["machine"], results["versions"]
    out.append(f"Process benchmarks, {m['date']}: {m['cpu']} ({m['cpus']} logical cores), "
               f"{m['kernel']}, Python {v.get('python')}; "
               + ", ".join(f"{k} {v.get(k)}" for k in ("cxxloop", "uvloop", "rloop") if v.get(k))
               + f"; {results['reps']} repetitions{' (--quick)' if results['quick'] else ''}, "
               "each measurement in a fresh process.")
    for name, why in results["skipped"].items():
        out.append(f"skipped {name}: {why}")
    loops = [name for name in LOOPS if name not in results["skipped"]]
    header = ["Workload", "unit"] + loops + ["cxxloop vs uvloop", "cxxloop vs asyncio",
                                              "target"]
    rows = []
    for metric in METRICS:
        data = results["workloads"].get(metric.workload)
        if data is None:
            continue
        row = [metric.title, metric.unit]
        for name in loops:
            s = _values(metric, data["samples"], name)
            if name in data["errors"]:
                row.append("error: " + data["errors"][name][:40])
            elif s:
                row.append(f"{statistics.median(s):.1f} ({min(s):.1f}..{max(s):.1f})")
            else:
                row.append("-")
        vs_uv = ratio(metric, data["samples"], "cxxloop", "uvloop")
        vs_aio = ratio(metric, data["samples"], "cxxloop", "asyncio")
        row.append("-" if vs_uv is None else f"{vs_uv:.2f}x")
        row.append("-" if vs_aio is None else f"{vs_aio:.2f}x")
        row.append("-" if vs_uv is None else (">=1.0x met" if vs_uv >= 1.0 else
                                               ">=1.0x NOT met"))
        rows.append(row)
    if markdown:
        out.append("")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---"] + ["---"] + ["---:"] * (len(header) - 2)) + "|")
        out.extend("| " + " | ".join(r) + " |" for r in rows)
    else:
        widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
        out.append("")
        for r in [header] + rows:
            out.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    out.append("")
    out.append("Medians (min..max) over the repetitions. Ratios are the median of "
               "per-repetition ratios; > 1 means cxxloop is better (more processes/s or "
               "MiB/s, fewer us).")
    return "\n".join(out)


def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu, "cpus": os.cpu_count(),
            "kernel": f"{platform.system()} {platform.release()}"}


def versions():
    import importlib.metadata as md
    v = {"python": platform.python_version()}
    for dist in ("cxxloop", "uvloop", "rloop"):
        try:
            v[dist] = md.version(dist)
        except Exception:
            v[dist] = None
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 repetitions, smaller counts")
    ap.add_argument("--smoke", action="store_true",
                    help="1 repetition at tiny sizes (a check that it runs, not a measurement)")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--loops", default=",".join(LOOPS))
    ap.add_argument("--workloads", default="")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", metavar="FILE")
    ap.add_argument("--render", metavar="FILE", help="print a saved --json run")
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("-q", action="store_true", help="no progress on stderr")
    ap.add_argument("--worker", nargs=3, metavar=("LOOP", "WORKLOAD", "SIZE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return
    if args.render:
        with open(args.render) as f:
            print(render(json.load(f), args.markdown))
        return
    args.loops = [x for x in args.loops.split(",") if x]
    args.workloads = [x for x in args.workloads.split(",") if x]
    if args.reps is None:
        args.reps = 1 if args.smoke else 3 if args.quick else 7
    results = run_all(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(render(results, args.markdown))


if __name__ == "__main__":
    main()
