"""`alignment-pipeline bench eval`: items per second of our multiple-choice evaluation against lm-eval's own
`simple_evaluate` (its built-in task definition on the same shipped rows), same model, same items, one run."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class EvalBench:
    task: str
    items: int
    ours_s: float
    lm_eval_s: float
    agree: int  # items whose acc verdict is the same on both sides
    ours_acc: float
    lm_eval_acc: float

    @property
    def ratio(self) -> float:
        return self.lm_eval_s / self.ours_s

    def lines(self) -> list[str]:
        return [f"task {self.task}, {self.items} items, same model and rows on both sides",
                f"  ours     {self.items / self.ours_s:8.2f} items/s  ({self.ours_s:.1f} s)  acc {self.ours_acc:.3f}",
                f"  lm-eval  {self.items / self.lm_eval_s:8.2f} items/s  ({self.lm_eval_s:.1f} s)  "
                f"acc {self.lm_eval_acc:.3f}",
                f"  speed-up {self.ratio:.2f}x; per-item verdicts agree on {self.agree}/{self.items}"]


def bench_eval(model_path: str, task: str, *, items: int = 50, batch_size: int = 16, seed: int = 0) -> EvalBench:
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignment_pipeline.evaluation.choice_eval import select_items, verdicts
    from alignment_pipeline.evaluation.lm_eval_tasks import builtin_task
    from alignment_pipeline.evaluation.loglik import LoglikScorer

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    chosen = select_items(task, items, seed)
    started = time.perf_counter()
    scored = LoglikScorer(model, tokenizer).score([item.requests() for item in chosen])
    ours_s = time.perf_counter() - started
    ours = [verdicts(item, [ll for ll, _ in row])["acc"] == item.gold for item, row in zip(chosen, scored, strict=True)]
    reference = builtin_task(task, [item.item_id for item in chosen])
    started = time.perf_counter()
    with torch.inference_mode():
        out = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size),
                                      tasks=[reference], log_samples=True, bootstrap_iters=0)
    lm_eval_s = time.perf_counter() - started
    samples = sorted(next(iter(out["samples"].values())), key=lambda s: s["doc_id"])
    theirs = [bool(s["acc"]) for s in samples]
    return EvalBench(task, len(chosen), ours_s, lm_eval_s, sum(a == b for a, b in zip(ours, theirs, strict=True)),
                     sum(ours) / len(ours), sum(theirs) / len(theirs))
