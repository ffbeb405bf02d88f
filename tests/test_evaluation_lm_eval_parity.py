"""Our prompts and verdicts are lm-eval's: its own built-in task definitions (installed YAMLs) render the same
contexts and continuations on the same shipped rows, and simple_evaluate's per-item verdicts on a tiny model equal
those of our shared-context scorer."""

import pytest

from alignment_pipeline.evaluation.choice_eval import select_items, verdicts
from alignment_pipeline.evaluation.lm_eval_tasks import BUILTIN_YAML, builtin_task
from alignment_pipeline.evaluation.loglik import LoglikScorer
from alignment_pipeline.llm.tiny import build_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("task", sorted(BUILTIN_YAML))
def test_builtin_definition_renders_our_requests(task):
    items = select_items(task, 3, 0)
    reference = builtin_task(task, [i.item_id for i in items])
    reference.build_all_requests(limit=None, rank=0, world_size=1)
    theirs = [inst.args for inst in sorted(reference.instances, key=lambda x: (x.doc_id, x.idx))]
    assert theirs == [r for item in items for r in item.requests()]


@pytest.mark.parametrize("task", ["truthfulqa_mc1", "ethics_cm", "moral_stories"])
def test_verdicts_equal_simple_evaluate(tiny, task):
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = tiny
    items = select_items(task, 6, 3)
    scorer = LoglikScorer(model, tokenizer)
    scored = scorer.score([i.requests() for i in items])
    ours = [verdicts(i, [ll for ll, _ in row]) for i, row in zip(items, scored, strict=True)]
    out = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8),
                                  tasks=[builtin_task(task, [i.item_id for i in items])], log_samples=True,
                                  bootstrap_iters=0)
    samples = sorted(next(iter(out["samples"].values())), key=lambda s: s["doc_id"])
    assert [bool(s["acc"]) for s in samples] == [v["acc"] == i.gold for v, i in zip(ours, items, strict=True)]
    if task == "moral_stories":
        assert [bool(s["acc_norm"]) for s in samples] == [v["acc_norm"] == i.gold for v, i in zip(ours, items, strict=True)]
    # the log-likelihoods themselves, not only the verdicts
    lls = [[float(r[0][0]) for r in s["resps"]] for s in samples]
    assert [[ll for ll, _ in row] for row in scored] == [pytest.approx(x, abs=1e-3) for x in lls]


def test_shared_prefix_tokens_equal_lm_eval_encoding(tiny):
    from lm_eval.models.huggingface import HFLM

    model, tokenizer = tiny
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
    scorer = LoglikScorer(model, tokenizer)
    for context, continuation in [("Q: x\nA:", " yes"), ("ends in space ", "word"), ("a", " b c")]:
        assert scorer.encode_pair(context, continuation) == lm._encode_pair(context, continuation)
