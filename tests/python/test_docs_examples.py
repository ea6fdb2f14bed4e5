"""Examples from the asyncio documentation, run on each loop."""

import asyncio
import datetime
import selectors

import pytest

from conftest import require_cxxloop


@pytest.fixture(params=["cxxloop", "asyncio"])
def loop_module(request):
    """The module providing SelectorEventLoop: cxxloop or asyncio."""
    if request.param == "cxxloop":
        return require_cxxloop()
    return asyncio


def test_select_selector_example(loop_module):
    # docs, "Event Loop Implementations" / macOS note:
    #   selector = selectors.SelectSelector()
    #   loop = asyncio.SelectorEventLoop(selector)
    #   asyncio.set_event_loop(loop)
    selector = selectors.SelectSelector()
    loop = loop_module.SelectorEventLoop(selector)
    asyncio.set_event_loop(loop)
    try:
        assert asyncio.get_event_loop() is loop

        async def main():
            await asyncio.sleep(0.001)
            assert asyncio.get_running_loop() is loop
            return "ran"

        assert loop.run_until_complete(main()) == "ran"
    finally:
        asyncio.set_event_loop(None)
        loop.close()


@pytest.mark.parametrize("selector_cls", ["SelectSelector", "PollSelector", "EpollSelector", "DefaultSelector"])
def test_selector_event_loop_accepts_any_selector(loop_module, selector_cls):
    sel = getattr(selectors, selector_cls)()
    loop = loop_module.SelectorEventLoop(sel)
    try:
        fired = []
        loop.call_later(0.001, fired.append, 1)
        loop.run_until_complete(asyncio.sleep(0.005))
        assert fired == [1]
    finally:
        loop.close()


def test_selector_event_loop_default_selector(loop_module):
    loop = loop_module.SelectorEventLoop()
    try:
        assert loop.run_until_complete(asyncio.sleep(0, 1)) == 1
    finally:
        loop.close()


def test_hello_world_call_soon(loop):
    # docs, "Hello World with call_soon()"
    printed = []

    def hello_world(loop):
        """A callback to print 'Hello World' and stop the event loop"""
        printed.append("Hello World")
        loop.stop()

    loop.call_soon(hello_world, loop)
    loop.run_forever()
    assert printed == ["Hello World"]


def test_display_date_call_later(loop):
    # docs, "Display the current date with call_later()" (shortened).
    printed = []

    def display_date(end_time, loop):
        printed.append(datetime.datetime.now())
        if (loop.time() + 0.01) < end_time:
            loop.call_later(0.01, display_date, end_time, loop)
        else:
            loop.stop()

    end_time = loop.time() + 0.05
    loop.call_soon(display_date, end_time, loop)
    loop.run_forever()
    assert 2 <= len(printed) <= 10
    assert printed == sorted(printed)


def test_set_result_on_future_example(loop):
    # docs, Futures: "set_after(fut, delay, value)" pattern.
    async def set_after(fut, delay, value):
        await asyncio.sleep(delay)
        fut.set_result(value)

    async def main():
        lp = asyncio.get_running_loop()
        fut = lp.create_future()
        lp.create_task(set_after(fut, 0.01, "... world"))
        return await fut

    assert loop.run_until_complete(main()) == "... world"


def test_run_in_executor_example(loop):
    # docs, "Executing code in thread or process pools" (thread pool part).
    import concurrent.futures

    def blocking_io():
        return sum(range(1000))

    async def main():
        lp = asyncio.get_running_loop()
        r1 = await lp.run_in_executor(None, blocking_io)
        with concurrent.futures.ThreadPoolExecutor() as pool:
            r2 = await lp.run_in_executor(pool, blocking_io)
        return r1, r2

    assert loop.run_until_complete(main()) == (499500, 499500)
    loop.run_until_complete(loop.shutdown_default_executor())


def test_runner_example(loop_factory):
    # docs, asyncio.Runner
    async def main():
        await asyncio.sleep(0.001)
        return "hello"

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(main()) == "hello"
