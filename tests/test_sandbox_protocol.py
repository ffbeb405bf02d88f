"""The Back-Scatter protocol on the scripted backend: world, questions, neighbours, feedback order, revision
prompts, memory retrieval, batching, observers, resume without calls, and the data checks."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from alignment_pipeline.config import load_profile
from alignment_pipeline.llm.config import BackendSpec
from alignment_pipeline.llm.scripted import ScriptedLLM
from alignment_pipeline.sandbox import SandboxConfig, rating_histogram_png, run_sandbox, score_revisions
from alignment_pipeline.sandbox.checks import (
    check_interactions_complete,
    check_ratings_valid,
    check_revisions_differ,
)
from alignment_pipeline.sandbox.embedding import HashingEmbedder
from alignment_pipeline.sandbox.memory import MemoryBank, load_prior_memories
from alignment_pipeline.sandbox.store import insert_prompts
from alignment_pipeline.sandbox.templates import SANDBOX_RULE, format_score
from alignment_pipeline.sandbox.world import World, stances
from alignment_pipeline.warehouse.db import Warehouse

BATCH = "b1"
QUESTIONS = [f"Question {i}: what should I do about problem number {i}?" for i in range(40)]
SCRIPTED = BackendSpec(kind="scripted", model="scripted")


def config(**overrides) -> SandboxConfig:
    base = dict(size=3, rounds=2, agent_models=[SCRIPTED], observer=SCRIPTED, memory_min_similarity=0.3)
    return SandboxConfig(**{**base, **overrides})


@pytest.fixture
def warehouse(tmp_path) -> Warehouse:
    wh = Warehouse(tmp_path / "w.duckdb")
    insert_prompts(wh, BATCH, QUESTIONS)
    return wh


def responder(prompt: str) -> str:
    """Ratings vary with the prompt, so feedback order is exercised; other text echoes a prompt hash."""
    digest = sum(prompt.encode()) % 9973
    if prompt.endswith("Reason:"):
        return f" because-{digest}"
    if "Rating: <" in prompt:
        return f"Rating: {digest % 7 + 1}\nReason: reason-{digest}"
    return f"answer-{digest}"


def interactions(wh: Warehouse) -> list[dict]:
    return wh.query("SELECT * FROM sandbox_interactions ORDER BY round, agent_id").to_dicts()


def feedback(wh: Warehouse, iid: str) -> list[dict]:
    return wh.query("SELECT * FROM sandbox_feedback WHERE interaction_id = ? ORDER BY position", [iid]).to_dicts()


# -- world ----------------------------------------------------------------------------------------------------

def test_world_circles_and_draws():
    cfg = config(size=5, seed=3)
    world = World(cfg)
    assert world.radius == 2.0
    centre = 12  # row 2, col 2
    circle = world.social_circle(centre)
    assert centre not in circle
    expected = [i for i in range(25) if i != centre and np.hypot(i // 5 - 2, i % 5 - 2) <= 2]
    assert circle == expected
    draws = [world.draw_neighbours(r, centre) for r in range(5)]
    for draw in draws:
        assert len(draw) == 4 and len(set(draw)) == 4 and set(draw) <= set(circle)
    assert len({tuple(sorted(d)) for d in draws}) > 1, "rounds draw different neighbours"
    assert World(cfg).draw_neighbours(3, centre) == draws[3], "same seed, same draw"
    corner = World(config(size=3)).social_circle(0)
    assert corner == [1, 3] and World(config(size=3)).neighbour_count(0) == 2


def test_stances_follow_the_init_setting():
    assert stances(config(init_setting="all_good")) == ["good"] * 9
    assert stances(config(init_setting="all_bad")) == ["bad"] * 9
    assert stances(config(init_setting="half_half")) == ["good"] * 5 + ["bad"] * 4
    mixed = stances(config(init_setting="mixed_half_half", size=4))
    assert mixed.count("good") == 8 and mixed != ["good"] * 8 + ["bad"] * 8
    assert stances(config(init_setting="mixed_half_half", size=4, seed=1)) != mixed


def test_config_world_id_and_validation():
    assert config(rounds=2).world_id("b") == config(rounds=5).world_id("b"), "more rounds continue a world"
    assert config(seed=1).world_id("b") != config(seed=2).world_id("b")
    assert config().world_id("b").startswith("b#")
    with pytest.raises(ValueError, match="size"):
        config(size=1)
    with pytest.raises(ValueError, match="radius"):
        config(radius=0.5)
    for name in ("smoke", "paper"):
        assert load_profile(name).sandbox.agents >= 9


def test_prior_memories_file_is_valid_and_bad_lines_are_named(tmp_path):
    priors = load_prior_memories(config().prior_memories_path())
    labels = [p.label for p in priors]
    assert labels.count("good") >= 20 and labels.count("bad") >= 20
    bad = tmp_path / "m.jsonl"
    bad.write_text('{"question": "q", "answer": "a", "label": "good"}\n{"question": "q", "answer": "", "label": "bad"}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:2: field 'answer'"):
        load_prior_memories(bad)


# -- one full run ---------------------------------------------------------------------------------------------

@pytest.fixture
def ran(warehouse):
    llm = ScriptedLLM(responder)
    cfg = config()
    report = run_sandbox(warehouse, BATCH, cfg, backend_for=lambda spec: llm, embedder=HashingEmbedder())
    return warehouse, cfg, llm, report


def test_each_agent_gets_its_own_question_and_neighbours_from_its_circle(ran):
    wh, cfg, _, report = ran
    world = World(cfg)
    rows = interactions(wh)
    assert report.interactions == report.new_interactions == len(rows) == 18
    for r in range(cfg.rounds):
        in_round = [row for row in rows if row["round"] == r]
        assert [row["question"] for row in in_round] == QUESTIONS[r * 9:(r + 1) * 9]
        assert len({row["prompt_id"] for row in in_round}) == 9
    for row in rows:
        a = row["agent_id"]
        assert set(row["neighbour_ids"]) <= set(world.social_circle(a))
        assert sorted(row["neighbour_ids"]) == sorted(world.draw_neighbours(row["round"], a))
        assert len(row["neighbour_ids"]) == world.neighbour_count(a)
        assert row["agent_label"] == world.agents[a].label


def test_feedback_is_ordered_lowest_rating_last_and_the_revision_prompt_holds_it(ran):
    wh, _, llm, _ = ran
    orders_seen = set()
    for row in interactions(wh):
        rows = feedback(wh, row["interaction_id"])
        ratings = [f["rating"] for f in rows]
        assert ratings == sorted(ratings, reverse=True), "lowest rating last"
        assert [f["neighbour_id"] for f in rows] == row["neighbour_ids"]
        orders_seen.add(len(set(ratings)))
        mean = sum(ratings) / len(ratings)
        assert row["mean_feedback_rating"] == pytest.approx(mean)
        revision_prompts = [p for p in llm.prompts
                            if f"Question: {row['question']}\nYour answer: {row['draft']}" in p]
        assert len(revision_prompts) == 1
        prompt = revision_prompts[0]
        assert SANDBOX_RULE in prompt
        assert f"Average score: {format_score(mean)} out of 7" in prompt
        positions = [prompt.index(f"- score {format_score(f['rating'])}: {f['feedback']}\n") for f in rows]
        assert positions == sorted(positions), "reasons appear in feedback order, lowest last"
        assert row["revision"] == responder(prompt)
    assert max(orders_seen) > 1, "some interaction had differing ratings to order"


def test_memories_are_written_for_agents_and_neighbours(ran):
    wh, cfg, _, _ = ran
    world_id = cfg.world_id(BATCH)
    kinds = dict(wh.query("SELECT kind, count(*) AS n FROM agent_memories WHERE world_id = ? GROUP BY kind",
                          [world_id]).iter_rows())
    fb = wh.count("sandbox_feedback")
    assert kinds["answer"] == kinds["feedback_received"] == 18
    assert kinds["feedback_given"] == fb
    priors = load_prior_memories(cfg.prior_memories_path())
    per_label = {lab: sum(p.label == lab for p in priors) for lab in ("good", "bad")}
    assert kinds["prior"] == sum(per_label[a.label] for a in World(cfg).agents)
    # The revision is what enters the agent's memory as its answer.
    pairs = wh.query("SELECT count(*) FROM agent_memories m JOIN sandbox_interactions i ON m.world_id = i.world_id "
                     "AND m.agent_id = i.agent_id AND m.round = i.round AND m.kind = 'answer' "
                     "AND m.answer = i.revision AND m.question = i.question").item()
    assert pairs == 18


def test_observer_scores_exist_before_and_after(ran, tmp_path):
    wh, cfg, llm, _ = ran
    report = score_revisions(wh, BATCH, cfg, backend_for=lambda spec: llm)
    assert report.interactions == 18 and report.new_ratings == 72
    counts = wh.query("SELECT target, dimension, count(rating) AS n FROM observer_ratings "
                      "GROUP BY ALL ORDER BY ALL").rows()
    assert counts == [("draft", "alignment", 18), ("draft", "engagement", 18),
                      ("revision", "alignment", 18), ("revision", "engagement", 18)]
    scored = wh.query("SELECT * FROM scored_revisions WHERE batch = ?", [BATCH])
    assert scored.height == 18
    assert scored["alignment_before"].null_count() == 0 and scored["alignment_after"].null_count() == 0
    gain = (scored["alignment_after"] - scored["alignment_before"]).to_list()
    assert scored["alignment_gain"].to_list() == pytest.approx(gain)
    assert scored["improved"].to_list() == [g > 0 for g in gain]
    meta = report.metadata()
    assert meta["mean_alignment_before"] == pytest.approx(scored["alignment_before"].mean(), abs=1e-3)
    assert meta["share_improved"] == pytest.approx(sum(g > 0 for g in gain) / 18, abs=1e-3)
    json.dumps(meta)
    # A second pass rates nothing new and rebuilds the same rows.
    again = score_revisions(wh, BATCH, cfg, backend_for=lambda spec: pytest.fail("no observer needed"))
    assert again.new_ratings == 0 and again.llm_calls == 0
    assert wh.count("scored_revisions") == 18
    png = rating_histogram_png(wh, BATCH, tmp_path / "h.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checks_pass_on_a_clean_run_and_fail_on_broken_data(ran):
    wh, cfg, llm, _ = ran
    score_revisions(wh, BATCH, cfg, backend_for=lambda spec: llm)
    assert check_ratings_valid(wh, BATCH).passed
    assert check_interactions_complete(wh, BATCH, cfg).passed
    differ = check_revisions_differ(wh, BATCH)
    assert differ.passed and differ.metadata["share_differ"] == 1.0
    first = interactions(wh)[0]["interaction_id"]
    with wh.transaction() as con:
        con.execute("UPDATE sandbox_feedback SET rating = 9 WHERE interaction_id = ? AND position = 0", [first])
        con.execute("UPDATE observer_ratings SET rating = NULL, null_reason = NULL WHERE interaction_id = ? "
                    "AND target = 'draft' AND dimension = 'alignment'", [first])
        con.execute("UPDATE sandbox_interactions SET revision = '  ' || upper(draft) WHERE interaction_id = ?", [first])
        con.execute("DELETE FROM sandbox_feedback WHERE interaction_id = ? AND position = 1", [first])
        con.execute("DELETE FROM sandbox_interactions WHERE round = 1 AND agent_id = 4")
    ratings = check_ratings_valid(wh, BATCH)
    assert not ratings.passed and ratings.metadata["violations"] == 2
    complete = check_interactions_complete(wh, BATCH, cfg)
    assert not complete.passed and complete.metadata["missing"] == 1 and complete.metadata["problems"] == 1
    differ = check_revisions_differ(wh, BATCH)
    assert not differ.passed and differ.metadata["identical"] == 1 and differ.severity == "WARN"


def test_a_complete_batch_makes_no_llm_calls_and_builds_no_backend(ran):
    wh, cfg, _, _ = ran

    def refuse(spec):
        raise AssertionError("a complete batch must not build a backend")

    class NoEmbedder:
        name = "none"

        def encode(self, texts):
            raise AssertionError("a complete batch must not embed")

    report = run_sandbox(wh, BATCH, cfg, backend_for=refuse, embedder=NoEmbedder())
    assert report.llm_calls == 0 and report.new_interactions == 0 and report.skipped_interactions == 18
    assert report.interactions == 18
    # More rounds extend the same world.
    llm = ScriptedLLM(responder)
    more = run_sandbox(wh, BATCH, config(rounds=3), backend_for=lambda spec: llm, embedder=HashingEmbedder())
    assert more.world_id == report.world_id and more.new_interactions == 9 and more.interactions == 27
    assert wh.count("sandbox_worlds") == 1


# -- batching -------------------------------------------------------------------------------------------------

def test_every_phase_is_one_batch_across_all_agents(warehouse):
    llm = ScriptedLLM(responder)
    report = run_sandbox(warehouse, BATCH, config(), backend_for=lambda spec: llm, embedder=HashingEmbedder())
    pairs = sum(World(config()).neighbour_count(a) for a in range(9))
    assert llm.batch_sizes == [9, pairs, 9] * 2, "drafts, feedback, revisions: one batch each per round"
    assert report.batches == 6 and report.llm_calls == 2 * (9 + pairs + 9)
    logged = sum(r["llm_calls"] for r in report.per_round)
    stored = warehouse.query("SELECT sum(llm_calls) FROM sandbox_interactions").item()
    assert logged == stored == report.llm_calls
    score_revisions(warehouse, BATCH, config(), backend_for=lambda spec: llm)
    assert llm.batch_sizes[6:] == [18, 18, 18, 18], "one observer batch per (target, dimension)"


def test_logprob_expectations_beside_sampled_ratings(warehouse):
    """With log-probs, feedback is still sampled and parsed (one batch); the rating candidates after "Rating:"
    are scored in one more batch and their expectation kept beside the sampled rating, never instead of it."""
    scored_batches = []

    def scorer(prompt, candidates):
        assert prompt.endswith("Rating:") and list(candidates) == [f" {n}" for n in range(1, 8)]
        return [-1.0 if c == " 6" else -3.0 for c in candidates]

    llm = ScriptedLLM(responder, scorer=scorer)
    original = llm.score_continuations

    def counting(prompts, candidates):
        scored_batches.append(len(prompts))
        return original(prompts, candidates)

    llm.score_continuations = counting
    run_sandbox(warehouse, BATCH, config(rounds=1), backend_for=lambda spec: llm, embedder=HashingEmbedder())
    pairs = sum(World(config()).neighbour_count(a) for a in range(9))
    assert scored_batches == [pairs]
    assert llm.batch_sizes == [9, pairs, 9], "drafts, sampled feedback, revisions"
    rows = warehouse.query("SELECT rating, rating_argmax, rating_method, feedback, expected_rating, rating_mass "
                           "FROM sandbox_feedback").to_dicts()
    mass = np.exp(-1.0) + 6 * np.exp(-3.0)
    p6 = np.exp(-1.0) / mass
    expected = 6 * p6 + (1 + 2 + 3 + 4 + 5 + 7) * (1 - p6) / 6
    assert len(rows) == pairs
    assert all(r["rating_method"] == "parsed" and r["rating"] == r["rating_argmax"]
               and r["feedback"].startswith("reason-") for r in rows)
    assert len({r["rating"] for r in rows}) > 1, "sampled ratings, not one expectation for all"
    assert all(r["expected_rating"] == pytest.approx(expected) and r["rating_mass"] == pytest.approx(mass)
               for r in rows)


def test_agents_sharing_a_backend_share_its_batches(warehouse):
    """Two model specs: each backend gets one batch per phase; two specs built into one backend share."""
    a, b = ScriptedLLM(responder, model_name="model-a"), ScriptedLLM(responder, model_name="model-b")
    specs = [BackendSpec(kind="scripted", model="a"), BackendSpec(kind="scripted", model="b")]
    cfg = config(rounds=1, agent_models=specs)
    run_sandbox(warehouse, BATCH, cfg, backend_for=lambda spec: a if spec.model == "a" else b,
                embedder=HashingEmbedder())
    world = World(cfg)
    on_a = [i for i in range(9) if i % 2 == 0]
    pairs_a = sum(1 for x in range(9) for n in world.draw_neighbours(0, x) if n % 2 == 0)
    assert a.batch_sizes == [len(on_a), pairs_a, len(on_a)]
    assert b.batch_sizes == [9 - len(on_a), sum(world.neighbour_count(x) for x in range(9)) - pairs_a, 9 - len(on_a)]
    models = dict(warehouse.query("SELECT agent_id, agent_model FROM sandbox_interactions").iter_rows())
    assert all(models[i] == ("model-a" if i % 2 == 0 else "model-b") for i in range(9))
    fb = warehouse.query("SELECT neighbour_id, neighbour_model FROM sandbox_feedback").rows()
    assert all(m == ("model-a" if n % 2 == 0 else "model-b") for n, m in fb)

    shared = ScriptedLLM(responder)
    other = Warehouse(warehouse.path.with_name("other.duckdb"))
    insert_prompts(other, BATCH, QUESTIONS)
    run_sandbox(other, BATCH, cfg, backend_for=lambda spec: shared, embedder=HashingEmbedder())
    assert len(shared.batch_sizes) == 3


# -- memory retrieval -----------------------------------------------------------------------------------------

class TableEmbedder:
    """Controlled embedder: fixed unit vectors for known texts, hashing for the rest."""

    name = "table"

    def __init__(self, table: dict[str, list[float]], dim: int = 8):
        self.table = {k: np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for k, v in table.items()}
        self.fallback = HashingEmbedder(dim)

    def encode(self, texts):
        out = self.fallback.encode(texts)
        for i, t in enumerate(texts):
            if t in self.table:
                out[i] = self.table[t]
        return out


def test_retrieved_memories_are_the_most_similar_past_questions(tmp_path):
    priors = tmp_path / "priors.jsonl"
    lines = [("prior near", "answer near"), ("prior nearest", "answer nearest"),
             ("prior far", "answer far"), ("prior middle", "answer middle")]
    priors.write_text("".join(json.dumps({"question": q, "answer": a, "label": "good"}) + "\n" for q, a in lines))
    e = np.eye(8)
    asked = [f"asked question {i}" for i in range(9)]  # distinct texts, one direction
    embedder = TableEmbedder({
        **{q: e[0] for q in asked},
        "prior nearest": e[0] + 0.1 * e[1],   # cos ~ 0.995
        "prior near": e[0] + 0.5 * e[1],      # cos ~ 0.894
        "prior middle": e[0] + 1.0 * e[1],    # cos ~ 0.707
        "prior far": e[1],                    # cos 0: below the threshold
    })
    wh = Warehouse(tmp_path / "w.duckdb")
    insert_prompts(wh, BATCH, asked)
    llm = ScriptedLLM(responder)
    cfg = config(rounds=1, init_setting="all_good", prior_memories=str(priors), memory_top_n=2,
                 memory_min_similarity=0.5)
    run_sandbox(wh, BATCH, cfg, backend_for=lambda spec: llm, embedder=embedder)
    row = interactions(wh)[0]
    got = json.loads(row["retrieved_memories"])
    assert [m["question"] for m in got] == ["prior nearest", "prior near"]
    assert [m["answer"] for m in got] == ["answer nearest", "answer near"]
    assert got[0]["similarity"] == pytest.approx(1 / np.sqrt(1.01), abs=1e-3)
    draft_prompt = next(p for p in llm.prompts if "Answer the question." in p)
    assert 'similar question: "prior nearest", and you answered: "answer nearest"' in draft_prompt
    assert "prior far" not in draft_prompt and "prior middle" not in draft_prompt
    judged = wh.query("SELECT retrieved_memories FROM sandbox_feedback_memories").to_series().to_list()
    assert all([m["question"] for m in json.loads(j)] == ["prior nearest", "prior near"] for j in judged)
    # Threshold above everything: nothing retrieved.
    cfg_high = config(rounds=1, init_setting="all_good", prior_memories=str(priors), memory_min_similarity=0.999)
    wh2 = Warehouse(tmp_path / "w2.duckdb")
    insert_prompts(wh2, BATCH, asked)
    run_sandbox(wh2, BATCH, cfg_high, backend_for=lambda spec: llm, embedder=embedder)
    assert json.loads(interactions(wh2)[0]["retrieved_memories"]) == []


def test_memory_bank_matches_a_brute_force_search():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(60, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    owners = rng.integers(0, 5, size=60)
    bank = MemoryBank(owners, [f"q{i}" for i in range(60)], [f"a{i}" for i in range(60)], vectors)
    queries = rng.normal(size=(7, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    asking = [0, 1, 2, 3, 4, 0, 9]
    got = bank.retrieve(asking, queries, top_n=3, min_similarity=0.1)
    for q, owner, result in zip(queries, asking, got, strict=True):
        candidates = sorted(((float(vectors[j] @ q), j) for j in range(60)
                             if owners[j] == owner and vectors[j] @ q >= 0.1), key=lambda t: -t[0])[:3]
        assert [r.question for r in result] == [f"q{j}" for _, j in candidates]
        assert [r.answer for r in result] == [f"a{j}" for _, j in candidates]
    assert got[-1] == [], "an agent without memories retrieves nothing"


def test_memories_survive_a_restart_and_are_read_back_with_their_keys(ran):
    wh, cfg, _, _ = ran
    fresh = Warehouse(wh.path)  # a new process would see the same file
    from alignment_pipeline.sandbox.store import load_memory_bank

    bank = load_memory_bank(fresh, cfg.world_id(BATCH), before_round=99, dim=HashingEmbedder().dim)
    rows = fresh.query("SELECT agent_id, question, answer FROM agent_memories WHERE world_id = ? AND kind IN "
                       "('prior', 'answer') ORDER BY agent_id, coalesce(round, -1), memory_id", [cfg.world_id(BATCH)])
    assert len(bank) == rows.height
    assert bank.questions == rows["question"].to_list() and bank.answers == rows["answer"].to_list()
    recomputed = HashingEmbedder().encode(bank.questions)
    assert np.allclose(bank.vectors, recomputed, atol=1e-6), "every vector is its own row's question"


def test_questions_wrap_around_a_short_batch(tmp_path, caplog):
    wh = Warehouse(tmp_path / "w.duckdb")
    insert_prompts(wh, BATCH, QUESTIONS[:12])
    llm = ScriptedLLM(responder)
    run_sandbox(wh, BATCH, config(rounds=2), backend_for=lambda spec: llm, embedder=HashingEmbedder())
    got = [row["question"] for row in interactions(wh)]
    assert got == [QUESTIONS[i % 12] for i in range(18)]
    with pytest.raises(ValueError, match="no prompts"):
        run_sandbox(wh, "missing", config(), backend_for=lambda spec: llm, embedder=HashingEmbedder())


def test_report_metadata_is_plain(ran):
    _, _, _, report = ran
    meta = report.metadata()
    json.dumps(meta)
    for key in ("rounds", "interactions", "llm_calls", "batches", "prompt_tokens", "completion_tokens",
                "tokens_per_s", "seconds", "mean_feedback_rating", "null_feedback_ratings"):
        assert key in meta
    assert meta["null_feedback_ratings"] == 0 and 1 <= meta["mean_feedback_rating"] <= 7
    assert re.fullmatch(r"b1#[0-9a-f]{10}", meta["world_id"])


def test_transcript_view_and_named_queries(ran):
    wh, cfg, llm, report = ran
    transcripts = wh.query("SELECT * FROM sandbox_transcripts ORDER BY round, agent_id").to_dicts()
    assert len(transcripts) == 18
    for t in transcripts:
        assert [f["neighbour_id"] for f in t["feedback"]] == t["neighbour_ids"]
        assert [f["position"] for f in t["feedback"]] == list(range(len(t["neighbour_ids"])))
    rounds = wh.named_query("sandbox_rounds").to_dicts()
    assert [(r["round"], r["interactions"]) for r in rounds] == [(0, 9), (1, 9)]
    assert [r["llm_calls"] for r in rounds] == [r["llm_calls"] for r in report.per_round]
    score_revisions(wh, BATCH, cfg, backend_for=lambda spec: llm)
    stats = wh.named_query("sandbox_model_stats").to_dicts()
    assert len(stats) == 1 and stats[0]["interactions"] == 18 and stats[0]["agent_model"] == "scripted"
    agents = wh.query("SELECT * FROM sandbox_agent_stats").to_dicts()
    assert len(agents) == 9 and all(a["interactions"] == 2 for a in agents)


def test_chat_prior_goes_to_the_named_agent_models_only(warehouse):
    """As in the original, chat agents get the no-hedging prior as their system message; others and the observer
    do not. Every draft, feedback and revision prompt of a model follows its agent's setting."""
    from alignment_pipeline.sandbox.templates import CHAT_PRIOR

    a, b = ScriptedLLM(responder, model_name="model-a"), ScriptedLLM(responder, model_name="model-b")
    specs = [BackendSpec(kind="scripted", model="a"), BackendSpec(kind="scripted", model="b")]
    cfg = config(rounds=1, agent_models=specs, chat_prior_models=["b"])
    run_sandbox(warehouse, BATCH, cfg, backend_for=lambda spec: a if spec.model == "a" else b,
                embedder=HashingEmbedder())
    assert a.prompts and b.prompts
    assert not any(CHAT_PRIOR in p for p in a.prompts)
    assert all(CHAT_PRIOR in p for p in b.prompts)
    assert config(rounds=1, agent_models=specs).world_hash() != cfg.world_hash()
    with pytest.raises(ValueError, match="chat_prior_models names no agent model: c"):
        World(config(agent_models=specs, chat_prior_models=["c"]))


def test_observer_scale_ratings_are_drawn_from_its_logprobs_in_one_pass(warehouse):
    """observer_replies 'scale': no observer text is generated; each rating is a draw from the observer's
    probabilities of ' 1'..' 7' (here 90% on ' 5', 10% on ' 2'), so both values occur, nothing else does, and
    the draws are the same on a rerun with the same seed."""
    agents = ScriptedLLM(responder, model_name="agents")

    def scorer(prompt, candidates):
        assert prompt.endswith("Rating:")
        p = {" 5": 0.9, " 2": 0.1}
        return [float(np.log(p[c])) if c in p else -np.inf for c in candidates]

    observer = ScriptedLLM(lambda p: pytest.fail("the observer generated text"), scorer=scorer, model_name="obs")
    cfg = config(rounds=2, observer=BackendSpec(kind="scripted", model="obs"), observer_replies="scale",
                 temperature=1.0)
    pick = lambda spec: observer if spec.model == "obs" else agents  # noqa: E731
    run_sandbox(warehouse, BATCH, cfg, backend_for=pick, embedder=HashingEmbedder())
    score_revisions(warehouse, BATCH, cfg, backend_for=pick)
    rows = warehouse.query("SELECT rating, rating_argmax, rating_method, reason, null_reason "
                           "FROM observer_ratings ORDER BY interaction_id, target, dimension").to_dicts()
    assert len(rows) == 18 * 4
    assert {r["rating_method"] for r in rows} == {"scale"} and all(r["null_reason"] is None for r in rows)
    counts = {v: sum(r["rating"] == v for r in rows) for v in (2.0, 5.0)}
    assert counts[2.0] + counts[5.0] == len(rows) and counts[2.0] >= 1 and counts[5.0] > 3 * counts[2.0]
    assert check_ratings_valid(warehouse, BATCH).passed
    from alignment_pipeline.summary import lineage_summary, sandbox_quality

    quality = sandbox_quality(warehouse, BATCH)
    assert quality["observer_parsed_share"] == 0.0 and quality["observer_scale_share"] == 1.0
    assert "observers 0% of 72 (100% drawn from their log-probs)" in lineage_summary(warehouse)
    assert cfg.world_hash() != config(rounds=2, observer=BackendSpec(kind="scripted", model="obs"),
                                      temperature=1.0).world_hash()


def test_observer_scale_needs_logprobs_and_temperature_zero_takes_the_most_probable():
    from alignment_pipeline.sandbox.ratings import rate_on_scale

    flat = ScriptedLLM()
    with pytest.raises(ValueError, match="log-probs"):
        rate_on_scale([(flat, "Rating:")], 1.0, 0)
    peaked = ScriptedLLM(scorer=lambda p, c: [-1.0 if x == " 3" else -2.0 for x in c])
    results = rate_on_scale([(peaked, "Rating:")] * 20, 0.0, 0)
    assert {r.value for r in results} == {3.0}
    assert results[0].mass == pytest.approx(np.exp(-1.0) + 6 * np.exp(-2.0))
