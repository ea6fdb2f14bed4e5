"""One test per item of the team's PITFALLS list (shared/PITFALLS.md) that concerns the loop
foundation (numbers refer to that list).  Several are also covered in the
feature files; these are the canonical pins."""

import asyncio
import gc
import os
import sys
import time

import pytest

from conftest import run_briefly

RES = time.get_clock_info("monotonic").resolution


def test_pitfall_02_run_until_complete_no_extra_iteration(loop):
    progress = []

    async def worker():
        for i in range(100):
            progress.append(i)
            await asyncio.sleep(0)

    async def main():
        loop.create_task(worker())
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    # Iteration 1: main starts the worker; 2-3: worker steps 0-1 alongside
    # main, which finishes in 3; 4: the done-callback stops the loop while the
    # worker takes step 2.  Nothing runs after that iteration.
    assert progress == [0, 1, 2]
    (t,) = [t for t in asyncio.all_tasks(loop)]
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(t)
    assert progress == [0, 1, 2]


def test_pitfall_08_remove_reader_writer_return_bool(loop):
    r, w = os.pipe()
    try:
        assert loop.remove_reader(r) is False
        assert loop.remove_writer(w) is False
        loop.add_reader(r, lambda: None)
        loop.add_writer(w, lambda: None)
        assert loop.remove_reader(r) is True
        assert loop.remove_writer(w) is True
        assert loop.remove_reader(r) is False
        assert loop.remove_writer(w) is False
    finally:
        os.close(r)
        os.close(w)


def test_pitfall_11_task_factory_without_context_kwarg(loop):
    calls = []

    def factory(lp, coro):
        calls.append(lp)
        return asyncio.Task(coro, loop=lp)

    loop.set_task_factory(factory)
    loop.run_until_complete(loop.create_task(asyncio.sleep(0)))
    loop.run_until_complete(asyncio.sleep(0))
    assert calls == [loop, loop]


def test_pitfall_13_nested_run_until_complete_warns_never_awaited(loop):
    async def nested():
        pass

    async def main():
        coro = nested()
        with pytest.raises(RuntimeError, match="This event loop is already running"):
            loop.run_until_complete(coro)

    with pytest.warns(RuntimeWarning, match=r"coroutine '.*nested' was never awaited"):
        loop.run_until_complete(main())
        gc.collect()


def test_pitfall_17_same_deadline_timeout_at_expires_same_iteration(loop):
    iteration = 0
    ticking = True
    expired = {}

    def tick():
        nonlocal iteration
        iteration += 1
        if ticking:
            loop.call_soon(tick)

    late = []

    async def waiter(name, deadline, delay):
        await asyncio.sleep(delay)
        if loop.time() >= deadline - 0.01:
            late.append(name)
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.sleep(10)
        except TimeoutError:
            expired[name] = iteration

    async def main():
        nonlocal ticking
        loop.call_soon(tick)
        deadline = loop.time() + 0.1503
        await asyncio.gather(waiter("a", deadline, 0), waiter("b", deadline, 0.0071),
                             waiter("c", deadline, 0.0349))
        ticking = False
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    if late:
        pytest.skip(f"machine too slow: {late} entered timeout_at() at its deadline")
    assert expired["a"] == expired["b"] == expired["c"]


def test_tracker_nanosecond_timers_never_early(loop):
    async def main():
        early = []
        for d in (0.0001, 0.0005, 0.0009, 0.001, 0.0011, 0.0101, 0.1):
            t0 = time.monotonic()
            lt0 = loop.time()
            await asyncio.sleep(d)
            if time.monotonic() - t0 < d - RES or loop.time() - lt0 < d - RES:
                early.append(d)
        return early

    assert loop.run_until_complete(main()) == []


def test_tracker_call_later_zero_returns_timerhandle(loop):
    h = loop.call_later(0, lambda: None)
    assert isinstance(h, asyncio.TimerHandle)
    assert isinstance(loop.call_later(0.0, lambda: None), asyncio.TimerHandle)
    run_briefly(loop, 2)


@pytest.mark.skipif(sys.version_info < (3, 14), reason="create_task(**kwargs)/eager_start are 3.14+")
def test_tracker_create_task_kwargs_eager_start(loop):
    seen = []

    async def body():
        seen.append("ran")
        return 1

    async def main():
        t = loop.create_task(body(), eager_start=True, name="eager")
        assert seen == ["ran"] and t.done() and t.get_name() == "eager"
        return t.result()

    assert loop.run_until_complete(main()) == 1


def test_tracker_create_task_name_and_context_kwargs(loop):
    # The keywords every supported Python has.
    import contextvars
    ctx = contextvars.copy_context()
    t = loop.create_task(asyncio.sleep(0, "v"), name="n", context=ctx)
    assert t.get_name() == "n"
    assert loop.run_until_complete(t) == "v"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_task_factory is 3.12+")
def test_tracker_eager_task_factory(loop):
    loop.set_task_factory(asyncio.eager_task_factory)

    async def body():
        return 5

    async def main():
        t = loop.create_task(body())
        assert t.done()
        return t.result()

    assert loop.run_until_complete(main()) == 5
