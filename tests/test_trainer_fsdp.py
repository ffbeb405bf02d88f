"""Sharded training (FSDP2 over gloo, two CPU processes, activation checkpointing on): the same loss curve and
final weights as one process with the same effective batch, sharded (DCP) resumable checkpoints that resume to
exactly the weights of an uninterrupted sharded run, and a full Hugging Face checkpoint at the end."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import mlflow
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.synthetic import letter_groups
from alignment_pipeline.training.trainer import TrainRequest, consumed_batches, train

BASE = "tiny:tiny-64"  # hidden 64, 2 decoder layers: each its own FSDP unit, then the root
# As in test_trainer_distributed.py: 18 groups, 4 per batch, 5 batches per epoch; two ranks take 2 batches per
# step, so each epoch's last step has one batch and rank 1 runs a zero-weight pass to keep the gathers in step.
GROUPS = letter_groups(18, seed=5)
FSDP_CONFIG = TrainingConfig(learning_rate=3e-3, epochs=2, per_device_batch=4, grad_accum=1, max_length=64,
                             margin=1.0, save_every=2, keep_checkpoints=2, register_model=False, seed=0,
                             strategy="fsdp", gradient_checkpointing=True)
SINGLE_CONFIG = FSDP_CONFIG.model_copy(update={"grad_accum": 2})  # one process: the strategy does not apply
STEPS = 6

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, home: str, root: str) -> None:
    """One rank: an uninterrupted sharded run, then a run stopped after 3 steps (checkpoint at step 2) and
    resumed."""
    import torch.distributed as dist

    from alignment_pipeline.training.checkpointing import latest_checkpoint

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        common = dict(groups=GROUPS, objective="stable_alignment", base_model=BASE, config=FSDP_CONFIG,
                      home=HomeLayout(home))
        full = train(TrainRequest(out_dir=Path(root, "fsdp-full"), run_name="fsdp-full", **common))
        stopped = Path(root, "fsdp-resumed")
        first = train(TrainRequest(out_dir=stopped, run_name="fsdp-resumed", stop_after_steps=3, **common))
        checkpoint = latest_checkpoint(stopped / "resume")
        files = sorted(p.name for p in checkpoint.iterdir())
        dcp_files = sorted(p.name for p in (checkpoint / "dcp").iterdir())
        second = train(TrainRequest(out_dir=stopped, run_name="fsdp-resumed", **common))
    finally:
        dist.destroy_process_group()
    Path(root, f"rank{rank}.json").write_text(json.dumps({
        "full": [full.completed, full.steps, full.mlflow_run_id], "first": [first.completed, first.steps],
        "checkpoint": checkpoint.name, "files": files, "dcp_files": dcp_files,
        "second": [second.completed, second.steps, second.mlflow_run_id]}))


def _curve(run_id: str, metric: str = "train/loss") -> list[float]:
    by_step: dict[int, float] = {}
    for m in sorted(mlflow.MlflowClient().get_metric_history(run_id, metric), key=lambda m: m.timestamp):
        by_step[m.step] = m.value  # the resumed run re-logs step 3: the last value wins
    return [by_step[s] for s in sorted(by_step)]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(next(Path(model_dir).glob("*.safetensors")))


def test_fsdp_two_processes_match_one_and_resume_exactly(tmp_path):
    """Two sharded ranks with grad_accum 1 against one process with grad_accum 2.

    Each step's gradient is the same prompt-weighted mean over the window's two batches (FSDP reduce-scatters
    the mean over ranks of rank-weighted losses, as DDP all-reduces it), so curves and weights agree to float
    rounding. The stopped-and-resumed sharded run loads its model and optimizer shards from DCP and must end on
    the very weights of the uninterrupted sharded run."""
    home = HomeLayout(tmp_path / "home")
    mp.spawn(_worker, args=(2, _free_port(), str(home.root), str(tmp_path)), nprocs=2, join=True)
    single_out = tmp_path / "single"
    single = train(TrainRequest(GROUPS, objective="stable_alignment", base_model=BASE, out_dir=single_out,
                                config=SINGLE_CONFIG, home=home, run_name="single"))
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    for report in (rank0, rank1):
        assert report["full"][:2] == [True, STEPS] and report["second"][:2] == [True, STEPS] == [True, single.steps]
        assert report["first"] == [False, 3] and report["checkpoint"] == "step-00000002"
    assert rank1["full"][2] == rank1["second"][2] == ""  # rank 1 never opened a run
    # The resumable checkpoint is sharded: DCP files (rank 0's metadata, each rank's shard), no full weights.
    assert "dcp" in rank0["files"] and "trainer_state.pt" in rank0["files"]
    assert not [f for f in rank0["files"] if f.endswith(".safetensors")]
    assert ".metadata" in rank0["dcp_files"] and len([f for f in rank0["dcp_files"] if f.endswith(".distcp")]) == 2

    full_out, resumed_out = tmp_path / "fsdp-full", tmp_path / "fsdp-resumed"
    assert consumed_batches(full_out) == consumed_batches(resumed_out) == consumed_batches(single_out)
    assert not (resumed_out / "resume").exists()
    for metric in ("train/loss", "train/hinge", "train/grad_norm"):
        assert _curve(rank0["full"][2], metric) == pytest.approx(_curve(single.mlflow_run_id, metric), rel=1e-5)
        assert _curve(rank0["second"][2], metric) == pytest.approx(_curve(rank0["full"][2], metric), rel=1e-6)

    # The final checkpoint is a full Hugging Face one, with the single process's tensor names.
    full_w, resumed_w, single_w = _weights(full_out / "model"), _weights(resumed_out / "model"), _weights(
        single_out / "model")
    base_w = _weights(home.models / BASE.split(":", 1)[1])
    assert sorted(full_w) == sorted(single_w) == sorted(resumed_w)
    assert all(full_w[k].shape == single_w[k].shape for k in single_w)
    moved = max(float((single_w[k] - base_w[k]).abs().max()) for k in single_w)
    to_single = max(float((full_w[k] - single_w[k]).abs().max()) for k in single_w)
    resume_gap = max(float((resumed_w[k] - full_w[k]).abs().max()) for k in full_w)
    assert moved > 1e-3  # training changed the weights, so equality is not trivially met
    assert to_single <= 1e-5, f"FSDP weights differ from one process's by {to_single} (training moved {moved})"
    assert resume_gap == 0.0, f"resumed FSDP weights differ from the uninterrupted run's by {resume_gap}"


# -- the memory estimate (a dry run: no model is loaded) --------------------------------------------------------

SMALL_SHAPE = {"hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 10, "intermediate_size": 16,
               "num_attention_heads": 2, "num_key_value_heads": 1, "tie_word_embeddings": False}


def test_memory_estimate_arithmetic_on_a_small_config(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignment_pipeline.training.memory import OVERHEAD_BYTES, estimate, model_shape

    (tmp_path / "config.json").write_text(json.dumps(SMALL_SHAPE))
    shape = model_shape(str(tmp_path))
    # q, o 2·64; k, v 2·8·4 (one KV head of 4); gate, up, down 3·8·16; two norms 16 → 592 per layer;
    # embeddings and LM head 2·80, final norm 8 → 168.
    assert (shape.layer_params, shape.root_params, shape.params) == (592, 168, 1352)
    assert shape.params == sum(p.numel() for p in LlamaForCausalLM(LlamaConfig(**SMALL_SHAPE)).parameters())

    config = TrainingConfig(per_device_batch=2, num_responses=3, max_length=10, logprob_chunk_size=16,
                            gradient_checkpointing=True)
    ddp = estimate(shape, config, strategy="ddp", world_size=4)
    fsdp = estimate(shape, config, strategy="fsdp", world_size=4)
    assert (ddp.weights, ddp.gradients, ddp.optimizer, ddp.gathered) == (5408, 10816, 10816, 0)  # + DDP buckets
    assert (fsdp.weights, fsdp.gradients, fsdp.optimizer) == (1352, 1352, 2704)  # a quarter each
    assert fsdp.gathered == 2 * (168 + 2 * 592) + 4 * (168 + 592)  # root + 2 layers in bf16, their fp32 grads
    # 60 tokens (2 groups × 3 responses × 10); per token and layer 2 bytes × (10·8 + 4·16) = 288; mask 2·30²·3.
    assert fsdp.activations == ddp.activations == 60 * 2 * 288 + 5400
    assert fsdp.activations_checkpointed == 60 * 2 * 2 * 8 + 60 * 288 + 5400  # layer inputs + one layer
    assert fsdp.logits == 16 * 10 * (2 + 8)
    assert fsdp.total == 1352 + 1352 + 2704 + 5744 + 24600 + 1600 + OVERHEAD_BYTES
    no_ckpt = estimate(shape, config.model_copy(update={"gradient_checkpointing": False}), strategy="fsdp",
                       world_size=4)
    assert no_ckpt.total - fsdp.total == 39960 - 24600
    with pytest.raises(ValueError, match="no model shapes for 'org/unknown'.*--model-config"):
        model_shape("org/unknown", tmp_path / "models")


def test_paper_profile_fits_four_80gb_gpus_under_fsdp_not_ddp():
    from typer.testing import CliRunner

    from alignment_pipeline.cli import app
    from alignment_pipeline.config import load_profile
    from alignment_pipeline.training.memory import GIB, LLAMA_7B, estimate, model_shape

    config = load_profile("paper").training
    assert (config.strategy, config.nproc_per_node) == ("fsdp", 4)
    shape = model_shape(config.base_model)
    assert shape is LLAMA_7B and round(shape.params / 1e6) == 6738  # LLaMA-7B's published count
    fsdp = estimate(shape, config, strategy="fsdp", world_size=4)
    ddp = estimate(shape, config, strategy="ddp", world_size=4)
    assert fsdp.total < 40 * GIB < 80 * GIB < 16 * shape.params < ddp.total  # DDP's states alone overflow
    result = CliRunner().invoke(app, ["train", "estimate", "--profile", "paper"])
    assert result.exit_code == 0, result.output
    fits = next(line for line in result.output.splitlines() if line.startswith("fits"))
    assert fits.split()[1:] == ["no", "yes"]
