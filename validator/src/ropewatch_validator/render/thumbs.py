"""Pictures cut from frames for report.html: thumbnails of the worst frames, crops of the confident
mistakes (``trace.mistakes``).

Thumbnails of the worst frames: the region around a frame's erroneous boxes, cut from the frame.

The boxes themselves are not burnt into the picture: report.html draws them as SVG over it
(reference and prediction in two styles, the error named on each), so a page without thumbnails
(``--no-thumbnails``, or the dashboard, which has no frames) shows the same boxes on a blank
region. Frames come through the caller's fetcher (``cvat.frames.cached_frames``, the one ``--logs``
uses), so a frame already in ``--frame-cache`` is not downloaded again.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ropewatch_core.records import one_line
from ropewatch_validator.render.model import WorstFrame
from ropewatch_validator.trace.model import Mistake

if TYPE_CHECKING:
    import numpy as np

MAX_SIDE = 360
ASPECT = 340 / 240  # width / height of a worst-frame picture on the page


@dataclass(frozen=True)
class Thumbnail:
    """A JPEG (base64) of ``region`` = [x1, y1, x2, y2] of the frame, in frame pixels; or the reason
    the frame could not be had."""

    region: list[float]
    jpeg: str | None = None
    error: str | None = None


def region(
    boxes: Iterable[Sequence[float]], size: tuple[int, int] | None = None, margin: float = 0.3
) -> list[float]:
    """The union of ``boxes`` widened by ``margin`` of its size on each side, inside the frame when its
    ``size`` (width, height) is known."""
    boxes = [list(map(float, b)) for b in boxes]
    if not boxes:
        return [0.0, 0.0, 1.0, 1.0]
    x1, y1 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x2, y2 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    mx, my = margin * max(x2 - x1, 16.0), margin * max(y2 - y1, 16.0)
    x1, y1, x2, y2 = x1 - mx, y1 - my, x2 + mx, y2 + my
    # the page's picture shape (ASPECT), so the frame fills it and captions have room beside the boxes
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    w, h = max(w, h * ASPECT), max(h, w / ASPECT)
    if size is not None:
        w, h = min(w, float(size[0])), min(h, float(size[1]))
        cx = min(max(cx, w / 2), size[0] - w / 2)
        cy = min(max(cy, h / 2), size[1] - h / 2)
    x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if size is not None:
        w, h = size
        x1, y1, x2, y2 = max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)
    return [round(v, 1) for v in (x1, y1, x2, max(y2, y1 + 1))]


def cut(data: bytes, boxes: Sequence[Sequence[float]], size: tuple[int, int] | None = None) -> Thumbnail:
    """The region of the frame ``data`` around ``boxes``, scaled to at most MAX_SIDE pixels, as JPEG.

    Boxes are in the job's frame coordinates (``size`` = the frame's width and height in the job's
    meta); a picture of another size (a downscaled frame) is mapped onto them."""
    from PIL import Image

    from ropewatch_core.image import load_frame

    frame = load_frame(data)
    size = size if size and all(size) else (frame.width, frame.height)
    box = region(boxes, size)
    sx, sy = frame.width / size[0], frame.height / size[1]
    x1, x2 = int(box[0] * sx), max(int(box[2] * sx), int(box[0] * sx) + 1)
    y1, y2 = int(box[1] * sy), max(int(box[3] * sy), int(box[1] * sy) + 1)
    im = Image.fromarray(frame.rgb[y1:y2, x1:x2])
    im.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=82)
    exact = [x1 / sx, y1 / sy, x2 / sx, y2 / sy]
    return Thumbnail([round(v, 1) for v in exact], base64.b64encode(out.getvalue()).decode("ascii"))


def worst_frame_thumbnails(
    worst_frames: Sequence[WorstFrame],
    fetch: Callable[[int], bytes],
    sizes: Mapping[int, tuple[int, int]] | None = None,
    workers: int = 4,
) -> dict[int, Thumbnail]:
    """One thumbnail per worst frame (``report.worst_frames``; ``sizes`` = frame -> (width, height)
    from the job's meta); a frame that cannot be fetched or decoded gets its error instead (shown on
    the page), never fails the report."""

    def one(w: WorstFrame) -> tuple[int, Thumbnail]:
        boxes = [o.box for o in w.objects]
        try:
            return w.frame, cut(fetch(w.frame), boxes, (sizes or {}).get(w.frame))
        except Exception as exc:  # a frame that cannot be had is a note on the page, never a failed report
            return w.frame, Thumbnail(region(boxes), error=one_line(exc, 200))

    if not worst_frames:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(worst_frames)))) as pool:
        return dict(pool.map(one, worst_frames))


# ------------------------------------------------------------------------ confident mistakes' crops
def crop_png(rgb: np.ndarray, box: Sequence[float], *, margin: float = 0.5, max_side: int = 160) -> str:
    """Base64 PNG of the frame around ``box`` (``margin`` of its size on each side), the box drawn in red."""
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = margin * max(x2 - x1, 1.0), margin * max(y2 - y1, 1.0)
    left, top = min(max(0, math.floor(x1 - mx)), w - 1), min(max(0, math.floor(y1 - my)), h - 1)
    right, bottom = max(min(w, math.ceil(x2 + mx)), left + 1), max(min(h, math.ceil(y2 + my)), top + 1)
    im = Image.fromarray(rgb[top:bottom, left:right])
    ImageDraw.Draw(im).rectangle([x1 - left, y1 - top, x2 - left, y2 - top], outline=(255, 0, 0), width=2)
    im.thumbnail((max_side, max_side))
    out = io.BytesIO()
    im.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def _box(m: Mistake) -> list[float]:
    box = [m.x1, m.y1, m.x2, m.y2]
    if any(v is None for v in box):
        raise ValueError(f"shape {m.shape_id} has no box")
    return [float(v or 0.0) for v in box]


def with_crops(mistakes: Sequence[Mistake], fetch: Callable[[int], bytes], workers: int = 8) -> list[Mistake]:
    """``trace.mistakes`` each with ``crop`` (base64 PNG), or None and ``crop_error`` when its frame
    could not be had. Only the mistakes' frames are fetched, at most ``workers`` at a time."""
    from ropewatch_core.image import load_frame

    by_frame: dict[int, list[int]] = {}
    for i, m in enumerate(mistakes):
        by_frame.setdefault(int(m.frame), []).append(i)

    def crops(frame: int) -> dict[int, tuple[str | None, str | None]]:
        try:
            rgb = load_frame(fetch(frame)).rgb
            return {i: (crop_png(rgb, _box(mistakes[i])), None) for i in by_frame[frame]}
        except Exception as exc:  # a frame that cannot be had is a note on the page, not a failure
            return {i: (None, one_line(exc)) for i in by_frame[frame]}

    found: dict[int, tuple[str | None, str | None]] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(by_frame) or 1))) as pool:
        for done in pool.map(crops, by_frame):
            found.update(done)
    return [
        m.model_copy(update={"crop": found[i][0], "crop_error": found[i][1]}) for i, m in enumerate(mistakes)
    ]
