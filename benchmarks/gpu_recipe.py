"""The pipeline's GPU recipe against BERT-base, end to end on one GPU, the same minutes each.

Each arm pretrains for ``--pretrain-minutes`` on the first ``--corpus-bytes`` of
``enwiki/train.txt`` (by default 11 MB, the data of the CPU benchmarks; five cuts of each
document, 128 tokens), is scored for MLM/NSP on ``enwiki/valid.txt``, fine-tuned on SQuAD
v1.1's training set for one epoch or ``--qa-minutes``, whichever ends first, scored on all
10,570 dev questions and asked ``qa_budget.QUESTIONS``. The arms run one after the other in
one process (one CUDA start); after each, the JSON so far is written to ``--out``, so a lease
that ends early still returns the arms it finished. With ``--deadline-s`` a later arm's
pretraining shrinks to fit.

* ``recipe``: the pipeline's defaults (``GPU_RECIPE`` in ``pipelines/parameters.py``);
* ``base``: BERT-base at the settings the literature gives it (batch 256, learning rates 5e-4
  for pretraining and 1e-4 for QA), the pipeline's recipe before this benchmark chose ``medium``.

    python benchmarks/gpu_recipe.py [--arms recipe base] [--pretrain-minutes 1.5] [--qa-minutes 1.25] [--out FILE]

On a machine with no network: docs/performance.md, "The GPU recipe, end to end", has the
command that carried the wheels and data.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
import traceback
from pathlib import Path

from common import SQUAD_DEV, SQUAD_TRAIN, WIKITEXT2_BYTES, emit, prepared_data, require_shared_data
from qa_budget import QUESTIONS
from time_to_quality import train_and_evaluate

from scratchbert.outputs import sibling
from scratchbert_pipelines.parameters import BY_NAME

os.environ.setdefault("SCRATCHBERT_TENSORBOARD", "0")

# Per arm: scratchbert pretrain's preset, batch and learning rate, then qa-finetune's.
KNOBS = ("preset", "batch_size", "learning_rate", "qa_learning_rate", "qa_batch_size")
ARMS = {
    "recipe": {k: BY_NAME[k].default for k in KNOBS},
    "base": {"preset": "base", "batch_size": 256, "learning_rate": 5e-4, "qa_learning_rate": 1e-4, "qa_batch_size": 32},
}
SETTLE_SECONDS = 90  # an arm's work besides its two clocks: saving, MLM/NSP scoring, SQuAD windows, dev scoring


def loss_curve(logs: Path, points: int = 8) -> list[list[float]]:
    """(step, training loss) at about ``points`` places of the run, to see whether it learned steadily."""
    history = json.loads((logs / "log_history.json").read_text())["log_history"]
    losses = [(h["step"], round(h["loss"], 3)) for h in history if "loss" in h]
    stride = max(1, len(losses) // points)
    return [list(x) for x in losses[::stride] + losses[-1:]]


def run_arm(name: str, spec: dict, data_dir: Path, work: Path, pretrain_minutes: float, qa_minutes: float,
            num_workers: int, max_eval_examples: int) -> dict:
    from scratchbert.qa import QAConfig, answer, finetune_qa

    t0 = time.perf_counter()
    result = train_and_evaluate(name, data_dir, work, pretrain_minutes, preset=spec["preset"], batch_size=spec["batch_size"],
                                learning_rate=spec["learning_rate"], overwrite=True)
    model = Path(result["model"])
    qa_model = work / f"{name}-qa"
    qa = finetune_qa(QAConfig(model=str(model), squad_train=str(SQUAD_TRAIN), squad_dev=str(SQUAD_DEV), out=str(qa_model),
                              learning_rate=spec["qa_learning_rate"], batch_size=spec["qa_batch_size"], epochs=1.0,
                              time_budget_minutes=qa_minutes, num_workers=num_workers,
                              max_eval_examples=max_eval_examples, overwrite=True))
    answers = [answer(qa_model, question, context)[0]["text"] for context, question, _ in QUESTIONS]
    return {
        **result, "recipe": spec, "pretrain_minutes": pretrain_minutes, "qa_minutes": qa_minutes,
        "loss_curve": loss_curve(sibling(model, "logs")),
        "qa": {k: qa.get(k) for k in ("train_steps", "train_seconds", "epochs", "epoch_minutes", "train_features",
                                      "eval_examples", "eval_seconds", "train_loss")},
        "exact_match": round(qa["exact_match"], 2), "f1": round(qa["f1"], 2),
        "answers": {question: text for (_, question, _), text in zip(QUESTIONS, answers)},
        "arm_wall_seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--pretrain-minutes", type=float, default=1.5, help="each arm's pretraining clock")
    p.add_argument("--qa-minutes", type=float, default=1.25, help="each arm's QA fine-tuning clock (one epoch at most)")
    p.add_argument("--deadline-s", type=float, default=0.0,
                   help="seconds the whole benchmark may take; a later arm's pretraining shrinks to fit, and an "
                        "arm with under half a minute of it is skipped (0: no deadline)")
    p.add_argument("--corpus-bytes", type=int, default=WIKITEXT2_BYTES,
                   help="bytes of enwiki/train.txt to pretrain on (0: all of it); longer runs need more than 11 MB "
                        "not to repeat it many times over")
    p.add_argument("--num-workers", type=int, default=8, help="qa-finetune's processes for SQuAD windows and batches")
    p.add_argument("--max-eval-examples", type=int, default=0, help="dev questions to score; 0: all 10,570")
    p.add_argument("--out", default="", help="also write the JSON here, after every arm")
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "scratchbert-bench"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")  # each stage's own account
    require_shared_data()
    start = time.perf_counter()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    _, data_dir, timings = prepared_data(work, max_bytes=args.corpus_bytes, dupe_factor=5)
    result = {"data": {k: round(v, 1) for k, v in timings.items()}, "arms": {}}
    for name in args.arms:
        minutes = args.pretrain_minutes
        if args.deadline_s:
            left = args.deadline_s - (time.perf_counter() - start) - SETTLE_SECONDS - args.qa_minutes * 60
            minutes = round(min(minutes, left / 60), 2)
        if minutes < 0.5 and minutes < args.pretrain_minutes:
            result["arms"][name] = {"skipped": f"{minutes * 60:.0f} s left for pretraining"}
        else:
            try:
                result["arms"][name] = run_arm(name, ARMS[name], data_dir, work, minutes, args.qa_minutes,
                                              args.num_workers, args.max_eval_examples)
            except Exception as e:  # a failed arm is a result too; the next arm still runs
                traceback.print_exc()
                result["arms"][name] = {"error": f"{type(e).__name__}: {e}"}
        result["wall_seconds"] = round(time.perf_counter() - start, 1)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    emit(result)


if __name__ == "__main__":
    main()
