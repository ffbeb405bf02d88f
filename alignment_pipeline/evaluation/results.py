"""Evaluate one checkpoint end to end and store it: lm-eval tasks, HH and HH-A, into benchmark_results and
benchmark_judgements (a checkpoint's rows replaced in one transaction), and onto its MLflow run."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import polars as pl

from alignment_pipeline.evaluation.catalog import JUDGE_TASKS, resolve_tasks
from alignment_pipeline.evaluation.config import EvaluationConfig
from alignment_pipeline.evaluation.harness import run_lm_eval
from alignment_pipeline.evaluation.judge import HHResult, Judgement, run_hh
from alignment_pipeline.evaluation.metrics import MetricRow
from alignment_pipeline.llm.base import LLMBackend
from alignment_pipeline.warehouse.db import Warehouse, insert_frame

logger = logging.getLogger("alignment_pipeline.evaluation")

KINDS_HELP = "base, baseline, reference, or a stage name starting with 'stage'"
_KIND = re.compile(r"^(base|baseline|reference|stage.*)$")

RESULT_SCHEMA = {
    "checkpoint": pl.String, "kind": pl.String, "task": pl.String, "metric": pl.String, "value": pl.Float64,
    "stderr": pl.Float64, "n": pl.Int32, "dataset_source": pl.String, "model_path": pl.String,
    "judge_model": pl.String, "evaluated_at": pl.Datetime("us"),
}
JUDGEMENT_SCHEMA = {
    "checkpoint": pl.String, "task": pl.String, "item_id": pl.String, "request": pl.String, "answer": pl.String,
    "score": pl.Float64, "score_argmax": pl.Int32, "method": pl.String, "null_reason": pl.String,
    "judge_calls": pl.Int32, "judge_model": pl.String, "evaluated_at": pl.Datetime("us"),
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
    seconds: dict[str, float] = field(default_factory=dict)  # lm_eval, hh, hh_a

    def value(self, task: str, metric: str) -> float | None:
        for row in self.rows:
            if row.task == task and row.metric == metric:
                return row.value
        raise KeyError(f"no {task}/{metric} in the report of {self.checkpoint}")

    def metadata(self) -> dict:
        """Plain JSON-able values for display: every metric as `bench/<task>/<metric>` plus context."""
        meta: dict = {
            "checkpoint": self.checkpoint, "kind": self.kind, "model_path": self.model_path,
            "judge_model": self.judge_model, "evaluated_at": self.evaluated_at.isoformat(),
            "rows_written": self.rows_written,
            "dataset_sources": {r.task: r.dataset_source for r in self.rows},
        }
        for row in self.rows:
            meta[f"bench/{row.task}/{row.metric}"] = row.value
        for phase, seconds in self.seconds.items():
            meta[f"seconds/{phase}"] = round(seconds, 2)
        return meta


def validate_kind(kind: str) -> str:
    if not _KIND.match(kind):
        raise ValueError(f"kind {kind!r} is not one of: {KINDS_HELP}")
    return kind


def checkpoint_kind(name: str) -> str:
    """The benchmark kind of a model: `base`; its role in training/stages.py (`stage` for a curriculum stage,
    whose model column names it as the paper's rows do; `baseline`); any other trained model is a `baseline`."""
    from alignment_pipeline.training.stages import CHECKPOINT_KINDS, checkpoint

    if name == "base":
        return name
    return checkpoint(name).role if name in CHECKPOINT_KINDS else "baseline"


def evaluate_checkpoint(warehouse: Warehouse, *, checkpoint: str, kind: str, model_path: str,
                        config: EvaluationConfig, judge: LLMBackend, now: datetime | None = None,
                        reward_model_path: str | None = None) -> EvalReport:
    """Run `config.tasks` on the model at `model_path`: lm-eval tasks through `run_lm_eval`, `hh` / `hh_a`
    through the judge (and, given `reward_model_path`, through that reward model too: rows `reward_model_score`).
    Then, in one transaction, replace this checkpoint's rows of the evaluated tasks in
    benchmark_results and benchmark_judgements (other tasks' rows stay, relabelled to `kind`)."""
    validate_kind(kind)
    if not checkpoint:
        raise ValueError("checkpoint must be a non-empty name")
    lm_tasks = [t for t in config.tasks if t not in JUDGE_TASKS]
    judge_tasks = [t for t in config.tasks if t in JUDGE_TASKS]
    resolve_tasks(lm_tasks)  # unknown offline names fail here, before any model is loaded
    seconds: dict[str, float] = {}
    rows: list[MetricRow] = []
    if lm_tasks:
        started = time.perf_counter()
        rows += run_lm_eval(model_path, lm_tasks, limit=config.limit, batch_size=config.batch_size,
                            device=config.device)
        seconds["lm_eval"] = time.perf_counter() - started
    results: list[HHResult] = []
    if judge_tasks:
        from alignment_pipeline.llm.hf import HFBackend

        generator = HFBackend(model_path, device=config.device, batch_size=config.generation_batch_size)
        try:
            for task in judge_tasks:
                started = time.perf_counter()
                results.append(run_hh(
                    None, judge, adversarial=JUDGE_TASKS[task], limit=config.hh_limit,
                    max_new_tokens=config.max_new_tokens, generator=generator,
                    max_reasks=config.judge_max_reasks, prompts_path=config.hh_prompts_file,
                    prefixes_path=config.hh_prefixes_file))
                seconds[task] = time.perf_counter() - started
        finally:
            generator.close()
        rows += [row for result in results for row in result.rows]
        if reward_model_path and results:
            from alignment_pipeline.evaluation.judge import reward_model_rows
            from alignment_pipeline.training.reward_model import RewardScorer

            started = time.perf_counter()
            scorer = RewardScorer(reward_model_path, device=config.device, batch_size=config.generation_batch_size)
            rows += [row for result in results for row in reward_model_rows(result, scorer)]
            seconds["reward_model"] = time.perf_counter() - started
    evaluated_at = now or datetime.now(timezone.utc).replace(tzinfo=None)
    judge_model = judge.model_name if judge_tasks else None
    written = write_results(warehouse, checkpoint=checkpoint, kind=kind, model_path=model_path, rows=rows,
                            hh_results=results, evaluated_at=evaluated_at, tasks=config.tasks)
    return EvalReport(checkpoint, kind, model_path, rows, {r.task: r.judgements for r in results}, judge_model,
                      evaluated_at, written, seconds)


def write_results(warehouse: Warehouse, *, checkpoint: str, kind: str, model_path: str | None,
                  rows: Sequence[MetricRow], hh_results: Sequence[HHResult], evaluated_at: datetime,
                  tasks: Sequence[str]) -> int:
    """Replace `checkpoint`'s rows of `tasks` (the stored task names) in benchmark_results and
    benchmark_judgements, in one transaction. Returns the benchmark_results rows written."""
    validate_kind(kind)
    stored_tasks = sorted({t.removeprefix("ap_") for t in tasks} | {r.task for r in rows})
    judge_of = {r.task: r.judge_model for r in hh_results}
    results = pl.DataFrame([
        {"checkpoint": checkpoint, "kind": kind, "task": r.task, "metric": r.metric, "value": r.value,
         "stderr": r.stderr, "n": r.n, "dataset_source": r.dataset_source, "model_path": model_path,
         "judge_model": judge_of.get(r.task), "evaluated_at": evaluated_at}
        for r in rows
    ], schema=RESULT_SCHEMA)
    judgements = pl.DataFrame([
        {"checkpoint": checkpoint, "task": res.task, **j.as_dict(), "judge_model": res.judge_model,
         "evaluated_at": evaluated_at}
        for res in hh_results for j in res.judgements
    ], schema=JUDGEMENT_SCHEMA)
    placeholders = ", ".join("?" for _ in stored_tasks) or "NULL"
    with warehouse.transaction() as con:
        con.execute(f"DELETE FROM benchmark_results WHERE checkpoint = ? AND task IN ({placeholders})",
                    [checkpoint, *stored_tasks])
        con.execute(f"DELETE FROM benchmark_judgements WHERE checkpoint = ? AND task IN ({placeholders})",
                    [checkpoint, *stored_tasks])
        con.execute("UPDATE benchmark_results SET kind = ? WHERE checkpoint = ?", [kind, checkpoint])
        written = insert_frame(con, "benchmark_results", results)
        insert_frame(con, "benchmark_judgements", judgements)
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
    stamp = int(time.time() * 1000)
    metrics = [Metric(f"bench/{r.task}/{r.metric}", float(r.value), stamp, step)
               for r in rows if r.value is not None]
    if metrics:
        mlflow.MlflowClient().log_batch(run_id, metrics=metrics)
    return len(metrics)
