"""Write to CVAT what ropewatch learned: review issues (``/api/issues``), found through the same
cvat-sdk connection, deadlines, retries and one-line errors as the reads (``cvat.fetch``).

CVAT 2.23.1 stores an issue on a job at a task-absolute ``frame`` (inside the job's frame range) with a
``position`` (a polygon, flat ``[x1, y1, x2, y2, ...]``) and a first comment (``message``); ``PATCH``
with ``resolved`` closes or reopens it. Every failure is a ``cvat.fetch.FetchError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ropewatch_validator.cvat.fetch import Connection, FetchError, get_json, list_all


def job_body(conn: Connection, job_id: int) -> dict[str, Any]:
    """The job as CVAT lists it; a deleted job is the FetchError ``job N on HOST: not found``."""
    body = get_json(conn, f"job {job_id}", conn.api_client.jobs_api.retrieve, job_id)
    if not isinstance(body, dict):
        raise FetchError(f"job {job_id} on {conn.host}: unexpected answer from CVAT")
    return body


def user_id(conn: Connection, who: str) -> int:
    """A CVAT user id from a username (or a number, taken as the id)."""
    if who.isdigit():
        return int(who)
    users = list_all(conn, f"user {who!r}", conn.api_client.users_api.list, username=who)
    found = [u["id"] for u in users if u.get("username") == who]
    if not found:
        raise FetchError(f"--assignee {who!r}: no such user on {conn.host}")
    return int(found[0])


def create_issue(
    conn: Connection, job_id: int, frame: int, position: Sequence[float], message: str, assignee: int | None
) -> int:
    """Open one issue; returns its id."""
    from cvat_sdk.api_client import models

    request = models.IssueWriteRequest(
        frame=int(frame),
        position=[float(v) for v in position],
        job=int(job_id),
        message=message,
        **({"assignee": assignee} if assignee is not None else {}),
    )
    body = get_json(
        conn,
        f"issue on job {job_id} frame {frame}",
        conn.api_client.issues_api.create,
        issue_write_request=request,
    )
    try:
        return int(body["id"])
    except (KeyError, TypeError, ValueError):
        raise FetchError(f"issue on job {job_id} on {conn.host}: CVAT answered without an issue id") from None


def resolve_issue(conn: Connection, issue_id: int) -> None:
    """Mark one issue resolved (``PATCH /api/issues/{id}`` with ``resolved: true``)."""
    from cvat_sdk.api_client import models

    get_json(
        conn,
        f"issue {issue_id}",
        conn.api_client.issues_api.partial_update,
        issue_id,
        patched_issue_write_request=models.PatchedIssueWriteRequest(resolved=True),
    )
