"""QA fine-tuning speed and quality by precision, batching and model class, same model, same questions, same run.

Fine-tunes one pretrained model on the first ``--train-examples`` questions of
``squad/train-v1.1.json`` for ``--steps`` steps in arms that each add one change to the one
before: transformers' ``BertForQuestionAnswering`` (SDPA attention) in fp32 with random
batches; with bf16 autocast (where the CPU or GPU has bf16); with batches of windows of similar
length (``--group-by-length``); and the stage's own model class
(``scratchbert.modeling.qa_model_class``: under bf16 its residual stream in bf16, and with
eager attention the padding mask as a bias) with the kernel ``--attention auto`` picks, which is
what ``qa-finetune`` runs by default. A last arm runs the stage with the other kernel. Scores
each on the first ``--eval-examples`` questions of ``squad/dev-v1.1.json``. The arms run ``--rounds``
times, in alternating order; reported are each arm's median windows per second of training, its
speed-up over the arm before, EM/F1 (the same every round), and what ``--bf16 auto`` picks on
this machine. The model is ``--model``, or (cached in the work folder) the ``--preset``
pretrained for ``--pretrain-minutes`` on the first 11 MB of ``enwiki/train.txt``.

With ``--batch-sizes B1 B2 ...`` the arms are instead the stage's default at each batch size, each
training on the same windows (``--steps`` x ``--batch-size`` of them), which is how the CPU
recipe's QA batch was timed.

    python benchmarks/qa_finetune.py [--preset tiny] [--steps 150] [--rounds 2] [--model PATH]
    python benchmarks/qa_finetune.py --model PATH --steps 600 --batch-sizes 32 128
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path

from common import SQUAD_DEV, SQUAD_TRAIN, emit, prepared_data, require_shared_data

os.environ.setdefault("SCRATCHBERT_TENSORBOARD", "0")
STOCK = {"stock_class": True, "attention": "sdpa"}  # transformers' class with its default kernel


def arms_for(bf16: bool) -> tuple[dict, str]:
    """The arms, each adding one change to the one before (precision, batching by length, the
    stage's model class), then the stage with the attention kernel ``auto`` does not pick there;
    and the name of the stage's arm. A CPU without bf16 instructions trains in fp32 and would
    only emulate bf16: no bf16 arm there."""
    from scratchbert.modeling import resolve_attention

    precision, flag = ("bf16", "true") if bf16 else ("fp32", "false")
    arms = {"fp32": {"bf16": "false", "group_by_length": False, **STOCK}}
    if bf16:
        arms["bf16"] = {"bf16": "true", "group_by_length": False, **STOCK}
    arms[f"{precision}, by length"] = {"bf16": flag, "group_by_length": True, **STOCK}
    stage = f"{precision}, by length, scratchbert model"
    arms[stage] = {"bf16": flag, "group_by_length": True, "stock_class": False, "attention": "auto"}
    other = "sdpa" if resolve_attention("auto", precision) == "eager" else "eager"
    arms[f"{stage}, {other}"] = dict(arms[stage], attention=other)
    return arms, stage


def pretrained_model(work: Path, preset: str, minutes: float) -> Path:
    from scratchbert.pretrain import PretrainConfig, pretrain

    out = work / f"qa-bench-model-{preset}-{minutes:g}min"
    if not out.is_dir():
        _, data_dir, _ = prepared_data(work, valid=False)
        pretrain(PretrainConfig(dataset=str(data_dir), out=str(out), preset=preset, time_budget_minutes=minutes,
                                eval_steps=0, save_steps=10**9, logging_steps=100))
    return out


@contextlib.contextmanager
def _model_class(stock: bool):
    """With ``stock``, fine-tune transformers' ``BertForQuestionAnswering`` instead of the stage's class."""
    from transformers import BertForQuestionAnswering

    from scratchbert import modeling

    own = modeling.qa_model_class
    if stock:
        modeling.qa_model_class = lambda: BertForQuestionAnswering
    try:
        yield
    finally:
        modeling.qa_model_class = own


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="pretrained model folder (default: pretrain --preset for --pretrain-minutes)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--pretrain-minutes", type=float, default=3.0)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batch-sizes", type=int, nargs="+",
                   help="compare the stage's default at these batch sizes on --steps x --batch-size windows instead")
    p.add_argument("--train-examples", type=int, default=8000)
    p.add_argument("--eval-examples", type=int, default=500)
    p.add_argument("--rounds", type=int, default=2, help="times each arm runs, in alternating order (median reported)")
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "scratchbert-bench"))
    args = p.parse_args()
    require_shared_data()
    from scratchbert import qa
    from scratchbert.qa import QAConfig, finetune_qa, use_bf16

    # The library buckets from 20,000 windows (SQuAD's full 80k); the subset here has about 8,000,
    # and the arm measures what buckets do to a step's cost, so they are on for it.
    qa.MIN_BUCKETED_WINDOWS = 0

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else pretrained_model(work, args.preset, args.pretrain_minutes)
    windows = args.steps * args.batch_size
    bf16 = use_bf16("auto")
    kinds, stage = arms_for(bf16)
    arms = {arm: {**settings, "batch_size": args.batch_size, "max_steps": args.steps} for arm, settings in kinds.items()}
    if args.batch_sizes:
        arms = {f"batch {b}": {**kinds[stage], "batch_size": b, "max_steps": max(1, windows // b)}
                for b in args.batch_sizes}
    result = {"benchmark": "qa_finetune", "model": str(model), "windows": windows,
              "train_examples": args.train_examples, "eval_examples": args.eval_examples, "rounds": args.rounds,
              "auto_picks_bf16": bf16}
    runs = {arm: [] for arm in arms}
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        for r in range(args.rounds):
            for arm in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
                settings = dict(arms[arm])
                stock = settings.pop("stock_class")
                with contextlib.redirect_stdout(sys.stderr), _model_class(stock):  # the Trainer prints its summary on stdout
                    runs[arm].append(finetune_qa(QAConfig(
                        model=str(model), squad_train=str(SQUAD_TRAIN), squad_dev=str(SQUAD_DEV),
                        out=str(Path(tmp) / f"{arm.replace(' ', '_')}-{r}"), **settings,
                        max_train_examples=args.train_examples,
                        max_eval_examples=args.eval_examples, logging_steps=10**9)))
    previous = None
    for arm, ms in runs.items():
        m = ms[0]
        seconds = statistics.median(x["train_seconds"] for x in ms)
        steps, batch = arms[arm]["max_steps"], arms[arm]["batch_size"]
        result[arm] = {"steps": steps, "batch_size": batch, "train_seconds": seconds,
                       "windows_per_second": steps * batch / seconds,
                       "eval_seconds": statistics.median(x["eval_seconds"] for x in ms),
                       "exact_match": m["exact_match"], "f1": m["f1"], "train_loss": m["train_loss"]}
        if previous:
            result[arm]["speedup"] = result[arm]["windows_per_second"] / result[previous]["windows_per_second"]
        previous = arm
    emit(result)


if __name__ == "__main__":
    main()
