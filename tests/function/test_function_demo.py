"""`ropewatch demo`: real architecture, real handler, one CVAT response + log record, then validate-job."""

from __future__ import annotations

import json
from collections import Counter

from ropewatch_validator.cli.demo import DEMO_BOXES
from ropewatch_validator.cli.main import main
from ropewatch_validator.ops.history import open_store


def test_demo_command_prints_response_and_record_and_keeps_reports(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CVAT_ACCESS_TOKEN", raising=False)
    assert main(["demo", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    startup, out_rest = out.split("# init_context log:\n", 1)[1].split("# Nuclio function on", 1)
    assert json.loads(startup.splitlines()[0])["untrained"] is True
    head, rest = out_rest.split("# log record:\n", 1)
    assert "# HTTP 200 application/json, X-Request-Id demo-request-1" in head
    items = json.loads(head[head.index("[") :])
    assert [i["points"] for i in items] == DEMO_BOXES
    assert all(i["attributes"][0]["name"] == "safety_rope_use" for i in items)
    record = json.loads(rest.splitlines()[0])
    assert record["image"]["width"] == 1280 and record["image"]["height"] == 720
    assert record["model_version"] == "demo-untrained" and len(record["detections"]) == len(DEMO_BOXES)
    # the cascade request: one person decided by the (untrained, demo-banded) filter, one by the expert
    cascade = json.loads(out.split("# so one person is decided by the filter")[1].splitlines()[1])
    assert cascade["filter_version"] == "filter-demo-untrained"
    assert sorted(d["stage"] for d in cascade["detections"]) == ["expert", "filter"]
    assert "decided by the filter" in out and "decided by the expert" in out
    report = tmp_path / "reports" / "job-101" / "report.html"
    assert report.is_file() and f"# open {report}" in out
    # the dashboard's history: four runs of each model version, every run of the newer one alerted
    assert f"ropewatch serve --db {tmp_path / 'history.sqlite'}" in out and "http://127.0.0.1:8765/" in out
    store = open_store(str(tmp_path / "history.sqlite"))
    runs = store.trend()
    assert Counter(r["model_version"] for r in runs) == {"rope-2026.10": 4, "rope-2026.11": 4}
    states = Counter((d["target"], d["status"]) for d in store.delivery_status())
    assert states == {("ops-chat", "sent"): 4, ("pager", "pending"): 4}  # pager: refused, kept in the outbox
    # what the demo says matches what happened: 4 alerts, the batch's exit codes, the summaries it prints
    assert "# 4 alert(s) fired: 4 delivered, 4 left in the outbox" in out
    assert "# validate-job exited 0 (validated, no rule fired)" in out
    assert "# validate-job exited 1 (validated, an alert rule fired)" in out
    assert "which stopped with the demo" in out
    newer = out.split("--model-version rope-2026.11")[1]
    assert all(f"job {j}" in newer for j in (105, 106, 107, 108))  # the newer version's summaries
    assert (tmp_path / "rope-demo.pt").is_file() and (tmp_path / "frame.jpg").is_file()
