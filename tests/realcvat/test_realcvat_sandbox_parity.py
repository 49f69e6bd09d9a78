"""One scenario built on the real CVAT and on the sandbox: validate-job's report.json must be the same,
apart from host, time and the ids each server hands out (issue 9, "a sandbox that answers like the real
server"). The scenario mixes a step, a GT job, a deleted frame, a shape outside the job, a track toward an
outside keyframe, a rotated box, another label and an attribute left to its default."""

from __future__ import annotations

import json

from ropewatch_validator.cli.main import validate_job_main
from ropewatch_validator.sandbox import server as sandbox
from support.cvat_rest import LABELS, box, jpeg, keyframe
from support.sandbox_cvat import SandboxCvat

FILES = {f"pa{i:02d}.jpg": jpeg(320, 240, 200 + i) for i in range(12)}


def build(target, name: str) -> int:
    """The scenario through the calls CvatRest and SandboxCvat share; returns job B's id."""
    task = target.create_task(
        name,
        LABELS,
        FILES,
        task_fields={"segment_size": 3},
        start_frame=1,
        stop_frame=11,
        frame_filter="step=2",
    )
    job_b = target.jobs(task["id"], "annotation")[1]["id"]  # task frames 3..5 = data frames 7, 9, 11
    gt = target.create_gt_job(task["id"], [1, 3, 4])["id"]
    ids = target.ids(task["id"])
    target.put_annotations(
        gt,
        [
            box(ids, 1, [10, 10, 60, 110], "manual", "wrong"),
            box(ids, 3, [100, 50, 150, 150], "manual", "correct"),
            box(ids, 3, [200, 10, 260, 60], "manual", label="car"),
            box(ids, 4, [30, 30, 80, 130], "manual", "wrong"),
            box(ids, 4, [220, 100, 260, 180], "manual", "wrong"),
        ],
    )
    track = {
        "frame": 3,
        "label_id": ids.labels["person"],
        "group": 0,
        "source": "auto",
        "attributes": [],
        "shapes": [
            keyframe(ids, 3, [200, 100, 240, 180], "wrong"),
            keyframe(ids, 5, [240, 100, 280, 180], outside=True),
        ],
    }
    target.put_annotations(
        job_b,
        [
            box(ids, 3, [100, 50, 150, 150], "auto", None),  # no attribute: read back as the default "wrong"
            box(ids, 3, [200, 10, 260, 60], "auto", label="car"),
            box(ids, 4, [30, 30, 80, 130], "auto", "wrong", rotation=90.0),  # IoU 1/3 with the GT box
            box(ids, 4, [220, 100, 260, 180], "manual", "wrong"),  # where the track is on frame 4
            box(ids, 5, [0, 0, 20, 20], "auto", "wrong"),
            box(ids, 5, [0, 0, 20, 20], "manual", "wrong"),
            box(ids, 1, [0, 0, 20, 20], "auto", "wrong"),  # job A's frame, stored in job B all the same
        ],
        tracks=[track],
    )
    target.delete_frames(job_b, [5])
    return job_b


def comparable(report: dict) -> dict:
    """The report without host, time and server-assigned shape/track ids (ids become their rank)."""
    report = json.loads(json.dumps(report))
    report.pop("generated_at")
    for key in ("host", "job_updated_date", "job_state"):
        report["source"].pop(key)
    columns = report["objects"]["columns"]
    for column in ("shape_id", "track_id"):
        i = columns.index(column)
        rank = {
            v: n for n, v in enumerate(sorted({r[i] for r in report["objects"]["rows"] if r[i] is not None}))
        }
        for row in report["objects"]["rows"]:
            row[i] = None if row[i] is None else rank[row[i]]
    for frame in report["worst_frames"]:
        for obj in frame["objects"]:
            obj.pop("shape_id")
    return report


def run(url: str, job: int, out, *extra: str) -> dict:
    code = validate_job_main(
        [
            str(job),
            "--server-host",
            url,
            "--out",
            str(out),
            "--db",
            str(out / "h.sqlite"),
            "--format",
            "json",
            "--quiet",
            *extra,
        ]
    )
    assert code == 0
    return json.loads((out / f"job-{job}" / "report.json").read_text())


def test_sandbox_report_equals_real_cvat_report(real_cvat, tmp_path):
    rest = real_cvat.rest
    job_b = build(rest, real_cvat.name("parity"))
    task_id = rest.get(f"/api/jobs/{job_b}")["task_id"]
    ids = rest.ids(task_id)
    mirror = {
        "task": task_id,
        "jobs": [j["id"] for j in rest.jobs(task_id, "annotation")],
        "gt": rest.jobs(task_id, "ground_truth")[0]["id"],
        "labels": ids.labels,
        "specs": ids.specs,
    }
    state = sandbox.CvatState()
    assert build(SandboxCvat(state, mirror), real_cvat.name("parity")) == job_b
    auth = ["--auth", f"{real_cvat.user}:{real_cvat.password}"]
    modes = {"manual": [], "gt": ["--gt-job", "auto", "--iou", "0.4", "--matching", "cvat"]}
    with sandbox.serve(state) as (url, _):
        for mode, extra in modes.items():
            real = run(real_cvat.url, job_b, tmp_path / f"real-{mode}", *extra, *auth)
            fake = run(url, job_b, tmp_path / f"sandbox-{mode}", *extra)
            assert comparable(fake) == comparable(real), mode
    # and the numbers themselves, by hand (GT mode): frames 3 and 4 paired with GT (5 deleted, 1 not in B).
    # Predictions: frame 3 the box and the track's keyframe, frame 4 the rotated box and the track (4).
    # frame 3: box = GT box (tp; default "wrong" vs "correct"), track keyframe has no GT partner (fp);
    # frame 4: track at x1 = 200 + (240 - 200) / 2 = 220 = GT box (tp), rotated box IoU 1/3 < 0.4 (fp, GT fn)
    det = real["detection"]
    assert (real["counts"]["predictions"], det["tp"], det["fp"], det["fn"]) == (4, 2, 2, 1)
    assert real["errors"]["flip_correct_to_wrong"] == 1
    assert real["counts"]["skipped_shapes"] == {"label:car": 2}
    assert real["counts"]["dropped"] == {"outside_job_frames": 1, "on_deleted_frames": 2}
