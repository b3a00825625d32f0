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
import math
import re
from collections.abc import Callable
from typing import Any

from scratchbert import params
from scratchbert.evaluation import EvalConfig
from scratchbert.modeling import positions_for
from scratchbert.params import finite
from scratchbert.pretrain import PretrainConfig
from scratchbert.pretraining_data import DatasetConfig
from scratchbert.qa import QAConfig
from scratchbert.starting_model import StartingModelConfig
from scratchbert.storage import PublishConfig
from scratchbert.tokenizer import TokenizerConfig
from scratchbert_pipelines import settings
from scratchbert_pipelines.trainjob import TrainJobConfig

# Stage (component folder name) -> its config dataclass.
STAGE_CONFIGS = {
    "tokenizer": TokenizerConfig,
    "dataset": DatasetConfig,
    "pretrain": PretrainConfig,
    "evaluate": EvalConfig,
    "qa_finetune": QAConfig,
    "publish": PublishConfig,
    "starting_model": StartingModelConfig,
}
# Stage -> configs of the pipeline's own side that its component takes too (fields the
# library has no use for: pretrain's nodes and GPUs, which decide where it runs).
PIPELINE_CONFIGS = {"pretrain": (TrainJobConfig,)}


def stage_configs(stage: str) -> tuple[type, ...]:
    """Every config class whose fields the component of ``stage`` takes."""
    return (STAGE_CONFIGS[stage], *PIPELINE_CONFIGS.get(stage, ()))


def config_class(stage: str, name: str) -> type:
    """The config class of ``stage`` that has the field ``name``."""
    for cls in stage_configs(stage):
        if name in params.fields(cls):
            return cls
    raise KeyError(f"no config of stage {stage} has a field {name!r}")
PREFIXES = {"evaluate": "eval_", "qa_finetune": "qa_"}

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


def stage_parameter(*targets: tuple[str, str], default: Any = _FROM_LIBRARY, prefix: bool = True,
                    help: str | None = None) -> Parameter:
    """A parameter feeding ``(stage, field)`` targets, described by the first target's field (or
    ``help``, where it does more in the pipeline than there); ``prefix=False`` keeps the field's
    name where it says what it is on its own (``squad_train``)."""
    stage, name = targets[0]
    cls = config_class(stage, name)
    tp, optional = params.field_type(cls, name)
    if optional or tp not in (str, int, float, bool):
        raise TypeError(f"{cls.__name__}.{name} is {tp}{' | None' if optional else ''}: a pipeline takes str, int, float or bool")
    value = params.default(cls, name) if default is _FROM_LIBRARY else default
    if value is params.REQUIRED:
        raise TypeError(f"{cls.__name__}.{name} has no default: give the pipeline's")
    return Parameter((PREFIXES.get(stage, "") if prefix else "") + name, tp, value,
                     help or params.help_text(cls, name, with_default=False, with_choices=False),
                     tuple(targets), params.fields(cls)[name].metadata.get("choices", ()))


def pipeline_names(stage: str, message: str, parameters: tuple[Parameter, ...] | None = None) -> str:
    """A stage's message with its ``--flags`` renamed to the pipeline parameters (default:
    :data:`PARAMETERS`) that feed them; a flag of the stage that no parameter feeds becomes its
    fixed value in the pipeline (``the dataset stage's validation_fraction (0.02)``)."""
    parameters = PARAMETERS if parameters is None else parameters
    names = {"--" + field.replace("_", "-"): p.name for p in parameters for s, field in p.targets if s == stage}
    for cls in stage_configs(stage):
        for field in params.fields(cls):
            flag = "--" + field.replace("_", "-")
            if flag not in names and params.default(cls, field) is not params.REQUIRED:
                names[flag] = f"the {stage} stage's {field} ({params.show(params.default(cls, field))})"
    for flag in sorted(names, key=len, reverse=True):
        message = re.sub(re.escape(flag) + r"(?![\w-])", names[flag], message)
    return message


PARAMETERS: tuple[Parameter, ...] = (
    # inputs
    stage_parameter(("tokenizer", "corpus"), ("dataset", "corpus"), default=""),  # GPU_RECIPE's below
    stage_parameter(("dataset", "valid_corpus")),
    stage_parameter(("qa_finetune", "squad_train"), default=DEFAULT_SQUAD_TRAIN, prefix=False),
    stage_parameter(("qa_finetune", "squad_dev"), default=DEFAULT_SQUAD_DEV, prefix=False),
    stage_parameter(("tokenizer", "max_corpus_bytes"), ("dataset", "max_corpus_bytes")),
    # a starting model instead of random weights
    stage_parameter(("tokenizer", "init_model"), ("pretrain", "init_model"), ("starting_model", "init_model"),
                    help="A starting model instead of random weights (hf://owner/name, s3://... or a folder): its "
                         "tokenizer is used, pretraining continues from its weights, or with skip_pretraining it is "
                         "fine-tuned as it is. Empty: BERT from scratch."),
    Parameter("skip_pretraining", bool, False, "Fine-tune QA on the starting model (init_model) directly, without "
                                              "pretraining it on the corpus first."),
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
    stage_parameter(("pretrain", "reserve_steps")),
    stage_parameter(("pretrain", "reserve_max_minutes")),
    Parameter("budget_minutes", float, 0.0, "One time budget for the whole run, in minutes: split between pretraining "
                                            "and QA fine-tuning by budget_pretrain_share, after the work around "
                                            "training (longer for more text or dev questions); a stage's own time "
                                            "budget or step count, where given, wins. 0: no budget."),
    Parameter("budget_pretrain_share", float, 0.4, "The share of budget_minutes' training time that goes to pretraining "
                                                   "(QA fine-tuning gets the rest): 0.9 on a GPU, where QA fine-tuning "
                                                   "ends in minutes; 0.4 on CPUs, where QA steps buy more F1 than "
                                                   "pretraining steps (docs/performance.md)."),
    Parameter("budget_qa_epoch_minutes", float, 0.0, "Minutes one epoch of QA fine-tuning takes where it runs, if known "
                                                     "(the QA stage's epoch_minutes metric): QA fine-tuning then gets no "
                                                     "more of budget_minutes than its qa_epochs need (it stops there) and "
                                                     "pretraining the rest, unless budget_qa_epoch_pretrain_steps paces "
                                                     "the split; it also times the scoring of more dev questions. 0: "
                                                     "unknown, budget_pretrain_share alone splits the budget."),
    Parameter("budget_qa_epoch_pretrain_steps", float, 0.0, "How many pretraining steps' time one epoch of QA "
                                                            "fine-tuning takes where it runs, if known: pretraining then "
                                                            "takes all of budget_minutes' training time but the "
                                                            "qa_epochs' worth of its own steps at the pace it measures "
                                                            "(reserve_steps), at least budget_pretrain_share of it, and QA "
                                                            "fine-tuning the rest, at most its share. It depends on the "
                                                            "model (preset) and both stages' batches. 0: unknown, the "
                                                            "split is fixed before training."),
    stage_parameter(("pretrain", "learning_rate")),
    stage_parameter(("pretrain", "batch_size")),
    stage_parameter(("pretrain", "checkpoint_uri")),
    stage_parameter(("pretrain", "num_nodes")),
    stage_parameter(("pretrain", "gpus_per_node")),
    # evaluation and QA fine-tuning
    stage_parameter(("evaluate", "max_examples")),
    stage_parameter(("qa_finetune", "max_steps")),
    stage_parameter(("qa_finetune", "time_budget_minutes")),
    stage_parameter(("qa_finetune", "epochs")),
    stage_parameter(("qa_finetune", "learning_rate")),
    stage_parameter(("qa_finetune", "batch_size")),
    stage_parameter(("qa_finetune", "max_seq_len"), ("starting_model", "max_seq_len")),
    stage_parameter(("qa_finetune", "max_train_examples")),
    stage_parameter(("qa_finetune", "max_eval_examples")),
    Parameter("qa_on_gpu", bool, True, "Fine-tune QA on a GPU node (the CUDA image) rather than on a CPU node."),
    # publishing
    stage_parameter(("publish", "publish_uri"), default=DEFAULT_PUBLISH_URI),
    stage_parameter(("publish", "publish_version")),
)
# The pipeline's defaults are a recipe for one GPU-hour: BERT at Turc et al.'s `medium` size (8
# layers of 512) pretrained on a corpus big enough to feed it (WikiText-103) for 90% of the
# training time, then SQuAD for at most two epochs at QA fine-tuning's own defaults (batch 32,
# the learning rate of medium's width, 5e-4). Chosen on a lent H200 (benchmarks/gpu_recipe.py; docs/performance.md, "The
# GPU recipe, end to end"): with the same 1.5 minutes of pretraining and 1.25 of QA fine-tuning,
# medium scored F1 27.8 on SQuAD dev against 18.6 for BERT-base at its usual settings (batch 256,
# learning rate 5e-4 then 1e-4: the recipe before, from the literature), at twice the tokens a
# second (725k against 363k). Whether base overtakes it within an hour is not measured. Two QA
# epochs took 2.4 minutes there, so the 10% left to QA (5.11 minutes of an hour, after the 8.93
# kept for the work around training: WikiText-103's 547 MB of text are 6.43 of them) holds them
# on a GPU up to 2.1 times slower. `scratchbert run-local` uses its own CPU recipe (scratchbert_pipelines.local_run).
GPU_RECIPE: dict[str, Any] = {
    "corpus": "hf://Salesforce/wikitext?config=wikitext-103-raw-v1",
    "preset": "medium",
    "batch_size": 256,
    "learning_rate": 1e-3,
    "budget_minutes": 60.0,
    "budget_pretrain_share": 0.9,
}
PARAMETERS = tuple(dataclasses.replace(p, default=GPU_RECIPE.get(p.name, p.default)) for p in PARAMETERS)
# The help texts come from the stages' options, which name each other as flags: here they name the
# parameters that feed them (QA fine-tuning's --max-steps is qa_max_steps); a flag no parameter feeds keeps its name.
PARAMETERS = tuple(dataclasses.replace(p, help=pipeline_names(p.targets[0][0], p.help, PARAMETERS)) if p.targets else p
                   for p in PARAMETERS)
BY_NAME = {p.name: p for p in PARAMETERS}
NAMES = tuple(BY_NAME)
# The parameters that put work on GPUs (QA on a GPU node, pretraining as a TrainJob of several
# GPUs), with the values a pipeline without GPUs runs with instead: the pipeline compiled for CPU
# nodes (compile.py --cpu) has no such parameters, and run-local takes none.
GPU_ONLY: dict[str, Any] = {"qa_on_gpu": False, "num_nodes": 1, "gpus_per_node": 1}


def defaults() -> dict[str, Any]:
    return {p.name: p.default for p in PARAMETERS}


def stage_arguments(stage: str, values: dict[str, Any]) -> dict[str, Any]:
    """The component arguments of ``stage`` (config field -> value) from pipeline parameter values."""
    return {field: values[p.name] for p in PARAMETERS for target_stage, field in p.targets if target_stage == stage}


# KFP carries run parameters as protobuf Values, whose numbers are doubles: integers beyond 2**53
# would reach the tasks rounded
KFP_INT_MAX = 2**53 - 1


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
        if p.type is int and abs(value) > KFP_INT_MAX:
            raise ScratchBertError(f"pipeline parameter {name} is {value}, beyond the integers a pipeline carries "
                                   f"exactly (up to {KFP_INT_MAX:,} either way)")
        if p.choices and value not in p.choices:
            raise ScratchBertError(f"pipeline parameter {name} is {value!r}, not one of {', '.join(map(str, p.choices))}")
        out[name] = float(value) if p.type is float else value
    return out


def validate(values: dict[str, Any], text_bytes: int | None = None) -> dict[str, Any]:
    """Check a run's parameter values as the stages will, before any of them starts; return them, complete.

    The values are checked by :func:`check` (names, types, choices), completed with the
    defaults, and turned into every stage's config (the artifact paths the pipeline fills in
    later stand in as placeholders), whose ``validate()`` runs: the checks each stage makes at
    its start, now made in seconds at the start of the run, with ``budget_minutes`` split into the
    two training stages' time budgets first (:func:`split_budget`; ``text_bytes``: the corpus's
    size where known, :func:`corpus_size`). Then what spans stages: the QA windows must fit the
    pretrained model's positions. A failure is one line in the
    pipeline's names (``qa_max_steps``, not ``--max-steps``).
    """
    from scratchbert.errors import ScratchBertError

    full = {**defaults(), **check(values)}
    if not (finite(full["budget_minutes"]) and full["budget_minutes"] >= 0):
        raise ScratchBertError(f"pipeline parameters: budget_minutes {full['budget_minutes']} must be 0 or more (0: no budget)")
    if not (finite(full["budget_pretrain_share"]) and 0 <= full["budget_pretrain_share"] <= 1):
        raise ScratchBertError(f"pipeline parameters: budget_pretrain_share {full['budget_pretrain_share']} must lie in [0, 1]")
    for name in ("budget_qa_epoch_minutes", "budget_qa_epoch_pretrain_steps"):
        if not (finite(full[name]) and full[name] >= 0):
            raise ScratchBertError(f"pipeline parameters: {name} {full[name]} must be 0 or more (0: unknown)")
    for p in PARAMETERS:  # one a stage ignores (qa_epochs beside qa_max_steps) still travels as a protobuf Value
        if p.type is float and not finite(full[p.name]):
            raise ScratchBertError(f"pipeline parameters: {p.name} {full[p.name]} is not a finite number, and a pipeline "
                                   "carries only finite ones; give a number")
    split = split_budget(full, text_bytes)
    # the stages check the time budgets and reserve the split gives them in place of those not given
    staged = {**full, **{name: value for name, value in split.items() if not full[name]}}
    for stage in STAGE_CONFIGS:
        given = stage_arguments(stage, staged)
        for cls in stage_configs(stage):
            fields = params.fields(cls)
            args = {name: value for name, value in given.items() if name in fields}
            for name, field in fields.items():
                if name not in args and field.default is params.REQUIRED:
                    args[name] = f"<{name} of the pipeline>"  # an artifact path, known only when the task runs
            try:
                cls(**args).validate()
            except ScratchBertError as e:
                raise ScratchBertError(f"pipeline parameters, {stage} stage: {pipeline_names(stage, str(e))}") from None
    if full["skip_pretraining"] and not full["init_model"]:
        raise ScratchBertError("pipeline parameters: skip_pretraining fine-tunes the starting model, but init_model is "
                               "empty; give init_model (hf://owner/name, s3://... or a path), or leave skip_pretraining off")
    full.update(split)
    positions = positions_for(full["max_seq_len"])
    if not full["init_model"] and full["qa_max_seq_len"] > positions:  # a starting model's: check_starting_positions
        raise ScratchBertError(f"pipeline parameters: qa_max_seq_len {full['qa_max_seq_len']} is longer than the {positions} "
                               f"positions of the model pretrained with max_seq_len {full['max_seq_len']}; use {positions} "
                               "or less, or 0 for the default")
    return full


# How budget_minutes is spent: first the work that is not training (tokenizer, dataset, evaluation,
# QA windows and scoring, publishing; fixed_minutes), then pretraining gets budget_pretrain_share
# of the rest and QA fine-tuning the remainder, but no more than its qa_epochs take when
# budget_qa_epoch_minutes says how long one takes (QA fine-tuning stops after them, as past about
# two a small model memorises SQuAD: more time is lost); docs/performance.md, "One budget", has
# the measurements behind these. BUDGET_FIXED_MINUTES is that work on the main job's 11 MB of text
# scoring 1,000 dev questions on 2 cores (97 to 121 s); more text costs the tokenizer and dataset
# stages about TEXT_MINUTES_PER_GB (12: "A budget and a corpus of your own"), and scoring a dev
# question about what training on a question does (0.79 to 0.99 times, per question of an epoch
# of about QA_EPOCH_QUESTIONS: 79,455 offline, 87,599 on the Hub), so a run that scores all 10,570
# dev questions or reads 64 MB keeps that time too instead of ending minutes past its budget
# ("One budget that ends in time").
BUDGET_FIXED_MINUTES = 2.5
BUDGET_FIXED_TEXT_BYTES = 11_000_000  # the main job's text, WikiText-2's size (local_run.WIKITEXT2_BYTES is this)
BUDGET_FIXED_QUESTIONS = 1000
TEXT_MINUTES_PER_GB = 12.0
QA_EPOCH_QUESTIONS = 80_000
SQUAD_DEV_QUESTIONS = 10_570  # SQuAD v1.1's dev set: what qa_max_eval_examples 0 scores


STAGE_BUDGETS = {"time_budget_minutes": "max_steps", "qa_time_budget_minutes": "qa_max_steps"}  # a stage's own, and its steps
# A split fixed before training must guess how fast QA fine-tuning will run; the machine's pace
# moves within a run, and pretraining's own mean step predicted QA's within 9% over four two-hour
# runs, where a probe before the run missed by up to 42% (docs/performance.md, "A QA epoch from
# pretraining's pace"). So where budget_qa_epoch_pretrain_steps says what a QA epoch costs in
# pretraining steps, the split is paced: pretraining gets all of the training time and keeps
# reserve_steps (qa_epochs of that) of its own measured steps at its end, never more than QA's
# share (reserve_max_minutes, budget_pretrain_share's rest); QA fine-tuning then stops after its
# epochs, with that share as its clock's limit.
RESERVES = ("reserve_steps", "reserve_max_minutes")


def fixed_minutes(values: dict[str, Any], text_bytes: int | None = None) -> float:
    """The minutes of ``budget_minutes`` kept for the work around training: :data:`BUDGET_FIXED_MINUTES`,
    and the time of the text read beyond :data:`BUDGET_FIXED_TEXT_BYTES` and of the dev questions
    scored beyond :data:`BUDGET_FIXED_QUESTIONS` (by ``budget_qa_epoch_minutes``). The text read is
    max_corpus_bytes or the corpus's size ``text_bytes`` (:func:`corpus_size`), the smaller where
    both are known; sizes and times not known add nothing (max_corpus_bytes 0 without a size, an
    epoch time of 0)."""
    return BUDGET_FIXED_MINUTES + sum(_beyond_the_main_job(values, text_bytes).values())


def _beyond_the_main_job(values: dict[str, Any], text_bytes: int | None) -> dict[str, float]:
    """The minutes :func:`fixed_minutes` adds to the main job's, for the text read beyond its 11 MB
    and the dev questions scored beyond its 1,000."""
    text = max(0.0, _text_read(values, text_bytes) - BUDGET_FIXED_TEXT_BYTES)
    questions = max(0.0, (_value(values, "qa_max_eval_examples") or SQUAD_DEV_QUESTIONS) - BUDGET_FIXED_QUESTIONS)
    return {"text": text / 1e9 * TEXT_MINUTES_PER_GB,
            "questions": _value(values, "budget_qa_epoch_minutes") * questions / QA_EPOCH_QUESTIONS}


def budget_overrun(values: dict[str, Any], text_bytes: int | None = None,
                   flag: Callable[[str], str] = lambda name: name) -> str | None:
    """A line saying that a run of ``values`` should end past ``budget_minutes``, and by about how
    much: where the work around training (:func:`fixed_minutes`) takes more than half of the
    budget, :func:`split_budget` still gives training half, so that a budget too short for its
    text or its scoring trains at all. None where the budget fits (or there is none). ``flag``
    names a parameter as the caller's user knows it (``--budget-minutes`` for a CLI)."""
    budget = float(values.get("budget_minutes") or 0)
    fixed = fixed_minutes(values, text_bytes)
    if budget <= 0 or not any(_timed_by_budget(values, name) for name in STAGE_BUDGETS) or fixed - budget / 2 < 0.05:
        return None
    more = _beyond_the_main_job(values, text_bytes)
    what = ", ".join(([f"{_text_read(values, text_bytes) / 1e6:,.0f} MB of text"] if more["text"] > 0 else []) +
                     ([f"{_value(values, 'qa_max_eval_examples') or SQUAD_DEV_QUESTIONS:,.0f} dev questions"]
                      if more["questions"] > 0 else []))
    return (f"{flag('budget_minutes')} {budget:g} is short for this run: the work around training"
            + (f" ({what})" if what else "") + f" should take about {fixed:.1f} of its minutes, more than the half that "
            f"training keeps, so the run should end about {fixed - budget / 2:.1f} minutes late; {flag('budget_minutes')} "
            f"{math.ceil(2 * fixed)} ends in time" + (f", as does a smaller {flag('max_corpus_bytes')}" if more["text"] > 0 else ""))


def _timed_by_budget(values: dict[str, Any], name: str) -> bool:
    """Whether ``budget_minutes`` sets the stage's time budget ``name``: the stage has no time
    budget of its own (non-zero) and no step count (positive)."""
    return not float(values.get(name) or 0) > 0 and not int(values.get(STAGE_BUDGETS[name]) or -1) > 0


def check_starting_positions(values: dict[str, Any]) -> None:
    """Raise when ``max_seq_len`` (where the run pretrains) or ``qa_max_seq_len`` is longer than the
    starting model's positions. On the pretraining path no stage before pretraining knows the
    first, nor one before QA fine-tuning the second, so the run would fail after the tokenizer and
    dataset stages, or after pretraining (the starting-model task of ``skip_pretraining`` checks
    the QA windows itself). Only the model's config is fetched; a model that cannot be read here
    is the stages' to name."""
    import json
    import tempfile

    from scratchbert import starting_model
    from scratchbert.errors import ScratchBertError

    init = str(values.get("init_model") or "")
    lengths = {"max_seq_len": 0 if values.get("skip_pretraining") else int(values.get("max_seq_len") or 0),
               "qa_max_seq_len": int(values.get("qa_max_seq_len") or 0)}
    if not init or max(lengths.values()) <= 0:
        return
    with tempfile.TemporaryDirectory(prefix="scratchbert-validate-") as tmp:
        try:
            folder = starting_model.fetch(init, tmp, weights=False)
            positions = int(json.loads((folder / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"])
        except (ScratchBertError, OSError, ValueError, KeyError, TypeError):
            return
    for name, length in lengths.items():
        if length > positions:
            raise ScratchBertError(f"pipeline parameters: {name} {length} is longer than the {positions} positions of "
                                   f"the starting model {init}; use {positions} or less"
                                   + (", or 0 for the default" if name == "qa_max_seq_len" else ""))


def check_unpublished(values: dict[str, Any]) -> None:
    """Raise when ``publish_version`` is already published at ``publish_uri``: publish never
    replaces a version, so the run would train for nothing and fail at its end (a rerun of a run
    that published). Looked up in the object store, by the validate task; a store that cannot
    be reached from there is publish's to name."""
    from scratchbert import storage
    from scratchbert.errors import ScratchBertError

    version = str(values.get("publish_version") or "")
    if not version:  # the UTC time of the publish: a new version
        return
    uri = f"{str(values.get('publish_uri') or DEFAULT_PUBLISH_URI).rstrip('/')}/{version}"
    try:
        storage.read_manifest(uri)
    except ScratchBertError:  # not published (NotFound), or the store cannot be read from here
        return
    raise ScratchBertError(f"pipeline parameters: publish_version {version} is already published at {uri}/, and a published "
                           "version is never replaced; choose another publish_version, or leave it empty for the UTC time")


def corpus_size(values: dict[str, Any]) -> int | None:
    """The bytes of text in ``values``' corpus, from its files' or objects' sizes
    (:func:`scratchbert.corpus.corpus_bytes`), for :func:`fixed_minutes`; None where no budget
    needs it (no budget, or max_corpus_bytes within the main job's text) or where it is not known."""
    try:
        limit = _value(values, "max_corpus_bytes")
        if not float(values.get("budget_minutes") or 0) > 0 or 0 < limit <= BUDGET_FIXED_TEXT_BYTES or not values.get("corpus"):
            return None
        from scratchbert.corpus import corpus_bytes

        return corpus_bytes(str(values["corpus"]))
    except Exception:  # a bad value is validate's to name, a corpus that cannot be read the tokenizer's
        return None


def _text_read(values: dict[str, Any], text_bytes: int | None) -> float:
    """The bytes of text a run reads: max_corpus_bytes or the corpus's size, the smaller where both are known; 0 if neither."""
    return min((size for size in (_value(values, "max_corpus_bytes"), float(text_bytes or 0)) if size > 0), default=0.0)


def _value(values: dict[str, Any], name: str) -> float:
    """The value of ``name`` given in ``values``, else the table's default."""
    given = values.get(name)
    return float(BY_NAME[name].default if given is None else given)


def split_budget(values: dict[str, Any], text_bytes: int | None = None) -> dict[str, float]:
    """``time_budget_minutes`` and ``qa_time_budget_minutes`` as ``budget_minutes`` sets them (a
    stage's own non-zero time budget is kept, and a stage given a step count gets no time budget
    from the split; ``text_bytes``: the corpus's size, :func:`fixed_minutes`), and pretraining's
    ``reserve_steps`` and ``reserve_max_minutes`` where ``budget_qa_epoch_pretrain_steps`` paces
    the split (:data:`RESERVES`); without a budget, as given."""
    budget = float(values.get("budget_minutes") or 0)
    given = {name: float(values.get(name) or 0) for name in (*STAGE_BUDGETS, *RESERVES)}
    if budget <= 0:
        return {name: given[name] for name in STAGE_BUDGETS}
    training = max(budget - fixed_minutes(values, text_bytes), budget / 2)  # the fixed work never takes more than half
    pretrain_share = 0.0 if values.get("skip_pretraining") else _value(values, "budget_pretrain_share")
    qa = training * (1 - pretrain_share)
    epoch_minutes = _value(values, "budget_qa_epoch_minutes")
    epochs = _value(values, "qa_epochs")
    # the steps to keep: the run's own reserve_steps, else qa_epochs of budget_qa_epoch_pretrain_steps
    reserve = given["reserve_steps"] or epochs * _value(values, "budget_qa_epoch_pretrain_steps")
    paced = (reserve > 0 and epochs > 0 and min(training * pretrain_share, qa) >= 0.01
             and all(_timed_by_budget(values, name) for name in STAGE_BUDGETS))
    if epoch_minutes > 0 and pretrain_share > 0 and epochs > 0 and not paced:  # what QA cannot use, pretraining can
        qa = min(qa, epochs * epoch_minutes)
    # to the hundredth of a minute, but never down to 0, which would mean no budget at all
    split = {name: max(0.01, round(minutes, 2)) if minutes > 0 else 0.0
             for name, minutes in (("time_budget_minutes", training if paced else training - qa),
                                   ("qa_time_budget_minutes", qa))}
    split = {name: split[name] if _timed_by_budget(values, name) else given[name] for name in split}
    if paced:  # at most QA's share unless the run limits it itself
        return {**split, "reserve_steps": float(round(reserve)),
                "reserve_max_minutes": given["reserve_max_minutes"] or split["qa_time_budget_minutes"]}
    return split


def signature(names: tuple[str, ...] = NAMES, *, artifacts: dict[str, Any] | None = None,
              return_annotation: Any = inspect.Signature.empty, defaults: dict[str, Any] | None = None) -> inspect.Signature:
    """A pipeline function's signature: its input ``artifacts`` (name -> annotation), then the
    parameters ``names`` (default: all), typed, with their defaults (``defaults`` where it has
    them: the CPU pipeline's recipe; else the table's)."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    defaults = defaults or {}
    inputs = [inspect.Parameter(name, kind, annotation=annotation) for name, annotation in (artifacts or {}).items()]
    return inspect.Signature(inputs + [inspect.Parameter(n, kind, default=defaults.get(n, BY_NAME[n].default),
                                                         annotation=BY_NAME[n].type)
                                       for n in names], return_annotation=return_annotation)


def docstring(summary: str, returns: str, names: tuple[str, ...] = NAMES, artifacts: dict[str, str] | None = None) -> str:
    """A Google-style docstring (which KFP reads for the UI's descriptions) of the parameters
    ``names`` (default: all) and of the input ``artifacts`` (name -> description)."""
    lines = [f"    {name}: {text}" for name, text in (artifacts or {}).items()]
    lines += [f"    {BY_NAME[n].name}: {BY_NAME[n].help}" + (f" One of: {', '.join(BY_NAME[n].choices)}." if BY_NAME[n].choices else "")
              for n in names]
    return f"{summary}\n\nArgs:\n" + "\n".join(lines) + f"\n\nReturns:\n    {returns}\n"


def stages_of(name: str) -> set[str]:
    """The stages a pipeline parameter feeds."""
    return {stage for stage, _ in BY_NAME[name].targets}
