"""Property tests (Hypothesis): whatever a CVAT server or a log file holds, the readers either read it
or refuse it with one line; they never crash with a KeyError, hang or half-read.

Bounded by ``max_examples`` so CI stays fast (about 10 s in all)."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ropewatch_validator.cvat import client, fetch
from ropewatch_validator.trace.logs import read_logs

HOST = "http://cvat.test:8080"
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def maybe(strategy):
    """A field as CVAT sends it, or any other JSON value in its place, or missing (``...``)."""
    return st.one_of(strategy, json_values, st.just(...))


def body(**fields):
    return st.fixed_dictionaries({k: maybe(v) for k, v in fields.items()}).map(
        lambda d: {k: v for k, v in d.items() if v is not ...}
    )


frame_no = st.integers(-3, 12)
attribute = body(spec_id=st.sampled_from([1, 2, 99]), value=st.sampled_from(["wrong", "correct", "x"]))
points = st.lists(st.floats(-10, 2000, allow_nan=False), min_size=4, max_size=4)
shape = body(
    type=st.sampled_from(["rectangle", "polygon"]),
    frame=frame_no,
    label_id=st.sampled_from([10, 11, 77]),
    points=points,
    source=st.sampled_from(["auto", "manual", "semi-auto", "odd"]),
    attributes=st.lists(attribute, max_size=2),
    occluded=st.booleans(),
    outside=st.booleans(),
    score=st.floats(0, 1),
    id=st.integers(1, 50),
)
track = body(
    label_id=st.sampled_from([10, 11]),
    frame=frame_no,
    shapes=st.lists(shape, max_size=3),
    attributes=st.lists(attribute, max_size=2),
    source=st.sampled_from(["auto", "manual"]),
)
annotations = body(
    shapes=st.lists(shape, max_size=5), tracks=st.lists(track, max_size=2), tags=st.lists(json_values)
)
label = body(
    id=st.sampled_from([10, 11]),
    name=st.sampled_from(["person", "helmet"]),
    attributes=st.lists(body(id=st.sampled_from([1, 2]), name=st.just("safety_rope_use"),
                             values=st.just(["wrong", "correct"])), max_size=2),
    sublabels=st.lists(body(id=st.integers(12, 14), name=st.text(max_size=4)), max_size=1),
)  # fmt: skip
meta = body(
    frames=st.lists(body(name=st.text(max_size=5), width=st.integers(1, 4000), height=st.integers(1, 4000)),
                    max_size=10),
    deleted_frames=st.lists(frame_no, max_size=3),
    included_frames=st.lists(frame_no, max_size=3),
    frame_filter=st.sampled_from(["", "step=2", "step=x"]),
    chunks_updated_date=st.text(max_size=4),
)  # fmt: skip
job = body(
    task_id=st.integers(1, 5),
    start_frame=st.integers(0, 3),
    stop_frame=st.integers(0, 12),
    updated_date=st.just("2026-11-20T10:00:00Z"),
    type=st.sampled_from(["annotation", "ground_truth"]),
)


def read_or_refuse(*bodies):
    try:
        data = fetch.job_tables(HOST, 1, *bodies)
    except client.FetchError as exc:
        message = str(exc)
        assert message.startswith(f"job 1 on {HOST}: ") and "\n" not in message
        return None
    assert isinstance(data.shapes, pd.DataFrame) and isinstance(data.frames, pd.DataFrame)
    live = set(data.frames.loc[~data.frames["deleted"], "frame"])
    assert set(data.shapes["frame"]) <= live  # nothing off the job's live frames is evaluated
    assert all(isinstance(v, int) and v > 0 for v in data.dropped.values())
    return data


HUGE_TRACK = {
    "tracks": [
        {
            "label_id": 10,
            "shapes": [
                {"frame": -(10**20), "type": "rectangle", "points": [0, 0, 1, 1]},
                {"frame": 2, "type": "rectangle", "points": [0, 0, 1, 1]},
            ],
        }
    ]
}


@FUZZ
@given(job, st.lists(label, max_size=3), meta, annotations)
@example(
    {"start_frame": 0, "stop_frame": 10**20}, [], {"frames": [{}]}, {"shapes": []}
)  # a range never ending
@example(
    {"start_frame": 0, "stop_frame": 5}, [{"id": 10, "name": "person"}], {"frames": [{}] * 6}, HUGE_TRACK
)
def test_job_bodies_near_cvat_are_read_or_refused_in_one_line(job_body, labels, meta_body, annotations_body):
    read_or_refuse(job_body, labels, meta_body, annotations_body)


@FUZZ
@given(json_values, json_values, json_values, json_values)
def test_any_json_in_place_of_the_job_bodies_is_read_or_refused(
    job_body, labels, meta_body, annotations_body
):
    read_or_refuse(job_body, labels, meta_body, annotations_body)


def fake_endpoint(pages):
    """A generated-API method stand-in that answers ``pages`` in turn (as raw JSON bytes)."""
    answers = iter(pages)

    def method(**kwargs):
        data = json.dumps(next(answers, {"count": 0, "next": None, "results": []})).encode()
        return None, SimpleNamespace(data=data, status=200, headers={}, url="/api/labels")

    return method


page = body(
    count=st.integers(0, 8),
    next=st.sampled_from([None, "http://cvat.test/api/labels?page=2", "http://cvat.test/api/labels?page=3"]),
    results=st.lists(st.fixed_dictionaries({"id": st.integers(1, 9)}), max_size=3),
)


@FUZZ
@given(st.lists(page | json_values, min_size=1, max_size=6))
def test_paging_always_ends_with_the_items_or_one_line(pages):
    conn = client.Connection(host=HOST, api_client=None, deadline_s=5.0)
    calls = []
    method = fake_endpoint(pages)

    def counted(**kwargs):
        calls.append(kwargs["page"])
        return method(**kwargs)

    try:
        items = client.list_all(conn, "labels", counted)
    except client.FetchError as exc:
        assert str(exc).startswith(f"labels on {HOST}") and "\n" not in str(exc)
        return
    assert isinstance(items, list) and calls == list(range(1, len(calls) + 1))
    assert len(calls) <= len(pages) + 1  # it never asks past a page whose `next` is repeated or empty


detection = body(
    box=points,
    label=st.just("person"),
    safety_rope_use=st.sampled_from(["wrong", "x"]),
    p_correct=st.floats(0, 1),
    logit=st.floats(-5, 5),
)
log_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
record = body(
    event=st.sampled_from(["inference", "request_failed", "other"]),
    request_id=st.text(max_size=4),
    timestamp=st.sampled_from(["2026-11-23T10:00:00Z", "2026-11-23 10:00:00 +0000 UTC", "x"]),
    image=body(sha256=st.text(max_size=4), pixel_sha256=st.text(max_size=4), width=st.integers(1, 9),
               height=st.integers(1, 9)),
    model_version=st.text(max_size=3),
    thr=st.floats(0, 1),
    detections=st.lists(detection, max_size=2),
)  # fmt: skip


@FUZZ
@given(st.lists(record.map(json.dumps) | json_values.map(json.dumps) | log_text, max_size=8))
def test_every_log_line_is_counted_once_and_a_bad_one_never_aborts(lines):
    text = "\n".join(line.replace("\n", " ").replace("\r", " ") for line in lines)
    data = read_logs(["-"], stdin=io.StringIO(text))
    s = data.stats
    assert s.lines == len(io.StringIO(text).readlines())
    assert s.records + s.skipped == s.lines
    assert s.inference + s.failed + s.other_events + s.other_frames + s.malformed == s.records
    assert len(data.requests) == s.inference and len(s.malformed_examples) == min(s.malformed, 10)
    assert str(getattr(data.requests["timestamp"].dtype, "tz", "UTC")) == "UTC"
