"""cxxloop.ProactorEventLoop: its class, the class as a loop factory, and its refusal
where io_uring is unavailable. (Everything else runs on it through the loop fixture's
cxxloop-proactor param.)"""

import asyncio
import errno
import os
import socket
import subprocess
import sys
import textwrap

import pytest

import conftest
from conftest import require_cxxloop, skip_unless_uring

needs_run_loop_factory = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is new in 3.12")


async def _running_loop():
    await asyncio.sleep(0)
    return asyncio.get_running_loop()


def test_probe_answers_a_triple():
    available, err, reason = require_cxxloop()._core.uring_support()
    assert isinstance(available, bool) and isinstance(err, int) and isinstance(reason, str)
    if available:
        assert (err, reason) == (0, "")
    else:
        assert err > 0 and reason


def test_class_is_a_sibling_of_the_selector_loop():
    cxxloop = require_cxxloop()
    assert issubclass(cxxloop.ProactorEventLoop, asyncio.AbstractEventLoop)
    assert not issubclass(cxxloop.ProactorEventLoop, cxxloop.SelectorEventLoop)
    assert not issubclass(cxxloop.ProactorEventLoop, asyncio.SelectorEventLoop)
    assert not issubclass(cxxloop.Loop, cxxloop.ProactorEventLoop)
    assert "ProactorEventLoop" in cxxloop.__all__


def test_loop_runs_on_the_uring_poller():
    skip_unless_uring()
    lp = require_cxxloop().ProactorEventLoop()
    try:
        assert lp._poller == "uring"
        assert repr(lp).startswith("<ProactorEventLoop running=False closed=False")
        assert lp.run_until_complete(_running_loop()) is lp
    finally:
        lp.close()
    assert lp.is_closed()


@needs_run_loop_factory
def test_asyncio_run_with_the_class_as_loop_factory():
    skip_unless_uring()
    cxxloop = require_cxxloop()
    lp = asyncio.run(_running_loop(), loop_factory=cxxloop.ProactorEventLoop)
    assert type(lp) is cxxloop.ProactorEventLoop
    assert lp.is_closed()


def test_runner_with_the_class_as_loop_factory():
    skip_unless_uring()
    cxxloop = require_cxxloop()
    with asyncio.Runner(loop_factory=cxxloop.ProactorEventLoop) as runner:
        lp = runner.run(_running_loop())
        assert runner.run(_running_loop()) is lp
        assert type(lp) is cxxloop.ProactorEventLoop
    assert lp.is_closed()


def test_new_event_loop_and_policy_stay_on_the_selector_engine(restore_policy):
    cxxloop = require_cxxloop()
    lp = cxxloop.new_event_loop()
    try:
        assert type(lp) is cxxloop.Loop and lp._poller != "uring"
    finally:
        lp.close()
    lp = cxxloop.EventLoopPolicy().new_event_loop()
    try:
        assert type(lp) is cxxloop.Loop and lp._poller != "uring"
    finally:
        lp.close()


def test_takes_no_arguments():
    with pytest.raises(TypeError):
        require_cxxloop().ProactorEventLoop(None)


# --- where io_uring is unavailable -------------------------------------------------------

_DISABLED = "io_uring is disabled system-wide (EPERM: /proc/sys/kernel/io_uring_disabled is 2)"


def test_unavailable_raises_oserror_naming_the_reason(monkeypatch):
    cxxloop = require_cxxloop()
    monkeypatch.setattr(cxxloop._proactor._core, "uring_support",
                        lambda: (False, errno.EPERM, _DISABLED))
    with pytest.raises(PermissionError) as info:
        cxxloop.ProactorEventLoop()
    assert info.value.errno == errno.EPERM
    assert "ProactorEventLoop" in str(info.value) and _DISABLED in str(info.value)
    # The selector engine is unaffected.
    lp = cxxloop.new_event_loop()
    lp.close()


def test_unavailable_makes_the_fixture_skip_not_fail(monkeypatch):
    cxxloop = require_cxxloop()
    monkeypatch.setattr(cxxloop._core, "uring_support",
                        lambda: (False, errno.ENOSYS, "built without liburing"))
    with pytest.raises(pytest.skip.Exception, match="built without liburing"):
        conftest.make_loop("cxxloop-proactor")


# A child process that installs a seccomp filter refusing io_uring_setup with EPERM
# (no liburing or libseccomp needed: a four-instruction classic BPF program through
# prctl), then constructs the loop. io_uring_setup is syscall 425 on every
# architecture that Linux numbers its new syscalls uniformly on.
_SECCOMP_CHILD = textwrap.dedent("""
    import ctypes, errno, struct, sys
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    RET_ALLOW, RET_ERRNO = 0x7fff0000, 0x00050000
    def insn(code, jt, jf, k):
        return struct.pack("HBBI", code, jt, jf, k)
    prog = (insn(0x20, 0, 0, 0)                       # load the syscall number
            + insn(0x15, 0, 1, 425)                   # == io_uring_setup ?
            + insn(0x06, 0, 0, RET_ERRNO | errno.EPERM)
            + insn(0x06, 0, 0, RET_ALLOW))
    buf = ctypes.create_string_buffer(prog)
    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fprog = Fprog(len(prog) // 8, ctypes.addressof(buf))
    if (libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or
            libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0):
        print("NOFILTER", ctypes.get_errno())
        sys.exit(0)
    import asyncio, cxxloop
    try:
        cxxloop.ProactorEventLoop()
    except OSError as exc:
        print("REFUSED", type(exc).__name__, exc)
    else:
        print("CONSTRUCTED")
    lp = cxxloop.new_event_loop()
    print("SELECTOR", lp.run_until_complete(asyncio.sleep(0, "ok")))
    lp.close()
""")


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.uname().machine not in
                    ("x86_64", "aarch64"), reason="the filter's syscall number is checked "
                    "on x86_64 and aarch64 only")
def test_unavailable_under_a_seccomp_filter():
    skip_unless_uring()  # Otherwise the refusal would not be the filter's.
    proc = subprocess.run([sys.executable, "-c", _SECCOMP_CHILD], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    if proc.stdout.startswith("NOFILTER"):
        pytest.skip(f"cannot install a seccomp filter here: {proc.stdout.strip()}")
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("REFUSED PermissionError"), proc.stdout
    assert "io_uring" in lines[0] and "seccomp" in lines[0], lines[0]
    assert lines[1] == "SELECTOR ok"


# --- the completion-based stream transports --------------------------------------------
#
# These run on every loop of the fixture (and stock asyncio), but aim at what is new on
# the proactor: a receive in flight when reading pauses, sends in flight when the
# transport closes or aborts, the shared receive-buffer ring, and fd numbers reused
# while the kernel may still hold operations on the old socket.

from conftest import run_briefly, run_until  # noqa: E402
from nethelpers import (  # noqa: E402
    HOST, EchoProtocol, RecordingProtocol, accept, drainer, listening_socket, payload,
    recv_exactly, recv_until_eof, reset_close, run,
)


def _connect(loop, ls, proto=None):
    pr = proto or RecordingProtocol(loop)
    tr, _ = run(loop, loop.create_connection(lambda: pr, *ls.getsockname()))
    peer = accept(ls)
    run_until(loop, lambda: tr.is_reading() or tr.is_closing(), what="reading")
    return tr, pr, peer


def test_pause_and_resume_with_a_receive_in_flight(loop):
    with listening_socket() as ls:
        tr, pr, peer = _connect(loop, ls)
        with peer:
            run_briefly(loop, 3)  # The receive is armed (in the kernel, on the proactor).
            tr.pause_reading()
            peer.sendall(b"abc")
            run_briefly(loop, 5)
            assert pr.nbytes == 0 and not tr.is_reading()
            tr.resume_reading()
            run_until(loop, lambda: pr.data == b"abc", what="data after resume")
            # A pause and resume in the same iteration loses and repeats nothing.
            tr.pause_reading()
            tr.resume_reading()
            peer.sendall(b"def")
            run_until(loop, lambda: pr.data == b"abcdef", what="data after flip")
            # Bytes delivered while paused stay queued behind the pause, with the EOF.
            tr.pause_reading()
            peer.sendall(b"ghi")
            peer.shutdown(socket.SHUT_WR)
            run_briefly(loop, 5)
            assert pr.data == b"abcdef" and not pr.eof
            tr.resume_reading()
            run_until(loop, lambda: pr.lost, what="connection_lost")
            assert pr.data == b"abcdefghi"
            assert pr.events[-2:] == ["eof", "lost"] and pr.exc is None


def test_pause_reading_from_data_received_stops_further_deliveries(loop):
    class Pauser(RecordingProtocol):
        def data_received(self, data):
            super().data_received(data)
            self.transport.pause_reading()

    with listening_socket() as ls:
        pr = Pauser(loop)
        tr, _, peer = _connect(loop, ls, pr)
        with peer:
            for i in range(3):
                peer.sendall(payload(4096, seed=i))
                run_until(loop, lambda: pr.nbytes >= 4096 * (i + 1) or
                          (pr.nbytes and not tr.is_reading()), what="one delivery")
                calls = pr.events.count("data")
                run_briefly(loop, 3)
                assert pr.events.count("data") == calls  # Nothing while paused.
                tr.resume_reading()
            run_until(loop, lambda: pr.nbytes == 3 * 4096, what="all data")
            assert bytes(pr.data) == b"".join(payload(4096, seed=i) for i in range(3))
            tr.close()
            run_until(loop, lambda: pr.lost)


def test_close_with_sends_in_flight_flushes_first(loop):
    with listening_socket() as ls:
        tr, pr, peer = _connect(loop, ls)
        with peer:
            data = payload(4 << 20)
            tr.write(data)
            tr.close()
            assert tr.is_closing()
            got = bytearray()
            run_until(loop, drainer(peer, got), timeout=20, what="EOF at the peer")
            assert bytes(got) == data
            run_until(loop, lambda: pr.lost)
            assert pr.exc is None


def test_abort_with_sends_in_flight_drops_them_and_closes_now(loop):
    with listening_socket() as ls:
        tr, pr, peer = _connect(loop, ls)
        with peer:
            data = payload(8 << 20)
            tr.write(data)
            run_briefly(loop, 2)  # Sends are in the kernel on the proactor.
            tr.abort()
            assert tr.get_write_buffer_size() == 0
            run_until(loop, lambda: pr.lost)
            assert pr.exc is None
            # The socket is closed: the peer reaches EOF without the loop running.
            got = recv_until_eof(peer, timeout=10)
            assert len(got) < len(data) and data.startswith(got)


def test_large_writes_to_a_slow_reader(loop):
    size = 12 << 20
    with listening_socket() as ls:
        pr = RecordingProtocol(loop)
        tr, _, peer = _connect(loop, ls, pr)
        with peer:
            data = payload(size, seed=3)
            for off in range(0, size, 256 * 1024):
                tr.write(data[off:off + 256 * 1024])
            assert pr.paused == 1
            got = bytearray()
            peer.setblocking(False)

            def slow():
                try:
                    got.extend(peer.recv(65536))
                except BlockingIOError:
                    pass
                return len(got) >= size

            run_until(loop, slow, timeout=30, what="everything at the peer")
            assert bytes(got) == data
            run_until(loop, lambda: pr.resumed == 1, what="resume_writing")
            assert tr.get_write_buffer_size() == 0
            tr.close()
            run_until(loop, lambda: pr.lost)


def test_peer_reset_is_connection_lost_with_the_error(loop):
    with listening_socket() as ls:
        tr, pr, peer = _connect(loop, ls)
        peer.sendall(b"before")
        run_until(loop, lambda: pr.data == b"before")
        reset_close(peer)
        run_until(loop, lambda: pr.lost, what="connection_lost")
        assert isinstance(pr.exc, ConnectionResetError) or (pr.exc is None and pr.eof)
        assert tr.is_closing()


def test_write_after_the_peer_reset_loses_the_connection(loop):
    with listening_socket() as ls:
        tr, pr, peer = _connect(loop, ls)
        tr.pause_reading()  # Only the write side can notice.
        reset_close(peer)
        run_briefly(loop, 2)
        for _ in range(50):
            if pr.lost:
                break
            tr.write(b"x" * 65536)
            run_briefly(loop, 2)
        run_until(loop, lambda: pr.lost, what="connection_lost")
        assert isinstance(pr.exc, (BrokenPipeError, ConnectionResetError))


def test_many_connections_echo_in_parallel(loop):
    n_conns, n_msgs = 60, 20

    async def main():
        server = await loop.create_server(EchoProtocol, HOST, 0)
        port = server.sockets[0].getsockname()[1]

        async def client(i):
            r, w = await asyncio.open_connection(HOST, port)
            for j in range(n_msgs):
                msg = payload(1000 + j, seed=i)
                w.write(msg)
                assert await r.readexactly(len(msg)) == msg
            w.close()
            await w.wait_closed()

        await asyncio.gather(*(client(i) for i in range(n_conns)))
        server.close()
        await server.wait_closed()

    run(loop, main(), timeout=60)


def test_fd_numbers_reused_after_close_carry_no_stale_operations(loop):
    with listening_socket() as ls:
        fds = set()
        for i in range(20):
            tr, pr, peer = _connect(loop, ls)
            with peer:
                fds.add(tr.get_extra_info("socket").fileno())
                # Leave a send and a receive in flight, then close the socket.
                tr.write(payload(4 << 20))
                run_briefly(loop, 1)
                if i % 2:
                    tr.abort()
                else:
                    tr.close()
                    peer.setblocking(False)
                    got = bytearray()
                    run_until(loop, drainer(peer, got), timeout=20)
                run_until(loop, lambda: pr.lost)
                assert pr.exc is None
            # The next connection (very likely on the same fd number) works in
            # both directions.
            tr2, pr2, peer2 = _connect(loop, ls)
            with peer2:
                peer2.sendall(b"ping%d" % i)
                run_until(loop, lambda: pr2.data == b"ping%d" % i)
                tr2.write(b"pong")
                assert recv_exactly(peer2, 4) == b"pong"
                tr2.close()
                run_until(loop, lambda: pr2.lost)
                assert pr2.exc is None
        assert len(fds) <= 3  # The numbers were indeed reused.


def test_buffered_protocol_small_buffer_gets_every_byte(loop):
    class Small(asyncio.BufferedProtocol):
        def __init__(self):
            self.buf = bytearray(100)
            self.got = bytearray()
            self.lost = False
            self.eof = False

        def connection_made(self, transport):
            self.transport = transport

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            assert 0 < nbytes <= 100
            self.got += self.buf[:nbytes]

        def eof_received(self):
            self.eof = True

        def connection_lost(self, exc):
            self.lost = True

    with listening_socket() as ls:
        pr = Small()
        tr, _, peer = _connect(loop, ls, pr)
        with peer:
            data = payload(300_000, seed=9)
            peer.sendall(data)
            peer.shutdown(socket.SHUT_WR)
            run_until(loop, lambda: pr.lost, timeout=20)
            assert bytes(pr.got) == data and pr.eof


def test_set_protocol_between_deliveries(loop):
    with listening_socket() as ls:
        first = RecordingProtocol(loop)
        tr, _, peer = _connect(loop, ls, first)
        second = RecordingProtocol(loop)
        with peer:
            peer.sendall(b"one")
            run_until(loop, lambda: first.data == b"one")
            second.connection_made(tr)
            tr.set_protocol(second)
            peer.sendall(b"two")
            run_until(loop, lambda: second.data == b"two")
            assert first.data == b"one"
            tr.close()
            run_until(loop, lambda: second.lost)


# --- servers: the multishot accept -----------------------------------------------------


def _refused(addr):
    with socket.socket() as s:
        try:
            s.connect(addr)
        except ConnectionRefusedError:
            return True
        return False


def test_server_close_closes_the_listening_socket_at_once(loop):
    server = run(loop, loop.create_server(asyncio.Protocol, HOST, 0))
    addr = server.sockets[0].getsockname()
    run_briefly(loop, 2)  # The accept is in the kernel.
    server.close()
    # Without running the loop: the kernel has let go of the socket.
    assert _refused(addr)
    run(loop, server.wait_closed())


def test_start_serving_later_accepts_then(loop):
    made = []

    class P(asyncio.Protocol):
        def connection_made(self, transport):
            made.append(transport)
            transport.close()

    server = run(loop, loop.create_server(P, HOST, 0, start_serving=False))
    addr = server.sockets[0].getsockname()
    assert not server.is_serving()
    run_briefly(loop, 3)
    assert _refused(addr)  # Not even listening yet.
    run(loop, server.start_serving())
    assert server.is_serving()
    with socket.create_connection(addr) as c:
        run_until(loop, lambda: made, what="connection_made")
        c.settimeout(5)
        assert c.recv(10) == b""
    server.close()
    run(loop, server.wait_closed())


def test_a_burst_of_connections_served_from_one_accept(loop):
    n = 100
    accepted = []

    class P(asyncio.Protocol):
        def connection_made(self, transport):
            accepted.append(transport)

    async def main():
        server = await loop.create_server(P, HOST, 0)
        addr = server.sockets[0].getsockname()
        pairs = await asyncio.gather(*(asyncio.open_connection(*addr) for _ in range(n)))
        while len(accepted) < n:
            await asyncio.sleep(0.01)
        for tr in accepted:
            tr.write(b"!")
        for r, w in pairs:
            assert await r.readexactly(1) == b"!"
            w.close()
        for tr in accepted:
            tr.close()
        server.close()
        await server.wait_closed()
        for r, w in pairs:
            await w.wait_closed()

    run(loop, main(), timeout=60)
    assert len(accepted) == n


def test_closing_the_server_with_connections_not_yet_delivered_leaks_nothing(loop):
    protos = []

    def factory():
        protos.append(RecordingProtocol(loop))
        return protos[-1]

    server = run(loop, loop.create_server(factory, HOST, 0))
    addr = server.sockets[0].getsockname()
    run_briefly(loop, 2)
    clients = [socket.create_connection(addr) for _ in range(10)]
    try:
        # Whatever was accepted and not yet handed to the server is closed with it
        # (the fixture checks that no fd is left open).
        server.close()
        run_briefly(loop, 3)
        for pr in protos:
            if pr.transport is not None:
                pr.transport.close()
        run_until(loop, lambda: all(pr.lost or pr.transport is None for pr in protos))
        run(loop, server.wait_closed())
    finally:
        for c in clients:
            c.close()
    run_briefly(loop, 3)
