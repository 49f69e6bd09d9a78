"""Deep links into CVAT's web UI, built from the routes of CVAT's own UI code.

``cvat-ui/src/components/cvat-app.tsx`` routes ``/tasks/:tid/jobs/:jid`` to the annotation page,
``/tasks/:id`` and ``/projects/:id`` to the task and project pages. The annotation page
(``containers/annotation-page/annotation-page.tsx``) reads ``frame`` (the task-absolute frame number
it opens at) and, when both ``type`` and ``serverID`` are given, starts with the object filter
``serverID == ID and type == TYPE`` (``tag``, ``shape`` or ``track``): the "copy object URL" item
of an object's menu builds exactly ``?frame=N&type=T&serverID=ID``. The UI is served from the same
origin as the API, so the links start with the report's ``source.host``.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit


def _base(host: str) -> str:
    """The host URL without a trailing slash and without any user:password part (never shown)."""
    parts = urlsplit(str(host).rstrip("/"))
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def job_url(
    host: str,
    task: int | None,
    job: int,
    frame: int | None = None,
    *,
    shape_id: int | None = None,
    track_id: int | None = None,
) -> str | None:
    """The annotation view of ``job`` (at ``frame``, filtered to one object when its id is known);
    None without a task id, which the route needs."""
    if task is None:
        return None
    query: dict[str, int | str] = {}
    if frame is not None:
        query["frame"] = int(frame)
    if track_id is not None:  # a track's serverID is the track id; its per-frame boxes have none
        query.update(type="track", serverID=int(track_id))
    elif shape_id is not None:
        query.update(type="shape", serverID=int(shape_id))
    tail = f"?{urlencode(query)}" if query else ""
    return f"{_base(host)}/tasks/{int(task)}/jobs/{int(job)}{tail}"


def task_url(host: str, task: int | None) -> str | None:
    return None if task is None else f"{_base(host)}/tasks/{int(task)}"


def project_url(host: str, project: int | None) -> str | None:
    return None if project is None else f"{_base(host)}/projects/{int(project)}"
