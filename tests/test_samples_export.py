"""export_samples: datasets save_to_disk + Parquet + JSONL, and the pairs export in TRL's DPOTrainer."""

from __future__ import annotations

import json

import datasets
import polars as pl
import pytest

from alignment_pipeline.samples.build import build_samples
from alignment_pipeline.samples.config import SamplesConfig
from alignment_pipeline.samples.export import export_samples
from alignment_pipeline.samples.scripted import ScriptedInteraction as S
from alignment_pipeline.samples.scripted import write_scripted
from alignment_pipeline.samples.template import format_prompt
from alignment_pipeline.warehouse.db import Warehouse


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Warehouse:
    warehouse = Warehouse(tmp_path_factory.mktemp("export") / "w.duckdb")
    write_scripted(warehouse, "b1", [
        S(f"Question {n}?", f"Draft answer {n}.", f"Revised, kinder answer {n}.", 2.0 + n % 2, 5.0 + n % 3,
          [(6.0, f"Helpful {n}."), (3.0, f"Could hurt {n}."), (None, "unparseable")], agent_id=n)
        for n in range(6)])
    build_samples(warehouse, "b1", SamplesConfig())
    return warehouse


@pytest.mark.parametrize("fmt,view", [("grouped", "samples_grouped"), ("pairs", "samples_pairs"),
                                      ("sppo", "samples_sppo_pairs")])
def test_export_writes_dataset_parquet_and_jsonl(warehouse, tmp_path, fmt, view):
    result = export_samples(warehouse, fmt, tmp_path)
    assert result.rows == warehouse.count(view) > 0
    loaded = datasets.load_from_disk(str(tmp_path / fmt))
    assert loaded.num_rows == result.rows and loaded.column_names[0] == "prompt"
    assert loaded.features["prompt"].dtype == "string"
    assert pl.read_parquet(result.parquet_path).height == result.rows
    lines = result.jsonl_path.read_text().splitlines()
    assert len(lines) == result.rows
    first = json.loads(lines[0])
    assert first["prompt"] == loaded[0]["prompt"]
    instruction, input_ = warehouse.query(
        f"SELECT instruction, input FROM {view} WHERE prompt_key = ? LIMIT 1", [first["prompt_key"]]).row(0)
    assert first["prompt"] == format_prompt(instruction, input_)
    assert result.metadata()["rows"] == result.rows


def test_pairs_and_sppo_columns(warehouse, tmp_path):
    pairs = datasets.load_from_disk(str(export_samples(warehouse, "pairs", tmp_path).dataset_dir))
    assert {"prompt", "chosen", "rejected", "margin"} <= set(pairs.column_names)
    assert all(m > 0 for m in pairs["margin"])
    sppo = datasets.load_from_disk(str(export_samples(warehouse, "sppo", tmp_path).dataset_dir))
    assert {"prompt", "chosen", "rejected", "chosen_probs", "chosen_probs_win", "chosen_probs_lose"} <= set(
        sppo.column_names)
    assert all(w > lo for w, lo in zip(sppo["chosen_probs_win"], sppo["chosen_probs_lose"], strict=True))
    grouped = datasets.load_from_disk(str(export_samples(warehouse, "grouped", tmp_path).dataset_dir))
    assert grouped.features["responses"].feature.dtype == "string"


def test_sample_type_filter_and_bad_arguments(warehouse, tmp_path):
    result = export_samples(warehouse, "pairs", tmp_path, sample_type="self_critique")
    assert result.rows == warehouse.count("samples_pairs", "sample_type = 'self_critique'") == 6
    assert set(datasets.load_from_disk(str(result.dataset_dir))["sample_type"]) == {"self_critique"}
    with pytest.raises(ValueError, match="unknown export format"):
        export_samples(warehouse, "triples", tmp_path)
    with pytest.raises(ValueError, match="unknown sample_type"):
        export_samples(warehouse, "pairs", tmp_path, sample_type="imitiation")
    other = tmp_path / "elsewhere"
    (other / "pairs").mkdir(parents=True)
    (other / "pairs" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not an earlier dataset export"):
        export_samples(warehouse, "pairs", other)


def test_pairs_export_trains_in_trl_dpo(warehouse, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from alignment_pipeline.llm.tiny import build_tiny_model

    export_samples(warehouse, "pairs", tmp_path / "out")
    train = datasets.load_from_disk(str(tmp_path / "out" / "pairs"))
    model_dir = build_tiny_model(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # byte-level tokens: a realignment pair (critique + revision) runs past 256, and TRL drops rows over max_length
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2,
                     report_to="none", use_cpu=True, max_length=512, logging_steps=1, save_strategy="no",
                     gradient_checkpointing=False, dataset_num_proc=None)
    trainer = DPOTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    tokenised = trainer.train_dataset
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(tokenised.column_names)
    assert tokenised.num_rows == train.num_rows
    assert tokenizer.decode(tokenised[0]["prompt_ids"], skip_special_tokens=True) == train[0]["prompt"]
    output = trainer.train()
    assert output.global_step == 1
    assert trainer.state.log_history and "loss" in trainer.state.log_history[0]
