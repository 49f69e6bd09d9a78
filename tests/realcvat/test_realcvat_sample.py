"""``ropewatch review sample`` and ``review estimate`` against a real CVAT 2.23.1 (issue 19.3): the GT job
holds exactly the sampled frames, and the estimate weights them back to the whole task.

The task: 12 frames, one person each (box P), auto-annotated; the function's log says:
frames 0-2 z = 0.2 (P(correct) = 0.5498, |P - 0.5| <= 0.1: ``uncertain``), frames 3-5 z = 3 decided by
the fast filter (``filter``), frames 6-11 z = 3 by the expert (``rest``); the model says ``correct``
everywhere. ``--size 7 --uncertain-share 0.5 --filter-share 0.25``: uncertain 3 of 3 (round(3.5) capped
at 3, inclusion probability 1), filter 2 of 3 (round(1.75); 2/3), rest 7 - 3 - 2 = 2 of 6 (1/3).
People label the uncertain persons ``wrong`` and the others ``correct``, so by hand: references
3 * 1 + 2 * 1.5 + 2 * 3 = 12; dangerous flips 3 * 1 = 3 -> 250 per 1,000; recall(wrong) = 0 / 3 = 0;
recall(correct) = 9 / 9 = 1; F1(correct) = 2 * 9 / (2 * 9 + 3 + 0) = 18 / 21. Inside each stratum every
sampled frame has the same counts, so every standard error is 0.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest

from ropewatch_validator.cli.main import main
from ropewatch_validator.ops.history import open_store
from ropewatch_validator.ops.loop_store import stored_sample
from support.cvat_rest import LABELS, box, jpeg
from support.tracegen import inference_record

P = [20, 20, 80, 140]
Z = {**dict.fromkeys(range(3), 0.2), **dict.fromkeys(range(3, 12), 3.0)}


def _conn_args(real_cvat, tmp_path):
    return [
        "--server-host",
        real_cvat.url,
        "--auth",
        f"{real_cvat.user}:{real_cvat.password}",
        "--db",
        str(tmp_path / "history.sqlite"),
    ]


def test_sample_creates_the_gt_job_and_estimate_weights_it(real_cvat, validate, tmp_path, capsys):
    rest = real_cvat.rest
    files = {f"sm{i:02d}.jpg": jpeg(320, 240, 1100 + i) for i in range(12)}
    task = rest.create_task(real_cvat.name("sample"), LABELS, files)
    job = rest.jobs(task["id"])[0]["id"]
    ids = rest.ids(task["id"])
    rest.put_annotations(job, [box(ids, f, P, "auto", "correct") for f in range(12)])
    when = datetime.now(timezone.utc) - timedelta(hours=1)
    names = sorted(files)
    records = []
    for f in range(12):
        rec = inference_record(
            sha256=hashlib.sha256(files[names[f]]).hexdigest(),
            pixel_sha256=None,
            width=320,
            height=240,
            boxes=[P],
            logits=[Z[f]],
            timestamp=when,
        )
        if 3 <= f <= 5:
            rec["detections"][0] |= {"stage": "filter", "p_filter": rec["detections"][0]["p_correct"]}
        records.append(rec)
    log = tmp_path / "fn.log"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    code, traced = validate(job, "--logs", str(log), "--frame-cache", str(tmp_path / "cache"))
    assert traced["trace"]["frames"]["joined"] == 12
    traced_path = tmp_path / "traced.json"
    traced_path.write_text(json.dumps(traced))
    capsys.readouterr()

    args = ["review", "sample", "--task", str(task["id"]), "--size", "7", "--traced", str(traced_path)]
    args += [
        "--uncertain-share",
        "0.5",
        "--filter-share",
        "0.25",
        "--seed",
        "7",
        *_conn_args(real_cvat, tmp_path),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "uncertain       3 of      3 frames  inclusion probability 1.0000" in out
    assert "filter          2 of      3 frames  inclusion probability 0.6667" in out
    assert "rest            2 of      6 frames  inclusion probability 0.3333" in out
    store = open_store(str(tmp_path / "history.sqlite"))
    gt, sampled = stored_sample(store, real_cvat.url, task["id"])
    store.close()
    frames = [s.frame for s in sampled]
    assert f"Ground Truth job {gt} on 7 frames" in out
    assert frames[:3] == [0, 1, 2] and set(frames[3:5]) <= {3, 4, 5} and set(frames[5:]) <= set(range(6, 12))
    assert [s.inclusion_prob for s in sampled] == pytest.approx([1, 1, 1, 2 / 3, 2 / 3, 1 / 3, 1 / 3])
    # the GT job CVAT made holds exactly these frames
    assert rest.get(f"/api/jobs/{gt}")["type"] == "ground_truth"
    assert rest.get(f"/api/jobs/{gt}/data/meta")["included_frames"] == frames
    # a second sample of the task is refused: CVAT allows one GT job
    assert main(args) == 2
    assert f"task {task['id']} already has a Ground Truth job ({gt})" in capsys.readouterr().err

    # people annotate the GT job; validate against it; estimate for the whole task
    rest.put_annotations(gt, [box(ids, f, P, "manual", "wrong" if f < 3 else "correct") for f in frames])
    code, rep = validate(job, "--gt-job", "auto")
    assert rep["source"]["reference_job"] == gt and rep["counts"]["frames_evaluated"] == 7
    path = tmp_path / "gt-report.json"
    path.write_text(json.dumps(rep))
    capsys.readouterr()
    assert (
        main(["review", "estimate", str(path), "--db", str(tmp_path / "history.sqlite"), "--format", "json"])
        == 0
    )
    est = json.loads(capsys.readouterr().out)
    assert (est["frames_sampled"], est["frames_in_task"], est["gt_job"]) == (7, 12, gt)
    assert est["references"]["value"] == pytest.approx(12.0)
    assert est["dangerous_flips_per_1000"] == {
        "value": pytest.approx(250.0),
        "se": 0.0,
        "low": pytest.approx(250.0),
        "high": pytest.approx(250.0),
    }
    assert est["per_class"]["wrong"]["recall"]["value"] == 0.0
    assert est["per_class"]["correct"]["recall"]["value"] == pytest.approx(1.0)
    assert est["per_class"]["correct"]["f1"]["value"] == pytest.approx(18 / 21)
    # unweighted, the sampled frames alone would say 3 flips in 7 persons: 428.6 per 1,000
    assert rep["errors"]["flip_wrong_to_correct"] == 3 and rep["counts"]["references"] == 7
