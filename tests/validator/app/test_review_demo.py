"""`ropewatch demo`'s review step: the dry run lists, for a sandbox job, one issue per default
disagreement of its report.json (counted independently from the report's objects), at most --max 5."""

from __future__ import annotations

import json

from ropewatch_validator.cli.demo import run_review_demo, run_validator_demo


def test_demo_review_step_is_a_dry_run_of_the_reports_disagreements(tmp_path, capsys):
    assert run_validator_demo(tmp_path) == 0
    capsys.readouterr()
    assert run_review_demo(tmp_path) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "reports" / "job-105" / "report.json").read_text())
    cols = report["objects"]["columns"]
    rows = [dict(zip(cols, r)) for r in report["objects"]["rows"]]
    flips = sum(r["error"] == "flip_wrong_to_correct" for r in rows)
    missed = sum(
        r["role"] == "reference" and r["error"] == "missed" and r["safety_rope_use"] == "wrong" for r in rows
    )
    assert flips == report["errors"]["flip_wrong_to_correct"] and flips + missed > 5
    assert out.count("would open ") == 1 + 5  # five lines and the summary
    left = flips + missed - 5
    assert f"job 105: would open 5, failed 0, would resolve 0, already open 0, left by --max {left}" in out
