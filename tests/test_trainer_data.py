"""Trainer data path: prompt/response boundary, left truncation, EOS, loss masking, whole-group batches, and the
warehouse side (load_groups, checkpoints table)."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest
from transformers import ByT5Tokenizer

from alignment_pipeline.samples.template import format_prompt
from alignment_pipeline.training.data import (
    PromptGroup,
    limit_responses,
    load_groups,
    make_batches,
    special_prefix,
    tokenize_group,
    tokenize_groups,
)
from alignment_pipeline.training.forward import PAD_SEGMENT, pack_groups
from alignment_pipeline.training.lineage import checkpoint_row, record_checkpoint
from alignment_pipeline.training.objectives import best_response_groups, preference_pairs
from alignment_pipeline.training.synthetic import letter_groups
from alignment_pipeline.warehouse.db import Warehouse, insert_frame


@pytest.fixture(scope="module")
def tok():
    return ByT5Tokenizer()


class _BosTokenizer:
    """A tokenizer that puts a BOS in front of every text (as Llama's does), over ByT5's byte ids."""

    bos_token_id, eos_token_id, pad_token_id = 2, 1, 0

    def __init__(self):
        self.inner = ByT5Tokenizer()

    def __call__(self, text, add_special_tokens=True):
        ids = self.inner(text, add_special_tokens=False)["input_ids"]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}


def test_boundary_eos_and_no_merge(tok):
    group = PromptGroup("Say hi", "politely", ["Hello there", "  yo  "], [5, 2])
    tg = tokenize_group(tok, group, 0, max_length=256)
    prompt_ids = tok(format_prompt("Say hi", "politely"), add_special_tokens=False)["input_ids"]
    assert tg.prompt_ids == prompt_ids  # ByT5 adds nothing in front
    assert tg.response_ids[0] == tok("Hello there", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert tg.response_ids[1] == tok("yo", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # stripped
    assert tok.decode(tg.prompt_ids + tg.response_ids[0][:-1]) == format_prompt("Say hi", "politely") + "Hello there"


def test_bos_is_kept_in_front_and_through_truncation():
    bos_tok = _BosTokenizer()
    assert special_prefix(bos_tok) == [2]
    group = PromptGroup("x" * 200, "", ["short answer"], [3])
    tg = tokenize_group(bos_tok, group, 0, max_length=64)
    assert tg.prompt_ids[0] == 2 and tg.prompt_ids.count(2) == 1
    assert len(tg.prompt_ids) + len(tg.response_ids[0]) == 64


def test_left_truncation_keeps_response_and_prompt_end(tok):
    long_instruction = "background " * 40 + "QUESTION?"
    group = PromptGroup(long_instruction, "", ["The full answer survives.", "no"], [6, 1])
    tg = tokenize_group(tok, group, 0, max_length=80)
    full_prompt = tok(format_prompt(long_instruction), add_special_tokens=False)["input_ids"]
    longest = max(len(r) for r in tg.response_ids)
    assert len(tg.prompt_ids) == 80 - longest
    assert tg.prompt_ids == full_prompt[-len(tg.prompt_ids):]  # cut from the LEFT: the end is intact
    assert tok.decode(tg.prompt_ids).endswith("QUESTION?\n\n### Response:\n")
    assert tok.decode(tg.response_ids[0][:-1]) == "The full answer survives."
    for ids in tg.response_ids:
        assert len(tg.prompt_ids) + len(ids) <= 80


def test_overlong_response_is_cut_on_the_right_leaving_the_prompt_its_share(tok):
    group = PromptGroup("Q", "", ["a" * 500], [5])
    # The prompt keeps max(min_prompt_tokens, max_length // 2) tokens; the response gets the rest, cut on its right.
    tg = tokenize_group(tok, group, 0, max_length=64, min_prompt_tokens=16)
    assert len(tg.prompt_ids) == 32 and len(tg.response_ids[0]) == 64 - 32
    assert tg.response_ids[0] == [tok("a", add_special_tokens=False)["input_ids"][0]] * 32
    tg = tokenize_group(tok, group, 0, max_length=48, min_prompt_tokens=30)
    assert len(tg.prompt_ids) == 30 and len(tg.response_ids[0]) == 18


def test_packed_batch_masks_prompt_and_holds_whole_groups(tok):
    groups = [PromptGroup("Say hi", "", ["hello", "hey there", "no"], [5, 3, 1]),
              PromptGroup("Count", "to three", ["1 2 3", "1 2"], [7, 2])]
    tgs = tokenize_groups(tok, groups, max_length=128)
    batch = pack_groups(tgs, tok.pad_token_id)
    # Targets are exactly the response tokens (EOS included), never a prompt token.
    want = [t for g in tgs for r in g.response_ids for t in r]
    assert batch.target.tolist() == want
    assert batch.num_responses.tolist() == [3, 2]
    for row, g in enumerate(tgs):
        p = len(g.prompt_ids)
        assert batch.segments[row, :p].eq(0).all()
        assert batch.input_ids[row, :p].tolist() == g.prompt_ids
        assert batch.position_ids[row, p:p + len(g.response_ids[0])].tolist() == list(range(p, p + len(g.response_ids[0])))
        # every scored token's source position is its predecessor in its own (prompt, response) sequence
        srcs = batch.src_pos[batch.src_row == row]
        assert srcs.min().item() == p - 1
        assert not batch.segments[row, srcs].eq(PAD_SEGMENT).any()
    assert batch.data_tokens == sum(g.packed_length for g in tgs)
    mask = batch.attention_mask()[:, 0]
    p0 = len(tgs[0].prompt_ids)
    r0 = len(tgs[0].response_ids[0])
    second = p0 + r0  # first token of response 2 of group 0
    assert mask[0, second, :p0].all()  # sees the whole prompt
    assert not mask[0, second, p0:second].any()  # but not response 1
    assert mask[0, second, second]


def test_batches_deterministic_complete_and_length_grouped(tok):
    groups = letter_groups(50, seed=3)
    tgs = tokenize_groups(tok, groups, max_length=128)
    a = make_batches(tgs, 4, seed=1, epoch=0, pool_batches=4)
    assert a == make_batches(tgs, 4, seed=1, epoch=0, pool_batches=4)
    assert a != make_batches(tgs, 4, seed=1, epoch=1, pool_batches=4)
    flat = sorted(i for b in a for i in b)
    assert flat == list(range(50))
    assert all(1 <= len(b) <= 4 for b in a)
    # within a pool the batches are sorted by packed length: less padding than a random split
    lengths = {g.index: g.packed_length for g in tgs}

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    unsorted = [list(range(i, min(i + 4, 50))) for i in range(0, 50, 4)]
    assert padding(a) < padding(unsorted)


def test_limit_responses_keeps_best_and_rotates_the_rest(tok):
    group = PromptGroup("q", "", ["a", "b", "c", "d", "e"], [1, 2, 7, 3, 4])
    tg = tokenize_group(tok, group, 0, max_length=64)
    assert len(tg.response_ids) == 5
    picks = [limit_responses(tg, 3, seed=5, epoch=e) for e in range(12)]
    assert all(len(p.response_ids) == 3 and 7.0 in p.ratings for p in picks)
    assert picks[0] == limit_responses(tg, 3, seed=5, epoch=0)  # deterministic
    assert {r for p in picks for r in p.ratings} == {1, 2, 3, 4, 7}  # over epochs every response takes part
    assert limit_responses(tg, None, seed=5, epoch=0) is tg


def test_bad_ratings_rejected():
    with pytest.raises(ValueError, match="rating 1 is nan"):
        PromptGroup("q", "", ["a", "b"], [1.0, float("nan")])
    with pytest.raises(ValueError, match="2 responses but 1 ratings"):
        PromptGroup("q", "", ["a", "b"], [1.0])


def test_pairs_and_best_groups():
    g = PromptGroup("q", "", ["a", "b", "c", "d"], [3, 7, 3, 7], key="k")
    pairs = preference_pairs([g])
    assert [(p.responses, p.ratings) for p in pairs] == [(["b", "a"], [7, 3]), (["b", "c"], [7, 3])]
    assert len(preference_pairs([g], "best_vs_worst")) == 1
    assert preference_pairs([PromptGroup("q", "", ["a", "b"], [4, 4])]) == []
    assert best_response_groups([g])[0].responses == ["b"]


def _sample_rows(rows):
    now = datetime(2026, 1, 1)
    return pl.DataFrame([
        {"sample_id": f"s{i}", "sample_type": t, "batch": b, "prompt_key": k, "instruction": f"ins {k}",
         "input": "", "response": resp, "rating": r, "rating_source": "observer:alignment:draft",
         "agent_model": "m", "world_id": "w", "round": 0, "interaction_id": f"i{i}", "created_at": now}
        for i, (t, b, k, resp, r) in enumerate(rows)
    ], schema_overrides={"rating": pl.Float64})


def test_load_groups_and_checkpoint_row(tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb")
    frame = _sample_rows([
        ("imitation", "b1", "p1", "draft", 3.0), ("imitation", "b2", "p1", "revision", 6.0),
        ("imitation", "b1", "p2", "unrated", None), ("imitation", "b1", "p2", "rated", 5.0),
        ("self_critique", "b1", "p3", "feedback", 2.0),
    ])
    with wh.transaction() as con:
        insert_frame(con, "alignment_samples", frame)
    groups = load_groups(wh, "imitation")
    assert [(g.key, g.responses, g.ratings, g.batches) for g in groups] == [
        ("imitation:p1", ["draft", "revision"], [3.0, 6.0], ("b1", "b2")),
        ("imitation:p2", ["rated"], [5.0], ("b1",)),
    ]
    assert len(load_groups(wh, None)) == 3
    with pytest.raises(ValueError, match="unknown sample_type"):
        load_groups(wh, "bogus")

    record_checkpoint(wh, name="stage1_imitation", kind="stage1_imitation", objective="stable_alignment",
                      path="/x/model", base_model="tiny:t", parent_checkpoint=None, samples_batches=["b1", "b2"],
                      steps=7, mlflow_run_id="r1", registered_model="stage1/1", metrics={"loss": 1.5, "bad": float("nan")})
    record_checkpoint(wh, name="stage1_imitation", kind="stage1_imitation", objective="stable_alignment",
                      path="/x/model2", base_model="tiny:t", parent_checkpoint=None, samples_batches=["b1"], steps=8)
    row = checkpoint_row(wh, "stage1_imitation")
    assert row["path"] == "/x/model2" and row["steps"] == 8 and row["samples_batches"] == ["b1"]
    assert wh.count("checkpoints") == 1
    with pytest.raises(ValueError, match="unknown checkpoint kind"):
        record_checkpoint(wh, name="x", kind="ppo", objective="x", path="p", base_model="b",
                          parent_checkpoint=None, samples_batches=[], steps=0)
