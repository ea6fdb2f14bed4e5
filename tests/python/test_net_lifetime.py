"""Lifetime of stream transports: who keeps a transport alive, what happens to one
nobody closed, and how BaseException subclasses leave a protocol callback. Each body
runs on cxxloop and on the stock loop; cxxloop's transports keep themselves alive
only while the engine watches their socket, as asyncio's selector does through its
reader and writer handles."""

import asyncio
import gc
import socket
import sys
import weakref

import pytest

from conftest import run_briefly
from nethelpers import RecordingProtocol, recv_exactly, run, run_until


def _accepted(loop, factory):
    a, b = socket.socketpair()
    tr, pr = run(loop, loop.connect_accepted_socket(factory, a))
    return tr, pr, b


def test_closed_transport_is_collected(loop):
    tr, pr, peer = _accepted(loop, lambda: RecordingProtocol(loop))
    with peer:
        ref = weakref.ref(tr)
        tr.write(b"x")
        assert recv_exactly(peer, 1) == b"x"
        tr.close()
        run_until(loop, lambda: pr.lost)
        del tr, pr  # The recording protocol keeps its transport.
        gc.collect()
        assert ref() is None


# (Not abort(): stock asyncio's aborted transport waits for the cyclic GC itself.)
@pytest.mark.parametrize("how", ["close", "peer_eof"])
def test_closed_transport_is_freed_without_the_cyclic_gc(loop, loop_kind, how):
    # asyncio's transport is freed as soon as nothing refers to it; a loop whose
    # transport and C core refer to each other must break that cycle itself.
    if loop_kind == "asyncio" and sys.version_info < (3, 12):
        pytest.skip("stock asyncio 3.11's closed transport waits for the cyclic GC")
    tr, pr, peer = _accepted(loop, lambda: RecordingProtocol(loop))
    with peer:
        ref = weakref.ref(tr)
        tr.write(b"x")
        assert recv_exactly(peer, 1) == b"x"
        if how == "close":
            tr.close()
        else:
            peer.shutdown(socket.SHUT_WR)
        run_until(loop, lambda: pr.lost)
        run_briefly(loop)
        gc.collect()
        gc.disable()
        try:
            del tr, pr
            assert ref() is None
        finally:
            gc.enable()


def test_transport_with_buffered_data_lives_until_flushed(loop):
    # close() with data still queued: the transport stays alive, unreferenced,
    # until the data is out and connection_lost has run.
    lost = []

    class P(asyncio.Protocol):  # Keeps no reference to its transport.
        def connection_lost(self, exc):
            lost.append(exc)

    tr, pr, peer = _accepted(loop, P)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    data = b"y" * (4 * 1024 * 1024)
    tr.write(data)
    assert tr.get_write_buffer_size() > 0
    tr.close()
    ref = weakref.ref(tr)
    del tr, pr
    gc.collect()
    assert ref() is not None, "a transport flushing its buffer must stay alive"
    got = bytearray()
    peer.setblocking(False)

    def drained():
        try:
            while True:
                chunk = peer.recv(1 << 20)
                if not chunk:
                    return True
                got.extend(chunk)
        except BlockingIOError:
            return False

    try:
        run_until(loop, drained, timeout=20, what="all data and EOF")
        run_until(loop, lambda: lost)
    finally:
        peer.close()
    assert lost == [None]
    assert bytes(got) == data
    gc.collect()
    assert ref() is None


def test_unclosed_transport_warns_when_the_loop_closes(loop_factory):
    loop = loop_factory()
    try:
        a, b = socket.socketpair()
        proto = asyncio.Protocol()  # Keeps no reference to its transport.
        tr, _ = run(loop, loop.connect_accepted_socket(lambda: proto, a))
        ref = weakref.ref(tr)
        del tr
        run_briefly(loop)
        gc.collect()
        assert ref() is not None, "a transport that is reading is held by the loop"
    finally:
        loop.close()
    with pytest.warns(ResourceWarning, match="unclosed transport"):
        gc.collect()
    assert ref() is None
    b.close()
    # The transport's socket was closed by its finaliser.
    assert a.fileno() == -1


class _Raiser(asyncio.Protocol):
    def __init__(self, exc_type):
        self.exc_type = exc_type
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        raise self.exc_type("from data_received")


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_data_received_leaves_the_loop(loop, exc_type):
    tr, pr, peer = _accepted(loop, lambda: _Raiser(exc_type))
    peer.send(b"boom")
    with pytest.raises(exc_type, match="from data_received"):
        loop.run_until_complete(asyncio.sleep(1))
    # The loop still works, and the transport can be closed normally.
    assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"
    assert not loop.is_running()
    tr.close()
    run_briefly(loop)
    peer.close()
    run_briefly(loop)


def test_write_type_errors_match(loop):
    tr, pr, peer = _accepted(loop, lambda: RecordingProtocol(loop))
    for bad in ("text", 1, None, [b"x"], object()):
        with pytest.raises(TypeError, match="data argument must be a bytes-like object, not "
                           + repr(type(bad).__name__)):
            tr.write(bad)
    tr.write(b"")  # Empty writes are no-ops.
    tr.write(bytearray(b"ab"))
    tr.write(memoryview(b"cd"))
    tr.writelines([b"e", bytearray(b"f"), memoryview(b"g")])
    assert recv_exactly(peer, 7) == b"abcdefg"
    tr.write_eof()
    with pytest.raises(RuntimeError, match=r"Cannot call write\(\) after write_eof\(\)"):
        tr.write(b"x")
    # (Python 3.11's stock writelines() joins and calls write(), hence either name.)
    with pytest.raises(RuntimeError, match=r"Cannot call write(lines)?\(\) after write_eof\(\)"):
        tr.writelines([b"x"])
    tr.close()
    run_until(loop, lambda: pr.lost)
    peer.close()


def test_writes_after_connection_lost_are_counted_and_dropped(loop, caplog):
    tr, pr, peer = _accepted(loop, lambda: RecordingProtocol(loop))
    tr.abort()
    run_until(loop, lambda: pr.lost)
    for _ in range(6):
        tr.write(b"late")
    assert tr.get_write_buffer_size() == 0
    assert any("socket.send() raised exception." in r.getMessage() for r in caplog.records)
    peer.close()


def _live(type_name):
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o).__name__ == type_name)


@pytest.mark.parametrize("how", ["close", "abort", "peer_close", "peer_reset", "write_eof", "pending_write"])
def test_many_connections_leave_no_transport_objects(loop, loop_kind, how):
    # Every way a connection ends releases the transport and its C++ core.
    names = ("SocketTransport", "StreamCore", "_SelectorSocketTransport")
    before = {n: _live(n) for n in names}
    for _ in range(30):
        a, b = socket.socketpair()
        tr, pr = run(loop, loop.connect_accepted_socket(lambda: RecordingProtocol(loop), a))
        if how == "close":
            tr.close()
        elif how == "abort":
            tr.write(b"x" * 100000)
            tr.abort()
        elif how == "peer_close":
            b.close()
        elif how == "peer_reset":
            b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            tr.write(b"y")
            b.close()
        elif how == "write_eof":
            tr.write_eof()
            b.close()
        elif how == "pending_write":
            tr.write(b"z" * 3000000)
            tr.close()
            b.close()
        run_until(loop, lambda: pr.lost)
        if not tr.is_closing():
            tr.close()
        run_briefly(loop)
        if b.fileno() != -1:
            b.close()
        del tr, pr
    after = {n: _live(n) for n in names}
    assert after == before


def test_transport_takes_attributes_and_keeps_its_own_in_slots(loop, loop_kind):
    # A stream transport accepts attributes the user sets, as asyncio's does; cxxloop's
    # keeps its own state in slots, so an idle connection carries no instance dict.
    tr, pr, peer = _accepted(loop, lambda: RecordingProtocol(loop))
    with peer:
        if loop_kind != "asyncio":
            assert tr.__dict__ == {}
        tr.user_tag = "mine"
        assert tr.user_tag == "mine"
        assert tr.is_closing() is False
        tr.write(b"x")
        assert recv_exactly(peer, 1) == b"x"
        tr.close()
        assert tr.is_closing() is True
        run_until(loop, lambda: pr.lost)
        assert tr.user_tag == "mine"
