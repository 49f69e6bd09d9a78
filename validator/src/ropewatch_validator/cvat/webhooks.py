"""CVAT webhooks ropewatch registers (``ropewatch webhook register``)."""

from __future__ import annotations

from collections.abc import Sequence

from ropewatch_validator.cvat.fetch import Connection, FetchError, get_json


def create_webhook(
    conn: Connection, project_id: int, target_url: str, secret: str, events: Sequence[str] = ("update:job",)
) -> int:
    """A project webhook for ``events``, JSON bodies signed with ``secret``; returns its id."""
    from cvat_sdk.api_client import models

    request = models.WebhookWriteRequest(
        target_url=target_url,
        type=models.WebhookType("project"),
        events=[models.EventsEnum(e) for e in events],
        content_type=models.WebhookContentType("application/json"),
        secret=secret,
        is_active=True,
        enable_ssl=True,  # verify the receiver's certificate when it is https
        project_id=int(project_id),
    )
    body = get_json(
        conn,
        f"webhook of project {project_id}",
        conn.api_client.webhooks_api.create,
        webhook_write_request=request,
    )
    try:
        return int(body["id"])
    except (KeyError, TypeError, ValueError):
        raise FetchError(
            f"webhook of project {project_id} on {conn.host}: CVAT answered without an id"
        ) from None
