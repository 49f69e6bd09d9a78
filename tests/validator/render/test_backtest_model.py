"""backtest.json: the committed schema is the model's, an assembled result validates against it and
round-trips, its numbers are evaluation.compare's (checked against sklearn), and bad files are refused."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import average_precision_score, f1_score

from ropewatch_core.errors import InputError
from ropewatch_core.jsonio import utc_iso
from ropewatch_validator.render.backtest_model import (
    SCHEMA_PATH,
    BacktestResult,
    DataSource,
    Person,
    VersionSpec,
    assemble,
    clusters,
    json_schema,
    paired,
)


def result(n: int = 90, n_boot: int = 200) -> BacktestResult:
    rng = np.random.default_rng(0)
    truth = np.where(rng.random(n) < 0.4, "correct", "wrong")
    signal = np.where(truth == "correct", 1.0, -1.0)
    pa = 1 / (1 + np.exp(-(signal + rng.normal(0, 1.5, n))))
    pb = 1 / (1 + np.exp(-(signal + rng.normal(0, 0.8, n))))
    persons = [
        Person(
            frame=i // 3,
            frame_name=f"{i // 3:06d}.jpg",
            box=[1, 2, 30, 60],
            truth=t,
            p_correct={"v1": a, "v2": b},
        )
        for i, (t, a, b) in enumerate(zip(truth, pa, pb))
    ]
    specs = [
        VersionSpec(version="v1", sha256="a" * 64, path="v1.pt", thr=0.5, thr_source="checkpoint"),
        VersionSpec(version="v2", sha256="b" * 64, path="v2.pt", thr=0.4, thr_source="--thr"),
    ]
    source = DataSource(kind="cvat", host="http://cvat.local:8080", jobs=[105])
    return assemble(created=utc_iso(), source=source, specs=specs, persons=persons, n_boot=n_boot)


def test_committed_schema_is_the_models():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == json_schema()


def test_assembled_result_validates_round_trips_and_holds_sklearns_numbers():
    r = result()
    data = json.loads(r.to_json())
    jsonschema.validate(data, json.loads(SCHEMA_PATH.read_text()))
    assert BacktestResult.model_validate_json(r.to_json()) == r
    assert r.data.n_persons == 90 and r.data.n_frames == 30
    truth = np.array([p.truth for p in r.persons])
    pb = np.array([p.p_correct["v2"] for p in r.persons])
    v2 = r.version("v2").metrics
    assert v2.ap == pytest.approx(average_precision_score(truth == "correct", pb))
    pred = np.where(pb >= 0.4, "correct", "wrong")
    assert v2.metric("per_class.wrong.f1") == pytest.approx(f1_score(truth, pred, pos_label="wrong"))
    per_class = {f"per_class.{v}.{m}" for v in ("wrong", "correct") for m in ("precision", "recall", "f1")}
    ci_keys = per_class | {"accuracy", "ap", "flips_per_1000"}
    assert set(r.version("v1").ci) == ci_keys
    (pair,) = r.pairs
    assert (pair.a, pair.b) == ("v1", "v2") and r.pair("v1", "v2") is pair and r.pair("v2", "v1") is None
    assert pair.diffs["accuracy"].estimate == pytest.approx(v2.accuracy - r.version("v1").metrics.accuracy)


def test_unknown_version_and_metric_are_input_errors():
    r = result(n=30, n_boot=20)
    with pytest.raises(InputError, match="no version 'v3'.*v1, v2"):
        r.version("v3")
    with pytest.raises(InputError, match="unknown metric 'f1_wrong'"):
        r.version("v1").metrics.metric("f1_wrong")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["data"]["source"].update(host="http://admin:secret@cvat"), "credentials"),
        (lambda d: d["versions"][0].update(path="/models/v1.pt"), "file name only"),
        (lambda d: d["versions"][1].update(version="v1"), "repeat"),
        (lambda d: d["pairs"][0].update(b="v9"), "not in versions"),
        (lambda d: d["persons"][0]["p_correct"].pop("v2"), "without a score"),
        (lambda d: d.update(created="2026-12-04 10:00"), "UTC"),
        (lambda d: d["versions"][0].update(surprise=1), "surprise"),
    ],
)
def test_bad_files_are_refused_with_the_reason(change, message):
    data = json.loads(result(n=30, n_boot=20).to_json())
    change(data)
    with pytest.raises(ValidationError, match=message):
        BacktestResult.model_validate(data)


def test_paired_turns_a_stored_pair_round_and_computes_a_missing_one_from_the_persons():
    r = result(n=60, n_boot=100)
    stored = r.pair("v1", "v2")
    turned = paired(r, "v2", "v1")
    assert (turned.a, turned.b, turned.mcnemar_p) == ("v2", "v1", stored.mcnemar_p)
    assert turned.n_discordant.a_right_b_wrong == stored.n_discordant.a_wrong_b_right
    for key, d in stored.diffs.items():
        t = turned.diffs[key]
        assert (t.estimate, t.low, t.high) == pytest.approx((-d.estimate, -d.high, -d.low))
    without = r.model_copy(update={"pairs": []})
    assert paired(without, "v1", "v2") == stored  # same persons, resamples and seed
    assert paired(without.model_copy(update={"persons": []}), "v1", "v2") is None


def test_frames_of_different_jobs_are_different_clusters():
    persons = [
        Person(frame=f, truth="wrong", p_correct={"v": 0.1}, job_id=j)
        for j, f in ((1, 0), (1, 0), (2, 0), (None, 0))
    ]
    assert clusters(persons).tolist() == [1, 1, 2, 0]
    r = assemble(
        created=utc_iso(),
        source=DataSource(kind="cvat", host="http://cvat", jobs=[1, 2]),
        specs=[VersionSpec(version="v", thr=0.5, thr_source="checkpoint")],
        persons=persons,
        n_boot=10,
    )
    assert (r.data.n_persons, r.data.n_frames) == (4, 3)
