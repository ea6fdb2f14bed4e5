"""The README's main job (python -m cxxloop.bench) keeps working: every workload runs
once, tiny, on cxxloop and the stock loop, and checks its own result."""

import subprocess
import sys


def test_bench_runs_every_workload():
    proc = subprocess.run(
        [sys.executable, "-m", "cxxloop.bench", "--loops", "cxxloop,asyncio",
         "--reps", "1", "--scale", "0.01", "-q"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stdout.lower(), proc.stdout
    for title in ("call_soon chain", "tasks", "TCP echo 1 KiB"):
        assert title in proc.stdout
