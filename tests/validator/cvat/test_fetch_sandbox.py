"""ropewatch_validator.cvat.fetch through cvat-sdk against the sandbox CVAT over real HTTP.

Every body is checked against CVAT's schema.
"""

from __future__ import annotations

import json
import math
import urllib.request

import pytest

from ropewatch_validator.cvat import client, fetch, parse
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.sandbox import synthetic


@pytest.fixture
def cvat(cvat_assets):
    state = sandbox.CvatState()
    sandbox.seed_from_assets(state, cvat_assets)
    state.add(synthetic.generate(12, deleted=(3,)))
    state.add(synthetic.generate(12, job_id=102, task_id=12, with_score=False, seed=1))
    with sandbox.serve(state) as (url, st):
        yield url, st


def get(url: str, path: str) -> object:
    with urllib.request.urlopen(url + path) as response:
        return json.loads(response.read())


def test_every_sandbox_body_is_valid_under_cvat_schema(cvat, cvat_schema_errors):
    url, state = cvat
    assert cvat_schema_errors("About", get(url, "/api/server/about")) == []
    assert cvat_schema_errors("PaginatedJobReadList", get(url, "/api/jobs?page_size=100")) == []
    assert cvat_schema_errors("PaginatedLabelList", get(url, "/api/labels?job_id=101&page_size=3")) == []
    for jid in sorted(state.annotations):
        assert cvat_schema_errors("JobRead", get(url, f"/api/jobs/{jid}")) == [], jid
        assert cvat_schema_errors("LabeledData", get(url, f"/api/jobs/{jid}/annotations")) == [], jid
        assert cvat_schema_errors("DataMetaRead", get(url, f"/api/jobs/{jid}/data/meta")) == [], jid
    for tid in state.tasks:
        assert cvat_schema_errors("TaskRead", get(url, f"/api/tasks/{tid}")) == [], tid


def test_reads_every_real_dumped_job(cvat, cvat_assets):
    url, state = cvat
    dumped = json.loads((cvat_assets / "annotations.json").read_text())["job"]
    conn = client.connect(client.ConnectionSettings(url))
    for jid, body in dumped.items():
        job = fetch.fetch_job(conn, int(jid))
        rects = sum(s["type"] == "rectangle" for s in body["shapes"])
        others = sum(s["type"] != "rectangle" for s in body["shapes"])
        assert sum(job.shapes["track_id"].isna()) == rects
        assert sum(v for k, v in job.skipped.items() if not k.startswith("track") and k != "tag") == others
        assert job.skipped.get("tag", 0) == len(body["tags"])


def test_generated_job_tables(cvat):
    url, _ = cvat
    job = fetch.fetch_job(client.connect(client.ConnectionSettings(url)), 101)
    assert job.task_id == 11 and job.job_updated_date == synthetic.UPDATED and job.has_score
    assert bool(job.frames.set_index("frame").loc[3, "deleted"]) and 3 not in set(job.shapes["frame"])
    assert job.skipped["polygon"] == 1
    track = job.shapes[job.shapes["track_id"] == 1].sort_values("frame")
    # keyframes at 0 and 2, outside from 4: frames 0..3, frame 1 interpolated halfway, value carried forward
    assert track["frame"].tolist() == [0, 1, 2]  # frame 3 is deleted
    assert track.iloc[1][["x1", "x2"]].tolist() == [110.0, 160.0]
    assert track["safety_rope_use"].tolist() == ["correct", "correct", "wrong"]


def test_expand_track_hand_case():
    """CVAT 2.23's quality-control expansion (dataset_manager/annotation.py get_interpolated_shapes)."""
    track = {
        "shapes": [
            {"frame": 0, "points": [0, 0, 10, 10], "attributes": [{"spec_id": 1, "value": "a"}]},
            {"frame": 4, "points": [4, 0, 14, 10], "outside": True, "attributes": []},
            {
                "frame": 6,
                "points": [0, 0, 2, 2],
                "rotation": 30,
                "attributes": [{"spec_id": 1, "value": "b"}],
            },
        ]
    }
    rows = parse.expand_track(track, stop_frame=7)
    assert [r["frame"] for r in rows] == [0, 1, 2, 3, 6, 7]
    # frame 1 is 1/4 of the way to the outside keyframe 4: x1 = 0 + (4 - 0) * 1/4 = 1, x2 = 10 + 4/4 = 11
    assert rows[1]["points"] == [1.0, 0.0, 11.0, 10.0] and rows[1]["attributes"] == [
        {"spec_id": 1, "value": "a"}
    ]
    # frame 3: 3/4 of the way: x1 = 3, x2 = 13
    assert rows[3]["points"] == [3.0, 0.0, 13.0, 10.0]
    # the last keyframe is visible: repeated to stop_frame 7 with its rotation and attributes
    assert rows[-1]["points"] == [0.0, 0.0, 2.0, 2.0] and rows[-1]["rotation"] == 30.0
    assert rows[-1]["attributes"] == [{"spec_id": 1, "value": "b"}]


def test_expand_track_rotation_takes_the_short_way():
    """Rotation interpolates along the shorter arc: 350 -> 10 over 2 frames passes 0, not 180."""
    track = {
        "shapes": [
            {"frame": 0, "points": [0, 0, 4, 4], "rotation": 350},
            {"frame": 2, "points": [0, 0, 4, 4], "rotation": 10, "outside": True},
        ]
    }
    rows = parse.expand_track(track, stop_frame=5)
    # diff = ((10 - 350 + 180) % 360) - 180 = 20; frame 1: (350 + 20 * 1/2 + 360) % 360 = 0
    assert [(r["frame"], r["rotation"]) for r in rows] == [(0, 350.0), (1, 0.0)]


def test_old_server_without_score(cvat):
    url, _ = cvat
    job = fetch.fetch_job(client.connect(client.ConnectionSettings(url)), 102)
    assert not job.has_score and job.shapes["score"].map(math.isnan).all()


def test_retries_5xx_then_succeeds(cvat):
    url, state = cvat
    state.fail(503, count=2, path_contains="/annotations")
    state.fail(429, count=1, path_contains="/data/meta")
    job = fetch.fetch_job(client.connect(client.ConnectionSettings(url)), 101)
    assert len(job.shapes) > 0
    assert sum("/api/jobs/101/annotations" in p for p in state.requests) == 3


def test_5xx_beyond_retries_is_a_one_line_error(cvat):
    url, state = cvat
    state.fail(500, count=10, path_contains="/annotations")
    with pytest.raises(client.FetchError, match=r"annotations of job 101 on .*: HTTP 500"):
        fetch.fetch_job(client.connect(client.ConnectionSettings(url, retries=2)), 101)


def test_auth_errors_name_the_problem_and_hide_the_secret(cvat):
    url, state = cvat
    state.token = "t0ps3cret"
    with pytest.raises(client.FetchError) as exc:
        fetch.fetch_job(client.connect(client.ConnectionSettings(url, token="wrong-token")), 101)
    assert "authentication failed" in str(exc.value) and "wrong-token" not in str(exc.value)
    assert (
        len(fetch.fetch_job(client.connect(client.ConnectionSettings(url, token="t0ps3cret")), 101).shapes)
        > 0
    )
    state.token, state.basic = None, ("alice", "pw")
    assert (
        len(
            fetch.fetch_job(
                client.connect(client.ConnectionSettings(url, basic_auth=("alice", "pw"))), 101
            ).shapes
        )
        > 0
    )


def test_not_found_names_what(cvat):
    url, _ = cvat
    with pytest.raises(client.FetchError, match="job 424242 on .*: not found"):
        fetch.fetch_job(client.connect(client.ConnectionSettings(url)), 424242)


def test_timeout_and_unreachable_are_clear_errors(cvat):
    url, state = cvat
    state.fail(0, count=5, path_contains="/api/jobs/101", delay_s=1.5)
    with pytest.raises(client.FetchError, match="not answering"):
        fetch.fetch_job(client.connect(client.ConnectionSettings(url, timeout=0.3, retries=0)), 101)
    with pytest.raises(client.FetchError, match="unreachable"):
        fetch.fetch_job(client.connect(client.ConnectionSettings("http://127.0.0.1:9", retries=1)), 101)


def test_paging_reads_every_page(cvat):
    url, state = cvat
    jobs = fetch.find_jobs(client.connect(client.ConnectionSettings(url)))
    assert sorted(j["id"] for j in jobs) == sorted(state.jobs)
    assert len(jobs) > 10  # more than one default page


def test_server_url_rules():
    assert client.server_url("cvat.example", None) == "http://cvat.example:8080"
    assert client.server_url("https://cvat.example", None) == "https://cvat.example"
    assert client.server_url("http://h", 9000) == "http://h:9000"
    with pytest.raises(client.FetchError):
        client.server_url("http://h:1", 2)
