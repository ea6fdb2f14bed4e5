"""cxxloop: a drop-in asyncio event loop with a C++20 engine.

    asyncio.run(main(), loop_factory=cxxloop.new_event_loop)   # Python 3.12+
    cxxloop.run(main())                                        # any supported Python

cxxloop.ProactorEventLoop is the same API on the io_uring engine (Linux); it is never
the default: pass it as the loop_factory to choose it.
"""

import asyncio as _asyncio

from ._loop import Loop, SelectorEventLoop
from ._policy import EventLoopPolicy
from ._proactor import ProactorEventLoop

__all__ = ("Loop", "EventLoop", "SelectorEventLoop", "ProactorEventLoop", "EventLoopPolicy",
           "new_event_loop", "run")
__version__ = "0.1.0"

EventLoop = Loop


def new_event_loop():
    """A new cxxloop event loop (the factory for asyncio.run and asyncio.Runner)."""
    return Loop()


def run(main, *, debug=None, **run_kwargs):
    """asyncio.run(main) on a new cxxloop loop; keywords go to asyncio.Runner."""
    if _asyncio.events._get_running_loop() is not None:
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    with _asyncio.Runner(debug=debug, loop_factory=new_event_loop, **run_kwargs) as runner:
        return runner.run(main)
