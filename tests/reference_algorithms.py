"""Serial references of the algorithms: n workers simulated in one process.

Written from SPEC §2 and §3 without the algorithm classes, the Communicator, the aggregators or
the gossip exchange:
worker r draws from ``rank_generators(seed, n, r)`` (the per-rank contract), encodes with the
same operators, and the mean of the decoded messages is taken in rank order in float64
(`mean_of`, the aggregators' definition, checked against MPI in test_comm_mpi). An MPI run of the
same configuration must produce the same iterates.
"""

from __future__ import annotations

import numpy as np

from mpicomp.algorithms import rank_generators
from mpicomp.comm.aggregate import mean_of
from mpicomp.compress import make_compressor
from mpicomp.problems import make_problem
from mpicomp.problems.data import shard


class Workers:
    """Shards, problems, weights ``n·m_r/N`` and generators of ``n`` simulated workers."""

    def __init__(self, dataset, n, problem="logistic", seed=0, l1=0.0, l2=0.0, seed_model=None,
                 **options):
        self.n = n
        self.shards = [shard(dataset, r, n) for r in range(n)]
        if seed_model is not None:  # a network's initial weights (its problem's ``seed``)
            options["seed"] = seed_model
        self.problems = [make_problem(problem, s.A, s.y, l1=l1, l2=l2, **options)
                         for s in self.shards]
        self.weights = [n * s.n_samples / dataset.n_samples for s in self.shards]
        self.rngs = [rank_generators(seed, n, r) for r in range(n)]
        self.l1 = l1

    def gradient(self, r, x, batch):
        p = self.problems[r]
        rows = None if batch == 0 else self.rngs[r][1].integers(0, p.n_samples, size=batch)
        g = p.grad(x, rows).copy()  # a network's gradient is its buffer, reused next call
        return g if self.weights[r] == 1.0 else self.weights[r] * g

    def prox(self, z, step):
        if not self.l1:
            return z
        return np.sign(z) * np.maximum(np.abs(z) - step * self.l1, 0)


def aggregate(op, topology, vectors, rngs, downlink=None):
    """``(mean, own decoded messages, bits sent by each worker)`` as the topology forms them."""
    n, d, dtype = len(vectors), vectors[0].size, vectors[0].dtype
    if topology in ("server", "allgather"):
        payloads = [op.encode(v, rng) for v, rng in zip(vectors, rngs)]
        mean, _ = mean_of(op, [p.buffer for p in payloads], d, dtype)
        mean = mean.copy()
        if downlink is not None:  # the server (rank 0) re-compresses with its generator
            mean = downlink.decode(downlink.encode(mean, rngs[0]).buffer, d, dtype)
        owns = [op.decode(p.buffer, d, dtype) for p in payloads]
        return mean, owns, [p.nbits for p in payloads]
    assert topology == "two-phase"
    down = downlink or op
    sizes = [len(c) for c in np.array_split(np.empty(d), n)]
    b = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    chunks = [[op.encode(v[b[q]:b[q + 1]], rng) for q in range(n)] for v, rng in zip(vectors, rngs)]
    mean = np.empty(d, dtype)
    for q in range(n):  # owner q averages chunk q and re-compresses it with its generator
        m, _ = mean_of(op, [chunks[r][q].buffer for r in range(n)], sizes[q], dtype)
        mean[b[q]:b[q + 1]] = down.decode(down.encode(m, rngs[q]).buffer, sizes[q], dtype)
    owns = [np.concatenate([op.decode(c.buffer, sizes[q], dtype) for q, c in enumerate(row)])
            for row in chunks]
    return mean, owns, [sum(c.nbits for c in row) for row in chunks]


def run_dcgd(workers, x0, compressor, topology, lr, iters, batch=0, downlink=None):
    """Iterates ``x⁰ … x^T`` of DCGD: ``x ← prox(x − γ·(1/n)Σ C(g_r))``."""
    op, down = make_compressor(compressor), (make_compressor(downlink) if downlink else None)
    x, xs = x0.copy(), [x0.copy()]
    for _ in range(iters):
        grads = [workers.gradient(r, x, batch).astype(x.dtype) for r in range(workers.n)]
        mean, _, _ = aggregate(op, topology, grads, [g[0] for g in workers.rngs], down)
        x = workers.prox(x - lr * mean, lr)
        xs.append(x.copy())
    return xs


def run_diana(workers, x0, compressor, topology, lr, alpha, iters, momentum=0.0, batch=0,
              downlink=None):
    """Iterates of DIANA (SPEC §2.2) with zero initial shifts."""
    op, down = make_compressor(compressor), (make_compressor(downlink) if downlink else None)
    n = workers.n
    x, xs = x0.copy(), [x0.copy()]
    h = [np.zeros_like(x0) for _ in range(n)]
    h_mean, v = np.zeros_like(x0), np.zeros_like(x0)
    for _ in range(iters):
        deltas = [workers.gradient(r, x, batch).astype(x.dtype) - h[r] for r in range(n)]
        mean, owns, _ = aggregate(op, topology, deltas, [g[0] for g in workers.rngs], down)
        for r in range(n):
            h[r] = h[r] + alpha * owns[r]
        g_hat = h_mean + mean
        h_mean = h_mean + alpha * mean
        v = momentum * v + g_hat if momentum else g_hat
        x = workers.prox(x - lr * v, lr)
        xs.append(x.copy())
    return xs


def run_efsgd(workers, x0, compressor, topology, lr, iters, batch=0, downlink=None):
    """Iterates and error memories of EF-SGD (SPEC §1.5): ``p_r = γg_r + e_r``,
    ``e_r ← p_r − C(p_r)``, ``x ← prox(x − (1/n)Σ C(p_r))``."""
    op, down = make_compressor(compressor), (make_compressor(downlink) if downlink else None)
    x, xs = x0.copy(), [x0.copy()]
    e = [np.zeros_like(x0) for _ in range(workers.n)]
    errors = [[v.copy() for v in e]]
    for _ in range(iters):
        p = [lr * workers.gradient(r, x, batch).astype(x.dtype) + e[r] for r in range(workers.n)]
        mean, owns, _ = aggregate(op, topology, p, [g[0] for g in workers.rngs], down)
        e = [p[r] - owns[r] for r in range(workers.n)]
        x = workers.prox(x - mean, lr)
        xs.append(x.copy())
        errors.append([v.copy() for v in e])
    return xs, errors


def run_signum(workers, x0, lr, iters, momentum=0.0, weight_decay=0.0, batch=0, byzantine=0,
               attack="flip"):
    """Iterates of Signum with majority vote (SPEC §2.3), written from the definition: the
    last ``byzantine`` workers send ``−sign(m_r)`` or random signs; ties vote +1."""
    n = workers.n
    x, xs = x0.copy(), [x0.copy()]
    m = [np.zeros_like(x0) for _ in range(n)]
    for _ in range(iters):
        total = np.zeros(x0.size)
        for r in range(n):
            m[r] = momentum * m[r] + (1 - momentum) * workers.gradient(r, x, batch).astype(x.dtype)
            s = np.where(m[r] < 0, -1.0, 1.0)
            if r >= n - byzantine:
                s = (-s if attack == "flip"
                     else 2.0 * workers.rngs[r][0].integers(0, 2, size=s.size) - 1.0)
            total += s
        vote = np.where(total < 0, -1.0, 1.0).astype(x.dtype)
        x = workers.prox(x - lr * (vote + weight_decay * x), lr)
        xs.append(x.copy())
    return xs


def run_qadam(workers, x0, compressor, lr, iters, beta1=0.9, beta2=0.999, eps=1e-8,
              error_feedback=True, weight_quant=None, batch=0):
    """Weights the workers hold at each step of quantised Adam (SPEC §2.5); the server is
    worker 0, whose generator also draws ``Q_x``'s rounding after its own message."""
    op, wq = make_compressor(compressor), make_compressor(weight_quant or "identity")
    n, d, dtype = workers.n, x0.size, x0.dtype
    server = x0.copy()
    x = wq.decode(wq.encode(server, workers.rngs[0][0]).buffer, d, dtype)
    xs = [x.copy()]
    m = [np.zeros_like(x0) for _ in range(n)]
    v = [np.zeros_like(x0) for _ in range(n)]
    e = [np.zeros_like(x0) for _ in range(n)]
    for _ in range(iters):
        payloads = []
        for r in range(n):
            g = workers.gradient(r, x, batch).astype(dtype)
            m[r] = beta1 * m[r] + (1 - beta1) * g
            v[r] = beta2 * v[r] + (1 - beta2) * g * g
            delta = lr * m[r] / (np.sqrt(v[r]) + eps) + (e[r] if error_feedback else 0)
            payloads.append(op.encode(delta, workers.rngs[r][0]))
            if error_feedback:
                e[r] = delta - op.decode(payloads[-1].buffer, d, dtype)
        mean, _ = mean_of(op, [p.buffer for p in payloads], d, dtype)
        server = server - mean
        x = wq.decode(wq.encode(server, workers.rngs[0][0]).buffer, d, dtype)
        xs.append(x.copy())
    return xs


def step_size(lr, schedule, t):
    return lr if schedule == "constant" else lr / np.sqrt(t + 1)


def run_dpsgd(workers, W, x0, lr, iters, order="adapt-combine", schedule="constant", batch=0):
    """Models ``X[t][r]`` of D-PSGD (SPEC §3.2) with the dense mixing matrix ``W``:
    ``X ← prox(W(X − ηG))`` (adapt-combine) or ``prox(WX − ηG)`` (combine-adapt)."""
    n = workers.n
    X = np.tile(x0, (n, 1))
    Xs = [X.copy()]
    for t in range(iters):
        eta = step_size(lr, schedule, t)
        G = np.stack([workers.gradient(r, X[r], batch).astype(x0.dtype) for r in range(n)])
        Z = W @ (X - eta * G) if order == "adapt-combine" else W @ X - eta * G
        X = np.stack([workers.prox(z, eta) for z in Z]).astype(x0.dtype)
        Xs.append(X.copy())
    return Xs


def run_choco(workers, W, x0, compressor, lr, gamma, tau, iters, schedule="constant", batch=0):
    """Models ``X[t][r]`` and the bits each worker sends per step of CHOCO-SGD / Malcom-PSGD
    (SPEC §3.3–3.4), with public copies ``X̂`` of every worker and the gossip term
    ``Σ_j w_rj (x̂_j − x̂_r)`` summed over the graph directly; ``x̂ = 0`` at the start."""
    op = make_compressor(compressor)
    n = workers.n
    X = np.tile(x0, (n, 1))
    X_hat = np.zeros_like(X)
    Xs, bits = [X.copy()], []
    degree = (W > 0).sum(axis=1) - 1
    for t in range(iters):
        eta = step_size(lr, schedule, t)
        half = np.stack([X[r] - eta * workers.gradient(r, X[r], batch).astype(x0.dtype)
                         for r in range(n)])
        payloads = [op.encode(half[r] - X_hat[r], workers.rngs[r][0]) for r in range(n)]
        Q = np.stack([op.decode(p.buffer, x0.size, x0.dtype) / tau for p in payloads])
        X_hat = X_hat + Q
        Z = half + gamma * np.stack([
            sum(W[r, j] * (X_hat[j] - X_hat[r]) for j in range(n) if W[r, j])
            for r in range(n)
        ])
        X = np.stack([workers.prox(z, eta) for z in Z]).astype(x0.dtype)
        Xs.append(X.copy())
        bits.append([p.nbits * int(degree[r]) for r, p in enumerate(payloads)])
    return Xs, bits
