"""Data-parallel training (DDP over gloo, two CPU processes): the same model as one process with the same
effective batch, rank 0 alone writing and reporting, the reference pass split across ranks, a resume across
ranks; and the checkpoint asset launching torchrun through Dagster Pipes when `training.nproc_per_node` is 2."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from pathlib import Path

import dagster as dg
import mlflow
import polars as pl
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.launch import launch_command, launch_env
from alignment_pipeline.training.synthetic import letter_groups
from alignment_pipeline.training.trainer import TrainRequest, consumed_batches, train
from alignment_pipeline.warehouse.db import Warehouse, insert_frame

BASE = "tiny:tiny-64"  # hidden 64, 2 layers
# 18 groups, 4 per batch: 5 batches per epoch. Two processes × grad_accum 1 take 2 batches per step: 3 steps per
# epoch, the last with one batch only (rank 1 then joins the all-reduce with a zero-weight pass); 2 epochs.
GROUPS = letter_groups(18, seed=5)
DDP_CONFIG = TrainingConfig(learning_rate=3e-3, epochs=2, per_device_batch=4, grad_accum=1, max_length=64,
                            margin=1.0, save_every=2, keep_checkpoints=2, register_model=False, seed=0)
SINGLE_CONFIG = DDP_CONFIG.model_copy(update={"grad_accum": 2})  # the same effective batch in one process
STEPS = 6
DPO_STEPS = {"epochs": 1, "max_steps": 3}  # 36 pairs: 9 batches, 3 steps of 2 batches taken


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refuse(what: str):
    def refuse(*_args, **_kwargs):
        raise AssertionError(f"rank {os.environ['RANK']} {what}; only rank 0 may")
    return refuse


def _worker(rank: int, world: int, port: int, home: str, out: str, report_dir: str) -> None:
    """One rank, as torchrun would start it: stopped after 3 steps (checkpoint at step 2), then resumed."""
    import torch.distributed as dist

    from alignment_pipeline.training import trainer as trainer_module
    from alignment_pipeline.training.checkpointing import latest_checkpoint, load_trainer_state

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if rank != 0:  # any write by another rank fails this test
        trainer_module.ckpt.save_checkpoint = _refuse("saved a checkpoint")
        trainer_module._save_final = _refuse("saved the final model")
        trainer_module.plot_loss_curve = _refuse("wrote the loss curve")
        trainer_module.log_and_register = _refuse("registered a model")
        trainer_module._open_run = _refuse("opened an MLflow run")
        trainer_module.write_cache = _refuse("wrote the reference cache")
    real_reference = trainer_module.compute_reference_logps
    shares = []

    def count_share(model, groups, **kwargs):  # each rank computes its share of the reference pass
        shares.append(len(groups))
        return real_reference(model, groups, **kwargs)

    trainer_module.compute_reference_logps = count_share
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        kwargs = dict(objective="stable_alignment", base_model=BASE, out_dir=Path(out), config=DDP_CONFIG,
                      home=HomeLayout(home), run_name="ddp")
        first = train(TrainRequest(GROUPS, stop_after_steps=3, **kwargs))
        saved = load_trainer_state(latest_checkpoint(Path(out) / "resume"))
        second = train(TrainRequest(GROUPS, **kwargs))
        dpo = train(TrainRequest(GROUPS, objective="dpo", base_model=BASE, out_dir=Path(out).with_name("ddp-dpo"),
                                 config=DDP_CONFIG.model_copy(update=DPO_STEPS), home=HomeLayout(home),
                                 run_name="ddp-dpo"))
    finally:
        dist.destroy_process_group()
    Path(report_dir, f"rank{rank}.json").write_text(json.dumps({
        "first": [first.completed, first.steps], "steps": second.steps, "completed": second.completed,
        "run_id": second.mlflow_run_id, "resume_step": saved["state"]["step"],
        "rng_ranks": len(saved.get("rng_per_rank", [])), "loss": second.metrics["loss"],
        "dpo_run_id": dpo.mlflow_run_id, "dpo_steps": dpo.steps, "reference_shares": shares}))


def _curve(run_id: str, metric: str = "train/loss") -> list[float]:
    by_step: dict[int, float] = {}
    for m in sorted(mlflow.MlflowClient().get_metric_history(run_id, metric), key=lambda m: m.timestamp):
        by_step[m.step] = m.value  # the resumed run re-logs step 3: the last value wins
    return [by_step[s] for s in sorted(by_step)]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(next(Path(model_dir).glob("*.safetensors")))


def test_two_processes_match_one_with_the_same_effective_batch(tmp_path):
    """Two ranks with grad_accum 1 against one process with grad_accum 2, per_device_batch 4 in both
    (Stable Alignment loss, then DPO with its reference log-probs, computed half on each rank and gathered).

    Both walk the same seeded batch order in windows of two batches per optimizer step. One process
    accumulates Σ_m (n_m / N) ∇L_m over the window's batches (n_m prompts of N in the window); under DDP rank r
    back-propagates its batches with weight W·n_m/N and DDP averages over the W ranks, which gives the same sum.
    So every step applies the same gradient to the same weights: equal in exact arithmetic, and with W = 2
    even in float32 (scaling by 2 is exact and a two-term sum is commutative), hence the tight tolerance. The
    last window of each epoch holds one batch, so rank 1 joins the all-reduce with a zero-weight pass; the run is
    also stopped at step 3 and resumed from rank 0's step-2 checkpoint on both ranks."""
    home = HomeLayout(tmp_path / "home")
    reports = tmp_path / "reports"
    reports.mkdir()
    out = tmp_path / "ddp"
    mp.spawn(_worker, args=(2, _free_port(), str(home.root), str(out), str(reports)), nprocs=2, join=True)
    single_out = tmp_path / "single"
    single = train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=single_out,
                                config=SINGLE_CONFIG, home=home, run_name="single"))
    single_dpo = train(TrainRequest(GROUPS, objective="dpo", base_model=BASE, out_dir=tmp_path / "single-dpo",
                                    home=home, config=SINGLE_CONFIG.model_copy(update=DPO_STEPS),
                                    run_name="single-dpo"))

    rank0, rank1 = (json.loads((reports / f"rank{r}.json").read_text()) for r in (0, 1))
    for report in (rank0, rank1):
        assert report["first"] == [False, 3] and report["completed"] and report["steps"] == STEPS == single.steps
        assert report["resume_step"] == 2 and report["loss"] == pytest.approx(single.metrics["loss"], rel=1e-5)
    assert rank0["rng_ranks"] == 2  # every rank's RNG state went into rank 0's checkpoint
    assert rank0["run_id"] and rank1["run_id"] == ""  # rank 1 never opened a run

    # One MLflow run for the distributed stage, continued across the resume, with global (reduced) metrics.
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.mlflow.runName = 'ddp'",
                              output_format="list")
    assert [r.info.run_id for r in runs] == [rank0["run_id"]]
    run = client.get_run(rank0["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["world_size"] == "2" and run.data.params["effective_batch"] == "8"
    for metric in ("train/loss", "train/hinge", "train/grad_norm"):  # Adam hides a gradient scale; the norm not
        assert _curve(rank0["run_id"], metric) == pytest.approx(_curve(single.mlflow_run_id, metric), rel=1e-5)
    tokens = {m.step: m.value for m in client.get_metric_history(rank0["run_id"], "perf/tokens_per_s")}
    assert sorted(tokens) == list(range(1, STEPS + 1))

    assert consumed_batches(out) == consumed_batches(single_out)  # same batches, same steps, none twice

    # DPO: each rank computed half of the reference log-probs; gathered, they equal one process's pass.
    assert rank0["dpo_steps"] == rank1["dpo_steps"] == single_dpo.steps == 3 and rank1["dpo_run_id"] == ""
    assert rank0["reference_shares"] == rank1["reference_shares"] == [18]  # 36 pairs, dealt out by length
    gathered = torch.load(out.with_name("ddp-dpo") / "reference_logps.pt", weights_only=True)["logps"]
    alone = torch.load(tmp_path / "single-dpo" / "reference_logps.pt", weights_only=True)["logps"]
    assert gathered.shape == alone.shape == (36, 2) and not gathered.isnan().any()
    torch.testing.assert_close(gathered, alone, rtol=1e-5, atol=1e-5)
    for metric in ("train/loss", "train/reward_accuracy", "train/grad_norm"):
        assert _curve(rank0["dpo_run_id"], metric) == pytest.approx(_curve(single_dpo.mlflow_run_id, metric),
                                                                    rel=1e-5, abs=1e-6)
    assert not (out / "resume").exists()
    ddp_w, single_w, base_w = _weights(out / "model"), _weights(single_out / "model"), _weights(
        home.models / BASE.split(":", 1)[1])
    moved = max(float((single_w[k] - base_w[k]).abs().max()) for k in single_w)
    diff = max(float((ddp_w[k] - single_w[k]).abs().max()) for k in single_w)
    assert moved > 1e-3  # training changed the weights, so equality is not trivially met
    assert diff <= 1e-6, f"DDP weights differ from one process's by {diff} (training moved them by {moved})"


def test_launch_command_and_env(tmp_path):
    command = launch_command("dpo", nproc_per_node=4, base_model="/m", parent_run_id="p1", dagster_run_id="d1",
                             python="py")
    assert command[:7] == ["py", "-m", "alignment_pipeline.training.guard", "torch.distributed.run", "--nnodes", "1",
                           "--nproc_per_node"]
    assert command[7:9] == ["4", "--standalone"]
    assert command[9:] == ["-m", "alignment_pipeline.training.launch", "--kind", "dpo", "--base-model", "/m",
                           "--parent-run-id", "p1", "--dagster-run-id", "d1"]
    fixed = launch_command("sft", nproc_per_node=2, master_port=29511, python="py")
    assert fixed[7:12] == ["2", "--master_addr", "127.0.0.1", "--master_port", "29511"]
    env = launch_env(profile="paper", home=tmp_path, settings_file=None, inbox=None)
    assert env == {"ALIGNMENT_PROFILE": "paper", "ALIGNMENT_HOME": str(tmp_path.resolve())}


def _imitation_samples(n: int) -> pl.DataFrame:
    rows = []
    for g in letter_groups(n, seed=3, batch="batch-a"):
        for j, (response, rating) in enumerate(zip(g.responses, g.ratings, strict=True)):
            rows.append({"sample_id": f"imitation-{g.key}-{j}", "sample_type": "imitation", "batch": "batch-a",
                         "prompt_key": g.key, "instruction": g.instruction, "input": "", "response": response,
                         "rating": rating, "rating_source": "observer", "agent_model": "m", "world_id": "w",
                         "round": 0, "interaction_id": f"i{j}", "created_at": datetime(2026, 1, 1)})
    return pl.DataFrame(rows)


def test_asset_launches_torchrun_through_pipes(home, tmp_path):
    from alignment_pipeline.defs.resources import PipelineResource
    from alignment_pipeline.defs.training import checkpoint_assets

    layout = HomeLayout(home)
    with Warehouse(layout.duckdb_path).transaction() as con:
        insert_frame(con, "alignment_samples", _imitation_samples(6))
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"training": {
        "nproc_per_node": 2, "max_steps": 2, "per_device_batch": 2, "max_length": 64, "base_model": BASE}}))
    pipeline = PipelineResource(home=str(home), settings_file=str(settings))
    stage1 = next(a for a in checkpoint_assets if a.key == dg.AssetKey(["checkpoints", "stage1_imitation"]))

    with dg.instance_for_test() as instance:
        result = dg.materialize([stage1], instance=instance, resources={"pipeline": pipeline})
        assert result.success
        events = result.get_asset_materialization_events()
        messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert len(events) == 1  # rank 0 alone reported
    metadata = {k: v.value for k, v in events[0].materialization.metadata.items()}
    assert metadata["world_size"] == 2 and metadata["steps"] == 2 and metadata["completed"] is True
    assert Path(metadata["checkpoint_path"], "config.json").exists()
    assert "image/png;base64" in metadata["loss_curve"] and metadata["mlflow_run_id"] in metadata["mlflow_run"]
    assert any("training stage1_imitation on 2 process(es)" in m for m in messages)  # Pipes log from rank 0

    row = Warehouse(layout.duckdb_path).query("SELECT * FROM checkpoints WHERE name = 'stage1_imitation'")
    assert row.height == 1
    assert row["steps"][0] == 2 and row["mlflow_run_id"][0] == metadata["mlflow_run_id"]
    assert row["samples_batches"][0].to_list() == ["batch-a"]

    client = mlflow.MlflowClient()
    stage_runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                    filter_string="tags.mlflow.runName = 'stage1_imitation'")
    assert [r.info.run_id for r in stage_runs] == [metadata["mlflow_run_id"]]  # one run: rank 0's
    tags = stage_runs[0].data.tags
    assert tags["dagster_run_id"] == result.run_id and tags["checkpoint_kind"] == "stage1_imitation"
    parent = client.get_run(tags["mlflow.parentRunId"])
    assert parent.info.run_name == "curriculum" and parent.data.tags["dagster_run_id"] == result.run_id
    assert stage_runs[0].data.params["world_size"] == "2"


def test_process_group_gets_the_configured_timeout(monkeypatch):
    from datetime import timedelta

    import torch.distributed as dist

    from alignment_pipeline.training import distributed as dist_utils
    from alignment_pipeline.training.runtime import Runtime

    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda *args, **kwargs: calls.append((args, kwargs)))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    runtime = Runtime(device=torch.device("cpu"), bf16=False, rank=1, world_size=2)
    assert dist_utils.init_process_group(runtime, timeout_s=TrainingConfig(distributed_timeout_s=900)
                                         .distributed_timeout_s)
    assert calls == [(("gloo",), {"rank": 1, "world_size": 2, "timeout": timedelta(seconds=900)})]


def test_lockstep_micro_steps_pad_every_rank_to_the_busiest():
    """FSDP gathers weights in every forward: a window of 3 batches on 2 ranks is 2 micro-steps on each (rank 1's
    second a zero-weight pass); DDP only needs each rank to join the last all-reduce."""
    from alignment_pipeline.training.distributed import micro_steps
    from alignment_pipeline.training.runtime import Runtime

    rank = {r: Runtime(device=torch.device("cpu"), bf16=False, rank=r, world_size=2) for r in (0, 1)}
    ddp = [[(m.index, m.placeholder, m.sync) for m in micro_steps([4, 4, 2], rank[r])] for r in (0, 1)]
    assert ddp == [[(0, False, False), (2, False, True)], [(1, False, True)]]
    fsdp = {r: micro_steps([4, 4, 2], rank[r], lockstep=True) for r in (0, 1)}
    assert [(m.index, m.placeholder, m.sync, m.weight) for m in fsdp[1]] == [(1, False, False, 0.4),
                                                                            (0, True, True, 0.0)]
    assert len(fsdp[0]) == 2 and sum(m.weight for r in (0, 1) for m in fsdp[r]) == pytest.approx(1.0)
    one = micro_steps([4], rank[1], lockstep=True)  # a window of one batch: rank 1 runs a placeholder only
    assert [(m.placeholder, m.weight) for m in one] == [(True, 0.0)]
