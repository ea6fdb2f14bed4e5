"""TLS: ssl= on create_connection / create_server / unix variants, start_tls,
handshake timeout, EOF handling (PITFALLS 7).  The certificate is a
self-signed one made for the test run (see nethelpers.cert_files)."""

import asyncio
import socket
import ssl
from asyncio import sslproto

import pytest

from conftest import run_briefly
from nethelpers import (
    HOST, EchoProtocol, RecordingProtocol, client_ssl_context, payload, run, run_until,
    server_ssl_context, set_linger_zero,
)

pytestmark = pytest.mark.cxxloop_pending("network")


class Registry(list):
    def factory(self, loop, cls=RecordingProtocol):
        def make():
            p = cls(loop)
            self.append(p)
            return p
        return make


def tls_server(loop, factory, **kw):
    return run(loop, loop.create_server(factory, HOST, 0, ssl=server_ssl_context(), **kw))


def tls_connect(loop, server, pr, **kw):
    kw.setdefault("ssl", client_ssl_context())
    kw.setdefault("server_hostname", "localhost")
    port = server.sockets[0].getsockname()[1]
    tr, _ = run(loop, loop.create_connection(lambda: pr, HOST, port, **kw))
    return tr


def close_server(loop, server):
    server.close()
    run(loop, server.wait_closed())


def test_tls_echo_and_extra_info(loop):
    srv = Registry()
    server = tls_server(loop, srv.factory(loop))
    pr = RecordingProtocol(loop)
    cctx = client_ssl_context()
    try:
        tr = tls_connect(loop, server, pr, ssl=cctx)
        assert isinstance(tr, asyncio.Transport)
        assert tr.get_extra_info("sslcontext") is cctx
        sslobj = tr.get_extra_info("ssl_object")
        assert isinstance(sslobj, (ssl.SSLObject, ssl.SSLSocket))
        peercert = tr.get_extra_info("peercert")
        assert isinstance(peercert, dict)
        assert (("commonName", "localhost"),) in peercert["subject"]
        cipher = tr.get_extra_info("cipher")
        assert isinstance(cipher, tuple) and len(cipher) == 3
        assert tr.get_extra_info("peername") == server.sockets[0].getsockname()
        sock = tr.get_extra_info("socket")
        assert sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM
        assert tr.can_write_eof() is False
        with pytest.raises(NotImplementedError):
            tr.write_eof()

        run_until(loop, lambda: srv and srv[0].transport)
        st = srv[0].transport
        assert isinstance(st, asyncio.Transport)
        assert st.get_extra_info("sslcontext") is not None
        assert st.get_extra_info("peercert") is None  # the client sent none
        assert st.get_extra_info("peername") == tr.get_extra_info("sockname")

        tr.write(b"hello over tls")
        run_until(loop, lambda: bytes(srv[0].data) == b"hello over tls")
        st.write(b"and back")
        run_until(loop, lambda: bytes(pr.data) == b"and back")

        tr.close()
        run_until(loop, lambda: pr.lost and srv[0].lost)
        assert pr.exc is None
        assert srv[0].exc is None
        assert "eof" in srv[0].events
    finally:
        close_server(loop, server)


def test_tls_large_payload_echo(loop):
    server = tls_server(loop, EchoProtocol)
    data = payload(2 * 1024 * 1024, seed=9)
    pr = RecordingProtocol(loop)
    try:
        tr = tls_connect(loop, server, pr)
        tr.write(data)
        run_until(loop, lambda: pr.nbytes >= len(data), timeout=10)
        assert bytes(pr.data) == data
        tr.close()
        run_until(loop, lambda: pr.lost)
    finally:
        close_server(loop, server)


def test_tls_server_closes_client_sees_eof(loop):
    srv = Registry()
    server = tls_server(loop, srv.factory(loop))
    pr = RecordingProtocol(loop)
    try:
        tls_connect(loop, server, pr)
        run_until(loop, lambda: srv and srv[0].transport)
        srv[0].transport.write(b"goodbye")
        srv[0].transport.close()
        run_until(loop, lambda: pr.lost and srv[0].lost)
        assert bytes(pr.data) == b"goodbye"
        assert pr.events[-2:] == ["eof", "lost"]
        assert pr.exc is None
    finally:
        close_server(loop, server)


def test_tls_verification_failure(loop):
    srv = Registry()
    server = tls_server(loop, srv.factory(loop))
    made = []
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            run(loop, loop.create_connection(
                    lambda: made.append(1), HOST, server.sockets[0].getsockname()[1],
                    ssl=ssl.create_default_context(), server_hostname="localhost"))
        # (asyncio calls protocol_factory before the handshake, so whether it
        # was called is not pinned here.)
        run_briefly(loop, 5)
        # The server never gets an application-level connection.
        assert all(not p.data for p in srv)
    finally:
        close_server(loop, server)


def test_tls_hostname_mismatch(loop):
    server = tls_server(loop, asyncio.Protocol)
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            run(loop, loop.create_connection(
                asyncio.Protocol, HOST, server.sockets[0].getsockname()[1],
                ssl=client_ssl_context(), server_hostname="not-localhost.example"))
    finally:
        close_server(loop, server)


def test_tls_handshake_timeout(loop):
    # A TCP server that never speaks TLS.
    ls = socket.socket()
    ls.bind((HOST, 0))
    ls.listen()
    try:
        t0 = loop.time()
        with pytest.raises(ConnectionAbortedError, match="SSL handshake is taking longer than"):
            run(loop, loop.create_connection(
                asyncio.Protocol, *ls.getsockname(), ssl=client_ssl_context(),
                server_hostname="localhost", ssl_handshake_timeout=0.2))
        assert loop.time() - t0 < 5
        ls.settimeout(1)
        conn, _ = ls.accept()
        conn.close()
    finally:
        ls.close()


def test_tls_server_handshake_timeout_closes_silent_client(loop):
    srv = Registry()
    server = tls_server(loop, srv.factory(loop), ssl_handshake_timeout=0.2)
    c = socket.create_connection(server.sockets[0].getsockname())
    try:
        c.settimeout(5)

        async def read_eof():
            c.setblocking(False)
            while True:
                try:
                    chunk = await loop.sock_recv(c, 100)
                except ConnectionResetError:
                    return b""
                if not chunk:
                    return chunk

        assert run(loop, read_eof()) == b""
        assert all(not p.data for p in srv)
    finally:
        c.close()
        close_server(loop, server)


def test_tls_unclean_close_calls_eof_received(loop):
    # PITFALLS 7: the peer drops TCP without a TLS close_notify.
    class AbortAfterReply(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(b"reply:" + data)
            self.transport.abort()

    server = tls_server(loop, AbortAfterReply)
    pr = RecordingProtocol(loop)
    try:
        tr = tls_connect(loop, server, pr)
        tr.write(b"ping")
        run_until(loop, lambda: pr.lost)
        assert bytes(pr.data) == b"reply:ping"
        assert "eof" in pr.events
        assert pr.events[-2:] == ["eof", "lost"]
    finally:
        close_server(loop, server)


def test_tls_data_buffered_while_paused_comes_before_eof(loop):
    # PITFALLS 7: data that arrived while reading was paused is not lost at EOF.
    srv = Registry()
    server = tls_server(loop, srv.factory(loop))
    pr = RecordingProtocol(loop)
    data = payload(300_000, seed=2)
    try:
        tr = tls_connect(loop, server, pr)
        run_until(loop, lambda: srv and srv[0].transport)
        tr.pause_reading()
        assert not tr.is_reading()
        srv[0].transport.write(data)
        srv[0].transport.close()
        # (The server's TLS shutdown waits for the client's close_notify,
        # which the client sends only once it has read the server's.)
        loop.run_until_complete(asyncio.sleep(0.2))
        assert pr.events == ["made"]
        tr.resume_reading()
        run_until(loop, lambda: pr.lost and srv[0].lost)
        assert bytes(pr.data) == data
        assert pr.events[-2:] == ["eof", "lost"]
        assert pr.exc is None
    finally:
        if not pr.lost:
            tr.abort()
            run_until(loop, lambda: pr.lost)
        close_server(loop, server)


def test_tls_close_inside_data_received(loop):
    class CloseOnData(RecordingProtocol):
        def data_received(self, data):
            super().data_received(data)
            self.transport.close()

    server = tls_server(loop, EchoProtocol)
    pr = CloseOnData(loop)
    try:
        tr = tls_connect(loop, server, pr)
        tr.write(b"x")
        run_until(loop, lambda: pr.lost)
        assert pr.exc is None
        assert pr.events.count("lost") == 1
    finally:
        close_server(loop, server)


def test_tls_abort_client(loop):
    srv = Registry()
    server = tls_server(loop, srv.factory(loop))
    pr = RecordingProtocol(loop)
    try:
        tr = tls_connect(loop, server, pr)
        run_until(loop, lambda: srv and srv[0].transport)
        tr.abort()
        assert tr.is_closing()
        run_until(loop, lambda: pr.lost and srv[0].lost)
        assert pr.exc is None
    finally:
        close_server(loop, server)


def test_tls_over_unix_socket(loop, tmp_path):
    path = str(tmp_path / "tls.sock")
    server = run(loop, loop.create_unix_server(EchoProtocol, path, ssl=server_ssl_context()))
    pr = RecordingProtocol(loop)
    try:
        tr, _ = run(loop, loop.create_unix_connection(
            lambda: pr, path, ssl=client_ssl_context(), server_hostname="localhost"))
        assert tr.get_extra_info("peercert") is not None
        tr.write(b"unix tls")
        run_until(loop, lambda: bytes(pr.data) == b"unix tls")
        tr.close()
        run_until(loop, lambda: pr.lost)
    finally:
        close_server(loop, server)


# --------------------------------------------------------------------------
# start_tls


def test_start_tls_upgrade(loop):
    srv = Registry()
    server = run(loop, loop.create_server(srv.factory(loop), HOST, 0))
    pr = RecordingProtocol(loop)

    async def main():
        port = server.sockets[0].getsockname()[1]
        tr, _ = await loop.create_connection(lambda: pr, HOST, port)
        while not (srv and srv[0].transport):
            await asyncio.sleep(0.001)
        sp = srv[0]
        tr.write(b"plain")
        while bytes(sp.data) != b"plain":
            await asyncio.sleep(0.001)
        cctx = client_ssl_context()
        ctr, str_ = await asyncio.gather(
            loop.start_tls(tr, pr, cctx, server_hostname="localhost"),
            loop.start_tls(sp.transport, sp, server_ssl_context(), server_side=True),
        )
        assert isinstance(ctr, asyncio.Transport) and ctr is not tr
        assert ctr.get_extra_info("sslcontext") is cctx
        assert ctr.get_extra_info("peercert") is not None
        ctr.write(b"secret")
        while bytes(sp.data) != b"plainsecret":
            await asyncio.sleep(0.001)
        str_.write(b"secret back")
        while bytes(pr.data) != b"secret back":
            await asyncio.sleep(0.001)
        ctr.close()
        while not (pr.lost and sp.lost):
            await asyncio.sleep(0.001)

    try:
        run(loop, main())
        assert pr.exc is None
    finally:
        close_server(loop, server)


def test_start_tls_bad_arguments(loop):
    srv = Registry()
    server = run(loop, loop.create_server(srv.factory(loop), HOST, 0))
    pr = RecordingProtocol(loop)
    dpr = asyncio.DatagramProtocol()

    async def main():
        tr, _ = await loop.create_connection(lambda: pr, *server.sockets[0].getsockname())
        dtr, _ = await loop.create_datagram_endpoint(lambda: dpr, local_addr=(HOST, 0))
        try:
            with pytest.raises(TypeError, match="sslcontext is expected to be an instance of ssl.SSLContext"):
                await loop.start_tls(tr, pr, object())
            with pytest.raises(TypeError, match="is not supported by start_tls"):
                await loop.start_tls(dtr, dpr, client_ssl_context())
        finally:
            tr.close()
            dtr.close()
        while not pr.lost:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0)

    try:
        run(loop, main())
        run_until(loop, lambda: srv and srv[0].lost)
    finally:
        close_server(loop, server)


def test_tls_bad_arguments(loop, tmp_path):
    ctx = client_ssl_context()

    async def main():
        s = socket.socket()
        try:
            with pytest.raises(ValueError, match="You must set server_hostname when using ssl without a host"):
                await loop.create_connection(asyncio.Protocol, sock=s, ssl=ctx)
        finally:
            s.close()
        with pytest.raises(ValueError, match="you have to pass server_hostname when using ssl"):
            await loop.create_unix_connection(asyncio.Protocol, str(tmp_path / "x"), ssl=ctx)

    run(loop, main())


def test_tls_timeouts_must_be_positive(loop):
    # (Checked through start_tls: stock asyncio validates these only after
    # connecting, and create_connection then leaks the connected socket.)
    srv = Registry()
    server = run(loop, loop.create_server(srv.factory(loop), HOST, 0))
    pr = RecordingProtocol(loop)

    async def main():
        tr, _ = await loop.create_connection(lambda: pr, *server.sockets[0].getsockname())
        try:
            with pytest.raises(ValueError, match="ssl_handshake_timeout should be a positive number"):
                await loop.start_tls(tr, pr, client_ssl_context(), server_hostname="localhost",
                                     ssl_handshake_timeout=0)
            with pytest.raises(ValueError, match="ssl_shutdown_timeout should be a positive number"):
                await loop.start_tls(tr, pr, client_ssl_context(), server_hostname="localhost",
                                     ssl_shutdown_timeout=-1)
            assert not tr.is_closing()
        finally:
            tr.close()

    try:
        run(loop, main())
        run_until(loop, lambda: pr.lost and srv and srv[0].lost)
    finally:
        close_server(loop, server)


# --------------------------------------------------------------------------
# Flow control, closing at every stage, timeouts, EOF, buffered app protocols
# (the paths of cxxloop's C TLS layer, _sslproto / bind_tls.cpp)


class MuteTLSServer(asyncio.Protocol):
    """A TLS server made by hand over a MemoryBIO pair: it completes the handshake,
    can send records or half-close on request, and otherwise answers nothing (no
    close_notify either)."""

    def __init__(self):
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.sslobj = server_ssl_context().wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.handshaken = False
        self.transport = None
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.incoming.write(data)
        if not self.handshaken:
            try:
                self.sslobj.do_handshake()
                self.handshaken = True
            except ssl.SSLWantReadError:
                pass
            self.flush()

    def send(self, data):
        self.sslobj.write(data)
        self.flush()

    def flush(self):
        out = self.outgoing.read()
        if out:
            self.transport.write(out)

    def eof_received(self):
        return True  # Stay open: the test decides.

    def connection_lost(self, exc):
        self.lost = True


def mute_server(loop):
    made = []

    def factory():
        made.append(MuteTLSServer())
        return made[-1]

    server = run(loop, loop.create_server(factory, HOST, 0))
    return server, made


def test_tls_large_transfers_both_ways_with_slow_readers(loop):
    srv = Registry()
    server = tls_server(loop, srv.factory(loop))
    pr = RecordingProtocol(loop)
    try:
        tr = tls_connect(loop, server, pr)
        run_until(loop, lambda: srv and srv[0].transport)
        sp, st = srv[0], srv[0].transport
        for sender, sprot, receiver, rprot, seed in ((tr, pr, st, sp, 1), (st, sp, tr, pr, 2)):
            # The receiver's app stops reading: its TLS layer stops reading the
            # socket, the kernel buffers fill, and the sender's app is paused.
            receiver.pause_reading()
            chunks = []
            while not sprot.paused and len(chunks) < 1024:
                chunk = bytes([(seed * 31 + len(chunks)) % 251]) * 65536
                chunks.append(chunk)
                sender.write(chunk)
            assert sprot.paused == 1, "the sender was never paused"
            assert sender.get_write_buffer_size() >= sender.get_write_buffer_limits()[1]
            loop.run_until_complete(asyncio.sleep(0.05))
            assert rprot.nbytes < sum(map(len, chunks))
            receiver.resume_reading()
            expect = b"".join(chunks)
            run_until(loop, lambda: rprot.nbytes == len(expect) and sprot.resumed == 1)
            assert bytes(rprot.data) == expect
            assert sender.get_write_buffer_size() == 0
            rprot.data.clear()
            rprot.nbytes = 0
            sprot.paused = sprot.resumed = 0
        tr.close()
        run_until(loop, lambda: pr.lost and sp.lost)
        assert pr.exc is None and sp.exc is None
    finally:
        close_server(loop, server)


def test_tls_cancel_during_handshake_closes_the_connection(loop):
    # A TCP server that never speaks TLS; the client gives up mid-handshake.
    ls = socket.socket()
    ls.bind((HOST, 0))
    ls.listen()
    try:
        task = loop.create_task(loop.create_connection(
            asyncio.Protocol, *ls.getsockname(), ssl=client_ssl_context(),
            server_hostname="localhost"))
        loop.run_until_complete(asyncio.sleep(0.1))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            loop.run_until_complete(task)
        ls.settimeout(5)
        conn, _ = ls.accept()
        with conn:
            conn.settimeout(5)
            data = b""
            while True:  # The ClientHello, then EOF.
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            assert data[:1] == b"\x16"  # A TLS handshake record.
    finally:
        ls.close()


def test_tls_peer_closes_during_handshake(loop):
    # The server accepts TCP and closes it at once: the client's handshake fails.
    ls = socket.socket()
    ls.bind((HOST, 0))
    ls.listen()

    async def main():
        task = loop.create_task(loop.create_connection(
            asyncio.Protocol, *ls.getsockname(), ssl=client_ssl_context(),
            server_hostname="localhost"))
        conn, _ = await loop.sock_accept(ls)
        conn.close()
        with pytest.raises(ConnectionResetError):
            await task

    try:
        ls.setblocking(False)
        run(loop, main())
    finally:
        ls.close()


def test_tls_client_aborts_during_handshake_server_keeps_serving(loop):
    srv = Registry()
    server = tls_server(loop, srv.factory(loop))
    try:
        c = socket.create_connection(server.sockets[0].getsockname())
        c.sendall(b"\x16\x03\x01\x02\x00\x01\x00")  # The start of a ClientHello.
        loop.run_until_complete(asyncio.sleep(0.05))
        set_linger_zero(c)
        c.close()  # RST in the middle of the handshake.
        loop.run_until_complete(asyncio.sleep(0.05))
        # Its app protocol (made at accept) never saw a callback.
        assert all(p.events == [] for p in srv)
        before = len(srv)
        pr = RecordingProtocol(loop)
        tr = tls_connect(loop, server, pr)
        tr.write(b"still serving")
        run_until(loop, lambda: len(srv) > before and bytes(srv[-1].data) == b"still serving")
        tr.close()
        run_until(loop, lambda: pr.lost and srv[-1].lost)
        assert all(p.events == [] for p in srv[:before])
    finally:
        close_server(loop, server)


def test_tls_close_during_data_flushes_everything(loop):
    srv = Registry()
    server = tls_server(loop, srv.factory(loop))
    pr = RecordingProtocol(loop)
    data = payload(2_000_000, seed=5)
    try:
        tr = tls_connect(loop, server, pr)
        run_until(loop, lambda: srv and srv[0].transport)
        tr.write(data)
        tr.close()
        assert tr.is_closing()
        tr.write(b"dropped")  # Writes after close() are dropped, not raised.
        run_until(loop, lambda: pr.lost and srv[0].lost)
        assert bytes(srv[0].data) == data
        assert srv[0].events[-2:] == ["eof", "lost"]
        assert pr.exc is None and srv[0].exc is None
    finally:
        close_server(loop, server)


def test_tls_abort_during_data(loop):
    srv = Registry()
    server = tls_server(loop, srv.factory(loop))
    pr = RecordingProtocol(loop)
    try:
        tr = tls_connect(loop, server, pr)
        run_until(loop, lambda: srv and srv[0].transport)
        srv[0].transport.write(payload(1_000_000, seed=6))
        run_until(loop, lambda: pr.nbytes > 0)
        tr.abort()
        assert tr.is_closing()
        got = pr.nbytes
        run_until(loop, lambda: pr.lost and srv[0].lost)
        assert pr.exc is None
        assert pr.events.count("lost") == 1 and "eof" not in pr.events
        assert pr.nbytes == got  # Nothing is delivered after abort().
    finally:
        close_server(loop, server)


def test_tls_shutdown_timeout(loop):
    server, made = mute_server(loop)
    pr = RecordingProtocol(loop)
    try:
        tr = tls_connect(loop, server, pr, ssl_shutdown_timeout=0.3)
        t0 = loop.time()
        tr.close()  # Sends close_notify; the peer never answers it.
        run_until(loop, lambda: pr.lost)
        assert 0.2 < loop.time() - t0 < 5
        assert isinstance(pr.exc, TimeoutError)
        assert "SSL shutdown timed out" in str(pr.exc)
        made[0].transport.close()
        run_until(loop, lambda: made[0].lost)
    finally:
        close_server(loop, server)


def test_tls_peer_eof_without_close_notify(loop):
    server, made = mute_server(loop)
    pr = RecordingProtocol(loop)
    try:
        tr = tls_connect(loop, server, pr)
        run_until(loop, lambda: made and made[0].handshaken)
        made[0].send(b"last words")
        made[0].transport.write_eof()  # TCP FIN, no TLS close_notify.
        run_until(loop, lambda: pr.lost)
        assert bytes(pr.data) == b"last words"
        assert pr.events == ["made", "data", "eof", "lost"]
        assert pr.exc is None
        assert tr.is_closing()
        made[0].transport.close()
        run_until(loop, lambda: made[0].lost)
    finally:
        close_server(loop, server)


class RecordingBufferedProtocol(asyncio.BufferedProtocol):
    def __init__(self, loop, size):
        self.size = size
        self.buf = bytearray(size)
        self.data = bytearray()
        self.events = []
        self.lost = False
        self.exc = "unset"

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def get_buffer(self, sizehint):
        return memoryview(self.buf)[: self.size]

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= self.size
        self.data += self.buf[:nbytes]
        if "data" not in self.events:
            self.events.append("data")

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost = True
        self.exc = exc


def test_tls_buffered_protocol(loop):
    server = tls_server(loop, EchoProtocol)
    pr = RecordingBufferedProtocol(loop, 1000)
    data = payload(500_000, seed=7)
    try:
        tr = tls_connect(loop, server, pr)
        assert pr.events == ["made"]
        tr.write(data)
        run_until(loop, lambda: len(pr.data) == len(data))
        assert bytes(pr.data) == data
        tr.pause_reading()
        tr.write(b"after resume")
        loop.run_until_complete(asyncio.sleep(0.05))
        assert len(pr.data) == len(data)
        tr.resume_reading()
        run_until(loop, lambda: bytes(pr.data[len(data):]) == b"after resume")
        tr.close()
        run_until(loop, lambda: pr.lost)
        assert pr.exc is None
        assert pr.events[-1] == "lost" and pr.events.count("lost") == 1
    finally:
        close_server(loop, server)


def test_tls_set_protocol_switches_app_protocol(loop):
    server = tls_server(loop, EchoProtocol)
    first = RecordingProtocol(loop)
    second = RecordingBufferedProtocol(loop, 64)
    try:
        tr = tls_connect(loop, server, first)
        assert tr.get_protocol() is first
        tr.write(b"one")
        run_until(loop, lambda: bytes(first.data) == b"one")
        tr.set_protocol(second)
        assert tr.get_protocol() is second
        tr.writelines([b"two", bytearray(b"-"), memoryview(b"three")])
        run_until(loop, lambda: bytes(second.data) == b"two-three")
        assert bytes(first.data) == b"one"
        with pytest.raises(TypeError, match="data: expecting a bytes-like instance, got str"):
            tr.write("text")
        tr.write(b"")  # Nothing happens.
        tr.close()
        run_until(loop, lambda: second.lost)
        assert not first.lost
    finally:
        close_server(loop, server)


def test_start_tls_with_data_pipelined_behind_the_handshake(loop):
    srv = Registry()
    server = run(loop, loop.create_server(srv.factory(loop), HOST, 0))
    pr = RecordingProtocol(loop)

    async def main():
        tr, _ = await loop.create_connection(lambda: pr, *server.sockets[0].getsockname())
        while not (srv and srv[0].transport):
            await asyncio.sleep(0.001)
        sp = srv[0]

        async def client():
            ctr = await loop.start_tls(tr, pr, client_ssl_context(), server_hostname="localhost")
            # Written in the same turn as the handshake's end: these records
            # follow the client's Finished message on the wire.
            ctr.write(b"first")
            ctr.writelines([b" second", b" third"])
            return ctr

        async def server_side():
            str_ = await loop.start_tls(sp.transport, sp, server_ssl_context(), server_side=True)
            str_.write(b"from server")
            return str_

        ctr, str_ = await asyncio.gather(client(), server_side())
        while bytes(sp.data) != b"first second third" or bytes(pr.data) != b"from server":
            await asyncio.sleep(0.001)
        assert sp.events[0] == "made" and pr.events[0] == "made"
        ctr.close()
        while not (pr.lost and sp.lost):
            await asyncio.sleep(0.001)
        assert str_.is_closing()

    try:
        run(loop, main())
        assert pr.exc is None
    finally:
        close_server(loop, server)


def test_tls_buffered_protocol_sees_close_notify(loop):
    srv = Registry()
    server = tls_server(loop, srv.factory(loop))
    data = payload(100_000, seed=8)
    try:
        for i, size in enumerate((16384, 70, 1 << 20)):  # A record, less, more than sent.
            pr = RecordingBufferedProtocol(loop, size)
            tls_connect(loop, server, pr)
            run_until(loop, lambda: len(srv) == i + 1 and srv[-1].transport)
            srv[-1].transport.write(data)
            srv[-1].transport.close()  # Then close_notify.
            run_until(loop, lambda: pr.lost and srv[-1].lost)
            assert bytes(pr.data) == data
            assert pr.events == ["made", "data", "eof", "lost"]
            assert pr.exc is None
    finally:
        close_server(loop, server)


def test_tls_protocol_methods_on_an_uninitialised_object_raise(loop):
    # The per-record methods of the loop's SSL protocol class (C in cxxloop) raise
    # AttributeError, never crash, on an object whose __init__ did not run.
    server = tls_server(loop, EchoProtocol)
    pr = RecordingProtocol(loop)
    try:
        tr = tls_connect(loop, server, pr)
        cls = type(tr._ssl_protocol)
        tr.close()
        run_until(loop, lambda: pr.lost)
    finally:
        close_server(loop, server)
    bare = cls.__new__(cls)
    for name, args in [("_do_read", ()), ("buffer_updated", (1,)), ("_process_outgoing", ()),
                       ("_write_appdata", ((b"x",),)), ("_do_write", ()),
                       ("_control_app_writing", ()), ("_control_ssl_reading", ()),
                       ("_get_write_buffer_size", ()), ("_get_read_buffer_size", ())]:
        with pytest.raises(AttributeError):
            getattr(bare, name)(*args)


def test_tls_app_protocol_stays_alive_while_its_data_received_runs(loop):
    # A protocol whose data_received is a C method (here list.index, which compares
    # the items with the data) and which is replaced inside that call: asyncio's
    # sslproto keeps the protocol alive until the call returns; its C method must not
    # run on a freed object.
    import weakref

    class Replacement(asyncio.Protocol):
        data = b""
        lost = False

        def data_received(self, data):
            self.data += data

        def connection_lost(self, exc):
            self.lost = True

    replacement = Replacement()
    seen = []

    class Item:
        def __eq__(self, other):
            ref = P.ref
            P.transport.set_protocol(replacement)
            seen.append(ref() is not None)
            return True

    class P(list, asyncio.Protocol):
        ref = transport = None
        data_received = list.index

        def connection_made(self, transport):
            P.transport = transport

    def make():
        p = P([Item()])
        P.ref = weakref.ref(p)
        return p

    server = tls_server(loop, EchoProtocol)
    tr = None
    try:
        port = server.sockets[0].getsockname()[1]
        tr = run(loop, loop.create_connection(make, HOST, port, ssl=client_ssl_context(),
                                              server_hostname="localhost"))[0]
        tr.write(b"ping")
        run_until(loop, lambda: seen)
        assert seen == [True]
        tr.write(b"pong")
        run_until(loop, lambda: replacement.data == b"pong")
    finally:
        P.transport = None
        if tr is not None:
            tr.close()
            run_until(loop, lambda: replacement.lost)
        close_server(loop, server)


# --------------------------------------------------------------------------
# The per-record paths: several records per socket read, one write made of many
# records, writes from inside data_received, EOF inside a record, max_size.


class ReadingTLSServer(MuteTLSServer):
    """MuteTLSServer that also decrypts what the client sends (into .appdata)."""

    def __init__(self):
        super().__init__()
        self.appdata = bytearray()

    def data_received(self, data):
        super().data_received(data)
        if self.handshaken:
            try:
                while True:
                    chunk = self.sslobj.read(1 << 20)
                    if not chunk:
                        break
                    self.appdata += chunk
            except ssl.SSLWantReadError:
                pass
            self.flush()  # A KeyUpdate or session ticket answer, if any.


def reading_server(loop):
    made = []

    def factory():
        made.append(ReadingTLSServer())
        return made[-1]

    return run(loop, loop.create_server(factory, HOST, 0)), made


def test_tls_many_records_in_one_socket_read(loop):
    server, made = mute_server(loop)
    pr = RecordingProtocol(loop)
    bpr = RecordingBufferedProtocol(loop, 100)  # Smaller than the records.
    try:
        tls_connect(loop, server, pr)
        tls_connect(loop, server, bpr)
        run_until(loop, lambda: len(made) == 2 and all(m.handshaken for m in made))
        pieces = [payload(n, seed=n) for n in (1, 700, 16384, 3, 5000, 1024)]
        for m in made:
            # Records first, then one transport.write: one TCP segment of six records.
            for p in pieces:
                m.sslobj.write(p)
            m.flush()
        want = b"".join(pieces)
        run_until(loop, lambda: bytes(pr.data) == want and bytes(bpr.data) == want)
        assert pr.events == ["made"] + ["data"] * pr.events.count("data")
        assert bpr.events == ["made", "data"]
        # Then a close_notify in the same segment as a last record.
        for m in made:
            m.sslobj.write(b"tail")
            try:
                m.sslobj.unwrap()
            except ssl.SSLWantReadError:
                pass
            m.flush()
        run_until(loop, lambda: pr.lost and bpr.lost)
        assert bytes(pr.data) == want + b"tail" and bytes(bpr.data) == want + b"tail"
        assert pr.events[-3:] == ["data", "eof", "lost"] and pr.exc is None
        assert bpr.events[-2:] == ["eof", "lost"] and bpr.exc is None
        for m in made:
            m.transport.close()
    finally:
        close_server(loop, server)


def test_tls_one_large_write_becomes_many_records(loop):
    server, made = reading_server(loop)
    pr = RecordingProtocol(loop)
    data = payload(300_000, seed=11)
    try:
        tr = tls_connect(loop, server, pr)
        run_until(loop, lambda: made and made[0].handshaken)
        tr.write(data)  # Nineteen records and a piece.
        tr.writelines([b"a", bytearray(b"b"), memoryview(b"cd")[1:], b"", data[:70_000]])
        tr.write(memoryview(data)[5:17])
        want = data + b"abd" + data[:70_000] + data[5:17]
        run_until(loop, lambda: len(made[0].appdata) >= len(want))
        assert bytes(made[0].appdata) == want
        tr.abort()
        run_until(loop, lambda: pr.lost)
        made[0].transport.close()
        run_until(loop, lambda: made[0].lost)
    finally:
        close_server(loop, server)


class ReplyingProtocol(RecordingProtocol):
    """Answers every data_received with three writes, one of them writelines."""

    def data_received(self, data):
        super().data_received(data)
        self.transport.write(b"<")
        self.transport.writelines([data, b"|", bytes(data[:1])])
        self.transport.write(b">")


def test_tls_writes_from_inside_data_received_keep_their_order(loop):
    srv = Registry()
    server = tls_server(loop, srv.factory(loop, ReplyingProtocol))
    pr = RecordingProtocol(loop)
    try:
        tr = tls_connect(loop, server, pr)
        msgs = [b"m%d" % i for i in range(50)]
        for m in msgs:
            tr.write(m)  # Several may reach the server in one socket read.
        run_until(loop, lambda: srv and bytes(srv[0].data) == b"".join(msgs))
        got = bytes(srv[0].data)
        # Whatever the server's reads were, each answer wraps exactly one of them.
        want = b""
        seen = 0
        while len(want) < 3 * len(got):
            run_until(loop, lambda: len(pr.data) > len(want))
            want = bytes(pr.data)
            if want.count(b">") == srv[0].events.count("data"):
                break
        answers = want.split(b">")[:-1]
        assert len(answers) == srv[0].events.count("data")
        for a in answers:
            assert a.startswith(b"<")
            body, first = a[1:].rsplit(b"|", 1)
            assert first == body[:1]
            seen += len(body)
        assert seen == len(got)
        tr.close()
        run_until(loop, lambda: pr.lost and srv[0].lost)
    finally:
        close_server(loop, server)


def test_tls_eof_inside_a_record(loop):
    server, made = mute_server(loop)
    pr = RecordingProtocol(loop)
    try:
        tls_connect(loop, server, pr)
        run_until(loop, lambda: made and made[0].handshaken)
        made[0].sslobj.write(b"whole")
        made[0].sslobj.write(b"cut short")
        records = made[0].outgoing.read()
        made[0].transport.write(records[:-5])  # The second record lacks its end.
        run_until(loop, lambda: bytes(pr.data) == b"whole")
        made[0].transport.write_eof()  # TCP FIN inside the record.
        run_until(loop, lambda: pr.lost)
        assert bytes(pr.data) == b"whole"
        assert pr.events == ["made", "data", "eof", "lost"]
        assert pr.exc is None
        made[0].transport.close()
        run_until(loop, lambda: made[0].lost)
    finally:
        close_server(loop, server)


def test_tls_max_size_of_the_protocol(loop):
    # asyncio's SSLProtocol reads at most max_size bytes per SSLObject.read and
    # sizes its receive buffer by it; cxxloop's keeps that, set on the object or on
    # a class.
    srv = Registry()
    server = tls_server(loop, srv.factory(loop))
    pr = RecordingProtocol(loop)
    data = payload(50_000, seed=12)
    try:
        tr = tls_connect(loop, server, pr)
        proto = tr._ssl_protocol
        cls = type(proto)
        assert proto.max_size == 256 * 1024 and "max_size" not in vars(proto)
        proto.max_size = 100
        assert proto.max_size == 100
        run_until(loop, lambda: srv and srv[0].transport)
        srv[0].transport.write(data)
        run_until(loop, lambda: bytes(pr.data) == data)  # Read 100 bytes at a time.
        del proto.max_size
        assert proto.max_size == 256 * 1024
        with pytest.raises(AttributeError):
            del proto.max_size
        sub = type("Sub", (cls,), {"max_size": 1000})
        assert sub.max_size == 1000
        proto.__class__ = sub
        assert proto.max_size == 1000
        assert len(proto.get_buffer(-1)) >= 1000
        srv[0].transport.write(data)
        run_until(loop, lambda: bytes(pr.data) == data * 2)
        proto.__class__ = cls
        tr.close()
        tr.close()  # Drops the protocol, as asyncio's does.
        with pytest.raises(AttributeError, match="'NoneType' object has no attribute"):
            tr.write(b"x")
        run_until(loop, lambda: pr.lost)
    finally:
        close_server(loop, server)


def test_tls_buffer_updated_after_the_read_buffer_was_released(loop):
    # buffer_updated(n) hands _ssl_buffer_view[:n] to the incoming BIO. A view that
    # was released refuses that slice (ValueError), and nothing reaches the BIO:
    # its memory may be gone with the buffer it viewed.
    srv = Registry()
    server = tls_server(loop, srv.factory(loop))
    pr = RecordingProtocol(loop)
    try:
        tr = tls_connect(loop, server, pr)
        proto = tr._ssl_protocol
        view = proto.get_buffer(-1)
        assert view is proto._ssl_buffer_view
        view.release()
        proto._ssl_buffer = None  # The bytearray goes: nothing views it now.
        before = proto._incoming.pending
        with pytest.raises(ValueError, match="released memoryview"):
            proto.buffer_updated(1000)
        assert proto._incoming.pending == before
        # A fresh buffer for the reads to come.
        proto._ssl_buffer = bytearray(proto.max_size)
        proto._ssl_buffer_view = memoryview(proto._ssl_buffer)
        tr.write(b"still working")
        run_until(loop, lambda: srv and bytes(srv[0].data) == b"still working")
        srv[0].transport.write(b"both ways")
        run_until(loop, lambda: bytes(pr.data) == b"both ways")
        tr.close()
        run_until(loop, lambda: pr.lost and srv[0].lost)
    finally:
        close_server(loop, server)


def test_tls_max_size_changed_on_asyncio_class_after_reads(loop):
    # max_size is read from the class on every socket read; a change of
    # asyncio's SSLProtocol.max_size after reads have used it is seen at once,
    # by the attribute and by get_buffer(), and so is its deletion.
    base = sslproto.SSLProtocol
    old = base.__dict__["max_size"]
    srv = Registry()
    server = tls_server(loop, srv.factory(loop))
    pr = RecordingProtocol(loop)
    try:
        tr = tls_connect(loop, server, pr)
        proto = tr._ssl_protocol
        run_until(loop, lambda: srv and srv[0].transport)
        srv[0].transport.write(b"first")
        run_until(loop, lambda: bytes(pr.data) == b"first")
        assert proto.max_size == old
        assert len(proto.get_buffer(-1)) <= old
        base.max_size = old + 4096
        assert proto.max_size == old + 4096
        assert len(proto.get_buffer(-1)) == old + 4096
        del base.max_size
        with pytest.raises(AttributeError):
            proto.max_size
        with pytest.raises(AttributeError):
            proto.get_buffer(-1)
        base.max_size = old
        assert proto.max_size == old
        srv[0].transport.write(b"second")
        run_until(loop, lambda: bytes(pr.data) == b"firstsecond")
        tr.close()
        run_until(loop, lambda: pr.lost and srv[0].lost)
    finally:
        base.max_size = old
        close_server(loop, server)


def test_tls_buffer_updated_with_the_incoming_bio_deleted(loop):
    # `del proto._incoming` leaves the BIO attribute unset: buffer_updated() raises
    # AttributeError, as asyncio's does, and the connection still closes cleanly.
    srv = Registry()
    server = tls_server(loop, srv.factory(loop))
    pr = RecordingProtocol(loop)
    try:
        tr = tls_connect(loop, server, pr)
        proto = tr._ssl_protocol
        proto.get_buffer(-1)
        incoming = proto._incoming
        del proto._incoming
        with pytest.raises(AttributeError):
            proto.buffer_updated(10)
        proto._incoming = incoming
        tr.close()
        run_until(loop, lambda: pr.lost and srv[0].lost)
    finally:
        close_server(loop, server)
