"""The pipeline as a plain library object: which profile, home, inbox and settings a run uses, and handles onto
the config, the home's layout, the warehouse and model backends. No Dagster here, so the command line and
scripts use the library without loading it; the Dagster resource wraps this."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from alignment_pipeline import env
from alignment_pipeline.paths import HomeLayout

if TYPE_CHECKING:
    from alignment_pipeline.config import PipelineConfig
    from alignment_pipeline.llm import BackendSpec, LLMBackend
    from alignment_pipeline.warehouse import Warehouse


@dataclass
class Pipeline:
    """`profile` picks the named settings (None: $ALIGNMENT_PROFILE, else the default profile); `home` is where
    everything is written (None: $ALIGNMENT_HOME, else ./.alignment); `inbox` overrides the profile's prompt
    inbox; `settings_file` holds YAML/JSON overrides on top of the profile."""

    profile: str | None = None
    home: str | None = None
    inbox: str | None = None
    settings_file: str | None = None
    _config: PipelineConfig | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_env(cls, **overrides: str | None) -> Pipeline:
        """Fields from the environment as it is now; an override given (not None) wins over its variable."""
        values = {"profile": env.get(env.PROFILE), "home": env.get(env.HOME), "inbox": env.get(env.INBOX),
                  "settings_file": env.get(env.SETTINGS)}
        unknown = set(overrides) - set(values)
        if unknown:
            raise TypeError(f"unknown Pipeline field(s): {', '.join(sorted(unknown))}")
        values.update({k: str(v) for k, v in overrides.items() if v is not None})
        return cls(**values)

    def config(self) -> PipelineConfig:
        # Cached: the profile and settings files are read and validated once per object.
        if self._config is None:
            from alignment_pipeline.config import load_profile

            self._config = load_profile(self.profile, settings_file=self.settings_file)
        return self._config

    def layout(self) -> HomeLayout:
        return HomeLayout(self.home)

    def warehouse(self) -> Warehouse:
        from alignment_pipeline.warehouse import Warehouse

        return Warehouse(self.layout().duckdb_path)

    def inbox_dir(self) -> Path:
        # An explicit inbox wins; otherwise the profile's, resolved by its config ({assets}/... included).
        if self.inbox:
            return Path(self.inbox).expanduser().resolve()
        return self.config().prompts.inbox_dir().resolve()

    def backend(self, spec: BackendSpec) -> LLMBackend:
        from alignment_pipeline.llm import make_backend

        return make_backend(spec, models_dir=self.layout().models)

    def options(self) -> dict[str, str | None]:
        """The constructor's arguments, e.g. to build the Dagster resource from this."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}


__all__ = ["Pipeline"]
