"""Debug mode: get/set_debug, PYTHONASYNCIODEBUG, -X dev, slow callbacks,
argument checks and wrong-thread checks."""

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import run_briefly

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def expected_default_debug():
    return bool(sys.flags.dev_mode or (
        not sys.flags.ignore_environment and os.environ.get("PYTHONASYNCIODEBUG")))


def test_default_debug_follows_environment(loop):
    assert loop.get_debug() is expected_default_debug()


def test_set_debug(loop):
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def run_child(kind, args=(), env_update=None, env_remove=()):
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "from conftest import make_loop\n"
        "loop = make_loop(%r)\n"
        "try:\n"
        "    print(loop.get_debug())\n"
        "finally:\n"
        "    loop.close()\n"
    ) % (TESTS_DIR, kind)
    env = dict(os.environ)
    for k in env_remove:
        env.pop(k, None)
    env.update(env_update or {})
    proc = subprocess.run([sys.executable, *args, "-c", code], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.parametrize("args,env,expected", [
    ((), {}, "False"),
    ((), {"PYTHONASYNCIODEBUG": "1"}, "True"),
    ((), {"PYTHONASYNCIODEBUG": ""}, "False"),
    (("-X", "dev"), {}, "True"),
    (("-E",), {"PYTHONASYNCIODEBUG": "1"}, "False"),
], ids=["plain", "env", "env-empty", "x-dev", "env-ignored-by-E"])
def test_debug_from_environment_and_flags(loop_kind, args, env, expected):
    assert run_child(loop_kind, args, env, env_remove=("PYTHONASYNCIODEBUG", "PYTHONDEVMODE")) == expected


def test_slow_callback_logged_in_debug_mode(loop, caplog):
    loop.set_debug(True)
    assert loop.slow_callback_duration == 0.1
    loop.slow_callback_duration = 0.01

    def slow():
        time.sleep(0.05)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(slow)
        run_briefly(loop)
    msgs = [r.getMessage() for r in caplog.records
            if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert any(m.startswith("Executing") and "slow" in m and "seconds" in m for m in msgs), msgs


def test_slow_callback_not_logged_without_debug(loop, caplog):
    loop.set_debug(False)
    loop.slow_callback_duration = 0.01
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(time.sleep, 0.03)
        run_briefly(loop)
    assert not [r for r in caplog.records if r.name == "asyncio" and "Executing" in r.getMessage()]


async def a_coroutine_function():
    pass


@pytest.mark.parametrize("method", ["call_soon", "call_soon_threadsafe", "call_later", "call_at"])
def test_debug_rejects_coroutines_and_non_callables(loop, method):
    loop.set_debug(True)
    fn = getattr(loop, method)
    pre = () if method in ("call_soon", "call_soon_threadsafe") else (0,)
    with pytest.raises(TypeError, match="coroutines cannot be used with"):
        fn(*pre, a_coroutine_function)
    coro = a_coroutine_function()
    with pytest.raises(TypeError, match="coroutines cannot be used with"):
        fn(*pre, coro)
    coro.close()
    with pytest.raises(TypeError, match="a callable object was expected by"):
        fn(*pre, 1)


def test_debug_run_in_executor_rejects_coroutine_function(loop):
    loop.set_debug(True)
    with pytest.raises(TypeError, match="coroutines cannot be used with run_in_executor"):
        loop.run_in_executor(None, a_coroutine_function)


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
def test_debug_wrong_thread_check(loop, method):
    loop.set_debug(True)
    errors = []

    def in_thread():
        try:
            if method == "call_soon":
                h = loop.call_soon(lambda: None)
            elif method == "call_later":
                h = loop.call_later(0, lambda: None)
            else:
                h = loop.call_at(0, lambda: None)
            h.cancel()
            errors.append(None)
        except RuntimeError as exc:
            errors.append(str(exc))

    async def main():
        th = threading.Thread(target=in_thread)
        th.start()
        while th.is_alive():
            await asyncio.sleep(0.001)
        th.join()

    loop.run_until_complete(main())
    assert errors == ["Non-thread-safe operation invoked on an event loop "
                      "other than the current one"]


def test_debug_thread_check_only_while_running(loop):
    # Not running: no owning thread, so no error from another thread.
    loop.set_debug(True)
    out = []

    def in_thread():
        out.append(loop.call_soon(lambda: None))

    th = threading.Thread(target=in_thread)
    th.start()
    th.join()
    assert isinstance(out[0], asyncio.Handle)
    run_briefly(loop)


def test_debug_call_soon_threadsafe_from_thread_is_fine(loop):
    loop.set_debug(True)
    out = []

    def in_thread():
        loop.call_soon_threadsafe(out.append, "ok")

    async def main():
        th = threading.Thread(target=in_thread)
        th.start()
        while not out:
            await asyncio.sleep(0.001)
        th.join()

    loop.run_until_complete(main())
    assert out == ["ok"]


def test_debug_mode_run_smoke(loop):
    # A small program runs unchanged in debug mode.
    loop.set_debug(True)

    async def main():
        await asyncio.sleep(0.001)
        return await asyncio.gather(asyncio.sleep(0, 1), asyncio.sleep(0, 2))

    assert loop.run_until_complete(main()) == [1, 2]


def test_debug_exception_context_has_source_traceback(loop, expect_exception_handler_calls):
    loop.set_debug(True)

    def boom():
        raise ValueError("x")

    loop.call_soon(boom)
    run_briefly(loop)
    (ctx,) = expect_exception_handler_calls.take()
    assert "source_traceback" in ctx
    assert any("test_debug" in frame.filename for frame in ctx["source_traceback"])


def test_debug_handle_repr_shows_creation_site(loop):
    loop.set_debug(True)
    h = loop.call_soon(lambda: None)
    assert "created at" in repr(h) and "test_debug.py" in repr(h)
    h.cancel()


def test_debug_enables_coroutine_origin_tracking_while_running(loop):
    import sys
    loop.set_debug(True)
    seen = []
    loop.call_soon(lambda: seen.append(sys.get_coroutine_origin_tracking_depth()))
    before = sys.get_coroutine_origin_tracking_depth()
    run_briefly(loop)
    assert seen[0] > 0
    assert sys.get_coroutine_origin_tracking_depth() == before
