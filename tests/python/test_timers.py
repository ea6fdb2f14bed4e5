"""call_later / call_at / time(): ordering, precision, never early."""

import asyncio
import random
import time

import pytest

from conftest import run_briefly

# asyncio runs a timer once `when < time() + clock_resolution`; a timer may
# therefore run at most one clock tick (1 ns on Linux) "early".  Anything
# more is a bug (e.g. millisecond rounding).
RES = time.get_clock_info("monotonic").resolution
NEVER_EARLY_SLACK = RES + 1e-12
GENEROUS = 5.0  # "not too late" bound on a noisy 2-core machine


def test_time_is_monotonic_and_matches_time_monotonic(loop):
    prev = loop.time()
    for _ in range(1000):
        t0 = time.monotonic()
        lt = loop.time()
        t1 = time.monotonic()
        assert t0 - 1e-6 <= lt <= t1 + 1e-6
        assert lt >= prev
        prev = lt


def test_time_advances_inside_the_loop(loop):
    seen = []

    async def main():
        seen.append(loop.time())
        time.sleep(0.01)  # blocking on purpose
        seen.append(loop.time())

    loop.run_until_complete(main())
    assert seen[1] - seen[0] >= 0.01 - NEVER_EARLY_SLACK


def test_call_later_returns_timerhandle_with_when(loop):
    t0 = loop.time()
    h = loop.call_later(10, lambda: None)
    t1 = loop.time()
    assert isinstance(h, asyncio.TimerHandle)
    assert isinstance(h, asyncio.Handle)
    assert t0 + 10 <= h.when() <= t1 + 10
    h.cancel()


def test_call_later_zero_returns_timerhandle(loop):
    h = loop.call_later(0, lambda: None)
    assert isinstance(h, asyncio.TimerHandle)
    run_briefly(loop)


def test_call_at_when_roundtrips_exactly(loop):
    for when in (loop.time() + 1.0, loop.time() + 0.123456789123, 12345.678901234567, 0.0):
        h = loop.call_at(when, lambda: None)
        assert isinstance(h, asyncio.TimerHandle)
        assert h.when() == when
        h.cancel()


def test_call_later_none_delay_and_call_at_none_raise(loop):
    with pytest.raises(TypeError):
        loop.call_later(None, lambda: None)
    with pytest.raises(TypeError):
        loop.call_at(None, lambda: None)


def test_call_later_and_call_at_on_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_later(0, lambda: None)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_at(0, lambda: None)


def test_timers_run_in_deadline_order(loop):
    out = []
    base = loop.time()
    delays = [0.03, 0.01, 0.02, 0.0, 0.015, 0.005, 0.025]
    for d in delays:
        loop.call_at(base + d, out.append, d)
    loop.call_at(base + 0.04, loop.stop)
    loop.run_forever()
    assert out == sorted(delays)


def test_timers_never_fire_early(loop):
    early = []
    ran = []

    def cb(when):
        now = loop.time()
        mono = time.monotonic()
        ran.append(when)
        if now < when - NEVER_EARLY_SLACK or mono < when - NEVER_EARLY_SLACK:
            early.append((when, now, mono))

    base = loop.time()
    # Sub-millisecond and odd offsets catch millisecond rounding.
    offsets = [0.0001, 0.0004, 0.0009, 0.0011, 0.0015, 0.00199, 0.0031, 0.0057,
               0.0099, 0.0101, 0.01234567, 0.0205]
    for off in offsets:
        loop.call_at(base + off, cb, base + off)
    for off in offsets:
        loop.call_later(off, cb, loop.time() + off)
    loop.call_at(base + 0.03, loop.stop)
    loop.run_forever()
    assert len(ran) == 2 * len(offsets)
    assert early == []


def test_sleep_never_returns_early(loop):
    async def main():
        bad = []
        for d in (0.0005, 0.001, 0.0015, 0.003, 0.0101, 0.02):
            t0 = time.monotonic()
            await asyncio.sleep(d)
            elapsed = time.monotonic() - t0
            if elapsed < d - NEVER_EARLY_SLACK:
                bad.append((d, elapsed))
        return bad

    assert loop.run_until_complete(main()) == []


def test_timer_not_too_late(loop):
    fired = []
    t0 = time.monotonic()
    loop.call_later(0.05, lambda: (fired.append(time.monotonic()), loop.stop()))
    loop.run_forever()
    assert fired and 0.05 - NEVER_EARLY_SLACK <= fired[0] - t0 < GENEROUS


def test_negative_delay_and_past_when_run_soon(loop):
    out = []
    loop.call_later(-5, out.append, "neg")
    loop.call_at(loop.time() - 100, out.append, "past")
    loop.call_at(0, out.append, "zero")
    run_briefly(loop)
    assert sorted(out) == ["neg", "past", "zero"]


def test_expired_timers_run_in_same_iteration(loop):
    out = []
    when = loop.time() - 1
    for i in range(5):
        loop.call_at(when, out.append, i)
    run_briefly(loop)
    assert sorted(out) == [0, 1, 2, 3, 4]


def test_timers_with_same_deadline_fire_in_same_iteration(loop):
    # PITFALLS 17: identical deadlines scheduled at different times must expire
    # together (no per-call rounding).
    iteration = 0
    fired = {}

    def tick():
        nonlocal iteration
        iteration += 1
        if len(fired) < 2:
            loop.call_soon(tick)
        else:
            loop.stop()

    deadline = loop.time() + 0.1005
    late = []
    loop.call_at(deadline, lambda: fired.setdefault("a", iteration))

    def schedule_second():
        if loop.time() >= deadline - 0.01:
            late.append(True)
        loop.call_at(deadline, lambda: fired.setdefault("b", iteration))

    loop.call_later(0.0123, schedule_second)
    loop.call_soon(tick)
    loop.run_forever()
    if late:
        pytest.skip("machine too slow: second timer scheduled at its deadline")
    assert fired["a"] == fired["b"]


def test_cancelled_timer_does_not_run(loop):
    out = []
    h = loop.call_later(0.001, out.append, "cancelled")
    loop.call_later(0.002, out.append, "kept")
    h.cancel()
    assert h.cancelled()
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert out == ["kept"]


def test_many_timers_with_cancellation(loop):
    rnd = random.Random(1234)
    out = []
    base = loop.time()
    handles = []
    for i in range(2000):
        when = base + rnd.uniform(0, 0.03)
        handles.append((i, when, loop.call_at(when, out.append, (when, i))))
    keep = set()
    for i, when, h in handles:
        if i % 10:
            h.cancel()
        else:
            keep.add(i)
    loop.call_at(base + 0.05, loop.stop)
    loop.run_forever()
    assert sorted(i for _, i in out) == sorted(keep)
    whens = [w for w, _ in out]
    assert whens == sorted(whens)


def test_timer_cancelled_by_earlier_timer_in_same_iteration(loop):
    out = []
    when = loop.time() - 1
    handles = {}

    def first():
        out.append("first")
        handles["second"].cancel()

    loop.call_at(when, first)
    handles["second"] = loop.call_at(when + 0.5, out.append, "second")
    run_briefly(loop)
    run_briefly(loop)
    assert out == ["first"]


def test_timer_scheduled_from_callback(loop):
    out = []

    def cb(n):
        out.append(n)
        if n < 5:
            loop.call_later(0.001, cb, n + 1)
        else:
            loop.stop()

    loop.call_soon(cb, 0)
    loop.run_forever()
    assert out == [0, 1, 2, 3, 4, 5]


def test_loop_sleeps_until_timer_without_busy_looping(loop):
    # While waiting for a single timer the loop must block in the poller, not
    # spin; measured by process CPU time.
    cpu0 = time.process_time()
    loop.call_later(0.3, loop.stop)
    loop.run_forever()
    assert time.process_time() - cpu0 < 0.1


def test_call_later_with_context(loop):
    import contextvars
    var = contextvars.ContextVar("v", default=None)
    ctx = contextvars.copy_context()
    ctx.run(var.set, 42)
    seen = []
    loop.call_later(0, lambda: seen.append(var.get()), context=ctx)
    loop.call_at(loop.time(), lambda: seen.append(var.get()), context=ctx)
    run_briefly(loop, 2)
    assert seen == [42, 42]


def test_wait_for_and_timeout_with_loop_timers(loop):
    async def main():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.01)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await asyncio.sleep(10)
        async with asyncio.timeout(5):
            await asyncio.sleep(0.001)
        return "ok"

    assert loop.run_until_complete(main()) == "ok"


