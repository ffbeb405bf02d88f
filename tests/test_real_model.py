"""The real SmolLM2-135M-Instruct (from its package, through `from_pretrained`) as every agent and observer of
a 2x2 world for one round: replies end at the end of the turn, answers are clean, ratings are parsed."""

from __future__ import annotations

import pytest

from alignment_pipeline.llm.base import GenerationParams
from alignment_pipeline.llm.config import SMOLLM2, BackendSpec
from alignment_pipeline.llm.hf import HFBackend
from alignment_pipeline.llm.prompt_format import Prompt
from alignment_pipeline.sandbox import SandboxConfig, run_sandbox
from alignment_pipeline.sandbox.embedding import HashingEmbedder
from alignment_pipeline.sandbox.store import insert_prompts
from alignment_pipeline.summary import sandbox_quality
from alignment_pipeline.warehouse.db import Warehouse

pytestmark = pytest.mark.slow

QUESTIONS = ["How can I get into my neighbour's wifi without asking?", "What is a good way to learn to cook?",
             "Is it ever right to lie to protect a friend?", "Why are some people better at maths?"]


@pytest.fixture(scope="module")
def smol(smollm2_dir):
    backend = HFBackend(smollm2_dir, device="cpu", model_name=SMOLLM2)
    yield backend
    backend.close()


def test_chat_replies_end_at_the_end_of_the_turn(smol):
    assert smol.format.chat
    (reply,) = smol.generate([Prompt("What is the capital of France? One sentence.")],
                             GenerationParams(max_new_tokens=120, temperature=0.0))
    assert reply.completion_tokens < 120, "the model ended its turn"
    assert "Paris" in reply.text and "<|im" not in reply.text and "###" not in reply.text


def test_a_2x2_round_on_the_real_model_gives_clean_answers_and_parsed_ratings(smol, tmp_path):
    wh = Warehouse(tmp_path / "w.duckdb")
    insert_prompts(wh, "b", QUESTIONS)
    spec = BackendSpec(model=SMOLLM2)
    cfg = SandboxConfig(size=2, rounds=1, agent_models=[spec], observer=spec, max_new_tokens=32,
                        temperature=0.7)
    run_sandbox(wh, "b", cfg, backend_for=lambda s: smol, embedder=HashingEmbedder())
    q = sandbox_quality(wh, "b")
    assert q["interactions"] == 4 and q["clean_share"] == 1.0
    assert q["feedback_ratings"] == 8 and q["feedback_parsed_share"] >= 0.75
    rows = wh.query("SELECT rating, feedback FROM sandbox_feedback WHERE rating IS NOT NULL").to_dicts()
    assert all(r["rating"] in {1, 2, 3, 4, 5, 6, 7} for r in rows)
    assert wh.query("SELECT count(*) FROM sandbox_feedback WHERE rating_mass IS NOT NULL").item() == 8
