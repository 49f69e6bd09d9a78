"""What an alert says: the one-line text (chat, logs, the dashboard) and the exact bytes each webhook
format gets (ropewatch's JSON, Slack blocks, a Teams Adaptive Card)."""

from __future__ import annotations

import json
from typing import Any

from ropewatch_validator.ops.alerts.model import Alert, Format


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def text(
    rule: str,
    metric: str,
    value: float | None,
    how: str,
    limit: float | None,
    job: int,
    task: int | None,
    model_version: str,
    compared: str | None = None,
) -> str:
    """The one line a person reads; ``compared`` is the labelled comparison with the baseline (the
    dashboard's wording), added when there is one."""
    line = (
        f"{rule}: {metric} = {fmt(value)} ({how}{'' if limit is None else ' ' + fmt(limit)}) on job {job}"
        f" (task {task}, model {model_version})"
    )
    return f"{line}; {compared}" if compared else line


def _facts(alert: Alert) -> list[tuple[str, Any]]:
    facts: list[tuple[str, Any]] = [
        ("Rule", alert.rule),
        ("Metric", alert.metric),
        ("Value", fmt(alert.value)),
        ("Threshold", fmt(alert.threshold)),
        ("Job", alert.job),
        ("Task", alert.task),
        ("Model version", alert.model_version),
        ("Job updated", alert.job_updated_date),
    ]
    if alert.baseline_label:
        facts.append(("Compared with", f"{alert.baseline_label}: {fmt(alert.baseline)}"))
    return facts


def _slack(alert: Alert) -> dict[str, Any]:
    fields = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in _facts(alert)]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f":rotating_light: {alert.message}"}},
        {"type": "section", "fields": fields[:10]},  # Slack's limit per section
    ]
    if alert.report_url:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"<{alert.report_url}|Open the report>"}}
        )
    return {"text": alert.message, "blocks": blocks}


def _teams(alert: Alert) -> dict[str, Any]:
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": f"ropewatch alert: {alert.rule}",
                "weight": "Bolder",
                "size": "Medium",
            },
            {"type": "TextBlock", "text": alert.message, "wrap": True},
            {"type": "FactSet", "facts": [{"title": k, "value": str(v)} for k, v in _facts(alert)]},
        ],
    }
    if alert.report_url:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open the report", "url": alert.report_url}]
    attachment = {
        "contentType": "application/vnd.microsoft.card.adaptive",
        "contentUrl": None,
        "content": card,
    }
    return {"type": "message", "attachments": [attachment]}


def render_body(alert: Alert, form: Format) -> bytes:
    """The exact bytes POSTed (and signed) for one alert in one webhook format."""
    if form is Format.SLACK:
        body = _slack(alert)
    elif form is Format.TEAMS:
        body = _teams(alert)
    else:
        body = {"type": "ropewatch.alert", "version": 1, **alert.model_dump(mode="json")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
