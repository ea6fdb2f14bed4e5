"""run_in_executor / set_default_executor / shutdown_default_executor."""

import asyncio
import concurrent.futures
import sys
import threading
import time

import pytest

PY312 = sys.version_info >= (3, 12)


def test_run_in_default_executor(loop):
    main_thread = threading.get_ident()

    def work(a, b):
        return a + b, threading.get_ident()

    async def main():
        fut = loop.run_in_executor(None, work, 2, 3)
        assert isinstance(fut, asyncio.Future)
        return await fut

    result, tid = loop.run_until_complete(main())
    assert result == 5
    assert tid != main_thread
    loop.run_until_complete(loop.shutdown_default_executor())


def test_run_in_executor_exception(loop):
    def work():
        raise KeyError("k")

    with pytest.raises(KeyError):
        loop.run_until_complete(loop.run_in_executor(None, work))
    loop.run_until_complete(loop.shutdown_default_executor())


def test_run_in_custom_executor(loop):
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="custom-pool") as ex:
        name = loop.run_until_complete(
            loop.run_in_executor(ex, lambda: threading.current_thread().name))
    assert name.startswith("custom-pool")


def test_set_default_executor(loop):
    ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="default-pool")
    loop.set_default_executor(ex)
    name = loop.run_until_complete(
        loop.run_in_executor(None, lambda: threading.current_thread().name))
    assert name.startswith("default-pool")
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError):
        ex.submit(print)  # shut down by shutdown_default_executor


def test_set_default_executor_rejects_non_thread_pool(loop):
    class NotAPool(concurrent.futures.Executor):
        pass

    with pytest.raises(TypeError):
        loop.set_default_executor(NotAPool())
    with pytest.raises(TypeError):
        loop.set_default_executor(object())


def test_shutdown_default_executor_then_run_in_executor_fails(loop):
    loop.run_until_complete(loop.run_in_executor(None, lambda: None))
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, lambda: None)
    # A custom executor still works.
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        assert loop.run_until_complete(loop.run_in_executor(ex, lambda: 9)) == 9


def test_shutdown_default_executor_waits_for_work(loop):
    done = []

    def slow():
        time.sleep(0.05)
        done.append(1)

    async def main():
        loop.run_in_executor(None, slow)
        await asyncio.sleep(0)
        await loop.shutdown_default_executor()
        return list(done)

    assert loop.run_until_complete(main()) == [1]


def test_shutdown_default_executor_without_executor(loop):
    assert loop.run_until_complete(loop.shutdown_default_executor()) is None


@pytest.mark.skipif(sys.version_info < (3, 13),
                    reason="3.12 has timeout= but waits for the work before applying it")
def test_shutdown_default_executor_timeout(loop):
    release = threading.Event()

    async def main():
        fut = loop.run_in_executor(None, release.wait, 10)
        await asyncio.sleep(0.01)
        with pytest.warns(RuntimeWarning, match="did not finishing joining"):
            await loop.shutdown_default_executor(timeout=0.05)
        release.set()
        await fut

    loop.run_until_complete(main())


def test_close_shuts_down_default_executor(loop):
    threads = []

    def work():
        threads.append(threading.current_thread())

    loop.run_until_complete(loop.run_in_executor(None, work))
    loop.close()
    threads[0].join(5)
    assert not threads[0].is_alive()


def test_cancel_pending_executor_future(loop):
    gate = threading.Event()
    ran = []

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        async def main():
            blocker = loop.run_in_executor(ex, gate.wait, 10)
            queued = loop.run_in_executor(ex, ran.append, 1)
            queued.cancel()
            await asyncio.sleep(0)
            gate.set()
            await blocker
            with pytest.raises(asyncio.CancelledError):
                await queued

        loop.run_until_complete(main())
    assert ran == []


def test_run_in_executor_on_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.run_in_executor(None, print)


def test_to_thread(loop):
    async def main():
        return await asyncio.to_thread(lambda x: x * 3, 5)

    assert loop.run_until_complete(main()) == 15
    loop.run_until_complete(loop.shutdown_default_executor())
