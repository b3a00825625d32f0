"""Evaluation metrics shipped inside scratchbert as local ``evaluate`` modules.

Each metric lives in its own folder (``metrics/<name>/<name>.py``) so that
``evaluate.load(folder)`` loads it from disk: no Hub access, ever, which matters for
tests and for clusters without internet.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # evaluate is imported lazily: it pulls in datasets and is slow to import
    import evaluate

METRICS_DIR = Path(__file__).resolve().parent
SQUAD_V1_DIR = METRICS_DIR / "squad_v1"


def squad_metric() -> evaluate.EvaluationModule:
    """Return the SQuAD v1.1 exact-match/F1 metric (official script semantics, 0-100 scale).

    Inputs are those of the Hub's ``squad`` metric: ``predictions=[{"id", "prediction_text"}]``
    and ``references=[{"id", "answers": {"text": [...], "answer_start": [...]}}]``.
    """
    import evaluate

    return evaluate.load(str(SQUAD_V1_DIR), keep_in_memory=True)


__all__ = ["METRICS_DIR", "SQUAD_V1_DIR", "squad_metric"]
