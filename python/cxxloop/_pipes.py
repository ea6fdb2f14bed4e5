"""Pipe transports over the C++ engine (connect_read_pipe, connect_write_pipe, and
the stdin/stdout/stderr of subprocesses).

As for sockets (_transports.py), the data path is a ``_core.StreamCore``, here made
with ``is_socket=False`` (read()/writev() rather than recv()/sendmsg()) and a
``pipe`` mode giving asyncio's Unix pipe semantics where they differ from a socket
transport's. A read pipe's reads go straight from the kernel to data_received; a
write pipe's write() is the core's own method, which writes at once and queues what
the kernel does not take by reference (asyncio's pipe transport copies it into a
bytearray and slices it after every partial write). This module keeps the rest of
the contract with the observable behaviour of the interpreter's own
unix_events pipe transports (3.11 to 3.13 behave alike):

- Accepted: pipes (FIFOs), sockets and character devices (PTYs, terminals); a
  regular file raises ValueError, with asyncio's wording, which differs between
  the read and the write side.
- connection_made, then (read side) reading, then the waiter, each one loop step
  apart.
- Read side: EOF calls eof_received() (its return value is ignored: a pipe has no
  half-close), then connection_lost(None), both scheduled. EIO (a PTY whose other
  side closed) ends the transport with connection_lost(OSError) but without a call
  to the loop's exception handler. An exception from data_received goes to the
  exception handler and reading goes on.
- Write side: a pipe or socket fd is watched for readability, which for a write end
  means the reader went away: connection_lost(None), or BrokenPipeError if data
  was still queued. write() after close() or write_eof() drops the data (counted,
  with asyncio's warning after five). close() is write_eof(): connection_lost
  once the queue is flushed, and the fd is closed (no shutdown()).
- loop.close() leaves the transports open; dropping one unclosed warns
  (ResourceWarning) and closes its pipe.
"""

import errno
import os
import stat
import warnings

from asyncio import futures, transports
from asyncio.log import logger

from . import _core
from ._transports import CoreReading, CoreState, report_fatal_error

__all__ = ("ReadPipeTransport", "WritePipeTransport")


def _fd_kind(fileno):
    mode = os.fstat(fileno).st_mode
    return stat.S_ISFIFO(mode), stat.S_ISSOCK(mode), stat.S_ISCHR(mode)


class _PipeBase(CoreState):
    """What the read and the write pipe transports share: the pipe object, the core,
    the repr, and the end of the transport (connection_lost, then the pipe closed)."""

    # Read by __del__ and __repr__: set before anything in __init__ can fail.
    _pipe = None
    _fileno = None
    _polling_attr = ""  # The core property that says the fd is polled ("reading" ...).

    def _attach_pipe(self, loop, pipe, protocol, mode):
        self._extra["pipe"] = pipe
        self._loop = loop
        self._pipe = pipe
        self._fileno = pipe.fileno()
        self._protocol = protocol
        # The Stream makes the fd non-blocking.
        self._c = _core.StreamCore(loop, self, self._fileno, is_socket=False, pipe=mode)
        self._c.set_protocol(protocol, False)  # asyncio's pipes call data_received only.

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._pipe is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._fileno}")
        loop = self._loop
        if self._pipe is not None and loop is not None and not loop.is_closed():
            info.append("polling" if getattr(self._c, self._polling_attr) else "idle")
            self._repr_extra(info)
        elif self._pipe is not None:
            info.append("open")
        else:
            info.append("closed")
        return "<{}>".format(" ".join(info))

    def _repr_extra(self, info):
        pass

    def set_protocol(self, protocol):
        self._c.set_protocol(protocol, False)
        self._protocol = protocol

    def get_protocol(self):
        return self._protocol

    def is_closing(self):
        return self._closing

    def __del__(self, _warn=warnings.warn):
        if self._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            if self._c is not None:
                self._c.detach()
            self._pipe.close()

    def _protocol_error(self, exc, message):
        # A protocol callback raised (data_received). asyncio's pipe transports call
        # it from their reader callback, so the exception reaches the loop's handler
        # as a callback's exception and the transport carries on. (`message` is the
        # core's wording for a socket transport's fatal error, not used here.)
        method = getattr(type(self._protocol), "data_received", None)
        name = getattr(method, "__qualname__", "data_received")
        self._loop.call_exception_handler({
            "message": f"Exception in callback {name}()",
            "exception": exc,
            "transport": self,
            "protocol": self._protocol,
        })

    def _call_connection_lost(self, exc):
        if self._pipe is None:
            return  # Already lost (abort() after close(), for instance).
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._c.detach()
            self._pipe.close()
            self._pipe = None
            self._protocol = None
            self._loop = None


class ReadPipeTransport(CoreReading, _PipeBase, transports.ReadTransport):
    """The read end of a pipe (or a socket, or a character device such as a PTY)."""

    max_size = 256 * 1024  # The most one read delivers, as asyncio's.
    _polling_attr = "reading"

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra)
        if not any(_fd_kind(pipe.fileno())):
            raise ValueError("Pipe transport is for pipes/sockets only.")
        self._paused = False
        self._attach_pipe(loop, pipe, protocol, "read")
        loop.call_soon(protocol.connection_made, self)
        # Reading starts only once connection_made() has run.
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def _start_reading(self):
        if not self.is_reading():
            return
        try:
            self._c.start_reading()
        except OSError:
            pass  # The fd could not be watched: reported to _stream_error already.

    def close(self):
        if not self._closing:
            self._close(None)

    # --- what the core calls back ---------------------------------------------------

    def _eof_received(self):
        # The core has stopped reading.
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        self._closing = True
        self._loop.call_soon(self._protocol.eof_received)
        self._loop.call_soon(self._call_connection_lost, None)

    def _stream_error(self, exc, writing):
        self._fatal_error(exc, "Fatal read error on pipe transport")

    def _fatal_error(self, exc, message="Fatal error on pipe transport"):
        if isinstance(exc, OSError) and exc.errno == errno.EIO:
            # What a PTY reports once its other side is closed: the end, not a fault.
            if self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                "message": message,
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            })
        self._close(exc)

    def _close(self, exc):
        self._closing = True
        self._c.abort()
        self._loop.call_soon(self._call_connection_lost, exc)


class WritePipeTransport(_PipeBase, transports._FlowControlMixin, transports.WriteTransport):
    """The write end of a pipe (or a socket, or a character device such as a PTY)."""

    _polling_attr = "flushing"

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra, loop)
        is_fifo, is_socket, is_char = _fd_kind(pipe.fileno())
        if not (is_fifo or is_socket or is_char):
            raise ValueError("Pipe transport is only for pipes, sockets and character devices")
        self._attach_pipe(loop, pipe, protocol, "write")
        core = self._c
        # The hot method is the core's own: no Python frame per call. writelines() is
        # WriteTransport's (one joined write), as for asyncio's pipes.
        self.write = core.write
        core.set_write_limits(self._high_water, self._low_water)
        loop.call_soon(protocol.connection_made, self)
        if is_fifo or is_socket:
            # Readability of a write end means the reader went away (a character
            # device cannot tell). Watched once connection_made() has run.
            loop.call_soon(self._watch_peer)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def _watch_peer(self):
        if self._closing:
            return
        try:
            self._c.start_reading()
        except OSError:
            pass  # The fd could not be watched: reported to _stream_error already.

    def _repr_extra(self, info):
        info.append(f"bufsize={self.get_write_buffer_size()}")

    def get_write_buffer_size(self):
        return self._c.buffer_size() if self._c is not None else 0

    def set_write_buffer_limits(self, high=None, low=None):
        super().set_write_buffer_limits(high, low)
        self._c.set_write_limits(self._high_water, self._low_water)

    def can_write_eof(self):
        return True

    def write_eof(self):
        if self._closing:
            return
        if self._pipe is None:
            raise RuntimeError("the pipe transport is closed")
        self._closing = True
        if not self.get_write_buffer_size():
            self._c.stop_reading()
            self._loop.call_soon(self._call_connection_lost, None)
        # Otherwise connection_lost follows the flush of the queue (_write_drained).

    def close(self):
        if self._pipe is not None and not self._closing:
            self.write_eof()

    def abort(self):
        self._close(None)

    # --- what the core calls back ---------------------------------------------------

    def _read_ready(self):
        # The fd became readable: the reader closed its end (or a socket peer sent
        # something or went away).
        if self._loop.get_debug():
            logger.info("%r was closed by peer", self)
        if self.get_write_buffer_size():
            self._close(BrokenPipeError())
        else:
            self._close(None)

    def _write_drained(self):
        # The queue is empty: the protocol may write again; a closing transport ends.
        self._maybe_resume_protocol()
        if self._closing and self._pipe is not None:
            self._c.stop_reading()
            self._call_connection_lost(None)

    def _stream_error(self, exc, writing):
        if writing:
            self._conn_lost += 1
            self._fatal_error(exc, "Fatal write error on pipe transport")
        else:
            self._fatal_error(exc)

    def _warn_lost_write(self):
        logger.warning("pipe closed by peer or os.write(pipe, data) raised exception.")

    def _fatal_error(self, exc, message="Fatal error on pipe transport"):
        report_fatal_error(self, exc, message)
        self._close(exc)

    def _close(self, exc=None):
        self._closing = True
        self._c.abort()  # Drops the queue and stops watching the fd.
        self._loop.call_soon(self._call_connection_lost, exc)
