"""Results are a contract: every app's default run, and a few non-default ones, reproduce the
traces recorded in ``tests/golden_traces.json`` bit for bit — every column but ``wall_time``,
every rank column but ``wall_time``, and ``final/x``.

The recorded values are float64 bit patterns (``float.hex``) and a SHA-256 of ``final/x``, so
a refactor that changes one rounding anywhere fails here. Record anew only when an issue says
that results change (``python tests/test_golden_traces.py --record``), and say so in the note.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).with_name("golden_traces.json")
MPIEXEC = os.environ.get("MPIEXEC") or str(Path(sys.executable).with_name("mpiexec"))
SHORT = ["--iters", "40", "--log-every", "5", "--progress", "off", "--quiet"]
APPS = ("diana", "dcgd", "qsgd", "terngrad", "signsgd", "natural", "qadam", "efsgd", "dpsgd",
        "choco", "malcom")

#: name -> (app, ranks, extra flags)
CASES = {
    **{f"{app}-default": (app, 2, []) for app in APPS},
    "dcgd-two-phase-natural-minibatch": ("dcgd", 4, ["--topology", "two-phase", "--compressor",
                                                     "natural", "--batch", "16"]),
    "diana-allgather-elias": ("diana", 4, ["--topology", "allgather", "--compressor",
                                           "qsgd:s=8,coder=elias", "--alpha", "theory"]),
    "choco-torus-topk-natural": ("choco", 4, ["--topology", "torus", "--compressor",
                                              "topk:k=8+natural"]),
    "signsgd-bitsliced-byzantine": ("signsgd", 4, ["--topology", "bitsliced", "--byzantine", "1",
                                                   "--momentum", "0.9"]),
    "qadam-weight-quant": ("qadam", 4, ["--weight-quant", "qsgd:s=16"]),
    "malcom-complete-sqrt": ("malcom", 4, ["--topology", "complete", "--schedule", "sqrt"]),
}

SKIPPED_COLUMNS = ("wall_time",)


def run_case(name: str, workdir: Path):
    """The trace of case ``name``, run in ``workdir``."""
    from mpicomp.trace import read_trace

    app, ranks, flags = CASES[name]
    trace = workdir / f"{name}.h5"
    cmd = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", f"apps.{app}", *SHORT, *flags,
           "--trace", str(trace)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"{name}: exit {out.returncode}\n{out.stderr}"
    return read_trace(trace)


def fingerprint(t) -> dict:
    """The values the contract fixes, as exact text."""
    def exact(values):
        return [float(v).hex() for v in np.asarray(values, dtype=np.float64).ravel()]

    return {
        "rows": int(t.n_rows),
        "columns": {c: exact(t[c]) for c in t.columns if c not in SKIPPED_COLUMNS},
        "ranks": {c: exact(v) for c, v in sorted(t.ranks.items()) if c not in SKIPPED_COLUMNS},
        "final_x": hashlib.sha256(np.ascontiguousarray(t.final_x, dtype=np.float64)
                                  .tobytes()).hexdigest(),
    }


def golden() -> dict:
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_trace_matches_the_golden_values_bit_for_bit(tmp_path, name):
    want = golden()[name]
    got = fingerprint(run_case(name, tmp_path))
    assert got["rows"] == want["rows"]
    assert sorted(got["columns"]) == sorted(want["columns"])
    for column, values in want["columns"].items():
        assert got["columns"][column] == values, f"{name}: column {column} differs"
    assert sorted(got["ranks"]) == sorted(want["ranks"])
    for column, values in want["ranks"].items():
        assert got["ranks"][column] == values, f"{name}: rank column {column} differs"
    assert got["final_x"] == want["final_x"], f"{name}: final/x differs"


def record() -> None:
    """Write the golden values of every case (run from the repository, with mpiexec)."""
    values = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(CASES):
            values[name] = fingerprint(run_case(name, Path(tmp)))
            print(f"recorded {name}: {values[name]['rows']} rows", flush=True)
    GOLDEN.write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_golden_traces.py --record")
    record()
