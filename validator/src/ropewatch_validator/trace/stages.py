"""The cascade per stage, from the trace: who decided (fast filter or expert), how often the final
answer kept their decision, how many frames skipped the expert, and shadow-mode agreement.

``rows`` are the joined objects of ``trace.join.match_shapes`` with their lifecycle ``state``; only
predicted objects whose final value is known count for accuracy (the same set as calibration).
``detections`` are all logged detections of the job's frames (``trace.logs``), for the frame skip
share and the shadow answers. Records written without a fast filter have no ``p_filter``: then there is
no cascade to report and the block is None.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ropewatch_core.jsonio import plain
from ropewatch_validator.evaluation.metrics import ratio
from ropewatch_validator.trace.calibration import CLASSES
from ropewatch_validator.trace.lifecycle import PREDICTED
from ropewatch_validator.trace.model import Stages


def stage_summary(rows: pd.DataFrame, detections: pd.DataFrame, attribute: str) -> Stages | None:
    if "p_filter" not in detections or not detections["p_filter"].notna().any():
        return None
    final = rows[rows["state"].isin(PREDICTED) & rows[attribute].isin(CLASSES)]
    per_stage = {}
    for stage in ("filter", "expert"):
        mine = final[final["stage"] == stage]
        kept = int((mine["logged_value"] == mine[attribute]).sum())
        per_stage[stage] = {"n": int(len(mine)), "kept": kept, "accuracy": ratio(kept, len(mine))}
    expert_pass = detections.groupby("request_id")["stage"].agg(lambda s: bool((s == "expert").any()))
    shadow = detections[detections["shadow_value"].notna()]
    agree = int((shadow["shadow_value"] == shadow[attribute]).sum())
    shadowed = final[final["shadow_value"].notna()]
    return Stages.model_validate(
        plain(
            {
                "requests": int(len(expert_pass)),
                "requests_skipping_expert": int((~expert_pass).sum()),
                "frame_skip_share": ratio(int((~expert_pass).sum()), len(expert_pass)),
                "persons_by_filter_share": ratio(
                    int((detections["stage"] == "filter").sum()), len(detections)
                ),
                "stages": per_stage,
                "shadow": {
                    "n": int(len(shadow)),
                    "agreement_with_filter": ratio(agree, len(shadow)),
                    "n_with_final": int(len(shadowed)),
                    "expert_accuracy": ratio(
                        int((shadowed["shadow_value"] == shadowed[attribute]).sum()), len(shadowed)
                    ),
                    "filter_accuracy": ratio(
                        int((shadowed["logged_value"] == shadowed[attribute]).sum()), len(shadowed)
                    ),
                },
                "p_filter_mean": float(np.nanmean(detections["p_filter"].to_numpy(float))),
            }
        )
    )
