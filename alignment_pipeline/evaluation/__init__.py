"""Benchmarks for every checkpoint on the real test splits shipped in assets/benchmarks/ (data), with lm-eval's
prompts and metrics (choice_tasks) scored by a shared-context scorer (loglik), judge-scored HH / HH-A (judge),
intervals and paired comparisons with base (stats), stored in benchmark_* tables (results) and shown as the
paper-style table (report).

Names are imported on first use: transformers and matplotlib load only when evaluation runs.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "EvaluationConfig": "config",
    "MetricRow": "metrics",
    "CHOICE_TASKS": "choice_tasks",
    "JUDGE_TASKS": "results",
    "BenchmarkDataError": "data",
    "run_lm_eval": "harness",
    "score_answers": "judge", "Judgement": "judge", "HHResult": "judge",
    "EvalReport": "results", "evaluate_checkpoint": "results", "write_results": "results",
    "log_metrics_to_run": "results", "validate_kind": "results", "checkpoint_kind": "results",
    "benchmark_markdown": "report", "benchmark_chart_png": "report", "benchmark_frame": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
