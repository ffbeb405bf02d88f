"""Every model reference in the settings is judged when the settings load, in one line naming the field, the
value and what is wrong, not after the sandbox has run for minutes."""

import json

import pytest

from alignment_pipeline.config import load_profile
from alignment_pipeline.llm.config import model_reference_problem


def _load(tmp_path, section: dict):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(section))
    return load_profile("smoke", settings_file=path)


def _model_dir(tmp_path, *files: str):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in files:
        (folder / name).write_text("{}")
    return folder


@pytest.mark.parametrize("files, lacking", [
    ((), ["config.json", "tokenizer", "weights"]),
    (("config.json",), ["tokenizer", "weights"]),
    (("config.json", "tokenizer.json"), ["weights"]),
])
def test_an_incomplete_model_directory_is_refused_at_load(tmp_path, files, lacking):
    folder = _model_dir(tmp_path, *files)
    with pytest.raises(ValueError) as info:
        _load(tmp_path, {"training": {"base_model": str(folder)}})
    message = str(info.value)
    assert "\n" not in message and "training.base_model" in message and str(folder) in message
    assert all(f"no {what}" in message for what in lacking), message


def test_a_complete_directory_a_project_name_and_a_hub_id_pass(tmp_path):
    folder = _model_dir(tmp_path, "config.json", "tokenizer.json", "model.safetensors")
    config = _load(tmp_path, {"training": {"base_model": str(folder)},
                              "evaluation": {"judge": {"model": "Qwen/Qwen2.5-0.5B-Instruct"}}})
    assert config.training.base_model == str(folder)
    for name in ("tiny:my-model", "smollm2-135m-instruct", "gpt2", "meta-llama/Llama-3.1-8B-Instruct"):
        assert model_reference_problem(name) is None, name


@pytest.mark.parametrize("field, spec, says", [
    ("sandbox.agent_models", {"sandbox": {"agent_models": [{"model": "tiny:"}]}}, "tiny model's name"),
    ("sandbox.observer", {"sandbox": {"observer": {"kind": "hf", "model": "not a/valid//hub id"}}}, "well-formed hub id"),
    ("evaluation.judge", {"evaluation": {"judge": {"model": "./no-such-dir"}}}, "does not exist"),
    ("training.base_model", {"training": {"base_model": "  "}}, "empty model name"),
])
def test_every_role_is_checked(tmp_path, field, spec, says):
    with pytest.raises(ValueError) as info:
        _load(tmp_path, spec)
    assert field in str(info.value) and says in str(info.value) and "\n" not in str(info.value)


def test_server_and_scripted_models_are_names_not_files(tmp_path):
    config = _load(tmp_path, {"sandbox": {"observer": {"kind": "openai", "model": "any name: the server's",
                                                       "base_url": "http://127.0.0.1:9/v1"}}})
    assert config.sandbox.observer.model == "any name: the server's"
