"""The io_uring probe's optional features and their fallbacks, forced with the
CXXLOOP_URING_DISABLE environment variable (read once per process, so each case runs in
a child interpreter)."""

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import skip_unless_uring

# A TCP echo through create_connection/create_server and a wake-up from another thread,
# on the proactor. Prints how many fds the loop watches while the connection is open:
# the readiness-based Stream watches its socket, the completion-based UringStream does not.
_CHILD = textwrap.dedent("""
    import asyncio, threading
    import cxxloop

    class Echo(asyncio.Protocol):
        def connection_made(self, tr):
            self.tr = tr
        def data_received(self, data):
            self.tr.write(data)

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        base = loop._counts[2]
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for size in (1, 1000, 100000):
            writer.write(b"x" * size)
            assert await reader.readexactly(size) == b"x" * size
        watched = loop._counts[2] - base
        fut = loop.create_future()
        threading.Timer(0.01, loop.call_soon_threadsafe, (fut.set_result, "woken")).start()
        assert await asyncio.wait_for(fut, 5) == "woken"
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return watched

    lp = cxxloop.ProactorEventLoop()
    try:
        print("WATCHED", lp.run_until_complete(main()))
    finally:
        lp.close()
""")


def _child(code, disable):
    """Runs `code` in a child interpreter with CXXLOOP_URING_DISABLE set to `disable`
    (unset for None); returns its output."""
    env = dict(os.environ)
    env.pop("CXXLOOP_URING_DISABLE", None)
    if disable is not None:
        env["CXXLOOP_URING_DISABLE"] = disable
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _run_child(disable):
    return int(_child(_CHILD, disable).split()[-1])


@pytest.mark.parametrize("disable", ["recv_multishot", "poll_multishot", "buf_incremental", "all"])
def test_streams_and_wakeups_work_with_features_disabled(disable):
    skip_unless_uring()
    watched = _run_child(disable)
    if "recv" in disable or disable == "all":
        # Both ends of the connection fall back to the readiness-based Stream.
        assert watched == 2


def test_completion_streams_watch_no_fd_where_the_kernel_has_them():
    skip_unless_uring()
    watched = _run_child(None)
    if watched != 0:
        pytest.skip("the kernel lacks multishot receive: streams are readiness-based here")


def test_the_probe_lists_its_features_and_the_override_removes_them():
    skip_unless_uring()
    code = ("import cxxloop; names, missing = cxxloop._core.uring_features(); "
            "print(repr(names)); print(repr(missing))")

    def child(disable):
        names, missing = _child(code, disable).splitlines()
        return eval(names), eval(missing)

    names, missing = child(None)
    assert isinstance(names, tuple)
    assert set(names) <= {"poll_multishot", "recv_multishot", "buf_incremental"}
    assert (missing == "") == (len(names) == 3)
    less, missing = child("buf_incremental")
    assert less == tuple(n for n in names if n != "buf_incremental")
    assert "buf_incremental is disabled by CXXLOOP_URING_DISABLE" in missing
    assert child("all")[0] == ()
