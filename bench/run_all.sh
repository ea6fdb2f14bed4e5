#!/usr/bin/env bash
# Run the side-by-side benchmark on every Python that has it available and
# keep the results: bench/results/<stamp>-py<version>.{json,txt,md}.
#
#   bench/run_all.sh                 # full run on 3.11, 3.12, 3.13 (pyenv)
#   bench/run_all.sh --quick         # any extra options go to the benchmark
#   PYTHONS="/usr/bin/python3" bench/run_all.sh
#
# cxxloop is measured on a Python only if it is built there
# (pip install --no-build-isolation -e . with that interpreter);
# otherwise that run compares asyncio, uvloop and rloop and says cxxloop was skipped.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/results"
mkdir -p "$out"

if [[ -z "${PYTHONS:-}" ]]; then
    PYTHONS=""
    for v in 3.11 3.12 3.13; do
        for p in "$(pyenv root 2>/dev/null)"/versions/$v.*/bin/python "$(command -v python$v || true)"; do
            if [[ -x "$p" ]]; then PYTHONS+="$p "; break; fi
        done
    done
fi
[[ -n "$PYTHONS" ]] || { echo "no Python 3.11-3.13 found; set PYTHONS" >&2; exit 1; }

stamp="$(date -u +%Y%m%d-%H%M)"
summary="$out/$stamp-summary.md"
: > "$summary"
for py in $PYTHONS; do
    ver="$("$py" -c 'import platform; print(platform.python_version())')"
    base="$out/$stamp-py$ver"
    echo "=== $py ($ver)" >&2
    "$py" "$here/bench.py" --json "$base.json" "$@" | tee "$base.txt"
    "$py" "$here/bench.py" --render "$base.json" --markdown > "$base.md"
    { cat "$base.md"; echo; } >> "$summary"
    echo >&2
done
echo "results in $out (Markdown for all Pythons: $summary)" >&2
