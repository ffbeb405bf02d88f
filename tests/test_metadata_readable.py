"""Metadata people can read in the Dagster UI: numbers rounded, units and scales in the key names, key figures
first, no null rows; a transcript preview and a sample preview to read; check results tied to their batch; charts
whose titles fit and whose one-step curves show a point."""

from __future__ import annotations

import dagster as dg
import pytest

from alignment_pipeline.defs.common import RATING_SCALE, interval_text, plain_metadata, readable_number
from alignment_pipeline.llm.config import BackendSpec
from alignment_pipeline.llm.scripted import ScriptedLLM
from alignment_pipeline.warehouse.db import Warehouse


def test_numbers_are_rounded_nulls_dropped_units_named_key_figures_first():
    values = {"batch": "b", "share_differ": 0.9444444444444444, "build_s": 0.123456, "tokens_per_s": 1234.5678,
              "examples": [], "mean_rating": None, "per_model": {"m": {"share": 0.333333333, "note": None}},
              "alignment": {"n": 8, "mean_diff": 0.5, "ci95_low": -0.1234567, "ci95_high": 1.1234567},
              "samples": 12, "parsed": True, "mean_feedback_rating": 4.56789}
    out = plain_metadata(values, first=("samples", "mean_feedback_rating", "absent"),
                         rename={"mean_feedback_rating": f"mean_feedback_rating{RATING_SCALE}"})
    assert list(out) == ["samples", "mean_feedback_rating (1-7)", "batch", "share_differ", "build_seconds",
                         "tokens_per_second", "per_model", "alignment", "parsed"]
    assert out["share_differ"] == 0.944 and out["build_seconds"] == 0.123 and out["tokens_per_second"] == 1235
    assert out["mean_feedback_rating (1-7)"] == 4.57 and out["parsed"] is True and out["samples"] == 12
    assert out["per_model"].data == {"m": {"share": 0.333}}  # rounded and without nulls inside JSON too
    assert out["alignment"] == "+0.50 (95% CI -0.12 to +1.12, n=8)"


def test_readable_numbers_and_intervals():
    assert [readable_number(v) for v in (0.000123456, 0.5, 7.0, 12.3456, 999.9, 123456.7)] == [
        0.000123, 0.5, 7.0, 12.3, 1000, 123457]
    assert interval_text({"n": 1, "mean_diff": -1.0, "ci95_low": None, "ci95_high": None}) == (
        "-1.00 (n=1, too few pairs for an interval)")
    assert interval_text({"n": 0, "mean_diff": None, "ci95_low": None, "ci95_high": None}) is None
    assert plain_metadata({"alignment": {"n": 0, "mean_diff": None, "ci95_low": None, "ci95_high": None}}) == {}


# -- previews of what the society said and what the samples are ----------------------------------------------------

BATCH = "b1"
SCRIPTED = BackendSpec(kind="scripted", model="scripted")


def _responder(prompt: str) -> str:
    digest = sum(prompt.encode()) % 9973
    if prompt.endswith("Reason:"):
        return f" because-{digest}"
    if "Rating: <" in prompt:
        return f"Rating: {digest % 7 + 1}\nReason: reason-{digest}"
    return f"answer-{digest} <b>|</b>"


@pytest.fixture
def society(tmp_path):
    """A scored 2×2 world of scripted agents (one round) and its samples."""
    from alignment_pipeline.samples.build import build_samples
    from alignment_pipeline.samples.config import SamplesConfig
    from alignment_pipeline.sandbox import SandboxConfig, run_sandbox, score_revisions
    from alignment_pipeline.sandbox.embedding import HashingEmbedder
    from alignment_pipeline.sandbox.store import insert_prompts

    warehouse = Warehouse(tmp_path / "w.duckdb")
    insert_prompts(warehouse, BATCH, [f"Question {i}: is it kind to tell a hard truth?" for i in range(4)])
    config = SandboxConfig(size=2, rounds=1, neighbours=2, agent_models=[SCRIPTED], observer=SCRIPTED)
    llm = ScriptedLLM(_responder)
    run_sandbox(warehouse, BATCH, config, backend_for=lambda spec: llm, embedder=HashingEmbedder())
    return warehouse, config, llm, lambda: (score_revisions(warehouse, BATCH, config, backend_for=lambda s: llm),
                                            build_samples(warehouse, BATCH, SamplesConfig()))


def test_transcript_preview_shows_three_interactions_then_their_scores(society):
    from alignment_pipeline.sandbox.preview import transcript_preview

    warehouse, _, _, score_and_build = society
    first = warehouse.query("SELECT question, draft, revision FROM sandbox_interactions "
                            "ORDER BY round, agent_id LIMIT 1").row(0, named=True)
    text = transcript_preview(warehouse, BATCH)
    sections = text.split("\n\n---\n\n")
    assert len(sections) == 3 and all(s.startswith("#### Round 0, agent ") for s in sections)
    assert f"**Question:** {first['question']}" in sections[0]
    assert "**Draft:** answer-" in sections[0] and "**Revision:** answer-" in sections[0]
    assert "&lt;b&gt;" in sections[0] and "<b>" not in text  # the UI renders no HTML: shown as written
    assert sections[0].count("\n- neighbour ") == 2 and "/7: reason-" in sections[0]
    assert "**Observers:** not scored yet" in sections[0]
    score_and_build()
    scored = transcript_preview(warehouse, BATCH)
    assert "**Observers (1-7, draft → revision):** alignment " in scored and "not scored yet" not in scored
    assert transcript_preview(warehouse, "no-such-batch") == ""


def test_sample_preview_shows_a_prompt_per_type_best_first(society):
    from alignment_pipeline.samples.preview import sample_preview

    warehouse, _, _, score_and_build = society
    assert sample_preview(warehouse, BATCH) == ""  # no samples yet
    score_and_build()
    lines = sample_preview(warehouse, BATCH).splitlines()
    assert lines[0] == "| type | prompt | response | rating (1-7) | rated by |"
    rows = [line.split(" | ") for line in lines[2:]]
    types = [r[0].lstrip("| ") for r in rows]
    present = warehouse.query("SELECT DISTINCT sample_type FROM alignment_samples")["sample_type"].to_list()
    assert set(types) == set(present) and types == sorted(types, key=["imitation", "self_critique",
                                                                      "realignment"].index)
    for kind in set(types):
        ratings = [float(r[3]) for r in rows if r[0].lstrip("| ") == kind]
        assert ratings == sorted(ratings, reverse=True) and 1 <= len(ratings) <= 3
    assert all("\\|" in r[2] for r in rows if "answer-" in r[2])  # a pipe inside a cell cannot split the row


# -- check results tied to the batch they checked -----------------------------------------------------------------

def test_batch_check_results_carry_their_partition(tmp_path):
    from alignment_pipeline.definitions import defs
    from alignment_pipeline.defs.partitions import prompt_batches
    from alignment_pipeline.defs.prompts import seed_prompts
    from alignment_pipeline.defs.resources import PipelineResource

    graph = defs.resolve_asset_graph()
    for key in graph.asset_check_keys:  # every check of a batch asset checks one batch
        asset = graph.get(key.asset_key)
        assert (graph.get_check_spec(key).partitions_def is not None) == (asset.partitions_def is not None), key
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "few.jsonl").write_text('{"prompt": "Is honesty kind?"}\n{"prompt": "  "}\n')
    resource = PipelineResource(home=str(tmp_path / "home"), inbox=str(inbox))
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(prompt_batches.name, ["few.jsonl"])
        result = dg.materialize([seed_prompts], partition_key="few.jsonl", instance=instance,
                                resources={"pipeline": resource})
        evaluations = result.get_asset_check_evaluations()
        assert evaluations and {e.partition for e in evaluations} == {"few.jsonl"}
        rejected = next(e for e in evaluations if e.check_name == "rejected_rows")
        assert rejected.metadata["rejected"].value == 1
        assert "examples" not in rejected.metadata or rejected.metadata["examples"].value  # no empty rows


# -- charts ------------------------------------------------------------------------------------------------------------

def _inside(fig, artist) -> bool:
    fig.canvas.draw()
    box, frame = artist.get_window_extent(), fig.bbox
    return frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


def test_rating_histogram_title_fits_with_a_long_batch_name(society):
    from alignment_pipeline.sandbox.report import rating_histogram_figure

    warehouse, _, _, score_and_build = society
    score_and_build()
    long_batch = "prompts-from-the-ethics-working-group-2026-first-round-a1b2c3d4.jsonl"
    with warehouse.transaction() as con:
        con.execute("UPDATE scored_revisions SET batch = ?", [long_batch])
    fig = rating_histogram_figure(warehouse, long_batch)
    title = fig.axes[0].title
    assert "before" in title.get_text() and "after" in title.get_text() and long_batch[-12:] in title.get_text()
    assert _inside(fig, title)


def test_a_one_step_loss_curve_shows_its_point_and_its_whole_title():
    from alignment_pipeline.training.report import loss_curve_figure

    fig = loss_curve_figure([{"step": 1, "train/loss": 2.5, "train/sft": 2.0, "train/hinge": 0.5}],
                            title="stage3_realignment (stable_alignment) on a batch with a long descriptive name")
    ax = fig.axes[0]
    assert {line.get_label() for line in ax.lines} == {"loss", "sft", "hinge"}
    for line in ax.lines:  # one step: no segment to draw, so the marker is what shows
        assert line.get_marker() not in (None, "", "None", " ") and line.get_markersize() > 0
    assert _inside(fig, ax.title)


# -- what the smoke demo leaves for people to read --------------------------------------------------------------------

@pytest.mark.slow
def test_the_smoke_demo_reads_well_and_warns_where_training_degenerated(smoke_demo):
    """On the home of the README's smoke demo (run once per session): the previews are there, every batch check
    names its batch, and each checkpoint's `ran` line agrees with its contrastive check."""
    from alignment_pipeline.defs.resources import PipelineResource
    from alignment_pipeline.demo import home_instance

    home, *_ = smoke_demo
    instance = home_instance(PipelineResource(home=str(home), profile="smoke").layout())

    def metadata(*key):
        event = instance.get_latest_materialization_event(dg.AssetKey(list(key)))
        return {k: v.value for k, v in event.asset_materialization.metadata.items()}

    assert metadata("sandbox_transcripts")["transcript_preview"].count("#### Round ") == 3
    assert metadata("alignment_samples")["sample_preview"].startswith("| type | prompt | response |")
    for key in ("sandbox_transcripts", "scored_revisions", "alignment_samples"):
        assert all(v is not None and v != {} for v in metadata(key).values()), key

    evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION), limit=1000)]
    batch_assets = {"seed_prompts", "sandbox_transcripts", "scored_revisions", "alignment_samples"}
    batch_checks = [e for e in evaluations if e.asset_key.to_user_string() in batch_assets]
    assert batch_checks and all(e.partition for e in batch_checks)
    contrastive = {e.asset_key.path[-1]: e for e in evaluations
                   if e.asset_key.path[0] == "checkpoints" and e.check_name == "contrastive"}
    assert contrastive
    for kind, evaluation in contrastive.items():
        ran = metadata("checkpoints", kind)["ran"]
        assert evaluation.passed == (not ran.startswith("fell back to SFT")), (kind, ran)
        if not evaluation.passed:
            assert evaluation.severity == dg.AssetCheckSeverity.WARN and ran.startswith(evaluation.description)
