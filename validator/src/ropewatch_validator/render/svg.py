"""Line charts as plain geometry for inline SVG (the report's PR curve, the dashboard's trend).

No charting library and no script: the page stays offline and its points are elements a test can
count. The templates draw what :func:`line_chart` computes (``templates/_macros.html``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

PALETTE = ("#c0392b", "#2471a3", "#7d3c98", "#1e8449", "#b9770e")


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str  # the tooltip: which run / value this point is


@dataclass(frozen=True)
class Series:
    name: str
    color: str
    points: list[Point]
    band: tuple[float, float, float] | None = None  # pixel y of (low, median, high) of the baseline

    @property
    def path(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: int
    top: int
    plot_w: int
    plot_h: int
    series: list[Series]
    y_ticks: list[tuple[float, str]]  # (pixel y, text)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)


def _scale(lo: float, hi: float, top: float, height: float) -> Callable[[float], float]:
    span = (hi - lo) or 1.0
    return lambda v: top + height - (v - lo) / span * height


def line_chart(
    xs: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None], tuple[float, float, float] | None]],
    *,
    y_range: tuple[float, float] | None = None,
    width: int = 640,
    height: int = 220,
    x_values: Sequence[float] | None = None,
) -> Chart:
    """Geometry of a chart: ``series`` are (name, values, baseline (low, median, high) or None); a
    None value leaves no point. ``x_values`` (0..1) places points; by default they are evenly spaced
    in the order of ``xs``, labelled by it."""
    left, top, right, bottom = 44, 10, 28, 28
    pw, ph = width - left - right, height - top - bottom
    values = [v for _, vs, _ in series for v in vs if v is not None]
    values += [b for _, _, band in series if band for b in (band[0], band[2])]
    lo, hi = y_range or ((min(0.0, *values), max(values) * 1.1) if values else (0.0, 1.0))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    y = _scale(lo, hi, top, ph)
    n = len(xs)
    if x_values is None:
        x_values = [0.5 if n == 1 else i / (n - 1) for i in range(n)]
    px = [left + xv * pw for xv in x_values]
    out = []
    for k, (name, vs, band) in enumerate(series):
        pts = [Point(px[i], y(v), f"{name} {xs[i]}: {v:.3f}") for i, v in enumerate(vs) if v is not None]
        pix_band = (y(band[0]), y(band[1]), y(band[2])) if band else None
        out.append(Series(name, PALETTE[k % len(PALETTE)], pts, pix_band))
    ticks = [(y(lo + (hi - lo) * i / 4), f"{lo + (hi - lo) * i / 4:.3g}") for i in range(5)]
    step = max(1, n // 8)
    x_ticks = [(px[i], xs[i]) for i in range(0, n, step)] if n else []
    return Chart(width, height, left, top, pw, ph, out, ticks, x_ticks)
