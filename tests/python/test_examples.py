"""The runnable Python examples (examples/python) run and succeed on each loop."""

import os
import subprocess
import sys

import pytest

from conftest import require_cxxloop

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir,
                        "examples", "python")


def run_example(name, *args):
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(params=["cxxloop", "proactor", "asyncio"])
def example_loop(request):
    if request.param != "asyncio":
        cxxloop = require_cxxloop()
        if request.param == "proactor":
            ok, _, why = cxxloop._core.uring_support()
            if not ok:
                pytest.skip(f"io_uring is unavailable: {why}")
    return request.param


def test_echo_example(example_loop):
    out = run_example("echo.py", "--loop", example_loop, "--clients", "3", "--messages", "50")
    assert out.returncode == 0, out.stderr
    assert "150 round trips of 1024 B over 3 connections" in out.stdout


def test_subprocess_pipeline_example(example_loop):
    out = run_example("subprocess_pipeline.py", "--loop", example_loop)
    assert out.returncode == 0, out.stderr
    assert "8 MiB through gzip | gzip -d: identical, exit codes 0 and 0" in out.stdout
