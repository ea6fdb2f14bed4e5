"""Network benchmarks: echo / HTTP servers on cxxloop, asyncio, uvloop and rloop
(and a C epoll echo server as the physical-limit reference), driven by one
load generator in a separate process that is the same for every server.

    python bench/net/run.py --quick                 # ~3 min
    python bench/net/run.py                         # full run
    python bench/net/run.py --markdown              # Markdown tables + machine details
    python bench/net/run.py --json out.json         # every sample
    python bench/net/run.py --render out.json [--markdown]

For each workload, each repetition starts every server once (a fresh process,
the order rotating between repetitions), waits for it to listen, warms it up
with a short untimed client run, then runs the client (bench/net/build/echo_client,
or wrk for HTTP) for --duration seconds.  The server's CPU time is read from
/proc/<pid>/stat (utime + stime) right before and right after the timed client
run; divided by the messages the client completed it gives the server CPU
microseconds per message, the number the targets are about (on 2 cores the
client can saturate before the server does, so msgs/s alone would hide
differences).  Reported: medians over the repetitions, min..max and IQR, and
ratios of server CPU per message against uvloop, asyncio and the C reference
(median of per-repetition ratios; > 1 = less CPU per message = better).

See bench/net/README.md for what is measured and the fairness notes.
"""

import argparse
import atexit
import datetime
import json
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(HERE, "build")
CLIENT = os.path.join(BUILD, "echo_client")
CSERVER = os.path.join(BUILD, "echo_server")
SERVERS_PY = os.path.join(HERE, "servers.py")
CERT = os.path.join(BUILD, "cert.pem")
KEY = os.path.join(BUILD, "key.pem")

CLK_TCK = os.sysconf("SC_CLK_TCK")
SUBJECT = "cxxloop"
# "proactor" is cxxloop.ProactorEventLoop (io_uring); it is skipped where io_uring is not.
PY_LOOPS = ["cxxloop", "proactor", "uvloop", "rloop", "asyncio"]
C_REF = "C epoll"
ALL_LOOPS = PY_LOOPS + ["c"]          # "c" = the C reference server


# ---------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------

class Workload:
    def __init__(self, name, title, style, size, client, c_mode=None, target=None):
        self.name = name
        self.title = title
        self.style = style        # servers.py --style
        self.size = size          # message size in bytes
        self.client = client      # echo_client -m MODE, or "wrk"
        self.c_mode = c_mode      # echo_server -m MODE for the C reference, or None
        self.target = target      # key into TARGETS


KIB = 1024
WORKLOADS = [
    Workload("tcp_protocol_1k", "TCP Protocol echo 1 KiB", "protocol", 1 * KIB, "tcp", "tcp", "protocol"),
    Workload("tcp_protocol_10k", "TCP Protocol echo 10 KiB", "protocol", 10 * KIB, "tcp", "tcp", "protocol"),
    Workload("tcp_protocol_100k", "TCP Protocol echo 100 KiB", "protocol", 100 * KIB, "tcp", "tcp", "protocol"),
    Workload("tcp_streams_1k", "TCP streams echo 1 KiB", "streams", 1 * KIB, "tcp", "tcp", "streams"),
    Workload("tcp_streams_10k", "TCP streams echo 10 KiB", "streams", 10 * KIB, "tcp", "tcp", "streams"),
    Workload("tcp_streams_100k", "TCP streams echo 100 KiB", "streams", 100 * KIB, "tcp", "tcp", "streams"),
    Workload("tcp_sock_1k", "TCP sock_* echo 1 KiB", "sock", 1 * KIB, "tcp", "tcp", "sock"),
    Workload("tcp_sock_10k", "TCP sock_* echo 10 KiB", "sock", 10 * KIB, "tcp", "tcp", "sock"),
    Workload("tcp_sock_100k", "TCP sock_* echo 100 KiB", "sock", 100 * KIB, "tcp", "tcp", "sock"),
    Workload("unix_protocol_1k", "Unix Protocol echo 1 KiB", "unix", 1 * KIB, "unix", "unix", None),
    Workload("udp_1k", "UDP echo 1 KiB", "udp", 1 * KIB, "udp", "udp", "udp"),
    Workload("http_keepalive", "HTTP/1.1 keep-alive (wrk)", "http", 0, "wrk", None, "http"),
    Workload("tls_protocol_1k", "TLS Protocol echo 1 KiB", "tls", 1 * KIB, "tls", None, "tls"),
]

# Targets from the network issue: cxxloop's server CPU per message against
# uvloop's, in one run ("ratio" = uvloop us/msg / cxxloop us/msg).
TARGETS = {
    "sock": {"vs_uvloop": 1.5},
    "streams": {"vs_uvloop": 1.2},
    "protocol": {"vs_uvloop": 1.0, "vs_c": 1 / 1.15},   # ahead of uvloop, within 15% of C
    "udp": {"vs_uvloop": 1.3},
    "http": {"vs_uvloop": 1.2},
    "tls": {"vs_uvloop": 1.3},
}


def target_text(wl, ratios):
    """'>=1.5x met', '>uvloop & <=1.15x C cost NOT met', ... ('' without a target)."""
    if not wl or not wl.target:
        return ""
    parts, oks = [], []
    for key, want in sorted(TARGETS[wl.target].items(), reverse=True):   # vs_uvloop, vs_c
        got = ratios.get(key)
        if key == "vs_c":
            parts.append("<=%.2fx C cost" % (1 / want))
            oks.append(None if got is None else got >= want)
        elif want == 1.0:
            parts.append(">uvloop")
            oks.append(None if got is None else got > want)
        else:
            parts.append(">=%.1fx" % want)
            oks.append(None if got is None else got >= want)
    state = ("n/a" if any(o is None for o in oks)
             else "met" if all(oks) else "NOT met")
    return "%s %s" % (" & ".join(parts), state)


# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------

def _stale(target, *sources):
    if not os.path.exists(target):
        return True
    t = os.path.getmtime(target)
    return any(os.path.getmtime(s) > t for s in sources)


def build(log):
    """Compile the C client and server (cc -O2) into bench/net/build; make
    the self-signed TLS certificate.  Returns {"tls_client": bool, "cert": bool}."""
    os.makedirs(BUILD, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    src_c = os.path.join(HERE, "echo_client.c")
    src_s = os.path.join(HERE, "echo_server.c")
    info = {}
    if _stale(CSERVER, src_s):
        log("building %s" % CSERVER)
        subprocess.run([cc, "-O2", "-Wall", "-o", CSERVER, src_s], check=True)
    if _stale(CLIENT, src_c):
        log("building %s" % CLIENT)
        r = subprocess.run([cc, "-O2", "-Wall", "-DWITH_TLS", "-o", CLIENT, src_c,
                            "-lssl", "-lcrypto"], stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            log("  (no libssl-dev? building the client without TLS: %s)"
                % r.stderr.strip().splitlines()[-1:])
            subprocess.run([cc, "-O2", "-Wall", "-o", CLIENT, src_c], check=True)
    try:
        out = subprocess.run([CLIENT, "-I"], capture_output=True, text=True, timeout=10).stdout
        info["tls_client"] = bool(json.loads(out)["tls"])
    except (ValueError, KeyError, OSError, subprocess.SubprocessError):
        info["tls_client"] = False
    if not (os.path.exists(CERT) and os.path.exists(KEY)) and shutil.which("openssl"):
        log("generating a self-signed certificate in %s" % BUILD)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", KEY, "-out", CERT, "-days", "3650",
                        "-subj", "/CN=localhost"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    info["cert"] = os.path.exists(CERT) and os.path.exists(KEY)
    return info


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

_children = set()


def _reap_all():
    for p in list(_children):
        _kill(p)


atexit.register(_reap_all)


def _kill(p, grace=2.0):
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        except ProcessLookupError:
            pass
    _children.discard(p)


def _libc():
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True)
    except (ImportError, OSError):
        return None


_LIBC = _libc()
PR_SET_PDEATHSIG = 1


def _affinity(cpu):
    """preexec_fn for every child: pin it (unless cpu is None) and have the
    kernel SIGKILL it if this runner dies without cleaning up."""
    def pre():
        if _LIBC is not None:
            _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
    return pre


def read_cpu(pid):
    """Process CPU seconds (all threads): utime + stime from /proc/<pid>/stat,
    plus the same from the scheduler's nanosecond counters (schedstat) as a
    finer-grained cross-check."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    ticks = int(rest[11]) + int(rest[12])        # fields 14 and 15
    sched = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                sched += int(f.read().split()[0])
    except OSError:
        sched = None
    return ticks / CLK_TCK, (sched / 1e9 if sched is not None else None)


class Unavailable(Exception):
    """The server cannot run this workload (not implemented / missing dependency)."""

    def __init__(self, kind, msg):
        super().__init__(msg)
        self.kind = kind          # "notimpl" or "unavailable"


class MeasureError(Exception):
    pass


def start_server(cmd, cpu, errfile, timeout=15.0):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errfile, stdin=subprocess.DEVNULL,
                         preexec_fn=_affinity(cpu), start_new_session=True)
    _children.add(p)
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            _kill(p)
            raise MeasureError("server did not report READY within %g s" % timeout)
        r, _, _ = select.select([p.stdout], [], [], left)
        if r:
            ch = os.read(p.stdout.fileno(), 1)
            if not ch:
                break
            line += ch
    text = line.decode(errors="replace").strip()
    word, _, rest = text.partition(" ")
    if word == "READY":
        return p, rest
    _kill(p)
    if word == "NOTIMPL":
        raise Unavailable("notimpl", rest)
    if word == "UNAVAILABLE":
        raise Unavailable("unavailable", rest)
    if word == "ERROR":
        raise MeasureError(rest)
    errfile.flush()
    errfile.seek(0)
    tail = errfile.read().decode(errors="replace").strip().splitlines()[-3:]
    raise MeasureError("server exited (status %s): %s" % (p.returncode, " | ".join(tail) or text))


def run_client(cmd, cpu, timeout):
    """Run the load generator; returns (stdout text, client CPU seconds)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, preexec_fn=_affinity(cpu),
                         start_new_session=True)
    _children.add(p)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(p)
        raise MeasureError("client still running after %g s" % timeout)
    _children.discard(p)
    # communicate() reaped it; the CPU it used is in our children's rusage.
    return out.decode(errors="replace"), err.decode(errors="replace"), p.returncode


def _children_cpu():
    ru = os.times()
    return ru.children_user + ru.children_system


WRK_RE_REQ = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b")
WRK_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _wrk_latency(text, pct):
    m = re.search(r"^\s*%s%%\s+([\d.]+)(us|ms|s)\s*$" % pct, text, re.M)
    if not m:
        return None
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]


def client_command(wl, where, conns, seconds):
    if wl.client == "wrk":
        return ["wrk", "-t1", "-c%d" % conns, "-d%ds" % max(1, int(round(seconds))),
                "--latency", "http://127.0.0.1:%s/" % where]
    cmd = [CLIENT, "-m", wl.client, "-c", str(conns), "-s", str(wl.size), "-d", "%g" % seconds]
    if wl.client == "unix":
        cmd += ["-u", where]
    else:
        cmd += ["-H", "127.0.0.1", "-p", where]
    return cmd


def parse_client(wl, out, err, rc):
    if wl.client == "wrk":
        m = WRK_RE_REQ.search(out)
        if rc != 0 or not m:
            raise MeasureError("wrk failed (status %s): %s" % (rc, (err or out).strip()[-200:]))
        res = {"messages": int(m.group(1)),
               "seconds": float(m.group(2)) * WRK_UNIT[m.group(3)],
               "latency_us": {"p50": _wrk_latency(out, 50), "p99": _wrk_latency(out, 99)}}
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        sockerr = re.search(r"Socket errors: (.*)", out)
        if bad:
            raise MeasureError("wrk: %s non-2xx responses" % bad.group(1))
        if sockerr and re.search(r"[1-9]", sockerr.group(1)):
            res["socket_errors"] = sockerr.group(1).strip()
        return res
    try:
        res = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise MeasureError("client failed (status %s): %s" % (rc, (err or out).strip()[-200:]))
    if "error" in res:
        raise MeasureError("client: " + res["error"])
    return res


def measure(wl, loop, opts, tmpdir, serial):
    """One measurement: a fresh server, warm-up, timed client run."""
    if loop == "c":
        if wl.c_mode == "unix":
            path = os.path.join(tmpdir, "c-%d.sock" % serial)
            cmd = [CSERVER, "-m", "unix", "-u", path]
        else:
            cmd = [CSERVER, "-m", wl.c_mode, "-H", "127.0.0.1", "-p", "0"]
    else:
        cmd = [opts.python, SERVERS_PY, "--loop", loop, "--style", wl.style]
        if wl.style == "unix":
            cmd += ["--path", os.path.join(tmpdir, "%s-%d.sock" % (loop, serial))]
        if wl.style == "tls":
            cmd += ["--cert", CERT, "--key", KEY]
    with tempfile.TemporaryFile(dir=tmpdir) as errfile:
        server, where = start_server(cmd, opts.server_cpu, errfile)
        try:
            timeout = opts.duration + 30
            if opts.warmup > 0:
                out, err, rc = run_client(client_command(wl, where, opts.conns, opts.warmup),
                                          opts.client_cpu, timeout)
                parse_client(wl, out, err, rc)
            if server.poll() is not None:
                raise MeasureError("server died during warm-up (status %s)" % server.returncode)
            cc0 = _children_cpu()
            cpu0, sched0 = read_cpu(server.pid)
            t0 = time.monotonic()
            out, err, rc = run_client(client_command(wl, where, opts.conns, opts.duration),
                                      opts.client_cpu, timeout)
            wall = time.monotonic() - t0
            cpu1, sched1 = read_cpu(server.pid)
            cc1 = _children_cpu()
            res = parse_client(wl, out, err, rc)
            if server.poll() is not None:
                raise MeasureError("server died during the run (status %s)" % server.returncode)
        finally:
            _kill(server)
    msgs = res["messages"]
    if msgs <= 0:
        raise MeasureError("no message completed")
    cpu = cpu1 - cpu0
    sample = {
        "messages": msgs,
        "seconds": res["seconds"],
        "msgs_per_s": msgs / res["seconds"],
        "server_cpu_s": cpu,
        "server_us_per_msg": cpu * 1e6 / msgs,
        "server_us_per_msg_schedstat": ((sched1 - sched0) * 1e6 / msgs
                                        if sched0 is not None and sched1 is not None else None),
        "server_cpu_util": cpu / wall if wall > 0 else None,
        "client_us_per_msg": (cc1 - cc0) * 1e6 / msgs,
        "latency_us": res.get("latency_us"),
    }
    if res.get("lost"):
        sample["lost"] = res["lost"]
    if res.get("socket_errors"):
        sample["socket_errors"] = res["socket_errors"]
    return sample


def _server_command(wl, loop, opts, tmpdir, serial):
    if loop == "c":
        if wl.c_mode == "unix":
            return [CSERVER, "-m", "unix", "-u", os.path.join(tmpdir, "c-%d.sock" % serial)]
        return [CSERVER, "-m", wl.c_mode, "-H", "127.0.0.1", "-p", "0"]
    cmd = [opts.python, SERVERS_PY, "--loop", loop, "--style", wl.style]
    if wl.style == "unix":
        cmd += ["--path", os.path.join(tmpdir, "%s-%d.sock" % (loop, serial))]
    if wl.style == "tls":
        cmd += ["--cert", CERT, "--key", KEY]
    return cmd


def parse_strace_counts(text):
    """{syscall: calls} from the summary of `strace -c -U calls,errors,name`."""
    counts = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 2 and f[0].isdigit() and f[-1] != "total":
            counts[f[-1]] = int(f[0])
    return counts


def count_syscalls(wl, loop, opts, tmpdir, serial):
    """The server's system calls per message over a fixed message count: strace -c -f
    attached to a fresh server (after a warm-up, so start-up is not counted) while the
    client exchanges opts.syscalls messages (HTTP: what wrk completes in the run). strace slows the server down; the counts,
    not the times, are the result."""
    cmd = _server_command(wl, loop, opts, tmpdir, serial)
    out_path = os.path.join(tmpdir, "strace-%d.txt" % serial)
    with tempfile.TemporaryFile(dir=tmpdir) as errfile:
        server, where = start_server(cmd, opts.server_cpu, errfile)
        tracer = None
        try:
            if opts.warmup > 0:
                out, err, rc = run_client(client_command(wl, where, opts.conns, opts.warmup),
                                          opts.client_cpu, opts.warmup + 30)
                parse_client(wl, out, err, rc)
            tracer = subprocess.Popen(["strace", "-c", "-f", "-U", "calls,errors,name", "-o", out_path,
                                       "-p", str(server.pid)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      start_new_session=True)
            _children.add(tracer)
            time.sleep(0.5)  # Attaching to every thread takes a moment.
            if tracer.poll() is not None:
                raise MeasureError("strace could not attach: %s" % tracer.stderr.read().decode().strip()[-200:])
            if wl.client == "wrk":
                # wrk has no message count: it runs for the timed duration (at least
                # 2 s), and the count is what it completed meanwhile.
                ccmd = client_command(wl, where, opts.conns, max(2.0, opts.duration))
            else:
                ccmd = client_command(wl, where, opts.conns, 600) + ["-n", str(opts.syscalls)]
            out, err, rc = run_client(ccmd, opts.client_cpu, 600)
            res = parse_client(wl, out, err, rc)
        finally:
            if tracer is not None:
                tracer.send_signal(signal.SIGINT)
                try:
                    tracer.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    _kill(tracer)
                _children.discard(tracer)
            _kill(server)
    with open(out_path) as f:
        counts = parse_strace_counts(f.read())
    msgs = res["messages"]
    if msgs <= 0 or not counts:
        raise MeasureError("no message or no strace summary")
    total = sum(counts.values())
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:4]
    return {"messages": msgs, "calls": total, "per_msg": total / msgs,
            "top": [[name, n / msgs] for name, n in top]}


def run_syscalls(workloads, loops, opts, env, log):
    results = {}
    tmpdir = tempfile.mkdtemp(prefix="cxxloop-netbench-strace-")
    serial = 0
    try:
        for wl in workloads:
            if precheck(wl, env):
                continue
            row = {}
            log("%-20s syscalls" % wl.name, end="")
            for loop in loops_for(wl, loops):
                serial += 1
                try:
                    row[loop] = count_syscalls(wl, loop, opts, tmpdir, serial)
                except Unavailable as exc:
                    row[loop] = {"error": exc.kind}
                except (MeasureError, OSError, subprocess.SubprocessError) as exc:
                    row[loop] = {"error": str(exc)}
                log(" %s %s" % (loop, "%.2f" % row[loop]["per_msg"] if "per_msg" in row[loop]
                                 else row[loop]["error"]), end="")
            log("")
            results[wl.name] = row
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return results


def format_syscalls(data, markdown=False):
    sc = data.get("syscalls")
    if not sc:
        return ""
    loops = data["meta"]["loops"]
    n = data["meta"].get("syscall_messages")
    head = ("System calls per message in the server (strace -c -f over %s messages, HTTP over a "
            "wrk run; %s connections; "
            "the busiest calls in brackets)" % (n, data["meta"]["conns"]))
    out = ["", head, ""]
    if markdown:
        out.append("| workload | " + " | ".join(loop_label(l) for l in loops) + " |")
        out.append("|---|" + "---|" * len(loops))
    for wl_name, row in sc.items():
        cells = []
        for l in loops:
            r = row.get(l)
            if r is None:
                cells.append("")
            elif "per_msg" in r:
                top = ", ".join("%s %.2f" % (name, v) for name, v in r["top"][:3])
                cells.append("%.2f (%s)" % (r["per_msg"], top))
            else:
                cells.append(r["error"][:30])
        if markdown:
            out.append("| %s | %s |" % (wl_name, " | ".join(cells)))
        else:
            out.append("%-20s " % wl_name + "  ".join("%s: %s" % (loop_label(l), c)
                                                      for l, c in zip(loops, cells) if c))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------

def summarize(samples):
    us = sorted(s["server_us_per_msg"] for s in samples)
    med = statistics.median(us)
    if len(us) >= 2:
        q1, _, q3 = statistics.quantiles(us, n=4, method="inclusive")
    else:
        q1 = q3 = med
    lat = [s["latency_us"] for s in samples if s.get("latency_us")]

    def lmed(key):
        v = [x[key] for x in lat if x.get(key) is not None]
        return statistics.median(v) if v else None
    util = [s["server_cpu_util"] for s in samples if s.get("server_cpu_util") is not None]
    return {"us_per_msg": med, "min": us[0], "max": us[-1], "q1": q1, "q3": q3,
            "msgs_per_s": statistics.median(s["msgs_per_s"] for s in samples),
            "server_cpu_util": statistics.median(util) if util else None,
            "client_us_per_msg": statistics.median(s["client_us_per_msg"] for s in samples),
            "p50_us": lmed("p50"), "p99_us": lmed("p99")}


def ratio(per_loop, loop, base):
    """Server CPU per message of ``base`` / of ``loop``: > 1 = ``loop`` needs
    less CPU.  Median of the per-repetition ratios (the samples of a
    repetition were taken close together), else ratio of medians."""
    a, b = per_loop.get(loop, {}), per_loop.get(base, {})
    if "summary" not in a or "summary" not in b:
        return None
    sa, sb = a["samples"], b["samples"]
    ra, rb = a.get("reps") or [], b.get("reps") or []
    pairs = {}
    for rep, s in zip(ra, sa):
        pairs.setdefault(rep, [None, None])[0] = s["server_us_per_msg"]
    for rep, s in zip(rb, sb):
        pairs.setdefault(rep, [None, None])[1] = s["server_us_per_msg"]
    vals = [y / x for x, y in pairs.values() if x and y]
    if len(vals) == len(sa) == len(sb) and vals:
        return statistics.median(vals)
    return b["summary"]["us_per_msg"] / a["summary"]["us_per_msg"]


def ratios_for(per_loop, loop):
    return {"vs_uvloop": ratio(per_loop, loop, "uvloop") if loop != "uvloop" else None,
            "vs_asyncio": ratio(per_loop, loop, "asyncio") if loop != "asyncio" else None,
            "vs_c": ratio(per_loop, loop, "c") if loop != "c" else None}


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------

def loops_for(wl, loops):
    return [l for l in loops if l != "c" or wl.c_mode]


def precheck(wl, env):
    """Reason the whole workload cannot run here, or None."""
    if wl.client == "wrk" and not shutil.which("wrk"):
        return "wrk not installed (apt-get install wrk)"
    if wl.client == "tls":
        if not env["tls_client"]:
            return "the C client was built without TLS (apt-get install libssl-dev)"
        if not env["cert"]:
            return "no certificate (openssl CLI missing)"
    return None


def run_all(workloads, loops, opts, env, log):
    results = {}
    tmpdir = tempfile.mkdtemp(prefix="cxxloop-netbench-")
    serial = 0
    try:
        for wl in workloads:
            why = precheck(wl, env)
            if why:
                log("%-20s skipped: %s" % (wl.name, why))
                results[wl.name] = {"skipped": why, "loops": {}}
                continue
            wl_loops = loops_for(wl, loops)
            per = {l: {"samples": [], "reps": [], "status": "ok", "message": None}
                   for l in wl_loops}
            log("%-20s" % wl.name, end="")
            for rep in range(opts.reps):
                k = rep % len(wl_loops)
                for loop in wl_loops[k:] + wl_loops[:k]:
                    e = per[loop]
                    if e["status"] != "ok":
                        continue
                    serial += 1
                    try:
                        s = measure(wl, loop, opts, tmpdir, serial)
                    except Unavailable as exc:
                        e["status"], e["message"] = exc.kind, str(exc)
                        continue
                    except (MeasureError, OSError, subprocess.SubprocessError) as exc:
                        e["status"], e["message"] = "error", str(exc)
                        continue
                    e["samples"].append(s)
                    e["reps"].append(rep)
                log(".", end="")
            for loop, e in per.items():
                if e["samples"] and e["status"] == "ok":
                    e["summary"] = summarize(e["samples"])
            for loop, e in per.items():
                if "summary" in e:
                    e["ratios"] = ratios_for(per, loop)
            results[wl.name] = {"loops": per}
            log(" " + "  ".join("%s %s" % (l, "%.2f" % e["summary"]["us_per_msg"]
                                           if "summary" in e else e["status"])
                                for l, e in per.items()))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return results


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------

def loop_label(loop):
    return C_REF if loop == "c" else loop


def status_text(loop, e):
    if e["status"] == "notimpl":
        return ("not implemented yet" if loop == SUBJECT
                else "not supported (NotImplementedError)")
    if e["status"] == "unavailable":
        return "unavailable: " + (e["message"] or "")
    if e["status"] == "error":
        return "error: " + (e["message"] or "")
    return "no samples"


def _x(v):
    return "-" if v is None else "%.2fx" % v


def _rate(v):
    if v >= 1e6:
        return "%.2fM" % (v / 1e6)
    if v >= 1e3:
        return "%.1fk" % (v / 1e3)
    return "%.0f" % v


def _us(v):
    return "-" if v is None else ("%.0f" % v if v >= 100 else "%.1f" % v if v >= 10 else "%.2f" % v)


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
    try:
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
    except OSError:
        load = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cpus": os.cpu_count(),
        "kernel": "%s %s" % (platform.system(), platform.release()),
        "loadavg_at_start": load,
    }


def loop_versions(python):
    code = ("import importlib.metadata as m, platform, json\n"
            "v = {'asyncio': 'stdlib ' + platform.python_version()}\n"
            "for d in ('cxxloop', 'uvloop', 'rloop', 'httptools'):\n"
            "    try: v[d] = m.version(d)\n"
            "    except Exception: v[d] = None\n"
            "v['proactor'] = v['cxxloop']\n"
            "import sys; v['python'] = sys.version.split()[0]; v['python_build'] = ' '.join(sys.version.split()[1:])\n"
            "print(json.dumps(v))\n")
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        return json.loads(out.stdout)
    except Exception:
        return {}


def _tool_versions():
    v = {}
    if shutil.which("wrk"):
        r = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        m = re.search(r"wrk (\S+)", r.stdout + r.stderr)
        v["wrk"] = m.group(1) if m else "?"
    if shutil.which("openssl"):
        r = subprocess.run(["openssl", "version"], capture_output=True, text=True)
        v["openssl"] = r.stdout.strip()
    return v


def format_text(data):
    meta = data["meta"]
    out = []
    out.append("cxxloop network benchmark  |  Python %s  |  %s x%s  |  %s  |  %s"
               % (meta["versions"].get("python"), meta["cpu"], meta["cpus"], meta["kernel"], meta["date"]))
    out.append("loops: " + ", ".join("%s %s" % (l, meta["versions"].get(l) or "n/a")
                                     for l in meta["loops"] if l != "c")
               + ("; C epoll reference server" if "c" in meta["loops"] else ""))
    out.append("%d conns, pipeline depth 1, %g s per run (+%g s warm-up), %d interleaved reps, %s"
               % (meta["conns"], meta["duration"], meta["warmup"], meta["reps"], meta["pinning"]))
    out.append("us/msg = server CPU (utime+stime) per message, median; ratios = other's us/msg / this one's "
               "(median of per-rep ratios), > 1 = less CPU")
    out.append("")
    hdr = ("%-26s %-9s %8s %15s %6s %9s %5s %13s %9s %9s %8s  %s"
           % ("workload", "loop", "us/msg", "min..max", "IQR", "msgs/s", "CPU%", "lat p50/p99",
              "vs uvloop", "vs asyncio", "vs C", "target (cxxloop)"))
    out.append(hdr)
    out.append("-" * len(hdr))
    by = {w.name: w for w in WORKLOADS}
    for name, r in data["workloads"].items():
        wl = by.get(name)
        title = wl.title if wl else name
        if r.get("skipped"):
            out.append("%-26s skipped: %s" % (title, r["skipped"]))
            out.append("")
            continue
        first = True
        for loop in [l for l in data["meta"]["loops"] if l in r["loops"]]:
            e = r["loops"][loop]
            label = title if first else ""
            first = False
            if "summary" not in e:
                out.append("%-26s %-9s %s" % (label, loop_label(loop), status_text(loop, e)))
                continue
            s, rt = e["summary"], e["ratios"]
            iqr = 100.0 * (s["q3"] - s["q1"]) / s["us_per_msg"]
            lat = "%s/%s" % (_us(s["p50_us"]), _us(s["p99_us"]))
            tgt = target_text(wl, rt) if (wl and loop == SUBJECT) else ""
            out.append("%-26s %-9s %8s %15s %5.1f%% %9s %4.0f%% %13s %9s %9s %8s  %s"
                       % (label, loop_label(loop), _us(s["us_per_msg"]),
                          "%s..%s" % (_us(s["min"]), _us(s["max"])), iqr, _rate(s["msgs_per_s"]),
                          100 * (s["server_cpu_util"] or 0), lat,
                          _x(rt["vs_uvloop"]), _x(rt["vs_asyncio"]), _x(rt["vs_c"]), tgt))
        if wl and wl.target and SUBJECT in r["loops"] and "summary" not in r["loops"][SUBJECT]:
            out.append("%-26s %-9s target %s" % ("", "", target_text(wl, {}).replace(" n/a", ": n/a (not measured)")))
        out.append("")
    return "\n".join(out)


def format_markdown(data):
    meta = data["meta"]
    loops = meta["loops"]
    out = []
    out.append("Network benchmarks (`python bench/net/run.py%s`), %s" % (meta["args"], meta["date"]))
    out.append("")
    out.append("- Python %s %s" % (meta["versions"].get("python"), meta["versions"].get("python_build", "")))
    out.append("- CPU: %s, %s logical cores; kernel: %s; load average at start: %s"
               % (meta["cpu"], meta["cpus"], meta["kernel"], meta["loadavg_at_start"]))
    out.append("- Loops: " + ", ".join("%s %s" % (l, meta["versions"].get(l) or "n/a")
                                       for l in loops if l != "c")
               + "; httptools %s; %s" % (meta["versions"].get("httptools") or "n/a",
                                          ", ".join("%s %s" % kv for kv in meta.get("tools", {}).items())))
    out.append("- Client: bench/net/build/echo_client (C, epoll), %d connections, pipeline depth 1; "
               "HTTP: wrk -t1 -c%d. %g s per run after a %g s warm-up; median of %d interleaved "
               "repetitions, a fresh server process each; %s."
               % (meta["conns"], meta["conns"], meta["duration"], meta["warmup"], meta["reps"],
                  meta["pinning"]))
    out.append("")
    out.append("Server CPU microseconds per message (utime+stime / messages), median (min..max), "
               "and messages per second; lower us/msg is better:")
    out.append("")
    out.append("| Workload | " + " | ".join(loop_label(l) for l in loops) + " |")
    out.append("|---|" + "---:|" * len(loops))
    by = {w.name: w for w in WORKLOADS}
    for name, r in data["workloads"].items():
        wl = by.get(name)
        title = wl.title if wl else name
        if r.get("skipped"):
            out.append("| %s | %s |" % (title, " | ".join(["skipped"] * len(loops))))
            continue
        cells = []
        for l in loops:
            e = r["loops"].get(l)
            if e is None:
                cells.append("-")
            elif "summary" in e:
                s = e["summary"]
                cells.append("%s (%s..%s), %s/s" % (_us(s["us_per_msg"]), _us(s["min"]),
                                                   _us(s["max"]), _rate(s["msgs_per_s"])))
            else:
                cells.append({"notimpl": "not implemented yet" if l == SUBJECT else "not supported",
                              "unavailable": "unavailable", "error": "error"}.get(e["status"], "-"))
        out.append("| %s | %s |" % (title, " | ".join(cells)))
    skipped = [(n, r["skipped"]) for n, r in data["workloads"].items() if r.get("skipped")]
    errs = [(n, l, e["message"]) for n, r in data["workloads"].items()
            for l, e in r.get("loops", {}).items() if e["status"] in ("error", "unavailable")]
    if skipped or errs:
        out.append("")
        for n, why in skipped:
            out.append("- %s skipped: %s" % (n, why))
        for n, l, msg in errs:
            out.append("- %s on %s: %s" % (n, loop_label(l), msg))
    out.append("")
    out.append("Ratios of server CPU per message (the other server's us/msg / this one's; "
               "> 1 = less CPU), with the cxxloop targets:")
    out.append("")
    cols = []
    for l in [x for x in loops if x != "c"]:
        # "asyncio vs uvloop" is left out: it is 1 / "uvloop vs asyncio".
        if l not in ("uvloop", "asyncio") and "uvloop" in loops:
            cols.append((l, "uvloop"))
        if l != "asyncio" and "asyncio" in loops:
            cols.append((l, "asyncio"))
        if "c" in loops:
            cols.append((l, "c"))
    head = ["%s vs %s" % (a, loop_label(b)) for a, b in cols] + ["cxxloop target"]
    out.append("| Workload | " + " | ".join(head) + " |")
    out.append("|---|" + "---:|" * len(head))
    for name, r in data["workloads"].items():
        wl = by.get(name)
        if r.get("skipped"):
            continue
        cells = []
        for a, b in cols:
            e = r["loops"].get(a)
            cells.append(_x(e["ratios"]["vs_" + ("c" if b == "c" else b)])
                         if e and "ratios" in e else "-")
        e = r["loops"].get(SUBJECT)
        cells.append((target_text(wl, e["ratios"] if e and "ratios" in e else {}) or "-")
                     if wl else "-")
        out.append("| %s | %s |" % (wl.title if wl else name, " | ".join(cells)))
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/net/run.py",
        description="Echo/HTTP/TLS server benchmarks: cxxloop vs asyncio, uvloop, rloop and C.")
    p.add_argument("--quick", action="store_true",
                   help="short runs and fewer repetitions (about 3 minutes)")
    p.add_argument("--reps", type=int, help="interleaved repetitions (default 5, --quick 3)")
    p.add_argument("--duration", type=float,
                   help="seconds per timed client run (default 2, --quick 0.5; wrk rounds to "
                        "whole seconds, at least 1)")
    p.add_argument("--warmup", type=float,
                   help="seconds of untimed client run after the server starts "
                        "(default 0.5, --quick 0.2; wrk: at least 1)")
    p.add_argument("--conns", type=int, default=10, help="client connections (default %(default)s)")
    p.add_argument("--loops", default=",".join(ALL_LOOPS),
                   help="comma-separated subset/order of %s (c = the C reference; default all)"
                        % ",".join(ALL_LOOPS))
    p.add_argument("--workloads", help="comma-separated subset of: "
                   + ", ".join(w.name for w in WORKLOADS))
    p.add_argument("--python", default=sys.executable,
                   help="interpreter that runs the Python servers (default: this one)")
    p.add_argument("--no-pin", action="store_true",
                   help="do not pin the server and the client to separate CPUs")
    p.add_argument("--json", metavar="FILE", help="also write every sample as JSON")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables instead of text")
    p.add_argument("--render", metavar="JSON", help="do not measure; print a file written by --json")
    p.add_argument("-q", "--silent", action="store_true", help="no progress on stderr")
    p.add_argument("--syscalls", type=int, metavar="N", default=0,
                   help="also count the server's system calls per message with strace -c -f "
                        "over N messages per workload and loop (HTTP: over a wrk run of the "
                        "timed duration, at least 2 s)")
    return p.parse_args(argv)


def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    if opts.render:
        with open(opts.render) as f:
            data = json.load(f)
        print((format_markdown(data) if opts.markdown else format_text(data))
              + format_syscalls(data, opts.markdown))
        return 0

    def log(msg, end="\n"):
        if not opts.silent:
            sys.stderr.write(msg + end)
            sys.stderr.flush()

    opts.reps = opts.reps or (3 if opts.quick else 5)
    opts.duration = opts.duration or (0.5 if opts.quick else 2.0)
    if opts.warmup is None:
        opts.warmup = 0.2 if opts.quick else 0.5
    loops = [l.strip() for l in opts.loops.split(",") if l.strip()]
    bad = [l for l in loops if l not in ALL_LOOPS]
    if bad:
        log("unknown loop(s): %s" % ", ".join(bad))
        return 2
    if opts.workloads:
        wanted = [w.strip() for w in opts.workloads.split(",") if w.strip()]
        by = {w.name: w for w in WORKLOADS}
        unknown = [w for w in wanted if w not in by]
        if unknown:
            log("unknown workload(s): %s" % ", ".join(unknown))
            return 2
        workloads = [by[w] for w in wanted]
    else:
        workloads = list(WORKLOADS)

    ncpu = len(os.sched_getaffinity(0))
    if not opts.no_pin and ncpu >= 2:
        cpus = sorted(os.sched_getaffinity(0))
        opts.client_cpu, opts.server_cpu = cpus[0], cpus[-1]
        os.sched_setaffinity(0, {opts.client_cpu})    # this runner mostly sleeps; keep it off the server's CPU
        pinning = "server pinned to CPU %d, client (and runner) to CPU %d" % (opts.server_cpu, opts.client_cpu)
    else:
        opts.client_cpu = opts.server_cpu = None
        pinning = "not pinned"

    def on_signal(signum, frame):
        _reap_all()
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    env = build(log)
    meta = machine_info()
    meta.update({"versions": loop_versions(opts.python), "tools": _tool_versions(),
                 "python_executable": opts.python, "loops": loops, "reps": opts.reps,
                 "duration": opts.duration, "warmup": opts.warmup, "conns": opts.conns,
                 "quick": opts.quick, "pinning": pinning, "env": env,
                 "args": "".join(" " + a for a in sys.argv[1:]
                                 if a not in ("--markdown", "-q", "--silent")
                                 and not a.endswith(".json") and a != "--json")})
    log("loops: %s; %s" % (", ".join(loops), pinning))
    t0 = time.monotonic()
    try:
        results = run_all(workloads, loops, opts, env, log)
    except KeyboardInterrupt:
        _reap_all()
        log("\ninterrupted")
        return 130
    data = {"meta": meta, "targets": TARGETS, "workloads": results}
    if opts.syscalls > 0:
        if shutil.which("strace") is None:
            log("--syscalls: strace is not installed; skipped")
        else:
            meta["syscall_messages"] = opts.syscalls
            try:
                data["syscalls"] = run_syscalls(workloads, loops, opts, env, log)
            except KeyboardInterrupt:
                _reap_all()
                log("\ninterrupted")
                return 130
    meta["wall_seconds"] = round(time.monotonic() - t0, 1)
    log("done in %.0f s" % meta["wall_seconds"])
    print((format_markdown(data) if opts.markdown else format_text(data))
          + format_syscalls(data, opts.markdown))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        log("wrote %s" % opts.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
