"""How a child's exit is observed, and that nobody else's child is touched.

cxxloop watches each child itself (python/cxxloop/_process.py): a pidfd in the
engine's poller on Linux, else a thread blocked in waitpid() on that one pid.  The
`exit_watch` fixture runs each body under both mechanisms on cxxloop; stock
asyncio has one mechanism of its own (its policy's child watcher) and runs each
body once, under the "pidfd" param.
"""

import asyncio
import os
import signal
import subprocess
import threading
import time
import warnings

import pytest

from conftest import is_cxx, require_cxxloop, run_until

SH = "/bin/sh"


@pytest.fixture(params=["pidfd", "thread"])
def exit_watch(request, loop_kind, monkeypatch):
    if not is_cxx(loop_kind):
        if request.param == "thread":
            pytest.skip("stock asyncio has one child watcher; it runs under the pidfd param")
        return request.param
    process = require_cxxloop()._process
    if request.param == "pidfd":
        if not process.pidfd_available():
            pytest.skip("os.pidfd_open() is not available here")
    else:
        monkeypatch.setattr(process, "_pidfd_probe", False)
    return request.param


def run(loop, coro, timeout=10):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def wait_for_threads(count, timeout=5.0):
    """Waits until only `count` threads are left (a waitpid thread ends just after it
    hands the status over); returns the count reached."""
    deadline = time.monotonic() + timeout
    while threading.active_count() > count and time.monotonic() < deadline:
        time.sleep(0.005)
    return threading.active_count()


def wait_until_zombie(pid):
    """Blocks until the child `pid` has exited, without reaping it."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


class ExitedBeforeReturning(subprocess.Popen):
    """A Popen whose child has already exited (unreaped) when the constructor returns,
    so the loop sets up its watch on a zombie."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        wait_until_zombie(self.pid)


class ReapedBeforeReturning(subprocess.Popen):
    """A Popen that has already reaped its child when the constructor returns."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.wait()


# ---- many children, exit codes ---------------------------------------------------


def test_many_concurrent_children(loop, exit_watch):
    threads_before = threading.active_count()

    async def one(i):
        if i % 10 == 9:
            proc = await asyncio.create_subprocess_exec("sleep", "30")
            proc.send_signal(signal.SIGTERM if i % 20 == 9 else signal.SIGKILL)
        else:
            proc = await asyncio.create_subprocess_exec(
                SH, "-c", f"exit {i % 7}", stdin=subprocess.DEVNULL)
        return await proc.wait()

    async def main():
        return await asyncio.gather(*(one(i) for i in range(60)))

    results = run(loop, main(), timeout=30)
    expected = [(-signal.SIGTERM if i % 20 == 9 else -signal.SIGKILL) if i % 10 == 9
                else i % 7 for i in range(60)]
    assert results == expected
    assert wait_for_threads(threads_before) == threads_before


def test_exit_codes_and_signals(loop, exit_watch):
    async def code(cmd):
        proc = await asyncio.create_subprocess_exec(SH, "-c", cmd, stdin=subprocess.DEVNULL)
        rc = await proc.wait()
        assert await proc.wait() == rc == proc.returncode  # wait() again: same answer
        return rc

    async def main():
        return [await code(cmd) for cmd in
                ("exit 0", "exit 1", "exit 255", "kill -TERM $$", "kill -KILL $$",
                 "kill -USR1 $$")]

    assert run(loop, main()) == [0, 1, 255, -signal.SIGTERM, -signal.SIGKILL,
                                 -signal.SIGUSR1]


def test_communicate_and_protocol_order(loop, exit_watch):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            SH, "-c", "cat; exit 3", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        out, err = await proc.communicate(b"payload")
        return out, err, proc.returncode

    assert run(loop, main()) == (b"payload", None, 3)


# ---- a child that exits before, or is reaped before, the watch is set up -----------


def test_child_exited_before_watch_is_set_up(loop, exit_watch, monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", ExitedBeforeReturning)

    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", "exit 6",
                                                    stdin=subprocess.DEVNULL)
        return await proc.wait()

    assert run(loop, main()) == 6


def test_child_reaped_by_popen_before_watch_is_set_up(loop, loop_kind, exit_watch,
                                                      monkeypatch):
    if not is_cxx(loop_kind):
        pytest.skip("stock asyncio reports 255 (3.11) or raises ProcessLookupError from "
                    "pidfd_open (3.12+); cxxloop takes the status the Popen read")
    monkeypatch.setattr(subprocess, "Popen", ReapedBeforeReturning)

    async def main():
        proc = await asyncio.create_subprocess_exec(SH, "-c", "exit 5",
                                                    stdin=subprocess.DEVNULL)
        return await proc.wait()

    assert run(loop, main()) == 5


def test_status_read_by_popen_poll_is_not_lost(loop, loop_kind, exit_watch):
    # transport.close() calls Popen.poll() (so do send_signal() and friends on
    # 3.11/3.12), which can reap the child before the loop's watch sees it exit.
    tr, pr = loop.run_until_complete(loop.subprocess_exec(
        asyncio.SubprocessProtocol, SH, "-c", "exit 3", stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    popen = tr.get_extra_info("subprocess")
    try:
        wait_until_zombie(tr.get_pid())
    except ChildProcessError:
        pass  # a waitpid thread was quicker
    tr.close()
    run_until(loop, lambda: tr.get_returncode() is not None)
    if is_cxx(loop_kind):
        assert tr.get_returncode() == 3
        assert popen.returncode == 3
    else:
        # The stock watcher then finds the status gone and reports 255 (with a
        # warning), unless its own waitpid() won the race (3.11's thread).
        assert tr.get_returncode() in (3, 255)


# ---- other children keep their statuses ------------------------------------------


def test_plain_popen_child_status_not_stolen(loop, exit_watch):
    # `other` exits while the loop is watching children of its own: a loop that
    # reaped with waitpid(-1) would take its status, and Popen would then report 0.
    other = subprocess.Popen([SH, "-c", "sleep 0.2; exit 7"])
    try:
        async def main():
            procs = [await asyncio.create_subprocess_exec(SH, "-c", f"sleep 0.4; exit {i}",
                                                          stdin=subprocess.DEVNULL)
                     for i in range(5)]
            quick = [await asyncio.create_subprocess_exec(SH, "-c", "exit 1",
                                                          stdin=subprocess.DEVNULL)
                     for _ in range(5)]
            return await asyncio.gather(*(p.wait() for p in procs + quick))

        assert run(loop, main()) == [0, 1, 2, 3, 4] + [1] * 5
        # Still unreaped: its status is there for its owner.
        info = os.waitid(os.P_PID, other.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        assert info is not None and info.si_status == 7
    finally:
        assert other.wait(timeout=10) == 7


def test_posix_spawn_child_status_not_stolen(loop, exit_watch):
    pid = os.posix_spawn(SH, [SH, "-c", "sleep 0.05; exit 9"], os.environ)
    try:
        async def main():
            procs = [await asyncio.create_subprocess_exec(SH, "-c", "sleep 0.1",
                                                          stdin=subprocess.DEVNULL)
                     for _ in range(3)]
            return await asyncio.gather(*(p.wait() for p in procs))

        assert run(loop, main()) == [0, 0, 0]
    finally:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 9


# ---- no child watcher, no warning, nothing left behind --------------------------


def test_no_deprecation_warning_and_no_watcher_created(loop, loop_kind, exit_watch):
    policy = asyncio.events._event_loop_policy
    watcher_before = getattr(policy, "_watcher", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        async def main():
            proc = await asyncio.create_subprocess_exec(SH, "-c", "exit 2",
                                                        stdin=subprocess.DEVNULL)
            return await proc.wait()

        assert run(loop, main()) == 2
    if is_cxx(loop_kind):
        assert getattr(asyncio.events._event_loop_policy, "_watcher", None) is watcher_before


def test_loop_closed_while_child_runs(loop, loop_kind, exit_watch):
    if not is_cxx(loop_kind):
        pytest.skip("the stock 3.12+ pidfd watcher leaves its pidfd open when the loop "
                    "closes first")
    threads_before = threading.active_count()
    tr, pr = loop.run_until_complete(loop.subprocess_exec(
        asyncio.SubprocessProtocol, "sleep", "30", stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    popen = tr.get_extra_info("subprocess")
    loop.close()  # the pidfd is closed with it (the guard checks fds)
    # The Popen still owns its child: it can be killed and reaped as usual.
    popen.kill()
    assert popen.wait(timeout=10) == -signal.SIGKILL
    tr.close()
    assert wait_for_threads(threads_before) == threads_before
