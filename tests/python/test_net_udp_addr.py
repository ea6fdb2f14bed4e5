"""The peer addresses a datagram transport hands to datagram_received, and sendto()
to them. cxxloop keeps the address tuples of recent peers (a repeated peer gets an
equal tuple without formatting it again) and sends to such a tuple without parsing
it; the addresses must still read exactly as the socket module makes them."""

import asyncio
import socket

import pytest

from nethelpers import HOST, HOST6, needs_ipv6, run, run_until


class Echo(asyncio.DatagramProtocol):
    def __init__(self):
        self.transport = None
        self.addrs = []
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.addrs.append(addr)
        self.transport.sendto(data, addr)

    def connection_lost(self, exc):
        self.lost = True


def _server(loop, host=HOST, family=0):
    proto = Echo()
    tr, _ = run(loop, loop.create_datagram_endpoint(lambda: proto, local_addr=(host, 0), family=family))
    return tr, proto


def _close(loop, tr, proto):
    tr.close()
    run_until(loop, lambda: proto.lost)


def _exchange(loop, tr, proto, clients, rounds=1):
    """Each client sends `rounds` datagrams in turn; returns the replies per client."""
    server = tr.get_extra_info("sockname")
    replies = [[] for _ in clients]
    for r in range(rounds):
        for i, c in enumerate(clients):
            c.sendto(b"%d:%d" % (i, r), server)
        want = len(proto.addrs) + len(clients)

        def all_echoed():
            for i, c in enumerate(clients):
                try:
                    while True:
                        replies[i].append(c.recv(100))
                except BlockingIOError:
                    pass
            return len(proto.addrs) >= want and all(len(x) == r + 1 for x in replies)

        run_until(loop, all_echoed)
    return replies


@pytest.mark.parametrize("client_host", ["127.0.0.1", "127.0.10.200", "127.100.0.5", "127.255.99.254"])
def test_ipv4_address_reads_as_the_socket_module_makes_it(loop, client_host):
    tr, proto = _server(loop)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.bind((client_host, 0))
            c.setblocking(False)
            replies = _exchange(loop, tr, proto, [c], rounds=3)
            assert replies == [[b"0:0", b"0:1", b"0:2"]]
            assert proto.addrs == [c.getsockname()] * 3
            assert all(type(a) is tuple and type(a[0]) is str and type(a[1]) is int for a in proto.addrs)
    finally:
        _close(loop, tr, proto)


def test_many_peers_each_get_their_own_address_and_echo(loop):
    # More peers than cxxloop keeps addresses for, several rounds each: every reply
    # goes to its own sender and every address is the sender's.
    tr, proto = _server(loop)
    clients = []
    try:
        for _ in range(150):
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            clients.append(c)
            c.bind((HOST, 0))
            c.setblocking(False)
        replies = _exchange(loop, tr, proto, clients, rounds=3)
        for i, got in enumerate(replies):
            assert got == [b"%d:%d" % (i, r) for r in range(3)]
        names = [c.getsockname() for c in clients]
        assert proto.addrs == names * 3
    finally:
        for c in clients:
            c.close()
        _close(loop, tr, proto)


def test_sendto_an_address_tuple_made_by_hand(loop):
    tr, proto = _server(loop)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.bind((HOST, 0))
            c.setblocking(False)
            host, port = c.getsockname()
            tr.sendto(b"first", (host, port))
            tr.sendto(b"second", (str(host), int(port)))
            got = []

            def two():
                try:
                    got.append(c.recv(100))
                except BlockingIOError:
                    pass
                return len(got) == 2

            run_until(loop, two)
            assert got == [b"first", b"second"]
    finally:
        _close(loop, tr, proto)


@needs_ipv6
def test_ipv6_address_is_the_four_tuple(loop):
    tr, proto = _server(loop, HOST6, socket.AF_INET6)
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c:
            c.bind((HOST6, 0))
            c.setblocking(False)
            replies = _exchange(loop, tr, proto, [c], rounds=2)
            assert replies == [[b"0:0", b"0:1"]]
            assert proto.addrs == [c.getsockname()] * 2
            assert len(proto.addrs[0]) == 4
    finally:
        _close(loop, tr, proto)


@needs_ipv6
def test_an_ipv4_peer_address_given_to_an_ipv6_transport(loop):
    # A tuple another (IPv4) transport received is not an address an IPv6 socket can
    # use as it is: the transport reports what asyncio's sendto reports.
    tr4, proto4 = _server(loop)
    proto6 = Echo()
    proto6.errors = []
    proto6.error_received = proto6.errors.append
    tr6, _ = run(loop, loop.create_datagram_endpoint(lambda: proto6, local_addr=(HOST6, 0)))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.bind((HOST, 0))
            c.setblocking(False)
            _exchange(loop, tr4, proto4, [c])
            addr = proto4.addrs[0]
            try:
                tr6.sendto(b"x", addr)
            except Exception as exc:  # noqa: BLE001 - compared below
                raised = type(exc)
            else:
                raised = None
            loop.run_until_complete(asyncio.sleep(0.01))
            expect = _stock_outcome(addr)
            assert (raised, [type(e) for e in proto6.errors]) == expect
    finally:
        _close(loop, tr4, proto4)
        tr6.close()
        run_until(loop, lambda: proto6.lost)


def _stock_outcome(addr):
    """What asyncio's own datagram transport does with `addr` on an IPv6 socket."""
    loop = asyncio.SelectorEventLoop()
    proto = Echo()
    proto.errors = []
    proto.error_received = proto.errors.append
    try:
        tr, _ = loop.run_until_complete(loop.create_datagram_endpoint(lambda: proto, local_addr=(HOST6, 0)))
        try:
            tr.sendto(b"x", addr)
        except Exception as exc:  # noqa: BLE001
            raised = type(exc)
        else:
            raised = None
        loop.run_until_complete(asyncio.sleep(0.01))
        tr.close()
        loop.run_until_complete(asyncio.sleep(0))
        return raised, [type(e) for e in proto.errors]
    finally:
        loop.close()


def test_sendto_a_host_with_a_nul_is_refused_as_asyncio_does(loop, expect_exception_handler_calls):
    # The socket module refuses the host name (TypeError), which asyncio's sendto
    # reports as a fatal error: nothing is sent to the address before the NUL.
    tr, proto = _server(loop)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.bind((HOST, 0))
        c.setblocking(False)
        tr.sendto(b"x", (HOST + "\0junk", c.getsockname()[1]))
        run_until(loop, lambda: proto.lost)
        calls = expect_exception_handler_calls.take()
        assert len(calls) == 1
        assert isinstance(calls[0]["exception"], TypeError)
        with pytest.raises(BlockingIOError):
            c.recv(100)
