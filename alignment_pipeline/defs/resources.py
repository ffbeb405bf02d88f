"""The pipeline's one resource: `Pipeline`'s fields as Dagster config, its methods delegated to `Pipeline`."""

from pathlib import Path

import dagster as dg

from alignment_pipeline.config import PipelineConfig
from alignment_pipeline.context import Pipeline
from alignment_pipeline.llm import BackendSpec, LLMBackend
from alignment_pipeline.paths import HomeLayout
from alignment_pipeline.warehouse import Warehouse


class PipelineResource(dg.ConfigurableResource):
    """`profile` picks the named settings (a profiles/*.yaml name: smoke, small, study, paper; None: $ALIGNMENT_PROFILE, else the default
    profile); `home` is where everything is written."""

    profile: str | None = None
    home: str | None = None
    inbox: str | None = None  # overrides the profile's prompt inbox
    settings_file: str | None = None  # YAML/JSON overrides on top of the profile

    def pipeline(self) -> Pipeline:
        return Pipeline(profile=self.profile, home=self.home, inbox=self.inbox, settings_file=self.settings_file)

    def config(self) -> PipelineConfig:
        return self.pipeline().config()

    def layout(self) -> HomeLayout:
        return self.pipeline().layout()

    def warehouse(self) -> Warehouse:
        return self.pipeline().warehouse()

    def inbox_dir(self) -> Path:
        return self.pipeline().inbox_dir()

    def backend(self, spec: BackendSpec) -> LLMBackend:
        return self.pipeline().backend(spec)


def default_resource() -> PipelineResource:
    # Environment first so `dagster dev` and the CLI agree on where things live.
    return PipelineResource(**Pipeline.from_env().options())
