"""scratchbert: train BERT from scratch, from raw text to a SQuAD question-answering model.

The library knows nothing of Kubeflow: each stage is one function that takes a typed
config (a dataclass) and reads and writes ordinary paths.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("scratchbert")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

from scratchbert.errors import ScratchBertError

__all__ = ["ScratchBertError", "__version__"]
