"""The trainer benchmark: our DPO vs TRL's DPOTrainer and our Stable Alignment loss (K = 3), each in a fresh
subprocess on the same model and data; figures are measured, and the last line compares ours with TRL's."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from alignment_pipeline.bench.trainer import BenchSpec, ContenderResult, TrainerBench


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _result(name, seconds, tokens, peak, reference=0.0, warmup=1):
    return ContenderResult(name, step_seconds=seconds, step_tokens=tokens, warmup_steps=warmup,
                           reference_seconds=reference, peak_memory_mb=peak, memory_method="m")


def test_figures_drop_the_warmup_steps_and_ratios_compare_ours_with_trl():
    ours = _result("ours_dpo", [9.0, 1.0, 1.0], [100, 100, 100], 50.0, reference=1.0)
    trl = _result("trl_dpo", [20.0, 2.0, 2.0], [100, 100, 100], 100.0, reference=2.0)
    assert ours.steps == 3 and ours.tokens == 300
    assert ours.step_time == 1.0 and ours.tokens_per_s == 100.0  # the 9 s warm-up step is not in either
    assert ours.total_seconds == 12.0 and trl.total_seconds == 26.0  # but it is in the total, with the reference
    bench = TrainerBench(spec=BenchSpec(), device="cpu", n_params=10**6, results=[ours, trl])
    assert bench.ratios() == pytest.approx({"tokens_per_s": 2.0, "step_time": 0.5, "peak_memory": 0.5,
                                            "total_seconds": 12 / 26})
    assert bench.lines()[-1] == "ours/TRL: tokens/s 2.00x, step time 0.50x, total 0.46x, peak memory 0.50x"
    assert bench.metadata()["results"][0]["step_s_median"] == 1.0
    alone = TrainerBench(spec=BenchSpec(), device="cpu", n_params=1, results=[ours])
    assert alone.ratios() is None and alone.lines()[-1] == "ours/TRL: n/a (no TRL comparison)"


def test_spec_sizes_the_data_to_whole_steps():
    spec = BenchSpec(prompts_per_batch=3, grad_accum=2, warmup_steps=1, steps=4)
    assert spec.n_prompts == 30
    assert BenchSpec.from_json(json.dumps(asdict(spec))) == spec
    gpu = BenchSpec.gpu()
    assert (gpu.arch, gpu.hidden, gpu.layers, gpu.vocab, gpu.max_length) == ("qwen2", 896, 24, 151936, 1024)
    assert gpu.steps >= 100


@pytest.mark.slow
def test_our_dpo_follows_trls_dpotrainer_on_the_same_batch(tmp_path, one_thread):
    """One batch holding all pairs, three epochs: both trainers see identical data at every step, so their
    reference log-probs and loss trajectories must agree (same loss, AdamW, clipping, constant lr)."""
    import mlflow
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from alignment_pipeline.bench.trainer import _build_model, _data
    from alignment_pipeline.llm.prompt_format import prompt_format
    from alignment_pipeline.paths import HomeLayout
    from alignment_pipeline.training.config import TrainingConfig
    from alignment_pipeline.training.trainer import TrainRequest, train

    spec = BenchSpec(device="cpu", hidden=64, layers=2, heads=4, kv_heads=4, intermediate=128, vocab=4096,
                     prompts_per_batch=8, warmup_steps=0, steps=2, prompt_chars=60, response_chars=(30, 60),
                     max_length=256)
    assert spec.n_prompts == 16
    model_dir = _build_model(spec, tmp_path / "model")
    _, pairs = _data(spec)
    trl_args = DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=16, max_length=256,
                         learning_rate=1e-3, lr_scheduler_type="constant", num_train_epochs=3, logging_steps=1,
                         save_strategy="no", report_to="none", use_cpu=True, gradient_checkpointing=False, seed=0,
                         disable_tqdm=True, beta=0.1)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    fmt = prompt_format(tokenizer)  # the bench model has no chat template: Alpaca, as our trainer renders it
    dataset = Dataset.from_dict({"prompt": [fmt.render(p.prompt) for p in pairs],
                                 "chosen": [p.responses[0] for p in pairs],
                                 "rejected": [p.responses[1] for p in pairs]})
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=trl_args, train_dataset=dataset,
                         processing_class=tokenizer)
    trainer.train()
    trl_log = [h for h in trainer.state.log_history if "loss" in h]

    config = TrainingConfig(learning_rate=1e-3, epochs=3, per_device_batch=16, max_length=256, warmup_ratio=0.0,
                            lr_scheduler="constant_with_warmup", register_model=False, save_every=1000, dpo_beta=0.1)
    ours = train(TrainRequest(pairs, objective="dpo", base_model=str(model_dir), out_dir=tmp_path / "ours",
                              config=config, home=HomeLayout(tmp_path / "home"), run_name="dpo-vs-trl"))
    history = sorted(mlflow.MlflowClient().get_metric_history(ours.mlflow_run_id, "train/loss"), key=lambda m: m.step)
    our_losses = [m.value for m in history]
    reference = torch.load(tmp_path / "ours" / "reference_logps.pt", weights_only=True)["logps"]
    print(f"\nTRL losses {[round(h['loss'], 5) for h in trl_log]}, ours {[round(v, 5) for v in our_losses]}; "
          f"mean chosen log-prob at step 1: TRL {trl_log[0]['logps/chosen']:.4f}, ours {reference[:, 0].mean():.4f}")
    assert reference[:, 0].mean().item() == pytest.approx(trl_log[0]["logps/chosen"], rel=1e-4)
    assert reference[:, 1].mean().item() == pytest.approx(trl_log[0]["logps/rejected"], rel=1e-4)
    assert our_losses == pytest.approx([h["loss"] for h in trl_log], abs=2e-3)
    assert our_losses[-1] < our_losses[0] - 0.05  # and both actually learned
