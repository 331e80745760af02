"""The data the MPI tests share: small synthetic logistic-regression sets and the seed of the
ranks' random streams. The algorithms themselves are built with `mpicomp`'s public API
(`mpicomp.local_objective`, `mpicomp.make_algorithm`, `mpicomp.run_steps`, `mpicomp.trajectory`)."""

from __future__ import annotations

from mpicomp import make_synthetic

#: seed of `mpicomp.rank_generators` in the tests (and of their serial references' `Workers`)
SEED = 5


def dataset(n_ranks, n=None, d=12, h=1.0, density=1.0):
    # 37 samples per rank plus a remainder, so the shards differ in size and the weights matter
    return make_synthetic("logistic", n_samples=n or 37 * n_ranks + n_ranks // 2, n_features=d,
                          heterogeneity=h, groups=n_ranks, seed=3, density=density)
