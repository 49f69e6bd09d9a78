"""The rope decision, one implementation for the function, calibration and the tests' generators.

P(correct) is the softmax probability of ``correct`` over all the head's labels at temperature T, and a
person is ``correct`` iff P(correct) ≥ thr, else ``wrong``. With the two labels ``wrong``/``correct`` this
is σ(z / T) with z = logit(correct) − logit(wrong), as always. With more labels (the team's 3-class head
``["unknown", "correct", "wrong"]``) the mass of the extra labels counts against ``correct``: a person the
model calls ``unknown`` is not certified as wearing the rope correctly, it is flagged ``wrong`` (the safe
side), and an extra label never becomes the attribute value. ``z`` (the logged logit) is then
T·logit(P(correct)) = logit(correct) − T·logsumexp(other logits / T), so P(correct) = σ(z / T) holds for
every head. numpy only: the validator uses it without torch.
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
    names = list(labels)
    if WRONG not in names:
        raise ValueError(f"labels {names} lack {WRONG!r}")
    others = [i for i, name in enumerate(names) if name != CORRECT]
    t = float(temperature)
    if len(others) == 1:  # two labels: exactly logit(correct) - logit(wrong), as the function always did
        rest = logits[:, others[0]]
    else:
        rest = t * np.logaddexp.reduce(logits[:, others] / t, axis=1)
    z = logits[:, names.index(CORRECT)] - rest
    p = p_correct(z, temperature)
    return z, p, values(p, thr)
