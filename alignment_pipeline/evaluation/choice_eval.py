"""Score one multiple-choice task on a model: per-item verdicts as lm-eval computes them (acc: highest summed
log-likelihood; acc_norm: highest log-likelihood per character of the choice; ties to the first choice, as
numpy's argmax), the cell's value with its Wilson 95% interval."""

from __future__ import annotations

import math
from dataclasses import dataclass

from alignment_pipeline.evaluation.choice_tasks import CHOICE_TASKS, ChoiceItem
from alignment_pipeline.evaluation.data import sample_ids
from alignment_pipeline.evaluation.loglik import LoglikScorer
from alignment_pipeline.evaluation.metrics import MetricRow
from alignment_pipeline.evaluation.stats import wilson


@dataclass(frozen=True)
class ItemResult:
    task: str
    metric: str
    file: str
    item_id: int
    prediction: str | None
    value: float | None
    correct: bool | None


def select_items(task: str, limit: int | None, seed: int) -> list[ChoiceItem]:
    items = CHOICE_TASKS[task].items()
    return [items[k] for k in sample_ids(task, list(range(len(items))), limit, seed)]


def verdicts(item: ChoiceItem, lls: list[float]) -> dict[str, int]:
    norm = [ll / len(choice) for ll, choice in zip(lls, item.choices, strict=True)]
    return {"acc": _argmax(lls), "acc_norm": _argmax(norm)}


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda k: (values[k], -k))


def run_choice_task(scorer: LoglikScorer, task: str, *, limit: int | None = None,
                    seed: int = 0) -> tuple[list[MetricRow], list[ItemResult]]:
    spec = CHOICE_TASKS[task]
    items = select_items(task, limit, seed)
    scored = scorer.score([item.requests() for item in items])
    per_item: list[ItemResult] = []
    for item, row in zip(items, scored, strict=True):
        picks = verdicts(item, [ll for ll, _ in row])
        for metric in spec.metrics:
            ok = picks[metric] == item.gold
            per_item.append(ItemResult(task, metric, item.file, item.item_id, str(picks[metric]), float(ok), ok))
    return [accuracy_row(task, metric, [r.value for r in per_item if r.metric == metric], spec.source)
            for metric in spec.metrics], per_item


def accuracy_row(task: str, metric: str, values: list[float], source: str) -> MetricRow:
    n = len(values)
    ci = wilson(sum(values), n)
    stderr = math.sqrt(ci.value * (1 - ci.value) / (n - 1)) if n > 1 else None  # lm-eval's sample stderr
    return MetricRow(task, metric, ci.value, stderr, n, source, ci.low, ci.high, ci.method)
