"""`ropewatch gate`: promote a candidate version over the baseline only if every rule passes.

One line per rule (PASS/FAIL, candidate and baseline values, the difference with its paired CI), then
the decision; ``--json`` prints the same as one JSON object. Exit codes: 0 promote, 1 reject, 2 error.
See docs/card-and-gate.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("gate", help="promotion gate on a backtest: exit 0 promote, 1 reject, 2 error")
    p.add_argument("backtest", type=Path, metavar="BACKTEST.json")
    p.add_argument("--candidate", required=True, help="the version that would be deployed")
    p.add_argument("--baseline", required=True, help="the version it would replace")
    p.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="RULE",
        help="e.g. 'flips_per_1000 not significantly worse', 'per_class.wrong.f1 >= baseline - 0.01'",
    )
    p.add_argument("--rules", type=Path, metavar="FILE", help="more rules, one a line (# comments)")
    p.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ropewatch_core.errors import EXIT_NO, EXIT_OK
    from ropewatch_core.jsonio import dumps
    from ropewatch_validator.app.gate import GateRequest, run_gate

    req = GateRequest(args.backtest, args.candidate, args.baseline, tuple(args.rule), args.rules)
    result = run_gate(req)
    if args.json:
        print(dumps(result.as_dict()))
    else:
        for outcome in result.outcomes:
            print(outcome.line())
        print(result.summary())
    return EXIT_OK if result.promote else EXIT_NO
