"""The samples_* views (grouped, DPO pairs, SPPO win-rates) and the named sample queries."""

from __future__ import annotations

import math
from itertools import permutations

import polars as pl
import pytest

from alignment_pipeline.samples.build import build_samples
from alignment_pipeline.samples.config import SamplesConfig
from alignment_pipeline.samples.scripted import ScriptedInteraction as S
from alignment_pipeline.samples.scripted import write_scripted
from alignment_pipeline.samples.winrates import preference, win_rates
from alignment_pipeline.warehouse.db import Warehouse

SAMPLE_QUERIES = ("sample_counts", "rating_distribution", "improvement_by_model_round", "top_gains",
                  "grouped_samples", "preference_pairs", "sppo_winrates")


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Warehouse:
    warehouse = Warehouse(tmp_path_factory.mktemp("views") / "w.duckdb")
    write_scripted(warehouse, "b1", [
        # self-critique group with a tie at the top: 5, 5, 2 (and a NULL that stays out)
        S("Q tie?", "draft tie", "revision tie", 2.0, 6.5,
          [(5.0, "good a"), (5.0, "good b"), (2.0, "bad"), (None, "garbled")], agent_id=1, round=0,
          agent_model="m1", prompt_id="p-tie"),
        # four distinct ratings
        S("Q four?", "draft four", "revision four", 3.0, 3.5,
          [(6.5, "f1"), (4.25, "f2"), (3.0, "f3"), (1.0, "f4")], agent_id=2, round=0, agent_model="m2",
          prompt_id="p-four"),
        # all equal: no pairs, no SPPO row
        S("Q flat?", "draft flat", "revision flat", 4.0, 4.0, [(3.0, "same a"), (3.0, "same b")], agent_id=3,
          round=1, agent_model="m1", prompt_id="p-flat"),
        # the imitation prompt "Q tie?" gets a third response from another agent
        S("Q tie?", "another draft", "another revision", 1.0, 5.0, [], agent_id=4, round=1, agent_model="m2",
          prompt_id="p-tie"),
    ])
    build_samples(warehouse, "b1", SamplesConfig())
    return warehouse


def groups(warehouse) -> dict[str, dict]:
    return {r["prompt_key"]: r for r in warehouse.query("SELECT * FROM samples_grouped").to_dicts()}


def test_grouped_lists_are_aligned_and_best_first(warehouse):
    grouped = groups(warehouse)
    assert len(grouped) == warehouse.query("SELECT count(DISTINCT prompt_key) AS n FROM alignment_samples")["n"][0]
    for g in grouped.values():
        assert len(g["responses"]) == len(g["ratings"]) == len(g["models"]) == g["n_responses"]
        assert g["ratings"] == sorted(g["ratings"], reverse=True)
        assert None not in g["ratings"]
    tie = next(g for g in grouped.values() if g["sample_type"] == "imitation" and g["instruction"] == "Q tie?")
    assert tie["ratings"] == [6.5, 5.0, 2.0, 1.0]
    assert tie["responses"] == ["revision tie", "another revision", "draft tie", "another draft"]
    assert tie["models"] == ["m1", "m2", "m1", "m2"]


def test_pairs_are_every_strictly_ordered_pair(warehouse):
    pairs = warehouse.query("SELECT * FROM samples_pairs").to_dicts()
    for p in pairs:
        assert p["margin"] == pytest.approx(p["chosen_rating"] - p["rejected_rating"]) and p["margin"] > 0
    expected = sum(1 for g in groups(warehouse).values()
                   for a, b in permutations(g["ratings"], 2) if a > b)
    assert len(pairs) == expected
    tie = [p for p in pairs if p["sample_type"] == "self_critique" and "Q tie?" in p["input"]]
    assert sorted((p["chosen"], p["rejected"], p["margin"]) for p in tie) == [
        ("good a", "bad", 3.0), ("good b", "bad", 3.0)]  # the two 5s make no pair with each other
    assert not [p for p in pairs if "Q flat?" in p["input"] and p["sample_type"] == "self_critique"]


def test_sppo_win_rates_match_the_reference(warehouse):
    rates = warehouse.query("SELECT prompt_key, rating, win_rate, n_responses FROM samples_sppo").to_dicts()
    by_prompt: dict[str, list[dict]] = {}
    for r in rates:
        by_prompt.setdefault(r["prompt_key"], []).append(r)
    for group in by_prompt.values():
        k = len(group)
        assert all(r["n_responses"] == k for r in group)
        assert sum(r["win_rate"] for r in group) == pytest.approx(k / 2)  # self counted as 1/2
        reference = win_rates([r["rating"] for r in group])
        assert sorted(r["win_rate"] for r in group) == pytest.approx(sorted(reference))
        ordered = sorted(group, key=lambda r: r["rating"])
        assert all(a["win_rate"] <= b["win_rate"] for a, b in zip(ordered, ordered[1:], strict=False))
        if k == 1:
            assert group[0]["win_rate"] == pytest.approx(0.5)
    four = win_rates([6.5, 4.25, 3.0, 1.0])
    assert four[0] == pytest.approx((0.5 + preference(6.5, 4.25) + preference(6.5, 3.0) + preference(6.5, 1.0)) / 4)


def test_sppo_pairs_take_best_and_worst(warehouse):
    rows = warehouse.query("SELECT * FROM samples_sppo_pairs WHERE sample_type = 'self_critique'").to_dicts()
    assert len(rows) == 2  # the all-equal prompt gives none
    four = next(r for r in rows if "Q four?" in r["input"])
    assert (four["chosen"], four["rejected"]) == ("f1", "f4")
    assert four["chosen_probs"] == pytest.approx(1 / (1 + math.exp(1.0 - 6.5)))
    reference = win_rates([6.5, 4.25, 3.0, 1.0])
    assert four["chosen_probs_win"] == pytest.approx(reference[0])
    assert four["chosen_probs_lose"] == pytest.approx(reference[3])
    assert four["prompt"].startswith("### Instruction:\n") and four["prompt"].endswith("### Response:\n")


@pytest.mark.parametrize("name", SAMPLE_QUERIES)
def test_named_queries_run(warehouse, name):
    assert name in warehouse.list_queries()
    assert warehouse.query_text(name).lstrip().startswith("--")
    assert warehouse.named_query(name).height > 0


def test_named_query_figures(warehouse):
    counts = warehouse.named_query("sample_counts")
    assert counts["samples"].sum() == warehouse.count("alignment_samples")
    dist = warehouse.named_query("rating_distribution")
    for total in dist.group_by("sample_type", "rated_by").agg(pl.col("pct").sum().alias("t"))["t"].to_list():
        assert total == pytest.approx(100, abs=0.05)
    assert set(dist["rated_by"]) == {"observer:alignment:draft", "observer:alignment:revision",
                                     "neighbour:rates_draft"}
    improvement = {(r["agent_model"], r["round"]): r for r in warehouse.named_query("improvement_by_model_round").to_dicts()}
    assert improvement[("m1", 0)]["mean_gain"] == pytest.approx(4.5)
    # "Q tie?" is the one eligible interaction: two realignment rows (revision, draft) per feedback
    assert improvement[("m1", 0)]["realignment_samples"] == 8 and improvement[("m2", 0)]["realignment_samples"] == 0
    assert improvement[("m1", 0)]["realignment_interactions"] == 1
    gains = warehouse.named_query("top_gains").to_dicts()
    assert gains[0]["prompt_id"] == "p-tie" and gains[0]["interactions"] == 2 and gains[0]["mean_gain"] == 4.25
    assert [g["mean_gain"] for g in gains] == sorted((g["mean_gain"] for g in gains), reverse=True)
    pairs = warehouse.named_query("preference_pairs")
    assert pairs.height == warehouse.count("samples_pairs")
    assert pairs["margin"].to_list() == sorted(pairs["margin"].to_list(), reverse=True)


def test_sppo_pairs_break_ties_by_sample_id(warehouse):
    tie = warehouse.query("SELECT chosen FROM samples_sppo_pairs WHERE sample_type = 'self_critique' "
                          "AND input LIKE '%Q tie?%'")["chosen"].to_list()
    ids = dict(warehouse.query("SELECT response, sample_id FROM alignment_samples "
                               "WHERE response IN ('good a', 'good b')").rows())
    assert tie == [min(ids, key=ids.get)]


@pytest.fixture(scope="module")
def larger(tmp_path_factory) -> Warehouse:
    """Enough prompts that the top-100 named queries have to choose (ratings on a coarse grid: many ties)."""
    warehouse = Warehouse(tmp_path_factory.mktemp("larger") / "w.duckdb")
    write_scripted(warehouse, "b1", [
        S(f"Q{n}?", f"draft {n}", f"revision {n}", 1.0 + n % 4, 2.0 + (n * 7) % 6,
          [(1.0 + (n * k) % 7, f"feedback {n}.{k}") for k in range(1, 5)], agent_id=n % 100, round=n // 100)
        for n in range(150)])
    build_samples(warehouse, "b1", SamplesConfig())
    return warehouse


def test_top_queries_equal_their_plain_definitions(larger):
    assert larger.count("samples_pairs") > 300
    pairs = larger.named_query("preference_pairs")
    plain = larger.query(
        "SELECT prompt_key, left(chosen, 60) AS chosen, left(rejected, 60) AS rejected, round(margin, 3) AS margin "
        "FROM samples_pairs ORDER BY margin DESC, prompt_key, chosen_id, rejected_id LIMIT 100")
    assert pairs.select("prompt_key", "chosen", "rejected", "margin").rows() == plain.rows()

    grouped = larger.named_query("grouped_samples")
    plain = larger.query("SELECT prompt_key, n_responses, ratings FROM samples_grouped "
                         "ORDER BY n_responses DESC, prompt_key LIMIT 100")
    assert grouped.select("prompt_key", "n_responses", "ratings").rows() == plain.rows()

    sppo = larger.named_query("sppo_winrates").to_dicts()
    assert len(sppo) == 100
    for row in sppo:
        ratings = larger.query("SELECT rating FROM alignment_samples WHERE prompt_key = ?",
                               [row["prompt_key"]])["rating"].to_list()
        reference = win_rates(ratings)
        assert row["chosen_probs_win"] == pytest.approx(max(reference), abs=1e-4)
        assert row["chosen_probs_lose"] == pytest.approx(min(reference), abs=1e-4)
    gaps = [r["chosen_probs_win"] - r["chosen_probs_lose"] for r in sppo]
    assert all(a >= b - 2e-4 for a, b in zip(gaps, gaps[1:], strict=False))  # the query rounds to 4 places
