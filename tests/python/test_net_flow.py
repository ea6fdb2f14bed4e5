"""Write flow control (pause_writing/resume_writing at the water marks),
BufferedProtocol, and loop.sendfile on transports."""

import asyncio
import io
import socket

import pytest

from conftest import run_briefly
from nethelpers import (
    HOST, EchoProtocol, RecordingProtocol, accept, client_ssl_context, drainer,
    listening_socket, payload, recv_exactly, reset_close, run, run_until,
    server_ssl_context,
)

pytestmark = pytest.mark.cxxloop_pending("network")


@pytest.fixture
def conn(loop):
    """(transport, protocol, peer) with a peer that does not read until told."""
    with listening_socket() as ls:
        pr = RecordingProtocol(loop)
        tr, _ = run(loop, loop.create_connection(lambda: pr, *ls.getsockname()))
        peer = accept(ls)
    try:
        yield tr, pr, peer
    finally:
        peer.close()
        if not tr.is_closing():
            tr.abort()
        run_until(loop, lambda: pr.lost)


def test_pause_writing_called_synchronously_above_high(loop, conn):
    tr, pr, peer = conn
    tr.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
    chunk = payload(64 * 1024)
    writes = 0
    while pr.paused == 0:
        tr.write(chunk)
        writes += 1
        assert writes < 1000, "pause_writing never called"
    # Called from inside write(), once the buffer went above `high`.
    assert tr.get_write_buffer_size() > 64 * 1024
    assert pr.events.count("pause") == 1
    # Writing more while paused does not call it again.
    tr.write(chunk)
    assert pr.paused == 1 and pr.resumed == 0

    total = writes * len(chunk) + len(chunk)
    got = bytearray()
    run_until(loop, drainer(peer, got, total), timeout=10)
    run_until(loop, lambda: pr.resumed == 1)
    assert tr.get_write_buffer_size() <= 16 * 1024
    assert pr.events[-2:] == ["pause", "resume"]
    assert len(got) == total


def test_resume_writing_at_low_water_mark(loop, conn):
    tr, pr, peer = conn
    tr.set_write_buffer_limits(high=256 * 1024, low=128 * 1024)
    sizes_at_resume = []
    orig = pr.resume_writing

    def resume():
        sizes_at_resume.append(tr.get_write_buffer_size())
        orig()

    pr.resume_writing = resume
    data = payload(16 * 1024 * 1024)
    tr.write(data)
    assert pr.paused == 1
    got = bytearray()
    run_until(loop, drainer(peer, got, len(data)), timeout=10)
    run_until(loop, lambda: pr.resumed == 1)
    assert sizes_at_resume and sizes_at_resume[0] <= 128 * 1024
    assert bytes(got) == data


def test_set_write_buffer_limits_can_pause_at_once(loop, conn):
    tr, pr, peer = conn
    data = payload(16 * 1024 * 1024)
    tr.set_write_buffer_limits(high=len(data) * 4)
    tr.write(data)
    size = tr.get_write_buffer_size()
    assert size > 0 and pr.paused == 0
    tr.set_write_buffer_limits(high=size // 2)
    assert pr.paused == 1
    got = bytearray()
    run_until(loop, drainer(peer, got, len(data)), timeout=10)
    run_until(loop, lambda: pr.resumed == 1)


def test_high_zero_pauses_on_any_buffered_byte(loop, conn):
    tr, pr, peer = conn
    tr.set_write_buffer_limits(high=0)
    tr.write(b"small")  # goes straight out: nothing buffered, no pause
    assert tr.get_write_buffer_size() == 0
    assert pr.paused == 0
    assert recv_exactly(peer, 5) == b"small"
    data = payload(4 * 1024 * 1024)
    tr.write(data)
    assert tr.get_write_buffer_size() > 0
    assert pr.paused == 1
    got = bytearray()
    run_until(loop, drainer(peer, got, len(data)), timeout=10)
    run_until(loop, lambda: pr.resumed == 1)
    assert tr.get_write_buffer_size() == 0


def test_writelines_counts_bytes(loop, conn):
    tr, pr, peer = conn
    tr.set_write_buffer_limits(high=10 ** 9)
    parts = [payload(1024 * 1024, seed=i) for i in range(8)]
    tr.writelines(parts)
    size = tr.get_write_buffer_size()
    assert 0 < size <= sum(map(len, parts))
    got = bytearray()
    run_until(loop, drainer(peer, got, sum(map(len, parts))), timeout=10)
    assert bytes(got) == b"".join(parts)


def test_slow_reader_end_to_end_pause_and_resume(loop):
    """A server that pauses reading makes the client's buffer grow past the
    high-water mark; resuming drains it and resume_writing follows."""
    received = bytearray()
    server_tr = []

    class SlowServer(asyncio.Protocol):
        def connection_made(self, transport):
            server_tr.append(transport)
            transport.pause_reading()

        def data_received(self, data):
            received.extend(data)

    server = run(loop, loop.create_server(SlowServer, HOST, 0))
    pr = RecordingProtocol(loop)
    try:
        tr, _ = run(loop, loop.create_connection(lambda: pr, *server.sockets[0].getsockname()))
        tr.set_write_buffer_limits(high=32 * 1024)
        chunk = payload(64 * 1024)
        sent = 0
        while not pr.paused:
            tr.write(chunk)
            sent += len(chunk)
            run_briefly(loop)
            assert sent < 64 * 1024 * 1024
        run_until(loop, lambda: server_tr)
        run_briefly(loop, 5)
        assert pr.resumed == 0
        server_tr[0].resume_reading()
        run_until(loop, lambda: len(received) == sent, timeout=10)
        run_until(loop, lambda: pr.resumed == 1)
        assert bytes(received) == (chunk * (sent // len(chunk)))
        tr.close()
        run_until(loop, lambda: pr.lost)
    finally:
        server.close()
        run(loop, server.wait_closed())


def test_peer_vanishes_mid_write(loop, conn):
    tr, pr, peer = conn
    tr.set_write_buffer_limits(high=10 ** 9)
    tr.write(payload(8 * 1024 * 1024))
    assert tr.get_write_buffer_size() > 0
    reset_close(peer)
    run_until(loop, lambda: pr.lost)
    assert isinstance(pr.exc, (ConnectionResetError, BrokenPipeError))
    assert tr.get_write_buffer_size() == 0


def test_pause_writing_exception_goes_to_handler(loop, conn, expect_exception_handler_calls):
    tr, pr, peer = conn

    def bad_pause():
        raise ZeroDivisionError

    pr.pause_writing = bad_pause
    tr.set_write_buffer_limits(high=0)
    tr.write(payload(4 * 1024 * 1024))
    calls = expect_exception_handler_calls.take()
    assert len(calls) == 1
    assert calls[0]["message"] == "protocol.pause_writing() failed"
    assert isinstance(calls[0]["exception"], ZeroDivisionError)
    assert calls[0]["transport"] is tr
    assert not tr.is_closing()


# --------------------------------------------------------------------------
# BufferedProtocol


class BufProto(asyncio.BufferedProtocol):
    def __init__(self, loop, size=65536):
        self.buf = bytearray(size)
        self.data = bytearray()
        self.hints = []
        self.calls = 0
        self.events = []
        self.transport = None
        self.lost = False
        self.exc = "unset"
        self.eof_result = None

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def get_buffer(self, sizehint):
        self.hints.append(sizehint)
        return self.buf

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= len(self.buf)
        self.calls += 1
        self.data += self.buf[:nbytes]

    def eof_received(self):
        self.events.append("eof")
        return self.eof_result

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost = True
        self.exc = exc


@pytest.mark.parametrize("bufsize", [1, 7, 4096, 1 << 20])
def test_buffered_protocol_receives_everything(loop, bufsize):
    with listening_socket() as ls:
        bp = BufProto(loop, bufsize)
        tr, got = run(loop, loop.create_connection(lambda: bp, *ls.getsockname()))
        peer = accept(ls)
    try:
        assert got is bp and isinstance(tr, asyncio.Transport)
        data = payload(20_000 if bufsize < 100 else 500_000, seed=bufsize % 251)
        async def send():
            peer.setblocking(False)
            await loop.sock_sendall(peer, data)
        run(loop, send())
        peer.shutdown(socket.SHUT_WR)
        run_until(loop, lambda: bp.lost, timeout=10)
        assert bytes(bp.data) == data
        assert bp.events == ["made", "eof", "lost"]
        assert bp.exc is None
        if bufsize == 1:
            assert bp.calls == len(data)
        assert all(isinstance(h, int) for h in bp.hints)
    finally:
        peer.close()


def test_buffered_protocol_memoryview_buffer(loop):
    class MV(BufProto):
        def get_buffer(self, sizehint):
            self.hints.append(sizehint)
            return memoryview(self.buf)[10:20]

        def buffer_updated(self, nbytes):
            assert 0 < nbytes <= 10
            self.calls += 1
            self.data += self.buf[10:10 + nbytes]

    with listening_socket() as ls:
        bp = MV(loop, 100)
        tr, _ = run(loop, loop.create_connection(lambda: bp, *ls.getsockname()))
        peer = accept(ls)
    try:
        peer.sendall(b"0123456789abcdefghij!")
        run_until(loop, lambda: len(bp.data) == 21)
        assert bytes(bp.data) == b"0123456789abcdefghij!"
    finally:
        peer.close()
        run_until(loop, lambda: bp.lost)


def test_buffered_protocol_empty_buffer_is_fatal(loop, expect_exception_handler_calls):
    class Empty(BufProto):
        def get_buffer(self, sizehint):
            return bytearray()

    with listening_socket() as ls:
        bp = Empty(loop)
        tr, _ = run(loop, loop.create_connection(lambda: bp, *ls.getsockname()))
        peer = accept(ls)
    try:
        peer.sendall(b"x")
        run_until(loop, lambda: bp.lost)
        assert isinstance(bp.exc, RuntimeError)
        assert "get_buffer() returned an empty buffer" in str(bp.exc)
        calls = expect_exception_handler_calls.take()
        assert len(calls) == 1
        assert calls[0]["message"] == "Fatal error: protocol.get_buffer() call failed."
    finally:
        peer.close()


@pytest.mark.parametrize("method", ["get_buffer", "buffer_updated"])
def test_buffered_protocol_callback_raising_is_fatal(loop, expect_exception_handler_calls, method):
    def boom(self, arg):
        raise ZeroDivisionError

    Raises = type("Raises", (BufProto,), {method: boom})

    with listening_socket() as ls:
        bp = Raises(loop)
        tr, _ = run(loop, loop.create_connection(lambda: bp, *ls.getsockname()))
        peer = accept(ls)
    try:
        peer.sendall(b"x")
        run_until(loop, lambda: bp.lost)
        assert isinstance(bp.exc, ZeroDivisionError)
        calls = expect_exception_handler_calls.take()
        assert [c["message"] for c in calls] == [f"Fatal error: protocol.{method}() call failed."]
    finally:
        peer.close()


def test_buffered_protocol_eof_true_keeps_open(loop):
    with listening_socket() as ls:
        bp = BufProto(loop)
        bp.eof_result = True
        tr, _ = run(loop, loop.create_connection(lambda: bp, *ls.getsockname()))
        peer = accept(ls)
    try:
        peer.shutdown(socket.SHUT_WR)
        run_until(loop, lambda: "eof" in bp.events)
        run_briefly(loop, 3)
        assert not tr.is_closing()
        tr.write(b"still")
        assert recv_exactly(peer, 5) == b"still"
    finally:
        tr.close()
        peer.close()
        run_until(loop, lambda: bp.lost)


def test_buffered_protocol_server_side(loop):
    protos = []

    def factory():
        p = BufProto(loop, 3)
        protos.append(p)
        return p

    server = run(loop, loop.create_server(factory, HOST, 0))
    try:
        c = socket.create_connection(server.sockets[0].getsockname())
        try:
            c.sendall(b"buffered server")
            c.shutdown(socket.SHUT_WR)
            run_until(loop, lambda: protos and protos[0].lost)
            assert bytes(protos[0].data) == b"buffered server"
        finally:
            c.close()
    finally:
        server.close()
        run(loop, server.wait_closed())


def test_set_protocol_switches_between_plain_and_buffered(loop):
    with listening_socket() as ls:
        pr = RecordingProtocol(loop)
        tr, _ = run(loop, loop.create_connection(lambda: pr, *ls.getsockname()))
        peer = accept(ls)
    bp = BufProto(loop, 4)
    try:
        peer.sendall(b"plain")
        run_until(loop, lambda: pr.data == b"plain")
        tr.set_protocol(bp)
        peer.sendall(b"buffered")
        run_until(loop, lambda: bytes(bp.data) == b"buffered")
        assert bytes(pr.data) == b"plain"
        pr2 = RecordingProtocol(loop)
        pr2.state = "CONNECTED"
        tr.set_protocol(pr2)
        peer.sendall(b"again")
        run_until(loop, lambda: pr2.data == b"again")
    finally:
        peer.close()
        run_until(loop, lambda: pr2.lost)


# --------------------------------------------------------------------------
# loop.sendfile


@pytest.fixture
def datafile(tmp_path):
    data = payload(3 * 1024 * 1024 + 5, seed=11)
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    with open(p, "rb") as f:
        yield f, data


@pytest.mark.parametrize("fallback", [True, False])
def test_sendfile_to_tcp_transport(loop, conn, datafile, fallback):
    tr, pr, peer = conn
    f, data = datafile
    got = bytearray()

    async def main():
        peer.setblocking(False)

        async def reader():
            while len(got) < len(data):
                chunk = await loop.sock_recv(peer, 1 << 20)
                assert chunk
                got.extend(chunk)

        r = asyncio.ensure_future(reader())
        sent = await loop.sendfile(tr, f, fallback=fallback)
        await r
        return sent

    assert run(loop, main()) == len(data)
    assert bytes(got) == data
    assert f.tell() == len(data)
    # The transport is usable afterwards.
    tr.write(b"after")
    peer.setblocking(True)
    assert recv_exactly(peer, 5) == b"after"


def test_sendfile_offset_and_count(loop, conn, datafile):
    tr, pr, peer = conn
    f, data = datafile

    async def main():
        peer.setblocking(False)
        sent = await loop.sendfile(tr, f, 1000, 5000)
        got = bytearray()
        while len(got) < 5000:
            got += await loop.sock_recv(peer, 65536)
        return sent, bytes(got)

    sent, got = run(loop, main())
    assert sent == 5000
    assert got == data[1000:6000]
    assert f.tell() == 6000


def test_sendfile_fallback_false_unsupported_over_tls(loop):
    server = run(loop, loop.create_server(EchoProtocol, HOST, 0, ssl=server_ssl_context()))
    pr = RecordingProtocol(loop)
    try:
        tr, _ = run(loop, loop.create_connection(
            lambda: pr, *server.sockets[0].getsockname(), ssl=client_ssl_context(),
            server_hostname="localhost"))
        f = io.BytesIO(b"tls bytes")
        with pytest.raises(RuntimeError, match="fallback is disabled and native sendfile is not supported"):
            run(loop, loop.sendfile(tr, f, fallback=False))
        assert f.tell() == 0
        assert run(loop, loop.sendfile(tr, f)) == 9
        run_until(loop, lambda: bytes(pr.data) == b"tls bytes")
        tr.close()
        run_until(loop, lambda: pr.lost)
    finally:
        server.close()
        run(loop, server.wait_closed())


def test_sendfile_non_regular_file_to_tcp(loop, conn):
    tr, pr, peer = conn
    f = io.BytesIO(b"memory file")
    with pytest.raises(asyncio.SendfileNotAvailableError):
        run(loop, loop.sendfile(tr, f, fallback=False))
    assert f.tell() == 0
    assert run(loop, loop.sendfile(tr, f)) == 11
    assert recv_exactly(peer, 11) == b"memory file"


def test_sendfile_bad_arguments(loop, conn, datafile, tmp_path):
    tr, pr, peer = conn
    f, data = datafile
    txt = open(tmp_path / "t.txt", "w+")

    async def main():
        with pytest.raises(ValueError, match="binary mode"):
            await loop.sendfile(tr, txt)
        with pytest.raises(ValueError, match="count must be a positive integer"):
            await loop.sendfile(tr, f, 0, 0)
        with pytest.raises(ValueError, match="offset must be a non-negative integer"):
            await loop.sendfile(tr, f, -1)
        tr.close()
        with pytest.raises(RuntimeError, match="Transport is closing"):
            await loop.sendfile(tr, f)

    try:
        run(loop, main())
    finally:
        txt.close()
