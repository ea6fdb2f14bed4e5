"""Real libraries on each loop: an aiohttp server and client, a uvicorn ASGI app, a
websockets echo. Each runs over loopback and must leave nothing behind."""

import asyncio
import socket

import pytest


def run(loop, coro, timeout=20):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def test_aiohttp_server_and_client(loop):
    aiohttp = pytest.importorskip("aiohttp")
    from aiohttp import web

    async def hello(request):
        body = await request.read()
        return web.Response(text=f"hello {request.match_info['name']} {len(body)}")

    async def main():
        app = web.Application()
        app.router.add_post("/hello/{name}", hello)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as session:
                texts = []
                for i in range(3):  # keep-alive: one connection, several requests
                    async with session.post(f"http://127.0.0.1:{port}/hello/cxx",
                                            data=b"x" * (1000 * i)) as resp:
                        assert resp.status == 200
                        texts.append(await resp.text())
        finally:
            await runner.cleanup()
        return texts

    assert run(loop, main()) == ["hello cxx 0", "hello cxx 1000", "hello cxx 2000"]


def test_uvicorn_serves_an_asgi_app(loop):
    uvicorn = pytest.importorskip("uvicorn")

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "http"
        body = f"path={scope['path']}".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, loop="none", lifespan="on", log_level="warning",
                                access_log=False)
        server = uvicorn.Server(config)
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        try:
            while not server.started:
                assert not task.done(), task
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = await reader.read()
            writer.close()
            await writer.wait_closed()
        finally:
            server.should_exit = True
            await task
            sock.close()
        return response

    response = run(loop, main())
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"path=/ping")


def test_websockets_echo(loop):
    pytest.importorskip("websockets", minversion="14")
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async def main():
        async with serve(echo, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}") as ws:
                got = []
                for message in ("hi", b"\x00\x01" * 5000, "bye"):
                    await ws.send(message)
                    got.append(await ws.recv())
        return got

    assert run(loop, main()) == ["hi", b"\x00\x01" * 5000, "bye"]
