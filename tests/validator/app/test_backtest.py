"""`ropewatch backtest` end to end on the sandbox CVAT (issue 17.1): two demo checkpoints of different
seeds on the same jobs; their figures equal validate-job's when their outputs are loaded as `auto`
shapes; a run killed with SIGKILL resumes to the same JSON; the 3-class head beside the binary one;
thresholds from --thr and from a validation split; person detectors on the same frames."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support

from ropewatch_core.model.checkpoint import demo_checkpoint, save_checkpoint
from ropewatch_validator.app.backtest import split_frames
from ropewatch_validator.cli.main import main as ropewatch
from ropewatch_validator.learn.backtest import CACHE_NAME
from ropewatch_validator.render.backtest_model import BacktestResult
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.sandbox import synthetic
from support.images import noise_png

JOBS = ((101, 11), (102, 12))
N_FRAMES = 5


@pytest.fixture
def cvat():
    state = sandbox.CvatState()
    for job, task in JOBS:
        gen = synthetic.generate(
            N_FRAMES, job_id=job, task_id=task, width=320, height=240, seed=job, extras=False
        )
        gen.frames_bytes = {n: noise_png(100 * job + n) for n in range(N_FRAMES)}
        state.add(gen)
    with sandbox.serve(state) as (url, st):
        yield url, st


@pytest.fixture
def two_versions(tiny_config, tmp_path):
    paths = []
    for seed, name in ((1, "demo-a"), (2, "demo-b")):
        path = tmp_path / f"{name}.pt"
        save_checkpoint(demo_checkpoint(tiny_config, version=name, seed=seed, thr=0.5), path)
        paths.append(path)
    return paths


def backtest(url, out, checkpoints, *extra, cache="cache"):
    args = [a for p in checkpoints for a in ("--checkpoint", str(p))]
    return ropewatch(
        [
            "backtest",
            *args,
            *[a for job, _ in JOBS for a in ("--job", str(job))],
            "--server-host",
            url,
            "--out",
            str(out),
            "--frame-cache",
            str(cache),
            "--n-boot",
            "200",
            "--quiet",
            *extra,
        ]
    )


def without_created(path: Path) -> dict:
    """backtest.json without what differs between two runs on the same data: when it was made and the
    measured milliseconds (each cache line keeps the run's own)."""
    body = json.loads(path.read_text())
    body.pop("created")
    for version in body["versions"]:
        assert version["timing"].pop("ms_per_frame") > 0
    return body


def load_as_auto_shapes(state, result: BacktestResult, version: str) -> None:
    """Replace every job's predictions with ``version``'s decisions on the reference boxes."""
    thr = result.version(version).thr
    for job, task in JOBS:
        person_id, _helmet, spec_id = synthetic.label_ids(task)
        shapes = [s for s in state.annotations[job]["shapes"] if s["source"] == "manual"]
        frame_of = {s["id"]: s["frame"] for s in shapes}
        next_id = max(frame_of) + 1
        for person in result.persons:
            if person.job_id != job:
                continue
            value = "correct" if person.p_correct[version] >= thr else "wrong"
            shapes.append(
                synthetic._rect(
                    next_id, frame_of[person.object_id], person.box, "auto", value, 1.0, person_id, spec_id
                )
            )
            next_id += 1
        state.annotations[job] = {**state.annotations[job], "shapes": shapes}


def test_two_versions_equal_validate_job_on_their_auto_shapes(cvat, two_versions, tmp_path):
    url, state = cvat
    assert backtest(url, tmp_path / "first", two_versions) == 0
    first = BacktestResult.load(tmp_path / "first" / "backtest.json")
    # random-init demo models: a threshold at each one's median score makes both classes predicted
    medians = {v: float(np.median([p.p_correct[v] for p in first.persons])) for v in first.names()}
    args = [
        a
        for path, v in zip(two_versions, first.names())
        for a in ("--checkpoint", str(path), "--thr", str(medians[v]))
    ]
    assert backtest(url, tmp_path / "bt", [], *args) == 0
    result = BacktestResult.load(tmp_path / "bt" / "backtest.json")
    assert [result.version(v).thr_source for v in result.names()] == ["--thr", "--thr"]
    page = (tmp_path / "bt" / "backtest.html").read_text()
    assert "demo-a" in page and "demo-b" in page and "frame not shown" not in page
    assert 'href="data:image/jpeg;base64,' in page  # the card's sample crops, cut from the cached frames
    assert result.names() == ["demo-a", "demo-b"] and [(p.a, p.b) for p in result.pairs] == [
        ("demo-a", "demo-b")
    ]
    manual = sum(
        1
        for job, _ in JOBS
        for s in state.annotations[job]["shapes"]
        if s["source"] == "manual" and s["type"] == "rectangle" and s["attributes"]
    )
    assert result.data.n_persons == manual and result.data.skipped == {}
    assert {p.job_id for p in result.persons} == {101, 102}
    a, b = (np.array([p.p_correct[v] for p in result.persons]) for v in ("demo-a", "demo-b"))
    assert not np.allclose(a, b)  # different seeds, different scores
    truth = [p.truth for p in result.persons]
    for version in result.names():
        v = result.version(version)
        load_as_auto_shapes(state, result, version)
        report_dir = tmp_path / f"reports-{version}"
        for job, _ in JOBS:
            args = ["validate-job", str(job), "--server-host", url, "--out", str(report_dir)]
            assert ropewatch([*args, "--db", str(tmp_path / f"{version}.sqlite"), "--format", "json"]) == 0
        reports = [
            json.loads((report_dir / f"job-{job}" / "report.json").read_text())["attribute"]
            for job, _ in JOBS
        ]
        confusion = np.sum([r["confusion_matrix"] for r in reports], axis=0)
        assert reports[0]["labels"] == ["wrong", "correct"] == v.metrics.values
        assert confusion.tolist() == v.metrics.confusion
        # per class P/R/F1 by hand from validate-job's pooled matrix, and sklearn on the persons
        pred = ["correct" if p.p_correct[version] >= v.thr else "wrong" for p in result.persons]
        sk = precision_recall_fscore_support(truth, pred, labels=["wrong", "correct"], zero_division=np.nan)
        for i, value in enumerate(("wrong", "correct")):
            tp = confusion[i, i]
            precision, recall = tp / confusion[:, i].sum(), tp / confusion[i, :].sum()
            got = v.metrics.per_class[value]
            assert math.isclose(got.precision, precision) and math.isclose(got.recall, recall)
            assert math.isclose(got.f1, 2 * precision * recall / (precision + recall))
            assert got.support == confusion[i, :].sum() == sk[3][i]
            assert math.isclose(got.f1, sk[2][i])
        assert math.isclose(v.metrics.accuracy, np.trace(confusion) / confusion.sum())
    # one job alone: the backtest's figures are validate-job's report figures, key for key
    args = ["backtest", "--checkpoint", str(two_versions[1]), "--thr", str(medians["demo-b"]), "--job", "101"]
    args += ["--server-host", url, "--out", str(tmp_path / "one"), "--frame-cache", "cache"]
    assert ropewatch([*args, "--n-boot", "50", "--quiet"]) == 0
    one = BacktestResult.load(tmp_path / "one" / "backtest.json").version("demo-b")
    report = json.loads((tmp_path / "reports-demo-b" / "job-101" / "report.json").read_text())["attribute"]
    assert report["accuracy"] == one.metrics.accuracy and report["confusion_matrix"] == one.metrics.confusion
    for value in ("wrong", "correct"):
        assert report["per_class"][value] == one.metrics.per_class[value].model_dump()


def test_kill_9_resumes_to_the_same_json_and_a_new_version_scores_alone(cvat, two_versions, tmp_path):
    url, _ = cvat
    cache = tmp_path / "cache"
    args = [a for p in two_versions for a in ("--checkpoint", str(p))]
    args += [a for job, _ in JOBS for a in ("--job", str(job))]
    cmd = [sys.executable, "-m", "ropewatch_validator", "backtest", *args, "--server-host", url]
    cmd += ["--out", str(tmp_path / "killed"), "--frame-cache", str(cache), "--n-boot", "200", "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    scores = cache / CACHE_NAME
    deadline = time.monotonic() + 300
    while not (scores.is_file() and scores.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    total = 2 * len(JOBS) * N_FRAMES  # a line per (version, frame)
    done = scores.read_text().count("\n")
    assert 1 <= done < total and not (tmp_path / "killed" / "backtest.json").exists()
    assert backtest(url, tmp_path / "resumed", two_versions, cache=cache) == 0
    assert scores.read_text().count("\n") == total  # only what was missing was scored
    assert backtest(url, tmp_path / "fresh", two_versions, cache=tmp_path / "other-cache") == 0
    assert without_created(tmp_path / "resumed" / "backtest.json") == without_created(
        tmp_path / "fresh" / "backtest.json"
    )
    third = tmp_path / "demo-c.pt"
    save_checkpoint(demo_checkpoint(two_versions_config(two_versions[0]), version="demo-c", seed=3), third)
    assert backtest(url, tmp_path / "three", [*two_versions, third], cache=cache) == 0
    assert scores.read_text().count("\n") == total + len(JOBS) * N_FRAMES  # one new line per frame
    three = BacktestResult.load(tmp_path / "three" / "backtest.json")
    assert [(p.a, p.b) for p in three.pairs] == [
        ("demo-a", "demo-b"),
        ("demo-a", "demo-c"),
        ("demo-b", "demo-c"),
    ]
    resumed = BacktestResult.load(tmp_path / "resumed" / "backtest.json")
    assert three.version("demo-b").metrics == resumed.version("demo-b").metrics


def two_versions_config(path: Path):
    from ropewatch_core.model.checkpoint import load_checkpoint

    return load_checkpoint(path).config


def test_three_class_head_beside_the_binary_one_on_a_dataset(
    cvat, two_versions, fixed_logit_checkpoint, tmp_path
):
    url, _ = cvat
    data = tmp_path / "ds"
    assert ropewatch(["dataset", "build", "101", "102", "--server-host", url, "--output-dir", str(data)]) == 0
    three = tmp_path / "three.pt"
    bias = (-1.0, 0.4, 0.2)  # unknown, correct, wrong whatever the frame
    save_checkpoint(
        fixed_logit_checkpoint(labels=("unknown", "correct", "wrong"), bias=bias, version="v20260511"), three
    )
    out = tmp_path / "bt"
    args = ["backtest", str(two_versions[0]), str(three), "--dataset", str(data), "--dataset-split", "all"]
    assert ropewatch([*args, "--out", str(out), "--n-boot", "100", "--quiet"]) == 0
    result = BacktestResult.load(out / "backtest.json")
    v = result.version("v20260511")
    assert v.labels == ["unknown", "correct", "wrong"] and v.head == "Linear(16, 3)"
    assert result.version("demo-a").head == "Linear(16, 2)"
    e = np.exp(bias)
    assert {round(p.p_correct["v20260511"], 6) for p in result.persons} == {round(e[1] / e.sum(), 6)}
    rows = sum(1 for split in ("train", "val") for _ in (data / f"{split}_manifest.csv").open()) - 2
    assert result.data.n_persons == rows and result.data.source.kind == "dataset"
    assert len(result.pairs) == 1 and result.pairs[0].b == "v20260511"


def test_old_version_without_thr_needs_one_and_the_split_picks_the_f1_best(
    cvat, two_versions, tmp_path, capsys
):
    url, _ = cvat
    raw = copy.deepcopy(demo_checkpoint(two_versions_config(two_versions[0]), version="v9", seed=5))
    raw.pop("thr")
    old = tmp_path / "v9.pt"
    save_checkpoint(raw, old)
    assert backtest(url, tmp_path / "no", [two_versions[0], old]) == 2
    line = capsys.readouterr().err.strip()
    hint = "give --thr X after it, or --thr-from-split FRACTION"
    assert line == f"ropewatch backtest: checkpoint {old} stores no thr: {hint}"
    args = ["--checkpoint", str(two_versions[0]), "--checkpoint", str(old), "--thr", "0.47"]
    assert backtest(url, tmp_path / "given", [], *args) == 0
    given = BacktestResult.load(tmp_path / "given" / "backtest.json")
    assert (given.version("v9").thr, given.version("v9").thr_source) == (0.47, "--thr")
    assert (given.version("demo-a").thr, given.version("demo-a").thr_source) == (0.5, "checkpoint")
    assert backtest(url, tmp_path / "split", [two_versions[0], old], "--thr-from-split", "0.4") == 0
    split = BacktestResult.load(tmp_path / "split" / "backtest.json")
    v9 = split.version("v9")
    assert v9.thr_source == "validation split" and split.version("demo-a").thr_source == "checkpoint"
    # the oracle: brute-force F1 over every candidate threshold on the split's frames, from the full run
    order = list(dict.fromkeys((p.job_id, p.frame) for p in given.persons))  # the backtest's frame order
    chooser = split_frames(len(order), 0.4, 0)
    calib = [p for p in given.persons if chooser[order.index((p.job_id, p.frame))]]
    rest = [p for p in given.persons if not chooser[order.index((p.job_id, p.frame))]]
    truth = [p.truth for p in calib]
    best = max(
        sorted({p.p_correct["v9"] for p in calib}, reverse=True),
        key=lambda t: f1_score(
            truth,
            ["correct" if p.p_correct["v9"] >= t else "wrong" for p in calib],
            pos_label="correct",
            zero_division=0,
        ),
    )
    assert math.isclose(v9.thr, best, rel_tol=1e-9)
    assert split.data.n_persons == len(rest) and split.data.skipped == {"threshold_split": len(calib)}


def test_detectors_are_scored_on_the_same_frames(cvat, two_versions, person_detector_weights, tmp_path):
    url, state = cvat
    arch = "fasterrcnn_mobilenet_v3_large_320_fpn"
    detector = f"{arch}:{person_detector_weights}"
    assert backtest(url, tmp_path / "bt", two_versions[:1], "--with-detector", detector) == 0
    result = BacktestResult.load(tmp_path / "bt" / "backtest.json")
    (d,) = result.detectors
    reference = sum(
        1
        for job, _ in JOBS
        for s in state.annotations[job]["shapes"]
        if s["source"] == "manual"
        and s["type"] == "rectangle"
        and s["label_id"] == synthetic.label_ids(dict(JOBS)[job])[0]
    )
    assert d.arch == arch and d.weights == person_detector_weights.name and d.n_reference == reference
    lines = [json.loads(x) for x in (tmp_path / "cache" / CACHE_NAME).read_text().splitlines()]
    dets = [det for row in lines if "det" in row for det in row["det"]]
    assert d.n_detected == sum(1 for det in dets if det[4] >= 0.5) > 0
    tp = d.recall * d.n_reference
    assert math.isclose(tp, round(tp)) and math.isclose(d.precision * d.n_detected, tp)
    assert 0 <= d.ap <= d.recall + 1e-12 and d.ms_per_frame > 0
    if len({det[4] for det in dets}) == 1:  # every score tied (the trick weights): one step, AP = R·P
        assert math.isclose(d.ap, d.recall * d.precision)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--band", "0.2,0.8"], "--band belongs to a --filter: give the filter first"),
        (["--filter", "f.pt", "--band", "0.8,0.2"], "--band needs 0 <= LO <= HI <= 1"),
        (["--dataset", "x"], "give either a CVAT scope"),
        (["--with-detector", "yolo:x.pt"], "--with-detector takes ARCH:WEIGHTS"),
        (["--thr-from-split", "1.5"], "--thr-from-split takes a fraction in (0, 1)"),
        (["--device", "warp9"], "--device warp9: "),
    ],
)
def test_refusals_are_one_line_exit_2(cvat, two_versions, tmp_path, capsys, extra, expected):
    url, _ = cvat
    thr_less = extra[:1] == ["--thr-from-split"]
    if thr_less:
        raw = demo_checkpoint(two_versions_config(two_versions[0]), version="v9")
        raw.pop("thr")
        save_checkpoint(raw, tmp_path / "v9.pt")
    versions = [tmp_path / "v9.pt"] if thr_less else two_versions
    assert backtest(url, tmp_path / "bt", versions, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ropewatch backtest: ") and expected in err[0]
    assert not (tmp_path / "bt").exists() and not (tmp_path / "cache" / CACHE_NAME).exists()


def manual_frames(state):
    """(job, frame) -> (frame bytes, [(shape id, box)]) of the valued manual person boxes."""
    out: dict = {}
    for job, _ in JOBS:
        for s in state.annotations[job]["shapes"]:
            if s["source"] == "manual" and s["type"] == "rectangle" and s["attributes"]:
                frame = out.setdefault((job, s["frame"]), (state.frames[(job, s["frame"])], []))
                frame[1].append((s["id"], s["points"]))
    return out


def test_cascade_decides_as_the_deployed_function_does(cvat, two_versions, tiny_filter_dict, tmp_path):
    from ropewatch_core.image import load_frame
    from ropewatch_core.model.fast_filter import load_filter
    from ropewatch_core.model.pipeline import Predictor

    url, state = cvat
    filt = tmp_path / "filter.pt"
    save_checkpoint(tiny_filter_dict, filt)
    frames = manual_frames(state)
    f = load_filter(filt)
    p = np.concatenate(
        [
            f.p_correct(load_frame(data).rgb, np.array([b for _, b in boxes]))[1]
            for data, boxes in frames.values()
        ]
    )
    lo, hi = (round(float(q), 6) for q in np.quantile(p, [0.3, 0.7]))  # a band that decides and defers
    expert = two_versions[0]
    args = [
        "--checkpoint",
        str(expert),
        "--checkpoint",
        str(expert),
        "--filter",
        str(filt),
        "--band",
        f"{lo},{hi}",
    ]
    assert backtest(url, tmp_path / "bt", [], *args) == 0
    result = BacktestResult.load(tmp_path / "bt" / "backtest.json")
    alone, cascade = result.versions
    assert cascade.version == f"demo-a+filter-v1@{lo:g}-{hi:g}" and cascade.cascade.band == (lo, hi)
    assert cascade.cascade.filter_sha256 == f.sha256 and alone.cascade is None
    banded = tmp_path / "banded.pt"  # the function reads the band from the filter file
    save_checkpoint({**tiny_filter_dict, "band": [lo, hi]}, banded)
    deployed, plain = Predictor(str(expert), filter_path=str(banded)), Predictor(str(expert))
    said: dict = {}
    for (job, _), (data, boxes) in frames.items():
        b = np.array([box for _, box in boxes])
        for (sid, _), d, e in zip(boxes, deployed.run(data, b).detections, plain.run(data, b).detections):
            said[(job, sid)] = (d.value, d.stage, e.value)
    stages = set()
    for person in result.persons:
        value, stage, expert_value = said[(person.job_id, person.object_id)]
        pc = person.p_correct[cascade.version]
        assert ("correct" if pc >= cascade.thr else "wrong") == value
        assert ("correct" if person.p_correct[alone.version] >= alone.thr else "wrong") == expert_value
        if stage == "filter":  # the filter decided: P is 1 or 0 (module doc of app/backtest)
            assert pc == (1.0 if value == "correct" else 0.0)
        else:  # deferred: the expert's own P, the same as the expert judged alone
            assert pc == person.p_correct[alone.version]
        stages.add(stage)
    assert stages == {"filter", "expert"}


def test_unwritable_output_is_one_line_and_the_scores_are_kept(cvat, two_versions, tmp_path, capsys):
    url, _ = cvat
    (tmp_path / "taken").write_text("a file where the folder should go")
    assert backtest(url, tmp_path / "taken", two_versions) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ropewatch backtest: cannot write {tmp_path / 'taken'}")
    assert (tmp_path / "cache" / CACHE_NAME).read_text().count("\n") == 2 * len(JOBS) * N_FRAMES
