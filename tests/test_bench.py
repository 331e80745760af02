"""The benchmarks report what they measure: rows for every operator, exact bit and byte
figures, and clean errors (timings themselves are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mpicomp.bench import compressors
from mpicomp.compress import get


def test_compressor_rows_have_exact_bits(tmp_path):
    d = 4096
    rows = compressors.run(d=d, repeat=1)
    assert [r["operator"] for r in rows] == [get(s).spec() for s in compressors.DEFAULT_SPECS]
    for r in rows:
        assert r["encode_ratio"] > 0 and r["decode_ratio"] > 0
    by_op = {r["operator"]: r for r in rows}
    assert by_op["sign"]["bits_per_coord"] == 1.0 and by_op["sign"]["wire_bytes"] == 8 + d // 8
    assert by_op["natural"]["bits_per_coord"] == 9.0
    assert by_op["qsgd:s=4"]["bits_per_coord"] == (32 + 4 * d) / d  # one norm + 4-bit fields


def test_compressor_cli_writes_json_and_rejects_bad_specs(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "mpicomp.bench", "compressors", "--d", "2048", "--repeat", "1",
           "--ops", "sign", "topk:k=0.1", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| `sign` |" in done.stdout
    assert [r["operator"] for r in json.loads(out.read_text())["rows"]] == ["sign", "topk:k=0.1"]
    bad = subprocess.run(cmd[:-4] + ["--ops", "nosuch"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown compressor 'nosuch'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.mpi(min_size=2)
def test_collectives_bytes_are_exact(comm):
    from mpicomp.bench.collectives import run
    from mpicomp.comm.aggregate import TwoPhaseAggregator
    from mpicomp.comm.communicator import Communicator

    d, n = 2**12 + 5, comm.size
    rows = run(comm, sizes=[d], specs=["sign"], repeat=1)
    two_phase = next(r for r in rows if r["aggregator"] == "twophase")
    chunks = np.diff(TwoPhaseAggregator(Communicator(comm), "sign").bounds(d))
    # chunk q: n−1 uplink copies to its owner, then its owner's copy to the n−1 others
    payload = 8 + -(-chunks // 8)
    want = int(2 * (n - 1) * payload.sum())
    assert two_phase["bytes_moved"] == want
    assert two_phase["bytes"] == pytest.approx(n * (2 * (n - 1) * 4 * d // n) / want)
    vote = next(r for r in rows if r["aggregator"] == "vote-bitsliced")
    words = -(-d // 64)
    assert vote["bytes_moved"] == n * (2 * (n - 1) * (8 * words * int(n).bit_length()) // n)
