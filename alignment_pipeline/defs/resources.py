"""The pipeline's one resource: which profile and home a run uses, and handles onto the library."""


import os
from pathlib import Path

import dagster as dg

from alignment_pipeline.config import PipelineConfig, load_profile
from alignment_pipeline.llm import BackendSpec, LLMBackend, make_backend
from alignment_pipeline.paths import HomeLayout, assets_dir
from alignment_pipeline.warehouse import Warehouse


class PipelineResource(dg.ConfigurableResource):
    """`profile` picks the named settings (smoke | small | paper; None: $ALIGNMENT_PROFILE, else the default
    profile); `home` is where everything is written."""

    profile: str | None = None
    home: str | None = None
    inbox: str | None = None  # overrides the profile's prompt inbox
    settings_file: str | None = None  # YAML/JSON overrides on top of the profile

    def config(self) -> PipelineConfig:
        return load_profile(self.profile, settings_file=self.settings_file)

    def layout(self) -> HomeLayout:
        return HomeLayout(self.home)

    def warehouse(self) -> Warehouse:
        return Warehouse(self.layout().duckdb_path)

    def inbox_dir(self) -> Path:
        raw = self.inbox or self.config().prompts.inbox
        return Path(raw).expanduser().resolve() if raw else assets_dir() / "prompts"

    def backend(self, spec: BackendSpec) -> LLMBackend:
        return make_backend(spec, models_dir=self.layout().models)


def default_resource() -> PipelineResource:
    # Environment first so `dagster dev` and the CLI agree on where things live.
    return PipelineResource(
        profile=os.environ.get("ALIGNMENT_PROFILE"),
        home=os.environ.get("ALIGNMENT_HOME"),
        inbox=os.environ.get("ALIGNMENT_INBOX"),
        settings_file=os.environ.get("ALIGNMENT_SETTINGS"),
    )
