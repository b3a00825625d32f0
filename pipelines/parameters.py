"""The pipeline's parameters: one table, derived from the stages' config dataclasses.

Each :class:`Parameter` names the config fields it feeds (``targets``); its type, help and
default come from the first of them (:mod:`scratchbert.params`), unless the pipeline gives
its own default (the inputs, which the library leaves required). Its name is the field's name
with the stage's prefix (:data:`PREFIXES`: ``qa_`` for QA fine-tuning, ``eval_`` for the
evaluation; none for the other stages, nor for the SQuAD inputs), so ``qa_learning_rate`` is
``QAConfig.learning_rate`` and ``scratchbert qa-finetune --learning-rate``. Everything that lists pipeline parameters
uses this table: the pipeline function's signature and docstring
(:mod:`scratchbert_pipelines.bert_pipeline`), ``scratchbert run-local``'s flags and
``scratchbert submit``'s check of ``--param`` names.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from scratchbert import params
from scratchbert.evaluation import EvalConfig
from scratchbert.pretrain import PretrainConfig
from scratchbert.pretraining_data import DatasetConfig
from scratchbert.qa import QAConfig
from scratchbert.storage import PublishConfig
from scratchbert.tokenizer import TokenizerConfig
from scratchbert_pipelines import settings

# Stage (component folder name) -> its config dataclass.
STAGE_CONFIGS = {
    "tokenizer": TokenizerConfig,
    "dataset": DatasetConfig,
    "pretrain": PretrainConfig,
    "evaluate": EvalConfig,
    "qa_finetune": QAConfig,
    "publish": PublishConfig,
}
PREFIXES = {"evaluate": "eval_", "qa_finetune": "qa_"}

DEFAULT_CORPUS = "hf://Salesforce/wikitext?config=wikitext-2-raw-v1"
DEFAULT_SQUAD_TRAIN = "hf://rajpurkar/squad?split=train"
DEFAULT_SQUAD_DEV = "hf://rajpurkar/squad?split=validation"
DEFAULT_PUBLISH_URI = f"s3://{settings.PUBLISH_BUCKET}/{settings.PUBLISH_PREFIX}"

_FROM_LIBRARY = object()


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One pipeline parameter: its name, type, default, help, and the config fields it feeds."""

    name: str
    type: type
    default: Any
    help: str
    targets: tuple[tuple[str, str], ...] = ()
    choices: tuple = ()


def stage_parameter(*targets: tuple[str, str], default: Any = _FROM_LIBRARY, prefix: bool = True) -> Parameter:
    """A parameter feeding ``(stage, field)`` targets, described by the first target's field;
    ``prefix=False`` keeps the field's name where it says what it is on its own (``squad_train``)."""
    stage, name = targets[0]
    cls = STAGE_CONFIGS[stage]
    tp, optional = params.field_type(cls, name)
    if optional or tp not in (str, int, float, bool):
        raise TypeError(f"{cls.__name__}.{name} is {tp}{' | None' if optional else ''}: a pipeline takes str, int, float or bool")
    value = params.default(cls, name) if default is _FROM_LIBRARY else default
    if value is params.REQUIRED:
        raise TypeError(f"{cls.__name__}.{name} has no default: give the pipeline's")
    return Parameter((PREFIXES.get(stage, "") if prefix else "") + name, tp, value,
                     params.help_text(cls, name, with_default=False, with_choices=False),
                     tuple(targets), params.fields(cls)[name].metadata.get("choices", ()))


PARAMETERS: tuple[Parameter, ...] = (
    # inputs
    stage_parameter(("tokenizer", "corpus"), ("dataset", "corpus"), default=DEFAULT_CORPUS),
    stage_parameter(("dataset", "valid_corpus")),
    stage_parameter(("qa_finetune", "squad_train"), default=DEFAULT_SQUAD_TRAIN, prefix=False),
    stage_parameter(("qa_finetune", "squad_dev"), default=DEFAULT_SQUAD_DEV, prefix=False),
    stage_parameter(("tokenizer", "max_corpus_bytes"), ("dataset", "max_corpus_bytes")),
    # tokenizer and dataset
    stage_parameter(("tokenizer", "vocab_size")),
    stage_parameter(("tokenizer", "lowercase")),
    stage_parameter(("tokenizer", "sample_bytes")),
    stage_parameter(("dataset", "max_seq_len")),
    stage_parameter(("dataset", "dupe_factor")),
    stage_parameter(("dataset", "corpus_parts")),
    # pretraining
    stage_parameter(("pretrain", "preset")),
    stage_parameter(("pretrain", "max_steps")),
    stage_parameter(("pretrain", "time_budget_minutes")),
    stage_parameter(("pretrain", "learning_rate")),
    stage_parameter(("pretrain", "batch_size")),
    stage_parameter(("pretrain", "checkpoint_uri")),
    # evaluation and QA fine-tuning
    stage_parameter(("evaluate", "max_examples")),
    stage_parameter(("qa_finetune", "max_steps")),
    stage_parameter(("qa_finetune", "learning_rate")),
    stage_parameter(("qa_finetune", "batch_size")),
    stage_parameter(("qa_finetune", "max_seq_len")),
    stage_parameter(("qa_finetune", "max_train_examples")),
    stage_parameter(("qa_finetune", "max_eval_examples")),
    Parameter("qa_on_gpu", bool, True, "Fine-tune QA on a GPU node (the CUDA image) rather than on a CPU node."),
    # publishing
    stage_parameter(("publish", "publish_uri"), default=DEFAULT_PUBLISH_URI),
    stage_parameter(("publish", "publish_version")),
)
BY_NAME = {p.name: p for p in PARAMETERS}
NAMES = tuple(BY_NAME)


def defaults() -> dict[str, Any]:
    return {p.name: p.default for p in PARAMETERS}


def stage_arguments(stage: str, values: dict[str, Any]) -> dict[str, Any]:
    """The component arguments of ``stage`` (config field -> value) from pipeline parameter values."""
    return {field: values[p.name] for p in PARAMETERS for target_stage, field in p.targets if target_stage == stage}


def check(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every name known and every value of the parameter's type (ints pass as
    floats) and among its choices; raises a one-line ``ScratchBertError`` otherwise."""
    from scratchbert.errors import ScratchBertError

    out = {}
    for name, value in values.items():
        p = BY_NAME.get(name)
        if p is None:
            close = [n for n in NAMES if name.replace("-", "_") == n or name in n]
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ScratchBertError(f"the pipeline has no parameter {name!r}{hint}; its parameters are: {', '.join(NAMES)}")
        ok = (isinstance(value, bool) if p.type is bool else
              isinstance(value, (int, float)) and not isinstance(value, bool) if p.type is float else
              isinstance(value, int) and not isinstance(value, bool) if p.type is int else isinstance(value, str))
        if not ok:
            raise ScratchBertError(f"pipeline parameter {name} takes a {p.type.__name__}, not {value!r}")
        if p.choices and value not in p.choices:
            raise ScratchBertError(f"pipeline parameter {name} is {value!r}, not one of {', '.join(map(str, p.choices))}")
        out[name] = float(value) if p.type is float else value
    return out


def signature(return_annotation: Any = inspect.Signature.empty) -> inspect.Signature:
    """The pipeline function's signature: every parameter, typed, with its default."""
    return inspect.Signature([inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=p.default,
                                                annotation=p.type) for p in PARAMETERS],
                             return_annotation=return_annotation)


def docstring(summary: str, returns: str) -> str:
    """A Google-style docstring (which KFP reads for the UI's descriptions) of every parameter."""
    args = "\n".join(f"    {p.name}: {p.help}" + (f" One of: {', '.join(p.choices)}." if p.choices else "")
                     for p in PARAMETERS)
    return f"{summary}\n\nArgs:\n{args}\n\nReturns:\n    {returns}\n"
