"""The one exception type a user should ever see from scratchbert.

A ``ScratchBertError`` carries one sentence that names what was wrong, where, and what to
change. The command line prints it on one line and exits with its ``exit_code``: 2 for bad
input (the default), 1 for :class:`RunFailed`. Anything else escaping a stage is a bug and
keeps its traceback.
"""


class ScratchBertError(ValueError):
    """Bad input or configuration, explained in one sentence."""

    exit_code = 2


class RunFailed(ScratchBertError):
    """Work that was started and did not succeed (a pipeline run, a training job)."""

    exit_code = 1
