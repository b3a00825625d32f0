"""One definition per stage parameter: a field of the stage's config dataclass.

Each field carries its name, type, default, help and (for a closed set of values) its
choices. The command line (:mod:`scratchbert.cli`), the Kubeflow components, the pipeline's
parameters and ``scratchbert run-local`` are all derived from these fields or checked
against them, so a parameter is written down once.

Conventions that keep a parameter usable everywhere, Kubeflow included (whose parameters are
plain ``str``/``int``/``float``/``bool`` and never ``None``):

* an "off" or "automatic" value is a plain value that the help names, ``0`` or ``""``
  (for example ``max_corpus_bytes=0``: the whole corpus);
* ``None`` defaults (``int | None``) are kept only for expert overrides that no pipeline
  exposes, where every given value must be valid (``--num-hidden-layers 0`` is an error,
  not "the preset's").
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from scratchbert.errors import ScratchBertError

REQUIRED = dataclasses.MISSING


def param(default: Any = REQUIRED, *, help: str, choices: tuple = ()) -> Any:  # noqa: A002 (argparse's word)
    """A config field: its default (none: required), a one-sentence help, and its allowed values."""
    metadata = {"help": help, "choices": tuple(choices)}
    return dataclasses.field(default=default, metadata=metadata)


def field_type(cls, name: str) -> tuple[type, bool]:
    """The type of field ``name`` of dataclass ``cls`` and whether it is optional (``X | None``)."""
    tp = typing.get_type_hints(cls)[name]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def fields(cls) -> dict[str, dataclasses.Field]:
    """The fields of a config dataclass by name, in definition order."""
    return {f.name: f for f in dataclasses.fields(cls)}


def default(cls, name: str) -> Any:
    """The default of field ``name`` of ``cls`` (``REQUIRED`` when it has none)."""
    return fields(cls)[name].default


def help_text(cls, name: str, *, with_default: bool = True, with_choices: bool = True) -> str:
    """The help of a field, with its allowed values and its default appended once."""
    f = fields(cls)[name]
    text = f.metadata.get("help", "")
    if with_choices and f.metadata.get("choices"):
        text += f" One of: {', '.join(map(str, f.metadata['choices']))}."
    if with_default and f.default is not REQUIRED and f.default is not None:
        text += f" Default: {show(f.default)}."
    return text


def show(value: Any) -> str:
    """A default as a user types it: ``true``, ``''``, ``tiny``, ``0.002``."""
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if value == "" else str(value)


def check_choices(config) -> None:
    """Raise a one-line error when a field with choices holds a value outside them."""
    for name, f in fields(type(config)).items():
        allowed = f.metadata.get("choices")
        value = getattr(config, name)
        if allowed and value not in allowed:
            flag = "--" + name.replace("_", "-")
            raise ScratchBertError(f"{flag} {value!r} is not one of {', '.join(map(str, allowed))}")


INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


def int64(text: str) -> int:
    """An integer option as argparse's ``type``: ``int``, refused outside the signed 64-bit range, which
    numpy, torch and the tokenizers library take (beyond it a stage ended in an internal OverflowError)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None  # argparse's own words for int
    if not INT64_MIN <= value <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text} is out of range; give an integer from {INT64_MIN} to {INT64_MAX}")
    return value


def check(*checks: tuple[bool, str]) -> None:
    """Raise a one-line error with the message of the first ``(ok, message)`` that is not ok."""
    for ok, message in checks:
        if not ok:
            raise ScratchBertError(message)


SEED_LIMIT = 1 << 32  # seeds lie in [0, 2**32): transformers' set_seed seeds NumPy, which takes no others


def finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def check_source(value: str, flag: str, *, required: bool = True) -> None:
    """A data source is a local path, ``s3://bucket/prefix`` or ``hf://owner/name[?...]``: check its form
    (not whether it exists: the stage that reads it says that, where it runs)."""
    text = str(value or "").strip()
    if not text:
        if required:
            raise ScratchBertError(f"{flag} is empty; give a local path, s3://bucket/prefix or hf://owner/name")
        return
    if text.startswith("s3://"):
        from scratchbert.storage import parse_s3_uri

        parse_s3_uri(text)
    elif text.startswith("hf://"):
        from scratchbert import hub

        hub.parse(text)
    elif "://" in text:
        raise ScratchBertError(f"{flag} {text!r} has a scheme scratchbert does not read; give a local path, s3://... or hf://...")
