"""PyTorch networks trained by mpicomp's methods on real MPI ranks: every method against its
serial reference, accuracy on digits, checkpoint and resume with batch-norm statistics, and bad
input that ends every rank with one clear message.

Determinism: PyTorch runs on one thread here (`torch.set_num_threads(1)`), where its CPU
kernels are deterministic, so an MPI run and its serial reference — the same per-rank seeds,
shards and operators, each simulated worker with a module of its own — agree bit for bit.
CHOCO differs from its reference in float64 round-off only: the reference sums the gossip term
per neighbour, the ranks in one buffer (as in test_gossip_mpi).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import apps.choco  # noqa: E402
import apps.dcgd  # noqa: E402
import apps.diana  # noqa: E402
import apps.natural  # noqa: E402
import apps.qadam  # noqa: E402
import apps.signsgd  # noqa: E402
from reference_algorithms import Workers, run_choco, run_dcgd, run_diana, run_signum  # noqa: E402
from test_run_mpi import failed_with  # noqa: E402

from mpicomp import local_objective, make_algorithm, trajectory  # noqa: E402
from mpicomp.comm.graphs import make_graph  # noqa: E402
from mpicomp.problems.data import load  # noqa: E402
from mpicomp.run import EXIT_BAD_INPUT, EXIT_FINISHED  # noqa: E402
from mpicomp.trace import read_trace  # noqa: E402

pytestmark = [pytest.mark.mpi, pytest.mark.usefixtures("one_torch_thread")]
SEED, ITERS = 4, 6


def digits(n=160):
    data = load("digits")
    return data.take(np.arange(n))


def network(comm, data, model="lenet", **options):
    return local_objective(comm, data, "nn", l2=1e-3, model=model, seed=2, **options)


# ------------------------------------------------------------------ the serial references
@pytest.mark.parametrize("method", ["dcgd", "diana", "signsgd", "choco"])
def test_a_network_trains_as_its_serial_reference(comm, method):
    data = digits()
    objective = network(comm, data)
    x0 = objective.problem.initial_point()
    workers = Workers(data, comm.size, "nn", seed=SEED, l2=1e-3, model="lenet", seed_model=2,
                      image_shape=data.image_shape, n_classes=10)
    for p in workers.problems:
        assert p.module is not objective.problem.module
    if method == "dcgd":
        algo = make_algorithm("dcgd", objective, comm, "qsgd:s=4", lr=0.1, batch=8)
        want = run_dcgd(workers, x0, "qsgd:s=4", "server", 0.1, ITERS, batch=8)
    elif method == "diana":
        algo = make_algorithm("diana", objective, comm, "natural", lr=0.1, alpha=0.5, batch=8)
        want = run_diana(workers, x0, "natural", "server", 0.1, 0.5, ITERS, batch=8)
    elif method == "signsgd":
        algo = make_algorithm("signsgd", objective, comm, lr=1e-3, momentum=0.9, batch=8)
        want = run_signum(workers, x0, 1e-3, ITERS, momentum=0.9, batch=8)
    else:
        algo = make_algorithm("choco", objective, comm, "topk:k=0.1", "ring", lr=0.1,
                              gamma=0.5, tau=1.0, batch=8)
        W = make_graph("ring", comm.size).mixing_matrix()
        models, _ = run_choco(workers, W, x0, "topk:k=0.1", 0.1, 0.5, 1.0, ITERS, batch=8)
        want = [X[comm.rank] for X in models]
    got = trajectory(algo, x0, ITERS, seed=SEED)
    assert len(got) == len(want) == ITERS + 1
    for t, (a, b) in enumerate(zip(got, want)):
        if method == "choco":  # the gossip sum in another order: float64 round-off (see
            # test_gossip_mpi.close_models), everything else bit for bit
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=f"step {t}")
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"{method}, step {t}")
    assert not np.array_equal(got[-1], got[0])  # it did train


def test_per_layer_compression_equals_its_serial_reference(comm):
    """``--per-layer``: the operator applied to each parameter tensor on its own, the bits of
    each message the sum of its layers'."""
    from mpicomp.algorithms.base import uplink_operator

    data = digits()
    objective = network(comm, data)
    x0 = objective.problem.initial_point()
    # the settings uplink_operator reads
    settings = type("Settings", (), {"per_layer": True, "compressor": "qsgd:s=2",
                                     "topology": "server"})
    op = uplink_operator(settings, objective)
    sizes = [int(np.prod(shape)) for _, shape in objective.problem.layout]
    assert op.sizes == tuple(sizes) and len(sizes) == 10 and sum(sizes) == x0.size
    workers = Workers(data, comm.size, "nn", seed=SEED, l2=1e-3, model="lenet", seed_model=2,
                      image_shape=data.image_shape, n_classes=10)
    want = run_dcgd(workers, x0, uplink_operator(settings, objective), "server", 0.1, ITERS,
                    batch=8)
    algo = make_algorithm("dcgd", objective, comm, op, lr=0.1, batch=8)
    got = trajectory(algo, x0, ITERS, seed=SEED)
    for t, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(a, b, err_msg=f"step {t}")
    # every rank encoded ITERS messages: per-layer bits add up to the payloads' nbits
    assert op.total_bits.sum() == ITERS * sum(op.base.body_bits(n, x0.dtype) for n in sizes)


# ------------------------------------------------------------------ training through the apps
def run(comm, main, tmp, *args, name="run.h5", **kwargs):
    """``main(argv)`` on every rank over digits images; (exit status, rank 0's trace)."""
    trace = str(tmp / name)
    rc = main(["--problem", "nn", "--data", "digits", "--trace", trace, "--progress", "off",
               "--quiet", *map(str, args)], comm, **kwargs)
    assert comm.allgather(rc) == [rc] * comm.size  # every rank ends the same way
    comm.Barrier()
    return rc, (read_trace(trace) if comm.rank == 0 and os.path.exists(trace) else None)


def test_digits_reach_95_percent_and_the_compressed_methods_stay_close(comm, mpi_shared_tmp,
                                                                       mpi_skip_unless):
    """LeNet on digits (80/20 split), 32 images a rank a step, 4 ranks. Uncompressed SGD reaches
    ≥ 95 % test accuracy; Signum with the vote, natural compression both ways and QAdam with
    error feedback end within 2.5 points of it; QAdam with 1-bit (scaled sign) gradients and no
    error feedback ends below QAdam with it, with a higher test loss."""
    mpi_skip_unless(comm.size == 4, "the accuracy claims are for 4 ranks")
    common = ["--batch", 32, "--iters", 400, "--log-every", 100, "--test-fraction", 0.2]
    runs = {
        "sgd": (apps.dcgd.main, ["--lr", 0.1]),
        "signum": (apps.signsgd.main, ["--lr", 1e-3, "--momentum", 0.9]),
        "natural": (apps.natural.main, ["--lr", 0.1]),
        "qadam_ef": (apps.qadam.main, ["--lr", 1e-3, "--compressor", "scaled_sign"]),
        "qadam": (apps.qadam.main, ["--lr", 1e-3, "--compressor", "scaled_sign",
                                    "--no-error-feedback"]),
    }
    found = {}
    for name, (main, args) in runs.items():
        rc, t = run(comm, main, mpi_shared_tmp, *common, *args, name=f"{name}.h5")
        assert rc == EXIT_FINISHED
        if comm.rank == 0:
            found[name] = (float(t["test_accuracy"][-1]), float(t["test_loss"][-1]))
    if comm.rank != 0:
        return
    sgd = found["sgd"][0]
    assert sgd >= 0.95, found
    for name in ("signum", "natural", "qadam_ef"):
        assert found[name][0] >= sgd - 0.025, (name, found)
    assert found["qadam"][0] < found["qadam_ef"][0] and found["qadam"][1] > found["qadam_ef"][1], \
        found


@pytest.mark.parametrize("app,args", [
    ("dcgd", ["--compressor", "terngrad", "--lr", 0.05]),
    ("diana", ["--compressor", "qsgd:s=4,block=256", "--lr", 0.05]),
    ("signsgd", ["--lr", 1e-3, "--momentum", 0.9, "--byzantine", 1, "--attack", "flip"]),
    ("natural", ["--lr", 0.1]),
    ("qadam", ["--lr", 1e-3, "--compressor", "scaled_sign"]),
    ("efsgd", ["--lr", 0.05, "--compressor", "topk:k=0.1"]),
    ("dpsgd", ["--lr", 0.1]),
    ("choco", ["--lr", 0.1, "--compressor", "topk:k=0.1"]),
    ("malcom", ["--lr", 0.1, "--l1", 1e-5]),
])
def test_every_method_trains_a_network(comm, mpi_shared_tmp, app, args):
    """30 steps of each method on the MLP and digits lower the training loss by a tenth or more
    (signSGD with one flipping worker from 2 ranks on; with one rank it is plain signSGD)."""
    import importlib

    if app == "signsgd" and comm.size < 3:
        args = args[:4]  # a Byzantine worker needs a majority of honest ones
    main = importlib.import_module(f"apps.{app}").main
    rc, t = run(comm, main, mpi_shared_tmp, "--model", "mlp", "--batch", 16, "--iters", 30,
                "--log-every", 30, *args)
    assert rc == EXIT_FINISHED
    if comm.rank == 0:
        loss = t["loss"]
        assert loss[-1] < 0.9 * loss[0], (app, loss)


def test_resume_with_batch_norm_equals_an_uninterrupted_run(comm, mpi_shared_tmp):
    """A CNN with batch norm: its running statistics (which the trace's loss and test accuracy
    use, in evaluation mode) are saved with the checkpoint, so stopping at step 13 and resuming
    gives the uninterrupted run's trace and model bit for bit."""
    import signal

    import mpicomp.run as run_module

    args = ["--model", "nn_models:tiny_cnn", "--iters", 24, "--log-every", 4, "--batch", 8,
            "--lr", 0.05, "--test-fraction", 0.2, "--compressor", "qsgd:s=2", "--per-layer"]
    whole_dir, cut_dir = mpi_shared_tmp / "whole", mpi_shared_tmp / "cut"
    if comm.rank == 0:
        whole_dir.mkdir(), cut_dir.mkdir()
    comm.Barrier()
    rc, whole = run(comm, apps.dcgd.main, whole_dir, *args)
    assert rc == EXIT_FINISHED

    def signal_at_13(step):
        if step == 12 and comm.rank == comm.size - 1:
            os.kill(os.getpid(), signal.SIGUSR2)

    rc, _ = run(comm, lambda argv, c: run_module.main("dcgd", argv, c, on_step=signal_at_13),
                cut_dir, *args)
    assert rc == run_module.EXIT_CHECKPOINTED
    if comm.rank == 0:
        import h5py

        with h5py.File(cut_dir / "run.ckpt.h5", "r") as f:
            saved = f[f"rank_{comm.size - 1:05d}"]
            mean = saved["buffer:1.running_mean"][()]
            assert "buffer:1.running_var" in saved and "buffer:1.num_batches_tracked" in saved
            assert mean.shape == (4,) and np.abs(mean).max() > 0  # statistics were gathered
    rc, resumed = run(comm, apps.dcgd.main, cut_dir, *args, "--resume")
    assert rc == EXIT_FINISHED
    if comm.rank == 0:
        for k, v in whole.columns.items():
            if k != "wall_time":
                np.testing.assert_array_equal(resumed[k], v, err_msg=k)
        np.testing.assert_array_equal(resumed.final_x, whole.final_x)
        # the bits per layer, carried over the checkpoint, sum to the run's uplink bits
        bits = json.loads(resumed.attrs["layer_bits_up"])
        assert bits == json.loads(whole.attrs["layer_bits_up"])
        assert sum(bits) == resumed["bits_up"][-1] and len(bits) == 6


MNIST_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")


@pytest.mark.parametrize("args,fragments", [
    (["--model", "alexnet"], ["unknown model 'alexnet'", "resnet20", "pkg.module:function"]),
    (["--model", "no_such_package.models:build"], ["no_such_package.models", "import"]),
    (["--model", "nn_models:integer_weights"], ["steps", "floating point", "int64"]),
    (["--model", "nn_models:not_a_module"], ["nn.Module", "str"]),
    (["--data", "mnist:{tmp}/absent"], ["absent", "does not exist"]),
    (["--data", "mnist:{tmp}/mnist"], ["train-images-idx3-ubyte", "magic"]),
])
def test_bad_models_and_image_files_fail_every_rank_with_one_message(comm, mpi_shared_tmp,
                                                                      capsys, args, fragments):
    if comm.rank == 0:  # an MNIST folder whose image file has the wrong magic number
        folder = mpi_shared_tmp / "mnist"
        folder.mkdir()
        for name in MNIST_NAMES:
            (folder / name).write_bytes(b"\x00\x00\x08\x01" + bytes(12))
    comm.Barrier()
    args = [a.format(tmp=mpi_shared_tmp) for a in args]
    rc, t = run(comm, apps.dcgd.main, mpi_shared_tmp, "--lr", 0.1, "--iters", 2, *args)
    assert rc == EXIT_BAD_INPUT
    failed_with(comm, t, capsys, *fragments)


def test_per_layer_bits_of_gossip_count_every_copy_and_sum_to_bits_up(comm, mpi_shared_tmp):
    rc, t = run(comm, apps.choco.main, mpi_shared_tmp, "--model", "mlp", "--lr", 0.1,
                "--compressor", "qsgd:s=4", "--per-layer", "--iters", 5, "--log-every", 5)
    assert rc == EXIT_FINISHED
    if comm.rank == 0:
        bits = json.loads(t.attrs["layer_bits_up"])
        assert len(bits) == 4 and sum(bits) == t["bits_up"][-1]  # degree copies of each message
        assert (sum(bits) > 0) == (comm.size > 1)
        assert t.attrs["compressor"] == "qsgd:s=4|layers=4"


@pytest.mark.parametrize("args,fragments", [
    (["--batch", 1, "--model", "nn_models:tiny_cnn"],
     ["--batch 1 cannot train nn_models:tiny_cnn", "batch norm"]),
    (["--per-layer", "--topology", "two-phase"], ["--per-layer needs --topology server"]),
])
def test_settings_a_network_cannot_use_are_refused(comm, mpi_shared_tmp, capsys, args,
                                                    fragments):
    rc, t = run(comm, apps.dcgd.main, mpi_shared_tmp, "--lr", 0.1, "--iters", 2, *args)
    assert rc == EXIT_BAD_INPUT
    failed_with(comm, t, capsys, *fragments)


def test_network_flags_without_the_network_problem_are_refused(comm, mpi_shared_tmp, capsys):
    trace = str(mpi_shared_tmp / "run.h5")
    rc = apps.dcgd.main(["--model", "resnet20", "--per-layer", "--trace", trace, "--progress",
                         "off"], comm)
    assert comm.allgather(rc) == [EXIT_BAD_INPUT] * comm.size
    failed_with(comm, None, capsys,
                "--model and --per-layer are for neural networks: add --problem nn")
    rc = apps.signsgd.main(["--problem", "nn", "--per-layer", "--trace", trace], comm)
    assert comm.allgather(rc) == [EXIT_BAD_INPUT] * comm.size  # signs: nothing per layer
    failed_with(comm, None, capsys, "unknown flag '--per-layer'")


def test_methods_that_need_a_smoothness_constant_ask_for_lr(comm, mpi_shared_tmp, capsys):
    rc, t = run(comm, apps.diana.main, mpi_shared_tmp, "--iters", 2)
    assert rc == EXIT_BAD_INPUT
    failed_with(comm, t, capsys, "lr=theory needs a smoothness constant", "--lr")
