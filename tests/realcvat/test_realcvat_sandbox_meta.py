"""The sandbox's ``data/meta`` (``sandbox.cvat_model.job_meta``) against the real server's, body for body:
a step=2 video cut into overlapping jobs, a GT job on a step=2 image task, and a honeypot (gt_pool) task."""

from __future__ import annotations

from ropewatch_validator.sandbox import cvat_model
from support.cvat_rest import LABELS, jpeg, mp4

KEYS = ("size", "start_frame", "stop_frame", "frame_filter", "deleted_frames", "included_frames")


def same_meta(model: dict, real: dict) -> None:
    assert {k: model[k] for k in KEYS} == {k: real[k] for k in KEYS}
    fields = ("name", "width", "height")
    assert [{k: f[k] for k in fields} for f in model["frames"]] == [
        {k: f[k] for k in fields} for f in real["frames"]
    ]


def test_video_with_step_and_overlapping_jobs(real_cvat):
    rest = real_cvat.rest
    task = rest.create_task(
        real_cvat.name("meta-video"),
        LABELS,
        {"clip.mp4": mp4(20)},
        task_fields={"segment_size": 5, "overlap": 2},
        frame_filter="step=2",
        start_frame=0,
        stop_frame=19,
    )
    media = cvat_model.video_media("clip.mp4", 20, 320, 240, start=0, stop=19, step=2)
    jobs = rest.jobs(task["id"], "annotation")
    assert [(j["start_frame"], j["stop_frame"]) for j in jobs] == cvat_model.segments(media.size, 5, 2)
    for job in jobs:
        same_meta(cvat_model.job_meta(media, job), rest.get(f"/api/jobs/{job['id']}/data/meta"))


def test_gt_job_and_deleted_frames_on_a_step_image_task(real_cvat):
    rest = real_cvat.rest
    files = {f"mg{i:02d}.jpg": jpeg(320, 240, 500 + i) for i in range(12)}
    task = rest.create_task(
        real_cvat.name("meta-gt"),
        LABELS,
        files,
        task_fields={"segment_size": 4},
        start_frame=1,
        stop_frame=11,
        frame_filter="step=2",
    )
    gt = rest.create_gt_job(task["id"], [1, 4])
    job = rest.jobs(task["id"], "annotation")[0]
    rest.delete_frames(job["id"], [2])
    media = cvat_model.Media(sorted(files)[1::2], 320, 240, 6, start=1, step=2, deleted=[2])
    same_meta(cvat_model.job_meta(media, job), rest.get(f"/api/jobs/{job['id']}/data/meta"))
    gt_job = rest.get(f"/api/jobs/{gt['id']}")
    same_meta(
        cvat_model.job_meta(media, gt_job, included=[1, 4]), rest.get(f"/api/jobs/{gt['id']}/data/meta")
    )


def test_honeypot_jobs_show_their_validation_frames(real_cvat):
    rest = real_cvat.rest
    files = {f"mh{i:02d}.jpg": jpeg(320, 240, 600 + i) for i in range(10)}
    task = rest.create_task(
        real_cvat.name("meta-honeypot"),
        LABELS,
        files,
        task_fields={"segment_size": 4},
        sorting_method="random",
        validation_params={
            "mode": "gt_pool",
            "frame_selection_method": "random_uniform",
            "frame_count": 3,
            "random_seed": 2,
            "frames_per_job_count": 2,
        },
    )
    layout = rest.get(f"/api/tasks/{task['id']}/validation_layout")
    placeholders = dict(zip(layout["honeypot_frames"], layout["honeypot_real_frames"]))
    names = [f["name"] for f in rest.get(f"/api/tasks/{task['id']}/data/meta")["frames"]]  # random order
    media = cvat_model.Media(names, 320, 240, len(names), placeholders=placeholders)
    for job in rest.jobs(task["id"]):
        same_meta(cvat_model.job_meta(media, job), rest.get(f"/api/jobs/{job['id']}/data/meta"))
        real = rest.get(f"/api/jobs/{job['id']}/validation_layout")
        model = cvat_model.job_layout(media, job)
        assert (model["honeypot_frames"], model["honeypot_real_frames"]) == (
            real["honeypot_frames"],
            real["honeypot_real_frames"],
        )
