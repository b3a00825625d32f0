"""``scratchbert run-local``: the whole Kubeflow pipeline on this machine, with an embedded S3 server.

What :func:`run_local` does, in order:

1. checks the pipeline parameters it is given (names and types from
   :mod:`scratchbert_pipelines.parameters`) and makes a run folder ``<workdir>/<run id>/``;
2. with ``synthetic=True``, writes a generated corpus and SQuAD-style train/dev sets there
   (for any of the four inputs not given);
3. starts :class:`scratchbert.objectstore.EmbeddedS3` on 127.0.0.1 (objects kept in
   ``keep_store``, by default ``<workdir>/s3-store``), or uses the S3 endpoint you give
   with the ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` of the environment;
4. sets the ``AWS_*`` variables for the pipeline's task processes and uploads local corpus
   and SQuAD files (of a corpus, only the part the run reads: :func:`_stage_input`) to
   ``s3://scratchbert-inputs/<run id>/...``, so the tasks read them from
   ``s3://`` exactly as on a cluster (``hf://`` and ``s3://`` inputs are passed unchanged;
   with no input at all the pipeline's defaults, WikiText-2 and SQuAD from the Hub, apply,
   or their offline stand-ins when the Hub cannot be reached: :func:`stand_in_data`);
5. runs the pipeline, the same function that is compiled for the cluster (without the
   retries, which only repeat a local failure), through
   ``kfp.local`` (each task a subprocess of this Python, in this environment); kfp.local's
   own output goes to ``<run>/run.log`` while the screen shows a line per stage with its
   progress (everything, with ``verbose``);
6. stops the server (always), reads every stage's ``metrics.json``, writes
   ``<run>/summary.json`` and prints a summary table. A failed run says which task failed
   and why in one line, names the log, and marks its folder failed (``summary.json`` with
   ``status: failed`` and the error).

Every parameter is checked first, the way the stages will (:func:`scratchbert_pipelines.parameters.validate`),
so a bad value fails before any folder, server or task exists. The embedded server's store is
locked for the run; a second run sharing the workdir while one runs keeps its objects in its
own run folder instead.

After the run, the published model stays in the kept store; to read it again::

    from scratchbert.objectstore import EmbeddedS3
    from scratchbert import storage
    with EmbeddedS3(data_dir="runs/local/s3-store") as s3:
        storage.fetch_published("s3://models/scratchbert-qa", "qa-model", client=s3.client())
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from scratchbert import params
from scratchbert.errors import RunFailed, ScratchBertError
from scratchbert.outputs import check_writable, is_remote, local_path, read_json, relation_to, walk_files, write_json
from scratchbert_pipelines import parameters

COMMAND = "run-local"
DESCRIPTION = ("Run the whole scratchbert pipeline on this machine through kfp.local, with an embedded "
               "S3 server (or --endpoint); prints a line per stage and a summary, and keeps the published "
               "model in the store.")
INPUT_BUCKET = "scratchbert-inputs"
STORE_DIRNAME = "s3-store"
LOG_FILE = "run.log"
# Pipeline parameters that take data or a model: local paths are uploaded to the S3 server first.
SOURCES = ("corpus", "valid_corpus", "squad_train", "squad_dev", "init_model")

# The run's defaults, by pipeline parameter (the pipeline's own defaults fill in the rest).
# On generated data: a nano model, a few minutes on 2 CPU cores, long enough that the numbers
# show learning (the nano learning rates are those the unit tests found to work for it).
SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "preset": "nano", "vocab_size": 2000, "max_seq_len": 128, "max_steps": 800, "budget_minutes": 0.0, "batch_size": 32,
    "learning_rate": 3e-3, "qa_max_steps": 300, "qa_batch_size": 32, "qa_max_seq_len": 192,
    "qa_learning_rate": 3e-3,
}
# What --budget-minutes decides in place of the run's defaults (a value the user gives still wins).
BUDGET_GOVERNS = ("max_steps", "time_budget_minutes", "qa_max_steps", "qa_time_budget_minutes")
SYNTHETIC_SIZES = {"documents": 1500, "squad_train_articles": 300, "squad_dev_articles": 40}
# The CPU recipe (the pipeline's own defaults are a GPU recipe): on real data (WikiText-2 and
# SQuAD unless given), a tiny model pretrained on examples of 64 tokens (1.8 times the steps of
# 128 in the same time, and a better start for QA fine-tuning) in batches of 64 (4,096 tokens a
# step, as batch 32 of 128 tokens before; +2.4 and +4.1 F1 over 32 in paired probes at 30
# minutes, level at 15), one budget of 15 minutes, 40% of its training time pretraining (several
# passes over 11 MB, hence five cuts of each document) and 60% QA fine-tuning in the batch size
# and at the learning rate measured best for it, scored on 1000 dev questions. Longer budgets
# give QA fine-tuning its two epochs of SQuAD (QA_EPOCH_MINUTES) and pretraining the rest.
# docs/performance.md has what it measures.
CPU_CORPUS = "hf://Salesforce/wikitext?config=wikitext-2-raw-v1"
WIKITEXT_103 = "hf://Salesforce/wikitext?config=wikitext-103-raw-v1"  # about 540 MB, for more text than WikiText-2's
# Minutes one QA epoch of the recipe (batches of 128 windows of 384 tokens, SQuAD v1.1's training
# set) took on 2 cores in whole runs, by the precision the machine trains in (a CPU with bf16
# matrix instructions, AMX: tiny 3.8 to 4.74, 4.2 chosen, mini 21.87; one without, AVX2 only,
# trains in fp32: tiny 8.38, 8.78 and 9.34 with eager attention, 7.05 to 8.04 with SDPA, auto's
# kernel there now; 8.8 kept so that a slow day still trains both epochs; mini 36.5, from the stage's
# first 50 steps, not yet a whole run) and model (tiny4: 1.68 times tiny's, its epoch against
# tiny's on one thread each, side by side, 8.04 against 4.79 minutes; in fp32 a whole run's took
# 17.04, a slow day's). A run whose model has no time here splits its budget by the share alone;
# one with a time times its own epoch at the start (fit_to_machine), and these stay what
# budget_minutes_for scales by.
QA_EPOCH_MINUTES = {"bf16": {"tiny": 4.2, "tiny4": 7.1, "mini": 21.9}, "fp32": {"tiny": 8.8, "tiny4": 14.8, "mini": 36.5}}
# One QA epoch of the recipe in pretraining steps of the recipe (batches of 64 examples of 64
# tokens), by precision and model: 628 QA steps times how much longer a QA step took than the
# run's own mean pretraining step in whole runs (docs/performance.md, "A QA epoch from
# pretraining's pace"): mini 4.23, 3.88, 4.11 and 4.58 in four two-hour runs (4.2 chosen);
# tiny4 3.12 and 3.32 at 30 minutes (3.2); tiny 2.25 to 2.93 in six runs of 15 and 30 minutes
# (2.6). With it the budget's split is paced (parameters.RESERVES). Not measured in fp32.
QA_EPOCH_PRETRAIN_STEPS = {"bf16": {"tiny": 1633.0, "tiny4": 2010.0, "mini": 2638.0}}
# The model by budget on a machine that trains in bf16, from so many minutes up (docs/performance.md,
# "F1 against the whole run's budget"): tiny4 (tiny's width, 4 layers) from 30 minutes, where it
# scored F1 25.09, 25.67 and 25.31 on 64 MB against tiny's 20.06 to 25.06 (mean 23.5), and 26.78
# against 24.87 in an hour (28.00 on 64 MB), where the machine pretrains it past the plateau of
# word frequencies (MIN_PRETRAIN_STEPS; 20.13 on half of the machine).
# mini (4 layers of 256) from two hours, with 64 MB of text (CORPUS_BYTES_FROM_BUDGET): F1 44.36,
# against tiny4's 31.19 on the same text (on 11 MB mini scored 25.6 and 26.3, tiny4 26.75); its two
# QA epochs (44 minutes on a slow day) starve pretraining below that. A slower machine needs more
# minutes for the same steps (budget_minutes_for).
PRESET_FROM_BUDGET = {30.0: "tiny4", 120.0: "mini"}
# A model the budget picks trains only where it gets the pretraining steps it needs (in batches of
# 64 examples of 64 tokens, the recipe's), else the model the budget gives below it: tiny4 leaves the
# plateau after about 4,000 steps (F1 20.13 at 3,327, 24.58 at 4,000, 25.09 to 25.67 from 5,017), and
# a slow day's 30 minutes may give it fewer, where tiny does better. Its steps are predicted from
# the QA probe's step: a recipe pretraining step of tiny4 took 0.29 times the probe's at the run's
# start, 0.31 times one right after it (0.1687 s at 23.3k tokens/s, against about 0.577 and 0.548;
# benchmarks/qa_epoch_probe.py --runs); in fp32 (AVX2, two hours) 0.285 and 0.244 (0.405 s).
MIN_PRETRAIN_STEPS = {"tiny4": 4500}
PRETRAIN_STEP_PER_PROBE_STEP = {"tiny4": 0.3}
# The default text by budget, in bytes from so many minutes up (as the model; budget_minutes_for
# scales them): WikiText-2's 11 MB for the main job; from 30 minutes 64 MB (WikiText-103's first
# 64 MB; offline enwiki/train.txt's, nearly all of it). From 30 minutes a model passes over 11 MB
# so often that it memorises it (training loss 4.0 against 5.33 held out at 30 minutes), and every
# model scored more F1 on 64 MB: tiny 24.96 and 24.24 in 30 minutes against 22.4 to 23.75, and
# tiny4 and mini as above (docs/performance.md, "64 MB from 30 minutes"). A --corpus the run gives
# is cut the same way while the budget bounds pretraining: a 15-minute budget's pretraining cannot
# use more, and every byte beyond costs the budget's time in the tokenizer and dataset stages
# (parameters.TEXT_MINUTES_PER_GB on 2 cores, which the budget keeps for text beyond 11 MB);
# without a budget, or with a step count, all of it.
WIKITEXT2_BYTES = parameters.BUDGET_FIXED_TEXT_BYTES  # 11 MB: the budget's fixed minutes were measured on it
CORPUS_BYTES_FROM_BUDGET = {0.0: WIKITEXT2_BYTES, 30.0: 64_000_000}
REAL_DEFAULTS: dict[str, Any] = {
    "preset": "tiny", "max_seq_len": 64, "batch_size": 64, "learning_rate": 0.0, "budget_minutes": 15.0,
    "budget_pretrain_share": 0.4, "budget_qa_epoch_minutes": QA_EPOCH_MINUTES["bf16"]["tiny"],  # run_settings: the machine's
    "budget_qa_epoch_pretrain_steps": QA_EPOCH_PRETRAIN_STEPS["bf16"]["tiny"],  # as budget_qa_epoch_minutes
    "max_steps": -1, "dupe_factor": 5, "qa_batch_size": 128,
    "qa_max_eval_examples": 1000, "eval_max_examples": 2000,
}

# Recipe settings that hold only for runs like those they were measured on: a run that gives its
# own value or input for any name listed drops the setting. budget_qa_epoch_minutes was timed with
# the recipe's QA data and settings, for the models of QA_EPOCH_MINUTES (without it the share alone
# splits the budget), and budget_qa_epoch_pretrain_steps with both stages' batches too (an epoch
# time or a reserve the run gives splits it its own way); 64-token examples were measured from
# scratch, so a run that continues a starting model pretrains it with the pipeline's 128 (as
# BERT's first phase); a starting model is fine-tuned at the QA learning rate of its width
# (scratchbert.qa.learning_rate_for), not at the one --synthetic's small models learn at.
MEASURED_WITH = {
    "budget_qa_epoch_minutes": ("init_model", "squad_train", "qa_batch_size", "qa_max_seq_len", "qa_max_train_examples"),
    "budget_qa_epoch_pretrain_steps": ("init_model", "squad_train", "qa_batch_size", "qa_max_seq_len",
                                       "qa_max_train_examples", "batch_size", "max_seq_len", "vocab_size",
                                       "budget_qa_epoch_minutes", "reserve_steps"),
    "max_seq_len": ("init_model",),
    "qa_learning_rate": ("init_model",),
}

# With no inputs a run trains on the Hub's WikiText (hub_corpus) and SQuAD. When the Hub cannot
# be reached, the same kinds of data in ../shared/data beside the checkout (or
# $SCRATCHBERT_SHARED_DATA) stand in for them: that folder's README says it holds offline
# stand-ins for exactly these Hub datasets. The Wikipedia text is cut to the budget's bytes as well.
STAND_IN_ENV = "SCRATCHBERT_SHARED_DATA"
STAND_INS = {"corpus": "enwiki/train.txt", "squad_train": "squad/train-v1.1.json", "squad_dev": "squad/dev-v1.1.json"}

# Stage -> the output artifact holding the stage's metrics.json.
STAGE_OUTPUTS = {"tokenizer": "tokenizer", "dataset": "dataset", "pretrain": "logs", "evaluate": "evaluation",
                 "qa_finetune": "logs"}
STAGES = ("starting_model", *STAGE_OUTPUTS, "publish")
# The qa_finetune task's model artifact: the summary says how to ask it, with a question and a passage
# that holds its answer, so that the command runs as pasted (ask's --context also takes @FILE).
QA_MODEL_OUTPUT = "qa_model"
ASK_EXAMPLE = ("Who founded the town?", "The town was founded by Ada Brellon in 1820.")
# Parameters that only mean something on a cluster (GPU nodes, a TrainJob): no flag, refused.
CLUSTER_ONLY = tuple(parameters.GPU_ONLY)
# Parameters whose part a starting model (init_model) brings itself: the stages take its size and its
# tokenizer and leave these unused. A run that gives one is refused (the pipeline cannot tell a default).
STARTING_MODEL_OWN = {"preset": "its own size", "vocab_size": "its own tokenizer", "lowercase": "its own tokenizer"}
TOKENIZER_OWN = tuple(name for name, what in STARTING_MODEL_OWN.items() if what == "its own tokenizer")
# The dataset stage's fan-out: the part numbers, one "dataset" task per corpus part inside a
# dsl.ParallelFor, and the merge, whose output is the stage's dataset and whose end ends the stage.
# The pretrain stage's first task counts its GPUs (one pod, or a TrainJob).
TASK_STAGES = {"dataset_merge": "dataset"}
TASK_LABELS = {"corpus_part_numbers": "dataset/parts", "dataset_merge": "dataset/merge", "pretrain_gpus": "pretrain/gpus"}
LOOP_PREFIX = "for-loop-"  # kfp.local's folder of one loop iteration: a part, not the stage's result


def run_settings(synthetic: bool, given: dict[str, Any], sources: dict[str, Any]) -> dict[str, Any]:
    """The run's own defaults (:data:`SYNTHETIC_DEFAULTS` or :data:`REAL_DEFAULTS`, the model by
    :data:`PRESET_FROM_BUDGET`, the text's size by :data:`CORPUS_BYTES_FROM_BUDGET`) as they
    apply to a run given the parameters ``given`` and the inputs ``sources`` (name -> value or None)."""
    settings = dict(SYNTHETIC_DEFAULTS if synthetic else REAL_DEFAULTS)
    if sources.get("init_model") is not None:  # a starting model's tokenizer is its own (not --synthetic's 2,000 words)
        for name in TOKENIZER_OWN:
            settings.pop(name, None)
    precision = None if synthetic else machine_precision()  # the recipe's times and model are by it
    if given.get("budget_minutes"):  # one budget: the run's own step and time limits give way to it
        for name in BUDGET_GOVERNS:
            settings.pop(name, None)
        if not synthetic:
            settings["preset"] = by_budget(PRESET_FROM_BUDGET, given["budget_minutes"], precision) or settings["preset"]
    budget = given.get("budget_minutes", settings["budget_minutes"])
    if not synthetic and (sources.get("corpus") is None or budget and not pretrains_by_steps(given)):
        corpus_bytes = by_budget(CORPUS_BYTES_FROM_BUDGET, budget, precision)
        if corpus_bytes is not None:  # None: a budget below 0 or not a number, which validate names
            settings["max_corpus_bytes"] = corpus_bytes

    def departs(name: str) -> bool:  # the run gives its own input, or a value other than the recipe's
        return sources.get(name) is not None or name in given and given[name] != settings.get(name, parameters.BY_NAME[name].default)

    for setting, names in MEASURED_WITH.items():
        if any(departs(name) for name in names):
            settings.pop(setting, None)
    for name in RECIPE_TABLES:
        if name in settings:  # the QA epoch of the model the run trains here, where measured
            set_recipe_value(settings, name, given.get("preset", settings["preset"]), precision)
    return settings


# The recipe's values measured per model and precision, by the pipeline parameter they set.
RECIPE_TABLES = {"budget_qa_epoch_minutes": QA_EPOCH_MINUTES, "budget_qa_epoch_pretrain_steps": QA_EPOCH_PRETRAIN_STEPS}


def set_recipe_value(settings: dict[str, Any], name: str, preset: str, precision: str | None = None) -> None:
    """``settings[name]`` as :data:`RECIPE_TABLES` has it for ``preset``; left out where not measured."""
    value = recipe_value(RECIPE_TABLES[name], preset, precision)
    if value:
        settings[name] = value
    else:
        settings.pop(name, None)


def recipe_value(table: dict[str, dict[str, float]], preset: str, precision: str | None = None) -> float | None:
    """``table``'s value (precision -> model -> value) for ``preset`` where training runs in
    ``precision`` (this machine's unless given); None where not measured."""
    return table.get(precision or machine_precision(), {}).get(preset)


def cpu_pipeline_defaults() -> dict[str, Any]:
    """The CPU recipe as the defaults of the pipeline compiled for CPU nodes (``compile.py --cpu``):
    :data:`REAL_DEFAULTS` and the text a run without a corpus of its own reads. Fixed when
    compiling, as a run on a machine that trains in bf16 gets them: the cluster's nodes are not
    known then, and no task times them (:func:`fit_to_machine`) or picks the model by budget."""
    corpus_bytes = by_budget(CORPUS_BYTES_FROM_BUDGET, REAL_DEFAULTS["budget_minutes"], "bf16")
    return {**REAL_DEFAULTS, "corpus": hub_corpus(corpus_bytes), "max_corpus_bytes": corpus_bytes}


def pretrains_by_steps(given: dict[str, Any]) -> bool:
    """Whether a run gives its pretraining a step count (``max_steps``), which no budget's clock cuts short."""
    return int(given.get("max_steps", -1)) > 0


def by_budget(table: dict[float, Any], minutes: float, precision: str | None) -> Any:
    """The value of ``table`` (minutes on a machine that trains in bf16 -> value) that a budget of
    ``minutes`` reaches where training runs in ``precision``: the one from the most minutes; None below all."""
    return next((value for floor, value in sorted(table.items(), reverse=True)
                 if minutes >= budget_minutes_for(floor, precision)), None)


def hub_corpus(corpus_bytes: int) -> str:
    """The Hub's default corpus for so many bytes of text (0: all there is): WikiText-2 while it
    holds them, the article's, else WikiText-103."""
    return CPU_CORPUS if 0 < corpus_bytes <= WIKITEXT2_BYTES else WIKITEXT_103


def budget_minutes_for(minutes: float, precision: str | None) -> int:
    """A budget of ``minutes`` on a machine that trains in bf16, as minutes where training runs in
    ``precision``: times how much longer tiny's QA epoch takes there (:data:`QA_EPOCH_MINUTES`; fp32
    8.8 / 4.2), so that a model gets the steps it was chosen with. Scaled, and in fp32 measured only
    at two hours (docs/performance.md, "Two hours without bf16"): there mini's two QA epochs alone
    take 73 minutes of two hours."""
    times = QA_EPOCH_MINUTES.get(precision, QA_EPOCH_MINUTES["bf16"])
    return round(minutes * times["tiny"] / QA_EPOCH_MINUTES["bf16"]["tiny"])


def machine_precision() -> str:
    """The precision training runs in here (``auto``'s choice: bf16 where the CPU or GPU has it)."""
    from scratchbert.pretrain import resolve_precision

    return resolve_precision("auto")


def qa_epoch_minutes(preset: str, precision: str | None = None) -> float | None:
    """Minutes one QA epoch of the recipe takes for ``preset`` on a machine that trains in
    ``precision`` (this one's unless given), where timed (:data:`QA_EPOCH_MINUTES`); an epoch in
    fp32 takes about twice one in bf16. The plan :func:`run_settings` holds; a budgeted run times
    its own at the start (:func:`fit_to_machine`), on a GPU too."""
    return recipe_value(QA_EPOCH_MINUTES, preset, precision)


# How long a QA epoch takes moves with the machine's speed that day (tiny's: 2.44 to 4.74 minutes
# on the same AMX machine), and a table must reserve the slow day's, so faster days ended 30-minute
# runs about 3 minutes early and two-hour ones over 20. So a run with a budget times a few QA steps
# of its model first (scratchbert.qa.training_step_seconds: QA_PROBE_SECONDS of batches of
# QA_PROBE_LENGTH tokens) and reserves QA_EPOCH_PROBE_STEPS of them an epoch, a tenth more for the
# machine's noise. An epoch of the recipe's SQuAD is 628 steps of 128 windows, and a probe step of
# 192 tokens costs about what the average length-grouped batch does: tiny's epoch took 2.59 minutes
# in a whole run, 627 probe steps of the 0.248 s timed after it (docs/performance.md, "A QA epoch
# from a probe").
QA_PROBE_SECONDS = 6.0
QA_PROBE_LENGTH = 192
QA_EPOCH_PROBE_STEPS = 628
QA_PROBE_MARGIN = 0.1


def probe_qa_step_seconds(preset: str, vocab_size: int, batch_size: int) -> float:
    """Seconds a QA training step of the recipe takes on this machine now, for ``preset`` with a
    vocabulary of ``vocab_size`` in batches of ``batch_size``: the median of a few timed steps."""
    from scratchbert.qa import training_step_seconds

    return training_step_seconds(preset, vocab_size=vocab_size, batch_size=batch_size, length=QA_PROBE_LENGTH,
                                 seconds=QA_PROBE_SECONDS)


def qa_epoch_minutes_from_step(seconds: float) -> float:
    """The QA epoch to reserve for a probe step of ``seconds``: :data:`QA_EPOCH_PROBE_STEPS` of
    them and :data:`QA_PROBE_MARGIN` more, rounded up to a tenth of a minute."""
    return tenth_up(QA_EPOCH_PROBE_STEPS * seconds * (1 + QA_PROBE_MARGIN) / 60)


def fit_to_machine(settings: dict[str, Any], given: dict[str, Any], sources: dict[str, Any], quiet: bool,
                   text_bytes: int | None = None) -> dict[str, Any]:
    """``settings`` (:func:`run_settings`' plan) fitted to this machine's speed now, for a run with a
    budget: the model the budget picked where it gets the pretraining steps it needs here
    (:data:`MIN_PRETRAIN_STEPS`), else the one below it; the recipe's QA epoch as timed here
    (:func:`probe_qa_step_seconds`); ``text_bytes``, the corpus's size, for the budget's split
    (:func:`scratchbert_pipelines.parameters.corpus_size`). Says what it timed on stderr unless ``quiet``."""
    settings = dict(settings)
    reserve = "budget_qa_epoch_minutes" in settings and "budget_qa_epoch_minutes" not in given  # the recipe's QA data
    # a model the budget picked, to pretrain from scratch for the budget's time (not a step count the run gives)
    picked = "preset" not in given and sources.get("init_model") is None and not pretrains_by_steps(given)
    budget = {**settings, **given}.get("budget_minutes")  # the run's own default budget (REAL_DEFAULTS) is a budget too
    while budget and (reserve or picked and settings["preset"] in MIN_PRETRAIN_STEPS):
        planned = {**settings, **given}
        preset = planned["preset"]
        step = probe_qa_step_seconds(preset, int(planned.get("vocab_size", parameters.BY_NAME["vocab_size"].default)),
                                     int(planned["qa_batch_size"]))
        if reserve:
            settings["budget_qa_epoch_minutes"] = qa_epoch_minutes_from_step(step)
        split = parameters.split_budget({**settings, **given}, text_bytes)
        said = f"{COMMAND}: timed {preset} here now: " + \
               (f"a QA epoch should take {settings['budget_qa_epoch_minutes']:g} minutes; " if reserve else "")
        needed = MIN_PRETRAIN_STEPS.get(preset, 0) if picked else 0
        # pretraining's minutes as the probe predicts them (a paced split's are known only as it trains)
        minutes = parameters.split_budget({**settings, **given, "budget_qa_epoch_pretrain_steps": 0},
                                          text_bytes)["time_budget_minutes"]
        steps = pretrain_steps_in(minutes, preset, step) if needed else None
        if steps is not None and steps < needed:  # too slow a machine today for this model: the next turn times the one below
            settings["preset"] = smaller_preset(preset)
            if "budget_qa_epoch_pretrain_steps" in settings and "budget_qa_epoch_pretrain_steps" not in given:
                set_recipe_value(settings, "budget_qa_epoch_pretrain_steps", settings["preset"])
            if not quiet:
                print(f"{said}about {steps:,} pretraining steps in {minutes:g} minutes, fewer than "
                      f"the {needed:,} it needs; training {settings['preset']} instead", file=sys.stderr, flush=True)
            continue
        if not quiet:
            print(said + describe_split(split, planned["budget_minutes"], steps), file=sys.stderr, flush=True)
        break
    return settings


def describe_split(split: dict[str, float], budget: float, steps: int | None = None) -> str:
    """How ``split`` (:func:`scratchbert_pipelines.parameters.split_budget`'s) spends ``budget``
    minutes, in words; ``steps``: the pretraining steps predicted, if any."""
    training = split["time_budget_minutes"] + (0.0 if split.get("reserve_steps") else split["qa_time_budget_minutes"])
    if split.get("reserve_steps"):
        head = (f"{training:g} minutes of training: pretraining until the time of {split['reserve_steps']:,.0f} of its own "
                f"steps is left, at the pace it measures (at least {training - split['reserve_max_minutes']:g} minutes"
                + (f"; about {steps:,} steps at the pace timed now" if steps is not None else "")
                + f"), then QA fine-tuning for its epochs (at most {split['qa_time_budget_minutes']:g} minutes)")
    else:
        head = (f"{split['time_budget_minutes']:g} minutes of pretraining" + (f" (about {steps:,} steps)" if steps is not None else "")
                + f", {split['qa_time_budget_minutes']:g} of QA fine-tuning")
    return f"{head}, {budget - training:.2f} for the rest of the run"


def pretrain_steps_in(minutes: float, preset: str, probe_step: float) -> int:
    """Pretraining steps of the recipe's batch (:data:`REAL_DEFAULTS`' examples and tokens) that
    ``minutes`` give ``preset`` here, from a QA probe step of ``probe_step`` seconds
    (:data:`PRETRAIN_STEP_PER_PROBE_STEP`). A run's own batch or length trains about as many tokens."""
    return int(minutes * 60 / (probe_step * PRETRAIN_STEP_PER_PROBE_STEP[preset]))


def smaller_preset(preset: str) -> str:
    """The model :data:`PRESET_FROM_BUDGET` gives a budget just below the one that picks ``preset``."""
    order = [REAL_DEFAULTS["preset"], *(value for _, value in sorted(PRESET_FROM_BUDGET.items()))]
    return order[order.index(preset) - 1]


def tenth_up(minutes: float) -> float:
    """``minutes`` rounded up to a tenth: for QA, a little idle time costs less than a QA cut short."""
    return math.ceil(minutes * 10) / 10


def run_local(*, synthetic: bool = False, endpoint: str | None = None, workdir: str | os.PathLike = "runs/local",
              keep_store: str | os.PathLike | None = "", verbose: bool = False, quiet: bool = False,
              **params: Any) -> dict:
    """Run the whole pipeline locally (see the module docstring) and return its summary.

    Args:
        synthetic: generate whichever of the four inputs is not given, and default to a nano
            model trained for a few minutes (:data:`SYNTHETIC_DEFAULTS`).
        endpoint: an S3 endpoint to use instead of the embedded server (credentials from the
            environment's ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``).
        workdir: the folder of the runs (each run gets ``<workdir>/<UTC time>/``).
        keep_store: the embedded server's data folder, kept after the run: ``""`` means
            ``<workdir>/s3-store``, ``None`` a temporary store deleted when the run ends.
        verbose: show kfp.local's whole output, not only a line per stage.
        quiet: print nothing (the summary is returned and written to ``summary.json``).
        **params: pipeline parameters (:data:`scratchbert_pipelines.parameters.NAMES`); the
            inputs (``corpus``, ``valid_corpus``, ``squad_train``, ``squad_dev``) may also be
            local files or folders, which are uploaded to the S3 server first.

    Returns:
        The summary (also in ``<run>/summary.json``): ``run_id``, ``run_dir``, ``outputs``,
        ``log``, ``published_uri``, ``store``, ``endpoint``, ``arguments``,
        ``total_seconds``, ``notes`` (:func:`qa_epoch_advice`) and, per stage, ``seconds``
        and its metrics.

    Raises:
        ScratchBertError: a bad parameter or input path, a missing ``weed``, missing
            credentials for ``endpoint``; ``RunFailed`` when a task fails (the message has
            the task's error and names the log).
    """
    given = parameters.check({k: v for k, v in params.items() if v is not None})
    for name in CLUSTER_ONLY:
        if name in given:
            raise ScratchBertError(_cluster_only(name))
    workdir = Path(workdir).resolve()
    # an empty input is one not given ("" is the pipeline's "none" for init_model and valid_corpus), not Path(""), the current folder
    sources = {name: given.pop(name, None) or None for name in SOURCES}
    for name, value in sources.items():
        if value is None or is_remote(value):
            continue
        if not Path(value).exists():
            raise ScratchBertError(f"{name.replace('_', '-')} {value} does not exist; give a local path, s3://... or hf://...")
        if Path(value).is_dir() and not walk_files(value):
            raise ScratchBertError(f"{name.replace('_', '-')} {value} is a folder without files; give the folder that "
                                   "holds them, s3://... or hf://...")
    for name, what in STARTING_MODEL_OWN.items():
        if sources["init_model"] is not None and name in given:
            flag = "--" + ("no-" if given[name] is False else "") + name.replace("_", "-")
            raise ScratchBertError(f"{flag} has no effect with --init-model, whose model brings {what}; leave {flag} out, "
                                   "or leave out --init-model to train BERT from scratch")
    endpoint_env = _endpoint_env(endpoint) if endpoint is not None else None
    _check_runner()
    settings = run_settings(synthetic, given, sources)
    # every parameter checked the way the stages will, before anything starts (the pipeline's
    # validate task does the same on a cluster)
    parameters.validate({**settings, **given, **{k: str(v) for k, v in sources.items() if v is not None}})
    text_bytes = None  # the corpus's size, where the budget's split needs it: looked up once, here
    if not synthetic:
        corpus_bytes = given.get("max_corpus_bytes", settings.get("max_corpus_bytes", 0))
        own_corpus = sources["corpus"]
        sources = _offline_stand_ins(sources, corpus_bytes, quiet)
        sources["corpus"] = sources["corpus"] or hub_corpus(corpus_bytes)
        text_bytes = parameters.corpus_size({**settings, **given, "corpus": sources["corpus"]})
        if own_corpus is not None and corpus_bytes and "max_corpus_bytes" not in given and not quiet:
            _say_corpus_cut(str(own_corpus), corpus_bytes, given.get("budget_minutes", settings["budget_minutes"]), text_bytes)
    check_writable(workdir, "--workdir", inside=True)
    _check_outside_inputs(workdir, "--workdir", sources)
    if not synthetic:
        settings = fit_to_machine(settings, given, sources, quiet, text_bytes)
    overrun = parameters.budget_overrun({**settings, **given}, text_bytes, lambda name: "--" + name.replace("_", "-"))
    if overrun and not quiet:
        print(f"{COMMAND}: {overrun}", file=sys.stderr, flush=True)
    store: Path | None = None
    store_lock = None
    if endpoint is None and keep_store is not None:
        store = workdir / STORE_DIRNAME if keep_store == "" else Path(keep_store).resolve()
        if store.exists() and not store.is_dir():
            raise ScratchBertError(f"--keep-store {store} is a file; give a folder for the S3 store")
        check_writable(store, "--keep-store", inside=True)
        _check_outside_inputs(store, "--keep-store", sources)
        store_lock = _lock_store(store, shared_default=keep_store == "")
    run_id, run_dir = _new_run_dir(workdir)
    if store is not None and store_lock is None:  # the workdir's store is busy: this run gets its own
        store = run_dir / STORE_DIRNAME
        store_lock = _lock_store(store, shared_default=False)
        if not quiet:
            print(f"{COMMAND}: {workdir / STORE_DIRNAME} is in use by another run-local; this run keeps its objects "
                  f"in {store}", file=sys.stderr, flush=True)
    server = None
    earlier_children = _children()  # a caller's own processes, which a failed run must leave alone
    saved_env = {k: os.environ.get(k) for k in _aws_env_names()}
    monitor = _Monitor(run_dir / LOG_FILE, verbose=verbose, quiet=quiet)
    try:
        if synthetic:
            sources.update(_write_synthetic(run_dir / "inputs", sources))
        # no GPU branch locally; each value of its parameter's type (kfp refuses an int for a float)
        arguments = parameters.check({**settings, **given, "qa_on_gpu": False})
        if endpoint is None:
            from scratchbert.objectstore import EmbeddedS3

            server = EmbeddedS3(data_dir=store).start()
            env = server.env()
        else:
            env = endpoint_env
        os.environ.update(env)  # the task subprocesses inherit these (on a cluster: the Secret)
        for name, value in sources.items():
            if value is not None:
                max_bytes = int(arguments.get("max_corpus_bytes") or 0) if name == "corpus" else 0
                arguments[name] = _stage_input(str(value), name, run_id, max_bytes)
        write_json(run_dir / "arguments.json", arguments)
        started = time.time()
        try:
            with monitor, _terminate_as_interrupt():
                published = run_pipeline(arguments, run_dir / "outputs", retries=False)
        except RuntimeError as e:  # kfp.local: "Pipeline ... finished with status FAILURE. Inner task failed: ..."
            raise RunFailed(monitor.failure(_plain(str(e)))) from None
        endpoint_used = env["AWS_ENDPOINT_URL"]
    except BaseException as e:
        # the run folder stays (its log says what happened) but says that it failed; nothing it
        # started trains on
        _stop_task_processes(keep=earlier_children | ({server.pid} if server is not None else set()))
        _mark_failed(run_dir, run_id, e, monitor.path)
        raise
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if server is not None:
            server.stop()
        if store_lock is not None:
            os.close(store_lock)
    stages = collect_results(run_dir / "outputs")
    for stage, seconds in monitor.durations().items():
        stages.setdefault(stage, {})["seconds"] = seconds
    advice = qa_epoch_advice(arguments, stages.get("qa_finetune", {}), text_bytes)
    summary = {
        "status": "succeeded", "run_id": run_id, "run_dir": str(run_dir), "outputs": str(run_dir / "outputs"), "log": str(monitor.path),
        "published_uri": published, "endpoint": endpoint_used if endpoint else None,
        "store": str(store) if store else None, "synthetic": synthetic, "arguments": arguments,
        "stages": stages, "total_seconds": round(time.time() - started, 1), "qa_model": qa_model_folder(run_dir / "outputs"),
        "notes": [advice] if advice else [],
    }
    write_json(run_dir / "summary.json", summary)
    if not quiet:
        print(format_summary(summary), flush=True)
    return summary


def run_pipeline(arguments: dict[str, Any], pipeline_root: str | Path, *, image: str | None = None,
                 gpu_image: str | None = None, retries: bool = True) -> str:
    """Run the pipeline through ``kfp.local`` with ``arguments``; return the published URI.

    ``kfp.local.SubprocessRunner(use_venv=False)`` runs each task as a subprocess of this
    Python, in this environment, with this process's environment variables (that is how the
    ``AWS_*`` variables reach the tasks locally; on a cluster they come from the Secret).
    kfp.local ignores the cluster-only settings (kfp-kubernetes platform config, accelerator,
    CPU and memory), so nothing is switched off for a local run. Task outputs land under
    ``pipeline_root`` (``<pipeline-run>/<task>/<output>``); the image names only label the
    tasks. ``retries=False`` drops the retries of pretrain and publish (a local failure is not a
    preempted node: retrying it only repeats it, with back-off). Raises ``RuntimeError`` naming
    the failed task when a task fails.
    """
    from kfp import local

    from scratchbert_pipelines.bert_pipeline import build_pipeline

    pipeline = build_pipeline(image, gpu_image, retries=retries)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
               raise_on_error=True)
    with warnings.catch_warnings():
        # "non-Python base image" warnings: expected, the subprocess runner uses this venv instead.
        warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
        # "settings [cpu_limit, accelerator, ...] have no effect in the current local runner": by design.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        task = pipeline(**arguments)
    return task.output


def collect_results(outputs: str | os.PathLike) -> dict:
    """Per-stage metrics: each stage's ``metrics.json`` from a kfp.local output folder."""
    stages: dict[str, dict] = {}
    for stage, output in STAGE_OUTPUTS.items():
        for path in Path(outputs).rglob(f"{output}/metrics.json"):
            if any(part.startswith(LOOP_PREFIX) for part in path.parts):
                continue
            if _stage_of(path.parent.parent.name) == stage:
                stages.setdefault(stage, {}).update(read_json(path))
    return stages


def qa_model_folder(outputs: str | os.PathLike) -> str | None:
    """The fine-tuned QA model's folder in a kfp.local output folder (None if QA did not run),
    so that the summary can say how to ask it without the S3 server, which has stopped."""
    found = sorted(Path(outputs).rglob(f"{QA_MODEL_OUTPUT}/config.json"))
    return str(found[-1].parent) if found else None


# How much one QA epoch's time moves between runs of one recipe on one machine: 4.20 to 4.74
# minutes in three runs of a day on 2 cores (docs/performance.md, "One budget"). Below it a note
# would chase the machine's noise.
QA_EPOCH_NOISE = 0.15


def qa_epoch_advice(arguments: dict[str, Any], qa_metrics: dict[str, Any], text_bytes: int | None = None) -> str | None:
    """A note with the ``budget_qa_epoch_minutes`` this run measured, when giving it would change QA's
    share of ``budget_minutes`` by more than :data:`QA_EPOCH_NOISE` (and a minute); None when it
    would not (or the run had no budget to split). ``text_bytes``: the corpus's size, as the run split by.

    How long a QA epoch takes is the machine's and the model's: the recipe's times were taken on
    2 cores of two kinds of CPU, and a run with another model or other QA data has none (the
    share alone splits), so a run that ends early, or stops QA short of its epochs, says what to
    give next time.
    """
    epoch_minutes = float(qa_metrics.get("epoch_minutes") or 0)
    if not arguments.get("budget_minutes") or epoch_minutes <= 0:
        return None
    measured = tenth_up(epoch_minutes)
    planned = parameters.split_budget(arguments, text_bytes)
    better = parameters.split_budget({**arguments, "budget_qa_epoch_minutes": measured}, text_bytes)
    if abs(better["qa_time_budget_minutes"] - planned["qa_time_budget_minutes"]) < max(1.0, QA_EPOCH_NOISE * planned["qa_time_budget_minutes"]):
        return None
    reserved = float(arguments.get("budget_qa_epoch_minutes") or 0)

    def split(minutes: dict[str, float]) -> str:
        return f"{minutes['time_budget_minutes']:g} minutes of pretraining and {minutes['qa_time_budget_minutes']:g} of QA fine-tuning"

    return (f"a QA epoch took {epoch_minutes:.2f} minutes here ("
            + (f"{reserved:g} were reserved" if reserved else "not known beforehand: the share split the budget")
            + f"); --budget-qa-epoch-minutes {measured:g} would give a run like this {split(better)}, not {split(planned)}")


def format_summary(summary: dict) -> str:
    """The summary as a short table: stage, wall seconds, headline numbers, then where things are."""
    s = summary["stages"]

    def get(stage, key, fmt="{:.3f}"):
        value = s.get(stage, {}).get(key)
        return "n/a" if value is None else fmt.format(value)

    headline = {
        "starting_model": f"from {summary.get('arguments', {}).get('init_model') or 'n/a'}",
        "tokenizer": f"vocab {get('tokenizer', 'vocab_size', '{}')}, unk rate {get('tokenizer', 'unk_rate', '{:.4f}')}",
        "dataset": f"{get('dataset', 'train_examples', '{}')} train / {get('dataset', 'validation_examples', '{}')} validation examples",
        "pretrain": f"{get('pretrain', 'steps', '{}')} steps, loss {get('pretrain', 'train_loss', '{:.3f}')}, {get('pretrain', 'tokens_per_second', '{:.0f}')} tokens/s",
        "evaluate": f"MLM acc {get('evaluate', 'mlm_accuracy')}, NSP acc {get('evaluate', 'nsp_accuracy')}, perplexity {get('evaluate', 'perplexity', '{:.1f}')}",
        "qa_finetune": f"EM {get('qa_finetune', 'exact_match', '{:.2f}')}, F1 {get('qa_finetune', 'f1', '{:.2f}')}",
        "publish": summary.get("published_uri") or "n/a",
    }
    lines = [f"scratchbert local run {summary['run_id']}" + (" (synthetic data)" if summary.get("synthetic") else ""),
             f"{'stage':<12} {'seconds':>8}  result"]
    for stage in (stage for stage in STAGES if stage in s):  # the stages that ran
        lines.append(f"{stage:<12} {get(stage, 'seconds', '{:.1f}'):>8}  {headline[stage]}")
    lines.append(f"{'total':<12} {summary['total_seconds']:>8.1f}")
    where = summary["store"] and f"kept in {summary['store']} (server stopped)" or summary.get("endpoint") or "temporary store (deleted)"
    lines += [f"published:  {summary.get('published_uri')}  [{where}]", f"outputs:    {summary['outputs']}",
              f"log:        {summary['log']}"]
    if summary.get("qa_model"):
        lines.append(f"ask it:     scratchbert ask --model {shlex.quote(summary['qa_model'])} "
                     f"--question {shlex.quote(ASK_EXAMPLE[0])} --context {shlex.quote(ASK_EXAMPLE[1])}")
    lines += [f"note:       {note}" for note in summary.get("notes", ())]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ progress


class _Monitor(io.TextIOBase):
    """Stands in for ``sys.stdout`` while kfp.local runs: everything goes to the run's log file;
    the screen (stderr) gets a line per stage with its elapsed time and the stage's own
    progress (the last progress bar its task printed), or everything with ``verbose``.

    kfp.local prints ``Executing task 'NAME'`` and ``Task 'NAME' finished with status S`` around
    each task and streams the task's output line by line (a progress bar's carriage returns
    arrive as line ends), which is what this reads.
    """

    _START = re.compile(r"Executing task '([^']+)'")
    _END = re.compile(r"Task '([^']+)' finished with status (\w+)")
    _BAR = re.compile(r"^\s*(?P<desc>[^|]*?):?\s*(?P<pct>\d{1,3})%\|.*?\|\s*(?P<count>[^\[]*?)\s*\[(?P<times>[^\]]*)\]")
    _ERROR = re.compile(r"scratchbert error: (.*)")

    def __init__(self, path: Path, *, verbose: bool, quiet: bool):
        super().__init__()
        self.path, self.verbose, self.quiet = Path(path), verbose, quiet
        self.screen = sys.stderr
        self.live = self.screen.isatty() and not verbose and not quiet
        self._buffer = ""
        self._lock = threading.Lock()
        self._stage: str | None = None
        self._stage_start = 0.0
        self._progress = ""
        self._last_print = 0.0
        self._durations: dict[str, float] = {}
        self._first_start: dict[str, float] = {}  # a stage of several tasks lasts from its first start to its last end
        self._errors: list[str] = []
        self._failed: str | None = None  # the first task that failed (kfp.local may run an independent one after it)
        self._tail: list[str] = []

    # context manager: swap sys.stdout, and the root logger's handlers (kfp.local logs through
    # the root logger), for this object
    def __enter__(self):
        import logging

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self._saved = sys.stdout
        root = logging.getLogger()
        self._saved_handlers = root.handlers[:]
        root.handlers = [logging.StreamHandler(self)]
        sys.stdout = self
        return self

    def __exit__(self, *exc):
        import logging

        logging.getLogger().handlers = self._saved_handlers
        sys.stdout = self._saved
        self.flush()
        if self._buffer:
            self._line(self._buffer)
            self._buffer = ""
        self._file.close()
        return False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            self._file.write(text)
            if self.verbose:
                self._saved.write(text)
            self._buffer += text
            *lines, self._buffer = self._buffer.split("\n")
            for line in lines:
                self._line(line)
        return len(text)

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()
        if self.verbose:
            self._saved.flush()

    def durations(self) -> dict[str, float]:
        return dict(self._durations)

    def failure(self, message: str) -> str:
        """The one-line error of a failed run: the task's own error where it printed one."""
        cause = self._errors[-1] if self._errors else message
        return f"the local pipeline run failed in {self._failed or self._stage or 'a task'}: {cause}; the whole log is in {self.path}"

    def _line(self, line: str) -> None:
        line = _plain(line).rstrip("\r")
        self._tail = (self._tail + [line])[-50:]
        if m := self._ERROR.search(line):
            self._errors.append(m.group(1).strip())
        if m := self._START.search(line):
            self._begin(m.group(1))
        elif m := self._END.search(line):
            self._finish(m.group(1), m.group(2))
        elif self._stage and (m := self._BAR.match(line)):
            self._progress = _bar_progress(m)
            self._show()

    def _begin(self, task: str) -> None:
        stage = _stage_of(task)
        self._stage, self._stage_start, self._progress = TASK_LABELS.get(_task_key(task)) or stage or task, time.monotonic(), "started"
        if stage:
            self._first_start.setdefault(stage, self._stage_start)
        self._show(force=True)

    def _finish(self, task: str, status: str) -> None:
        stage = _stage_of(task) or task
        seconds = round(time.monotonic() - self._first_start.get(stage, self._stage_start), 1)
        if stage in STAGES:
            self._durations[stage] = seconds
        self._progress = "done" if status == "SUCCESS" else status.lower()
        self._show(force=True, final=True)
        if status == "SUCCESS":
            self._stage = None
        elif self._failed is None:
            self._failed = stage

    def _show(self, force: bool = False, final: bool = False) -> None:
        if self.quiet or self.verbose or self._stage is None:
            return
        now = time.monotonic()
        if not (force or final) and now - self._last_print < (0.5 if self.live else 30):
            return
        self._last_print = now
        # mm:ss, or h:mm:ss from an hour (a two-hour run pretrains for more than one)
        text = f"{self._stage:<13} {tqdm.format_interval(now - self._stage_start)}  {self._progress}"[:120]
        if self.live:
            self.screen.write("\r\x1b[K" + text + ("\n" if final else ""))
        else:
            self.screen.write(text + "\n")
        self.screen.flush()


# ------------------------------------------------------------------------------------ helpers


_RATE = re.compile(r"^[\d.?]+\s*(?:s/(?P<per>\S+)|(?P<unit>.+?)/s)$")


def _bar_progress(m: re.Match) -> str:
    """A tqdm line's progress in words: its count with the unit unless steps (a time budget's bar
    counts seconds, "3785/5994 s"), then its postfix ("step 26181, loss 4.021")."""
    desc = m.group("desc").strip() or "steps"
    parts = [p.strip() for p in m.group("times").split(",")]  # elapsed<remaining, rate, postfix...
    rate, postfix = (parts[1], parts[2:]) if len(parts) > 1 else ("", [])
    unit = (r := _RATE.match(rate)) and (r.group("per") or r.group("unit")).strip()
    count = m.group("count") + (f" {unit}" if unit and unit != "it" else "")
    extra = ", ".join(p.replace("=", " ", 1) for p in postfix if "=" in p)
    return f"{desc} {m.group('pct')}% {count}".strip() + (f", {extra}" if extra else "")


def _check_outside_inputs(folder: Path, what: str, sources: dict) -> None:
    """Raise where ``folder`` (the runs' folder, the S3 store) is a local input or inside one (``--corpus .``
    with the default --workdir runs/local): the run would upload its own files with that input, the
    store into itself and earlier runs' files into the corpus, which would read their text."""
    for name, value in sources.items():
        inp = local_path(value)
        relation = inp and relation_to(folder, inp)
        if relation in ("is", "is inside"):  # a run folder that contains an input writes beside it, not into it
            raise ScratchBertError(f"{what} {folder} {relation} the input {inp} "
                                   f"(--{name.replace('_', '-')}); the run would upload its own files with it, so choose "
                                   f"another {what}")


def _lock_store(store: Path, *, shared_default: bool) -> int | None:
    """Lock the embedded server's data folder for this run (``<store>.lock`` beside it, held
    until the run ends): two SeaweedFS servers on one folder fail with a lock error of their
    own. Busy: None for the workdir's default store (the run takes one of its own), else an error."""
    import fcntl

    lock = store.parent / f".{store.name}.lock"
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ScratchBertError(f"cannot use {store} for the S3 store: {e.strerror or e}; give --keep-store a folder you can "
                               "write to, or pass --temporary-store") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        if shared_default:
            return None
        raise ScratchBertError(f"the S3 store {store} is in use by another run-local; wait for it to finish, give "
                               "--keep-store another folder, or pass --temporary-store") from None
    return fd


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _terminate_as_interrupt():
    """While the pipeline runs, SIGTERM (``kill``, a scheduler's stop) ends the run as Ctrl-C does:
    the task processes are stopped and the run folder says it was interrupted."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _children() -> set[int]:
    """The process ids of this process's children and their descendants."""
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def _stop_task_processes(keep: set[int], timeout: float = 10.0) -> None:
    """Stop this process's descendants but those in ``keep`` (the caller's own, and the S3 server,
    stopped in order later): kfp.local's task processes do not die with their parent and would
    train on, orphaned. SIGTERM first, SIGKILL for any that outlive ``timeout``."""
    import psutil

    children = [p for p in psutil.Process().children(recursive=True) if p.pid not in keep]
    for p in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()


def _mark_failed(run_dir: Path, run_id: str, error: BaseException, log: Path) -> None:
    """Say in the run folder that the run failed, and why (``summary.json``, ``status: failed``)."""
    reason = "interrupted" if isinstance(error, KeyboardInterrupt) else " ".join(str(error).split()) or type(error).__name__
    try:
        write_json(run_dir / "summary.json", {"status": "failed", "run_id": run_id, "run_dir": str(run_dir),
                                               "error": reason, "log": str(log) if log.exists() else None})
    except OSError:
        pass


def _new_run_dir(workdir: Path) -> tuple[str, Path]:
    """A fresh ``<workdir>/<UTC time>[-N]`` folder."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        run_id = stamp if n == 1 else f"{stamp}-{n}"
        try:
            (workdir / run_id).mkdir(parents=True)
            return run_id, workdir / run_id
        except FileExistsError:
            continue
    raise ScratchBertError(f"could not create a new run folder in {workdir}; clean it up")


def stand_in_data() -> Path:
    """The folder of offline stand-ins for the Hub's datasets (see :data:`STAND_INS`):
    ``$SCRATCHBERT_SHARED_DATA``, else ``shared/data`` beside the source checkout."""
    return Path(os.environ.get(STAND_IN_ENV) or Path(__file__).resolve().parents[2] / "shared" / "data")


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hugging Face Hub answers (:func:`scratchbert.hub.reachable`)."""
    from scratchbert import hub

    return hub.reachable(timeout)


def _offline_stand_ins(sources: dict, corpus_bytes: int = 0, quiet: bool = False) -> dict:
    """The inputs with the Hub defaults swapped for their stand-ins when the Hub is unreachable
    (saying so, and that the run uses the corpus's first ``corpus_bytes``, 0 all); unchanged when
    nothing defaults to the Hub or it answers."""
    from huggingface_hub import constants

    missing = [name for name in STAND_INS if sources[name] is None]
    # HF_HUB_OFFLINE=1: the tasks read the Hub's datasets from its local cache, on purpose
    if not missing or constants.HF_HUB_OFFLINE or hub_reachable():
        return sources
    folder = stand_in_data()
    flags = ", ".join("--" + name.replace("_", "-") for name in missing)
    if not all((folder / STAND_INS[name]).is_file() for name in missing):
        raise ScratchBertError(f"the Hugging Face Hub is unreachable and {flags} default to data on it; give local files or "
                               f"s3:// URIs with {flags}, or pass --synthetic for generated data")
    if not quiet:
        print(f"{COMMAND}: the Hugging Face Hub is unreachable; using the offline stand-ins in {folder} for {flags}"
              + (f" (the corpus's first {corpus_bytes / 1e6:g} MB)" if "corpus" in missing and corpus_bytes else ""),
              file=sys.stderr, flush=True)
    return dict(sources, **{name: str(folder / STAND_INS[name]) for name in missing})


def _say_corpus_cut(corpus: str, max_bytes: int, budget: float, size: int | None = None) -> None:
    """Say on stderr that the budget reads only the first ``max_bytes`` of the run's own ``corpus``
    (:func:`run_settings`), where it holds more or its size is not known before the run, and what
    reading all of it would take from the budget's training. ``size``: the corpus's, where the run
    has looked it up already (:func:`scratchbert_pipelines.parameters.corpus_size`)."""
    from scratchbert.corpus import corpus_bytes

    if is_remote(corpus):
        size = None
    elif size is None:
        size = corpus_bytes(corpus)
    if size is None or size > max_bytes:
        more = parameters.fixed_minutes({"max_corpus_bytes": 0}, size) - parameters.fixed_minutes({"max_corpus_bytes": max_bytes})
        print(f"{COMMAND}: --budget-minutes {budget:g} reads the first {max_bytes / 1e6:g} MB of --corpus"
              + (f" (of {size / 1e6:,.0f} MB)" if size else "") + ", what its pretraining can use; --max-corpus-bytes 0 "
              "reads all of it" + (f", keeping {more:.1f} more minutes of the budget for the text" if more >= 0.1 else ""),
              file=sys.stderr, flush=True)


def _as_flags(text: str) -> str:
    """A parameter's help in run-local's words: the parameters it names (``qa_max_steps``) as the
    flags that set them here (``--qa-max-steps``); names without an underscore (``corpus``) are
    also plain words, and stay."""
    for name in sorted((n for n in parameters.NAMES if "_" in n and n not in CLUSTER_ONLY), key=len, reverse=True):
        text = re.sub(rf"(?<![\w-]){name}(?!\w)", "--" + name.replace("_", "-"), text)
    return text


def _task_key(task_dir: str) -> str:
    """kfp.local task name or folder (``qa-finetune-2-2``) -> the component's name (``qa_finetune``)."""
    return re.sub(r"(-\d+)+$", "", task_dir).replace("-", "_")


def _stage_of(task_dir: str) -> str | None:
    """kfp.local task name or folder (``qa-finetune-2-2``) -> stage name (``qa_finetune``); None for others."""
    key = _task_key(task_dir)
    stage = TASK_STAGES.get(key, key)
    return stage if stage in STAGES else None


def _plain(text: str) -> str:
    """Drop the terminal colour codes kfp.local puts into its messages."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _aws_env_names() -> list[str]:
    from scratchbert import storage

    return [storage.ENV_ENDPOINT, storage.ENV_ACCESS_KEY, storage.ENV_SECRET_KEY, storage.ENV_REGION]


def _endpoint_env(endpoint: str) -> dict[str, str]:
    """The ``AWS_*`` variables for ``--endpoint``: its URL checked as ``--endpoint`` (not as the
    variable it becomes), and credentials found as the tasks will find them (keys, a profile or
    a workload identity: :func:`scratchbert.storage.credentials_provider`)."""
    from scratchbert import storage

    storage.parse_endpoint(endpoint, "--endpoint")
    try:
        storage.credentials_provider(os.environ)
    except ScratchBertError as e:
        raise ScratchBertError(f"--endpoint {endpoint} needs credentials: {e}; or leave --endpoint out to use the "
                               "embedded server") from None
    env = {storage.ENV_ENDPOINT: endpoint}
    for name in (storage.ENV_ACCESS_KEY, storage.ENV_SECRET_KEY):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


def _check_runner() -> None:
    import importlib.util

    from scratchbert.objectstore import find_weed  # noqa: F401 (EmbeddedS3 reports a missing weed itself)

    if importlib.util.find_spec("kfp") is None:
        raise ScratchBertError("run-local needs the Kubeflow Pipelines SDK, which is not installed; pip install scratchbert")


def _stage_input(value: str, name: str, run_id: str, max_bytes: int = 0) -> str:
    """Upload a local file or folder to ``s3://scratchbert-inputs/<run>/<name>/``; pass URIs through.
    A corpus of more than ``max_bytes`` (the stages' max_corpus_bytes; 0: no cut) goes up as the
    documents the stages read of it, one text file, so that a budget's 11 MB of a 5 GB corpus
    costs 11 MB of upload and of the kept store, not 5 GB."""
    from scratchbert import storage
    from scratchbert.corpus import corpus_bytes, iter_documents, write_documents

    if is_remote(value):
        return value
    path = Path(value)
    prefix = f"s3://{INPUT_BUCKET}/{run_id}/{name}"
    cut = max_bytes > 0 and (corpus_bytes(value) or 0) > max_bytes
    if path.is_dir() and not cut:
        storage.upload_dir(path, prefix)
        return prefix
    with tempfile.TemporaryDirectory(prefix="scratchbert-stage-") as tmp:
        if cut:
            staged = Path(tmp) / f"{path.name.split('.')[0] or name}-first-{max_bytes}-bytes.txt"
            write_documents(iter_documents(value, max_bytes), staged)
        else:
            staged = Path(tmp) / path.name
            shutil.copy2(path, staged)
        storage.upload_dir(tmp, prefix)
    return f"{prefix}/{staged.name}"


def _write_synthetic(folder: Path, sources: dict) -> dict:
    """Generated corpus and SQuAD files for the inputs not given."""
    from scratchbert import synthetic

    made = {}
    if sources["corpus"] is None:
        made["corpus"] = str(synthetic.write_corpus(folder / "corpus.txt", SYNTHETIC_SIZES["documents"], seed=0))
    if sources["squad_train"] is None:
        made["squad_train"] = str(synthetic.write_squad(folder / "squad-train.json", SYNTHETIC_SIZES["squad_train_articles"], seed=1))
    if sources["squad_dev"] is None:
        made["squad_dev"] = str(synthetic.write_squad(folder / "squad-dev.json", SYNTHETIC_SIZES["squad_dev_articles"], seed=2))
    return made


# ------------------------------------------------------------------------------------ command line


def _flag_default(name: str) -> str:
    """A flag's default as run-local applies it: the run's, else the pipeline's, and --synthetic's."""
    value = REAL_DEFAULTS.get(name, parameters.BY_NAME[name].default)
    text = params.show(value)

    def from_budget(table: dict[float, Any]) -> str:  # the values a bigger budget brings (run_settings)
        return "".join(f"; {params.show(v)} from --budget-minutes {minutes:g} ({budget_minutes_for(minutes, 'fp32'):g} where "
                       "training runs in fp32)" for minutes, v in sorted(table.items()) if minutes)

    if name == "preset":  # the model by budget, where this machine pretrains it enough steps
        needs = ", ".join(f"{preset} {steps:,}" for preset, steps in MIN_PRETRAIN_STEPS.items())
        text += f"{from_budget(PRESET_FROM_BUDGET)}; each where a few steps timed at the start say it gets the pretraining " \
                f"steps it needs ({needs}), else the one below"
    elif name == "max_corpus_bytes":  # the text's size by budget; a run's own corpus whole without one
        text = f"{params.show(CORPUS_BYTES_FROM_BUDGET[0.0])}{from_budget(CORPUS_BYTES_FROM_BUDGET)}; " \
               f"{text} (all of it) for a --corpus you give with --budget-minutes 0 or a --max-steps"
    elif name == "budget_qa_epoch_minutes":  # the epoch time of the model the run trains (run_settings)
        text = (f"timed at the start of a run with a budget ({QA_PROBE_SECONDS:g} seconds of QA steps of its model) for "
                + ", ".join(QA_EPOCH_MINUTES["bf16"]) + " with the recipe's QA data; else 0")
    elif name == "budget_qa_epoch_pretrain_steps":  # measured per model, where training runs in bf16 (run_settings)
        text = (", ".join(f"{preset} {steps:g}" for preset, steps in QA_EPOCH_PRETRAIN_STEPS["bf16"].items())
                + " where training runs in bf16, with the recipe's data and batches; else 0")
    synthetic = SYNTHETIC_DEFAULTS.get(name, parameters.BY_NAME[name].default)  # --synthetic falls back on the pipeline's
    if synthetic != value and name not in ("budget_qa_epoch_minutes", "budget_qa_epoch_pretrain_steps"):  # its text says where it is 0
        text += f"; with --synthetic {params.show(synthetic)}"
    return text


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``run-local`` (the ``scratchbert.commands`` entry point)."""
    p = sub.add_parser(COMMAND, help="run the whole pipeline locally (kfp.local + embedded S3)", description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(_run=_run_from_args)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The run's own options, then one flag per pipeline parameter (named as in the pipeline)."""
    p.add_argument("--synthetic", action="store_true", help="generate the inputs not given; a nano model, a few minutes of CPU")
    p.add_argument("--endpoint", help="use this S3 endpoint (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) instead of an embedded server")
    p.add_argument("--workdir", default="runs/local", help="folder of the runs (default: %(default)s)")
    store = p.add_mutually_exclusive_group()  # a kept store and a throw-away one: the user means one
    store.add_argument("--keep-store", help="data folder of the embedded S3 server, kept after the run (default: WORKDIR/s3-store)")
    store.add_argument("--temporary-store", action="store_true", help="use a throw-away S3 store instead (the published model is gone after the run)")
    group = p.add_argument_group("pipeline parameters", "The pipeline's parameters; local files and folders are accepted for the inputs.")
    for param in parameters.PARAMETERS:
        if param.name in CLUSTER_ONLY:  # no flag, but a refusal that says why, not argparse's "unrecognized"
            flags = ["--" + param.name.replace("_", "-")]
            flags += ["--no-" + flags[0][2:]] if param.type is bool else []
            p.add_argument(*flags, nargs="?", help=argparse.SUPPRESS, action=_ClusterOnly, dest="cluster_only",
                           default=argparse.SUPPRESS)  # never set: the flag only refuses
            continue
        flag = "--" + param.name.replace("_", "-")
        if param.name in STAND_INS:
            help_text = param.help + (" Default: the pipeline's (on the Hub), or its offline stand-in in "
                                      "../shared/data; generated with --synthetic.")
        elif param.name in SOURCES:
            help_text = param.help
        else:
            help_text = f"{param.help} Default: {_flag_default(param.name)}."
        kwargs: dict[str, Any] = {"help": _as_flags(help_text).replace("%", "%%")}
        if param.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(type=params.int64 if param.type is int else param.type, metavar=param.name.upper())
        if param.choices:
            kwargs.update(choices=param.choices, metavar="{" + ",".join(param.choices) + "}")
        group.add_argument(flag, dest=param.name, default=None, **kwargs)


class _ClusterOnly(argparse.Action):
    """A flag for a parameter only a cluster has (:data:`CLUSTER_ONLY`): refused in one line."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(_cluster_only(option_string))


def _cluster_only(name: str) -> str:
    """Why a parameter (or flag) of :data:`CLUSTER_ONLY` is refused here."""
    return f"{name} has no meaning in a local run (every task runs on this machine, pretraining in one process); leave it out"


def _run_from_args(args) -> None:
    """The command: the summary table is its output (and ``<run>/summary.json`` the same as JSON)."""
    params = {p.name: getattr(args, p.name) for p in parameters.PARAMETERS if hasattr(args, p.name)}
    if args.endpoint and (args.keep_store is not None or args.temporary_store):
        raise ScratchBertError("--keep-store and --temporary-store choose the embedded S3 server's store; with --endpoint "
                               "the run's objects stay in that endpoint's store, so leave them out")
    run_local(synthetic=args.synthetic, endpoint=args.endpoint, workdir=args.workdir,
              keep_store=None if args.temporary_store else (args.keep_store or ""),
              verbose=getattr(args, "verbose", False), quiet=getattr(args, "quiet", False), **params)
