"""Evaluate a pretrained model: MLM accuracy, NSP accuracy, perplexity, and a fill-mask report.

The masking is fixed by a seed and the examples are read in order, so two runs of the same
model on the same dataset give the same numbers. Perplexity is ``exp`` of the mean
cross-entropy over all masked tokens (token-weighted, not batch-averaged).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from scratchbert import progress
from scratchbert.errors import ScratchBertError
from scratchbert.outputs import atomic_output_dir, check_output, write_json
from scratchbert.params import check, finite, param

STAGE = "evaluate"

FILL_MASK_SENTENCES = (
    "I am [MASK] at math.",
    "The capital of France is [MASK].",
    "He went to the [MASK] to buy some bread.",
    "She [MASK] the piano every day.",
    "The war ended in [MASK].",
    "Water is made of hydrogen and [MASK].",
)


@dataclass
class EvalConfig:
    """Settings of the evaluation stage (``scratchbert evaluate``)."""

    model: str = param(help="Model folder (from `scratchbert pretrain`).")
    dataset: str = param(help="Dataset folder built with the model's tokenizer (from `scratchbert dataset`).")
    out: str = param(help="Output folder for metrics.json, fill_mask.json and report.md.")
    split: str = param("validation", help="Dataset split to evaluate.")
    max_examples: int = param(0, help="Evaluate at most N examples; 0 evaluates all.")
    batch_size: int = param(128, help="Examples per batch.")
    mlm_probability: float = param(0.15, help="Fraction of tokens masked.")
    seed: int = param(1234, help="Seed of the fixed masking, so that two runs score the same.")
    fill_mask: str = param("", help="Sentences for the fill-mask report, separated by '|'; empty uses a built-in set.")
    overwrite: bool = param(False, help="Replace an existing --out that another stage or a person wrote (an evaluation folder is always replaced).")

    def validate(self) -> None:
        """Check every setting (no file is read): one line for the first that is wrong."""
        check((bool(str(self.model).strip()), "--model is empty; give the folder written by `scratchbert pretrain`"),
              (bool(str(self.dataset).strip()), "--dataset is empty; give the folder written by `scratchbert dataset`"),
              (bool(self.split.strip()), "--split is empty; give a split of the dataset, e.g. validation"),
              (self.max_examples >= 0, f"--max-examples {self.max_examples} must not be negative (0 evaluates all)"),
              (self.batch_size >= 1, f"--batch-size {self.batch_size} must be at least 1"),
              (finite(self.mlm_probability) and 0 < self.mlm_probability < 1,
               f"--mlm-probability {self.mlm_probability} must lie in (0, 1)"))
        for sentence in self.sentences():
            check(("[MASK]" in sentence, f"--fill-mask sentence {sentence!r} has no [MASK]; add one where a word should be guessed"))

    def sentences(self) -> list[str]:
        """The fill-mask sentences: the given ones, or the built-in set."""
        given = self.fill_mask.split("|") if self.fill_mask else FILL_MASK_SENTENCES
        return [s.strip() for s in given if s.strip()]


def load_pretraining_model(model_dir: str | Path):
    """Load a pretrained model folder as the sparse-head model, with its tokenizer."""
    from scratchbert.modeling import (
        check_model_kind,
        check_tokenizer_matches,
        load_pretrained_config,
        pretraining_model_class,
    )
    from scratchbert.tokenizer import load_tokenizer

    config = load_pretrained_config(model_dir)
    check_model_kind(model_dir, config, "pretraining",
                     "evaluate a model written by `scratchbert pretrain` (a fine-tuned QA model has no masked-LM and NSP heads)")
    tokenizer = load_tokenizer(model_dir)
    check_tokenizer_matches(config, tokenizer, str(model_dir), model_dir)
    model = pretraining_model_class().from_pretrained(str(model_dir))
    return model.eval(), tokenizer


def mlm_nsp_metrics(model, tokenizer, dataset, batch_size: int = 128, mlm_probability: float = 0.15,
                    seed: int = 1234) -> dict:
    """MLM accuracy, NSP accuracy, perplexity of ``model`` on ``dataset`` under a seeded masking."""
    import torch
    from torch.nn import functional as F

    from scratchbert.pretraining_data import MlmNspCollator

    collator = MlmNspCollator(tokenizer, mlm_probability, seed=seed, mlm_positions=True,
                              max_length=model.config.max_position_embeddings)
    device = next(model.parameters()).device
    correct = total = nsp_correct = 0
    loss_sum = nsp_loss_sum = 0.0
    with torch.inference_mode():
        for start in progress.bar(range(0, len(dataset), batch_size), desc="evaluate", unit="batch"):
            batch = collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            labels = batch["labels"][batch["labels"] != -100]
            logits = out.prediction_logits.float()
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(-1) == labels).sum())
            total += int(labels.numel())
            nsp = out.seq_relationship_logits.float()
            nsp_loss_sum += float(F.cross_entropy(nsp, batch["next_sentence_label"], reduction="sum"))
            nsp_correct += int((nsp.argmax(-1) == batch["next_sentence_label"]).sum())
    n = len(dataset)
    mlm_loss = loss_sum / max(total, 1)
    return {"mlm_accuracy": correct / max(total, 1), "nsp_accuracy": nsp_correct / max(n, 1),
            "mlm_loss": mlm_loss, "nsp_loss": nsp_loss_sum / max(n, 1),
            "perplexity": math.exp(min(mlm_loss, 700)), "examples": n, "masked_tokens": total}


def _check_positions(model, tokenizer, info: dict, cfg: EvalConfig) -> None:
    """The dataset's examples and the fill-mask sentences must fit the model's positions: one line
    before any work, not a shape error after the whole evaluation."""
    positions = model.config.max_position_embeddings
    if info["max_seq_len"] > positions:
        raise ScratchBertError(f"dataset {cfg.dataset} holds examples of up to {info['max_seq_len']} tokens, but model {cfg.model} "
                               f"has {positions} positions; evaluate on a dataset built with --max-seq-len {positions} or less")
    for sentence in cfg.sentences():
        n = len(tokenizer(sentence)["input_ids"])
        if n > positions:
            raise ScratchBertError(f"fill-mask sentence {sentence[:40]!r}… is {n} tokens long, more than the {positions} "
                                   f"positions of model {cfg.model}; give a shorter one")


def fill_mask(model, tokenizer, sentences, top_k: int = 5) -> list[dict]:
    """Top-k predictions for the first ``[MASK]`` of each sentence."""
    import torch

    results = []
    with torch.inference_mode():
        for sentence in sentences:
            enc = tokenizer(sentence, return_tensors="pt")
            positions = (enc["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten()
            if len(positions) == 0:
                raise ScratchBertError(f"fill-mask sentence {sentence!r} has no {tokenizer.mask_token}; add one")
            logits = model(**enc).prediction_logits[0, positions[0]].float()
            probs = logits.softmax(-1)
            top = probs.topk(top_k)
            results.append({"sentence": sentence,
                            "predictions": [{"token": tokenizer.convert_ids_to_tokens(int(i)), "score": float(p)}
                                            for p, i in zip(top.values, top.indices)]})
    return results


def markdown_report(metrics: dict, fills: list[dict], title: str = "Pretraining evaluation") -> str:
    lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
    for key in ("mlm_accuracy", "nsp_accuracy", "perplexity", "mlm_loss", "nsp_loss", "examples", "masked_tokens"):
        if key in metrics:
            v = metrics[key]
            lines.append(f"| {key} | {v:.4f} |" if isinstance(v, float) else f"| {key} | {v} |")
    lines += ["", "## Fill-mask, top 5", "", "| sentence | predictions |", "|---|---|"]
    for f in fills:
        preds = ", ".join(f"`{p['token']}` ({p['score']:.2f})" for p in f["predictions"])
        lines.append(f"| {f['sentence']} | {preds} |")
    return "\n".join(lines) + "\n"


def evaluate_model(cfg: EvalConfig) -> dict:
    """Evaluate, write ``metrics.json``, ``fill_mask.json`` and ``report.md`` into ``cfg.out``."""
    from scratchbert.pretraining_data import load_pretraining_dataset, tokenizer_fingerprint

    cfg.validate()
    inputs = [cfg.model, cfg.dataset]
    check_output(cfg.out, stage=STAGE, inputs=inputs, overwrite=cfg.overwrite)
    t0 = time.perf_counter()
    model, tokenizer = load_pretraining_model(cfg.model)
    ds, info = load_pretraining_dataset(cfg.dataset)
    if tokenizer_fingerprint(tokenizer) != info["tokenizer_fingerprint"]:
        raise ScratchBertError(f"model {cfg.model} was trained with a different tokenizer than dataset {cfg.dataset}; evaluate on a dataset built with the model's tokenizer")
    if cfg.split not in ds:
        raise ScratchBertError(f"dataset {cfg.dataset} has no split {cfg.split!r} (it has {list(ds)})")
    _check_positions(model, tokenizer, info, cfg)
    data = ds[cfg.split]
    if cfg.max_examples:
        data = data.select(range(min(cfg.max_examples, len(data))))
    if len(data) == 0:
        raise ScratchBertError(f"split {cfg.split!r} of {cfg.dataset} is empty; nothing to evaluate")
    metrics = mlm_nsp_metrics(model, tokenizer, data, cfg.batch_size, cfg.mlm_probability, cfg.seed)
    fills = fill_mask(model, tokenizer, cfg.sentences())
    metrics["seconds"] = round(time.perf_counter() - t0, 3)
    with atomic_output_dir(cfg.out, stage=STAGE, inputs=inputs, overwrite=cfg.overwrite) as tmp:
        write_json(Path(tmp) / "metrics.json", metrics)
        write_json(Path(tmp) / "fill_mask.json", {"fill_mask": fills})
        (Path(tmp) / "report.md").write_text(markdown_report(metrics, fills))
    return metrics
