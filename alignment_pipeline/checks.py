"""Data-quality check outcomes computed by the domain library; the orchestration layer turns them into
Dagster asset checks."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Literal

Severity = Literal["ERROR", "WARN"]


@dataclass(frozen=True, kw_only=True)
class CheckOutcome:
    """`severity` says how much a failed outcome matters: ERROR (default) is a data problem; WARN flags
    something to look at that the data can live with (the UI shows it as a warning, not an error)."""

    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)
    severity: Severity = "ERROR"
    name: str = ""  # given by the Check that produced it

    def __post_init__(self):
        if self.severity not in ("ERROR", "WARN"):
            raise ValueError(f"severity {self.severity!r} is not ERROR or WARN")


@dataclass(frozen=True)
class Check:
    """A data-quality check of an asset: its name (here only), whether failing it stops downstream work, and the
    function computing it, whose docstring's first paragraph describes it in the UI."""

    name: str
    function: Callable[..., CheckOutcome]
    blocking: bool = False

    @property
    def description(self) -> str:
        doc = inspect.getdoc(self.function)
        if not doc:
            raise ValueError(f"check function {self.function.__qualname__} has no docstring to describe it")
        return " ".join(doc.split("\n\n", 1)[0].split())

    def run(self, **inputs) -> CheckOutcome:
        """Call the function with the inputs its signature names (warehouse, batch, config, ...)."""
        wanted = inspect.signature(self.function).parameters
        outcome = self.function(**{k: v for k, v in inputs.items() if k in wanted})
        return replace(outcome, name=self.name)


def run_checks(checks: Iterable[Check], **inputs) -> list[CheckOutcome]:
    return [check.run(**inputs) for check in checks]
