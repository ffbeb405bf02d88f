"""What a new user meets in the Dagster and MLflow UIs: the experiment opens on its runs, registered models
carry the project's name, nothing is written outside the home, checks are described and warn when they
should, the MLflow run is a link, the benchmark chart fits the dialog and its table is honest."""

from __future__ import annotations

import inspect
import struct
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest

from alignment_pipeline.checks import CheckOutcome
from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.warehouse.db import Warehouse


@pytest.fixture
def mlflow_home(tmp_path, monkeypatch):
    """A fresh home with its local MLflow store, the working directory elsewhere (where `./mlruns` would go)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # restored after: configure() exports it
    monkeypatch.delenv("ALIGNMENT_MLFLOW_URI", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return HomeLayout(tmp_path / "home")


# -- 1. the experiment is a model-training one --------------------------------------------------------------

def test_experiment_is_marked_model_training_new_and_existing(mlflow_home):
    import mlflow

    from alignment_pipeline import tracking

    tracking.configure(mlflow_home)
    experiment = mlflow.get_experiment_by_name(tracking.EXPERIMENT)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    # An experiment made before the tag existed (or switched to GenAI by the UI's guess) is marked on next use.
    client = mlflow.MlflowClient()
    client.delete_experiment_tag(experiment.experiment_id, "mlflow.experimentKind")
    other = client.create_experiment("older", artifact_location=mlflow_home.mlflow_artifacts.as_uri(),
                                     tags={"mlflow.experimentKind": "genai_development"})
    tracking.configure(mlflow_home)
    tracking.configure(mlflow_home, experiment="older")
    assert client.get_experiment(experiment.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert client.get_experiment(other).tags["mlflow.experimentKind"] == "custom_model_development"


# -- 2. registered models carry the project's name ----------------------------------------------------------

def test_registered_model_names_have_the_project_prefix():
    from mlflow.utils.validation import _validate_model_name

    from alignment_pipeline.training.report import registered_model_name

    names = [registered_model_name(n) for n in ("dpo", "sft", "stage1_imitation", "a b/c:d")]
    assert names == ["alignment-pipeline-dpo", "alignment-pipeline-sft", "alignment-pipeline-stage1_imitation",
                     "alignment-pipeline-a-b-c-d"]
    for name in names:
        _validate_model_name(name)
    assert registered_model_name("alignment-pipeline-dpo") == "alignment-pipeline-dpo"  # never doubled


# -- 3. nothing of MLflow's outside the home ----------------------------------------------------------------

def _under_artifacts(home: HomeLayout, location: str) -> bool:
    return f"{location}/".startswith(f"{home.mlflow_artifacts.as_uri()}/")


def test_every_experiment_of_a_new_store_keeps_artifacts_in_the_home(mlflow_home):
    import mlflow

    from alignment_pipeline import tracking

    tracking.configure(mlflow_home)
    client = mlflow.MlflowClient()
    for experiment in client.search_experiments():
        assert _under_artifacts(mlflow_home, experiment.artifact_location), experiment
    # Something logging without naming an experiment lands in Default: still in the home.
    with mlflow.start_run(experiment_id="0") as run:
        mlflow.log_text("x", "note.txt")
    assert _under_artifacts(mlflow_home, run.info.artifact_uri)
    assert not (Path.cwd() / "mlruns").exists()


# -- 4. every asset check is described by the function that computes it ------------------------------------

def test_every_check_spec_has_its_functions_description():
    from alignment_pipeline.definitions import defs
    from alignment_pipeline.prompts import checks as prompt_checks
    from alignment_pipeline.samples import checks as sample_checks
    from alignment_pipeline.sandbox import checks as sandbox_checks

    graph = defs.resolve_asset_graph()
    specs = {(k.asset_key.to_user_string(), k.name): graph.get_check_spec(k) for k in graph.asset_check_keys}
    assert specs and all(s.description for s in specs.values())

    def first_paragraph(function):
        return " ".join(inspect.getdoc(function).split("\n\n")[0].split())

    expected = {
        ("seed_prompts", "rejected_rows"): prompt_checks.check_rejected_rows,
        ("seed_prompts", "unique_hash"): prompt_checks.check_unique_hash,
        ("alignment_samples", "samples_rating_in_range"): sample_checks.check_rating_in_range,
        ("alignment_samples", "samples_type_shares"): sample_checks.check_type_shares,
        ("sandbox_transcripts", "outputs_clean"): sandbox_checks.check_outputs_clean,
        ("scored_revisions", "ratings_valid"): sandbox_checks.check_ratings_valid,
    }
    for key, function in expected.items():
        assert specs[key].description == first_paragraph(function), key
    samples = {name: spec for (asset, name), spec in specs.items() if asset == "alignment_samples"}
    assert set(samples) == {c.name for c in sample_checks.SAMPLE_CHECKS}
    assert {n for n, s in samples.items() if s.blocking} == {c.name for c in sample_checks.SAMPLE_CHECKS if c.blocking}


def test_check_specs_refuses_a_check_without_docstring():
    from alignment_pipeline.checks import Check
    from alignment_pipeline.defs.common import check_specs

    def check_undocumented(warehouse, batch):
        return None

    with pytest.raises(ValueError, match="no docstring"):
        check_specs("a", [Check("undocumented", check_undocumented)])


# -- 5. rejected rows are a warning --------------------------------------------------------------------------

def test_rejected_rows_warns_when_rows_were_rejected(tmp_path):
    from alignment_pipeline.defs.common import check_results
    from alignment_pipeline.prompts.checks import check_rejected_rows
    from alignment_pipeline.prompts.ingest import ingest_file

    warehouse = Warehouse(tmp_path / "w.duckdb")
    mixed, clean = tmp_path / "mixed.jsonl", tmp_path / "clean.jsonl"
    mixed.write_text('{"prompt": "Is honesty kind?"}\n{broken\n{"prompt": "  "}\n')
    clean.write_text('{"prompt": "How do tides work?"}\n')
    bad = check_rejected_rows(warehouse, ingest_file(warehouse, mixed).batch)
    good = check_rejected_rows(warehouse, ingest_file(warehouse, clean).batch)
    assert (bad.passed, bad.severity, bad.metadata["rejected"]) == (False, "WARN", 2)
    assert good.passed and good.metadata["rejected"] == 0

    results = check_results([bad, CheckOutcome(name="other", passed=False, description="broken")])
    assert [(r.passed, r.severity) for r in results] == [
        (False, dg.AssetCheckSeverity.WARN), (False, dg.AssetCheckSeverity.ERROR)]
    with pytest.raises(ValueError, match="severity"):
        CheckOutcome(name="x", passed=True, description="", severity="INFO")


# -- 6. the MLflow run is a link ----------------------------------------------------------------------------

def test_mlflow_run_metadata_is_a_url(mlflow_home):
    from alignment_pipeline import tracking
    from alignment_pipeline.defs.common import mlflow_run_metadata
    from alignment_pipeline.training.launch import materialization_metadata

    with tracking.start_run(mlflow_home, "stage") as run:
        run_id, experiment_id = run.info.run_id, run.info.experiment_id
    page = f"{tracking.LOCAL_UI}/#/experiments/{experiment_id}/runs/{run_id}"
    metadata = mlflow_run_metadata(mlflow_home, run_id)
    assert isinstance(metadata["mlflow_run"], dg.UrlMetadataValue) and metadata["mlflow_run"].url == page
    assert metadata["mlflow_ui"].text == f"mlflow ui --backend-store-uri sqlite:///{mlflow_home.mlflow_db}"
    assert mlflow_run_metadata(mlflow_home, "") == {}

    # The torchrun path reports through Pipes: the same link, typed as a url.
    result = SimpleNamespace(metadata=lambda: {"steps": 1}, mlflow_run_id=run_id,
                             loss_curve_png=str(mlflow_home.root / "none.png"))
    piped = materialization_metadata(result, mlflow_home, world_size=2)
    assert piped["mlflow_run"] == {"raw_value": page, "type": "url"}


# -- 6b. MLflow opens on the training runs, each with its own settings, tags naming no machine's path ----------

def test_experiment_url_lists_the_training_runs_unfolded(mlflow_home):
    from urllib.parse import parse_qs, urlsplit

    import mlflow

    from alignment_pipeline import tracking

    assert tracking.experiment_url(mlflow_home) is None  # nothing is created to make the link
    assert not mlflow_home.mlflow_db.exists()
    parent = tracking.parent_run(mlflow_home, "curriculum", tags={"dagster_run_id": "r"})
    for kind in ("stage1_imitation", "reward_model"):
        with tracking.start_run(mlflow_home, kind, parent_run_id=parent, tags={"checkpoint_kind": kind}):
            pass
    url = urlsplit(tracking.experiment_url(mlflow_home).replace("/#/", "/"))
    experiment = mlflow.get_experiment_by_name(tracking.EXPERIMENT)
    assert url.path == f"/experiments/{experiment.experiment_id}/runs"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    # The filter the link opens with selects the stages and the reward model, never their grouping parent.
    found = mlflow.search_runs([experiment.experiment_id], filter_string=query["searchFilter"],
                               output_format="list")
    assert sorted(r.info.run_name for r in found) == ["reward_model", "stage1_imitation"]
    # With a filter and a sort other than by date, the UI lists children at the top level (it nests only without
    # both, or when sorting by start time).
    assert query["orderByKey"] == "tags.`mlflow.runName`" and query["orderByKey"] != "attributes.start_time"


def test_model_reference_names_no_temporary_or_machine_path(tmp_path):
    from alignment_pipeline.tracking import model_reference

    home = HomeLayout(tmp_path / "home")
    assert model_reference("tiny:tiny-llama", home) == "tiny:tiny-llama"
    assert model_reference("HuggingFaceTB/SmolLM2-135M-Instruct", home) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert model_reference(str(home.root / "checkpoints" / "stage1_imitation" / "model"), home) == (
        "checkpoints/stage1_imitation/model")
    staged = home.root / "checkpoints" / "stage2_self_critique" / ".tmp-model-4242"
    assert model_reference(staged, home) == "checkpoints/stage2_self_critique/model"
    assert model_reference("/elsewhere/.tmp-model-7/x", home) == "/elsewhere/model/x"


def test_each_objective_logs_its_own_settings():
    from alignment_pipeline.training.config import TrainingConfig
    from alignment_pipeline.training.objectives import OBJECTIVES
    from alignment_pipeline.training.run_params import objective_params

    config = TrainingConfig()
    for objective in OBJECTIVES:
        params = objective_params(config, objective)
        own = {k for k in params if k.startswith(tuple(f"{o}_" for o in OBJECTIVES))}
        assert own == {k for k in params if k.startswith(f"{objective}_")}, objective
        assert f"{objective}_learning_rate" in params and "reward_model" not in params and "rlhf" not in params
        assert ("margin" in params) == (objective == "stable_alignment")
        assert None not in params.values() and "base_model" not in params
    assert len(objective_params(config, "dpo")) < len(config.model_dump()) - 20
    assert "lora_r" in objective_params(config.model_copy(update={"lora": True}), "sft")


# -- 7. the benchmark chart and table -------------------------------------------------------------------------

def _write(warehouse, checkpoint, kind, mic=0.5, truthful=0.25):
    from alignment_pipeline.evaluation.metrics import MetricRow
    from alignment_pipeline.evaluation.results import write_results

    return write_results(warehouse, checkpoint=checkpoint, kind=kind, model_path="m", hh_results=[],
                         evaluated_at=datetime(2026, 1, 1), tasks=["mic_proxy", "truthfulqa_mc1"],
                         rows=[MetricRow("mic_proxy", "acc", mic, 0.1, 8, "fixture"),
                               MetricRow("truthfulqa_mc1", "acc", truthful, 0.1, 8, "fixture")])


def test_chart_fits_the_dialog_and_stages_are_of_kind_stage(tmp_path):
    from alignment_pipeline.evaluation.report import benchmark_chart_png, benchmark_frame
    from alignment_pipeline.evaluation.results import checkpoint_kind

    assert [checkpoint_kind(c) for c in ("base", "stage1_imitation", "stage3_realignment", "dpo")] == [
        "base", "stage", "stage", "baseline"]
    warehouse = Warehouse(tmp_path / "w.duckdb")
    for checkpoint in ("stage2_self_critique", "stage1_imitation", "base", "sft"):
        _write(warehouse, checkpoint, checkpoint_kind(checkpoint), mic=len(checkpoint) / 100)
    measured = benchmark_frame(warehouse, include_paper=False)
    assert measured.select("model", "kind").rows() == [
        ("base", "base"), ("stage1_imitation", "stage"), ("stage2_self_critique", "stage"), ("sft", "baseline")]
    png = benchmark_chart_png(warehouse, tmp_path / "bench.png").read_bytes()
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert width <= 1100 and height > 400


def test_identical_rows_are_warned_about(tmp_path):
    from alignment_pipeline.evaluation.report import benchmark_markdown, identical_measured_rows

    warehouse = Warehouse(tmp_path / "w.duckdb")
    _write(warehouse, "sft", "baseline")
    _write(warehouse, "stage1_imitation", "stage", truthful=0.375)  # the proxy never tells rows apart
    assert identical_measured_rows(warehouse) == []
    assert benchmark_markdown(warehouse).startswith("| model |")
    _write(warehouse, "dpo", "baseline")
    _write(warehouse, "base", "base")
    assert identical_measured_rows(warehouse) == [["base", "dpo", "sft"]]  # the paper's rows never count
    text = benchmark_markdown(warehouse)
    assert text.startswith("> **Warning:** base, dpo, sft have identical results on every benchmark")
    assert "| model | kind |" in text.splitlines()[2]


def test_benchmark_asset_counts_its_rows_honestly(tmp_path, monkeypatch):
    from alignment_pipeline.defs.evaluation import benchmark_tables
    from alignment_pipeline.defs.resources import PipelineResource
    from alignment_pipeline.evaluation import results
    from alignment_pipeline.evaluation.results import EvalReport

    def fake_evaluate(warehouse, *, checkpoint, kind, model_path, config, judge, reward_model_path=None, now=None):
        written = _write(warehouse, checkpoint, kind)
        return EvalReport(checkpoint, kind, model_path, [], {}, None, datetime(2026, 1, 1), written)

    monkeypatch.setattr(results, "evaluate_checkpoint", fake_evaluate)
    monkeypatch.setattr("alignment_pipeline.llm.models.resolve_model_path", lambda model, models_dir: "m")
    monkeypatch.setattr(PipelineResource, "backend", lambda self, spec: None)  # the judge is not called
    resource = PipelineResource(home=str(tmp_path / "home"))
    warehouse = resource.warehouse()
    _write(warehouse, "sft", "baseline")
    # Another task of base measured earlier: it stays, so base has more rows than this run wrote.
    from alignment_pipeline.evaluation.metrics import MetricRow
    from alignment_pipeline.evaluation.results import write_results

    write_results(warehouse, checkpoint="base", kind="base", model_path="m", hh_results=[],
                  evaluated_at=datetime(2026, 1, 1), tasks=["moral_stories"],
                  rows=[MetricRow("moral_stories", "acc", 0.5, 0.1, 8, "fixture")])
    with dg.instance_for_test() as instance:
        result = dg.materialize([benchmark_tables], partition_key="base", instance=instance,
                                resources={"pipeline": resource})
    assert result.success
    metadata = {k: v.value for k, v in
                result.get_asset_materialization_events()[0].materialization.metadata.items()}
    assert metadata["rows_written"] == 2
    assert metadata["dagster/row_count"] == 3  # base's rows of benchmark_results
    assert metadata["table_rows"] == 2 + 11  # base and sft, then the paper's rows
    assert metadata["identical_results"] is False  # moral_stories sets base apart from sft
    assert "Warning" not in metadata["table"]
