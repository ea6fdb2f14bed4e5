"""create_future / create_task / task factories."""

import asyncio
import contextvars
import sys

import pytest

from conftest import run_briefly

PY312 = sys.version_info >= (3, 12)
PY314 = sys.version_info >= (3, 14)


async def coro_result(x):
    await asyncio.sleep(0)
    return x


def test_create_future(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert not fut.done()
    loop.call_soon(fut.set_result, 7)
    assert loop.run_until_complete(fut) == 7


def test_future_done_callbacks_run_via_loop(loop):
    fut = loop.create_future()
    out = []
    fut.add_done_callback(lambda f: out.append(f.result()))
    fut.set_result(3)
    assert out == []  # scheduled with call_soon, not called synchronously
    run_briefly(loop)
    assert out == [3]


def test_create_task_basics(loop):
    task = loop.create_task(coro_result(5))
    assert isinstance(task, asyncio.Task)
    assert task.get_loop() is loop
    assert not task.done()
    assert loop.run_until_complete(task) == 5


def test_create_task_name(loop):
    t1 = loop.create_task(coro_result(1), name="my-task")
    assert t1.get_name() == "my-task"
    t2 = loop.create_task(coro_result(2))
    assert t2.get_name().startswith("Task-")
    loop.run_until_complete(asyncio.gather(t1, t2))


def test_create_task_context(loop):
    var = contextvars.ContextVar("v", default="default")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "ctx")

    async def read():
        await asyncio.sleep(0)
        return var.get()

    assert loop.run_until_complete(loop.create_task(read(), context=ctx)) == "ctx"
    assert loop.run_until_complete(loop.create_task(read())) == "default"


def test_create_task_on_closed_loop(loop):
    loop.close()
    coro = coro_result(1)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.create_task(coro)
    coro.close()


def test_task_runs_only_when_loop_runs(loop):
    out = []

    async def f():
        out.append(1)

    t = loop.create_task(f())
    assert out == []
    loop.run_until_complete(t)
    assert out == [1]


def test_current_task_and_all_tasks(loop):
    async def main():
        me = asyncio.current_task()
        assert me is not None and me.get_loop() is loop
        other = asyncio.ensure_future(asyncio.sleep(0.01))
        assert {me, other} <= asyncio.all_tasks()
        assert asyncio.all_tasks(loop) == asyncio.all_tasks()
        await other
        return me

    t = loop.create_task(main())
    assert loop.run_until_complete(t) is t


def test_cancel_task_before_it_starts(loop):
    started = []

    async def f():
        started.append(1)

    t = loop.create_task(f())
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(t)
    assert started == []
    assert t.cancelled()


def test_gather_and_wait(loop):
    async def main():
        res = await asyncio.gather(*(coro_result(i) for i in range(50)))
        tasks = [asyncio.ensure_future(coro_result(i)) for i in range(5)]
        done, pending = await asyncio.wait(tasks)
        return res, sorted(t.result() for t in done), pending

    res, done, pending = loop.run_until_complete(main())
    assert res == list(range(50))
    assert done == [0, 1, 2, 3, 4]
    assert pending == set()


# ---- task factory -----------------------------------------------------------


def test_task_factory_default_is_none(loop):
    assert loop.get_task_factory() is None


def test_set_task_factory_rejects_non_callable(loop):
    with pytest.raises(TypeError):
        loop.set_task_factory(1)
    assert loop.get_task_factory() is None


def test_task_factory_called_without_context_kwarg(loop):
    # PITFALLS 11: no context= when the caller gave none.
    calls = []

    def factory(lp, coro):  # would raise TypeError if context= were passed
        calls.append(lp)
        return asyncio.Task(coro, loop=lp)

    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory
    t = loop.create_task(coro_result(1))
    assert calls == [loop]
    assert loop.run_until_complete(t) == 1

    # run_until_complete(coro) and ensure_future go through the factory too.
    assert loop.run_until_complete(coro_result(2)) == 2
    assert len(calls) == 2


def test_task_factory_receives_context_when_given(loop):
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append(kwargs)
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    ctx = contextvars.copy_context()
    t = loop.create_task(coro_result(1), context=ctx)
    loop.run_until_complete(t)
    assert calls and calls[0].get("context") is ctx


def test_task_factory_name_applied(loop):
    def factory(lp, coro, **kwargs):
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    t = loop.create_task(coro_result(1), name="named")
    assert t.get_name() == "named"
    loop.run_until_complete(t)


def test_task_factory_reset_to_none(loop):
    used = []

    def factory(lp, coro):
        used.append(1)
        return asyncio.Task(coro, loop=lp)

    loop.set_task_factory(factory)
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    loop.run_until_complete(loop.create_task(coro_result(1)))
    assert used == []


def test_task_factory_can_return_task_subclass(loop):
    class MyTask(asyncio.Task):
        pass

    loop.set_task_factory(lambda lp, coro: MyTask(coro, loop=lp))

    async def main():
        return type(asyncio.current_task())

    assert loop.run_until_complete(main()) is MyTask


@pytest.mark.skipif(not PY312, reason="eager_task_factory is new in 3.12")
def test_eager_task_factory(loop):
    loop.set_task_factory(asyncio.eager_task_factory)
    out = []

    async def sync_body():
        out.append("ran")
        return 1

    async def main():
        t = loop.create_task(sync_body())
        # Ran eagerly, synchronously inside create_task.
        assert out == ["ran"]
        assert t.done() and t.result() == 1
        t2 = loop.create_task(coro_result(2))
        assert not t2.done()
        return await t2

    assert loop.run_until_complete(main()) == 2


@pytest.mark.skipif(not PY314, reason="create_task(**kwargs) / eager_start are 3.14+")
def test_create_task_eager_start(loop):
    out = []

    async def body():
        out.append("ran")
        return 1

    async def main():
        t = loop.create_task(body(), eager_start=True)
        assert out == ["ran"] and t.done()
        t2 = loop.create_task(body(), eager_start=False)
        assert out == ["ran"] and not t2.done()
        return await t2

    assert loop.run_until_complete(main()) == 1


@pytest.mark.skipif(not PY314, reason="create_task(**kwargs) is 3.14+")
def test_create_task_kwargs_forwarded_to_factory(loop):
    seen = []

    def factory(lp, coro, **kwargs):
        seen.append(kwargs)
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    loop.run_until_complete(loop.create_task(coro_result(1), name="n", eager_start=True))
    assert seen[0].get("eager_start") is True
