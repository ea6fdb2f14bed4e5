"""cxxloop.ProactorEventLoop: the asyncio event loop over the io_uring engine.

A sibling of the selector loop (cxxloop.Loop), not a subclass: both derive from
_loop._LoopBase, as asyncio's SelectorEventLoop and ProactorEventLoop both derive from
BaseEventLoop. So ``isinstance(loop, cxxloop.SelectorEventLoop)`` is false for it, as
it is for asyncio's own proactor, and code that tests for the selector loop to decide
whether readiness callbacks are available does not mistake one for the other. Unlike
asyncio's Windows proactor, this one supports add_reader()/add_writer() too.

Today every file descriptor operation is a poll operation inside the ring (the
engine's "uring" poller): readiness reported by the kernel's io_uring, with the same
transports as the selector loop. The completion-based transports will replace those
data paths without changing the API.
"""

import errno as _errno

from . import _core
from ._loop import _LoopBase

__all__ = ("ProactorEventLoop",)


def _unavailable_error(err, reason):
    """The OSError (of the errno's subclass: PermissionError for EPERM, ...) that
    constructing the loop raises where io_uring cannot be used."""
    return OSError(err or _errno.ENOSYS,
                   f"cxxloop.ProactorEventLoop needs io_uring, which is unavailable: {reason}")


class ProactorEventLoop(_LoopBase):
    """An asyncio event loop on the io_uring engine (Linux 5.11+, built with liburing).

    Raises OSError naming the reason (old kernel, seccomp filter,
    kernel.io_uring_disabled, a build without liburing) where io_uring is unavailable;
    cxxloop.new_event_loop() and EventLoopPolicy keep using the selector loop.
    """

    def __init__(self):
        available, err, reason = _core.uring_support()
        if not available:
            raise _unavailable_error(err, reason)
        self._init_loop("uring")
