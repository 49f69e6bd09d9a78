"""The typed alert: what a rule fired on one run, stored as the outbox payload and POSTed as is."""

from __future__ import annotations

import operator
from collections.abc import Callable
from enum import Enum

from pydantic import BaseModel, ConfigDict


class Op(str, Enum):
    """A threshold rule's comparison."""

    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="

    def holds(self, value: float, limit: float) -> bool:
        return _OPS[self](value, limit)


_OPS: dict[Op, Callable[[float, float], bool]] = {
    Op.LT: operator.lt,
    Op.LE: operator.le,
    Op.GT: operator.gt,
    Op.GE: operator.ge,
}


class Format(str, Enum):
    """The body a webhook gets: ropewatch's own JSON, a Slack message, a Teams Adaptive Card."""

    GENERIC = "generic"
    SLACK = "slack"
    TEAMS = "teams"


class Alert(BaseModel):
    """One fired rule on one job state. ``key`` is the idempotency key (host, job, job state, rule);
    ``baseline_label`` says what ``baseline`` is (the reference version, or the version's own earlier
    runs), ``baseline_ci`` its 95% interval where one was computed."""

    model_config = ConfigDict(frozen=True)

    key: str
    rule: str
    metric: str
    value: float | None
    comparison: str
    threshold: float | None
    baseline: float | None = None
    baseline_label: str | None = None
    baseline_ci: tuple[float, float] | None = None
    value_ci: tuple[float, float] | None = None
    support: float | None
    min_support: int
    host: str
    job: int
    task: int | None
    project: int | None
    job_updated_date: str
    model_version: str
    report_url: str | None
    message: str
