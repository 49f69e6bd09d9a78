"""What happened to every predicted object after the model proposed it, from the joined rows.

States (one per row of :func:`ropewatch_validator.trace.join.match_shapes`):

- ``accepted``: still ``auto`` and its attribute equals the logged prediction;
- ``attribute_corrected``: still ``auto`` (CVAT keeps ``auto`` when only an attribute changes) but
  the value differs from the logged prediction;
- ``geometry_edited``: ``semi-auto``, matched to a logged detection by IoU;
- ``deleted``: logged detection on a joined frame with no shape left in the job;
- ``added``: a reference shape (``manual``/``file``/``consensus``) — a person drew it, no prediction;
- ``unjoined_auto`` / ``unjoined_semi_auto``: a predicted shape whose request or detection was not
  found in the logs; listed, never dropped;
- ``attribute_unmapped``: a still-``auto`` shape of a job where the function's attribute never reached
  CVAT. CVAT's lambda manager drops an attribute the mapping does not name, and CVAT then reads every
  auto shape back with the label's ``default_value``. Declared when every joined ``auto`` shape holds the
  default while at least one logged prediction says otherwise: a mapping failure, not corrections by a
  person, so these shapes stay out of corrections, work saved and recalibration.

Work saved = accepted / (accepted + attribute_corrected + geometry_edited + added): the share of the
objects in the finished job that a person did not have to touch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ropewatch_core.jsonio import plain
from ropewatch_core.spec import ATTRIBUTE, ATTRIBUTE_VALUES
from ropewatch_validator.trace.calibration import confusion
from ropewatch_validator.trace.model import Lifecycle

STATES = (
    "accepted",
    "attribute_corrected",
    "geometry_edited",
    "deleted",
    "added",
    "unjoined_auto",
    "unjoined_semi_auto",
    "attribute_unmapped",
)
# One line per state, for the readers of a report (see the module doc).
STATE_MEANINGS = {
    "accepted": "still auto, attribute as the model predicted it",
    "attribute_corrected": "still auto, a person changed the attribute",
    "geometry_edited": "semi-auto: a person moved or resized the box",
    "deleted": "predicted, then deleted by a person",
    "added": "drawn by a person, no prediction",
    "unjoined_auto": "auto shape whose request or detection is not in the logs",
    "unjoined_semi_auto": "semi-auto shape whose request or detection is not in the logs",
    "attribute_unmapped": "the function's attribute never reached CVAT (mapping): not a correction",
}
PREDICTED = ("accepted", "attribute_corrected", "geometry_edited")


def mapping_failed(state: np.ndarray, final: np.ndarray, logged: np.ndarray, default: str | None) -> bool:
    """Every joined ``auto`` shape holds the label default, and the logs disagree at least once."""
    auto = np.isin(state, ("accepted", "attribute_corrected"))
    return bool(
        default is not None
        and auto.any()
        and (final[auto] == default).all()
        and (logged[auto] != default).any()
    )


def classify(rows: pd.DataFrame, attribute: str = ATTRIBUTE, default: str | None = None) -> pd.Series:
    """The lifecycle state of every joined row; ``default`` is the label's default value of ``attribute``."""
    is_shape = (
        rows["is_shape"].fillna(False).to_numpy(bool) if "is_shape" in rows else np.zeros(len(rows), bool)
    )
    has_det = rows["det_index"].notna().to_numpy() if "det_index" in rows else np.zeros(len(rows), bool)
    source = rows["source"].fillna("").to_numpy() if "source" in rows else np.full(len(rows), "")
    same = (
        rows[attribute].astype(object).to_numpy() == rows["logged_value"].astype(object).to_numpy()
        if "logged_value" in rows and attribute in rows
        else np.zeros(len(rows), bool)
    )
    auto, semi = source == "auto", source == "semi-auto"
    state = np.select(
        [
            ~is_shape & has_det,
            is_shape & auto & has_det & same,
            is_shape & auto & has_det,
            is_shape & semi & has_det,
            is_shape & auto,
            is_shape & semi,
            is_shape,
        ],
        [
            "deleted",
            "accepted",
            "attribute_corrected",
            "geometry_edited",
            "unjoined_auto",
            "unjoined_semi_auto",
            "added",
        ],
        default="other",
    )
    if "logged_value" in rows and attribute in rows:
        final = rows[attribute].astype(object).to_numpy()
        if mapping_failed(state, final, rows["logged_value"].astype(object).to_numpy(), default):
            state = np.where(np.isin(state, ("accepted", "attribute_corrected")), "attribute_unmapped", state)
    return pd.Series(state, index=rows.index, name="state")


def summarize(
    rows: pd.DataFrame, attribute: str = ATTRIBUTE, values: tuple[str, str] = ATTRIBUTE_VALUES
) -> Lifecycle:
    """Counts per state, work saved, and the attribute confusion against the ORIGINAL predictions.

    ``rows`` carry their ``state`` column (:func:`classify`), computed once by the caller; ``values``
    is the vocabulary, the unsafe value first (the function's ``wrong``), then its ``correct``."""
    state = rows["state"]
    counts = {s: int((state == s).sum()) for s in STATES}
    final_objects = (
        counts["accepted"] + counts["attribute_corrected"] + counts["geometry_edited"] + counts["added"]
    )
    pred = rows[state.isin(PREDICTED)]
    valid = pred[attribute].isin(values) & pred["logged_value"].isin(values)
    pred = pred[valid]
    truth = (pred[attribute] == values[1]).to_numpy(int)
    original = (pred["logged_value"] == values[1]).to_numpy(int)
    unjoined = rows[state.isin(("unjoined_auto", "unjoined_semi_auto"))]
    return Lifecycle.model_validate(
        plain(
            {
                "counts": counts,
                "attribute_mapping": "failed" if counts["attribute_unmapped"] else "ok",
                "final_objects": final_objects,
                "work_saved_share": counts["accepted"] / final_objects if final_objects else None,
                "original_confusion": {
                    "labels": list(values),
                    "rows": "final value in the job",
                    "columns": "model's original (logged) prediction",
                    "matrix": confusion(truth, original).tolist(),
                    "unusable_values": int((~valid).sum()),
                },
                "unjoined_shapes": [
                    {"frame": int(f), "shape_id": None if pd.isna(s) else int(s), "source": src}
                    for f, s, src in unjoined[["frame", "shape_id", "source"]].itertuples(index=False)
                ],
            }
        )
    )


def scored(
    rows: pd.DataFrame, attribute: str = ATTRIBUTE, values: tuple[str, str] = ATTRIBUTE_VALUES
) -> pd.DataFrame:
    """Predicted objects with a final value: logit, p_correct and y (1 = ``values[1]``, the function's
    ``correct``) for calibration.

    ``rows`` carry their ``state`` column, as for :func:`summarize`."""
    pred = rows[rows["state"].isin(PREDICTED) & rows[attribute].isin(values)]
    return pd.DataFrame(
        {
            "logit": pred["logit"].astype(float).to_numpy(),
            "p_correct": pred["p_correct"].astype(float).to_numpy(),
            "y": (pred[attribute] == values[1]).to_numpy(int),
            "thr": pred["thr"].astype(float).to_numpy(),
            "temperature": pred["temperature"].astype(float).to_numpy(),
        }
    )
