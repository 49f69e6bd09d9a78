"""``ropewatch annotate fill``: the model's value of the attribute on persons that are already boxed.

CVAT's own "Automatic annotation" makes new boxes; here people (or a detector) drew the boxes and only
``safety_rope_use`` is missing. Each person rectangle of the job whose value is unset (no entry, or the
label's default, which is what CVAT stores for a shape sent without one) -- or every one without
``only_unset`` -- is classified frame by frame and only its attribute is written back (the shape is
sent back as read: geometry and ``source`` stay; see ``cvat.annotations``).

Idempotent and resumable: each frame's values are written to CVAT, then remembered in the history store
(``filled_shapes``); a re-run skips every shape ropewatch filled before unless it was reset to unset
since (a person's later change is never overwritten), so a run cut short goes on where it stopped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ropewatch_core.errors import InputError, RopewatchError
from ropewatch_core.spec import ATTRIBUTE, PERSON_LABEL
from ropewatch_validator.ops.function_client import Classified
from ropewatch_validator.ops.loop_store import Filled

if TYPE_CHECKING:
    from ropewatch_validator.cvat.fetch import Connection
    from ropewatch_validator.ops.history import HistoryStore

Classify = Callable[[bytes, list[list[float]]], Classified]
Progress = Callable[[int, int], None]  # (frames done, frames to do)


@dataclass(frozen=True)
class FillOptions:
    only_unset: bool = False
    label: str = PERSON_LABEL
    attribute: str = ATTRIBUTE
    dry_run: bool = False  # classify nothing, write nothing: count what would be filled


@dataclass(frozen=True)
class FillResult:
    job_id: int
    candidates: int  # person rectangles on live frames
    to_fill: int  # the ones this run classified (or would, with dry_run)
    changed: int  # values written to CVAT
    unchanged: int  # classified as the value they already had
    skipped_set: int  # --only-unset: a value was already set
    skipped_filled: int  # filled by an earlier run
    skipped_tracks: int  # track boxes are not filled (their values live on keyframes)
    values: dict[str, int]  # classified values
    failed: tuple[tuple[int, str], ...]  # (frame, reason)


@dataclass(frozen=True)
class Target:
    shape_id: int
    frame: int
    box: list[float]
    current: str | None


def targets(
    annotations: dict[str, Any],
    labels: dict[int, Any],
    live: set[int],
    done: dict[int, str],
    options: FillOptions,
) -> tuple[list[Target], Counter]:
    """The shapes to classify, and the others counted by why they are left."""
    person = {i for i, lb in labels.items() if lb.name == options.label}
    specs = {
        i: [s for s, (name, _) in labels[i].attributes.items() if name == options.attribute] for i in person
    }
    if person and not any(specs.values()):
        raise InputError(f"label {options.label!r} of this job has no attribute {options.attribute!r}")
    counts: Counter = Counter(
        tracks=sum(1 for t in annotations.get("tracks", []) if t.get("label_id") in person)
    )
    out = []
    for shape in annotations.get("shapes", []):
        if (
            shape.get("label_id") not in person
            or shape.get("type") != "rectangle"
            or shape["frame"] not in live
        ):
            continue
        counts["candidates"] += 1
        label = labels[shape["label_id"]]
        spec = specs[shape["label_id"]][0]
        value = next(
            (a.get("value") for a in shape.get("attributes") or [] if a.get("spec_id") == spec), None
        )
        unset = value in (None, "") or value == label.defaults.get(options.attribute)
        sid = int(shape["id"])
        if sid in done and not (unset and value != done[sid]):
            counts["filled"] += 1
        elif options.only_unset and not unset:
            counts["set"] += 1
        else:
            out.append(Target(sid, int(shape["frame"]), [float(v) for v in shape["points"][:4]], value))
    return out, counts


def with_value(shape: dict[str, Any], spec: int, value: str) -> dict[str, Any]:
    """The shape as read, its attribute ``spec`` set to ``value`` (every other field as it was)."""
    keep = [a for a in shape.get("attributes") or [] if a.get("spec_id") != spec]
    return {**shape, "attributes": [*keep, {"spec_id": spec, "value": value}]}


def fill(
    conn: Connection,
    store: HistoryStore,
    job_id: int,
    classify: Classify | None,
    options: FillOptions,
    progress: Progress | None = None,
) -> FillResult:
    """Classify the job's unset (or all) person boxes and write their values back, frame by frame.

    A frame the model refuses or CVAT does not take is counted in ``failed`` with its reason and the
    other frames go on; nothing of that frame is remembered, so the next run tries it again.
    """
    from ropewatch_validator.cvat import annotations as cvat
    from ropewatch_validator.cvat.frames import cvat_frame_fetcher
    from ropewatch_validator.ops import loop_store

    job, annotations = cvat.job_with_annotations(conn, job_id)
    live = set(job.frames.loc[~job.frames["deleted"], "frame"].astype(int))
    done = loop_store.filled_values(store, conn.host, job_id)
    todo, counts = targets(annotations, job.labels, live, done, options)
    by_id = {int(s["id"]): s for s in annotations.get("shapes", [])}
    frames = sorted({t.frame for t in todo})
    values: Counter = Counter()
    changed = unchanged = 0
    failed: list[tuple[int, str]] = []
    if not options.dry_run:
        if classify is None:
            raise InputError("annotate fill needs a classifier unless dry_run")
        fetch = cvat_frame_fetcher(conn, job_id)
        for n, frame in enumerate(frames):
            boxes = [t for t in todo if t.frame == frame]
            try:
                answer = classify(fetch(frame), [t.box for t in boxes])
                spec, allowed = _spec(job.labels, by_id[boxes[0].shape_id]["label_id"], options.attribute)
                odd = sorted(set(answer.values) - set(allowed))
                if odd:
                    raise InputError(f"the model's value(s) {odd} are not values of {options.attribute}")
                writes = [
                    with_value(by_id[t.shape_id], spec, v)
                    for t, v in zip(boxes, answer.values)
                    if v != t.current
                ]
                if writes:
                    cvat.update_shapes(conn, job_id, writes)
            except RopewatchError as exc:  # this frame only: counted, the others go on
                failed.append((frame, str(exc)))
                if progress:
                    progress(n + 1, len(frames))
                continue
            loop_store.remember_filled(
                store,
                conn.host,
                job_id,
                [
                    Filled(t.shape_id, frame, v, answer.model_version, answer.request_id)
                    for t, v in zip(boxes, answer.values)
                ],
            )
            values.update(answer.values)
            changed += len(writes)
            unchanged += len(boxes) - len(writes)
            if progress:
                progress(n + 1, len(frames))
    return FillResult(
        job_id=job_id,
        candidates=counts["candidates"],
        to_fill=len(todo),
        changed=changed,
        unchanged=unchanged,
        skipped_set=counts["set"],
        skipped_filled=counts["filled"],
        skipped_tracks=counts["tracks"],
        values=dict(values),
        failed=tuple(failed),
    )


def _spec(labels: dict[int, Any], label_id: int, attribute: str) -> tuple[int, list[str]]:
    """The attribute's spec id on this label and the values CVAT allows for it."""
    return next((s, values) for s, (name, values) in labels[label_id].attributes.items() if name == attribute)
