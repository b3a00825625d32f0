"""Pretrain BERT from scratch on an MLM+NSP dataset with the Hugging Face ``Trainer``.

What the ``Trainer`` gives us (and we do not rewrite): the loop, gradient clipping,
bf16/fp16 autocast, fused AdamW, periodic evaluation, checkpoints and
``resume_from_checkpoint``, TensorBoard logs and the tqdm progress bar. What we add:

* the sparse-head model and the dynamic-masking collator (see :mod:`scratchbert.modeling`,
  :mod:`scratchbert.pretraining_data`);
* the training examples read from the dataset's memory-mapped shards in a shuffled,
  length-grouped order that depends only on the seed and the epoch
  (:class:`scratchbert.shards.ShardBatchSampler`): memory does not grow with the dataset,
  batches are padded to their longest member (``group_by_length``), and every checkpoint
  records the data position, so a resumed run neither repeats nor skips examples;
* on a CPU, freed memory kept in the process for the next step (:mod:`scratchbert.allocator`);
* the MLM head's output bias started at the training tokens' log frequencies
  (:func:`scratchbert.modeling.set_mlm_bias_to_unigram`), not at zero;
* a *time budget*: ``time_budget_minutes`` stops training on the clock, and the learning
  rate schedule (linear warmup, then linear decay to zero) follows whichever of the step or
  time budgets is further along, so a budgeted run still anneals to the end;
* under ``torchrun`` (DDP, one process per device): rank 0 alone checks and writes the
  outputs, claims and writes the checkpoints and their mirror, evaluates, and decides when the
  clock has run out; the others wait for it and train on their part of each batch; the
  metrics are the whole job's (:mod:`scratchbert.distributed`, docs/cluster.md section 11).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from scratchbert import distributed, progress
from scratchbert.allocator import keep_freed_memory
from scratchbert.errors import ScratchBertError
from scratchbert.modeling import ATTENTIONS, PRESETS, resolve_attention
from scratchbert.outputs import atomic_output_dir, check_distinct, check_output, sibling, write_json
from scratchbert.params import SEED_LIMIT, check, check_choices, check_source, default, finite, param
from scratchbert.schedule import Budget

STAGE = "pretrain"

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass
class PretrainConfig:
    """Settings of the pretraining stage (``scratchbert pretrain``); the recipe's defaults are
    explained in docs/performance.md."""

    dataset: str = param(help="Dataset folder (from `scratchbert dataset`).")
    out: str = param(help="Output folder of the pretrained model: weights, config, tokenizer and a model card.")
    logs: str = param("", help="Folder for metrics.json, the training log and TensorBoard runs; empty uses OUT-logs.")
    tokenizer: str = param("", help="Tokenizer folder; empty uses the one stored with the dataset.")
    preset: str = param("tiny", help="Model size (Turc et al.'s compact sizes, and BERT-base).", choices=tuple(PRESETS))
    hidden_size: int | None = param(None, help="Override the preset's hidden size.")
    num_hidden_layers: int | None = param(None, help="Override the preset's layer count.")
    num_attention_heads: int | None = param(None, help="Override the preset's attention head count.")
    intermediate_size: int | None = param(None, help="Override the preset's MLP size.")
    max_steps: int = param(-1, help="Optimizer steps; -1 trains --epochs, or until the time budget when one is set.")
    epochs: float = param(1.0, help="Passes over the training set when --max-steps is -1 and there is no time budget.")
    time_budget_minutes: float = param(0.0, help="Stop training after this many minutes, the learning-rate schedule following the clock; 0 means no budget.")
    reserve_steps: float = param(0.0, help="Keep time at the end of the time budget for what follows (a run's QA "
                                           "fine-tuning), in this run's own mean steps: training stops that many of "
                                           "them before the budget ends, as the pace it measures says; 0: none.")
    reserve_max_minutes: float = param(0.0, help="The most minutes --reserve-steps may keep, less than the time budget; "
                                                 "0: half of it.")
    batch_size: int = param(32, help="Examples per optimizer step and device (under torchrun the step's batch is this times the processes).")
    learning_rate: float = param(0.0, help="Peak learning rate; 0 picks the recipe's: 2e-3 from scratch (chosen for the small "
                                           "presets; BERT-base wants 1e-4 to 5e-4), 1e-4 continuing a starting model.")
    warmup_fraction: float = param(-1.0, help="Fraction of the budget (steps or time) spent warming the learning rate up; "
                                              "-1 picks the recipe's: 0.25 from scratch, 0.06 continuing a starting model.")
    init_model: str = param("", help="Continue pretraining this model (hf://owner/name, s3://... or a folder) instead of "
                                     "random weights; its size replaces the preset, and the dataset must be built with "
                                     "its tokenizer.")
    weight_decay: float = param(0.01, help="AdamW weight decay.")
    adam_beta1: float = param(0.9, help="AdamW beta1.")
    adam_beta2: float = param(0.98, help="AdamW beta2.")
    adam_epsilon: float = param(1e-6, help="AdamW epsilon.")
    max_grad_norm: float = param(1.0, help="Clip gradients to this global norm.")
    dropout: float = param(0.0, help="Hidden and attention dropout.")
    unigram_bias: bool = param(True, help="Start the MLM output bias at the training tokens' log frequencies, so a fresh model need not learn word frequencies first.")
    mlm_probability: float = param(0.15, help="Fraction of tokens masked.")
    precision: str = param("auto", help="Arithmetic: auto is bf16 where the hardware has it, fp16 on older GPUs, else fp32.", choices=PRECISIONS)
    attention: str = param("auto", help="Attention kernel: auto is SDPA in fp32 on a CPU and eager elsewhere, the faster in each place.", choices=ATTENTIONS)
    torch_compile: bool = param(False, help="Compile the model with torch.compile.")
    sparse_head: bool = param(True, help="Compute MLM logits at the masked positions only (off: the stock BertForPreTraining head).")
    group_by_length: bool = param(True, help="Batch examples of similar length and pad to the longest (off: random batches).")
    shuffle_window: int = param(1 << 18, help="Training examples shuffled together (the shuffle buffer); their shards' pages are what stays in memory.")
    pad_to_max_length: bool = param(False, help="Pad every batch to the maximum sequence length (the stock recipe).")
    optimizer: str = param("adamw_torch_fused", help="Trainer optimizer name (adamw_torch_fused, adamw_torch, ...).")
    eval_steps: int = param(500, help="Evaluate on the validation split every N steps; 0 evaluates only at the end.")
    eval_examples: int = param(2000, help="Validation examples used by the evaluations during training; 0 uses all.")
    save_steps: int = param(1000, help="Save a checkpoint every N steps.")
    logging_steps: int = param(50, help="Log loss and learning rate every N steps.")
    checkpoint_dir: str = param("", help="Where checkpoints go; empty uses OUT-checkpoints. A rerun resumes from the latest.")
    checkpoint_uri: str = param("", help="s3://bucket/prefix that mirrors every checkpoint, so a run on a killed pod resumes from it; empty is off.")
    keep_checkpoints: bool = param(False, help="Keep the checkpoints after a successful run.")
    num_workers: int = param(-1, help="DataLoader worker processes; -1 picks 0 on a CPU (a worker would steal a core from the model) and up to 4 on a GPU.")
    seed: int = param(42, help="Random seed.")
    overwrite: bool = param(False, help="Replace an existing --out and --logs that another stage or a person wrote, and "
                                        "discard checkpoints of another run in --checkpoint-dir (this run's own are always resumed).")

    def validate(self) -> None:
        """Check every setting (no file is read): one line for the first that is wrong."""
        from scratchbert.modeling import effective_size

        check((bool(str(self.dataset).strip()), "--dataset is empty; give the folder written by `scratchbert dataset`"))
        check_choices(self)
        effective_size(self.preset, hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
                       num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size)
        budget = self.time_budget_minutes
        check((self.max_steps == -1 or self.max_steps > 0,
               f"--max-steps {self.max_steps} trains nothing; give a positive number of steps, or -1 to train "
               "--epochs or until --time-budget-minutes"),
              (finite(budget) and budget >= 0,
               f"--time-budget-minutes {budget} must be a number of minutes, 0 or more (0: no budget)"),
              (finite(self.reserve_steps) and self.reserve_steps >= 0,
               f"--reserve-steps {self.reserve_steps} must be a number of steps, 0 or more (0: none)"),
              (not (self.reserve_steps or self.reserve_max_minutes) or budget > 0,
               "--reserve-steps and --reserve-max-minutes keep time at the end of a time budget; give "
               "--time-budget-minutes, or leave them out"),
              (finite(self.reserve_max_minutes) and 0 <= self.reserve_max_minutes
               and (self.reserve_max_minutes < budget or not self.reserve_max_minutes),
               f"--reserve-max-minutes {self.reserve_max_minutes} must be 0 or more and less than --time-budget-minutes "
               f"{budget}, whose end it would otherwise keep for what follows (0: half of it)"),
              (self.max_steps > 0 or budget > 0 or (finite(self.epochs) and self.epochs > 0),
               f"--epochs {self.epochs} gives nothing to train: give --max-steps, a positive finite --epochs or "
               "--time-budget-minutes"),
              (0 <= self.seed < SEED_LIMIT, f"--seed {self.seed} must lie in [0, 2**32), as NumPy's seeds do"),
              (self.batch_size >= 1, f"--batch-size {self.batch_size} must be at least 1"),
              (finite(self.learning_rate) and self.learning_rate >= 0,
               f"--learning-rate {self.learning_rate} must be positive, or 0 for the recipe's"),
              (finite(self.warmup_fraction) and (self.warmup_fraction == -1 or 0 <= self.warmup_fraction < 1),
               f"--warmup-fraction {self.warmup_fraction} must lie in [0, 1), or be -1 for the recipe's"),
              (finite(self.weight_decay) and self.weight_decay >= 0, f"--weight-decay {self.weight_decay} must not be negative"),
              (finite(self.adam_beta1) and 0 <= self.adam_beta1 < 1, f"--adam-beta1 {self.adam_beta1} must lie in [0, 1)"),
              (finite(self.adam_beta2) and 0 <= self.adam_beta2 < 1, f"--adam-beta2 {self.adam_beta2} must lie in [0, 1)"),
              (finite(self.adam_epsilon) and self.adam_epsilon > 0, f"--adam-epsilon {self.adam_epsilon} must be positive"),
              (finite(self.max_grad_norm) and self.max_grad_norm >= 0,
               f"--max-grad-norm {self.max_grad_norm} must not be negative (0: no clipping)"),
              (finite(self.dropout) and 0 <= self.dropout < 1, f"--dropout {self.dropout} must lie in [0, 1)"),
              (finite(self.mlm_probability) and 0 < self.mlm_probability < 1,
               f"--mlm-probability {self.mlm_probability} must lie in (0, 1)"),
              (self.eval_steps >= 0, f"--eval-steps {self.eval_steps} must not be negative (0: evaluate at the end only)"),
              (self.eval_examples >= 0, f"--eval-examples {self.eval_examples} must not be negative (0: all)"),
              (self.save_steps >= 1, f"--save-steps {self.save_steps} must be at least 1"),
              (self.logging_steps >= 1, f"--logging-steps {self.logging_steps} must be at least 1"),
              (self.num_workers >= -1, f"--num-workers {self.num_workers} must be -1 (automatic) or more"),
              (self.shuffle_window >= 1, f"--shuffle-window {self.shuffle_window} must be at least 1"))
        if self.checkpoint_uri:
            from scratchbert.storage import parse_s3_uri

            parse_s3_uri(self.checkpoint_uri)
        check_source(self.init_model, "--init-model", required=False)
        sizes = [f for f in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
                 if getattr(self, f) is not None]
        check((not (self.init_model and sizes),
               f"--{sizes[0].replace('_', '-') if sizes else ''} cannot change the size of a starting model; leave it out"))
        if self.optimizer != default(PretrainConfig, "optimizer"):
            from transformers.training_args import OptimizerNames

            names = [o.value for o in OptimizerNames]
            check((self.optimizer in names, f"--optimizer {self.optimizer!r} is not a Trainer optimizer; use one of "
                                            f"adamw_torch_fused, adamw_torch, ... ({len(names)} in all)"))


# The recipe's peak learning rate and warmup fraction: from scratch (chosen by measurement at
# `tiny`, docs/performance.md) and continuing a starting model (the usual choice for
# domain-adaptive pretraining: a BERT's own peak of 1e-4 and a short warmup).
RECIPES = {"scratch": (2e-3, 0.25), "continue": (1e-4, 0.06)}


def schedule_settings(cfg: PretrainConfig) -> tuple[float, float]:
    """The (peak learning rate, warmup fraction) to use: the given ones, else the recipe's."""
    lr, warmup = RECIPES["continue" if cfg.init_model else "scratch"]
    return cfg.learning_rate or lr, warmup if cfg.warmup_fraction < 0 else cfg.warmup_fraction


def resolve_precision(precision: str) -> str:
    """'auto' -> bf16 on GPUs and CPUs that have it, fp16 on older GPUs, else fp32.

    On a CPU, bf16 autocast pays where the CPU has bf16 matrix instructions (AMX-BF16 or
    AVX512-BF16); ``benchmarks/pretrain_throughput.py`` measures both (docs/performance.md).
    """
    import torch

    if precision not in {"auto", "bf16", "fp16", "fp32"}:
        raise ScratchBertError(f"precision {precision!r} is not one of auto, bf16, fp16, fp32")
    if precision != "auto":
        if precision == "fp16" and not torch.cuda.is_available():
            raise ScratchBertError("fp16 needs a CUDA GPU; use --precision bf16 or fp32 on a CPU")
        if precision == "bf16":
            refuse_emulated_bf16("--precision bf16", "use --precision fp16 or auto")
        return precision
    if torch.cuda.is_available():
        return "bf16" if gpu_has_bf16() else "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


def gpu_has_bf16() -> bool:
    """True when the CUDA GPU computes in bfloat16 itself (compute capability 8.0 or newer).
    ``torch.cuda.is_bf16_supported()`` alone also says True on a V100 or T4, which only
    emulates it (many times slower than their fp16)."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def refuse_emulated_bf16(option: str, advice: str) -> None:
    """Raise where ``option`` asks for bf16 on a GPU that only emulates it: many times slower
    than its fp16, so never what a run wants (pretraining's and QA's flags alike)."""
    import torch

    if torch.cuda.is_available() and not gpu_has_bf16():
        raise ScratchBertError(f"{option} needs a GPU with bfloat16 arithmetic (compute capability 8.0 or newer), and "
                               f"this one only emulates it; {advice}")


def step_arguments(num_workers: int = -1) -> dict:
    """The ``TrainingArguments`` that set how fast a step runs around the model, shared by
    ``pretrain`` and ``benchmarks/pretrain_throughput.py``.

    DataLoader workers: ``num_workers`` if not negative, else 0 on a CPU (a worker steals a core
    from the model's own threads), up to 4 on a GPU (they collate the next batches while
    the device computes, into pinned memory). The Trainer's NaN/inf filter is off: it tests
    every step's loss on the host, a sync per step that idles a GPU while the CPU queues the
    next step (a non-finite loss still shows in the logged average).
    """
    import torch

    cuda = torch.cuda.is_available()
    workers = num_workers if num_workers >= 0 else (min(4, (os.cpu_count() or 2) - 1) if cuda else 0)
    return dict(dataloader_num_workers=workers, dataloader_pin_memory=cuda,
                dataloader_persistent_workers=workers > 0, logging_nan_inf_filter=False)


def cpu_has_bf16() -> bool:
    """True when the CPU advertises bf16 matrix instructions (Linux /proc/cpuinfo flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _per_example_counts(logits, labels):
    """Reduce logits to per-example counts ``(batch, 3)``: correct masked tokens, masked tokens, NSP guess.

    The sparse head returns logits for the masked tokens of the whole batch; the Trainer
    concatenates and truncates evaluation outputs per example, so we hand it per-example
    rows instead of a flat token list.
    """
    import torch

    mlm_logits, nsp_logits = logits[0], logits[1]
    mlm_labels = labels[0]
    masked = mlm_labels != -100
    if mlm_logits.dim() == 3:  # the stock head: logits at every position
        mlm_logits = mlm_logits[masked]
    correct = torch.zeros_like(mlm_labels)
    correct[masked] = (mlm_logits.argmax(-1) == mlm_labels[masked]).long()
    return torch.stack([correct.sum(1), masked.sum(1), nsp_logits.argmax(-1)], dim=1)


def _mlm_nsp_metrics(eval_pred) -> dict:
    import numpy as np

    counts, (_, nsp_labels) = eval_pred.predictions, eval_pred.label_ids
    return {"mlm_accuracy": float(counts[:, 0].sum() / max(counts[:, 1].sum(), 1)),
            "nsp_accuracy": float(np.mean(counts[:, 2] == nsp_labels))}


def pretrain(cfg: PretrainConfig) -> dict:
    """Pretrain; save the model, its tokenizer and model card into ``cfg.out``, the run's records
    (``metrics.json``, ``log_history.json``, TensorBoard runs) into ``cfg.logs``; return the metrics."""
    # every setting and every output place is checked before the slow imports and any work
    cfg.validate()
    logs = Path(cfg.logs or sibling(cfg.out, "logs"))
    checkpoint_dir = Path(cfg.checkpoint_dir or sibling(cfg.out, "checkpoints"))
    inputs = [cfg.dataset, cfg.tokenizer, cfg.init_model]  # an output there would overwrite what the run reads
    check_distinct({"--out": cfg.out, "--logs": logs, "--checkpoint-dir": checkpoint_dir})
    if distributed.is_main_process():  # under torchrun, rank 0 alone touches the output places
        check_output(cfg.out, stage=STAGE, inputs=inputs, overwrite=cfg.overwrite)
        check_output(logs, stage=f"{STAGE}-logs", inputs=inputs, overwrite=cfg.overwrite, what="--logs")
        check_output(checkpoint_dir, stage=None, inputs=inputs, overwrite=True, what="--checkpoint-dir")  # its run: Checkpoints
    import torch
    from torch.utils.data import DataLoader
    from transformers import TrainingArguments, set_seed

    from scratchbert import shards
    from scratchbert.checkpoints import Checkpoints, rank_states_callback, run_record
    from scratchbert.modeling import (
        build_config,
        check_tokenizer_matches,
        count_parameters,
        pretraining_model_class,
        set_mlm_bias_to_unigram,
    )
    from scratchbert.pretraining_data import MlmNspCollator, stored_token_counts, tokenizer_fingerprint
    from scratchbert.tokenizer import load_tokenizer

    info = shards.read_index(cfg.dataset)
    tok_dir = cfg.tokenizer or str(Path(cfg.dataset) / "tokenizer")
    tokenizer = load_tokenizer(tok_dir)
    if tokenizer_fingerprint(tokenizer) != info["tokenizer_fingerprint"]:
        raise ScratchBertError(f"tokenizer {tok_dir} is not the one dataset {cfg.dataset} was built with; pass the dataset's tokenizer or rebuild the dataset")
    learning_rate, warmup_fraction = schedule_settings(cfg)
    precision = resolve_precision(cfg.precision)
    attention = resolve_attention(cfg.attention, precision)
    set_seed(cfg.seed)
    if cfg.init_model:
        model = _starting_model(cfg, tokenizer, info, attention)
    else:
        config = build_config(cfg.preset, len(tokenizer), info["max_seq_len"], hidden_size=cfg.hidden_size,
                              num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                              intermediate_size=cfg.intermediate_size, dropout=cfg.dropout,
                              attn_implementation=attention)
        check_tokenizer_matches(config, tokenizer, cfg.dataset)
        if cfg.sparse_head:
            model = pretraining_model_class()(config)
        else:
            from transformers import BertForPreTraining

            model = BertForPreTraining(config)
    # Both model classes take **kwargs, from which the Trainer concludes that they normalise the
    # loss by its num_items_in_batch (they do not: each averages over its own batch); under DDP it
    # would then gather that count every step and multiply the loss by the number of processes.
    model.accepts_loss_kwargs = False
    eval_ds = shards.load_split(cfg.dataset, "validation", info)
    if cfg.eval_examples and len(eval_ds) > cfg.eval_examples:
        eval_ds = eval_ds.select(range(cfg.eval_examples))
    budget = Budget(cfg.max_steps, cfg.time_budget_minutes, warmup_fraction, label="pretrain",
                    reserve_steps=cfg.reserve_steps, reserve_max_minutes=cfg.reserve_max_minutes)
    cuda = torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=max(cfg.batch_size, 64),
        learning_rate=learning_rate, weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2, adam_epsilon=cfg.adam_epsilon,
        max_grad_norm=cfg.max_grad_norm, max_steps=budget.trainer_max_steps(), num_train_epochs=cfg.epochs,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=not cuda,
        optim=cfg.optimizer,
        torch_compile=cfg.torch_compile,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if cfg.eval_steps > 0 else "no", eval_steps=cfg.eval_steps or None,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2,
        remove_unused_columns=False, label_names=["labels", "next_sentence_label"],
        report_to=report_to(), seed=cfg.seed, disable_tqdm=progress.hidden(),
        # DDP (under torchrun): every parameter gets a gradient every step (the sparse head's
        # included), so no search for unused ones
        ddp_find_unused_parameters=False,
        **step_arguments(cfg.num_workers),
    )
    rank, world_size = args.process_index, args.world_size  # sets up the process group under torchrun
    # auto follows each process's own hardware: on nodes of different GPUs (an A100 and a T4) the
    # processes would average gradients of different arithmetics, the fp16 ones loss-scaled
    first = distributed.broadcast_object(precision)
    distributed.raise_if_any(None if precision == first else (
        f"the training processes would not compute alike: rank 0 trains in {first}, rank {rank} in {precision} "
        f"(--precision {cfg.precision}); run every process on the same kind of GPU, or give "
        f"--precision {'fp16' if 'fp16' in (first, precision) else 'fp32'}"))
    # the run is what it trains with: the recipe's learning rate and warmup where 0 / -1 picked them
    settings = dataclasses.replace(cfg, learning_rate=learning_rate, warmup_fraction=warmup_fraction)
    record = run_record(settings, model.config, info, info["id"], precision, world_size=world_size)
    run = distributed.on_main(lambda: Checkpoints(checkpoint_dir, record, overwrite=cfg.overwrite, uri=cfg.checkpoint_uri))
    resume = distributed.broadcast_object(run.resume if run else None)
    if resume is not None and world_size > 1:
        _see_checkpoint(resume, cfg.checkpoint_uri, args.local_process_index)
    if cfg.unigram_bias and resume is None and not cfg.init_model:  # a resumed or starting model has its trained bias
        set_mlm_bias_to_unigram(model, stored_token_counts(cfg.dataset, len(tokenizer), tokenizer.all_special_ids))
    train_examples = shards.ShardedExamples(cfg.dataset, "train")
    sampler = train_examples.order(cfg.batch_size, group_by_length=cfg.group_by_length, seed=cfg.seed,
                                   window=cfg.shuffle_window, rank=rank, world_size=world_size)

    tokens = {"count": 0}

    class _Trainer(budget.trainer_class()):
        def _run_epoch(self, *args, **kw):
            # Resumed from the last step (a run killed after its final checkpoint, before its
            # output): the stock loop fast-forwards inside the epoch and trains one step past
            # max_steps. Nothing is left to train.
            if self.args.max_steps > 0 and self.state.global_step >= self.args.max_steps:
                self.control.should_training_stop = True
                return None
            return super()._run_epoch(*args, **kw)

        def get_train_dataloader(self):
            return shards.trainer_dataloader(self, train_examples, sampler)

        def compute_loss(self, model, inputs, return_outputs=False, **kw):
            if model.training:  # a device tensor: no host sync on the hot path
                tokens["count"] = tokens["count"] + inputs["attention_mask"].sum()
            return super().compute_loss(model, inputs, return_outputs=return_outputs, **kw)

        def get_eval_dataloader(self, eval_dataset=None):
            # A fresh collator with the run's seed for each evaluation: every evaluation masks the
            # validation examples alike (comparable along the run, and equal whatever the number of
            # processes), and none draws from the training's random numbers.
            loader = DataLoader(eval_dataset if eval_dataset is not None else self.eval_dataset,
                                batch_size=self.args.eval_batch_size, pin_memory=self.args.dataloader_pin_memory,
                                collate_fn=MlmNspCollator(tokenizer, cfg.mlm_probability, seed=cfg.seed,
                                                          pad_to_multiple_of=collator.pad_to_multiple_of,
                                                          mlm_positions=cfg.sparse_head, max_length=collator.max_length))
            return loader if world_size > 1 else self.accelerator.prepare(loader)

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            if world_size == 1:
                return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            # Under DDP the stock loop splits the set over the ranks, repeats examples to even out
            # the last batch and gathers the results. Rank 0 evaluates the whole set alone instead,
            # as one process would (the same batches and masks, so the same numbers), and sends the
            # metrics to the others: seconds at the default 2,000 examples.
            metrics = distributed.broadcast_object(distributed.on_main(
                lambda: _evaluate_alone(self, super(_Trainer, self).evaluate, eval_dataset, ignore_keys, metric_key_prefix)))
            if rank != 0:
                self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    collator = MlmNspCollator(tokenizer, cfg.mlm_probability,
                              pad_to_multiple_of=info["max_seq_len"] if cfg.pad_to_max_length else 8,
                              mlm_positions=cfg.sparse_head, max_length=model.config.max_position_embeddings)
    callbacks = [rank_states_callback(), shards.data_position_callback(sampler, info["id"], resume),
                 *(run.callbacks() if run else [])]
    trainer = _Trainer(model=model, args=args, train_dataset=train_examples, eval_dataset=eval_ds,
                       data_collator=collator, callbacks=callbacks,
                       compute_metrics=_mlm_nsp_metrics, preprocess_logits_for_metrics=_per_example_counts)
    budget.install(trainer)
    progress.keep_stdout_for_the_result(trainer)
    if rank:  # the Trainer seeded every rank alike; each rank masks its examples with its own random numbers
        set_seed(cfg.seed + rank)
    with keep_freed_memory():
        t0 = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=resume)
        train_seconds = time.perf_counter() - t0
        tokens["count"] = int(tokens["count"])
        final_eval = trainer.evaluate() if len(eval_ds) else {}
    # the whole job's: every rank's tokens, the slowest rank's time, the mean of the ranks' mean
    # losses (each rank's is the same logged, all-ranks mean plus its own last, unlogged steps)
    tokens_total = distributed.all_reduce_sum(tokens["count"])
    train_seconds = distributed.all_reduce_max(train_seconds)
    train_loss = distributed.all_reduce_sum(float(result.training_loss)) / world_size
    if not tokens_total:  # resumed from its last checkpoint, nothing left to train: the run's loss as last logged
        logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        train_loss = logged[-1] if logged else math.nan
    metrics = {
        "train_loss": train_loss, "steps": trainer.state.global_step,
        "train_seconds": round(train_seconds, 2), "train_tokens": tokens_total,
        # what --reserve-steps kept of the time budget for what follows, at the pace measured
        **({"reserved_seconds": round(budget.seconds - budget.end(), 2)} if budget.reserve_steps else {}),
        "tokens_per_second": tokens_total / train_seconds if tokens_total else math.nan,  # nan: left out below
        "world_size": world_size,
        "parameters": count_parameters(model), "precision": precision, "attention": attention,
        "resumed": bool(resume), "learning_rate": learning_rate, "warmup_fraction": warmup_fraction,
        "init_model": cfg.init_model,
        **{k.replace("eval_", "val_"): v for k, v in final_eval.items() if isinstance(v, (int, float))},
    }
    metrics = {k: v for k, v in metrics.items() if not isinstance(v, float) or math.isfinite(v)}
    distributed.on_main(lambda: _write_outputs(cfg, trainer, tokenizer, info, inputs, logs, checkpoint_dir, metrics, run))
    distributed.shutdown()
    return metrics


def _write_outputs(cfg: PretrainConfig, trainer, tokenizer, info: dict, inputs: list, logs: Path, checkpoint_dir: Path,
                   metrics: dict, run) -> None:
    """The model folder and the records, each put in place whole; then the checkpoints go (rank 0 alone)."""
    from scratchbert.modelcard import write_model_card

    with (atomic_output_dir(cfg.out, stage=STAGE, inputs=inputs, overwrite=cfg.overwrite,
                            marker={"tokenizer_fingerprint": info["tokenizer_fingerprint"]}) as tmp,
          atomic_output_dir(logs, stage=f"{STAGE}-logs", inputs=inputs, overwrite=cfg.overwrite, what="--logs") as tmp_logs):
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        unwrapped.save_pretrained(tmp)
        # as in Hugging Face's own BERT folders: pipelines then cut a long text to the model's positions
        tokenizer.model_max_length = unwrapped.config.max_position_embeddings
        tokenizer.save_pretrained(tmp)
        write_model_card(tmp, task="fill-mask", datasets=info.get("corpora", []), metrics=metrics,
                         base_model=cfg.init_model or None)
        write_json(tmp_logs / "metrics.json", metrics)
        write_json(tmp_logs / "log_history.json", {"log_history": trainer.state.log_history})
        tb = checkpoint_dir / "runs"
        if tb.is_dir():
            shutil.copytree(tb, tmp_logs / "tensorboard")
    run.finish(keep=cfg.keep_checkpoints)


def _see_checkpoint(resume: str, uri: str, local_rank: int) -> None:
    """Make sure this process can read ``resume``, the checkpoint rank 0 resumes from: on a node
    that does not share rank 0's disk, the node's first process takes it from the mirror at
    ``uri`` (if any); a process that still cannot read it stops the job, on every rank, in one line."""
    import socket

    from scratchbert.checkpoints import damage, fetch_mirrored

    problem = None
    if local_rank == 0 and uri and damage(resume) is not None:
        try:
            fetch_mirrored(uri, resume)
        except ScratchBertError as e:
            problem = str(e)
    distributed.barrier()
    if problem is None and damage(resume) is not None:
        problem = (f"{socket.gethostname()} cannot read {resume}, the checkpoint rank 0 resumes from; give "
                   "--checkpoint-dir a folder every node shares, or a --checkpoint-uri to take it from")
    distributed.raise_if_any(problem)


def _evaluate_alone(trainer, evaluate, eval_dataset, ignore_keys, metric_key_prefix) -> dict:
    """``evaluate`` (the Trainer's) on rank 0 with the ranks' exchanges turned off: the evaluation
    DataLoader is not split (``get_eval_dataloader``), and nothing is padded or gathered across
    processes; the model it runs is the unwrapped one (the Trainer evaluates under ``no_grad``
    without DDP).

    What the single process's ``gather_for_metrics`` does besides gathering is kept: the loop
    repeats each batch's loss ``eval_batch_size`` times, which it cuts back to the batch's own
    size, so that a short last batch weighs by its examples (else ``val_loss`` differed from one
    process's whenever the set was not a whole number of batches). And the steps per second count
    every batch, which rank 0 ran alone, not a share of ``world_size`` processes.
    """
    from transformers.trainer_pt_utils import find_batch_size, nested_truncate

    accelerator = trainer.accelerator
    size = {"batch": 0}
    step = trainer.prediction_step

    def prediction_step(model, inputs, *args, **kwargs):
        size["batch"] = find_batch_size(inputs)
        return step(model, inputs, *args, **kwargs)

    log = trainer.log
    examples = len(eval_dataset if eval_dataset is not None else trainer.eval_dataset)
    speed, runtime = f"{metric_key_prefix}_steps_per_second", f"{metric_key_prefix}_runtime"

    def log_steps_per_second(logs, *args, **kwargs):
        if speed in logs and logs.get(runtime):  # evaluate() returns this very dict
            logs[speed] = round(math.ceil(examples / trainer.args.eval_batch_size) / logs[runtime], 3)
        return log(logs, *args, **kwargs)

    # instance attributes, removed below
    accelerator.pad_across_processes = lambda tensor, *a, **kw: tensor
    trainer.prediction_step, trainer.log = prediction_step, log_steps_per_second
    trainer.gather_function = lambda tensors: nested_truncate(tensors, size["batch"])  # each tensor of a tuple
    try:
        return evaluate(eval_dataset, ignore_keys, metric_key_prefix)
    finally:
        del accelerator.pad_across_processes, trainer.prediction_step, trainer.log
        trainer.gather_function = accelerator.gather_for_metrics


def _starting_model(cfg: PretrainConfig, tokenizer, info: dict, attention: str):
    """The pretraining model initialised from ``cfg.init_model``: its weights, its size, and its
    MLM and NSP heads (new ones, with a warning, where the checkpoint has none)."""
    import tempfile

    import torch

    from scratchbert import starting_model
    from scratchbert.modeling import pretraining_model_class
    from scratchbert.pretraining_data import tokenizer_fingerprint
    from scratchbert.tokenizer import load_tokenizer

    with tempfile.TemporaryDirectory(prefix="scratchbert-start-") as tmp:
        folder = starting_model.fetch(cfg.init_model, tmp)
        config = starting_model.check_model(folder, max_seq_len=info["max_seq_len"], where=cfg.init_model)
        if tokenizer_fingerprint(load_tokenizer(folder)) != tokenizer_fingerprint(tokenizer):
            raise ScratchBertError(f"dataset {cfg.dataset} was not built with the tokenizer of {cfg.init_model}; build it "
                                   f"with `scratchbert tokenizer --init-model {cfg.init_model}` and then `scratchbert dataset`")
        starting_model.require_weights(folder, cfg.init_model)
        config._attn_implementation = attention
        if cfg.sparse_head:
            cls = pretraining_model_class()
        else:
            from transformers import BertForPreTraining as cls
        # float32 weights whatever the checkpoint was saved in: a bf16 or fp16 one would otherwise be
        # trained in that dtype (updates rounded away, Adam's epsilon lost); bf16 is the Trainer's autocast
        model, loading = cls.from_pretrained(str(folder), config=config, output_loading_info=True, dtype=torch.float32)
    parts = {"cls.predictions": "MLM head", "cls.seq_relationship": "NSP head", "bert.pooler": "pooler"}
    new = sorted({next((name for prefix, name in parts.items() if key.startswith(prefix)), key)
                  for key in loading["missing_keys"]})
    if new:
        log.warning("starting model %s has no %s; new ones are trained from random weights", cfg.init_model,
                    " and ".join(new))
    return model


def report_to() -> list[str]:
    """The Trainer's loggers for both training stages: TensorBoard when it is installed, unless
    ``SCRATCHBERT_TENSORBOARD=0``."""
    if os.environ.get("SCRATCHBERT_TENSORBOARD", "1") == "0":
        return ["none"]
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return ["none"]
    return ["tensorboard"]
