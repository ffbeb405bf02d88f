"""Data-quality check outcomes computed by the domain library; the orchestration layer turns them into
Dagster asset checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["ERROR", "WARN"]


@dataclass(frozen=True)
class CheckOutcome:
    """`severity` says how much a failed outcome matters: ERROR (default) is a data problem; WARN flags
    something to look at that the data can live with (the UI shows it as a warning, not an error)."""

    name: str
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)
    severity: Severity = "ERROR"

    def __post_init__(self):
        if self.severity not in ("ERROR", "WARN"):
            raise ValueError(f"severity {self.severity!r} is not ERROR or WARN")
