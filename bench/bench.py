#!/usr/bin/env python3
"""Run the benchmark from a checkout: same options as `python -m cxxloop.bench`.

The workloads live in python/cxxloop/bench.py (one copy, shipped with the
package).  This wrapper loads that file directly, so it works whether or not
cxxloop is built for the running Python (cxxloop is then reported as skipped
and the other loops are still compared), and it always runs the checkout's
version of the benchmark rather than an older installed one.
"""
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.join(HERE, os.pardir, "python", "cxxloop", "bench.py")


def load():
    spec = importlib.util.spec_from_file_location("_cxxloop_bench", os.path.normpath(BENCH))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    sys.exit(load().main())
