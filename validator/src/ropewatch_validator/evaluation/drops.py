"""What a validation leaves out, counted by reason, so nothing is dropped without a word.

Reasons (keys of report.json ``counts.dropped``; the CVAT side is counted in ``cvat.parse``):
``unknown_source`` (a box of the label under test whose ``source`` is neither a prediction nor a
reference source), ``prediction_without_value`` / ``reference_without_value`` (no attribute value),
``prediction_unknown_value`` / ``reference_unknown_value`` (a value outside the vocabulary). Such
boxes still count for detection; matched, they are left out of the attribute confusion matrix.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from ropewatch_validator.evaluation.match import Settings


def unknown_sources(shapes: pd.DataFrame, settings: Settings) -> Counter:
    known = (*settings.pred_sources, *settings.ref_sources)
    person = shapes["label"] == settings.label
    return +Counter({"unknown_source": int((person & ~shapes["source"].isin(known)).sum())})


def value_drops(table: pd.DataFrame, settings: Settings, role: str) -> Counter:
    """Boxes of ``table`` (predictions or references) without a usable attribute value."""
    values = table[settings.attribute] if settings.attribute in table else pd.Series([None] * len(table))
    missing = values.isna()
    unknown = ~missing & ~values.isin(settings.values)
    return +Counter(
        {f"{role}_without_value": int(missing.sum()), f"{role}_unknown_value": int(unknown.sum())}
    )
