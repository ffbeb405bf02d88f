"""The base of every config section."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

_NUMBERS = (int, float)


def _leaves(annotation: Any) -> list[Any]:
    """The plain types a field's annotation admits at its top level (Optional/Union/Annotated unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _leaves(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [leaf for arg in typing.get_args(annotation) for leaf in _leaves(arg)]
    if origin is typing.Literal:
        return [type(value) for value in typing.get_args(annotation)]
    return [annotation]


def _element_types(annotation: Any) -> list[Any]:
    """The item types of list/tuple/set/dict-value annotations among the field's leaves."""
    items = []
    for leaf in _leaves(annotation):
        origin = typing.get_origin(leaf)
        args = [a for a in typing.get_args(leaf) if a is not Ellipsis]
        if origin in (list, tuple, set, frozenset):
            items += args
        elif origin is dict and len(args) == 2:
            items.append(args[1])
    return items


def _bool_refused(annotation: Any) -> bool:
    """A number is wanted and a boolean is not: YAML's `true` must not turn into 1 or 1.0."""
    leaves = _leaves(annotation)
    return bool(leaves) and bool not in leaves and Any not in leaves and any(leaf in _NUMBERS for leaf in leaves)


class StrictModel(BaseModel):
    """Unknown keys are refused: a misspelt setting (`learning_rat`) is an error naming it, never ignored.
    Numbers must be finite (no `.inf` or `.nan`) and of the declared type: a boolean is not a number here,
    though pydantic's lax mode would read `true` as 1 or 1.0."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is None:
            return value
        if isinstance(value, bool) and _bool_refused(field.annotation):
            raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
        if isinstance(value, (list, tuple, set, dict)):
            items = value.values() if isinstance(value, dict) else value
            wanted = _element_types(field.annotation)
            if any(isinstance(item, bool) for item in items) and wanted and all(_bool_refused(w) for w in wanted):
                raise ValueError("expected numbers, got a boolean among them")
        return value
