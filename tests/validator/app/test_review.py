"""``ropewatch review`` without a real CVAT: the disagreements of a report and their order, the plan
against the issues already open, a CVAT that refuses issue creation (403), a report of another server,
and migration 0004 (``review_issues``) on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from werkzeug import Response

from ropewatch_validator.app.review import (
    Disagreement,
    default_types,
    disagreements,
    make_plan,
    message,
)
from ropewatch_validator.cli.main import main
from ropewatch_validator.ops.history import alembic_config, metadata, normalize_url, open_store
from ropewatch_validator.ops.loop_store import OpenIssue, open_issues, remember_issue
from ropewatch_validator.render.model import ObjectRows
from support.reports import TRACE_FRAMES, TRACE_SETTINGS

COLUMNS = ["role", "frame", "shape_id", "track_id", "x1", "y1", "x2", "y2", "error", "safety_rope_use"]
ROWS = [
    ["prediction", 2, 12, None, 5.0, 6.0, 25.0, 46.0, "flip_wrong_to_correct", "correct"],
    ["prediction", 0, 11, None, 1.0, 2.0, 11.0, 22.0, "flip_wrong_to_correct", "correct"],
    ["prediction", 0, 13, None, 50.0, 2.0, 60.0, 22.0, "tp", "wrong"],
    ["prediction", 4, None, 7, 0.0, 0.0, 10.0, 10.0, "flip_correct_to_wrong", "wrong"],
    ["reference", 1, 20, None, 30.0, 40.0, 50.0, 80.0, "missed", "wrong"],
    ["reference", 1, 21, None, 70.0, 40.0, 90.0, 80.0, "missed", "correct"],
]


def _report(make_report, host="http://cvat.local:8080", job=5, trace=None):
    report = make_report(job=job, host=host).model_copy(
        update={"objects": ObjectRows(columns=COLUMNS, rows=ROWS)}
    )
    if trace is not None:
        data = json.loads(report.to_json())
        data["trace"] = trace
        report = type(report).model_validate(data)
    return report


def _trace(objects):
    return {
        "logs": {},
        "frames": TRACE_FRAMES,
        "settings": TRACE_SETTINGS,
        "model_versions": ["v9"],
        "lifecycle": {
            "counts": {},
            "final_objects": 0,
            "work_saved_share": None,
            "original_confusion": {
                "labels": [],
                "rows": "",
                "columns": "",
                "matrix": [],
                "unusable_values": 0,
            },
            "unjoined_shapes": [],
        },
        "calibration": None,
        "scores": {"logit": [], "p_correct": [], "y": []},
        "objects": [{"state": "accepted", **o} for o in objects],
    }


def test_default_types_follow_the_vocabulary():
    assert default_types(["wrong", "correct"]) == ("flip_wrong_to_correct", "missed_wrong")
    assert default_types(["no", "yes", "maybe"]) == ("flip_no_to_yes", "flip_no_to_maybe", "missed_no")


def test_untraced_disagreements_come_in_frame_order(make_report):
    found = disagreements(_report(make_report), default_types(["wrong", "correct"]))
    # two wrong->correct flips (frames 2 and 0) and the missed wrong person (frame 1); not the missed
    # correct one, nor the correct->wrong flip, nor the tp
    assert [(d.frame, d.object_key, d.kind) for d in found] == [
        (0, "shape:11", "flip_wrong_to_correct"),
        (1, "shape:20", "missed_wrong"),
        (2, "shape:12", "flip_wrong_to_correct"),
    ]
    assert found[0].position == [1.0, 2.0, 11.0, 2.0, 11.0, 22.0, 1.0, 22.0]
    assert (found[1].label_value, found[1].model_value, found[1].p_model) == ("wrong", None, None)
    track = disagreements(_report(make_report), ["flip_correct_to_wrong"])
    assert [d.object_key for d in track] == ["track:7@4"]


def test_traced_disagreements_most_confident_first(make_report):
    # P(correct) of shape 12 = 0.97 -> P(model's value "correct") 0.97; of shape 11 0.6
    trace = _trace(
        [
            {
                "frame": 2,
                "shape_id": 12,
                "p_correct": 0.97,
                "thr": 0.4,
                "request_id": "r12",
                "model_version": "v9",
            },
            {
                "frame": 0,
                "shape_id": 11,
                "p_correct": 0.6,
                "thr": 0.4,
                "request_id": "r11",
                "model_version": "v9",
            },
        ]
    )
    found = disagreements(_report(make_report, trace=trace), default_types(["wrong", "correct"]))
    assert [(d.object_key, d.p_model) for d in found] == [
        ("shape:12", 0.97),
        ("shape:11", 0.6),
        ("shape:20", None),
    ]
    sure = message(found[0], confident=0.9, report_url="https://r/1")
    assert sure == (
        "ropewatch [flip_wrong_to_correct]: the label says wrong, the model says correct. "
        "Model confident: check the label. P(correct) = 0.970, thr 0.4, model v9, request_id r12. "
        "Report: https://r/1"
    )
    assert "confident" not in message(found[1], confident=0.9, report_url="")
    # a traced box the model called "wrong" with P(correct) 0.05 is 0.95 sure of "wrong"
    rows = [*ROWS, ["prediction", 6, 14, None, 0.0, 0.0, 9.0, 9.0, "flip_correct_to_wrong", "wrong"]]
    report = _report(make_report, trace=_trace([{"frame": 6, "shape_id": 14, "p_correct": 0.05}]))
    report = report.model_copy(update={"objects": ObjectRows(columns=COLUMNS, rows=rows)})
    flips = disagreements(report, ["flip_correct_to_wrong"])
    assert [(d.object_key, d.p_model) for d in flips] == [
        ("shape:14", pytest.approx(0.95)),
        ("track:7@4", None),
    ]


def test_plan_keeps_opens_and_resolves():
    d = [
        Disagreement(
            "flip_wrong_to_correct", 0, "shape:1", (0, 0, 1, 1), "wrong", "correct", 0.9, 0.5, "v", None
        ),
        Disagreement("missed_wrong", 1, "shape:2", (0, 0, 1, 1), "wrong", None, None, None, "v", None),
        Disagreement("missed_wrong", 2, "shape:3", (0, 0, 1, 1), "wrong", None, None, None, "v", None),
    ]
    known = [OpenIssue(7, "shape:1", "flip_wrong_to_correct", 0), OpenIssue(8, "shape:9", "missed_wrong", 3)]
    plan = make_plan(d, known, max_new=1)
    assert [x.object_key for x in plan.to_open] == ["shape:2"] and plan.over_max == 1
    assert [i.issue_id for i in plan.to_resolve] == [8] and [i.issue_id for i in plan.kept] == [7]
    # the same object with another disagreement is a new issue; the old one is resolved
    other = Disagreement(
        "flip_correct_to_wrong", 0, "shape:1", (0, 0, 1, 1), "correct", "wrong", 0.8, 0.5, "v", None
    )
    again = make_plan([other], known, None)
    assert [x.kind for x in again.to_open] == ["flip_correct_to_wrong"]
    assert [i.issue_id for i in again.to_resolve] == [7, 8] and again.kept == ()


def _cli(httpserver, report_path, tmp_path, *extra):
    return main(
        [
            "review",
            "--report",
            str(report_path),
            "--server-host",
            httpserver.url_for("").rstrip("/"),
            "--auth",
            "u:p",
            "--retries",
            "0",
            "--db",
            str(tmp_path / "h.sqlite"),
            *extra,
        ]
    )


def test_cvat_refusing_issues_is_counted_and_the_others_open(httpserver, make_report, tmp_path, capsys):
    host = httpserver.url_for("").rstrip("/")
    path = tmp_path / "report.json"
    path.write_text(_report(make_report, host=host).to_json())
    httpserver.expect_request("/api/jobs/5", method="GET").respond_with_json({"id": 5, "task_id": 10})
    answers = iter([Response("{}", 403), Response(json.dumps({"id": 77}), 201), Response("{}", 403)])
    posted = []

    def create(request):
        posted.append(request.get_json())
        return next(answers)

    httpserver.expect_request("/api/issues", method="POST").respond_with_handler(create)
    assert _cli(httpserver, path, tmp_path) == 2
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if not line.startswith('{"event"')] == [
        f"ropewatch review: job 5: 2 issue(s) not opened, 0 not resolved "
        f"(first: issue on job 5 frame 0 on {host}: permission denied)"
    ]
    assert "job 5: opened 1, failed 2, resolved 0, already open 0" in captured.out
    assert [(b["frame"], b["job"], b["position"]) for b in posted] == [
        (0, 5, [1.0, 2.0, 11.0, 2.0, 11.0, 22.0, 1.0, 22.0]),
        (1, 5, [30.0, 40.0, 50.0, 40.0, 50.0, 80.0, 30.0, 80.0]),
        (2, 5, [5.0, 6.0, 25.0, 6.0, 25.0, 46.0, 5.0, 46.0]),
    ]
    store = open_store(str(tmp_path / "h.sqlite"))
    assert open_issues(store, host, 5) == [OpenIssue(77, "shape:20", "missed_wrong", 1)]
    store.close()

    # CVAT lets us now: the run opens the two that failed, not the one already open
    httpserver.clear()
    httpserver.expect_request("/api/jobs/5", method="GET").respond_with_json({"id": 5, "task_id": 10})
    ids = iter([78, 79])
    httpserver.expect_request("/api/issues", method="POST").respond_with_handler(
        lambda r: Response(json.dumps({"id": next(ids)}), 201)
    )
    assert _cli(httpserver, path, tmp_path) == 0
    assert "opened 2, failed 0, resolved 0, already open 1" in capsys.readouterr().out


def test_report_of_another_server_is_refused(httpserver, make_report, tmp_path, capsys):
    path = tmp_path / "report.json"
    path.write_text(_report(make_report, host="http://elsewhere:8080").to_json())
    assert _cli(httpserver, path, tmp_path) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith('{"event"')]
    assert err[0] == (
        f"ropewatch review: the report is of job 5 on http://elsewhere:8080, not on --server-host "
        f"{httpserver.url_for('').rstrip('/')}"
    )


def test_bad_inputs_are_one_line(tmp_path, capsys, make_report):
    assert (
        main(["review", "--report", str(tmp_path / "none.json"), "--dry-run", "--db", str(tmp_path / "h")])
        == 2
    )
    assert capsys.readouterr().err.startswith(
        f"ropewatch review: --report {tmp_path / 'none.json'}: cannot read it"
    )
    path = tmp_path / "r.json"
    path.write_text(_report(make_report).to_json())
    assert main(["review", "--report", str(path), "--dry-run", "--types", "flip_x_to_y"]) == 2
    assert "--types flip_x_to_y: not a disagreement of this report" in capsys.readouterr().err
    assert main(["review", "--report", str(path), "--max", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "ropewatch review: --max must be 0 or more, got -1"
    assert main(["review", "--dry-run"]) == 2
    assert "give --report REPORT.json or --job N" in capsys.readouterr().err
    # --job finds validate-job's layout: OUT/job-N/report.json
    (tmp_path / "out" / "job-5").mkdir(parents=True)
    (tmp_path / "out" / "job-5" / "report.json").write_text(_report(make_report).to_json())
    argv = ["review", "--job", "5", "--out", str(tmp_path / "out"), "--dry-run", "--db", str(tmp_path / "h")]
    assert main(argv) == 0
    assert "job 5: would open 3," in capsys.readouterr().out


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from ropewatch_validator.ops.history import MIGRATIONS

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def test_migration_0004_adds_review_issues(history_db):
    engine = sa.create_engine(normalize_url(history_db))
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0002")
        assert not sa.inspect(conn).has_table("review_issues")
    engine.dispose()
    store = open_store(history_db)  # upgrades 0002 -> the head
    with store.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head_revision()
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    remember_issue(store, "http://h:8080/", 3, OpenIssue(5, "shape:1", "missed_wrong", 2))
    assert open_issues(store, "http://h:8080", 3) == [OpenIssue(5, "shape:1", "missed_wrong", 2)]
    store.close()


def test_issues_gone_are_resolved_and_a_deleted_issue_is_not_an_error(
    httpserver, make_report, tmp_path, capsys
):
    host = httpserver.url_for("").rstrip("/")
    path = tmp_path / "report.json"
    path.write_text(_report(make_report, host=host).to_json())
    store = open_store(str(tmp_path / "h.sqlite"))
    remember_issue(
        store, host, 5, OpenIssue(40, "shape:99", "flip_wrong_to_correct", 3)
    )  # gone from the report
    remember_issue(store, host, 5, OpenIssue(41, "shape:98", "missed_wrong", 3))  # gone, and deleted in CVAT
    remember_issue(store, host, 5, OpenIssue(42, "shape:97", "missed_wrong", 3))  # gone; CVAT refuses
    store.close()
    httpserver.expect_request("/api/jobs/5", method="GET").respond_with_json({"id": 5, "task_id": 10})
    httpserver.expect_request("/api/issues", method="POST").respond_with_json({"id": 50}, status=201)
    patched = []

    def patch(request):
        patched.append((request.path, request.get_json()))
        status = {"/api/issues/40": 200, "/api/issues/41": 404, "/api/issues/42": 403}[request.path]
        return Response("{}", status)

    httpserver.expect_request("/api/issues/40", method="PATCH").respond_with_handler(patch)
    httpserver.expect_request("/api/issues/41", method="PATCH").respond_with_handler(patch)
    httpserver.expect_request("/api/issues/42", method="PATCH").respond_with_handler(patch)
    assert _cli(httpserver, path, tmp_path, "--max", "0") == 2
    captured = capsys.readouterr()
    assert "job 5: opened 0, failed 0, resolved 2, already open 0, left by --max 3" in captured.out
    assert patched == [(f"/api/issues/{i}", {"resolved": True}) for i in (40, 41, 42)]
    err = [line for line in captured.err.splitlines() if not line.startswith('{"event"')]
    assert err == [
        f"ropewatch review: job 5: 0 issue(s) not opened, 1 not resolved "
        f"(first: issue 42 on {host}: permission denied)"
    ]
    store = open_store(str(tmp_path / "h.sqlite"))
    assert [i.issue_id for i in open_issues(store, host, 5)] == [42]  # tried again next run
    store.close()


def test_a_summary_without_objects_is_refused(make_report, tmp_path, capsys):
    """History keeps reports without their per-object rows; reviewing one would resolve every issue."""
    path = tmp_path / "summary.json"
    summary = make_report().model_copy(update={"objects": ObjectRows(columns=COLUMNS, rows=[])})
    path.write_text(summary.to_json())
    assert main(["review", "--report", str(path), "--dry-run", "--db", str(tmp_path / "h")]) == 2
    assert "the report of job 1 has no per-object rows" in capsys.readouterr().err
