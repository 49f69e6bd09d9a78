"""Records written by the real Nuclio handler join back to frames served over HTTP, score for score."""

from __future__ import annotations

import base64
import io
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
from PIL import Image
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ropewatch_validator.cli.demo import call_handler, init_function, load_function_module
from ropewatch_validator.evaluation.match import Settings
from ropewatch_validator.trace.section import TraceOptions, trace_job


def _jpeg(seed: int) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def test_handler_records_recover_every_auto_shape(
    tiny_checkpoint, httpserver: HTTPServer, monkeypatch, cvat_conn, tmp_path
) -> None:
    monkeypatch.setenv("MODEL_PATH", str(tiny_checkpoint))
    monkeypatch.delenv("DETECTOR_PATH", raising=False)
    module = load_function_module()
    context, _ = init_function(module, worker_id="t-0")
    frames = {n: _jpeg(n) for n in range(6)}
    lines, shapes, logged = ["nuclio processor started"], [], {}
    for n, data in frames.items():
        boxes = [[1.234 + n, 2.0, 30.5, 40.0], [33.0, 5.5, 60.0, 45.0]]
        response, records = call_handler(
            module, context, {"image": base64.b64encode(data).decode(), "boxes": boxes}
        )
        assert response["status_code"] == 200
        lines += [json.dumps(r) for r in records]
        rec = next(r for r in records if r["event"] == "inference")
        for k, item in enumerate(json.loads(response["body"])):  # what CVAT stores from the response
            value = item["attributes"][0]["value"]
            if (n + k) % 3 == 0:  # a person corrects this one
                value = "correct" if value == "wrong" else "wrong"
            x1, y1, x2, y2 = item["points"]
            shapes.append(
                dict(
                    shape_id=len(shapes) + 1,
                    frame=n,
                    label="person",
                    type="rectangle",
                    source="auto",
                    x1=x1,
                    y1=y1,
                    x2=x2,
                    y2=y2,
                    safety_rope_use=value,
                )
            )
            logged[len(shapes)] = (rec["request_id"], rec["detections"][k])

    def serve(request: Request) -> Response:
        return Response(frames[int(request.args["number"])], content_type="image/jpeg")

    httpserver.expect_request("/api/jobs/9/data").respond_with_handler(serve)
    log = tmp_path / "docker.log"
    log.write_text("\n".join(lines) + "\n")
    job = SimpleNamespace(
        frames=pd.DataFrame({"frame": list(frames), "deleted": False}),
        shapes=pd.DataFrame(shapes),
        job_id=9,
        host="fake",
        job_updated_date=None,
        original_chunk_type="imageset",
        chunks_updated_date="2026-11-23T08:00:00Z",
        labels={},  # no label defaults: no mapping check
    )
    trace = trace_job(job, cvat_conn, TraceOptions((log,)), Settings(), workers=2).model_dump()

    n_corrected = sum((s["frame"] + (s["shape_id"] - 1) % 2) % 3 == 0 for s in shapes)
    assert trace["lifecycle"]["counts"]["attribute_corrected"] == n_corrected
    assert trace["lifecycle"]["counts"]["accepted"] == len(shapes) - n_corrected
    assert trace["frames"]["by_sha256"] == len(frames) and trace["logs"]["skipped"] == 1
    assert trace["frames"]["pixel_fingerprint"] is False  # an image task: bytes join, nothing decoded
    for obj in trace["objects"]:
        request_id, det = logged[obj["shape_id"]]
        assert obj["request_id"] == request_id and obj["det_index"] in (0, 1)
        assert obj["logit"] == det["logit"] and obj["p_correct"] == det["p_correct"]
        assert obj["logged_value"] == det["safety_rope_use"] and obj["model_version"] == "tiny-v1"
    # a cutoff before every record (a zone-less time is UTC): the earliest record is used and flagged
    early = trace_job(
        job, cvat_conn, TraceOptions((log,), annotated_before="2000-01-01T00:00:00"), Settings(), workers=2
    ).model_dump()
    assert early["frames"]["after_cutoff"] == len(frames)
    assert early["lifecycle"]["counts"] == trace["lifecycle"]["counts"]
