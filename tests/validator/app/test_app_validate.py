"""The validate-job use case without the CLI: ``app.validate.compare`` is pure, and honeypots pair by the
frame they show."""

from __future__ import annotations

import pytest

from ropewatch_validator.app.validate import BadReference, Reference, compare, fetch_reference
from ropewatch_validator.cvat import fetch
from ropewatch_validator.evaluation.model import Settings
from ropewatch_validator.sandbox import synthetic

HOST = "http://cvat.test:8080"


def tables(job: synthetic.SyntheticJob) -> fetch.JobData:
    return fetch.job_tables(HOST, job.job["id"], job.job, job.labels, job.meta, job.annotations)


@pytest.fixture(scope="module")
def pair() -> tuple[fetch.JobData, fetch.JobData]:
    job = synthetic.generate(8, seed=0)
    gt = synthetic.generate(8, job_id=103, seed=0, p_miss=0, p_extra=0, extras=False)
    gt.job["type"] = "ground_truth"
    return tables(job), tables(gt)


def test_compare_changes_nothing_it_is_given(pair) -> None:
    job, gt = pair
    frames, gt_frames, shapes = job.frames.copy(), gt.frames.copy(), job.shapes.copy()
    compare(job, Reference("gt-job", 103, gt, {0: 999}), Settings())
    assert job.frames.equals(frames) and gt.frames.equals(gt_frames) and job.shapes.equals(shapes)


def test_honeypots_pair_by_the_frame_they_show(pair) -> None:
    job, gt = pair
    plain = compare(job, Reference("gt-job", 103, gt), Settings())
    same = compare(job, Reference("gt-job", 103, gt, {f: f for f in range(8)}), Settings())
    assert same.model_dump(exclude={"generated_at"}) == plain.model_dump(exclude={"generated_at"})
    # frame 0 shows a validation frame the GT job does not have: it has no reference, so it is left out
    lost = compare(job, Reference("gt-job", 103, gt, {0: 999}), Settings())
    assert (plain.counts.frames, lost.counts.frames) == (8, 7)
    assert lost.source.reference_mode == "gt-job" and lost.source.reference_job == 103


def test_a_job_is_not_its_own_reference() -> None:
    with pytest.raises(BadReference, match="--reference-job 5 is the job itself"):
        fetch_reference(None, 5, None, 5)  # type: ignore[arg-type]  # refused before any request
