"""The rope decision, one implementation for the function, calibration and the tests' generators.

z = logit(correct) − logit(wrong); P(correct) = σ(z / T); a person is ``correct`` iff P(correct) ≥ thr.
Only the two named logits count, so extra labels in a checkpoint (e.g. ``unknown``) never become the
attribute value. numpy only: the validator uses it without torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ropewatch_core.spec import ATTRIBUTE_VALUES

WRONG, CORRECT = ATTRIBUTE_VALUES


def p_correct(z: np.ndarray | float, temperature: float = 1.0) -> np.ndarray:
    """σ(z / T), computed without overflow for any finite z."""
    x = np.asarray(z, dtype=np.float64) / float(temperature)
    return np.exp(-np.logaddexp(0.0, -x))


def values(p: np.ndarray | Sequence[float], thr: float) -> list[str]:
    """``correct`` where P(correct) ≥ thr, else ``wrong``."""
    return [CORRECT if pi >= thr else WRONG for pi in np.asarray(p, dtype=np.float64).reshape(-1)]


def decide(
    logits: np.ndarray, labels: Sequence[str], thr: float, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """From a head's logits (rows of ``len(labels)``): z, P(correct) and the attribute value per row."""
    logits = np.asarray(logits, dtype=np.float64).reshape(-1, len(labels))
    z = logits[:, list(labels).index(CORRECT)] - logits[:, list(labels).index(WRONG)]
    p = p_correct(z, temperature)
    return z, p, values(p, thr)
