"""os.fork() with a loop in the process: the child can close the inherited loop,
make a new one and run it; the parent's loop is unaffected.

Every child ends with os._exit() and reports through its exit status and a
pipe, so nothing of pytest ever runs twice.
"""

import asyncio
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback

import pytest

from conftest import LOOP_KINDS, is_cxx, make_loop

# 3.12+ warn on fork() in a process with threads; the test harness always has
# faulthandler's watchdog thread.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning")


def _child_main(body, err_w):
    """Run body() in the child; exit 0 if it returned, else 1 with the traceback."""
    code = 1
    try:
        # The guard's per-test alarm is not inherited, but be explicit.
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(10)  # a hung child dies instead of hanging the parent
        body()
        code = 0
    except BaseException:  # noqa: B902 - everything is reported to the parent
        try:
            os.write(err_w, traceback.format_exc().encode())
        except BaseException:  # noqa: B902
            pass
    finally:
        os._exit(code)


def fork_and_run(body, timeout=20.0):
    """Fork; run body() in the child. Return (exit status, child's error text)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        _child_main(body, w)
    os.close(w)
    try:
        chunks = []
        while True:
            data = os.read(r, 65536)
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(r)
    deadline = time.monotonic() + timeout
    while True:
        wpid, status = os.waitpid(pid, os.WNOHANG)
        if wpid:
            break
        if time.monotonic() > deadline:  # pragma: no cover
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("child hung")
        time.sleep(0.005)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


async def _exercise_loop(thread_wakeup=True):
    """Timers, call_soon, add_reader on a pipe and, if thread_wakeup, a wakeup
    from another thread while the loop sleeps (the loop's self-pipe)."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.005)
    called = []
    loop.call_soon(called.append, 1)
    await asyncio.sleep(0)
    assert called == [1]
    r, w = os.pipe()
    try:
        fut = loop.create_future()
        loop.add_reader(r, lambda: fut.done() or fut.set_result(os.read(r, 10)))
        loop.call_later(0.005, os.write, w, b"ping")
        assert await asyncio.wait_for(fut, 5) == b"ping"
        assert loop.remove_reader(r) is True
    finally:
        os.close(r)
        os.close(w)
    if thread_wakeup:
        # A thread wakes the loop while it sleeps with no timer due soon.
        fut2 = loop.create_future()
        th = threading.Thread(target=lambda: (time.sleep(0.02),
                                              loop.call_soon_threadsafe(fut2.set_result, "woken")))
        th.start()
        try:
            far = loop.call_later(30, lambda: None)
            t0 = time.monotonic()
            assert await fut2 == "woken"
            assert time.monotonic() - t0 < 5
            far.cancel()
        finally:
            th.join()
    return "ok"


def _new_loop_in_child(kind):
    lp = make_loop(kind)
    try:
        assert lp.run_until_complete(_exercise_loop()) == "ok"
    finally:
        lp.close()


def test_fork_with_idle_loop(loop, loop_kind):
    assert loop.run_until_complete(_exercise_loop()) == "ok"

    def child():
        loop.close()
        assert loop.is_closed()
        _new_loop_in_child(loop_kind)

    code, err = fork_and_run(child)
    assert code == 0, err
    # The parent's loop is still open and runs timers, callbacks and readers.
    # (Not its self-pipe wakeups: see the cxxloop-only test below.)
    assert not loop.is_closed()
    assert loop.run_until_complete(_exercise_loop(thread_wakeup=False)) == "ok"


def test_fork_child_without_closing_inherited_loop(loop, loop_kind):
    loop.run_until_complete(asyncio.sleep(0))
    code, err = fork_and_run(lambda: _new_loop_in_child(loop_kind))
    assert code == 0, err
    assert loop.run_until_complete(_exercise_loop()) == "ok"


# Stronger than stock asyncio, which the issue asks for ("the parent's loop is
# unaffected").  Stock asyncio's epoll loop fails this: the child's close()
# unregisters the self-pipe socket from the epoll instance that parent and
# child share (EPOLL_CTL_DEL on an inherited epoll fd edits the parent's
# interest list), so the parent's call_soon_threadsafe() and signal wakeups no
# longer wake it.  Hence cxxloop only.
cxx_only = pytest.mark.parametrize("loop_kind", [k for k in LOOP_KINDS if is_cxx(k)],
                                   indirect=True)


@cxx_only
def test_fork_child_close_keeps_parent_wakeups(loop, loop_kind):
    assert loop.run_until_complete(_exercise_loop()) == "ok"

    def child():
        loop.close()
        _new_loop_in_child(loop_kind)

    code, err = fork_and_run(child)
    assert code == 0, err
    assert loop.run_until_complete(_exercise_loop()) == "ok"


@cxx_only
def test_fork_with_idle_loop_that_has_signal_handler(loop, loop_kind):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "parent")
    try:
        loop.run_until_complete(asyncio.sleep(0))

        def child():
            loop.close()
            assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
            lp = make_loop(loop_kind)
            try:
                child_got = []
                lp.add_signal_handler(signal.SIGUSR1, child_got.append, "child")
                signal.raise_signal(signal.SIGUSR1)

                async def wait():
                    while not child_got:
                        await asyncio.sleep(0.001)
                lp.run_until_complete(asyncio.wait_for(wait(), 5))
                assert child_got == ["child"]
            finally:
                lp.close()
            # The child's loop got the signal, not the parent's copy.
            assert got == []

        code, err = fork_and_run(child)
        assert code == 0, err
        # The parent's handler still works.
        signal.raise_signal(signal.SIGUSR1)

        async def wait():
            while not got:
                await asyncio.sleep(0.001)
        loop.run_until_complete(asyncio.wait_for(wait(), 5))
        assert got == ["parent"]
        assert loop.run_until_complete(_exercise_loop()) == "ok"
    finally:
        loop.remove_signal_handler(signal.SIGUSR1)


def test_fork_child_signal_handler_on_new_loop(loop, loop_kind):
    # The parent has no handler; the child installs one on its own new loop.
    loop.run_until_complete(asyncio.sleep(0))

    def child():
        loop.close()
        lp = make_loop(loop_kind)
        try:
            got = []
            lp.add_signal_handler(signal.SIGUSR1, got.append, "child")
            signal.raise_signal(signal.SIGUSR1)

            async def wait():
                while not got:
                    await asyncio.sleep(0.001)
            lp.run_until_complete(asyncio.wait_for(wait(), 5))
            assert lp.remove_signal_handler(signal.SIGUSR1) is True
        finally:
            lp.close()

    code, err = fork_and_run(child)
    assert code == 0, err
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert loop.run_until_complete(_exercise_loop(thread_wakeup=False)) == "ok"


def test_fork_from_running_loop(loop, loop_kind):
    # Forking from inside a coroutine: the child does not touch the inherited
    # (still "running") loop, makes a new one and runs it.
    async def main():
        await asyncio.sleep(0.001)
        code, err = fork_and_run(lambda: _new_loop_in_child(loop_kind))
        assert code == 0, err
        return await _exercise_loop()

    assert loop.run_until_complete(main()) == "ok"


def test_child_exit_status_reported():
    # The harness itself: a failing child is reported, not hidden.
    def child():
        raise LookupError("from child")

    code, err = fork_and_run(child)
    assert code == 1
    assert "LookupError: from child" in err


# ---- multiprocessing from inside a running loop ------------------------------


def _mp_target(conn, value):
    # In the child: run a fresh loop of the default kind.
    lp = asyncio.new_event_loop()
    try:
        conn.send(lp.run_until_complete(asyncio.sleep(0.001, value * 2)))
    finally:
        lp.close()
        conn.close()


@pytest.fixture(scope="module")
def forkserver():
    # The forkserver (and the resource tracker it starts) live on across tests;
    # start them before the fd guard takes its snapshot, stop them at the end.
    from multiprocessing import forkserver as fs
    fs.ensure_running()
    yield
    fs._forkserver._stop()


def _multiprocessing_roundtrip(loop, method):
    ctx = multiprocessing.get_context(method)

    async def main():
        parent_conn, child_conn = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_mp_target, args=(child_conn, 21))
        try:
            proc.start()
            child_conn.close()
            # Wait for the result without blocking the loop.
            fut = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().add_reader(
                parent_conn.fileno(), lambda: fut.done() or fut.set_result(None))
            try:
                await asyncio.wait_for(fut, 15)
            finally:
                asyncio.get_running_loop().remove_reader(parent_conn.fileno())
            value = parent_conn.recv()
        finally:
            parent_conn.close()
            proc.join(15)
        assert proc.exitcode == 0
        proc.close()
        return value

    assert loop.run_until_complete(main()) == 42
    assert loop.run_until_complete(_exercise_loop()) == "ok"


def test_multiprocessing_fork_from_running_loop(loop):
    _multiprocessing_roundtrip(loop, "fork")


def test_multiprocessing_forkserver_from_running_loop(forkserver, loop):
    _multiprocessing_roundtrip(loop, "forkserver")


def _pool_task(value, use_cxxloop):
    # In a pool worker (forked from the test process, or from the forkserver): run a
    # fresh loop of the parent's kind and return from it.
    if use_cxxloop:
        import cxxloop
        lp = cxxloop.new_event_loop()
    else:
        lp = asyncio.new_event_loop()
    try:
        return lp.run_until_complete(asyncio.sleep(0.001, (value * 2, type(lp).__module__)))
    finally:
        lp.close()


def _process_pool_from_running_loop(loop, loop_kind, method):
    from concurrent.futures import ProcessPoolExecutor
    ctx = multiprocessing.get_context(method)
    use_cxx = is_cxx(loop_kind)

    async def main():
        ex = ProcessPoolExecutor(max_workers=2, mp_context=ctx)
        try:
            running = asyncio.get_running_loop()
            futs = [running.run_in_executor(ex, _pool_task, i, use_cxx) for i in range(6)]
            return await asyncio.wait_for(asyncio.gather(*futs), 30)
        finally:
            ex.shutdown(wait=True)

    results = loop.run_until_complete(main())
    assert [v for v, _ in results] == [0, 2, 4, 6, 8, 10]
    if use_cxx:
        modules = {m for _, m in results}
        assert all(m.startswith("cxxloop") for m in modules), modules
    # The parent's loop is unaffected.
    assert loop.run_until_complete(_exercise_loop()) == "ok"


def test_process_pool_fork_from_running_loop(loop, loop_kind):
    # run_in_executor with a fork-started ProcessPoolExecutor: the workers are forked
    # while the loop runs, each runs a new loop of the parent's kind.
    _process_pool_from_running_loop(loop, loop_kind, "fork")


def test_process_pool_forkserver_from_running_loop(forkserver, loop, loop_kind):
    _process_pool_from_running_loop(loop, loop_kind, "forkserver")
