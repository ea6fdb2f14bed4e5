"""asyncio.run(loop_factory=...), asyncio.Runner(loop_factory=...), cxxloop.run."""

import asyncio
import contextvars
import sys

import pytest

from conftest import require_cxxloop

needs_run_loop_factory = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is new in 3.12")


@needs_run_loop_factory
def test_run_with_loop_factory(loop_factory):
    async def main():
        return asyncio.get_running_loop()

    lp = asyncio.run(main(), loop_factory=loop_factory)
    assert lp is loop_factory.made[0]
    assert lp.is_closed()


@needs_run_loop_factory
def test_run_with_loop_factory_debug(loop_factory):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert asyncio.run(main(), loop_factory=loop_factory, debug=True) is True


@needs_run_loop_factory
def test_run_with_loop_factory_propagates_exception(loop_factory):
    async def main():
        await asyncio.sleep(0)
        raise LookupError("x")

    with pytest.raises(LookupError):
        asyncio.run(main(), loop_factory=loop_factory)


@needs_run_loop_factory
def test_run_cancels_leftover_tasks_and_finalizes(loop_factory):
    events = []

    async def background():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append("agen finalized")

    gens = []

    async def main():
        asyncio.create_task(background())
        g = agen()
        gens.append(g)
        await g.__anext__()
        await asyncio.sleep(0)
        return "done"

    assert asyncio.run(main(), loop_factory=loop_factory) == "done"
    assert sorted(events) == ["agen finalized", "cancelled"]


def test_runner_with_loop_factory(loop_factory):
    var = contextvars.ContextVar("v", default=0)

    async def bump():
        var.set(var.get() + 1)
        return var.get()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        lp = runner.get_loop()
        assert lp is loop_factory.made[0]
        assert runner.run(bump()) == 1
        assert runner.run(bump()) == 2   # one context across runs
        assert not lp.is_closed()
    assert lp.is_closed()


def test_runner_shuts_down_default_executor(loop_factory):
    import threading
    threads = []

    async def main():
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: threads.append(threading.current_thread()))

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert threads and not threads[0].is_alive()


def test_runner_close_without_run(loop_factory):
    runner = asyncio.Runner(loop_factory=loop_factory)
    runner.close()
    assert loop_factory.made == []


def test_runner_debug(loop_factory):
    with asyncio.Runner(loop_factory=loop_factory, debug=True) as runner:
        assert runner.get_loop().get_debug() is True


def test_run_from_running_loop_raises(loop):
    async def main():
        coro = asyncio.sleep(0)
        try:
            with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
                asyncio.run(coro)
        finally:
            coro.close()

    loop.run_until_complete(main())


# ---- cxxloop.run, compared side by side with asyncio.run -------------------


@pytest.fixture(params=["cxxloop", "asyncio"])
def run_impl(request):
    if request.param == "cxxloop":
        return require_cxxloop().run, require_cxxloop().Loop
    return asyncio.run, asyncio.AbstractEventLoop


def test_run_returns_result_and_closes_loop(run_impl):
    run, loop_type = run_impl

    async def main(x):
        await asyncio.sleep(0.001)
        return asyncio.get_running_loop(), x

    lp, x = run(main(7))
    assert x == 7
    assert isinstance(lp, loop_type)
    assert lp.is_closed()


def test_run_debug_kwarg(run_impl):
    run, _ = run_impl

    async def main():
        return asyncio.get_running_loop().get_debug()

    assert run(main(), debug=True) is True
    assert run(main(), debug=False) is False


def test_run_nested_raises(run_impl):
    run, _ = run_impl

    async def inner():
        return 1

    async def main():
        coro = inner()
        try:
            with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
                run(coro)
        finally:
            coro.close()
        return "ok"

    assert run(main()) == "ok"


def test_run_does_not_change_policy(run_impl):
    run, _ = run_impl
    before = asyncio.events._event_loop_policy

    async def main():
        return 1

    run(main())
    after = asyncio.events._event_loop_policy
    assert after is before or (before is None and after._local._loop is None)


def test_cxxloop_new_event_loop():
    cxx = require_cxxloop()
    lp = cxx.new_event_loop()
    try:
        assert isinstance(lp, cxx.Loop)
        assert lp.run_until_complete(asyncio.sleep(0, 3)) == 3
    finally:
        lp.close()


@pytest.mark.parametrize("poller", ["epoll", "poll", "select"])
def test_cxxloop_poller_env_var(poller):
    import os
    import subprocess
    require_cxxloop()
    code = ("import asyncio, cxxloop\n"
            "lp = cxxloop.new_event_loop()\n"
            "try:\n"
            "    print(lp.run_until_complete(asyncio.sleep(0.001, 'ok')))\n"
            "finally:\n"
            "    lp.close()\n")
    env = dict(os.environ, CXXLOOP_POLLER=poller)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
