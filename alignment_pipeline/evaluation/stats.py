"""Uncertainty of a benchmark cell and of a checkpoint's difference from the base model on the same items.

- accuracy: Wilson score 95% interval;
- mean judge score / win rate / reward: percentile bootstrap 95% interval over items;
- paired difference (checkpoint − base, items in both): mean, paired bootstrap 95% interval (items resampled
  together); for accuracies also McNemar's exact test on the discordant pairs. A difference is marked where its
  interval excludes zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054
BOOTSTRAP_ITERS = 2000


@dataclass(frozen=True)
class Interval:
    value: float | None
    low: float | None
    high: float | None
    n: int
    method: str  # wilson | bootstrap


@dataclass(frozen=True)
class PairedDiff:
    n: int
    diff: float | None
    low: float | None
    high: float | None
    p_value: float | None  # McNemar (accuracies) or the bootstrap's two-sided share (scores)
    test: str  # mcnemar | bootstrap

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def wilson(successes: float, n: int, z: float = Z95) -> Interval:
    if n == 0:
        return Interval(None, None, None, 0, "wilson")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), n, "wilson")


def bootstrap_mean(values: Sequence[float], *, seed: int = 0, iters: int = BOOTSTRAP_ITERS) -> Interval:
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Interval(None, None, None, 0, "bootstrap")
    if x.size == 1:
        return Interval(float(x[0]), None, None, 1, "bootstrap")
    means = _resampled_means(x, seed, iters)
    return Interval(float(x.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)),
                    int(x.size), "bootstrap")


def _resampled_means(x: np.ndarray, seed: int, iters: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return x[rng.integers(0, x.size, size=(iters, x.size))].mean(axis=1)


def paired_difference(base: Sequence[float], other: Sequence[float], *, binary: bool, seed: int = 0,
                      iters: int = BOOTSTRAP_ITERS) -> PairedDiff:
    """other − base over paired items (same order)."""
    b, o = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    if b.shape != o.shape:
        raise ValueError(f"{b.size} base items but {o.size} paired items")
    n = int(b.size)
    if n == 0:
        return PairedDiff(0, None, None, None, None, "mcnemar" if binary else "bootstrap")
    d = o - b
    if n == 1:
        return PairedDiff(1, float(d[0]), None, None, None, "mcnemar" if binary else "bootstrap")
    means = _resampled_means(d, seed, iters)
    low, high = float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
    if binary:
        p = mcnemar_exact(int(((b == 0) & (o == 1)).sum()), int(((b == 1) & (o == 0)).sum()))
        return PairedDiff(n, float(d.mean()), low, high, p, "mcnemar")
    share = min(float((means <= 0).mean()), float((means >= 0).mean()))
    return PairedDiff(n, float(d.mean()), low, high, min(1.0, 2 * share), "bootstrap")


def mcnemar_exact(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs under Binomial(gained + lost, 1/2)."""
    from scipy.stats import binomtest

    total = gained + lost
    if total == 0:
        return 1.0
    return float(binomtest(gained, total, 0.5).pvalue)
