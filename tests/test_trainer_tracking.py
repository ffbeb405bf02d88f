"""MLflow tracking of a stage (params, per-step metrics, loss curve, registered model with its samples batches)
and the whole curriculum from warehouse samples, each stage trained as its checkpoint asset does: three stages
chained, three baselines, `checkpoints` rows, every run nested under one parent run."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import mlflow
import polars as pl
import pytest
from transformers import AutoModelForCausalLM

from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.tracking import parent_run, start_run
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.curriculum import spec_for, stage_start, train_stage
from alignment_pipeline.training.synthetic import letter_groups
from alignment_pipeline.training.trainer import TrainRequest, train
from alignment_pipeline.warehouse.db import Warehouse, insert_frame

CONFIG = TrainingConfig(learning_rate=3e-3, epochs=1, per_device_batch=4, max_length=64, margin=1.0,
                        save_every=1000, sppo_eta=10.0, seed=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> HomeLayout:
    return HomeLayout(tmp_path_factory.mktemp("home"))


def test_stage_is_tracked_and_registered(home, tmp_path):
    with start_run(home, "parent") as parent:
        parent_id = parent.info.run_id
    groups = letter_groups(16, seed=2, batch="batch-7")
    result = train(TrainRequest(groups, objective="stable_alignment", base_model="tiny:tiny-64",
                                out_dir=tmp_path / "s", config=CONFIG, home=home, run_name="stage-under-test",
                                parent_run_id=parent_id, tags={"dagster_run_id": "abc"}))
    client = mlflow.MlflowClient()
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent_id and run.data.tags["dagster_run_id"] == "abc"
    params = run.data.params
    assert params["objective"] == "stable_alignment" and params["learning_rate"] == "0.003"
    assert params["peak_learning_rate"] == "0.003"  # the rate it trained at, whichever setting gave it
    assert params["samples_batches"] == "batch-7" and params["margin"] == "1.0"
    # Its own objective's settings only: no other method's, no section with runs of its own, nothing unset.
    foreign = ("dpo_", "sppo_", "rrhf_", "coh_", "sft_", "rlhf.", "reward_model.", "lora_", "master_port")
    assert not [k for k in params if k.startswith(foreign)]
    assert params["stable_alignment_learning_rate"] == "2e-05" and "None" not in params.values()
    steps = 16 // 4
    for name in ("train/loss", "train/sft", "train/hinge", "train/active_margin_share", "train/lr",
                 "train/grad_norm", "perf/tokens_per_s", "perf/peak_memory_mb"):
        history = client.get_metric_history(result.mlflow_run_id, name)
        assert [m.step for m in history] == list(range(1, steps + 1)), name
        assert all(math.isfinite(m.value) for m in history)
    assert all(m.value > 0 for m in client.get_metric_history(result.mlflow_run_id, "perf/tokens_per_s"))
    artifacts = {a.path for a in client.list_artifacts(result.mlflow_run_id)}
    assert {"model", "loss_curve.png", "batches_consumed.json"} <= artifacts
    assert result.loss_curve_png.stat().st_size > 1000

    name, version = result.registered_model.split("/")
    mv = client.get_model_version(name, version)
    assert mv.run_id == result.mlflow_run_id
    # Described by what it learned with, from which data, for how long, from what.
    assert mv.description == client.get_registered_model(name).description
    assert mv.description.startswith(f"stage-under-test: Stable Alignment loss on 16 prompt groups of samples batch "
                                      f"batch-7; {steps} optimizer steps from tiny:tiny-64")
    assert mv.tags["samples_batches"] == "batch-7" and mv.tags["objective"] == "stable_alignment"
    # the registered artifact is a loadable model
    local = mlflow.artifacts.download_artifacts(mv.source, dst_path=str(tmp_path / "dl"))
    AutoModelForCausalLM.from_pretrained(local)
    assert result.metadata()["metric/steps"] == steps


def _samples(n_per_type: int) -> pl.DataFrame:
    rows = []
    now = datetime(2026, 1, 1)
    for type_index, sample_type in enumerate(("imitation", "self_critique", "realignment")):
        for g in letter_groups(n_per_type, seed=10 + type_index, batch=f"batch-{type_index}"):
            for j, (resp, rating) in enumerate(zip(g.responses, g.ratings, strict=True)):
                rows.append({"sample_id": f"{sample_type}-{g.key}-{j}", "sample_type": sample_type,
                             "batch": g.batches[0], "prompt_key": g.key, "instruction": g.instruction,
                             "input": "", "response": resp, "rating": rating, "rating_source": "observer",
                             "agent_model": "m", "world_id": "w", "round": 0, "interaction_id": f"i{j}",
                             "created_at": now})
    return pl.DataFrame(rows)


def test_curriculum_from_the_warehouse(home, tmp_path):
    wh = Warehouse(tmp_path / "wh.duckdb")
    with wh.transaction() as con:
        insert_frame(con, "alignment_samples", _samples(8))
    config = CONFIG.model_copy(update={"base_model": "tiny:tiny-64"})
    tags = {"dagster_run_id": "r1"}
    parent_id = parent_run(home, "curriculum", tags=tags)  # what every checkpoint asset of one Dagster run finds
    results = {}
    for kind in ("stage1_imitation", "stage2_self_critique", "stage3_realignment", "sft", "dpo", "sppo"):
        spec = spec_for(kind, config)
        results[kind] = train_stage(wh, spec, base_model=stage_start(wh, spec, config), parent_checkpoint=spec.parent,
                                    config=config, home=home, parent_run_id=parent_id, tags=tags)
    assert list(results) == ["stage1_imitation", "stage2_self_critique", "stage3_realignment", "sft", "dpo", "sppo"]
    rows = {r["name"]: r for r in wh.query("SELECT * FROM checkpoints").to_dicts()}
    assert set(rows) == set(results)
    s1, s2, s3 = rows["stage1_imitation"], rows["stage2_self_critique"], rows["stage3_realignment"]
    assert s1["base_model"] == "tiny:tiny-64" and s1["parent_checkpoint"] is None
    assert s2["parent_checkpoint"] == "stage1_imitation" and s2["base_model"] == s1["path"]
    assert s3["parent_checkpoint"] == "stage2_self_critique" and s3["base_model"] == s2["path"]
    assert s1["samples_batches"] == ["batch-0"] and s2["samples_batches"] == ["batch-1"]
    for kind in ("sft", "dpo", "sppo"):
        assert rows[kind]["base_model"] == "tiny:tiny-64" and rows[kind]["parent_checkpoint"] is None
        assert Path(rows[kind]["path"], "config.json").exists()
    assert rows["sft"]["samples_batches"] == ["batch-0", "batch-1", "batch-2"]  # all types, best responses
    assert rows["dpo"]["samples_batches"] == ["batch-0", "batch-2"]  # self-critique ratings rate the draft
    # DPO: 8 groups x 2 pairs (best vs each lower) per type, 2 types; reference log-probs cached once
    assert results["dpo"].steps == math.ceil(8 * 2 * 2 / 4)
    assert (home.checkpoints / "dpo" / "reference_logps.pt").exists()
    assert results["dpo"].metrics["reward_accuracy"] >= 0.0
    # what the steps reached, beside what the objective drew: one epoch reaches every pair
    dpo_metrics = results["dpo"].metrics
    assert dpo_metrics["trained/imitation/pairs"] == dpo_metrics["data/imitation/pairs"] == 16
    assert dpo_metrics["trained/self_critique/prompts"] == 0
    client = mlflow.MlflowClient()
    runs = {kind: client.get_run(r.mlflow_run_id) for kind, r in results.items()}
    assert runs["dpo"].data.metrics["trained/imitation/pairs"] == 16
    parents = {run.data.tags["mlflow.parentRunId"] for run in runs.values()}
    assert len(parents) == 1
    parent = client.get_run(parents.pop())
    assert parent.info.run_name == "curriculum" and parent.data.tags["dagster_run_id"] == "r1"
    # the grouping run ends with its latest child: nothing is left RUNNING
    assert parent.info.status == "FINISHED" and parent.info.end_time >= max(r.info.end_time for r in runs.values())
    for kind, run in runs.items():
        assert run.info.run_name == kind and run.info.status == "FINISHED"
        assert run.data.tags["dagster_run_id"] == "r1" and run.data.tags["checkpoint_kind"] == kind
    # Each run holds its own objective's settings: DPO's beta on the DPO run, the contrastive margin on the stages.
    dpo, stage1, sft = (runs[k].data.params for k in ("dpo", "stage1_imitation", "sft"))
    assert "dpo_beta" in dpo and "margin" not in dpo and "sppo_eta" not in dpo
    assert "margin" in stage1 and "dpo_beta" not in stage1
    assert "margin" not in sft and "dpo_beta" not in sft and "sft_learning_rate" in sft
    # A chained stage's registered model names its start by its place in the home, not by a machine's path.
    stage2 = client.get_model_version(*results["stage2_self_critique"].registered_model.split("/"))
    assert stage2.tags["base_model"] == "checkpoints/stage1_imitation/model"
    assert runs["stage2_self_critique"].data.params["base_model"] == "checkpoints/stage1_imitation/model"
    assert "from checkpoints/stage1_imitation/model" in stage2.description


def test_reward_model_is_registered_and_described(home):
    from alignment_pipeline.training.config import RewardModelConfig
    from alignment_pipeline.training.reward_model import train_reward_model

    config = CONFIG.model_copy(update={"base_model": "tiny:tiny-64", "reward_model": RewardModelConfig(
        max_steps=1, heldout_share=0.25, length_balance=False)})
    result = train_reward_model(letter_groups(8, seed=3, batch="batch-rm"), config=config, home=home)
    assert result.registered_model == "alignment-pipeline-reward_model/1"
    assert result.metrics["heldout_pairs"] == result.metrics["model_heldout_pairs"] > 0
    version = mlflow.MlflowClient().get_model_version("alignment-pipeline-reward_model", "1")
    assert version.run_id == result.mlflow_run_id
    assert version.tags == {"objective": "reward_model", "base_model": "tiny:tiny-64", "samples_batches": "batch-rm",
                            "steps": "1"}
    assert version.description.startswith("reward_model: Bradley–Terry reward model on ")
    assert f"held-out pair accuracy {result.metrics['heldout_accuracy']:.2f} on " in version.description
