"""asyncio streams on top of the loop's transports: open_connection,
start_server, the unix variants, StreamReader methods, drain."""

import asyncio
import socket
import struct

import pytest

from nethelpers import (
    HOST, PY313, client_ssl_context, payload, run, server_ssl_context,
)

pytestmark = pytest.mark.cxxloop_pending("network")


async def _echo(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


def test_open_connection_start_server_echo(loop):
    async def main():
        server = await asyncio.start_server(_echo, HOST, 0)
        assert isinstance(server, asyncio.AbstractServer)
        assert type(server.sockets) is tuple
        async with server:
            r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
            assert isinstance(r, asyncio.StreamReader)
            assert isinstance(w, asyncio.StreamWriter)
            assert isinstance(w.transport, asyncio.Transport)
            assert w.get_extra_info("peername") == server.sockets[0].getsockname()
            assert w.can_write_eof()
            w.write(b"line one\nline two\n")
            assert await r.readline() == b"line one\n"
            assert await r.readline() == b"line two\n"
            w.writelines([b"abc", b"def"])
            assert await r.readexactly(6) == b"abcdef"
            w.write_eof()
            assert await r.read() == b""
            assert r.at_eof()
            w.close()
            assert w.is_closing()
            await w.wait_closed()

    run(loop, main())


def test_stream_reader_methods(loop):
    async def main():
        async def handler(reader, writer):
            writer.write(b"hello\nworld|rest-of-it")
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(handler, HOST, 0)
        async with server:
            r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
            assert await r.readuntil(b"\n") == b"hello\n"
            assert await r.readuntil(b"|") == b"world|"
            assert await r.read(4) == b"rest"
            with pytest.raises(asyncio.IncompleteReadError) as ei:
                await r.readexactly(100)
            assert ei.value.partial == b"-of-it"
            assert ei.value.expected == 100
            assert await r.readline() == b""
            w.close()
            await w.wait_closed()

    run(loop, main())


def test_readuntil_incomplete_at_eof(loop):
    async def main():
        async def handler(reader, writer):
            writer.write(b"no separator here")
            writer.close()

        server = await asyncio.start_server(handler, HOST, 0)
        async with server:
            r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
            with pytest.raises(asyncio.IncompleteReadError) as ei:
                await r.readuntil(b"\n")
            assert ei.value.partial == b"no separator here"
            w.close()
            await w.wait_closed()

    run(loop, main())


def test_stream_limit(loop):
    async def main():
        async def handler(reader, writer):
            writer.write(b"x" * 200 + b"\n" + b"short\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handler, HOST, 0)
        async with server:
            r, w = await asyncio.open_connection(*server.sockets[0].getsockname(), limit=64)
            with pytest.raises(ValueError):
                await r.readline()  # LimitOverrunError becomes ValueError
            assert await r.readline() == b"short\n"
            w.close()
            await w.wait_closed()

            r, w = await asyncio.open_connection(*server.sockets[0].getsockname(), limit=64)
            with pytest.raises(asyncio.LimitOverrunError):
                await r.readuntil(b"\n")
            w.close()
            await w.wait_closed()

    run(loop, main())


@pytest.mark.skipif(not PY313, reason="readuntil with several separators is new in 3.13")
def test_readuntil_tuple_of_separators(loop):
    async def main():
        async def handler(reader, writer):
            writer.write(b"a;b\r\nc")
            writer.close()

        server = await asyncio.start_server(handler, HOST, 0)
        async with server:
            r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
            assert await r.readuntil((b";", b"\r\n")) == b"a;"
            assert await r.readuntil((b";", b"\r\n")) == b"b\r\n"
            w.close()
            await w.wait_closed()

    run(loop, main())


def test_drain_applies_flow_control(loop):
    """drain() blocks while the transport is above the high-water mark and
    returns once the slow reader catches up."""
    async def main():
        gate = asyncio.Event()
        total = []

        async def slow(reader, writer):
            await gate.wait()
            n = 0
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                n += len(data)
            total.append(n)
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(slow, HOST, 0)
        async with server:
            r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
            w.transport.set_write_buffer_limits(high=64 * 1024)
            chunk = payload(1024 * 1024)
            sent = 0
            blocked = False
            while not blocked:
                w.write(chunk)
                sent += len(chunk)
                d = asyncio.ensure_future(w.drain())
                await asyncio.sleep(0.01)
                if not d.done():
                    blocked = True
                    assert w.transport.get_write_buffer_size() > 64 * 1024
                else:
                    await d
                assert sent < 256 * 1024 * 1024
            gate.set()
            await asyncio.wait_for(d, 10)
            assert w.transport.get_write_buffer_size() <= 64 * 1024
            w.write_eof()
            await asyncio.wait_for(r.read(), 10)
            while not total:
                await asyncio.sleep(0.001)
            assert total == [sent]
            w.close()
            await w.wait_closed()

    run(loop, main(), timeout=20)


def test_drain_after_peer_reset_raises(loop):
    async def main():
        conns = []

        async def handler(reader, writer):
            conns.append(writer)

        server = await asyncio.start_server(handler, HOST, 0)
        async with server:
            r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
            while not conns:
                await asyncio.sleep(0.001)
            conns[0].get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conns[0].transport.abort()  # RST
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                for _ in range(100):
                    w.write(b"x" * 65536)
                    await w.drain()
                    await asyncio.sleep(0.005)
            w.close()
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                await w.wait_closed()
            conns[0].close()

    run(loop, main())


def test_client_connected_cb_plain_function(loop):
    async def main():
        seen = []

        def cb(reader, writer):
            seen.append(writer.get_extra_info("peername"))
            writer.write(b"hi")
            writer.close()

        server = await asyncio.start_server(cb, HOST, 0)
        async with server:
            r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
            assert await r.read() == b"hi"
            assert seen == [w.get_extra_info("sockname")]
            w.close()
            await w.wait_closed()

    run(loop, main())


def test_unix_streams(loop, tmp_path):
    path = str(tmp_path / "st.sock")

    async def main():
        server = await asyncio.start_unix_server(_echo, path)
        async with server:
            assert server.sockets[0].family == socket.AF_UNIX
            r, w = await asyncio.open_unix_connection(path)
            data = payload(500_000)
            w.write(data)
            await w.drain()
            w.write_eof()
            assert await r.read() == data
            w.close()
            await w.wait_closed()

    run(loop, main())


def test_tls_streams_and_start_tls(loop):
    async def main():
        upgraded = []

        async def handler(reader, writer):
            line = await reader.readline()
            assert line == b"STARTTLS\n"
            writer.write(b"OK\n")
            await writer.drain()
            await writer.start_tls(server_ssl_context())
            upgraded.append(writer.get_extra_info("sslcontext") is not None)
            await _echo(reader, writer)

        server = await asyncio.start_server(handler, HOST, 0)
        async with server:
            r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
            w.write(b"STARTTLS\n")
            assert await r.readline() == b"OK\n"
            await w.start_tls(client_ssl_context(), server_hostname="localhost")
            assert w.get_extra_info("peercert") is not None
            w.write(b"secret\n")
            assert await r.readline() == b"secret\n"
            w.close()
            await w.wait_closed()
            assert upgraded == [True]

        server = await asyncio.start_server(_echo, HOST, 0, ssl=server_ssl_context())
        async with server:
            r, w = await asyncio.open_connection(
                *server.sockets[0].getsockname(), ssl=client_ssl_context(),
                server_hostname="localhost")
            w.write(b"tls line\n")
            assert await r.readline() == b"tls line\n"
            w.close()
            await w.wait_closed()

    run(loop, main())


def test_many_concurrent_stream_clients(loop):
    async def main():
        server = await asyncio.start_server(_echo, HOST, 0)
        port = server.sockets[0].getsockname()[1]

        async def client(i):
            r, w = await asyncio.open_connection(HOST, port)
            msg = b"client %d\n" % i
            for _ in range(10):
                w.write(msg)
                assert await r.readline() == msg
            w.close()
            await w.wait_closed()

        async with server:
            await asyncio.gather(*(client(i) for i in range(20)))

    run(loop, main())



def test_is_closing_through_the_life_of_a_stream(loop):
    # StreamWriter.drain() asks transport.is_closing() for every write: it must
    # follow close() and abort() exactly as asyncio's does.
    async def main():
        got_eof = asyncio.Event()
        server_writers = []

        async def handler(reader, writer):
            server_writers.append(writer)
            assert writer.transport.is_closing() is False
            assert await reader.read() == b"x"
            # EOF from the peer: StreamReaderProtocol keeps the transport open.
            assert writer.transport.is_closing() is False
            got_eof.set()

        server = await asyncio.start_server(handler, HOST, 0)
        try:
            r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
            tr = w.transport
            assert tr.is_closing() is False
            assert w.is_closing() is False
            w.write(b"x")
            await w.drain()
            w.write_eof()
            await got_eof.wait()
            assert tr.is_closing() is False
            w.close()
            assert tr.is_closing() is True
            assert w.is_closing() is True
            await w.wait_closed()
            assert tr.is_closing() is True
            sw = server_writers[0]
            sw.transport.abort()
            assert sw.transport.is_closing() is True
            await sw.wait_closed()
            assert sw.transport.is_closing() is True
        finally:
            server.close()
            await server.wait_closed()

    run(loop, main())


def test_large_reads_kept_by_the_protocol_stay_intact(loop):
    # Reads of 64 KiB and more go through the transport's large-read path; a protocol
    # that keeps every chunk it was given must find them all intact afterwards.
    chunks = []
    done = []

    class Keeper(asyncio.Protocol):
        def data_received(self, data):
            chunks.append(data)

        def eof_received(self):
            done.append(True)

    async def main():
        blob = payload(3 * 1024 * 1024)
        server = await loop.create_server(Keeper, HOST, 0)
        try:
            r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
            for i in range(0, len(blob), 200 * 1024):
                w.write(blob[i:i + 200 * 1024])
                await w.drain()
            w.write_eof()
            while not done:
                await asyncio.sleep(0.01)
            assert all(type(c) is bytes for c in chunks)
            assert b"".join(chunks) == blob
            w.close()
            await w.wait_closed()
        finally:
            server.close()
            await server.wait_closed()

    run(loop, main())
