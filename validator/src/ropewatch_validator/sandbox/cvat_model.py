"""How CVAT 2.23 derives what it serves, for the sandbox: jobs of a task, ``data/meta`` of a job,
annotations as read back. Each function names the CVAT code it follows; the real-server tier
(``tests/realcvat``) checks the sandbox against a real CVAT on the same scenario. Stdlib only.

Vocabulary: *task frames* 0..size-1 are what jobs, annotations and ``deleted_frames`` use; *data frames*
are media frames (``data = start_frame + task_frame * step``), used by ``data/meta``'s ``start_frame``,
``stop_frame`` and a Ground Truth job's ``included_frames``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Media:
    """A task's data: images (one name each) or one video; ``start``/``stop``/``step`` in data frames."""

    names: list[str]  # one per task frame for images; [file name] for a video
    width: int
    height: int
    size: int  # task frames
    video: bool = False
    start: int = 0
    step: int = 1
    deleted: list[int] = field(default_factory=list)  # task frames (``data.deleted_frames``)
    placeholders: dict[int, int] = field(default_factory=dict)  # honeypot task frame -> real task frame

    def data_frame(self, frame: int) -> int:
        return self.start + frame * self.step


def video_media(
    name: str,
    n_frames: int,
    width: int,
    height: int,
    *,
    start: int = 0,
    stop: int | None = None,
    step: int = 1,
) -> Media:
    """A video task: ``n_frames`` in the file, frames ``start..stop`` every ``step`` kept."""
    stop = n_frames - 1 if stop is None else stop
    return Media([name], width, height, len(range(start, stop + 1, step)), video=True, start=start, step=step)


def segments(size: int, segment_size: int | None, overlap: int = 0) -> list[tuple[int, int]]:
    """(start, stop) task frames of the annotation jobs (``engine/task.py`` ``_generate_segment_params``)."""
    seg = segment_size or size
    step = seg - overlap
    out, start = [], 0
    while start < size:
        stop = min(start + seg - 1, size - 1)
        out.append((start, stop))
        if stop == size - 1:
            break
        start += step
    return out


def job_meta(
    media: Media,
    job: dict,
    *,
    included: list[int] | None = None,
    chunks_updated: str = "",
    disabled: Sequence[int] = (),
) -> dict:
    """``GET /api/jobs/{id}/data/meta`` (``engine/views.py`` ``JobViewSet.metadata``).

    ``included``: a GT job's task frames; they come back as data frames in ``included_frames`` and
    the other frames of the range as ``placeholder.jpg``. A video lists one entry for the file."""
    start, stop = job["start_frame"], job["stop_frame"]
    if media.video:
        frames = [{"width": media.width, "height": media.height, "name": media.names[0], "related_files": 0}]
    else:
        frames = [
            {
                "width": media.width,
                "height": media.height,
                "related_files": 0,
                "name": media.names[media.placeholders.get(f, f)]
                if included is None or f in included
                else "placeholder.jpg",
            }
            for f in range(start, stop + 1)
        ]
    deleted = set(media.deleted) | (set(disabled) if job.get("type") == "ground_truth" else set())
    return {
        "chunks_updated_date": chunks_updated,
        "chunk_size": 72,
        "size": len(included) if included is not None else stop - start + 1,
        "image_quality": 95,
        "start_frame": media.data_frame(start),
        "stop_frame": media.data_frame(stop),
        "frame_filter": f"step={media.step}" if media.step != 1 else "",
        "frames": frames,
        "deleted_frames": sorted(f for f in deleted if start <= f <= stop),
        "included_frames": None if included is None else [media.data_frame(f) for f in sorted(included)],
    }


def read_annotations(body: dict, labels: list[dict]) -> dict:
    """Annotations as CVAT returns them after storing ``body``: every attribute a shape lacks gets the
    label's default; a track keyframe lacking a mutable attribute gets the previous keyframe's value
    (``dataset_manager/task.py`` ``JobAnnotation._extend_attributes`` / ``_init_tracks_from_db``)."""
    specs = {lb["id"]: lb.get("attributes", []) for lb in labels}
    out = copy.deepcopy(body)

    def fill(attributes: list[dict], defaults: list[dict]) -> list[dict]:
        have = {a.get("spec_id") for a in attributes}
        return attributes + [dict(d) for d in defaults if d["spec_id"] not in have]

    def defaults(label_id: int | None, mutable: bool | None) -> list[dict]:
        return [
            {"spec_id": a["id"], "value": a["default_value"]}
            for a in specs.get(label_id, [])
            if mutable is None or bool(a.get("mutable")) == mutable
        ]

    for shape in out.get("shapes", []):
        shape["attributes"] = fill(shape.get("attributes", []), defaults(shape.get("label_id"), None))
    for track in out.get("tracks", []):
        track["attributes"] = fill(track.get("attributes", []), defaults(track.get("label_id"), False))
        previous = defaults(track.get("label_id"), True)
        for shape in sorted(track.get("shapes", []), key=lambda s: s["frame"]):
            shape["attributes"] = fill(shape.get("attributes", []), previous)
            previous = shape["attributes"]
    return out


def job_layout(media: Media, job: dict) -> dict:
    """``GET /api/jobs/{id}/validation_layout`` of an annotation job: its honeypots and the validation
    frames they show (``engine/serializers.py`` ``JobValidationLayoutReadSerializer``)."""
    frames = [f for f in sorted(media.placeholders) if job["start_frame"] <= f <= job["stop_frame"]]
    if job.get("type") == "ground_truth":
        frames = []
    return {
        "honeypot_count": len(frames),
        "honeypot_frames": frames,
        "honeypot_real_frames": [media.placeholders[f] for f in frames],
    }
