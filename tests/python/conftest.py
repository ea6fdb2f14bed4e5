"""Shared fixtures for cxxloop's pytest suite.

Every behavioural test body runs against cxxloop (each C++ poller backend, and
the Python-selector flavour) and against the stock asyncio loop.  If a test
fails on stock asyncio, the test is wrong.

Fixtures
--------
loop            a fresh event loop per param (ids: cxxloop-epoll, cxxloop-poll,
                cxxloop-select, cxxloop-pyselector, cxxloop-proactor, asyncio).
                cxxloop-proactor is cxxloop.ProactorEventLoop (io_uring); where
                io_uring is unavailable its tests skip with the probe's reason.  An exception
                handler that records calls is installed; unexpected calls fail
                the test.  The fixture closes the loop.
loop_factory    a zero-argument callable making new loops of the param's kind
                (for asyncio.run(loop_factory=...), asyncio.Runner, or tests
                that need several loops).  Every loop it made must be closed by
                the test.  ``loop_factory.raw()`` makes a loop without the
                recording exception handler.
loop_kind       the param id itself.
expect_exception_handler_calls
                declares that the test expects exception-handler calls; gives
                the Recorder (``.calls`` is the list of contexts, ``.take()``
                returns and clears it).

Teardown checks (autouse): leaked fds (/proc/self/fd), unclosed loops
(tracked, plus ResourceWarning), "coroutine ... was never awaited" warnings,
unexpected exception-handler calls, a changed event loop policy / current
loop / running loop / asyncgen hooks, and a per-test timeout (SIGALRM raises;
faulthandler kills the process as a backstop if the loop never returns to
Python).

While cxxloop does not import yet, run only the stock params with
``python -m pytest tests/python -k asyncio``; the cxxloop params fail loudly.
"""

import asyncio
import contextlib
import faulthandler
import gc
import os
import re
import selectors
import signal
import sys
import threading
import time
import traceback
import warnings

import pytest

try:
    import cxxloop  # noqa: F401
    CXXLOOP_IMPORT_ERROR = None
except Exception as exc:  # pragma: no cover - depends on the build
    cxxloop = None
    CXXLOOP_IMPORT_ERROR = exc
    CXXLOOP_IMPORT_TB = traceback.format_exc()


CXX_POLLERS = ("epoll", "poll", "select")
LOOP_KINDS = tuple(f"cxxloop-{p}" for p in CXX_POLLERS) + (
    "cxxloop-pyselector", "cxxloop-proactor", "asyncio")

TEST_TIMEOUT = float(os.environ.get("CXXLOOP_TEST_TIMEOUT", "15"))

PY314 = sys.version_info >= (3, 14)


def require_cxxloop():
    if cxxloop is None:
        pytest.fail(
            "cxxloop failed to import (run with -k asyncio to test only the "
            f"stock loop):\n{CXXLOOP_IMPORT_TB}",
            pytrace=False,
        )
    return cxxloop


def uring_unavailable_reason():
    """None where cxxloop's io_uring engine can run here, else the probe's reason."""
    available, _, reason = require_cxxloop()._core.uring_support()
    return None if available else reason


def skip_unless_uring():
    reason = uring_unavailable_reason()
    if reason is not None:
        pytest.skip(f"io_uring is unavailable: {reason}")


def make_loop(kind):
    """Create a new, unconfigured loop of the given kind (skips the test for the
    proactor where io_uring is unavailable)."""
    if kind == "asyncio":
        return asyncio.SelectorEventLoop()
    mod = require_cxxloop()
    if kind == "cxxloop-pyselector":
        return mod.SelectorEventLoop(selectors.SelectSelector())
    if kind == "cxxloop-proactor":
        skip_unless_uring()
        return mod.ProactorEventLoop()
    assert kind.startswith("cxxloop-"), kind
    return mod.Loop(poller=kind.split("-", 1)[1])


def is_cxx(kind):
    return kind.startswith("cxxloop")


def pytest_report_header(config):
    if cxxloop is None:
        return f"cxxloop: IMPORT FAILED ({CXXLOOP_IMPORT_ERROR!r}); cxxloop params will fail"
    return f"cxxloop: {getattr(cxxloop, '__file__', '?')}"


def pytest_collection_finish(session):
    # The guard runs gc.collect() after every test.  Freezing everything that
    # exists once collection is done keeps that cheap: only objects created
    # since are scanned.
    gc.collect()
    gc.freeze()


# --------------------------------------------------------------------------
# Per-test state and the guard


class HangTimeout(SystemExit):
    """Raised from SIGALRM when a test runs too long.

    A SystemExit subclass so that asyncio's Handle._run re-raises it out of
    the loop instead of routing it to the exception handler; pytest reports
    it as an ordinary test failure.
    """


class Recorder:
    """Exception handler that records contexts instead of logging them."""

    def __init__(self):
        self.calls = []
        self.allowed = False

    def __call__(self, loop, context):
        self.calls.append(context)

    def take(self):
        calls, self.calls = self.calls, []
        return calls

    def messages(self):
        return [c.get("message") for c in self.calls]

    def describe(self):
        out = []
        for ctx in self.calls:
            out.append(repr({k: v for k, v in ctx.items()}))
            exc = ctx.get("exception")
            if exc is not None:
                out.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return "\n".join(out)


class _State:
    def __init__(self):
        self.recorders = []
        self.tracked_loops = []  # (description, loop) that the test must close
        self.loop_recorder = None


def _fd_snapshot():
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return fds


def _policy_state():
    policy = getattr(asyncio.events, "_event_loop_policy", None)
    local = getattr(policy, "_local", None)
    cur = getattr(local, "_loop", None) if local is not None else None
    return policy, cur


def _default_policy_class():
    with policy_deprecations():
        return asyncio.DefaultEventLoopPolicy


def _on_alarm(signum, frame):
    sys.stderr.write(f"\n*** test exceeded {TEST_TIMEOUT}s; tracebacks of all threads:\n")
    faulthandler.dump_traceback(all_threads=True)
    raise HangTimeout(f"test exceeded {TEST_TIMEOUT}s (hang?)")


_BAD_WARNING_RE = re.compile(r"coroutine .* was never awaited")


@pytest.fixture(autouse=True)
def _guard(request):
    state = _State()
    request.node._cxx_state = state

    # Timeout: SIGALRM raises in the main thread; faulthandler is a backstop
    # that kills the process if the loop never gets back to Python code.
    old_alarm = None
    if threading.current_thread() is threading.main_thread():
        old_alarm = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, TEST_TIMEOUT)
    faulthandler.dump_traceback_later(TEST_TIMEOUT + 20, exit=True)

    fds_before = _fd_snapshot()
    policy_before = _policy_state()
    running_before = asyncio.events._get_running_loop()
    hooks_before = sys.get_asyncgen_hooks()

    problems = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        warnings.filterwarnings("always", message=r"coroutine .* was never awaited",
                                category=RuntimeWarning)
        try:
            yield state
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            # Loops made by loop_factory must have been closed by the test.
            for desc, lp in state.tracked_loops:
                try:
                    closed = lp.is_closed()
                except Exception as exc:  # pragma: no cover
                    closed = False
                    problems.append(f"{desc}: is_closed() raised {exc!r}")
                if not closed:
                    problems.append(f"{desc} was left unclosed by the test")
                    with contextlib.suppress(Exception):
                        if not lp.is_running():
                            lp.close()
            state.tracked_loops.clear()
            gc.collect()

    # Exception handler calls nobody expected.
    for rec in state.recorders:
        if rec.calls and not rec.allowed:
            problems.append("unexpected exception-handler calls:\n" + rec.describe())

    # Warnings: unclosed resources and never-awaited coroutines fail the test;
    # everything else is handed on to pytest's own warning capture.
    for w in caught:
        msg = str(w.message)
        if issubclass(w.category, ResourceWarning) or (
            issubclass(w.category, RuntimeWarning) and _BAD_WARNING_RE.search(msg)
        ):
            problems.append(f"{w.category.__name__}: {msg} ({w.filename}:{w.lineno})")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    # Global asyncio state.
    policy_after = _policy_state()
    lazily_created_default = (
        policy_before[0] is None
        and type(policy_after[0]) is _default_policy_class()
        and policy_after[1] is None
    )
    if lazily_created_default:
        pass
    elif policy_after[0] is not policy_before[0]:
        problems.append(f"event loop policy changed: {policy_before[0]!r} -> {policy_after[0]!r}")
        asyncio.events._event_loop_policy = policy_before[0]
    elif policy_after[1] is not policy_before[1]:
        problems.append(f"current event loop left set: {policy_after[1]!r}")
        policy_after[0]._local._loop = policy_before[1]
    running_after = asyncio.events._get_running_loop()
    if running_after is not running_before:
        problems.append(f"running loop left set: {running_after!r}")
        asyncio.events._set_running_loop(running_before)
    hooks_after = sys.get_asyncgen_hooks()
    if tuple(hooks_after) != tuple(hooks_before):
        problems.append(f"asyncgen hooks not restored: {hooks_after!r}")
        sys.set_asyncgen_hooks(*hooks_before)

    # File descriptors.
    leaked = {}
    deadline = time.monotonic() + 1.0
    while True:
        fds_after = _fd_snapshot()
        leaked = {fd: tgt for fd, tgt in fds_after.items()
                  if fd not in fds_before or fds_before[fd] != tgt}
        if not leaked or time.monotonic() > deadline:
            break
        gc.collect()
        time.sleep(0.02)
    if leaked:
        problems.append("leaked file descriptors: " +
                        ", ".join(f"{fd}->{tgt}" for fd, tgt in sorted(leaked.items())))

    faulthandler.cancel_dump_traceback_later()
    if old_alarm is not None:
        signal.signal(signal.SIGALRM, old_alarm)

    if problems:
        pytest.fail("teardown checks failed:\n  " + "\n  ".join(problems), pytrace=False)


# --------------------------------------------------------------------------
# Loop fixtures


# Areas of the asyncio API that cxxloop does not implement yet. Tests of such an area
# carry @pytest.mark.cxxloop_pending("<area>"): they run on stock asyncio (so they are
# checked against the reference now) and are skipped, saying why, on cxxloop's params
# until the area is removed from this set, when they run on every loop unchanged.
CXXLOOP_PENDING = set()  # "network" and "process" landed as asyncio's own transports.


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "cxxloop_pending(area): the test needs an area cxxloop does not implement "
        "yet; its cxxloop params are skipped while the area is listed in CXXLOOP_PENDING")


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request):
    marker = request.node.get_closest_marker("cxxloop_pending")
    if marker and is_cxx(request.param) and marker.args[0] in CXXLOOP_PENDING:
        pytest.skip(f"cxxloop does not implement {marker.args[0]} yet")
    if request.param == "cxxloop-proactor" and cxxloop is not None:
        skip_unless_uring()
    return request.param


@pytest.fixture
def loop(loop_kind, _guard):
    lp = make_loop(loop_kind)
    rec = Recorder()
    lp.set_exception_handler(rec)
    _guard.recorders.append(rec)
    _guard.loop_recorder = rec
    try:
        yield lp
    finally:
        if lp.is_running():  # pragma: no cover - a broken test or loop
            lp.stop()
        if not lp.is_closed():
            lp.close()


@pytest.fixture
def expect_exception_handler_calls(_guard, loop):
    """Declare that this test expects exception-handler calls on `loop`."""
    rec = _guard.loop_recorder
    rec.allowed = True
    return rec


class LoopFactory:
    def __init__(self, kind, state):
        self.kind = kind
        self.state = state
        self.made = []

    def _make(self, record):
        lp = make_loop(self.kind)
        if record:
            rec = Recorder()
            lp.set_exception_handler(rec)
            self.state.recorders.append(rec)
        self.made.append(lp)
        self.state.tracked_loops.append((f"loop #{len(self.made)} from loop_factory ({self.kind})", lp))
        return lp

    def __call__(self):
        return self._make(record=True)

    def raw(self):
        return self._make(record=False)


@pytest.fixture
def loop_factory(loop_kind, _guard):
    return LoopFactory(loop_kind, _guard)


# --------------------------------------------------------------------------
# Helpers used by several test modules


def run_until(loop, pred, timeout=5.0, what="condition"):
    """Run the loop until pred() is true, failing after `timeout` seconds."""
    async def wait():
        deadline = loop.time() + timeout
        while not pred():
            if loop.time() > deadline:
                raise AssertionError(f"{what} not reached within {timeout}s")
            await asyncio.sleep(0.001)
    loop.run_until_complete(wait())


def run_briefly(loop, iterations=1):
    """Run `iterations` loop iterations (stop() before run_forever = one)."""
    for _ in range(iterations):
        loop.stop()
        loop.run_forever()


@contextlib.contextmanager
def policy_deprecations():
    """Policies are deprecated from 3.14 on; suppress only there."""
    if PY314:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    else:
        yield


@pytest.fixture
def restore_policy():
    """Restore the global policy (and its current loop) after the test."""
    with policy_deprecations():
        saved = asyncio.events._event_loop_policy
    try:
        yield
    finally:
        with policy_deprecations():
            asyncio.events._event_loop_policy = saved
