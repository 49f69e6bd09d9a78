"""matplotlib figure -> base64 PNG, the one way report.html embeds a plot."""

from __future__ import annotations

import base64
import io
from typing import Any


def png_base64(fig: Any) -> str:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(out.getvalue()).decode("ascii")
