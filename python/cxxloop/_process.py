"""Child processes of cxxloop's Loop: how a child's exit is observed.

A child is spawned by the running interpreter's own Unix subprocess transport
(subprocess.Popen plus the loop's pipe transports, _pipes), exactly as the stock
loop does. What differs is who notices that it exited. The stock loop asks the
policy's child watcher, whose kind and warnings change from one Python version to
the next. cxxloop watches each child itself:

- On Linux, a pidfd (os.pidfd_open) is registered with the loop's own reader
  machinery, i.e. the C++ poller. It becomes readable when the child exits; the loop
  then reaps that one pid with waitpid() (which returns at once, the child being a
  zombie) and schedules the transport's _process_exited().
- Where pidfds are unavailable (older kernels, seccomp, other systems), or the poller
  cannot take the fd, one daemon thread per child blocks in waitpid() on that pid and
  hands the status to the loop with call_soon_threadsafe().

Neither ever calls waitpid(-1), so children the program started by other means keep
their exit statuses. The policy's child watcher is neither created nor asked (so no
DeprecationWarning on 3.12+), unless the program installed one of the watchers whose
behaviour differs from a per-pid wait (SafeChildWatcher, FastChildWatcher,
MultiLoopChildWatcher or its own): then the interpreter's own code path uses it, as
the stock loop would.
"""

import contextlib
import fcntl
import os
import threading

from asyncio import events, unix_events
from asyncio.log import logger

__all__ = ("make_subprocess_transport", "close_child_watches", "pidfd_available")

# Returned when a child's status was consumed by someone else, as asyncio reports it.
_STATUS_LOST = 255

_pidfd_probe = None


def pidfd_available():
    """Whether os.pidfd_open() works here (probed once, on this process itself)."""
    global _pidfd_probe
    if _pidfd_probe is None:
        ok = hasattr(os, "pidfd_open")
        if ok:
            try:
                os.close(os.pidfd_open(os.getpid()))
            except OSError:  # ENOSYS on old kernels, EPERM under some seccomp policies.
                ok = False
        _pidfd_probe = ok
    return _pidfd_probe


def _installed_watcher():
    """A child watcher the program installed whose semantics are not a per-pid wait,
    else None. Reads the policy's slot directly: asking get_child_watcher() would warn
    on 3.12+ and create a default watcher nobody needs."""
    policy = getattr(events, "_event_loop_policy", None)
    watcher = getattr(policy, "_watcher", None)
    if watcher is None:
        return None
    per_pid = tuple(getattr(unix_events, name) for name in
                    ("ThreadedChildWatcher", "PidfdChildWatcher") if hasattr(unix_events, name))
    return None if isinstance(watcher, per_pid) else watcher


async def make_subprocess_transport(loop, protocol, args, shell, stdin, stdout, stderr,
                                    bufsize, extra=None, **kwargs):
    """Loop._make_subprocess_transport: spawn, watch the child, wait for its pipes."""
    if _installed_watcher() is not None:
        stock = unix_events._UnixSelectorEventLoop._make_subprocess_transport
        return await stock(loop, protocol, args, shell, stdin, stdout, stderr, bufsize,
                           extra=extra, **kwargs)
    waiter = loop.create_future()
    transport = unix_events._UnixSubprocessTransport(
        loop, protocol, args, shell, stdin, stdout, stderr, bufsize,
        waiter=waiter, extra=extra, **kwargs)
    _watch(loop, transport)
    # The pipe transports are made by a task the transport has just scheduled: the
    # pipes are grown before it runs.
    _grow_pipes(transport._proc)
    try:
        await waiter
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        # The pipes could not be connected (or the caller was cancelled): the child
        # is killed, and its exit awaited so that nothing is left running or unreaped.
        transport.close()
        await transport._wait()
        raise
    return transport


# The capacity given to a child's stdin and stdout pipes (Linux), where the system's
# default is 64 KiB. A bulk transfer through a child then moves 128 KiB per read,
# write and wake-up rather than 64 KiB: coreutils' own I/O size, and no more than the
# 128 KiB past which asyncio's StreamReader pauses reading, so one chunk never pauses
# it, and each chunk stays small enough to be recycled by malloc rather than mapped.
_PIPE_SIZE = 128 * 1024
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", None)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", None)


def _grow_pipes(popen):
    if _F_SETPIPE_SZ is None:
        return
    for f in (popen.stdin, popen.stdout):
        if f is None:
            continue
        try:
            fd = f.fileno()
            if fcntl.fcntl(fd, _F_GETPIPE_SZ) < _PIPE_SIZE:  # Never shrink it.
                fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)
        except (OSError, ValueError):
            pass  # Not a pipe (AIX's socketpair), or the user's pipe quota is spent.


def _watch(loop, transport):
    popen = transport._proc
    pid = popen.pid
    if pidfd_available():
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            # Already reaped by someone else between Popen() and here.
            loop.call_soon(transport._process_exited, _lost_status(popen, pid))
            return
        except OSError:
            pass  # e.g. EMFILE: the thread below needs no fd.
        else:
            try:
                loop._add_reader(pidfd, _on_pidfd_readable, loop, transport, popen, pidfd)
            except (OSError, ValueError):  # e.g. beyond FD_SETSIZE for the select poller
                os.close(pidfd)
            else:
                _pidfds(loop)[pidfd] = pid
                return
    thread = threading.Thread(target=_wait_in_thread, args=(loop, transport, popen),
                              name=f"cxxloop-waitpid-{pid}", daemon=True)
    thread.start()


def _pidfds(loop):
    """The loop's open pidfds (fd -> pid), closed with the loop."""
    try:
        return loop._child_pidfds
    except AttributeError:
        loop._child_pidfds = {}
        return loop._child_pidfds


def _on_pidfd_readable(loop, transport, popen, pidfd):
    loop._remove_reader(pidfd)
    _pidfds(loop).pop(pidfd, None)
    os.close(pidfd)
    loop.call_soon(transport._process_exited, _reap(popen))


def _wait_in_thread(loop, transport, popen):
    # Holding Popen's own lock keeps Popen.poll() (called by transport.close() and, on
    # 3.11/3.12, by send_signal()) from reaping the child behind this thread's back:
    # it returns None while the lock is taken, as it does during Popen.wait().
    lock = getattr(popen, "_waitpid_lock", None) or contextlib.nullcontext()
    with lock:
        returncode = _reap(popen)
    try:
        loop.call_soon_threadsafe(transport._process_exited, returncode)
    except RuntimeError:  # The loop was closed while the child ran.
        logger.warning("Loop %r that handles pid %r is closed", loop, popen.pid)


def _reap(popen):
    """waitpid() on this child only; its return code (negative for a signal)."""
    pid = popen.pid
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return _lost_status(popen, pid)
    returncode = os.waitstatus_to_exitcode(status)
    # Tell the Popen at once: a poll() before _process_exited() runs would otherwise
    # find no child, and Popen would record 0.
    if popen.returncode is None:
        popen.returncode = returncode
    return returncode


def _lost_status(popen, pid):
    if popen.returncode is not None:
        return popen.returncode  # Popen itself reaped it (poll() or wait()).
    logger.warning("child process pid %d exit status already read: "
                   "will report returncode %d", pid, _STATUS_LOST)
    return _STATUS_LOST


def close_child_watches(loop):
    """On loop.close(): stop watching and close every pidfd. A child still running is
    left to its Popen object, which reaps it later, as the subprocess module does for
    any Popen dropped while its child runs."""
    pidfds = getattr(loop, "_child_pidfds", None)
    if not pidfds:
        return
    for pidfd in list(pidfds):
        with contextlib.suppress(Exception):
            loop._remove_reader(pidfd)
        os.close(pidfd)
    pidfds.clear()

