"""Generated tabular landscapes with the shape of NAS-Bench-201, for tests and benchmarks.

Accuracy-like scores: per-edge op effects (convolutions help, ``none`` on the main path hurts,
as in NAS-Bench-201), pairwise interactions between edges, and noise, squashed into (0, 100).
Each seed gives a different landscape; every one of the 15,625 cells has an entry.
"""
from __future__ import annotations

import itertools

import numpy as np

from .spaces import NB201Space

# Mean effect of each op (none, skip, conv1x1, conv3x3, avg_pool), NAS-Bench-201-like ordering.
OP_PRIOR = np.array([-1.0, 0.2, 0.5, 1.0, -0.2])


def nb201_landscape(seed: int, interaction: float = 0.6, noise: float = 0.3) -> dict[str, dict[str, float]]:
    """``{canonical string: {"valid": v, "test": t}}`` for every nb201 cell."""
    space = NB201Space()
    rng = np.random.default_rng(seed)
    n_edges, n_ops = space.num_decisions, len(space.ops)
    unary = OP_PRIOR[None, :] + rng.normal(0, 0.5, (n_edges, n_ops))
    pair = rng.normal(0, interaction, (n_edges, n_edges, n_ops, n_ops))
    archs = np.array(list(itertools.product(range(n_ops), repeat=n_edges)))
    score = unary[np.arange(n_edges), archs].sum(1)
    for i, j in itertools.combinations(range(n_edges), 2):
        score += pair[i, j, archs[:, i], archs[:, j]]
    score += rng.normal(0, noise, len(archs))
    z = (score - score.mean()) / score.std()
    valid = 100.0 / (1.0 + np.exp(-(z * 1.2 + 1.5)))
    test = np.clip(valid + rng.normal(0, 1.0, len(archs)), 0, 100)
    return {space.to_string(a.tolist()): {"valid": round(float(v), 4), "test": round(float(t), 4)}
            for a, v, t in zip(archs, valid, test)}
