"""The low-level sock_* API: sock_recv(_into), sock_recvfrom(_into),
sock_sendall, sock_sendto, sock_connect, sock_accept, sock_sendfile."""

import asyncio
import io
import select
import socket
import ssl

import pytest

from nethelpers import (
    HOST, HOST6, RecordingProtocol, accept, closed_port, listening_socket, needs_ipv6,
    payload, run, run_until,
)



@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def tcp_pair():
    with listening_socket() as ls:
        a = socket.create_connection(ls.getsockname())
        b = accept(ls)
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def udp_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind((HOST, 0))
    b.bind((HOST, 0))
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


# --------------------------------------------------------------------------
# recv / sendall


def test_sock_recv_and_sendall(loop, pair):
    a, b = pair

    async def main():
        await loop.sock_sendall(a, b"hello")
        assert await loop.sock_recv(b, 100) == b"hello"
        # sock_recv waits for data.
        t = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0.01)
        assert not t.done()
        await loop.sock_sendall(a, bytearray(b"later"))
        assert await t == b"later"
        # bufsize limits what is returned
        await loop.sock_sendall(a, memoryview(b"0123456789"))
        assert await loop.sock_recv(b, 4) == b"0123"
        assert await loop.sock_recv(b, 100) == b"456789"
        assert await loop.sock_sendall(a, b"") is None
        a.shutdown(socket.SHUT_WR)
        assert await loop.sock_recv(b, 100) == b""

    run(loop, main())


def test_sock_recv_into(loop, pair):
    a, b = pair

    async def main():
        buf = bytearray(10)
        await loop.sock_sendall(a, b"abcdef")
        n = await loop.sock_recv_into(b, buf)
        assert n == 6 and buf[:6] == b"abcdef"
        mv = memoryview(buf)[2:5]
        await loop.sock_sendall(a, b"XYZW")
        n = await loop.sock_recv_into(b, mv)
        assert n == 3 and bytes(buf[:6]) == b"abXYZf"
        assert await loop.sock_recv(b, 10) == b"W"
        a.shutdown(socket.SHUT_WR)
        assert await loop.sock_recv_into(b, buf) == 0

    run(loop, main())


def test_sock_sendall_large_to_slow_reader(loop, tcp_pair):
    a, b = tcp_pair
    data = payload(8 * 1024 * 1024)

    async def reader():
        got = bytearray()
        while len(got) < len(data):
            await asyncio.sleep(0.001)
            chunk = await loop.sock_recv(b, 256 * 1024)
            assert chunk
            got += chunk
        return bytes(got)

    async def main():
        r = asyncio.ensure_future(reader())
        assert await loop.sock_sendall(a, data) is None
        assert await r == data

    run(loop, main())


def test_sock_recv_cancel_loses_no_data(loop, pair):
    a, b = pair

    async def main():
        t = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        # Nothing of the cancelled call stays registered.
        assert loop.remove_reader(b.fileno()) is False
        await loop.sock_sendall(a, b"kept")
        assert await loop.sock_recv(b, 100) == b"kept"

        buf = bytearray(10)
        t = asyncio.ensure_future(loop.sock_recv_into(b, buf))
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await loop.sock_sendall(a, b"again")
        assert await loop.sock_recv(b, 100) == b"again"

    run(loop, main())


def test_sock_sendall_cancel(loop, tcp_pair):
    a, b = tcp_pair

    async def main():
        data = payload(16 * 1024 * 1024)
        t = asyncio.ensure_future(loop.sock_sendall(a, data))
        await asyncio.sleep(0.02)
        assert not t.done()  # nobody reads
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert loop.remove_writer(a.fileno()) is False
        # The socket still works afterwards.
        await asyncio.sleep(0)

    run(loop, main())


def test_sock_recv_after_peer_reset(loop, tcp_pair):
    a, b = tcp_pair
    import struct
    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async def main():
        t = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0.01)
        a.close()
        with pytest.raises(ConnectionResetError):
            await t

    run(loop, main())


# --------------------------------------------------------------------------
# Datagram: recvfrom / sendto


def test_sock_sendto_recvfrom(loop, udp_pair):
    a, b = udp_pair

    async def main():
        n = await loop.sock_sendto(a, b"dgram", b.getsockname())
        assert n == 5
        data, addr = await loop.sock_recvfrom(b, 100)
        assert (data, addr) == (b"dgram", a.getsockname())
        t = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
        await asyncio.sleep(0.01)
        assert not t.done()
        await loop.sock_sendto(a, b"waited", b.getsockname())
        assert await t == (b"waited", a.getsockname())

    run(loop, main())


def test_sock_recvfrom_into(loop, udp_pair):
    a, b = udp_pair

    async def main():
        buf = bytearray(16)
        await loop.sock_sendto(a, b"0123456789", b.getsockname())
        n, addr = await loop.sock_recvfrom_into(b, buf)
        assert (n, addr) == (10, a.getsockname())
        assert buf[:10] == b"0123456789"
        buf2 = bytearray(16)
        await loop.sock_sendto(a, b"abcdefgh", b.getsockname())
        n, addr = await loop.sock_recvfrom_into(b, buf2, 4)
        assert n == 4 and buf2[:4] == b"abcd" and buf2[4:] == bytes(12)

    run(loop, main())


def test_sock_recvfrom_cancel(loop, udp_pair):
    a, b = udp_pair

    async def main():
        t = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await loop.sock_sendto(a, b"after", b.getsockname())
        assert (await loop.sock_recvfrom(b, 100))[0] == b"after"

    run(loop, main())


# --------------------------------------------------------------------------
# connect / accept


def test_sock_connect_issues_connect_after_one_iteration(loop):
    # PITFALLS 10: after one sleep(0), connect() has been called.
    with listening_socket() as ls:
        ls.setblocking(False)
        c = socket.socket()
        c.setblocking(False)
        try:
            async def main():
                t = asyncio.ensure_future(loop.sock_connect(c, ls.getsockname()))
                await asyncio.sleep(0)
                r, _, _ = select.select([ls], [], [], 2.0)
                assert r, "connect() was not issued"
                conn, _ = ls.accept()
                conn.close()
                await t

            run(loop, main())
            assert c.getpeername() == ls.getsockname()
        finally:
            c.close()


def test_sock_connect_and_accept(loop):
    ls = socket.socket()
    ls.bind((HOST, 0))
    ls.listen()
    ls.setblocking(False)
    c = socket.socket()
    c.setblocking(False)
    conns = []

    async def main():
        acc = asyncio.ensure_future(loop.sock_accept(ls))
        await asyncio.sleep(0.01)
        assert not acc.done()
        assert await loop.sock_connect(c, ls.getsockname()) is None
        conn, addr = await acc
        conns.append(conn)
        assert addr == c.getsockname()
        assert conn.gettimeout() == 0  # returned non-blocking
        await loop.sock_sendall(c, b"over accepted")
        assert await loop.sock_recv(conn, 100) == b"over accepted"

    try:
        run(loop, main())
    finally:
        for s in conns + [c, ls]:
            s.close()


def test_sock_connect_resolves_hostnames(loop):
    with listening_socket() as ls:
        c = socket.socket()
        c.setblocking(False)
        try:
            run(loop, loop.sock_connect(c, ("localhost", ls.getsockname()[1])))
            assert c.getpeername() == ls.getsockname()
        finally:
            c.close()


def test_sock_connect_refused(loop):
    port = closed_port()
    c = socket.socket()
    c.setblocking(False)
    try:
        with pytest.raises(ConnectionRefusedError):
            run(loop, loop.sock_connect(c, (HOST, port)))
    finally:
        c.close()


def test_sock_connect_unix(loop, tmp_path):
    path = str(tmp_path / "s")
    ls = socket.socket(socket.AF_UNIX)
    ls.bind(path)
    ls.listen()
    c = socket.socket(socket.AF_UNIX)
    c.setblocking(False)
    try:
        run(loop, loop.sock_connect(c, path))
        assert c.getpeername() == path
    finally:
        c.close()
        ls.close()


@needs_ipv6
def test_sock_connect_accept_ipv6(loop):
    ls = socket.socket(socket.AF_INET6)
    ls.bind((HOST6, 0))
    ls.listen()
    ls.setblocking(False)
    c = socket.socket(socket.AF_INET6)
    c.setblocking(False)
    conns = []

    async def main():
        acc = asyncio.ensure_future(loop.sock_accept(ls))
        await loop.sock_connect(c, ls.getsockname()[:2])
        conn, addr = await acc
        conns.append(conn)
        assert addr[:2] == c.getsockname()[:2]

    try:
        run(loop, main())
    finally:
        for s in conns + [c, ls]:
            s.close()


def test_sock_accept_cancel(loop):
    ls = socket.socket()
    ls.bind((HOST, 0))
    ls.listen()
    ls.setblocking(False)
    conns = []

    async def main():
        t = asyncio.ensure_future(loop.sock_accept(ls))
        await asyncio.sleep(0.01)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert loop.remove_reader(ls.fileno()) is False
        c = socket.socket()
        conns.append(c)
        c.setblocking(False)
        await loop.sock_connect(c, ls.getsockname())
        conn, _ = await loop.sock_accept(ls)
        conns.append(conn)

    try:
        run(loop, main())
    finally:
        for s in conns + [ls]:
            s.close()


# --------------------------------------------------------------------------
# Argument checks


def test_blocking_socket_rejected_in_debug_mode(loop, tmp_path):
    # asyncio checks sockets' blocking mode only in debug mode.
    loop.set_debug(True)
    s = socket.socket()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    f = open(tmp_path / "f", "wb+")
    try:
        assert s.gettimeout() is None and u.gettimeout() is None
        calls = [
            lambda: loop.sock_recv(s, 1),
            lambda: loop.sock_recv_into(s, bytearray(1)),
            lambda: loop.sock_sendall(s, b"x"),
            lambda: loop.sock_connect(s, (HOST, 1)),
            lambda: loop.sock_accept(s),
            lambda: loop.sock_recvfrom(u, 1),
            lambda: loop.sock_recvfrom_into(u, bytearray(1)),
            lambda: loop.sock_sendto(u, b"x", (HOST, 1)),
            lambda: loop.sock_sendfile(s, f),
        ]
        for make in calls:
            with pytest.raises(ValueError, match="the socket must be non-blocking"):
                run(loop, make())
    finally:
        f.close()
        s.close()
        u.close()
        loop.set_debug(False)


def test_ssl_socket_rejected(loop):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    s = ctx.wrap_socket(socket.socket(), server_hostname="localhost",
                        do_handshake_on_connect=False)
    s.setblocking(False)
    try:
        for make in (lambda: loop.sock_recv(s, 1), lambda: loop.sock_sendall(s, b"x"),
                     lambda: loop.sock_connect(s, (HOST, 1)), lambda: loop.sock_accept(s)):
            with pytest.raises(TypeError, match="Socket cannot be of type SSLSocket"):
                run(loop, make())
    finally:
        s.close()


@pytest.mark.cxxloop_pending("network")  # needs create_connection
def test_transport_fd_refused_by_fd_watchers_and_sock_methods(loop):
    with listening_socket() as ls:
        pr = RecordingProtocol(loop)
        tr, _ = run(loop, loop.create_connection(lambda: pr, *ls.getsockname()))
        peer = accept(ls)
        try:
            fd = tr.get_extra_info("socket").fileno()
            # asyncio: RuntimeError naming the transport that uses the fd.
            for meth in (loop.add_reader, loop.add_writer):
                with pytest.raises(RuntimeError, match="is used by transport"):
                    meth(fd, lambda: None)
            for meth in (loop.remove_reader, loop.remove_writer):
                with pytest.raises(RuntimeError, match="is used by transport"):
                    meth(fd)
            alias = socket.socket(fileno=fd)
            try:
                alias.setblocking(False)
                with pytest.raises(RuntimeError, match="is used by transport"):
                    run(loop, loop.sock_recv(alias, 1))  # nothing to read: must wait
            finally:
                alias.detach()
        finally:
            tr.close()
            peer.close()
            run_until(loop, lambda: pr.lost)


# --------------------------------------------------------------------------
# sock_sendfile


@pytest.fixture
def datafile(tmp_path):
    data = payload(1024 * 1024 + 17, seed=5)
    p = tmp_path / "data.bin"
    p.write_bytes(data)
    with open(p, "rb") as f:
        yield f, data


async def _recv_n(loop, sock, n):
    got = bytearray()
    while len(got) < n:
        chunk = await loop.sock_recv(sock, 1 << 20)
        if not chunk:
            break
        got += chunk
    return bytes(got)


def test_sock_sendfile_whole_file(loop, tcp_pair, datafile):
    a, b = tcp_pair
    f, data = datafile

    async def main():
        r = asyncio.ensure_future(_recv_n(loop, b, len(data)))
        sent = await loop.sock_sendfile(a, f)
        assert sent == len(data)
        assert await r == data
        assert f.tell() == len(data)

    run(loop, main())


def test_sock_sendfile_offset_and_count(loop, tcp_pair, datafile):
    a, b = tcp_pair
    f, data = datafile

    async def main():
        r = asyncio.ensure_future(_recv_n(loop, b, 1000))
        sent = await loop.sock_sendfile(a, f, 100, 1000)
        assert sent == 1000
        assert await r == data[100:1100]
        assert f.tell() == 1100
        # count beyond the end sends what there is
        r = asyncio.ensure_future(_recv_n(loop, b, 50))
        sent = await loop.sock_sendfile(a, f, len(data) - 50, 10_000)
        assert sent == 50
        assert await r == data[-50:]

    run(loop, main())


def test_sock_sendfile_non_regular_file(loop, tcp_pair):
    a, b = tcp_pair
    bio = io.BytesIO(b"in memory")

    async def main():
        with pytest.raises(asyncio.SendfileNotAvailableError):
            await loop.sock_sendfile(a, bio, fallback=False)
        assert bio.tell() == 0
        r = asyncio.ensure_future(_recv_n(loop, b, 9))
        assert await loop.sock_sendfile(a, bio) == 9  # the fallback reads and sends
        assert await r == b"in memory"

    run(loop, main())


def test_sock_sendfile_bad_arguments(loop, tcp_pair, datafile, tmp_path, udp_pair):
    a, b = tcp_pair
    f, data = datafile
    u, _ = udp_pair
    txt = open(tmp_path / "t.txt", "w+")

    async def main():
        with pytest.raises(ValueError, match="binary mode"):
            await loop.sock_sendfile(a, txt)
        with pytest.raises(ValueError, match="only SOCK_STREAM type sockets are supported"):
            await loop.sock_sendfile(u, f)
        with pytest.raises(TypeError, match="count must be a positive integer"):
            await loop.sock_sendfile(a, f, 0, "1")
        with pytest.raises(ValueError, match="count must be a positive integer"):
            await loop.sock_sendfile(a, f, 0, 0)
        with pytest.raises(TypeError, match="offset must be a non-negative integer"):
            await loop.sock_sendfile(a, f, "0")
        with pytest.raises(ValueError, match="offset must be a non-negative integer"):
            await loop.sock_sendfile(a, f, -1)

    try:
        run(loop, main())
    finally:
        txt.close()
