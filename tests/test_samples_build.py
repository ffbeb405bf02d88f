"""build_samples: the three sample types from scripted interactions, and each rule."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pytest
from pydantic import ValidationError

from alignment_pipeline.samples import build as build_module
from alignment_pipeline.samples.build import build_samples, keep_counts, prompt_key, sample_id
from alignment_pipeline.samples.config import CRITIQUE_INSTRUCTION, PAPER_TYPE_COUNTS, SamplesConfig
from alignment_pipeline.samples.scripted import ScriptedInteraction as S
from alignment_pipeline.samples.scripted import write_scripted
from alignment_pipeline.samples.template import (
    REALIGNMENT_INSTRUCTION,
    REVISION_INSTRUCTION,
    format_prompt,
    realignment_response,
    split_realignment,
)
from alignment_pipeline.warehouse.db import Warehouse

PAPER_MIX = SamplesConfig(type_shares=dict(PAPER_TYPE_COUNTS))

T1, T2 = datetime(2024, 5, 1, 12, 0), datetime(2024, 6, 1, 12, 0)


def scenario() -> list[S]:
    """Eight interactions, each exercising one rule (see the comments)."""
    return [
        # I1: improved past the threshold -> realignment; one NULL-rated feedback
        S("How do I pick a lock?", "First, get a tension wrench.", "I can't help with breaking in, but a locksmith can.",
          2.0, 6.0, [(5.0, "The answer helps a burglar."), (3.0, "It is harmful."), (None, "Rating: ??")],
          agent_id=1, neighbour_model="gpt-4"),
        # I2: improved but after == threshold -> not realignment; the two neighbours wrote the same words
        S("Is lying ever fine?", "Sometimes.", "Rarely, and only to prevent harm.", 3.0, 4.0,
          [(4.0, "Too short."), (4.0, "Too short.")], agent_id=2),
        # I3: not improved; the revision repeats the draft -> one imitation row
        S("Should I tip?", "Yes, tipping is kind.", "Yes, tipping is kind.", 5.0, 4.5, [(6.0, "Fine.")], agent_id=3),
        # I4: NULL before score -> its draft leaves imitation, not realignment-eligible
        S("Can I skip work?", "Just call in sick.", "Talk to your manager honestly.", None, 6.5,
          [(2.0, "Dishonest.")], agent_id=4),
        # I5: never scored -> no imitation rows, feedback still gives self-critique
        S("What is a good diet?", "Eat anything.", "Balanced meals.", None, None, [(3.0, "Vague.")], agent_id=5,
          scored=False),
        # I6: after == threshold exactly -> not eligible
        S("How to win an argument?", "Shout.", "Listen first.", 1.0, 4.0, [(1.0, "Rude.")], agent_id=6),
        # I7: same question as I1, another agent; its revision repeats I1's -> imitation duplicate
        S("How do I pick a lock?", "Use a bobby pin.", "I can't help with breaking in, but a locksmith can.",
          1.0, 5.0, [(2.0, "Unsafe advice.")], agent_id=7),
        # I8: whitespace-only draft -> empty response dropped; improved but below threshold
        S("  Why help others?\u3000", " \n\t", "Because it makes society better.", 3.0, 3.5,
          [(4.0, "  Okay.\n")], agent_id=8),
    ]


@pytest.fixture
def warehouse(tmp_path) -> Warehouse:
    return Warehouse(tmp_path / "w.duckdb")


@pytest.fixture
def built(warehouse):
    ids = write_scripted(warehouse, "b1", scenario())
    report = build_samples(warehouse, "b1", SamplesConfig(), now=T1)
    return warehouse, ids, report


def rows(warehouse, where="TRUE", params=None):
    return warehouse.query(f"SELECT * FROM alignment_samples WHERE {where} ORDER BY sample_id", params).to_dicts()


def test_report_counts_every_rule(built):
    _, _, report = built
    assert report.interactions == 8
    assert report.counts == {"imitation": 10, "self_critique": 9, "realignment": 8}
    # realignment: revision + draft per feedback of the eligible I1 (3) and I7 (1); the observer rates them, so
    # I1's feedback whose neighbour rating did not parse still gives a prompt
    assert report.candidates == {"imitation": 16, "self_critique": 11, "realignment": 8}
    assert report.excluded_null == {"imitation": 3, "self_critique": 1, "realignment": 0}
    assert report.dropped_empty == {"imitation": 1, "self_critique": 0, "realignment": 0}
    assert report.dropped_duplicates == {"imitation": 2, "self_critique": 1, "realignment": 0}
    assert report.realignment == {"interactions": 8, "eligible": 2, "null_scores": 2, "not_improved": 1,
                                  "not_above_threshold": 3, "unrevised": 0}
    meta = report.metadata()
    assert meta["samples"] == 27 and meta["realignment_eligible"] == 2
    assert meta["share_self_critique"] == round(9 / 27, 4)


def test_imitation_rows(built):
    warehouse, ids, _ = built
    got = rows(warehouse, "interaction_id = ? AND sample_type = 'imitation'", [ids[0]])
    by_source = {r["rating_source"]: r for r in got}
    assert set(by_source) == {"observer:alignment:draft", "observer:alignment:revision"}
    assert by_source["observer:alignment:draft"]["response"] == "First, get a tension wrench."
    assert by_source["observer:alignment:draft"]["rating"] == 2.0
    assert by_source["observer:alignment:revision"]["rating"] == 6.0
    for r in got:
        assert r["instruction"] == "How do I pick a lock?" and r["input"] == ""
        assert r["agent_model"] == "model-a" and r["batch"] == "b1" and r["created_at"] == T1


def test_self_critique_rows_rate_the_draft(built):
    warehouse, ids, _ = built
    got = rows(warehouse, "interaction_id = ? AND sample_type = 'self_critique'", [ids[0]])
    assert sorted((r["rating"], r["response"]) for r in got) == [
        (3.0, "It is harmful."), (5.0, "The answer helps a burglar.")]  # the NULL-rated one is left out
    for r in got:
        assert r["instruction"] == CRITIQUE_INSTRUCTION
        assert r["input"] == "Question:\nHow do I pick a lock?\n\nResponse:\nFirst, get a tension wrench."
        assert r["rating_source"] in ("neighbour:2:rates_draft", "neighbour:3:rates_draft")
        assert r["agent_model"] == "gpt-4"  # the neighbour wrote the response


def test_realignment_filter(built):
    warehouse, ids, _ = built
    got = rows(warehouse, "sample_type = 'realignment'")
    assert {r["interaction_id"] for r in got} == {ids[0], ids[6]}  # after > before and after > 4


def test_realignment_groups_hold_the_revision_above_the_draft(built):
    warehouse, ids, _ = built
    got = rows(warehouse, "interaction_id = ? AND sample_type = 'realignment'", [ids[0]])
    draft, revision = "First, get a tension wrench.", "I can't help with breaking in, but a locksmith can."
    # one prompt per feedback (question + draft + that feedback), each holding the revision and the draft
    assert len(got) == 6 and len({r["prompt_key"] for r in got}) == 3
    for r in got:
        assert r["instruction"] == REVISION_INSTRUCTION
        assert r["input"].startswith("Question:\nHow do I pick a lock?\n\nResponse:\n" + draft + "\n\nFeedback:\n")
        assert r["agent_model"] == "model-a"
    assert {r["input"].rsplit("\n", 1)[1] for r in got} == {"The answer helps a burglar.", "It is harmful.",
                                                           "Rating: ??"}
    # rated by the observer: the revision with its score after revision, the draft with its score before
    assert {(r["response"], r["rating"], r["rating_source"]) for r in got} == {
        (revision, 6.0, "observer:alignment:revision"), (draft, 2.0, "observer:alignment:draft")}
    for group in warehouse.query("SELECT responses, ratings FROM samples_grouped WHERE sample_type = 'realignment' "
                                 "AND prompt_key IN (SELECT prompt_key FROM alignment_samples WHERE interaction_id = ?)",
                                 [ids[0]]).to_dicts():
        assert sorted(zip(group["ratings"], group["responses"], strict=True)) == [(2.0, draft), (6.0, revision)]


def test_a_revision_that_repeats_its_draft_is_not_realignment(warehouse):
    write_scripted(warehouse, "b1", [S("Q?", "Same words.", "Same words.", 2.0, 6.0, [(3.0, "Fine.")])])
    report = build_samples(warehouse, "b1", SamplesConfig())
    assert report.realignment["eligible"] == 0 and report.realignment["unrevised"] == 1
    assert report.counts["realignment"] == 0


def test_original_realignment_form_rates_every_critique_with_the_revision(warehouse):
    ids = write_scripted(warehouse, "b1", scenario())
    build_samples(warehouse, "b1", SamplesConfig(realignment_form="original"))
    got = rows(warehouse, "interaction_id = ? AND sample_type = 'realignment'", [ids[0]])
    revision = "I can't help with breaking in, but a locksmith can."
    assert sorted(r["response"] for r in got) == [
        "It is harmful. Here is the revised response: " + revision,
        "Rating: ?? Here is the revised response: " + revision,
        "The answer helps a burglar. Here is the revised response: " + revision]
    for r in got:
        assert r["instruction"] == REALIGNMENT_INSTRUCTION
        # question + draft only: the critique is what the model writes, not reads
        assert r["input"] == "Question:\nHow do I pick a lock?\n\nResponse:\nFirst, get a tension wrench."
        assert (r["rating"], r["rating_source"]) == (6.0, "observer:alignment:revision")
    assert len({r["prompt_key"] for r in got}) == 1  # one prompt whose responses tie


def test_realignment_response_text():
    assert realignment_response(" Too blunt. ", "\nBe kind.") == "Too blunt. Here is the revised response: Be kind."
    assert realignment_response("", "Be kind.") == realignment_response("Too blunt.", " ") == ""
    assert split_realignment("Too blunt. Here is the revised response: Be kind.") == ("Too blunt.", "Be kind.")
    assert split_realignment("Just the answer.") == ("", "Just the answer.")


def test_realignment_leaves_out_a_row_without_critique(warehouse):
    write_scripted(warehouse, "b1", [S("Q?", "bad draft", "good revision", 2.0, 6.0,
                                       [(2.0, "Harsh but fair."), (4.0, "  "), (6.0, "Fine.")])])
    report = build_samples(warehouse, "b1", SamplesConfig())
    # a prompt without its feedback is not the task: both of its rows go
    assert report.candidates["realignment"] == 6 and report.dropped_empty["realignment"] == 2
    assert report.counts["realignment"] == 4
    assert report.dropped_empty["self_critique"] == 1  # the same rule as self-critique


def test_default_build_keeps_every_row_the_sandbox_produced(warehouse):
    """With default settings nothing is sampled out: every row of every eligible interaction is stored, and only
    NULL ratings, empty texts and a response repeated for one prompt are left out (as the paper drops them)."""
    interactions = [
        S(f"Question {n}?", f"Draft {n}.", f"Revision {n}.", 1.0 + n % 3, 3.0 + n % 5,
          [(None if (n + k) % 7 == 0 else 1.0 + (n * k) % 7, f"Feedback {n}.{k}") for k in range(n % 4 + 1)],
          agent_id=n, neighbour_model="model-b")
        for n in range(30)]
    write_scripted(warehouse, "b1", interactions)
    report = build_samples(warehouse, "b1", SamplesConfig())

    def eligible(x):
        return x.after > x.before and x.after > 4.0
    expected = {
        "imitation": sum(2 if x.draft != x.revision else 1 for x in interactions),
        "self_critique": sum(1 for x in interactions for r, _ in x.feedback if r is not None),
        "realignment": sum(2 * len(x.feedback) for x in interactions if eligible(x)),
    }
    assert report.counts == expected and expected["realignment"] > 0
    assert report.sampled_out == dict.fromkeys(expected, 0)
    for t in expected:
        assert report.counts[t] == (report.candidates[t] - report.excluded_null[t] - report.dropped_empty[t]
                                    - report.dropped_duplicates[t])
    by_interaction = warehouse.query(
        "SELECT interaction_id, count(*) AS n, count(DISTINCT prompt_key) AS prompts FROM alignment_samples "
        "WHERE sample_type = 'realignment' GROUP BY interaction_id").to_dicts()
    feedback = {n: len(x.feedback) for n, x in enumerate(interactions) if eligible(x)}
    assert len(by_interaction) == len(feedback)
    assert sorted((r["n"], r["prompts"]) for r in by_interaction) == sorted((2 * k, k) for k in feedback.values())


def test_training_reads_realignment_groups_with_several_responses(warehouse):
    from alignment_pipeline.training.data import load_groups

    write_scripted(warehouse, "b1", [
        S(f"Question {n}?", f"Draft {n}.", f"Revision {n}.", 2.0, 5.5,
          [(6.0, f"Fine {n}."), (2.0, f"Harmful {n}."), (4.0, f"Could be kinder {n}.")], agent_id=n)
        for n in range(5)])
    build_samples(warehouse, "b1", SamplesConfig())
    groups = load_groups(warehouse, "realignment")
    assert len(groups) == 15  # one per feedback
    for g in groups:
        assert g.instruction == REVISION_INSTRUCTION and "Feedback:" in g.input
        assert sorted(zip(g.ratings, g.responses, strict=True)) == [(2.0, g.input.split("Response:\n")[1].split("\n")[0]),
                                                       (5.5, g.responses[g.best_index()])]
        assert g.responses[g.best_index()].startswith("Revision")  # the revision is the one to learn


def test_threshold_comes_from_config(warehouse):
    ids = write_scripted(warehouse, "b1", scenario())
    report = build_samples(warehouse, "b1", SamplesConfig(realignment_threshold=3.0))
    got = {r["interaction_id"] for r in rows(warehouse, "sample_type = 'realignment'")}
    # I2 (3 -> 4), I6 (1 -> 4) and I8 (3 -> 3.5) now pass; I3 (not improved) and the NULL ones still do not
    assert got == {ids[0], ids[1], ids[5], ids[6], ids[7]}
    assert report.realignment["eligible"] == 5


def test_duplicates_dropped_per_prompt(built):
    warehouse, ids, _ = built
    tip = rows(warehouse, "interaction_id = ? AND sample_type = 'imitation'", [ids[2]])
    assert [(r["response"], r["rating"], r["rating_source"]) for r in tip] == [
        ("Yes, tipping is kind.", 5.0, "observer:alignment:draft")]  # the earlier (draft) row wins
    lock = rows(warehouse, "sample_type = 'imitation' AND instruction = 'How do I pick a lock?'")
    assert sorted(r["response"] for r in lock) == [
        "First, get a tension wrench.", "I can't help with breaking in, but a locksmith can.", "Use a bobby pin."]
    revision = next(r for r in lock if r["response"].startswith("I can't"))
    assert revision["interaction_id"] == ids[0]  # I1 came first; I7's identical revision was dropped
    lying = rows(warehouse, "interaction_id = ? AND sample_type = 'self_critique'", [ids[1]])
    assert len(lying) == 1


def test_null_ratings_never_stored(built):
    warehouse, ids, _ = built
    assert warehouse.count("alignment_samples", "rating IS NULL") == 0
    assert rows(warehouse, "interaction_id = ? AND sample_type = 'imitation'", [ids[4]]) == []
    skip = rows(warehouse, "interaction_id = ? AND sample_type = 'imitation'", [ids[3]])
    assert [r["rating_source"] for r in skip] == ["observer:alignment:revision"]
    assert len(rows(warehouse, "interaction_id = ? AND sample_type = 'self_critique'", [ids[4]])) == 1


def test_text_is_stripped_like_the_template(built):
    warehouse, ids, _ = built
    why = rows(warehouse, "interaction_id = ?", [ids[7]])
    assert {r["sample_type"] for r in why} == {"imitation", "self_critique"}  # the blank draft is gone
    assert {r["response"] for r in why} == {"Because it makes society better.", "Okay."}
    assert next(r for r in why if r["sample_type"] == "imitation")["instruction"] == "Why help others?"
    stored = warehouse.query("SELECT instruction, input, response FROM alignment_samples").rows()
    assert all(x == x.strip() for row in stored for x in row)
    prompts = warehouse.query("SELECT instruction, input, prompt FROM samples_grouped").rows()
    assert prompts and all(p == format_prompt(i, x) for i, x, p in prompts)


def test_python_hashes_match_stored_keys(built):
    warehouse, _, _ = built
    for r in rows(warehouse):
        assert r["prompt_key"] == prompt_key(r["instruction"], r["input"])
        assert r["sample_id"] == sample_id(r["sample_type"], r["prompt_key"], r["response"])


def test_provenance_joins_back_to_interactions(built):
    warehouse, _, _ = built
    joined = warehouse.query(
        "SELECT s.sample_type, s.rating_source, s.response, s.world_id = i.world_id AND s.round = i.round "
        "AND s.batch = i.batch AS same_place, samples_strip(i.draft) AS draft, samples_strip(i.revision) AS revision "
        "FROM alignment_samples s JOIN sandbox_interactions i USING (interaction_id)").to_dicts()
    assert len(joined) == warehouse.count("alignment_samples") == 27
    assert all(r["same_place"] for r in joined)
    for r in joined:
        if r["rating_source"] == "observer:alignment:draft":
            assert r["response"] == r["draft"]
        elif r["rating_source"] == "observer:alignment:revision":
            assert r["response"] == r["revision"]
        elif r["sample_type"] == "realignment":
            assert r["response"].endswith(" Here is the revised response: " + r["revision"])


def test_rebuild_is_deterministic_and_replaces_the_batch(built):
    warehouse, _, first = built
    before = {r["sample_id"] for r in rows(warehouse)}
    again = build_samples(warehouse, "b1", SamplesConfig(), now=T2)
    assert again.replaced == first.total == again.total
    assert {r["sample_id"] for r in rows(warehouse)} == before
    assert {r["created_at"] for r in rows(warehouse)} == {T2}


def test_second_batch_adds_only_its_rows_and_rematerialising_touches_one_batch(built):
    warehouse, _, first = built
    b1_rows = rows(warehouse)
    second = [S("Is stealing bread wrong?", "It depends on hunger.", "Stealing is wrong, but help exists.",
                2.0, 5.5, [(3.0, "Nuanced.")], world_id="world-2", agent_id=1),
              # same question and draft as batch b1's I3: that imitation sample_id already belongs to b1
              S("Should I tip?", "Yes, tipping is kind.", "Tip what you can.", 5.0, 5.5, [], world_id="world-2",
                agent_id=2)]
    write_scripted(warehouse, "b2", second)
    report = build_samples(warehouse, "b2", SamplesConfig(), now=T2)
    assert report.replaced == 0 and report.cross_batch_duplicates == 1
    assert rows(warehouse, "batch = 'b1'") == b1_rows
    # 3 imitation (one is b1's), 1 self-critique, 2 realignment (revision and draft after the one feedback): the
    # eligible tip interaction had no feedback, so no critique to write and no realignment prompt
    assert warehouse.count("alignment_samples", "batch = 'b2'") == report.total == 6
    b2_rows = rows(warehouse, "batch = 'b2'")

    # rematerialise b1 with half the self-critique samples: only b1 changes
    again = build_samples(warehouse, "b1", SamplesConfig(type_ratios={"self_critique": 0.5}), now=T2)
    assert again.replaced == first.total
    assert again.counts["self_critique"] == 5 and again.sampled_out["self_critique"] == 4
    assert rows(warehouse, "batch = 'b2'") == b2_rows
    assert warehouse.count("alignment_samples") == again.total + report.total


def test_failed_load_keeps_the_old_rows(built, monkeypatch):
    warehouse, _, first = built
    old = rows(warehouse)
    monkeypatch.setattr(build_module, "_INSERT_COLUMNS", "sample_id, no_such_column")
    with pytest.raises(duckdb.Error):
        build_samples(warehouse, "b1", SamplesConfig(), now=T2)
    assert rows(warehouse) == old  # the delete was rolled back with the failed insert


def test_sampling_ratio_is_deterministic_by_sample_id(warehouse):
    write_scripted(warehouse, "b1", scenario())
    build_samples(warehouse, "b1", SamplesConfig())
    all_ids = sorted(r["sample_id"] for r in rows(warehouse, "sample_type = 'self_critique'"))
    config = SamplesConfig(type_ratios={"self_critique": 0.5, "imitation": 0.0})
    for _ in range(2):
        report = build_samples(warehouse, "b1", config)
        kept = sorted(r["sample_id"] for r in rows(warehouse, "sample_type = 'self_critique'"))
        assert kept == all_ids[:5]  # round(9 * 0.5) = 5, the first in sample_id order
        assert report.counts["imitation"] == 0 and report.counts["realignment"] == 8


def test_keep_counts_with_type_shares():
    paper = PAPER_MIX
    assert keep_counts({"imitation": 100_000, "self_critique": 200_000, "realignment": 25_600}, paper) == {
        "imitation": 48_800, "self_critique": 94_600, "realignment": 25_600}
    # the scarcest type (relative to its share) sets the scale; nothing is repeated to reach a share
    assert keep_counts({"imitation": 10, "self_critique": 1000, "realignment": 1000},
                       SamplesConfig(type_shares={"imitation": 1, "self_critique": 2, "realignment": 1})) == {
        "imitation": 10, "self_critique": 20, "realignment": 10}
    # a type with no rows does not zero the others
    assert keep_counts({"imitation": 10, "self_critique": 40, "realignment": 0}, paper)["self_critique"] == 19
    assert keep_counts({"imitation": 10, "self_critique": 9, "realignment": 3}, SamplesConfig()) == {
        "imitation": 10, "self_critique": 9, "realignment": 3}


def test_paper_type_shares_build_paper_proportions(warehouse):
    interactions = [S(f"Question {n}?", f"Draft {n}.", f"Revision {n}.", 2.0, 5.0 + (n % 3) / 2,
                      [(1.0 + k, f"Feedback {n}.{k}") for k in range(4)], agent_id=n) for n in range(40)]
    write_scripted(warehouse, "b1", interactions)
    report = build_samples(warehouse, "b1", PAPER_MIX)
    # every interaction is eligible: one realignment row per feedback, so imitation is the scarcest type
    assert report.counts["imitation"] == 80  # the scarcest type keeps all of its rows
    assert report.counts == keep_counts({"imitation": 80, "self_critique": 160, "realignment": 160}, PAPER_MIX)
    shares = report.type_shares()
    assert abs(shares["imitation"] - 48.8 / 169) < 0.01 and abs(shares["self_critique"] - 94.6 / 169) < 0.01


def test_config_rejects_bad_values():
    with pytest.raises(ValidationError, match="unknown sample types"):
        SamplesConfig(type_ratios={"imitaton": 0.5})
    with pytest.raises(ValidationError, match="within 0..1"):
        SamplesConfig(type_ratios={"imitation": 1.5})
    with pytest.raises(ValidationError, match="positive sum"):
        SamplesConfig(type_shares={"imitation": 0})
    assert SamplesConfig().type_shares is None
    assert abs(sum(PAPER_MIX.type_shares.values()) - 1.0) < 1e-9


def test_empty_batch_name_is_refused(warehouse):
    with pytest.raises(ValueError, match="batch"):
        build_samples(warehouse, "", SamplesConfig())


@pytest.mark.parametrize("text", [
    "", " ", "plain", "  both ends \t\n", "\u3000wide space\u3000", "\x0b\x1cctrl\x1f\x85", "\xa0nbsp\u2028",
    "inner  \n  kept", "a \u0301", "\u200bzero width is not space\u200b", "e\u0301 ", " \U0001f600 ",
])
def test_sql_strip_matches_python_strip(warehouse, text):
    with warehouse.connect(read_only=True) as con:
        assert con.execute("SELECT samples_strip(?)", [text]).fetchone()[0] == text.strip()


def test_created_at_is_stored_as_utc(warehouse):
    from datetime import timedelta, timezone

    write_scripted(warehouse, "b1", scenario()[:1])
    build_samples(warehouse, "b1", SamplesConfig(), now=datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))))
    assert {r["created_at"] for r in rows(warehouse)} == {T1}
