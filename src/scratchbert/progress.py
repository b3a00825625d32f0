"""Progress bars that follow ``-q``.

``scratchbert -q`` sets ``SCRATCHBERT_VERBOSITY=quiet`` (and the libraries' own switches) before
the stage runs; tqdm reads its ``TQDM_DISABLE`` switch only when it is first imported, which may
be earlier, so the stages' own bars and the Trainer's ask here.
"""

from __future__ import annotations

import contextlib
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


def advance(bar, n: int) -> None:
    """Move ``bar`` on by ``n``, but not past its total (bytes of documents counted from a file's
    size: its last line end, counted as a blank line, would turn a full bar into a bare count)."""
    bar.update(n if bar.total is None else max(0, min(n, bar.total - bar.n)))


def keep_stdout_for_the_result(trainer) -> None:
    """With its bars hidden the Trainer prints every log record to stdout instead
    (``PrinterCallback``); stdout carries the command's JSON result, and the records are in the logs."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


@contextlib.contextmanager
def no_loading_bar():
    """Hide transformers' "Loading weights" bar inside the block: a small model loads at once, and
    a bar on stderr before every ``ask`` answer is noise. Restores the bar where it was shown."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()
