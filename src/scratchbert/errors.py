"""The one exception type a user should ever see from scratchbert.

A ``ScratchBertError`` carries one sentence that names what was wrong, where, and what to
change. The command line prints it on one line and exits with status 2; anything else
escaping a stage is a bug and keeps its traceback.
"""


class ScratchBertError(ValueError):
    """Bad input or configuration, explained in one sentence."""
