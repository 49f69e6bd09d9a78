"""validate-job against a real CVAT: each scenario is built through CVAT's REST API and the numbers are
worked out by hand here (issue 9, items 1-7 and 14). Where CVAT has its own answer (quality reports),
the test also checks that ropewatch and CVAT agree.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from ropewatch_validator.cvat.client import ConnectionSettings, connect, request_bytes
from ropewatch_validator.cvat.frames import cvat_frame_fetcher
from ropewatch_validator.render.model import Report
from ropewatch_validator.render.report import objects_frame
from support.cvat_rest import LABELS, box, jpeg, keyframe, mp4, person_counts


def images(prefix: str, n: int, seed: int = 0) -> dict[str, bytes]:
    return {f"{prefix}{i:02d}.jpg": jpeg(320, 240, seed + i) for i in range(n)}


def test_image_task_every_error_type_other_labels_and_attribute_default(real_cvat, validate):
    """Items 7 and 8 (default value read back): manual mode, IoU 0.5."""
    rest = real_cvat.rest
    task = rest.create_task(real_cvat.name("errors"), LABELS, images("er", 4))
    job = rest.jobs(task["id"])[0]["id"]
    ids = rest.ids(task["id"])
    rest.put_annotations(
        job,
        [
            # frame 0: a true positive and a wrong->correct flip
            box(ids, 0, [10, 10, 60, 110], "manual", "wrong"),
            box(ids, 0, [10, 10, 60, 110], "auto", "wrong"),
            box(ids, 0, [100, 10, 150, 110], "manual", "wrong"),
            box(ids, 0, [100, 10, 150, 110], "auto", "correct"),
            # frame 1: a person-edited (semi-auto) correct->wrong flip, and a duplicate of the same person:
            # IoU([12,10,62,110], [10,10,60,110]) = 48*100 / (5000 + 5000 - 4800) = 0.923 >= 0.5
            box(ids, 1, [10, 10, 60, 110], "manual", "correct"),
            box(ids, 1, [10, 10, 60, 110], "semi-auto", "wrong"),
            box(ids, 1, [12, 10, 62, 110], "auto", "correct"),
            # frame 2: localization, IoU = 30*100 / (6000 + 6000 - 3000) = 1/3 in [0.1, 0.5); background box
            # sent without the attribute (CVAT reads back its default "wrong"); a car pair (other label)
            box(ids, 2, [200, 100, 260, 200], "manual", "wrong"),
            box(ids, 2, [230, 100, 290, 200], "auto", "wrong"),
            box(ids, 2, [0, 150, 40, 230], "auto", None),
            box(ids, 2, [100, 100, 150, 150], "manual", label="car"),
            box(ids, 2, [100, 100, 150, 150], "auto", label="car"),
            # frame 3: a missed person
            box(ids, 3, [50, 50, 100, 150], "manual", "correct"),
        ],
    )
    stored = rest.get(f"/api/jobs/{job}/annotations")["shapes"]
    default_read = [s for s in stored if s["points"] == [0.0, 150.0, 40.0, 230.0]][0]
    assert default_read["attributes"] == [{"spec_id": ids.specs["safety_rope_use"], "value": "wrong"}]

    code, rep = validate(job)
    assert code == 0
    # predictions: 6 person auto/semi-auto shapes; references: 5 manual persons
    assert (rep["counts"]["predictions"], rep["counts"]["references"], rep["counts"]["semi_auto"]) == (
        6,
        5,
        1,
    )
    assert rep["counts"]["skipped_shapes"] == {"label:car": 2}  # item 7: counted, not silently dropped
    det = rep["detection"]
    # tp: frame 0 x2, frame 1 semi-auto pair -> 3; fp = 6 - 3; fn = 5 - 3
    assert (det["tp"], det["fp"], det["fn"]) == (3, 3, 2)
    assert det["precision"] == pytest.approx(3 / 6) and det["recall"] == pytest.approx(3 / 5)
    errors = rep["errors"]
    assert (
        errors["flip_wrong_to_correct"],
        errors["flip_correct_to_wrong"],
        errors["duplicate"],
        errors["localization"],
        errors["background"],
        errors["missed"],
        errors["edited_by_person"],
    ) == (1, 1, 1, 1, 1, 1, 1)
    objects = objects_frame(Report.model_validate(rep))
    background = objects[(objects["role"] == "prediction") & (objects["error"] == "background")]
    assert background["safety_rope_use"].tolist() == ["wrong"]  # the label default CVAT filled in
    assert objects["shape_id"].map(lambda v: isinstance(v, int)).all()  # ids stay integers


def test_gt_job_equals_cvat_quality_report(real_cvat, validate):
    """Item 1 (GT meta lists placeholders; included_frames are data frames) and item 14 (matching rule)."""
    rest = real_cvat.rest
    task = rest.create_task(
        real_cvat.name("gt"), LABELS, images("gt", 8, 10), task_fields={"segment_size": 4}
    )
    j1, j2 = (j["id"] for j in rest.jobs(task["id"], "annotation"))
    gt = rest.create_gt_job(task["id"], [1, 2, 5, 6])["id"]
    ids = rest.ids(task["id"])
    rest.put_annotations(
        gt,
        [
            box(ids, 1, [10, 10, 60, 110], "manual", "wrong"),
            box(ids, 1, [100, 10, 150, 110], "manual", "correct"),
            box(ids, 2, [20, 20, 70, 120], "manual", "correct"),
            box(ids, 5, [30, 30, 80, 130], "manual", "wrong"),
            # frame 6, crowded: A = [50,50,150,150], B = [93,50,193,150]
            box(ids, 6, [50, 50, 150, 150], "manual", "wrong"),
            box(ids, 6, [93, 50, 193, 150], "manual", "wrong"),
        ],
    )
    rest.put_annotations(
        j1,
        [
            box(ids, 0, [0, 0, 40, 40], "auto", "wrong"),  # frame 0 is not a GT frame: not compared
            box(ids, 1, [10, 10, 60, 110], "auto", "wrong"),  # IoU 1
            box(
                ids, 1, [130, 10, 180, 110], "auto", "correct"
            ),  # IoU 20*100 / 8000 = 0.25 < 0.4: extra + missed
            box(ids, 2, [20, 20, 70, 120], "auto", "wrong"),  # IoU 1, value differs
        ],
    )
    rest.put_annotations(
        j2,
        [
            box(ids, 5, [30, 55, 80, 155], "auto", "wrong"),  # IoU 50*75 / (5000 + 5000 - 3750) = 0.6
            box(ids, 5, [250, 150, 300, 230], "auto", "correct"),  # extra
            # X = [52,50,152,150]: IoU(X,A) = 98/102 = .961, IoU(X,B) = 59/141 = .418
            # Y = [10,50,110,150]: IoU(Y,A) = 60/140 = .429, IoU(Y,B) = 17/183 = .093
            box(ids, 6, [52, 50, 152, 150], "auto", "wrong"),
            box(ids, 6, [10, 50, 110, 150], "auto", "wrong"),
            box(ids, 7, [0, 0, 10, 10], "auto", "correct"),  # not a GT frame
        ],
    )
    meta = rest.get(f"/api/jobs/{gt}/data/meta")
    assert len(meta["frames"]) == 8 and meta["included_frames"] == [1, 2, 5, 6]  # what broke item 1
    rest.finish_gt(gt)
    cvat = rest.quality_reports(task["id"])

    # CVAT's rule: frame 6 pairs X-A only (cost .039 + 1 for Y and B = 1.039 < .582 + .571 = 1.153)
    # job 1: tp 2 (frames 1, 2), fp 1, fn 1; job 2: frame 5 tp 1 fp 1, frame 6 tp 1 fp 1 fn 1
    expected = {j1: (2, 1, 1), j2: (2, 2, 1)}
    for job, counts in expected.items():
        code, rep = validate(job, "--gt-job", "auto", "--iou", "0.4", "--matching", "cvat")
        assert code == 0 and rep["counts"]["frames"] == 2
        det = rep["detection"]
        assert (det["tp"], det["fp"], det["fn"]) == counts == person_counts(cvat[job])
    code, rep = validate(j1, "--gt-job", "auto", "--iou", "0.4", "--matching", "cvat")
    assert rep["errors"]["flip_correct_to_wrong"] == 1  # CVAT: one mismatching_attributes conflict
    assert cvat[j1]["comparison_summary"]["conflicts_by_type"]["mismatching_attributes"] == 1
    # the default rule maximizes the number of matches: frame 6 pairs X-B and Y-A (both >= 0.4)
    code, rep = validate(j2, "--gt-job", "auto", "--iou", "0.4")
    assert (rep["detection"]["tp"], rep["detection"]["fp"], rep["detection"]["fn"]) == (3, 1, 0)


def test_video_task_keeps_every_frame(real_cvat, validate):
    """Item 2: a video's data/meta has one ``frames`` entry; the job still has 10 frames."""
    rest = real_cvat.rest
    task = rest.create_task(real_cvat.name("video"), LABELS, {"clip.mp4": mp4(10)})
    job = rest.jobs(task["id"])[0]["id"]
    ids = rest.ids(task["id"])
    shapes = [
        box(ids, f, [10 + 40 * k, 10, 40 + 40 * k, 70], src, "wrong")
        for f in range(10)
        for k in range(3)
        for src in ("auto", "manual")
    ]
    rest.put_annotations(job, shapes)
    assert len(rest.get(f"/api/jobs/{job}/data/meta")["frames"]) == 1
    code, rep = validate(job)
    assert code == 0
    # 10 frames x 3 persons, each auto box on its manual twin
    assert (rep["counts"]["frames"], rep["counts"]["predictions"], rep["counts"]["references"]) == (
        10,
        30,
        30,
    )
    assert rep["detection"]["tp"] == 30


@pytest.mark.parametrize("kind", ["image", "video"])
def test_the_frame_fetcher_gets_what_the_generated_endpoint_gets(real_cvat, kind):
    """``cvat_frame_fetcher`` (``ApiClient.call_api`` with the endpoint's settings) and the generated
    ``jobs_api.retrieve_data`` get the same bytes from CVAT, frame by frame, on 4 concurrent workers;
    for a video they are the PNG CVAT re-encodes, not the chunk."""
    rest = real_cvat.rest
    files = images("ff", 4, seed=60) if kind == "image" else {"ff.mp4": mp4(4)}
    task = rest.create_task(real_cvat.name(f"fetcher-{kind}"), LABELS, files)
    job = rest.jobs(task["id"])[0]["id"]
    conn = connect(ConnectionSettings(real_cvat.url, basic_auth=(real_cvat.user, real_cvat.password)))
    with ThreadPoolExecutor(4) as pool:
        fetched = list(pool.map(cvat_frame_fetcher(conn, job), range(4)))
    generated = [
        request_bytes(
            conn,
            f"frame {n}",
            conn.api_client.jobs_api.retrieve_data,
            job,
            type="frame",
            number=n,
            quality="original",
        )[0]
        for n in range(4)
    ]
    assert fetched == generated and len(set(fetched)) == 4
    if kind == "image":
        assert fetched == list(files.values())
    else:
        assert all(data.startswith(b"\x89PNG") for data in fetched)


def test_step_two_task_deleted_frame_and_shape_outside_the_job(real_cvat, validate):
    """Item 3: 12 images, start 1, step 2 -> data frames 1,3,...,11 = task frames 0..5; job B = task 3..5."""
    rest = real_cvat.rest
    task = rest.create_task(
        real_cvat.name("step"),
        LABELS,
        images("st", 12, 30),
        task_fields={"segment_size": 3},
        start_frame=1,
        stop_frame=11,
        frame_filter="step=2",
    )
    job_b = rest.jobs(task["id"], "annotation")[1]
    assert (job_b["start_frame"], job_b["stop_frame"]) == (3, 5)
    ids = rest.ids(task["id"])
    shapes = [
        box(ids, f, [10 + f, 10, 60 + f, 110], src, "wrong") for f in (3, 4, 5) for src in ("auto", "manual")
    ]
    shapes.append(
        box(ids, 1, [0, 0, 30, 30], "auto", "wrong")
    )  # frame 1 belongs to job A; CVAT stores it anyway
    rest.put_annotations(job_b["id"], shapes)
    rest.delete_frames(job_b["id"], [4])
    meta = rest.get(f"/api/jobs/{job_b['id']}/data/meta")
    assert (meta["start_frame"], meta["stop_frame"], meta["deleted_frames"]) == (
        7,
        11,
        [4],
    )  # data vs task frames
    code, rep = validate(job_b["id"])
    assert code == 0
    counts = rep["counts"]
    # frames 3, 4, 5; frame 4 deleted -> 2 evaluated, one pair each
    assert (counts["frames"], counts["frames_evaluated"], counts["frames_deleted"]) == (3, 2, 1)
    assert (counts["predictions"], counts["references"], rep["detection"]["tp"]) == (2, 2, 2)
    assert counts["skipped_shapes"] == {} and counts["dropped"] == {
        "outside_job_frames": 1,
        "on_deleted_frames": 2,
    }
    assert sorted(set(objects_frame(Report.model_validate(rep))["frame"])) == [3, 5]


def test_tracks_interpolate_to_outside_keyframes_and_through_deleted_ones(real_cvat, validate):
    """Item 6: auto tracks against manual boxes placed where CVAT's quality control puts the track
    (``TrackManager.get_interpolated_shapes``, checked in the facts); IoU 1 everywhere."""
    rest = real_cvat.rest
    task = rest.create_task(real_cvat.name("tracks"), LABELS, images("tr", 10, 50))
    job = rest.jobs(task["id"])[0]["id"]
    ids = rest.ids(task["id"])
    t1 = {
        "frame": 0,
        "label_id": ids.labels["person"],
        "group": 0,
        "source": "auto",
        "attributes": [],
        "shapes": [
            keyframe(ids, 0, [0, 0, 10, 10], "wrong"),
            keyframe(ids, 4, [40, 0, 50, 10], outside=True),
            keyframe(ids, 6, [60, 0, 70, 10], "correct"),
            keyframe(ids, 8, [80, 0, 90, 10], outside=True),
        ],
    }
    t2 = {
        "frame": 0,
        "label_id": ids.labels["person"],
        "group": 0,
        "source": "auto",
        "attributes": [],
        "shapes": [
            keyframe(ids, 0, [0, 20, 10, 30], "wrong"),
            keyframe(ids, 2, [30, 20, 40, 30]),
            keyframe(ids, 4, [40, 20, 50, 30]),
        ],
    }
    expected = [
        # T1: 0 -> outside keyframe 4 moves x by 40 over 4 frames: x1 = 10 f (frame 2 is deleted)
        (0, [0, 0, 10, 10], "wrong"),
        (1, [10, 0, 20, 10], "wrong"),
        (3, [30, 0, 40, 10], "wrong"),
        # visible again at 6, halfway to the outside keyframe 8 at frame 7
        (6, [60, 0, 70, 10], "correct"),
        (7, [70, 0, 80, 10], "correct"),
        # T2: the keyframe on deleted frame 2 still steers: frame 1 = half of 0 -> 30,
        # frame 3 = half of 30 -> 40
        (0, [0, 20, 10, 30], "wrong"),
        (1, [15, 20, 25, 30], "wrong"),
        (3, [35, 20, 45, 30], "wrong"),
        # last keyframe 4 visible: repeated to the job's last frame 9
        *[(f, [40, 20, 50, 30], "wrong") for f in range(4, 10)],
    ]
    rest.put_annotations(job, [box(ids, f, pts, "manual", v) for f, pts, v in expected], tracks=[t1, t2])
    rest.delete_frames(job, [2])
    code, rep = validate(job, "--iou", "0.99")
    assert code == 0
    det = rep["detection"]
    assert (rep["counts"]["predictions"], det["tp"], det["fp"], det["fn"]) == (14, 14, 0, 0)
    preds = objects_frame(Report.model_validate(rep)).query("role == 'prediction'")
    assert (preds["iou"] == 1.0).all()
    track_ids = [row[rep["objects"]["columns"].index("track_id")] for row in rep["objects"]["rows"]]
    assert all(isinstance(t, int) for t in track_ids if t is not None) and len(set(track_ids) - {None}) == 2
    assert rep["attribute"]["accuracy"] == 1.0


def test_rotated_boxes_use_cvat_iou(real_cvat, validate):
    """Item 5: per-frame IoU equals CVAT's own (quality report ``mean_iou`` of a one-pair frame)."""
    rest = real_cvat.rest
    task = rest.create_task(real_cvat.name("rotation"), LABELS, images("ro", 4, 70))
    job = rest.jobs(task["id"], "annotation")[0]["id"]
    gt = rest.create_gt_job(task["id"], [0, 1, 2, 3])["id"]
    ids = rest.ids(task["id"])
    rest.put_annotations(
        gt,
        [
            box(ids, 0, [100, 100, 200, 150], "manual", "wrong"),
            box(ids, 1, [100, 100, 200, 150], "manual", "wrong", rotation=30.0),
            box(ids, 2, [100, 70, 200, 170], "manual", "wrong"),
            box(ids, 3, [250, 100, 350, 150], "manual", "wrong"),
        ],
    )
    rest.put_annotations(
        job,
        [
            box(ids, 0, [100, 100, 200, 150], "auto", "wrong", rotation=90.0),
            box(ids, 1, [120, 100, 220, 150], "auto", "wrong", rotation=30.0),
            box(ids, 2, [100, 70, 200, 170], "auto", "wrong", rotation=45.0),
            box(ids, 3, [250, 100, 350, 150], "auto", "wrong", rotation=90.0),
        ],
    )
    rest.finish_gt(gt)
    cvat = rest.quality_reports(task["id"])[job]["frame_results"]
    code, rep = validate(job, "--gt-job", "auto", "--iou", "0.3")
    assert code == 0
    ious = (
        objects_frame(Report.model_validate(rep)).query("role == 'prediction'").set_index("frame")["best_iou"]
    )
    hand = {
        0: 2500
        / 7500,  # 100x50 vs 50x100 about the same centre: 50*50 / (5000 + 5000 - 2500); ropewatch said 1.0
        1: 4000 / 6000,  # equal rotations: CVAT compares the unrotated boxes, 80*50 / (10000 - 4000)
        2: 0.7071917808219178,  # square vs 45 deg: rasterized (exact polygon IoU 2*sqrt(2) - 2 = 0.70711)
        3: 2250 / 5750,  # clipped at x = 320: 70x50 and 45x100, overlap 45x50
    }
    for frame, value in hand.items():
        assert ious[frame] == pytest.approx(value, abs=1e-12)
        assert cvat[str(frame)]["annotation_components"]["shape"]["mean_iou"] == pytest.approx(
            value, abs=1e-12
        )


def test_honeypots_pair_through_the_real_frame(real_cvat, validate):
    """Item 4: a gt_pool task's jobs show validation frames as honeypots under other frame numbers."""
    rest = real_cvat.rest
    task = rest.create_task(
        real_cvat.name("honeypot"),
        LABELS,
        images("hp", 10, 90),
        task_fields={"segment_size": 4},
        sorting_method="random",
        validation_params={
            "mode": "gt_pool",
            "frame_selection_method": "random_uniform",
            "frame_count": 3,
            "random_seed": 1,
            "frames_per_job_count": 2,
        },
    )
    job = rest.jobs(task["id"], "annotation")[0]["id"]
    gt = rest.jobs(task["id"], "ground_truth")[0]["id"]
    layout = rest.get(f"/api/jobs/{job}/validation_layout")
    (h1, h2), (r1, r2) = layout["honeypot_frames"], layout["honeypot_real_frames"]
    assert r1 != r2 and {h1, h2}.isdisjoint({r1, r2})  # different numbers: pairing by number finds nothing
    regular = next(f for f in range(4) if f not in (h1, h2))
    ids = rest.ids(task["id"])
    rest.put_annotations(
        gt,
        [
            box(ids, r1, [10, 10, 60, 110], "manual", "wrong"),
            box(ids, r1, [100, 10, 150, 110], "manual", "correct"),
            box(ids, r2, [20, 20, 70, 120], "manual", "correct"),
        ],
    )
    rest.put_annotations(
        job,
        [
            box(ids, h1, [10, 10, 60, 110], "auto", "wrong"),  # = r1's first person
            box(ids, h2, [20, 20, 70, 120], "auto", "wrong"),  # = r2's person, value differs
            box(ids, regular, [0, 0, 30, 30], "auto", "wrong"),
        ],
    )  # not a validation frame
    rest.finish_gt(gt)
    cvat = rest.quality_reports(task["id"])[job]
    code, rep = validate(job, "--gt-job", "auto", "--iou", "0.4", "--matching", "cvat")
    assert code == 0
    # 2 honeypots compared; tp 2, fp 0, fn 1 (r1's second person); the value differs on h2
    assert rep["counts"]["frames"] == 2 and sorted(
        set(objects_frame(Report.model_validate(rep))["frame"])
    ) == sorted([h1, h2])
    det = rep["detection"]
    assert (det["tp"], det["fp"], det["fn"]) == (2, 0, 1) == person_counts(cvat)
    assert rep["errors"]["flip_correct_to_wrong"] == 1
