"""The ../shared kits beside the checkout (a CVAT server, a Docker engine...): where they are, and the
``export NAME=VALUE`` lines their start.sh prints."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from support.paths import REPO

SHARED = Path(os.environ.get("ROPEWATCH_SHARED", REPO.parent / "shared"))


def exports(stdout: str) -> dict[str, str]:
    """``export NAME=VALUE`` lines of a start.sh, shell-unquoted."""
    env = {}
    for line in stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export ") :].partition("=")
            env[name] = shlex.split(value)[0] if value else ""
    return env
