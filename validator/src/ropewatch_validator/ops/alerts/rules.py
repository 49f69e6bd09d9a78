"""Alert rules over report.json: the rules file, and the evaluation of one report against it.

Rules come from a small TOML (or YAML) file::

    baseline_runs = 5                       # own baseline = median of a version's first N earlier runs
    report_url = "https://reports.example/{job}/report.html"   # optional, {host} {job} {task} {project}

    [[rule]]
    name = "wrong-f1-low"
    metric = "attribute.per_class.wrong.f1"  # dotted path into report.json
    op = "<"                                  # <, <=, >, >=
    threshold = 0.8
    min_support = 30                          # the rule stays silent below this support
    fire_on_null = true                       # also fire when the metric is null (no value to judge)

    [[rule]]
    name = "wrong-recall-drop"
    metric = "attribute.per_class.wrong.recall"
    drop_vs_baseline = 0.05                   # fires when baseline - value > 0.05
                                              # (rise_vs_baseline: when value - baseline > it)

``metric`` is a dotted path to a number of the typed report (checked when the file is read) or a
derived figure: ``dangerous_flips``, ``dangerous_flips_per_1000``, ``flips_<ref>_to_<pred>_per_1000``.

Support of a rule: ``support = "<path>"`` if given, else the class's ``support`` for
``attribute.per_class.<class>.*`` metrics, else ``counts.references``.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError, field_validator

from ropewatch_core.errors import InputError
from ropewatch_validator.ops.alerts import messages
from ropewatch_validator.ops.alerts.model import Alert, Format, Op
from ropewatch_validator.ops.history import HistoryStore, JobState, job_state, model_version_of, updated_part
from ropewatch_validator.render.model import Report, check_metric

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, from PyPI (a dependency on 3.10)
    import tomli as tomllib


class ConfigError(InputError):
    """The rules file is unusable; the message names the file and the entry."""


class _Entry(BaseModel):
    """A table of the rules file: unknown keys and wrong types are refused (see ``_build``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class Rule(_Entry):
    name: str
    metric: str
    op: Op | None = None
    threshold: float | None = None
    drop_vs_baseline: float | None = None
    rise_vs_baseline: float | None = None
    min_support: int = 0
    support: str | None = None
    fire_on_null: StrictBool = False  # fire when the metric is null (e.g. no matched pair has a value)

    @field_validator("op", mode="before")
    @classmethod
    def _known_op(cls, value: Any) -> Any:
        if value is not None and value not in {o.value for o in Op}:
            raise ValueError(f"op must be one of {', '.join(o.value for o in Op)} with a numeric threshold")
        return value

    @property
    def uses_baseline(self) -> bool:
        return self.drop_vs_baseline is not None or self.rise_vs_baseline is not None

    def support_path(self) -> str:
        if self.support:
            return self.support
        parts = self.metric.split(".")
        if len(parts) == 4 and parts[:2] == ["attribute", "per_class"]:
            return f"attribute.per_class.{parts[2]}.support"
        return "counts.references"

    def problem(self) -> str | None:
        """What makes the rule unusable, or None."""
        kinds = [self.op is not None or self.threshold is not None, self.drop_vs_baseline is not None]
        kinds.append(self.rise_vs_baseline is not None)
        if sum(kinds) != 1:
            return "give exactly one of op+threshold, drop_vs_baseline, rise_vs_baseline"
        if kinds[0] and (self.op is None or self.threshold is None):
            return f"op must be one of {', '.join(o.value for o in Op)} with a numeric threshold"
        for path in (self.metric, self.support_path()):
            problem = check_metric(path)
            if problem:
                return problem
        return None


class Webhook(_Entry):
    name: str
    url: str
    format: Format = Format.GENERIC
    secret_env: str | None = None
    secret_file: str | None = None
    timeout_s: float = 10.0  # the whole delivery, retries and waits included
    retries: int = 3
    backoff_s: float = 0.5

    @field_validator("format", mode="before")
    @classmethod
    def _known_format(cls, value: Any) -> Any:
        if value not in {f.value for f in Format}:
            raise ValueError(f"format must be one of {', '.join(f.value for f in Format)}")
        return value

    def secret(self) -> bytes | None:
        """Read at send time so a rotated secret file is picked up; never logged."""
        if self.secret_env:
            value = os.environ.get(self.secret_env)
            if not value:
                raise ConfigError(f"webhook {self.name!r}: environment variable {self.secret_env} is not set")
            return value.encode()
        if self.secret_file:
            try:
                return Path(self.secret_file).read_bytes().strip()
            except OSError as exc:
                raise ConfigError(
                    f"webhook {self.name!r}: cannot read secret_file ({exc.strerror})"
                ) from None
        return None


@dataclass(frozen=True)
class AlertConfig:
    rules: tuple[Rule, ...] = ()
    webhooks: tuple[Webhook, ...] = ()
    baseline_runs: int = 5
    report_url: str | None = None

    @property
    def baseline_metrics(self) -> list[str]:
        return sorted({r.metric for r in self.rules if r.uses_baseline})


def _build(cls: type[_Entry], entry: Any, where: str) -> Any:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a table of settings")
    known = set(cls.model_fields)
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    try:
        return cls.model_validate(dict(entry))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}: {field}: {first['msg'].removeprefix('Value error, ')}") from None


def parse_config(data: Mapping[str, Any], origin: str = "rules") -> AlertConfig:
    """Validate a parsed rules document; every problem names the file and the entry."""
    unknown = sorted(set(data) - {"rule", "webhook", "baseline_runs", "report_url"})
    if unknown:
        raise ConfigError(f"{origin}: unknown top-level key(s) {', '.join(unknown)}")
    rules = tuple(_build(Rule, e, f"{origin}: rule #{i + 1}") for i, e in enumerate(data.get("rule", [])))
    for i, rule in enumerate(rules):
        problem = rule.problem()
        if problem:
            raise ConfigError(f"{origin}: rule #{i + 1} ({rule.name}): {problem}")
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ConfigError(f"{origin}: rule names must be unique (they key the alerts)")
    hooks = tuple(
        _build(Webhook, e, f"{origin}: webhook #{i + 1}") for i, e in enumerate(data.get("webhook", []))
    )
    if len({h.name for h in hooks}) != len(hooks):
        raise ConfigError(f"{origin}: webhook names must be unique (they key the outbox)")
    return AlertConfig(
        rules=rules,
        webhooks=hooks,
        baseline_runs=int(data.get("baseline_runs", 5)),
        report_url=data.get("report_url"),
    )


def load_config(path: str | Path) -> AlertConfig:
    """Read rules from TOML (.toml) or YAML (.yaml/.yml)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read rules file ({exc.strerror})") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as exc:  # the parsers' own error types differ; the message is what matters
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'toml'}: {exc}") from None
    return parse_config(data, str(path))


def alert_key(state: JobState, rule: str) -> str:
    """Same job state + rule -> same key: the receiver's and our own duplicate filter."""
    raw = f"{state.host}|{state.job_id}|{state.job_updated_date}|{rule}"
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


def _compare(rule: Rule, value: float, base: float | None) -> tuple[float | None, str] | None:
    """(limit, how) when ``value`` breaks ``rule`` against its threshold or ``base``, else None."""
    if rule.op is not None and rule.threshold is not None:
        return (rule.threshold, rule.op.value) if rule.op.holds(value, rule.threshold) else None
    if base is None:
        return None  # no baseline yet for this model version
    if rule.drop_vs_baseline is not None:
        if base - value <= rule.drop_vs_baseline:
            return None
        how = f"dropped more than {rule.drop_vs_baseline} below baseline {messages.fmt(base)}: limit"
        return base - rule.drop_vs_baseline, how
    if rule.rise_vs_baseline is None or value - base <= rule.rise_vs_baseline:
        return None
    how = f"rose more than {rule.rise_vs_baseline} above baseline {messages.fmt(base)}: limit"
    return base + rule.rise_vs_baseline, how


def evaluate(report: Report, config: AlertConfig, baseline: Mapping[str, float | None]) -> list[Alert]:
    """Alerts that ``report`` fires; low support never fires, and a null metric only fires a rule
    with ``fire_on_null``."""
    state = job_state(report)
    source = report.source
    version = model_version_of(report)
    links = {k: getattr(source, k) for k in ("host", "job", "task", "project")}
    fired = []
    for rule in config.rules:
        value = report.metric(rule.metric)
        support = report.metric(rule.support_path())
        base = baseline.get(rule.metric) if rule.uses_baseline else None
        if value is None:
            if not rule.fire_on_null:
                continue
            limit, how = None, "is null and the rule fires on null"
        elif (support or 0) < rule.min_support:
            continue
        else:
            compared = _compare(rule, value, base)
            if compared is None:
                continue
            limit, how = compared
        fired.append(
            Alert(
                key=alert_key(state, rule.name),
                rule=rule.name,
                metric=rule.metric,
                value=value,
                comparison=how,
                threshold=limit,
                baseline=base,
                support=support,
                min_support=rule.min_support,
                host=state.host,
                job=state.job_id,
                task=source.task,
                project=source.project,
                job_updated_date=updated_part(state.job_updated_date),
                model_version=version,
                report_url=config.report_url.format(**links) if config.report_url else None,
                message=messages.text(
                    rule.name, rule.metric, value, how, limit, state.job_id, source.task, version
                ),
            )
        )
    return fired


def record_and_queue(
    store: HistoryStore, report: Report, config: AlertConfig, targets: Sequence[str]
) -> tuple[list[Alert], bool]:
    """Evaluate a report against its model version's baseline (taken before this run is added),
    then store the run and queue its alerts for every target in one transaction.

    Returns (alerts fired, run newly stored). A job state stored before fires the same alerts,
    but they are not queued again.
    """
    metrics = config.baseline_metrics
    baseline = store.baseline(model_version_of(report), metrics, config.baseline_runs) if metrics else {}
    fired = evaluate(report, config, baseline)
    _, created = store.record_run(report, fired, targets)
    return fired, created
