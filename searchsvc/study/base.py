"""The base of every study-file model: unknown keys are errors, and specs are frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Strict"]


class Strict(BaseModel):
    """A section of the study file: forbids unknown keys (a misspelt option is an error, never
    silently dropped) and is immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)
