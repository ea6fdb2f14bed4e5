"""Large bursts of received data: what a protocol does inside data_received()
(pause_reading, set_protocol, close) holds for everything queued behind the
call, however the loop batched the bytes (the proactor joins the chunks of a
burst into one read). Runs on every loop of the fixture, stock asyncio included."""

import asyncio
import socket
import threading

import pytest

from nethelpers import HOST, accept, listening_socket, payload, run, run_until

pytestmark = pytest.mark.cxxloop_pending("network")

SIZE = 600 * 1024


def connect(loop, factory, family=socket.AF_INET, tmp_path=None):
    """(transport, protocol, peer socket) over TCP or a Unix socket."""
    if family == socket.AF_UNIX:
        path = str(tmp_path / "s.sock")
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            ls.bind(path)
            ls.listen(1)
            tr, pr = run(loop, loop.create_unix_connection(factory, path))
            peer = accept(ls)
        finally:
            ls.close()
        return tr, pr, peer
    with listening_socket() as ls:
        tr, pr = run(loop, loop.create_connection(factory, *ls.getsockname()))
        peer = accept(ls)
    return tr, pr, peer


def send_in_thread(peer, data, tolerant=False):
    """Sends `data` then EOF from a thread (the peer blocks while the loop reads).
    `tolerant`: for a reader that goes away (the send may then fail)."""
    def body():
        try:
            peer.sendall(data)
            peer.shutdown(socket.SHUT_WR)
        except OSError:
            if not tolerant:
                raise
    t = threading.Thread(target=body)
    t.start()
    return t


def finish(loop, t, tr, proto, peer):
    """Joins the sender, closes the transport, waits for connection_lost, closes the peer."""
    t.join()
    tr.close()
    run_until(loop, lambda: proto.lost)
    peer.close()


class Pausing(asyncio.Protocol):
    """Pauses in every data_received() and resumes from a later callback; fails
    if data comes while paused or after EOF."""

    def __init__(self, loop):
        self.loop = loop
        self.data = bytearray()
        self.paused = False
        self.reads = 0
        self.eof = False
        self.lost = False
        self.errors = []

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.paused or self.eof:
            self.errors.append("data while %s" % ("paused" if self.paused else "after EOF"))
        self.data += data
        self.reads += 1
        self.paused = True
        self.transport.pause_reading()
        self.loop.call_later(0.001, self.resume)

    def resume(self):
        self.paused = False
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        self.lost = True


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_UNIX], ids=["tcp", "unix"])
def test_pause_inside_data_received_holds_the_rest_of_a_burst(loop, family, tmp_path):
    data = payload(SIZE)
    tr, pr, peer = connect(loop, lambda: Pausing(loop), family, tmp_path)
    t = send_in_thread(peer, data)
    try:
        run_until(loop, lambda: pr.eof, timeout=20)
        assert pr.errors == []
        assert bytes(pr.data) == data
        for _ in range(3):
            loop.run_until_complete(asyncio.sleep(0.002))
        assert pr.errors == []
    finally:
        finish(loop, t, tr, pr, peer)


class Switching(asyncio.Protocol):
    """Hands the transport to `after` inside its first data_received()."""

    def __init__(self, after):
        self.after = after
        self.data = bytearray()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data
        self.transport.set_protocol(self.after)

    def connection_lost(self, exc):  # pragma: no cover - the other protocol gets it
        raise AssertionError("connection_lost on the protocol switched away from")


class Collecting(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.eof = False
        self.lost = False

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        self.lost = True


def test_set_protocol_inside_data_received_passes_the_rest_on(loop):
    data = payload(SIZE, seed=3)
    after = Collecting()
    tr, first, peer = connect(loop, lambda: Switching(after))
    t = send_in_thread(peer, data)
    try:
        run_until(loop, lambda: after.eof, timeout=20)
        assert bytes(first.data + after.data) == data
        assert first.data
    finally:
        finish(loop, t, tr, after, peer)


class Closing(asyncio.Protocol):
    """Closes (or aborts) its transport in the first data_received()."""

    def __init__(self, how):
        self.how = how
        self.reads = 0
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.reads += 1
        getattr(self.transport, self.how)()

    def connection_lost(self, exc):
        self.lost = True


@pytest.mark.parametrize("how", ["close", "abort"])
def test_close_inside_data_received_drops_the_rest_of_a_burst(loop, how):
    data = payload(SIZE, seed=5)
    tr, pr, peer = connect(loop, lambda: Closing(how))
    peer.settimeout(20)
    t = send_in_thread(peer, data, tolerant=True)
    try:
        run_until(loop, lambda: pr.lost, timeout=20)
        for _ in range(3):
            loop.run_until_complete(asyncio.sleep(0.002))
        assert pr.reads == 1
    finally:
        peer.close()
        t.join()


