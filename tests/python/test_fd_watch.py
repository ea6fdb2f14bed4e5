"""add_reader / remove_reader / add_writer / remove_writer on raw fds."""

import asyncio
import os
import socket

import pytest

from conftest import run_briefly, run_until


@pytest.fixture
def pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass



def test_reader_called_when_readable(loop, pipe):
    r, w = pipe
    got = []

    def on_read(tag):
        got.append((tag, os.read(r, 100)))

    loop.add_reader(r, on_read, "tag")
    run_briefly(loop, 3)
    assert got == []
    os.write(w, b"hello")
    run_until(loop, lambda: got)
    assert got == [("tag", b"hello")]
    assert loop.remove_reader(r) is True


def test_writer_called_when_writable(loop, pipe):
    r, w = pipe
    got = []
    loop.add_writer(w, got.append, "w")
    run_until(loop, lambda: got)
    assert loop.remove_writer(w) is True
    n = len(got)
    run_briefly(loop, 3)
    assert len(got) == n


def test_remove_returns_true_then_false(loop, pipe):
    # PITFALLS 8: True/False, never None.
    r, w = pipe
    assert loop.remove_reader(r) is False
    assert loop.remove_writer(w) is False
    loop.add_reader(r, lambda: None)
    loop.add_writer(w, lambda: None)
    assert loop.remove_writer(r) is False   # r has a reader, not a writer
    assert loop.remove_reader(w) is False   # w has a writer, not a reader
    assert loop.remove_reader(r) is True
    assert loop.remove_reader(r) is False
    assert loop.remove_writer(w) is True
    assert loop.remove_writer(w) is False


def test_remove_on_closed_loop_returns_false(loop, pipe):
    r, w = pipe
    loop.add_reader(r, lambda: None)
    loop.close()
    assert loop.remove_reader(r) is False
    assert loop.remove_writer(w) is False


def test_add_on_closed_loop_raises(loop, pipe):
    r, w = pipe
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.add_reader(r, lambda: None)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.add_writer(w, lambda: None)


class BadFileno:
    def fileno(self):
        return "not an int"


class NegativeFileno:
    def fileno(self):
        return -1


@pytest.mark.parametrize("bad", ["abc", -1, 1.5, None, object(), BadFileno(), NegativeFileno()],
                         ids=["str", "negative", "float", "None", "object", "bad-fileno", "negative-fileno"])
def test_invalid_fds_raise_value_error(loop, bad):
    with pytest.raises(ValueError):
        loop.add_reader(bad, lambda: None)
    with pytest.raises(ValueError):
        loop.add_writer(bad, lambda: None)
    with pytest.raises(ValueError):
        loop.remove_reader(bad)
    with pytest.raises(ValueError):
        loop.remove_writer(bad)


def test_file_objects_with_fileno_accepted(loop):
    a, b = socket.socketpair()
    with a, b:
        got = []
        loop.add_reader(a, lambda: got.append(a.recv(10)))
        b.send(b"x")
        run_until(loop, lambda: got)
        assert got == [b"x"]
        # Removing by fd number or by object is the same registration.
        assert loop.remove_reader(a.fileno()) is True
        assert loop.remove_reader(a) is False


def test_add_reader_replaces_previous_callback(loop, pipe):
    r, w = pipe
    got = []
    loop.add_reader(r, got.append, "old")
    loop.add_reader(r, lambda: got.append(("new", os.read(r, 10))))
    os.write(w, b"z")
    run_until(loop, lambda: got)
    assert got == [("new", b"z")]
    assert loop.remove_reader(r) is True
    assert loop.remove_reader(r) is False


def test_reader_and_writer_on_same_fd(loop):
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        events = []
        loop.add_writer(a, lambda: events.append("w"))
        loop.add_reader(a, lambda: events.append(("r", a.recv(10))))
        run_until(loop, lambda: "w" in events)
        assert loop.remove_writer(a) is True
        b.send(b"q")
        run_until(loop, lambda: ("r", b"q") in events)
        # Removing the writer left the reader registered.
        assert loop.remove_reader(a) is True


def test_reader_is_level_triggered(loop, pipe):
    r, w = pipe
    calls = []
    loop.add_reader(r, lambda: calls.append(1))  # does not drain
    os.write(w, b"x")
    run_until(loop, lambda: len(calls) >= 3)
    assert loop.remove_reader(r) is True
    assert os.read(r, 10) == b"x"


def test_reader_removing_itself(loop, pipe):
    r, w = pipe
    calls = []

    def cb():
        calls.append(os.read(r, 10))
        assert loop.remove_reader(r) is True

    loop.add_reader(r, cb)
    os.write(w, b"1")
    run_until(loop, lambda: calls)
    os.write(w, b"2")
    run_briefly(loop, 5)
    assert calls == [b"1"]


def test_reader_removes_other_reader_in_same_iteration(loop):
    p1 = os.pipe()
    p2 = os.pipe()
    try:
        calls = []

        def cb(name, own_fd, other_fd):
            calls.append(name)
            os.read(own_fd, 10)
            loop.remove_reader(other_fd)

        loop.add_reader(p1[0], cb, "one", p1[0], p2[0])
        loop.add_reader(p2[0], cb, "two", p2[0], p1[0])
        os.write(p1[1], b"x")
        os.write(p2[1], b"x")
        run_briefly(loop, 3)
        # Whichever ran first removed the other, which must then not run.
        assert calls in (["one"], ["two"])
        loop.remove_reader(p1[0])
        loop.remove_reader(p2[0])
    finally:
        for fd in (*p1, *p2):
            os.close(fd)


def test_readd_after_remove(loop, pipe):
    r, w = pipe
    got = []
    loop.add_reader(r, lambda: got.append(os.read(r, 10)))
    assert loop.remove_reader(r) is True
    loop.add_reader(r, lambda: got.append(("again", os.read(r, 10))))
    os.write(w, b"a")
    run_until(loop, lambda: got)
    assert got == [("again", b"a")]
    assert loop.remove_reader(r) is True


def test_many_pipes(loop):
    pipes = [os.pipe() for _ in range(64)]
    try:
        got = set()
        for i, (r, w) in enumerate(pipes):
            loop.add_reader(r, lambda i=i, r=r: (got.add(i), os.read(r, 10)))
        for r, w in pipes[::-1]:
            os.write(w, b"x")
        run_until(loop, lambda: len(got) == len(pipes))
        for r, w in pipes:
            assert loop.remove_reader(r) is True
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)


def test_reader_wakes_a_sleeping_loop(loop, pipe):
    # The loop blocks on a far timer; fd readiness must wake it.
    r, w = pipe
    got = []

    def on_read():
        got.append(os.read(r, 10))
        loop.stop()

    loop.add_reader(r, on_read)
    far = loop.call_later(30, loop.stop)
    loop.call_later(0.02, os.write, w, b"wake")
    t0 = loop.time()
    loop.run_forever()
    far.cancel()
    assert got == [b"wake"]
    assert loop.time() - t0 < 10
    loop.remove_reader(r)


def test_reader_exception_goes_to_handler(loop, pipe, expect_exception_handler_calls):
    r, w = pipe
    n = []

    def cb():
        os.read(r, 10)
        n.append(1)
        raise ValueError("reader failed")

    loop.add_reader(r, cb)
    os.write(w, b"x")
    run_until(loop, lambda: n)
    os.write(w, b"y")
    run_until(loop, lambda: len(n) == 2)   # still registered, loop still runs
    assert loop.remove_reader(r) is True
    calls = expect_exception_handler_calls.take()
    assert len(calls) == 2
    assert all(isinstance(c["exception"], ValueError) for c in calls)
    assert all(isinstance(c["handle"], asyncio.Handle) for c in calls)


def test_docs_watch_fd_example(loop):
    # From the asyncio docs: "Watch a file descriptor for read events".
    rsock, wsock = socket.socketpair()
    try:
        received = []

        def reader():
            data = rsock.recv(100)
            received.append(data.decode())
            loop.remove_reader(rsock)
            loop.stop()

        loop.add_reader(rsock, reader)
        loop.call_soon(wsock.send, "abc".encode())
        loop.run_forever()
        assert received == ["abc"]
    finally:
        rsock.close()
        wsock.close()
