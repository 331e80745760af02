"""Array backend: NumPy by default, CuPy only when asked for, never imported as a side effect."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from mpicomp import backend


def test_numpy_is_chosen_for_host_arrays_and_cpu():
    x = np.ones(3)
    assert backend.get_xp(x) is np and backend.get_xp(device="cpu") is np and backend.get_xp() is np
    assert backend.to_host(x) is x and not backend.is_gpu_array(x)
    assert backend.to_device(x, "cpu") is x


def test_unknown_device_names_the_choices():
    with pytest.raises(ValueError, match="unknown device 'tpu': choose one of cpu, gpu"):
        backend.get_xp(device="tpu")


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_gpu_without_cupy_says_how_to_get_it():
    with pytest.raises(RuntimeError, match=r"mpicomp\[gpu-cuda13\]"):
        backend.get_xp(device="gpu")


def test_importing_and_compressing_touches_neither_cupy_nor_mpi():
    code = (
        "import sys, numpy as np\n"
        "from mpicomp.compress import make_compressor\n"
        "import mpicomp.comm.aggregate, mpicomp.comm.graphs, mpicomp.comm.gossip\n"
        "import mpicomp.bench.collectives\n"
        "make_compressor('natural').encode(np.ones(10, np.float32), np.random.default_rng(0))\n"
        "print('cupy' in sys.modules, 'mpi4py.MPI' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
