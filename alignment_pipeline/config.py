"""One config story: pydantic sections owned by the domain modules, composed into named profiles.

`smoke`: tiny random models on CPU, for tests. `small`: the real SmolLM2-135M-Instruct in every role, sized for
2 CPU cores (the demo's default). `paper`: the paper's settings on real models on GPUs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import ValidationError

from alignment_pipeline.evaluation.config import EvaluationConfig
from alignment_pipeline.llm.config import BackendSpec
from alignment_pipeline.prompts.config import PromptsConfig
from alignment_pipeline.samples.config import SamplesConfig
from alignment_pipeline.sandbox.config import SandboxConfig
from alignment_pipeline.strict import StrictModel
from alignment_pipeline.training.config import TrainingConfig

ProfileName = Literal["smoke", "small", "paper"]
PROFILES: tuple[str, ...] = ("smoke", "small", "paper")
#: what runs when nothing names a profile: real models are the standard, tiny ones are for tests
DEFAULT_PROFILE = "small"



class PipelineConfig(StrictModel):
    profile: ProfileName = DEFAULT_PROFILE
    prompts: PromptsConfig = PromptsConfig()
    sandbox: SandboxConfig = SandboxConfig()
    samples: SamplesConfig = SamplesConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()


def load_profile(name: str | None = None, *, settings_file: str | Path | None = None,
                 **overrides) -> PipelineConfig:
    """The named profile (default $ALIGNMENT_PROFILE or DEFAULT_PROFILE), then a settings file (YAML or JSON, nested
    like PipelineConfig; only the fields it names change), then top-level section overrides."""
    name = name or os.environ.get("ALIGNMENT_PROFILE", DEFAULT_PROFILE)
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    sections = {
        "prompts": PromptsConfig.profile(name),
        "sandbox": SandboxConfig.profile(name),
        "samples": SamplesConfig.profile(name),
        "training": TrainingConfig.profile(name),
        "evaluation": EvaluationConfig.profile(name),
    }
    if settings_file:
        merged = _deep_merge({k: v.model_dump() for k, v in sections.items()}, read_settings(settings_file))
        merged.pop("profile", None)
        sections = merged
    sections.update(overrides)
    try:
        return PipelineConfig(profile=name, **sections)
    except ValidationError as exc:
        where = f" (settings file {settings_file})" if settings_file else ""
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        # One line naming each field; pydantic's report and its traceback add nothing to it.
        raise ValueError(f"invalid settings for profile {name!r}{where}: {problems}") from None


def read_settings(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
    except OSError as exc:
        raise ValueError(f"cannot read settings file {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"settings file {path} is not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"settings file {path} must hold a mapping of sections, got {type(data).__name__}")
    unknown = set(data) - set(PipelineConfig.model_fields)
    if unknown:
        raise ValueError(f"settings file {path}: unknown section(s) {', '.join(sorted(unknown))}")
    return data


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


__all__ = ["BackendSpec", "DEFAULT_PROFILE", "PipelineConfig", "load_profile", "PROFILES"]
