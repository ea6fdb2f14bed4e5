"""call_soon_threadsafe and cross-thread wake-ups."""

import asyncio
import concurrent.futures
import contextvars
import threading
import time

import pytest

from conftest import run_briefly


def test_threadsafe_wakes_sleeping_loop(loop):
    far = loop.call_later(30, loop.stop)

    def poke():
        time.sleep(0.05)
        loop.call_soon_threadsafe(loop.stop)

    th = threading.Thread(target=poke)
    t0 = time.monotonic()
    th.start()
    loop.run_forever()
    elapsed = time.monotonic() - t0
    th.join()
    far.cancel()
    assert elapsed < 10


def test_threadsafe_returns_handle_and_runs_in_loop_thread(loop):
    loop_thread = threading.get_ident()
    ran_in = []
    handles = []

    def in_thread():
        handles.append(loop.call_soon_threadsafe(lambda: ran_in.append(threading.get_ident())))

    async def main():
        th = threading.Thread(target=in_thread)
        th.start()
        while not ran_in:
            await asyncio.sleep(0.001)
        th.join()

    loop.run_until_complete(main())
    assert ran_in == [loop_thread]
    assert isinstance(handles[0], asyncio.Handle)
    assert not isinstance(handles[0], asyncio.TimerHandle)


def test_threadsafe_from_loop_thread_behaves_like_call_soon(loop):
    out = []
    loop.call_soon_threadsafe(out.append, 1)
    loop.call_soon(out.append, 2)
    loop.call_soon_threadsafe(out.append, 3)
    run_briefly(loop)
    assert out == [1, 2, 3]


def test_threadsafe_with_context(loop):
    var = contextvars.ContextVar("v", default="default")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "ctx")
    seen = []
    loop.call_soon_threadsafe(lambda: seen.append(var.get()), context=ctx)
    run_briefly(loop)
    assert seen == ["ctx"]


def test_threadsafe_cancel_before_run(loop):
    out = []
    h = loop.call_soon_threadsafe(out.append, 1)
    h.cancel()
    run_briefly(loop)
    assert out == []


def test_threadsafe_on_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_soon_threadsafe(lambda: None)


def test_many_threads_preserve_per_thread_order(loop):
    n_threads, per_thread = 4, 2000
    results = {i: [] for i in range(n_threads)}
    barrier = threading.Barrier(n_threads)

    def producer(i):
        barrier.wait()
        app = results[i].append
        for j in range(per_thread):
            loop.call_soon_threadsafe(app, j)

    async def main():
        threads = [threading.Thread(target=producer, args=(i,)) for i in range(n_threads)]
        for t in threads:
            t.start()
        deadline = loop.time() + 10
        while sum(map(len, results.values())) < n_threads * per_thread:
            assert loop.time() < deadline, "callbacks lost"
            await asyncio.sleep(0.001)
        for t in threads:
            t.join()

    loop.run_until_complete(main())
    for i in range(n_threads):
        assert results[i] == list(range(per_thread))


def test_threadsafe_while_loop_not_running_runs_later(loop):
    out = []
    th = threading.Thread(target=lambda: loop.call_soon_threadsafe(out.append, "x"))
    th.start()
    th.join()
    assert out == []
    run_briefly(loop)
    assert out == ["x"]


def test_set_future_result_from_thread(loop):
    async def main():
        fut = loop.create_future()

        def worker():
            time.sleep(0.01)
            loop.call_soon_threadsafe(fut.set_result, "from thread")

        th = threading.Thread(target=worker)
        th.start()
        try:
            return await asyncio.wait_for(fut, 10)
        finally:
            th.join()

    assert loop.run_until_complete(main()) == "from thread"


def test_run_coroutine_threadsafe(loop):
    async def add(a, b):
        await asyncio.sleep(0.001)
        return a + b

    result = []

    def client():
        cf = asyncio.run_coroutine_threadsafe(add(1, 2), loop)
        assert isinstance(cf, concurrent.futures.Future)
        result.append(cf.result(10))
        loop.call_soon_threadsafe(loop.stop)

    th = threading.Thread(target=client)
    th.start()
    loop.run_forever()
    th.join()
    assert result == [3]


def test_loop_running_in_thread_driven_from_main(loop):
    started = threading.Event()

    def runner():
        loop.call_soon(started.set)
        loop.run_forever()

    th = threading.Thread(target=runner)
    th.start()
    assert started.wait(10)
    try:
        cf = asyncio.run_coroutine_threadsafe(asyncio.sleep(0.01, "done"), loop)
        assert cf.result(10) == "done"
        assert loop.is_running()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        th.join(10)
    assert not th.is_alive()
    assert not loop.is_running()
