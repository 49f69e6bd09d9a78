"""The typed blocks of report.json that start at the bottom layer: the base block and the settings.

``Part`` is every fixed block of report.json (the ``render.model.Report`` and its parts, the
``trace.model.Trace`` section); :class:`Settings` is what is compared and how, the one settings model
that matching reads and report.json's ``settings`` holds.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ropewatch_core.spec import ATTRIBUTE, ATTRIBUTE_VALUES, PERSON_LABEL


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


Ratio = Annotated[float | None, BeforeValidator(_finite)]


class Part(BaseModel):
    """A fixed block of report.json: unknown keys are an error, so the schema says exactly what is there;
    assignments are validated too, so a NaN set later still becomes None."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Settings(Part):
    """What is compared and how; every field lands in report.json's ``settings``. ``values`` is the
    attribute's vocabulary: its first value is the unsafe one, whose flips to another value are the
    dangerous errors (``flip_<values[0]>_to_<v>``)."""

    model_config = ConfigDict(frozen=True)

    iou: float = 0.5
    low_iou: float = 0.1  # below this an unmatched prediction is background, above it a localization error
    label: str = PERSON_LABEL
    attribute: str = ATTRIBUTE
    values: tuple[str, ...] = Field(default=ATTRIBUTE_VALUES, min_length=2)
    pred_sources: tuple[str, ...] = ("auto", "semi-auto")
    ref_sources: tuple[str, ...] = ("manual", "file", "consensus")
    edited_sources: tuple[str, ...] = ("semi-auto",)
    matching: Literal["count", "cvat"] = "count"  # see evaluation.match
    top_k: int = 10
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def unsafe(self) -> str:
        return self.values[0]
