"""One benchmark number: what every evaluation returns and benchmark_results stores."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

DATASET_SOURCES = ("real", "proxy", "fixture")


@dataclass(frozen=True)
class MetricRow:
    task: str  # truthfulqa_mc1 | ethics_cm | ... | hh | hh_a | another lm-eval task
    metric: str  # acc, acc_norm, score, score_expected, win_rate, unscored, ...
    value: float | None  # None only when nothing could be measured (e.g. every judgement was NULL)
    stderr: float | None
    n: int  # items behind the value
    dataset_source: str  # real | proxy (fixture: rows of the former stand-ins only)
    ci_low: float | None = None  # 95% interval
    ci_high: float | None = None
    ci_method: str | None = None  # wilson | bootstrap

    def __post_init__(self) -> None:
        if self.dataset_source not in DATASET_SOURCES:
            raise ValueError(f"{self.task}/{self.metric}: dataset_source must be one of {DATASET_SOURCES}, "
                             f"got {self.dataset_source!r}")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(f"{self.task}/{self.metric}: value {self.value} is not finite")
        if self.n < 0:
            raise ValueError(f"{self.task}/{self.metric}: n must be >= 0, got {self.n}")

    def as_dict(self) -> dict:
        return asdict(self)


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """(mean, sample standard deviation, standard error of the mean); None where undefined."""
    n = len(values)
    if n == 0:
        return None, None, None
    mean = sum(values) / n
    if n == 1:
        return mean, None, None
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, std, std / math.sqrt(n)
