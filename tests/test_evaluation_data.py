"""The shipped benchmark files: verified by sha256 (a changed file is refused, named), read as the real splits,
seeded samples the same for every call, HH / HH-A built from real prompts with the society's prompts removed."""

import shutil

import pytest

from alignment_pipeline.evaluation.data import (
    SHIPPED,
    BenchmarkDataError,
    data_dir,
    read_rows,
    sample_ids,
    verified_path,
)
from alignment_pipeline.evaluation.hh_data import (
    HARMLESS,
    hh_a_items,
    hh_items,
    normalise,
    preference_docs,
    turns,
)


def test_every_shipped_file_matches_its_row_count():
    for name, (_, rows) in SHIPPED.items():
        assert len(read_rows(name)) == rows, name
    assert (data_dir() / "SOURCES.md").is_file() and (data_dir() / "licenses").is_dir()


def test_a_changed_file_is_refused_naming_it(tmp_path):
    name = "mic_proxy_rot_relevance.jsonl"
    shutil.copy(data_dir() / name, tmp_path / name)
    assert verified_path(name, tmp_path) == tmp_path / name
    with open(tmp_path / name, "a") as f:
        f.write("\n")
    with pytest.raises(BenchmarkDataError, match=rf"{name} has sha256 .* expected"):
        read_rows(name, tmp_path)
    with pytest.raises(BenchmarkDataError, match="missing"):
        verified_path("truthfulqa_mc_task_v0.json", tmp_path)


def test_truthfulqa_rows_have_the_hub_layout_correct_answer_first():
    doc = read_rows("truthfulqa_mc_task_v0.json")[0]
    assert doc["mc1_targets"]["labels"][0] == 1 and sum(doc["mc1_targets"]["labels"]) == 1


def test_samples_are_seeded_sorted_and_stable():
    ids = list(range(100))
    first = sample_ids("ethics_cm", ids, 10, 0)
    assert first == sample_ids("ethics_cm", ids, 10, 0) == sorted(first) and len(set(first)) == 10
    assert first != sample_ids("ethics_cm", ids, 10, 1) and first != list(range(10))
    assert sample_ids("x", ids, None, 0) == ids


def test_hh_prompts_are_real_deduplicated_and_decontaminated():
    plain = hh_items()
    keys = [normalise(i.question) for i in plain.items]
    assert len(keys) == len(set(keys)) and plain.duplicates_removed > 0
    assert plain.seeded_removed >= 356  # the original society's list shares 356 prompts with harmless-base test
    first = plain.items[0]
    assert turns(read_rows(first.file)[first.item_id]["chosen"])[0][1] == first.request
    ours = hh_items(seeded=[first.question])
    assert ours.seeded_removed == plain.seeded_removed + 1 and first not in ours.items
    adversarial = hh_a_items()
    item = adversarial.items[0]
    rejected = turns(read_rows(HARMLESS)[item.item_id]["rejected"])
    assert item.file == HARMLESS and item.request == f"{rejected[0][1]}\n{rejected[1][1]}"


def test_preference_pairs_share_the_dialogue_before_the_last_reply():
    name, row, doc = preference_docs()[0]
    raw = read_rows(name)[row]
    assert raw["chosen"] == f"{doc['context']} {doc['chosen']}" and raw["rejected"].startswith(doc["context"])
