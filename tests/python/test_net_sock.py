"""The low-level sock_* API: sock_recv(_into), sock_recvfrom(_into),
sock_sendall, sock_sendto, sock_connect, sock_accept, sock_sendfile."""

import asyncio
import collections.abc
import errno
import gc
import io
import select
import socket
import ssl
import sys

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


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_sock_recv_large_reads_of_mixed_sizes(loop, kind, pair, tcp_pair):
    # Reads above 16 KiB take another path in cxxloop once a socket brought that
    # much: every size limit and every byte must still be recv(n)'s.
    a, b = tcp_pair if kind == "tcp" else pair
    data = payload(3 * 1024 * 1024 + 7)
    sizes = [20 * 1024, 256 * 1024, 17 * 1024, 100 * 1024, 1000, 64 * 1024, 130 * 1024, 256 * 1024]

    async def main():
        sender = asyncio.ensure_future(loop.sock_sendall(a, data))
        got = bytearray()
        i = 0
        while len(got) < len(data):
            n = sizes[i % len(sizes)]
            i += 1
            if i % 5 == 0:
                await asyncio.sleep(0.001)  # Let more queue up than one read takes.
            chunk = await loop.sock_recv(b, n)
            assert type(chunk) is bytes and 0 < len(chunk) <= n
            got += chunk
        assert await sender is None
        assert got == data
        a.shutdown(socket.SHUT_WR)
        assert await loop.sock_recv(b, 256 * 1024) == b""

    run(loop, main())


def test_sock_recv_large_datagrams(loop, udp_pair):
    # A datagram socket's recv(n) is one datagram, cut to n bytes.
    a, b = udp_pair
    grams = [payload(n, seed=n) for n in (40000, 30000, 50000, 20000, 60000, 40000)]

    async def main():
        # Two queued at a time (a loopback receive buffer holds a few such).
        for i, n in enumerate((256 * 1024, 256 * 1024, 20000, 256 * 1024, 17000, 40000)):
            a.sendto(grams[i], b.getsockname())
            if i + 1 < len(grams):
                a.sendto(grams[i + 1], b.getsockname())
            assert await loop.sock_recv(b, n) == grams[i][:n]
            if i + 1 < len(grams):
                assert await loop.sock_recv(b, 256 * 1024) == grams[i + 1]

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


def test_sock_recv_into_after_peer_reset(loop, tcp_pair):
    a, b = tcp_pair
    import struct
    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async def main():
        t = asyncio.ensure_future(loop.sock_recv_into(b, bytearray(10)))
        await asyncio.sleep(0.01)
        a.close()
        with pytest.raises(ConnectionResetError):
            await t

    run(loop, main())


def test_sock_sendall_to_reset_peer(loop, tcp_pair):
    a, b = tcp_pair
    import struct
    a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    async def main():
        t = asyncio.ensure_future(loop.sock_sendall(b, payload(16 * 1024 * 1024)))
        await asyncio.sleep(0.01)
        assert not t.done()  # waiting for the peer, which does not read
        a.close()
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            await t

    run(loop, main())


# --------------------------------------------------------------------------
# sock_recv / sock_recv_into / sock_sendall: what they return, and the edges


def test_sock_calls_are_coroutines(loop, pair):
    a, b = pair

    async def main():
        c = loop.sock_recv(b, 10)
        assert asyncio.iscoroutine(c)
        assert isinstance(c, collections.abc.Coroutine)
        t = loop.create_task(c)
        await asyncio.sleep(0)
        a.send(b"1")
        assert await t == b"1"
        f = asyncio.ensure_future(loop.sock_recv(b, 10))
        a.send(b"2")
        assert await f == b"2"
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_recv(b, 10), 0.01)
        assert await asyncio.gather(loop.sock_recv(b, 10), loop.sock_sendall(a, b"3")) == [b"3", None]
        buf = bytearray(4)
        r = await asyncio.gather(loop.sock_recv_into(b, buf), loop.sock_sendall(a, b"4"))
        assert r == [1, None] and buf[:1] == b"4"
        t = asyncio.ensure_future(loop.sock_recv(b, 1))
        await asyncio.sleep(0)
        assert "sock_recv()" in repr(t)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    run(loop, main())


def test_sock_call_coroutine_protocol_by_hand(loop, pair):
    a, b = pair
    a.send(b"xy")
    c = loop.sock_recv(b, 10)
    with pytest.raises(StopIteration) as e:
        c.send(None)
    assert e.value.value == b"xy"
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        c.send(None)
    c = loop.sock_sendall(a, b"z")
    with pytest.raises(TypeError, match="can't send non-None value to a just-started coroutine"):
        c.send(1)
    c.close()
    c = loop.sock_recv_into(b, bytearray(1))
    with pytest.raises(ZeroDivisionError):
        c.throw(ZeroDivisionError())
    with pytest.raises(RuntimeError, match="cannot reuse already awaited coroutine"):
        c.send(None)
    with pytest.raises(BlockingIOError):
        b.recv(10)  # neither the closed nor the thrown-into call ran


def test_sock_call_results_by_hand_are_fresh_exceptions(loop, pair):
    # The StopIteration each finished call raises: the ones kept keep their own
    # value, and each new one has its own value, args, traceback and no attributes
    # or context from an earlier one.
    a, b = pair
    kept = []
    for i in range(6):
        a.send(b"m%d" % i)
        c = loop.sock_recv(b, 10)
        try:
            try:
                raise KeyError(i)  # Being handled: the context of what is raised here.
            except KeyError:
                c.send(None)
        except StopIteration as e:
            assert e.value == b"m%d" % i and e.args == (b"m%d" % i,)
            assert isinstance(e.__context__, KeyError) and e.__context__.args == (i,)
            assert e.__cause__ is None and not e.__suppress_context__
            assert e.__traceback__.tb_next is None
            assert not hasattr(e, "tag")
            e.tag = i
            if i % 2:
                kept.append(e)
        else:
            pytest.fail("sock_recv with data queued did not finish at once")
        c = loop.sock_sendall(a, b"")
        with pytest.raises(StopIteration) as e:
            c.send(None)
        assert e.value.value is None and e.value.args == ()
    assert [(e.value, e.args, e.tag) for e in kept] == [(b"m%d" % i, (b"m%d" % i,), i) for i in (1, 3, 5)]


def test_sock_recv_awaited_in_except_block_keeps_nothing_alive(loop, pair):
    # A result raised (and taken apart) while an exception is being handled has that
    # exception as its context: nothing may keep either alive afterwards.
    import weakref
    a, b = pair

    class E(Exception):
        pass

    async def main():
        refs = []
        for i in range(3):
            a.send(b"s%d" % i)
            assert await loop.sock_recv(b, 10) == b"s%d" % i
            a.send(b"r%d" % i)
            try:
                raise E(i)
            except E as e:
                refs.append(weakref.ref(e))
                assert await loop.sock_recv(b, 10) == b"r%d" % i
        return refs

    refs = run(loop, main())
    assert [r() for r in refs] == [None, None, None]


def test_sock_results_stay_with_their_owner(loop):
    # What a finished call returns is the caller's alone: once it drops it, nothing
    # keeps it alive. A dropped accepted socket is closed at once (ResourceWarning),
    # and its peer sees the end of the stream.
    import warnings
    import weakref
    ls = socket.socket()
    ls.bind((HOST, 0))
    ls.listen()
    ls.setblocking(False)
    c = socket.create_connection(ls.getsockname())
    c.settimeout(5)

    class Tag:
        pass

    async def main():
        await asyncio.sleep(0.01)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            conn, addr = await loop.sock_accept(ls)
            del conn, addr
            gc.collect()
        assert c.recv(10) == b""  # The accepted socket was closed.
        # A datagram's address tuple, likewise.
        u, v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind((HOST, 0))
            v.setblocking(False)
            v.sendto(b"d", u.getsockname())
            u.setblocking(False)
            await asyncio.sleep(0.01)
            result = await loop.sock_recvfrom(u, 10)
            assert result[0] == b"d"
            assert sys.getrefcount(result) == 2  # result, and getrefcount's argument
        finally:
            u.close()
            v.close()

    try:
        run(loop, main())
    finally:
        c.close()
        ls.close()


def test_sock_result_taken_by_next_keeps_no_frame_alive(loop, pair):
    # A call stepped by hand with next() on its __await__() iterator: the
    # StopIteration caught in a function keeps neither the function's frame nor its
    # locals alive once the function returned.
    import weakref
    a, b = pair

    class Local:
        pass

    def take(n):
        local = Local()
        ref = weakref.ref(local)
        a.send(b"n%d" % n)
        it = loop.sock_recv(b, 10).__await__()
        try:
            next(it)
        except StopIteration as e:
            assert e.value == b"n%d" % n
        else:
            pytest.fail("sock_recv with data queued did not finish at once")
        return ref

    refs = [take(i) for i in range(3)]
    assert [r() for r in refs] == [None, None, None]


def test_cxxloop_reads_socket_fields_directly():
    # cxxloop reads a plain socket's fd and timeout from the socket object when they
    # agree with fileno() and gettimeout() at import; on the CPython versions it
    # supports they do (otherwise every sock_* call would take the slower path).
    cxxloop_core = pytest.importorskip("cxxloop._core")
    assert cxxloop_core._sock_fields_ok() is True


def test_sock_call_bad_arguments(loop, pair):
    a, b = pair

    async def main():
        with pytest.raises(ValueError, match="negative buffersize in recv"):
            await loop.sock_recv(b, -1)
        with pytest.raises(TypeError):
            await loop.sock_recv(b, 1.5)
        with pytest.raises(TypeError):
            await loop.sock_recv_into(b, b"immutable")
        with pytest.raises(TypeError):
            await loop.sock_sendall(a, "text")
        with pytest.raises(TypeError):
            loop.sock_recv(b)
        # Keywords, as asyncio's methods take them.
        await loop.sock_sendall(sock=a, data=b"kw")
        assert await loop.sock_recv(sock=b, n=10) == b"kw"

    run(loop, main())


def test_sock_recv_on_blocking_socket_outside_debug_mode(loop, pair):
    # asyncio checks the blocking mode only in debug mode; otherwise it just calls
    # the socket's methods, which do not block when data is there.
    a, b = pair
    a.setblocking(True)
    b.setblocking(True)

    async def main():
        await loop.sock_sendall(a, b"blocking")
        assert await loop.sock_recv(b, 100) == b"blocking"
        await loop.sock_sendall(a, b"again")
        buf = bytearray(10)
        assert await loop.sock_recv_into(b, buf) == 5

    run(loop, main())


def test_sock_calls_on_closed_or_detached_socket(loop):
    # A closed (or detached) socket's fd is -1: each call fails as the socket's own
    # method does, with EBADF.
    calls = {
        "recv": lambda s: loop.sock_recv(s, 10),
        "recv large": lambda s: loop.sock_recv(s, 100000),
        "recv_into": lambda s: loop.sock_recv_into(s, bytearray(10)),
        "sendall": lambda s: loop.sock_sendall(s, b"x"),
        "sendall empty": lambda s: loop.sock_sendall(s, b""),
        "recvfrom": lambda s: loop.sock_recvfrom(s, 10),
        "recvfrom_into": lambda s: loop.sock_recvfrom_into(s, bytearray(10)),
        "sendto": lambda s: loop.sock_sendto(s, b"x", "unbound"),
        "accept": lambda s: loop.sock_accept(s),
    }
    for how in ("close", "detach"):
        for name, call in calls.items():
            a, b = socket.socketpair()
            b.setblocking(False)
            if how == "close":
                b.close()
            else:
                b2 = socket.socket(fileno=b.detach())
            try:
                with pytest.raises(OSError) as e:
                    run(loop, call(b))
                assert e.value.errno == errno.EBADF, (how, name)
            finally:
                a.close()
                if how == "detach":
                    b2.close()


def test_sock_socket_subclass_methods_are_used(loop, pair):
    a, b = pair
    calls = []

    class Sock(socket.socket):
        def recv(self, n, *args):
            calls.append(("recv", n))
            return super().recv(n, *args)

        def send(self, data, *args):
            calls.append(("send", len(data)))
            return super().send(data, *args)

    s = Sock(fileno=b.detach())
    s.setblocking(False)

    async def main():
        await loop.sock_sendall(s, b"abc")
        assert a.recv(10) == b"abc"
        a.send(b"def")
        assert await loop.sock_recv(s, 10) == b"def"

    try:
        run(loop, main())
    finally:
        s.close()
    assert calls == [("send", 3), ("recv", 10)]


def test_sock_recv_cancelled_before_it_starts(loop, pair):
    a, b = pair

    async def main():
        t = asyncio.ensure_future(loop.sock_recv(b, 100))
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        a.send(b"kept")
        assert await loop.sock_recv(b, 100) == b"kept"

    run(loop, main())


def test_sock_recv_cancelled_after_data_arrived(loop, pair):
    # The read runs in the ready phase; a cancel landing before the task resumes
    # wins, and the data read is dropped with the result -- as in asyncio.
    a, b = pair

    async def main():
        t = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        a.send(b"lost")
        loop.call_later(0, t.cancel)  # timers run after the I/O callbacks
        with pytest.raises(asyncio.CancelledError):
            await t
        with pytest.raises(BlockingIOError):
            b.recv(100)

    run(loop, main())


def test_sock_recv_socket_closed_while_waiting(loop, loop_kind):
    if loop_kind in ("cxxloop-select", "cxxloop-pyselector"):
        pytest.skip("select() fails on a closed fd it watches (asyncio's SelectSelector too)")
    a, b = socket.socketpair()
    b.setblocking(False)

    async def main():
        t = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0.01)
        b.close()
        # epoll forgets a closed fd (the call waits on); poll reports it (EBADF).
        await asyncio.sleep(0.02)
        t.cancel()
        try:
            await t
        except asyncio.CancelledError:
            pass
        except OSError as exc:
            assert exc.errno == errno.EBADF
        # A new socket (likely on the same fd number) works normally.
        c, d = socket.socketpair()
        c.setblocking(False)
        try:
            t = asyncio.ensure_future(loop.sock_recv(c, 100))
            await asyncio.sleep(0.01)
            d.send(b"fresh")
            assert await t == b"fresh"
        finally:
            c.close()
            d.close()

    try:
        run(loop, main())
    finally:
        a.close()
        b.close()


def test_sock_recv_and_sendall_wait_on_one_socket_together(loop, tcp_pair):
    a, b = tcp_pair
    data = payload(8 * 1024 * 1024, seed=3)

    async def peer():
        got = await _recv_n(loop, b, len(data))
        await loop.sock_sendall(b, b"ack")
        return got

    async def main():
        p = asyncio.ensure_future(peer())
        r = asyncio.ensure_future(loop.sock_recv(a, 10))  # waits on a for reading
        await asyncio.sleep(0)
        await loop.sock_sendall(a, data)  # waits on a for writing meanwhile
        assert await r == b"ack"
        assert await p == data

    run(loop, main())


def test_sock_second_recv_replaces_the_first(loop, pair):
    # asyncio's add_reader replaces the first call's Handle: the second call gets
    # the data and the first waits until cancelled.
    a, b = pair

    async def main():
        t1 = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0)
        t2 = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0)
        a.send(b"data")
        assert await t2 == b"data"
        await asyncio.sleep(0.01)
        assert not t1.done()
        t1.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t1
        assert loop.remove_reader(b.fileno()) is False

    run(loop, main())


def test_sock_recv_replaces_an_fd_reader(loop, pair):
    a, b = pair
    fired = []

    async def main():
        loop.add_reader(b.fileno(), fired.append, "reader")
        t = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0)
        a.send(b"x")
        assert await t == b"x"
        await asyncio.sleep(0)
        assert loop.remove_reader(b.fileno()) is False

    run(loop, main())
    assert fired == []


def test_fd_writer_added_while_sock_recv_waits(loop, pair):
    a, b = pair
    fired = asyncio.Event()

    async def main():
        t = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0)
        loop.add_writer(b.fileno(), fired.set)
        await asyncio.wait_for(fired.wait(), 5)
        assert loop.remove_writer(b.fileno()) is True
        a.send(b"y")
        assert await t == b"y"
        t = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    run(loop, main())


async def _one_wait(loop, rsock, wsock, data=b"w"):
    """A sock_recv that has to wait (so the engine watched the fd) and completes."""
    t = asyncio.ensure_future(loop.sock_recv(rsock, 100))
    await asyncio.sleep(0)
    assert not t.done()
    wsock.send(data)
    assert await t == data


def test_fd_reader_added_after_sock_recv_waited(loop, pair):
    # Once a call is over the fd is free for add_reader/add_writer, as in asyncio.
    a, b = pair

    async def main():
        await _one_wait(loop, b, a)
        got = loop.create_future()
        loop.add_reader(b.fileno(), lambda: got.done() or got.set_result(b.recv(100)))
        a.send(b"r")
        assert await asyncio.wait_for(got, 5) == b"r"
        assert loop.remove_reader(b.fileno()) is True
        await _one_wait(loop, b, a)
        writable = loop.create_future()
        loop.add_writer(b.fileno(), lambda: writable.done() or writable.set_result(True))
        assert await asyncio.wait_for(writable, 5)
        assert loop.remove_writer(b.fileno()) is True
        await _one_wait(loop, b, a)

    run(loop, main())


def test_fd_number_reused_after_sock_recv_waited(loop):
    # A socket whose wait completed is closed; sockets made next (likely on the same
    # fd number) work with sock_recv, add_reader and a transport.
    async def main():
        for use in ("sock_recv", "add_reader", "transport"):
            a, b = socket.socketpair()
            b.setblocking(False)
            await _one_wait(loop, b, a)
            number = b.fileno()
            a.close()
            b.close()
            c, d = socket.socketpair()
            c.setblocking(False)
            try:
                if d.fileno() == number:
                    c, d = d, c
                    c.setblocking(False)
                if use == "sock_recv":
                    await _one_wait(loop, c, d, b"again")
                elif use == "add_reader":
                    got = loop.create_future()
                    loop.add_reader(c.fileno(), lambda: got.done() or got.set_result(c.recv(100)))
                    d.send(b"reader")
                    assert await asyncio.wait_for(got, 5) == b"reader"
                    assert loop.remove_reader(c.fileno()) is True
                else:
                    proto = RecordingProtocol(loop)
                    tr, _ = await loop.connect_accepted_socket(lambda: proto, c)
                    d.send(b"transport")
                    for _ in range(500):
                        if proto.data:
                            break
                        await asyncio.sleep(0.01)
                    assert proto.data == b"transport"
                    tr.close()
                    await asyncio.wait_for(proto.lost_fut, 5)
            finally:
                c.close()
                d.close()

    run(loop, main())


def test_sock_recv_cancelled_then_data_arrives(loop, pair):
    # The cancelled call's registration must not run anything when the data comes.
    a, b = pair

    async def main():
        t = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        a.send(b"later")
        for _ in range(5):
            await asyncio.sleep(0)
        assert b.recv(100) == b"later"
        await _one_wait(loop, b, a)

    run(loop, main())


def test_fd_reader_added_while_sock_recv_waits_replaces_it(loop, pair):
    # asyncio's add_reader replaces the waiting call's reader Handle: the new
    # callback gets the readiness and the call waits until cancelled.
    a, b = pair

    async def main():
        t = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0)
        got = loop.create_future()
        loop.add_reader(b.fileno(), lambda: got.done() or got.set_result(b.recv(100)))
        a.send(b"to the reader")
        assert await asyncio.wait_for(got, 5) == b"to the reader"
        assert not t.done()
        assert loop.remove_reader(b.fileno()) is True
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        await _one_wait(loop, b, a)

    run(loop, main())


def test_sock_calls_leave_nothing_behind(loop, pair):
    a, b = pair
    buf = bytearray(16)

    async def one_round():
        t = asyncio.ensure_future(loop.sock_recv(b, 16))
        await asyncio.sleep(0)
        a.send(b"x")
        assert await t == b"x"
        t = asyncio.ensure_future(loop.sock_recv_into(b, buf))
        await asyncio.sleep(0)
        a.send(b"y")
        assert await t == 1
        await loop.sock_sendall(a, b"z")
        assert await loop.sock_recv(b, 16) == b"z"
        t = asyncio.ensure_future(loop.sock_recv(b, 16))
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    async def main():
        for _ in range(20):
            await one_round()
        gc.collect()
        refs = sys.getrefcount(a), sys.getrefcount(b), sys.getrefcount(buf)
        objects = len(gc.get_objects())
        for _ in range(300):
            await one_round()
        gc.collect()
        assert (sys.getrefcount(a), sys.getrefcount(b), sys.getrefcount(buf)) == refs
        assert len(gc.get_objects()) < objects + 100
        assert loop.remove_reader(b.fileno()) is False
        assert loop.remove_writer(a.fileno()) is False

    run(loop, main())


def test_sock_calls_in_two_loops_in_two_threads(loop_factory):
    # Two loops, each in its own thread, echo through their own socket pairs at once:
    # small and large reads (whose buffers and kept objects the module shares), and
    # results raised through tp_iternext and am_send. Every byte arrives unchanged.
    import threading
    sizes = [1, 7, 1057, 1057, 20000, 70000, 100000, 130000, 300000]
    errors = []

    async def echo_rounds(loop, a, b, seed):
        for i in range(12):
            for n in sizes:
                data = payload(n, seed=seed * 1000 + i * 16 + n % 16)
                sending = asyncio.ensure_future(loop.sock_sendall(a, data))
                got = bytearray()
                while len(got) < n:
                    got += await loop.sock_recv(b, 256 * 1024 if n > 50000 else 4096)
                await sending
                assert bytes(got) == data, (seed, i, n)
                buf = bytearray(8)
                await loop.sock_sendall(b, b"ack%d" % (i % 10))
                assert await asyncio.wait_for(loop.sock_recv_into(a, buf), 5) == 4
                assert bytes(buf[:4]) == b"ack%d" % (i % 10)

    def worker(loop, seed):
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        try:
            loop.run_until_complete(asyncio.wait_for(echo_rounds(loop, a, b, seed), 30))
        except BaseException as e:
            errors.append(e)
        finally:
            a.close()
            b.close()

    loops = [loop_factory(), loop_factory()]
    try:
        threads = [threading.Thread(target=worker, args=(lp, i)) for i, lp in enumerate(loops)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for lp in loops:
            lp.close()
    assert errors == []


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


def test_sock_datagram_calls_edges(loop, udp_pair):
    a, b = udp_pair

    async def main():
        for make in (lambda: loop.sock_recvfrom(b, 10), lambda: loop.sock_recvfrom_into(b, bytearray(4)),
                     lambda: loop.sock_sendto(a, b"x", b.getsockname())):
            c = make()
            assert asyncio.iscoroutine(c)
            c.close()
        # nbytes=0 (or anything false) means len(buf), decided when the call starts.
        buf = bytearray(6)
        t = asyncio.ensure_future(loop.sock_recvfrom_into(b, buf, 0))
        await asyncio.sleep(0)
        await loop.sock_sendto(a, b"abcdefgh", b.getsockname())
        assert await t == (6, a.getsockname()) and buf == b"abcdef"
        with pytest.raises(ValueError):
            await loop.sock_recvfrom_into(b, bytearray(2), 5)  # nbytes > len(buf)
        with pytest.raises(TypeError):
            await loop.sock_recvfrom_into(b, object())
        with pytest.raises(ValueError, match="negative buffersize"):
            await loop.sock_recvfrom(b, -1)
        with pytest.raises(TypeError):
            await loop.sock_sendto(a, "text", b.getsockname())
        with pytest.raises(OSError):
            await loop.sock_sendto(a, b"x", ("256.0.0.1", 1))
        # Keywords go to asyncio's coroutine.
        await loop.sock_sendto(a, data=b"kw", address=b.getsockname())
        assert await loop.sock_recvfrom(sock=b, bufsize=10) == (b"kw", a.getsockname())

    run(loop, main())


def test_sock_accept_immediate_waiting_and_cancelled(loop):
    ls = socket.socket()
    ls.bind((HOST, 0))
    ls.listen()
    ls.setblocking(False)
    clients, conns = [], []

    async def main():
        # A connection already queued is returned at once.
        c = socket.create_connection(ls.getsockname())
        clients.append(c)
        await asyncio.sleep(0.01)
        conn, addr = await loop.sock_accept(ls)
        conns.append(conn)
        assert addr == c.getsockname() and conn.gettimeout() == 0
        # Cancelled while waiting: a later connection waits for the next call.
        t = asyncio.ensure_future(loop.sock_accept(ls))
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        c = socket.create_connection(ls.getsockname())
        clients.append(c)
        conn, addr = await asyncio.wait_for(loop.sock_accept(ls), 5)
        conns.append(conn)
        assert addr == c.getsockname()
        # Waiting, together with a recv on an accepted socket.
        r = asyncio.ensure_future(loop.sock_recv(conn, 10))
        t = asyncio.ensure_future(loop.sock_accept(ls))
        await asyncio.sleep(0)
        clients[-1].send(b"hi")
        c = socket.create_connection(ls.getsockname())
        clients.append(c)
        conn2, addr = await asyncio.wait_for(t, 5)
        conns.append(conn2)
        assert addr == c.getsockname()
        assert await r == b"hi"

    try:
        run(loop, main())
    finally:
        for s in conns + clients + [ls]:
            s.close()


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
