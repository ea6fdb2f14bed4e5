"""Datagram delivery when several datagrams wait at once. cxxloop reads a batch per
readiness report (asyncio reads one); either way a protocol that pauses reading or
closes its transport inside datagram_received gets nothing more until it resumes."""

import asyncio
import socket

from conftest import run_briefly
from nethelpers import HOST, run, run_until


class Collector(asyncio.DatagramProtocol):
    def __init__(self, on_first=None):
        self.got = []
        self.on_first = on_first
        self.transport = None
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.got.append(data)
        if len(self.got) == 1 and self.on_first:
            self.on_first(self.transport)

    def connection_lost(self, exc):
        self.lost = True


def _endpoint(loop, proto):
    tr, _ = run(loop, loop.create_datagram_endpoint(lambda: proto, local_addr=(HOST, 0)))
    return tr


def _send_burst(tr, n):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        for i in range(n):
            c.sendto(b"d%d" % i, tr.get_extra_info("sockname"))


def test_pause_reading_in_datagram_received_stops_the_batch(loop):
    proto = Collector(on_first=lambda tr: tr.pause_reading())
    tr = _endpoint(loop, proto)
    try:
        _send_burst(tr, 5)
        run_until(loop, lambda: proto.got)
        run_briefly(loop, 5)
        assert proto.got == [b"d0"]
        tr.resume_reading()
        run_until(loop, lambda: len(proto.got) == 5)
        assert proto.got == [b"d%d" % i for i in range(5)]
    finally:
        tr.close()
        run_until(loop, lambda: proto.lost)


def test_close_in_datagram_received_stops_the_batch(loop):
    proto = Collector(on_first=lambda tr: tr.close())
    tr = _endpoint(loop, proto)
    _send_burst(tr, 5)
    run_until(loop, lambda: proto.lost)
    assert proto.got == [b"d0"]


def test_a_burst_arrives_in_order(loop):
    proto = Collector()
    tr = _endpoint(loop, proto)
    try:
        _send_burst(tr, 100)
        run_until(loop, lambda: len(proto.got) == 100)
        assert proto.got == [b"d%d" % i for i in range(100)]
    finally:
        tr.close()
        run_until(loop, lambda: proto.lost)


def test_set_protocol_in_datagram_received_takes_the_rest(loop):
    # The transport's protocol is read again for every datagram: one replaced inside
    # datagram_received gets everything after it, in order.
    second = Collector()
    proto = Collector(on_first=lambda tr: tr.set_protocol(second))
    tr = _endpoint(loop, proto)
    try:
        _send_burst(tr, 6)
        run_until(loop, lambda: len(proto.got) + len(second.got) == 6)
        assert proto.got == [b"d0"]
        assert second.got == [b"d%d" % i for i in range(1, 6)]
        assert tr.get_protocol() is second
    finally:
        tr.close()
        run_until(loop, lambda: second.lost)


def test_transport_state_reads_as_asyncio_sets_it(loop):
    # The state attributes the datagram transport's own code uses keep asyncio's
    # values through pause, resume and close (cxxloop keeps them in slots).
    proto = Collector()
    tr = _endpoint(loop, proto)
    assert tr._conn_lost == 0 and tr._closing is False and tr._paused is False
    assert tr._protocol is proto and tr._address is None and not tr._buffer
    assert tr.is_reading()
    tr.pause_reading()
    assert tr._paused is True and not tr.is_reading()
    tr.resume_reading()
    assert tr._paused is False and tr.is_reading()
    tr.close()
    assert tr._closing is True and tr.is_closing()
    run_until(loop, lambda: proto.lost)
    assert tr._protocol is None
