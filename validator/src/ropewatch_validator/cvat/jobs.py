"""Jobs ropewatch creates in CVAT: a Ground Truth job on chosen frames (``review sample``)."""

from __future__ import annotations

from ropewatch_validator.cvat.fetch import Connection, FetchError, get_json


def create_gt_job(conn: Connection, task_id: int, frames: list[int]) -> int:
    """``POST /api/jobs`` with ``type: ground_truth``, ``frame_selection_method: manual`` and the frames
    (task frame numbers); returns the new job's id. CVAT allows one GT job per task."""
    from cvat_sdk.api_client import models

    request = models.JobWriteRequest(
        type=models.JobType("ground_truth"),
        task_id=int(task_id),
        frame_selection_method=models.FrameSelectionMethod("manual"),
        frames=[int(f) for f in frames],
    )
    body = get_json(
        conn,
        f"Ground Truth job of task {task_id}",
        conn.api_client.jobs_api.create,
        job_write_request=request,
    )
    try:
        return int(body["id"])
    except (KeyError, TypeError, ValueError):
        raise FetchError(
            f"Ground Truth job of task {task_id} on {conn.host}: CVAT answered without a job id"
        ) from None
