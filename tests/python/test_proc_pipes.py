"""connect_read_pipe / connect_write_pipe on pipes, socketpairs and PTYs."""

import asyncio
import errno
import gc
import os
import socket
import threading
import tty
import warnings

import pytest

from conftest import run_briefly, run_until

pytestmark = pytest.mark.cxxloop_pending("process")


class Proto(asyncio.Protocol):
    """Records every protocol call as a tuple in self.events."""

    def __init__(self, loop):
        self.events = []
        self.transport = None
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append(("made",))

    def data_received(self, data):
        self.events.append(("data", bytes(data)))

    def eof_received(self):
        self.events.append(("eof",))

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self):
        self.events.append(("pause",))

    def resume_writing(self):
        self.events.append(("resume",))

    def data(self):
        return b"".join(e[1] for e in self.events if e[0] == "data")

    def kinds(self):
        """Event names, with consecutive data events merged."""
        out = []
        for e in self.events:
            if e[0] == "data" and out and out[-1] == "data":
                continue
            out.append(e[0])
        return out



@pytest.fixture
def fds():
    """Raw fds the test still owns; closed at the end (never a number twice)."""
    opened = []
    yield opened
    for fd in opened:
        try:
            os.close(fd)
        except OSError:
            pass


def own(fds, fd, mode):
    """Wrap fd in an unbuffered file that now owns it (the transport closes it)."""
    fds.remove(fd)
    return open(fd, mode, buffering=0)


def close_fd(fds, fd):
    fds.remove(fd)
    os.close(fd)


def make_pipe(fds):
    r, w = os.pipe()
    fds += [r, w]
    return r, w


def connect_read(loop, fileobj):
    proto = None

    def factory():
        nonlocal proto
        proto = Proto(loop)
        return proto

    tr, pr = loop.run_until_complete(loop.connect_read_pipe(factory, fileobj))
    assert pr is proto
    return tr, pr


def connect_write(loop, fileobj):
    tr, pr = loop.run_until_complete(loop.connect_write_pipe(lambda: Proto(loop), fileobj))
    return tr, pr


def drain_fd(fd, n=1 << 20):
    """Read what is available from a (blocking) fd without blocking."""
    os.set_blocking(fd, False)
    out = []
    while True:
        try:
            chunk = os.read(fd, n)
        except BlockingIOError:
            break
        if not chunk:
            break
        out.append(chunk)
    return b"".join(out)


# ---- read pipe transport ------------------------------------------------------


def test_read_pipe_basic(loop, fds):
    r, w = make_pipe(fds)
    rfile = own(fds, r, "rb")
    tr, pr = connect_read(loop, rfile)
    assert isinstance(tr, asyncio.ReadTransport)
    # connection_made has run by the time connect_read_pipe returns.
    assert pr.events == [("made",)]
    assert pr.transport is tr
    assert tr.get_extra_info("pipe") is rfile
    assert tr.get_extra_info("nope", "dflt") == "dflt"
    assert tr.get_protocol() is pr
    assert tr.is_reading() and not tr.is_closing()
    assert not os.get_blocking(r)  # the transport made it non-blocking

    os.write(w, b"hello ")
    run_until(loop, lambda: pr.data() == b"hello ")
    os.write(w, b"world")
    run_until(loop, lambda: pr.data() == b"hello world")
    close_fd(fds, w)
    loop.run_until_complete(pr.lost)
    # EOF: eof_received, then connection_lost(None), then the pipe is closed.
    assert pr.kinds() == ["made", "data", "eof", "lost"]
    assert pr.events[-1] == ("lost", None)
    assert tr.is_closing()
    assert not tr.is_reading()
    assert rfile.closed


def test_read_pipe_data_written_before_connect(loop, fds):
    r, w = make_pipe(fds)
    os.write(w, b"early")
    close_fd(fds, w)
    rfile = own(fds, r, "rb")
    tr, pr = connect_read(loop, rfile)
    loop.run_until_complete(pr.lost)
    # Reading starts only once connection_made has been called.
    assert pr.events == [("made",), ("data", b"early"), ("eof",), ("lost", None)]


def test_read_pipe_eof_received_return_value_ignored(loop, fds):
    # Unlike sockets, a pipe has no half-close: returning True from
    # eof_received does not keep the transport open.
    class KeepOpen(Proto):
        def eof_received(self):
            super().eof_received()
            return True

    r, w = make_pipe(fds)
    rfile = own(fds, r, "rb")
    tr, pr = loop.run_until_complete(loop.connect_read_pipe(lambda: KeepOpen(loop), rfile))
    close_fd(fds, w)
    loop.run_until_complete(pr.lost)
    assert pr.kinds() == ["made", "eof", "lost"]
    assert rfile.closed


def test_read_pipe_pause_resume(loop, fds):
    r, w = make_pipe(fds)
    rfile = own(fds, r, "rb")
    tr, pr = connect_read(loop, rfile)
    tr.pause_reading()
    assert not tr.is_reading()
    tr.pause_reading()  # no-op
    os.write(w, b"held")
    run_briefly(loop, 3)
    assert pr.data() == b""
    tr.resume_reading()
    assert tr.is_reading()
    tr.resume_reading()  # no-op
    run_until(loop, lambda: pr.data() == b"held")
    tr.close()
    loop.run_until_complete(pr.lost)


def test_read_pipe_close(loop, fds):
    r, w = make_pipe(fds)
    rfile = own(fds, r, "rb")
    tr, pr = connect_read(loop, rfile)
    os.write(w, b"unread")
    tr.close()
    assert tr.is_closing()
    assert not tr.is_reading()
    # connection_lost comes from the loop, not from close() itself.
    assert pr.events == [("made",)]
    assert not rfile.closed
    loop.run_until_complete(pr.lost)
    # No eof_received and no data after close().
    assert pr.events == [("made",), ("lost", None)]
    assert rfile.closed
    tr.close()  # idempotent
    run_briefly(loop)
    assert pr.events == [("made",), ("lost", None)]


def test_read_pipe_close_after_eof_is_harmless(loop, fds):
    r, w = make_pipe(fds)
    tr, pr = connect_read(loop, own(fds, r, "rb"))
    close_fd(fds, w)
    loop.run_until_complete(pr.lost)
    tr.close()
    tr.pause_reading()
    tr.resume_reading()
    run_briefly(loop)
    assert pr.kinds() == ["made", "eof", "lost"]


def test_read_pipe_set_protocol(loop, fds):
    r, w = make_pipe(fds)
    tr, pr = connect_read(loop, own(fds, r, "rb"))
    other = Proto(loop)
    tr.set_protocol(other)
    assert tr.get_protocol() is other
    os.write(w, b"to other")
    close_fd(fds, w)
    loop.run_until_complete(other.lost)
    assert other.events == [("data", b"to other"), ("eof",), ("lost", None)]
    assert pr.events == [("made",)]


def test_read_pipe_large_transfer(loop, fds):
    r, w = make_pipe(fds)
    tr, pr = connect_read(loop, own(fds, r, "rb"))
    wfile_tr, wpr = connect_write(loop, own(fds, w, "wb"))
    payload = os.urandom(3 * 1024 * 1024 + 17)
    wfile_tr.write(payload)
    wfile_tr.write_eof()
    loop.run_until_complete(asyncio.wait_for(asyncio.gather(pr.lost, wpr.lost), 10))
    assert pr.data() == payload
    assert pr.kinds() == ["made", "data", "eof", "lost"]
    assert wpr.events[-1] == ("lost", None)


class Chunks(Proto):
    """Also keeps every data_received argument itself (not a copy)."""

    def __init__(self, loop):
        super().__init__(loop)
        self.chunks = []

    def data_received(self, data):
        self.chunks.append(data)
        super().data_received(data)


def connect_chunks(loop, fileobj):
    return loop.run_until_complete(loop.connect_read_pipe(lambda: Chunks(loop), fileobj))


def test_read_pipe_chunks_are_exact_bytes_and_stay_intact(loop, fds):
    # Each read hands data_received a bytes object of exactly what was read, whatever
    # the size (a full pipe, a partial one, a few bytes, after big reads and before),
    # and a chunk the protocol keeps is never reused or changed by later reads.
    r, w = make_pipe(fds)
    tr, pr = connect_chunks(loop, own(fds, r, "rb"))
    sizes = [65536, 65536, 20000, 5, 65536, 40000, 1, 16384, 16383, 65536, 3]
    pieces = [os.urandom(n) for n in sizes]
    for i, piece in enumerate(pieces):
        os.write(w, piece)  # At most the capacity: never blocks, read as one.
        run_until(loop, lambda: len(pr.chunks) == i + 1, what=f"chunk {i}")
        assert type(pr.chunks[i]) is bytes
        assert len(pr.chunks[i]) == len(piece)
    assert pr.chunks == pieces  # Compared at the end: nothing was overwritten.
    close_fd(fds, w)
    loop.run_until_complete(pr.lost)
    assert pr.kinds() == ["made", "data", "eof", "lost"]


def _set_pipe_size(fd, size):
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_SETPIPE_SZ"):
        pytest.skip("no F_SETPIPE_SZ here")
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except OSError as exc:  # EPERM above /proc/sys/fs/pipe-max-size or the user's quota
        pytest.skip(f"F_SETPIPE_SZ({size}): {exc}")
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def test_read_pipe_enlarged_pipe_reads_at_most_max_size(loop, fds):
    # A pipe holding more than max_size (256 KiB) is read max_size at a time.
    r, w = make_pipe(fds)
    cap = _set_pipe_size(w, 1024 * 1024)
    if cap < 512 * 1024:
        pytest.skip("cannot make a pipe of 512 KiB or more")
    payload = os.urandom(cap)
    assert os.write(w, payload) == cap
    close_fd(fds, w)
    tr, pr = connect_chunks(loop, own(fds, r, "rb"))
    loop.run_until_complete(pr.lost)
    assert pr.data() == payload
    assert [len(c) for c in pr.chunks] == [256 * 1024] * (cap // (256 * 1024))
    assert pr.kinds() == ["made", "data", "eof", "lost"]


def test_read_pipe_capacity_changed_after_connect(loop, fds):
    # The writer enlarges the pipe once the transport reads it, then shrinks it:
    # every byte still arrives, in order, in chunks of at most max_size.
    r, w = make_pipe(fds)
    tr, pr = connect_chunks(loop, own(fds, r, "rb"))
    first = os.urandom(65536)
    os.write(w, first)
    run_until(loop, lambda: pr.data() == first)
    cap = _set_pipe_size(w, 1024 * 1024)
    payload = os.urandom(cap)
    os.write(w, payload)
    run_until(loop, lambda: len(pr.data()) == len(first) + cap)
    _set_pipe_size(w, 4096)
    last = os.urandom(4096)
    os.write(w, last)
    close_fd(fds, w)
    loop.run_until_complete(pr.lost)
    assert pr.data() == first + payload + last
    assert all(type(c) is bytes and 0 < len(c) <= 256 * 1024 for c in pr.chunks)


def test_pipe_transports_leave_capacity_alone(loop, fds):
    # Only a child's stdio pipes are grown (test_proc_subprocess); a pipe the program
    # connects keeps the capacity it has.
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_GETPIPE_SZ"):
        pytest.skip("no F_GETPIPE_SZ here")
    r, w = make_pipe(fds)
    before = fcntl.fcntl(r, fcntl.F_GETPIPE_SZ)
    rtr, rpr = connect_read(loop, own(fds, r, "rb"))
    wtr, wpr = connect_write(loop, own(fds, w, "wb"))
    wtr.write(b"x" * 100000)
    run_until(loop, lambda: len(rpr.data()) == 100000)
    assert fcntl.fcntl(rtr.get_extra_info("pipe").fileno(), fcntl.F_GETPIPE_SZ) == before
    wtr.close()
    loop.run_until_complete(asyncio.gather(rpr.lost, wpr.lost))


# ---- write pipe transport -----------------------------------------------------


def test_write_pipe_basic(loop, fds):
    r, w = make_pipe(fds)
    wfile = own(fds, w, "wb")
    tr, pr = connect_write(loop, wfile)
    assert isinstance(tr, asyncio.WriteTransport)
    assert pr.events == [("made",)]
    assert tr.get_extra_info("pipe") is wfile
    assert tr.can_write_eof() is True
    assert tr.get_write_buffer_size() == 0
    assert not os.get_blocking(w)

    # PITFALLS 6: the write is tried at once, without running the loop.
    tr.write(b"abc")
    tr.write(bytearray(b"def"))
    tr.write(memoryview(b"ghi"))
    tr.writelines([b"j", b"k"])
    tr.write(b"")
    assert os.read(r, 100) == b"abcdefghijk"
    assert tr.get_write_buffer_size() == 0

    tr.write_eof()
    assert tr.is_closing()
    tr.write_eof()  # idempotent
    assert pr.events == [("made",)]
    loop.run_until_complete(pr.lost)
    assert pr.events == [("made",), ("lost", None)]
    assert wfile.closed
    assert os.read(r, 100) == b""  # the reader sees EOF


def test_write_pipe_close_equals_write_eof(loop, fds):
    r, w = make_pipe(fds)
    wfile = own(fds, w, "wb")
    tr, pr = connect_write(loop, wfile)
    tr.write(b"last")
    tr.close()
    assert tr.is_closing()
    tr.close()
    loop.run_until_complete(pr.lost)
    assert pr.events == [("made",), ("lost", None)]
    assert wfile.closed
    assert os.read(r, 100) == b"last"
    assert os.read(r, 100) == b""


def test_write_pipe_write_after_close_is_dropped(loop, fds):
    r, w = make_pipe(fds)
    tr, pr = connect_write(loop, own(fds, w, "wb"))
    tr.close()
    tr.write(b"dropped")  # no exception: counted and dropped
    loop.run_until_complete(pr.lost)
    assert os.read(r, 100) == b""


def test_write_pipe_flow_control(loop, fds):
    r, w = make_pipe(fds)
    tr, pr = connect_write(loop, own(fds, w, "wb"))
    tr.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
    assert tr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)
    with pytest.raises(ValueError):
        tr.set_write_buffer_limits(high=10, low=20)

    payload = os.urandom(1024 * 1024)
    tr.write(payload)
    # The pipe took what fits; the rest is buffered and the protocol paused.
    assert 0 < tr.get_write_buffer_size() < len(payload)
    assert pr.events == [("made",), ("pause",)]
    tr.write(b"tail")  # still accepted while paused
    assert pr.events == [("made",), ("pause",)]

    got = []
    loop.add_reader(r, lambda: got.append(os.read(r, 1 << 20)))
    try:
        run_until(loop, lambda: sum(map(len, got)) == len(payload) + 4)
    finally:
        loop.remove_reader(r)
    assert b"".join(got) == payload + b"tail"
    assert tr.get_write_buffer_size() == 0
    assert pr.events == [("made",), ("pause",), ("resume",)]
    tr.close()
    loop.run_until_complete(pr.lost)


def test_write_pipe_write_eof_flushes_buffer_first(loop, fds):
    r, w = make_pipe(fds)
    wfile = own(fds, w, "wb")
    tr, pr = connect_write(loop, wfile)
    payload = os.urandom(512 * 1024)
    tr.write(payload)
    assert tr.get_write_buffer_size() > 0
    tr.write_eof()
    assert tr.is_closing()
    run_briefly(loop, 3)
    # connection_lost waits until the buffer is flushed.
    assert ("lost", None) not in pr.events
    assert not wfile.closed

    got = []
    loop.add_reader(r, lambda: got.append(os.read(r, 1 << 20)))
    try:
        loop.run_until_complete(asyncio.wait_for(pr.lost, 10))
        run_until(loop, lambda: got and got[-1] == b"")
    finally:
        loop.remove_reader(r)
    assert b"".join(got) == payload
    assert pr.events[-1] == ("lost", None)
    assert wfile.closed


def test_write_pipe_abort_drops_buffer(loop, fds):
    r, w = make_pipe(fds)
    wfile = own(fds, w, "wb")
    tr, pr = connect_write(loop, wfile)
    tr.write(os.urandom(512 * 1024))
    assert tr.get_write_buffer_size() > 0
    tr.abort()
    assert tr.is_closing()
    assert tr.get_write_buffer_size() == 0
    loop.run_until_complete(pr.lost)
    assert pr.events[-1] == ("lost", None)
    assert wfile.closed
    got = drain_fd(r)
    assert 0 < len(got) < 512 * 1024  # only what the pipe had taken


def test_write_pipe_peer_closed_idle(loop, fds):
    # The write end is watched for readability to learn that the reader went
    # away: connection_lost(None) when nothing was buffered.
    r, w = make_pipe(fds)
    wfile = own(fds, w, "wb")
    tr, pr = connect_write(loop, wfile)
    close_fd(fds, r)
    loop.run_until_complete(asyncio.wait_for(pr.lost, 5))
    assert pr.events == [("made",), ("lost", None)]
    assert tr.is_closing()
    assert wfile.closed
    tr.write(b"ignored")  # dropped silently


def test_write_pipe_peer_closed_with_buffer(loop, fds):
    r, w = make_pipe(fds)
    wfile = own(fds, w, "wb")
    tr, pr = connect_write(loop, wfile)
    tr.write(os.urandom(512 * 1024))
    assert tr.get_write_buffer_size() > 0
    close_fd(fds, r)
    exc = loop.run_until_complete(asyncio.wait_for(pr.lost, 5))
    # Buffered data could not be delivered: BrokenPipeError, no handler call.
    assert isinstance(exc, BrokenPipeError)
    assert pr.kinds() == ["made", "pause", "lost"]
    assert tr.get_write_buffer_size() == 0
    assert wfile.closed


def test_write_pipe_set_protocol(loop, fds):
    r, w = make_pipe(fds)
    tr, pr = connect_write(loop, own(fds, w, "wb"))
    other = Proto(loop)
    tr.set_protocol(other)
    assert tr.get_protocol() is other
    tr.close()
    loop.run_until_complete(other.lost)
    assert other.events == [("lost", None)]
    assert pr.events == [("made",)]


# ---- sockets ------------------------------------------------------------------------


def test_read_pipe_on_socket(loop):
    a, b = socket.socketpair()
    try:
        tr, pr = connect_read(loop, a)
        assert tr.get_extra_info("pipe") is a
        b.sendall(b"over a socket")
        run_until(loop, lambda: pr.data() == b"over a socket")
        b.shutdown(socket.SHUT_WR)
        loop.run_until_complete(pr.lost)
        assert pr.kinds() == ["made", "data", "eof", "lost"]
        assert a.fileno() == -1  # the transport closed the socket
    finally:
        a.close()
        b.close()


def test_write_pipe_on_socket(loop):
    a, b = socket.socketpair()
    try:
        tr, pr = connect_write(loop, a)
        assert tr.get_extra_info("pipe") is a
        tr.write(b"to peer")
        assert b.recv(100) == b"to peer"
        b.close()  # the peer goes away: noticed through readability
        loop.run_until_complete(asyncio.wait_for(pr.lost, 5))
        assert pr.events == [("made",), ("lost", None)]
        assert a.fileno() == -1
    finally:
        a.close()
        b.close()


def test_write_pipe_on_socket_write_eof(loop):
    a, b = socket.socketpair()
    try:
        tr, pr = connect_write(loop, a)
        tr.write(b"bye")
        tr.write_eof()
        loop.run_until_complete(pr.lost)
        assert a.fileno() == -1
        assert b.recv(100) == b"bye"
        assert b.recv(100) == b""
    finally:
        a.close()
        b.close()


# ---- PTYs (character devices) -------------------------------------------------------


def test_read_pipe_on_pty(loop, fds):
    master, slave = os.openpty()
    fds += [master, slave]
    tty.setraw(slave)
    mfile = own(fds, master, "rb")
    tr, pr = connect_read(loop, mfile)
    assert tr.get_extra_info("pipe") is mfile
    os.write(slave, b"from the slave")
    run_until(loop, lambda: pr.data() == b"from the slave")
    close_fd(fds, slave)
    exc = loop.run_until_complete(asyncio.wait_for(pr.lost, 5))
    # Linux reports a hung-up PTY master as EIO: asyncio treats that as the
    # end (no exception-handler call) but calls connection_lost(OSError(EIO))
    # and never eof_received.
    assert isinstance(exc, OSError) and exc.errno == errno.EIO
    assert pr.kinds() == ["made", "data", "lost"]
    assert mfile.closed


def test_read_pipe_on_pty_bulk(loop, fds):
    # More than a PTY's buffer holds, written by a thread that blocks whenever it is
    # full: a character device is read through the same path, every byte in order.
    master, slave = os.openpty()
    fds += [master, slave]
    tty.setraw(slave)
    payload = os.urandom(300 * 1024)
    tr, pr = connect_read(loop, own(fds, master, "rb"))

    def writer():
        view = memoryview(payload)
        while view:
            view = view[os.write(slave, view[:16384]):]

    th = threading.Thread(target=writer)
    th.start()
    try:
        run_until(loop, lambda: len(pr.data()) >= len(payload), timeout=20)
    finally:
        th.join()
    assert pr.data() == payload
    assert all(type(e[1]) is bytes for e in pr.events if e[0] == "data")
    tr.close()
    loop.run_until_complete(pr.lost)


def test_write_pipe_on_pty(loop, fds):
    master, slave = os.openpty()
    fds += [master, slave]
    tty.setraw(slave)
    mfile = own(fds, master, "wb")
    tr, pr = connect_write(loop, mfile)
    assert tr.get_extra_info("pipe") is mfile
    tr.write(b"to the slave")
    got = []
    loop.add_reader(slave, lambda: got.append(os.read(slave, 100)))
    try:
        run_until(loop, lambda: b"".join(got) == b"to the slave")
    finally:
        loop.remove_reader(slave)
    tr.close()
    loop.run_until_complete(pr.lost)
    assert pr.events == [("made",), ("lost", None)]
    assert mfile.closed


# ---- what is refused ------------------------------------------------------------------


def test_regular_file_refused(loop, tmp_path):
    path = tmp_path / "regular"
    path.write_bytes(b"data")
    made = []

    def factory():
        made.append(1)
        return Proto(loop)

    with open(path, "rb") as f:
        with pytest.raises(ValueError, match=r"^Pipe transport is for pipes/sockets only\.$"):
            loop.run_until_complete(loop.connect_read_pipe(factory, f))
        assert not f.closed  # the caller's file is left alone
    with open(path, "wb") as f:
        with pytest.raises(ValueError, match=r"^Pipe transport is only for pipes, "
                                             r"sockets and character devices$"):
            loop.run_until_complete(loop.connect_write_pipe(factory, f))
        assert not f.closed
    assert made == [1, 1]  # the protocol factory was called before the check
    run_briefly(loop)


# ---- loop.close() leaves pipe transports alone (PITFALLS 14) -------------------------


def test_loop_close_does_not_close_pipe_transports(loop, fds):
    r1, w1 = make_pipe(fds)
    r2, w2 = make_pipe(fds)
    rfile = own(fds, r1, "rb")
    wfile = own(fds, w2, "wb")
    rtr, rpr = connect_read(loop, rfile)
    wtr, wpr = connect_write(loop, wfile)
    loop.close()
    # Still open: no connection_lost, no closing, the files are open.
    assert rpr.events == [("made",)] and wpr.events == [("made",)]
    assert not rtr.is_closing() and not wtr.is_closing()
    assert not rfile.closed and not wfile.closed
    # Dropping them warns as unclosed, and the warning closes the pipes.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        rpr.transport = wpr.transport = None
        del rtr, wtr
        gc.collect()
    msgs = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert len(msgs) == 2, msgs
    assert all(m.startswith("unclosed transport") for m in msgs), msgs
    assert rfile.closed and wfile.closed


# ---- details of asyncio's pipe transports (pinned for the C++ data path) ---------------


def test_read_pipe_data_received_error_keeps_reading(loop, fds, expect_exception_handler_calls):
    # An exception from data_received reaches the loop's exception handler and the
    # transport goes on reading (unlike a socket transport, which closes).
    class Failing(Proto):
        def data_received(self, data):
            super().data_received(data)
            if len(self.events) == 2:
                raise ZeroDivisionError("first chunk")

    r, w = make_pipe(fds)
    tr, pr = loop.run_until_complete(
        loop.connect_read_pipe(lambda: Failing(loop), own(fds, r, "rb")))
    os.write(w, b"one")
    run_until(loop, lambda: expect_exception_handler_calls.calls)
    calls = expect_exception_handler_calls.take()
    assert len(calls) == 1 and isinstance(calls[0]["exception"], ZeroDivisionError)
    assert not tr.is_closing()
    os.write(w, b"two")
    run_until(loop, lambda: pr.data() == b"onetwo")
    close_fd(fds, w)
    loop.run_until_complete(pr.lost)
    assert pr.kinds() == ["made", "data", "eof", "lost"]
    assert pr.events[-1] == ("lost", None)


def test_read_pipe_eof_received_error_still_loses_connection(loop, fds, expect_exception_handler_calls):
    class Failing(Proto):
        def eof_received(self):
            super().eof_received()
            raise ZeroDivisionError("at eof")

    r, w = make_pipe(fds)
    rfile = own(fds, r, "rb")
    tr, pr = loop.run_until_complete(loop.connect_read_pipe(lambda: Failing(loop), rfile))
    close_fd(fds, w)
    loop.run_until_complete(pr.lost)
    assert pr.kinds() == ["made", "eof", "lost"]
    assert pr.events[-1] == ("lost", None)
    calls = expect_exception_handler_calls.take()
    assert [type(c["exception"]) for c in calls] == [ZeroDivisionError]
    assert rfile.closed


def test_read_pipe_paused_before_connection_made(loop, fds):
    # pause_reading() between the transport's creation and connection_made: reading
    # does not start until resume_reading().
    r, w = make_pipe(fds)
    os.write(w, b"waiting")

    class PauseAtOnce(Proto):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    tr, pr = loop.run_until_complete(
        loop.connect_read_pipe(lambda: PauseAtOnce(loop), own(fds, r, "rb")))
    run_briefly(loop, 3)
    assert pr.events == [("made",)]
    tr.resume_reading()
    run_until(loop, lambda: pr.data() == b"waiting")
    tr.close()
    loop.run_until_complete(pr.lost)


def test_pipe_repr(loop, fds):
    r, w = make_pipe(fds)
    rtr, rpr = connect_read(loop, own(fds, r, "rb"))
    wtr, wpr = connect_write(loop, own(fds, w, "wb"))
    assert f"fd={r} polling" in repr(rtr)
    assert f"fd={w} idle bufsize=0" in repr(wtr)
    wtr.write(os.urandom(256 * 1024))
    assert f"fd={w} polling bufsize=" in repr(wtr)
    wtr.abort()
    assert repr(wtr).endswith(f" closing fd={w} idle bufsize=0>")
    loop.run_until_complete(wpr.lost)
    assert repr(wtr).endswith(f" closed fd={w} closed>")
    rtr.pause_reading()
    assert f"fd={r} idle" in repr(rtr)
    rtr.close()
    assert repr(rtr).endswith(f" closing fd={r} idle>")
    loop.run_until_complete(rpr.lost)
    assert repr(rtr).endswith(f" closed fd={r} closed>")


def test_pipe_repr_after_loop_close(loop, fds):
    # asyncio's repr reads "open" once the loop is closed (CPython's uvloop#314 test).
    r, w = make_pipe(fds)
    rfile, wfile = own(fds, r, "rb"), own(fds, w, "wb")
    rtr, _ = connect_read(loop, rfile)
    wtr, _ = connect_write(loop, wfile)
    loop.close()
    assert repr(rtr).endswith(f" fd={r} open>")
    assert repr(wtr).endswith(f" fd={w} open>")
    rfile.close()
    wfile.close()
    rtr._pipe = wtr._pipe = None  # As CPython's test does: no unclosed warning.


def test_write_pipe_resumes_only_when_empty(loop, fds):
    # asyncio's pipe transport resumes the protocol once its buffer is empty, not at
    # the low water mark.
    r, w = make_pipe(fds)
    sizes = []

    class Recording(Proto):
        def resume_writing(self):
            super().resume_writing()
            sizes.append(self.transport.get_write_buffer_size())

    tr, pr = loop.run_until_complete(
        loop.connect_write_pipe(lambda: Recording(loop), own(fds, w, "wb")))
    tr.set_write_buffer_limits(high=32 * 1024, low=16 * 1024)
    tr.write(os.urandom(1024 * 1024))
    assert pr.kinds() == ["made", "pause"]
    loop.add_reader(r, os.read, r, 8 * 1024)  # A slow reader: small reads.
    try:
        run_until(loop, lambda: sizes)
    finally:
        loop.remove_reader(r)
    assert sizes == [0]
    tr.close()
    loop.run_until_complete(pr.lost)


def test_write_pipe_writes_after_close_warn_after_five(loop, fds, caplog):
    r, w = make_pipe(fds)
    tr, pr = connect_write(loop, own(fds, w, "wb"))
    tr.close()
    with caplog.at_level("WARNING", logger="asyncio"):
        for _ in range(5):
            tr.write(b"x")
        assert not caplog.records
        tr.write(b"x")
        tr.write(b"")  # Empty writes are not counted.
    assert [rec.getMessage() for rec in caplog.records] == [
        "pipe closed by peer or os.write(pipe, data) raised exception."]
    loop.run_until_complete(pr.lost)
    assert os.read(r, 100) == b""


def test_write_pipe_broken_pipe_on_first_write(loop, fds):
    # The reader is gone before the watch noticed: the immediate write fails with
    # EPIPE, which ends the transport with BrokenPipeError and no handler call.
    r, w = make_pipe(fds)
    wfile = own(fds, w, "wb")
    tr, pr = connect_write(loop, wfile)
    close_fd(fds, r)
    tr.write(b"nobody reads")
    assert tr.is_closing()
    exc = loop.run_until_complete(asyncio.wait_for(pr.lost, 5))
    assert isinstance(exc, BrokenPipeError)
    assert pr.events == [("made",), ("lost", exc)]
    assert wfile.closed
    tr.write(b"dropped")


def test_write_pipe_on_socket_closed_when_peer_sends(loop):
    # The write end of a socket is watched for readability: data from the peer ends
    # the transport as a hang-up does.
    a, b = socket.socketpair()
    try:
        tr, pr = connect_write(loop, a)
        b.sendall(b"unexpected")
        loop.run_until_complete(asyncio.wait_for(pr.lost, 5))
        assert pr.events == [("made",), ("lost", None)]
        assert a.fileno() == -1
    finally:
        a.close()
        b.close()


def test_write_pipe_on_pty_not_watched(loop, fds):
    # A character device is not watched for readability: input arriving on the PTY
    # master does not close a write transport on it.
    master, slave = os.openpty()
    fds += [master, slave]
    tty.setraw(slave)
    tr, pr = connect_write(loop, own(fds, master, "wb"))
    os.write(slave, b"typed")
    run_briefly(loop, 3)
    assert not tr.is_closing()
    assert pr.events == [("made",)]
    tr.close()
    loop.run_until_complete(pr.lost)


def test_pipe_transports_collected_after_close(loop, fds):
    import weakref

    r, w = make_pipe(fds)
    rtr, rpr = connect_read(loop, own(fds, r, "rb"))
    wtr, wpr = connect_write(loop, own(fds, w, "wb"))
    refs = [weakref.ref(rtr), weakref.ref(wtr)]
    wtr.close()
    rtr.close()
    loop.run_until_complete(asyncio.gather(rpr.lost, wpr.lost))
    rpr.transport = wpr.transport = None
    del rtr, wtr
    gc.collect()
    assert [ref() for ref in refs] == [None, None]


def test_write_pipe_kept_alive_while_watched(loop, fds):
    # As with asyncio's reader handle, the loop holds a watched write pipe transport:
    # dropping every reference does not lose it, and the reader's close is noticed.
    r, w = make_pipe(fds)
    wfile = own(fds, w, "wb")
    tr, pr = connect_write(loop, wfile)
    pr.transport = None
    del tr
    gc.collect()
    assert not wfile.closed
    close_fd(fds, r)
    loop.run_until_complete(asyncio.wait_for(pr.lost, 5))
    assert wfile.closed


def test_read_pipe_data_received_error_context(loop, fds, expect_exception_handler_calls):
    class Failing(Proto):
        def data_received(self, data):
            raise ZeroDivisionError("chunk")

    r, w = make_pipe(fds)
    tr, pr = loop.run_until_complete(
        loop.connect_read_pipe(lambda: Failing(loop), own(fds, r, "rb")))
    os.write(w, b"x")
    run_until(loop, lambda: expect_exception_handler_calls.calls)
    (ctx,) = expect_exception_handler_calls.take()
    assert ctx["message"].startswith("Exception in callback ")
    assert isinstance(ctx["exception"], ZeroDivisionError)
    tr.close()
    loop.run_until_complete(pr.lost)
