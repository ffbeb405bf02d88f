from __future__ import annotations

from pathlib import Path

from pydantic import Field

from alignment_pipeline.paths import assets_dir
from alignment_pipeline.strict import StrictModel


class PromptsConfig(StrictModel):
    """Where questions come from and which are accepted."""

    inbox: str | None = Field(None, description="folder whose prompt files are ingested; null: the project's "
                              "assets/prompts/; a leading {assets} stands for the project's assets folder")
    max_chars: int = Field(2000, ge=1, description="longest accepted prompt, in characters; longer rows are "
                           "rejected with a reason")
    extensions: tuple[str, ...] = Field((".jsonl", ".csv", ".txt"), description="file endings read from the inbox")

    def inbox_dir(self) -> Path:
        """The inbox folder: `inbox` when set, else the project's assets/prompts/. A profile names a folder of the
        project's own assets as `{assets}/...`, which holds wherever the project is installed."""
        if not self.inbox:
            return assets_dir() / "prompts"
        if self.inbox.startswith("{assets}"):
            return assets_dir() / self.inbox.removeprefix("{assets}").lstrip("/")
        return Path(self.inbox).expanduser()
