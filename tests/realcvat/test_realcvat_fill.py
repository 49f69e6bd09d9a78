"""``ropewatch annotate fill`` against a real CVAT 2.23.1 (issue 19.2): the attribute is written on exactly
the unset person boxes, geometry and ``source`` untouched, a re-run fills nothing, a later run without
``--only-unset`` fills the rest, and ``validate-job --logs`` joins the records it wrote.

The job (3 frames): frame 0: S1 auto person sent without a value (CVAT stores the default ``wrong``),
S2 manual person ``correct``; frame 1: S3 manual person without a value, a car; frame 2: S5 semi-auto
person ``correct``; one person track (frames 0-2). The checkpoint's head always says z = 2 (``correct``,
P = sigmoid(2) = 0.880797), the second one's z = -2 (``wrong``).
"""

from __future__ import annotations

import json
import math

import pytest

from ropewatch_core.model.checkpoint import save_checkpoint
from ropewatch_validator.cli.main import main
from support.cvat_rest import LABELS, box, jpeg, keyframe

S1, S2, S3, S4, S5 = (
    [10, 10, 60, 110],
    [100, 20, 150, 120],
    [30, 30, 80, 130],
    [200, 10, 250, 110],
    [40, 40, 90, 140],
)


@pytest.fixture
def job(real_cvat):
    rest = real_cvat.rest
    files = {f"fl{i:02d}.jpg": jpeg(320, 240, 900 + i) for i in range(3)}
    task = rest.create_task(real_cvat.name("fill"), LABELS, files)
    job = rest.jobs(task["id"])[0]["id"]
    ids = rest.ids(task["id"])
    shapes = [
        box(ids, 0, S1, "auto", None),
        box(ids, 0, S2, "manual", "correct"),
        box(ids, 1, S3, "manual", None),
        box(ids, 1, S4, "manual", None, label="car"),
        box(ids, 2, S5, "semi-auto", "correct"),
    ]
    track = {
        "frame": 0,
        "label_id": ids.labels["person"],
        "group": 0,
        "source": "manual",
        "attributes": [],
        "shapes": [keyframe(ids, 0, [150, 150, 200, 230]), keyframe(ids, 2, [150, 150, 200, 230])],
    }
    rest.put_annotations(job, shapes, [track])
    return job, ids


def _fill(real_cvat, tmp_path, job, checkpoint, *extra):
    return main(
        [
            "annotate",
            "fill",
            str(job),
            "--model",
            str(checkpoint),
            "--records",
            str(tmp_path / "records.jsonl"),
            "--server-host",
            real_cvat.url,
            "--auth",
            f"{real_cvat.user}:{real_cvat.password}",
            "--db",
            str(tmp_path / "history.sqlite"),
            "--quiet",
            *extra,
        ]
    )


def _persons(real_cvat, job, ids):
    """(points, source, value) of the job's person shapes, by frame and x."""
    shapes = real_cvat.rest.get(f"/api/jobs/{job}/annotations")["shapes"]
    spec = ids.specs["safety_rope_use"]
    out = []
    for s in shapes:
        if s["label_id"] != ids.labels["person"]:
            continue
        value = next((a["value"] for a in s["attributes"] if a["spec_id"] == spec), None)
        out.append((s["frame"], s["points"], s["source"], value))
    return sorted(out, key=lambda r: (r[0], r[1][0]))


def test_fill_writes_only_the_unset_values(
    real_cvat, validate, job, tmp_path, capsys, fixed_logit_checkpoint
):
    job, ids = job
    says_correct, says_wrong = tmp_path / "correct.pt", tmp_path / "wrong.pt"
    save_checkpoint(fixed_logit_checkpoint(bias=(0.0, 2.0), version="fill-v1"), says_correct)
    save_checkpoint(fixed_logit_checkpoint(bias=(1.0, -1.0), version="fill-v2"), says_wrong)
    before = _persons(real_cvat, job, ids)
    assert [r[3] for r in before] == ["wrong", "correct", "wrong", "correct"]  # CVAT stored the default

    assert _fill(real_cvat, tmp_path, job, says_correct, "--only-unset") == 0
    out = capsys.readouterr().out
    assert (
        f"job {job}: filled 2 of 4 person boxes (2 changed, 0 already so; values: correct 2); skipped: "
        "2 already set, 0 filled before, 1 tracks; failed frames 0"
    ) in out
    after = _persons(real_cvat, job, ids)
    # S1 and S3 now "correct"; geometry and source of every shape as before (auto stays auto)
    assert after == [
        (0, [float(v) for v in S1], "auto", "correct"),
        (0, [float(v) for v in S2], "manual", "correct"),
        (1, [float(v) for v in S3], "manual", "correct"),
        (2, [float(v) for v in S5], "semi-auto", "correct"),
    ]
    cars = [
        s
        for s in real_cvat.rest.get(f"/api/jobs/{job}/annotations")["shapes"]
        if s["label_id"] == ids.labels["car"]
    ]
    assert [c["points"] for c in cars] == [[float(v) for v in S4]]

    # one record per frame classified (0 and 1), the function's record contract, P = sigmoid(2)
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    assert [(r["event"], r["model_version"], len(r["detections"])) for r in records] == [
        ("inference", "fill-v1", 1),
        ("inference", "fill-v1", 1),
    ]
    assert records[0]["detections"][0]["p_correct"] == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-6)
    assert records[0]["detections"][0]["box"] == [float(v) for v in S1] and records[0]["boxes_given"] is True

    # validate-job --logs joins them: both frames by their bytes, S1 (auto, value = logged) accepted
    code, rep = validate(job, "--logs", str(tmp_path / "records.jsonl"), "--frame-cache", str(tmp_path / "c"))
    assert rep["trace"]["frames"]["joined"] == 2
    assert rep["trace"]["lifecycle"]["counts"]["accepted"] == 1

    # a re-run fills nothing
    assert _fill(real_cvat, tmp_path, job, says_correct, "--only-unset") == 0
    assert "filled 0 of 4 person boxes" in capsys.readouterr().out
    assert _persons(real_cvat, job, ids) == after

    # without --only-unset the boxes it never filled (S2, S5) are classified; S1, S3 are left alone
    assert _fill(real_cvat, tmp_path, job, says_wrong) == 0
    out = capsys.readouterr().out
    assert (
        "filled 2 of 4 person boxes (2 changed, 0 already so; values: wrong 2); skipped: 0 already set, "
        in out
    )
    assert "2 filled before" in out
    assert [(r[2], r[3]) for r in _persons(real_cvat, job, ids)] == [
        ("auto", "correct"),
        ("manual", "wrong"),
        ("manual", "correct"),
        ("semi-auto", "wrong"),
    ]


def test_an_update_without_source_makes_a_shape_manual(real_cvat, job):
    """What fill avoids by always sending ``source`` back: CVAT 2.23.1's serializer defaults it to manual."""
    job, ids = job
    rest = real_cvat.rest
    shapes = rest.get(f"/api/jobs/{job}/annotations")["shapes"]
    auto = next(s for s in shapes if s["source"] == "auto")
    body = {k: v for k, v in auto.items() if k != "source"}
    body["attributes"] = [{"spec_id": ids.specs["safety_rope_use"], "value": "correct"}]
    rest.request(
        "PATCH",
        f"/api/jobs/{job}/annotations?action=update",
        json={"version": 0, "tags": [], "tracks": [], "shapes": [body]},
    )
    again = next(s for s in rest.get(f"/api/jobs/{job}/annotations")["shapes"] if s["id"] == auto["id"])
    assert (again["source"], again["points"]) == ("manual", auto["points"])


def test_fill_dry_run_and_a_deleted_job(real_cvat, job, tmp_path, capsys, fixed_logit_checkpoint):
    job, ids = job
    model = tmp_path / "m.pt"
    save_checkpoint(fixed_logit_checkpoint(bias=(0.0, 2.0)), model)
    assert _fill(real_cvat, tmp_path, job, model, "--only-unset", "--dry-run") == 0
    assert "would fill 2 of 4 person boxes" in capsys.readouterr().out
    assert [r[3] for r in _persons(real_cvat, job, ids)] == ["wrong", "correct", "wrong", "correct"]
    task = real_cvat.rest.get(f"/api/jobs/{job}")["task_id"]
    real_cvat.rest.request("DELETE", f"/api/tasks/{task}")
    assert _fill(real_cvat, tmp_path, job, model) == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == f"ropewatch annotate: job {job} on {real_cvat.url}: not found"
    )


def test_fill_through_the_deployed_functions_boxes_api(
    real_cvat, validate, job, tmp_path, capsys, fixed_logit_checkpoint, nuclio
):
    job, ids = job
    model = tmp_path / "fn.pt"
    save_checkpoint(fixed_logit_checkpoint(bias=(0.0, 2.0), version="fn-v1"), model)
    fn = nuclio({"MODEL_PATH": model, "NUM_WORKERS": 1}, workers=1).wait_ready()
    code = main(
        [
            "annotate",
            "fill",
            str(job),
            "--function-url",
            fn.url,
            "--only-unset",
            "--server-host",
            real_cvat.url,
            "--auth",
            f"{real_cvat.user}:{real_cvat.password}",
            "--db",
            str(tmp_path / "history.sqlite"),
            "--quiet",
        ]
    )
    assert code == 0
    assert (
        "filled 2 of 4 person boxes (2 changed, 0 already so; values: correct 2)" in capsys.readouterr().out
    )
    assert [(r[2], r[3]) for r in _persons(real_cvat, job, ids)] == [
        ("auto", "correct"),
        ("manual", "correct"),
        ("manual", "correct"),
        ("semi-auto", "correct"),
    ]
    # the function logged one inference record per frame; validate-job --logs joins them
    assert fn.stop() == 0
    log = tmp_path / "fn.log"
    log.write_text(fn.log())
    code, rep = validate(job, "--logs", str(log), "--frame-cache", str(tmp_path / "c"))
    assert rep["trace"]["logs"]["inference"] == 2 and rep["trace"]["frames"]["joined"] == 2
    assert rep["trace"]["lifecycle"]["counts"]["accepted"] == 1
