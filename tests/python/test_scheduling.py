"""call_soon and the ready queue: ordering, passes, stop(), contexts."""

import asyncio
import contextvars
import functools

import pytest

from conftest import run_briefly


def test_call_soon_runs_callbacks_fifo_with_args(loop):
    out = []
    for i in range(10):
        loop.call_soon(out.append, i)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == list(range(10))


def test_call_soon_multiple_args_and_partial(loop):
    out = []
    loop.call_soon(lambda *a: out.append(a), 1, "two", None)
    loop.call_soon(functools.partial(out.append, "p"))
    run_briefly(loop)
    assert out == [(1, "two", None), "p"]


def test_call_soon_rejects_keyword_arguments(loop):
    with pytest.raises(TypeError):
        loop.call_soon(print, x=1)


def test_call_soon_returns_handle_not_timerhandle(loop):
    h = loop.call_soon(lambda: None)
    assert isinstance(h, asyncio.Handle)
    assert not isinstance(h, asyncio.TimerHandle)
    run_briefly(loop)


def test_callbacks_added_during_a_pass_run_next_pass(loop):
    out = []

    def a():
        out.append("a")
        loop.call_soon(b)

    def b():
        out.append("b")

    def c():
        out.append("c")

    loop.call_soon(a)
    loop.call_soon(c)
    run_briefly(loop)
    # a and c were in the queue at the start of the pass; b was added during it.
    assert out == ["a", "c"]
    run_briefly(loop)
    assert out == ["a", "c", "b"]


def test_stop_before_run_forever_runs_exactly_one_iteration(loop):
    out = []

    def first():
        out.append(1)
        loop.call_soon(second)

    def second():
        out.append(2)

    loop.call_soon(first)
    loop.stop()
    loop.run_forever()
    assert out == [1]
    assert not loop.is_running()
    # The callback added during that iteration is still queued.
    loop.stop()
    loop.run_forever()
    assert out == [1, 2]


def test_stop_inside_callback_finishes_current_pass(loop):
    out = []
    loop.call_soon(out.append, 1)
    loop.call_soon(loop.stop)
    loop.call_soon(out.append, 2)          # same pass: still runs
    loop.call_soon(lambda: loop.call_soon(out.append, 3))  # next pass: not yet
    loop.run_forever()
    assert out == [1, 2]
    run_briefly(loop)
    assert out == [1, 2, 3]


def test_stop_twice_is_harmless(loop):
    loop.stop()
    loop.stop()
    loop.run_forever()
    assert not loop.is_running()
    out = []
    loop.call_soon(out.append, 1)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == [1]


def test_iteration_counting_with_ticker(loop):
    # A self-rescheduling callback runs exactly once per iteration.
    count = 0

    def tick():
        nonlocal count
        count += 1
        if count == 5:
            loop.stop()
        else:
            loop.call_soon(tick)

    loop.call_soon(tick)
    loop.run_forever()
    assert count == 5


def test_many_callbacks(loop):
    n = 50_000
    out = []
    app = out.append
    for i in range(n):
        loop.call_soon(app, i)
    run_briefly(loop)
    assert out == list(range(n))


var = contextvars.ContextVar("var", default="default")


def test_call_soon_copies_current_context_by_default(loop):
    seen = []
    token = var.set("at-schedule-time")
    try:
        loop.call_soon(lambda: seen.append(var.get()))
    finally:
        var.reset(token)
    run_briefly(loop)
    assert seen == ["at-schedule-time"]


def test_call_soon_with_explicit_context(loop):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in-ctx")
    seen = []

    def cb():
        seen.append(var.get())
        var.set("changed-by-callback")

    loop.call_soon(cb, context=ctx)
    run_briefly(loop)
    assert seen == ["in-ctx"]
    # The callback ran inside ctx itself, so its change is visible there...
    assert ctx[var] == "changed-by-callback"
    # ...and not outside.
    assert var.get() == "default"


def test_callback_context_changes_do_not_leak_between_callbacks(loop):
    seen = []

    def setter():
        var.set("leaked?")

    loop.call_soon(setter)
    loop.call_soon(lambda: seen.append(var.get()))
    run_briefly(loop)
    assert seen == ["default"]


def test_call_soon_from_callback_inside_run_until_complete(loop):
    out = []

    async def main():
        loop.call_soon(out.append, "x")
        await asyncio.sleep(0)
        return out[:]

    assert loop.run_until_complete(main()) == ["x"]


def test_sleep_zero_yields_exactly_one_iteration(loop):
    out = []

    async def main():
        loop.call_soon(out.append, "cb")
        out.append("before")
        await asyncio.sleep(0)
        out.append("after")

    loop.run_until_complete(main())
    assert out == ["before", "cb", "after"]


def test_cancelled_handle_in_same_pass_is_skipped(loop):
    out = []
    handles = {}

    def a():
        out.append("a")
        handles["b"].cancel()

    loop.call_soon(a)
    handles["b"] = loop.call_soon(out.append, "b")
    loop.call_soon(out.append, "c")
    run_briefly(loop)
    assert out == ["a", "c"]


def test_call_soon_on_closed_loop_raises(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_soon(lambda: None)
