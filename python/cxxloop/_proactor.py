"""cxxloop.ProactorEventLoop: the asyncio event loop over the io_uring engine.

A sibling of the selector loop (cxxloop.Loop), not a subclass: both derive from
_loop._LoopBase, as asyncio's SelectorEventLoop and ProactorEventLoop both derive from
BaseEventLoop. So ``isinstance(loop, cxxloop.SelectorEventLoop)`` is false for it, as
it is for asyncio's own proactor, and code that tests for the selector loop to decide
whether readiness callbacks are available does not mistake one for the other. Unlike
asyncio's Windows proactor, this one supports add_reader()/add_writer() too.

Its data paths are completion-based: a TCP or Unix stream transport is the selector
loop's transport class over a completion core (the core's UringStream: a multishot
receive into a shared provided-buffer ring, sends queued into the ring and submitted
with the next wait), and a server accepts with one multishot accept per listening
socket (_core.UringAcceptor). Everything else -- add_reader/add_writer, the sock_*
methods, datagrams, pipes, subprocesses, signals -- runs on poll operations inside the
same ring (the engine's "uring" poller).
"""

import errno as _errno
import os
import socket

from asyncio import constants, trsock
from asyncio.log import logger

from . import _core
from ._loop import _LoopBase

# What asyncio's accept loop treats as running out of resources: it logs, stops
# accepting and tries again after constants.ACCEPT_RETRY_DELAY seconds.
_OUT_OF_RESOURCES = (_errno.EMFILE, _errno.ENFILE, _errno.ENOBUFS, _errno.ENOMEM)
# What it ignores (the peer gave up, or a spurious wake-up): accepting goes on.
_TRANSIENT = (_errno.EAGAIN, _errno.EWOULDBLOCK, _errno.EINTR, _errno.ECONNABORTED, _errno.EPROTO)

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
        self._acceptors = {}  # fd -> (listening socket, its _core.UringAcceptor)
        self._init_loop("uring")

    # --- servers: a multishot accept per listening socket -----------------------------------

    def _start_serving(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100,
                       ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                       ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        fd = sock.fileno()
        if fd < 0:
            return  # Closed while a retry after EMFILE was pending.
        owner, acceptor = self._acceptors.get(fd, (None, None))
        if owner is not sock:
            if acceptor is not None:
                acceptor.stop()  # A socket closed behind our back held this fd number.
            args = (protocol_factory, sock, sslcontext, server, backlog,
                    ssl_handshake_timeout, ssl_shutdown_timeout)
            acceptor = _core.UringAcceptor(self, fd, self._make_accepted(args), backlog)
            self._acceptors[fd] = (sock, acceptor)
        acceptor.start()

    def _make_accepted(self, args):
        """The acceptor's callback: asyncio's _accept_connection for one accepted fd,
        or for the error that ended the accept."""
        (protocol_factory, sock, sslcontext, server, backlog,
         ssl_handshake_timeout, ssl_shutdown_timeout) = args

        def accepted(fd, err):
            if fd >= 0:
                try:
                    conn = socket.socket(sock.family, sock.type, sock.proto, fileno=fd)
                except OSError:
                    os.close(fd)
                    return
                try:
                    addr = conn.getpeername()
                except OSError:
                    conn.close()  # Gone before we saw it (asyncio ignores that too).
                    return
                if self._debug:
                    logger.debug("%r got a new connection from %r: %r", server, addr, conn)
                conn.setblocking(False)
                self.create_task(self._accept_connection2(
                    protocol_factory, conn, {"peername": addr}, sslcontext, server,
                    ssl_handshake_timeout, ssl_shutdown_timeout))
                return
            if err in _TRANSIENT:
                owner, acceptor = self._acceptors.get(sock.fileno(), (None, None))
                if owner is sock:
                    acceptor.start()
                return
            # Out of resources, as asyncio: log, and accept again a second later. Any
            # other error is logged too, and retried the same way (asyncio's reader
            # would retry at the next readiness report).
            exc = OSError(err, os.strerror(err))
            message = ("socket.accept() out of system resource" if err in _OUT_OF_RESOURCES
                       else "Error on accepting a connection")
            self.call_exception_handler({
                "message": message,
                "exception": exc,
                "socket": trsock.TransportSocket(sock),
            })
            self.call_later(constants.ACCEPT_RETRY_DELAY, self._start_serving, *args)

        return accepted

    def _stop_serving(self, sock):
        owner, acceptor = self._acceptors.get(sock.fileno(), (None, None))
        if owner is sock:
            del self._acceptors[sock.fileno()]
            acceptor.stop()  # The kernel lets go of the socket before it is closed.
        super()._stop_serving(sock)

    def close(self):
        super().close()
        if self.is_closed() and "_acceptors" in self.__dict__:
            for _, acceptor in self._acceptors.values():
                acceptor.stop()
            self._acceptors.clear()
