"""create_datagram_endpoint and datagram transports (UDP and unix datagram)."""

import asyncio
import errno
import os
import socket
import sys

import pytest

from conftest import run_briefly
from nethelpers import (
    HOST, HOST6, PY313, RecordingDatagramProtocol, closed_port, has_ipv6, needs_ipv6, run, run_until,
)

pytestmark = pytest.mark.cxxloop_pending("network")

DGRAM_SOCK_MSG = r"(A UDP Socket|A datagram socket) was expected"  # 3.11-3.12 | 3.13


def endpoint(loop, **kw):
    pr = RecordingDatagramProtocol()
    tr, got = run(loop, loop.create_datagram_endpoint(lambda: pr, **kw))
    assert got is pr
    return tr, pr


def close(loop, *trs):
    prs = [tr.get_protocol() for tr in trs]
    for tr in trs:
        tr.close()
    run_until(loop, lambda: all(pr.lost for pr in prs))


@pytest.fixture
def udp_peer():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    s.settimeout(5)
    yield s
    s.close()


def test_datagram_transport_type_and_extra_info(loop):
    tr, pr = endpoint(loop, local_addr=(HOST, 0))
    try:
        # PITFALLS 1.  (Stock asyncio's own datagram transport only became a
        # DatagramTransport subclass in 3.12; cxxloop's must be one everywhere.)
        stock_311 = (type(tr).__module__ == "asyncio.selector_events"
                     and sys.version_info < (3, 12))
        assert isinstance(tr, asyncio.DatagramTransport) or stock_311
        assert isinstance(tr, asyncio.BaseTransport)
        assert pr.made == 1 and pr.transport is tr
        sockname = tr.get_extra_info("sockname")
        assert sockname[0] == HOST and sockname[1] != 0
        assert tr.get_extra_info("peername") is None
        sock = tr.get_extra_info("socket")
        assert sock.family == socket.AF_INET and sock.type == socket.SOCK_DGRAM
        assert sock.getsockname() == sockname
        assert tr.get_protocol() is pr
        assert tr.get_write_buffer_size() == 0
        assert not tr.is_closing()
    finally:
        close(loop, tr)
    assert pr.exc is None


def test_sendto_and_datagram_received(loop, udp_peer):
    tr, pr = endpoint(loop, local_addr=(HOST, 0))
    try:
        me = tr.get_extra_info("sockname")
        peer_addr = udp_peer.getsockname()
        # Sent at once, even though the loop is not running.
        tr.sendto(b"hello", peer_addr)
        data, addr = udp_peer.recvfrom(100)
        assert (data, addr) == (b"hello", me)
        tr.sendto(bytearray(b"ba"), peer_addr)
        tr.sendto(memoryview(b"mv"), peer_addr)
        assert udp_peer.recvfrom(100)[0] == b"ba"
        assert udp_peer.recvfrom(100)[0] == b"mv"
        udp_peer.sendto(b"one", me)
        udp_peer.sendto(b"two", me)
        run_until(loop, lambda: len(pr.datagrams) == 2)
        assert pr.datagrams == [(b"one", peer_addr), (b"two", peer_addr)]
        with pytest.raises(TypeError, match="data argument must be a bytes-like object, not 'str'"):
            tr.sendto("text", peer_addr)
    finally:
        close(loop, tr)


def test_large_datagram_intact(loop, udp_peer):
    tr, pr = endpoint(loop, local_addr=(HOST, 0))
    try:
        big = os.urandom(60000)
        udp_peer.sendto(big, tr.get_extra_info("sockname"))
        run_until(loop, lambda: pr.datagrams)
        assert pr.datagrams[0][0] == big
    finally:
        close(loop, tr)


def test_empty_datagram(loop, udp_peer):
    tr, pr = endpoint(loop, local_addr=(HOST, 0))
    try:
        # Receiving an empty datagram delivers b''.
        udp_peer.sendto(b"", tr.get_extra_info("sockname"))
        run_until(loop, lambda: pr.datagrams)
        assert pr.datagrams[0][0] == b""
        tr.sendto(b"", udp_peer.getsockname())
        tr.sendto(b"after", udp_peer.getsockname())
        first = udp_peer.recvfrom(100)[0]
        if PY313:
            assert first == b""  # 3.13 sends empty datagrams
            assert udp_peer.recvfrom(100)[0] == b"after"
        else:
            assert first == b"after"  # before 3.13 sendto(b'') is a no-op
    finally:
        close(loop, tr)


def test_connected_endpoint(loop, udp_peer):
    peer_addr = udp_peer.getsockname()
    tr, pr = endpoint(loop, remote_addr=peer_addr)
    try:
        assert tr.get_extra_info("peername") == peer_addr
        me = tr.get_extra_info("sockname")
        assert me[1] != 0
        tr.sendto(b"no addr")
        tr.sendto(b"same addr", peer_addr)
        assert udp_peer.recvfrom(100) == (b"no addr", me)
        assert udp_peer.recvfrom(100) == (b"same addr", me)
        with pytest.raises(ValueError, match="Invalid address: must be None or"):
            tr.sendto(b"x", (HOST, 9))
        udp_peer.sendto(b"reply", me)
        run_until(loop, lambda: pr.datagrams)
        assert pr.datagrams == [(b"reply", peer_addr)]
    finally:
        close(loop, tr)


def test_connected_to_closed_port_gets_connection_refused(loop):
    # The ICMP port-unreachable comes back as error_received(ConnectionRefusedError).
    port = closed_port()
    tr, pr = endpoint(loop, remote_addr=(HOST, port))
    try:
        for _ in range(3):
            tr.sendto(b"anyone?")
            run_briefly(loop)
            if pr.errors:
                break
        run_until(loop, lambda: pr.errors)
        assert isinstance(pr.errors[0], ConnectionRefusedError)
        assert pr.errors[0].errno == errno.ECONNREFUSED
        # Not fatal: the transport stays open.
        assert not tr.is_closing()
        assert not pr.lost
    finally:
        close(loop, tr)
    assert pr.exc is None


def test_local_and_remote_addr(loop, udp_peer):
    tr, pr = endpoint(loop, local_addr=(HOST, 0), remote_addr=udp_peer.getsockname())
    try:
        assert tr.get_extra_info("peername") == udp_peer.getsockname()
        tr.sendto(b"both")
        assert udp_peer.recvfrom(100) == (b"both", tr.get_extra_info("sockname"))
    finally:
        close(loop, tr)


def test_family_only_unbound(loop, udp_peer):
    tr, pr = endpoint(loop, family=socket.AF_INET)
    try:
        assert tr.get_extra_info("peername") is None
        tr.sendto(b"unbound", udp_peer.getsockname())
        data, addr = udp_peer.recvfrom(100)
        assert data == b"unbound"
        udp_peer.sendto(b"back", addr)
        run_until(loop, lambda: pr.datagrams)
        assert pr.datagrams[0][0] == b"back"
    finally:
        close(loop, tr)


def test_allow_broadcast(loop, udp_peer):
    # With allow_broadcast, asyncio does not connect() to remote_addr, but
    # sendto() without an address still goes there.
    tr, pr = endpoint(loop, local_addr=(HOST, 0), remote_addr=udp_peer.getsockname(),
                      allow_broadcast=True)
    try:
        sock = tr.get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) != 0
        assert tr.get_extra_info("peername") is None
        tr.sendto(b"bcast")
        assert udp_peer.recvfrom(100)[0] == b"bcast"
        with pytest.raises(ValueError, match="Invalid address"):
            tr.sendto(b"x", (HOST, 9))
    finally:
        close(loop, tr)


def test_reuse_port(loop):
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("no SO_REUSEPORT")
    tr1, pr1 = endpoint(loop, local_addr=(HOST, 0), reuse_port=True)
    try:
        port = tr1.get_extra_info("sockname")[1]
        assert tr1.get_extra_info("socket").getsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        tr2, pr2 = endpoint(loop, local_addr=(HOST, port), reuse_port=True)
        close(loop, tr2)
    finally:
        close(loop, tr1)


def test_bind_in_use(loop, udp_peer):
    with pytest.raises(OSError) as ei:
        endpoint(loop, local_addr=udp_peer.getsockname())
    assert ei.value.errno == errno.EADDRINUSE


def test_with_sock(loop, udp_peer):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((HOST, 0))
    tr, pr = endpoint(loop, sock=s)
    try:
        assert s.gettimeout() == 0
        assert tr.get_extra_info("sockname") == s.getsockname()
        tr.sendto(b"given", udp_peer.getsockname())
        assert udp_peer.recvfrom(100)[0] == b"given"
    finally:
        close(loop, tr)
    assert s.fileno() == -1


def test_bad_arguments(loop):
    async def check(exc, msg, **kw):
        with pytest.raises(exc, match=msg):
            await loop.create_datagram_endpoint(asyncio.DatagramProtocol, **kw)

    async def main():
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            await check(ValueError, DGRAM_SOCK_MSG, sock=t)
            await check(ValueError, r"socket modifier keyword arguments can not be used "
                        r"when sock is specified. \(local_addr=", sock=u,
                        local_addr=(HOST, 0))
            await check(ValueError, r"\(reuse_port=True\)", sock=u, reuse_port=True)
            await check(ValueError, "unexpected address family")
            await check(TypeError, "2-tuple is expected", local_addr=(HOST, 0, 0))
            await check(TypeError, "string is expected", family=socket.AF_UNIX,
                        local_addr=(HOST, 0))
        finally:
            u.close()
            t.close()

    run(loop, main())


def test_reuse_address_is_not_accepted(loop):
    # Removed in 3.11 (SO_REUSEADDR on UDP lets others steal the port).
    with pytest.raises(TypeError):
        run(loop, loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(HOST, 0), reuse_address=True))


@needs_ipv6
def test_ipv6(loop):
    tr1, pr1 = endpoint(loop, local_addr=(HOST6, 0))
    tr2, pr2 = endpoint(loop, remote_addr=tr1.get_extra_info("sockname")[:2])
    try:
        assert tr1.get_extra_info("socket").family == socket.AF_INET6
        tr2.sendto(b"six")
        run_until(loop, lambda: pr1.datagrams)
        data, addr = pr1.datagrams[0]
        assert data == b"six"
        assert addr[:2] == tr2.get_extra_info("sockname")[:2]
        assert len(addr) == 4
    finally:
        close(loop, tr1, tr2)


def test_unix_datagram(loop, tmp_path):
    a, b = str(tmp_path / "a.dgram"), str(tmp_path / "b.dgram")
    tr1, pr1 = endpoint(loop, family=socket.AF_UNIX, local_addr=a)
    tr2, pr2 = endpoint(loop, family=socket.AF_UNIX, local_addr=b, remote_addr=a)
    try:
        assert tr1.get_extra_info("sockname") == a
        assert tr2.get_extra_info("peername") == a
        tr2.sendto(b"unix dgram")
        run_until(loop, lambda: pr1.datagrams)
        assert pr1.datagrams == [(b"unix dgram", b)]
        tr1.sendto(b"reply", b)
        run_until(loop, lambda: pr2.datagrams)
        assert pr2.datagrams == [(b"reply", a)]
    finally:
        close(loop, tr1, tr2)


def test_close_and_abort(loop, udp_peer):
    tr, pr = endpoint(loop, local_addr=(HOST, 0))
    tr.close()
    assert tr.is_closing()
    assert not pr.lost
    run_briefly(loop)
    assert pr.lost and pr.exc is None
    tr.close()

    tr2, pr2 = endpoint(loop, remote_addr=udp_peer.getsockname())
    tr2.abort()
    assert tr2.is_closing()
    run_until(loop, lambda: pr2.lost)
    assert pr2.exc is None
    tr2.sendto(b"dropped")  # connected and closed: silently ignored
    udp_peer.settimeout(0.05)
    with pytest.raises(OSError):
        udp_peer.recvfrom(100)


def test_close_inside_datagram_received(loop, udp_peer):
    class P(RecordingDatagramProtocol):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            self.transport.close()

    pr = P()
    tr, _ = run(loop, loop.create_datagram_endpoint(lambda: pr, local_addr=(HOST, 0)))
    me = tr.get_extra_info("sockname")
    udp_peer.sendto(b"1", me)
    udp_peer.sendto(b"2", me)
    run_until(loop, lambda: pr.lost)
    run_briefly(loop, 2)
    assert [d for d, _ in pr.datagrams] == [b"1"]
    assert pr.exc is None


def test_pause_resume_reading(loop, udp_peer):
    tr, pr = endpoint(loop, local_addr=(HOST, 0))
    try:
        assert tr.is_reading()
        tr.pause_reading()
        assert not tr.is_reading()
        udp_peer.sendto(b"held", tr.get_extra_info("sockname"))
        run_briefly(loop, 5)
        assert pr.datagrams == []
        tr.resume_reading()
        run_until(loop, lambda: pr.datagrams)
        assert pr.datagrams[0][0] == b"held"
    finally:
        close(loop, tr)


def test_exception_in_datagram_received_goes_to_handler(loop, udp_peer, expect_exception_handler_calls):
    # The error is reported; the endpoint stays open and keeps receiving.
    class P(RecordingDatagramProtocol):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            if data == b"raise":
                raise ZeroDivisionError

    pr = P()
    tr, _ = run(loop, loop.create_datagram_endpoint(lambda: pr, local_addr=(HOST, 0)))
    try:
        udp_peer.sendto(b"raise", tr.get_extra_info("sockname"))
        run_until(loop, lambda: expect_exception_handler_calls.calls)
        calls = expect_exception_handler_calls.take()
        assert len(calls) == 1
        assert isinstance(calls[0]["exception"], ZeroDivisionError)
        assert not tr.is_closing()
        udp_peer.sendto(b"next", tr.get_extra_info("sockname"))
        run_until(loop, lambda: len(pr.datagrams) == 2)
    finally:
        close(loop, tr)


@pytest.mark.parametrize("family_host", [(socket.AF_INET, HOST), (socket.AF_INET6, HOST6)])
def test_a_closed_endpoint_is_freed_without_the_cyclic_gc(loop, family_host):
    # asyncio's datagram transport is in no reference cycle once its connection is
    # lost: dropping the last reference frees it, even with the cyclic GC off.
    import gc
    import weakref

    family, host = family_host
    if family == socket.AF_INET6 and not has_ipv6():
        pytest.skip("::1 is not available")

    class P(asyncio.DatagramProtocol):
        lost = False

        def connection_lost(self, exc):
            self.lost = True

    pr = P()
    gc.collect()
    gc.disable()
    try:
        tr, _ = run(loop, loop.create_datagram_endpoint(lambda: pr, local_addr=(host, 0)))
        tr.sendto(b"x", tr.get_extra_info("sockname"))
        run_briefly(loop)
        tr.close()
        run_until(loop, lambda: pr.lost)
        ref = weakref.ref(tr)
        del tr
        run_briefly(loop)
        assert ref() is None
    finally:
        gc.enable()
