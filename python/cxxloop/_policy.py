"""cxxloop.EventLoopPolicy: asyncio's default per-thread policy, handing out cxxloop loops."""

from asyncio import events, unix_events

from ._loop import Loop

# The stock Unix policy (which also carries the child-watcher API up to Python 3.13).
# Looked up without touching the public aliases that Python 3.14 deprecates.
_BasePolicy = (getattr(unix_events, "_UnixDefaultEventLoopPolicy", None)
               or getattr(events, "_BaseDefaultEventLoopPolicy", None)
               or events.BaseDefaultEventLoopPolicy)


class EventLoopPolicy(_BasePolicy):
    """The default asyncio policy semantics with cxxloop's Loop: one loop per thread;
    the main thread gets one on demand from get_event_loop(); other threads get
    RuntimeError until set_event_loop(); new_event_loop() never sets one."""

    def _loop_factory(self):
        return Loop()

    def __repr__(self):
        return f"<{self.__class__.__name__}>"
