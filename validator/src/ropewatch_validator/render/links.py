"""Deep links into CVAT's web UI, built from the routes of CVAT's own UI code.

``cvat-ui/src/components/cvat-app.tsx`` routes ``/tasks/:tid/jobs/:jid`` to the annotation page,
``/tasks/:id`` and ``/projects/:id`` to the task and project pages. The annotation page
(``containers/annotation-page/annotation-page.tsx``) reads ``frame`` (the task-absolute frame number
it opens at) and, when both ``type`` and ``serverID`` are given, starts with the object filter
``serverID == ID and type == TYPE`` (``tag``, ``shape`` or ``track``): the "copy object URL" item
of an object's menu builds exactly ``?frame=N&type=T&serverID=ID``. The UI is served from the same
origin as the API, so the links start with the report's ``source.host``.

Only an ``http``/``https`` host with a host name is ever linked: a stored host is data from a report
or the history, and ``javascript:``, ``data:`` or a bare word in an ``href`` would be a script or a
broken link on every page that shows it. Any other host gives no link (None), like a missing task.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit, urlunsplit

LINKED_SCHEMES = ("http", "https")


def _base(host: str) -> str | None:
    """The host URL without a trailing slash and without any user:password part (never shown);
    None for anything but an http(s) URL with a host name."""
    try:
        parts = urlsplit(str(host).strip().rstrip("/"))
        hostname = parts.hostname
    except ValueError:  # an unbalanced "[" in the host part
        return None
    if parts.scheme.lower() not in LINKED_SCHEMES or not hostname:
        return None
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, "", ""))


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
    base = _base(host)
    if task is None or base is None:
        return None
    query: dict[str, int | str] = {}
    if frame is not None:
        query["frame"] = int(frame)
    if track_id is not None:  # a track's serverID is the track id; its per-frame boxes have none
        query.update(type="track", serverID=int(track_id))
    elif shape_id is not None:
        query.update(type="shape", serverID=int(shape_id))
    tail = f"?{urlencode(query)}" if query else ""
    return f"{base}/tasks/{int(task)}/jobs/{int(job)}{tail}"


def task_url(host: str, task: int | None) -> str | None:
    base = _base(host)
    return None if task is None or base is None else f"{base}/tasks/{int(task)}"


def project_url(host: str, project: int | None) -> str | None:
    base = _base(host)
    return None if project is None or base is None else f"{base}/projects/{int(project)}"
