"""Echo (and HTTP) servers for the network benchmarks, one style per run.

    python servers.py --loop asyncio|uvloop|rloop|cxxloop --style STYLE [options]

Styles:
    sock      loop.sock_accept / sock_recv / sock_sendall, one task per connection
    streams   asyncio.start_server, reader.read / writer.write / await drain()
    protocol  loop.create_server, Protocol.data_received -> transport.write
    unix      the Protocol echo over loop.create_unix_server (--path)
    udp       loop.create_datagram_endpoint, datagram_received -> sendto
    http      HTTP/1.1 keep-alive, httptools parser in a Protocol, fixed response
    tls       the Protocol echo with ssl= (--cert, --key)

The server prints one line on stdout when it is listening:
    READY <port>          (or READY <path> for unix)
or, when it cannot run, one of
    NOTIMPL <message>     the loop raised NotImplementedError (cxxloop today)
    UNAVAILABLE <message> the loop or a dependency (httptools) does not import
and exits with status 3.  It serves until SIGTERM or SIGINT.

Every style reads with the same size (READ_SIZE, 256 KiB, which is also what
asyncio's and uvloop's transports ask for at most) so that the styles differ
only in the API they use.  The code is kept to what a typical user would
write: no buffer reuse or other tricks that only one loop would benefit from.
"""

import argparse
import asyncio
import os
import signal
import socket
import sys

READ_SIZE = 256 * 1024


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def make_loop(name):
    if name == "asyncio":
        return asyncio.SelectorEventLoop()
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    if name == "rloop":
        import rloop
        return rloop.new_event_loop()
    if name == "cxxloop":
        import cxxloop
        return cxxloop.new_event_loop()
    if name == "proactor":
        import cxxloop
        return cxxloop.ProactorEventLoop()
    raise SystemExit("unknown loop %r" % name)


# --------------------------------------------------------------------------
# sock_* API
# --------------------------------------------------------------------------

async def sock_echo(loop, conn):
    recv, sendall = loop.sock_recv, loop.sock_sendall
    try:
        while True:
            data = await recv(conn, READ_SIZE)
            if not data:
                break
            await sendall(conn, data)
    except OSError:
        pass
    finally:
        conn.close()


async def sock_server(loop, host, port):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(1024)
    lsock.setblocking(False)
    tasks = set()

    async def acceptor():
        while True:
            conn, _ = await loop.sock_accept(lsock)
            conn.setblocking(False)
            # The transports of asyncio and uvloop set TCP_NODELAY; do the same.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = loop.create_task(sock_echo(loop, conn))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    # sock_accept is only reached once the acceptor runs: start it and give it
    # one turn, so that NotImplementedError surfaces before READY is printed.
    acc = loop.create_task(acceptor())
    await asyncio.sleep(0)
    if acc.done():
        acc.result()
    return lsock.getsockname()[1], acc


# --------------------------------------------------------------------------
# streams
# --------------------------------------------------------------------------

async def streams_echo(reader, writer):
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def streams_server(loop, host, port):
    server = await asyncio.start_server(streams_echo, host, port, backlog=1024)
    return server.sockets[0].getsockname()[1], server


# --------------------------------------------------------------------------
# Protocol (TCP, unix, TLS)
# --------------------------------------------------------------------------

class EchoProtocol(asyncio.Protocol):
    __slots__ = ("transport",)

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        self.transport = None


async def protocol_server(loop, host, port, ssl_ctx=None):
    server = await loop.create_server(EchoProtocol, host, port, backlog=1024, ssl=ssl_ctx)
    return server.sockets[0].getsockname()[1], server


async def unix_server(loop, path):
    if os.path.exists(path):
        os.unlink(path)
    server = await loop.create_unix_server(EchoProtocol, path, backlog=1024)
    return path, server


# --------------------------------------------------------------------------
# UDP
# --------------------------------------------------------------------------

class EchoDatagram(asyncio.DatagramProtocol):
    __slots__ = ("transport",)

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def udp_server(loop, host, port):
    transport, _ = await loop.create_datagram_endpoint(EchoDatagram, local_addr=(host, port))
    return transport.get_extra_info("sockname")[1], transport


# --------------------------------------------------------------------------
# HTTP/1.1 with httptools
# --------------------------------------------------------------------------

HTTP_BODY = b"Hello, World!"
HTTP_RESPONSE = (b"HTTP/1.1 200 OK\r\n"
                 b"Content-Type: text/plain\r\n"
                 b"Content-Length: " + str(len(HTTP_BODY)).encode() + b"\r\n"
                 b"\r\n" + HTTP_BODY)
HTTP_RESPONSE_CLOSE = HTTP_RESPONSE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)


def make_http_protocol():
    import httptools

    class HttpProtocol(asyncio.Protocol):
        """Parses every request with httptools (url, headers, body callbacks
        as a small framework would) and answers with a fixed response,
        keeping the connection open unless the client asked to close."""

        __slots__ = ("transport", "parser", "url", "headers")

        def connection_made(self, transport):
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)
            self.url = None
            self.headers = []

        def connection_lost(self, exc):
            self.transport = None

        def on_url(self, url):
            self.url = url

        def on_header(self, name, value):
            self.headers.append((name, value))

        def on_message_complete(self):
            keep = self.parser.should_keep_alive()
            self.transport.write(HTTP_RESPONSE if keep else HTTP_RESPONSE_CLOSE)
            self.headers = []
            if not keep:
                self.transport.close()

        def data_received(self, data):
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                     b"Connection: close\r\n\r\n")
                self.transport.close()

    return HttpProtocol


async def http_server(loop, host, port):
    proto = make_http_protocol()
    server = await loop.create_server(proto, host, port, backlog=1024)
    return server.sockets[0].getsockname()[1], server


# --------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loop", required=True, choices=["asyncio", "uvloop", "rloop", "cxxloop", "proactor"])
    p.add_argument("--style", required=True,
                   choices=["sock", "streams", "protocol", "unix", "udp", "http", "tls"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = any free port (printed)")
    p.add_argument("--path", help="unix socket path (style unix)")
    p.add_argument("--cert", help="certificate (PEM) for style tls")
    p.add_argument("--key", help="private key (PEM) for style tls")
    args = p.parse_args()

    try:
        loop = make_loop(args.loop)
        if args.style == "http":
            import httptools  # noqa: F401  (checked here so it is reported as unavailable)
    except (ImportError, OSError) as exc:  # OSError: the proactor without io_uring.
        say("UNAVAILABLE %s" % exc)
        return 3
    asyncio.set_event_loop(loop)

    async def start():
        if args.style == "sock":
            return await sock_server(loop, args.host, args.port)
        if args.style == "streams":
            return await streams_server(loop, args.host, args.port)
        if args.style == "protocol":
            return await protocol_server(loop, args.host, args.port)
        if args.style == "unix":
            return await unix_server(loop, args.path)
        if args.style == "udp":
            return await udp_server(loop, args.host, args.port)
        if args.style == "http":
            return await http_server(loop, args.host, args.port)
        if args.style == "tls":
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(args.cert, args.key)
            return await protocol_server(loop, args.host, args.port, ctx)
        raise AssertionError(args.style)

    try:
        where, handle = loop.run_until_complete(start())
    except NotImplementedError as exc:
        say("NOTIMPL %s" % (str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
        return 3
    except Exception as exc:
        say("ERROR %s: %s" % (type(exc).__name__, str(exc).splitlines()[0] if str(exc) else ""))
        return 3

    def on_signal(*_):
        loop.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError, ValueError):
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(loop.stop))
    say("READY %s" % where)
    try:
        loop.run_forever()
    finally:
        # Quick exit: the runner measured what it needed; the OS closes the
        # sockets.  (A slow or broken close path must not hold the run up.)
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
