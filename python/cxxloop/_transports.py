"""Stream transports over the C++ engine.

A transport is a real ``asyncio.Transport`` (with asyncio's flow-control mixin); its
data path is a ``_core.StreamCore``: the core reads into data_received/get_buffer
and takes write()/writelines() directly (they are the core's own methods, bound on
the instance). This module keeps the rest of the transport contract -- closing,
aborting, connection_lost, EOF, errors, flow-control bookkeeping, extra info --
with the stock selector transport's observable behaviour.
"""

import inspect
import socket
import warnings

from asyncio import base_events, constants, futures, protocols, selector_events, transports, trsock
from asyncio.log import logger

from . import _core

__all__ = ("SocketTransport", "DatagramTransport")

# Server._attach()/_detach() take the transport from Python 3.13 on (for
# close_clients/abort_clients); before, they only count.
if "transport" in inspect.signature(base_events.Server._attach).parameters:
    def _attach(server, transport):
        server._attach(transport)

    def _detach(server, transport):
        server._detach(transport)
else:
    def _attach(server, transport):
        server._attach()

    def _detach(server, transport):
        server._detach()


def report_fatal_error(transport, exc, message):
    """asyncio's rule for a transport's fatal error: an OSError (the peer or the
    network) is only logged in debug mode; anything else goes to the loop's exception
    handler."""
    if isinstance(exc, OSError):
        if transport._loop.get_debug():
            logger.debug("%r: %s", transport, message, exc_info=True)
    else:
        transport._loop.call_exception_handler({
            "message": message,
            "exception": exc,
            "transport": transport,
            "protocol": transport._protocol,
        })


class CoreState:
    """asyncio's `_closing` and `_conn_lost` of a transport, kept in its StreamCore
    (`self._c`) where the hot paths read them."""

    __slots__ = ()
    _c = None

    @property
    def _conn_lost(self):
        return self._c.conn_lost if self._c is not None else 0

    @_conn_lost.setter
    def _conn_lost(self, value):
        self._c.conn_lost = value

    @property
    def _closing(self):
        return self._c.closing if self._c is not None else False

    @_closing.setter
    def _closing(self, value):
        self._c.closing = value


class CoreReading:
    """is_reading/pause_reading/resume_reading of a transport whose reads come from a
    StreamCore (`self._c`), with asyncio's rules: pausing a closing or paused
    transport, or resuming one that is not paused, does nothing. The class provides
    `_start_reading()`."""

    __slots__ = ()

    def is_reading(self):
        return not self._closing and not self._paused

    def pause_reading(self):
        if not self.is_reading():
            return
        self._paused = True
        self._c.stop_reading()
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        self._paused = False
        self._start_reading()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)


class SocketTransport(CoreState, CoreReading, transports._FlowControlMixin, transports.Transport):
    """A TCP or Unix stream socket transport whose reads and writes are C++."""

    max_size = 256 * 1024  # The most one read delivers, as asyncio's.
    _start_tls_compatible = True
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE

    # Slots for every attribute the transport sets, so that no instance dictionary is
    # made unless someone else adds an attribute (the dictionary is still there for that).
    __slots__ = ("_sock", "_sock_fd", "_c", "write", "writelines", "is_closing",
                 "_protocol_connected", "_protocol", "_server", "_paused",
                 "__dict__", "__weakref__")

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        # Read by __del__ and __repr__: set before anything in __init__ can fail.
        self._sock = None
        self._c = None
        super().__init__(extra, loop)
        self._extra["socket"] = trsock.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._c = core = _core.StreamCore(loop, self, self._sock_fd)
        # The hot methods are the core's own: no Python frame per call.
        self.write = core.write
        self.writelines = core.writelines
        self.is_closing = core.is_closing
        self._protocol_connected = False
        self.set_protocol(protocol)
        self._server = server
        self._paused = False
        self._closing = False
        core.set_write_limits(self._high_water, self._low_water)
        if server is not None:
            _attach(server, self)
        loop._transports[self._sock_fd] = self
        base_events._set_nodelay(sock)
        loop.call_soon(protocol.connection_made, self)
        # Reading starts only once connection_made() has run.
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    # --- state shared with the core -----------------------------------------------------

    @property
    def _eof(self):
        return self._c.eof if self._c is not None else False

    @property
    def _empty_waiter(self):
        return self._c.empty_waiter if self._c is not None else None

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        loop = self._loop
        if loop is not None and not loop.is_closed() and self._c is not None:
            info.append("read=polling" if self._c.reading else "read=idle")
            state = "polling" if self._c.flushing else "idle"
            info.append(f"write=<{state}, bufsize={self.get_write_buffer_size()}>")
        return "<{}>".format(" ".join(info))

    # --- the transport contract -------------------------------------------------------

    def set_protocol(self, protocol):
        self._c.set_protocol(protocol, isinstance(protocol, protocols.BufferedProtocol))
        self._protocol = protocol
        self._protocol_connected = True

    def get_protocol(self):
        return self._protocol

    def _start_reading(self):
        if self.is_reading():
            self._c.start_reading()

    def get_write_buffer_size(self):
        return self._c.buffer_size() if self._c is not None else 0

    def set_write_buffer_limits(self, high=None, low=None):
        super().set_write_buffer_limits(high, low)
        self._c.set_write_limits(self._high_water, self._low_water)

    def write_eof(self):
        if self._closing or self._eof:
            return
        self._c.write_eof()

    def can_write_eof(self):
        return True

    def close(self):
        if self._closing:
            return
        self._closing = True
        self._c.stop_reading()
        if not self.get_write_buffer_size():
            self._conn_lost += 1
            self._c.abort()
            self._loop.call_soon(self._call_connection_lost, None)

    def abort(self):
        self._force_close(None)

    def __del__(self, _warn=warnings.warn):
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            if self._c is not None:
                self._c.detach()
            self._sock.close()
            if self._server is not None:
                _detach(self._server, self)

    # --- what the core calls back ---------------------------------------------------------

    def _eof_received(self):
        if self._loop.get_debug():
            logger.debug("%r received EOF", self)
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        # The core has stopped reading; without keep_open the transport closes.
        if not keep_open:
            self.close()

    def _stream_error(self, exc, writing):
        if writing:
            self._fatal_error(exc, "Fatal write error on socket transport")
            waiter = self._empty_waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)
        else:
            self._fatal_error(exc, "Fatal read error on socket transport")

    def _write_drained(self):
        waiter = self._empty_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._closing and not self._conn_lost:
            self._call_connection_lost(None)

    def _warn_lost_write(self):
        logger.warning("socket.send() raised exception.")

    def _fatal_error(self, exc, message="Fatal error on transport"):
        report_fatal_error(self, exc, message)
        self._force_close(exc)

    def _force_close(self, exc):
        if self._conn_lost:
            return
        self._closing = True
        self._c.abort()
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc):
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            core = self._c
            core.detach()
            self._sock.close()
            self._sock = None
            self._protocol = None
            self._loop = None
            server = self._server
            if server is not None:
                _detach(server, self)
                self._server = None
            waiter = core.empty_waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(ConnectionError("Connection is closed by peer"))

    # --- sendfile support (the loop's _sendfile_native) -------------------------------------

    def _make_empty_waiter(self):
        if self._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        waiter = self._loop.create_future()
        self._c.empty_waiter = waiter
        if not self.get_write_buffer_size():
            waiter.set_result(None)
        return waiter

    def _reset_empty_waiter(self):
        self._c.empty_waiter = None


# asyncio.DatagramTransport is listed as well: the stock transport derives from it only
# from Python 3.12 on, and ours must be one on every version (PITFALLS 1).
class DatagramTransport(selector_events._SelectorDatagramTransport, transports.DatagramTransport):
    """asyncio's datagram transport with its read side in C++: for IPv4 and IPv6
    sockets `_read_ready` is a ``_core.DatagramReader`` (one recvfrom handed to
    datagram_received without a Python frame) and `sendto` a ``_core.DatagramSender``
    (the immediate send of bytes to a numeric address, falling back to the stock
    method for everything else). The rest is the running interpreter's own code.

    The state the C callables read for every datagram is kept in slots (the stock
    class's instance attributes of these names; its code uses them unchanged), which
    the C side reads directly."""

    __slots__ = ("_protocol", "_conn_lost", "_closing", "_paused", "_address", "_buffer")

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Set before asyncio's __init__ registers self._read_ready as the reader.
            self._read_ready = _core.DatagramReader(self, sock.fileno())
            stock_sendto = super().sendto
            self.sendto = _core.DatagramSender(self, sock.fileno(), sock.family, stock_sendto)
        super().__init__(loop, sock, protocol, address, waiter, extra)

    def _call_connection_lost(self, exc):
        try:
            super()._call_connection_lost(exc)
        finally:
            # The C reader and sender refer to the transport: dropping them ends that
            # cycle, so a closed transport is freed at once, as asyncio's is (not only
            # by the cyclic GC). A later sendto() is the stock method's.
            self.__dict__.pop("_read_ready", None)
            self.__dict__.pop("sendto", None)
