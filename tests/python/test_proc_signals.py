"""add_signal_handler / remove_signal_handler, and Ctrl-C under the runners.

These need neither pipes nor subprocesses, so they run on every loop now
(cxxloop delivers signals through Python's signal wakeup fd).

Signals are sent from a helper thread with pthread_kill() to the main thread
while the loop sleeps in its poller, or raised synchronously with
signal.raise_signal() (the C-level handler writes to the wakeup fd at once).
"""

import asyncio
import os
import signal
import sys
import threading
import time

import pytest

from conftest import require_cxxloop, run_briefly, run_until

needs_run_loop_factory = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is new in 3.12")

MAIN_IDENT = threading.main_thread().ident



def kill_main_later(delay, signum, count=1):
    """Send `signum` to the main thread `count` times after `delay` seconds."""
    def fire():
        time.sleep(delay)
        for _ in range(count):
            signal.pthread_kill(MAIN_IDENT, signum)

    th = threading.Thread(target=fire)
    th.start()
    return th


def wakeup_fd():
    """The current signal wakeup fd (-1 if none), leaving it unchanged."""
    fd = signal.set_wakeup_fd(-1)
    if fd != -1:
        signal.set_wakeup_fd(fd)
    return fd


@pytest.fixture(autouse=True)
def _restore_signals():
    """Put the dispositions and the wakeup fd back whatever the test did."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT,
                                              signal.SIGHUP)}
    assert wakeup_fd() == -1, "an earlier test left a signal wakeup fd set"
    yield
    for s, h in saved.items():
        signal.signal(s, h)
    signal.set_wakeup_fd(-1)


# ---- validation ------------------------------------------------------------


def test_add_signal_handler_rejects_non_int(loop):
    with pytest.raises(TypeError, match="sig must be an int, not 'x'"):
        loop.add_signal_handler("x", lambda: None)
    with pytest.raises(TypeError, match="sig must be an int"):
        loop.add_signal_handler(float(signal.SIGUSR1), lambda: None)
    with pytest.raises(TypeError, match="sig must be an int"):
        loop.add_signal_handler(None, lambda: None)
    assert wakeup_fd() == -1


@pytest.mark.parametrize("sig", [0, -1, signal.NSIG, 1000])
def test_add_signal_handler_rejects_invalid_number(loop, sig):
    with pytest.raises(ValueError, match=f"invalid signal number {sig}"):
        loop.add_signal_handler(sig, lambda: None)
    assert wakeup_fd() == -1


def test_add_signal_handler_accepts_signals_enum(loop):
    loop.add_signal_handler(signal.Signals.SIGUSR1, lambda: None)
    assert loop.remove_signal_handler(signal.Signals.SIGUSR1) is True
    assert loop.remove_signal_handler(int(signal.SIGUSR1)) is False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_add_signal_handler_uncatchable(loop, sig):
    with pytest.raises(RuntimeError, match=f"^sig {int(sig)} cannot be caught$"):
        loop.add_signal_handler(sig, lambda: None)
    # Nothing was registered, and the wakeup fd was given back.
    assert wakeup_fd() == -1
    assert loop.remove_signal_handler(sig) is False


def test_uncatchable_keeps_other_handlers(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, 1)
    fd = wakeup_fd()
    assert fd != -1
    with pytest.raises(RuntimeError, match="cannot be caught"):
        loop.add_signal_handler(signal.SIGKILL, lambda: None)
    # The failed registration did not disturb the working one.
    assert wakeup_fd() == fd
    signal.raise_signal(signal.SIGUSR1)
    run_until(loop, lambda: got)
    assert got == [1]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert wakeup_fd() == -1


def test_add_signal_handler_rejects_coroutines(loop):
    async def coro_fn():
        pass

    with pytest.raises(TypeError, match=r"coroutines cannot be used with add_signal_handler\(\)"):
        loop.add_signal_handler(signal.SIGUSR1, coro_fn)
    coro = coro_fn()
    try:
        with pytest.raises(TypeError, match="coroutines cannot be used"):
            loop.add_signal_handler(signal.SIGUSR1, coro)
    finally:
        coro.close()
    # The coroutine check comes before the signal check.
    with pytest.raises(TypeError, match="coroutines cannot be used"):
        loop.add_signal_handler("not a signal", coro_fn)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert wakeup_fd() == -1


def test_remove_signal_handler_validation(loop):
    with pytest.raises(TypeError, match="sig must be an int"):
        loop.remove_signal_handler("x")
    with pytest.raises(ValueError, match="invalid signal number 0"):
        loop.remove_signal_handler(0)
    # Valid but never registered, even uncatchable ones: False, no error.
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert loop.remove_signal_handler(signal.SIGKILL) is False


def test_add_signal_handler_off_main_thread(loop):
    errors = []

    def in_thread():
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        except BaseException as exc:  # noqa: B902 - recorded for the main thread
            errors.append(exc)

    th = threading.Thread(target=in_thread)
    th.start()
    th.join()
    assert len(errors) == 1
    assert type(errors[0]) is RuntimeError, repr(errors[0])
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert wakeup_fd() == -1


def test_add_signal_handler_on_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    # Validation still comes first.
    with pytest.raises(TypeError):
        loop.add_signal_handler("x", lambda: None)
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert wakeup_fd() == -1


# ---- registration state -----------------------------------------------------


def test_remove_returns_true_then_false_and_restores_disposition(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.add_signal_handler(signal.SIGUSR2, lambda: None)
    assert wakeup_fd() != -1
    assert signal.getsignal(signal.SIGUSR1) not in (signal.SIG_DFL, signal.SIG_IGN, None)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    # Still one handler: the wakeup fd stays until the last one goes.
    assert wakeup_fd() != -1
    assert loop.remove_signal_handler(signal.SIGUSR2) is True
    assert wakeup_fd() == -1
    assert loop.remove_signal_handler(signal.SIGUSR2) is False


def test_remove_sigint_restores_default_int_handler(loop):
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    got = []
    loop.add_signal_handler(signal.SIGINT, got.append, "int")
    # SIGINT now runs the callback instead of raising KeyboardInterrupt.
    signal.raise_signal(signal.SIGINT)
    run_until(loop, lambda: got)
    assert got == ["int"]
    assert loop.remove_signal_handler(signal.SIGINT) is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)


def test_close_removes_signal_handlers(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    assert wakeup_fd() == -1
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_add_replaces_previous_handler(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "first")
    loop.add_signal_handler(signal.SIGUSR1, got.append, "second")
    signal.raise_signal(signal.SIGUSR1)
    run_until(loop, lambda: got)
    run_briefly(loop, 2)
    assert got == ["second"]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


# ---- delivery ---------------------------------------------------------------


def test_handler_runs_while_loop_sleeps(loop):
    got = []

    def handler(*args):
        got.append((args, asyncio.get_running_loop() is loop,
                    threading.get_ident() == MAIN_IDENT))
        loop.stop()

    loop.add_signal_handler(signal.SIGUSR1, handler, "a", 2)
    far = loop.call_later(30, loop.stop)
    th = kill_main_later(0.05, signal.SIGUSR1)
    t0 = time.monotonic()
    try:
        loop.run_forever()
    finally:
        th.join()
    elapsed = time.monotonic() - t0
    far.cancel()
    assert got == [(("a", 2), True, True)]
    assert elapsed < 5, elapsed
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


def test_handler_added_while_running(loop):
    got = []

    async def main():
        loop.add_signal_handler(signal.SIGUSR2, got.append, "usr2")
        th = kill_main_later(0.02, signal.SIGUSR2)
        try:
            while not got:
                await asyncio.sleep(0.005)
        finally:
            th.join()
        return loop.remove_signal_handler(signal.SIGUSR2)

    assert loop.run_until_complete(main()) is True
    assert got == ["usr2"]


def test_two_signals_two_handlers(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "usr1")
    loop.add_signal_handler(signal.SIGUSR2, got.append, "usr2")
    signal.raise_signal(signal.SIGUSR2)
    run_until(loop, lambda: len(got) == 1)
    signal.raise_signal(signal.SIGUSR1)
    run_until(loop, lambda: len(got) == 2)
    run_briefly(loop, 2)
    assert got == ["usr2", "usr1"]


def test_signal_while_loop_not_running_is_handled_later(loop):
    # PITFALLS 9: the byte waits in the wakeup fd until the loop runs.
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "late")
    loop.run_until_complete(asyncio.sleep(0))
    signal.raise_signal(signal.SIGUSR1)
    time.sleep(0.02)
    assert got == []
    run_until(loop, lambda: got)
    run_briefly(loop, 2)
    assert got == ["late"]


def test_signal_before_first_run_is_handled(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "early")
    signal.raise_signal(signal.SIGUSR1)
    assert got == []
    run_until(loop, lambda: got)
    assert got == ["early"]


def test_removed_handler_not_called_for_pending_signal(loop):
    # The SIGUSR1 byte is already in the wakeup fd when its handler goes.
    got = []
    loop.add_signal_handler(signal.SIGUSR2, got.append, "keep")
    loop.add_signal_handler(signal.SIGUSR1, got.append, "gone")
    signal.raise_signal(signal.SIGUSR1)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    signal.raise_signal(signal.SIGUSR2)
    run_until(loop, lambda: got)
    run_briefly(loop, 3)
    assert got == ["keep"]


def test_handler_exception_goes_to_exception_handler(loop, expect_exception_handler_calls):
    got = []

    def bad():
        got.append("bad")
        raise ZeroDivisionError("boom")

    loop.add_signal_handler(signal.SIGUSR1, bad)
    signal.raise_signal(signal.SIGUSR1)
    run_until(loop, lambda: got)
    run_briefly(loop)
    calls = expect_exception_handler_calls.take()
    assert len(calls) == 1
    assert isinstance(calls[0]["exception"], ZeroDivisionError)
    assert calls[0]["message"].startswith("Exception in callback")
    # The loop keeps running and the handler stays installed.
    signal.raise_signal(signal.SIGUSR1)
    run_until(loop, lambda: len(got) == 2)
    assert len(expect_exception_handler_calls.take()) == 1


def test_signal_burst_keeps_loop_alive(loop):
    count = [0]
    ticks = []

    def on_signal():
        count[0] += 1

    loop.add_signal_handler(signal.SIGUSR1, on_signal)

    async def ticker():
        while True:
            ticks.append(loop.time())
            await asyncio.sleep(0.001)

    async def main():
        tick_task = asyncio.ensure_future(ticker())
        done = threading.Event()

        def storm():
            try:
                for _ in range(20000):
                    signal.pthread_kill(MAIN_IDENT, signal.SIGUSR1)
            finally:
                done.set()
                loop.call_soon_threadsafe(lambda: None)

        th = threading.Thread(target=storm)
        th.start()
        try:
            while not done.is_set():
                await asyncio.sleep(0.005)
        finally:
            th.join()
        # Let every byte in the wakeup fd be processed.
        before = len(ticks)
        while len(ticks) < before + 5:
            await asyncio.sleep(0.001)
        seen = count[0]
        # Still alive: a later signal is still handled, timers still fire.
        signal.raise_signal(signal.SIGUSR1)
        deadline = loop.time() + 5
        while count[0] == seen:
            assert loop.time() < deadline, "signal after the storm not handled"
            await asyncio.sleep(0.001)
        t0 = loop.time()
        await asyncio.sleep(0.01)
        assert loop.time() - t0 >= 0.01 - 1e-3
        tick_task.cancel()
        return seen

    # A storm can fill the wakeup socket faster than the loop drains it; then
    # CPython reports "Exception ignored when trying to write to the signal
    # wakeup fd" (asyncio keeps warn_on_full_buffer on).  That is expected; any
    # other unraisable exception is not.
    unraisable = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = unraisable.append
    try:
        seen = loop.run_until_complete(main())
    finally:
        sys.unraisablehook = old_hook
    others = [u for u in unraisable
              if not (isinstance(u.exc_value, BlockingIOError)  # 3.11: err_msg None
                      and "signal wakeup fd" in (u.err_msg or "signal wakeup fd"))]
    assert others == [], [(u.err_msg, u.exc_value) for u in others]
    assert 1 <= seen <= 20000
    assert len(ticks) > 5


# ---- Ctrl-C under the runners ----------------------------------------------


def _ctrl_c_main(record, delay=0.05):
    async def main():
        th = kill_main_later(delay, signal.SIGINT)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            record.append("cancelled")
            raise
        finally:
            th.join()
        record.append("not cancelled")
    return main


def test_ctrl_c_under_runner_cancels_main_task(loop_factory):
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    record = []
    t0 = time.monotonic()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        with pytest.raises(KeyboardInterrupt):
            runner.run(_ctrl_c_main(record)())
        # The Runner is still usable after the interrupt.
        assert runner.run(asyncio.sleep(0, "again")) == "again"
    assert time.monotonic() - t0 < 10
    assert record == ["cancelled"]
    assert loop_factory.made[0].is_closed()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_main_task_can_clean_up(loop_factory):
    # The main task sees CancelledError and may await during its cleanup;
    # the Runner still reports KeyboardInterrupt afterwards.
    record = []

    async def main():
        th = kill_main_later(0.05, signal.SIGINT)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)
            record.append("cleaned up")
            raise
        finally:
            th.join()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        with pytest.raises(KeyboardInterrupt):
            runner.run(main())
    assert record == ["cleaned up"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_second_ctrl_c_raises_keyboard_interrupt(loop_factory):
    # The first Ctrl-C cancels the main task; if it ignores that, the second
    # one raises KeyboardInterrupt straight from the Runner's handler.
    record = []

    async def main():
        th = kill_main_later(0.05, signal.SIGINT)
        try:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                record.append("ignored first")
                asyncio.current_task().uncancel()
            th.join()
            th2 = kill_main_later(0.05, signal.SIGINT)
            try:
                await asyncio.sleep(30)
            finally:
                th2.join()
        finally:
            th.join()

    t0 = time.monotonic()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        with pytest.raises(KeyboardInterrupt):
            runner.run(main())
    assert time.monotonic() - t0 < 10
    assert record == ["ignored first"]
    assert loop_factory.made[0].is_closed()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@needs_run_loop_factory
def test_ctrl_c_under_asyncio_run_cancels_main_task(loop_factory):
    record = []
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(_ctrl_c_main(record)(), loop_factory=loop_factory)
    assert record == ["cancelled"]
    assert loop_factory.made[0].is_closed()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.fixture(params=["cxxloop", "asyncio"])
def run_impl(request):
    if request.param == "cxxloop":
        return require_cxxloop().run
    return asyncio.run


def test_ctrl_c_under_run_cancels_main_task(run_impl):
    # cxxloop.run() side by side with asyncio.run().
    record = []
    with pytest.raises(KeyboardInterrupt):
        run_impl(_ctrl_c_main(record)())
    assert record == ["cancelled"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_with_add_signal_handler_sigint(loop_factory):
    # A SIGINT handler installed through the loop takes over from the Runner's.
    got = []

    async def main():
        lp = asyncio.get_running_loop()
        fut = lp.create_future()
        lp.add_signal_handler(signal.SIGINT, lambda: fut.set_result("handled"))
        th = kill_main_later(0.05, signal.SIGINT)
        try:
            got.append(await fut)
        finally:
            th.join()
            lp.remove_signal_handler(signal.SIGINT)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert got == ["handled"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
