"""cxxloop.Loop: the asyncio event loop over the C++ engine in cxxloop._core.

The hot paths (call_soon, timers, the run loop, fd watching) are C++: the
_core.Loop base comes first in the MRO. What is not hot and is pure asyncio policy
-- exception-handler formatting, run_until_complete, executors, async-generator
hooks, debug checks -- is inherited from the running interpreter's own
asyncio.base_events.BaseEventLoop (whose __init__ is not used), so it behaves
exactly as that Python's stock loop does. Transports have C++ data paths
(_transports.py, _pipes.py), and so do the sock_* calls that wait for readiness
(see _NATIVE_SOCK); servers, sock_connect, sock_sendfile and TLS are the
interpreter's own selector-loop code on this engine (see _install below).
"""

import asyncio
import functools
import os
import selectors
import socket
import sys
import threading
import time
import types
import warnings
import weakref

from asyncio import base_events, coroutines, events, format_helpers, selector_events, unix_events
from asyncio import constants

from . import _core, _pipes, _process, _transports

try:
    import ssl
except ImportError:  # A Python built without ssl: no TLS, as with asyncio.
    ssl = _sslproto = None
else:
    from . import _sslproto

__all__ = ("Loop", "SelectorEventLoop")

def _format_callback_source(callback, args, debug):
    try:
        return format_helpers._format_callback_source(callback, args, debug=debug)
    except TypeError:  # Python 3.11 has no debug parameter.
        return format_helpers._format_callback_source(callback, args)


def _report_callback_error(handle, exc):
    """What asyncio's Handle._run does with an exception from a callback."""
    loop = handle._loop
    cb = _format_callback_source(handle._callback, handle._args, loop.get_debug())
    context = {
        "message": f"Exception in callback {cb}",
        "exception": exc,
        "handle": handle,
    }
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    loop.call_exception_handler(context)


def _extract_stack():
    # Frame 1 is the Python code that called into the engine (call_soon, ...).
    return format_helpers.extract_stack(sys._getframe(1))


_core._set_hooks(_report_callback_error, _extract_stack)

# Every live loop, so a forked child can give each its own kernel objects: an epoll
# set shared with the parent would let one process consume the other's events.
_live_loops = weakref.WeakSet()


def _after_fork_in_child():
    for loop in list(_live_loops):
        try:
            loop._after_fork()
        except Exception:  # A loop that cannot recover fails when it is next used.
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _is_numeric_port(port):
    if port is None or type(port) is int:
        return True
    return isinstance(port, (str, bytes)) and port.isdigit()


def _run_unless_cancelled(handle):
    # A stock asyncio Handle (signal handlers) queued through call_soon: asyncio's
    # ready queue skips cancelled handles, and so does this.
    if not handle._cancelled:
        handle._run()


class _QueueView:
    """Read-only stand-in for asyncio's private ``loop._ready`` / ``loop._scheduled``:
    their length (and truth value) only, which is what code that peeks at them reads."""

    __slots__ = ("_loop", "_index")

    def __init__(self, loop, index):
        self._loop = loop
        self._index = index

    def __len__(self):
        return self._loop._counts[self._index]

    def __repr__(self):
        return f"<{len(self)} queued>"


class _SelectorLoopParts:
    """Methods of asyncio's selector loop that cxxloop uses as they are (see below)."""


class _UnixLoopParts(_SelectorLoopParts):
    """Methods of asyncio's Unix selector loop that cxxloop uses as they are."""


class _LoopBase(_core.Loop, _UnixLoopParts, base_events.BaseEventLoop):
    """What cxxloop's loops share: the C++ scheduler and engine, asyncio's policy code,
    signals, fd watching and the transports. Not public: Loop (the selector loop) and
    ProactorEventLoop (the io_uring loop) are siblings over it, as asyncio's selector
    and proactor loops are siblings over BaseEventLoop."""

    def _init_loop(self, poller):
        """Set up the engine over `poller` (a backend name, None or a selector) and the
        Python-level state asyncio's inherited methods expect."""
        self._init_core(poller)
        _live_loops.add(self)
        self._thread_id = None
        self._clock_resolution = time.get_clock_info("monotonic").resolution
        self._default_executor = None
        self._executor_shutdown_called = False
        self._exception_handler = None
        self._current_handle = None
        self._task_factory = None
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._old_agen_hooks = None
        self._transports = weakref.WeakValueDictionary()
        self._signal_handlers = {}
        self._unix_server_sockets = {}
        self._ssock = self._csock_ = None
        self.set_debug(coroutines._is_debug_mode())

    def __repr__(self):
        return (f"<{self.__class__.__name__} running={self.is_running()} "
                f"closed={self.is_closed()} debug={self.get_debug()}>")

    @property
    def _closed(self):
        return self.is_closed()

    @property
    def _ready(self):
        return _QueueView(self, 0)

    @property
    def _scheduled(self):
        return _QueueView(self, 1)

    # --- running and stopping ---------------------------------------------------------

    def _run_forever_setup(self):
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        self._old_agen_hooks = sys.get_asyncgen_hooks()
        self._thread_id = threading.get_ident()
        sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                               finalizer=self._asyncgen_finalizer_hook)
        events._set_running_loop(self)

    def _run_forever_cleanup(self):
        self._stopping = False
        self._thread_id = None
        events._set_running_loop(None)
        self._set_coroutine_origin_tracking(False)
        if self._old_agen_hooks is not None:
            sys.set_asyncgen_hooks(*self._old_agen_hooks)
            self._old_agen_hooks = None

    def run_forever(self):
        """Run until stop() is called."""
        # The checks come before the try: a refused nested run must not tear down
        # the state of the run that is in progress.
        self._check_closed()
        self._check_running()
        try:
            self._run_forever_setup()
            self._run_forever_core()
        finally:
            self._run_forever_cleanup()


    def close(self):
        """Close the loop: drop pending callbacks, release the engine, shut down the
        default executor without waiting. The loop must not be running."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self._debug:
            base_events.logger.debug("Close %r", self)
        _process.close_child_watches(self)
        self._close_core()
        self._close_signals()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    # --- futures and tasks -------------------------------------------------------------------

    def create_task(self, coro, *, name=None, context=None, **kwargs):
        """Schedule a coroutine; extra keywords (e.g. eager_start) go to the Task."""
        self._check_closed()
        if self._task_factory is None:
            task = asyncio.Task(coro, loop=self, name=name, context=context, **kwargs)
            if task._source_traceback:
                del task._source_traceback[-1]
            return task
        if context is None:
            # As asyncio does: the legacy factory signature when no context is given.
            task = self._task_factory(self, coro, **kwargs)
        else:
            task = self._task_factory(self, coro, context=context, **kwargs)
        if name is not None:
            task.set_name(name)
        return task

    # --- errors and debug ----------------------------------------------------------------------

    def _log_slow_callback(self, handle, seconds):
        # None stands for a transport's own I/O (no handle exists for it).
        what = "<transport I/O>" if handle is None else base_events._format_handle(handle)
        base_events.logger.warning("Executing %s took %.3f seconds", what, seconds)

    # --- DNS ------------------------------------------------------------------------------------

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        """socket.getaddrinfo() without blocking the loop. A numeric host with a
        numeric port needs no lookup, so it is answered at once; names go through the
        default executor, as asyncio does."""
        if (not self._debug and not self._executor_shutdown_called
                and not flags & socket.AI_CANONNAME and _is_numeric_port(port)):
            self._check_closed()
            try:
                return socket.getaddrinfo(host, port, family, type, proto,
                                          flags | socket.AI_NUMERICHOST)
            except (socket.gaierror, UnicodeError):
                pass  # Not numeric (or not valid): the executor gives the real answer.
        return await super().getaddrinfo(host, port, family=family, type=type,
                                         proto=proto, flags=flags)

    # --- transports ------------------------------------------------------------------------

    def _make_socket_transport(self, sock, protocol, waiter=None, *, extra=None, server=None):
        return _transports.SocketTransport(self, sock, protocol, waiter, extra, server)

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        return _transports.DatagramTransport(self, sock, protocol, address, waiter, extra)

    # --- TLS: asyncio's SSLProtocol with a C per-record path (_sslproto) -----------------

    def _make_ssl_transport(self, rawsock, protocol, sslcontext, waiter=None, *,
                            server_side=False, server_hostname=None, extra=None, server=None,
                            ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                            ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        if sys.version_info >= (3, 12):  # 3.11's selector loop does not check.
            self._ensure_fd_no_transport(rawsock)
        ssl_protocol = _sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        self._make_socket_transport(rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    async def start_tls(self, transport, protocol, sslcontext, *, server_side=False,
                        server_hostname=None, ssl_handshake_timeout=None,
                        ssl_shutdown_timeout=None):
        """Upgrade an existing transport to TLS; returns the new transport, which
        `protocol` should use from then on (asyncio's start_tls)."""
        if ssl is None:
            raise RuntimeError("Python ssl module is not available")
        if not isinstance(sslcontext, ssl.SSLContext):
            raise TypeError(f"sslcontext is expected to be an instance of ssl.SSLContext, "
                            f"got {sslcontext!r}")
        if not getattr(transport, "_start_tls_compatible", False):
            raise TypeError(f"transport {transport!r} is not supported by start_tls()")
        waiter = self.create_future()
        ssl_protocol = _sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout, call_connection_made=False)
        # Reading stays paused until the SSL protocol has its connection_made(), so
        # no data reaches it before.
        transport.pause_reading()
        transport.set_protocol(ssl_protocol)
        made = self.call_soon(ssl_protocol.connection_made, transport)
        resumed = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            made.cancel()
            resumed.cancel()
            raise
        return ssl_protocol._app_transport

    # --- watching file descriptors ------------------------------------------------------------

    def _ensure_fd_no_transport(self, fd):
        fileno = fd
        if not isinstance(fileno, int):
            try:
                fileno = int(fileno.fileno())
            except (AttributeError, TypeError, ValueError):
                raise ValueError(f"Invalid file object: {fd!r}") from None
        transport = self._transports.get(fileno)
        if transport and not transport.is_closing():
            raise RuntimeError(
                f"File descriptor {fd!r} is used by transport {transport!r}")
        return fileno

    @staticmethod
    def _fd(fileno):
        if fileno < 0:
            raise ValueError(f"Invalid file descriptor: {fileno}")
        return fileno

    def add_reader(self, fd, callback, *args):
        """Start watching fd for readability and call callback(*args) when readable."""
        fileno = self._ensure_fd_no_transport(fd)
        self._check_closed()
        self._add_reader(self._fd(fileno), callback, *args)

    def remove_reader(self, fd):
        """Stop watching fd for readability; True if it was watched."""
        fileno = self._ensure_fd_no_transport(fd)
        if self.is_closed():
            return False
        return self._remove_reader(self._fd(fileno))

    def add_writer(self, fd, callback, *args):
        """Start watching fd for writability and call callback(*args) when writable."""
        fileno = self._ensure_fd_no_transport(fd)
        self._check_closed()
        self._add_writer(self._fd(fileno), callback, *args)

    def remove_writer(self, fd):
        """Stop watching fd for writability; True if it was watched."""
        fileno = self._ensure_fd_no_transport(fd)
        if self.is_closed():
            return False
        return self._remove_writer(self._fd(fileno))

    # --- pipes (C++ data path, _pipes) and child processes (_process) -----------------

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return _pipes.ReadPipeTransport(self, pipe, protocol, waiter, extra)

    def _make_write_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return _pipes.WritePipeTransport(self, pipe, protocol, waiter, extra)

    _make_subprocess_transport = _process.make_subprocess_transport

    # --- signals: Python's wakeup fd writes signal numbers to a socket we watch --------------

    def add_signal_handler(self, sig, callback, *args):
        """Run callback(*args) in the loop whenever signal sig arrives (main thread only)."""
        unix_events._UnixSelectorEventLoop.add_signal_handler(self, sig, callback, *args)
        # asyncio leaves warn_on_full_buffer on. A signal storm fills the wakeup socket,
        # and CPython then queues the warning from inside its C signal handler through a
        # lock that is not reentrant: a signal landing while the main thread holds that
        # lock deadlocks the interpreter (seen on 3.13.0). The loop is woken up by the
        # bytes already queued, so the warning carries nothing the loop needs.
        # (unix_events.signal: the module object asyncio's own code calls, so a test
        # that patches it sees this call too.)
        unix_events.signal.set_wakeup_fd(self._csock.fileno(), warn_on_full_buffer=False)

    remove_signal_handler = unix_events._UnixSelectorEventLoop.remove_signal_handler
    _handle_signal = unix_events._UnixSelectorEventLoop._handle_signal
    _check_signal = unix_events._UnixSelectorEventLoop._check_signal

    @property
    def _csock(self):
        """The socket Python's signal wakeup fd writes to, made on first use."""
        if self._csock_ is None and not self.is_closed():
            self._ssock, self._csock_ = socket.socketpair()
            self._ssock.setblocking(False)
            self._csock_.setblocking(False)
            self._add_reader(self._ssock.fileno(), self._read_from_self)
        return self._csock_

    def _read_from_self(self):
        while True:
            try:
                data = self._ssock.recv(4096)
            except InterruptedError:
                continue
            except BlockingIOError:
                break
            if not data:
                break
            for signum in data:
                if signum:
                    self._handle_signal(signum)

    def _add_callback_signalsafe(self, handle):
        self.call_soon(_run_unless_cancelled, handle)

    def _close_signals(self):
        if not sys.is_finalizing():
            for sig in list(self._signal_handlers):
                self.remove_signal_handler(sig)
        elif self._signal_handlers:
            warnings.warn(f"Closing the loop {self!r} on interpreter shutdown "
                          f"stage, skipping signal handlers removal",
                          ResourceWarning, source=self)
            self._signal_handlers.clear()
        if self._ssock is not None:
            self._ssock.close()
            self._csock_.close()
            self._ssock = self._csock_ = None

    @property
    def _selector(self):
        """What asyncio's transports read for their repr: a view of the fd registrations."""
        if self.is_closed():
            return None  # As asyncio's selector loop, which drops its selector on close().
        return self.__dict__.get("_py_selector") or _SelectorView(self)

    @_selector.setter
    def _selector(self, selector):
        self.__dict__["_py_selector"] = selector


class Loop(_LoopBase):
    """An asyncio event loop whose engine is written in C++ (readiness-based).

    With no ``selector`` it waits on the engine's native poller: ``poller`` picks
    "epoll", "poll" or "select"; None takes the CXXLOOP_POLLER environment variable,
    else the best the platform has. Given any ``selectors.BaseSelector`` instance
    (e.g. ``selectors.SelectSelector()`` for character devices on macOS) it waits on
    that object instead, as asyncio's SelectorEventLoop does.
    """

    def __init__(self, selector=None, *, poller=None):
        if selector is not None:
            if not isinstance(selector, selectors.BaseSelector):
                raise TypeError(
                    f"selector must be a selectors.BaseSelector or None, got {selector!r}")
            if poller is not None:
                raise TypeError("pass either selector or poller, not both")
            self._py_selector = selector
            poller = selector
        elif poller is not None and not isinstance(poller, str):
            raise TypeError(f"poller must be a backend name or None, got {poller!r}")
        self._init_loop(poller)


class _SelectorView:
    """Answers get_key()/get_map() like a selector, from the engine's registrations."""

    __slots__ = ("_loop",)

    def __init__(self, loop):
        self._loop = loop

    def get_key(self, fileobj):
        fd = selectors._fileobj_to_fd(fileobj)
        reader, writer = self._loop._reader_handle(fd), self._loop._writer_handle(fd)
        if reader is None and writer is None:
            raise KeyError(f"{fd!r} is not registered")
        events = (selectors.EVENT_READ if reader is not None else 0) | (
            selectors.EVENT_WRITE if writer is not None else 0)
        return selectors.SelectorKey(fileobj, fd, events, (reader, writer))


# SSL and datagram transports, servers, Unix sockets and the sock_* API (whose
# readiness waits are then replaced by C, see _NATIVE_SOCK; the stock helpers stay
# for the calls that path hands back): these are the running interpreter's own selector-loop
# implementations, unchanged. They need only what the engine provides
# (_add_reader/_add_writer and friends, call_soon, timers), so they behave exactly as
# the stock loop's do, on top of the C++ scheduler and poller.
_FROM_SELECTOR_LOOP = (
    "_start_serving", "_accept_connection", "_accept_connection2", "_stop_serving",
    "_sendfile_native",
    "sock_recv", "_sock_recv", "_sock_read_done", "sock_recv_into", "_sock_recv_into",
    "sock_recvfrom", "_sock_recvfrom", "sock_recvfrom_into", "_sock_recvfrom_into",
    "sock_sendall", "_sock_sendall", "sock_sendto", "_sock_sendto", "_sock_write_done",
    "sock_connect", "_sock_connect", "_sock_connect_cb", "sock_accept", "_sock_accept",
)
_FROM_UNIX_LOOP = (
    "create_unix_connection", "create_unix_server", "_stop_serving",
    "_child_watcher_callback",
    "_sock_sendfile_native", "_sock_sendfile_native_impl",
    "_sock_sendfile_update_filepos", "_sock_add_cancellation_callback",
)


def _install(target, source, names):
    """Copies source's own functions into target. A function that uses zero-argument
    super() gets its __class__ cell pointed at target, so super() continues along
    Loop's MRO (from the Unix part to the selector part) as it did in asyncio's."""
    for name in names:
        func = source.__dict__.get(name)
        if func is None:
            continue
        if "__class__" in func.__code__.co_freevars:
            cells = tuple(
                types.CellType(target) if var == "__class__" else cell
                for var, cell in zip(func.__code__.co_freevars, func.__closure__))
            func = types.FunctionType(func.__code__, func.__globals__, func.__name__,
                                      func.__defaults__, cells)
            func.__kwdefaults__ = source.__dict__[name].__kwdefaults__
        setattr(target, name, func)


_install(_SelectorLoopParts, selector_events.BaseSelectorEventLoop, _FROM_SELECTOR_LOOP)
_install(_UnixLoopParts, unix_events._UnixSelectorEventLoop, _FROM_UNIX_LOOP)


# The sock_* methods that wait for readiness are C (src/bind/bind_sock.cpp): each call
# returns a coroutine object made in C that tries the socket call at once and
# otherwise waits through the engine's fd watch, without a Python frame, Handle or
# done callback. Calls it cannot serve exactly as asyncio would (a socket subclass, a
# blocking socket, debug mode, keyword arguments, an overridden create_future) get
# asyncio's own coroutine, kept here under _stock_<name>. sock_connect (name
# resolution first) and sock_sendfile stay asyncio's.
_NATIVE_SOCK = ("sock_recv", "sock_recv_into", "sock_sendall", "sock_recvfrom",
                "sock_recvfrom_into", "sock_sendto", "sock_accept")


def _sock_wait_stock(self, name, fd, fut, sock, arg, extra):
    """Waits as asyncio's sock_* do, for a native call whose fd the engine cannot
    route to it (add_reader()/add_writer() callbacks are registered on it). `extra`
    is what sock_sendall has sent, sock_recvfrom_into's nbytes or sock_sendto's
    address."""
    if name in ("sock_sendall", "sock_sendto"):
        if name == "sock_sendall":
            handle = self._add_writer(fd, self._sock_sendall, fut, sock, memoryview(arg), [extra])
        else:
            handle = self._add_writer(fd, self._sock_sendto, fut, sock, arg, extra)
        fut.add_done_callback(functools.partial(self._sock_write_done, fd, handle=handle))
        return
    if name == "sock_recv":
        handle = self._add_reader(fd, self._sock_recv, fut, sock, arg)
    elif name == "sock_recv_into":
        handle = self._add_reader(fd, self._sock_recv_into, fut, sock, arg)
    elif name == "sock_recvfrom":
        handle = self._add_reader(fd, self._sock_recvfrom, fut, sock, arg)
    elif name == "sock_recvfrom_into":
        handle = self._add_reader(fd, self._sock_recvfrom_into, fut, sock, arg, extra)
    else:
        handle = self._add_reader(fd, self._sock_accept, fut, sock)
    fut.add_done_callback(functools.partial(self._sock_read_done, fd, handle=handle))


_stock_sock = {name: selector_events.BaseSelectorEventLoop.__dict__[name] for name in _NATIVE_SOCK}
for _name, _func in _stock_sock.items():
    setattr(_LoopBase, "_stock_" + _name, _func)
for _name, _method in _core._sock_methods(_core.Loop, _stock_sock).items():
    setattr(_LoopBase, _name, _method)
_LoopBase._sock_wait_stock = _sock_wait_stock
del _name, _func, _method


# asyncio's EventLoop is its SelectorEventLoop on Unix; ours are one class too.
SelectorEventLoop = Loop
