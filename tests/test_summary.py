"""The run summary: paired before/after differences with their interval, shares of clean answers and parsed
ratings, and how often neighbours disagree."""

from __future__ import annotations

import pytest

from alignment_pipeline.llm.config import BackendSpec
from alignment_pipeline.llm.scripted import ScriptedLLM
from alignment_pipeline.sandbox import SandboxConfig, run_sandbox, score_revisions
from alignment_pipeline.sandbox.embedding import HashingEmbedder
from alignment_pipeline.sandbox.store import insert_prompts
from alignment_pipeline.summary import lineage_summary, paired_difference, sandbox_quality
from alignment_pipeline.warehouse.db import Warehouse


def test_paired_difference_with_a_t_interval():
    d = paired_difference([1, 2, 3, 4], [2, 4, 4, 6])  # differences 1, 2, 1, 2: mean 1.5, sd 0.57735
    assert d["n"] == 4 and d["mean_diff"] == pytest.approx(1.5)
    half = 3.182446305284263 * 0.5773502691896258 / 2  # t(0.975, 3) * sd / sqrt(4)
    assert d["ci95_low"] == pytest.approx(1.5 - half) and d["ci95_high"] == pytest.approx(1.5 + half)
    assert paired_difference([3], [5]) == {"n": 1, "mean_diff": 2, "ci95_low": None, "ci95_high": None}
    assert paired_difference([], [])["mean_diff"] is None


def test_quality_and_summary_of_a_scripted_world(tmp_path):
    calls = {"n": 0}

    def responder(prompt: str) -> str:
        if "Rating: <" in prompt:
            calls["n"] += 1
            # Every fifth rating unparseable; otherwise a rating that varies call by call.
            return "no idea" if calls["n"] % 5 == 0 else f"Rating: {calls['n'] % 7 + 1}\nReason: r"
        return "A considered answer.\nRating: 7" if "Your answer:" in prompt else "A first answer."

    wh = Warehouse(tmp_path / "w.duckdb")
    insert_prompts(wh, "b", [f"question {i}?" for i in range(9)])
    llm = ScriptedLLM(responder)
    spec = BackendSpec(kind="scripted", model="s")
    cfg = SandboxConfig(size=3, rounds=1, agent_models=[spec], observer=spec, rating_retries=0)
    run_sandbox(wh, "b", cfg, backend_for=lambda s: llm, embedder=HashingEmbedder())
    score_revisions(wh, "b", cfg, backend_for=lambda s: llm)
    q = sandbox_quality(wh, "b")
    assert q["interactions"] == 9 and q["clean_share"] == 1.0  # the revision's rating line was cleaned off
    assert wh.query("SELECT DISTINCT revision FROM sandbox_interactions").item() == "A considered answer."
    stored = wh.query("SELECT count(rating) AS parsed, count(*) AS total FROM sandbox_feedback").row(0, named=True)
    assert stored["parsed"] < stored["total"]
    assert q["feedback_parsed_share"] == pytest.approx(stored["parsed"] / stored["total"])
    assert q["neighbours_disagree_share"] > 0.5
    assert q["alignment"]["n"] == wh.query(
        "SELECT count(*) FROM scored_revisions WHERE alignment_gain IS NOT NULL").item()
    text = lineage_summary(wh)
    assert "clean drafts and revisions 100%" in text and "alignment" in text and "engagement" in text
