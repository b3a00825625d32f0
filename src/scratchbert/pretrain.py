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
  time budgets is further along, so a budgeted run still anneals to the end.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from scratchbert.allocator import keep_freed_memory
from scratchbert.errors import ScratchBertError
from scratchbert.modeling import PRESETS
from scratchbert.outputs import atomic_output_dir, sibling, write_json
from scratchbert.params import param

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
ATTENTIONS = ("auto", "eager", "sdpa")


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
    batch_size: int = param(32, help="Examples per optimizer step (per device).")
    learning_rate: float = param(2e-3, help="Peak learning rate, chosen for the small presets; BERT-base wants 1e-4 to 5e-4.")
    warmup_fraction: float = param(0.25, help="Fraction of the budget (steps or time) spent warming the learning rate up.")
    weight_decay: float = param(0.01, help="AdamW weight decay.")
    adam_beta1: float = param(0.9, help="AdamW beta1.")
    adam_beta2: float = param(0.98, help="AdamW beta2.")
    adam_epsilon: float = param(1e-6, help="AdamW epsilon.")
    max_grad_norm: float = param(1.0, help="Clip gradients to this global norm.")
    dropout: float = param(0.0, help="Hidden and attention dropout.")
    unigram_bias: bool = param(True, help="Start the MLM output bias at the training tokens' log frequencies, so a fresh model need not learn word frequencies first.")
    mlm_probability: float = param(0.15, help="Fraction of tokens masked.")
    precision: str = param("auto", help="Arithmetic: auto is bf16 where the hardware has it, fp16 on older GPUs, else fp32.", choices=PRECISIONS)
    attention: str = param("auto", help="Attention kernel: auto is eager (faster at these lengths on CPUs and GPUs).", choices=ATTENTIONS)
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


def resolve_precision(precision: str) -> str:
    """'auto' -> bf16 on GPUs and CPUs that have it, fp16 on older GPUs, else fp32.

    On a CPU, bf16 autocast pays where the CPU has bf16 matrix instructions (AMX-BF16 or
    AVX512-BF16). Measured on this project's 2-core Xeon (AMX), training step time, bf16 vs
    fp32: nano equal, tiny 1.16x faster, mini 1.55x, base 2.1x
    (``benchmarks/pretrain_throughput.py`` and the README's performance section).
    """
    import torch

    if precision not in {"auto", "bf16", "fp16", "fp32"}:
        raise ScratchBertError(f"precision {precision!r} is not one of auto, bf16, fp16, fp32")
    if precision != "auto":
        if precision == "fp16" and not torch.cuda.is_available():
            raise ScratchBertError("fp16 needs a CUDA GPU; use --precision bf16 or fp32 on a CPU")
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


def resolve_attention(attention: str) -> str:
    """'auto' -> eager attention, on a CPU and on a GPU alike: measured faster on both at
    sequence length 128 with length-grouped batches (``benchmarks/pretrain_throughput.py``
    reports both kernels).

    * CPU (this project's 2-core Xeon, bare training step, bf16, tokens/s eager vs sdpa):
      tiny 19.5k vs 17.9k, mini 12.2k vs 9.8k, base 1,144 vs 1,025 (SDPA's flash kernel,
      its backward above all, is slower than eager's batched matmuls).
    * GPU (an H200, torch 2.11, bf16, through the Trainer, 20 steps after 3): base (batch
      256) 366.8k vs 350.3k, tiny (batch 512) 3.82M vs 0.44M. With a padding mask SDPA
      ran cuDNN's attention kernels (profiled), which build a plan for each new shape, each
      length a batch is padded to: the likely cost at tiny, not profiled separately.
    """
    if attention not in {"auto", "sdpa", "eager"}:
        raise ScratchBertError(f"attention {attention!r} is not one of auto, sdpa, eager")
    return "eager" if attention == "auto" else attention


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


def lr_lambda(progress: float, warmup_fraction: float) -> float:
    """Linear warmup to 1 over ``warmup_fraction`` of the run, then linear decay to 0."""
    if progress < warmup_fraction:
        return max(progress / warmup_fraction, 1e-3)
    return max(0.0, (1.0 - progress) / max(1e-9, 1.0 - warmup_fraction))


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


def _latest_checkpoint(checkpoint_dir: Path) -> str | None:
    """The newest *complete* checkpoint: a kill while saving leaves a folder without
    ``trainer_state.json`` (the Trainer writes it last), which is skipped."""
    if not checkpoint_dir.is_dir():
        return None
    complete = [p for p in checkpoint_dir.glob("checkpoint-*")
                if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return str(max(complete, key=lambda p: int(p.name.split("-")[-1]))) if complete else None


def _fetch_remote_checkpoint(uri: str, checkpoint_dir: Path) -> str | None:
    """Download the latest complete checkpoint mirrored at ``uri``; None when there is none yet."""
    from scratchbert import storage

    try:
        version = storage.read_manifest(uri)["version"]
    except ScratchBertError:
        return None  # nothing published there yet: a fresh run
    target = checkpoint_dir / version
    if not target.is_dir():
        storage.fetch_published(f"{uri.rstrip('/')}/{version}", target)
    return str(target)


def _mirror_callback(uri: str, checkpoint_dir: Path):
    """A callback that publishes each saved checkpoint to ``uri`` (manifest last, then LATEST)."""
    from transformers import TrainerCallback

    from scratchbert import storage

    class _Mirror(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            folder = checkpoint_dir / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                storage.publish(folder, uri, version=folder.name)

    return _Mirror()


def pretrain(cfg: PretrainConfig) -> dict:
    """Pretrain; save the model, its tokenizer and model card into ``cfg.out``, the run's records
    (``metrics.json``, ``log_history.json``, TensorBoard runs) into ``cfg.logs``; return the metrics."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

    from scratchbert import shards
    from scratchbert.modelcard import write_model_card
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
    if cfg.max_steps <= 0 and not cfg.time_budget_minutes and cfg.epochs <= 0:
        raise ScratchBertError("nothing to train: give --max-steps, --epochs or --time-budget-minutes")
    if cfg.batch_size <= 0 or cfg.learning_rate <= 0:
        raise ScratchBertError("batch size and learning rate must be positive")
    config = build_config(cfg.preset, len(tokenizer), info["max_seq_len"], hidden_size=cfg.hidden_size,
                          num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                          intermediate_size=cfg.intermediate_size, dropout=cfg.dropout,
                          attn_implementation=(attention := resolve_attention(cfg.attention)))
    check_tokenizer_matches(config, tokenizer, cfg.dataset)
    precision = resolve_precision(cfg.precision)
    set_seed(cfg.seed)
    if cfg.sparse_head:
        model = pretraining_model_class()(config)
    else:
        from transformers import BertForPreTraining

        model = BertForPreTraining(config)
    checkpoint_dir = Path(cfg.checkpoint_dir or sibling(cfg.out, "checkpoints"))
    resume = _latest_checkpoint(checkpoint_dir)
    if resume is None and cfg.checkpoint_uri:
        resume = _fetch_remote_checkpoint(cfg.checkpoint_uri, checkpoint_dir)
    if cfg.unigram_bias and resume is None:  # a resumed run loads its trained bias
        set_mlm_bias_to_unigram(model, stored_token_counts(cfg.dataset, len(tokenizer), tokenizer.all_special_ids))

    eval_ds = shards.load_split(cfg.dataset, "validation", info)
    if cfg.eval_examples and len(eval_ds) > cfg.eval_examples:
        eval_ds = eval_ds.select(range(cfg.eval_examples))
    budget_s = cfg.time_budget_minutes * 60 if cfg.time_budget_minutes else None
    max_steps = cfg.max_steps
    if max_steps <= 0 and budget_s:
        max_steps = 10_000_000  # the clock stops the run; the schedule follows the clock
    cuda = torch.cuda.is_available()
    args = TrainingArguments(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=max(cfg.batch_size, 64),
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2, adam_epsilon=cfg.adam_epsilon,
        max_grad_norm=cfg.max_grad_norm, max_steps=max_steps, num_train_epochs=cfg.epochs,
        bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=not cuda,
        optim=cfg.optimizer,
        torch_compile=cfg.torch_compile,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if cfg.eval_steps > 0 else "no", eval_steps=cfg.eval_steps or None,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2,
        remove_unused_columns=False, label_names=["labels", "next_sentence_label"],
        report_to=report_to(), seed=cfg.seed, disable_tqdm=False,
        **step_arguments(cfg.num_workers),
    )
    train_examples = shards.ShardedExamples(cfg.dataset, "train")
    sampler = shards.ShardBatchSampler(train_examples.sizes, cfg.batch_size, seed=cfg.seed, window=cfg.shuffle_window,
                                       lengths=train_examples.lengths if cfg.group_by_length else None,
                                       rank=args.process_index, world_size=args.world_size)
    train_examples.max_open = shards.shards_per_window(train_examples.sizes, sampler.window) + 1

    tokens = {"count": 0}
    start = {"time": None}

    class _Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            start["time"] = time.monotonic()

        def on_step_end(self, args, state, control, **kw):
            if budget_s and time.monotonic() - start["time"] >= budget_s:
                control.should_training_stop = True
                control.should_save = False

    class _Trainer(Trainer):
        def create_scheduler(self, num_training_steps, optimizer=None):
            if self.lr_scheduler is None:
                opt = optimizer if optimizer is not None else self.optimizer
                total = cfg.max_steps if cfg.max_steps > 0 else (None if budget_s else num_training_steps)

                def schedule(step):
                    progress = step / total if total else 0.0
                    if budget_s and start["time"] is not None:
                        progress = max(progress, (time.monotonic() - start["time"]) / budget_s)
                    return lr_lambda(min(progress, 1.0), cfg.warmup_fraction)

                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
                self._created_lr_scheduler = True
            return self.lr_scheduler

        def get_train_dataloader(self):
            return shards.trainer_dataloader(self, train_examples, sampler)

        def compute_loss(self, model, inputs, return_outputs=False, **kw):
            if model.training:  # a device tensor: no host sync on the hot path
                tokens["count"] = tokens["count"] + inputs["attention_mask"].sum()
            return super().compute_loss(model, inputs, return_outputs=return_outputs, **kw)

    callbacks = [shards.data_position_callback(sampler, info["id"], resume), _Clock()] + ([_mirror_callback(cfg.checkpoint_uri, checkpoint_dir)] if cfg.checkpoint_uri else [])
    trainer = _Trainer(model=model, args=args, train_dataset=train_examples, eval_dataset=eval_ds,
                       data_collator=MlmNspCollator(tokenizer, cfg.mlm_probability,
                                                    pad_to_multiple_of=info["max_seq_len"] if cfg.pad_to_max_length else 8,
                                                    mlm_positions=cfg.sparse_head),
                       callbacks=callbacks,
                       compute_metrics=_mlm_nsp_metrics, preprocess_logits_for_metrics=_per_example_counts)
    if budget_s and cfg.max_steps <= 0:
        # The step count is open-ended: show progress against the clock instead of a
        # 10-million-step bar with a meaningless ETA.
        from transformers.trainer_callback import ProgressCallback

        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_time_progress(budget_s, start))
    with keep_freed_memory():
        t0 = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=resume)
        train_seconds = time.perf_counter() - t0
        tokens["count"] = int(tokens["count"])
        final_eval = trainer.evaluate() if len(eval_ds) else {}
    metrics = {
        "train_loss": result.training_loss, "steps": trainer.state.global_step,
        "train_seconds": round(train_seconds, 2), "train_tokens": tokens["count"],
        "tokens_per_second": tokens["count"] / max(train_seconds, 1e-9),
        "parameters": count_parameters(model), "precision": precision, "attention": attention,
        "resumed": bool(resume),
        **{k.replace("eval_", "val_"): v for k, v in final_eval.items() if isinstance(v, (int, float))},
    }
    metrics = {k: v for k, v in metrics.items() if not isinstance(v, float) or math.isfinite(v)}
    logs = Path(cfg.logs or sibling(cfg.out, "logs"))
    with atomic_output_dir(cfg.out) as tmp, atomic_output_dir(logs) as tmp_logs:
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        unwrapped.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_model_card(tmp, task="fill-mask", datasets=info.get("corpora", []), metrics=metrics)
        write_json(tmp_logs / "metrics.json", metrics)
        write_json(tmp_logs / "log_history.json", {"log_history": trainer.state.log_history})
        tb = checkpoint_dir / "runs"
        if tb.is_dir():
            shutil.copytree(tb, tmp_logs / "tensorboard")
    if not cfg.keep_checkpoints:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return metrics


def _time_progress(budget_s: float, start: dict):
    """A tqdm bar in seconds of the time budget, with the latest loss and step."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class _TimeProgress(TrainerCallback):
        bar = None
        loss = "-"

        def on_train_begin(self, args, state, control, **kw):
            # mininterval: one redraw a second, not one per step (pod logs keep every redraw)
            self.bar = tqdm(total=int(budget_s), unit="s", desc="pretrain (time budget)", mininterval=1.0)

        def on_step_end(self, args, state, control, **kw):
            elapsed = min(int(time.monotonic() - start["time"]), int(budget_s))
            if elapsed > self.bar.n:
                self.bar.set_postfix(step=state.global_step, loss=self.loss, refresh=False)
                self.bar.update(elapsed - self.bar.n)  # redraws at most once per mininterval

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.loss = f"{logs['loss']:.3f}"

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()

    return _TimeProgress()


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
