"""k-means and the adjusted Rand index, for the synthetic-dots experiment (sec. 4.1)."""

import numpy as np
from scipy.cluster.vq import kmeans2


def kmeans(x: np.ndarray, k: int, restarts: int = 10, seed: int = 0) -> np.ndarray:
    """Lloyd's k-means (scipy ``kmeans2``, k-means++ init), best of ``restarts`` by inertia.

    Args:
        x: (P, D) points.
        k: number of clusters, 1 <= k <= P.

    Returns:
        (P,) int labels in [0, k).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not 1 <= k <= len(x):
        raise ValueError(f"kmeans: need (P, D) points with 1 <= k <= P, got {x.shape}, k={k}")
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(max(1, restarts)):
        centres, labels = kmeans2(x, k, minit="++", seed=rng)
        inertia = ((x - centres[labels]) ** 2).sum()
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best


def _pairs(n: np.ndarray) -> float:
    n = np.asarray(n, dtype=np.float64)
    return float((n * (n - 1) / 2).sum())


def adjusted_rand_index(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """Adjusted Rand index (Hubert and Arabie 1985) of two partitions of the same points.

    1 for identical partitions (up to renaming), about 0 for random ones. Two partitions that
    both put everything in one cluster (or both in singletons) score 1.

    Args:
        labels_true, labels_pred: (P,) integer labels.
    """
    a = np.unique(np.asarray(labels_true).ravel(), return_inverse=True)[1]
    b = np.unique(np.asarray(labels_pred).ravel(), return_inverse=True)[1]
    if a.shape != b.shape:
        raise ValueError(f"adjusted_rand_index: {a.shape} labels vs {b.shape}")
    n = len(a)
    table = np.zeros((a.max(initial=-1) + 1, b.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (a, b), 1)
    index = _pairs(table)
    sum_a, sum_b = _pairs(table.sum(axis=1)), _pairs(table.sum(axis=0))
    expected = sum_a * sum_b / _pairs(np.array([n])) if n > 1 else 0.0
    max_index = (sum_a + sum_b) / 2
    if max_index == expected:
        return 1.0
    return (index - expected) / (max_index - expected)
