"""The scenario calls of ``support.cvat_rest.CvatRest`` applied to the sandbox's state, with CVAT's write
semantics from ``ropewatch_validator.sandbox.cvat_model`` (segments, GT jobs, meta, ids in body order,
deleted frames that leave ``updated_date`` alone). The parity test runs one scenario through both and
compares validate-job's reports: what the sandbox derives must be what the real server answers.

Task and job ids are taken from the real run (``mirror``) so the reports can be compared as they are.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from ropewatch_validator.sandbox import cvat_model
from ropewatch_validator.sandbox.server import CvatState
from ropewatch_validator.sandbox.synthetic import UPDATED, job_body, task_body
from support.cvat_rest import Ids

JSON = dict[str, Any]


class SandboxCvat:
    def __init__(self, state: CvatState, mirror: JSON) -> None:
        """``mirror``: ``task`` id, ``jobs`` (annotation job ids by start frame), ``gt`` id, ``labels`` and
        ``specs`` (name -> id) of the real run."""
        self.state, self.mirror = state, mirror
        self.media: dict[int, cvat_model.Media] = {}
        self.included: dict[int, list[int]] = {}
        self.next_id = {"shape": 1, "track": 1, "track_shape": 1}

    def create_task(
        self,
        name: str,
        labels: list[JSON],
        files: dict[str, bytes],
        *,
        task_fields: JSON | None = None,
        **data: Any,
    ) -> JSON:
        tid = self.mirror["task"]
        width, height = Image.open(io.BytesIO(next(iter(files.values())))).size
        names = sorted(files)
        start, step = int(data.get("start_frame", 0)), 1
        if str(data.get("frame_filter", "")).startswith("step="):
            step = int(data["frame_filter"][5:])
        stop = int(data.get("stop_frame", len(names) - 1))
        kept = names[start : stop + 1 : step]
        media = cvat_model.Media(kept, width, height, len(kept), start=start, step=step)
        self.media[tid] = media
        task = task_body(tid, media.size)
        task["name"] = name
        self.state.tasks[tid] = task
        self.state.labels += [
            {
                "id": self.mirror["labels"][lb["name"]],
                "name": lb["name"],
                "color": "#ff0000",
                "type": "rectangle",
                "sublabels": [],
                "has_parent": False,
                "parent_id": None,
                "project_id": None,
                "task_id": tid,
                "attributes": [
                    {**a, "id": self.mirror["specs"][a["name"]]} for a in lb.get("attributes", [])
                ],
            }
            for lb in labels
        ]
        bounds = cvat_model.segments(media.size, (task_fields or {}).get("segment_size"))
        for jid, (first, last) in zip(self.mirror["jobs"], bounds):
            self._add_job(job_body(jid, tid, last - first + 1, start_frame=first, updated=UPDATED))
        return task

    def _add_job(self, job: JSON) -> None:
        self.state.jobs[job["id"]] = job
        self.state.annotations[job["id"]] = {"version": 0, "tags": [], "shapes": [], "tracks": []}
        self._meta(job["id"])

    def _meta(self, jid: int) -> None:
        job = self.state.jobs[jid]
        self.state.meta[jid] = cvat_model.job_meta(
            self.media[job["task_id"]], job, included=self.included.get(jid), chunks_updated=UPDATED
        )

    def jobs(self, task_id: int, job_type: str | None = None) -> list[JSON]:
        jobs = [
            j for j in self.state.jobs.values() if j["task_id"] == task_id and job_type in (None, j["type"])
        ]
        return sorted(jobs, key=lambda j: (j["type"], j["start_frame"]))

    def ids(self, task_id: int) -> Ids:
        return Ids(dict(self.mirror["labels"]), dict(self.mirror["specs"]))

    def create_gt_job(self, task_id: int, frames: list[int]) -> JSON:
        """A GT job spans the whole task (``JobWriteSerializer.create``: a specific-frames segment)."""
        size = self.media[task_id].size
        job = job_body(self.mirror["gt"], task_id, size, job_type="ground_truth", updated=UPDATED)
        self.included[job["id"]] = sorted(frames)
        self._add_job(job)
        return job

    def put_annotations(self, job_id: int, shapes: list[JSON] = (), tracks: list[JSON] = ()) -> JSON:
        """Stored as sent with ids in body order; the read-back (defaults) is the server's job."""

        def take(kind: str) -> int:
            self.next_id[kind] += 1
            return self.next_id[kind] - 1

        body = {
            "version": 0,
            "tags": [],
            "shapes": [
                {**s, "id": take("shape"), "outside": s.get("outside", False), "elements": []} for s in shapes
            ],
            "tracks": [
                {
                    **t,
                    "id": take("track"),
                    "elements": [],
                    "shapes": [{**k, "id": take("track_shape")} for k in t["shapes"]],
                }
                for t in tracks
            ],
        }
        self.state.annotations[job_id] = body
        return body

    def delete_frames(self, job_id: int, frames: list[int]) -> JSON:
        """Task-wide ``deleted_frames`` (``JobDataMetaWriteSerializer.update``); no ``updated_date`` moves."""
        job = self.state.jobs[job_id]
        media = self.media[job["task_id"]]
        inside = range(job["start_frame"], job["stop_frame"] + 1)
        media.deleted = sorted({f for f in media.deleted if f not in inside} | set(frames))
        for jid, other in self.state.jobs.items():
            if other["task_id"] == job["task_id"]:
                self._meta(jid)
        return self.state.meta[job_id]
