"""Progress bars that follow ``-q``.

``scratchbert -q`` sets ``SCRATCHBERT_VERBOSITY=quiet`` (and the libraries' own switches) before
the stage runs; tqdm reads its ``TQDM_DISABLE`` switch only when it is first imported, which may
be earlier, so the stages' own bars and the Trainer's ask here.
"""

from __future__ import annotations

import os


def hidden() -> bool:
    """True when the command runs with ``-q`` (in its task processes too: they inherit the variable)."""
    return os.environ.get("SCRATCHBERT_VERBOSITY") == "quiet"


def bar(iterable=None, **kw):
    """A tqdm bar, hidden under ``-q``."""
    from tqdm.auto import tqdm

    if hidden():
        kw["disable"] = True  # otherwise tqdm's default (shown, or TQDM_DISABLE where it was set in time)
    return tqdm(iterable, **kw)


def keep_stdout_for_the_result(trainer) -> None:
    """With its bars hidden the Trainer prints every log record to stdout instead
    (``PrinterCallback``); stdout carries the command's JSON result, and the records are in the logs."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
