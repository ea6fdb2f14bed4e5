"""Side-by-side micro-benchmarks: cxxloop against stock asyncio, uvloop and rloop.

Run it with::

    python -m cxxloop.bench            # full run (a few minutes on a small machine)
    python -m cxxloop.bench --quick    # short demonstration (well under a minute)
    python -m cxxloop.bench --markdown # a table for the README, with machine details
    python -m cxxloop.bench --json results.json

Every loop that imports is measured in the same process, interleaved: each
repetition runs every loop once (the order rotates between repetitions), each
measurement in a fresh loop, after a warm-up run, with ``gc.collect()`` before
and the cyclic GC paused while the clock runs (``--keep-gc`` leaves it on).
The tables report the median over the repetitions, the spread (min, max and
the inter-quartile range), and speedups against uvloop and stock asyncio
(speedup = other loop's median time / this loop's median time; above 1 is
faster).  Loops that fail to import (uvloop and rloop are optional) are
skipped with a note.

This module uses only the standard library and the loops themselves, so it
can also be run from a checkout as a plain file (``python
python/cxxloop/bench.py``); ``bench/`` in the repository holds the wrappers
that run it on every installed Python.
"""

import argparse
import asyncio
import datetime
import faulthandler
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time

perf_counter = time.perf_counter

__all__ = ["WORKLOADS", "LOOPS", "TARGETS", "main", "run_benchmarks"]


# ---------------------------------------------------------------------------
# Workloads.  Each takes a fresh, not yet running loop and a size ``n`` and
# returns ``(seconds, ops)``.  Only the part between the perf_counter() calls
# is timed; each checks its own result so a broken loop reports an error
# instead of a flattering number.
# ---------------------------------------------------------------------------

class WorkloadError(AssertionError):
    pass


def _check(cond, what):
    if not cond:
        raise WorkloadError(what)


def call_soon_chain(loop, n):
    """Each callback schedules the next one: n callbacks run one after another."""
    remaining = n
    call_soon = loop.call_soon
    stop = loop.stop

    def cb():
        nonlocal remaining
        remaining -= 1
        if remaining:
            call_soon(cb)
        else:
            stop()

    call_soon(cb)
    t0 = perf_counter()
    loop.run_forever()
    t1 = perf_counter()
    _check(remaining == 0, "chain stopped with %d callbacks left" % remaining)
    return t1 - t0, n


def call_soon_bulk(loop, n):
    """Schedule n callbacks, then run them all (scheduling is timed too)."""
    count = 0

    def cb():
        nonlocal count
        count += 1

    call_soon = loop.call_soon
    t0 = perf_counter()
    for _ in range(n):
        call_soon(cb)
    call_soon(loop.stop)
    loop.run_forever()
    t1 = perf_counter()
    _check(count == n, "ran %d of %d callbacks" % (count, n))
    return t1 - t0, n


def call_soon_threadsafe(loop, n):
    """A producer thread pushes n callbacks; timed until the last one ran."""
    count = 0

    def cb():
        nonlocal count
        count += 1
        if count == n:
            loop.stop()

    def producer():
        cst = loop.call_soon_threadsafe
        for _ in range(n):
            cst(cb)

    thread = threading.Thread(target=producer, daemon=True)
    loop.call_soon(thread.start)
    t0 = perf_counter()
    loop.run_forever()
    t1 = perf_counter()
    thread.join()
    _check(count == n, "ran %d of %d callbacks" % (count, n))
    return t1 - t0, n


def _timer_delays(n, base, spread):
    # Deterministic, well-mixed delays in [base, base + spread).
    step = spread / 1000.0
    return [base + ((i * 7919) % 1000) * step for i in range(n)]


def timers_fire_cancel(loop, n):
    """Schedule n timers (1-2 ms delays), cancel every other one, run until
    the rest fired.  Timed: scheduling, cancelling and running; the idle wait
    until the last deadline passes is excluded (slept off untimed), so the
    number is CPU cost per timer, not the delays.  Delays are >= 1 ms because
    uvloop turns sub-millisecond delays into call_soon.
    """
    delays = _timer_delays(n, 0.001, 0.001)
    target = n // 2           # odd indices fire, even ones are cancelled
    fired = 0
    wrong = 0

    def cb():
        nonlocal fired
        fired += 1
        if fired == target:
            loop.stop()

    def cancelled_cb():
        nonlocal wrong
        wrong += 1

    call_later = loop.call_later
    t0 = perf_counter()
    handles = [call_later(d, cancelled_cb if i & 1 == 0 else cb)
               for i, d in enumerate(delays)]
    for h in handles[::2]:
        h.cancel()
    t1 = perf_counter()
    time.sleep(0.0025)        # every deadline is now in the past
    t2 = perf_counter()
    if target:
        loop.run_forever()
    t3 = perf_counter()
    _check(wrong == 0, "%d cancelled timers fired" % wrong)
    _check(fired == target, "fired %d of %d timers" % (fired, target))
    return (t1 - t0) + (t3 - t2), n


def timers_cancel_pileup(loop, n):
    """call_later(d, cb).cancel() n times in one go (delays 1-2 s) before the
    loop runs, then one loop pass so it can drop them: n cancelled timers
    pile up, the worst case for lazy removal."""
    delays = _timer_delays(n, 1.0, 1.0)
    fired = 0

    def cb():
        nonlocal fired
        fired += 1

    call_later = loop.call_later
    t0 = perf_counter()
    for d in delays:
        call_later(d, cb).cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    t1 = perf_counter()
    _check(fired == 0, "%d cancelled timers fired" % fired)
    return t1 - t0, n


SCHEDULE_CANCEL_BATCH = 1000


def timers_schedule_cancel(loop, n):
    """call_later(d, cb).cancel() n times (delays 1-2 s), 1000 per loop
    iteration (a callback does a batch and schedules the next), the way a
    server arms and disarms timeouts; the loop gets to drop cancelled timers
    between batches as it would in real use."""
    delays = _timer_delays(n, 1.0, 1.0)
    batch = SCHEDULE_CANCEL_BATCH
    fired = 0
    pos = 0

    def cb():
        nonlocal fired
        fired += 1

    call_later = loop.call_later
    call_soon = loop.call_soon

    def step():
        nonlocal pos
        end = min(pos + batch, n)
        for i in range(pos, end):
            call_later(delays[i], cb).cancel()
        pos = end
        call_soon(step if pos < n else loop.stop)

    call_soon(step)
    t0 = perf_counter()
    loop.run_forever()
    t1 = perf_counter()
    _check(pos == n, "stopped after %d of %d timers" % (pos, n))
    _check(fired == 0, "%d cancelled timers fired" % fired)
    return t1 - t0, n


TASKS_M = 100


def tasks_sleep0(loop, n):
    """M=100 tasks each doing K `await asyncio.sleep(0)`; ops = M*K."""
    m = TASKS_M
    k = max(1, n // m)
    sleep = asyncio.sleep
    done = 0

    async def worker():
        nonlocal done
        for _ in range(k):
            await sleep(0)
        done += 1

    async def main():
        tasks = [loop.create_task(worker()) for _ in range(m)]
        for t in tasks:
            await t

    coro = main()
    t0 = perf_counter()
    loop.run_until_complete(coro)
    t1 = perf_counter()
    _check(done == m, "%d of %d tasks finished" % (done, m))
    return t1 - t0, m * k


def future_pingpong(loop, n):
    """Two coroutines alternate through futures; ops = round trips."""
    create_future = loop.create_future
    state = [create_future(), None]      # [to_pong, to_ping]
    trips = 0

    async def ponger():
        for _ in range(n):
            await state[0]
            state[0] = create_future()
            state[1].set_result(None)

    async def pinger():
        nonlocal trips
        for _ in range(n):
            state[1] = create_future()
            state[0].set_result(None)
            await state[1]
            trips += 1

    async def main():
        pong = loop.create_task(ponger())
        await pinger()
        await pong

    coro = main()
    t0 = perf_counter()
    loop.run_until_complete(coro)
    t1 = perf_counter()
    _check(trips == n, "%d of %d round trips" % (trips, n))
    return t1 - t0, n


def tcp_echo(loop, n):
    """A real workload: an echo Protocol server and a streams client on the same loop
    exchange n 1 KiB messages over loopback TCP, one at a time; ops = round trips."""
    payload = b"x" * 1024
    trips = 0

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def main():
        nonlocal trips
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            t0 = perf_counter()
            for _ in range(n):
                writer.write(payload)
                await reader.readexactly(len(payload))
                trips += 1
            t1 = perf_counter()
        finally:
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()
        return t1 - t0

    elapsed = loop.run_until_complete(main())
    _check(trips == n, "%d of %d round trips" % (trips, n))
    return elapsed, n


class Workload:
    def __init__(self, name, title, func, n, target=None):
        self.name = name        # short id for --workloads and JSON
        self.title = title      # human label
        self.func = func
        self.n = n              # size of a full-run measurement
        self.target = target    # key into TARGETS, or None


# Sizes: a full-run measurement takes roughly 0.05-0.2 s on stock asyncio.
WORKLOADS = [
    Workload("call_soon_chain", "call_soon chain", call_soon_chain, 300_000, "call_soon"),
    Workload("call_soon_bulk", "call_soon bulk", call_soon_bulk, 300_000, "call_soon"),
    Workload("call_soon_threadsafe", "call_soon_threadsafe (thread)", call_soon_threadsafe, 100_000),
    Workload("timers_fire_cancel", "timers: fire half, cancel half", timers_fire_cancel, 150_000, "timers"),
    Workload("timers_schedule_cancel", "timers: schedule+cancel", timers_schedule_cancel, 200_000, "timers"),
    Workload("timers_cancel_pileup", "timers: cancel pile-up", timers_cancel_pileup, 200_000, "timers"),
    Workload("tasks_sleep0", "tasks: 100 x sleep(0) chains", tasks_sleep0, 100_000, "tasks"),
    Workload("future_pingpong", "future ping-pong (round trip)", future_pingpong, 40_000, "pingpong"),
    Workload("tcp_echo", "TCP echo 1 KiB (round trip)", tcp_echo, 20_000),
]

# Targets the project tracks: cxxloop speedup over uvloop.
TARGETS = {"call_soon": 1.5, "timers": 3.0, "tasks": 1.2, "pingpong": 1.2}
SUBJECT = "cxxloop"         # the loop the targets apply to


# ---------------------------------------------------------------------------
# Loops
# ---------------------------------------------------------------------------

def _cxxloop_factory():
    import cxxloop
    return cxxloop.new_event_loop


def _asyncio_factory():
    return getattr(asyncio, "SelectorEventLoop", asyncio.new_event_loop)


def _uvloop_factory():
    import uvloop
    return uvloop.new_event_loop


def _rloop_factory():
    import rloop
    return rloop.new_event_loop


# name -> (function returning a loop factory, distribution name for version)
LOOPS = {
    "cxxloop": (_cxxloop_factory, "cxxloop"),
    "uvloop": (_uvloop_factory, "uvloop"),
    "rloop": (_rloop_factory, "rloop"),
    "asyncio": (_asyncio_factory, None),
}


def _version(dist, module_name):
    if dist is None:
        return "stdlib " + platform.python_version()
    try:
        from importlib import metadata
        return metadata.version(dist)
    except Exception:
        mod = sys.modules.get(module_name)
        return str(getattr(mod, "__version__", "?"))


def discover_loops(names):
    """Return ([(name, factory, version)], [(name, reason)])."""
    found, skipped = [], []
    for name in names:
        if name not in LOOPS:
            skipped.append((name, "unknown loop"))
            continue
        get_factory, dist = LOOPS[name]
        try:
            factory = get_factory()
            probe = factory()       # make sure a loop can be created and closed
            probe.close()
        except Exception as exc:
            skipped.append((name, "%s: %s" % (type(exc).__name__, exc)))
            continue
        found.append((name, factory, _version(dist, name)))
    return found, skipped


# ---------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------

def measure_once(factory, workload, n, keep_gc=False, timeout=None):
    """One measurement in a fresh loop; returns ns per op.

    With a timeout, a watchdog thread stops a loop that is still running
    after ``timeout`` seconds (the measurement then fails with "timed out");
    run_benchmarks also arms faulthandler to kill the process if even that
    does not get control back.
    """
    gc.collect()
    loop = factory()
    failures = []
    watchdog = None
    fired = threading.Event()
    if timeout:
        def bark():
            fired.set()
            try:
                loop.call_soon_threadsafe(loop.stop)
            except Exception:
                pass
        watchdog = threading.Timer(timeout, bark)
        watchdog.daemon = True
        watchdog.start()

    def on_error(lp, context):
        failures.append(context)
        lp.stop()

    try:
        loop.set_exception_handler(on_error)
    except Exception:
        pass
    gc_was_on = gc.isenabled()
    if not keep_gc:
        gc.disable()
    try:
        seconds, ops = workload.func(loop, n)
    except Exception:
        if fired.is_set():
            raise WorkloadError("timed out after %g s" % timeout)
        if not failures:
            raise
        seconds = None
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if gc_was_on:
            gc.enable()
        try:
            loop.close()
        except Exception:
            pass
    if failures:
        ctx = failures[0]
        raise WorkloadError("exception handler called: %s %r"
                            % (ctx.get("message"), ctx.get("exception")))
    return seconds * 1e9 / ops


def _summary(samples):
    s = sorted(samples)
    med = statistics.median(s)
    if len(s) >= 2:
        q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive")
    else:
        q1 = q3 = med
    return {"median_ns": med, "min_ns": s[0], "max_ns": s[-1],
            "q1_ns": q1, "q3_ns": q3, "ops_per_s": 1e9 / med}


def run_benchmarks(loops, workloads, reps, scale, keep_gc=False,
                   timeout=120.0, log=None):
    """Measure every (workload, loop); returns {workload: {loop: result}}."""
    results = {}
    for wl in workloads:
        n = max(1, int(wl.n * scale))
        if wl.func is tasks_sleep0:
            n = max(n, TASKS_M)
        per_loop = {name: {"samples_ns": [], "error": None, "n": n}
                    for name, _, _ in loops}
        if log:
            log("%-24s n=%-8d" % (wl.name, n), end="")

        def one(name, factory, size):
            entry = per_loop[name]
            if entry["error"]:
                return None
            if timeout:
                faulthandler.dump_traceback_later(2 * timeout + 10, exit=True)
            try:
                return measure_once(factory, wl, size, keep_gc, timeout)
            except Exception as exc:
                entry["error"] = "%s: %s" % (type(exc).__name__, exc)
                return None
            finally:
                if timeout:
                    faulthandler.cancel_dump_traceback_later()

        for name, factory, _ in loops:          # warm-up, smaller, untimed
            one(name, factory, max(1, n // 4))
        for r in range(reps):
            k = r % len(loops) if loops else 0
            for name, factory, _ in loops[k:] + loops[:k]:
                ns = one(name, factory, n)
                if ns is not None:
                    per_loop[name]["samples_ns"].append(ns)
            if log:
                log(".", end="")
        for name, entry in per_loop.items():
            if entry["samples_ns"] and not entry["error"]:
                entry.update(_summary(entry["samples_ns"]))
        results[wl.name] = per_loop
        if log:
            log(" " + "  ".join(
                "%s %s" % (name, _num(e["median_ns"]) if "median_ns" in e else "ERR")
                for name, e in per_loop.items()))
    return results


def speedup(results_wl, loop, baseline):
    """How many times faster ``loop`` is than ``baseline`` (>1 = faster).

    Samples of one repetition were taken back to back, so the ratio is the
    median of the per-repetition ratios: a slow patch of a shared machine
    then hits both sides of a pair instead of skewing one loop's median.
    (Falls back to the ratio of the medians if the samples do not pair up.)
    """
    a, b = results_wl.get(loop, {}), results_wl.get(baseline, {})
    if "median_ns" not in a or "median_ns" not in b:
        return None
    sa, sb = a.get("samples_ns") or [], b.get("samples_ns") or []
    if sa and len(sa) == len(sb):
        return statistics.median(y / x for x, y in zip(sa, sb))
    return b["median_ns"] / a["median_ns"]


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------

def _num(ns):
    return "%.0f" % ns if ns >= 100 else "%.1f" % ns


def _fmt_rate(ops):
    if ops >= 1e6:
        return "%.2fM" % (ops / 1e6)
    if ops >= 1e3:
        return "%.0fk" % (ops / 1e3)
    return "%.0f" % ops


def _fmt_x(x):
    return "-" if x is None else "%.2fx" % x


def _target_text(wl, ratio):
    if not wl.target:
        return ""
    want = TARGETS[wl.target]
    if ratio is None:
        return ">=%.1fx n/a" % want
    return ">=%.1fx %s" % (want, "met" if ratio >= want else "NOT met")


def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor() or "unknown"
    load = None
    try:
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": sys.version.split()[0],
        "python_build": " ".join(sys.version.split()[1:]),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": "%s %s" % (platform.system(), platform.release()),
        "loadavg_at_start": load,
    }


def format_text(meta, loops, skipped, results, workloads):
    out = []
    out.append("cxxloop benchmark  |  Python %s  |  %s x%s  |  %s  |  %s"
               % (meta["python"], meta["cpu"], meta["cpus"], meta["kernel"],
                  meta["date"]))
    out.append("loops: " + ", ".join("%s %s" % (n, v) for n, _, v in loops))
    for name, why in skipped:
        out.append("skipped %s (%s)" % (name, why))
    out.append("ns per op: median of %d interleaved repetitions, fresh loop each; spread = "
               "min..max and IQR as %% of median;\nspeedup = median of per-repetition "
               "time ratios, > 1 = faster"
               % meta["reps"])
    out.append("")
    hdr = ("%-31s %-8s %8s %8s %13s %6s %9s %10s  %s"
           % ("workload", "loop", "ns/op", "ops/s", "min..max", "IQR",
              "vs uvloop", "vs asyncio", "target (vs uvloop)"))
    out.append(hdr)
    out.append("-" * len(hdr))
    for wl in workloads:
        r = results.get(wl.name)
        if r is None:
            continue
        first = True
        for name, _, _ in loops:
            e = r[name]
            label = wl.title if first else ""
            first = False
            if "median_ns" not in e:
                out.append("%-31s %-8s  error: %s" % (label, name, e["error"] or "no samples"))
                continue
            iqr = 100.0 * (e["q3_ns"] - e["q1_ns"]) / e["median_ns"]
            vu = speedup(r, name, "uvloop") if name != "uvloop" else None
            va = speedup(r, name, "asyncio") if name != "asyncio" else None
            tgt = _target_text(wl, vu) if name == SUBJECT else ""
            out.append("%-31s %-8s %8s %8s %13s %5.1f%% %9s %10s  %s"
                       % (label, name, _num(e["median_ns"]), _fmt_rate(e["ops_per_s"]),
                          "%s..%s" % (_num(e["min_ns"]), _num(e["max_ns"])),
                          iqr, _fmt_x(vu), _fmt_x(va), tgt))
        out.append("")
    return "\n".join(out)


def format_markdown(meta, loops, skipped, results, workloads):
    names = [n for n, _, _ in loops]
    out = []
    out.append("Benchmarks (`python -m cxxloop.bench%s`), %s" % (meta["args"], meta["date"]))
    out.append("")
    out.append("- Python %s (%s) %s" % (meta["python"], meta["implementation"], meta["python_build"]))
    out.append("- CPU: %s, %s logical cores; kernel: %s; load average at start: %s"
               % (meta["cpu"], meta["cpus"], meta["kernel"], meta["loadavg_at_start"]))
    out.append("- Loops: " + ", ".join("%s %s" % (n, v) for n, _, v in loops)
               + "".join("; %s not available" % n for n, _ in skipped))
    out.append("- Median of %d interleaved repetitions (fresh loop each, warm-up first, "
               "GC %s while timing); in brackets min..max." % (
                   meta["reps"], "on" if meta["keep_gc"] else "paused"))
    out.append("")
    out.append("Nanoseconds per operation, median (min..max); lower is better:")
    out.append("")
    out.append("| Workload | " + " | ".join(names) + " |")
    out.append("|---|" + "---:|" * len(names))
    for wl in workloads:
        r = results.get(wl.name)
        if r is None:
            continue
        cells = []
        for name in names:
            e = r[name]
            if "median_ns" in e:
                cells.append("%s (%s..%s)" % (_num(e["median_ns"]),
                                              _num(e["min_ns"]), _num(e["max_ns"])))
            else:
                cells.append("error")
        out.append("| %s | %s |" % (wl.title, " | ".join(cells)))
    out.append("")
    out.append("Speedup (median over repetitions of the other loop's time / this loop's, "
               "higher is better):")
    out.append("")
    # Columns: the subject first (with its target), then the other loops.
    # "asyncio vs uvloop" is left out: it is 1 / "uvloop vs asyncio".
    cols = []
    show_target = SUBJECT in names and "uvloop" in names
    ordered = sorted(names, key=lambda n: n != SUBJECT)
    for name in ordered:
        for base in ("uvloop", "asyncio"):
            if name != base and base in names and not (name == "asyncio" and base == "uvloop"):
                cols.append((name, base))
                if show_target and name == SUBJECT and base == "uvloop":
                    cols.append(None)       # the target column
    head = ["%s target" % SUBJECT if c is None else "%s vs %s" % c for c in cols]
    out.append("| Workload | " + " | ".join(head) + " |")
    out.append("|---|" + "---:|" * len(head))
    for wl in workloads:
        r = results.get(wl.name)
        if r is None:
            continue
        cells = [(_target_text(wl, speedup(r, SUBJECT, "uvloop")) or "-") if c is None
                 else _fmt_x(speedup(r, *c)) for c in cols]
        out.append("| %s | %s |" % (wl.title, " | ".join(cells)))
    return "\n".join(out)


def to_json(meta, loops, skipped, results, workloads):
    data = {"meta": meta,
            "loops": {n: v for n, _, v in loops},
            "skipped": {n: why for n, why in skipped},
            "targets": TARGETS,
            "workloads": {}}
    for wl in workloads:
        r = results.get(wl.name)
        if r is None:
            continue
        entry = {"title": wl.title, "target": wl.target, "loops": r,
                 "speedup_vs_uvloop": {}, "speedup_vs_asyncio": {}}
        for name, _, _ in loops:
            entry["speedup_vs_uvloop"][name] = speedup(r, name, "uvloop")
            entry["speedup_vs_asyncio"][name] = speedup(r, name, "asyncio")
        if wl.target:
            ratio = speedup(r, SUBJECT, "uvloop")
            entry["target_vs_uvloop"] = TARGETS[wl.target]
            entry["target_met"] = None if ratio is None else ratio >= TARGETS[wl.target]
        data["workloads"][wl.name] = entry
    return data


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def _parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python -m cxxloop.bench",
        description="Compare cxxloop with asyncio, uvloop and rloop side by side.")
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes and fewer repetitions (well under a minute)")
    p.add_argument("--reps", type=int, default=None,
                   help="timed repetitions per loop (default 9, --quick 5)")
    p.add_argument("--scale", type=float, default=None,
                   help="multiply workload sizes (default 1, --quick 0.25)")
    p.add_argument("--loops", default=",".join(LOOPS),
                   help="comma-separated loops to compare (default: %(default)s)")
    p.add_argument("--workloads", default=None,
                   help="comma-separated subset of: " + ", ".join(w.name for w in WORKLOADS))
    p.add_argument("--json", metavar="FILE", help="also write all samples as JSON")
    p.add_argument("--markdown", action="store_true",
                   help="print a Markdown table (for the README) instead of the text table")
    p.add_argument("--keep-gc", action="store_true",
                   help="leave the cyclic GC enabled while timing")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="stop a measurement still running after this many seconds and "
                        "report it as an error; a process stuck for twice as long "
                        "is killed with a traceback (default %(default)s)")
    p.add_argument("--render", metavar="JSON",
                   help="do not measure; print the tables of a file written by --json")
    p.add_argument("-q", "--silent", action="store_true", help="no progress on stderr")
    return p.parse_args(argv)


def _args_text(args):
    # The options that shape the numbers (not where the output goes).
    parts = []
    if args.quick:
        parts.append("--quick")
    if args.reps:
        parts.append("--reps %d" % args.reps)
    if args.scale:
        parts.append("--scale %g" % args.scale)
    if args.keep_gc:
        parts.append("--keep-gc")
    if args.workloads:
        parts.append("--workloads " + args.workloads)
    return "".join(" " + p for p in parts)


def from_json(data):
    """Inverse of to_json, enough for the formatters."""
    loops = [(n, None, v) for n, v in data["loops"].items()]
    skipped = list(data.get("skipped", {}).items())
    by_name = {w.name: w for w in WORKLOADS}
    workloads = [by_name[n] for n in data["workloads"] if n in by_name]
    results = {n: e["loops"] for n, e in data["workloads"].items()}
    return data["meta"], loops, skipped, results, workloads


def main(argv=None):
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.render:
        with open(args.render) as f:
            parts = from_json(json.load(f))
        print((format_markdown if args.markdown else format_text)(*parts))
        return 0
    reps = args.reps or (5 if args.quick else 9)
    scale = args.scale or (0.25 if args.quick else 1.0)
    if args.workloads:
        wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
        by_name = {w.name: w for w in WORKLOADS}
        unknown = [w for w in wanted if w not in by_name]
        if unknown:
            print("unknown workload(s): %s" % ", ".join(unknown), file=sys.stderr)
            return 2
        workloads = [by_name[w] for w in wanted]
    else:
        workloads = list(WORKLOADS)

    def log(msg, end="\n"):
        if not args.silent:
            sys.stderr.write(msg + end)
            sys.stderr.flush()

    faulthandler.enable()       # a crashing loop at least says where
    loops, skipped = discover_loops([n.strip() for n in args.loops.split(",") if n.strip()])
    for name, why in skipped:
        log("skipping %s: %s" % (name, why))
    if not loops:
        log("no loop available")
        return 1

    meta = machine_info()
    meta.update({"reps": reps, "scale": scale, "quick": args.quick,
                 "keep_gc": args.keep_gc,
                 "args": _args_text(args)})
    t0 = perf_counter()
    results = run_benchmarks(loops, workloads, reps, scale, keep_gc=args.keep_gc,
                             timeout=args.timeout, log=log)
    meta["wall_seconds"] = round(perf_counter() - t0, 1)
    log("done in %.1f s" % meta["wall_seconds"])

    if args.markdown:
        print(format_markdown(meta, loops, skipped, results, workloads))
    else:
        print(format_text(meta, loops, skipped, results, workloads))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(to_json(meta, loops, skipped, results, workloads), f, indent=1)
            f.write("\n")
        log("wrote %s" % args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
