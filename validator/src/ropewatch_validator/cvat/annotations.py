"""A job's annotations as CVAT stores them, and attribute-only writes back (``ropewatch annotate fill``).

``PATCH /api/jobs/{id}/annotations?action=update`` replaces each shape it is given whole, so a shape
is sent back exactly as it was read with only its attribute list changed: geometry, z-order,
``occluded`` and ``source`` stay. CVAT 2.23.1 makes a shape sent without ``source`` a ``manual`` one
(its serializer's default; tested in tests/realcvat/test_realcvat_fill.py), which is why ``source``
is always sent.
"""

from __future__ import annotations

from typing import Any

from ropewatch_validator.cvat.fetch import Connection, JobData, get_json, job_tables, list_all


def job_with_annotations(conn: Connection, job_id: int) -> tuple[JobData, dict[str, Any]]:
    """The job's tables (as ``fetch.fetch_job``) and its raw annotations body, from one read."""
    api = conn.api_client
    job = get_json(conn, f"job {job_id}", api.jobs_api.retrieve, job_id)
    labels = list_all(conn, f"labels of job {job_id}", api.labels_api.list, job_id=job_id)
    meta = get_json(conn, f"frame meta of job {job_id}", api.jobs_api.retrieve_data_meta, job_id)
    annotations = get_json(conn, f"annotations of job {job_id}", api.jobs_api.retrieve_annotations, job_id)
    return job_tables(conn.host, job_id, job, labels, meta, annotations), annotations


def update_shapes(conn: Connection, job_id: int, shapes: list[dict[str, Any]]) -> None:
    """Write these shapes (with their ids) back to the job; nothing else of the job is touched."""
    from cvat_sdk.api_client import models

    request = models.PatchedLabeledDataRequest(
        version=0, tags=[], tracks=[], shapes=[models.LabeledShapeRequest(**s) for s in shapes]
    )
    get_json(
        conn,
        f"annotations of job {job_id} ({len(shapes)} shapes)",
        conn.api_client.jobs_api.partial_update_annotations,
        "update",
        job_id,
        patched_labeled_data_request=request,
    )
