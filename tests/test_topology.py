"""Graphs, mixing matrices and spectral gaps of mpicomp.comm.graphs (serial)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpicomp.comm import graphs as graphs_module
from mpicomp.comm.graphs import (
    BUILDERS,
    DENSE_GAP_MAX_NODES,
    Topology,
    build,
    make_graph,
    sparse_spectral_gap,
    spectral_gap,
)

SIZES = [1, 2, 3, 4, 7, 8, 16]
POW2 = [1, 2, 4, 8, 16]


def cycle_edges(k: int) -> int:
    """Edges of a cycle of length k after dropping self-loops and duplicates."""
    return 0 if k == 1 else 1 if k == 2 else k


def expected_edges(kind: str, topo: Topology) -> int:
    n = topo.n
    if kind == "ring":
        return cycle_edges(n)
    if kind == "torus":
        rows, cols = topo.params["rows"], topo.params["cols"]
        return rows * cycle_edges(cols) + cols * cycle_edges(rows)
    if kind == "hypercube":
        return n * int(math.log2(n)) // 2
    if kind == "complete":
        return n * (n - 1) // 2
    return n - 1  # star


def all_topologies():
    cases = [(k, n) for k in ("ring", "torus", "complete", "star") for n in SIZES]
    cases += [("hypercube", n) for n in POW2]
    cases += [("erdos_renyi:p=0.4,seed=7", n) for n in SIZES]
    return [pytest.param(make_graph(spec, n), id=f"{spec}-{n}") for spec, n in cases]


def second_magnitude(W):
    """|λ₂| from numpy.linalg.eigvals (general solver), independent of topology.spectral_gap."""
    mags = np.sort(np.abs(np.linalg.eigvals(W)))[::-1]
    return mags[1] if len(mags) > 1 else 0.0


# ----------------------------------------------------------------------------- graph shapes


@pytest.mark.parametrize("kind, n", [(k, n) for k in ("ring", "torus", "complete", "star")
                                     for n in SIZES] + [("hypercube", n) for n in POW2])
def test_edge_counts_degrees_and_connectivity(kind, n):
    topo = build(kind, n)
    assert topo.kind == kind and topo.n == n
    assert len(topo.edges) == expected_edges(kind, topo)
    assert topo.is_connected()
    deg = topo.degrees()
    assert deg.sum() == 2 * len(topo.edges)
    if kind == "ring" and n >= 3:
        assert (deg == 2).all()
    if kind == "hypercube":
        assert (deg == int(math.log2(n))).all()
        assert all(bin(i ^ j).count("1") == 1 for i, j in topo.edges)
    if kind == "complete":
        assert (deg == n - 1).all()
    if kind == "star" and n > 1:
        assert topo.neighbors(0) == list(range(1, n)) and (deg[1:] == 1).all()


@pytest.mark.parametrize("topo", all_topologies())
def test_edges_neighbors_and_adjacency_agree(topo):
    assert list(topo.edges) == sorted(set(topo.edges))
    assert all(i < j for i, j in topo.edges)
    A = topo.adjacency()
    assert A.shape == (topo.n, topo.n) and (A == A.T).all() and not A.diagonal().any()
    assert A.sum() == 2 * len(topo.edges)
    for i in range(topo.n):
        nb = topo.neighbors(i)
        assert nb == sorted(nb) == list(np.flatnonzero(A[i]))
        assert topo.degree(i) == len(nb)
        assert all(i in topo.neighbors(j) for j in nb)


@pytest.mark.parametrize("n, rows, cols", [(16, 4, 4), (8, 2, 4), (12, 3, 4), (7, 1, 7), (9, 3, 3)])
def test_torus_default_shape_is_the_most_square(n, rows, cols):
    topo = build("torus", n)
    assert (topo.params["rows"], topo.params["cols"]) == (rows, cols)
    if rows >= 3 and cols >= 3:
        assert len(topo.edges) == 2 * n and (topo.degrees() == 4).all()


def test_torus_rows_and_cols_and_wraparound():
    topo = make_graph("torus:rows=2", 8)
    assert (topo.params["rows"], topo.params["cols"]) == (2, 4)
    assert topo.neighbors(0) == [1, 3, 4]  # left/right wrap in the row, one vertical (2 rows)
    assert make_graph("torus:cols=2", 8).params["rows"] == 4
    assert build("torus", 1).edges == () and build("torus", 2).edges == ((0, 1),)
    assert build("torus", 4, rows=2).edges == ((0, 1), (0, 2), (1, 3), (2, 3))  # 2×2 = 4-cycle
    assert build("torus", 5, rows=1).edges == build("ring", 5).edges


def test_ring_small_sizes():
    assert build("ring", 1).edges == () and build("ring", 1).is_connected()
    assert build("ring", 2).edges == ((0, 1),)
    assert build("ring", 3).edges == ((0, 1), (0, 2), (1, 2))


# ----------------------------------------------------------------------------- mixing matrices


@pytest.mark.parametrize("weights", ["metropolis", "uniform"])
@pytest.mark.parametrize("topo", all_topologies())
def test_mixing_matrix_is_symmetric_doubly_stochastic_on_the_graph(topo, weights):
    W = topo.mixing_matrix(weights)
    assert W.shape == (topo.n, topo.n) and W.dtype == np.float64
    assert np.array_equal(W, W.T)
    assert np.abs(W.sum(axis=1) - 1).max() <= 1e-12 and np.abs(W.sum(axis=0) - 1).max() <= 1e-12
    assert (W >= 0).all()
    support = topo.adjacency() | np.eye(topo.n, dtype=bool)
    assert np.array_equal(W > 0, support)  # positive on edges and diagonal, zero elsewhere
    deg = topo.degrees()
    for i, j in topo.edges:
        want = 1 / (1 + max(deg[i], deg[j])) if weights == "metropolis" else 1 / (1 + deg.max())
        assert W[i, j] == want
    for i in range(topo.n):  # the per-rank row Gossip uses is the same, bit for bit
        row = topo.weight_row(i, weights)
        assert list(row) == sorted([i, *topo.neighbors(i)])
        assert all(W[i, j] == w for j, w in row.items())


@pytest.mark.parametrize("weights", ["metropolis", "uniform"])
@pytest.mark.parametrize("topo", all_topologies())
def test_spectral_gap_matches_independent_eigenvalues(topo, weights):
    W = topo.mixing_matrix(weights)
    gap = topo.spectral_gap(weights=weights)
    assert gap == spectral_gap(W) == topo.spectral_gap(W)
    assert abs(gap - (1 - second_magnitude(W))) <= 1e-12
    assert 0 < gap <= 1 + 1e-12  # connected, positive diagonal: no eigenvalue −1


@pytest.mark.parametrize("n", SIZES)
def test_complete_graph_metropolis_is_exact_averaging(n):
    W = build("complete", n).mixing_matrix("metropolis")
    assert np.abs(W - 1 / n).max() <= 1e-15
    assert build("complete", n).spectral_gap() == pytest.approx(1, abs=1e-12)


@pytest.mark.parametrize("n", [3, 4, 7, 8, 16, 33])
def test_ring_uniform_gap_closed_form(n):
    topo = build("ring", n)
    W = topo.mixing_matrix("uniform")
    assert np.abs(W[W > 0] - 1 / 3).max() <= 1e-15  # every node: itself and two neighbours
    lam = 1 / 3 + 2 / 3 * np.cos(2 * np.pi * np.arange(1, n) / n)
    assert topo.spectral_gap(weights="uniform") == pytest.approx(1 - np.abs(lam).max(), abs=1e-12)


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_hypercube_uniform_gap_closed_form(n):
    k = int(math.log2(n))  # eigenvalues (1 + k − 2m)/(1 + k), m = 0…k: |λ₂| = (k − 1)/(k + 1)
    assert (build("hypercube", n).spectral_gap(weights="uniform")
            == pytest.approx(2 / (k + 1), abs=1e-12))


def test_spectral_gap_edge_cases():
    assert spectral_gap(np.ones((1, 1))) == 1.0
    split = Topology("edges", 4, [(0, 1), (2, 3)])
    assert not split.is_connected() and split.components() == [[0, 1], [2, 3]]
    assert split.spectral_gap() == pytest.approx(0, abs=1e-12)  # λ = 1 twice
    # |λ₂| is a magnitude: a dominant negative eigenvalue sets the gap
    assert spectral_gap(np.array([[0.0, 1.0], [1.0, 0.0]])) == pytest.approx(0, abs=1e-15)
    W = np.full((3, 3), 0.45) - np.diag([0.35] * 3)  # eigenvalues 1, −0.35, −0.35
    assert spectral_gap(W) == pytest.approx(0.65, abs=1e-12)
    with pytest.raises(ValueError, match="symmetric"):
        spectral_gap(np.array([[0.5, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="metropolis, uniform"):
        build("ring", 4).mixing_matrix("max_degree")


@pytest.mark.parametrize("weights", ["metropolis", "uniform"])
@pytest.mark.parametrize("spec", ["ring", "torus", "hypercube", "star", "erdos_renyi:p=0.3,seed=1"])
def test_gossip_averaging_converges_at_the_spectral_rate(spec, weights):
    topo = make_graph(spec, 16)
    W = topo.mixing_matrix(weights)
    gap = topo.spectral_gap(W)
    rate = 1 - gap
    X = np.random.default_rng(0).standard_normal((16, 5))
    mean = X.mean(axis=0)
    err0 = np.linalg.norm(X - mean)
    steps = int(np.ceil(np.log(1e-8) / np.log(rate)))
    for t in range(1, steps + 1):
        X = W @ X
        assert np.abs(X.mean(axis=0) - mean).max() <= 1e-12  # the average is preserved
        # symmetric W contracts the disagreement by exactly |λ₂| per step, at most
        assert np.linalg.norm(X - mean) <= rate**t * err0 * (1 + 1e-9) + 1e-13
    assert np.linalg.norm(X - mean) <= 1e-8 * err0 * (1 + 1e-9) + 1e-13
    # and no faster: along the eigenvector of |λ₂| the disagreement shrinks by exactly 1 − gap
    lam, vec = np.linalg.eigh(W)
    v = vec[:, np.argsort(np.abs(lam))[-2]]
    assert abs(np.linalg.norm(W @ W @ v) - rate**2) <= 1e-12


# ----------------------------------------------------------------------------- sparse W and gap

LARGE = [65, 100, 256]  # above DENSE_GAP_MAX_NODES: the ARPACK path


def large_topologies():
    cases = [(k, n) for k in ("ring", "torus", "complete", "star", "erdos_renyi:p=0.1,seed=3")
             for n in LARGE]
    cases += [("torus:rows=5", 65), ("torus:rows=2", 100), ("hypercube", 128), ("hypercube", 256)]
    cases += [("erdos_renyi", 256), ("erdos_renyi:p=0.05,seed=1", 512)]  # default p: sparse
    return [pytest.param(spec, n, id=f"{spec}-{n}") for spec, n in cases]


@pytest.mark.parametrize("weights", ["metropolis", "uniform"])
@pytest.mark.parametrize("topo", all_topologies() + [
    pytest.param(make_graph(spec, n), id=f"{spec}-{n}")
    for spec, n in [("ring", 65), ("star", 100), ("erdos_renyi", 128)]
])
def test_sparse_mixing_matrix_equals_the_dense_one_bit_for_bit(topo, weights):
    S = topo.mixing_matrix_sparse(weights)
    assert S.shape == (topo.n, topo.n) and S.dtype == np.float64 and S.format == "csr"
    assert S.nnz == topo.n + 2 * len(topo.edges)  # the diagonal and both directions of each edge
    assert np.array_equal(S.toarray(), topo.mixing_matrix(weights))


def test_sparse_mixing_matrix_never_builds_the_dense_matrix(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the dense n × n matrix was built")

    monkeypatch.setattr(Topology, "mixing_matrix", refuse)
    monkeypatch.setattr(Topology, "adjacency", refuse)
    monkeypatch.setattr(np.linalg, "eigvalsh", refuse)
    monkeypatch.setattr(np.linalg, "eigh", refuse)
    n = 1024
    topo = build("ring", n)
    assert topo.mixing_matrix_sparse().nnz == 3 * n
    assert topo.spectral_gap() == pytest.approx(1 - (1 / 3 + 2 / 3 * math.cos(2 * math.pi / n)),
                                                abs=1e-12)


@pytest.mark.parametrize("weights", ["metropolis", "uniform"])
@pytest.mark.parametrize("spec, n", large_topologies())
def test_sparse_gap_equals_the_dense_gap(spec, n, weights):
    topo = make_graph(spec, n)
    dense = spectral_gap(topo.mixing_matrix(weights))
    sparse = topo.spectral_gap(weights=weights)
    assert sparse == sparse_spectral_gap(topo.mixing_matrix_sparse(weights))  # reproducible
    assert abs(sparse - dense) <= 1e-9
    assert 0 < sparse <= 1


@pytest.mark.parametrize("weights", ["metropolis", "uniform"])
@pytest.mark.parametrize("kind", ["ring", "torus", "star", "erdos_renyi"])
@pytest.mark.parametrize("n", [DENSE_GAP_MAX_NODES - 1, DENSE_GAP_MAX_NODES])
def test_up_to_the_threshold_the_gap_is_the_exact_dense_one(kind, n, weights):
    topo = build(kind, n)
    assert topo.spectral_gap(weights=weights) == spectral_gap(topo.mixing_matrix(weights))


@pytest.mark.parametrize("n", [3, 4, 5, 7, 16, 33, 64, 65, 100, 256, 1024])
def test_ring_metropolis_gap_closed_form(n):
    # every node has degree 2, so W is the circulant (1/3, 1/3, 1/3): λ_k = 1/3 + 2/3 cos(2πk/n).
    # |λ₂| is λ_1 = 1/3 + 2/3 cos(2π/n) ≥ 1/3 for n ≥ 4 (the most negative λ_k is ≥ −1/3); at
    # n = 3 every λ_k (k = 1, 2) is 0 and the formula gives that too: gap 1
    topo = build("ring", n)
    lam = 1 / 3 + 2 / 3 * np.cos(2 * np.pi * np.arange(1, n) / n)
    assert 1 - np.abs(lam).max() == pytest.approx(1 - (1 / 3 + 2 / 3 * math.cos(2 * math.pi / n)),
                                                  abs=1e-15)
    want = 1 - (1 / 3 + 2 / 3 * math.cos(2 * math.pi / n))
    assert topo.spectral_gap() == pytest.approx(want, abs=1e-12)
    assert topo.spectral_gap(weights="uniform") == pytest.approx(want, abs=1e-12)  # regular
    if n == 3:
        assert topo.spectral_gap() == pytest.approx(1, abs=1e-12)


@pytest.mark.parametrize("rows, cols", [(3, 3), (4, 5), (5, 13), (8, 8), (10, 10), (16, 16),
                                        (32, 32)])
def test_torus_metropolis_gap_closed_form(rows, cols):
    # degree 4 everywhere, w = 1/5: λ_ab = (1 + 2 cos(2πa/rows) + 2 cos(2πb/cols))/5
    topo = build("torus", rows * cols, rows=rows)
    a, b = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    lam = (1 + 2 * np.cos(2 * np.pi * a / rows) + 2 * np.cos(2 * np.pi * b / cols)) / 5
    want = 1 - np.sort(np.abs(lam).ravel())[-2]
    assert topo.spectral_gap() == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("n", [128, 1024])
def test_large_hypercube_and_complete_gap_closed_forms(n):
    k = int(math.log2(n))
    assert build("hypercube", n).spectral_gap(weights="uniform") == pytest.approx(2 / (k + 1),
                                                                                  abs=1e-12)
    if n <= 256:  # W = 11ᵀ/n: the deflated operator is 0
        assert build("complete", n).spectral_gap() == pytest.approx(1, abs=1e-12)


@pytest.mark.parametrize("weights", ["metropolis", "uniform"])
@pytest.mark.parametrize("edges", [
    pytest.param([(i, i + 1) for i in range(49)] + [(i, i + 1) for i in range(50, 119)],
                 id="two-paths"),
    pytest.param([(i, (i + 1) % 60) for i in range(60)] + [(60 + i, 60 + (i + 1) % 60)
                                                          for i in range(60)], id="two-rings"),
    pytest.param([(0, j) for j in range(1, 100)], id="star-and-isolated-nodes"),
])
def test_disconnected_graph_has_gap_zero_on_the_sparse_path(edges, weights):
    topo = Topology("edges", 120, edges)
    assert topo.n > DENSE_GAP_MAX_NODES and not topo.is_connected()
    assert topo.spectral_gap(weights=weights) == pytest.approx(0, abs=1e-12)
    assert spectral_gap(topo.mixing_matrix(weights)) == pytest.approx(0, abs=1e-12)


def test_sparse_gap_falls_back_to_dense_or_raises_when_arpack_does_not_converge(monkeypatch):
    from scipy.sparse import linalg

    def no_convergence(*args, **kwargs):
        raise linalg.ArpackNoConvergence("no convergence", np.array([]), np.array([]))

    topo = build("erdos_renyi", 100, p=0.1, seed=3)
    dense = spectral_gap(topo.mixing_matrix())
    monkeypatch.setattr(linalg, "eigsh", no_convergence)
    assert topo.spectral_gap() == dense  # n ≤ DENSE_FALLBACK_MAX_NODES: the dense solver answers
    monkeypatch.setattr(graphs_module, "DENSE_FALLBACK_MAX_NODES", 99)
    with pytest.raises(RuntimeError, match=r"did not converge to \|λ₂\| of the 100-node mixing "
                                           r"matrix \(tol=1e-12, 1000 restarts\)"):
        topo.spectral_gap()


def test_sparse_gap_checks_its_matrix():
    from scipy import sparse

    W = build("ring", 80).mixing_matrix_sparse().tolil()
    W[0, 1] += 0.1  # no longer symmetric
    with pytest.raises(ValueError, match="symmetric non-negative matrix with unit row sums"):
        sparse_spectral_gap(W)
    with pytest.raises(ValueError, match="unit row sums"):
        sparse_spectral_gap(2 * build("ring", 80).mixing_matrix_sparse())
    with pytest.raises(ValueError, match="unit row sums"):
        sparse_spectral_gap(sparse.eye(3, 4))
    assert sparse_spectral_gap(sparse.eye(1)) == 1.0
    assert sparse_spectral_gap(sparse.csr_array(np.full((3, 3), 1 / 3))) == pytest.approx(1)


# ----------------------------------------------------------------------------- Erdős–Rényi


@pytest.mark.parametrize("n", SIZES)
def test_erdos_renyi_is_seeded_and_connected(n):
    for seed in range(5):
        a = build("erdos_renyi", n, p=0.25, seed=seed)
        assert a == build("erdos_renyi", n, p=0.25, seed=seed)
        assert a.is_connected()
    assert build("erdos_renyi", n, p=1.0).edges == build("complete", n).edges
    assert build("erdos_renyi", n).is_connected()  # default p = 2 ln n / n


def test_erdos_renyi_seed_changes_the_graph_and_errors_are_clear():
    graphs = {make_graph(f"erdos_renyi:p=0.3,seed={s}", 16).edges for s in range(5)}
    assert len(graphs) == 5
    assert make_graph("erdos_renyi:p=0.3,seed=1", 16) == build("erdos_renyi", 16, p=0.3, seed=1)
    with pytest.raises(ValueError, match=r"no connected G\(n=16, p=0.01\) in 3 draws"):
        make_graph("erdos_renyi:p=0.01,tries=3", 16)
    for p in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
            build("erdos_renyi", 8, p=p)


# ----------------------------------------------------------------------------- spec strings


def test_spec_strings_and_errors():
    assert make_graph(" ring ", 5).edges == build("ring", 5).edges
    assert make_graph("torus:rows=2", 8) == build("torus", 8, rows=2)
    assert make_graph(make_graph("torus:rows=2", 8).spec, 8) == build("torus", 8, rows=2)
    assert make_graph(build("star", 4), 4).kind == "star"
    with pytest.raises(ValueError, match="has 4 nodes, expected 5"):
        make_graph(build("star", 4), 5)
    with pytest.raises(ValueError, match="choose one of " + ", ".join(BUILDERS)):
        make_graph("mesh", 4)
    with pytest.raises(ValueError, match="unknown parameter 'seed'; valid parameters: rows, cols"):
        make_graph("torus:seed=1", 4)
    with pytest.raises(ValueError, match="valid parameters: none"):
        build("ring", 4, p=0.5)
    with pytest.raises(ValueError, match="expected key=value, got 'rows'"):
        make_graph("torus:rows", 4)
    with pytest.raises(ValueError, match="edges:PATH"):
        make_graph("edges", 4)
    for n in (0, -3, 2.0):
        with pytest.raises(ValueError, match="n ≥ 1"):
            build("ring", n)


@pytest.mark.parametrize("n, lo, hi", [(3, 2, 4), (6, 4, 8), (12, 8, 16), (100, 64, 128)])
def test_hypercube_needs_a_power_of_two(n, lo, hi):
    with pytest.raises(ValueError, match=f"got n={n}; nearest: {lo} or {hi}"):
        build("hypercube", n)


def test_torus_bad_shape_names_n_and_valid_rows():
    with pytest.raises(ValueError, match="rows=3 does not divide n=8; valid rows: 1, 2, 4, 8"):
        make_graph("torus:rows=3", 8)
    with pytest.raises(ValueError,
                       match="cols=5 does not divide n=12; valid cols: 1, 2, 3, 4, 6, 12"):
        build("torus", 12, cols=5)
    with pytest.raises(ValueError, match="3 × 3 ≠ n = 12"):
        build("torus", 12, rows=3, cols=3)


# ----------------------------------------------------------------------------- edge-list files


def write(tmp_path, text, name="g.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_edge_list_file_with_comments_blanks_and_duplicates(tmp_path):
    path = write(tmp_path, "# a 5-node graph\n\n0 1\n1 2   # trailing comment\n  2 3\n3 4\n4 0\n"
                           "1 0\n\t\n0 2\n")
    topo = make_graph(f"edges:{path}", 5)
    assert topo.edges == ((0, 1), (0, 2), (0, 4), (1, 2), (2, 3), (3, 4))
    assert topo.neighbors(0) == [1, 2, 4] and topo.is_connected()
    assert make_graph(f"edges:path={path}", 5) == topo == build("edges", 5, path=path)
    assert make_graph(topo.spec, 5) == topo


@pytest.mark.parametrize("text, line, message", [
    ("0 1\n1 x\n", 2, "expected two node indices 'i j', got '1 x'"),
    ("# c\n0 1 2\n", 2, "expected two node indices"),
    ("0 1\n\n0\n", 3, "expected two node indices"),
    ("0 1\n1 2\n2 4\n", 3, "node index out of range in '2 4': nodes are 0…3 for n=4"),
    ("0 1\n-1 2\n", 2, "node index out of range"),
    ("0 1\n1 2\n2 2  # oops\n", 3, "self-loop 2 2"),
])
def test_edge_list_errors_name_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=f"{path}:{line}: ") as info:
        make_graph(f"edges:{path}", 4)
    assert message in str(info.value)


def test_edge_list_disconnected_names_component_sizes(tmp_path):
    path = write(tmp_path, "0 1\n1 2\n3 4\n")
    with pytest.raises(ValueError, match=r"not connected: components of sizes \[3, 2, 1\]; "
                                         r"e.g. node\(s\) \[3, 4\] cannot reach node 0") as info:
        make_graph(f"edges:{path}", 6)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match="cannot read the edge list .*missing.txt: No such file"):
        make_graph(f"edges:{tmp_path / 'missing.txt'}", 3)


def test_topology_constructor_validates_edges():
    with pytest.raises(ValueError, match="self-loop"):
        Topology("edges", 3, [(1, 1)])
    with pytest.raises(ValueError, match="outside 0…2"):
        Topology("edges", 3, [(0, 3)])
    t = Topology("edges", 3, [(2, 0), (0, 2), (1, 0)])
    assert t.edges == ((0, 1), (0, 2)) and "2 edges" in repr(t)
