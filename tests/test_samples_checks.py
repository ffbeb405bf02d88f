"""Sample checks: pass on built data, and each one catches the bad row it is for."""

from __future__ import annotations

from datetime import datetime

import pytest

from alignment_pipeline.checks import run_checks
from alignment_pipeline.samples.build import SAMPLE_COLUMNS, build_samples, prompt_key, sample_id
from alignment_pipeline.samples.checks import SAMPLE_CHECKS, check_type_shares
from alignment_pipeline.samples.config import PAPER_TYPE_COUNTS, SamplesConfig
from alignment_pipeline.samples.scripted import ScriptedInteraction as S
from alignment_pipeline.samples.scripted import interaction_id, write_scripted
from alignment_pipeline.warehouse.db import Warehouse

FIRST = S("Q1?", "d1", "r1", 2.0, 6.0, [(5.0, "f1"), (3.0, "f2")], agent_id=1)


@pytest.fixture
def warehouse(tmp_path) -> Warehouse:
    warehouse = Warehouse(tmp_path / "w.duckdb")
    write_scripted(warehouse, "b1", [FIRST, S("Q2?", "d2", "r2", 4.0, 3.0, [(2.0, "f3")], agent_id=2)])
    build_samples(warehouse, "b1", SamplesConfig())
    return warehouse


def insert_row(warehouse: Warehouse, **changes) -> None:
    """Insert one sample row (a valid one unless `changes` break it), bypassing the build."""
    row = {"sample_type": "imitation", "batch": "b1", "instruction": "Q1?", "input": "", "response": "extra answer",
           "rating": 4.0, "rating_source": "observer:alignment:draft", "agent_model": "model-a",
           "world_id": "world-0", "round": 0,
           "interaction_id": interaction_id(FIRST.world_id, FIRST.round, FIRST.agent_id),
           "created_at": datetime(2024, 1, 1)}
    row.update({k: v for k, v in changes.items() if k not in ("sample_id", "prompt_key")})
    row["prompt_key"] = changes.get("prompt_key", prompt_key(row["instruction"], row["input"]))
    row["sample_id"] = changes.get("sample_id", sample_id(row["sample_type"], row["prompt_key"], row["response"]))
    with warehouse.transaction() as con:
        con.execute(f"INSERT INTO alignment_samples ({', '.join(SAMPLE_COLUMNS)}) VALUES "
                    f"({', '.join('?' for _ in SAMPLE_COLUMNS)})", [row[c] for c in SAMPLE_COLUMNS])


def outcomes(warehouse) -> dict:
    return {o.name: o for o in run_checks(SAMPLE_CHECKS, warehouse=warehouse, batch="b1", config=SamplesConfig())}


def test_checks_pass_on_built_samples(warehouse):
    result = outcomes(warehouse)
    assert tuple(result) == tuple(c.name for c in SAMPLE_CHECKS)
    assert all(o.passed for o in result.values()), {n: o.description for n, o in result.items()}
    blocking = [c for c in SAMPLE_CHECKS if c.blocking]
    assert [o.name for o in run_checks(blocking, warehouse=warehouse, batch="b1")] == [c.name for c in blocking]
    shares = result["samples_type_shares"].metadata
    # realignment: the revision and the draft per feedback of FIRST (the only eligible interaction)
    assert (shares["count_imitation"], shares["count_self_critique"], shares["count_realignment"]) == (4, 3, 4)
    assert shares["share_imitation"] == round(4 / 11, 4)


@pytest.mark.parametrize("changes,failing", [
    ({"rating": 9.0}, "samples_rating_in_range"),
    ({"rating": 0.5}, "samples_rating_in_range"),
    ({"rating": None}, "samples_rating_in_range"),
    ({"rating": float("nan")}, "samples_rating_in_range"),
    ({"response": " \n "}, "samples_nonempty_response"),
    ({"sample_id": "not-the-content-hash"}, "samples_unique_id"),
    ({"prompt_key": "not-the-prompt-hash"}, "samples_unique_id"),
    ({"interaction_id": "no-such-interaction"}, "samples_traceable"),
    ({"round": 7}, "samples_traceable"),
])
def test_each_check_catches_its_bad_row(warehouse, changes, failing):
    insert_row(warehouse, **changes)
    result = outcomes(warehouse)
    assert not result[failing].passed, result[failing].description
    assert [n for n, o in result.items() if not o.passed] == [failing]


def test_failed_check_reports_examples(warehouse):
    insert_row(warehouse, rating=11.0, response="bad rating row")
    outcome = outcomes(warehouse)["samples_rating_in_range"]
    assert outcome.metadata["out_of_range"] == 1
    assert outcome.metadata["examples"][0]["response"] == "bad rating row"
    assert "1 of 12 samples" in outcome.description


def test_type_shares_fail_on_an_empty_batch(warehouse):
    outcome = check_type_shares(warehouse, "no-such-batch")
    assert not outcome.passed and outcome.metadata["samples"] == 0
    paper = check_type_shares(warehouse, "b1", SamplesConfig(type_shares=dict(PAPER_TYPE_COUNTS)))
    assert paper.passed and paper.metadata["max_share_deviation"] > 0
