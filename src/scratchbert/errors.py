"""The one exception type a user should ever see from scratchbert.

A ``ScratchBertError`` carries one sentence that names what was wrong, where, and what to
change. The command line prints it on one line and exits with its ``exit_code``: 2 for bad
input (the default), 1 for :class:`RunFailed`. Anything else escaping a stage is a bug and
keeps its traceback.
"""


class ScratchBertError(ValueError):
    """Bad input or configuration, explained in one sentence."""

    exit_code = 2


def cause(e: BaseException, limit: int = 200) -> str:
    """``Type: first line of its message`` of a library's exception, for the ScratchBertError that
    replaces it to say why (some libraries raise with an empty message: the type alone then)."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:limit]}" if lines else type(e).__name__


class RunFailed(ScratchBertError):
    """Work that was started and did not succeed (a pipeline run, a training job)."""

    exit_code = 1
