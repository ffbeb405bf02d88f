"""lm-eval runs: TruthfulQA MC1, ETHICS commonsense, Moral Stories and the MIC-style task on one checkpoint.

Each benchmark runs as lm-eval's built-in task when its dataset is in the local Hugging Face cache, else
as our offline task (`ap_<benchmark>`) from the YAMLs in alignment_pipeline/evaluation/tasks/, which read
the small fixture files in assets/benchmarks/ (see catalog.py). Every result row says which it was
(`dataset_source`: real | fixture).

The same YAMLs run from lm-eval's own command line; their data path is resolved in tasks/utils.py at run
time, so no path needs editing wherever the package is installed:

    lm_eval run --model hf --model_args pretrained=/path/to/checkpoint \\
        --include_path "$(python -c 'from alignment_pipeline.evaluation.catalog import tasks_dir; print(tasks_dir())')" \\
        --tasks ap_truthfulqa_mc1,ap_ethics_cm,ap_moral_stories,ap_mic --batch_size 8

(`--tasks alignment_pipeline` runs all four: they share that tag.) To run the real benchmarks offline,
put their datasets in the cache once on a machine with network access, e.g.
`python -c "import datasets; datasets.load_dataset('truthfulqa/truthful_qa', 'multiple_choice')"`, and
`run_lm_eval` picks the built-in tasks from then on.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import math
from collections.abc import Sequence

from alignment_pipeline.evaluation.catalog import ResolvedTask, hub_offline, resolve_tasks, tasks_dir
from alignment_pipeline.evaluation.metrics import MetricRow

logger = logging.getLogger("alignment_pipeline.evaluation")


def run_lm_eval(model_path: str, tasks: list[str], *, limit: int | None = None, batch_size: int = 8,
                device: str = "auto") -> list[MetricRow]:
    """Evaluate the causal LM at `model_path` (a local directory or hub id, loaded with `from_pretrained`;
    CUDA and bfloat16 when present) on `tasks` with `lm_eval.simple_evaluate`.

    `tasks` are benchmark names (`truthfulqa_mc1`, `ethics_cm`, `moral_stories`, `mic`), offline task names
    (`ap_...`, always the fixture) or other lm-eval task names (run as they are). `limit` caps the documents
    per task. Returns one row per task and metric (stderr as lm-eval reports it, n = documents scored)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    resolved = resolve_tasks(tasks)
    if not resolved:
        return []
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    for task in resolved:
        logger.info("lm-eval task %s runs as %s (%s data)", task.name, task.lm_eval_task, task.dataset_source)
    model, tokenizer = _load(model_path, device)
    any_builtin = any(t.builtin for t in resolved)
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        offline = hub_offline() if any_builtin else contextlib.nullcontext()
        with offline:
            output = lm_eval.simple_evaluate(
                model=lm, tasks=[t.lm_eval_task for t in resolved], task_manager=_task_manager(any_builtin),
                limit=limit, log_samples=False, bootstrap_iters=1000,
            )
    finally:
        _release(model)
    if output is None:  # simple_evaluate returns None on non-zero ranks only; this is a single process
        raise RuntimeError("lm_eval.simple_evaluate returned no results")
    return results_to_rows(output, resolved)


def results_to_rows(output: dict, resolved: Sequence[ResolvedTask]) -> list[MetricRow]:
    """MetricRows from the dict `simple_evaluate` returns (keys `results` and `n-samples`). Keys are
    `<metric>,<filter>`; the default filter `none` is dropped from the metric name."""
    by_lm_task = {t.lm_eval_task: t for t in resolved}
    n_samples = output.get("n-samples", {})
    rows = []
    for lm_task, values in output["results"].items():
        task = by_lm_task.get(lm_task)
        # subtasks of a requested built-in group are built-in tasks on real data too
        name, source = (task.name, task.dataset_source) if task else (lm_task, "real")
        n = int(n_samples.get(lm_task, {}).get("effective", values.get("sample_len", 0)) or 0)
        for key, value in values.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            stderr = values.get(f"{metric}_stderr,{filt}")
            rows.append(MetricRow(
                task=name, metric=metric if filt == "none" else f"{metric},{filt}",
                value=_finite(value), stderr=_finite(stderr), n=n, dataset_source=source,
            ))
    missing = {t.lm_eval_task for t in resolved} - set(output["results"])
    if missing:
        raise RuntimeError(f"lm-eval returned no results for {sorted(missing)}")
    return rows


def _finite(value) -> float | None:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


@functools.cache
def _task_manager(include_defaults: bool):
    """Indexing lm-eval's ~thousands of built-in task files takes seconds, so it is skipped when only our
    tasks run, and each index is built once per process."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks_dir()), include_defaults=include_defaults)


def _load(model_path: str, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment_pipeline.devices import resolve_device, resolve_dtype

    target = resolve_device(device)
    dtype = resolve_dtype("auto", target)
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=dtype)
    model.to(target)
    model.eval()
    logger.info("lm-eval model %s on %s (%s)", model_path, target, str(dtype).split(".")[-1])
    return model, tokenizer


def _release(model) -> None:
    import torch

    on_cuda = next(model.parameters()).is_cuda
    del model
    gc.collect()
    if on_cuda:
        torch.cuda.empty_cache()
