"""cxxloop.ProactorEventLoop: its class, the class as a loop factory, and its refusal
where io_uring is unavailable. (Everything else runs on it through the loop fixture's
cxxloop-proactor param.)"""

import asyncio
import errno
import os
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
