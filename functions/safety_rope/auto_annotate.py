"""The same classifier without Nuclio, for cvat-sdk's auto-annotation driver:

    cvat-cli task auto-annotate TASK --function-file functions/safety_rope/auto_annotate.py \
        -p model_path=str:/srv/models/rope.pt -p detector_path=str:/srv/models/person.pth

or, against a CVAT server older than cvat-cli's own version check accepts (CVAT < 2.30 has no
``logo_url``/``subtitle`` in ``/api/server/about``, which cvat-cli >= 2.30 requires), the same driver
run by this file:

    PASS=... python functions/safety_rope/auto_annotate.py TASK --server-host URL --auth USER \
        -p model_path=str:/srv/models/rope.pt -p detector_path=str:/srv/models/person.pth

Needs cvat-sdk >= 2.31 (attribute-carrying shapes, ``select_attribute_spec``); an older SDK fails at
import with one line. Each rectangle carries the detector's score where the SDK has the field
(cvat-sdk >= 2.56; CVAT >= 2.56 stores it) and the ``safety_rope_use`` value. Each frame also gets the
same ``inference`` record the Nuclio function writes (ropewatch_core.records, plus ``frame_name``), on
stdout or appended to ``-p log_path=str:FILE``. The driver hands the function decoded pixels, so the
record's byte hash is of a re-encoding: the record says so (``image.source_bytes: false``) and
``validate-job --logs`` joins such records by the pixel hash, by itself.

``-p detector_min_size=int:N -p detector_max_size=int:N`` set the detector's resize as the Nuclio
function's DETECTOR_MIN_SIZE/DETECTOR_MAX_SIZE do (0 or unset: the architecture's own sizes).
"""

from __future__ import annotations

import io
import uuid

import cvat_sdk
import cvat_sdk.auto_annotation as cvataa
import cvat_sdk.models as models
import PIL.Image

from ropewatch_core.records import INFERENCE, one_line, record_logger
from ropewatch_core.spec import ATTRIBUTE, ATTRIBUTE_VALUES, PERSON_LABEL

MIN_SDK = "2.31"
if not hasattr(cvataa, "select_attribute_spec"):
    raise ImportError(
        f"safety_rope auto_annotate needs cvat-sdk >= {MIN_SDK} (attribute-carrying shapes); "
        f"this is cvat-sdk {getattr(cvat_sdk, '__version__', 'unknown')}: pip install 'cvat-sdk>={MIN_SDK}'"
    )
HAS_SCORE = "score" in models.LabeledShapeRequest.attribute_map  # cvat-sdk >= 2.56

spec = cvataa.DetectionFunctionSpec(
    labels=[
        cvataa.label_spec(
            PERSON_LABEL,
            0,
            type="rectangle",
            attributes=[cvataa.select_attribute_spec(ATTRIBUTE, 0, list(ATTRIBUTE_VALUES))],
        ),
    ]
)


class SafetyRopeFunction:
    spec = spec

    def __init__(self, predictor, log) -> None:
        self.predictor, self.log = predictor, log

    def detect(
        self, context: cvataa.DetectionFunctionContext, image: PIL.Image.Image
    ) -> list[models.LabeledShapeRequest]:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")  # lossless: the predictor decodes bytes like the Nuclio path
        result = self.predictor.run(buffer.getvalue(), threshold=context.conf_threshold)
        fields = result.record_fields()
        fields["image"] = {**fields["image"], "source_bytes": False}  # hashed our PNG, not CVAT's bytes
        self.log.info(INFERENCE, request_id=str(uuid.uuid4()), frame_name=context.frame_name, **fields)
        return [
            cvataa.rectangle(
                0,
                d.box,
                attributes=[models.AttributeValRequest(spec_id=0, value=d.value)],
                **({"score": d.cvat_shape()["confidence"]} if HAS_SCORE else {}),
            )
            for d in result.detections
        ]


def create(
    model_path: str,
    detector_path: str,
    detector_arch: str = "",
    device: str = "cpu",
    detector_threshold: float = 0.5,
    log_path: str = "",
    detector_min_size: int = 0,
    detector_max_size: int = 0,
) -> SafetyRopeFunction:
    """Called by cvat-cli with the ``-p name=type:value`` parameters."""
    from ropewatch_core.model.detector import DEFAULT_ARCH, TorchvisionPersonDetector
    from ropewatch_core.model.pipeline import Predictor

    detector = TorchvisionPersonDetector(
        detector_path,
        detector_arch or DEFAULT_ARCH,
        device,
        detector_min_size or None,
        detector_max_size or None,
    )
    stream = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115 - lives with the run
    return SafetyRopeFunction(
        Predictor(model_path, detector, device=device, detector_threshold=detector_threshold),
        record_logger("cvat-cli", stream),
    )


def main(argv: list[str] | None = None) -> int:
    """Run cvat-sdk's own driver (what ``cvat-cli task auto-annotate`` calls) without cvat-cli's server
    version check, for CVAT servers whose ``/api/server/about`` lacks fields cvat-cli now requires."""
    import argparse
    import os
    import sys

    from cvat_sdk import Client

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("task_id", type=int)
    parser.add_argument("--server-host", required=True, help="CVAT URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--auth", required=True, metavar="USER", help="user name; password in $PASS")
    parser.add_argument("-p", "--function-parameter", action="append", default=[], metavar="NAME=TYPE:VALUE")
    parser.add_argument("--conf-threshold", type=float, default=None)
    args = parser.parse_args(argv)
    params = {}
    for item in args.function_parameter:
        name, _, typed = item.partition("=")
        kind, _, value = typed.partition(":")
        if kind not in ("str", "int", "float") or not name:
            print(f"auto_annotate: -p takes NAME=str|int|float:VALUE, got {item!r}", file=sys.stderr)
            return 2
        params[name] = {"str": str, "int": int, "float": float}[kind](value)
    if "PASS" not in os.environ:
        print("auto_annotate: set the password in the PASS environment variable", file=sys.stderr)
        return 2
    try:
        function = create(**params)
        with Client(args.server_host, check_server_version=False) as client:
            client.login((args.auth, os.environ["PASS"]))
            cvataa.annotate_task(client, args.task_id, function, conf_threshold=args.conf_threshold)
    except Exception as exc:  # a command-line boundary: whatever failed (CVAT, the checkpoint), one line
        print(f"auto_annotate: task {args.task_id}: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
