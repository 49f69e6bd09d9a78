"""Real, typed alerts for store tests: the alert of a rule every report breaks (references >= 0)."""

from __future__ import annotations

from ropewatch_validator.ops.alerts.model import Alert
from ropewatch_validator.ops.alerts.rules import AlertConfig, Rule, fired_alerts
from ropewatch_validator.render.model import Report


def always_fires(report: Report, rule: str = "r", message: str | None = None) -> list[Alert]:
    config = AlertConfig(rules=(Rule(name=rule, metric="counts.references", op=">=", threshold=0),))
    alerts = fired_alerts(report, config)
    return [a.model_copy(update={"message": message}) for a in alerts] if message else alerts
