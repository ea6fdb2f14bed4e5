"""Exception handler API and what happens when callbacks raise."""

import asyncio
import gc
import logging

import pytest

from conftest import run_briefly


class Boom(Exception):
    pass


def raiser(exc=Boom("boom")):
    raise exc


def test_callback_exception_goes_to_handler_and_loop_continues(loop, expect_exception_handler_calls):
    out = []
    h = loop.call_soon(raiser)
    loop.call_soon(out.append, "after")
    run_briefly(loop)
    assert out == ["after"]
    calls = expect_exception_handler_calls.take()
    assert len(calls) == 1
    ctx = calls[0]
    assert isinstance(ctx["exception"], Boom)
    assert ctx["message"].startswith("Exception in callback")
    assert ctx["handle"] is h


def test_timer_callback_exception_context(loop, expect_exception_handler_calls):
    h = loop.call_later(0, raiser)
    run_briefly(loop, 2)
    calls = expect_exception_handler_calls.take()
    assert len(calls) == 1
    assert calls[0]["handle"] is h
    assert isinstance(calls[0]["handle"], asyncio.TimerHandle)


def test_custom_base_exception_goes_to_handler(loop, expect_exception_handler_calls):
    class MyBase(BaseException):
        pass

    out = []
    loop.call_soon(raiser, MyBase())
    loop.call_soon(out.append, 1)
    run_briefly(loop)
    assert out == [1]
    calls = expect_exception_handler_calls.take()
    assert isinstance(calls[0]["exception"], MyBase)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_propagate(loop, exc_type):
    out = []
    loop.call_soon(raiser, exc_type())
    loop.call_soon(out.append, "queued")
    with pytest.raises(exc_type):
        loop.run_forever()
    assert not loop.is_running()
    assert asyncio._get_running_loop() is None
    # The loop is still usable, and the callback queued behind the raiser
    # still runs.
    run_briefly(loop)
    assert out == ["queued"]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_from_timer_and_fd_callbacks(loop, exc_type):
    loop.call_later(0.001, raiser, exc_type())
    with pytest.raises(exc_type):
        loop.run_forever()
    assert not loop.is_running()


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_in_task_propagates_from_run_until_complete(loop, exc_type):
    async def main():
        await asyncio.sleep(0)
        raise exc_type()

    with pytest.raises(exc_type):
        loop.run_until_complete(main())
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"


def test_set_get_exception_handler(loop_factory):
    lp = loop_factory.raw()
    assert lp.get_exception_handler() is None

    def handler(loop, context):
        pass

    lp.set_exception_handler(handler)
    assert lp.get_exception_handler() is handler
    lp.set_exception_handler(None)
    assert lp.get_exception_handler() is None
    with pytest.raises(TypeError):
        lp.set_exception_handler(123)
    lp.close()


def test_handler_receives_loop_and_context(loop):
    got = []
    loop.set_exception_handler(lambda lp, ctx: got.append((lp, ctx)))
    loop.call_exception_handler({"message": "hello", "extra": 1})
    assert got == [(loop, {"message": "hello", "extra": 1})]


def test_default_handler_logs_callback_exception(loop, caplog):
    loop.set_exception_handler(None)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(raiser)
        run_briefly(loop)
    recs = [r for r in caplog.records if r.name == "asyncio"]
    assert len(recs) == 1
    assert recs[0].levelno == logging.ERROR
    assert "Exception in callback" in recs[0].getMessage()
    assert recs[0].exc_info and recs[0].exc_info[0] is Boom


def test_default_exception_handler_formats_context(loop, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({"message": "custom message", "custom_key": "custom value"})
        loop.default_exception_handler({"custom_key": 1})
    recs = [r for r in caplog.records if r.name == "asyncio"]
    assert len(recs) == 2
    assert "custom message" in recs[0].getMessage()
    assert "custom_key" in recs[0].getMessage()
    assert "custom value" in recs[0].getMessage()
    assert "Unhandled exception in event loop" in recs[1].getMessage()


def test_default_exception_handler_with_exception(loop, caplog):
    try:
        raise Boom("inner")
    except Boom as e:
        exc = e
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({"message": "m", "exception": exc})
    recs = [r for r in caplog.records if r.name == "asyncio"]
    assert recs[0].exc_info[1] is exc


def test_call_exception_handler_without_custom_handler_logs(loop, caplog):
    loop.set_exception_handler(None)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "direct call"})
    assert any("direct call" in r.getMessage() for r in caplog.records if r.name == "asyncio")


def test_error_in_custom_handler_is_logged(loop, caplog):
    def bad_handler(lp, ctx):
        raise ZeroDivisionError("handler broke")

    loop.set_exception_handler(bad_handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(raiser)
        run_briefly(loop)
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert any("Unhandled error in exception handler" in m for m in msgs)
    excs = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert any(isinstance(e, ZeroDivisionError) for e in excs)


def test_subclass_overriding_default_exception_handler(loop_kind, loop_factory):
    # A subclass can override default_exception_handler; call_exception_handler
    # uses it when no custom handler is set.
    import conftest
    if loop_kind == "asyncio":
        base = asyncio.SelectorEventLoop
    elif loop_kind == "cxxloop-pyselector":
        base = conftest.require_cxxloop().SelectorEventLoop
    elif loop_kind == "cxxloop-proactor":
        base = conftest.require_cxxloop().ProactorEventLoop
    else:
        base = conftest.require_cxxloop().Loop
    seen = []

    class Sub(base):
        def default_exception_handler(self, context):
            seen.append(context["message"])

    if loop_kind == "cxxloop-pyselector":
        import selectors
        lp = Sub(selectors.SelectSelector())
    elif loop_kind == "cxxloop-proactor":
        lp = Sub()
    elif loop_kind.startswith("cxxloop-"):
        lp = Sub(poller=loop_kind.split("-", 1)[1])
    else:
        lp = Sub()
    try:
        lp.call_soon(raiser)
        lp.stop()
        lp.run_forever()
    finally:
        lp.close()
    gc.collect()
    assert seen and seen[0].startswith("Exception in callback")


def test_task_exception_never_retrieved(loop, expect_exception_handler_calls):
    async def failing():
        raise Boom("lost")

    t = loop.create_task(failing())
    run_briefly(loop, 2)
    assert t.done()
    del t
    gc.collect()
    calls = expect_exception_handler_calls.take()
    assert len(calls) == 1
    assert calls[0]["message"] == "Task exception was never retrieved"
    assert isinstance(calls[0]["exception"], Boom)


def test_exception_in_done_callback(loop, expect_exception_handler_calls):
    fut = loop.create_future()
    fut.add_done_callback(lambda f: raiser())
    fut.set_result(None)
    run_briefly(loop)
    calls = expect_exception_handler_calls.take()
    assert len(calls) == 1 and isinstance(calls[0]["exception"], Boom)


# ---- Python-level signal handlers while the loop blocks in the poller ------
# (Ctrl-C must not be ignored while the loop sleeps.  Not add_signal_handler:
# plain signal.signal handlers, which run when the wait is interrupted.)

import os
import signal
import threading
import time


def _interrupt_main_after(delay, signum):
    main_ident = threading.main_thread().ident

    def fire():
        time.sleep(delay)
        signal.pthread_kill(main_ident, signum)

    th = threading.Thread(target=fire)
    th.start()
    return th


def test_signal_handler_exception_interrupts_blocked_loop(loop):
    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGUSR1, handler)
    far = loop.call_later(30, loop.stop)
    th = _interrupt_main_after(0.05, signal.SIGUSR1)
    try:
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
        assert time.monotonic() - t0 < 10
    finally:
        th.join()
        signal.signal(signal.SIGUSR1, old)
    assert not loop.is_running()
    assert asyncio._get_running_loop() is None
    far.cancel()
    # Still usable.
    assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"


def test_signal_handler_runs_promptly_while_loop_blocks(loop):
    ran = []
    timer_fired = []

    def handler(signum, frame):
        ran.append(bool(timer_fired))

    def on_timer():
        timer_fired.append(True)
        loop.stop()

    old = signal.signal(signal.SIGUSR1, handler)
    t0 = time.monotonic()
    loop.call_later(0.6, on_timer)
    th = _interrupt_main_after(0.02, signal.SIGUSR1)
    try:
        loop.run_forever()
        t1 = time.monotonic()
    finally:
        th.join()
        signal.signal(signal.SIGUSR1, old)
    # The handler ran during the wait, before the timer woke the loop, and the
    # interrupted wait did not end early.
    assert ran == [False]
    assert t1 - t0 >= 0.6 - 1e-6
