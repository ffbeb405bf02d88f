"""The base of every config section."""

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are refused: a misspelt setting (`learning_rat`) is an error naming it, never ignored."""

    model_config = ConfigDict(extra="forbid")
