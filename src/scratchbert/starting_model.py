"""A starting model: an existing BERT to continue pretraining or to fine-tune, instead of random weights.

A starting model is named by a URI:

* ``hf://owner/name[?revision=REV]``: a model on the Hugging Face Hub (for example
  ``hf://google-bert/bert-base-uncased``), downloaded once into the Hub's cache;
* ``s3://bucket/prefix``: a version published by scratchbert's publish step (its manifest's
  checksums are verified; a publish root picks ``LATEST``), or any folder of model files;
* a local folder written by ``save_pretrained`` (a scratchbert model folder, for one).

:func:`fetch` brings it to a local folder (the weights, or only the config and tokenizer) and
:func:`check_model` makes sure it is something scratchbert can continue: a BERT encoder (model type
``bert``) with a BERT WordPiece tokenizer that fits its vocabulary, and enough positions for
the sequence length asked for. Each problem is one sentence.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from scratchbert import hub
from scratchbert.errors import ScratchBertError, cause
from scratchbert.outputs import atomic_output_dir
from scratchbert.params import check, check_source, param

log = logging.getLogger(__name__)

CONFIG_FILES = ["config.json"]
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]
# safetensors where a model has them (transformers loads those first); the pickled files only otherwise
SAFETENSORS_FILES = ["model.safetensors", "model.safetensors.index.json", "model-*.safetensors"]
PICKLE_FILES = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin"]
SUPPORTED_MODEL_TYPES = ("bert",)
EXAMPLE = "hf://google-bert/bert-base-uncased"


@dataclass
class StartingModelConfig:
    """Settings of the step that brings a starting model into the pipeline."""

    init_model: str = param(help="The starting model: hf://owner/name, s3://bucket/prefix (a published scratchbert model "
                                 "or a model folder) or a local folder; empty trains from scratch.")
    out: str = param(help="Output folder: the model's config, weights and tokenizer.")
    max_seq_len: int = param(0, help="Tokens per example the model must have positions for; 0 checks nothing.")

    def validate(self) -> None:
        """Check the settings' form (the model itself is checked when it is fetched)."""
        check_source(self.init_model, "--init-model", required=False)
        check((self.max_seq_len >= 0, f"--max-seq-len {self.max_seq_len} must not be negative (0 checks nothing)"))


def fetch(uri: str, workdir: str | os.PathLike, *, weights: bool = True) -> Path:
    """A local folder holding the model at ``uri`` (with ``weights=False`` only its config and
    tokenizer). Local folders are used where they are; remote ones land under ``workdir``
    (``hf://`` in the Hub's own cache)."""
    uri = str(uri)
    if hub.is_hub(uri):
        return _from_hub(uri, weights)
    if uri.startswith("s3://"):
        return _from_s3(uri, Path(workdir) / "starting-model", weights)
    path = Path(uri)
    if not path.is_dir():
        raise ScratchBertError(f"starting model {uri} is not a folder; give a model folder, s3://bucket/prefix "
                               f"or a Hub model such as {EXAMPLE}")
    return path


def _hub_http_error() -> type[Exception]:
    """The base error of the HTTP library huggingface_hub downloads with (httpx's, which is not an
    OSError, from huggingface_hub 1.0; requests' before, which is)."""
    from huggingface_hub import errors

    base = getattr(errors, "HTTPError", OSError)
    return base if isinstance(base, type) and issubclass(base, Exception) else OSError


def _from_hub(uri: str, weights: bool) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    address = hub.parse(uri)
    # unreachable: the local cache may still hold it, as transformers' from_pretrained would find
    offline = constants.HF_HUB_OFFLINE or not hub.reachable()
    try:
        folder = Path(snapshot_download(address.repo, revision=address.revision, local_files_only=offline,
                                        allow_patterns=CONFIG_FILES + TOKENIZER_FILES + (SAFETENSORS_FILES if weights else [])))
        if weights and not any(folder.glob("*.safetensors")):  # an older model: its pickled weights
            folder = Path(snapshot_download(address.repo, revision=address.revision, local_files_only=offline,
                                            allow_patterns=PICKLE_FILES))
        return folder
    except LocalEntryNotFoundError:
        why = "the Hub is offline (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else "the Hugging Face Hub cannot be reached"
        raise ScratchBertError(f"{uri} is not in the local Hugging Face cache and {why}; check the network (or download it "
                               "once online), or give a local or s3:// copy of the model (save_pretrained folder)") from None
    except GatedRepoError:
        raise ScratchBertError(f"{uri} is gated on the Hub; accept its terms there and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise ScratchBertError(f"there is no model {address.repo} on the Hub (or it is private: set HF_TOKEN); "
                               f"check the name, e.g. {EXAMPLE}") from None
    except RevisionNotFoundError:
        raise ScratchBertError(f"{address.repo} has no revision {address.revision!r}; check ?revision=") from None
    except (OSError, _hub_http_error()) as e:  # a connection that broke half-way
        raise ScratchBertError(f"could not download {uri} from the Hub ({type(e).__name__}); try again") from None


def _from_s3(uri: str, dest: Path, weights: bool) -> Path:
    """A published scratchbert model (verified against its manifest), else, where the prefix holds
    neither a manifest nor ``LATEST``, the plain folder; a damaged publish is an error, never
    read unverified. Without ``weights``, only the config and tokenizer files are fetched."""
    from scratchbert import storage

    patterns = CONFIG_FILES + TOKENIZER_FILES
    keep = None if weights else (lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns))
    try:
        return storage.fetch_published(uri, dest, keep=keep)
    except storage.NotPublished:  # a plain folder of model files, unless it is a version whose publish did not finish
        if not storage.parse_s3_uri(uri)[1].strip("/"):  # a bucket's root: no parent to have published it
            return storage.download(uri.rstrip("/") + "/", dest, keep=keep)
        parent = uri.rstrip("/").rsplit("/", 1)[0]
        try:
            latest = storage.read_object(f"{parent}/{storage.LATEST}").decode("utf-8", "replace").strip()
        except storage.NotFound:
            return storage.download(uri.rstrip("/") + "/", dest, keep=keep)
        raise ScratchBertError(f"{uri} has no manifest.json, but it is a version of the model published at "
                               f"{parent} (LATEST {latest}): its publish did not finish, so its files are not read; publish "
                               f"it again, or give {parent} or a complete version") from None


def check_model(path: str | os.PathLike, *, max_seq_len: int = 0, where: str | None = None):
    """The model's ``BertConfig`` after checking it can be continued here; one sentence otherwise."""
    from transformers import AutoConfig

    from scratchbert.modeling import check_tokenizer_matches
    from scratchbert.tokenizer import load_tokenizer

    path = Path(path)
    where = where or str(path)
    if not (path / "config.json").is_file():
        raise ScratchBertError(f"starting model {where} has no config.json; give a folder saved with save_pretrained "
                               f"or a Hub model such as {EXAMPLE}")
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:  # not JSON, or no model_type (older BERT configs): transformers' words
        raise ScratchBertError(f"starting model {where} has an unreadable config.json ({cause(e)}); save the model again "
                               "with save_pretrained (a BERT config without one needs \"model_type\": \"bert\")") from None
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise ScratchBertError(f"starting model {where} is a {config.model_type!r} model; scratchbert continues BERT "
                               f"encoders (model type bert), such as {EXAMPLE}")
    # the rule every later stage applies to the model written from this one (evaluate, qa-finetune,
    # ask): refused here, not after pretraining
    if not any((path / name).is_file() for name in ("tokenizer.json", "vocab.txt")):
        raise ScratchBertError(f"starting model {where} has no tokenizer (tokenizer.json or vocab.txt); save the tokenizer "
                               "it was trained with beside it (tokenizer.save_pretrained)")
    tokenizer = load_tokenizer(path, where=where)  # named by the address given, not a temporary copy
    check_tokenizer_matches(config, tokenizer, where, model_dir=path)
    if max_seq_len and config.max_position_embeddings < max_seq_len:
        raise ScratchBertError(f"starting model {where} has {config.max_position_embeddings} positions, fewer than the "
                               f"{max_seq_len} tokens per example asked for; use --max-seq-len "
                               f"{config.max_position_embeddings} or less")
    return config


def has_weights(path: str | os.PathLike) -> bool:
    path = Path(path)
    return any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin"))


def require_weights(path: str | os.PathLike, where: str) -> None:
    """One line, before any work, where the model folder ``path`` (``where`` as the user gave it) has no weights."""
    if not has_weights(path):
        raise ScratchBertError(f"model {where} has no weights (model.safetensors or pytorch_model.bin); "
                               "give a complete model folder")


def prepare_starting_model(cfg: StartingModelConfig) -> dict:
    """Fetch and check ``cfg.init_model`` and copy it into ``cfg.out`` (a model folder); return facts about it."""
    import tempfile

    if not cfg.init_model:
        raise ScratchBertError("no starting model given; set init_model (hf://owner/name, s3://... or a folder)")
    with tempfile.TemporaryDirectory(prefix="scratchbert-start-") as tmp:
        folder = fetch(cfg.init_model, tmp)
        config = check_model(folder, max_seq_len=cfg.max_seq_len, where=cfg.init_model)
        require_weights(folder, cfg.init_model)
        with atomic_output_dir(cfg.out) as out:
            for item in folder.iterdir():
                if item.is_file() and item.name != "README.md":
                    shutil.copy2(item.resolve(), out / item.name)
    facts = {"init_model": cfg.init_model, "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
             "num_hidden_layers": config.num_hidden_layers, "max_position_embeddings": config.max_position_embeddings,
             "architectures": ",".join(config.architectures or [])}
    log.info("starting model %s: %s layers, hidden size %s, vocabulary %s", cfg.init_model, config.num_hidden_layers,
             config.hidden_size, config.vocab_size)
    return facts
