"""One config story: pydantic sections owned by the domain modules, composed into named profiles.

A profile is data: `profiles/<name>.yaml`, nested like PipelineConfig, naming only what differs from the field
defaults. `smoke`: tiny random models on CPU, for tests. `small`: the real SmolLM2-135M-Instruct in every role,
sized for 2 CPU cores (the demo's default). `paper`: the paper's settings on real models on GPUs.
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from alignment_pipeline import env
from alignment_pipeline.evaluation.config import EvaluationConfig
from alignment_pipeline.llm.config import BackendSpec
from alignment_pipeline.prompts.config import PromptsConfig
from alignment_pipeline.samples.config import SamplesConfig
from alignment_pipeline.sandbox.config import SandboxConfig
from alignment_pipeline.strict import StrictModel
from alignment_pipeline.training.config import TrainingConfig

#: one YAML file per profile; the files present are the profiles there are
PROFILE_DIR = Path(__file__).with_name("profiles")


def profile_names() -> tuple[str, ...]:
    """Names of the profiles: the YAML files in PROFILE_DIR, sorted."""
    return tuple(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))


PROFILES: tuple[str, ...] = profile_names()
#: what runs when nothing names a profile: real models are the standard, tiny ones are for tests
DEFAULT_PROFILE = "small"


class PipelineConfig(StrictModel):
    """Every setting of a run, one section per stage."""

    profile: str = Field(DEFAULT_PROFILE, description="the profile these settings started from")
    prompts: PromptsConfig = Field(default_factory=PromptsConfig, description="question intake")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description="the simulated society")
    samples: SamplesConfig = Field(default_factory=SamplesConfig, description="training samples from the society")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="fine-tuning")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="benchmarks")

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        names = profile_names()
        if value not in names:
            raise ValueError(f"unknown profile {value!r}; choose one of {', '.join(names)}")
        return value


#: the sections a profile or settings file may name
SECTIONS: tuple[str, ...] = tuple(k for k in PipelineConfig.model_fields if k != "profile")


class SettingsError(ValueError):
    """Settings that cannot be used (unknown profile, unreadable or invalid file, bad value): a one-line message
    naming the file and field, which the CLI prints as it is."""


def profile_path(name: str) -> Path:
    """The YAML file of a profile; an unknown name is an error listing the known ones."""
    names = profile_names()
    if name not in names:
        raise SettingsError(f"unknown profile {name!r}; choose one of {', '.join(names)}")
    return PROFILE_DIR / f"{name}.yaml"


def profile_overrides(name: str) -> dict:
    """The profile's YAML as written: only what it changes from the field defaults."""
    path = profile_path(name)
    return _read_mapping(path, "profile file", SECTIONS, empty_ok=True)


def load_profile(name: str | None = None, *, settings_file: str | Path | None = None,
                 **overrides) -> PipelineConfig:
    """The named profile (default $ALIGNMENT_PROFILE or DEFAULT_PROFILE) merged onto the field defaults, then a
    settings file (YAML or JSON, nested like PipelineConfig; only the fields it names change), then top-level
    section overrides (each replaces its whole section)."""
    name = name or env.get(env.PROFILE) or DEFAULT_PROFILE
    # Validated one layer at a time, so an error names the file that holds it.
    config = _validated(name, profile_overrides(name), f"profile file {profile_path(name)}")
    if settings_file:
        merged = _deep_merge(config.model_dump(exclude={"profile"}), read_settings(settings_file))
        config = _validated(name, merged, f"settings file {settings_file}")
    if overrides:
        sections = {key: getattr(config, key) for key in SECTIONS}
        sections.update(overrides)
        config = _validated(name, sections, None)
    return config


def _validated(name: str, sections: dict, source: str | None) -> PipelineConfig:
    try:
        return PipelineConfig(profile=name, **sections)
    except ValidationError as exc:
        where = f" ({source})" if source else ""
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        # One line naming each field; pydantic's report and its traceback add nothing to it.
        raise SettingsError(f"invalid settings for profile {name!r}{where}: {problems}") from None


def read_settings(path: str | Path) -> dict:
    """A settings file's mapping of sections, refused with its path when unreadable or naming an unknown one.
    `profile` is refused too: a file cannot switch the profile it is merged onto (--profile / $ALIGNMENT_PROFILE
    choose it), and dropping the key silently would run other settings than the file says."""
    data = _read_mapping(Path(path), "settings file", tuple(PipelineConfig.model_fields))
    if "profile" in data:
        raise SettingsError(f"settings file {path}: a top-level `profile: {data['profile']}` is not a setting; "
                            f"choose the profile with --profile or ${env.PROFILE}, and keep only sections "
                            f"({', '.join(SECTIONS)}) in the file")
    return data


def _read_mapping(path: Path, what: str, allowed: tuple[str, ...], *, empty_ok: bool = False) -> dict:
    try:
        data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except OSError as exc:
        raise SettingsError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"{what} {path} is not valid YAML/JSON: {' '.join(str(exc).split())}") from None
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"{what} {path} must hold a mapping of sections, got {type(data).__name__}")
    unknown = set(data) - set(allowed)
    if unknown:
        raise SettingsError(f"{what} {path}: unknown section(s) {', '.join(sorted(map(str, unknown)))}; "
                         f"known: {', '.join(allowed)}")
    return data


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


# ------------------------------------------------------------------------------------------- describing


def describe_settings(config: PipelineConfig) -> str:
    """The resolved settings as text, section by section: each field with its value (and its default where it
    differs) and what it means."""
    path = PROFILE_DIR / f"{config.profile}.yaml"
    lines = [f"profile: {config.profile} ({path})"]
    for section in SECTIONS:
        model = getattr(config, section)
        lines += ["", f"{section}:"]
        doc = inspect.cleandoc(type(model).__doc__ or "")
        lines += [f"  # {line}".rstrip() for line in doc.splitlines()]
        lines += _describe_model(model, indent="  ")
    return "\n".join(lines) + "\n"


def _describe_model(model: BaseModel, indent: str) -> list[str]:
    lines = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        default = field.get_default(call_default_factory=True)
        rendered = _render(value)
        if isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            head = f"{indent}{name}: {len(value)} item{'s' if len(value) != 1 else ''}"
            items = [f"{indent}    [{i}] {_render(v)}" for i, v in enumerate(value)]
        else:
            head, items = f"{indent}{name}: {rendered}", []
        if not _same(value, default):
            shown = _render(default)
            head += f"  (default: {shown})" if len(shown) <= 40 else "  (not the default)"
        lines.append(head)
        if field.description:
            lines += textwrap.wrap(field.description, width=110, initial_indent=indent + "    ",
                                   subsequent_indent=indent + "    ", break_on_hyphens=False)
        lines += items
    return lines


def _same(a: Any, b: Any) -> bool:
    return _plain(a) == _plain(b)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _render(value: Any) -> str:
    """YAML-like, on one line: null, true, [a, b], {k: v}; a backend as its kind and model plus what else it sets."""
    if isinstance(value, BaseModel):
        defaults = type(value)()
        keep = [k for k in type(value).model_fields
                if k in ("kind", "model") or getattr(value, k) != getattr(defaults, k)]
        return ", ".join(f"{k}={_render(getattr(value, k))}" for k in keep)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value.strip() == value and value else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_render(v)}" for k, v in value.items()) + "}"
    return str(value)


__all__ = ["BackendSpec", "DEFAULT_PROFILE", "PROFILE_DIR", "PROFILES", "PipelineConfig", "SECTIONS", "SettingsError",
           "describe_settings", "load_profile", "profile_names", "profile_overrides", "profile_path",
           "read_settings"]
