"""Handle / TimerHandle semantics: cancel, cancelled, when, get_context, repr."""

import asyncio
import contextvars
import gc
import sys
import time
import weakref

import pytest

from conftest import run_briefly

needs_get_context = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="Handle.get_context() is new in 3.12")


def some_callback():
    pass


def test_handle_types(loop):
    h1 = loop.call_soon(some_callback)
    h2 = loop.call_later(1, some_callback)
    h3 = loop.call_at(loop.time() + 1, some_callback)
    h4 = loop.call_soon_threadsafe(some_callback)
    assert isinstance(h1, asyncio.Handle) and not isinstance(h1, asyncio.TimerHandle)
    assert isinstance(h4, asyncio.Handle) and not isinstance(h4, asyncio.TimerHandle)
    assert isinstance(h2, asyncio.TimerHandle)
    assert isinstance(h3, asyncio.TimerHandle)
    for h in (h1, h2, h3, h4):
        h.cancel()


def test_cancel_and_cancelled(loop):
    out = []
    h = loop.call_soon(out.append, 1)
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()
    h.cancel()  # idempotent
    assert h.cancelled()
    run_briefly(loop)
    assert out == []


def test_cancel_after_run_is_harmless(loop):
    out = []
    h = loop.call_soon(out.append, 1)
    t = loop.call_later(0, out.append, 2)
    run_briefly(loop)
    assert sorted(out) == [1, 2]
    h.cancel()
    t.cancel()
    assert h.cancelled() and t.cancelled()
    run_briefly(loop)
    assert sorted(out) == [1, 2]


def test_timerhandle_when_and_cancel(loop):
    out = []
    when = loop.time() + 0.01
    t = loop.call_at(when, out.append, 1)
    assert t.when() == when
    assert not t.cancelled()
    t.cancel()
    assert t.cancelled()
    assert t.when() == when
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert out == []


def test_handle_repr(loop):
    h = loop.call_soon(some_callback)
    r = repr(h)
    assert r.startswith("<Handle")
    assert "some_callback" in r
    h.cancel()
    assert "cancelled" in repr(h)

    t = loop.call_at(loop.time() + 100, some_callback)
    r = repr(t)
    assert r.startswith("<TimerHandle")
    assert "when=" in r
    assert "some_callback" in r
    t.cancel()
    assert "cancelled" in repr(t)


@needs_get_context
def test_get_context_explicit(loop):
    ctx = contextvars.copy_context()
    assert loop.call_soon(some_callback, context=ctx).get_context() is ctx
    assert loop.call_later(1, some_callback, context=ctx).get_context() is ctx
    assert loop.call_at(1, some_callback, context=ctx).get_context() is ctx
    assert loop.call_soon_threadsafe(some_callback, context=ctx).get_context() is ctx
    loop.close()  # drop the scheduled handles


@needs_get_context
def test_get_context_default_is_a_copy(loop):
    var = contextvars.ContextVar("v")
    token = var.set("x")
    try:
        h = loop.call_soon(some_callback)
        t = loop.call_later(1, some_callback)
    finally:
        var.reset(token)
    for handle in (h, t):
        ctx = handle.get_context()
        assert isinstance(ctx, contextvars.Context)
        assert ctx[var] == "x"
    t.cancel()
    run_briefly(loop)


class Target:
    def method(self):
        pass


def test_cancelled_handle_releases_callback(loop):
    obj = Target()
    ref = weakref.ref(obj)
    h = loop.call_soon(obj.method)
    t = loop.call_later(10, obj.method)
    del obj
    h.cancel()
    t.cancel()
    gc.collect()
    assert ref() is None
    run_briefly(loop)


def test_loop_releases_callback_after_run(loop):
    obj = Target()
    ref = weakref.ref(obj)
    loop.call_soon(obj.method)
    loop.call_later(0, obj.method)
    loop.call_soon_threadsafe(obj.method)
    del obj
    run_briefly(loop, 2)
    gc.collect()
    assert ref() is None


def test_close_releases_pending_callbacks(loop):
    obj = Target()
    ref = weakref.ref(obj)
    loop.call_soon(obj.method)
    loop.call_later(100, obj.method)
    loop.call_soon_threadsafe(obj.method)
    del obj
    loop.close()
    gc.collect()
    assert ref() is None



def test_memory_of_a_burst_is_given_back(loop_factory):
    # cxxloop keeps dead handles for reuse; what a burst left behind must go back
    # to the allocator once the loops have not needed it for a while (about 1 s).
    def burst(n):
        lp = loop_factory()
        for _ in range(n):
            lp.call_soon(some_callback)
            lp.call_later(0, some_callback)
        lp.call_soon(lp.stop)
        lp.run_forever()
        lp.close()

    def idle_pass():
        lp = loop_factory()
        lp.close()

    burst(100)
    gc.collect()
    before = sys.getallocatedblocks()
    burst(20000)
    time.sleep(1.05)
    idle_pass()  # The first check after the burst starts an idle period...
    time.sleep(1.05)
    idle_pass()  # ...and the next, a period later, frees what stayed unused.
    gc.collect()
    assert sys.getallocatedblocks() - before < 5000


def test_an_idle_loop_gives_a_burst_back_without_any_wakeup(loop):
    # A server that goes idle after a burst, with no timer and no I/O, still gives
    # the handles back: the loop caps its sleep so the trim check comes round.
    import threading

    for _ in range(20000):
        loop.call_soon(some_callback)
        loop.call_later(0, some_callback)
    loop.run_until_complete(asyncio.sleep(0))
    gc.collect()
    seen = {}

    def watcher():
        time.sleep(2.6)  # Two trim periods and some slack.
        gc.collect()
        seen["blocks"] = sys.getallocatedblocks()
        loop.call_soon_threadsafe(loop.stop)

    before = sys.getallocatedblocks()
    t = threading.Thread(target=watcher)
    t.start()
    loop.run_forever()  # Nothing scheduled: the loop sleeps until the watcher stops it.
    t.join()
    assert before - seen["blocks"] > -1000   # never grew
    if type(loop).__module__.startswith("cxxloop"):
        # cxxloop held ~40k dead handles right after the burst; they are gone now.
        assert before - seen["blocks"] > 20000

