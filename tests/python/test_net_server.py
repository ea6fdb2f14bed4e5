"""create_server and the Server object (asyncio.AbstractServer)."""

import asyncio
import errno
import os
import resource
import socket
import sys

import pytest

from conftest import run_briefly
from nethelpers import (
    HOST, HOST6, PY313, EchoProtocol, RecordingProtocol, needs_ipv6, payload,
    recv_exactly, run, run_until,
)

pytestmark = pytest.mark.cxxloop_pending("network")


class ServerSide(RecordingProtocol):
    """Server-side protocol that registers itself in a list."""

    def __init__(self, loop, registry):
        super().__init__(loop)
        registry.append(self)


def connect(addr, family=socket.AF_INET):
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.settimeout(5)
        s.connect(addr)
    except BaseException:
        s.close()
        raise
    return s


def close_server(loop, server):
    server.close()
    run(loop, server.wait_closed())


# --------------------------------------------------------------------------
# The Server object


def test_server_type_and_sockets_tuple(loop):
    server = run(loop, loop.create_server(asyncio.Protocol, HOST, 0))
    try:
        # PITFALLS 1 and 12.
        assert isinstance(server, asyncio.AbstractServer)
        assert type(server.sockets) is tuple
        assert len(server.sockets) == 1
        s = server.sockets[0]
        assert s.family == socket.AF_INET
        assert s.type == socket.SOCK_STREAM
        assert s.getsockname()[0] == HOST
        assert s.getsockname()[1] != 0
        assert server.get_loop() is loop
        assert server.is_serving()
        # SO_REUSEADDR is on by default on POSIX.
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
    finally:
        close_server(loop, server)
    assert server.sockets == ()
    assert type(server.sockets) is tuple
    assert not server.is_serving()
    server.close()  # idempotent


def test_server_accepts_and_echoes(loop):
    server = run(loop, loop.create_server(EchoProtocol, HOST, 0))
    try:
        addr = server.sockets[0].getsockname()
        c = connect(addr)
        try:
            c.sendall(b"ping")
            loop.run_until_complete(asyncio.sleep(0.05))
            assert recv_exactly(c, 4) == b"ping"
            c.shutdown(socket.SHUT_WR)

            async def read_eof():
                c.setblocking(False)
                return await loop.sock_recv(c, 10)
            assert run(loop, read_eof()) == b""
        finally:
            c.close()
    finally:
        close_server(loop, server)


def test_server_transport_extra_info_and_factory_per_connection(loop):
    protos = []
    server = run(loop, loop.create_server(lambda: ServerSide(loop, protos), HOST, 0))
    try:
        addr = server.sockets[0].getsockname()
        clients = [connect(addr) for _ in range(3)]
        try:
            run_until(loop, lambda: len(protos) == 3 and all(p.transport for p in protos))
            peers = sorted(p.transport.get_extra_info("peername") for p in protos)
            assert peers == sorted(c.getsockname() for c in clients)
            for p in protos:
                tr = p.transport
                assert isinstance(tr, asyncio.Transport)
                assert tr.get_extra_info("sockname") == addr
                assert tr.get_extra_info("socket").getsockopt(
                    socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            for c in clients:
                c.close()
        run_until(loop, lambda: all(p.lost for p in protos))
        assert all(p.exc is None for p in protos)
    finally:
        close_server(loop, server)


def test_server_many_concurrent_clients_large_payload(loop):
    server = run(loop, loop.create_server(EchoProtocol, HOST, 0))
    port = server.sockets[0].getsockname()[1]
    data = payload(256 * 1024)

    async def client(i):
        r, w = await asyncio.open_connection(HOST, port)
        w.write(data)
        got = await r.readexactly(len(data))
        w.close()
        await w.wait_closed()
        return got == data

    async def main():
        return await asyncio.gather(*(client(i) for i in range(10)))

    try:
        assert run(loop, main()) == [True] * 10
    finally:
        close_server(loop, server)


@needs_ipv6
def test_server_multiple_hosts(loop):
    server = run(loop, loop.create_server(EchoProtocol, [HOST, HOST6], 0))
    try:
        assert type(server.sockets) is tuple
        fams = sorted(s.family for s in server.sockets)
        assert fams == sorted([socket.AF_INET, socket.AF_INET6])
        for s in server.sockets:
            if s.family == socket.AF_INET6:
                # asyncio sets IPV6_V6ONLY so the two sockets do not clash.
                assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
        for s in server.sockets:
            c = connect(s.getsockname()[:2], s.family)
            try:
                c.sendall(b"multi")
                loop.run_until_complete(asyncio.sleep(0.05))
                assert recv_exactly(c, 5) == b"multi"
            finally:
                c.close()
    finally:
        close_server(loop, server)


def test_server_same_port_twice_fails_naming_the_address(loop):
    server = run(loop, loop.create_server(asyncio.Protocol, HOST, 0))
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(OSError) as ei:
            run(loop, loop.create_server(asyncio.Protocol, HOST, port))
        # PITFALLS 16.
        assert ei.value.errno == errno.EADDRINUSE
        msg = str(ei.value)
        assert HOST in msg and str(port) in msg
        assert "error while attempting to bind on address" in msg
    finally:
        close_server(loop, server)


def test_server_reuse_port(loop):
    if not hasattr(socket, "SO_REUSEPORT"):
        pytest.skip("no SO_REUSEPORT")
    s1 = run(loop, loop.create_server(asyncio.Protocol, HOST, 0, reuse_port=True))
    try:
        port = s1.sockets[0].getsockname()[1]
        assert s1.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) != 0
        s2 = run(loop, loop.create_server(asyncio.Protocol, HOST, port, reuse_port=True))
        try:
            assert s2.sockets[0].getsockname()[1] == port
        finally:
            close_server(loop, s2)
    finally:
        close_server(loop, s1)


def test_server_reuse_address_false(loop):
    server = run(loop, loop.create_server(asyncio.Protocol, HOST, 0, reuse_address=False))
    try:
        s = server.sockets[0]
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
    finally:
        close_server(loop, server)


@pytest.mark.skipif(not PY313, reason="keep_alive is new in 3.13")
def test_server_keep_alive(loop):
    protos = []
    server = run(loop, loop.create_server(lambda: ServerSide(loop, protos), HOST, 0,
                                          keep_alive=True))
    try:
        assert server.sockets[0].getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        c = connect(server.sockets[0].getsockname())
        try:
            run_until(loop, lambda: protos and protos[0].transport)
            s = protos[0].transport.get_extra_info("socket")
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        finally:
            c.close()
        run_until(loop, lambda: protos[0].lost)
    finally:
        close_server(loop, server)


def test_server_backlog_accepted(loop):
    server = run(loop, loop.create_server(EchoProtocol, HOST, 0, backlog=1))
    port = server.sockets[0].getsockname()[1]

    async def main():
        for i in range(3):
            r, w = await asyncio.open_connection(HOST, port)
            w.write(b"%d" % i)
            assert await r.readexactly(1) == b"%d" % i
            w.close()
            await w.wait_closed()

    try:
        run(loop, main())
    finally:
        close_server(loop, server)


def test_start_serving_false_then_start_serving(loop):
    protos = []
    server = run(loop, loop.create_server(lambda: ServerSide(loop, protos), HOST, 0,
                                          start_serving=False))
    try:
        assert not server.is_serving()
        addr = server.sockets[0].getsockname()
        # Not listening yet: connecting is refused.
        with pytest.raises(ConnectionRefusedError):
            connect(addr).close()
        run(loop, server.start_serving())
        assert server.is_serving()
        run(loop, server.start_serving())  # idempotent
        c = connect(addr)
        try:
            run_until(loop, lambda: protos)
        finally:
            c.close()
        run_until(loop, lambda: protos[0].lost)
    finally:
        close_server(loop, server)


def test_serve_forever_and_cancel(loop):
    protos = []

    async def main():
        server = await loop.create_server(lambda: ServerSide(loop, protos), HOST, 0,
                                          start_serving=False)
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0)
        assert server.is_serving()
        with pytest.raises(RuntimeError, match="is already being awaited on serve_forever"):
            await server.serve_forever()
        s = await asyncio.wait_for(
            asyncio.open_connection(*server.sockets[0].getsockname()), 5)
        r, w = s
        w.close()
        await w.wait_closed()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not server.is_serving()
        assert server.sockets == ()
        with pytest.raises(RuntimeError, match="is closed"):
            await server.serve_forever()

    run(loop, main())
    run_until(loop, lambda: protos and protos[0].lost)


def test_close_ends_serve_forever(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, HOST, 0)
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0.01)
        server.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.wait_closed()

    run(loop, main())


def test_close_stops_accepting_but_keeps_connections(loop):
    protos = []
    server = run(loop, loop.create_server(lambda: ServerSide(loop, protos), HOST, 0))
    addr = server.sockets[0].getsockname()
    c = connect(addr)
    try:
        run_until(loop, lambda: protos and protos[0].transport)
        server.close()
        run_briefly(loop, 2)
        assert not server.is_serving()
        with pytest.raises(ConnectionRefusedError):
            connect(addr).close()
        # The accepted connection still works.
        protos[0].transport.write(b"alive")
        assert recv_exactly(c, 5) == b"alive"
        assert not protos[0].lost
    finally:
        c.close()
    run_until(loop, lambda: protos[0].lost)
    run(loop, server.wait_closed())


@pytest.mark.skipif(sys.version_info < (3, 12, 1), reason="wait_closed waits for connections from 3.12.1 on")
def test_wait_closed_waits_for_connections(loop):
    protos = []

    async def main():
        server = await loop.create_server(lambda: ServerSide(loop, protos), HOST, 0)
        r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
        while not protos:
            await asyncio.sleep(0.001)
        server.close()
        waiter = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        protos[0].transport.close()
        await asyncio.wait_for(waiter, 5)
        w.close()
        await w.wait_closed()

    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 12, 1), reason="wait_closed semantics settled in 3.12.1")
def test_wait_closed_blocks_while_server_open(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, HOST, 0)
        waiter = asyncio.ensure_future(server.wait_closed())
        await asyncio.sleep(0.02)
        assert not waiter.done()
        server.close()
        await asyncio.wait_for(waiter, 5)

    run(loop, main())


@pytest.mark.skipif(not PY313, reason="close_clients/abort_clients are new in 3.13")
@pytest.mark.parametrize("method", ["close_clients", "abort_clients"])
def test_close_and_abort_clients(loop, method):
    protos = []

    async def main():
        server = await loop.create_server(lambda: ServerSide(loop, protos), HOST, 0)
        r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
        while not protos:
            await asyncio.sleep(0.001)
        server.close()
        getattr(server, method)()
        await asyncio.wait_for(server.wait_closed(), 5)
        assert protos[0].lost and protos[0].exc is None
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
        await w.wait_closed()

    run(loop, main())


def test_server_async_with(loop):
    async def main():
        server = await loop.create_server(asyncio.Protocol, HOST, 0)
        async with server as s:
            assert s is server
            assert server.is_serving()
        assert not server.is_serving()
        assert server.sockets == ()

    run(loop, main())


def test_create_server_with_sock(loop):
    ls = socket.socket()
    ls.bind((HOST, 0))
    addr = ls.getsockname()
    server = run(loop, loop.create_server(EchoProtocol, sock=ls))
    try:
        assert server.sockets[0].getsockname() == addr
        assert ls.gettimeout() == 0
        c = connect(addr)
        try:
            c.sendall(b"given sock")
            loop.run_until_complete(asyncio.sleep(0.05))
            assert recv_exactly(c, 10) == b"given sock"
        finally:
            c.close()
        loop.run_until_complete(asyncio.sleep(0.02))
    finally:
        close_server(loop, server)
    assert ls.fileno() == -1  # the server closed it


def test_create_server_bad_arguments(loop):
    async def check(exc, msg, *args, **kw):
        with pytest.raises(exc, match=msg):
            await loop.create_server(asyncio.Protocol, *args, **kw)

    async def main():
        s = socket.socket()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            await check(ValueError, "host/port and sock can not be specified at the same time",
                        HOST, 0, sock=s)
            await check(ValueError, "Neither host/port nor sock were specified")
            await check(ValueError, "A Stream Socket was expected", sock=u)
            await check(ValueError, "ssl_handshake_timeout is only meaningful with ssl",
                        HOST, 0, ssl_handshake_timeout=1)
            await check(ValueError, "ssl_shutdown_timeout is only meaningful with ssl",
                        HOST, 0, ssl_shutdown_timeout=1)
            await check(TypeError, "ssl argument must be an SSLContext or None",
                        HOST, 0, ssl=True)
        finally:
            s.close()
            u.close()

    run(loop, main())


def test_create_server_localhost_binds_every_address(loop):
    infos = {(i[0], i[4][0]) for i in socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM,
                                                           flags=socket.AI_PASSIVE)}
    server = run(loop, loop.create_server(asyncio.Protocol, "localhost", 0))
    try:
        got = {(s.family, s.getsockname()[0]) for s in server.sockets}
        assert got == infos
    finally:
        close_server(loop, server)


def test_accept_emfile_pauses_and_retries(loop, expect_exception_handler_calls):
    # asyncio: on EMFILE/ENFILE/ENOBUFS/ENOMEM, log via the exception handler,
    # stop accepting and try again after ACCEPT_RETRY_DELAY (1 s).
    protos = []
    server = run(loop, loop.create_server(lambda: ServerSide(loop, protos), HOST, 0))
    addr = server.sockets[0].getsockname()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # The lowest free fd number: a limit at it makes every new fd fail. The
        # connection is made only then: a completion-based loop (the proactor) may
        # accept it in the kernel as soon as it arrives.
        probe = os.dup(0)
        os.close(probe)
        resource.setrlimit(resource.RLIMIT_NOFILE, (probe, hard))
        try:
            c.settimeout(5)
            c.connect(addr)
            run_until(loop, lambda: expect_exception_handler_calls.calls, timeout=5)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        calls = expect_exception_handler_calls.take()
        assert calls[0]["message"] == "socket.accept() out of system resource"
        assert isinstance(calls[0]["exception"], OSError)
        assert calls[0]["exception"].errno == errno.EMFILE
        assert protos == []
        # It recovers by itself once descriptors are available again.
        run_until(loop, lambda: protos and protos[0].transport, timeout=5)
        assert server.is_serving()
    finally:
        c.close()
    run_until(loop, lambda: protos[0].lost)
    close_server(loop, server)
    expect_exception_handler_calls.take()
