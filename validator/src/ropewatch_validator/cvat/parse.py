"""CVAT's JSON bodies to plain tables: labels, frames (``data/meta``), shapes and tracks.

Tracks are expanded to per-frame boxes as CVAT's quality control reads them (rectangles interpolated
between keyframes, ``outside`` respected). Everything here is pure: bodies in, tables and counts out.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

SHAPE_COLUMNS = [
    "shape_id",
    "track_id",
    "frame",
    "label",
    "type",
    "x1",
    "y1",
    "x2",
    "y2",
    "source",
    "rotation",
    "score",
    "occluded",
]


@dataclass
class Label:
    name: str
    attributes: dict[int, tuple[str, list[str]]]  # spec_id -> (name, values)
    defaults: dict[str, str] = field(default_factory=dict)  # attribute name -> default_value


def parse_labels(bodies: list[dict]) -> dict[int, Label]:
    labels = {}
    for body in bodies:
        attrs = {a["id"]: (a["name"], list(a.get("values") or [])) for a in body.get("attributes", [])}
        defaults = {a["name"]: a.get("default_value") for a in body.get("attributes", [])}
        labels[body["id"]] = Label(body["name"], attrs, defaults)
        for sub in body.get("sublabels") or []:
            labels.setdefault(sub["id"], Label(sub["name"], {}))
    return labels


def frame_step(meta: dict) -> int:
    """The ``step=N`` of a task's ``frame_filter`` (1 without one)."""
    for part in (meta.get("frame_filter") or "").split(","):
        if part.strip().startswith("step="):
            return int(part.strip()[5:])
    return 1


def frames_table(job: dict, meta: dict) -> pd.DataFrame:
    """The frames really in the job, as CVAT 2.23's ``data/meta`` describes them.

    Job and annotation frame numbers are task frames (``job.start_frame..stop_frame``); ``meta`` gives
    data frames (``start_frame``, GT ``included_frames``:
    data = meta.start_frame + (frame - job start) * step).
    A video lists one ``frames`` entry for the whole file; an image job one per frame of its range, frames
    outside a GT job's set named ``placeholder.jpg``: only ``included_frames`` are kept. ``real_frame`` is
    the frame itself; for a honeypot the caller sets the validation frame it shows (:func:`fetch_honeypots`).
    """
    start, stop = int(job["start_frame"]), int(job["stop_frame"])
    frames = np.arange(start, stop + 1, dtype=np.int64)
    data = int(meta.get("start_frame") or 0) + (frames - start) * frame_step(meta)
    entries = meta.get("frames") or []
    if job.get("data_original_chunk_type") == "video" or (len(entries) == 1 and len(frames) > 1):
        first = entries[0] if entries else {}
        names = [f"frame_{d:06d}" for d in data]  # CVAT's dataset item names for video frames
        widths, heights = [first.get("width") or 0] * len(frames), [first.get("height") or 0] * len(frames)
    elif len(entries) != len(frames):
        raise ValueError(f"data/meta lists {len(entries)} frames for frames {start}-{stop}")
    else:
        names = [e.get("name") for e in entries]
        widths, heights = [e.get("width") or 0 for e in entries], [e.get("height") or 0 for e in entries]
    table = pd.DataFrame(
        {
            "frame": frames,
            "data_frame": data,
            "real_frame": frames,
            "name": names,
            "width": widths,
            "height": heights,
            "deleted": np.isin(frames, meta.get("deleted_frames") or []),
        }
    )
    included = meta.get("included_frames")
    keep = np.isin(data, included) if included is not None else np.ones(len(frames), bool)
    return table[keep].reset_index(drop=True)


def _attr_values(attributes: list[dict], label: Label | None) -> dict[str, Any]:
    if label is None:
        return {}
    known = label.attributes
    return {known[a["spec_id"]][0]: a.get("value") for a in attributes if a.get("spec_id") in known}


def attribute_drops(annotations: dict, labels: dict[int, Label]) -> Counter:
    """Attribute entries no value can be read from, by reason: ``attribute_without_spec_id`` and
    ``unknown_spec_id`` (not an attribute of the shape's label); ``unknown_label_id`` counts shapes
    and tracks whose label the job does not list."""
    drops: Counter = Counter()
    for item in [*annotations.get("shapes", []), *annotations.get("tracks", [])]:
        label = labels.get(item.get("label_id"))
        if label is None:
            drops["unknown_label_id"] += 1
            continue
        entries = list(item.get("attributes") or [])
        entries += [a for key in item.get("shapes") or [] for a in key.get("attributes") or []]
        for a in entries:
            if "spec_id" not in a:
                drops["attribute_without_spec_id"] += 1
            elif a["spec_id"] not in label.attributes:
                drops["unknown_spec_id"] += 1
    return +drops


def keyframes_in_job(annotations: dict, start: int, stop: int) -> tuple[dict, Counter]:
    """``annotations`` without track keyframes outside the job's frames (CVAT splits tracks per job,
    so only a broken server sends them; expanding one at frame -10**20 would never end), counted."""
    tracks, outside = [], 0
    for track in annotations.get("tracks", []):
        keys = [k for k in track.get("shapes", []) if start <= int(k["frame"]) <= stop]
        outside += len(track.get("shapes", [])) - len(keys)
        tracks.append({**track, "shapes": keys})
    return {**annotations, "tracks": tracks}, +Counter({"track_keyframe_outside_job": outside})


def drop_off_job(shapes: pd.DataFrame, frames: pd.DataFrame, job: dict) -> tuple[pd.DataFrame, Counter]:
    """Keep shapes on the job's live frames; count the others (CVAT accepts, returns and then ignores
    shapes outside the job's frame range; shapes on deleted frames are not evaluated either)."""
    start = int(job.get("start_frame", 0))
    stop = int(job.get("stop_frame", frames["frame"].max() if len(frames) else 0))
    in_range = shapes["frame"].between(start, stop)
    live = shapes["frame"].isin(frames.loc[~frames["deleted"], "frame"])
    skipped = Counter(
        {"outside_job_frames": int((~in_range).sum()), "on_deleted_frames": int((in_range & ~live).sum())}
    )
    return shapes[live].reset_index(drop=True), +skipped


def _angle_diff(right: float, left: float) -> float:
    """CVAT's ``find_angle_diff`` (dataset_manager/annotation.py), odd branch for -180 included."""
    diff = ((right - left + 180) % 360) - 180
    if abs(diff) >= 180:
        diff = 360 - abs(diff) * -1 if diff > 0 else 1
    return diff


def expand_track(track: dict, stop_frame: int) -> list[dict]:
    """Per-frame rectangles of a track as CVAT's quality control reads them.

    ``TrackManager.get_interpolated_shapes`` (CVAT 2.23, dataset_manager/annotation.py): from every
    visible keyframe, points and rotation are interpolated toward the next keyframe, **even an outside
    one**; keyframes on deleted frames still take part (only their own frame is dropped, by the caller);
    after the last keyframe, if visible, it is repeated up to ``stop_frame``. Outside rows are left out.
    Rows: ``frame``, ``points`` (4), ``rotation``, ``occluded``, ``attributes`` (the keyframe's, which
    CVAT's read fills from the previous keyframe).
    """
    out: list[dict] = []
    prev: dict | None = None
    end = stop_frame + 1
    for key in sorted(track["shapes"], key=lambda s: s["frame"]):
        if prev is not None and not prev.get("outside"):
            p0, p1 = np.asarray(prev["points"][:4], float), np.asarray(key["points"][:4], float)
            r0, r1 = float(prev.get("rotation") or 0.0), float(key.get("rotation") or 0.0)
            span = key["frame"] - prev["frame"]
            for frame in range(prev["frame"] + 1, min(key["frame"], end)):
                t = (frame - prev["frame"]) / span
                out.append(
                    {
                        **prev,
                        "frame": frame,
                        "points": list(p0 + (p1 - p0) * t),
                        "rotation": (r0 + _angle_diff(r1, r0) * t + 360) % 360,
                    }
                )
        if key["frame"] >= end:
            break
        out.append(key)
        prev = key
    if prev is not None and not prev.get("outside"):
        out += [{**prev, "frame": frame} for frame in range(prev["frame"] + 1, end)]
    first = track.get("frame", 0)
    return [
        {
            "frame": s["frame"],
            "points": [float(v) for v in s["points"][:4]],
            "rotation": float(s.get("rotation") or 0.0),
            "occluded": bool(s.get("occluded")),
            "attributes": s.get("attributes", []),
        }
        for s in out
        if first <= s["frame"] and not s.get("outside")
    ]


def _row(
    shape_id: int | None,
    track_id: int | None,
    frame: int,
    label: str,
    points: Sequence[float],
    rotation: float | None,
    source: str,
    score: float,
    occluded: bool | None,
    values: dict[str, Any],
) -> dict:
    x1, y1, x2, y2 = points[:4]
    return {
        "shape_id": shape_id,
        "track_id": track_id,
        "frame": frame,
        "label": label,
        "type": "rectangle",
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "rotation": float(rotation or 0.0),
        "source": source,
        "score": score,
        "occluded": bool(occluded),
        **values,
    }


def shapes_table(
    annotations: dict, labels: dict[int, Label], stop_frame: int
) -> tuple[pd.DataFrame, Counter, bool]:
    """Rectangles of shapes and expanded tracks as one table; other types counted in ``skipped``."""
    skipped: Counter = Counter()
    rows: list[dict] = []
    has_score = False

    def name(label_id: int) -> str:
        return labels[label_id].name if label_id in labels else str(label_id)

    for shape in annotations.get("shapes", []):
        if shape.get("type") != "rectangle":
            skipped[shape.get("type", "unknown")] += 1
            continue
        has_score |= "score" in shape
        values = _attr_values(shape.get("attributes", []), labels.get(shape["label_id"]))
        rows.append(
            _row(
                shape.get("id"),
                None,
                shape["frame"],
                name(shape["label_id"]),
                shape["points"],
                shape.get("rotation"),
                shape.get("source", "manual"),
                shape.get("score", np.nan),
                shape.get("occluded"),
                values,
            )
        )
    for track in annotations.get("tracks", []):
        kinds = {s.get("type") for s in track.get("shapes", [])}
        if kinds != {"rectangle"}:
            skipped[f"track:{'/'.join(sorted(k or 'unknown' for k in kinds)) or 'empty'}"] += 1
            continue
        label = labels.get(track["label_id"])
        fixed = _attr_values(track.get("attributes", []), label)
        for row in expand_track(track, stop_frame):
            values = {**fixed, **_attr_values(row["attributes"], label)}
            rows.append(
                _row(
                    None,
                    track.get("id"),
                    row["frame"],
                    name(track["label_id"]),
                    row["points"],
                    row["rotation"],
                    track.get("source", "manual"),
                    np.nan,
                    row["occluded"],
                    values,
                )
            )
    skipped["tag"] += len(annotations.get("tags", []))
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=SHAPE_COLUMNS)
    table["score"] = table["score"].astype(float)
    table["shape_id"] = table["shape_id"].astype("Int64")
    table["track_id"] = table["track_id"].astype("Int64")
    # one order whatever the server's: CVAT returns shapes in database order, not id order
    table = table.sort_values(["frame", "track_id", "shape_id"], kind="stable", na_position="first")
    return table.reset_index(drop=True), +skipped, has_score


def deleted_digest(meta: dict) -> str:
    """What changes a job's numbers without moving its ``updated_date``: on CVAT 2.23 deleting or
    restoring frames changes neither ``updated_date`` nor ``chunks_updated_date``. "" without deleted
    frames, else the first 16 hex of the sha256 of the sorted ``deleted_frames``."""
    deleted = sorted(meta.get("deleted_frames") or [])
    return hashlib.sha256(json.dumps(deleted).encode()).hexdigest()[:16] if deleted else ""
