"""Ratings are honest: sampled and strictly parsed, bounded re-asks, NULL with a reason, log-prob
expectations only as an extra column where the ratings hold most of the probability."""

from __future__ import annotations

import hashlib
import json

import pytest

from alignment_pipeline.llm.base import GenerationParams
from alignment_pipeline.llm.config import BackendSpec
from alignment_pipeline.llm.prompt_format import ALPACA, Prompt
from alignment_pipeline.llm.scripted import ScriptedLLM
from alignment_pipeline.sandbox import SandboxConfig, run_sandbox, score_revisions
from alignment_pipeline.sandbox.checks import check_ratings_valid
from alignment_pipeline.sandbox.embedding import HashingEmbedder
from alignment_pipeline.sandbox.memory import Retrieved
from alignment_pipeline.sandbox.ratings import parse_rating, parse_reply, rate, rating_expectation
from alignment_pipeline.sandbox.store import insert_prompts
from alignment_pipeline.sandbox.templates import feedback_prompt
from alignment_pipeline.sandbox.world import World
from alignment_pipeline.warehouse.db import Warehouse

PARAMS = GenerationParams(max_new_tokens=16)
GARBAGE = ["Rating: 8\nReason: too high", "I would say five.", "Rating: 10", "Rating: 4.5 because", "",
           "rating - 3", "Rating: 2\nRating: 6\nReason: undecided", "Rating:\nReason: forgot the number"]


@pytest.mark.parametrize("text, expected", [
    ("Rating: 5\nReason: fine", (5, "fine")),
    ("Rating: 7 ### Reason: kind and honest", (7, "kind and honest")),
    ("  Rating:3", (3, "")),
    ("Rating: 2. Reason: rude", (2, "rude")),
    ("Some preamble\nRating: 1\nReason: harmful", (1, "harmful")),
    ("Rating: 6\nReason: good\nRating: 6", (6, "good\nRating: 6")),
    ("Rating: 4/7\nReason: mostly fine", (4, "mostly fine")),
    ("**Rating:** 5\n**Reason:** clear", (5, "clear")),
])
def test_parse_accepts_a_strict_rating_line(text, expected):
    assert parse_rating(text) == expected


@pytest.mark.parametrize("text", GARBAGE)
def test_parse_rejects_garbage(text):
    assert parse_rating(text) is None


def test_a_reply_continues_the_prefix_or_holds_it_whole():
    prompt = Prompt("rate it", prefix="Rating:")
    assert parse_reply(prompt, " 6\nReason: kind") == (6, "kind")  # a local model continued "Rating:"
    assert parse_reply(prompt, "Rating: 2\nReason: rude") == (2, "rude")  # a server returns it whole
    assert parse_reply(prompt, " 2. Use a tension wrench") == (2, "Use a tension wrench")
    assert parse_reply(prompt, " ten") is None


def test_expectation_only_where_the_ratings_hold_most_of_the_mass():
    import math
    value, mass = rating_expectation([0.0, -50, -50, -50, -50, -50, -50])
    assert value == pytest.approx(1.0, abs=1e-6) and mass == pytest.approx(1.0)
    value, mass = rating_expectation([math.log(0.1)] * 7)  # 70% on the seven ratings: renormalised
    assert value == pytest.approx(4.0, abs=1e-6) and mass == pytest.approx(0.7)
    value, mass = rating_expectation([math.log(0.05)] * 7)  # 35%: most mass elsewhere, no expectation
    assert value is None and mass == pytest.approx(0.35)
    assert rating_expectation([float("nan")] * 7) == (None, None)
    assert rating_expectation([float("-inf")] * 7) == (None, None)


def is_garbage(prompt: str) -> bool:
    """30% of rating prompts, chosen by the prompt itself, so re-asks cannot rescue them."""
    return int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 10 < 3


def garbage_responder(prompt: str) -> str:
    if "Rating: <" in prompt:
        digest = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
        if is_garbage(prompt):
            return GARBAGE[digest % len(GARBAGE)]
        return f"Rating: {digest % 7 + 1}\nReason: reason {digest % 1000}"
    return f"text {hashlib.sha256(prompt.encode()).hexdigest()[:8]}"


def test_garbage_ratings_become_null_with_reasons_and_the_round_completes(tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb")
    insert_prompts(wh, "b", [f"question {i} about something?" for i in range(20)])
    llm = ScriptedLLM(garbage_responder)
    spec = BackendSpec(kind="scripted", model="garbage")
    cfg = SandboxConfig(size=3, rounds=2, agent_models=[spec], observer=spec, rating_retries=2)
    report = run_sandbox(wh, "b", cfg, backend_for=lambda s: llm, embedder=HashingEmbedder())
    assert report.interactions == 18
    rows = wh.query(
        "SELECT i.question, i.draft, m.retrieved_memories, f.rating, f.rating_argmax, f.rating_method, "
        "f.null_reason FROM sandbox_feedback f JOIN sandbox_interactions i USING (interaction_id) "
        "JOIN sandbox_feedback_memories m USING (interaction_id, position)").to_dicts()
    assert len(rows) == sum(World(cfg).neighbour_count(a) for a in range(9)) * 2
    # The exact prompt each neighbour was asked, rebuilt from what was stored: garbage ones must be NULL.
    garbled = [is_garbage(ALPACA.render(feedback_prompt(
        r["question"], r["draft"], [Retrieved(**m) for m in json.loads(r["retrieved_memories"])])))
        for r in rows]
    bad = sum(garbled)
    assert 0.15 < bad / len(rows) < 0.45, "the backend really garbles about 30%"
    assert [r["rating"] is None for r in rows] == garbled
    assert report.null_feedback_ratings == bad
    for r in rows:
        if r["rating"] is None:
            assert r["rating_argmax"] is None and r["rating_method"] is None
            assert "no valid 'Rating: N'" in r["null_reason"] and "3 replies" in r["null_reason"]
        else:
            assert 1 <= r["rating"] <= 7 and r["rating"] == r["rating_argmax"] and r["rating_method"] == "parsed"
            assert r["null_reason"] is None
    # Each garbage request was asked 1 + rating_retries times, the others once.
    feedback_prompts = [p for p in llm.prompts if "Another member answered" in p]
    assert len(feedback_prompts) == len(rows) + 2 * bad
    # Means ignore NULLs: no placeholder number leaks into the averages.
    means = wh.query("SELECT i.mean_feedback_rating AS stored, avg(f.rating) AS recomputed "
                     "FROM sandbox_interactions i JOIN sandbox_feedback f USING (interaction_id) "
                     "GROUP BY i.interaction_id, i.mean_feedback_rating").to_dicts()
    for m in means:
        assert m["stored"] == m["recomputed"] or (m["stored"] is None and m["recomputed"] is None)
    # Revision prompts show only the valid ratings' reasons and say how many neighbours rated.
    revision_prompts = [p for p in llm.prompts if "Your answer:" in p]
    assert len(revision_prompts) == 18 and all("score" in p for p in revision_prompts)
    score_revisions(wh, "b", cfg, backend_for=lambda s: llm)
    observer_nulls = wh.query("SELECT count(*) FROM observer_ratings WHERE rating IS NULL").item()
    assert observer_nulls > 0
    outcome = check_ratings_valid(wh, "b")
    assert outcome.passed and outcome.metadata["feedback_null"] == bad
    assert outcome.metadata["observer_null"] == observer_nulls


def test_only_failed_ratings_are_re_asked_in_one_batch():
    asked = {}

    def flaky(prompt: str) -> str:
        asked[prompt] = asked.get(prompt, 0) + 1
        # Prompts 0..2 fail the first time only; prompt 3 never succeeds.
        if prompt in ("p0", "p1", "p2") and asked[prompt] == 1 or prompt == "p3":
            return "no idea"
        return "Rating: 4\nReason: ok"

    llm = ScriptedLLM(flaky)
    results = rate([(llm, f"p{i}") for i in range(10)], PARAMS, retries=2)
    assert llm.batch_sizes == [10, 4, 1]
    assert [r.value for r in results] == [4.0, 4.0, 4.0, None] + [4.0] * 6
    assert results[3].null_reason and results[3].calls == 3 and results[0].calls == 2 and results[5].calls == 1


def test_backends_without_logprobs_fall_back_to_parsing():
    class Refuses(ScriptedLLM):
        supports_logprobs = True

        def score_continuations(self, prompts, candidates):
            raise NotImplementedError("this server gives no log-probs")

    llm = Refuses(lambda p: "Rating: 2\nReason: meh")
    llm.supports_logprobs = True
    results = rate([(llm, "a"), (llm, "b")], PARAMS, retries=0)
    assert [(r.value, r.method) for r in results] == [(2.0, "parsed"), (2.0, "parsed")]


def test_logprobs_never_stand_in_for_a_failed_parse():
    llm = ScriptedLLM(lambda p: " why", scorer=lambda p, c: [0.0] + [-50.0] * (len(c) - 1))
    (result,) = rate([(llm, Prompt("rate", prefix="Rating:"))], PARAMS, retries=1)
    assert result.value is None and result.argmax is None and "no valid 'Rating: N'" in result.null_reason
    assert result.expected == pytest.approx(1.0) and result.mass == pytest.approx(1.0)


def test_neighbours_sample_their_own_ratings():
    """The same prompt asked of several raters gets independent samples, not one deterministic value."""
    counter = iter(range(100))
    llm = ScriptedLLM(lambda p: f"Rating: {next(counter) % 7 + 1}\nReason: r")
    prompt = Prompt("rate", prefix="Rating:")
    results = rate([(llm, prompt)] * 4, PARAMS, retries=0)
    assert len({r.value for r in results}) == 4
