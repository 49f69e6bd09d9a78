"""The expert checkpoint contract as the CLI's model commands reach it (`ropewatch checkpoint ...`).

The CLI may not import ``ropewatch_core.model`` itself (only ``learn`` may: one import-linter rule), so
``cli/checkpoint.py`` and ``cli/recalibrate.py`` import these names from here, inside their command
functions. One implementation stays in ``ropewatch_core.model.checkpoint``; nothing is redefined here.
"""

from __future__ import annotations

from ropewatch_core.model.checkpoint import (
    CheckpointError,
    demo_checkpoint,
    describe,
    load_checkpoint,
    normalised,
    read_checkpoint,
    save_checkpoint,
    validate,
    version_of,
)
from ropewatch_core.model.classifier import ModelConfig

__all__ = [
    "CheckpointError",
    "ModelConfig",
    "demo_checkpoint",
    "describe",
    "load_checkpoint",
    "normalised",
    "read_checkpoint",
    "save_checkpoint",
    "validate",
    "version_of",
]
