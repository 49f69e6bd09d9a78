"""Alert rules over report.json, and webhook delivery through the history store's outbox.

Rules come from a small TOML (or YAML) file::

    baseline_runs = 5                       # baseline = median of a model version's first N runs
    report_url = "https://reports.example/{job}/report.html"   # optional, {host} {job} {task} {project}

    [[rule]]
    name = "wrong-f1-low"
    metric = "attribute.per_class.wrong.f1"  # dotted path into report.json
    op = "<"                                  # <, <=, >, >=
    threshold = 0.8
    min_support = 30                          # the rule stays silent below this support
    fire_on_null = true                       # also fire when the metric is null (no value to judge)

    [[rule]]
    name = "flips-per-1000"
    metric = "dangerous_flips_per_1000"     # derived: unsafe value predicted as another, per 1,000 persons
    op = ">"
    threshold = 20

    [[rule]]
    name = "wrong-recall-drop"
    metric = "attribute.per_class.wrong.recall"
    drop_vs_baseline = 0.05                   # fires when baseline - value > 0.05
                                              # (rise_vs_baseline: when value - baseline > it)

    [[webhook]]
    name = "ops"                              # names the target in logs and the outbox (never the URL)
    url = "https://hooks.example/ropewatch"
    format = "generic"                        # generic | slack | teams
    secret_env = "ROPEWATCH_WEBHOOK_SECRET"   # or secret_file = "/run/secrets/webhook"
    timeout_s = 10
    retries = 3
    backoff_s = 0.5

``metric`` is a dotted path to a number of the typed report (checked when the file is read) or a
derived figure: ``dangerous_flips``, ``dangerous_flips_per_1000``, ``flips_<ref>_to_<pred>_per_1000``.

Support of a rule: ``support = "<path>"`` if given, else the class's ``support`` for
``attribute.per_class.<class>.*`` metrics, else ``counts.references``.

Delivery is at least once: a fired alert is queued per webhook in the same transaction as its run
and leaves the outbox only after a 2xx; receivers drop repeats by the ``Idempotency-Key`` header
(derived from host, job, job_updated_date and rule, so one job state never yields two alerts).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import operator
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import structlog
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ropewatch_core.errors import InputError
from ropewatch_validator.ops.history import HistoryStore, JobState, job_state, model_version_of, updated_part
from ropewatch_validator.render.model import Report, check_metric

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, from PyPI (a dependency on 3.10)
    import tomli as tomllib

log = structlog.get_logger("ropewatch.alert")

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
FORMATS = ("generic", "slack", "teams")
SIGNATURE_HEADER = "X-Ropewatch-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRY_STATUSES = (408, 425, 429, 500, 502, 503, 504)


class ConfigError(InputError):
    """The rules file is unusable; the message names the file and the entry."""


@dataclass(frozen=True)
class Rule:
    name: str
    metric: str
    op: str | None = None
    threshold: float | None = None
    drop_vs_baseline: float | None = None
    rise_vs_baseline: float | None = None
    min_support: int = 0
    support: str | None = None
    fire_on_null: bool = False  # fire when the metric is null (e.g. no matched pair has a value)

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


@dataclass(frozen=True)
class Webhook:
    name: str
    url: str
    format: str = "generic"
    secret_env: str | None = None
    secret_file: str | None = None
    timeout_s: float = 10.0
    retries: int = 3
    backoff_s: float = 0.5

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


@dataclass
class DeliveryResult:
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def _build(cls: type[Rule] | type[Webhook], entry: Any, where: str) -> Any:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a table of settings")
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )
    try:
        return cls(**entry)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_rule(rule: Rule, where: str) -> None:
    kinds = [
        rule.op is not None or rule.threshold is not None,
        rule.drop_vs_baseline is not None,
        rule.rise_vs_baseline is not None,
    ]
    if sum(kinds) != 1:
        raise ConfigError(f"{where}: give exactly one of op+threshold, drop_vs_baseline, rise_vs_baseline")
    if not isinstance(rule.fire_on_null, bool):
        raise ConfigError(f"{where}: fire_on_null must be true or false")
    if kinds[0] and (rule.op not in OPS or not isinstance(rule.threshold, (int, float))):
        raise ConfigError(f"{where}: op must be one of {', '.join(OPS)} with a numeric threshold")


def parse_config(data: Mapping[str, Any], origin: str = "rules") -> AlertConfig:
    """Validate a parsed rules document; every problem names the file and the entry."""
    unknown = sorted(set(data) - {"rule", "webhook", "baseline_runs", "report_url"})
    if unknown:
        raise ConfigError(f"{origin}: unknown top-level key(s) {', '.join(unknown)}")
    rules = tuple(_build(Rule, e, f"{origin}: rule #{i + 1}") for i, e in enumerate(data.get("rule", [])))
    for i, rule in enumerate(rules):
        _check_rule(rule, f"{origin}: rule #{i + 1} ({rule.name})")
        for path in (rule.metric, rule.support_path()):
            problem = check_metric(path)
            if problem:
                raise ConfigError(f"{origin}: rule #{i + 1} ({rule.name}): {problem}")
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ConfigError(f"{origin}: rule names must be unique (they key the alerts)")
    hooks = tuple(
        _build(Webhook, e, f"{origin}: webhook #{i + 1}") for i, e in enumerate(data.get("webhook", []))
    )
    for hook in hooks:
        if hook.format not in FORMATS:
            raise ConfigError(f"{origin}: webhook {hook.name!r}: format must be one of {', '.join(FORMATS)}")
    if len({h.name for h in hooks}) != len(hooks):
        raise ConfigError(f"{origin}: webhook names must be unique (they key the outbox)")
    return AlertConfig(rules, hooks, int(data.get("baseline_runs", 5)), data.get("report_url"))


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
    except ConfigError:
        raise
    except Exception as exc:  # the parsers' own error types differ; the message is what matters
        raise ConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'toml'}: {exc}") from None
    return parse_config(data, str(path))


def alert_key(state: JobState, rule: str) -> str:
    """Same job state + rule -> same key: the receiver's and our own duplicate filter."""
    raw = f"{state.host}|{state.job_id}|{state.job_updated_date}|{rule}"
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _compare(rule: Rule, value: float, base: float | None) -> tuple[float | None, str] | None:
    """(limit, how) when ``value`` breaks ``rule`` against its threshold or ``base``, else None."""
    if rule.op is not None and rule.threshold is not None:
        return (rule.threshold, rule.op) if OPS[rule.op](value, rule.threshold) else None
    if base is None:
        return None  # no baseline yet for this model version
    if rule.drop_vs_baseline is not None:
        if base - value <= rule.drop_vs_baseline:
            return None
        return (
            base - rule.drop_vs_baseline,
            f"dropped more than {rule.drop_vs_baseline} below baseline {_fmt(base)}: limit",
        )
    if rule.rise_vs_baseline is None or value - base <= rule.rise_vs_baseline:
        return None
    return (
        base + rule.rise_vs_baseline,
        f"rose more than {rule.rise_vs_baseline} above baseline {_fmt(base)}: limit",
    )


def evaluate(
    report: Report, config: AlertConfig, baseline: Mapping[str, float | None]
) -> list[dict[str, Any]]:
    """Alerts (JSON-able payloads) that ``report`` fires; low support never fires, and a null metric
    only fires a rule with ``fire_on_null``."""
    state = job_state(report)
    source = report.source
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
        links = {k: getattr(source, k) for k in ("host", "job", "task", "project")}
        fired.append(
            {
                "key": alert_key(state, rule.name),
                "rule": rule.name,
                "metric": rule.metric,
                "value": value,
                "comparison": how,
                "threshold": limit,
                "baseline": base,
                "support": support,
                "min_support": rule.min_support,
                "host": state.host,
                "job": state.job_id,
                "task": source.task,
                "project": source.project,
                "job_updated_date": updated_part(state.job_updated_date),
                "model_version": model_version_of(report),
                "report_url": config.report_url.format(**links) if config.report_url else None,
                "message": (
                    f"{rule.name}: {rule.metric} = {_fmt(value)} "
                    f"({how}{'' if limit is None else ' ' + _fmt(limit)}) on job {state.job_id}"
                    f" (task {source.task}, model {model_version_of(report)})"
                ),
            }
        )
    return fired


def record_and_queue(
    store: HistoryStore, report: Report, config: AlertConfig, targets: Sequence[str]
) -> tuple[list[dict[str, Any]], bool]:
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


def render_body(alert: Mapping[str, Any], fmt: str) -> bytes:
    """The exact bytes POSTed (and signed) for one alert in one webhook format."""
    facts = [
        ("Rule", alert["rule"]),
        ("Metric", alert["metric"]),
        ("Value", _fmt(alert["value"])),
        ("Threshold", _fmt(alert["threshold"])),
        ("Job", alert["job"]),
        ("Task", alert["task"]),
        ("Model version", alert["model_version"]),
        ("Job updated", alert["job_updated_date"]),
    ]
    url = alert.get("report_url")
    if fmt == "generic":
        body: dict[str, Any] = {"type": "ropewatch.alert", "version": 1, **alert}
    elif fmt == "slack":
        fields = [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in facts]
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": f":rotating_light: {alert['message']}"}},
            {"type": "section", "fields": fields[:10]},
        ]
        if url:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{url}|Open the report>"}})
        body = {"text": alert["message"], "blocks": blocks}
    elif fmt == "teams":
        card: dict[str, Any] = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": [
                {
                    "type": "TextBlock",
                    "text": f"ropewatch alert: {alert['rule']}",
                    "weight": "Bolder",
                    "size": "Medium",
                },
                {"type": "TextBlock", "text": alert["message"], "wrap": True},
                {"type": "FactSet", "facts": [{"title": k, "value": str(v)} for k, v in facts]},
            ],
        }
        if url:
            card["actions"] = [{"type": "Action.OpenUrl", "title": "Open the report", "url": url}]
        body = {
            "type": "message",
            "attachments": [
                {
                    "contentType": "application/vnd.microsoft.card.adaptive",
                    "contentUrl": None,
                    "content": card,
                }
            ],
        }
    else:
        raise ConfigError(f"unknown webhook format {fmt!r}")
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def sign(body: bytes, secret: bytes) -> str:
    """``sha256=<hex>`` HMAC over the exact body, as GitHub-style receivers verify it."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def webhook_session(hook: Webhook) -> requests.Session:
    """A keep-alive session whose adapter retries timeouts, connection errors, 429 and 5xx with
    exponential backoff (honouring ``Retry-After``); POST is retried because receivers drop repeats
    by the idempotency key."""
    retry = Retry(
        total=hook.retries,
        backoff_factor=hook.backoff_s,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"POST"}),
        raise_on_status=False,
        raise_on_redirect=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def failure_reason(exc: requests.RequestException, retries: int) -> str:
    """Why a POST failed, by exception type only: ``str(exc)`` embeds the URL, and Slack/Teams URLs
    carry a token."""
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, urllib3.exceptions.MaxRetryError):
        return f"gave up after {retries} retries: {type(cause.reason).__name__}"
    return f"request failed: {type(exc).__name__}"


class Notifier:
    """Sends the store's outbox to the configured webhooks, one ``requests`` session per webhook."""

    def __init__(self, webhooks: Sequence[Webhook]):
        self.webhooks = {h.name: h for h in webhooks}
        self.sessions = {h.name: webhook_session(h) for h in webhooks}

    @property
    def targets(self) -> list[str]:
        return list(self.webhooks)

    def post(self, hook: Webhook, alert: Mapping[str, Any]) -> str | None:
        """POST one alert with retries and backoff; None on a 2xx, else a reason without the URL."""
        body = render_body(alert, hook.format)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "ropewatch",
            IDEMPOTENCY_HEADER: alert["key"],
        }
        try:
            secret = hook.secret()
        except ConfigError as exc:
            return str(exc)
        if secret:
            headers[SIGNATURE_HEADER] = sign(body, secret)
        try:
            resp = self.sessions[hook.name].post(
                hook.url, data=body, headers=headers, timeout=(hook.timeout_s, hook.timeout_s)
            )
        except requests.RequestException as exc:
            return failure_reason(exc, hook.retries)
        return None if 200 <= resp.status_code < 300 else f"HTTP {resp.status_code}"

    def flush(self, store: HistoryStore) -> DeliveryResult:
        """Try every pending delivery once (with its retries); undelivered ones stay pending."""
        result = DeliveryResult()
        for item in store.pending():
            hook = self.webhooks.get(item.target)
            error: str | None
            if hook is None:
                error = f"webhook {item.target!r} is no longer configured"
            else:
                error = self.post(hook, item.payload)
            store.mark_delivery(item.alert_key, item.target, error)
            fields = {
                "target": item.target,
                "rule": item.payload.get("rule"),
                "job": item.payload.get("job"),
                "key": item.alert_key,
            }
            if error is None:
                result.sent += 1
                log.info("alert_delivered", **fields)
            else:
                result.failed += 1
                result.errors.append(f"{item.target}: {error}")
                log.warning("alert_undelivered", error=error, attempts=item.attempts + 1, **fields)
        return result
