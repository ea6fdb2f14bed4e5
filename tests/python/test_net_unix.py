"""Unix stream sockets: create_unix_connection, create_unix_server,
connect_accepted_socket."""

import asyncio
import errno
import os
import pathlib
import socket
import stat
import uuid

import pytest

from nethelpers import (
    PY313, EchoProtocol, RecordingProtocol, payload, recv_exactly, recv_until_eof,
    run, run_until,
)

pytestmark = pytest.mark.cxxloop_pending("network")


@pytest.fixture
def sockpath(tmp_path):
    # Short: sun_path is limited to 108 bytes.
    p = tmp_path / "s.sock"
    assert len(os.fsencode(str(p))) < 100
    return str(p)


def close_server(loop, server):
    server.close()
    run(loop, server.wait_closed())


def test_unix_server_and_connection(loop, sockpath):
    server = run(loop, loop.create_unix_server(EchoProtocol, sockpath))
    try:
        assert isinstance(server, asyncio.AbstractServer)
        assert type(server.sockets) is tuple
        (ls,) = server.sockets
        assert ls.family == socket.AF_UNIX
        assert ls.getsockname() == sockpath
        assert stat.S_ISSOCK(os.stat(sockpath).st_mode)

        pr = RecordingProtocol(loop)
        tr, got_pr = run(loop, loop.create_unix_connection(lambda: pr, sockpath))
        assert got_pr is pr
        assert isinstance(tr, asyncio.Transport)
        assert tr.get_extra_info("peername") == sockpath
        assert tr.get_extra_info("sockname") == ""
        sock = tr.get_extra_info("socket")
        assert sock.family == socket.AF_UNIX and sock.type == socket.SOCK_STREAM
        assert tr.can_write_eof()
        data = payload(300_000)
        tr.write(data)
        tr.write_eof()
        run_until(loop, lambda: pr.lost)
        assert bytes(pr.data) == data
        assert pr.events[-2:] == ["eof", "lost"]
        assert pr.exc is None
    finally:
        close_server(loop, server)


def test_unix_server_side_transport(loop, sockpath):
    protos = []

    def factory():
        p = RecordingProtocol(loop)
        protos.append(p)
        return p

    server = run(loop, loop.create_unix_server(factory, sockpath))
    c = socket.socket(socket.AF_UNIX)
    try:
        c.connect(sockpath)
        run_until(loop, lambda: protos and protos[0].transport)
        tr = protos[0].transport
        assert isinstance(tr, asyncio.Transport)
        assert tr.get_extra_info("sockname") == sockpath
        tr.write(b"from server")
        assert recv_exactly(c, 11) == b"from server"
        c.sendall(b"from client")
        run_until(loop, lambda: bytes(protos[0].data) == b"from client")
    finally:
        c.close()
    run_until(loop, lambda: protos[0].lost)
    close_server(loop, server)


def test_unix_pathlib_path(loop, sockpath):
    server = run(loop, loop.create_unix_server(EchoProtocol, pathlib.Path(sockpath)))
    try:
        pr = RecordingProtocol(loop)
        tr, _ = run(loop, loop.create_unix_connection(lambda: pr, pathlib.Path(sockpath)))
        tr.write(b"p")
        run_until(loop, lambda: pr.data == b"p")
        tr.close()
        run_until(loop, lambda: pr.lost)
    finally:
        close_server(loop, server)


def test_unix_abstract_namespace(loop):
    name = "\0cxxloop-test-" + uuid.uuid4().hex
    server = run(loop, loop.create_unix_server(EchoProtocol, name))
    try:
        assert server.sockets[0].getsockname() == name.encode()
        pr = RecordingProtocol(loop)
        tr, _ = run(loop, loop.create_unix_connection(lambda: pr, name))
        tr.write(b"abstract")
        run_until(loop, lambda: pr.data == b"abstract")
        tr.close()
        run_until(loop, lambda: pr.lost)
    finally:
        close_server(loop, server)


def test_unix_server_removes_stale_socket_file(loop, sockpath):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(sockpath)
    stale.close()
    assert os.path.exists(sockpath)
    server = run(loop, loop.create_unix_server(EchoProtocol, sockpath))
    close_server(loop, server)


def test_unix_server_path_in_use_names_the_path(loop, sockpath):
    # A regular file is not removed; bind fails and the error names the path.
    with open(sockpath, "w") as f:
        f.write("not a socket")
    with pytest.raises(OSError) as ei:
        run(loop, loop.create_unix_server(EchoProtocol, sockpath))
    assert ei.value.errno == errno.EADDRINUSE
    assert sockpath in str(ei.value)
    assert "already in use" in str(ei.value)


@pytest.mark.skipif(not PY313, reason="cleanup_socket is new in 3.13")
def test_unix_server_cleanup_socket(loop, tmp_path):
    p1, p2 = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
    s1 = run(loop, loop.create_unix_server(EchoProtocol, p1))
    s2 = run(loop, loop.create_unix_server(EchoProtocol, p2, cleanup_socket=False))
    close_server(loop, s1)
    close_server(loop, s2)
    assert not os.path.exists(p1)
    assert os.path.exists(p2)


@pytest.mark.skipif(not PY313, reason="cleanup_socket is new in 3.13")
def test_unix_server_cleanup_leaves_a_replaced_file(loop, sockpath):
    server = run(loop, loop.create_unix_server(EchoProtocol, sockpath))
    os.unlink(sockpath)
    with open(sockpath, "w"):
        pass
    close_server(loop, server)
    assert os.path.exists(sockpath)  # another inode: not ours to remove


@pytest.mark.skipif(PY313, reason="before 3.13 the socket file stays")
def test_unix_server_leaves_socket_file_before_313(loop, sockpath):
    server = run(loop, loop.create_unix_server(EchoProtocol, sockpath))
    close_server(loop, server)
    assert os.path.exists(sockpath)


def test_unix_connection_to_missing_path_does_not_call_factory(loop, tmp_path):
    # PITFALLS 15.
    made = []
    with pytest.raises(FileNotFoundError):
        run(loop, loop.create_unix_connection(lambda: made.append(1), str(tmp_path / "nope")))
    assert made == []


def test_unix_connection_refused_does_not_call_factory(loop, sockpath):
    s = socket.socket(socket.AF_UNIX)
    s.bind(sockpath)  # bound, never listening
    try:
        made = []
        with pytest.raises(ConnectionRefusedError):
            run(loop, loop.create_unix_connection(lambda: made.append(1), sockpath))
        assert made == []
    finally:
        s.close()


def test_unix_connection_with_sock(loop, sockpath):
    server = run(loop, loop.create_unix_server(EchoProtocol, sockpath))
    s = socket.socket(socket.AF_UNIX)
    s.connect(sockpath)
    pr = RecordingProtocol(loop)
    tr, _ = run(loop, loop.create_unix_connection(lambda: pr, sock=s))
    try:
        assert s.gettimeout() == 0
        tr.write(b"sock=")
        run_until(loop, lambda: pr.data == b"sock=")
    finally:
        tr.close()
        run_until(loop, lambda: pr.lost)
        close_server(loop, server)


def test_unix_bad_arguments(loop, sockpath):
    async def check(meth, exc, msg, *args, **kw):
        with pytest.raises(exc, match=msg):
            await getattr(loop, meth)(asyncio.Protocol, *args, **kw)

    async def main():
        u = socket.socket(socket.AF_UNIX)
        inet = socket.socket(socket.AF_INET)
        dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            await check("create_unix_connection", ValueError,
                        "path and sock can not be specified at the same time", sockpath, sock=u)
            await check("create_unix_connection", ValueError, "no path and sock were specified")
            await check("create_unix_connection", ValueError,
                        "A UNIX Domain Stream Socket was expected", sock=inet)
            await check("create_unix_connection", ValueError,
                        "A UNIX Domain Stream Socket was expected", sock=dgram)
            await check("create_unix_connection", ValueError,
                        "server_hostname is only meaningful with ssl", sockpath,
                        server_hostname="x")
            await check("create_unix_connection", ValueError,
                        "ssl_handshake_timeout is only meaningful with ssl", sockpath,
                        ssl_handshake_timeout=1)
            await check("create_unix_server", ValueError,
                        "path and sock can not be specified at the same time", sockpath, sock=u)
            await check("create_unix_server", ValueError,
                        "path was not specified, and no sock specified")
            await check("create_unix_server", ValueError,
                        "A UNIX Domain Stream Socket was expected", sock=inet)
            await check("create_unix_server", ValueError,
                        "ssl_handshake_timeout is only meaningful with ssl", sockpath,
                        ssl_handshake_timeout=1)
            await check("create_unix_server", TypeError,
                        "ssl argument must be an SSLContext or None", sockpath, ssl=True)
        finally:
            u.close()
            inet.close()
            dgram.close()

    run(loop, main())
    assert not os.path.exists(sockpath)


def test_unix_start_serving_false(loop, sockpath):
    server = run(loop, loop.create_unix_server(EchoProtocol, sockpath, start_serving=False))
    try:
        assert not server.is_serving()
        c = socket.socket(socket.AF_UNIX)
        try:
            with pytest.raises(ConnectionRefusedError):
                c.connect(sockpath)
        finally:
            c.close()
        run(loop, server.start_serving())
        assert server.is_serving()
    finally:
        close_server(loop, server)


# --------------------------------------------------------------------------
# connect_accepted_socket


def test_connect_accepted_socket(loop):
    a, b = socket.socketpair()
    pr = RecordingProtocol(loop)
    try:
        tr, got = run(loop, loop.connect_accepted_socket(lambda: pr, a))
        assert got is pr and pr.transport is tr
        assert isinstance(tr, asyncio.Transport)
        assert a.gettimeout() == 0
        tr.write(b"accepted")
        b.settimeout(5)
        assert recv_exactly(b, 8) == b"accepted"
        b.sendall(b"back")
        run_until(loop, lambda: pr.data == b"back")
        b.shutdown(socket.SHUT_WR)
        run_until(loop, lambda: pr.lost)
        assert pr.events[-2:] == ["eof", "lost"]
    finally:
        b.close()
        if not pr.lost:
            tr.close()
            run_until(loop, lambda: pr.lost)


def test_connect_accepted_tcp_socket(loop):
    ls = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(ls.getsockname())
    conn, _ = ls.accept()
    ls.close()
    pr = RecordingProtocol(loop)
    try:
        tr, _ = run(loop, loop.connect_accepted_socket(lambda: pr, conn))
        assert tr.get_extra_info("peername") == c.getsockname()
        c.sendall(b"tcp")
        run_until(loop, lambda: pr.data == b"tcp")
        tr.close()
        run_until(loop, lambda: pr.lost)
        assert recv_until_eof(c) == b""
    finally:
        c.close()


def test_connect_accepted_socket_bad_arguments(loop):
    async def main():
        d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a, b = socket.socketpair()
        try:
            with pytest.raises(ValueError, match="A Stream Socket was expected"):
                await loop.connect_accepted_socket(asyncio.Protocol, d)
            with pytest.raises(ValueError, match="ssl_handshake_timeout is only meaningful with ssl"):
                await loop.connect_accepted_socket(asyncio.Protocol, a, ssl_handshake_timeout=1)
        finally:
            d.close()
            a.close()
            b.close()

    run(loop, main())
