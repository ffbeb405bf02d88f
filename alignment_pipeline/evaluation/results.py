"""Evaluate one checkpoint end to end and store it: every task on one loaded model, per-item results, cells with
their intervals and the paired comparison with the base model, in one transaction, and onto its MLflow run."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from alignment_pipeline.evaluation.choice_eval import ItemResult, run_choice_task
from alignment_pipeline.evaluation.choice_tasks import CHOICE_TASKS
from alignment_pipeline.evaluation.config import EvaluationConfig
from alignment_pipeline.evaluation.judge import (
    REWARD_MODEL_METRIC,
    HHResult,
    Judgement,
    generate_answers,
    interval_row,
    pairwise_wins,
    reward_model_scores,
    score_answers,
    summarise,
)
from alignment_pipeline.evaluation.metrics import MetricRow
from alignment_pipeline.evaluation.stats import paired_difference
from alignment_pipeline.llm.base import LLMBackend
from alignment_pipeline.warehouse.db import Warehouse, insert_frame

logger = logging.getLogger("alignment_pipeline.evaluation")

JUDGE_TASKS = ("hh", "hh_a")
BINARY_METRICS = ("acc", "acc_norm")
KINDS_HELP = "base, baseline, reference, or a stage name starting with 'stage'"
_KIND = re.compile(r"^(base|baseline|reference|stage.*)$")

RESULT_SCHEMA = {
    "checkpoint": pl.String, "kind": pl.String, "task": pl.String, "metric": pl.String, "value": pl.Float64,
    "stderr": pl.Float64, "n": pl.Int32, "ci_low": pl.Float64, "ci_high": pl.Float64, "ci_method": pl.String,
    "dataset_source": pl.String, "model_path": pl.String, "judge_model": pl.String, "self_judged": pl.Boolean,
    "evaluated_at": pl.Datetime("us"),
}
JUDGEMENT_SCHEMA = {
    "checkpoint": pl.String, "task": pl.String, "file": pl.String, "item_id": pl.Int32, "request": pl.String,
    "answer": pl.String, "score": pl.Float64, "score_expected": pl.Float64, "method": pl.String,
    "null_reason": pl.String, "judge_calls": pl.Int32, "win": pl.Float64, "judge_model": pl.String,
    "self_judged": pl.Boolean, "evaluated_at": pl.Datetime("us"),
}
ITEM_SCHEMA = {
    "checkpoint": pl.String, "task": pl.String, "metric": pl.String, "file": pl.String, "item_id": pl.Int32,
    "prediction": pl.String, "value": pl.Float64, "correct": pl.Boolean, "evaluated_at": pl.Datetime("us"),
}


@dataclass
class EvalReport:
    checkpoint: str
    kind: str
    model_path: str
    rows: list[MetricRow]
    judgements: dict[str, list[Judgement]]  # hh / hh_a -> every judgement
    judge_model: str | None
    evaluated_at: datetime
    rows_written: int
    seconds: dict[str, float] = field(default_factory=dict)  # per task, load, ...
    self_judged: bool = False
    seeded_removed: dict[str, int] = field(default_factory=dict)  # hh / hh_a -> prompts left out
    items: list[ItemResult] = field(default_factory=list)
    dtype: str | None = None  # what the evaluated model computed in

    def value(self, task: str, metric: str) -> float | None:
        for row in self.rows:
            if row.task == task and row.metric == metric:
                return row.value
        raise KeyError(f"no {task}/{metric} in the report of {self.checkpoint}")

    def metadata(self) -> dict:
        """Plain JSON-able values for display: every metric as `bench/<task>/<metric>` plus context."""
        meta: dict = {
            "checkpoint": self.checkpoint, "kind": self.kind, "model_path": self.model_path,
            "judge_model": self.judge_model, "self_judged": self.self_judged,
            "evaluated_at": self.evaluated_at.isoformat(), "rows_written": self.rows_written,
            "dataset_sources": {r.task: r.dataset_source for r in self.rows},
            "seeded_prompts_removed": self.seeded_removed, "dtype": self.dtype,
        }
        for row in self.rows:
            meta[f"bench/{row.task}/{row.metric}"] = row.value
            meta[f"bench/{row.task}/{row.metric}/n"] = row.n
            if row.ci_low is not None:
                meta[f"bench/{row.task}/{row.metric}/ci95"] = [round(row.ci_low, 4), round(row.ci_high, 4)]
        for phase, seconds in self.seconds.items():
            meta[f"seconds/{phase}"] = round(seconds, 2)
        return meta


def validate_kind(kind: str) -> str:
    if not _KIND.match(kind):
        raise ValueError(f"kind {kind!r} is not one of: {KINDS_HELP}")
    return kind


def checkpoint_kind(name: str) -> str:
    """The benchmark kind of a model: `base`; its role in training/stages.py (`stage` for a curriculum stage,
    `baseline`; the positive control is a `reference`: a point to read the methods against, not a method); any
    other trained model is a `baseline`."""
    from alignment_pipeline.training.stages import CHECKPOINT_KINDS, checkpoint

    if name == "base":
        return name
    if name not in CHECKPOINT_KINDS:
        return "baseline"
    role = checkpoint(name).role
    return "reference" if role == "control" else role


def evaluate_checkpoint(warehouse: Warehouse, *, checkpoint: str, kind: str, model_path: str,
                        config: EvaluationConfig, judge: LLMBackend | None, now: datetime | None = None,
                        reward_model_path: str | None = None, base_models: Sequence[str] = ()) -> EvalReport:
    """Run `config.tasks` on the model at `model_path`, loaded once: multiple-choice tasks by the shared-context
    scorer, `hh` / `hh_a` answered by it and scored by `judge` (the base model's stored answers as the pairwise
    opponent; given `reward_model_path`, that reward model's scores too). `base_models` name the base model: a
    judge named like it, or like the evaluated model, makes the judge rows `self_judged`. Then, in one
    transaction, this checkpoint's rows of the evaluated tasks are replaced and its comparison with base
    recomputed (every checkpoint's, when it is base)."""
    validate_kind(kind)
    if not checkpoint:
        raise ValueError("checkpoint must be a non-empty name")
    choice = [t for t in config.tasks if t in CHOICE_TASKS]
    judged = [t for t in config.tasks if t in JUDGE_TASKS]
    if judged and judge is None:
        raise ValueError(f"tasks {judged} are judge-scored: pass a judge backend")
    other = [t for t in config.tasks if t not in CHOICE_TASKS and t not in JUDGE_TASKS]
    seconds: dict[str, float] = {}
    rows: list[MetricRow] = []
    items: list[ItemResult] = []
    results: list[HHResult] = []
    seeded_removed: dict[str, int] = {}
    dtype = None
    self_judged = bool(judged) and _is_self_judged(warehouse, judge.model_name, checkpoint, model_path, base_models)
    if choice or judged:
        from alignment_pipeline.evaluation.loglik import LoglikScorer
        from alignment_pipeline.llm.hf import HFBackend

        started = time.perf_counter()
        model = HFBackend(model_path, device=config.device, dtype=config.dtype,
                          batch_size=config.generation_batch_size)
        seconds["load"] = time.perf_counter() - started
        try:
            scorer = LoglikScorer(model.model, model.tokenizer)
            dtype = str(model.dtype).removeprefix("torch.")
            for task in choice:
                started = time.perf_counter()
                task_rows, task_items = run_choice_task(scorer, task, limit=config.limit, seed=config.seed)
                rows += task_rows
                items += task_items
                seconds[task] = time.perf_counter() - started
            answered = {}
            if judged:
                # Every judged task's prompts in one generate call: a decode step costs about the same for 16 rows
                # as for 32 on a CPU.
                started = time.perf_counter()
                selected = {}
                for task in judged:
                    selected[task], seeded_removed[task] = _judge_items(warehouse, task, config)
                flat = [item for task in judged for item in selected[task]]
                answers = iter(generate_answers(model, flat, max_new_tokens=config.max_new_tokens))
                answered = {task: (selected[task], [next(answers) for _ in selected[task]]) for task in judged}
                seconds["answers"] = time.perf_counter() - started
        finally:
            model.close()
        for task in judged:
            started = time.perf_counter()
            selected, answers = answered[task]
            judgements = _judge(warehouse, judge, task, selected, answers, config,
                                compare=config.pairwise and checkpoint != "base")
            task_rows = summarise(task, judgements, seed=config.seed)
            results.append(HHResult(task, task_rows, judgements, judge.model_name))
            rows += task_rows
            items += _judgement_items(task, judgements)
            seconds[f"{task}/judge"] = time.perf_counter() - started
        if reward_model_path and results:
            from alignment_pipeline.training.reward_model import RewardScorer

            started = time.perf_counter()
            rm = RewardScorer(reward_model_path, device=config.device, batch_size=config.generation_batch_size)
            for result in results:
                scores = reward_model_scores(result.judgements, rm)
                rows.append(interval_row(result.task, REWARD_MODEL_METRIC, scores, seed=config.seed))
                items += [ItemResult(result.task, REWARD_MODEL_METRIC, j.file, j.item_id, None, s, None)
                          for j, s in zip(result.judgements, scores, strict=True)]
            seconds["reward_model"] = time.perf_counter() - started
    if other:
        from alignment_pipeline.evaluation.harness import run_lm_eval

        started = time.perf_counter()
        rows += run_lm_eval(model_path, other, limit=config.limit, batch_size=config.batch_size, device=config.device)
        seconds["lm_eval"] = time.perf_counter() - started
    evaluated_at = now or datetime.now(timezone.utc).replace(tzinfo=None)
    written = write_results(warehouse, checkpoint=checkpoint, kind=kind, model_path=model_path, rows=rows,
                            hh_results=results, evaluated_at=evaluated_at, tasks=config.tasks, items=items,
                            self_judged=self_judged)
    return EvalReport(checkpoint, kind, model_path, rows, {r.task: r.judgements for r in results},
                      judge.model_name if judged else None, evaluated_at, written, seconds, self_judged,
                      seeded_removed, items, dtype)


def _is_self_judged(warehouse: Warehouse, judge: str, checkpoint: str, model_path: str,
                    base_models: Sequence[str]) -> bool:
    """Whether the judge is the evaluated model or a model it was trained from (its checkpoints row's base model,
    up the lineage), compared by name, path or directory name."""
    names = {checkpoint, model_path, *base_models}
    current = checkpoint
    for _ in range(32):  # a lineage is a few stages deep; the bound guards a cyclic table
        row = warehouse.query("SELECT base_model, parent_checkpoint FROM checkpoints WHERE name = ?", [current])
        if row.height == 0:
            break
        names.add(row["base_model"][0])
        if row["parent_checkpoint"][0] is None:
            break
        current = row["parent_checkpoint"][0]
    keys = {n.rstrip("/") for n in names if n} | {Path(n.rstrip("/")).name for n in names if n}
    return judge.rstrip("/") in keys or Path(judge.rstrip("/")).name in keys


def _judge_items(warehouse: Warehouse, task: str, config: EvaluationConfig):
    from alignment_pipeline.evaluation.data import sample_ids
    from alignment_pipeline.evaluation.hh_data import hh_a_items, hh_items

    seeded = warehouse.query("SELECT text FROM prompts")["text"].to_list()
    built = (hh_items if task == "hh" else hh_a_items)(seeded)
    picks = sample_ids(task, list(range(len(built.items))), config.hh_limit, config.seed)
    return [built.items[k] for k in picks], built.seeded_removed


def _judge(warehouse: Warehouse, judge: LLMBackend, task: str, items, answers, config: EvaluationConfig, *,
           compare: bool) -> list[Judgement]:
    """Judgements, reusing any stored judgement of the same answer by the same judge (the base model's are
    computed once), then the pairwise wins against the base model's stored answers."""
    stored = warehouse.query(
        "SELECT file, item_id, answer, score, score_expected, method FROM benchmark_judgements "
        "WHERE task = ? AND judge_model = ? AND score IS NOT NULL", [task, judge.model_name])
    known = {(r["file"], r["item_id"], r["answer"]): r for r in stored.iter_rows(named=True)}
    todo = [k for k, (i, a) in enumerate(zip(items, answers, strict=True)) if (i.file, i.item_id, a) not in known]
    fresh = iter(score_answers(judge, [items[k] for k in todo], [answers[k] for k in todo],
                               max_reasks=config.judge_max_reasks)) if todo else iter(())
    judgements = []
    for k, (item, answer) in enumerate(zip(items, answers, strict=True)):
        if k in todo:
            judgements.append(next(fresh))
        else:
            r = known[(item.file, item.item_id, answer)]
            judgements.append(Judgement(item.file, item.item_id, item.request, answer, r["score"],
                                        r["score_expected"], r["method"], None, 0))
    if not compare:
        return judgements
    base = warehouse.query("SELECT file, item_id, answer FROM benchmark_judgements WHERE checkpoint = 'base' "
                           "AND task = ?", [task])
    base_answers = {(r["file"], r["item_id"]): r["answer"] for r in base.iter_rows(named=True)}
    wins = pairwise_wins(judge, items, answers, [base_answers.get((i.file, i.item_id)) for i in items])
    return [Judgement(**{**j.as_dict(), "win": w}) for j, w in zip(judgements, wins, strict=True)]


def _judgement_items(task: str, judgements: Sequence[Judgement]) -> list[ItemResult]:
    out = []
    for j in judgements:
        for metric, value in (("score", j.score), ("score_expected", j.score_expected), ("win_rate", j.win)):
            if value is not None or metric == "score":
                out.append(ItemResult(task, metric, j.file, j.item_id, None if value is None else f"{value:g}",
                                      value, None))
    return out


def write_results(warehouse: Warehouse, *, checkpoint: str, kind: str, model_path: str | None,
                  rows: Sequence[MetricRow], hh_results: Sequence[HHResult], evaluated_at: datetime,
                  tasks: Sequence[str], items: Sequence[ItemResult] = (), self_judged: bool = False) -> int:
    """Replace `checkpoint`'s rows of `tasks` in benchmark_results, benchmark_judgements and benchmark_items, and
    its comparisons with base (all checkpoints' when it is base), in one transaction. Returns the
    benchmark_results rows written."""
    validate_kind(kind)
    stored_tasks = sorted(set(tasks) | {r.task for r in rows})
    judge_of = {r.task: r.judge_model for r in hh_results}
    results = pl.DataFrame([
        {"checkpoint": checkpoint, "kind": kind, "task": r.task, "metric": r.metric, "value": r.value,
         "stderr": r.stderr, "n": r.n, "ci_low": r.ci_low, "ci_high": r.ci_high, "ci_method": r.ci_method,
         "dataset_source": r.dataset_source, "model_path": model_path, "judge_model": judge_of.get(r.task),
         "self_judged": self_judged and r.task in judge_of, "evaluated_at": evaluated_at}
        for r in rows
    ], schema=RESULT_SCHEMA)
    judgements = pl.DataFrame([
        {"checkpoint": checkpoint, "task": res.task, **j.as_dict(), "judge_model": res.judge_model,
         "self_judged": self_judged, "evaluated_at": evaluated_at}
        for res in hh_results for j in res.judgements
    ], schema=JUDGEMENT_SCHEMA)
    per_item = pl.DataFrame([
        {"checkpoint": checkpoint, "task": i.task, "metric": i.metric, "file": i.file, "item_id": i.item_id,
         "prediction": i.prediction, "value": i.value, "correct": i.correct, "evaluated_at": evaluated_at}
        for i in items
    ], schema=ITEM_SCHEMA)
    placeholders = ", ".join("?" for _ in stored_tasks) or "NULL"
    with warehouse.transaction() as con:
        for table in ("benchmark_results", "benchmark_judgements", "benchmark_items", "benchmark_comparisons"):
            con.execute(f"DELETE FROM {table} WHERE checkpoint = ? AND task IN ({placeholders})",
                        [checkpoint, *stored_tasks])
        con.execute("UPDATE benchmark_results SET kind = ? WHERE checkpoint = ?", [kind, checkpoint])
        written = insert_frame(con, "benchmark_results", results)
        insert_frame(con, "benchmark_judgements", judgements)
        insert_frame(con, "benchmark_items", per_item)
        for reference in COMPARED_WITH:
            others = [checkpoint] if checkpoint != reference else [
                c for (c,) in con.execute("SELECT DISTINCT checkpoint FROM benchmark_items WHERE checkpoint <> ?",
                                          [reference]).fetchall()]
            for other in others:
                if other not in COMPARED_WITH[:COMPARED_WITH.index(reference) + 1]:
                    write_comparisons(con, other, evaluated_at, reference=reference)
    return written


# Every checkpoint is compared with the base model and with the SFT baseline (the paper's first baseline), on the
# items both have; base and SFT are not compared with the references they precede.
COMPARED_WITH = ("base", "sft")


def write_comparisons(con, checkpoint: str, evaluated_at: datetime, *, reference: str = "base") -> int:
    """(Re)compute `checkpoint` − `reference` on the items both have, per task and metric."""
    pairs = con.execute(
        "SELECT c.task, c.metric, b.value AS base, c.value AS other FROM benchmark_items c "
        "JOIN benchmark_items b ON b.checkpoint = ? AND b.task = c.task AND b.metric = c.metric "
        "AND b.file = c.file AND b.item_id = c.item_id "
        "WHERE c.checkpoint = ? AND c.value IS NOT NULL AND b.value IS NOT NULL ORDER BY c.file, c.item_id",
        [reference, checkpoint]).fetchall()
    grouped: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for task, metric, base, other in pairs:
        b, o = grouped.setdefault((task, metric), ([], []))
        b.append(base)
        o.append(other)
    con.execute("DELETE FROM benchmark_comparisons WHERE checkpoint = ? AND reference = ?", [checkpoint, reference])
    written = 0
    for (task, metric), (base, other) in grouped.items():
        d = paired_difference(base, other, binary=metric in BINARY_METRICS)
        con.execute("INSERT INTO benchmark_comparisons VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [checkpoint, task, metric, reference, d.n, d.diff, d.low, d.high, d.p_value, d.test,
                     d.excludes_zero, evaluated_at])
        written += 1
    return written


def log_metrics_to_run(run_id: str | None, rows: Sequence[MetricRow], *, home=None, step: int = 0) -> int:
    """Log every row's value as `bench/<task>/<metric>` on the existing MLflow run `run_id` (e.g. the
    checkpoint's training run). Returns the number of metrics logged; 0, touching nothing, when `run_id` is
    None. `home` (a HomeLayout) points MLflow at the pipeline's tracking store first."""
    if run_id is None:
        return 0
    import mlflow
    from mlflow.entities import Metric

    if home is not None:
        from alignment_pipeline.tracking import configure

        configure(home)
    from mlflow.entities import RunTag

    stamp = int(time.time() * 1000)
    logged = [r for r in rows if r.value is not None]
    metrics = [Metric(f"bench/{r.task}/{r.metric}", float(r.value), stamp, step) for r in logged]
    # What a number stands on, beside it: the items behind it and where they came from (real test split, proxy).
    tags = {f"bench/{r.task}/{r.metric}": f"n={r.n}, {r.dataset_source}" for r in logged}
    if metrics:
        mlflow.MlflowClient().log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
    return len(metrics)
