"""The package as a cluster user installs it: a wheel in a fresh virtual environment, run from an
empty directory (no checkout on ``sys.path``), through the ``mpicomp`` command and ``python -m``.

The wheel is built from this checkout and installed without its dependencies; the new
environment finds NumPy, mpi4py, h5py, ... in this test's environment through a ``.pth`` line
(so the test needs no network and no second copy of them). That line adds the directory alone:
the ``.pth`` files there, such as an editable install of this checkout, are not processed, and
the test checks that ``mpicomp`` is imported from the new environment. The MPICH wheel's library
(``libmpi`` in the environment's ``lib/``, where mpi4py looks) is linked there likewise.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from mpicomp import __version__
from mpicomp.trace import read_trace

REPO = Path(__file__).resolve().parents[1]
MPIEXEC = os.environ.get("MPIEXEC") or str(Path(sys.executable).with_name("mpiexec"))


def run(cmd, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="1", MPICOMP_KERNELS="numpy")  # no kernel compilation here
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    out = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
               "-w", dist, REPO], cwd=dist)
    assert out.returncode == 0, out.stdout + out.stderr
    (path,) = dist.glob("mpicomp-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheel) -> Path:
    """A new virtual environment with the wheel installed; returns its bin directory."""
    root = tmp_path_factory.mktemp("venv")
    out = run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root)
    assert out.returncode == 0, out.stderr
    bindir = root / ("Scripts" if os.name == "nt" else "bin")
    purelib = run([bindir / "python", "-c",
                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                  cwd=root).stdout.strip()
    ours = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"],
            *site.getsitepackages()]
    Path(purelib, "dependencies.pth").write_text("\n".join(dict.fromkeys(ours)) + "\n")
    for lib in Path(sys.prefix, "lib").glob("[!p]*"):  # the mpich wheel's libmpi and its own
        (root / "lib" / lib.name).symlink_to(lib)          # libraries, if any; not python3.x/
    out = run([sys.executable, "-m", "pip", "--python", bindir / "python", "install", "-q",
               "--no-deps", wheel], cwd=root)
    assert out.returncode == 0, out.stdout + out.stderr
    return bindir


def test_the_wheel_holds_only_the_mpicomp_package(wheel):
    with zipfile.ZipFile(wheel) as zf:
        top = {name.split("/")[0] for name in zf.namelist()}
        scripts = zf.read(f"mpicomp-{__version__}.dist-info/entry_points.txt").decode()
    assert top == {"mpicomp", f"mpicomp-{__version__}.dist-info"}  # no apps/, experiments/, tests/
    assert "mpicomp = mpicomp.cli:main" in scripts
    assert any(n == "mpicomp/apps/diana.py" for n in zipfile.ZipFile(wheel).namelist())


def test_an_installed_app_runs_from_an_empty_directory(installed, tmp_path):
    where = run([installed / "python", "-c", "import mpicomp; print(mpicomp.__file__)"], tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(installed.parent), where.stdout + where.stderr
    out = run([MPIEXEC, "-n", 2, installed / "mpicomp", "diana", "--iters", 20], tmp_path)
    assert out.returncode == 0, out.stderr
    t = read_trace(tmp_path / "diana.h5")
    assert t.status == "finished" and t.world_size == 2 and t["step"][-1] == 20
    assert "diana: finished, 20 steps on 2 ranks; trace diana.h5" in out.stderr
    assert "analyse: python -m mpicomp.analyze diana.h5 --plot diana.png" in out.stderr
    # the module form of the same app, and the checkout's short form, which is not installed
    out = run([installed / "python", "-m", "mpicomp.apps.dcgd", "--iters", 5, "--quiet"], tmp_path)
    assert out.returncode == 0 and read_trace(tmp_path / "dcgd.h5").status == "finished", out.stderr
    assert out.stderr.strip().splitlines()[-1] == "dcgd: finished, 5 steps on 1 rank; trace dcgd.h5"
    out = run([installed / "python", "-m", "apps.diana", "--help"], tmp_path)
    assert out.returncode != 0 and "No module named 'apps'" in out.stderr


def test_installed_analyze_and_bench_run_from_an_empty_directory(installed, tmp_path):
    out = run([installed / "mpicomp", "diana", "--iters", 10, "--log-every", 5], tmp_path)
    assert out.returncode == 0, out.stderr
    out = run([installed / "mpicomp", "analyze", "diana.h5", "--csv", "summary.csv"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "| diana |" in out.stdout and (tmp_path / "summary.csv").read_text().count("\n") == 2
    out = run([installed / "python", "-m", "mpicomp.analyze", "diana.h5", "--format", "json"],
              tmp_path)
    assert out.returncode == 0 and '"steps": 10' in out.stdout, out.stderr
    out = run([installed / "mpicomp", "bench", "compressors", "--d", 4096, "--repeat", 1,
               "--ops", "sign", "natural", "--kernels", "numpy"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "sign" in out.stdout and "natural" in out.stdout


def test_the_mpicomp_command_names_its_subcommands(installed, tmp_path):
    out = run([installed / "mpicomp", "dianna"], tmp_path)
    assert out.returncode == 2
    assert "unknown command 'dianna'; choose one of diana, dcgd" in out.stderr
    assert "analyze, bench" in out.stderr
    out = run([installed / "mpicomp", "--version"], tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == f"mpicomp {__version__}"
