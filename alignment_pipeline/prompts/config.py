from __future__ import annotations

from pathlib import Path

from alignment_pipeline.paths import assets_dir
from alignment_pipeline.strict import StrictModel


class PromptsConfig(StrictModel):
    inbox: str | None = None  # default: assets/prompts/ of the project
    max_chars: int = 2000
    extensions: tuple[str, ...] = (".jsonl", ".csv", ".txt")

    def inbox_dir(self) -> Path:
        """The inbox folder: `inbox` when set, else the project's assets/prompts/."""
        return Path(self.inbox).expanduser() if self.inbox else assets_dir() / "prompts"

    @classmethod
    def profile(cls, name: str) -> PromptsConfig:
        return cls()
