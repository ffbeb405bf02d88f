"""Profiles are data: one YAML file each, naming only what differs from the field defaults."""

from __future__ import annotations

import shutil

import pytest
from pydantic import BaseModel

from alignment_pipeline import config as cfg
from alignment_pipeline.config import (
    DEFAULT_PROFILE,
    PROFILES,
    SECTIONS,
    PipelineConfig,
    describe_settings,
    load_profile,
    profile_overrides,
    profile_path,
)
from alignment_pipeline.llm.config import SMOLLM2, BackendSpec
from alignment_pipeline.samples.config import PAPER_TYPE_COUNTS, SamplesConfig


def _plain(value):
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def test_profiles_are_the_yaml_files():
    assert set(PROFILES) >= {"smoke", "small", "paper"}
    assert PROFILES == tuple(sorted(p.stem for p in cfg.PROFILE_DIR.glob("*.yaml")))
    assert DEFAULT_PROFILE == "small" and DEFAULT_PROFILE in PROFILES
    assert all(profile_path(name).is_file() for name in PROFILES)


@pytest.mark.parametrize("name", PROFILES)
def test_profile_is_defaults_plus_its_yaml(name):
    config = load_profile(name)
    assert config.profile == name
    raw = profile_overrides(name)
    for section in SECTIONS:
        model = getattr(config, section)
        named = raw.get(section) or {}
        for field_name, field in type(model).model_fields.items():
            value, default = getattr(model, field_name), field.get_default(call_default_factory=True)
            if field_name in named:
                expected = getattr(type(model)(**{field_name: named[field_name]}), field_name)
                assert _plain(value) == _plain(expected), f"{name}: {section}.{field_name}"
                # a profile names only what it changes
                assert _plain(value) != _plain(default), f"{name}: {section}.{field_name} repeats its default"
            else:
                assert _plain(value) == _plain(default), f"{name}: {section}.{field_name} is not its default"


def test_paper_profile():
    paper = load_profile("paper")
    agents = {spec.model for spec in paper.sandbox.agent_models}
    assert paper.sandbox.observer.model not in agents, "the observer must not rate its own answers"
    assert len(agents) >= 3 and all(s.kind == "openai" for s in [*paper.sandbox.agent_models, paper.sandbox.observer])
    assert paper.samples.type_shares is None, "nothing is discarded by default"
    # chat agents get the original's prior, the base model (a completion model in the original's terms) does not
    assert set(paper.sandbox.chat_prior_models) < agents
    assert all("Instruct" in m for m in paper.sandbox.chat_prior_models)
    assert SamplesConfig(type_shares=dict(PAPER_TYPE_COUNTS)).type_shares  # the option stays available
    assert paper.training.base_model == "chavinlo/alpaca-native"
    sandbox, training = paper.sandbox, paper.training
    assert (sandbox.size, sandbox.rounds, sandbox.neighbours, sandbox.temperature, sandbox.max_new_tokens) == (
        10, 10, 4, 1.0, 256)
    assert (training.learning_rate_for("stable_alignment"), training.grad_accum, training.max_length,
            training.margin) == (2e-5, 8, 360, 10.0)


def test_paper_profile_gives_each_served_model_its_own_server():
    """One vLLM server serves one model: two models behind one base_url cannot both be reached."""
    paper = load_profile("paper")
    specs = [*paper.sandbox.agent_models, paper.sandbox.observer, paper.evaluation.judge]
    served: dict[str, set[str]] = {}
    for spec in specs:
        served.setdefault(spec.base_url, set()).add(spec.model)
    assert all(len(models) == 1 for models in served.values()), served
    assert len(served) == len({s.model for s in specs}) == 5


def test_small_profile_is_smollm2_in_every_role():
    small = load_profile("small")
    roles = [*small.sandbox.agent_models, small.sandbox.observer, small.evaluation.judge]
    assert {spec.model for spec in roles} == {SMOLLM2} and small.training.base_model == SMOLLM2


def test_default_profile_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("ALIGNMENT_PROFILE", "paper")
    assert load_profile().profile == "paper"
    monkeypatch.delenv("ALIGNMENT_PROFILE")
    assert load_profile().profile == DEFAULT_PROFILE


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown profile 'nope'; choose one of .*smoke"):
        load_profile("nope")


def test_layers_settings_file_then_overrides(tmp_path):
    settings = tmp_path / "s.yaml"
    settings.write_text("sandbox: {rounds: 3}\ntraining: {epochs: 5}\n")
    config = load_profile("paper", settings_file=settings)
    assert config.sandbox.rounds == 3 and config.sandbox.size == 10  # the profile's other fields stay
    assert config.training.epochs == 5 and config.training.grad_accum == 8
    replaced = load_profile("paper", settings_file=settings, training={"epochs": 4})
    assert replaced.training.epochs == 4 and replaced.training.grad_accum == 1  # an override replaces its section
    assert replaced.sandbox.rounds == 3


@pytest.fixture
def profile_dir(tmp_path, monkeypatch):
    """A copy of the shipped profiles in which a test may write broken ones."""
    folder = tmp_path / "profiles"
    shutil.copytree(cfg.PROFILE_DIR, folder)
    monkeypatch.setattr(cfg, "PROFILE_DIR", folder)
    return folder


def _one_line_error(**kwargs) -> str:
    with pytest.raises(ValueError) as info:
        load_profile(**kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("text, named", [
    ("training: {learning_rat: 0.1}\n", "training.learning_rat: Extra inputs are not permitted"),
    ("sandbox: {observer: {modell: x}}\n", "sandbox.observer.modell: Extra inputs are not permitted"),
    ("sandbox: {size: 1}\n", "sandbox.size: Input should be greater than or equal to 2"),
    ("trainng: {epochs: 2}\n", "unknown section(s) trainng"),
    ("profile: smoke\n", "unknown section(s) profile"),
    ("training: [1, 2\n", "is not valid YAML"),
])
def test_bad_profile_file_is_named(profile_dir, text, named):
    bad = profile_dir / "broken.yaml"
    bad.write_text(text)
    message = _one_line_error(name="broken")
    assert named in message and str(bad) in message and "profile file" in message


@pytest.mark.parametrize("text, named", [
    ("evaluation: {limt: 3}\n", "evaluation.limt: Extra inputs are not permitted"),
    ("evaluaton: {limit: 3}\n", "unknown section(s) evaluaton"),
])
def test_bad_settings_file_is_named(tmp_path, text, named):
    settings = tmp_path / "mine.yaml"
    settings.write_text(text)
    message = _one_line_error(name="small", settings_file=settings)
    assert named in message and str(settings) in message and "settings file" in message


def test_an_empty_profile_is_the_defaults(profile_dir):
    (profile_dir / "plain.yaml").write_text("# nothing changed\n")
    plain = load_profile("plain")
    assert plain.model_dump(exclude={"profile"}) == PipelineConfig().model_dump(exclude={"profile"})


def _models(model_cls):
    yield model_cls
    for field in model_cls.model_fields.values():
        for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                yield from _models(candidate)


def test_every_field_is_documented():
    for model_cls in _models(PipelineConfig):
        for name, field in model_cls.model_fields.items():
            assert field.description, f"{model_cls.__name__}.{name} has no description"
    assert BackendSpec in set(_models(PipelineConfig))


@pytest.mark.parametrize("name", PROFILES)
def test_describe_settings_names_every_field(name):
    config = load_profile(name)
    text = describe_settings(config)
    flat = " ".join(text.split())
    for section in SECTIONS:
        assert f"\n{section}:\n" in text
        for field_name in type(getattr(config, section)).model_fields:
            assert f"  {field_name}: " in text, f"{section}.{field_name}"
    for model_cls, field_name in [("training", "margin"), ("training", "ratio"), ("training", "rating_scale"),
                                  ("training", "aggregate"), ("sandbox", "agent_models"), ("samples", "type_shares")]:
        description = type(getattr(config, model_cls)).model_fields[field_name].description
        assert " ".join(description.split()) in flat
    for spec in config.sandbox.agent_models:
        assert f"model={spec.model}" in text


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_inbox_holds_prompt_files(name, monkeypatch):
    """The inbox a profile names (`{assets}/...` included) is where the pipeline reads, and it has prompts."""
    from alignment_pipeline.context import Pipeline

    monkeypatch.delenv("ALIGNMENT_INBOX", raising=False)
    inbox = Pipeline(profile=name).inbox_dir()
    assert inbox == load_profile(name).prompts.inbox_dir().resolve()
    assert inbox.is_dir() and any(inbox.iterdir()), inbox
