"""backtest.html: the side-by-side page of a backtest (versions, pairs, detectors), from backtest.json.

A minimal page in the report's style until the model card (``ropewatch card``) renders backtests; it
shows what backtest.json holds and nothing it does not.
"""

from __future__ import annotations

from ropewatch_validator.evaluation.compare import good_direction
from ropewatch_validator.render.backtest_model import BacktestResult
from ropewatch_validator.render.html import render

METRICS = (
    ("ap", "AP"),
    ("per_class.correct.f1", "F1 correct"),
    ("per_class.wrong.f1", "F1 wrong"),
    ("accuracy", "accuracy"),
    ("flips_per_1000", "flips / 1000"),
)


def page(result: BacktestResult) -> str:
    """The HTML page; differences are coloured by each metric's good direction (fewer flips is better)."""
    return render(
        "backtest.html",
        result=result,
        metrics=METRICS,
        direction={path: good_direction(path) for path, _ in METRICS},
        nav=False,
    )
