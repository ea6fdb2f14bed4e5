"""cxxloop.EventLoopPolicy: the default per-thread policy semantics, and the
module-level asyncio functions under it."""

import asyncio
import threading
import warnings

import pytest

from conftest import PY314, policy_deprecations, require_cxxloop


def skip_stock_without_implicit_loop(policy_kind):
    if policy_kind == "asyncio" and PY314:
        pytest.skip("from 3.14 the stock policy no longer creates a loop on demand")


@pytest.fixture(params=["cxxloop", "asyncio"])
def policy_kind(request):
    return request.param


@pytest.fixture
def policy_cls(policy_kind):
    if policy_kind == "cxxloop":
        return require_cxxloop().EventLoopPolicy
    with policy_deprecations():
        return asyncio.DefaultEventLoopPolicy


@pytest.fixture
def loop_type(policy_kind):
    if policy_kind == "cxxloop":
        return require_cxxloop().Loop
    return asyncio.AbstractEventLoop


@pytest.fixture
def policy(policy_cls):
    with policy_deprecations():
        pol = policy_cls()
    yield pol
    # Close whatever loop the test left set in this thread.
    lp = pol._local._loop if hasattr(pol, "_local") else None
    if lp is not None and not lp.is_closed():
        lp.close()


@pytest.fixture
def installed_policy(policy, restore_policy):
    with policy_deprecations():
        asyncio.set_event_loop_policy(policy)
    return policy


def no_deprecation_noise():
    """Implicit loop creation by get_event_loop() warns on 3.12+; ignore it."""
    cm = warnings.catch_warnings()
    cm.__enter__()
    warnings.simplefilter("ignore", DeprecationWarning)
    return cm


def test_policy_is_abstract_policy(policy):
    with policy_deprecations():
        assert isinstance(policy, asyncio.AbstractEventLoopPolicy)


def test_new_event_loop_returns_unset_loop(policy, loop_type):
    lp = policy.new_event_loop()
    try:
        assert isinstance(lp, loop_type)
        assert isinstance(lp, asyncio.AbstractEventLoop)
        policy.set_event_loop(None)
        with pytest.raises(RuntimeError, match="There is no current event loop"):
            policy.get_event_loop()
    finally:
        lp.close()


def test_new_event_loop_gives_distinct_loops(policy):
    a = policy.new_event_loop()
    b = policy.new_event_loop()
    try:
        assert a is not b
    finally:
        a.close()
        b.close()


def test_main_thread_gets_loop_on_demand(policy, loop_type, policy_kind):
    skip_stock_without_implicit_loop(policy_kind)
    cm = no_deprecation_noise()
    try:
        lp = policy.get_event_loop()
    finally:
        cm.__exit__(None, None, None)
    assert isinstance(lp, loop_type)
    assert policy.get_event_loop() is lp
    assert not lp.is_closed()
    assert lp.run_until_complete(asyncio.sleep(0, "works")) == "works"


def test_set_event_loop_then_get(policy):
    lp = policy.new_event_loop()
    try:
        policy.set_event_loop(lp)
        assert policy.get_event_loop() is lp
        policy.set_event_loop(None)
        with pytest.raises(RuntimeError, match="There is no current event loop"):
            policy.get_event_loop()
    finally:
        lp.close()


def test_set_event_loop_rejects_non_loop(policy):
    with pytest.raises(TypeError):
        policy.set_event_loop(object())


def test_other_threads_raise_until_set(policy, loop_type):
    results = {}

    def thread_main():
        try:
            policy.get_event_loop()
        except RuntimeError as exc:
            results["error"] = str(exc)
        lp = policy.new_event_loop()
        try:
            policy.set_event_loop(lp)
            results["same"] = policy.get_event_loop() is lp
            results["type_ok"] = isinstance(lp, loop_type)
            results["runs"] = lp.run_until_complete(asyncio.sleep(0, 1))
            policy.set_event_loop(None)
        finally:
            lp.close()

    th = threading.Thread(target=thread_main, name="worker-thread")
    th.start()
    th.join()
    assert "There is no current event loop in thread" in results["error"]
    assert "worker-thread" in results["error"]
    assert results == {**results, "same": True, "type_ok": True, "runs": 1}


def test_loops_are_per_thread(policy):
    main_loop = policy.new_event_loop()
    policy.set_event_loop(main_loop)
    seen = []

    def thread_main():
        lp = policy.new_event_loop()
        policy.set_event_loop(lp)
        seen.append(policy.get_event_loop())
        policy.set_event_loop(None)
        lp.close()

    th = threading.Thread(target=thread_main)
    th.start()
    th.join()
    try:
        assert seen[0] is not main_loop
        assert policy.get_event_loop() is main_loop
    finally:
        policy.set_event_loop(None)
        main_loop.close()


def test_module_functions_use_installed_policy(installed_policy, loop_type):
    with policy_deprecations():
        assert asyncio.get_event_loop_policy() is installed_policy
    lp = asyncio.new_event_loop()
    try:
        assert isinstance(lp, loop_type)
        asyncio.set_event_loop(lp)
        assert asyncio.get_event_loop() is lp

        async def main():
            assert asyncio.get_event_loop() is lp
            assert asyncio.get_running_loop() is lp
            return "ran"

        assert lp.run_until_complete(main()) == "ran"
    finally:
        asyncio.set_event_loop(None)
        lp.close()


def test_module_get_event_loop_creates_on_demand(installed_policy, loop_type, policy_kind):
    skip_stock_without_implicit_loop(policy_kind)
    cm = no_deprecation_noise()
    try:
        lp = asyncio.get_event_loop()
    finally:
        cm.__exit__(None, None, None)
    assert isinstance(lp, loop_type)
    assert asyncio.get_event_loop() is lp


def test_run_without_loop_factory_uses_policy(installed_policy, loop_type):
    async def main():
        return type(asyncio.get_running_loop())

    t = asyncio.run(main())
    assert issubclass(t, loop_type)


def test_runner_without_loop_factory_uses_policy(installed_policy, loop_type):
    with asyncio.Runner() as runner:
        assert isinstance(runner.get_loop(), loop_type)
        assert runner.run(asyncio.sleep(0, 5)) == 5


def test_policy_subclass_docs_example(policy_cls, loop_type, restore_policy, policy_kind):
    skip_stock_without_implicit_loop(policy_kind)
    # From the asyncio docs ("Customizing the event loop policy"), with the
    # policy class swapped for cxxloop's.
    calls = []

    class MyEventLoopPolicy(policy_cls):

        def get_event_loop(self):
            """Get the event loop.

            This may be None or an instance of EventLoop.
            """
            loop = super().get_event_loop()
            # Do something with loop ...
            calls.append(loop)
            return loop

    with policy_deprecations():
        asyncio.set_event_loop_policy(MyEventLoopPolicy())
    cm = no_deprecation_noise()
    try:
        lp = asyncio.get_event_loop()
    finally:
        cm.__exit__(None, None, None)
    try:
        assert isinstance(lp, loop_type)
        assert calls == [lp]
        assert lp.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
    finally:
        asyncio.set_event_loop(None)
        lp.close()


def test_policy_subclass_overriding_new_event_loop(policy_cls, restore_policy):
    made = []

    class CountingPolicy(policy_cls):
        def new_event_loop(self):
            lp = super().new_event_loop()
            made.append(lp)
            return lp

    with policy_deprecations():
        asyncio.set_event_loop_policy(CountingPolicy())
    lp = asyncio.new_event_loop()
    lp.close()
    assert made == [lp]


def test_set_event_loop_policy_none_restores_default(installed_policy):
    with policy_deprecations():
        asyncio.set_event_loop_policy(None)
        pol = asyncio.get_event_loop_policy()
        assert pol is not installed_policy
        assert isinstance(pol, asyncio.DefaultEventLoopPolicy)


def test_cxxloop_policy_exported():
    cxx = require_cxxloop()
    with policy_deprecations():
        assert issubclass(cxx.EventLoopPolicy, asyncio.AbstractEventLoopPolicy)
    assert cxx.EventLoop is cxx.Loop
    assert issubclass(cxx.Loop, asyncio.AbstractEventLoop)
