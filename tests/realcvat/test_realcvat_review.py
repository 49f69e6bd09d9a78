"""``ropewatch review`` against a real CVAT: issues opened on the right frames and boxes, most confident
first, none duplicated on a re-run, resolved once a person fixed the label (issue 19.1).

The job (4 frames, one annotation job), manual = the people, auto = the model, logits from the
function's log (P(correct) = sigmoid(z)):
- frame 0: A manual wrong, A auto correct z=3.0 (P(correct) = 0.952574) -> flip_wrong_to_correct,
  confident; D manual correct, D auto correct z=2.0 -> tp;
- frame 1: B manual wrong, no auto -> missed_wrong (no P);
- frame 2: C manual correct, C auto wrong z=-2.0 -> flip_correct_to_wrong (not a default type);
- frame 3: E manual wrong, E auto correct z=0.5 (P(correct) = 0.622459) -> flip_wrong_to_correct.
Default order: A (0.9526), E (0.6225), then B (untraced).
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime, timedelta, timezone

from ropewatch_validator.cli.main import main
from ropewatch_validator.ops.history import open_store
from ropewatch_validator.ops.loop_store import open_issues
from support.cvat_rest import LABELS, box, jpeg
from support.tracegen import inference_record

A, B, C, D, E = (
    [10, 10, 60, 110],
    [100, 20, 150, 120],
    [30, 30, 80, 130],
    [200, 10, 250, 110],
    [40, 40, 90, 140],
)
AUTO = {0: [(A, 3.0, "correct"), (D, 2.0, "correct")], 2: [(C, -2.0, "wrong")], 3: [(E, 0.5, "correct")]}
MANUAL = {0: [(A, "wrong"), (D, "correct")], 1: [(B, "wrong")], 2: [(C, "correct")], 3: [(E, "wrong")]}


def _polygon(b):
    x1, y1, x2, y2 = (float(v) for v in b)
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def _sigmoid(z):
    return 1 / (1 + math.exp(-z))


def _scenario(real_cvat, tmp_path):
    rest = real_cvat.rest
    files = {f"rv{i:02d}.jpg": jpeg(320, 240, 700 + i) for i in range(4)}
    task = rest.create_task(real_cvat.name("review"), LABELS, files)
    job = rest.jobs(task["id"])[0]["id"]
    ids = rest.ids(task["id"])
    shapes = [box(ids, f, b, "manual", v) for f, items in MANUAL.items() for b, v in items]
    shapes += [box(ids, f, b, "auto", v) for f, items in AUTO.items() for b, _, v in items]
    rest.put_annotations(job, shapes)
    when = datetime.now(timezone.utc) - timedelta(hours=1)
    names = sorted(files)
    records = [
        inference_record(
            sha256=hashlib.sha256(files[names[f]]).hexdigest(),
            pixel_sha256=None,
            width=320,
            height=240,
            boxes=[b for b, _, _ in items],
            logits=[z for _, z, _ in items],
            timestamp=when,
            model_version="rope-v7",
            request_id=f"req-frame-{f}",
        )
        for f, items in AUTO.items()
    ]
    log = tmp_path / "fn.log"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    return task, job, ids, log


def _report(validate, job, log, tmp_path):
    code, rep = validate(job, "--logs", str(log), "--frame-cache", str(tmp_path / "cache"))
    assert code in (0, 1) and rep is not None
    path = tmp_path / f"report-{rep['source']['job_updated_date']}.json"
    path.write_text(json.dumps(rep))
    return path


def _review(real_cvat, report, tmp_path, *extra):
    return main(
        [
            "review",
            "--report",
            str(report),
            "--server-host",
            real_cvat.url,
            "--auth",
            f"{real_cvat.user}:{real_cvat.password}",
            "--db",
            str(tmp_path / "history.sqlite"),
            "--report-url",
            "https://reports.example/job",
            *extra,
        ]
    )


def _issues(real_cvat, job):
    rest = real_cvat.rest
    found = rest.get(f"/api/issues?job_id={job}&page_size=100")["results"]
    out = []
    for issue in sorted(found, key=lambda i: i["id"]):
        comments = rest.get(f"/api/comments?issue_id={issue['id']}&page_size=10")["results"]
        out.append({**issue, "text": comments[0]["message"] if comments else ""})
    return out


def test_review_opens_orders_dedupes_and_resolves(real_cvat, validate, tmp_path, capsys):
    task, job, ids, log = _scenario(real_cvat, tmp_path)
    report = _report(validate, job, log, tmp_path)

    # --max 2: the two traced flips, most confident first; the untraced missed person waits
    assert _review(real_cvat, report, tmp_path, "--max", "2", "--assignee", real_cvat.user) == 0
    out = capsys.readouterr().out
    assert f"job {job}: opened 2, failed 0, resolved 0, already open 0, left by --max 1" in out
    first = _issues(real_cvat, job)
    assert [(i["frame"], i["position"], i["resolved"]) for i in first] == [
        (0, _polygon(A), False),
        (3, _polygon(E), False),
    ]
    assert [(i["assignee"] or {}).get("username") for i in first] == [real_cvat.user] * 2
    a_text, e_text = first[0]["text"], first[1]["text"]
    assert a_text.startswith(
        "ropewatch [flip_wrong_to_correct]: the label says wrong, the model says correct."
    )
    assert "Model confident: check the label." in a_text
    assert f"P(correct) = {_sigmoid(3.0):.3f}" in a_text and "P(correct) = 0.953" in a_text
    assert "thr 0.5" in a_text and "model rope-v7" in a_text and "request_id req-frame-0" in a_text
    assert a_text.endswith("Report: https://reports.example/job")
    assert "Model confident" not in e_text and "P(correct) = 0.622" in e_text and "req-frame-3" in e_text

    # the next run opens only what --max left: B, the missed wrong person (no model P, no request)
    assert _review(real_cvat, report, tmp_path) == 0
    assert "opened 1, failed 0, resolved 0, already open 2, left by --max 0" in capsys.readouterr().out
    issues = _issues(real_cvat, job)
    assert [(i["frame"], i["position"]) for i in issues] == [
        (0, _polygon(A)),
        (3, _polygon(E)),
        (1, _polygon(B)),
    ]
    assert issues[2]["text"].startswith(
        "ropewatch [missed_wrong]: the label says wrong, the model found no person here."
    )
    assert "request_id" not in issues[2]["text"] and "P(" not in issues[2]["text"]

    # a re-run opens no duplicate
    assert _review(real_cvat, report, tmp_path) == 0
    assert "opened 0, failed 0, resolved 0, already open 3" in capsys.readouterr().out
    assert len(_issues(real_cvat, job)) == 3

    # a person decides the model was right about A: the label becomes correct; validate again, review
    annotations = real_cvat.rest.get(f"/api/jobs/{job}/annotations")
    manual_a = next(
        s for s in annotations["shapes"] if s["source"] == "manual" and s["points"] == A and s["frame"] == 0
    )
    manual_a["attributes"] = [{"spec_id": ids.specs["safety_rope_use"], "value": "correct"}]
    real_cvat.rest.request(
        "PATCH",
        f"/api/jobs/{job}/annotations?action=update",
        json={"version": 0, "tags": [], "shapes": [manual_a], "tracks": []},
    )
    fixed = _report(validate, job, log, tmp_path)
    assert _review(real_cvat, fixed, tmp_path) == 0
    assert "opened 0, failed 0, resolved 1, already open 2" in capsys.readouterr().out
    after = {i["frame"]: i["resolved"] for i in _issues(real_cvat, job)}
    assert after == {0: True, 3: False, 1: False}
    # and resolving is remembered: the next run resolves nothing again
    assert _review(real_cvat, fixed, tmp_path) == 0
    assert "opened 0, failed 0, resolved 0, already open 2" in capsys.readouterr().out


def test_review_dry_run_of_a_fresh_validation_writes_nothing(real_cvat, tmp_path, capsys):
    task, job, ids, log = _scenario(real_cvat, tmp_path)
    argv = ["review", "--job", str(job), "--out", str(tmp_path / "out"), "--validate", "--logs", str(log)]
    argv += ["--dry-run", "--types", "flip_correct_to_wrong,flip_wrong_to_correct"]
    argv += ["--server-host", real_cvat.url, "--auth", f"{real_cvat.user}:{real_cvat.password}"]
    assert main([*argv, "--db", str(tmp_path / "history.sqlite")]) == 0
    out = capsys.readouterr().out
    # traced, most confident first: A (P(correct) 0.953), C (P(wrong) = 1 - sigmoid(-2) = 0.881), E (0.622)
    lines = [line for line in out.splitlines() if line.startswith("would open")]
    assert [line.split()[4] for line in lines] == ["0", "2", "3"]
    assert "would open 3," in out and (tmp_path / "out" / f"job-{job}" / "report.json").is_file()
    assert _issues(real_cvat, job) == []


def test_review_of_a_deleted_job_is_one_line_and_stores_nothing(real_cvat, validate, tmp_path, capsys):
    task, job, ids, log = _scenario(real_cvat, tmp_path)
    report = _report(validate, job, log, tmp_path)
    real_cvat.rest.request("DELETE", f"/api/tasks/{task['id']}")
    capsys.readouterr()
    assert _review(real_cvat, report, tmp_path) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"ropewatch review: job {job} on {real_cvat.url}: not found"]
    store = open_store(str(tmp_path / "history.sqlite"))
    assert open_issues(store, real_cvat.url, job) == []
    store.close()
