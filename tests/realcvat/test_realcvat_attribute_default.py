"""Item 8: when the function's attribute is not mapped, CVAT's lambda manager drops it and CVAT reads every
auto shape back with the label's default value. ``--logs`` must call that a mapping failure, not 4 corrections
by a person, and keep those shapes out of recalibration. The job is built as the lambda manager leaves it:
auto shapes without the attribute (``lambda_manager/views.py`` ``transform_attributes``)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

from support.cvat_rest import LABELS, box, jpeg
from support.tracegen import inference_record

BOXES = {0: [[10, 10, 60, 110], [100, 10, 150, 110]], 1: [[20, 20, 70, 120]], 2: [[30, 30, 80, 130]]}
LOGITS = {0: [2.0, 2.0], 1: [2.0], 2: [-2.0]}  # the model said correct, correct, correct, wrong


def _job_and_logs(real_cvat, tmp_path, mapped: bool):
    rest = real_cvat.rest
    files = {f"ad{i:02d}.jpg": jpeg(320, 240, 300 + i) for i in range(3)}
    task = rest.create_task(real_cvat.name(f"default-{mapped}"), LABELS, files)
    job = rest.jobs(task["id"])[0]["id"]
    ids = rest.ids(task["id"])
    value = {2.0: "correct", -2.0: "wrong"}
    rest.put_annotations(
        job,
        [
            box(ids, f, b, "auto", value[z] if mapped else None)
            for f in BOXES
            for b, z in zip(BOXES[f], LOGITS[f])
        ],
    )
    when = datetime.now(timezone.utc) - timedelta(hours=1)
    records = [
        inference_record(
            sha256=hashlib.sha256(data).hexdigest(),
            pixel_sha256=None,
            width=320,
            height=240,
            boxes=BOXES[f],
            logits=LOGITS[f],
            timestamp=when,
        )
        for f, data in enumerate(files[k] for k in sorted(files))
    ]
    log = tmp_path / f"fn-{mapped}.log"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    return job, log


def test_unmapped_attribute_is_a_mapping_failure_not_corrections(real_cvat, validate, tmp_path):
    job, log = _job_and_logs(real_cvat, tmp_path, mapped=False)
    stored = real_cvat.rest.get(f"/api/jobs/{job}/annotations")["shapes"]
    assert {a["value"] for s in stored for a in s["attributes"]} == {"wrong"}  # the default, on all 4
    code, rep = validate(job, "--logs", str(log), "--frame-cache", str(tmp_path / "cache"))
    assert code == 0
    life = rep["trace"]["lifecycle"]
    assert rep["trace"]["frames"]["joined"] == 3
    # 4 joined auto shapes all hold the default "wrong" while 3 logged values are "correct"
    assert life["attribute_mapping"] == "failed"
    assert (
        life["counts"]["attribute_unmapped"],
        life["counts"]["attribute_corrected"],
        life["counts"]["accepted"],
    ) == (4, 0, 0)
    assert rep["trace"]["scores"]["y"] == []  # nothing for recalibration to fit on


def test_mapped_attribute_is_accepted(real_cvat, validate, tmp_path):
    job, log = _job_and_logs(real_cvat, tmp_path, mapped=True)
    code, rep = validate(job, "--logs", str(log), "--frame-cache", str(tmp_path / "cache"))
    life = rep["trace"]["lifecycle"]
    assert code == 0 and life["attribute_mapping"] == "ok"
    assert (life["counts"]["accepted"], life["counts"]["attribute_unmapped"]) == (4, 0)
    assert sorted(rep["trace"]["scores"]["y"]) == [0, 1, 1, 1]
