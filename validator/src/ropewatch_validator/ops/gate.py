"""The promotion gate's rules, evaluated on a backtest result: is the candidate good enough to replace
the baseline? Pure functions over the typed result; ``app.gate`` reads the files.

A rule is one line, "candidate vs baseline" on one metric::

    flips_per_1000 not significantly worse   # the paired CI of the difference excludes 0 on no bad side
    per_class.wrong.f1 significantly better  # ... excludes 0 on the good side
    per_class.wrong.f1 >= baseline - 0.01    # the candidate's value against the baseline's, with a margin
    flips_per_1000 <= 20                     # the candidate's value against a fixed limit

Metric paths are the backtest's (``evaluation.compare.metric_paths``: ``per_class.<value>.<p|r|f1>``,
``accuracy``, ``ap``, ``flips_per_1000``...), and the alert rules' names for the same figures are
accepted too (``attribute.per_class.wrong.f1``, ``attribute.accuracy``, ``dangerous_flips_per_1000``,
``flips_wrong_to_correct_per_1000``). Each metric knows its good direction (fewer flips is good, higher
F1 is good): a comparison that asks for the bad direction is refused as a mistake in the rule.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any, Literal

from ropewatch_core.decision import CORRECT, WRONG
from ropewatch_core.errors import InputError
from ropewatch_validator.evaluation.compare import (
    BETTER,
    CI_METRICS,
    WORSE,
    good_direction,
    metric_paths,
    verdict,
)
from ropewatch_validator.render.backtest_model import BacktestResult, Pair, paired
from ropewatch_validator.render.card import better_word, fmt, fmt_ci, signed

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
# the alert rules' names (report.json paths, render.model.DERIVED) of figures a backtest holds
ALIASES = {
    "dangerous_flips_per_1000": "flips_per_1000",
    f"flips_{WRONG}_to_{CORRECT}_per_1000": "flips_per_1000",
    "attribute.accuracy": "accuracy",
}
Kind = Literal["not_worse", "better", "vs_baseline", "absolute"]
SIGNIFICANCE: dict[str, Kind] = {"not significantly worse": "not_worse", "significantly better": "better"}
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_RULE = re.compile(
    rf"^(?P<metric>[\w.]+)\s+(?:(?P<sig>{'|'.join(SIGNIFICANCE)})"
    rf"|(?P<op><=|>=|<|>)\s*(?:(?P<base>baseline)(?:\s*(?P<sign>[+-])\s*(?P<margin>{_NUMBER}))?|(?P<limit>{_NUMBER})))$"
)


@dataclass(frozen=True)
class GateRule:
    text: str
    metric: str  # the backtest's metric path
    kind: Kind
    op: str | None = None
    value: float = 0.0  # the margin added to the baseline, or the fixed limit


def metric_path(name: str) -> str:
    """The backtest metric path of ``name`` (an alert rule's name is mapped); InputError if unknown."""
    path = ALIASES.get(name, name)
    if path.startswith("attribute.per_class."):
        path = path.removeprefix("attribute.")
    if path not in metric_paths():
        known = ", ".join([*metric_paths(), *ALIASES])
        raise InputError(f"unknown metric {name!r} (known: {known})")
    return path


def parse_rule(text: str) -> GateRule:
    """One rule line; InputError naming the rule when it is malformed or asks for the bad direction."""
    norm = " ".join(text.replace("≥", ">=").replace("≤", "<=").replace("−", "-").split())
    m = _RULE.match(norm)
    if m is None:
        raise InputError(
            f"rule {text!r}: not understood (write 'METRIC not significantly worse', 'METRIC significantly "
            "better', 'METRIC >= baseline - 0.01' or 'METRIC <= 20')"
        )
    path, good = metric_path(m["metric"]), good_direction(metric_path(m["metric"]))
    if m["sig"]:
        if path not in CI_METRICS:
            raise InputError(
                f"rule {text!r}: no paired CI for {path} (there is one for {', '.join(CI_METRICS)})"
            )
        return GateRule(norm, path, "not_worse" if SIGNIFICANCE[m["sig"]] == "not_worse" else "better")
    asks = 1 if m["op"] in (">", ">=") else -1
    if good is not None and asks != good:
        raise InputError(
            f"rule {text!r}: asks for a {'higher' if asks > 0 else 'lower'} {path}, but {better_word(path)}"
        )
    if m["base"]:
        margin = float(m["margin"] or 0.0) * (-1 if m["sign"] == "-" else 1)
        return GateRule(norm, path, "vs_baseline", m["op"], margin)
    return GateRule(norm, path, "absolute", m["op"], float(m["limit"]))


@dataclass(frozen=True)
class Outcome:
    rule: GateRule
    passed: bool
    candidate: float | None
    baseline: float | None
    estimate: float | None  # candidate − baseline
    low: float | None  # its paired 95% CI, where the backtest has one
    high: float | None
    why: str

    def line(self) -> str:
        """PASS/FAIL, the values, the difference with its CI, and why."""
        p = self.rule.metric
        ci = fmt_ci(p, self.low, self.high)
        delta = f"Δ {signed(p, self.estimate)}{' ' + ci if ci else ''}"
        values = f"candidate {fmt(p, self.candidate)}, baseline {fmt(p, self.baseline)}, {delta}"
        return f"{'PASS' if self.passed else 'FAIL'} {self.rule.text}: {values} ({self.why})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.text,
            "metric": self.rule.metric,
            "passed": self.passed,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "difference": {"estimate": self.estimate, "low": self.low, "high": self.high},
            "why": self.why,
        }


@dataclass(frozen=True)
class GateResult:
    candidate: str
    baseline: str
    outcomes: tuple[Outcome, ...]
    pair: Pair | None

    @property
    def promote(self) -> bool:
        return all(o.passed for o in self.outcomes)

    def summary(self) -> str:
        failed = [o for o in self.outcomes if not o.passed]
        n = len(self.outcomes)
        if not failed:
            return f"promote {self.candidate} over {self.baseline}: {n} of {n} rules pass"
        return f"reject {self.candidate} (baseline {self.baseline}): {len(failed)} of {n} rules fail"

    def as_dict(self) -> dict[str, Any]:
        pair = self.pair
        return {
            "candidate": self.candidate,
            "baseline": self.baseline,
            "decision": "promote" if self.promote else "reject",
            "mcnemar_p": pair.mcnemar_p if pair else None,
            "n_discordant": pair.n_discordant.model_dump() if pair else None,
            "rules": [o.as_dict() for o in self.outcomes],
        }


def _judge(
    rule: GateRule, cand: float | None, base: float | None, low: float | None, high: float | None
) -> tuple[bool, str]:
    word = better_word(rule.metric)
    if rule.kind in ("not_worse", "better"):
        v = verdict(rule.metric, low, high)
        if low is None or high is None:
            return False, "no CI of the difference: cannot show it"
        if rule.kind == "not_worse":
            return v != WORSE, f"{v}; {word}"
        return v == BETTER, f"{v}; {word}"
    if cand is None:
        return False, "the candidate's value is undefined"
    if rule.kind == "absolute":
        return OPS[rule.op or ">="](cand, rule.value), f"limit {fmt(rule.metric, rule.value)}; {word}"
    if base is None:
        return False, "the baseline's value is undefined"
    limit = base + rule.value
    return OPS[rule.op or ">="](cand, limit), f"limit {fmt(rule.metric, limit)}; {word}"


def judge(result: BacktestResult, candidate: str, baseline: str, rules: list[GateRule]) -> GateResult:
    """Every rule on the candidate against the baseline (paired: the same persons of one backtest)."""
    if candidate == baseline:
        raise InputError(f"the candidate and the baseline are both {candidate!r}; name two versions")
    vc, vb = result.version(candidate), result.version(baseline)
    pair = paired(result, baseline, candidate)
    if pair is None and any(r.kind in ("not_worse", "better") for r in rules):
        raise InputError(
            f"the backtest holds no comparison of {baseline} and {candidate} and no per-person scores to "
            "compute one; significance rules need it"
        )
    outcomes = []
    for rule in rules:
        cand, base = vc.metrics.metric(rule.metric), vb.metrics.metric(rule.metric)
        d = pair.diffs.get(rule.metric) if pair else None
        est = d.estimate if d else (None if cand is None or base is None else cand - base)
        low, high = (d.low, d.high) if d else (None, None)
        passed, why = _judge(rule, cand, base, low, high)
        if pair is not None and rule.kind in ("not_worse", "better"):
            why += f"; McNemar p {pair.mcnemar_p:.3g}"
        outcomes.append(Outcome(rule, passed, cand, base, est, low, high, why))
    return GateResult(candidate, baseline, tuple(outcomes), pair)
