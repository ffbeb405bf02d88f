"""Bad settings are caught when the settings are read, each named by its field."""

from __future__ import annotations

import pytest

from alignment_pipeline.config import load_profile


@pytest.mark.parametrize("text, named", [
    ("training: {learning_rat: 0.1}\n", "training.learning_rat: Extra inputs are not permitted"),
    ("sandbox: {sizee: 3}\n", "sandbox.sizee: Extra inputs are not permitted"),
    ("sandbox: {observer: {modell: x}}\n", "sandbox.observer.modell: Extra inputs are not permitted"),
    ("training: {learning_rate: -1}\n", "training.learning_rate: Input should be greater than 0"),
    ("training: {per_device_batch: 0}\n", "training.per_device_batch: Input should be greater than or equal to 1"),
    ("training: {epochs: -2}\n", "training.epochs: Input should be greater than or equal to 1"),
    ("training: {base_model: /no/such/model}\n", "training.base_model: Value error, model directory /no/such/model"),
    ("sandbox: {observer: {kind: hf, model: ./missing-dir}}\n", "sandbox.observer: Value error, model: model directory"),
])
def test_bad_settings_are_named_at_load(tmp_path, text, named):
    settings = tmp_path / "s.yaml"
    settings.write_text(text)
    with pytest.raises(ValueError) as info:
        load_profile("smoke", settings_file=settings)
    assert named in str(info.value) and "\n" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_hub_ids_and_existing_directories_pass(tmp_path):
    settings = tmp_path / "s.yaml"
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (model / name).write_text("{}")
    settings.write_text(f"training: {{base_model: {model}}}\nsandbox: {{observer: {{kind: hf, model: org/some-model}}}}\n")
    config = load_profile("smoke", settings_file=settings)
    assert config.training.base_model == str(model) and config.sandbox.observer.model == "org/some-model"
