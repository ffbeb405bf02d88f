"""The GPU benchmark script in its dry mode (every case on CPU at toy sizes): the report's structure, and that
each case either measured or says why not; a case past its budget is recorded and the others still run."""

from __future__ import annotations

import json
import re

import pytest

from alignment_pipeline.bench.gpu import CASES, REPORT_JSON, REPORT_MD, STATUSES, run_gpu_bench


def _cases(report_dir) -> dict:
    data = json.loads((report_dir / REPORT_JSON).read_text())
    return data, {c["name"]: c for c in data["cases"]}


def test_dry_run_measures_or_explains_every_case(tmp_path):
    out = tmp_path / "report"
    run_gpu_bench(out, dry_run=True, models_dir=tmp_path / "models")
    data, cases = _cases(out)
    print((out / REPORT_MD).read_text())
    assert data["dry_run"] is True and list(cases) == list(CASES)
    assert {"gpus", "torch", "transformers", "trl"} <= set(data["machine"])
    for c in cases.values():
        assert c["status"] in STATUSES and 0 < c["seconds"] <= c["budget_s"]
        if c["status"] == "measured":
            assert c["headline"] and c["lines"] and c["figures"] and not c["reason"]
        else:
            assert c["reason"].strip(), f"{c['name']} {c['status']} without a reason"
    # The trainer case is `bench trainer --compare trl` at toy size: every contender on the same data, each in
    # its own process.
    trainer = cases["trainer_vs_trl"]
    assert trainer["status"] == "measured", trainer["reason"]
    figures = trainer["figures"]
    results = {r["name"]: r for r in figures["results"]}
    assert list(results) == ["ours_dpo", "trl_dpo", "ours_stable_alignment"]
    assert all(r["steps"] == 2 and r["warmup_steps"] == 1 and r["tokens_per_s"] > 0 and r["peak_memory_mb"] > 0
               for r in results.values())
    # the same pairs counted the same way (prompt once + both responses); K = 3 responses on the same prompts
    assert results["ours_dpo"]["tokens"] == results["trl_dpo"]["tokens"] < results["ours_stable_alignment"]["tokens"]
    # both reference passes ran in this run and count in the totals
    assert results["ours_dpo"]["reference_seconds"] > 0 and results["trl_dpo"]["reference_seconds"] > 0
    assert re.fullmatch(r"ours/TRL: tokens/s \d+\.\d\dx, step time \d+\.\d\dx, total \d+\.\d\dx, "
                        r"peak memory \d+\.\d\dx", trainer["lines"][-1])
    assert set(figures["ratios_ours_dpo_over_trl_dpo"]) == {"tokens_per_s", "step_time", "peak_memory",
                                                             "total_seconds"}
    sandbox = cases["sandbox"]
    assert sandbox["status"] == "measured", sandbox["reason"]
    assert sandbox["figures"]["batched_s"] > 0 and sandbox["figures"]["sequential_s"] > 0
    # two CPU processes sharding the tiny model
    assert cases["fsdp"]["status"] == "measured", cases["fsdp"]["reason"]
    assert cases["fsdp"]["figures"]["nproc"] == 2 and cases["fsdp"]["figures"]["spec"]["strategy"] == "fsdp"
    markdown = (out / REPORT_MD).read_text()
    assert "dry run" in markdown and all(f"| {name} |" in markdown for name in CASES)


def test_a_case_past_its_budget_is_recorded_and_the_next_still_runs(tmp_path):
    report = run_gpu_bench(tmp_path, dry_run=True, models_dir=tmp_path / "models", cases=("fsdp", "sandbox"),
                           budgets={"fsdp": 0.5, "sandbox": 0.5})
    assert [c.name for c in report.cases] == ["fsdp", "sandbox"]
    assert all(c.status == "failed" and "ran past its budget of 0 s" in c.reason for c in report.cases)
    _, cases = _cases(tmp_path)
    assert cases["sandbox"]["status"] == "failed"
    assert "## sandbox: failed" in (tmp_path / REPORT_MD).read_text()


def test_without_a_gpu_the_real_run_skips_with_the_reason(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the real run would measure")
    report = run_gpu_bench(tmp_path, models_dir=tmp_path / "models", cases=("sandbox",))
    assert report.cases[0].status == "skipped" and "no CUDA device" in report.cases[0].reason


def test_unknown_case_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown case"):
        run_gpu_bench(tmp_path, dry_run=True, cases=("nope",))
