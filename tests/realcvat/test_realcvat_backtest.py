"""Item 17.1 on a real CVAT: `ropewatch backtest` of two demo checkpoints (different seeds) on one task's
reviewed persons gives, for each version, the figures validate-job computes once that version's
decisions are uploaded as the job's `auto` shapes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ropewatch_core.model.checkpoint import demo_checkpoint, save_checkpoint
from ropewatch_validator.cli.main import main as ropewatch
from ropewatch_validator.render.backtest_model import BacktestResult
from support.cvat_rest import LABELS, box

BOXES = [[10, 20, 60, 130], [100, 40, 150, 170], [200, 30, 260, 200]]  # three persons a frame


def noise_jpeg(seed: int) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=95)
    return out.getvalue()


def test_backtest_equals_validate_job_on_real_cvat(real_cvat, validate, tiny_config, tmp_path):
    rest = real_cvat.rest
    task = rest.create_task(
        real_cvat.name("backtest"), LABELS, {f"bt{i}.jpg": noise_jpeg(900 + i) for i in range(4)}
    )
    job = rest.jobs(task["id"])[0]["id"]
    ids = rest.ids(task["id"])
    values = ["wrong", "correct", "correct"]
    rest.put_annotations(
        job, [box(ids, f, b, "manual", values[(f + k) % 3]) for f in range(4) for k, b in enumerate(BOXES)]
    )
    paths = []
    for seed, name in ((1, "demo-a"), (2, "demo-b")):
        paths.append(tmp_path / f"{name}.pt")
        save_checkpoint(demo_checkpoint(tiny_config, version=name, seed=seed), paths[-1])
    common = ["--task", str(task["id"]), "--server-host", real_cvat.url, "--auth"]
    common += [f"{real_cvat.user}:{real_cvat.password}", "--frame-cache", str(tmp_path / "cache"), "--quiet"]
    assert ropewatch(["backtest", *map(str, paths), *common, "--out", str(tmp_path / "first")]) == 0
    first = BacktestResult.load(tmp_path / "first" / "backtest.json")
    assert first.data.n_persons == 12 and first.data.source.host == real_cvat.url
    medians = {v: float(np.median([p.p_correct[v] for p in first.persons])) for v in first.names()}
    args = [
        a for p, v in zip(paths, first.names()) for a in ("--checkpoint", str(p), "--thr", str(medians[v]))
    ]
    assert ropewatch(["backtest", *args, *common, "--out", str(tmp_path / "bt")]) == 0
    result = BacktestResult.load(tmp_path / "bt" / "backtest.json")
    # the persons' object ids are the manual shapes' ids as the backtest read them
    frame_of = {s["id"]: s["frame"] for s in rest.get(f"/api/jobs/{job}/annotations")["shapes"]}
    manual = [box(ids, f, b, "manual", values[(f + k) % 3]) for f in range(4) for k, b in enumerate(BOXES)]
    for version in result.names():
        v = result.version(version)
        auto = [
            box(
                ids,
                frame_of[p.object_id],
                p.box,
                "auto",
                "correct" if p.p_correct[version] >= v.thr else "wrong",
            )
            for p in result.persons
        ]
        rest.put_annotations(job, [*manual, *auto])  # replaces the job's shapes
        code, report = validate(job, "--force")
        assert code in (0, 1) and report is not None
        attribute = report["attribute"]
        assert attribute["confusion_matrix"] == v.metrics.confusion
        assert attribute["accuracy"] == v.metrics.accuracy
        for value in ("wrong", "correct"):
            assert attribute["per_class"][value] == v.metrics.per_class[value].model_dump()
