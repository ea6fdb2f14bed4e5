"""A TCP echo server and a client on cxxloop, the asyncio way.

    python examples/python/echo.py [--loop cxxloop|proactor|asyncio] [--clients 20] [--messages 500]

The server is a Protocol; the clients use streams (open_connection). It prints
how many round trips it made and how long they took. Nothing in the code is
specific to cxxloop: the loop comes from the factory given to asyncio.Runner.
"""

import argparse
import asyncio
import time


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def client(port, messages, size):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = b"x" * size
    for _ in range(messages):
        writer.write(payload)
        await writer.drain()
        await reader.readexactly(size)
    writer.close()
    await writer.wait_closed()


async def main(clients, messages, size):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        start = time.perf_counter()
        await asyncio.gather(*(client(port, messages, size) for _ in range(clients)))
        took = time.perf_counter() - start
    n = clients * messages
    print(f"{type(loop).__module__}.{type(loop).__name__}: {n} round trips of {size} B "
          f"over {clients} connections in {took:.3f} s ({n / took:,.0f}/s)")
    return n


def loop_factory(name):
    if name == "asyncio":
        return asyncio.SelectorEventLoop
    import cxxloop
    return cxxloop.ProactorEventLoop if name == "proactor" else cxxloop.new_event_loop


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loop", default="cxxloop", choices=["cxxloop", "proactor", "asyncio"])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--messages", type=int, default=500)
    p.add_argument("--size", type=int, default=1024)
    args = p.parse_args()
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        runner.run(main(args.clients, args.messages, args.size))
