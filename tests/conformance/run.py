#!/usr/bin/env python3
"""Run CPython's own ``test.test_asyncio`` against cxxloop.

The tests come from the interpreter running this script (``test.test_asyncio``
of its standard library); nothing is copied into the repository.  See
README.md next to this file for the details; ``--help`` for the options.

How cxxloop is swapped in (in each child process, before the test module is
imported):

* ``asyncio.DefaultEventLoopPolicy``  -> ``cxxloop.EventLoopPolicy`` and the
  policy is installed.  ``asyncio.set_event_loop_policy(None)`` (every test
  module's ``tearDownModule``) therefore falls back to cxxloop's policy too,
  because ``asyncio.events._init_event_loop_policy`` looks the default up on
  the ``asyncio`` package at call time.  This covers ``asyncio.new_event_loop``,
  ``asyncio.run``, ``asyncio.Runner``, ``IsolatedAsyncioTestCase`` and
  ``FunctionalTestCaseMixin.new_loop``.
* ``asyncio.SelectorEventLoop`` / ``asyncio.EventLoop`` (3.13) -> cxxloop's
  classes, so tests that name the stock class directly get cxxloop as well.
* every ``unittest.TestCase`` subclass of the test module that defines its own
  ``create_event_loop`` gets it replaced: ``EPoll*`` -> ``poller="epoll"``,
  ``Poll*`` -> ``poller="poll"``, ``Select*`` -> ``poller="select"``, anything
  else -> cxxloop's default loop (Kqueue/Proactor classes are left alone: they
  are skipped on Linux anyway).
* ``test_asyncio.utils.TestCase.close_loop`` reads the private
  ``loop._default_executor``; when the loop has no such attribute the harness
  uses the public ``shutdown_default_executor()`` instead.

With ``--loop proactor`` every one of those is ``cxxloop.ProactorEventLoop``
(the io_uring loop), whatever poller a class is named after; where io_uring is
unavailable the runner says why and exits 0.  With ``--loop asyncio`` the same
machinery runs with stock asyncio classes (a sanity check of the harness).

Every test also records whether it built a *foreign* loop: a stock
``BaseEventLoop`` (``TestLoop``, a bare ``BaseEventLoop``...) that is not the
loop under test.  Such tests do not exercise cxxloop; ``--list-foreign``
prints the ones that are not excluded yet.

Each module runs in its own child process which streams JSON lines (plan,
start, result) to a file.  If a child crashes, or a test makes no progress for
``--test-timeout`` seconds, the running test is recorded as an error (with the
Python stacks of the child, via faulthandler) and a fresh child resumes after
it.  When the module's total ``--timeout`` is used up, the tests not run yet
are recorded as errors.
"""

import argparse
import concurrent.futures
import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PKG = 'test.test_asyncio.'
VERSION = sys.version_info[:2]

# ---------------------------------------------------------------------------
# Groups.  A group lists (module, part) pairs; part None means the whole
# module, otherwise only the tests that classify() puts in that part.
# ---------------------------------------------------------------------------

CORE = ['test_tasks', 'test_futures', 'test_futures2', 'test_locks',
        'test_queues', 'test_timeouts', 'test_taskgroups', 'test_context',
        'test_pep492', 'test_waitfor', 'test_threads',
        'test_eager_task_factory', 'test_base_events', 'test_protocols',
        'test_transports']
NETWORK = ['test_sock_lowlevel', 'test_server', 'test_streams',
           'test_sendfile', 'test_ssl', 'test_sslproto', 'test_buffered_proto',
           'test_staggered']
PROCESS = ['test_subprocess']
# modules split between groups by test name (see classify())
SPLIT = {'test_events': ('core', 'network', 'process'),
         'test_runners': ('core', 'process'),
         'test_unix_events': ('network', 'process')}

GROUPS = {
    'core': [(m, None) for m in CORE] + [('test_events', 'core'),
                                         ('test_runners', 'core')],
    'network': [(m, None) for m in NETWORK] + [('test_events', 'network'),
                                               ('test_unix_events', 'network')],
    'process': [(m, None) for m in PROCESS] + [('test_events', 'process'),
                                               ('test_unix_events', 'process'),
                                               ('test_runners', 'process')],
}

# test_events: keywords in the test method name (lower case)
_EVENTS_PROCESS = ('subprocess', 'signal')
_EVENTS_NETWORK = ('sock', 'connection', 'server', 'unix', 'ssl', 'datagram',
                   'pipe', 'pty', 'sendfile', 'accept', 'getaddrinfo',
                   'getnameinfo', 'tcp', 'udp')
# test_events: tests that use sockets without saying so in their name
_EVENTS_NETWORK_TESTS = ('test_prompt_cancellation',)   # loop.sock_recv
# test_unix_events: keywords in "Class.test_name" (lower case)
_UNIX_PROCESS = ('signal', 'pipe', 'child', 'watcher', 'fork', 'waitpid',
                 'subprocess', 'pidfd', 'process')
# test_runners: keywords in the test name
_RUNNERS_PROCESS = ('signal', 'interrupt')


def classify(module, test_id):
    """Return the part ('core'/'network'/'process') of a test of a split
    module.  test_id is 'module.Class.test_name'."""
    parts = test_id.split('.')
    name = parts[-1].lower()
    cls_name = '.'.join(parts[1:]).lower()
    if module == 'test_events':
        if any(k in name for k in _EVENTS_PROCESS):
            return 'process'
        if (any(k in name for k in _EVENTS_NETWORK)
                or name in _EVENTS_NETWORK_TESTS
                or 'server' in parts[1].lower()):   # TestServer: create_server
            return 'network'
        return 'core'
    if module == 'test_runners':
        return 'process' if any(k in name for k in _RUNNERS_PROCESS) else 'core'
    if module == 'test_unix_events':
        return ('process' if any(k in cls_name for k in _UNIX_PROCESS)
                else 'network')
    return None


def available_modules():
    import test.test_asyncio as pkg
    d = os.path.dirname(pkg.__file__)
    return sorted(f[:-3] for f in os.listdir(d)
                  if f.startswith('test_') and f.endswith('.py'))


# ---------------------------------------------------------------------------
# Exclusions
# ---------------------------------------------------------------------------

_VER_RE = re.compile(r'^\[(\d+)\.(\d+)(\+|-(\d+)\.(\d+))?\]$')


def _version_ok(tag):
    m = _VER_RE.match(tag)
    if not m:
        raise ValueError(f'bad version tag {tag!r}')
    lo = (int(m.group(1)), int(m.group(2)))
    if m.group(3) is None:
        return VERSION == lo
    if m.group(3) == '+':
        return VERSION >= lo
    hi = (int(m.group(4)), int(m.group(5)))
    return lo <= VERSION <= hi


def load_exclusions(path):
    """Lines: 'PATTERN [VERSION]  # reason'.  PATTERN is a test id
    (module.Class.test), a prefix of one (module, module.Class), or an
    fnmatch pattern.  VERSION: [3.12] exactly, [3.12+] and later,
    [3.11-3.12] a range."""
    rules = []
    if not path or not os.path.exists(path):
        return rules
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            text, _, reason = line.partition('#')
            fields = text.split()
            if not fields:
                continue
            pattern = fields[0]
            if any(not _version_ok(t) for t in fields[1:]):
                continue
            rules.append((pattern, reason.strip(), lineno))
    return rules


def excluded_reason(rules, test_id):
    for pattern, reason, _ in rules:
        if any(c in pattern for c in '*?['):
            if fnmatch.fnmatchcase(test_id, pattern):
                return reason or 'excluded'
        elif test_id == pattern or test_id.startswith(pattern + '.'):
            return reason or 'excluded'
    return None


# ---------------------------------------------------------------------------
# Child: run one module
# ---------------------------------------------------------------------------

def _poller_for(cls_name):
    n = cls_name.lower()
    if n.startswith('kqueue') or 'proactor' in n:
        return 'skip'
    if n.startswith('epoll'):
        return 'epoll'
    if n.startswith('poll'):
        return 'poll'
    if n.startswith('select') and not n.startswith('selector'):
        return 'select'
    return None


class _Backend:
    """What the loop under test is, for one child process."""

    def __init__(self, which):
        import asyncio
        import selectors
        from asyncio import base_events
        self.which = which
        self.stock_selector_loop = asyncio.SelectorEventLoop
        if which in ('cxxloop', 'proactor'):
            try:
                import cxxloop
            except ImportError:
                # not installed: try the source tree (needs a built _core)
                sys.path.insert(0, os.path.join(REPO, 'python'))
                import cxxloop
            self.mod = cxxloop
        if which == 'proactor':
            # Everything is the proactor: the policy's loops, the classes tests name
            # (asyncio.SelectorEventLoop() in setUp, asyncio.EventLoop), and every
            # create_event_loop whatever selector its class is named after.
            proactor = cxxloop.ProactorEventLoop

            class ProactorPolicy(cxxloop.EventLoopPolicy):
                def _loop_factory(self):
                    return proactor()
            self.loop_class = self.event_loop_class = proactor
            self.policy_class = ProactorPolicy
            self.factory = lambda poller=None: proactor()
            under_test = (proactor,)
        elif which == 'cxxloop':
            self.loop_class = cxxloop.SelectorEventLoop
            self.event_loop_class = getattr(cxxloop, 'EventLoop',
                                            cxxloop.SelectorEventLoop)
            self.policy_class = cxxloop.EventLoopPolicy

            def factory(poller=None):
                # constructed directly: must not go through the policy
                if poller is None:
                    return cxxloop.Loop()
                return cxxloop.Loop(poller=poller)
            self.factory = factory
            under_test = (cxxloop.Loop, cxxloop.SelectorEventLoop)
        else:
            self.loop_class = asyncio.SelectorEventLoop
            self.event_loop_class = getattr(asyncio, 'EventLoop',
                                            asyncio.SelectorEventLoop)
            self.policy_class = asyncio.DefaultEventLoopPolicy
            sels = {'epoll': getattr(selectors, 'EpollSelector', None),
                    'poll': getattr(selectors, 'PollSelector', None),
                    'select': selectors.SelectSelector}

            def factory(poller=None):
                # constructed directly: must not go through the policy
                if poller is None:
                    return self.stock_selector_loop()
                return self.stock_selector_loop(sels[poller]())
            self.factory = factory
            under_test = (asyncio.SelectorEventLoop,)
        self.under_test = under_test
        # Record foreign loops: stock BaseEventLoop instances that are not the
        # loop under test (TestLoop, bare BaseEventLoop, ...).
        self.foreign = set()
        orig_init = base_events.BaseEventLoop.__init__
        backend = self

        def init(loop, *a, **kw):
            if not isinstance(loop, under_test):
                backend.foreign.add(type(loop).__qualname__)
            return orig_init(loop, *a, **kw)
        base_events.BaseEventLoop.__init__ = init

    def install(self):
        import asyncio
        if self.which in ('cxxloop', 'proactor'):
            asyncio.SelectorEventLoop = self.loop_class
            if hasattr(asyncio, 'EventLoop'):
                asyncio.EventLoop = self.event_loop_class
            asyncio.DefaultEventLoopPolicy = self.policy_class
        asyncio.set_event_loop_policy(self.policy_class())

    def patch_module(self, mod):
        import unittest
        patched = []
        for name, obj in list(vars(mod).items()):
            if not (isinstance(obj, type) and issubclass(obj, unittest.TestCase)
                    and 'create_event_loop' in obj.__dict__):
                continue
            poller = _poller_for(name)
            if poller == 'skip':
                continue
            factory = self.factory

            def create_event_loop(self, _poller=poller, _factory=factory):
                return _factory(_poller)
            obj.create_event_loop = create_event_loop
            patched.append(f'{name}->{poller or "default"}')
        return patched


def _patch_test_utils(backend):
    """Adapt test_asyncio.utils.TestCase to the loop under test.

    * new_test_loop() without a time generator (the plain loop most test
      classes build in setUp, e.g. every class of test_tasks and
      test_futures) returns the loop under test instead of the virtual-clock
      TestLoop.  new_test_loop(gen) still builds a TestLoop: such tests
      depend on the virtual clock and are listed in excluded.txt.
    * close_loop touches loop._default_executor (private); fall back to the
      public shutdown_default_executor() on loops without it.
    """
    from test.test_asyncio import utils
    orig_close = utils.TestCase.__dict__['close_loop'].__func__
    orig_new_test_loop = utils.TestCase.new_test_loop

    def close_loop(loop):
        if not hasattr(loop, '_default_executor'):
            if not loop.is_closed():
                loop.run_until_complete(loop.shutdown_default_executor())

            class _Shim:
                _default_executor = None

                def close(self):
                    loop.close()
            return orig_close(_Shim())
        return orig_close(loop)
    utils.TestCase.close_loop = staticmethod(close_loop)

    def new_test_loop(self, gen=None):
        if gen is not None:
            return orig_new_test_loop(self, gen)
        loop = backend.factory()
        self.set_event_loop(loop)
        return loop
    utils.TestCase.new_test_loop = new_test_loop


def _patch_runners(backend, mod):
    """test_runners.BaseTest.new_loop builds a bare BaseEventLoop with mocked
    internals (_selector, _process_events, _write_to_self); build the loop
    under test instead, keeping the shutdown_ag_run bookkeeping the tests
    check."""
    base = getattr(mod, 'BaseTest', None)
    if base is None or 'new_loop' not in base.__dict__:
        return []

    def new_loop(self):
        loop = backend.factory()
        loop.shutdown_ag_run = False
        orig = loop.shutdown_asyncgens

        async def shutdown_asyncgens():
            loop.shutdown_ag_run = True
            await orig()
        loop.shutdown_asyncgens = shutdown_asyncgens
        return loop
    base.new_loop = new_loop
    return ['BaseTest.new_loop']


def _patch_pep492(backend, mod):
    """test_pep492.BaseTest.setUp builds a bare BaseEventLoop with a mocked
    _selector and _process_events; build the loop under test instead."""
    base = getattr(mod, 'BaseTest', None)
    if base is None or 'setUp' not in base.__dict__:
        return []
    from test.test_asyncio import utils

    def setUp(self):
        utils.TestCase.setUp(self)
        self.loop = backend.factory()
        self.set_event_loop(self.loop)
    base.setUp = setUp
    return ['BaseTest.setUp']


def _flatten(suite):
    import unittest
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def _short_id(tid):
    return tid[len(PKG):] if tid.startswith(PKG) else tid


def child_main(args):
    import faulthandler
    import unittest
    out = open(args.out, 'a', buffering=1)

    def emit(**kw):
        out.write(json.dumps(kw) + '\n')

    faulthandler.enable(sys.stderr, all_threads=True)
    faulthandler.register(signal.SIGUSR1, sys.stderr, all_threads=True)
    try:
        backend = _Backend(args.loop)
        backend.install()
        _patch_test_utils(backend)
        try:
            mod = __import__(PKG + args.module, fromlist=['*'])
        except unittest.SkipTest as exc:
            emit(event='plan', tests=[f'{args.module}.<module>'], excluded=[],
                 patched=[])
            emit(event='result', id=f'{args.module}.<module>', outcome='skip',
                 detail=f'module skipped: {exc}', foreign=[])
            emit(event='end')
            return 0
        patched = backend.patch_module(mod)
        if args.module == 'test_runners':
            patched += _patch_runners(backend, mod)
        if args.module == 'test_pep492':
            patched += _patch_pep492(backend, mod)
    except BaseException:
        emit(event='fatal', detail=traceback.format_exc())
        return 2
    loader = unittest.TestLoader()
    tests = list(_flatten(loader.loadTestsFromModule(mod)))
    rules = load_exclusions(args.exclusions)
    skip_ids = set(args.skip_ids or ())
    selected, excluded = [], []
    for t in tests:
        tid = _short_id(t.id())
        if args.part and classify(args.module, tid) != args.part:
            continue
        if excluded_reason(rules, tid):
            excluded.append(tid)
            continue
        selected.append(t)
    if args.only_ids is not None:
        selected = [t for t in selected if _short_id(t.id()) in args.only_ids]
    if args.first:
        emit(event='plan', tests=[_short_id(t.id()) for t in selected],
             excluded=excluded, patched=patched)
    selected = [t for t in selected if _short_id(t.id()) not in skip_ids]

    class Result(unittest.TestResult):
        def startTest(self, test):
            super().startTest(test)
            backend.foreign.clear()
            self._failed = None
            self._t0 = time.monotonic()
            emit(event='start', id=_short_id(test.id()))

        def _done(self, test, outcome, detail=''):
            emit(event='result', id=_short_id(test.id()), outcome=outcome,
                 detail=detail[-6000:], foreign=sorted(backend.foreign),
                 time=round(time.monotonic() - getattr(self, '_t0', 0), 3))

        def addSuccess(self, test):
            super().addSuccess(test)
            if self._failed:
                self._done(test, *self._failed)
            else:
                self._done(test, 'pass')

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self._done(test, 'fail', self._exc_info_to_string(err, test))

        def addError(self, test, err):
            super().addError(test, err)
            # errors in setUpModule/setUpClass/... arrive as _ErrorHolder
            self._done(test, 'error', self._exc_info_to_string(err, test))

        def addSkip(self, test, reason):
            super().addSkip(test, reason)
            self._done(test, 'skip', str(reason))

        def addExpectedFailure(self, test, err):
            super().addExpectedFailure(test, err)
            self._done(test, 'pass', 'expected failure')

        def addUnexpectedSuccess(self, test):
            super().addUnexpectedSuccess(test)
            self._done(test, 'fail', 'unexpected success')

        def addSubTest(self, test, subtest, err):
            super().addSubTest(test, subtest, err)
            if err is not None and self._failed is None:
                kind = ('fail' if issubclass(err[0], test.failureException)
                        else 'error')
                self._failed = (kind, f'{subtest.id()}\n'
                                + self._exc_info_to_string(err, test))

    result = Result()
    suite = unittest.TestSuite(selected)
    try:
        suite.run(result)
    except BaseException:
        emit(event='fatal', detail=traceback.format_exc())
    emit(event='end')
    out.flush()
    return 0


# ---------------------------------------------------------------------------
# Parent: run modules in children, collect results
# ---------------------------------------------------------------------------

class ModuleRun:
    def __init__(self, module, part, group):
        self.module, self.part, self.group = module, part, group
        self.label = module + (f'[{part}]' if part else '')
        self.plan = None
        self.excluded = []
        self.patched = []
        self.results = {}      # id -> dict
        self.order = []
        self.notes = []

    def counts(self):
        c = {'pass': 0, 'fail': 0, 'error': 0, 'skip': 0}
        for r in self.results.values():
            c[r['outcome']] = c.get(r['outcome'], 0) + 1
        return c


def run_module(mr, args, stop_event, only_ids=None):
    if getattr(mr, 'skip_whole', None):
        mr.notes.append(f'excluded: {mr.skip_whole}')
        return mr
    deadline = time.monotonic() + args.timeout
    fd, path = tempfile.mkstemp(prefix=f'cxxloop-conf-{mr.module}-',
                                suffix='.jsonl')
    os.close(fd)
    errpath = path[:-6] + '.stderr'
    skip_file = path[:-6] + '.skip'
    only_file = path[:-6] + '.only'
    if only_ids is not None:
        with open(only_file, 'w') as f:
            f.write('\n'.join(sorted(only_ids)))
    first = True
    pos = 0
    try:
        while not stop_event.is_set():
            done_ids = set(mr.results)
            with open(skip_file, 'w') as f:
                f.write('\n'.join(sorted(done_ids)))
            cmd = [sys.executable, os.path.abspath(__file__), '--child',
                   mr.module, '--loop', args.loop, '--out', path,
                   '--skip-file', skip_file]
            if mr.part:
                cmd += ['--part', mr.part]
            if only_ids is not None:
                cmd += ['--only-file', only_file]
            if args.exclusions:
                cmd += ['--exclusions', args.exclusions]
            if first:
                cmd.append('--first')
            env = dict(os.environ)
            with open(errpath, 'w') as err:
                proc = subprocess.Popen(cmd, stdout=err, stderr=err, env=env,
                                        stdin=subprocess.DEVNULL, cwd=tempfile.gettempdir(),
                                        start_new_session=True)
                current, last_progress, ended, fatal = None, time.monotonic(), False, None
                killed_reason = None
                while True:
                    rc = proc.poll()
                    with open(path) as f:
                        f.seek(pos)
                        chunk = f.read()
                    # only consume complete lines
                    nl = chunk.rfind('\n')
                    if nl >= 0:
                        lines = chunk[:nl].splitlines()
                        pos += nl + 1
                    else:
                        lines = []
                    for line in lines:
                        ev = json.loads(line)
                        last_progress = time.monotonic()
                        e = ev['event']
                        if e == 'plan':
                            mr.plan = ev['tests']
                            mr.excluded = ev['excluded']
                            mr.patched = ev.get('patched', [])
                        elif e == 'start':
                            current = ev['id']
                        elif e == 'result':
                            if ev['id'] not in mr.results:
                                mr.order.append(ev['id'])
                            mr.results[ev['id']] = ev
                            current = None
                        elif e == 'end':
                            ended = True
                        elif e == 'fatal':
                            fatal = ev['detail']
                    if rc is not None and not lines:
                        break
                    now = time.monotonic()
                    if rc is None and (now > deadline or stop_event.is_set()
                                       or now - last_progress > args.test_timeout):
                        killed_reason = ('module timeout' if now > deadline
                                         else 'interrupted' if stop_event.is_set()
                                         else f'no progress for {args.test_timeout}s')
                        try:
                            os.kill(proc.pid, signal.SIGUSR1)   # faulthandler dump
                            time.sleep(1.0)
                        except OSError:
                            pass
                        try:
                            os.killpg(proc.pid, signal.SIGKILL)
                        except OSError:
                            pass
                        proc.wait()
                        continue
                    if rc is None:
                        time.sleep(0.2)
            first = False
            tail = ''
            try:
                with open(errpath, errors='replace') as f:
                    tail = f.read()[-4000:]
            except OSError:
                pass
            if fatal:
                mr.notes.append('child failed: ' + fatal.strip().splitlines()[-1])
                mr.results[f'{mr.module}.<import>'] = {
                    'id': f'{mr.module}.<import>', 'outcome': 'error',
                    'detail': fatal, 'foreign': []}
                mr.order.append(f'{mr.module}.<import>')
                break
            if ended and killed_reason is None:
                break
            # the child died or was killed: blame the running test, resume
            why = killed_reason or f'child exited with status {proc.returncode}'
            if current is None and mr.plan is not None:
                pending = [t for t in mr.plan if t not in mr.results]
                current = pending[0] if pending else None
            if current is None:
                mr.notes.append(f'{why} outside any test')
                cid = f'{mr.module}.<child>'
                mr.results[cid] = {'id': cid, 'outcome': 'error',
                                   'detail': f'{why}\n{tail}', 'foreign': []}
                mr.order.append(cid)
                break
            mr.results[current] = {'id': current, 'outcome': 'error',
                                   'detail': f'{why}\n{tail}', 'foreign': []}
            mr.order.append(current)
            mr.notes.append(f'{current}: {why}')
            if time.monotonic() > deadline:
                break
        # whatever was planned but never ran is an error
        if mr.plan is not None:
            for t in mr.plan:
                if t not in mr.results:
                    mr.results[t] = {'id': t, 'outcome': 'error', 'foreign': [],
                                     'detail': 'not run: module timed out or aborted'}
                    mr.order.append(t)
    finally:
        for p in (path, errpath, skip_file, only_file):
            if args.keep_logs and p not in (skip_file, only_file):
                continue
            try:
                os.unlink(p)
            except OSError:
                pass
        if args.keep_logs:
            mr.notes.append(f'logs: {path} {errpath}')
    return mr


def _uring_unavailable_reason():
    try:
        import cxxloop
    except ImportError:
        sys.path.insert(0, os.path.join(REPO, 'python'))
        import cxxloop
    available, _, reason = cxxloop._core.uring_support()
    return None if available else reason


def parent_main(args):
    if args.loop == 'proactor':
        reason = _uring_unavailable_reason()
        if reason is not None:
            # Not a failure: the proactor cannot run here (see the probe's reason).
            print(f'cxxloop conformance: loop=proactor skipped: io_uring is '
                  f'unavailable: {reason}', flush=True)
            return 0
    avail = available_modules()
    runs = []
    if args.module:
        for m in args.module:
            name, _, part = m.partition(':')
            if not name.startswith('test_'):
                name = 'test_' + name
            if name not in avail:
                print(f'no module {name} in test.test_asyncio', file=sys.stderr)
                return 2
            runs.append(ModuleRun(name, part or None, 'module'))
    else:
        groups = args.group or ['core']
        for g in groups:
            if g == 'all':
                runs += [ModuleRun(m, None, 'all') for m in avail]
            else:
                runs += [ModuleRun(m, p, g) for m, p in GROUPS[g] if m in avail]
    rules = load_exclusions(args.exclusions)
    for mr in runs:
        reason = excluded_reason(rules, mr.module)
        if reason:
            mr.skip_whole = reason
            mr.excluded = [f'{mr.module} (whole module)']
    # biggest first, for better packing with --jobs
    weight = {'test_events': 5, 'test_tasks': 4, 'test_ssl': 3,
              'test_subprocess': 3, 'test_streams': 2, 'test_sendfile': 2,
              'test_sock_lowlevel': 2, 'test_base_events': 2}
    ordered = sorted(runs, key=lambda r: -weight.get(r.module, 1))

    stop = threading.Event()
    t0 = time.monotonic()
    print(f'cxxloop conformance: python {sys.version.split()[0]}, '
          f'loop={args.loop}, {len(runs)} module run(s), jobs={args.jobs}',
          flush=True)
    lock = threading.Lock()

    def job(mr):
        run_module(mr, args, stop)
        with lock:
            c = mr.counts()
            print(f'  done {mr.label}: {c["pass"]} passed, '
                  f'{c["fail"] + c["error"]} failed, {c["skip"]} skipped '
                  f'({time.monotonic() - t0:.0f}s)', flush=True)
        return mr

    try:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
            list(ex.map(job, ordered))
    except KeyboardInterrupt:
        stop.set()
        raise

    # A test that failed is run once more, alone in a fresh child: the machines
    # are shared and some of CPython's tests are timing-sensitive.  A test that
    # passes on the rerun counts as passed and is listed as flaky.
    flaky = []
    for _ in range(args.rerun):
        again = []
        for mr in runs:
            ids = [i for i in mr.order
                   if mr.results[i]['outcome'] in ('fail', 'error')
                   and not i.endswith(('.<import>', '.<child>', '.<module>'))]
            if ids:
                again.append((mr, ids))
        if not again or stop.is_set():
            break
        print(f'rerunning {sum(len(i) for _, i in again)} failed test(s) '
              f'one module at a time', flush=True)
        for mr, ids in again:
            rr = ModuleRun(mr.module, mr.part, mr.group)
            run_module(rr, args, stop, only_ids=set(ids))
            for i in ids:
                r = rr.results.get(i)
                if r is not None and r['outcome'] == 'pass':
                    r = dict(r, flaky=mr.results[i].get('detail', ''))
                    mr.results[i] = r
                    flaky.append((mr, i))

    total_pass = total_fail = total_skip = 0
    required_fail = 0
    allow = set(args.allow_fail or ())
    report = []
    print()
    print(f'{"module":40} {"pass":>6} {"fail":>6} {"error":>6} {"skip":>6} '
          f'{"excl":>6} {"foreign":>7}')
    for mr in runs:
        c = mr.counts()
        foreign = [i for i in mr.order
                   if mr.results[i].get('foreign')]
        print(f'{mr.label:40} {c["pass"]:6} {c["fail"]:6} {c["error"]:6} '
              f'{c["skip"]:6} {len(mr.excluded):6} {len(foreign):7}')
        total_pass += c['pass']
        total_skip += c['skip']
        nfail = c['fail'] + c['error']
        total_fail += nfail
        if mr.group not in allow:
            required_fail += nfail
        report.append({'module': mr.module, 'part': mr.part, 'group': mr.group,
                       'counts': c, 'excluded': mr.excluded,
                       'notes': mr.notes, 'patched': mr.patched,
                       'results': [mr.results[i] for i in mr.order]})
    for mr in runs:
        for n in mr.notes:
            print(f'note: {mr.label}: {n}')
    if flaky:
        print('\nFlaky tests (failed, then passed when run again alone):')
        for mr, i in flaky:
            first_line = next((d for d in reversed(
                mr.results[i]['flaky'].strip().splitlines())
                if d.strip() and not d.startswith(' ')), '')
            print(f'  {i}\n        first run: {first_line[:200]}')
    failing = [(mr, i) for mr in runs for i in mr.order
               if mr.results[i]['outcome'] in ('fail', 'error')]
    if failing:
        print('\nFailing tests:')
        for mr, i in failing:
            r = mr.results[i]
            line = f'  {r["outcome"].upper():5} {i}'
            if args.verbose:
                detail = r.get('detail', '').strip().splitlines()
                if detail and detail[0].startswith(('child exited',
                                                    'no progress', 'module timeout',
                                                    'not run', 'interrupted')):
                    summary = detail[0]
                else:
                    summary = next((d for d in reversed(detail)
                                    if d.strip() and not d.startswith(' ')), '')
                line += f'\n        {summary[:200]}'
            if args.verbose > 1:
                line += '\n' + '\n'.join('        ' + d for d in
                                         r.get('detail', '').splitlines()[-30:])
            print(line)
    if args.list_foreign:
        print('\nTests (not excluded) that built a foreign stock loop:')
        for mr in runs:
            for i in mr.order:
                f = mr.results[i].get('foreign')
                if f:
                    print(f'  {i}  # {",".join(f)} ({mr.results[i]["outcome"]})')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({'python': sys.version, 'loop': args.loop,
                       'modules': report}, f, indent=1)
    print(f'\n({time.monotonic() - t0:.0f}s)')
    line = f'{total_pass} passed, {total_fail} failed'
    if total_skip:
        line += f', {total_skip} skipped'
    if flaky:
        line += f' ({len(flaky)} passed only when run again)'
    print(line)
    return 1 if required_fail else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--group', action='append',
                   choices=['core', 'network', 'process', 'all'],
                   help='module group (repeatable; default core)')
    p.add_argument('--module', nargs='+', metavar='NAME',
                   help='run these modules (NAME or NAME:core|network|process)')
    p.add_argument('--loop', choices=['cxxloop', 'proactor', 'asyncio'], default='cxxloop',
                   help='cxxloop: the selector loop (each poller); proactor: '
                        'cxxloop.ProactorEventLoop (io_uring) everywhere; asyncio: '
                        'the stock loop (a check of the harness)')
    p.add_argument('--jobs', '-j', type=int, default=2)
    p.add_argument('--timeout', type=float, default=300,
                   help='per-module time budget in seconds (default 300)')
    p.add_argument('--test-timeout', type=float, default=60,
                   help='a test making no progress this long is killed '
                        '(default 60)')
    p.add_argument('--allow-fail', action='append', metavar='GROUP',
                   help='failures in this group do not fail the exit code')
    p.add_argument('--rerun', type=int, default=1, metavar='N',
                   help='run failed tests again, alone, up to N times (default 1; '
                        'a pass then counts, and the test is listed as flaky)')
    p.add_argument('--exclusions', default=os.path.join(HERE, 'excluded.txt'))
    p.add_argument('--no-exclusions', dest='exclusions', action='store_const',
                   const='')
    p.add_argument('--json', metavar='FILE', help='write all results here')
    p.add_argument('--list-foreign', action='store_true',
                   help='list tests that built a stock loop not under test')
    p.add_argument('--keep-logs', action='store_true')
    p.add_argument('-v', '--verbose', action='count', default=0)
    # child mode
    p.add_argument('--child', metavar='MODULE', help=argparse.SUPPRESS)
    p.add_argument('--part', help=argparse.SUPPRESS)
    p.add_argument('--out', help=argparse.SUPPRESS)
    p.add_argument('--skip-file', help=argparse.SUPPRESS)
    p.add_argument('--only-file', help=argparse.SUPPRESS)
    p.add_argument('--first', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.module = args.child
        args.skip_ids = []
        args.only_ids = None
        if args.only_file:
            with open(args.only_file) as f:
                args.only_ids = {l for l in f.read().splitlines() if l}
        if args.skip_file and os.path.exists(args.skip_file):
            with open(args.skip_file) as f:
                args.skip_ids = [l for l in f.read().splitlines() if l]
        return child_main(args)
    if args.jobs < 1:
        p.error('--jobs must be >= 1')
    return parent_main(args)


if __name__ == '__main__':
    sys.exit(main())
