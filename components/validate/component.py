"""KFP component: check every pipeline parameter before any work starts (``scratchbert_pipelines.parameters.validate``).

The pipeline's first task. Each stage checks its own settings when it starts, but the last
stages start after the tokenizer, the dataset and pretraining have run; a bad value for them (a
preset that does not exist, ``qa_max_steps=0``) would cost the whole run before its one-line
error. This task builds every stage's config from the parameters and runs its checks, in
seconds, and looks up whether ``publish_version`` is published already. KFP cannot skip the
retries of a task for deterministic errors (``set_retry`` retries every failure), so catching
them here is what keeps a bad value from being retried.
"""

# No `from __future__ import annotations`: kfp reads the annotations as types.
from typing import NamedTuple

from scratchbert_components import make_component


def validate(corpus: str, valid_corpus: str, squad_train: str, squad_dev: str, max_corpus_bytes: int, init_model: str,
             skip_pretraining: bool, vocab_size: int, lowercase: bool, sample_bytes: int, max_seq_len: int,
             dupe_factor: int, corpus_parts: int, preset: str, max_steps: int, time_budget_minutes: float,
             reserve_steps: float, reserve_max_minutes: float, budget_minutes: float, budget_pretrain_share: float,
             budget_qa_epoch_minutes: float, budget_qa_epoch_pretrain_steps: float, learning_rate: float, batch_size: int,
             checkpoint_uri: str, num_nodes: int, gpus_per_node: int, eval_max_examples: int, qa_max_steps: int, qa_time_budget_minutes: float,
             qa_epochs: float, qa_learning_rate: float, qa_batch_size: int, qa_max_seq_len: int, qa_max_train_examples: int,
             qa_max_eval_examples: int, qa_on_gpu: bool, publish_uri: str, publish_version: str) -> NamedTuple("Plan", [
                 ("time_budget_minutes", float), ("qa_time_budget_minutes", float), ("reserve_steps", float),
                 ("reserve_max_minutes", float)]):
    """Check every pipeline parameter as the stages will, so that a bad value fails in seconds with one line;
    return the two training stages' time budgets and pretraining's reserve for QA fine-tuning
    (budget_minutes split between them, after the time that the corpus's size, looked up here, takes).

    Every parameter is the pipeline parameter of the same name (scratchbert_pipelines.parameters).
    """
    values = dict(locals())  # first: the parameters, nothing else
    from collections import namedtuple

    from scratchbert_pipelines.parameters import (
        budget_overrun,
        check_starting_positions,
        check_unpublished,
        corpus_size,
        fixed_minutes,
    )
    from scratchbert_pipelines.parameters import validate as check_parameters

    text_bytes = corpus_size(values)
    full = run_stage(check_parameters, values, text_bytes)
    run_stage(check_unpublished, full)
    run_stage(check_starting_positions, full)
    reserve = "" if not full["reserve_steps"] else \
        f" less the time of {full['reserve_steps']:g} of its steps at the pace it measures (at most {full['reserve_max_minutes']:g}),"
    print(f"every pipeline parameter is valid; time budgets (minutes): pretraining {full['time_budget_minutes']:g}{reserve} "
          f"QA fine-tuning {full['qa_time_budget_minutes']:g}" + ("" if not budget_minutes else
          f" (of {budget_minutes:g}: {fixed_minutes(full, text_bytes):.2f} kept for the rest of the run"
          + ("" if text_bytes is None else f", whose corpus holds {text_bytes:,} bytes") + ")"))
    overrun = budget_overrun(values, text_bytes)  # as given: full holds the split, a time budget for each stage
    if overrun:
        print(f"warning: {overrun}")
    plan = ("time_budget_minutes", "qa_time_budget_minutes", "reserve_steps", "reserve_max_minutes")  # the return's
    return namedtuple("Plan", plan)(*(full[name] for name in plan))


# What the task plans, the parameters the budget sets (scratchbert_pipelines.parameters.split_budget),
# for the pipeline to pass on in their place.
PLAN = validate.__annotations__["return"]._fields


def build(image: str):
    """The validate component for ``image``."""
    return make_component(validate, image)
