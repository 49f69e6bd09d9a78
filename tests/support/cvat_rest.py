"""A small REST client for tests against a real CVAT: it builds scenarios the way a person, the UI or
cvat-sdk would (tasks from uploaded media, GT jobs, annotations, deleted frames, quality reports).

Plain ``requests`` on CVAT's documented endpoints (CVAT 2.23 - 2.73): the tests must not depend on the
validator's own client to set up what the validator then reads.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

JSON = dict[str, Any]


class CvatRestError(RuntimeError):
    """A request the scenario needed failed (method, path, status, body head)."""


@dataclass
class Ids:
    """Label and attribute-spec ids of a task, by name."""

    labels: dict[str, int]
    specs: dict[str, int]


class CvatRest:
    def __init__(self, url: str, user: str, password: str, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.auth = (user, password)
        self.timeout = timeout

    def request(self, method: str, path: str, expect: Iterable[int] = (200, 201, 202, 204), **kw: Any) -> Any:
        response = self.session.request(method, self.url + path, timeout=self.timeout, **kw)
        if response.status_code not in tuple(expect):
            raise CvatRestError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def wait_request(self, rq_id: str, timeout: float = 300.0) -> JSON:
        """Poll ``/api/requests/{rq_id}`` until the background job is finished."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = self.get(f"/api/requests/{rq_id}")
            if body["status"] == "finished":
                return body
            if body["status"] == "failed":
                raise CvatRestError(f"request {rq_id} failed: {body.get('message')}")
            time.sleep(0.3)
        raise CvatRestError(f"request {rq_id} not finished after {timeout} s")

    def create_task(
        self,
        name: str,
        labels: list[JSON],
        files: Mapping[str, bytes],
        *,
        task_fields: JSON | None = None,
        **data: Any,
    ) -> JSON:
        """Create a task and upload its media as cvat-sdk does (Upload-Start / -Multiple / -Finish).

        ``task_fields`` go to ``POST /api/tasks`` (``segment_size``, ``overlap``); ``data`` is the JSON body
        of the finishing request (``image_quality``, ``start_frame``, ``stop_frame``, ``frame_filter``,
        ``sorting_method``, ``validation_params``...)."""
        task = self.request(
            "POST", "/api/tasks", json={"name": name, "labels": labels, **(task_fields or {})}
        )
        url = f"/api/tasks/{task['id']}/data"
        quality = data.setdefault("image_quality", 95)
        self.request("POST", url, headers={"Upload-Start": ""}, expect=(202,))
        multipart = [
            (f"client_files[{i}]", (fname, content)) for i, (fname, content) in enumerate(files.items())
        ]
        self.request(
            "POST",
            url,
            headers={"Upload-Multiple": ""},
            data={"image_quality": str(quality)},
            files=multipart,
            expect=(200,),
        )
        rq = self.request("POST", url, headers={"Upload-Finish": ""}, json=data, expect=(202,))
        self.wait_request(rq["rq_id"])
        return self.get(f"/api/tasks/{task['id']}")

    def jobs(self, task_id: int, job_type: str | None = None) -> list[JSON]:
        """The task's jobs, sorted by type then start frame."""
        query = f"/api/jobs?task_id={task_id}&page_size=100" + (f"&type={job_type}" if job_type else "")
        return sorted(self.get(query)["results"], key=lambda j: (j["type"], j["start_frame"]))

    def ids(self, task_id: int) -> Ids:
        labels = self.get(f"/api/labels?task_id={task_id}&page_size=100")["results"]
        return Ids(
            {lb["name"]: lb["id"] for lb in labels},
            {a["name"]: a["id"] for lb in labels for a in lb["attributes"]},
        )

    def create_gt_job(self, task_id: int, frames: list[int]) -> JSON:
        """A Ground Truth job on these task frames (``frame_selection_method: manual``)."""
        return self.request(
            "POST",
            "/api/jobs",
            json={
                "task_id": task_id,
                "type": "ground_truth",
                "frame_selection_method": "manual",
                "frames": frames,
            },
        )

    def put_annotations(self, job_id: int, shapes: list[JSON] = (), tracks: list[JSON] = ()) -> JSON:
        return self.request(
            "PUT",
            f"/api/jobs/{job_id}/annotations",
            json={"version": 0, "tags": [], "shapes": list(shapes), "tracks": list(tracks)},
        )

    def delete_frames(self, job_id: int, frames: list[int]) -> JSON:
        return self.request("PATCH", f"/api/jobs/{job_id}/data/meta", json={"deleted_frames": frames})

    def finish_gt(self, gt_job_id: int) -> None:
        """Quality reports need the GT job accepted and completed."""
        self.request("PATCH", f"/api/jobs/{gt_job_id}", json={"stage": "acceptance", "state": "completed"})

    def quality_reports(self, task_id: int) -> dict[int, JSON]:
        """Run CVAT's quality control on the task now; report data by annotation job id."""
        rq = self.request("POST", "/api/quality/reports", json={"task_id": task_id}, expect=(202,))
        deadline = time.monotonic() + 300
        while True:
            response = self.session.post(
                f"{self.url}/api/quality/reports?rq_id={rq['rq_id']}", timeout=self.timeout
            )
            if response.status_code == 201:
                break
            if response.status_code != 202 or time.monotonic() > deadline:
                raise CvatRestError(
                    f"quality report of task {task_id}: {response.status_code} {response.text[:300]}"
                )
            time.sleep(0.3)
        reports = self.get(f"/api/quality/reports?task_id={task_id}&page_size=100")["results"]
        return {
            r["job_id"]: self.get(f"/api/quality/reports/{r['id']}/data") for r in reports if r.get("job_id")
        }


def jpeg(width: int, height: int, seed: int) -> bytes:
    """A small distinct JPEG (its bytes differ per seed)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    ImageDraw.Draw(image).text((5, 5), str(seed), fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def mp4(n_frames: int, width: int = 320, height: int = 240) -> bytes:
    """An H.264 clip of ``n_frames`` flat-colour frames, encoded with PyAV."""
    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n_frames):
            rgb = np.full((height, width, 3), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


LABELS = [
    {
        "name": "person",
        "attributes": [
            {
                "name": "safety_rope_use",
                "input_type": "select",
                "mutable": True,
                "default_value": "wrong",
                "values": ["wrong", "correct"],
            }
        ],
    },
    {"name": "car", "attributes": []},
]


def box(
    ids: Ids,
    frame: int,
    points: list[float],
    source: str = "manual",
    value: str | None = None,
    *,
    label: str = "person",
    rotation: float = 0.0,
    **extra: Any,
) -> JSON:
    """A rectangle shape body; ``value`` None sends no attribute (CVAT then reads back the default)."""
    attributes = [] if value is None else [{"spec_id": ids.specs["safety_rope_use"], "value": value}]
    return {
        "type": "rectangle",
        "frame": frame,
        "label_id": ids.labels[label],
        "points": [float(v) for v in points],
        "source": source,
        "attributes": attributes,
        "occluded": False,
        "z_order": 0,
        "rotation": rotation,
        "group": 0,
        **extra,
    }


def keyframe(
    ids: Ids, frame: int, points: list[float], value: str | None = None, *, outside: bool = False
) -> JSON:
    attributes = [] if value is None else [{"spec_id": ids.specs["safety_rope_use"], "value": value}]
    return {
        "type": "rectangle",
        "frame": frame,
        "points": [float(v) for v in points],
        "outside": outside,
        "occluded": False,
        "z_order": 0,
        "rotation": 0.0,
        "attributes": attributes,
    }


def person_counts(report_data: JSON) -> tuple[int, int, int]:
    """(tp, fp, fn) of label ``person`` from a CVAT quality report's confusion matrix
    (rows = job annotations, columns = GT, last row/column = unmatched)."""
    matrix = report_data["comparison_summary"]["annotations"]["confusion_matrix"]
    i = matrix["labels"].index("person")
    rows = matrix["rows"]
    return rows[i][i], rows[i][-1], rows[-1][i]
