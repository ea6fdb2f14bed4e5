"""Subprocesses, pipes and a signal handler on cxxloop.

    python examples/python/subprocess_pipeline.py [--loop cxxloop|proactor|asyncio]

Feeds 8 MiB through `gzip | gzip -d`, two children joined by an OS pipe, checks
that what comes out is what went in, and stops cleanly on SIGINT/SIGTERM (the
handler cancels the main task, as a server's graceful shutdown would).
"""

import argparse
import asyncio
import hashlib
import os
import signal


async def pipeline(data):
    r, w = os.pipe()
    gz = await asyncio.create_subprocess_exec(
        "gzip", "-c", stdin=asyncio.subprocess.PIPE, stdout=w)
    gunzip = await asyncio.create_subprocess_exec(
        "gzip", "-dc", stdin=r, stdout=asyncio.subprocess.PIPE)
    os.close(r)
    os.close(w)

    async def feed():
        for i in range(0, len(data), 256 * 1024):
            gz.stdin.write(data[i:i + 256 * 1024])
            await gz.stdin.drain()
        gz.stdin.close()
        await gz.stdin.wait_closed()

    out, _ = await asyncio.gather(gunzip.stdout.read(), feed())
    await asyncio.gather(gz.wait(), gunzip.wait())
    return out, gz.returncode, gunzip.returncode


async def main():
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        data = os.urandom(1 << 20) * 8
        out, rc1, rc2 = await pipeline(data)
        same = hashlib.sha256(out).digest() == hashlib.sha256(data).digest()
        print(f"{type(loop).__name__}: {len(data) >> 20} MiB through gzip | gzip -d: "
              f"{'identical' if same else 'DIFFERENT'}, exit codes {rc1} and {rc2}")
        return same and rc1 == rc2 == 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loop", default="cxxloop", choices=["cxxloop", "proactor", "asyncio"])
    args = p.parse_args()
    if args.loop == "asyncio":
        factory = asyncio.SelectorEventLoop
    else:
        import cxxloop
        factory = cxxloop.ProactorEventLoop if args.loop == "proactor" else cxxloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        raise SystemExit(0 if runner.run(main()) else 1)
