"""Item 11: deleting frames moves neither the job's ``updated_date`` nor ``chunks_updated_date`` on CVAT
2.23, so the history key of a job state carries a digest of its deleted frames: a changed job is validated
again (from a ``--task`` listing too), an unchanged one still skipped before its annotations are read."""

from __future__ import annotations

from ropewatch_validator.ops.history import open_store
from support.cvat_rest import LABELS, box, jpeg


def test_deleting_frames_is_a_new_job_state(real_cvat, validate, tmp_path):
    rest = real_cvat.rest
    task = rest.create_task(
        real_cvat.name("state"), LABELS, {f"js{i}.jpg": jpeg(64, 48, 700 + i) for i in range(3)}
    )
    job = rest.jobs(task["id"])[0]["id"]
    ids = rest.ids(task["id"])
    rest.put_annotations(
        job, [box(ids, f, [1, 1, 20, 30], src, "wrong") for f in range(3) for src in ("auto", "manual")]
    )
    scope = ("--task", str(task["id"]))
    first = validate_task(validate, job, scope)
    assert first["counts"]["frames_evaluated"] == 3 and first["source"]["job_state"] == ""
    assert validate_task(validate, job, scope) is None  # unchanged: skipped, no report written
    before = rest.get(f"/api/jobs/{job}")["updated_date"]
    meta_before = rest.get(f"/api/jobs/{job}/data/meta")["chunks_updated_date"]
    rest.delete_frames(job, [1])
    assert rest.get(f"/api/jobs/{job}")["updated_date"] == before  # CVAT moves no date ...
    assert rest.get(f"/api/jobs/{job}/data/meta")["chunks_updated_date"] == meta_before
    second = validate_task(validate, job, scope)  # ... but the numbers change, and are stored
    assert second is not None and second["counts"]["frames_evaluated"] == 2 and second["source"]["job_state"]
    assert validate_task(validate, job, scope) is None
    store = open_store(str(tmp_path / "history.sqlite"))
    runs = store.trend(job=job)
    store.close()
    assert [r["frames_evaluated"] for r in runs] == [3, 2]


def validate_task(validate, job: int, scope: tuple[str, str]) -> dict | None:
    """validate-job --task T (the cron path: listing, skip-before-fetch); report.json of ``job`` or None."""
    code, report = validate(job, *scope, task_only=True)
    assert code == 0
    return report
