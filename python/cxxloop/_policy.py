"""cxxloop.EventLoopPolicy: asyncio's default per-thread policy, handing out cxxloop loops."""

from asyncio import events

from ._loop import Loop

# Python 3.14 renamed the policy base (policies are deprecated there, and removed in
# 3.16); look it up without touching the deprecated public aliases.
_BasePolicy = getattr(events, "_BaseDefaultEventLoopPolicy", None) or events.BaseDefaultEventLoopPolicy


class EventLoopPolicy(_BasePolicy):
    """The default asyncio policy semantics with cxxloop's Loop: one loop per thread;
    the main thread gets one on demand from get_event_loop(); other threads get
    RuntimeError until set_event_loop(); new_event_loop() never sets one."""

    def _loop_factory(self):
        return Loop()

    def __repr__(self):
        return f"<{self.__class__.__name__}>"
