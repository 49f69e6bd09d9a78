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
    baseline = "reference"                    # or "own" (default): which baseline (ops.baselines)
    significance = true                       # only when the run's 95% CI excludes the baseline

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
from ropewatch_validator.evaluation.baseline_stats import Change, Comparisons, Interval, Kind
from ropewatch_validator.ops.alerts import messages
from ropewatch_validator.ops.alerts.model import Alert, Format, Op
from ropewatch_validator.ops.baselines import (
    better_of,
    comparable,
    for_report,
    interval_supported,
    run_interval,
)
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
    baseline: Kind = Kind.OWN  # drop/rise against the version's own earlier runs, or its reference
    significance: StrictBool = False  # drop/rise only when the run's 95% interval excludes the baseline

    @field_validator("baseline", mode="before")
    @classmethod
    def _known_baseline(cls, value: Any) -> Any:
        if value not in {k.value for k in Kind}:
            raise ValueError(f"baseline must be one of {', '.join(k.value for k in Kind)}")
        return value

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
        if self.significance and not self.uses_baseline:
            return "significance applies to drop_vs_baseline / rise_vs_baseline rules"
        if self.significance and not interval_supported(self.metric):
            return (
                f"significance needs a per-run interval, which {self.metric} has none of (flips per 1,000, "
                "per-class precision/recall/f1, accuracy, detection precision/recall have one)"
            )
        if self.uses_baseline and self.baseline is Kind.REFERENCE and not comparable(self.metric):
            return f"baseline = 'reference' needs a metric the history keeps per run, not {self.metric}"
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


def _compare(
    rule: Rule, value: float, base: float | None, ci: Interval | None
) -> tuple[float | None, str] | None:
    """(limit, how) when ``value`` breaks ``rule`` against its threshold or ``base``, else None; with
    ``significance``, a drop (rise) also needs the run's interval ``ci`` wholly below (above) ``base``."""
    if rule.op is not None and rule.threshold is not None:
        return (rule.threshold, rule.op.value) if rule.op.holds(value, rule.threshold) else None
    if base is None:
        return None  # no baseline yet for this model version
    if rule.significance and (ci is None or not ci.excludes(base)):
        return None  # within the run's own uncertainty
    if rule.drop_vs_baseline is not None:
        if base - value <= rule.drop_vs_baseline:
            return None
        how = f"dropped more than {rule.drop_vs_baseline} below baseline {messages.fmt(base)}: limit"
        return base - rule.drop_vs_baseline, how
    if rule.rise_vs_baseline is None or value - base <= rule.rise_vs_baseline:
        return None
    how = f"rose more than {rule.rise_vs_baseline} above baseline {messages.fmt(base)}: limit"
    return base + rule.rise_vs_baseline, how


def described(change: Change | None) -> str | None:
    """A comparison in the words the dashboard uses: ``vs <label>: <value> [<CI>]: worse``."""
    if change is None or change.base is None:
        return None
    base = change.base
    ci = f" [95% CI {messages.fmt(base.ci.low)}–{messages.fmt(base.ci.high)}]" if base.ci else ""
    line = f"vs {change.baseline.label}: {messages.fmt(base.value)}{ci}, {change.verdict}"
    if change.paired is not None:
        p = change.paired
        pci = f" [95% CI {messages.fmt(p.ci.low)}–{messages.fmt(p.ci.high)}]" if p.ci else ""
        line += f"; paired backtest {p.estimate:+.4g}{pci}"
    return line


def fired_alerts(report: Report, config: AlertConfig, comparisons: Comparisons | None = None) -> list[Alert]:
    """Alerts that ``report`` fires against its ``comparisons`` (none: no baseline yet); low support
    never fires, and a null metric only fires a rule with ``fire_on_null``. Every alert names its
    comparison: the rule's baseline, or for a threshold rule the reference version."""
    state = job_state(report)
    source = report.source
    version = model_version_of(report)
    links = {k: getattr(source, k) for k in ("host", "job", "task", "project")}
    fired = []
    for rule in config.rules:
        value = report.metric(rule.metric)
        support = report.metric(rule.support_path())
        ref, own = (
            comparisons.changes(rule.metric, value, better_of(rule.metric)) if comparisons else (None, None)
        )
        change = own if rule.uses_baseline and rule.baseline is Kind.OWN else ref
        base = change.base.value if change is not None and change.base is not None else None
        ci = run_interval(report, rule.metric) if rule.significance else None
        if value is None:
            if not rule.fire_on_null:
                continue
            limit, how = None, "is null and the rule fires on null"
        elif (support or 0) < rule.min_support:
            continue
        else:
            compared = _compare(rule, value, base if rule.uses_baseline else None, ci)
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
                baseline_label=change.baseline.label if change is not None and base is not None else None,
                baseline_ci=_pair(change.base.ci) if change is not None and change.base is not None else None,
                value_ci=_pair(ci),
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
                    rule.name,
                    rule.metric,
                    value,
                    how,
                    limit,
                    state.job_id,
                    source.task,
                    version,
                    described(change),
                ),
            )
        )
    return fired


def _pair(ci: Interval | None) -> tuple[float, float] | None:
    return None if ci is None else (ci.low, ci.high)


def record_and_queue(
    store: HistoryStore, report: Report, config: AlertConfig, targets: Sequence[str]
) -> tuple[list[Alert], bool]:
    """Evaluate a report against its baselines (taken before this run is added: a run is never part
    of its own), then store the run and queue its alerts for every target in one transaction.

    Returns (alerts fired, run newly stored). A job state stored before fires the same alerts,
    but they are not queued again.
    """
    metrics = sorted({r.metric for r in config.rules})
    comparisons = for_report(store, report, metrics, config.baseline_runs) if metrics else None
    fired = fired_alerts(report, config, comparisons)
    _, created = store.record_run(report, fired, targets)
    return fired, created
