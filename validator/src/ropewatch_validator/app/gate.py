"""`ropewatch gate`: the promotion gate a pipeline runs before a hot-swap (0 promote, 1 reject, 2 error).

The rules (``--rule``, repeatable, and ``--rules FILE``: one rule a line, ``#`` comments) are parsed
all before anything is judged, so a typo in the last rule is an error (2), never a half-judged gate.
The judging itself is ``ops.gate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ropewatch_core.errors import InputError
from ropewatch_validator.ops.gate import GateResult, judge, parse_rule
from ropewatch_validator.render.backtest_model import BacktestResult


@dataclass(frozen=True)
class GateRequest:
    backtest: Path
    candidate: str
    baseline: str
    rules: tuple[str, ...] = ()
    rules_file: Path | None = None


def read_rules(path: Path) -> list[str]:
    """The rule lines of a rules file: blank lines and ``#`` comments (whole or trailing) skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read rules file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def run_gate(req: GateRequest) -> GateResult:
    texts = [*req.rules, *(read_rules(req.rules_file) if req.rules_file else [])]
    if not texts:
        raise InputError("no rule to judge by: give --rule '...' (repeatable) or --rules FILE")
    rules = [parse_rule(t) for t in texts]
    return judge(BacktestResult.load(req.backtest), req.candidate, req.baseline, rules)
