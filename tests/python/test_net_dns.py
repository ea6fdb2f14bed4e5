"""getaddrinfo / getnameinfo: same results as the socket module, numeric
hosts (including IPv6 scope ids) handled exactly."""

import asyncio
import concurrent.futures
import socket

import pytest

from nethelpers import HOST, HOST6, has_ipv6, loopback_ifname, needs_ipv6, run



def norm(infos):
    return sorted(infos, key=repr)


@pytest.mark.parametrize("kw", [
    dict(),
    dict(type=socket.SOCK_STREAM),
    dict(type=socket.SOCK_DGRAM),
    dict(family=socket.AF_INET, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP),
    dict(flags=socket.AI_NUMERICHOST),
    dict(flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV, type=socket.SOCK_STREAM),
])
def test_getaddrinfo_numeric_ipv4_matches_socket(loop, kw):
    got = run(loop, loop.getaddrinfo(HOST, 8080, **kw))
    assert isinstance(got, list)
    assert norm(got) == norm(socket.getaddrinfo(HOST, 8080, **kw))
    for fam, typ, proto, canon, addr in got:
        assert fam == socket.AF_INET and addr == (HOST, 8080)


def test_getaddrinfo_result_shape(loop):
    (info,) = run(loop, loop.getaddrinfo(HOST, 80, type=socket.SOCK_STREAM))
    fam, typ, proto, canon, addr = info
    assert fam == socket.AF_INET and isinstance(fam, socket.AddressFamily)
    assert typ == socket.SOCK_STREAM and isinstance(typ, socket.SocketKind)
    assert proto == socket.IPPROTO_TCP
    assert canon == ""
    assert addr == (HOST, 80)


@pytest.mark.parametrize("port", [None, 0, 443, "443", b"443"])
def test_getaddrinfo_port_forms(loop, port):
    kw = dict(type=socket.SOCK_STREAM)
    assert norm(run(loop, loop.getaddrinfo(HOST, port, **kw))) == \
        norm(socket.getaddrinfo(HOST, port, **kw))


def test_getaddrinfo_bytes_host(loop):
    kw = dict(type=socket.SOCK_STREAM)
    assert run(loop, loop.getaddrinfo(b"127.0.0.1", 1, **kw)) == \
        socket.getaddrinfo(b"127.0.0.1", 1, **kw)


def test_getaddrinfo_passive_none_host(loop):
    kw = dict(family=socket.AF_INET, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    got = run(loop, loop.getaddrinfo(None, 5000, **kw))
    assert norm(got) == norm(socket.getaddrinfo(None, 5000, **kw))
    assert got[0][4] == ("0.0.0.0", 5000)


def test_getaddrinfo_localhost_matches_socket(loop):
    kw = dict(type=socket.SOCK_STREAM)
    assert norm(run(loop, loop.getaddrinfo("localhost", 80, **kw))) == \
        norm(socket.getaddrinfo("localhost", 80, **kw))


@needs_ipv6
def test_getaddrinfo_numeric_ipv6(loop):
    kw = dict(type=socket.SOCK_STREAM)
    got = run(loop, loop.getaddrinfo(HOST6, 80, **kw))
    assert got == socket.getaddrinfo(HOST6, 80, **kw)
    assert got[0][0] == socket.AF_INET6
    assert got[0][4] == (HOST6, 80, 0, 0)


@pytest.mark.parametrize("flags", [0, socket.AI_NUMERICHOST])
def test_getaddrinfo_ipv6_scope_id_is_kept(loop, flags):
    ifname = loopback_ifname()
    if ifname is None:
        pytest.skip("no loopback interface name")
    idx = socket.if_nametoindex(ifname)
    host = f"fe80::1%{ifname}"
    kw = dict(type=socket.SOCK_STREAM, flags=flags)
    try:
        expected = socket.getaddrinfo(host, 80, **kw)
    except socket.gaierror:
        pytest.skip("the system resolver does not take scoped IPv6 literals")
    got = run(loop, loop.getaddrinfo(host, 80, **kw))
    assert got == expected
    assert got[0][4][0].startswith("fe80::1")
    assert got[0][4][3] == idx


def test_getaddrinfo_numeric_flag_rejects_names(loop):
    with pytest.raises(socket.gaierror) as ei:
        run(loop, loop.getaddrinfo("localhost", 80, flags=socket.AI_NUMERICHOST))
    with pytest.raises(socket.gaierror) as ej:
        socket.getaddrinfo("localhost", 80, flags=socket.AI_NUMERICHOST)
    assert ei.value.errno == ej.value.errno


def test_getaddrinfo_bad_numeric_address(loop):
    with pytest.raises(socket.gaierror):
        run(loop, loop.getaddrinfo("256.256.256.256", 80, flags=socket.AI_NUMERICHOST))


def test_getaddrinfo_family_mismatch(loop):
    with pytest.raises(socket.gaierror):
        run(loop, loop.getaddrinfo(HOST, 80, family=socket.AF_INET6,
                                   flags=socket.AI_NUMERICHOST))


def test_getaddrinfo_many_concurrent(loop):
    async def main():
        return await asyncio.gather(*(
            loop.getaddrinfo(HOST, p, type=socket.SOCK_STREAM) for p in range(1000, 1050)))

    results = run(loop, main())
    assert [r[0][4] for r in results] == [(HOST, p) for p in range(1000, 1050)]


@pytest.mark.parametrize("sockaddr,flags", [
    ((HOST, 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
    ((HOST, 8080), socket.NI_NUMERICHOST),
    ((HOST, 12345), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV | socket.NI_DGRAM),
])
def test_getnameinfo_matches_socket(loop, sockaddr, flags):
    got = run(loop, loop.getnameinfo(sockaddr, flags))
    assert got == socket.getnameinfo(sockaddr, flags)
    assert got[0] == HOST


def test_getnameinfo_default_flags(loop):
    assert run(loop, loop.getnameinfo((HOST, 80))) == socket.getnameinfo((HOST, 80), 0)


@needs_ipv6
def test_getnameinfo_ipv6(loop):
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    assert run(loop, loop.getnameinfo((HOST6, 80, 0, 0), flags)) == (HOST6, "80")


def test_getnameinfo_scope_id(loop):
    ifname = loopback_ifname()
    if ifname is None or not has_ipv6():
        pytest.skip("no IPv6 loopback interface")
    idx = socket.if_nametoindex(ifname)
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    sa = ("fe80::1", 80, 0, idx)
    assert run(loop, loop.getnameinfo(sa, flags)) == socket.getnameinfo(sa, flags)


def test_getnameinfo_bad_arguments(loop):
    with pytest.raises(TypeError):
        run(loop, loop.getnameinfo("127.0.0.1"))


class _NoExecutor(concurrent.futures.ThreadPoolExecutor):
    """A default executor that fails the test if anything is submitted to it."""

    def submit(self, fn, /, *args, **kwargs):
        raise AssertionError(f"executor used for {fn!r}{args!r}")


@pytest.mark.parametrize("host,port", [("127.0.0.1", 80), ("::1", "443"), (None, 0),
                                       (b"10.0.0.1", b"8080"), ("fe80::1%1", 22)])
def test_numeric_getaddrinfo_needs_no_executor(loop, loop_kind, host, port):
    if loop_kind == "asyncio":
        pytest.skip("stock asyncio sends every getaddrinfo() to the executor")
    loop.set_default_executor(_NoExecutor())
    got = run(loop, loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
    assert got == socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
