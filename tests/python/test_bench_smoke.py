"""The README's benchmarks keep working: every workload of the main job (python -m
cxxloop.bench) and of the process benchmarks (bench/proc/run.py) runs once, tiny, on
cxxloop and the stock loop, and checks its own result."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_bench_runs_every_workload():
    proc = subprocess.run(
        [sys.executable, "-m", "cxxloop.bench", "--loops", "cxxloop,asyncio",
         "--reps", "1", "--scale", "0.01", "-q"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stdout.lower(), proc.stdout
    for title in ("call_soon chain", "tasks", "TCP echo 1 KiB"):
        assert title in proc.stdout


def test_proc_bench_runs_every_workload():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "proc", "run.py"), "--smoke",
         "--loops", "cxxloop,asyncio", "-q"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stdout.lower(), proc.stdout
    assert "skipped" not in proc.stdout, proc.stdout
    for title in ("spawn+wait `true`", "100 MiB through `cat`", "signal delivery"):
        assert title in proc.stdout
