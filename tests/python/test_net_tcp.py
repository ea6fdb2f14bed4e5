"""TCP transports and create_connection: the transport contract of
asyncio.transports, exactly as the stock selector loop behaves."""

import asyncio
import errno
import socket

import pytest

from conftest import run_briefly
from nethelpers import (
    HOST, HOST6, PY312, RecordingProtocol, accept, closed_port,
    drainer, listening_socket, needs_ipv6, payload, recv_exactly, recv_until_eof,
    reset_close, run, run_until,
)

pytestmark = pytest.mark.cxxloop_pending("network")


@pytest.fixture
def lsock():
    with listening_socket() as s:
        yield s


@pytest.fixture
def conn(loop, lsock):
    """(transport, protocol, peer): a client transport on `loop` connected to
    a blocking peer socket.  Everything is closed afterwards."""
    proto = RecordingProtocol(loop)
    tr, pr = run(loop, loop.create_connection(lambda: proto, *lsock.getsockname()))
    peer = accept(lsock)
    try:
        yield tr, pr, peer
    finally:
        peer.close()
        if not tr.is_closing():
            tr.close()
        run_until(loop, lambda: proto.lost, what="connection_lost")


# --------------------------------------------------------------------------
# Types and extra info


def test_transport_is_asyncio_transport(loop, conn):
    tr, pr, peer = conn
    # PITFALLS 1.
    assert isinstance(tr, asyncio.Transport)
    assert isinstance(tr, asyncio.ReadTransport)
    assert isinstance(tr, asyncio.WriteTransport)
    assert isinstance(tr, asyncio.BaseTransport)
    assert not isinstance(tr, asyncio.DatagramTransport)
    assert pr.transport is tr
    assert pr.events == ["made"]
    assert tr.get_protocol() is pr
    assert tr.is_closing() is False
    assert tr.is_reading() is True


def test_create_connection_returns_transport_and_the_factory_product(loop, lsock):
    made = []

    def factory():
        p = RecordingProtocol(loop)
        made.append(p)
        return p

    tr, pr = run(loop, loop.create_connection(factory, *lsock.getsockname()))
    peer = accept(lsock)
    try:
        assert made == [pr]
        # connection_made has run by the time create_connection returns.
        assert pr.transport is tr
    finally:
        tr.close()
        peer.close()
        run_until(loop, lambda: pr.lost)


def test_get_extra_info(loop, conn, lsock):
    tr, pr, peer = conn
    assert tr.get_extra_info("peername") == lsock.getsockname()
    assert tr.get_extra_info("sockname") == peer.getpeername()
    assert tr.get_extra_info("no-such-key") is None
    assert tr.get_extra_info("no-such-key", "dflt") == "dflt"
    assert tr.get_extra_info("sslcontext") is None
    assert tr.get_extra_info("peercert") is None
    assert tr.get_extra_info("ssl_object") is None

    sock = tr.get_extra_info("socket")
    assert sock is not None
    assert sock.family == socket.AF_INET
    assert sock.type == socket.SOCK_STREAM
    assert sock.fileno() >= 0
    assert sock.getsockname() == peer.getpeername()
    assert sock.getpeername() == lsock.getsockname()
    # asyncio turns Nagle off on TCP transports.
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    # The transport owns a non-blocking socket.
    assert sock.gettimeout() == 0


@needs_ipv6
def test_ipv6_connection(loop):
    with listening_socket(socket.AF_INET6) as ls:
        pr = RecordingProtocol(loop)
        tr, _ = run(loop, loop.create_connection(lambda: pr, HOST6, ls.getsockname()[1]))
        peer = accept(ls)
        try:
            assert tr.get_extra_info("peername")[:2] == (HOST6, ls.getsockname()[1])
            assert len(tr.get_extra_info("peername")) == 4
            assert tr.get_extra_info("socket").family == socket.AF_INET6
            tr.write(b"v6")
            assert recv_exactly(peer, 2) == b"v6"
        finally:
            tr.close()
            peer.close()
            run_until(loop, lambda: pr.lost)


# --------------------------------------------------------------------------
# write / writelines


def test_write_is_attempted_at_once_while_loop_not_running(loop, conn):
    # PITFALLS 6: the loop is not running here, yet the data must already be
    # on the wire, or this blocking recv would hang.
    tr, pr, peer = conn
    tr.write(b"hello")
    assert recv_exactly(peer, 5) == b"hello"
    assert tr.get_write_buffer_size() == 0
    tr.writelines([b"a", bytearray(b"b"), memoryview(b"cd")])
    assert recv_exactly(peer, 4) == b"abcd"


def test_write_accepts_bytes_like_and_rejects_others(loop, conn):
    tr, pr, peer = conn
    tr.write(bytearray(b"ba"))
    tr.write(memoryview(b"xmvx")[1:3])
    tr.write(b"")  # no-op
    assert recv_exactly(peer, 4) == b"bamv"
    with pytest.raises(TypeError, match="data argument must be a bytes-like object, not 'str'"):
        tr.write("text")
    with pytest.raises(TypeError):
        tr.write(12)
    assert not tr.is_closing()


def test_write_large_buffers_and_flushes_in_order(loop, conn):
    tr, pr, peer = conn
    data = payload(8 * 1024 * 1024)
    tr.set_write_buffer_limits(high=len(data) * 2)  # no pause_writing here
    tr.write(data)
    # The kernel cannot take 8 MiB at once from a peer that is not reading.
    assert tr.get_write_buffer_size() > 0
    got = bytearray()
    run_until(loop, drainer(peer, got, len(data)), timeout=10)
    assert bytes(got) == data
    run_until(loop, lambda: tr.get_write_buffer_size() == 0)


# --------------------------------------------------------------------------
# write_eof / half-close


def test_write_eof_half_closes(loop, conn):
    tr, pr, peer = conn
    assert tr.can_write_eof() is True
    tr.write(b"last")
    tr.write_eof()
    assert recv_until_eof(peer) == b"last"
    assert not tr.is_closing()
    # Reading still works after our write side is shut down.
    peer.sendall(b"still reading")
    run_until(loop, lambda: bytes(pr.data) == b"still reading")
    with pytest.raises(RuntimeError, match=r"Cannot call write\(\) after write_eof\(\)"):
        tr.write(b"x")
    tr.write_eof()  # a second call is a no-op
    assert not pr.lost


def test_write_eof_with_pending_data_sends_data_first(loop, conn):
    tr, pr, peer = conn
    data = payload(4 * 1024 * 1024, seed=3)
    tr.set_write_buffer_limits(high=len(data) * 2)
    tr.write(data)
    assert tr.get_write_buffer_size() > 0
    tr.write_eof()
    got = bytearray()
    run_until(loop, drainer(peer, got), timeout=10)  # until EOF
    assert bytes(got) == data
    assert not pr.lost


# --------------------------------------------------------------------------
# close / abort / connection_lost


def test_close_calls_connection_lost_none_later(loop, conn):
    tr, pr, peer = conn
    tr.write(b"bye")
    tr.close()
    assert tr.is_closing()
    assert tr.is_reading() is False
    # connection_lost is scheduled, not called synchronously.
    assert not pr.lost
    tr.close()  # idempotent
    run_briefly(loop)
    assert pr.lost and pr.exc is None
    assert pr.events == ["made", "lost"]
    assert recv_until_eof(peer) == b"bye"
    # Writes after close are silently dropped (asyncio counts them).
    tr.write(b"ignored")


def test_close_flushes_buffered_data_before_connection_lost(loop, conn):
    tr, pr, peer = conn
    data = payload(4 * 1024 * 1024, seed=7)
    tr.set_write_buffer_limits(high=len(data) * 2)
    tr.write(data)
    assert tr.get_write_buffer_size() > 0
    tr.close()
    run_briefly(loop, 3)
    assert not pr.lost  # still flushing to a peer that does not read
    got = bytearray()
    run_until(loop, drainer(peer, got), timeout=10)  # until EOF
    assert bytes(got) == data
    run_until(loop, lambda: pr.lost)
    assert pr.exc is None


def test_abort_drops_buffered_data(loop, conn):
    tr, pr, peer = conn
    data = payload(4 * 1024 * 1024)
    tr.set_write_buffer_limits(high=len(data) * 2)
    tr.write(data)
    assert tr.get_write_buffer_size() > 0
    tr.abort()
    assert tr.is_closing()
    run_until(loop, lambda: pr.lost)
    assert pr.exc is None
    assert tr.get_write_buffer_size() == 0
    got = recv_until_eof(peer)
    assert len(got) < len(data)
    tr.abort()  # harmless twice
    tr.close()


def test_peer_close_gives_eof_then_connection_lost(loop, conn):
    tr, pr, peer = conn
    peer.sendall(b"data")
    peer.close()
    run_until(loop, lambda: pr.lost)
    assert pr.events[0] == "made"
    assert pr.events[-2:] == ["eof", "lost"]
    assert bytes(pr.data) == b"data"
    assert pr.exc is None
    assert tr.is_closing()


def test_eof_received_returning_true_keeps_transport_half_open(loop, conn):
    tr, pr, peer = conn
    pr.eof_result = True
    peer.shutdown(socket.SHUT_WR)
    run_until(loop, lambda: pr.eof)
    run_briefly(loop, 3)
    assert not tr.is_closing()
    assert not pr.lost
    tr.write(b"reply after eof")
    assert recv_exactly(peer, 15) == b"reply after eof"
    tr.close()
    run_until(loop, lambda: pr.lost)
    assert pr.exc is None
    assert recv_until_eof(peer) == b""


def test_eof_received_returning_false_closes_transport(loop, conn):
    tr, pr, peer = conn
    pr.eof_result = False
    peer.shutdown(socket.SHUT_WR)
    run_until(loop, lambda: pr.lost)
    assert tr.is_closing()
    assert pr.exc is None
    assert recv_until_eof(peer) == b""


def test_connection_reset_by_peer(loop, conn):
    tr, pr, peer = conn
    peer.sendall(b"x")
    run_until(loop, lambda: pr.data)
    reset_close(peer)
    run_until(loop, lambda: pr.lost)
    assert isinstance(pr.exc, ConnectionResetError)
    assert pr.exc.errno == errno.ECONNRESET
    assert "eof" not in pr.events
    assert tr.is_closing()


def test_write_to_reset_peer_loses_connection_with_error(loop, conn):
    tr, pr, peer = conn
    tr.pause_reading()  # only the write path can notice the reset
    reset_close(peer)
    run_briefly(loop, 2)
    tr.write(b"into the void")
    run_until(loop, lambda: pr.lost)
    assert isinstance(pr.exc, (ConnectionResetError, BrokenPipeError))
    assert tr.is_closing()


# --------------------------------------------------------------------------
# Reading control


def test_pause_resume_reading(loop, conn):
    tr, pr, peer = conn
    assert tr.is_reading()
    tr.pause_reading()
    assert not tr.is_reading()
    tr.pause_reading()  # no-op
    peer.sendall(b"held")
    run_briefly(loop, 5)
    assert pr.data == b""
    tr.resume_reading()
    assert tr.is_reading()
    tr.resume_reading()  # no-op
    run_until(loop, lambda: pr.data == b"held")


def test_eof_while_paused_is_delivered_after_resume(loop, conn):
    tr, pr, peer = conn
    tr.pause_reading()
    peer.sendall(b"before eof")
    peer.shutdown(socket.SHUT_WR)
    run_briefly(loop, 5)
    assert pr.events == ["made"]
    tr.resume_reading()
    run_until(loop, lambda: pr.lost)
    assert bytes(pr.data) == b"before eof"
    assert pr.events[-2:] == ["eof", "lost"]


def test_pause_reading_after_close_is_harmless(loop, conn):
    tr, pr, peer = conn
    tr.close()
    assert tr.is_reading() is False
    tr.pause_reading()
    tr.resume_reading()
    assert tr.is_reading() is False
    run_until(loop, lambda: pr.lost)


# --------------------------------------------------------------------------
# Write buffer limits


def test_write_buffer_limits(loop, conn):
    tr, pr, peer = conn
    assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
    tr.set_write_buffer_limits(high=100)
    assert tr.get_write_buffer_limits() == (25, 100)
    tr.set_write_buffer_limits(low=10)
    assert tr.get_write_buffer_limits() == (10, 40)
    tr.set_write_buffer_limits(high=50, low=50)
    assert tr.get_write_buffer_limits() == (50, 50)
    tr.set_write_buffer_limits(high=0)
    assert tr.get_write_buffer_limits() == (0, 0)
    tr.set_write_buffer_limits()
    assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
    with pytest.raises(ValueError, match=r"high \(10\) must be >= low \(20\) must be >= 0"):
        tr.set_write_buffer_limits(high=10, low=20)
    with pytest.raises(ValueError):
        tr.set_write_buffer_limits(high=-1)
    with pytest.raises(ValueError):
        tr.set_write_buffer_limits(high=8, low=-1)
    # A failed call changes nothing.
    assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
    assert tr.get_write_buffer_size() == 0


# --------------------------------------------------------------------------
# set_protocol


def test_set_protocol_redirects_callbacks(loop, conn):
    tr, pr, peer = conn
    peer.sendall(b"one")
    run_until(loop, lambda: pr.data == b"one")
    pr2 = RecordingProtocol(loop)
    pr2.state = "CONNECTED"  # it takes over a live connection
    tr.set_protocol(pr2)
    assert tr.get_protocol() is pr2
    peer.sendall(b"two")
    run_until(loop, lambda: pr2.data == b"two")
    assert bytes(pr.data) == b"one"
    peer.close()
    run_until(loop, lambda: pr2.lost)
    assert not pr.lost
    # the fixture waits on pr.lost: hand the connection back
    pr.lost = True


# --------------------------------------------------------------------------
# Closing from inside protocol callbacks


class _CloseIn(RecordingProtocol):
    where = None
    how = "close"

    def _act(self, where):
        if where == self.where:
            getattr(self.transport, self.how)()

    def connection_made(self, transport):
        super().connection_made(transport)
        self._act("made")

    def data_received(self, data):
        super().data_received(data)
        self._act("data")

    def eof_received(self):
        r = super().eof_received()
        self._act("eof")
        return r


@pytest.mark.parametrize("how", ["close", "abort"])
@pytest.mark.parametrize("where", ["made", "data", "eof"])
def test_close_or_abort_inside_callbacks(loop, lsock, where, how):
    pr = _CloseIn(loop)
    pr.where, pr.how = where, how
    tr, _ = run(loop, loop.create_connection(lambda: pr, *lsock.getsockname()))
    peer = accept(lsock)
    try:
        if where != "made":
            peer.sendall(b"abc")
            run_until(loop, lambda: pr.data or pr.lost)
        if where == "eof":
            peer.shutdown(socket.SHUT_WR)
        run_until(loop, lambda: pr.lost)
        assert pr.exc is None
        assert pr.events.count("lost") == 1
        if where == "data":
            assert pr.events.count("data") == 1
        assert tr.is_closing()
    finally:
        peer.close()
        tr.close()
    run_briefly(loop, 2)
    assert pr.events.count("lost") == 1


def test_no_data_received_after_close_in_data_received(loop, lsock):
    class P(RecordingProtocol):
        def data_received(self, data):
            super().data_received(data)
            self.transport.close()

    pr = P(loop)
    tr, _ = run(loop, loop.create_connection(lambda: pr, *lsock.getsockname()))
    peer = accept(lsock)
    try:
        peer.sendall(b"first")
        run_until(loop, lambda: pr.data)
        try:
            peer.sendall(b"second")
        except OSError:
            pass
        run_until(loop, lambda: pr.lost)
        run_briefly(loop, 3)
        assert bytes(pr.data) == b"first"
        assert pr.events == ["made", "data", "lost"]
    finally:
        peer.close()


def test_data_received_bytes_kept_or_dropped_stay_right(loop, lsock):
    # Reads of one size one after another, the protocol keeping some of the bytes
    # objects it gets, hashing and dropping others, writing others: whatever it keeps
    # or writes is unchanged, and every hash is its contents'.
    class P(asyncio.Protocol):
        def __init__(self):
            self.got = []     # (copy, object kept or None)
            self.hashes_ok = True
            self.i = 0

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.i += 1
            if hash(data) != hash(bytes(bytearray(data))):
                self.hashes_ok = False
            {data: 1}  # A dict key: the hash is cached in the object.
            if self.i % 3 == 0:
                self.transport.write(data)
            self.got.append((bytes(bytearray(data)), data if self.i % 2 == 0 else None))

    pr = P()
    tr, _ = run(loop, loop.create_connection(lambda: pr, *lsock.getsockname()))
    peer = accept(lsock)
    try:
        msgs = [payload(1000, seed=i) for i in range(30)]
        for i, m in enumerate(msgs):
            peer.sendall(m)
            run_until(loop, lambda: len(pr.got) > i or sum(len(c) for c, _ in pr.got) >= 1000 * (i + 1))
        assert b"".join(c for c, _ in pr.got) == b"".join(msgs)
        assert pr.hashes_ok
        for copy, kept in pr.got:
            if kept is not None:
                assert kept == copy and hash(kept) == hash(bytes(bytearray(kept)))
        echoed = b"".join(c for i, (c, _) in enumerate(pr.got) if (i + 1) % 3 == 0)
        assert recv_exactly(peer, len(echoed)) == echoed
    finally:
        tr.close()
        run_briefly(loop, 2)
        peer.close()


def test_exception_in_data_received_goes_to_handler_and_closes(loop, lsock, expect_exception_handler_calls):
    class P(RecordingProtocol):
        def data_received(self, data):
            super().data_received(data)
            raise ZeroDivisionError("boom")

    pr = P(loop)
    tr, _ = run(loop, loop.create_connection(lambda: pr, *lsock.getsockname()))
    peer = accept(lsock)
    try:
        peer.sendall(b"x")
        run_until(loop, lambda: pr.lost)
        assert isinstance(pr.exc, ZeroDivisionError)
        calls = expect_exception_handler_calls.take()
        assert len(calls) == 1
        assert calls[0]["message"] == "Fatal error: protocol.data_received() call failed."
        assert isinstance(calls[0]["exception"], ZeroDivisionError)
        assert calls[0]["transport"] is tr
        assert calls[0]["protocol"] is pr
    finally:
        peer.close()


def test_bytes_held_by_a_data_received_error_stay_right(loop, lsock, expect_exception_handler_calls):
    # data_received() raises: the exception's traceback holds the bytes it got (its
    # frame's argument), and the handler keeps the exception. Reads of the same size
    # on another connection afterwards leave those bytes as they were.
    class Raising(asyncio.Protocol):
        def connection_made(self, transport):
            self.lost = False

        def data_received(self, data):
            raise ZeroDivisionError("boom")

        def connection_lost(self, exc):
            self.lost = True

    class Keeping(RecordingProtocol):
        pass

    bad = Raising()
    tr1, _ = run(loop, loop.create_connection(lambda: bad, *lsock.getsockname()))
    peer1 = accept(lsock)
    good = Keeping(loop)
    tr2, _ = run(loop, loop.create_connection(lambda: good, *lsock.getsockname()))
    peer2 = accept(lsock)
    try:
        first = payload(1500, seed=1)
        peer1.sendall(first)
        run_until(loop, lambda: bad.lost)
        (call,) = expect_exception_handler_calls.take()
        exc = call["exception"]
        tb = exc.__traceback__
        while tb.tb_next is not None:
            tb = tb.tb_next
        held = tb.tb_frame.f_locals["data"]
        assert held == first and hash(held) == hash(bytes(bytearray(first)))
        msgs = [payload(1500, seed=i) for i in range(2, 12)]
        for i, m in enumerate(msgs):
            peer2.sendall(m)
            run_until(loop, lambda: len(good.data) >= 1500 * (i + 1))
        assert bytes(good.data) == b"".join(msgs)
        assert held == first and hash(held) == hash(bytes(bytearray(first)))
    finally:
        tr1.close()
        tr2.close()
        run_briefly(loop, 2)
        peer1.close()
        peer2.close()


# --------------------------------------------------------------------------
# create_connection options and errors


def test_create_connection_with_sock(loop, lsock):
    s = socket.socket()
    s.connect(lsock.getsockname())
    peer = accept(lsock)
    pr = RecordingProtocol(loop)
    tr, _ = run(loop, loop.create_connection(lambda: pr, sock=s))
    try:
        assert tr.get_extra_info("socket").fileno() == s.fileno()
        # The loop made the socket non-blocking.
        assert s.gettimeout() == 0
        tr.write(b"via sock")
        assert recv_exactly(peer, 8) == b"via sock"
    finally:
        tr.close()
        peer.close()
        run_until(loop, lambda: pr.lost)
    assert s.fileno() == -1  # the transport closed it


def test_create_connection_local_addr(loop, lsock):
    pr = RecordingProtocol(loop)
    tr, _ = run(loop, loop.create_connection(
        lambda: pr, *lsock.getsockname(), local_addr=(HOST, 0)))
    peer = accept(lsock)
    try:
        sockname = tr.get_extra_info("sockname")
        assert sockname[0] == HOST and sockname[1] != 0
        assert peer.getpeername() == sockname
    finally:
        tr.close()
        peer.close()
        run_until(loop, lambda: pr.lost)


def test_create_connection_local_addr_in_use_names_the_address(loop, lsock):
    # PITFALLS 16.
    used = lsock.getsockname()
    with listening_socket() as other:
        with pytest.raises(OSError) as ei:
            run(loop, loop.create_connection(
                asyncio.Protocol, *other.getsockname(), local_addr=used))
    assert ei.value.errno == errno.EADDRINUSE
    assert str(used[1]) in str(ei.value)
    assert HOST in str(ei.value)


def test_create_connection_refused(loop):
    port = closed_port()
    made = []
    with pytest.raises(ConnectionRefusedError) as ei:
        run(loop, loop.create_connection(lambda: made.append(1), HOST, port))
    assert ei.value.errno == errno.ECONNREFUSED
    assert made == []


@pytest.mark.skipif(not PY312, reason="all_errors is new in 3.12")
def test_create_connection_all_errors(loop):
    port = closed_port()
    with pytest.raises(ExceptionGroup) as ei:
        run(loop, loop.create_connection(asyncio.Protocol, HOST, port, all_errors=True))
    assert ei.value.exceptions
    assert all(isinstance(e, ConnectionRefusedError) for e in ei.value.exceptions)


@pytest.mark.parametrize("kwargs", [
    dict(happy_eyeballs_delay=0.05),
    dict(interleave=1),
    dict(happy_eyeballs_delay=0.05, interleave=2),
])
def test_create_connection_happy_eyeballs(loop, lsock, kwargs):
    port = lsock.getsockname()[1]
    pr = RecordingProtocol(loop)
    tr, _ = run(loop, loop.create_connection(lambda: pr, HOST, port, **kwargs))
    peer = accept(lsock)
    try:
        assert tr.get_extra_info("peername") == (HOST, port)
    finally:
        tr.close()
        peer.close()
        run_until(loop, lambda: pr.lost)


def test_create_connection_localhost_tries_every_address(loop):
    infos = socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)
    fams = {i[0] for i in infos}
    # Listen only on IPv4; a 'localhost' resolving to ::1 first must fall back.
    with listening_socket() as ls:
        port = ls.getsockname()[1]
        pr = RecordingProtocol(loop)
        tr, _ = run(loop, loop.create_connection(
            lambda: pr, "localhost", port, happy_eyeballs_delay=0.05))
        peer = accept(ls)
        try:
            assert tr.get_extra_info("peername") == (HOST, port)
        finally:
            tr.close()
            peer.close()
            run_until(loop, lambda: pr.lost)
    assert socket.AF_INET in fams


def test_create_connection_bad_argument_combinations(loop, lsock):
    host, port = lsock.getsockname()

    async def check(msg, **kw):
        with pytest.raises(ValueError, match=msg):
            await loop.create_connection(asyncio.Protocol, **kw)

    async def main():
        s = socket.socket()
        try:
            await check("host/port and sock can not be specified at the same time",
                        host=host, port=port, sock=s)
            await check("host and port was not specified and no sock specified")
            await check("server_hostname is only meaningful with ssl",
                        host=host, port=port, server_hostname="x")
            await check("ssl_handshake_timeout is only meaningful with ssl",
                        host=host, port=port, ssl_handshake_timeout=1)
            await check("ssl_shutdown_timeout is only meaningful with ssl",
                        host=host, port=port, ssl_shutdown_timeout=1)
        finally:
            s.close()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            await check("A Stream Socket was expected", sock=u)
        finally:
            u.close()

    run(loop, main())


def test_create_connection_unresolvable_numeric_flag(loop):
    with pytest.raises(socket.gaierror):
        run(loop, loop.create_connection(
            asyncio.Protocol, "not-a-number", 80, flags=socket.AI_NUMERICHOST))


def test_many_sequential_connections_do_not_leak(loop, lsock):
    host, port = lsock.getsockname()
    for i in range(20):
        pr = RecordingProtocol(loop)
        tr, _ = run(loop, loop.create_connection(lambda: pr, host, port))
        peer = accept(lsock)
        tr.write(b"%d" % i)
        assert recv_exactly(peer, len(b"%d" % i)) == b"%d" % i
        tr.close()
        run_until(loop, lambda: pr.lost)
        peer.close()
