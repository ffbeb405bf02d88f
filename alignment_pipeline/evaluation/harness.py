"""Any other lm-eval task, by name, through `lm_eval.simple_evaluate` (its dataset must be in the local Hugging
Face cache: nothing is downloaded). The benchmarks of the paper run on the shipped files instead
(choice_tasks.py), so a cached hub copy never changes their numbers."""

from __future__ import annotations

import math

from alignment_pipeline.evaluation.metrics import MetricRow
from alignment_pipeline.evaluation.stats import wilson


def run_lm_eval(model_path: str, tasks: list[str], *, limit: int | None = None, batch_size: int = 8,
                device: str = "auto") -> list[MetricRow]:
    """One row per task and metric (n = documents scored; accuracies with their Wilson interval)."""
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment_pipeline.devices import resolve_device, resolve_dtype

    target = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=resolve_dtype("auto", target)).to(target)
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    with torch.inference_mode():
        output = lm_eval.simple_evaluate(model=HFLM(pretrained=model.eval(), tokenizer=tokenizer,
                                                    batch_size=batch_size),
                                         tasks=tasks, limit=limit, log_samples=False)
    if output is None:
        raise RuntimeError("lm_eval.simple_evaluate returned no results")
    return results_to_rows(output)


def results_to_rows(output: dict) -> list[MetricRow]:
    """MetricRows from `simple_evaluate`'s dict (keys `<metric>,<filter>`; filter `none` dropped)."""
    rows = []
    for task, values in output["results"].items():
        n = int(output.get("n-samples", {}).get(task, {}).get("effective", 0) or 0)
        for key, value in values.items():
            if "," not in key or "_stderr," in key or not isinstance(value, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            stderr = values.get(f"{metric}_stderr,{filt}")
            value = float(value) if math.isfinite(value) else None
            ci = wilson(value * n, n) if metric.startswith("acc") and value is not None and n else None
            rows.append(MetricRow(task, metric if filt == "none" else f"{metric},{filt}", value,
                                  float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr)
                                  else None, n, "real", ci and ci.low, ci and ci.high, ci and ci.method))
    return rows
